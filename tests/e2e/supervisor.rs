//! End-to-end: the supervisor tree — monitors started per workspace, control commands reaching a
//! running monitor without restarting it, the watchdog restarting crashed monitors with backoff
//! and marking crash loops failed, a poisoned state lock ending the daemon, and no monitor ever
//! outliving the daemon. Real wsyncd, real wsync-monitor, real rsync; every wait has a deadline.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wsync_core::protocol::{MonitorProcessState, Request, Response, WorkspaceStatus};
use wsync_tests::env::{pid_alive, pids_mentioning, TestEnv};
use wsync_tests::poll::{poll_until, INTERVAL};

/// Fast supervision for tests: the watchdog wakes often and stopping is quick.
const FAST: &str = "WatchdogIntervalMs=100\nMonitorStopGraceMs=2000\n";
const WAIT: Duration = Duration::from_secs(20);

fn add(env: &TestEnv, path: &Path) -> String {
    let req = Request::Add {
        path: path.to_owned(),
        name: None,
        excludes: vec![],
    };
    match env.request(&req) {
        Response::Workspace { workspace } => workspace.name,
        other => env.fail(&format!("add failed: {other:?}")),
    }
}

fn attach(env: &TestEnv, ws: &str, target: &Path) {
    let req = Request::Attach {
        workspace: ws.into(),
        target: target.display().to_string(),
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
    match env.request(&req) {
        Response::Workspace { .. } => {}
        other => env.fail(&format!("attach failed: {other:?}")),
    }
}

fn simple(env: &TestEnv, req: Request) {
    match env.request(&req) {
        Response::Workspace { .. } | Response::Done { .. } => {}
        other => env.fail(&format!("{req:?} failed: {other:?}")),
    }
}

fn status(env: &TestEnv, ws: &str) -> WorkspaceStatus {
    match env.request(&Request::Status {
        workspace: Some(ws.into()),
    }) {
        Response::Status { mut workspaces } if workspaces.len() == 1 => workspaces.remove(0),
        other => env.fail(&format!("status failed: {other:?}")),
    }
}

fn watchdog_passes(env: &TestEnv) -> u64 {
    match env.request(&Request::DaemonInfo {}) {
        Response::DaemonInfo {
            watchdog_passes, ..
        } => watchdog_passes,
        other => env.fail(&format!("daemon_info failed: {other:?}")),
    }
}

fn running_pid(env: &TestEnv, ws: &str) -> u32 {
    let mut pid = None;
    poll_until("the monitor to run", WAIT, INTERVAL, || {
        let s = status(env, ws);
        pid = s
            .monitor
            .pid
            .filter(|_| s.monitor.state == MonitorProcessState::Running);
        pid.is_some()
    })
    .unwrap();
    pid.expect("pid")
}

fn flush(env: &TestEnv, ws: &str) {
    let req = Request::Flush {
        workspace: ws.into(),
        timeout_ms: Some(20_000),
    };
    match env.request(&req) {
        Response::Flushed { lagging, .. } if lagging.is_empty() => {}
        other => env.fail(&format!("flush failed: {other:?}")),
    }
}

fn assert_file(env: &TestEnv, path: &Path, content: &str) {
    match std::fs::read_to_string(path) {
        Ok(text) if text == content => {}
        other => env.fail(&format!(
            "{} should hold {content:?}: {other:?}",
            path.display()
        )),
    }
}

/// Writes `count` small files spread over a few directories.
fn burst(dir: &Path, count: usize, tag: &str) {
    for i in 0..count {
        let sub = dir.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("{tag}-{i}.txt")), format!("{tag} {i}")).unwrap();
    }
}

