//! End-to-end: the daemon's lifecycle — single instance, stale socket recovery, clean shutdown
//! on SIGTERM and on request, refusal of a corrupt registry, permissions, and a registry that
//! survives a restart. Real `wsyncd`, raw socket requests, temp dirs, deadlines.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use wsync_core::protocol::{Request, Response};
use wsync_core::registry::Registry;
use wsync_tests::env::{pid_alive, TestEnv};
use wsync_tests::poll::{poll_until, INTERVAL};

fn pidfile(env: &TestEnv) -> PathBuf {
    let mut name = env.socket.clone().into_os_string();
    name.push(".pid");
    PathBuf::from(name)
}

fn daemon_pid_over_socket(env: &TestEnv) -> u32 {
    match env.request(&Request::DaemonInfo {}) {
        Response::DaemonInfo { pid, .. } => pid,
        other => env.fail(&format!("unexpected reply {other:?}")),
    }
}

#[test]
fn a_second_daemon_is_refused_and_the_first_keeps_serving() {
    let mut env = TestEnv::new();
    let pid = env.start_daemon();
    let pid_bytes = std::fs::read(pidfile(&env)).expect("pidfile");
    assert_eq!(String::from_utf8_lossy(&pid_bytes).trim(), pid.to_string());

    let out = env.run_daemon_expecting_exit();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    let expected = format!(
        "another wsyncd (pid {pid}) is already running for config {}",
        env.config_path.display()
    );
    assert!(stderr.contains(&expected), "stderr: {stderr}");

    assert_eq!(std::fs::read(pidfile(&env)).expect("pidfile"), pid_bytes);
    assert!(env.socket.exists());
    assert_eq!(daemon_pid_over_socket(&env), pid);
}

#[test]
fn a_stale_socket_left_by_kill_9_is_recovered() {
    let mut env = TestEnv::new();
    env.start_daemon();
    env.kill_daemon();
    assert!(env.socket.exists(), "kill -9 leaves the socket file behind");
    let pid = env.start_daemon();
    assert_eq!(daemon_pid_over_socket(&env), pid);
    assert!(env.logs().contains("removing stale socket"));
}

#[test]
fn a_socket_that_answers_is_never_removed() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.socket.parent().unwrap()).unwrap();
    std::fs::set_permissions(
        env.socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let _squatter = std::os::unix::net::UnixListener::bind(&env.socket).expect("bind squatter");
    let out = env.run_daemon_expecting_exit();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("already answers"), "stderr: {stderr}");
    assert!(env.socket.exists(), "the live socket must not be deleted");
}

#[test]
fn sigterm_removes_socket_and_pidfile_and_exits_0() {
    let mut env = TestEnv::new();
    let pid = env.start_daemon();
    assert!(pidfile(&env).exists());
    let status = env.stop_daemon();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!env.socket.exists(), "socket left behind");
    assert!(!pidfile(&env).exists(), "pidfile left behind");
    assert!(!pid_alive(pid));
    assert!(env.logs().contains("wsyncd stopped"));
}

#[test]
fn sigint_takes_the_same_path() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let status = env.signal_daemon(nix::sys::signal::Signal::SIGINT, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!env.socket.exists() && !pidfile(&env).exists());
}

#[test]
fn a_shutdown_request_takes_the_same_path() {
    let mut env = TestEnv::new();
    env.start_daemon();
    match env.request(&Request::Shutdown {}) {
        Response::Done { .. } => {}
        other => env.fail(&format!("unexpected reply {other:?}")),
    }
    let mut status = None;
    poll_until("wsyncd to exit", Duration::from_secs(20), INTERVAL, || {
        status = env.daemon_exit_status();
        status.is_some()
    })
    .unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(!env.socket.exists() && !pidfile(&env).exists());
}

#[test]
fn a_corrupt_registry_stops_startup_and_is_left_unchanged() {
    let env = TestEnv::new();
    let corrupt = b"{\n  \"version\": 1,\n  \"workspaces\": [\n    {\"name\": \"a\",, }\n  ]\n}\n";
    std::fs::write(&env.registry, corrupt).unwrap();
    let out = env.run_daemon_expecting_exit();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&env.registry.display().to_string()) && stderr.contains("line 4"),
        "the error must name the file and the line: {stderr}"
    );
    assert_eq!(std::fs::read(&env.registry).unwrap(), corrupt);
    assert!(!env.socket.exists(), "no socket may be bound");
    assert!(!pidfile(&env).exists(), "the pidfile must be released");
}

#[test]
fn socket_directory_is_0700_and_socket_0600() {
    let mut env = TestEnv::new();
    // A pre-existing, too open directory is tightened.
    let dir = env.socket.parent().unwrap().to_owned();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.start_daemon();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&env.socket), 0o600);
    assert_eq!(mode(&pidfile(&env)), 0o600);
}

#[test]
fn the_registry_survives_a_daemon_restart() {
    let mut env = TestEnv::new();
    let ws = env.mkdir("src/project");
    let other = env.mkdir("src/other");
    let mirror = env.root.join("mirror/project");
    env.start_daemon();
    let add = |path: &std::path::Path, name: Option<&str>| {
        let req = Request::Add {
            path: path.to_owned(),
            name: name.map(str::to_owned),
            excludes: vec!["*.tmp".into()],
        };
        match env.request(&req) {
            Response::Workspace { .. } => {}
            other => env.fail(&format!("add failed: {other:?}")),
        }
    };
    add(&ws, None);
    add(&other, Some("second"));
    let attach = Request::Attach {
        workspace: "project".into(),
        target: mirror.display().to_string(),
        name: Some("backup".into()),
        port: None,
        identity_file: None,
        ssh_options: vec![],
        wait: false,
        overwrite: false,
        keep_deleted: None,
        transport: Default::default(),
        rsync_path: None,
    };
    assert!(matches!(env.request(&attach), Response::Workspace { .. }));
    let pause = Request::Pause {
        workspace: other.display().to_string(),
    };
    assert!(matches!(env.request(&pause), Response::Workspace { .. }));
    let list = |env: &TestEnv| match env.request(&Request::List {}) {
        Response::Workspaces { workspaces } => workspaces,
        other => env.fail(&format!("list failed: {other:?}")),
    };
    let before = list(&env);
    assert_eq!(before.len(), 2);
    assert_eq!(Registry::load(&env.registry).unwrap().workspaces, before);

    assert_eq!(env.stop_daemon().code(), Some(0));
    env.start_daemon();
    let after = list(&env);
    assert_eq!(after, before);
    assert_eq!(after[0].remotes[0].name, "backup");
    assert!(after[1].paused);
    assert_eq!(after[0].excludes, vec!["*.tmp".to_owned()]);
}
