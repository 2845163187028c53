//! End-to-end tests of the user-facing extras: `wsync verify` (local and SSH remotes), the
//! notification hook (`HookCommand`), and the committed completions and man pages being current.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use wsync_core::monitor_proto::RemoteState;
use wsync_core::protocol::{Request, Response, WorkspaceStatus};
use wsync_tests::env::{bin, hook_lines, TestEnv};
use wsync_tests::poll::{poll_until, INTERVAL};
use wsync_tests::sshd::{current_user, Sshd};

/// The CLI's exit codes (crates/wsync-cli/src/exit_codes.rs), repeated on purpose.
const FAILURE: i32 = 1;
const DAEMON_NOT_RUNNING: i32 = 3;
const NOT_FOUND: i32 = 4;
const DRIFT: i32 = 8;

const WAIT: Duration = Duration::from_secs(30);

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 test path")
}

fn expect_code(env: &TestEnv, args: &[&str], code: i32) -> (String, String) {
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
    (out.stdout, out.stderr)
}

fn status(env: &TestEnv, workspace: &str) -> WorkspaceStatus {
    match env.request(&Request::Status {
        workspace: Some(workspace.into()),
    }) {
        Response::Status { mut workspaces } if workspaces.len() == 1 => workspaces.remove(0),
        other => env.fail(&format!("unexpected status answer: {other:?}")),
    }
}

fn remote_state(env: &TestEnv, workspace: &str, remote: &str) -> Option<RemoteState> {
    status(env, workspace)
        .report?
        .remotes
        .into_iter()
        .find(|r| r.name == remote)
        .map(|r| r.state)
}

#[test]
fn verify_lists_drift_against_a_local_remote_and_changes_nothing() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let src = env.mkdir("src");
    write(&src.join("keep.txt"), "same");
    write(&src.join("edit.txt"), "original");
    write(&src.join("gone.txt"), "x");
    write(&src.join("sub/deep.txt"), "deep");
    let mirror = env.root.join("mirror");
    env.wsync_ok(&["add", s(&src)]);
    env.wsync_ok(&["attach", "src", s(&mirror)]);
    let out = env.wsync_ok(&["verify", "src"]);
    assert!(
        out.contains("mirror (") && out.contains("): in sync"),
        "{out}"
    );

    // Drift behind wsync's back (the monitor watches the workspace, not the remote): same size
    // and mtime with other content, which only a checksum comparison notices; a deleted file;
    // a stray one.
    let edited = mirror.join("edit.txt");
    let mtime = std::fs::metadata(src.join("edit.txt"))
        .unwrap()
        .modified()
        .unwrap();
    write(&edited, "ORIGINAL");
    std::fs::File::options()
        .write(true)
        .open(&edited)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::remove_file(mirror.join("gone.txt")).unwrap();
    write(&mirror.join("extra.log"), "stray");

    let (out, err) = expect_code(&env, &["verify", "src"], DRIFT);
    assert!(out.contains("): 3 differences\n"), "{out}");
    for line in [
        "  missing  gone.txt\n",
        "  differs  edit.txt\n",
        "  extra    extra.log\n",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
    assert!(
        !out.contains("keep.txt") && !out.contains("deep.txt"),
        "{out}"
    );
    assert!(
        err.starts_with("error: workspace src differs from remote: mirror"),
        "{err}"
    );
    assert!(
        err.contains("hint: ") && err.contains("wsync flush src"),
        "{err}"
    );

    // Nothing was changed.
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "ORIGINAL");
    assert!(mirror.join("extra.log").exists() && !mirror.join("gone.txt").exists());

    // A path inside the workspace works as WORKSPACE; --json for scripts.
    let (out, _) = expect_code(
        &env,
        &["verify", s(&src.join("sub")), "mirror", "--json"],
        DRIFT,
    );
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| env.fail(&format!("{e}\n{out}")));
    assert_eq!(json[0]["remote"], "mirror");
    assert_eq!(json[0]["in_sync"], false);
    assert_eq!(json[0]["missing"], serde_json::json!(["gone.txt"]));
    assert_eq!(json[0]["differs"], serde_json::json!(["edit.txt"]));
    assert_eq!(json[0]["extra"], serde_json::json!(["extra.log"]));

    let (_, err) = expect_code(&env, &["verify", "src", "nope"], NOT_FOUND);
    assert!(
        err.contains("no remote named \"nope\"") && err.contains("mirror"),
        "{err}"
    );
}

