//! Golden tests pinning the wire format of the daemon socket and the monitor channel: each
//! value encodes to exactly the pinned line, and the pinned line decodes back to the value.
//! A change here is a protocol change: follow the compatibility policy in docs/PROTOCOL.md
//! (bump `PROTOCOL_VERSION` when it says so) and update that document.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use wsync_core::framing::{decode, encode};
use wsync_core::monitor_proto::{
    MonitorCommand, MonitorEvent, MonitorStatus, MonitorTunables, RemoteState, RemoteStatus,
    SyncProgress, SyncedBatch, Throughput, WatchBackendKind, WatchMode,
};
use wsync_core::protocol::{
    ErrorCode, Event, EventKind, MonitorProcessState, Request, Response, WorkspaceChange,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, SUBSCRIBE_SINCE, UPDATE_SINCE,
};
use wsync_core::registry::update::{RemoteChanges, WorkspaceChanges};
use wsync_core::registry::Transport;
use wsync_core::registry::{Remote, RootIdentity, Workspace};
use wsync_core::remote::{RemoteTarget, SshOption};

fn pin<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T, golden: &str) {
    let line = encode(&value);
    assert_eq!(
        std::str::from_utf8(&line).unwrap(),
        format!("{golden}\n"),
        "encoding of {value:?}"
    );
    let back: T = decode(golden.as_bytes()).unwrap();
    assert_eq!(back, value, "decoding of {golden}");
}

fn workspace() -> Workspace {
    Workspace {
        name: "proj".into(),
        id: "0123abcd".into(),
        path: "/home/u/proj".into(),
        remotes: vec![
            Remote::new(
                "mirror",
                RemoteTarget::Local {
                    path: "/srv/m".into(),
                },
            ),
            Remote {
                name: "box".into(),
                target: RemoteTarget::Ssh {
                    user: Some("u".into()),
                    host: "box".into(),
                    port: Some(2222),
                    path: "/srv/p".into(),
                    identity_file: Some("/home/u/.ssh/id".into()),
                    ssh_options: vec![SshOption {
                        key: "UserKnownHostsFile".into(),
                        value: "/k".into(),
                    }],
                },
                keep_deleted_days: 7,
                transport: Default::default(),
                rsync_path: None,
            },
        ],
        paused: false,
        excludes: vec!["target/".into()],
        respect_gitignore: true,
        max_delete: None,
        checksum_every_secs: None,
        tuning: Default::default(),
        root_id: None,
    }
}

const WORKSPACE_JSON: &str = r#"{"name":"proj","id":"0123abcd","path":"/home/u/proj","remotes":[{"name":"mirror","target":{"kind":"local","path":"/srv/m"}},{"name":"box","target":{"kind":"ssh","user":"u","host":"box","port":2222,"path":"/srv/p","identity_file":"/home/u/.ssh/id","ssh_options":[{"key":"UserKnownHostsFile","value":"/k"}]},"keep_deleted_days":7}],"paused":false,"excludes":["target/"],"respect_gitignore":true}"#;

#[test]
fn protocol_version_is_pinned() {
    assert_eq!(PROTOCOL_VERSION, 2);
    assert_eq!(MIN_PROTOCOL_VERSION, 1);
    assert_eq!(SUBSCRIBE_SINCE, 2);
    assert_eq!(UPDATE_SINCE, 2);
}

