//! End-to-end: the event stream (`subscribe` on the daemon socket). A change in a workspace is
//! pushed as it happens (pending, syncing, synced, proof), registry changes too, a workspace
//! filter keeps other workspaces' events away, a subscriber that never reads is dropped with a
//! final `lagged` event while the daemon and other subscribers carry on, and a protocol-1
//! client is still served (and told subscribe needs protocol 2).

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use wsync_core::framing::{read_frame, write_frame, FrameError};
use wsync_core::monitor_proto::RemoteState;
use wsync_core::protocol::{
    ErrorCode, Event, EventKind, Request, Response, WorkspaceChange, PROTOCOL_VERSION,
};
use wsync_tests::env::TestEnv;

const WAIT: Duration = Duration::from_secs(30);

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 test path")
}

/// A raw connection that said hello with `protocol`.
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn open(env: &TestEnv, protocol: u32) -> Self {
        let stream = UnixStream::connect(&env.socket).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut conn = Self {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        };
        let hello = Request::Hello {
            protocol,
            version: "test".into(),
        };
        match conn.request(&hello) {
            Response::Hello { protocol: p, .. } if p == protocol => conn,
            other => env.fail(&format!("hello with protocol {protocol}: {other:?}")),
        }
    }

    fn subscribed(env: &TestEnv, workspace: Option<&str>) -> Self {
        let mut conn = Self::open(env, PROTOCOL_VERSION);
        let request = Request::Subscribe {
            workspace: workspace.map(str::to_owned),
        };
        match conn.request(&request) {
            Response::Subscribed { queue, .. } if queue > 0 => conn,
            other => env.fail(&format!("subscribe: {other:?}")),
        }
    }

    fn send(&mut self, request: &Request) {
        write_frame(&mut self.writer, request).expect("write request");
    }

    fn recv(&mut self) -> Result<Response, FrameError> {
        read_frame(&mut self.reader)
    }

    fn request(&mut self, request: &Request) -> Response {
        self.send(request);
        self.recv().expect("an answer")
    }

    /// Reads events until one satisfies `wanted` (returned) or WAIT passes; every event read
    /// is appended to `seen`.
    fn wait_for(
        &mut self,
        env: &TestEnv,
        what: &str,
        seen: &mut Vec<Event>,
        wanted: impl Fn(&Event) -> bool,
    ) -> Event {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.recv() {
                Ok(Response::Event { event }) => {
                    seen.push(event.clone());
                    if wanted(&event) {
                        return event;
                    }
                }
                Ok(other) => env.fail(&format!("waiting for {what}: unexpected {other:?}")),
                Err(e) => env.fail(&format!(
                    "waiting for {what}: {e}; events so far: {seen:#?}"
                )),
            }
        }
        env.fail(&format!("no {what} within {WAIT:?}; events: {seen:#?}"))
    }
    /// As [`Self::wait_for`], but an event already in `seen[from..]` counts: one status report
    /// gives several events at once, in an order a test should not rely on.
    fn seen_or_wait_for(
        &mut self,
        env: &TestEnv,
        what: &str,
        seen: &mut Vec<Event>,
        from: usize,
        wanted: impl Fn(&Event) -> bool,
    ) -> Event {
        if let Some(event) = seen[from..].iter().find(|e| wanted(e)) {
            return event.clone();
        }
        self.wait_for(env, what, seen, wanted)
    }
}

fn is_change(event: &Event, workspace: &str, change: WorkspaceChange) -> bool {
    event.workspace.as_deref() == Some(workspace) && event.kind == EventKind::Workspace { change }
}

