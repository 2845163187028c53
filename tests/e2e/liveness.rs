//! End-to-end: the daemon never stalls, and shows it — a path on a hung mount (a FUSE
//! filesystem that never answers, `wsync_tests::hang_fs`) fails its own `add`/`attach` within
//! the path deadline while `list`, `status` and the watchdog carry on and SIGTERM still stops
//! the daemon; a monitor that stops answering (SIGSTOP) is shown `unresponsive`, killed and
//! restarted as a crash, and the hook fires; the daemon's threads do not grow with the number
//! of monitors. Real wsyncd, wsync-monitor, wsync and rsync; every wait has a deadline.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wsync_core::protocol::{ErrorCode, MonitorProcessState, Request, Response, WorkspaceStatus};
use wsync_tests::env::{pid_alive, pids_mentioning, TestEnv};
use wsync_tests::hang_fs::HangFs;
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::poll::{poll_until, INTERVAL};
use wsync_tests::tree::scratch_dir;

const FAST: &str = "WatchdogIntervalMs=100\nMonitorStopGraceMs=2000\n";
const WAIT: Duration = Duration::from_secs(30);
/// Far beyond the 10 s path deadline, well short of the CLI's 30 s: an answer after this is a
/// hang the CLI gave up on.
const HUNG_ANSWER: Duration = Duration::from_secs(20);

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The hung filesystem, or `None` after printing why this machine cannot have one.
fn hang_fs(env: &TestEnv) -> Option<HangFs> {
    match HangFs::mount(&env.root.join("hung")) {
        Ok(fs) => Some(fs),
        Err(why) => {
            eprintln!("skipping: no never-answering FUSE filesystem here: {why}");
            None
        }
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

fn running_pid(env: &TestEnv, ws: &str, not: Option<u32>) -> u32 {
    poll_until("the monitor to run", WAIT, INTERVAL, || {
        let s = status(env, ws);
        s.monitor
            .pid
            .filter(|pid| s.monitor.state == MonitorProcessState::Running && Some(*pid) != not)
    })
    .unwrap_or_else(|e| env.fail(&e.to_string()))
}

/// Adds `name` (a small tree) with a local remote beside it.
fn add_with_remote(env: &TestEnv, name: &str) {
    let src = env.mkdir(&format!("{name}/src"));
    std::fs::write(src.join("a.txt"), name).unwrap();
    env.wsync_ok(&["add", s(&src), "--name", name]);
    let mirror = env.root.join(format!("{name}/mirror"));
    env.wsync_ok(&["attach", name, s(&mirror), "--no-wait"]);
}

/// The daemon's threads, from /proc.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |rd| rd.count())
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |rd| rd.count())
}

