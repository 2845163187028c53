//! Hardening, hostile input on the command socket (issue 6): random bytes, truncated and
//! wrong-shape JSON, requests before `Hello`, a 100 MB line, idle and non-reading clients,
//! 200 concurrent clients, disconnects mid-request, a seeded 10,000-frame fuzz loop, protocol
//! mismatches, socket permissions and the peer-uid check. Each test runs its own real `wsyncd`
//! and afterwards proves it still answers correctly with the registry unchanged.

use std::io::{BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use wsync_core::framing::{read_frame, write_frame, FrameError, MAX_FRAME_BYTES};
use wsync_core::protocol::{ErrorCode, Request, Response, PROTOCOL_VERSION};
use wsync_core::registry::Workspace;
use wsync_tests::env::{pid_alive, TestEnv, DAEMON_START_TIMEOUT};
use wsync_tests::poll::{poll_until, INTERVAL};

/// Per-read deadline on every raw client: a missing answer fails the test instead of hanging it.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A raw client connection speaking the core framing.
struct Raw {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Raw {
    fn connect(env: &TestEnv) -> Self {
        let stream = UnixStream::connect(&env.socket)
            .unwrap_or_else(|e| env.fail(&format!("connect to {}: {e}", env.socket.display())));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        Self {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn greeted(env: &TestEnv) -> Self {
        let mut raw = Self::connect(env);
        match raw.request(&hello()) {
            Ok(Response::Hello { protocol, .. }) => assert_eq!(protocol, PROTOCOL_VERSION),
            other => env.fail(&format!("handshake failed: {other:?}")),
        }
        raw
    }

    fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    fn recv(&mut self) -> Result<Response, FrameError> {
        read_frame(&mut self.reader)
    }

    fn request(&mut self, request: &Request) -> Result<Response, FrameError> {
        write_frame(&mut self.writer, request)?;
        self.recv()
    }

    /// True when the daemon has closed this connection (EOF or reset), false if it sent more.
    fn closed_by_daemon(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

fn hello() -> Request {
    Request::Hello {
        protocol: PROTOCOL_VERSION,
        version: wsync_core::VERSION.into(),
    }
}

fn expect_error(env: &TestEnv, reply: Result<Response, FrameError>, code: ErrorCode, needle: &str) {
    match reply {
        Ok(Response::Error { code: got, message }) if got == code && message.contains(needle) => {}
        other => env.fail(&format!(
            "expected a {code:?} error mentioning {needle:?}, got {other:?}"
        )),
    }
}

/// Registers one workspace so the registry file exists and `List` has something to return.
fn env_with_workspace() -> (TestEnv, Workspace) {
    let mut env = TestEnv::new();
    let dir = env.mkdir("fuzz-target-workspace-dir");
    env.start_daemon();
    let reply = env.request(&Request::Add {
        path: dir,
        name: Some("fuzz-target-workspace".into()),
        excludes: vec!["*.tmp".into()],
    });
    let Response::Workspace { workspace } = reply else {
        env.fail(&format!("add failed: {reply:?}"));
    };
    (env, workspace)
}

/// The daemon is alive, answers `List` with exactly `expected`, and the registry is `bytes`.
fn assert_intact(env: &mut TestEnv, expected: &[Workspace], registry_bytes: &[u8]) {
    if let Some(status) = env.daemon_exit_status() {
        env.fail(&format!("wsyncd exited: {status}"));
    }
    match env.request(&Request::List {}) {
        Response::Workspaces { workspaces } if workspaces == expected => {}
        other => env.fail(&format!(
            "List after abuse: {other:?}, expected {expected:?}"
        )),
    }
    let now = std::fs::read(&env.registry).unwrap_or_default();
    if now != registry_bytes {
        env.fail(&format!(
            "registry changed:\nbefore: {}\nafter: {}",
            String::from_utf8_lossy(registry_bytes),
            String::from_utf8_lossy(&now)
        ));
    }
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// Waits (bounded) until the daemon's open descriptors fall back to `baseline` + `slack`.
fn assert_fds_settle(env: &TestEnv, pid: u32, baseline: usize, slack: usize) {
    let mut now = 0;
    if poll_until(
        "wsyncd's descriptors to settle",
        Duration::from_secs(5),
        INTERVAL,
        || {
            now = open_fds(pid);
            now <= baseline + slack
        },
    )
    .is_err()
    {
        env.fail(&format!(
            "wsyncd leaks descriptors: {baseline} before, {now} after all clients closed"
        ));
    }
}

/// xorshift64*: a tiny deterministic PRNG so the fuzz run is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_bytes_are_refused_and_the_daemon_keeps_serving() {
    let (mut env, ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    let mut rng = Rng(0x5eed_0001);
    for round in 0..8 {
        let mut raw = Raw::connect(&env);
        if round % 2 == 1 {
            let _ = raw.request(&hello());
        }
        // Random binary with newlines sprinkled in: each non-blank line must get an error.
        let len = 4096 + rng.below(8192);
        let mut blob = rng.bytes(len);
        blob.push(b'\n');
        let _ = raw.send_raw(&blob);
        let _ = raw.writer.shutdown(Shutdown::Write);
        let mut replies = 0;
        loop {
            match raw.recv() {
                Ok(Response::Error {
                    code: ErrorCode::BadRequest,
                    ..
                }) => replies += 1,
                Ok(other) => env.fail(&format!("random bytes were answered with {other:?}")),
                Err(FrameError::Closed) => break,
                Err(e) => env.fail(&format!("reading replies to random bytes: {e}")),
            }
        }
        assert!(
            replies > 0,
            "round {round}: random bytes got no error at all"
        );
    }
    assert_intact(&mut env, &[ws], &registry);
}

#[test]
fn truncated_json_then_close_is_harmless() {
    let (mut env, ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    // Before the handshake, after it, and a half-written mutation: half a frame, then EOF.
    for (greet, partial) in [
        (false, &br#"{"type":"hello","protocol":1,"vers"#[..]),
        (true, br#"{"type":"li"#),
        (
            true,
            br#"{"type":"remove","workspace":"fuzz-target-workspace""#,
        ),
    ] {
        let mut raw = if greet {
            Raw::greeted(&env)
        } else {
            Raw::connect(&env)
        };
        raw.send_raw(partial).unwrap();
        raw.writer.shutdown(Shutdown::Write).unwrap();
        expect_error(&env, raw.recv(), ErrorCode::BadRequest, "incomplete");
        assert!(raw.closed_by_daemon(), "connection left open after EOF");
    }
    // Half a frame and a hard close without reading anything back.
    for _ in 0..20 {
        let mut raw = Raw::greeted(&env);
        raw.send_raw(br#"{"type":"remove","works"#).unwrap();
        drop(raw);
    }
    assert_intact(&mut env, &[ws], &registry);
}

#[test]
fn wrong_shape_json_gets_bad_request_before_and_after_hello() {
    let (mut env, ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    let wrong_shapes: Vec<Vec<u8>> =
        vec![
        b"[]".to_vec(),
        b"null".to_vec(),
        b"42".to_vec(),
        b"{}".to_vec(),
        br#"{"protocol":1,"version":"x"}"#.to_vec(),
        br#"{"type":"hello","protocol":"one","version":"x"}"#.to_vec(),
        br#"{"type":"hello","protocol":-1,"version":"x"}"#.to_vec(),
        br#"{"type":"hello","protocol":4294967296,"version":"x"}"#.to_vec(),
        br#"{"type":"add","path":5}"#.to_vec(),
        br#"{"type":"remove","workspace":["fuzz-target-workspace"]}"#.to_vec(),
        br#"{"type":"remove","workspace":"fuzz-target-workspace","workspace":"x"}"#.to_vec(),
        br#"{"type":"attach","workspace":"fuzz-target-workspace","target":"/srv/x","port":70000}"#
            .to_vec(),
        br#"{"type":"remove","workspace":"\ud800"}"#.to_vec(),
        br#"{"type":"list"} {"type":"shutdown"}"#.to_vec(),
        [b"[".repeat(100_000), b"]".repeat(100_000)].concat(),
        [b"{\"a\":".repeat(50_000), b"1".to_vec(), b"}".repeat(50_000)].concat(),
    ];
    // Before the handshake, undecodable frames are answered and the connection goes on.
    let mut raw = Raw::connect(&env);
    for frame in &wrong_shapes {
        raw.send_raw(&[frame.as_slice(), b"\n"].concat()).unwrap();
        expect_error(
            &env,
            raw.recv(),
            ErrorCode::BadRequest,
            "not a valid request",
        );
    }
    assert!(matches!(raw.request(&hello()), Ok(Response::Hello { .. })));
    // After it, too.
    for frame in &wrong_shapes {
        raw.send_raw(&[frame.as_slice(), b"\n"].concat()).unwrap();
        expect_error(
            &env,
            raw.recv(),
            ErrorCode::BadRequest,
            "not a valid request",
        );
    }
    match raw.request(&Request::List {}) {
        Ok(Response::Workspaces { workspaces }) => {
            assert_eq!(workspaces, std::slice::from_ref(&ws))
        }
        other => env.fail(&format!("List on the abused connection: {other:?}")),
    }
    assert_intact(&mut env, &[ws], &registry);
}

#[test]
fn unknown_fields_on_unit_requests_are_refused() {
    let (mut env, ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    let mut raw = Raw::greeted(&env);
    for frame in [
        &br#"{"type":"list","surprise":1}"#[..],
        br#"{"type":"daemon_info","verbose":true}"#,
        br#"{"type":"shutdown","dry_run":true}"#,
    ] {
        raw.send_raw(&[frame, b"\n"].concat()).unwrap();
        expect_error(
            &env,
            raw.recv(),
            ErrorCode::BadRequest,
            "not a valid request",
        );
    }
    assert_intact(&mut env, &[ws], &registry);
}

#[test]
fn requests_before_hello_are_refused_and_never_executed() {
    let (mut env, ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    let other_dir = env.mkdir("would-be-added");
    let requests = [
        Request::List {},
        Request::DaemonInfo {},
        Request::Add {
            path: other_dir.clone(),
            name: None,
            excludes: vec![],
        },
        Request::Remove {
            workspace: ws.name.clone(),
        },
        Request::Pause {
            workspace: ws.name.clone(),
        },
        Request::Shutdown {},
    ];
    for request in &requests {
        let mut raw = Raw::connect(&env);
        expect_error(&env, raw.request(request), ErrorCode::BadRequest, "hello");
        assert!(
            raw.closed_by_daemon(),
            "connection stayed open after {request:?} before hello"
        );
    }
    assert_intact(&mut env, &[ws], &registry);
}

#[test]
fn protocol_mismatch_in_hello_is_refused_with_protocol_mismatch() {
    let (mut env, ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    for protocol in [0, PROTOCOL_VERSION + 1, u32::MAX] {
        let mut raw = Raw::connect(&env);
        let reply = raw.request(&Request::Hello {
            protocol,
            version: "99.0.0".into(),
        });
        match &reply {
            Ok(Response::Error {
                code: ErrorCode::ProtocolMismatch,
                message,
            }) if message.contains(&protocol.to_string())
                && message.contains(&PROTOCOL_VERSION.to_string()) => {}
            other => env.fail(&format!(
                "Hello with protocol {protocol}: expected ProtocolMismatch naming both versions, got {other:?}"
            )),
        }
        // Nothing else is served on that connection.
        let _ = write_frame(&mut raw.writer, &Request::List {});
        assert!(
            raw.closed_by_daemon(),
            "connection stayed open after a protocol mismatch"
        );
    }
    assert_intact(&mut env, &[ws], &registry);
}

#[test]
fn a_100_mb_line_is_cut_off_at_the_frame_limit_without_memory_growth() {
    let (mut env, ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    let pid = env.daemon_pid().unwrap();
    let rss_before = proc_status_kb(pid, "VmRSS");
    const TOTAL: usize = 100 * 1024 * 1024;
    let started = Instant::now();
    for greet in [true, false] {
        let raw = if greet {
            Raw::greeted(&env)
        } else {
            Raw::connect(&env)
        };
        let Raw { mut reader, writer } = raw;
        let mut writer_clone = writer.try_clone().unwrap();
        let pump = std::thread::spawn(move || {
            let chunk = vec![b'a'; 64 * 1024];
            let mut sent = 0usize;
            let _ = writer_clone.write_all(br#"{"type":"add","path":""#);
            while sent < TOTAL {
                match writer_clone.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            sent
        });
        let reply: Result<Response, FrameError> = read_frame(&mut reader);
        expect_error(
            &env,
            reply,
            ErrorCode::BadRequest,
            &MAX_FRAME_BYTES.to_string(),
        );
        let sent = pump.join().unwrap();
        eprintln!(
            "100 MB line (greeted: {greet}): daemon stopped it after the client had written {} KiB",
            sent / 1024
        );
        assert!(
            sent < TOTAL,
            "the daemon read the whole 100 MB line instead of closing at the limit"
        );
        drop(writer);
    }
    let rss_after = proc_status_kb(pid, "VmRSS");
    let hwm = proc_status_kb(pid, "VmHWM");
    eprintln!(
        "wsyncd VmRSS {rss_before} kB before, {rss_after} kB after, peak {hwm} kB; {:?}",
        started.elapsed()
    );
    assert!(
        hwm.saturating_sub(rss_before) < 32 * 1024,
        "wsyncd's memory ballooned: VmRSS {rss_before} kB before, peak {hwm} kB"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_intact(&mut env, &[ws], &registry);
}

#[test]
fn silent_and_non_reading_clients_do_not_delay_others() {
    let (mut env, ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    // Twenty clients that connect and never send, five that stop mid-frame.
    let silent: Vec<Raw> = (0..20).map(|_| Raw::connect(&env)).collect();
    let mut stalled: Vec<Raw> = (0..5).map(|_| Raw::greeted(&env)).collect();
    for raw in &mut stalled {
        raw.send_raw(br#"{"type":"li"#).unwrap();
    }
    // One client floods requests and never reads a reply, until its socket buffer is full.
    let flooder = Raw::greeted(&env);
    flooder
        .writer
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut flood_writer = flooder.writer.try_clone().unwrap();
    let line = wsync_core::framing::encode(&Request::Status { workspace: None });
    let mut flooded = 0usize;
    let flood_deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < flood_deadline && flood_writer.write_all(&line).is_ok() {
        flooded += 1;
    }
    let started = Instant::now();
    for _ in 0..10 {
        let mut raw = Raw::greeted(&env);
        match raw.request(&Request::List {}) {
            Ok(Response::Workspaces { workspaces }) => {
                assert_eq!(workspaces, std::slice::from_ref(&ws))
            }
            other => env.fail(&format!("List while others stall: {other:?}")),
        }
    }
    let took = started.elapsed();
    eprintln!(
        "10 Hello+List round trips beside 20 silent, 5 stalled and 1 flooding client ({flooded} unread requests): {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "requests were slowed down by stalled clients: {took:?}"
    );
    // The stalled clients are still served once they finish their frame.
    for raw in &mut stalled {
        raw.send_raw(b"st\"}\n").unwrap();
        assert!(matches!(raw.recv(), Ok(Response::Workspaces { .. })));
    }
    drop(silent);
    drop(flooder);
    drop(flood_writer);
    assert_intact(&mut env, &[ws], &registry);
}

#[test]
fn two_hundred_concurrent_clients_are_all_answered() {
    let (mut env, ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    let pid = env.daemon_pid().unwrap();
    let fds_before = open_fds(pid);
    const CLIENTS: usize = 200;
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let socket = env.socket.clone();
    let started = Instant::now();
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = barrier.clone();
            let socket = socket.clone();
            std::thread::spawn(move || -> Result<Vec<Workspace>, String> {
                barrier.wait();
                let stream = UnixStream::connect(&socket).map_err(|e| format!("{i}: {e}"))?;
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .map_err(|e| e.to_string())?;
                let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
                let mut reader = BufReader::new(stream);
                write_frame(&mut writer, &hello()).map_err(|e| format!("{i}: {e}"))?;
                match read_frame(&mut reader) {
                    Ok(Response::Hello { .. }) => {}
                    other => return Err(format!("{i}: hello got {other:?}")),
                }
                write_frame(&mut writer, &Request::List {}).map_err(|e| format!("{i}: {e}"))?;
                match read_frame(&mut reader) {
                    Ok(Response::Workspaces { workspaces }) => Ok(workspaces),
                    other => Err(format!("{i}: list got {other:?}")),
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok(Ok(workspaces)) if workspaces == [ws.clone()] => {}
            Ok(Ok(other)) => failures.push(format!("wrong list {other:?}")),
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("client thread panicked".into()),
        }
    }
    let took = started.elapsed();
    eprintln!("{CLIENTS} concurrent Hello+List clients answered in {took:?}");
    if !failures.is_empty() {
        env.fail(&format!(
            "{} of {CLIENTS} clients failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        ));
    }
    assert_fds_settle(&env, pid, fds_before, 2);
    assert_intact(&mut env, &[ws], &registry);
}

#[test]
fn a_client_that_disconnects_mid_request_leaves_a_consistent_daemon() {
    let (mut env, ws) = env_with_workspace();
    let pid = env.daemon_pid().unwrap();
    let fds_before = open_fds(pid);
    // Complete mutations sent, connection dropped before the reply: each may or may not have
    // applied, but the registry file and the daemon's view must agree afterwards.
    let extra = env.mkdir("added-then-hung-up");
    let mut raw = Raw::greeted(&env);
    write_frame(
        &mut raw.writer,
        &Request::Add {
            path: extra.clone(),
            name: Some("hung-up".into()),
            excludes: vec![],
        },
    )
    .unwrap();
    drop(raw);
    let mut raw = Raw::greeted(&env);
    write_frame(
        &mut raw.writer,
        &Request::Pause {
            workspace: ws.name.clone(),
        },
    )
    .unwrap();
    raw.writer.shutdown(Shutdown::Both).unwrap();
    drop(raw);
    // Status and flush requests abandoned mid-way.
    for request in [
        Request::Status { workspace: None },
        Request::Flush {
            workspace: ws.name.clone(),
            timeout_ms: Some(2_000),
        },
    ] {
        let mut raw = Raw::greeted(&env);
        write_frame(&mut raw.writer, &request).unwrap();
        drop(raw);
    }
    // Half a request, then the connection is reset.
    for _ in 0..20 {
        let mut raw = Raw::greeted(&env);
        raw.send_raw(br#"{"type":"attach","workspace":"fuzz-target-workspace","tar"#)
            .unwrap();
        raw.writer.shutdown(Shutdown::Both).unwrap();
    }
    // The daemon answers, and what it says is what the file says.
    let mut listed = Vec::new();
    let settled = poll_until(
        "the registry file and the daemon to agree",
        Duration::from_secs(5),
        INTERVAL,
        || match env.try_request(&Request::List {}) {
            Ok(Response::Workspaces { workspaces }) => {
                listed = workspaces;
                let on_disk = wsync_core::registry::Registry::load(&env.registry)
                    .map(|r| r.workspaces)
                    .unwrap_or_default();
                on_disk == listed
            }
            _ => false,
        },
    )
    .is_ok();
    if !settled {
        env.fail(&format!(
            "registry file and daemon disagree after hang-ups; daemon lists {listed:?}"
        ));
    }
    assert!(listed.iter().any(|w| w.name == ws.name));
    assert!(listed.len() <= 2, "{listed:?}");
    assert_fds_settle(&env, pid, fds_before, 2);
    assert!(env.daemon_exit_status().is_none(), "wsyncd exited");
}

/// Requests that change nothing when aimed at the workspace "nope" (which never exists).
const CORPUS: &[&str] = &[
    r#"{"type":"hello","protocol":1,"version":"0.1.0"}"#,
    r#"{"type":"daemon_info"}"#,
    r#"{"type":"list"}"#,
    r#"{"type":"status"}"#,
    r#"{"type":"status","workspace":"nope"}"#,
    r#"{"type":"add","path":"/nonexistent/fuzz/dir","name":"nope","excludes":["*.o"]}"#,
    r#"{"type":"remove","workspace":"nope"}"#,
    r#"{"type":"attach","workspace":"nope","target":"host:/srv/x","name":"r","port":22,"identity_file":null,"ssh_options":["ConnectTimeout=5"]}"#,
    r#"{"type":"detach","workspace":"nope","remote":"r"}"#,
    r#"{"type":"pause","workspace":"nope"}"#,
    r#"{"type":"resume","workspace":"nope"}"#,
    r#"{"type":"flush","workspace":"nope","timeout_ms":10}"#,
    r#"{"type":"restart","workspace":"nope"}"#,
];

const TOKENS: &[&str] = &[
    "null",
    "-1",
    "1e999",
    "18446744073709551616",
    "\"\\ud800\"",
    "[]",
    "{}",
    "\"\"",
    "\"-oProxyCommand=touch /tmp/x\"",
    "\"$(id)\"",
    "true",
    "\"shutdown\"",
    "\"hello\"",
    ",",
    ":",
    "\"",
    "\\",
];

/// One fuzz frame: a mutated corpus request or garbage, without newlines, never blank.
fn fuzz_frame(rng: &mut Rng) -> Vec<u8> {
    let mut frame = match rng.below(10) {
        0 | 1 => {
            let len = rng.below(300);
            rng.bytes(len)
        }
        2 => {
            // Deep nesting or a long string.
            let depth = 1 + rng.below(5000);
            match rng.below(3) {
                0 => [b"[".repeat(depth), b"]".repeat(depth)].concat(),
                1 => [b"{\"a\":".repeat(depth), b"0".to_vec(), b"}".repeat(depth)].concat(),
                _ => format!(
                    r#"{{"type":"remove","workspace":"{}"}}"#,
                    "n".repeat(depth * 20)
                )
                .into_bytes(),
            }
        }
        _ => CORPUS[rng.below(CORPUS.len())].as_bytes().to_vec(),
    };
    let mutations = rng.below(4);
    for _ in 0..mutations {
        if frame.is_empty() {
            frame.push(b'{');
        }
        let at = rng.below(frame.len());
        match rng.below(6) {
            0 => frame[at] = rng.next() as u8,
            1 => frame.insert(at, rng.next() as u8),
            2 => {
                let end = (at + 1 + rng.below(8)).min(frame.len());
                frame.drain(at..end);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                frame.splice(at..at, token.iter().copied());
            }
            4 => frame.truncate(at),
            _ => {
                let end = (at + 1 + rng.below(16)).min(frame.len());
                let dup = frame[at..end].to_vec();
                frame.splice(at..at, dup);
            }
        }
    }
    for b in &mut frame {
        if *b == b'\n' {
            *b = b' ';
        }
    }
    if frame.iter().all(u8::is_ascii_whitespace) {
        frame.push(b'x');
    }
    frame
}

/// Whether a decodable request could change state or stop the daemon (then it is not sent).
fn unsafe_to_send(request: &Request, root: &Path) -> bool {
    let exists = |s: &str| s.is_empty() || Path::new(s).exists() || root.join(s).exists();
    match request {
        // A subscribed connection interleaves events with the answers this fuzzer pairs up.
        Request::Shutdown {} | Request::Subscribe { .. } => true,
        Request::Add { path, .. } => path.as_os_str().is_empty() || root.join(path).exists(),
        Request::Remove { workspace }
        | Request::Attach { workspace, .. }
        | Request::Detach { workspace, .. }
        | Request::Pause { workspace }
        | Request::Resume { workspace }
        | Request::Flush { workspace, .. }
        | Request::Restart { workspace }
        | Request::Repair { workspace, .. }
        | Request::Update { workspace, .. } => workspace.contains("fuzz") || exists(workspace),
        Request::Hello { .. }
        | Request::DaemonInfo {}
        | Request::List {}
        | Request::Status { .. } => false,
    }
}

#[derive(Default, Debug)]
struct FuzzCounts {
    frames: usize,
    decodable: usize,
    bad_request: usize,
    other_errors: usize,
    answers: usize,
    reconnects: usize,
    skipped: usize,
}

fn fuzz_connection(socket: PathBuf, root: PathBuf, seed: u64, frames: usize) -> FuzzCounts {
    let mut rng = Rng(seed);
    let mut counts = FuzzCounts::default();
    let mut conn: Option<(Raw, bool)> = None;
    let connect = |rng: &mut Rng| {
        let stream = UnixStream::connect(&socket).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut raw = Raw {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        };
        // Most connections greet first; some go straight to garbage.
        let greeted = rng.below(8) != 0;
        if greeted {
            match raw.request(&hello()) {
                Ok(Response::Hello { .. }) => {}
                other => panic!("fuzz handshake failed: {other:?}"),
            }
        }
        (raw, greeted)
    };
    while counts.frames < frames {
        let frame = fuzz_frame(&mut rng);
        let decoded = wsync_core::framing::decode::<Request>(&frame).ok();
        if decoded.as_ref().is_some_and(|r| unsafe_to_send(r, &root)) {
            counts.skipped += 1;
            continue;
        }
        counts.frames += 1;
        counts.decodable += usize::from(decoded.is_some());
        let (raw, greeted) = match &mut conn {
            Some(c) => c,
            None => {
                counts.reconnects += 1;
                conn.insert(connect(&mut rng))
            }
        };
        let greeted_before = *greeted;
        raw.send_raw(&[frame.as_slice(), b"\n"].concat())
            .unwrap_or_else(|e| panic!("send frame {}: {e}", counts.frames));
        let reply = raw.recv().unwrap_or_else(|e| {
            panic!(
                "no reply to frame {} (greeted: {greeted_before}): {e}; frame: {}",
                counts.frames,
                String::from_utf8_lossy(&frame)
            )
        });
        let mut close = false;
        match (&decoded, &reply) {
            (None, Response::Error { code, .. }) if *code == ErrorCode::BadRequest => {
                counts.bad_request += 1;
            }
            (None, other) => panic!(
                "undecodable frame {} answered with {other:?}: {}",
                counts.frames,
                String::from_utf8_lossy(&frame)
            ),
            (Some(_), Response::Error { code, message }) => {
                assert_ne!(
                    *code,
                    ErrorCode::Internal,
                    "internal error for {decoded:?}: {message}"
                );
                if *code == ErrorCode::BadRequest {
                    counts.bad_request += 1;
                } else {
                    counts.other_errors += 1;
                }
                // Before the handshake, anything decodable but a good Hello ends the connection.
                close = !greeted_before;
            }
            (Some(request), answer) => {
                if !greeted_before {
                    assert!(
                        matches!(
                            (request, answer),
                            (Request::Hello { .. }, Response::Hello { .. })
                        ),
                        "before hello, {request:?} was answered with {answer:?}"
                    );
                    *greeted = true;
                }
                counts.answers += 1;
            }
        }
        if !close && rng.below(40) == 0 {
            // Hang up now and then, so fresh (often un-greeted) connections keep coming.
            conn = None;
            continue;
        }
        if close {
            assert!(
                raw.closed_by_daemon(),
                "connection not closed after a refused first frame"
            );
            conn = None;
        }
    }
    counts
}

#[test]
fn ten_thousand_fuzzed_frames_change_nothing() {
    let (mut env, ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    let pid = env.daemon_pid().unwrap();
    let fds_before = open_fds(pid);
    const CONNECTIONS: u64 = 4;
    const FRAMES_EACH: usize = 2_500;
    let started = Instant::now();
    let handles: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let socket = env.socket.clone();
            let root = env.root.clone();
            std::thread::spawn(move || {
                fuzz_connection(socket, root, 0x00c0_ffee_1234_5678 ^ (i + 1), FRAMES_EACH)
            })
        })
        .collect();
    let mut total = FuzzCounts::default();
    for handle in handles {
        match handle.join() {
            Ok(c) => {
                total.frames += c.frames;
                total.decodable += c.decodable;
                total.bad_request += c.bad_request;
                total.other_errors += c.other_errors;
                total.answers += c.answers;
                total.reconnects += c.reconnects;
                total.skipped += c.skipped;
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                env.fail(&format!("fuzz connection failed: {message}"));
            }
        }
    }
    eprintln!("fuzz: {total:?} in {:?}", started.elapsed());
    assert_eq!(total.frames, CONNECTIONS as usize * FRAMES_EACH);
    assert!(
        total.decodable > 1000 && total.bad_request > 1000,
        "{total:?}"
    );
    assert!(pid_alive(pid));
    assert_fds_settle(&env, pid, fds_before, 2);
    assert_intact(&mut env, &[ws], &registry);
}

#[test]
fn socket_directory_is_0700_and_socket_0600_owned_by_us() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let me = nix::unistd::geteuid().as_raw();
    let dir = std::fs::metadata(env.socket.parent().unwrap()).unwrap();
    let sock = std::fs::symlink_metadata(&env.socket).unwrap();
    assert_eq!(dir.mode() & 0o777, 0o700, "socket directory mode");
    assert_eq!(sock.mode() & 0o777, 0o600, "socket mode");
    assert_eq!((dir.uid(), sock.uid()), (me, me));
}

#[test]
fn an_existing_loose_socket_directory_is_tightened_to_0700() {
    let mut env = TestEnv::new();
    let dir = env.socket.parent().unwrap().to_owned();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    env.start_daemon();
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn a_shared_socket_directory_is_refused_not_chmodded() {
    let env = TestEnv::new();
    // A /tmp-like directory: sticky, world-writable, other people's files in it.
    let shared = env.root.join("shared-tmp");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("someone-elses-file"), b"x").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let config = std::fs::read_to_string(&env.config_path).unwrap();
    let socket = shared.join("wsyncd.sock");
    let config = config.replace(
        &format!("DaemonCommandSocketPath={}", env.socket.display()),
        &format!("DaemonCommandSocketPath={}", socket.display()),
    );
    std::fs::write(&env.config_path, config).unwrap();
    let mut child = env
        .command("wsyncd")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Either it refuses at once, or it starts; in both cases the directory must keep its mode.
    // Checked once it has done either (its socket setup is behind it), not after a while.
    let settled = poll_until(
        "wsyncd to bind or exit",
        DAEMON_START_TIMEOUT,
        INTERVAL,
        || socket.exists() || matches!(child.try_wait(), Ok(Some(_))),
    );
    if let Err(e) = settled {
        let _ = child.kill();
        let _ = child.wait();
        env.fail(&e.to_string());
    }
    let mode = std::fs::metadata(&shared).unwrap().mode() & 0o7777;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    if poll_until(
        "wsyncd to exit after SIGTERM",
        Duration::from_secs(10),
        INTERVAL,
        || matches!(child.try_wait(), Ok(Some(_))),
    )
    .is_err()
    {
        let _ = child.kill();
    }
    let _ = child.wait();
    assert_eq!(
        mode, 0o1777,
        "wsyncd changed the shared directory's mode to {mode:o}"
    );
}

/// A python3 that another uid can run (pyenv shims under /root are not).
fn system_python() -> Option<PathBuf> {
    ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Runs `python3 -c CLIENT <socket>` as uid/gid 65534; returns its stdout.
fn as_nobody(python: &Path, socket: &Path) -> Option<String> {
    const CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("CONNECT_ERR", e.errno); sys.exit(0)
print("CONNECTED")
data = b""
try:
    s.sendall(b'{"type":"hello","protocol":1,"version":"x"}\n')
    while b"\n" not in data:
        d = s.recv(65536)
        if not d: break
        data += d
    s.sendall(b'{"type":"list"}\n')
    while True:
        d = s.recv(65536)
        if not d: break
        data += d
except OSError as e:
    print("IO_ERR", e.errno)
print("DATA", data.decode("utf-8", "replace"))
"#;
    let mut cmd = if which("setpriv") {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        c
    } else if which("runuser") {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]);
        c
    } else {
        return None;
    };
    let mut child = cmd
        .arg(python)
        .args(["-c", CLIENT])
        .arg(socket)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let exited = poll_until(
        "the uid-65534 client to exit",
        Duration::from_secs(20),
        INTERVAL,
        || matches!(child.try_wait(), Ok(Some(_))),
    )
    .is_ok();
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().ok()?;
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn which(tool: &str) -> bool {
    Command::new("which")
        .arg(tool)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn another_uid_is_never_answered() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: not root, cannot connect as another uid");
        return;
    }
    let Some(python) = system_python() else {
        eprintln!("SKIP: no system python3 that uid 65534 can run");
        return;
    };
    if !which("setpriv") && !which("runuser") {
        eprintln!("SKIP: neither setpriv nor runuser is installed");
        return;
    }
    let (mut env, ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();

    // 1. Through the real path: the 0700 directory already stops the connect.
    let out = as_nobody(&python, &env.socket).expect("run the uid-65534 client");
    assert!(
        out.contains("CONNECT_ERR 13"),
        "uid 65534 could connect through the 0700 directory: {out}"
    );

    // 2. With the filesystem protection bypassed (the socket hard-linked into a world-searchable
    //    directory and made 0666), the daemon's SO_PEERCRED check must still refuse.
    let open_dir = tempfile::Builder::new()
        .prefix("wst-peer")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = open_dir.path().join("s.sock");
    std::fs::hard_link(&env.socket, &link).unwrap();
    std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&python, &link).expect("run the uid-65534 client");
    std::fs::set_permissions(&env.socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        out.contains("CONNECTED"),
        "the bypass did not work, test is void: {out}"
    );
    let data = out.split("DATA").nth(1).unwrap_or("");
    assert!(
        !data.contains("\"type\":\"hello\"") && !data.contains("\"type\":\"workspaces\""),
        "wsyncd answered uid 65534: {out}"
    );
    if data.contains("\"type\"") {
        assert!(
            data.contains("\"type\":\"error\"") && data.contains("permission denied"),
            "{out}"
        );
    }
    eprintln!("uid 65534 via a 0666 hard link got: {}", data.trim());
    assert_intact(&mut env, &[ws], &registry);
}

/// A `DaemonCommandSocketPath` longer than a unix socket path may be: the daemon refuses to
/// start and the CLI refuses to connect, each naming the path, its length, the limit and the
/// fix, instead of the kernel's bare "path must be shorter than SUN_LEN".
#[test]
fn a_socket_path_too_long_is_refused_naming_length_limit_and_fix() {
    let probe = TestEnv::new();
    let max = wsync_core::platform::SOCKET_PATH_MAX;
    let prefix = probe.root.join("s").display().to_string();
    let long = format!("{prefix}{}/wsyncd.sock", "x".repeat(max));
    let env = TestEnv::with_config(&format!("DaemonCommandSocketPath={long}\n"));
    let len = long.len();
    let expected = [
        long.clone(),
        format!("is {len} bytes long"),
        format!("at most {max} bytes"),
        "set DaemonCommandSocketPath".to_string(),
    ];
    let out = env.run_daemon_expecting_exit();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "wsyncd started: {stderr}");
    for part in &expected {
        assert!(
            stderr.contains(part.as_str()),
            "wsyncd: {part:?} missing:\n{stderr}"
        );
    }
    let out = env.wsync(&["status"]);
    assert!(!out.success(), "{out:?}");
    for part in &expected {
        assert!(
            out.stderr.contains(part.as_str()),
            "wsync: {part:?} missing:\n{}",
            out.stderr
        );
    }
}
