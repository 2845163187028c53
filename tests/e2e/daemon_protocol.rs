//! End-to-end: the daemon's socket protocol over a raw `UnixStream` with the core framing —
//! handshake rules, malformed/oversized/truncated frames, independence of connections, and
//! request validation with the registry saved before each reply.

use std::io::{BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use wsync_core::framing::{read_frame, write_frame, MAX_FRAME_BYTES};
use wsync_core::protocol::{ErrorCode, Request, Response, PROTOCOL_VERSION};
use wsync_core::registry::Registry;
use wsync_tests::env::TestEnv;

/// A raw client connection.
struct Raw {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Raw {
    fn connect(env: &TestEnv) -> Self {
        let stream = UnixStream::connect(&env.socket).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Self {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn greeted(env: &TestEnv) -> Self {
        let mut raw = Self::connect(env);
        let reply = raw.request(&Request::Hello {
            protocol: PROTOCOL_VERSION,
            version: "test".into(),
        });
        assert!(matches!(reply, Response::Hello { .. }), "{reply:?}");
        raw
    }

    fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    fn recv(&mut self) -> Response {
        read_frame(&mut self.reader).expect("a response frame")
    }

    fn request(&mut self, request: &Request) -> Response {
        write_frame(&mut self.writer, request).expect("write request");
        self.recv()
    }
}

fn expect_error(reply: Response, code: ErrorCode, needle: &str) -> String {
    match reply {
        Response::Error { code: got, message } if got == code && message.contains(needle) => {
            message
        }
        other => panic!("expected {code:?} error mentioning {needle:?}, got {other:?}"),
    }
}

fn still_serves(env: &TestEnv) {
    assert!(matches!(
        env.request(&Request::DaemonInfo {}),
        Response::DaemonInfo { .. }
    ));
}

#[test]
fn garbage_and_wrong_shape_frames_get_bad_request_and_the_connection_goes_on() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let mut raw = Raw::connect(&env);
    // Before the handshake too.
    raw.send_raw(b"\x00\x01garbage\xff\n").unwrap();
    expect_error(raw.recv(), ErrorCode::BadRequest, "not a valid request");
    let hello = Request::Hello {
        protocol: PROTOCOL_VERSION,
        version: "test".into(),
    };
    assert!(matches!(raw.request(&hello), Response::Hello { .. }));
    for bad in [
        &b"this is not json\n"[..],
        b"[1,2,3]\n",
        b"{\"type\":\"add\"}\n",
        b"{\"type\":\"remove\",\"workspace\":\"x\",\"surprise\":1}\n",
        b"{\"type\":\"no_such_request\"}\n",
        b"\"hello\"\n",
    ] {
        raw.send_raw(bad).unwrap();
        expect_error(raw.recv(), ErrorCode::BadRequest, "not a valid request");
    }
    assert!(matches!(
        raw.request(&Request::List {}),
        Response::Workspaces { .. }
    ));
    still_serves(&env);
}

#[test]
fn an_oversized_frame_gets_an_error_and_the_daemon_keeps_serving() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let mut raw = Raw::greeted(&env);
    let mut big = br#"{"type":"add","path":""#.to_vec();
    big.resize(MAX_FRAME_BYTES + 4096, b'x');
    big.extend_from_slice(b"\"}\n");
    // The daemon stops reading at the limit and closes: the tail of the write may fail.
    let _ = raw.send_raw(&big);
    let message = expect_error(raw.recv(), ErrorCode::BadRequest, "limit");
    assert!(message.contains(&MAX_FRAME_BYTES.to_string()), "{message}");
    still_serves(&env);
}

#[test]
fn a_truncated_frame_gets_an_error_and_the_daemon_keeps_serving() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let mut raw = Raw::greeted(&env);
    raw.send_raw(br#"{"type":"li"#).unwrap();
    raw.writer.shutdown(Shutdown::Write).unwrap();
    expect_error(raw.recv(), ErrorCode::BadRequest, "incomplete");
    still_serves(&env);
}

#[test]
fn the_first_frame_must_be_hello_with_the_same_protocol() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let mut raw = Raw::connect(&env);
    expect_error(
        raw.request(&Request::List {}),
        ErrorCode::BadRequest,
        "must be hello",
    );
    let mut raw = Raw::connect(&env);
    let old = Request::Hello {
        protocol: PROTOCOL_VERSION + 1,
        version: "9.9.9".into(),
    };
    let message = expect_error(raw.request(&old), ErrorCode::ProtocolMismatch, "protocol");
    assert!(
        message.contains(&(PROTOCOL_VERSION + 1).to_string())
            && message.contains("wsync daemon stop && wsync daemon start"),
        "{message}"
    );
    still_serves(&env);
}

#[test]
fn an_idle_or_half_written_client_does_not_block_others() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let mut idle = Raw::connect(&env);
    let mut half = Raw::greeted(&env);
    half.send_raw(br#"{"type":"da"#).unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        still_serves(&env);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "requests were slowed down by idle clients: {:?}",
        started.elapsed()
    );
    // The stalled connections still work once they finish their frames.
    half.send_raw(b"emon_info\"}\n").unwrap();
    assert!(matches!(half.recv(), Response::DaemonInfo { .. }));
    let hello = Request::Hello {
        protocol: PROTOCOL_VERSION,
        version: "test".into(),
    };
    assert!(matches!(idle.request(&hello), Response::Hello { .. }));
}