/// Every file below `root` with its content, by relative path.
/// Every file's content by path, without a target's own `.wsync-target` marker.
fn tree(root: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path == root.join(wsync_core::target::MARKER_FILE) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_owned();
                out.insert(rel, std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    out
}

fn nothing_left_running(env: &TestEnv) {
    if poll_until(
        "every process of the test to exit",
        Duration::from_secs(10),
        INTERVAL,
        || pids_mentioning(&env.root).is_empty(),
    )
    .is_err()
    {
        env.fail(&format!(
            "processes left running: {:?}",
            pids_mentioning(&env.root)
        ));
    }
}

#[test]
fn control_commands_reach_the_running_monitor_without_restarting_it() {
    let mut env = TestEnv::with_config(FAST);
    let src = env.mkdir("src/ws");
    env.start_daemon();
    let ws = add(&env, &src);
    assert_eq!(status(&env, &ws).monitor.state, MonitorProcessState::Idle);
    attach(&env, &ws, &env.root.join("m1"));
    let pid = running_pid(&env, &ws);
    std::fs::write(src.join("a.txt"), "one").unwrap();
    flush(&env, &ws);
    assert_file(&env, &env.root.join("m1/a.txt"), "one");

    attach(&env, &ws, &env.root.join("m2"));
    simple(
        &env,
        Request::Pause {
            workspace: ws.clone(),
        },
    );
    let paused = status(&env, &ws);
    assert_eq!(paused.monitor.state, MonitorProcessState::Paused);
    assert_eq!(paused.monitor.pid, Some(pid));
    simple(
        &env,
        Request::Resume {
            workspace: ws.clone(),
        },
    );
    flush(&env, &ws);
    assert_file(&env, &env.root.join("m2/a.txt"), "one");
    simple(
        &env,
        Request::Detach {
            workspace: ws.clone(),
            remote: "m1".into(),
        },
    );
    assert_eq!(running_pid(&env, &ws), pid, "the monitor was restarted");
    assert_eq!(status(&env, &ws).monitor.restarts, 0);

    // The last detach stops the monitor.
    simple(
        &env,
        Request::Detach {
            workspace: ws.clone(),
            remote: "m2".into(),
        },
    );
    let s = status(&env, &ws);
    assert_eq!(
        (s.monitor.state, s.monitor.pid),
        (MonitorProcessState::Idle, None)
    );
    poll_until("the monitor to exit", WAIT, INTERVAL, || !pid_alive(pid)).unwrap();
}

#[test]
fn a_killed_monitor_is_restarted_and_catches_up() {
    let mut env = TestEnv::with_config(FAST);
    let src = env.mkdir("src/ws");
    let mirror = env.root.join("mirror");
    env.start_daemon();
    let ws = add(&env, &src);
    attach(&env, &ws, &mirror);
    let old = running_pid(&env, &ws);
    flush(&env, &ws);

    // Killed in the middle of a burst; more changes arrive while it is down.
    burst(&src, 5000, "burst");
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    std::fs::write(src.join("while-down.txt"), "missed").unwrap();
    std::fs::remove_file(src.join("d3/burst-3.txt")).unwrap();
    let mut new = 0;
    poll_until("a new monitor", WAIT, INTERVAL, || {
        let s = status(&env, &ws);
        new = s.monitor.pid.unwrap_or(old);
        new != old && s.monitor.state == MonitorProcessState::Running
    })
    .unwrap();
    let s = status(&env, &ws);
    assert_eq!(s.monitor.restarts, 1);
    assert_eq!(s.monitor.last_exit.as_deref(), Some("signal 9 (SIGKILL)"));
    flush(&env, &ws);
    assert_file(&env, &mirror.join("while-down.txt"), "missed");
    if tree(&src) != tree(&mirror) {
        env.fail("the mirror did not converge to the source");
    }
    assert!(env.logs().contains("restart attempt 1"));
}

#[test]
fn a_crash_loop_ends_in_failed_and_restart_brings_it_back() {
    let mut env = TestEnv::with_config(&format!("{FAST}MonitorRestartLimit=2\n"));
    let src = env.mkdir("src/ws");
    let mirror = env.root.join("mirror");
    let crash_file = env.root.join("crash");
    std::fs::write(&crash_file, "").unwrap();
    env.start_daemon_with_env(&[("WSYNC_TEST_MONITOR_CRASH_FILE", crash_file.as_os_str())]);
    let ws = add(&env, &src);
    let started = Instant::now();
    attach(&env, &ws, &mirror);
    let mut last = None;
    poll_until("the workspace to be marked failed", WAIT, INTERVAL, || {
        let s = status(&env, &ws);
        let failed = s.monitor.state == MonitorProcessState::Failed;
        last = Some(s);
        failed
    })
    .unwrap();
    let s = last.expect("status");
    // Backoff 0.5 s then 1 s between the three attempts.
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.monitor.restarts, 2);
    assert_eq!(s.monitor.pid, None);
    assert_eq!(s.monitor.last_exit.as_deref(), Some("exit status 3"));
    assert!(
        s.monitor
            .last_log_lines
            .iter()
            .any(|l| l.contains("status 3")),
        "{:?}",
        s.monitor.last_log_lines
    );
    // Failed means no more restarts: a restart would come from a watchdog pass, so let several
    // pass.
    let passes = watchdog_passes(&env);
    poll_until("5 more watchdog passes", WAIT, INTERVAL, || {
        watchdog_passes(&env) >= passes + 5
    })
    .unwrap();
    assert_eq!(status(&env, &ws).monitor.state, MonitorProcessState::Failed);

    std::fs::remove_file(&crash_file).unwrap();
    simple(
        &env,
        Request::Restart {
            workspace: ws.clone(),
        },
    );
    running_pid(&env, &ws);
    let s = status(&env, &ws);
    assert_eq!((s.monitor.restarts, s.monitor.last_exit), (0, None));
    std::fs::write(src.join("back.txt"), "ok").unwrap();
    flush(&env, &ws);
    assert_file(&env, &mirror.join("back.txt"), "ok");
}