#[test]
fn verify_over_ssh_and_a_clear_failure_for_an_unreachable_remote() {
    let mut env = TestEnv::new();
    let sshd = Sshd::start(&env.root);
    env.start_daemon();
    let src = env.mkdir("src");
    write(&src.join("a/b.txt"), "over ssh");
    let remote_dir = env.root.join("ssh mirror");
    env.wsync_ok(&["add", s(&src)]);
    let spec = format!("{}@127.0.0.1:{}", current_user(), s(&remote_dir));
    let port = sshd.port().to_string();
    env.wsync_ok(&[
        "attach",
        "src",
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
    let out = env.wsync_ok(&["verify", "src", "box"]);
    assert!(out.contains("box (") && out.contains("): in sync"), "{out}");
    write(&remote_dir.join("stray"), "x");
    let (out, _) = expect_code(&env, &["verify", "src", "box"], DRIFT);
    assert!(out.contains("  extra    stray\n"), "{out}");

    // The sshd goes away: ssh fails at once, and the error says what to check. (Attaching to
    // a port where nothing listens is refused now: attach must look at the target first.)
    let mut sshd = sshd;
    sshd.stop();
    let (out, err) = expect_code(&env, &["verify", "src", "box"], FAILURE);
    assert!(
        out.contains("box (") && out.contains("could not compare"),
        "{out}"
    );
    assert!(
        err.starts_with("error: could not compare workspace src with remote box"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "hint: check that `ssh -o BatchMode=yes -p {port} {}@127.0.0.1 true`",
            current_user()
        )),
        "{err}"
    );
}

#[test]
fn verify_without_a_daemon_says_how_to_start_it() {
    let env = TestEnv::new();
    let (_, err) = expect_code(&env, &["verify", "src"], DAEMON_NOT_RUNNING);
    assert!(err.contains("wsync daemon start"), "{err}");
}

#[test]
fn a_broken_config_names_the_line_and_the_fix() {
    let env = TestEnv::new();
    let mut config = std::fs::File::options()
        .append(true)
        .open(&env.config_path)
        .unwrap();
    writeln!(config, "HookCommand=notify-send").unwrap();
    let (_, err) = expect_code(&env, &["list"], FAILURE);
    assert!(
        err.starts_with("error: loading the wsync config file\ncaused by: "),
        "{err}"
    );
    assert!(
        err.contains("HookCommand must be an absolute path"),
        "{err}"
    );
    assert!(err.contains("hint: fix that line"), "{err}");
}

/// Hooks the daemon has fired and not seen finish. Each runs on a thread named `hook`
/// (wsyncd's hooks.rs) that lives until the hook process has exited, spawned by the thread that
/// applies the monitors' status lines, `monitor-events` (state.rs); a clone that has not
/// renamed itself yet still carries that name, so it counts too.
fn hooks_in_flight(daemon: u32) -> usize {
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{daemon}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|comm| comm.trim_end().to_owned())
        .collect();
    let hooks = names.iter().filter(|n| *n == "hook").count();
    let appliers = names.iter().filter(|n| *n == "monitor-events").count();
    hooks + appliers.saturating_sub(1)
}

