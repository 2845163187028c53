//! Hardening, what wsync keeps and starts for itself (issue 12): ssh options by allowlist (on the
//! command line and in a hand-edited registry), the log, socket and registry files checked to be
//! ours with the daemon as root and a second user as the attacker, private log modes, the ssh
//! master gone after detach and after the monitor exits, and a hook's `setsid` descendant killed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wsync_tests::env::{descendants, pid_alive, pids_mentioning, TestEnv};
use wsync_tests::poll::{poll_until, INTERVAL};
use wsync_tests::sshd::{current_user, Sshd};
use wsync_tests::users::TestUser;

/// The CLI's exit code for refused input (crates/wsync-cli/src/exit_codes.rs).
const INVALID: i32 = 5;
/// wsyncd's exit code when it cannot start (crates/wsyncd/src/exit_codes.rs).
const DAEMON_FAILURE: i32 = 1;
const WAIT: Duration = Duration::from_secs(30);

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 test path")
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Replaces `KEY=...` in the test's config.
fn set_config(env: &TestEnv, key: &str, value: &Path) {
    let config = std::fs::read_to_string(&env.config_path).unwrap();
    let lines: Vec<String> = config
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{key}=")) {
                format!("{key}={}", value.display())
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(&env.config_path, lines.join("\n") + "\n").unwrap();
}

/// Runs a wsyncd that must refuse to start; returns its stderr.
fn refused_start(env: &TestEnv) -> String {
    let out = env.run_daemon_expecting_exit();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(DAEMON_FAILURE),
        "wsyncd did not refuse to start ({})\nstderr:\n{stderr}",
        out.status
    );
    stderr
}

/// Today's log-file suffix as the daemon names it (UTC).
fn today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn smartcard_device_is_refused_on_the_command_line_and_in_a_hand_edited_registry() {
    // An alias of the refused PKCS11Provider: ssh would load the library as the daemon's user.
    let mut env = TestEnv::new();
    let ws = env.mkdir("ws");
    env.start_daemon();
    env.wsync_ok(&["add", s(&ws)]);
    let lib = env.root.join("evil.so");
    for option in [
        format!("SmartcardDevice={}", lib.display()),
        format!("smartcarddevice {}", lib.display()),
        "ForwardAgent=yes".to_owned(),
        "ProxyJump=-oProxyCommand=id".to_owned(),
    ] {
        let out = env.wsync(&["attach", "ws", "host:/srv/x", "--ssh-option", &option]);
        assert_eq!(out.code(), Some(INVALID), "{option}: {}", out.stderr);
        assert!(
            out.stderr.contains("allowed: ") || out.stderr.contains("ProxyJump"),
            "{option}: {}",
            out.stderr
        );
    }
    assert_eq!(env.stop_daemon().code(), Some(0));

    // Hand-edited: the daemon refuses the whole registry and starts nothing.
    let mut registry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&env.registry).unwrap()).unwrap();
    registry["workspaces"][0]["remotes"] = serde_json::json!([{
        "name": "box",
        "target": {"kind": "ssh", "host": "127.0.0.1", "path": "/srv/x",
            "ssh_options": [{"key": "SmartcardDevice", "value": s(&lib)}]},
    }]);
    std::fs::write(&env.registry, registry.to_string()).unwrap();
    let stderr = refused_start(&env);
    assert!(
        stderr.contains("SmartcardDevice is not allowed") && stderr.contains(s(&env.registry)),
        "{stderr}"
    );
}

#[test]
fn log_files_are_0600_in_a_0700_directory() {
    let mut env = TestEnv::new();
    assert!(!env.log_dir.exists());
    let ws = env.mkdir("ws");
    std::fs::write(ws.join("f"), b"x").unwrap();
    env.start_daemon();
    env.wsync_ok(&["add", s(&ws)]);
    env.wsync_ok(&["attach", "ws", s(&env.root.join("mirror"))]);
    let monitor_log = env.log_dir.join(format!("monitor-ws.log.{}", today()));
    poll_until("the monitor's log file", WAIT, INTERVAL, || {
        monitor_log.exists()
    })
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    assert_eq!(mode(&env.log_dir), 0o700, "log directory");
    for file in std::fs::read_dir(&env.log_dir).unwrap().flatten() {
        assert_eq!(mode(&file.path()), 0o600, "{}", file.path().display());
    }
    assert_eq!(mode(env.socket.parent().unwrap()), 0o700);
}

