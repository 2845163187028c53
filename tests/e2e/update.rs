//! End-to-end tests of changing a registered workspace's settings: the `update` request, `wsync
//! set`, `wsync add --watch-mode`, and `wsync up` applying a `.wsync.toml`'s settings (excludes,
//! watch mode, a remote's transport) idempotently, against a real wsyncd and monitor.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use wsync_core::monitor_proto::{WatchBackendKind, WatchMode};
use wsync_core::protocol::{ErrorCode, Request, Response};
use wsync_core::registry::update::WorkspaceChanges;
use wsync_core::registry::{Transport, Workspace};
use wsync_tests::env::{CliOutput, TestEnv};
use wsync_tests::faults::{cli_status, status, wait_status};
use wsync_tests::poll::poll_until;

const WAIT: Duration = Duration::from_secs(30);
/// The CLI's exit code for a usage error (crates/wsync-cli/src/exit_codes.rs).
const USAGE: i32 = 2;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

fn entry(env: &TestEnv, name: &str) -> Workspace {
    let out = env.wsync_ok(&["list", "--json"]);
    let all: Vec<Workspace> = serde_json::from_str(&out)
        .unwrap_or_else(|e| env.fail(&format!("list --json: {e}\n{out}")));
    all.into_iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| env.fail(&format!("workspace {name} is not registered:\n{out}")))
}

fn ok_in(env: &TestEnv, cwd: &Path, args: &[&str]) -> CliOutput {
    let out = env.wsync_in(cwd, args);
    if !out.success() {
        env.fail(&format!(
            "`wsync {}` failed with {}\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            out.status,
            out.stdout,
            out.stderr
        ));
    }
    out
}

fn failing(env: &TestEnv, args: &[&str]) -> CliOutput {
    let out = env.wsync(args);
    if out.success() {
        env.fail(&format!(
            "`wsync {}` succeeded\nstdout:\n{}",
            args.join(" "),
            out.stdout
        ));
    }
    out
}

/// How many monitors the daemon has started, from its log.
fn monitor_starts(env: &TestEnv) -> usize {
    let Ok(dir) = std::fs::read_dir(&env.log_dir) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("wsyncd"))
        .map(|e| {
            let text = std::fs::read(e.path()).unwrap_or_default();
            String::from_utf8_lossy(&text)
                .lines()
                .filter(|l| l.contains("monitor started"))
                .count()
        })
        .sum()
}

fn wait_starts(env: &TestEnv, wanted: usize) {
    poll_until(
        &format!("{wanted} monitor starts in the daemon log"),
        WAIT,
        Duration::from_millis(50),
        || monitor_starts(env) >= wanted,
    )
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    if monitor_starts(env) != wanted {
        env.fail(&format!(
            "expected {wanted} monitor starts, the log has {}",
            monitor_starts(env)
        ));
    }
}

fn running_pid(env: &TestEnv, ws: &str) -> u32 {
    let st = wait_status(env, ws, "the monitor running and reporting", WAIT, |st| {
        st.monitor.pid.is_some() && st.report.is_some()
    });
    st.monitor.pid.unwrap_or_default()
}