#[test]
fn a_hung_path_fails_its_own_request_while_the_daemon_keeps_answering() {
    let mut env = TestEnv::with_config(FAST);
    env.start_daemon();
    let Some(hung) = hang_fs(&env) else { return };
    add_with_remote(&env, "healthy");
    let monitor = running_pid(&env, "healthy", None);
    let target = hung.path().join("ws");

    let add_done = AtomicBool::new(false);
    let (add, attach, lists, restarted) = std::thread::scope(|scope| {
        let add = scope.spawn(|| {
            let started = Instant::now();
            let out = env.wsync(&["add", s(&target)]);
            add_done.store(true, Ordering::SeqCst);
            (out, started.elapsed())
        });
        let attach = scope.spawn(|| {
            let started = Instant::now();
            let answer = env.try_request(&Request::Attach {
                workspace: "healthy".into(),
                target: s(&hung.path().join("mirror")).into(),
                name: Some("hung".into()),
                port: None,
                identity_file: None,
                ssh_options: vec![],
                wait: false,
                overwrite: false,
                keep_deleted: None,
                transport: Default::default(),
                rsync_path: None,
            });
            (answer, started.elapsed())
        });
        // Both are blocked in the hung filesystem now (or were: they are never answered).
        if !hung.wait_for_requests(2, WAIT) {
            env.fail("neither add nor attach reached the hung filesystem");
        }
        // Meanwhile the daemon answers, and its watchdog restarts a monitor killed now.
        let mut lists = Vec::new();
        let list = env.wsync(&["list"]);
        lists.push((list.success(), add_done.load(Ordering::SeqCst)));
        kill(Pid::from_raw(monitor as i32), Signal::SIGKILL).unwrap();
        let restarted = running_pid(&env, "healthy", Some(monitor));
        let list = env.wsync(&["list"]);
        lists.push((list.success(), add_done.load(Ordering::SeqCst)));
        (
            add.join().unwrap(),
            attach.join().unwrap(),
            lists,
            restarted,
        )
    });
    assert!(
        lists.iter().all(|(ok, _)| *ok),
        "`wsync list` failed during the hung add: {lists:?}"
    );
    assert!(
        !lists[0].1,
        "the add should still have been waiting for the hung path when `list` answered"
    );
    assert_ne!(restarted, monitor);

    let (out, took) = add;
    let expected = format!(
        "path {} did not respond within 10 s",
        hung.path().join("ws").display()
    );
    assert!(
        !out.success() && out.stderr.contains(&expected),
        "add of a hung path: {out:?} (after {took:?}); expected {expected:?}"
    );
    assert!(
        took < HUNG_ANSWER,
        "the add was answered only after {took:?}"
    );
    let (answer, took) = attach;
    match answer {
        Ok(Response::Error {
            code: ErrorCode::Timeout,
            message,
        }) if message.contains("did not respond within 10 s") => {}
        other => env.fail(&format!(
            "attach of a hung target: {other:?} after {took:?}"
        )),
    }
    assert!(
        took < HUNG_ANSWER,
        "the attach was answered only after {took:?}"
    );
    // Nothing was registered for the hung paths.
    let ws = status(&env, "healthy");
    assert_eq!(ws.workspace.remotes.len(), 1, "{:?}", ws.workspace.remotes);
    match env.request(&Request::List {}) {
        Response::Workspaces { workspaces } => assert_eq!(workspaces.len(), 1),
        other => env.fail(&format!("list: {other:?}")),
    }
    drop(hung);
}

#[test]
fn sigterm_stops_the_daemon_during_a_hung_add() {
    let mut env = TestEnv::with_config(FAST);
    env.start_daemon();
    let Some(hung) = hang_fs(&env) else { return };
    add_with_remote(&env, "healthy");
    let monitor = running_pid(&env, "healthy", None);
    let mut add = env
        .command("wsync")
        .args(["add", s(&hung.path().join("ws"))])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wsync add");
    if !hung.wait_for_requests(1, WAIT) {
        env.fail("the add did not reach the hung filesystem");
    }
    let daemon = env.daemon_pid().expect("daemon pid");
    kill(Pid::from_raw(daemon as i32), Signal::SIGTERM).unwrap();
    let exited = poll_until("wsyncd to exit after SIGTERM", WAIT, INTERVAL, || {
        env.daemon_exit_status()
    });
    let Ok(status) = exited else {
        // Release the hung calls first: a process blocked in one cannot even be killed.
        drop(hung);
        env.fail("wsyncd did not exit within 30 s of SIGTERM during a hung add");
    };
    env.forget_daemon();
    assert!(status.success(), "wsyncd exited with {status}");
    poll_until(
        "the monitor to stop with the daemon",
        WAIT,
        INTERVAL,
        || !pids_mentioning(&env.root).contains(&monitor),
    )
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    // The CLI is not left hanging: its connection closed with the daemon.
    let cli = poll_until("`wsync add` to end", WAIT, INTERVAL, || {
        add.try_wait().ok().flatten()
    });
    if cli.is_err() {
        let _ = add.kill();
        let _ = add.wait();
        env.fail("`wsync add` still waited after the daemon exited");
    }
    drop(hung);
}