#[test]
fn a_log_file_link_planted_by_another_user_is_never_appended_to() {
    let Some(attacker) =
        TestUser::create("a_log_file_link_planted_by_another_user_is_never_appended_to")
    else {
        return;
    };
    let day = today();
    // A root-only file the attacker wants root to append to.
    let victim_dir = tempfile::tempdir_in("/tmp").unwrap();
    let victim = victim_dir.path().join("shadow");
    std::fs::write(&victim, b"root only\n").unwrap();
    set_mode(&victim, 0o600);
    let check = |env: &mut TestEnv, what: &str| {
        env.start_daemon();
        // Whatever the daemon logs while serving a request and stopping lands somewhere else.
        env.wsync_ok(&["list"]);
        let child = env.forget_daemon().expect("daemon");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let out = child.wait_with_output().expect("wsyncd output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"root only\n",
            "{what}: the daemon appended to the link's target\nstderr:\n{stderr}"
        );
        assert!(
            stderr.contains("LogDirectory"),
            "{what}: no warning naming the fix: {stderr}"
        );
    };

    // 1. The attacker's own directory as LogDirectory, with the day's file linked to the victim.
    let mut env = TestEnv::new();
    let shared = env.mkdir("attacker-logs");
    std::os::unix::fs::symlink(&victim, shared.join(format!("wsyncd.log.{day}"))).unwrap();
    attacker.own(&shared.join(format!("wsyncd.log.{day}")));
    attacker.own(&shared);
    set_config(&env, "LogDirectory", &shared);
    check(&mut env, "attacker-owned log directory");

    // 2. A root-owned directory everyone may write (like /tmp), the link planted in it.
    let mut env = TestEnv::new();
    let shared = env.mkdir("tmp-like");
    set_mode(&shared, 0o1777);
    let link = shared.join(format!("wsyncd.log.{day}"));
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    attacker.own(&link);
    set_config(&env, "LogDirectory", &shared);
    check(&mut env, "world-writable log directory");
    assert_eq!(mode(&shared), 0o1777, "the shared directory was chmodded");
}

