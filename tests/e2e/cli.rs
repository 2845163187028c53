//! End-to-end tests of the `wsync` CLI against a real wsyncd: workspace and remote management,
//! JSON output, error messages and exit codes, and `wsync daemon start|stop|status`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wsync_core::protocol::{Request, Response, WorkspaceStatus};
use wsync_core::registry::{Registry, Workspace};
use wsync_core::remote::RemoteTarget;
use wsync_tests::env::{pid_alive, CliOutput, TestEnv};
use wsync_tests::poll::{poll_until, INTERVAL};

/// The CLI's exit codes (crates/wsync-cli/src/exit_codes.rs), repeated here on purpose: scripts
/// depend on the numbers, so a change must break this test.
const DAEMON_NOT_RUNNING: i32 = 3;
const NOT_FOUND: i32 = 4;
const INVALID: i32 = 5;
const FAILURE: i32 = 1;
const LAGGING: i32 = 6;

fn list_json(env: &TestEnv) -> Vec<Workspace> {
    let out = env.wsync_ok(&["list", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| env.fail(&format!("list --json: {e}\n{out}")))
}

fn expect_failure(env: &TestEnv, args: &[&str], code: i32) -> CliOutput {
    let out = env.wsync(args);
    if out.code() != Some(code) {
        env.fail(&format!(
            "`wsync {}`: expected exit code {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            out.status,
            out.stdout,
            out.stderr
        ));
    }
    assert!(
        out.stderr.starts_with("error: "),
        "errors start with `error: `: {}",
        out.stderr
    );
    out
}

/// Stops a daemon started with `wsync daemon start` (the fixture does not own it) when dropped.
struct BackgroundDaemon<'a> {
    env: &'a TestEnv,
}

impl BackgroundDaemon<'_> {
    fn pid(&self) -> Option<u32> {
        match self.env.try_request(&Request::DaemonInfo {}) {
            Ok(Response::DaemonInfo { pid, .. }) => Some(pid),
            _ => None,
        }
    }
}

impl Drop for BackgroundDaemon<'_> {
    fn drop(&mut self) {
        let Some(pid) = self.pid() else { return };
        let pid_t = Pid::from_raw(pid as i32);
        let _ = kill(pid_t, Signal::SIGTERM);
        if poll_until(
            "the background wsyncd to exit",
            Duration::from_secs(10),
            INTERVAL,
            || !pid_alive(pid),
        )
        .is_err()
        {
            let _ = kill(pid_t, Signal::SIGKILL);
        }
    }
}

#[test]
fn add_attach_detach_remove_through_the_cli() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let src = env.mkdir("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    let mirror = env.root.join("mirror");

    // A relative path is resolved against the CLI's working directory (the test root).
    let out = env.wsync_ok(&["add", "src", "--exclude", "*.tmp"]);
    assert!(out.contains("added workspace src"), "{out}");
    let listed = list_json(&env);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "src");
    assert_eq!(listed[0].path, src);
    assert_eq!(listed[0].excludes, ["*.tmp"]);

    // WORKSPACE may be a path inside the workspace.
    let inside = src.join("sub/deeper");
    let out = env.wsync_ok(&[
        "attach",
        inside.to_str().unwrap(),
        mirror.to_str().unwrap(),
        "--name",
        "m1",
    ]);
    assert!(out.contains("attached remote m1"), "{out}");
    assert!(out.contains("m1 is in sync"), "{out}");
    assert!(
        mirror.join("sub/deeper").is_dir(),
        "attach returns after the initial sync"
    );
    let listed = list_json(&env);
    assert_eq!(listed[0].remotes.len(), 1);
    assert_eq!(listed[0].remotes[0].name, "m1");
    assert_eq!(
        listed[0].remotes[0].target,
        RemoteTarget::Local {
            path: mirror.clone()
        }
    );
    // The JSON is the registry's content.
    let registry = Registry::load(&env.registry).expect("registry parses");
    assert_eq!(registry.workspaces, listed);

    let table = env.wsync_ok(&["list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("m1="), "{table}");

    let status = env.wsync_ok(&["status", "src", "--json"]);
    let status: Vec<WorkspaceStatus> = serde_json::from_str(&status)
        .unwrap_or_else(|e| env.fail(&format!("status --json: {e}\n{status}")));
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].workspace.name, "src");
    let table = env.wsync_ok(&["status"]);
    assert!(table.starts_with("WORKSPACE"), "{table}");

    let out = env.wsync_ok(&["detach", "src", "m1"]);
    assert!(out.contains("detached remote m1"), "{out}");
    assert!(list_json(&env)[0].remotes.is_empty());

    let out = env.wsync_ok(&["remove", "src"]);
    assert!(out.contains("removed workspace src"), "{out}");
    assert!(list_json(&env).is_empty());
    assert!(src.is_dir(), "remove deletes nothing");
}