/// Writes an executable hook that appends `STATE|ERROR` lines to `hook.log`.
fn install_hook(env: &TestEnv) -> PathBuf {
    let log = env.root.join("hook.log");
    let hook = env.root.join("hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nprintf '%s|%s|%s\\n' \"$WSYNC_WORKSPACE\" \"$WSYNC_STATE\" \"$WSYNC_ERROR\" >> '{}'\n",
            log.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&hook).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&hook, perms).unwrap();
    let mut config = std::fs::File::options()
        .append(true)
        .open(&env.config_path)
        .unwrap();
    writeln!(config, "HookCommand={}", hook.display()).unwrap();
    log
}

#[test]
fn a_monitor_that_stops_answering_is_shown_unresponsive_then_restarted_as_a_crash() {
    let mut env = TestEnv::with_config(&format!("{FAST}MonitorUnresponsiveTimeoutMs=10000\n"));
    let hook_log = install_hook(&env);
    env.start_daemon();
    add_with_remote(&env, "proj");
    let stuck = running_pid(&env, "proj", None);
    // Its first heartbeat arrives within 2 s of its loop starting; a flush proves the loop
    // runs, and waiting for one more heartbeat period makes sure one was judged.
    match env.request(&Request::Flush {
        workspace: "proj".into(),
        timeout_ms: Some(20_000),
    }) {
        Response::Flushed { lagging, .. } if lagging.is_empty() => {}
        other => env.fail(&format!("flush: {other:?}")),
    }
    kill(Pid::from_raw(stuck as i32), Signal::SIGSTOP).unwrap();

    let seen = poll_until(
        "status to show the monitor unresponsive",
        WAIT,
        INTERVAL,
        || {
            let s = status(&env, "proj");
            (s.monitor.state == MonitorProcessState::Unresponsive).then_some(s)
        },
    )
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    assert_eq!(seen.monitor.pid, Some(stuck), "{seen:?}");
    let table = env.wsync(&["status"]);
    assert!(
        table.stdout.contains("unresponsive"),
        "`wsync status` should show it: {table:?}"
    );

    let fresh = running_pid(&env, "proj", Some(stuck));
    let after = status(&env, "proj");
    assert_eq!(after.monitor.restarts, 1, "{after:?}");
    let last_exit = after.monitor.last_exit.clone().unwrap_or_default();
    assert!(
        last_exit.contains("unresponsive"),
        "last_exit should say why it was killed: {last_exit:?}"
    );
    poll_until(
        "the stopped monitor to be killed and reaped",
        WAIT,
        INTERVAL,
        || !pid_alive(stuck),
    )
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    assert!(pid_alive(fresh));
    let lines = poll_until("the hook to fire", WAIT, INTERVAL, || {
        let text = std::fs::read_to_string(&hook_log).unwrap_or_default();
        text.contains("|unresponsive|").then_some(text)
    })
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    assert!(lines.starts_with("proj|unresponsive|"), "{lines}");

    // The restarted monitor syncs again.
    std::fs::write(env.root.join("proj/src/after.txt"), "back").unwrap();
    match env.request(&Request::Flush {
        workspace: "proj".into(),
        timeout_ms: Some(20_000),
    }) {
        Response::Flushed { lagging, .. } if lagging.is_empty() => {}
        other => env.fail(&format!("flush after the restart: {other:?}")),
    }
    assert_eq!(
        std::fs::read_to_string(env.root.join("proj/mirror/after.txt"))
            .ok()
            .as_deref(),
        Some("back")
    );
}