#[test]
fn a_change_is_pushed_as_pending_then_synced_and_proved_and_the_filter_holds() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let src = env.mkdir("src");
    let other = env.mkdir("other");
    env.wsync_ok(&["add", s(&src)]);
    env.wsync_ok(&["add", s(&other)]);
    let mut all = Conn::subscribed(&env, None);
    // Filtered by path: the daemon resolves it to the workspace's name.
    let mut only_src = Conn::subscribed(&env, Some(s(&src)));
    let mirror = env.root.join("mirror");
    env.wsync_ok(&["attach", "src", s(&mirror), "--no-wait"]);
    let mut seen = Vec::new();
    all.wait_for(&env, "the attach", &mut seen, |e| {
        is_change(e, "src", WorkspaceChange::Attached)
    });
    all.wait_for(&env, "the initial sync to end in sync", &mut seen, |e| {
        matches!(
            &e.kind,
            EventKind::RemoteState {
                state: RemoteState::InSync,
                ..
            }
        )
    });

    // Paused, the change waits (a closed file is otherwise sent at once, often before a status
    // could show it pending); resumed, it is sent.
    env.wsync_ok(&["pause", "src"]);
    std::fs::write(src.join("new.txt"), "hello").unwrap();
    let pending = all.wait_for(&env, "the change pending", &mut seen, |e| {
        matches!(&e.kind,
            EventKind::RemoteState { pending, .. } | EventKind::Pending { pending, .. } if *pending > 0)
    });
    assert_eq!(pending.workspace.as_deref(), Some("src"));
    env.wsync_ok(&["resume", "src"]);
    let resumed = seen.len();
    let synced = all.seen_or_wait_for(
        &env,
        "the sync",
        &mut seen,
        resumed,
        |e| matches!(&e.kind, EventKind::Synced { files, .. } if *files > 0),
    );
    let EventKind::Synced {
        remote,
        full,
        paths,
        bytes,
        oldest_change_us,
        latency_p50_us,
        ..
    } = &synced.kind
    else {
        unreachable!()
    };
    assert_eq!(remote, "mirror");
    assert!(*bytes > 0 && latency_p50_us.is_some(), "{synced:?}");
    // The monitor's own report of that batch: incremental, and its change waited through the
    // pause (the pending event came first).
    assert!(
        !*full && *paths >= 1 && oldest_change_us.is_some_and(|us| us > 0),
        "{synced:?}"
    );
    all.seen_or_wait_for(&env, "in sync again", &mut seen, resumed, |e| {
        matches!(
            &e.kind,
            EventKind::RemoteState {
                state: RemoteState::InSync,
                pending: 0,
                ..
            }
        )
    });
    all.seen_or_wait_for(&env, "a proof of sync", &mut seen, resumed, |e| {
        matches!(&e.kind, EventKind::Verified { .. })
    });
    assert_eq!(std::fs::read(mirror.join("new.txt")).unwrap(), b"hello");

    // The filtered subscriber saw the same change and nothing of "other".
    env.wsync_ok(&["pause", "other"]);
    env.wsync_ok(&["pause", "src"]);
    let mut filtered = Vec::new();
    for time in ["first", "second"] {
        only_src.wait_for(
            &env,
            &format!("src paused a {time} time"),
            &mut filtered,
            |e| is_change(e, "src", WorkspaceChange::Paused),
        );
    }
    assert!(
        filtered
            .iter()
            .all(|e| e.workspace.as_deref() == Some("src")),
        "{filtered:#?}"
    );
    assert!(
        filtered
            .iter()
            .any(|e| matches!(e.kind, EventKind::Synced { .. })),
        "{filtered:#?}"
    );

    // Requests still work on a subscribed connection: the answer comes between events.
    all.send(&Request::List {});
    let deadline = Instant::now() + WAIT;
    loop {
        match all.recv().expect("a frame") {
            Response::Workspaces { workspaces } => {
                assert_eq!(workspaces.len(), 2);
                break;
            }
            Response::Event { .. } if Instant::now() < deadline => {}
            other => env.fail(&format!("expected the list: {other:?}")),
        }
    }
    match all.request(&Request::Subscribe { workspace: None }) {
        Response::Error {
            code: ErrorCode::Invalid,
            message,
        } => assert!(message.contains("subscribed already"), "{message}"),
        other => env.fail(&format!("a second subscribe: {other:?}")),
    }
    // A filter naming no workspace is refused like any request's.
    let mut conn = Conn::open(&env, PROTOCOL_VERSION);
    match conn.request(&Request::Subscribe {
        workspace: Some("nope".into()),
    }) {
        Response::Error {
            code: ErrorCode::NotFound,
            ..
        } => {}
        other => env.fail(&format!("subscribe to nothing: {other:?}")),
    }

    // Stopping the daemon ends every stream with daemon_stopping.
    env.stop_daemon();
    all.wait_for(&env, "daemon_stopping", &mut seen, |e| {
        e.kind == EventKind::DaemonStopping {}
    });
}