#[test]
fn a_poisoned_state_lock_ends_the_daemon_and_its_monitors() {
    let mut env = TestEnv::with_config(FAST);
    let src = env.mkdir("src/ws");
    let daemon = env.start_daemon_with_env(&[("WSYNC_TEST_POISON", OsStr::new("1"))]);
    let ws = add(&env, &src);
    attach(&env, &ws, &env.root.join("mirror"));
    let monitor = running_pid(&env, &ws);
    kill(Pid::from_raw(daemon as i32), Signal::SIGUSR1).unwrap();
    let status = env.wait_daemon_exit(WAIT);
    assert_eq!(status.code(), Some(4), "{status}");
    assert!(!env.socket.exists(), "socket left behind");
    assert!(
        !env.socket.with_extension("sock.pid").exists(),
        "pidfile left behind"
    );
    poll_until("the monitor to die", WAIT, INTERVAL, || !pid_alive(monitor)).unwrap();
    nothing_left_running(&env);
    assert!(env.logs().contains("poisoned"));
}

#[test]
fn kill_9_of_the_daemon_leaves_no_monitor_and_a_restart_respawns_it() {
    let mut env = TestEnv::with_config(FAST);
    let src = env.mkdir("src/ws");
    let mirror = env.root.join("mirror");
    env.start_daemon();
    let ws = add(&env, &src);
    attach(&env, &ws, &mirror);
    let old = running_pid(&env, &ws);
    flush(&env, &ws);
    env.kill_daemon();
    poll_until("the orphaned monitor to exit", WAIT, INTERVAL, || {
        !pid_alive(old)
    })
    .unwrap();
    nothing_left_running(&env);

    std::fs::write(src.join("after.txt"), "later").unwrap();
    env.start_daemon();
    running_pid(&env, &ws);
    flush(&env, &ws);
    assert_file(&env, &mirror.join("after.txt"), "later");
}

#[test]
fn sigterm_stops_the_daemon_and_its_monitors_within_the_grace() {
    let mut env = TestEnv::with_config(FAST);
    let src = env.mkdir("src/ws");
    burst(&src, 5000, "big");
    env.start_daemon();
    let ws = add(&env, &src);
    attach(&env, &ws, &env.root.join("mirror"));
    let monitor = running_pid(&env, &ws);
    let registry = std::fs::read(&env.registry).unwrap();
    // Stop while the initial sync of 5,000 files runs.
    let started = Instant::now();
    let status = env.stop_daemon();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        started.elapsed() < Duration::from_millis(2000 + 1500),
        "took {:?}",
        started.elapsed()
    );
    assert!(!pid_alive(monitor));
    nothing_left_running(&env);
    assert!(!env.socket.exists());
    assert_eq!(std::fs::read(&env.registry).unwrap(), registry);
}

fn files_sent(env: &TestEnv, ws: &str, remote: &str) -> u64 {
    status(env, ws)
        .report
        .and_then(|r| r.remotes.into_iter().find(|r| r.name == remote))
        .map_or(0, |r| r.files_sent)
}

#[test]
fn attaching_a_second_remote_mid_churn_leaves_the_first_alone() {
    let mut env = TestEnv::with_config(FAST);
    let src = env.mkdir("src/ws");
    let (first, second) = (env.root.join("first"), env.root.join("second"));
    burst(&src, 2000, "base");
    env.start_daemon();
    let ws = add(&env, &src);
    attach(&env, &ws, &first);
    let pid = running_pid(&env, &ws);
    flush(&env, &ws);
    // Only a full resync of `first` (rsync --delete over the whole tree) would remove this.
    let marker = first.join("marker-only-on-first");
    std::fs::write(&marker, "x").unwrap();
    // Status reports are rate-limited: wait until the initial sync's count has been reported.
    let mut before = 0;
    poll_until("the initial sync to be reported", WAIT, INTERVAL, || {
        before = files_sent(&env, &ws, "first");
        before >= 2000
    })
    .unwrap();

    // Keep the first remote busy with incremental batches while the second is attached.
    let writer = {
        let src = src.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                std::fs::write(src.join(format!("churn-{i}.txt")), format!("{i}")).unwrap();
                std::thread::sleep(Duration::from_millis(1)); // pacing, not synchronisation
            }
        })
    };
    attach(&env, &ws, &second);
    writer.join().unwrap();
    flush(&env, &ws);

    assert_eq!(running_pid(&env, &ws), pid, "attach restarted the monitor");
    assert!(marker.exists(), "the first remote was fully resynced");
    let mut sent = 0;
    poll_until(
        "the first remote to report the churn",
        WAIT,
        INTERVAL,
        || {
            sent = files_sent(&env, &ws, "first") - before;
            sent >= 300
        },
    )
    .unwrap();
    assert!(
        sent < 1000,
        "the first remote re-sent {sent} files for 300 changes"
    );
    std::fs::remove_file(&marker).unwrap();
    assert!(
        tree(&first) == tree(&src),
        "first remote differs from the source"
    );
    assert!(
        tree(&second) == tree(&src),
        "second remote differs from the source"
    );
}