#[test]
fn the_daemons_threads_do_not_grow_with_its_monitors() {
    const WORKSPACES: usize = 40;
    /// Monitors that must run at once for the figure to mean something; a few may lack an
    /// inotify instance on a machine where other test runs hold many.
    const RUNNING_AT_LEAST: usize = 30;
    let mut env = TestEnv::with_config(FAST);
    let daemon = env.start_daemon();
    add_with_remote(&env, "ws00");
    running_pid(&env, "ws00", None);
    let (threads_one, fds_one) = (threads(daemon), fds(daemon));
    for i in 1..WORKSPACES {
        add_with_remote(&env, &format!("ws{i:02}"));
    }
    let running = poll_until("most monitors to run", WAIT * 2, INTERVAL, || {
        let Response::Status { workspaces } = env.request(&Request::Status { workspace: None })
        else {
            return None;
        };
        let running = workspaces
            .iter()
            .filter(|w| w.monitor.state == MonitorProcessState::Running)
            .count();
        (running >= RUNNING_AT_LEAST).then_some(running)
    })
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    let (threads_many, fds_many) = (threads(daemon), fds(daemon));
    let figures = format!(
        "1 monitor: {threads_one} threads, {fds_one} fds; {running} monitors: {threads_many} threads, {fds_many} fds"
    );
    eprintln!("{figures}");
    // A few threads of slack: the blocking pool keeps idle threads for a while.
    assert!(
        threads_many <= threads_one + 8,
        "the daemon's threads grew with its monitors: {figures}"
    );
    // Each monitor needs its three pipes; nothing more may pile up per monitor.
    assert!(
        fds_many <= fds_one + 4 * (running - 1) + 8,
        "the daemon's fds grew faster than three pipes per monitor: {figures}"
    );
}

#[test]
fn a_monitor_sends_heartbeats_on_its_status_channel() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mirror = tmp.path().join("mirror");
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("beat", &src, vec![local_remote("copy", &mirror)]),
    );
    m.flush_ok(WAIT);
    // One as its loop starts, then one every 2 s.
    let first = m.heartbeats();
    poll_until("two more heartbeats", WAIT, INTERVAL, || {
        m.heartbeats() >= first + 2
    })
    .unwrap_or_else(|e| m.fail(&e.to_string()));
}

/// Daemon start-up checks each registry entry (its root and local targets) in a check process
/// with the deadline: a workspace whose root sits on a hung mount fails with the reason, while
/// the socket answers at once and the other workspaces start; `wsync restart` starts it once
/// the mount answers again.
#[test]
fn a_workspace_on_a_hung_mount_does_not_hold_up_the_daemons_start() {
    let mut env = TestEnv::with_config(&format!("{FAST}PathCheckTimeoutMs=1000\n"));
    env.start_daemon();
    add_with_remote(&env, "healthy");
    let stuck = env.mkdir("hung");
    std::fs::write(stuck.join("a.txt"), "on a mount that will hang").unwrap();
    env.wsync_ok(&["add", s(&stuck), "--name", "stuck"]);
    let mirror = env.root.join("stuck-mirror");
    env.wsync_ok(&["attach", "stuck", s(&mirror), "--no-wait"]);
    env.wsync_ok(&["flush", "stuck"]);
    env.stop_daemon();
    // The root's filesystem stops answering while the daemon is down (declared after `env`).
    let Some(hung) = hang_fs(&env) else { return };
    assert_eq!(hung.path(), stuck);

    env.start_daemon();
    let list = env.wsync(&["list"]);
    assert!(list.success(), "`wsync list` right after start: {list:?}");
    running_pid(&env, "healthy", None);
    std::fs::write(env.root.join("healthy/src/b.txt"), "after the restart").unwrap();
    env.wsync_ok(&["flush", "healthy"]);
    assert_eq!(
        std::fs::read_to_string(env.root.join("healthy/mirror/b.txt")).unwrap_or_default(),
        "after the restart"
    );
    let failed = poll_until("the hung workspace to be refused", WAIT, INTERVAL, || {
        let s = status(&env, "stuck");
        (s.monitor.state == MonitorProcessState::Failed).then_some(s.monitor)
    })
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    let why = failed.last_exit.unwrap_or_default();
    assert!(
        why.contains(&format!(
            "path {} did not respond within 1 s",
            stuck.display()
        )) && why.contains("wsync restart stuck"),
        "{why}"
    );
    let table = env.wsync_ok(&["list"]);
    assert!(
        table.contains("stuck") && table.contains("healthy"),
        "{table}"
    );

    drop(hung);
    env.wsync_ok(&["restart", "stuck"]);
    running_pid(&env, "stuck", None);
    env.wsync_ok(&["flush", "stuck"]);
}