#[test]
fn a_subscriber_that_never_reads_is_dropped_with_lagged_and_slows_nothing() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let src = env.mkdir("src");
    env.wsync_ok(&["add", s(&src)]);
    let mut slow = Conn::subscribed(&env, None);
    let mut reader = Conn::subscribed(&env, Some("src"));
    // Registry changes are cheap events: toggle until the daemon has dropped the slow one.
    let mut control = Conn::open(&env, PROTOCOL_VERSION);
    let mut toggles = 0;
    let mut seen = Vec::new();
    let dropped = loop {
        for paused in [true, false] {
            let request = if paused {
                Request::Pause {
                    workspace: "src".into(),
                }
            } else {
                Request::Resume {
                    workspace: "src".into(),
                }
            };
            let answer = control.request(&request);
            assert!(matches!(answer, Response::Workspace { .. }), "{answer:?}");
            // The reading subscriber keeps up with every one of them.
            let change = if paused {
                WorkspaceChange::Paused
            } else {
                WorkspaceChange::Resumed
            };
            reader.wait_for(&env, "the toggle's event", &mut seen, |e| {
                is_change(e, "src", change)
            });
        }
        toggles += 1;
        if toggles % 25 == 0 && env.logs().contains("fell 256 events behind") {
            break true;
        }
        if toggles > 2000 {
            break false;
        }
    };
    if !dropped {
        env.fail("2000 toggles and the subscriber that never reads was not dropped");
    }
    // Now it reads: what was queued, then `lagged` last, then the end of the connection.
    let mut last = None;
    let mut events = 0;
    loop {
        match slow.recv() {
            Ok(Response::Event { event }) => {
                events += 1;
                last = Some(event);
            }
            Ok(other) => env.fail(&format!("unexpected {other:?}")),
            Err(FrameError::Closed) => break,
            Err(e) => env.fail(&format!("reading the dropped subscriber: {e}")),
        }
    }
    let last = last.expect("events before the drop");
    assert_eq!(
        last.kind,
        EventKind::Lagged { queue: 256 },
        "the last of {events} events"
    );
    assert!(
        events > 256,
        "{events} events: the queue's and the socket's"
    );
    // The daemon is unaffected: it answers, and a new subscriber gets events.
    let answer = control.request(&Request::Status { workspace: None });
    assert!(matches!(answer, Response::Status { .. }), "{answer:?}");
    let mut fresh = Conn::subscribed(&env, None);
    env.wsync_ok(&["pause", "src"]);
    fresh.wait_for(&env, "a pause after the drop", &mut Vec::new(), |e| {
        is_change(e, "src", WorkspaceChange::Paused)
    });
}

#[test]
fn a_protocol_1_client_is_answered_in_protocol_1_and_cannot_subscribe() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let src = env.mkdir("src");
    env.wsync_ok(&["add", s(&src)]);
    let mut old = Conn::open(&env, 1);
    match old.request(&Request::Status { workspace: None }) {
        Response::Status { workspaces } => assert_eq!(workspaces.len(), 1),
        other => env.fail(&format!("status for an old client: {other:?}")),
    }
    match old.request(&Request::Subscribe { workspace: None }) {
        Response::Error {
            code: ErrorCode::BadRequest,
            message,
        } => assert!(message.contains("protocol 2"), "{message}"),
        other => env.fail(&format!("subscribe in protocol 1: {other:?}")),
    }
    // The connection still serves the old client afterwards.
    assert!(matches!(
        old.request(&Request::List {}),
        Response::Workspaces { .. }
    ));
}

/// A running CLI whose stdout lines arrive on a channel.
struct Streaming {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Streaming {
    fn start(env: &TestEnv, args: &[&str]) -> Self {
        Self::start_in(env, &env.root, args)
    }