#[test]
fn mutations_are_validated_and_saved_before_the_reply() {
    let mut env = TestEnv::new();
    let ws = env.mkdir("ws");
    env.start_daemon();
    let mut raw = Raw::greeted(&env);
    let add = |path: std::path::PathBuf, name: Option<&str>| Request::Add {
        path,
        name: name.map(str::to_owned),
        excludes: vec![],
    };
    expect_error(
        raw.request(&add("relative/dir".into(), None)),
        ErrorCode::Invalid,
        "absolute",
    );
    expect_error(
        raw.request(&add(env.root.join("missing"), None)),
        ErrorCode::Invalid,
        "missing",
    );
    match raw.request(&add(ws.clone(), None)) {
        Response::Workspace { workspace } => assert_eq!(workspace.name, "ws"),
        other => panic!("{other:?}"),
    }
    // Saved before the reply.
    assert_eq!(Registry::load(&env.registry).unwrap().workspaces.len(), 1);
    expect_error(
        raw.request(&add(ws.clone(), Some("again"))),
        ErrorCode::Invalid,
        "overlaps",
    );
    let attach = |target: String| Request::Attach {
        workspace: ws.display().to_string(),
        target,
        name: None,
        port: None,
        identity_file: None,
        ssh_options: vec![],
        wait: false,
        overwrite: false,
        keep_deleted: None,
        transport: Default::default(),
        rsync_path: None,
    };
    expect_error(
        raw.request(&attach(ws.join("inside").display().to_string())),
        ErrorCode::Invalid,
        "overlaps",
    );
    expect_error(
        raw.request(&attach("-oProxyCommand=x:/p".into())),
        ErrorCode::Invalid,
        "",
    );
    let message = expect_error(
        raw.request(&Request::Remove {
            workspace: "nope".into(),
        }),
        ErrorCode::NotFound,
        "no workspace named \"nope\"",
    );
    assert!(message.contains("wsync list"), "{message}");
    expect_error(
        raw.request(&Request::Detach {
            workspace: "ws".into(),
            remote: "nope".into(),
        }),
        ErrorCode::NotFound,
        "no remote named",
    );
    expect_error(
        raw.request(&Request::Status {
            workspace: Some("nope".into()),
        }),
        ErrorCode::NotFound,
        "wsync list",
    );
    match raw.request(&Request::Status {
        workspace: Some("ws".into()),
    }) {
        Response::Status { workspaces } => assert_eq!(workspaces.len(), 1),
        other => panic!("{other:?}"),
    }
    match raw.request(&Request::Remove {
        workspace: "ws".into(),
    }) {
        Response::Done { .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(Registry::load(&env.registry).unwrap().workspaces.is_empty());
}

#[test]
fn a_failed_registry_save_replies_internal_and_changes_nothing() {
    let mut env = TestEnv::new();
    let ws = env.mkdir("ws");
    env.start_daemon();
    // A non-empty directory where the registry file should go: the atomic rename must fail.
    std::fs::create_dir_all(env.registry.join("blocker")).unwrap();
    let mut raw = Raw::greeted(&env);
    let reply = raw.request(&Request::Add {
        path: ws,
        name: None,
        excludes: vec![],
    });
    expect_error(reply, ErrorCode::Internal, "nothing was changed");
    match raw.request(&Request::List {}) {
        Response::Workspaces { workspaces } => assert!(workspaces.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(env.registry.join("blocker").is_dir());
}
