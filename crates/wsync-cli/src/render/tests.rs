//! Tests of the tables and relative times.

use std::path::PathBuf;

use wsync_core::monitor_proto::{MonitorStatus, RemoteState, RemoteStatus};
use wsync_core::protocol::{MonitorProcessState, SupervisorStatus, WorkspaceStatus};
use wsync_core::registry::{Remote, Workspace};
use wsync_core::remote::RemoteTarget;

use super::*;

#[test]
fn relative_times() {
    let now = 1_000_000_000;
    assert_eq!(ago(now, None), "never");
    assert_eq!(ago(now, Some(now - 400)), "just now");
    assert_eq!(ago(now, Some(now + 5_000)), "just now");
    assert_eq!(ago(now, Some(now - 3_000)), "3 s ago");
    assert_eq!(ago(now, Some(now - 59_999)), "59 s ago");
    assert_eq!(ago(now, Some(now - 120_000)), "2 min ago");
    assert_eq!(ago(now, Some(now - 2 * 3_600_000 - 5)), "2 h ago");
    assert_eq!(ago(now, Some(now - 3 * 86_400_000)), "3 d ago");
}

#[test]
fn durations() {
    assert_eq!(duration(0), "0 s");
    assert_eq!(duration(45), "45 s");
    assert_eq!(duration(125), "2 min 5 s");
    assert_eq!(duration(3 * 3600 + 4 * 60 + 9), "3 h 4 min");
    assert_eq!(duration(2 * 86_400 + 3 * 3600), "2 d 3 h");
}

fn workspace(name: &str, remotes: &[&str]) -> Workspace {
    Workspace {
        name: name.into(),
        id: String::new(),
        path: PathBuf::from(format!("/src/{name}")),
        remotes: remotes
            .iter()
            .map(|r| {
                Remote::new(
                    *r,
                    RemoteTarget::Local {
                        path: PathBuf::from(format!("/mirror/{r}")),
                    },
                )
            })
            .collect(),
        paused: false,
        excludes: vec![],
        respect_gitignore: true,
        max_delete: None,
        checksum_every_secs: None,
        tuning: Default::default(),
        root_id: None,
    }
}

fn supervisor(state: MonitorProcessState) -> SupervisorStatus {
    SupervisorStatus {
        state,
        pid: (state == MonitorProcessState::Running).then_some(4242),
        restarts: 0,
        last_exit: None,
        last_log_lines: vec![],
        next_restart_unix_ms: None,
    }
}

fn remote(
    name: &str,
    state: RemoteState,
    last_sync: Option<u64>,
    err: Option<&str>,
) -> RemoteStatus {
    RemoteStatus {
        name: name.into(),
        state,
        last_sync_unix_ms: last_sync,
        files_sent: 0,
        bytes_sent: 0,
        pending: 2,
        consecutive_failures: 0,
        last_error: err.map(Into::into),
        next_retry_unix_ms: None,
        progress: None,
        verified_unix_ms: None,
        throughput: None,
        transport: None,
        rsync: None,
    }
}

fn sample() -> Vec<WorkspaceStatus> {
    let now = 1_000_000;
    let mut failed = supervisor(MonitorProcessState::Failed);
    failed.restarts = 5;
    failed.last_exit = Some("exit status 1".into());
    vec![
        WorkspaceStatus {
            workspace: workspace("alpha", &["good", "bad"]),
            monitor: supervisor(MonitorProcessState::Running),
            report: Some(MonitorStatus {
                workspace: "alpha".into(),
                remotes: vec![
                    remote("good", RemoteState::InSync, Some(now - 3_000), None),
                    remote(
                        "bad",
                        RemoteState::Error,
                        Some(now - 120_000),
                        Some("rsync\nexit 23"),
                    ),
                ],
                ..MonitorStatus::default()
            }),
            watch_mode: None,
        },
        WorkspaceStatus {
            workspace: workspace("beta", &[]),
            monitor: supervisor(MonitorProcessState::Idle),
            report: None,
            watch_mode: None,
        },
        WorkspaceStatus {
            workspace: workspace("gamma", &["m"]),
            monitor: failed,
            report: None,
            watch_mode: None,
        },
    ]
}

#[test]
fn rows_put_problems_first_worst_first() {
    let rows = status_rows(&sample());
    let order: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.workspace.as_str(), r.remote.as_str(), r.state))
        .collect();
    assert_eq!(
        order,
        [
            ("gamma", "m", "failed"),
            ("alpha", "bad", "error"),
            ("alpha", "good", "in-sync"),
            ("beta", "-", "idle"),
        ]
    );
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some("monitor ended: exit status 1")
    );
    assert_eq!(rows[1].last_error.as_deref(), Some("rsync exit 23"));
    assert_eq!(rows[2].pid, Some(4242));
}

#[test]
fn status_table_is_aligned_and_plain_without_colour() {
    let text = status_table(&sample(), 1_000_000, false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("WORKSPACE  REMOTE  STATE"), "{text}");
    assert!(lines[1].starts_with("gamma      m       failed"), "{text}");
    assert!(lines[2].contains("2 min ago"), "{text}");
    assert!(lines[3].contains("3 s ago"), "{text}");
    let state_col = lines[0].find("STATE").unwrap();
    for line in &lines[1..] {
        assert_ne!(line.as_bytes()[state_col], b' ', "misaligned: {line}");
        assert_eq!(&line[state_col - 2..state_col], "  ", "misaligned: {line}");
    }
    assert!(!text.contains('\x1b'));
    let coloured = status_table(&sample(), 1_000_000, true);
    assert!(coloured.contains("\x1b[1;31mfailed\x1b[0m"), "{coloured}");
}