#[test]
fn up_applies_the_files_settings_once_and_again_changes_nothing() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let proj = env.mkdir("proj");
    let mirror = env.mkdir("mirror");
    std::fs::create_dir_all(proj.join("logs")).unwrap();
    std::fs::create_dir_all(proj.join("keep")).unwrap();
    std::fs::write(proj.join("logs/old.log"), "old\n").unwrap();
    std::fs::write(proj.join("keep/a.txt"), "a\n").unwrap();
    let remote = format!("[[remote]]\nspec = \"{}\"\nname = \"m\"\n", s(&mirror));
    std::fs::write(
        proj.join(".wsync.toml"),
        format!("name = \"proj\"\n{remote}"),
    )
    .unwrap();
    ok_in(&env, &proj, &["up"]);
    env.wsync_ok(&["flush", "proj", "--timeout", "30"]);
    assert!(mirror.join("logs/old.log").is_file(), "not excluded yet");
    let first = running_pid(&env, "proj");
    wait_starts(&env, 1);

    // Unchanged: nothing is written, nothing restarts, and up says so.
    let registry = std::fs::read(&env.registry).unwrap();
    let out = ok_in(&env, &proj, &["up"]);
    assert!(out.stdout.contains("nothing changed"), "{}", out.stdout);
    assert!(!out.stdout.contains("changed excludes"), "{}", out.stdout);
    assert_eq!(std::fs::read(&env.registry).unwrap(), registry);

    // Edited: an exclude, the watch mode and the remote's transport, applied in one go.
    std::fs::write(
        proj.join(".wsync.toml"),
        format!(
            "name = \"proj\"\nexcludes = [\"logs/\"]\nwatch_mode = \"poll\"\n{remote}transport = \"rsync\"\n"
        ),
    )
    .unwrap();
    let out = env.wsync_in(&proj, &["status"]);
    assert!(
        out.stderr.contains("excludes differ")
            && out.stderr.contains("watch_mode differs")
            && out.stderr.contains("remote m transport differs"),
        "status names each difference: {}",
        out.stderr
    );
    let out = ok_in(&env, &proj, &["up"]);
    assert!(
        out.stdout.contains(
            "workspace proj: changed excludes, watch_mode, remote m transport; monitor restarted"
        ),
        "{}",
        out.stdout
    );
    let ws = entry(&env, "proj");
    assert_eq!(ws.excludes, ["logs/"]);
    assert_eq!(ws.tuning.watch_mode, Some(WatchMode::Poll));
    assert_eq!(ws.remotes[0].transport, Transport::Rsync);
    let st = wait_status(&env, "proj", "the new monitor polling", WAIT, |st| {
        st.monitor.pid.is_some_and(|p| p != first)
            && st.report.as_ref().and_then(|r| r.watch_backend) == Some(WatchBackendKind::Poll)
    });
    assert_eq!(st.monitor.restarts, 0, "a restart asked for is not a crash");
    wait_starts(&env, 2);
    let json = cli_status(&env, "proj");
    assert_eq!(json.watch_mode, Some(WatchMode::Poll));
    let table = env.wsync_ok(&["status", "proj"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(header.contains("WATCH"), "{table}");
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.contains(" poll "), "{table}");
    let out = env.wsync_in(&proj, &["status"]);
    assert!(!out.stderr.contains("disagree"), "{}", out.stderr);

    // The newly excluded directory stops syncing: a full checksum sync after the new file
    // leaves it out, while a file beside it arrives.
    std::fs::write(proj.join("logs/new.log"), "local only\n").unwrap();
    std::fs::write(proj.join("keep/b.txt"), "b\n").unwrap();
    env.wsync_ok(&["flush", "proj", "--timeout", "30"]);
    env.wsync_ok(&["verify", "proj", "--repair"]);
    env.wsync_ok(&["flush", "proj", "--timeout", "30"]);
    assert!(mirror.join("keep/b.txt").is_file(), "{}", env.logs());
    assert!(
        !mirror.join("logs/new.log").exists(),
        "an excluded file was synced"
    );

    // Again: nothing changes, the monitor keeps running.
    let second = status(&env, "proj").monitor.pid;
    let out = ok_in(&env, &proj, &["up"]);
    assert!(out.stdout.contains("nothing changed"), "{}", out.stdout);
    assert_eq!(status(&env, "proj").monitor.pid, second);
    wait_starts(&env, 2);

    // Keys left out of the file go back to their defaults.
    std::fs::write(
        proj.join(".wsync.toml"),
        format!("name = \"proj\"\n{remote}"),
    )
    .unwrap();
    let out = ok_in(&env, &proj, &["up"]);
    assert!(
        out.stdout
            .contains("changed excludes, watch_mode, remote m transport"),
        "{}",
        out.stdout
    );
    let ws = entry(&env, "proj");
    assert!(ws.excludes.is_empty() && ws.tuning.watch_mode.is_none());
    assert_eq!(ws.remotes[0].transport, Transport::Auto);
}