#[test]
fn the_hook_runs_once_when_a_remote_halts() {
    let mut env = TestEnv::new();
    let log = env.install_hook();
    env.start_daemon();
    let src = env.mkdir("src");
    write(&src.join("f"), "x");
    let mirror = env.root.join("mirror");
    env.wsync_ok(&["add", s(&src)]);
    env.wsync_ok(&["attach", "src", s(&mirror)]);
    assert!(
        hook_lines(&log).is_empty(),
        "the hook ran for a healthy remote"
    );

    // The workspace root disappears: the monitor halts instead of deleting the mirror.
    std::fs::remove_dir_all(&src).unwrap();
    poll_until("the remote to halt", WAIT, INTERVAL, || {
        remote_state(&env, "src", "mirror") == Some(RemoteState::Halted)
    })
    .unwrap();
    if poll_until("the hook to run", WAIT, INTERVAL, || {
        !hook_lines(&log).is_empty()
    })
    .is_err()
    {
        env.fail("the hook did not run after the remote halted");
    }
    let lines = hook_lines(&log);
    let fields: Vec<&str> = lines[0].splitn(4, '|').collect();
    assert_eq!(fields[..3], ["src", "mirror", "halted"], "{lines:?}");
    assert!(
        fields[3].contains(s(&src)),
        "WSYNC_ERROR names the root: {lines:?}"
    );
    assert!(mirror.join("f").exists(), "the mirror was not touched");

    // The state persists (the root comes back, new status reports arrive, still halted):
    // no second notification.
    std::fs::create_dir(&src).unwrap();
    // Past the point instead of a fixed wait: a flush is answered on the monitor's status pipe
    // after every status it sent before, so once the daemon relays the answer it has judged
    // them all; and any hook those statuses fired has finished (and logged) once none is left
    // in flight.
    let daemon = env.daemon_pid().expect("the daemon's pid");
    let flushed = env.request(&Request::Flush {
        workspace: "src".into(),
        timeout_ms: Some(0),
    });
    assert!(
        matches!(&flushed, Response::Flushed { lagging, .. } if lagging == &["mirror"]),
        "{flushed:?}"
    );
    poll_until("the hooks fired so far to finish", WAIT, INTERVAL, || {
        hooks_in_flight(daemon) == 0
    })
    .unwrap();
    let again = hook_lines(&log).len() > 1;
    assert!(!again, "the hook ran again: {:?}", hook_lines(&log));
    assert_eq!(
        remote_state(&env, "src", "mirror"),
        Some(RemoteState::Halted)
    );
}

#[test]
fn the_hook_runs_when_a_workspace_is_marked_failed() {
    // A monitor that exits at once, and no restarts allowed: the first crash marks it failed.
    let mut env = TestEnv::with_config("MonitorExecutablePath=/bin/false\nMonitorRestartLimit=0");
    let log = env.install_hook();
    env.start_daemon();
    let src = env.mkdir("src");
    env.wsync_ok(&["add", s(&src)]);
    let mirror = env.root.join("mirror");
    env.wsync_ok(&["attach", "src", s(&mirror), "--no-wait"]);
    if poll_until("the hook to run", WAIT, INTERVAL, || {
        !hook_lines(&log).is_empty()
    })
    .is_err()
    {
        env.fail("the hook did not run after the workspace failed");
    }
    let lines = hook_lines(&log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("src||failed|"), "{lines:?}");
    assert!(lines[0].contains("wsync restart src"), "{lines:?}");
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn committed_completions_and_man_pages_are_current() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fresh = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("wsync"))
        .arg("generate-docs")
        .arg(fresh.path())
        .output()
        .expect("running wsync generate-docs");
    assert!(
        out.status.success(),
        "wsync generate-docs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for sub in ["completions", "man"] {
        let (committed, generated) = (repo.join(sub), fresh.path().join(sub));
        assert_eq!(
            files(&committed),
            files(&generated),
            "{sub}/ does not hold exactly the generated files; run scripts/gen-docs.sh and commit the result"
        );
        for name in files(&generated) {
            let want = std::fs::read(generated.join(&name)).unwrap();
            let have = std::fs::read(committed.join(&name)).unwrap_or_default();
            assert!(
                want == have,
                "{sub}/{name} is stale (the CLI's commands or help changed); run scripts/gen-docs.sh and commit the result"
            );
        }
    }
}