    fn start_in(env: &TestEnv, cwd: &Path, args: &[&str]) -> Self {
        let mut child = env
            .command("wsync")
            .current_dir(cwd)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn wsync");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// Lines until one contains `needle` (returned), failing after WAIT.
    fn line_with(&self, env: &TestEnv, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        env.fail(&format!(
            "no line with {needle:?} within {WAIT:?}; got {seen:#?}"
        ))
    }

    fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write stdin");
        stdin.flush().unwrap();
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn wsync_events_and_status_watch_follow_the_stream() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let src = env.mkdir("src");
    let other = env.mkdir("other");
    env.wsync_ok(&["add", s(&src)]);
    env.wsync_ok(&["add", s(&other)]);
    let json = Streaming::start(&env, &["events", "--all", "--json"]);
    // Standing in a workspace, the stream is that workspace's.
    let human = Streaming::start_in(&env, &src, &["events"]);
    let watch = Streaming::start(&env, &["status", "src", "--watch", "--json"]);
    let first = watch.line_with(&env, "\"paused\":false");
    assert!(first.starts_with('['), "{first}");
    // Subscriptions are registered before the first snapshot is printed; wait for both
    // `events` to be subscribed the same way: their first event proves it.
    poll_subscribed(&env, 3);
    env.wsync_ok(&["pause", "other"]);
    env.wsync_ok(&["pause", "src"]);
    let line = json.line_with(&env, r#""kind":"workspace","change":"paused""#);
    let event: Event = serde_json::from_str(&line).expect("an event per line");
    assert_eq!(event.workspace.as_deref(), Some("other"));
    let line = human.line_with(&env, "workspace paused");
    assert!(line.contains(" src workspace paused"), "{line}");
    // status --watch printed a new snapshot for the change, without being asked.
    let line = watch.line_with(&env, "\"paused\":true");
    let statuses: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(statuses[0]["workspace"]["name"], "src");
    // The daemon stopping ends `events` with exit 0.
    env.stop_daemon();
    let mut json = json;
    json.line_with(&env, "daemon_stopping");
    let status = json.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "events after the daemon stopped");
}

/// Waits until `n` subscriptions have been registered (the daemon logs each).
fn poll_subscribed(env: &TestEnv, n: usize) {
    wsync_tests::poll::poll_until(
        "the subscriptions",
        WAIT,
        wsync_tests::poll::INTERVAL,
        || (env.logs().matches("event subscriber added").count() >= n).then_some(()),
    )
    .unwrap_or_else(|e| env.fail(&e.to_string()));
}

#[test]
fn wsync_client_relays_both_ways_and_needs_a_daemon() {
    let mut env = TestEnv::new();
    // No daemon: a clear error, nothing started.
    let out = env.wsync(&["client"]);
    assert_eq!(out.code(), Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains("wsyncd is not running"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("wsync daemon start"), "{}", out.stderr);
    assert!(!env.socket.exists());

    env.start_daemon();
    let src = env.mkdir("src");
    env.wsync_ok(&["add", s(&src)]);
    let mut bridge = Streaming::start(&env, &["client"]);
    bridge.send(&format!(
        r#"{{"type":"hello","protocol":{PROTOCOL_VERSION},"version":"editor"}}"#
    ));
    bridge.line_with(&env, r#""type":"hello""#);
    bridge.send(r#"{"type":"list"}"#);
    let line = bridge.line_with(&env, r#""type":"workspaces""#);
    assert!(line.contains(r#""name":"src""#), "{line}");
    bridge.send(r#"{"type":"subscribe","workspace":"src"}"#);
    bridge.line_with(&env, r#""type":"subscribed""#);
    env.wsync_ok(&["pause", "src"]);
    bridge.line_with(&env, r#""change":"paused""#);
    // What the daemon refuses is relayed like the rest.
    bridge.send("not json");
    bridge.line_with(&env, r#""code":"bad_request""#);
    // stdin's end closes the connection and the bridge exits 0.
    drop(bridge.child.stdin.take());
    let status = poll_exit(&mut bridge.child);
    assert_eq!(status.code(), Some(0));
}

fn poll_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    wsync_tests::poll::poll_until(
        "the process to exit",
        WAIT,
        wsync_tests::poll::INTERVAL,
        || child.try_wait().ok().flatten(),
    )
    .expect("exited")
}