/// Sends raw NDJSON lines through `wsync client` and returns its stdout.
fn client_lines(env: &TestEnv, lines: &[&str]) -> String {
    let mut child = env
        .command("wsync")
        .arg("client")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsync client");
    let mut stdin = child.stdin.take().expect("stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write to wsync client");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("wsync client");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn set_names_a_bad_key_or_value_and_null_resets() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let proj = env.mkdir("proj");
    let out = env.wsync_ok(&[
        "add",
        s(&proj),
        "--watch-mode",
        "poll",
        "--poll-interval-ms",
        "500",
    ]);
    assert!(
        out.contains("changed watch_mode, poll_interval_ms"),
        "{out}"
    );
    let ws = entry(&env, "proj");
    assert_eq!(ws.tuning.watch_mode, Some(WatchMode::Poll));
    assert_eq!(ws.tuning.poll_interval_ms, Some(500));
    let registry = std::fs::read(&env.registry).unwrap();

    // Bad keys and values are named; nothing changes.
    let out = failing(&env, &["set", "proj", "colour=red"]);
    assert_eq!(out.code(), Some(USAGE));
    assert!(
        out.stderr.contains("unknown setting \"colour\""),
        "{}",
        out.stderr
    );
    let out = failing(&env, &["set", "proj", "settle_ms=3", "poll_interval_ms=5"]);
    assert!(
        out.stderr
            .contains("poll_interval_ms=\"5\": must be between 100 and 3600000"),
        "{}",
        out.stderr
    );
    let out = failing(&env, &["set", "proj", "watch_mode=fast"]);
    assert!(
        out.stderr.contains("watch_mode=\"fast\"") && out.stderr.contains("auto, inotify"),
        "{}",
        out.stderr
    );
    let out = failing(&env, &["set", "proj", "remote.nope.transport=rsync"]);
    assert!(
        out.stderr.contains("no remote named \"nope\""),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(&env.registry).unwrap(), registry);

    // The daemon checks too (a client that skips the CLI's checks), all or none.
    let changes = WorkspaceChanges {
        settle_ms: Some(Some(20)),
        max_latency_ms: Some(Some(0)),
        ..WorkspaceChanges::default()
    };
    match env.request(&Request::Update {
        workspace: "proj".into(),
        changes,
    }) {
        Response::Error {
            code: ErrorCode::Invalid,
            message,
        } => assert!(
            message.contains("max_latency_ms must be between 1 and 60000"),
            "{message}"
        ),
        other => env.fail(&format!("out of range accepted: {other:?}")),
    }
    assert_eq!(std::fs::read(&env.registry).unwrap(), registry);
    // A connection greeted in protocol 1 is refused the request, naming the protocol it needs.
    let old = client_lines(
        &env,
        &[
            r#"{"type":"hello","protocol":1,"version":"old"}"#,
            r#"{"type":"update","workspace":"proj","changes":{"poll_interval_ms":null}}"#,
        ],
    );
    assert!(old.contains("update needs protocol 2 or later"), "{old}");
    assert_eq!(entry(&env, "proj").tuning.poll_interval_ms, Some(500));
    // An unknown key on the wire is refused by name.
    let out = client_lines(
        &env,
        &[
            r#"{"type":"hello","protocol":2,"version":"test"}"#,
            r#"{"type":"update","workspace":"proj","changes":{"watch_mod":"poll"}}"#,
            r#"{"type":"update","workspace":"proj","changes":{"poll_interval_ms":null}}"#,
        ],
    );
    let answers: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| env.fail(&format!("{e}: {l}"))))
        .collect();
    assert_eq!(answers.len(), 3, "{out}");
    assert_eq!(answers[1]["type"], "error", "{out}");
    assert!(
        answers[1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown field `watch_mod`")),
        "{out}"
    );
    // JSON null resets to the default.
    assert_eq!(answers[2]["type"], "updated", "{out}");
    assert_eq!(
        answers[2]["changed"],
        serde_json::json!(["poll_interval_ms"])
    );
    assert_eq!(entry(&env, "proj").tuning.poll_interval_ms, None);

    // KEY= resets from the CLI too, in the workspace the current directory is in; the same
    // value again changes nothing.
    let out = ok_in(&env, &proj, &["set", "watch_mode="]);
    assert!(out.stdout.contains("changed watch_mode"), "{}", out.stdout);
    assert_eq!(entry(&env, "proj").tuning.watch_mode, None);
    let out = ok_in(&env, &proj, &["set", "watch_mode=inotify", "settle_ms=20"]);
    assert!(
        out.stdout.contains("changed watch_mode, settle_ms"),
        "{}",
        out.stdout
    );
    let out = ok_in(&env, &proj, &["set", "watch_mode=inotify"]);
    assert!(out.stdout.contains("nothing changed"), "{}", out.stdout);
}