#[test]
fn update_and_its_answer() {
    let mut changes = WorkspaceChanges {
        excludes: Some(Some(vec!["target/".into()])),
        watch_mode: Some(Some(WatchMode::Poll)),
        settle_ms: Some(None),
        ..WorkspaceChanges::default()
    };
    changes.remotes.insert(
        "box".into(),
        RemoteChanges {
            transport: Some(Some(Transport::Rsync)),
            keep_deleted_days: None,
        },
    );
    // Absent keys stay as they are; null resets.
    pin(
        Request::Update {
            workspace: "proj".into(),
            changes,
        },
        r#"{"type":"update","workspace":"proj","changes":{"excludes":["target/"],"watch_mode":"poll","settle_ms":null,"remotes":{"box":{"transport":"rsync"}}}}"#,
    );
    pin(
        Request::Update {
            workspace: "proj".into(),
            changes: WorkspaceChanges::default(),
        },
        r#"{"type":"update","workspace":"proj","changes":{}}"#,
    );
    assert!(decode::<Request>(
        br#"{"type":"update","workspace":"proj","changes":{"colour":"red"}}"#
    )
    .is_err());
    assert!(decode::<Request>(br#"{"type":"update","workspace":"proj"}"#).is_err());
    let mut ws = workspace();
    ws.tuning.watch_mode = Some(WatchMode::Poll);
    ws.tuning.poll_interval_ms = Some(500);
    // The tunables sit at the entry's top level, after the other settings.
    let entry = WORKSPACE_JSON.replace(
        r#""respect_gitignore":true}"#,
        r#""respect_gitignore":true,"watch_mode":"poll","poll_interval_ms":500}"#,
    );
    assert_ne!(entry, WORKSPACE_JSON);
    pin(
        Response::Updated {
            workspace: ws,
            changed: vec!["watch_mode".into()],
            restarted: true,
        },
        &format!(
            r#"{{"type":"updated","workspace":{entry},"changed":["watch_mode"],"restarted":true}}"#
        ),
    );
}

#[test]
fn subscribe_and_its_answer() {
    pin(
        Request::Subscribe { workspace: None },
        r#"{"type":"subscribe","workspace":null}"#,
    );
    pin(
        Request::Subscribe {
            workspace: Some("proj".into()),
        },
        r#"{"type":"subscribe","workspace":"proj"}"#,
    );
    let bare: Request = decode(br#"{"type":"subscribe"}"#).unwrap();
    assert_eq!(bare, Request::Subscribe { workspace: None });
    assert!(decode::<Request>(br#"{"type":"subscribe","queue":9999}"#).is_err());
    pin(
        Response::Subscribed {
            workspace: Some("proj".into()),
            queue: 256,
        },
        r#"{"type":"subscribed","workspace":"proj","queue":256}"#,
    );
}

fn event(workspace: Option<&str>, kind: EventKind) -> Response {
    Response::Event {
        event: Event {
            unix_ms: 1_700_000_000_000,
            workspace: workspace.map(str::to_owned),
            kind,
        },
    }
}

#[test]
fn events() {
    let head = r#"{"type":"event","event":{"unix_ms":1700000000000,"workspace":"proj","#;
    for (kind, golden) in [
        (
            EventKind::RemoteState {
                remote: "m".into(),
                state: RemoteState::Syncing,
                previous: Some(RemoteState::InSync),
                pending: 3,
                error: None,
            },
            r#""kind":"remote_state","remote":"m","state":"syncing","previous":"in-sync","pending":3,"error":null}}"#,
        ),
        (
            EventKind::Pending {
                remote: "m".into(),
                pending: 4,
            },
            r#""kind":"pending","remote":"m","pending":4}}"#,
        ),
        (
            EventKind::Synced {
                remote: "m".into(),
                full: false,
                paths: 2,
                files: 2,
                bytes: 2048,
                oldest_change_us: Some(3100),
                latency_p50_us: Some(4100),
                latency_p99_us: None,
            },
            r#""kind":"synced","remote":"m","full":false,"paths":2,"files":2,"bytes":2048,"oldest_change_us":3100,"latency_p50_us":4100,"latency_p99_us":null}}"#,
        ),
        (
            EventKind::Error {
                remote: Some("m".into()),
                message: "rsync: connection refused".into(),
            },
            r#""kind":"error","remote":"m","message":"rsync: connection refused"}}"#,
        ),
        (
            EventKind::Halted {
                reason: "the workspace root is gone".into(),
            },
            r#""kind":"halted","reason":"the workspace root is gone"}}"#,
        ),
        (EventKind::HaltLifted {}, r#""kind":"halt_lifted"}}"#),
        (
            EventKind::Verified {
                remote: "m".into(),
                verified_unix_ms: 1_700_000_000_001,
            },
            r#""kind":"verified","remote":"m","verified_unix_ms":1700000000001}}"#,
        ),
        (
            EventKind::Monitor {
                state: MonitorProcessState::BackingOff,
                detail: Some("exit status 1".into()),
            },
            r#""kind":"monitor","state":"backing_off","detail":"exit status 1"}}"#,
        ),
        (
            EventKind::Workspace {
                change: WorkspaceChange::Paused,
            },
            r#""kind":"workspace","change":"paused"}}"#,
        ),
    ] {
        pin(event(Some("proj"), kind), &format!("{head}{golden}"));
    }
    // Events about the subscription or the daemon name no workspace.
    pin(
        event(None, EventKind::Lagged { queue: 256 }),
        r#"{"type":"event","event":{"unix_ms":1700000000000,"kind":"lagged","queue":256}}"#,
    );
    pin(
        event(None, EventKind::DaemonStopping {}),
        r#"{"type":"event","event":{"unix_ms":1700000000000,"kind":"daemon_stopping"}}"#,
    );
    for (change, name) in [
        (WorkspaceChange::Added, "added"),
        (WorkspaceChange::Removed, "removed"),
        (WorkspaceChange::Attached, "attached"),
        (WorkspaceChange::Detached, "detached"),
        (WorkspaceChange::Paused, "paused"),
        (WorkspaceChange::Resumed, "resumed"),
        (WorkspaceChange::Updated, "updated"),
    ] {
        pin(change, &format!("\"{name}\""));
    }
}

#[test]
fn an_event_with_fields_a_client_does_not_know_still_decodes() {
    // The policy lets a daemon add fields to an event without a bump.
    let r: Response = decode(
        br#"{"type":"event","event":{"unix_ms":1,"workspace":"w","kind":"pending","remote":"m","pending":2,"paths":["a"]}}"#,
    )
    .unwrap();
    let expected = Event {
        unix_ms: 1,
        workspace: Some("w".into()),
        kind: EventKind::Pending {
            remote: "m".into(),
            pending: 2,
        },
    };
    assert_eq!(r, Response::Event { event: expected });
}

#[test]
fn an_old_clients_hello_still_decodes() {
    // What a protocol-1 client sends; the daemon answers it in protocol 1 (e2e: daemon_protocol).
    let r: Request = decode(br#"{"type":"hello","protocol":1,"version":"0.1.0"}"#).unwrap();
    assert_eq!(
        r,
        Request::Hello {
            protocol: 1,
            version: "0.1.0".into()
        }
    );
}

#[test]
fn requests() {
    pin(
        Request::Hello {
            protocol: 1,
            version: "0.1.0".into(),
        },
        r#"{"type":"hello","protocol":1,"version":"0.1.0"}"#,
    );
    pin(Request::DaemonInfo {}, r#"{"type":"daemon_info"}"#);
    pin(Request::List {}, r#"{"type":"list"}"#);
    pin(
        Request::Status { workspace: None },
        r#"{"type":"status","workspace":null}"#,
    );
    pin(
        Request::Add {
            path: "/p".into(),
            name: Some("n".into()),
            excludes: vec!["*.o".into()],
        },
        r#"{"type":"add","path":"/p","name":"n","excludes":["*.o"]}"#,
    );
    pin(
        Request::Remove {
            workspace: "w".into(),
        },
        r#"{"type":"remove","workspace":"w"}"#,
    );
    pin(
        Request::Attach {
            workspace: "w".into(),
            target: "h:/srv".into(),
            name: None,
            port: Some(22),
            identity_file: Some(PathBuf::from("/id")),
            ssh_options: vec!["A=b".into()],
            wait: true,
            overwrite: true,
            keep_deleted: Some(7),
            transport: Default::default(),
            rsync_path: None,
        },
        r#"{"type":"attach","workspace":"w","target":"h:/srv","name":null,"port":22,"identity_file":"/id","ssh_options":["A=b"],"wait":true,"overwrite":true,"keep_deleted":7}"#,
    );
    // An old client's attach (no `wait`, no `overwrite`, no `keep_deleted`) still decodes, as neither.
    let old: Request = decode(
        br#"{"type":"attach","workspace":"w","target":"h:/srv","name":null,"port":22,"identity_file":"/id","ssh_options":["A=b"]}"#,
    )
    .unwrap();
    assert!(matches!(
        old,
        Request::Attach {
            wait: false,
            overwrite: false,
            keep_deleted: None,
            transport: wsync_core::registry::Transport::Auto,
            rsync_path: None,
            ..
        }
    ));
    pin(
        Request::Detach {
            workspace: "w".into(),
            remote: "r".into(),
        },
        r#"{"type":"detach","workspace":"w","remote":"r"}"#,
    );
    pin(
        Request::Pause {
            workspace: "w".into(),
        },
        r#"{"type":"pause","workspace":"w"}"#,
    );
    pin(
        Request::Resume {
            workspace: "w".into(),
        },
        r#"{"type":"resume","workspace":"w"}"#,
    );
    pin(
        Request::Flush {
            workspace: "w".into(),
            timeout_ms: Some(5),
        },
        r#"{"type":"flush","workspace":"w","timeout_ms":5}"#,
    );
    pin(
        Request::Restart {
            workspace: "w".into(),
        },
        r#"{"type":"restart","workspace":"w"}"#,
    );
    pin(
        Request::Repair {
            workspace: "w".into(),
            remote: Some("m".into()),
        },
        r#"{"type":"repair","workspace":"w","remote":"m"}"#,
    );
    pin(Request::Shutdown {}, r#"{"type":"shutdown"}"#);
}

#[test]
fn optional_request_fields_may_be_omitted() {
    let r: Request = decode(br#"{"type":"status"}"#).unwrap();
    assert_eq!(r, Request::Status { workspace: None });
    let r: Request = decode(br#"{"type":"add","path":"/p"}"#).unwrap();
    assert_eq!(
        r,
        Request::Add {
            path: "/p".into(),
            name: None,
            excludes: vec![]
        }
    );
}

#[test]
fn a_daemon_info_without_watchdog_passes_still_decodes() {
    // What a daemon from before `watchdog_passes` sends.
    let r: Response = decode(
        br#"{"type":"daemon_info","protocol":1,"version":"0.1.0","pid":42,"uptime_secs":7,"socket":"/s","registry":"/r"}"#,
    )
    .unwrap();
    assert_eq!(
        r,
        Response::DaemonInfo {
            protocol: 1,
            version: "0.1.0".into(),
            pid: 42,
            uptime_secs: 7,
            socket: "/s".into(),
            registry: "/r".into(),
            watchdog_passes: 0,
        }
    );
}

#[test]
fn unknown_fields_and_types_are_refused() {
    for bad in [
        r#"{"type":"shutdown","dry_run":true}"#,
        r#"{"type":"list","x":1}"#,
        r#"{"type":"remove","workspace":"w","force":true}"#,
        r#"{"type":"format_disk"}"#,
        r#"{"workspace":"w"}"#,
    ] {
        assert!(decode::<Request>(bad.as_bytes()).is_err(), "{bad} accepted");
    }
}

#[test]
fn responses() {
    pin(
        Response::Hello {
            protocol: 1,
            version: "0.1.0".into(),
            pid: 42,
        },
        r#"{"type":"hello","protocol":1,"version":"0.1.0","pid":42}"#,
    );
    pin(
        Response::DaemonInfo {
            protocol: 1,
            version: "0.1.0".into(),
            pid: 42,
            uptime_secs: 7,
            socket: "/run/wsync/wsyncd.sock".into(),
            registry: "/home/u/.wsync/registry.json".into(),
            watchdog_passes: 12,
        },
        r#"{"type":"daemon_info","protocol":1,"version":"0.1.0","pid":42,"uptime_secs":7,"socket":"/run/wsync/wsyncd.sock","registry":"/home/u/.wsync/registry.json","watchdog_passes":12}"#,
    );
    pin(
        Response::Workspace {
            workspace: workspace(),
        },
        &format!(r#"{{"type":"workspace","workspace":{WORKSPACE_JSON}}}"#),
    );
    pin(
        Response::Workspaces { workspaces: vec![] },
        r#"{"type":"workspaces","workspaces":[]}"#,
    );
    pin(
        Response::Flushed {
            workspace: "w".into(),
            lagging: vec!["r".into()],
        },
        r#"{"type":"flushed","workspace":"w","lagging":["r"]}"#,
    );
    pin(
        Response::Done {
            message: "ok".into(),
        },
        r#"{"type":"done","message":"ok"}"#,
    );
    pin(
        Response::Error {
            code: ErrorCode::NotFound,
            message: "no workspace named \"x\"".into(),
        },
        r#"{"type":"error","code":"not_found","message":"no workspace named \"x\""}"#,
    );
    for (code, text) in [
        (ErrorCode::BadRequest, "bad_request"),
        (ErrorCode::ProtocolMismatch, "protocol_mismatch"),
        (ErrorCode::Invalid, "invalid"),
        (ErrorCode::Timeout, "timeout"),
        (ErrorCode::Internal, "internal"),
    ] {
        assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{text}\""));
    }
}

#[test]
fn monitor_channel() {
    pin(
        MonitorCommand::Start {
            workspace: workspace(),
            tunables: MonitorTunables {
                settle_ms: 5,
                max_latency_ms: 100,
                proof_interval_ms: 60_000,
                watch_mode: WatchMode::Auto,
                poll_interval_ms: 2000,
                transport: Default::default(),
            },
            progress: vec![],
            pending_dir: None,
        },
        &format!(
            r#"{{"cmd":"start","workspace":{WORKSPACE_JSON},"tunables":{{"settle_ms":5,"max_latency_ms":100,"proof_interval_ms":60000}}}}"#
        ),
    );
    pin(
        MonitorCommand::Start {
            workspace: workspace(),
            tunables: MonitorTunables {
                settle_ms: 5,
                max_latency_ms: 100,
                proof_interval_ms: 60_000,
                watch_mode: WatchMode::Auto,
                poll_interval_ms: 2000,
                transport: Default::default(),
            },
            progress: vec!["mirror".into()],
            pending_dir: Some("/home/me/.wsync/pending".into()),
        },
        &format!(
            r#"{{"cmd":"start","workspace":{WORKSPACE_JSON},"tunables":{{"settle_ms":5,"max_latency_ms":100,"proof_interval_ms":60000}},"progress":["mirror"],"pending_dir":"/home/me/.wsync/pending"}}"#
        ),
    );
    pin(
        MonitorCommand::Attach {
            remote: workspace().remotes[0].clone(),
            progress: true,
        },
        r#"{"cmd":"attach","remote":{"name":"mirror","target":{"kind":"local","path":"/srv/m"}},"progress":true}"#,
    );
    let old: MonitorCommand = decode(
        br#"{"cmd":"attach","remote":{"name":"mirror","target":{"kind":"local","path":"/srv/m"}}}"#,
    )
    .unwrap();
    assert!(matches!(
        old,
        MonitorCommand::Attach {
            progress: false,
            ..
        }
    ));
    pin(
        MonitorCommand::Detach { remote: "r".into() },
        r#"{"cmd":"detach","remote":"r"}"#,
    );
    pin(MonitorCommand::Pause, r#"{"cmd":"pause"}"#);
    pin(MonitorCommand::Resume, r#"{"cmd":"resume"}"#);
    pin(
        MonitorCommand::Flush {
            id: 7,
            timeout_ms: 1000,
        },
        r#"{"cmd":"flush","id":7,"timeout_ms":1000}"#,
    );
    pin(MonitorCommand::Resync, r#"{"cmd":"resync"}"#);
    pin(
        MonitorCommand::ChecksumResync { remote: None },
        r#"{"cmd":"checksum_resync"}"#,
    );
    pin(
        MonitorCommand::ChecksumResync {
            remote: Some("mirror".into()),
        },
        r#"{"cmd":"checksum_resync","remote":"mirror"}"#,
    );
    pin(MonitorCommand::Shutdown, r#"{"cmd":"shutdown"}"#);
    pin(
        MonitorEvent::Flushed {
            id: 7,
            lagging: vec![],
        },
        r#"{"event":"flushed","id":7,"lagging":[]}"#,
    );
    pin(MonitorEvent::Heartbeat, r#"{"event":"heartbeat"}"#);
    pin(
        MonitorEvent::Detached {
            remote: "mirror".into(),
        },
        r#"{"event":"detached","remote":"mirror"}"#,
    );
    pin(
        MonitorEvent::Synced {
            remote: "mirror".into(),
            batch: SyncedBatch {
                full: false,
                paths: 1,
                files: 1,
                bytes: 1024,
                oldest_change_us: Some(900),
                latency_p50_us: Some(900),
                latency_p99_us: Some(900),
            },
        },
        r#"{"event":"synced","remote":"mirror","batch":{"full":false,"paths":1,"files":1,"bytes":1024,"oldest_change_us":900,"latency_p50_us":900,"latency_p99_us":900}}"#,
    );
}

fn remote_status(progress: Option<SyncProgress>) -> RemoteStatus {
    RemoteStatus {
        name: "m".into(),
        state: RemoteState::InitialSync,
        last_sync_unix_ms: None,
        files_sent: 0,
        bytes_sent: 0,
        pending: 1,
        consecutive_failures: 0,
        last_error: None,
        next_retry_unix_ms: None,
        progress,
        verified_unix_ms: None,
        throughput: None,
        transport: None,
        rsync: None,
    }
}

const STATUS_JSON: &str = r#"{"event":"status","status":{"workspace":"w","watches":3,"overflows":0,"rescans":0,"watch_error":null,"halted":null,"paused":false,"remotes":[{"name":"m","state":"initial-sync","last_sync_unix_ms":null,"files_sent":0,"bytes_sent":0,"pending":1,"consecutive_failures":0,"last_error":null,"next_retry_unix_ms":null"#;

#[test]
fn monitor_status_with_and_without_progress() {
    let status = |progress| MonitorEvent::Status {
        status: MonitorStatus {
            workspace: "w".into(),
            watches: 3,
            remotes: vec![remote_status(progress)],
            ..MonitorStatus::default()
        },
    };
    // Without progress the line is what it was before the field existed.
    pin(status(None), &format!("{STATUS_JSON}}}]}}}}"));
    pin(
        status(Some(SyncProgress {
            bytes_done: 1_234_567,
            bytes_total: Some(2_743_482),
            files_done: 66,
            files_total: None,
        })),
        &format!(
            r#"{STATUS_JSON},"progress":{{"bytes_done":1234567,"bytes_total":2743482,"files_done":66,"files_total":null}}}}]}}}}"#
        ),
    );
}

#[test]
fn proof_of_sync_and_throughput_in_status() {
    let mut remote = remote_status(None);
    remote.state = RemoteState::Unverified;
    remote.verified_unix_ms = Some(1_700_000_000_000);
    remote.throughput = Some(Throughput {
        latency_p50_us: 4_100,
        latency_p99_us: 12_000,
        samples: 1000,
        files_last_minute: 30,
        bytes_last_minute: 40_960,
    });
    let event = MonitorEvent::Status {
        status: MonitorStatus {
            workspace: "w".into(),
            watches: 3,
            remotes: vec![remote],
            ..MonitorStatus::default()
        },
    };
    pin(
        event,
        &format!(
            r#"{},"verified_unix_ms":1700000000000,"throughput":{{"latency_p50_us":4100,"latency_p99_us":12000,"samples":1000,"files_last_minute":30,"bytes_last_minute":40960}}}}]}}}}"#,
            STATUS_JSON.replace("initial-sync", "unverified")
        ),
    );
}

#[test]
fn a_poll_interval_other_than_the_default_is_sent_and_an_older_daemons_start_gets_the_default() {
    pin(
        MonitorTunables {
            poll_interval_ms: 200,
            ..MonitorTunables::default()
        },
        r#"{"settle_ms":5,"max_latency_ms":100,"proof_interval_ms":60000,"poll_interval_ms":200}"#,
    );
    let old: MonitorTunables =
        serde_json::from_str(r#"{"settle_ms":5,"max_latency_ms":100}"#).unwrap();
    assert_eq!(old.poll_interval_ms, 2000);
    assert_eq!(old.poll_interval(), std::time::Duration::from_secs(2));
}

#[test]
fn a_watch_mode_other_than_auto_is_sent_and_the_backend_is_reported() {
    for (mode, name) in [
        (WatchMode::Inotify, "inotify"),
        (WatchMode::Notify, "notify"),
        (WatchMode::Poll, "poll"),
    ] {
        pin(
            MonitorTunables {
                watch_mode: mode,
                transport: Default::default(),
                ..MonitorTunables::default()
            },
            &format!(
                r#"{{"settle_ms":5,"max_latency_ms":100,"proof_interval_ms":60000,"watch_mode":"{name}"}}"#
            ),
        );
    }
    for (backend, name) in [
        (WatchBackendKind::Inotify, "inotify"),
        (WatchBackendKind::Notify, "notify"),
        (WatchBackendKind::Poll, "poll"),
    ] {
        pin(
            MonitorStatus {
                workspace: "w".into(),
                watch_backend: Some(backend),
                ..MonitorStatus::default()
            },
            &format!(
                r#"{{"workspace":"w","watch_backend":"{name}","watches":0,"overflows":0,"rescans":0,"watch_error":null,"halted":null,"paused":false,"remotes":[]}}"#
            ),
        );
    }
}

#[test]
fn tunables_from_an_older_daemon_default_the_proof_interval() {
    let t: MonitorTunables =
        serde_json::from_str(r#"{"settle_ms":5,"max_latency_ms":100}"#).unwrap();
    assert_eq!(t.proof_interval_ms, 60_000);
    assert_eq!(t.watch_mode, WatchMode::Auto);
}

#[test]
fn remote_states_are_pinned() {
    for (state, name) in [
        (RemoteState::InitialSync, "initial-sync"),
        (RemoteState::InSync, "in-sync"),
        (RemoteState::Syncing, "syncing"),
        (RemoteState::Backoff, "backoff"),
        (RemoteState::Halted, "halted"),
        (RemoteState::Error, "error"),
        (RemoteState::Paused, "paused"),
        (RemoteState::Unverified, "unverified"),
        (RemoteState::Stalled, "stalled"),
    ] {
        pin(state, &format!("\"{name}\""));
    }
    let mut stalled = remote_status(None);
    stalled.state = RemoteState::Stalled;
    stalled.last_error =
        Some("reading the target marker /m/.wsync-target has not returned within 10 s".into());
    let json = serde_json::to_string(&stalled).unwrap();
    assert!(json.contains(r#""state":"stalled""#), "{json}");
    assert_eq!(
        serde_json::from_str::<RemoteStatus>(&json).unwrap(),
        stalled
    );
}

#[test]
fn a_registry_entry_without_an_id_still_decodes() {
    let old = WORKSPACE_JSON.replace(r#""id":"0123abcd","#, "");
    let ws: Workspace = serde_json::from_str(&old).unwrap();
    assert_eq!(ws.id, "");
    assert_eq!(ws.root_id, None);
    // The root's identity, when recorded, follows max_delete.
    let mut ws = workspace();
    ws.root_id = Some(RootIdentity {
        dev: 2049,
        ino: 131,
    });
    let json = serde_json::to_string(&ws).unwrap();
    assert!(
        json.ends_with(r#""respect_gitignore":true,"root_id":{"dev":2049,"ino":131}}"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Workspace>(&json).unwrap(), ws);
}

#[test]
fn monitor_process_states() {
    for (state, golden) in [
        (MonitorProcessState::Idle, r#""idle""#),
        (MonitorProcessState::Paused, r#""paused""#),
        (MonitorProcessState::Running, r#""running""#),
        (MonitorProcessState::Unresponsive, r#""unresponsive""#),
        (MonitorProcessState::BackingOff, r#""backing_off""#),
        (MonitorProcessState::Failed, r#""failed""#),
        (MonitorProcessState::Stopped, r#""stopped""#),
    ] {
        assert_eq!(serde_json::to_string(&state).unwrap(), golden);
        assert_eq!(
            serde_json::from_str::<MonitorProcessState>(golden).unwrap(),
            state
        );
    }
}