#[test]
fn errors_name_the_problem_and_use_distinct_exit_codes() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let out = expect_failure(&env, &["remove", "nope"], NOT_FOUND);
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
    expect_failure(&env, &["status", "nope"], NOT_FOUND);

    let file = env.root.join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let out = expect_failure(&env, &["add", file.to_str().unwrap()], INVALID);
    assert!(out.stderr.contains("not a directory"), "{}", out.stderr);
    expect_failure(&env, &["add", "does-not-exist"], INVALID);

    env.mkdir("w");
    env.wsync_ok(&["add", "w"]);
    expect_failure(&env, &["add", "w"], INVALID);
    let out = expect_failure(&env, &["detach", "w", "ghost"], NOT_FOUND);
    assert!(out.stderr.contains("ghost"), "{}", out.stderr);
    // Usage errors are clap's (exit 2), not the daemon's.
    assert_eq!(env.wsync(&["attach", "w"]).code(), Some(2));
}

#[test]
fn without_a_daemon_every_command_says_how_to_start_it() {
    let env = TestEnv::new();
    for args in [
        &["list"][..],
        &["status"],
        &["add", "."],
        &["daemon", "status"],
    ] {
        let out = expect_failure(&env, args, DAEMON_NOT_RUNNING);
        let socket = env.socket.display().to_string();
        assert!(
            out.stderr
                .contains(&format!("error: wsyncd is not running (socket {socket})")),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains("hint: start it with `wsync daemon start`"),
            "{}",
            out.stderr
        );
    }
    // Stopping what is not running is not an error.
    assert!(env.wsync(&["daemon", "stop"]).success());
}

#[test]
fn daemon_start_stop_status_and_state_across_restarts() {
    let env = TestEnv::new();
    let guard = BackgroundDaemon { env: &env };
    let out = env.wsync_ok(&["daemon", "start"]);
    assert!(out.contains("started wsyncd"), "{out}");
    let pid = guard
        .pid()
        .unwrap_or_else(|| env.fail("daemon does not answer after start"));

    let out = env.wsync_ok(&["daemon", "start"]);
    assert!(out.contains("already running"), "{out}");
    assert_eq!(
        guard.pid(),
        Some(pid),
        "a second start must not replace the daemon"
    );

    let out = env.wsync_ok(&["daemon", "status"]);
    assert!(out.contains(&format!("pid:      {pid}")), "{out}");
    assert!(out.contains(wsync_core::VERSION), "{out}");
    assert!(out.contains(&env.socket.display().to_string()), "{out}");
    assert!(out.contains("uptime:"), "{out}");

    env.mkdir("proj");
    env.wsync_ok(&["add", "proj", "--name", "p"]);
    let mirror = env.root.join("mirror");
    env.wsync_ok(&["attach", "p", mirror.to_str().unwrap()]);
    let before = list_json(&env);

    let out = env.wsync_ok(&["daemon", "stop"]);
    assert!(
        out.contains(&format!("stopped wsyncd (pid {pid})")),
        "{out}"
    );
    assert!(!env.socket.exists(), "socket removed on stop");
    let out = expect_failure(&env, &["daemon", "status"], DAEMON_NOT_RUNNING);
    assert!(out.stderr.contains("not running"), "{}", out.stderr);

    env.wsync_ok(&["daemon", "start"]);
    let after = list_json(&env);
    assert_eq!(before, after, "the registry survives a restart");
    env.wsync_ok(&["daemon", "stop"]);
}