#[test]
fn an_attacker_owned_or_writable_registry_or_config_is_refused() {
    let Some(attacker) =
        TestUser::create("an_attacker_owned_or_writable_registry_or_config_is_refused")
    else {
        return;
    };
    let mut env = TestEnv::new();
    let ws = env.mkdir("ws");
    env.start_daemon();
    env.wsync_ok(&["add", s(&ws)]);
    assert_eq!(env.stop_daemon().code(), Some(0));
    let good = std::fs::read(&env.registry).unwrap();

    // The attacker's registry would mirror root's files wherever it says.
    attacker.own(&env.registry);
    let stderr = refused_start(&env);
    assert!(
        stderr.contains(s(&env.registry))
            && stderr.contains(&format!("owned by uid {}", attacker.uid)),
        "{stderr}"
    );
    nix::unistd::chown(&env.registry, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    set_mode(&env.registry, 0o666);
    let stderr = refused_start(&env);
    assert!(
        stderr.contains(s(&env.registry)) && stderr.contains("writable by other users"),
        "{stderr}"
    );
    set_mode(&env.registry, 0o600);
    assert_eq!(
        std::fs::read(&env.registry).unwrap(),
        good,
        "the registry was rewritten"
    );

    attacker.own(&env.config_path);
    let stderr = refused_start(&env);
    assert!(
        stderr.contains(s(&env.config_path)) && stderr.contains("owned by uid"),
        "{stderr}"
    );
    nix::unistd::chown(&env.config_path, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    env.start_daemon();
}

#[test]
fn a_socket_directory_link_planted_by_another_user_is_refused_not_chmodded_through() {
    let Some(attacker) = TestUser::create(
        "a_socket_directory_link_planted_by_another_user_is_refused_not_chmodded_through",
    ) else {
        return;
    };
    let env = TestEnv::new();
    // `$XDG_RUNTIME_DIR/wsync` planted as a link to a directory of root's.
    let victim = env.mkdir("etc-like");
    set_mode(&victim, 0o755);
    let runtime = env.mkdir("runtime");
    let link = runtime.join("wsync");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    attacker.own(&link);
    set_config(&env, "DaemonCommandSocketPath", &link.join("wsyncd.sock"));
    let stderr = refused_start(&env);
    assert!(
        stderr.contains(s(&link)) && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert_eq!(mode(&victim), 0o755, "the link's destination was chmodded");
    assert!(!victim.join("wsyncd.sock").exists());
}

/// Live ssh processes using a control socket in `runtime` (the masters, and clients while a
/// transfer runs).
fn ssh_masters(runtime: &Path) -> Vec<u32> {
    pids_mentioning(&runtime.join("cm-"))
}

fn attach_ssh(env: &TestEnv, sshd: &Sshd, remote_dir: &Path) {
    let spec = format!("{}@127.0.0.1:{}", current_user(), s(remote_dir));
    let port = sshd.port().to_string();
    env.wsync_ok(&[
        "attach",
        "ws",
        &spec,
        "--name",
        "box",
        "--port",
        &port,
        "--identity-file",
        s(sshd.identity_file()),
        "--ssh-option",
        "UserKnownHostsFile=/dev/null",
        "--ssh-option",
        "StrictHostKeyChecking=no",
        "--ssh-option",
        "LogLevel=ERROR",
    ]);
}

#[test]
fn the_ssh_master_is_gone_after_detach_and_after_the_monitor_exits() {
    let mut env = TestEnv::new();
    let sshd = Sshd::start(&env.root);
    let runtime = env.socket.parent().unwrap().to_owned();
    let ws = env.mkdir("ws");
    std::fs::write(ws.join("f"), b"x").unwrap();
    env.start_daemon();
    env.wsync_ok(&["add", s(&ws)]);
    let remote_dir = env.root.join("over ssh");
    for (round, end) in ["detach", "daemon stop"].into_iter().enumerate() {
        attach_ssh(&env, &sshd, &remote_dir);
        env.wsync_ok(&["flush", "ws"]);
        assert!(
            !ssh_masters(&runtime).is_empty(),
            "round {round}: no ssh master to check (the remote synced without one?)"
        );
        match end {
            "detach" => {
                env.wsync_ok(&["detach", "ws", "box"]);
            }
            _ => {
                assert_eq!(env.stop_daemon().code(), Some(0));
            }
        }
        // ControlPersist would keep an abandoned master for 60 s.
        if poll_until(
            "the ssh master to exit",
            Duration::from_secs(15),
            INTERVAL,
            || ssh_masters(&runtime).is_empty(),
        )
        .is_err()
        {
            let left = ssh_masters(&runtime);
            for pid in &left {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
            env.fail(&format!("after {end}: ssh master(s) {left:?} still run"));
        }
    }
}

#[test]
fn the_ssh_master_of_a_killed_monitor_is_closed_by_the_daemon() {
    // No restart: the master has no monitor left to reuse it, and ControlPersist alone would
    // keep it for a minute.
    let mut env = TestEnv::with_config("MonitorRestartLimit=0");
    let sshd = Sshd::start(&env.root);
    let runtime = env.socket.parent().unwrap().to_owned();
    let ws = env.mkdir("ws");
    std::fs::write(ws.join("f"), b"x").unwrap();
    let daemon = env.start_daemon();
    env.wsync_ok(&["add", s(&ws)]);
    attach_ssh(&env, &sshd, &env.root.join("over ssh"));
    env.wsync_ok(&["flush", "ws"]);
    assert!(!ssh_masters(&runtime).is_empty(), "no ssh master to check");
    let monitors: Vec<u32> = descendants(daemon)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "wsync-monitor")
        })
        .collect();
    assert_eq!(monitors.len(), 1, "{monitors:?}");
    let _ = kill(Pid::from_raw(monitors[0] as i32), Signal::SIGKILL);
    if poll_until(
        "the ssh master to exit",
        Duration::from_secs(15),
        INTERVAL,
        || ssh_masters(&runtime).is_empty(),
    )
    .is_err()
    {
        let left = ssh_masters(&runtime);
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        env.fail(&format!(
            "after SIGKILL of the monitor: ssh master(s) {left:?} still run"
        ));
    }
}

/// Kills the recorded process when the test ends, whatever happened.
struct Reap(PathBuf);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(pid) = recorded_pid(&self.0) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

fn recorded_pid(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// An environment whose only workspace is marked `failed` at once (a monitor that exits, no
/// restarts), which fires the hook: a `/bin/sh` script with `body`.
fn env_with_failing_hook(body: &str, extra_config: &str) -> TestEnv {
    let env = TestEnv::with_config(&format!(
        "MonitorExecutablePath=/bin/false\nMonitorRestartLimit=0\n{extra_config}"
    ));
    let hook = env.root.join("hook");
    std::fs::write(&hook, format!("#!/bin/sh\n{body}\n")).unwrap();
    set_mode(&hook, 0o755);
    let mut config = std::fs::read_to_string(&env.config_path).unwrap();
    config.push_str(&format!("HookCommand={}\n", hook.display()));
    std::fs::write(&env.config_path, config).unwrap();
    env
}

/// Starts the daemon and the workspace whose failure fires the hook.
fn fire_the_hook(env: &mut TestEnv) {
    env.start_daemon();
    let ws = env.mkdir("ws");
    env.wsync_ok(&["add", s(&ws)]);
    env.wsync_ok(&["attach", "ws", s(&env.root.join("mirror")), "--no-wait"]);
}

/// The hook starts `setsid sleep 1000` (its own session and group, out of reach of a group
/// kill), records its pid, then runs `tail`; that child must die.
fn expect_setsid_child_killed(tail: &str, extra_config: &str) {
    let probe = tempfile::tempdir().unwrap();
    let pidfile = probe.path().join("escaped.pid");
    let mut env = env_with_failing_hook(
        &format!(
            "setsid sleep 1000 </dev/null >/dev/null 2>&1 &\necho $! > '{0}.tmp'\nmv '{0}.tmp' '{0}'\n{tail}",
            pidfile.display()
        ),
        extra_config,
    );
    let _reap = Reap(pidfile.clone());
    fire_the_hook(&mut env);
    let pid = poll_until("the hook to record its child", WAIT, INTERVAL, || {
        recorded_pid(&pidfile)
    })
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    if poll_until("the setsid child to be killed", WAIT, INTERVAL, || {
        !pid_alive(pid)
    })
    .is_err()
    {
        env.fail(&format!("the hook's setsid child survived: {stat}"));
    }
}

#[test]
fn a_hook_child_that_called_setsid_dies_when_the_hook_ends() {
    expect_setsid_child_killed("exit 0", "");
}

#[test]
fn a_hook_past_its_timeout_is_killed_with_its_setsid_child() {
    expect_setsid_child_killed("exec sleep 1000", "HookTimeoutMs=300");
}

#[test]
fn the_hook_runner_passes_the_environment_and_reports_exit_statuses() {
    // Through the real daemon: the hook's environment arrives and its output is logged.
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("hook.out");
    let mut env = env_with_failing_hook(
        &format!(
            "printf '%s|%s|%s' \"$WSYNC_WORKSPACE\" \"$WSYNC_REMOTE\" \"$WSYNC_STATE\" > '{}'\necho said-by-the-hook\nexit 3",
            out.display()
        ),
        "",
    );
    fire_the_hook(&mut env);
    poll_until("the hook's exit in the daemon log", WAIT, INTERVAL, || {
        env.logs().contains("hook ended with exit status 3")
    })
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "ws||failed");
    assert!(
        env.logs().contains("hook: said-by-the-hook"),
        "{}",
        env.logs()
    );
}