#[test]
fn check_ignore_names_the_deciding_rule_from_every_source() {
    const NOT_EXCLUDED: i32 = 9;
    let mut env = TestEnv::new();
    let ws = env.mkdir("src/ws");
    write(
        &ws.join(".wsyncignore"),
        "# build output\ntarget/\n*.log\n!keep.log\n",
    );
    write(&ws.join(".gitignore"), "secret.txt\n");
    env.start_daemon();
    env.wsync_ok(&["add", s(&ws), "--exclude", "build/"]);

    let (out, _) = expect_code(&env, &["check-ignore", s(&ws.join("target/debug/x.o"))], 0);
    assert!(
        out.contains("excluded (its directory target matches")
            && out.contains(".wsyncignore:2: target/"),
        "{out}"
    );
    let (out, _) = expect_code(&env, &["check-ignore", s(&ws.join("debug.log"))], 0);
    assert!(
        out.contains("excluded by") && out.contains(".wsyncignore:3: *.log"),
        "{out}"
    );
    let (out, _) = expect_code(
        &env,
        &["check-ignore", s(&ws.join("keep.log"))],
        NOT_EXCLUDED,
    );
    assert!(
        out.contains("synced (re-included by") && out.contains("!keep.log"),
        "{out}"
    );
    let (out, _) = expect_code(&env, &["check-ignore", s(&ws.join("secret.txt"))], 0);
    assert!(out.contains(".gitignore:1: secret.txt"), "{out}");
    std::fs::create_dir_all(ws.join("build")).unwrap();
    let (out, _) = expect_code(&env, &["check-ignore", s(&ws.join("build"))], 0);
    assert!(out.contains("registry excludes"), "{out}");
    let (out, _) = expect_code(
        &env,
        &["check-ignore", s(&ws.join("src/main.rs"))],
        NOT_EXCLUDED,
    );
    assert!(out.contains("synced (no rule matches)"), "{out}");

    let out = env.wsync_ok(&[
        "check-ignore",
        "--json",
        s(&ws.join("x.log")),
        s(&ws.join("y.rs")),
    ]);
    let verdicts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(verdicts[0]["excluded"], true, "{out}");
    assert_eq!(verdicts[1]["excluded"], false, "{out}");

    let (_, err) = expect_code(&env, &["check-ignore", s(&env.root)], NOT_FOUND);
    assert!(err.contains("not inside any workspace"), "{err}");
}

#[test]
fn verify_uses_the_same_excludes_as_syncing() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let src = env.mkdir("ex");
    write(&src.join(".wsyncignore"), "*.log\nbuild/\n");
    write(&src.join(".gitignore"), "secret.txt\n");
    write(&src.join("a.txt"), "a");
    write(&src.join("debug.log"), "noise");
    write(&src.join("build/out.o"), "obj");
    write(&src.join("secret.txt"), "s");
    let mirror = env.root.join("ex-mirror");
    env.wsync_ok(&["add", s(&src), "--exclude", "*.tmp"]);
    env.wsync_ok(&["attach", "ex", s(&mirror)]);
    assert!(!mirror.join("debug.log").exists() && !mirror.join("build").exists());
    // Excluded files are not drift: syncing never sends them, and never deletes a remote-only
    // path an exclude matches.
    write(&src.join("scratch.tmp"), "t");
    write(&mirror.join("remote-only.log"), "kept on the remote");
    let out = env.wsync_ok(&["verify", "ex"]);
    assert!(out.contains("): in sync"), "{out}");
    // A file that is synced still counts.
    std::fs::remove_file(mirror.join("a.txt")).unwrap();
    let (out, _) = expect_code(&env, &["verify", "ex"], DRIFT);
    assert!(out.contains("a.txt"), "{out}");
    assert!(
        !out.contains("debug.log") && !out.contains("secret.txt"),
        "{out}"
    );
}