#[test]
fn status_watch_prints_a_json_snapshot_per_change_when_piped() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let mut child = env
        .command("wsync")
        .args(["status", "--watch", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wsync status --watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_snapshot = || -> Vec<WorkspaceStatus> {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| env.fail(&format!("no snapshot from status --watch: {e}")))
            .expect("read line");
        serde_json::from_str(&line)
            .unwrap_or_else(|e| env.fail(&format!("snapshot is not JSON: {e}\n{line}")))
    };
    assert!(next_snapshot().is_empty());
    env.mkdir("w");
    env.wsync_ok(&["add", "w"]);
    let snapshot = next_snapshot();
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].workspace.name, "w");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn attach_waits_for_the_initial_sync_and_flush_names_lagging_remotes() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let src = env.mkdir("w");
    std::fs::write(src.join("a.txt"), "first").unwrap();
    env.wsync_ok(&["add", "w"]);
    let mirror = env.root.join("m");
    env.wsync_ok(&["attach", "w", mirror.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(mirror.join("a.txt")).unwrap(),
        "first"
    );

    std::fs::write(src.join("b.txt"), "second").unwrap();
    let out = env.wsync_ok(&["flush", "w", "--timeout", "30"]);
    assert!(out.contains("every remote is in sync"), "{out}");
    assert_eq!(
        std::fs::read_to_string(mirror.join("b.txt")).unwrap(),
        "second"
    );

    // Nothing listens on port 1: the target cannot be looked at, so nothing is attached
    // (target identity: a target is written only once it is provably ours).
    let out = expect_failure(
        &env,
        &[
            "attach",
            "w",
            "ssh://127.0.0.1:1/tmp/nowhere",
            "--name",
            "dead",
        ],
        FAILURE,
    );
    assert!(
        out.stderr.contains("cannot look at target") && out.stderr.contains("nothing was attached"),
        "{}",
        out.stderr
    );
    assert_eq!(list_json(&env)[0].remotes.len(), 1);
    // A remote whose target went away lags, and flush names it.
    let gone = env.root.join("gone");
    env.wsync_ok(&["attach", "w", gone.to_str().unwrap(), "--name", "dead"]);
    std::fs::rename(&gone, env.root.join("gone-away")).unwrap();
    std::fs::write(src.join("c.txt"), "third").unwrap();
    assert_eq!(list_json(&env)[0].remotes.len(), 2);
    let out = expect_failure(&env, &["flush", "w", "--timeout", "1"], LAGGING);
    assert!(out.stderr.contains("still lagging"), "{}", out.stderr);
    assert!(out.stderr.contains("dead"), "{}", out.stderr);
    assert!(
        !out.stderr.contains(" m,") && !out.stderr.ends_with(" m\n"),
        "{}",
        out.stderr
    );

    // --no-wait returns at once; pause and resume are persisted.
    env.wsync_ok(&["detach", "w", "dead"]);
    env.wsync_ok(&["pause", "w"]);
    assert!(list_json(&env)[0].paused);
    let other = env.root.join("m2");
    let out = env.wsync_ok(&["attach", "w", other.to_str().unwrap(), "--no-wait"]);
    assert!(!out.contains("in sync"), "{out}");
    env.wsync_ok(&["resume", "w"]);
    assert!(!list_json(&env)[0].paused);
    env.wsync_ok(&["flush", "w", "--timeout", "30"]);
    assert_eq!(
        std::fs::read_to_string(other.join("b.txt")).unwrap(),
        "second"
    );
}

#[test]
fn config_paths_reports_what_the_config_resolves() {
    let env = TestEnv::with_config("HookCommand=~/bin/notify\n");
    let out = env.wsync_ok(&["config", "--paths", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| env.fail(&format!("config --paths --json: {e}\n{out}")));
    let path = |p: &std::path::Path| serde_json::Value::from(p.to_str().expect("utf-8 test path"));
    let runtime = env.socket.parent().expect("socket dir");
    assert_eq!(
        json,
        serde_json::json!({
            "config_file": path(&env.config_path),
            "registry": path(&env.registry),
            "socket": path(&env.socket),
            "pid_file": format!("{}.pid", env.socket.display()),
            "runtime_directory": path(runtime),
            "log_directory": path(&env.log_dir),
            "monitor_executable": path(&wsync_tests::env::bin_dir().join("wsync-monitor")),
            "hook_command": path(&env.home.join("bin/notify")),
        }),
        "{out}"
    );

    // The text form names every path; --path prints one alone, nothing when it is unset.
    let text = env.wsync_ok(&["config", "--paths"]);
    for (label, p) in [
        ("registry:", &env.registry),
        ("socket:", &env.socket),
        ("log directory:", &env.log_dir),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(label) && l.ends_with(p.to_str().unwrap())),
            "{label} {}\n{text}",
            p.display()
        );
    }
    assert_eq!(
        env.wsync_ok(&["config", "--path", "log_directory"]),
        format!("{}\n", env.log_dir.display())
    );
    std::fs::write(
        &env.config_path,
        format!("LogDirectory={}\n", env.log_dir.display()),
    )
    .unwrap();
    assert_eq!(env.wsync_ok(&["config", "--path", "hook_command"]), "");
    assert_eq!(
        env.wsync_ok(&["config", "--path", "registry"]),
        format!(
            "{}\n",
            env.home.join(".wsync/wsync-ws-config.json").display()
        )
    );

    // It needs no daemon, but a broken config is reported like for any command.
    std::fs::write(&env.config_path, "Colour=blue\n").unwrap();
    let out = expect_failure(&env, &["config", "--paths"], FAILURE);
    assert!(out.stderr.contains("unknown key"), "{}", out.stderr);
    assert_eq!(
        env.wsync(&["config"]).code(),
        Some(2),
        "--paths or --path is required"
    );
}