#[test]
fn the_transport_column_says_which_and_why_rsync() {
    use wsync_core::monitor_proto::TransportStatus;
    let mut ws = sample().remove(0);
    let report = ws.report.as_mut().unwrap();
    report.remotes[0].transport = Some(TransportStatus::Agent {
        version: "0.1.0".into(),
        protocol: 1,
    });
    report.remotes[1].transport = Some(TransportStatus::Rsync {
        why: "the agent could not be installed: cannot create the directory /x".into(),
    });
    let text = status_table(&[ws], 1_000_000, false);
    assert!(text.lines().next().unwrap().contains("TRANSPORT"), "{text}");
    assert!(text.contains("  agent  "), "{text}");
    assert!(
        text.contains("rsync: the agent could not be installed: cannot create the"),
        "{text}"
    );
}

#[test]
fn paused_halted_and_unreported_remotes() {
    let mut ws = sample().remove(0);
    ws.report.as_mut().unwrap().halted = Some("workspace root vanished".into());
    let rows = status_rows(std::slice::from_ref(&ws));
    assert!(rows.iter().all(|r| r.state == "halted"));
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some("workspace root vanished")
    );
    ws.report = None;
    assert!(status_rows(std::slice::from_ref(&ws))
        .iter()
        .all(|r| r.state == "starting"));
    ws.workspace.paused = true;
    assert!(status_rows(&[ws]).iter().all(|r| r.state == "paused"));
}

#[test]
fn a_stalled_remote_is_a_problem_named_with_its_call() {
    let mut ws = sample().remove(0);
    let report = ws.report.as_mut().unwrap();
    report.remotes[0] = remote(
        "good",
        RemoteState::Stalled,
        None,
        Some("reading the target marker /mnt/nfs/m/.wsync-target has not returned within 10 s"),
    );
    let rows = status_rows(std::slice::from_ref(&ws));
    assert_eq!(rows[0].state, "stalled");
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("reading the target marker /mnt/nfs/m/")),
        "{rows:?}"
    );
    let coloured = status_table(&[ws], 1_000_000, true);
    assert!(coloured.contains("\x1b[1;31mstalled\x1b[0m"), "{coloured}");
}

#[test]
fn list_table_shows_remotes_and_paused() {
    let mut beta = workspace("beta", &[]);
    beta.paused = true;
    let text = list_table(&[workspace("alpha", &["m1", "m2"]), beta]);
    assert_eq!(
        text,
        "NAME   PATH        REMOTES                       PAUSED\n\
         alpha  /src/alpha  m1=/mirror/m1, m2=/mirror/m2  no\n\
         beta   /src/beta   -                             yes\n"
    );
    assert!(list_table(&[]).contains("wsync add"));
}

#[test]
fn long_errors_are_cut_to_one_line() {
    let long = "x".repeat(200);
    let cut = one_line(&long, 10);
    assert_eq!(cut.chars().count(), 10);
    assert!(cut.ends_with('…'));
}

#[test]
fn no_color_turns_colour_off_only_when_non_empty() {
    use std::ffi::OsStr;
    assert!(colour_allowed(None, true));
    assert!(colour_allowed(Some(OsStr::new("")), true));
    assert!(!colour_allowed(Some(OsStr::new("1")), true));
    assert!(!colour_allowed(None, false));
}

#[test]
fn an_unresponsive_monitor_is_a_problem_named_with_its_fix() {
    let mut statuses = sample();
    statuses[0].monitor.state = MonitorProcessState::Unresponsive;
    let rows = status_rows(&statuses);
    let order: Vec<(&str, &str)> = rows.iter().map(|r| (r.remote.as_str(), r.state)).collect();
    assert_eq!(
        order,
        [
            ("m", "failed"),
            ("good", "unresponsive"),
            ("bad", "unresponsive"),
            ("-", "idle"),
        ]
    );
    let good = &rows[1];
    assert_eq!(
        good.last_error.as_deref(),
        Some("monitor stuck (no heartbeats); restarted automatically, see `wsync logs alpha`")
    );
}

#[test]
fn the_watch_cell_shows_the_mode_and_what_auto_chose() {
    use wsync_core::monitor_proto::{WatchBackendKind, WatchMode};
    let cell = |mode: Option<WatchMode>, backend: Option<WatchBackendKind>| {
        let mut ws = sample().remove(0);
        ws.watch_mode = mode;
        if let Some(report) = ws.report.as_mut() {
            report.watch_backend = backend;
        }
        watch_cell(&ws)
    };
    let (auto, poll, inotify) = (
        Some(WatchMode::Auto),
        Some(WatchBackendKind::Poll),
        Some(WatchBackendKind::Inotify),
    );
    assert_eq!(cell(auto, poll), "auto→poll");
    assert_eq!(cell(auto, inotify), "auto→inotify");
    assert_eq!(cell(Some(WatchMode::Poll), poll), "poll");
    assert_eq!(cell(Some(WatchMode::Inotify), poll), "inotify→poll");
    assert_eq!(cell(Some(WatchMode::Notify), None), "notify");
    assert_eq!(cell(None, None), "-");
    let table = status_table(&sample(), 1_000_000, false);
    assert!(
        table.lines().next().unwrap().contains("  WATCH  "),
        "{table}"
    );
}
