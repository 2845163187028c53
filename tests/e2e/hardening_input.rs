//! Hardening, hostile input through the CLI and the files (issue 6): remote specs, ssh options
//! and names crafted as options or shell, bad `add` paths, and malformed, truncated, wrongly typed
//! or symlinked config and registry files. Every refusal must be clear, exit non-zero, change
//! nothing on disk and execute nothing (a `pwned` marker file must never appear).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use wsync_core::protocol::{Request, Response};
use wsync_core::registry::Workspace;
use wsync_tests::env::{descendants, pid_alive, pids_mentioning, CliOutput, TestEnv};
use wsync_tests::poll::{poll_until, INTERVAL};

/// The CLI's exit codes (crates/wsync-cli/src/exit_codes.rs).
const USAGE: i32 = 2;
const NOT_FOUND: i32 = 4;
const INVALID: i32 = 5;
/// wsyncd's exit codes (crates/wsyncd/src/exit_codes.rs).
const DAEMON_FAILURE: i32 = 1;
const DAEMON_ALREADY_RUNNING: i32 = 3;

fn list_json(env: &TestEnv) -> Vec<Workspace> {
    let out = env.wsync_ok(&["list", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| env.fail(&format!("list --json: {e}\n{out}")))
}

/// A running daemon with one workspace `ws` (so the registry file exists).
fn env_with_workspace() -> (TestEnv, PathBuf) {
    let mut env = TestEnv::new();
    let ws = env.mkdir("ws");
    env.start_daemon();
    env.wsync_ok(&["add", &ws.to_string_lossy()]);
    (env, ws)
}

/// Runs the CLI and requires a refusal: one of `codes`, an `error:` line, the registry unchanged.
fn expect_refused(env: &TestEnv, args: &[&str], codes: &[i32], registry: &[u8]) -> CliOutput {
    let out = env.wsync(args);
    let shown = format!(
        "`wsync {args:?}` -> {}\nstdout:\n{}\nstderr:\n{}",
        out.status, out.stdout, out.stderr
    );
    if !out.code().is_some_and(|c| codes.contains(&c)) {
        env.fail(&format!("expected exit code in {codes:?}: {shown}"));
    }
    if !out.stderr.starts_with("error: ") || out.stderr.trim().len() < 20 {
        env.fail(&format!(
            "refusal without a clear `error:` message: {shown}"
        ));
    }
    if std::fs::read(&env.registry).unwrap_or_default() != registry {
        env.fail(&format!("registry changed by a refused command: {shown}"));
    }
    out
}

/// Processes of this test other than the daemon and its monitors: the only places hostile
/// input could run (ssh or a shell under a monitor, a hook, something they left behind).
fn helper_processes(env: &TestEnv) -> Vec<u32> {
    let mut pids = pids_mentioning(&env.root);
    if let Some(daemon) = env.daemon_pid() {
        pids.extend(descendants(daemon));
    }
    pids.sort_unstable();
    pids.dedup();
    pids.retain(|pid| {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        !matches!(comm.trim_end(), "wsyncd" | "wsync-monitor")
    });
    pids
}

/// Nothing created the marker. Instead of watching for it a while: once no helper process of
/// this test is left, whatever could have run has finished, and the marker shows what it did.
fn assert_not_pwned(env: &TestEnv, marker: &Path) {
    poll_until(
        "every helper process of the test to finish",
        Duration::from_secs(10),
        INTERVAL,
        || helper_processes(env).is_empty(),
    )
    .unwrap_or_else(|e| env.fail(&format!("{e}: {:?} still run", helper_processes(env))));
    if marker.exists() {
        env.fail(&format!(
            "{} was created: hostile input got executed",
            marker.display()
        ));
    }
}

#[test]
fn remote_specs_crafted_as_options_or_shell_are_rejected() {
    let (env, _ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    let marker = env.root.join("pwned");
    let touch = format!("touch {}", marker.display());
    let specs = [
        format!("-oProxyCommand={touch}"),
        format!("-oProxyCommand={touch}@host:/srv/x"),
        format!("host:$({touch})"),
        format!("host:/a;{touch}"),
        format!("host:/a`{touch}`"),
        format!("host:/a\n{touch}"),
        format!("host:/a|{touch}"),
        format!("host:/a&&{touch}"),
        format!("host:/a>{}", marker.display()),
        format!("$({touch}):/srv/x"),
        format!("`{touch}`@host:/srv/x"),
        "ssh://-oProxyCommand=x@host/srv/x".to_owned(),
        format!("ssh://host/$({touch})"),
        format!("ssh://host:22;{touch}/srv/x"),
        "host:/srv/../../etc".to_owned(),
        "host:../x".to_owned(),
        "host:/srv/x/..".to_owned(),
        "/srv/mirror/../../etc".to_owned(),
        "-".to_owned(),
        "host:-rf".to_owned(),
        "host:".to_owned(),
        "host:/".to_owned(),
    ];
    for spec in &specs {
        // After `--` the spec reaches the daemon's validation; without it, clap may refuse first.
        expect_refused(&env, &["attach", "ws", "--", spec], &[INVALID], &registry);
        expect_refused(&env, &["attach", "ws", spec], &[USAGE, INVALID], &registry);
    }
    assert_not_pwned(&env, &marker);
    assert_eq!(list_json(&env)[0].remotes.len(), 0);
}

#[test]
fn ssh_options_identity_files_and_remote_names_that_execute_are_rejected() {
    let (env, _ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    let marker = env.root.join("pwned");
    let touch = format!("touch {}", marker.display());
    let base = ["attach", "ws", "host:/srv/x"];
    let cases: Vec<Vec<String>> = vec![
        vec!["--ssh-option".into(), format!("ProxyCommand={touch}")],
        vec!["--ssh-option".into(), format!("proxycommand={touch}")],
        vec!["--ssh-option".into(), format!("PROXYCOMMAND = {touch}")],
        vec!["--ssh-option".into(), format!("ProxyCommand {touch}")],
        vec!["--ssh-option".into(), format!("LocalCommand={touch}")],
        vec!["--ssh-option".into(), "PermitLocalCommand=yes".into()],
        vec!["--ssh-option".into(), format!("KnownHostsCommand={touch}")],
        vec!["--ssh-option".into(), format!("RemoteCommand={touch}")],
        vec!["--ssh-option".into(), "ControlPath=/tmp/x".into()],
        vec![
            "--ssh-option".into(),
            format!("ProxyJump=-oProxyCommand={touch}"),
        ],
        vec!["--ssh-option".into(), format!("Port=22\n{touch}")],
        vec!["--ssh-option".into(), "=yes".into()],
        vec!["--ssh-option".into(), "NoValue".into()],
        vec![format!("--identity-file=-oProxyCommand={touch}")],
        vec![
            "--identity-file".into(),
            env.root.join("missing-key").display().to_string(),
        ],
        vec!["--name".into(), format!("r;{touch}")],
        vec!["--name".into(), format!("r`{touch}`")],
        vec!["--name".into(), "r\nx".into()],
        vec!["--name=-rf".into()],
        vec!["--name".into(), "../r".into()],
        vec!["--port".into(), format!("22;{touch}")],
    ];
    for extra in &cases {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra.iter().map(String::as_str));
        expect_refused(&env, &args, &[USAGE, INVALID], &registry);
    }
    // Local remotes take no ssh options at all.
    let local = env.root.join("mirror").display().to_string();
    expect_refused(
        &env,
        &["attach", "ws", &local, "--ssh-option", "Port=22"],
        &[INVALID],
        &registry,
    );
    assert_not_pwned(&env, &marker);
}

#[test]
fn ssh_options_that_load_local_code_are_rejected() {
    let (env, _ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    let lib = env.root.join("evil.so").display().to_string();
    for option in [
        format!("PKCS11Provider={lib}"),
        format!("SecurityKeyProvider={lib}"),
    ] {
        expect_refused(
            &env,
            &["attach", "ws", "host:/srv/x", "--ssh-option", &option],
            &[INVALID],
            &registry,
        );
    }
}

#[test]
fn hostile_workspace_and_remote_arguments_match_nothing() {
    let (env, ws) = env_with_workspace();
    let mirror = env.root.join("mirror").display().to_string();
    env.wsync_ok(&["attach", "ws", &mirror]);
    let registry = std::fs::read(&env.registry).unwrap();
    let marker = env.root.join("pwned");
    let touch = format!("touch {}", marker.display());
    let workspaces = [
        "".to_owned(),
        "*".to_owned(),
        "/".to_owned(),
        "..".to_owned(),
        format!("{}/..", ws.display()),
        format!("ws;{touch}"),
        format!("$({touch})"),
        "ws\n".to_owned(),
        "-rf".to_owned(),
        "WS".to_owned(),
    ];
    for target in &workspaces {
        for command in ["remove", "pause", "restart", "status"] {
            expect_refused(
                &env,
                &[command, "--", target],
                &[USAGE, NOT_FOUND, INVALID],
                &registry,
            );
        }
    }
    for remote in ["*", "", "mirror;x", "-rf", "../mirror", "mirror\n"] {
        expect_refused(
            &env,
            &["detach", "ws", "--", remote],
            &[USAGE, NOT_FOUND, INVALID],
            &registry,
        );
    }
    assert_not_pwned(&env, &marker);
    assert_eq!(list_json(&env)[0].remotes.len(), 1);
}

#[test]
fn port_zero_is_rejected() {
    let (env, _ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    expect_refused(
        &env,
        &["attach", "ws", "host:/srv/x", "--port", "0"],
        &[USAGE, INVALID],
        &registry,
    );
}

#[test]
fn hostile_workspace_names_are_rejected() {
    let (env, _ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    let marker = env.root.join("pwned");
    let touch = format!("touch {}", marker.display());
    let dir = env.mkdir("second").display().to_string();
    let names = [
        format!("--name=a;{touch}"),
        format!("--name=a`{touch}`"),
        format!("--name=$({touch})"),
        "--name=a\nb".to_owned(),
        "--name=-rf".to_owned(),
        "--name=--help".to_owned(),
        "--name=../escape".to_owned(),
        "--name=a/b".to_owned(),
        "--name=.hidden".to_owned(),
        "--name=".to_owned(),
        "--name=a b".to_owned(),
        "--name=a*".to_owned(),
        format!("--name={}", "x".repeat(65)),
        "--name=ws".to_owned(), // duplicate
    ];
    for name in &names {
        expect_refused(&env, &["add", &dir, name], &[USAGE, INVALID], &registry);
    }
    // A directory whose own name is hostile needs --name; the default name is refused.
    let hostile_dir = env.mkdir(&format!("a;{}", "`id`"));
    expect_refused(
        &env,
        &["add", &hostile_dir.display().to_string()],
        &[INVALID],
        &registry,
    );
    // Exclude patterns with control characters are refused too.
    expect_refused(
        &env,
        &["add", &dir, "--name", "second", "--exclude", "a\nb"],
        &[INVALID],
        &registry,
    );
    assert_not_pwned(&env, &marker);
    assert_eq!(list_json(&env).len(), 1);
}

#[test]
fn add_of_a_file_a_missing_path_or_a_special_path_is_rejected() {
    let (env, ws) = env_with_workspace();
    let registry = std::fs::read(&env.registry).unwrap();
    let file = env.root.join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let fifo = env.root.join("a-fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    let link_to_file = env.root.join("link-to-file");
    std::os::unix::fs::symlink(&file, &link_to_file).unwrap();
    let dangling = env.root.join("dangling");
    std::os::unix::fs::symlink(env.root.join("nowhere"), &dangling).unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (file.clone(), "not a directory"),
        (fifo, "not a directory"),
        (link_to_file, "not a directory"),
        (env.root.join("missing/dir"), "No such file"),
        (dangling, "No such file"),
        (PathBuf::from("/"), "cannot be a workspace"),
        (env.home.clone(), "cannot be a workspace"),
        (ws.join("inside"), "inside"),
    ];
    std::fs::create_dir_all(ws.join("inside")).unwrap();
    for (path, needle) in &cases {
        let out = expect_refused(
            &env,
            &["add", &path.display().to_string()],
            &[INVALID],
            &registry,
        );
        assert!(
            out.stderr.contains(needle) || out.stderr.contains("overlaps"),
            "refusal of {} does not say why ({needle}): {}",
            path.display(),
            out.stderr
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn shell_characters_in_paths_are_data_and_sync_correctly() {
    use std::os::unix::ffi::OsStrExt;
    let mut env = TestEnv::new();
    // Names full of shell syntax and leading dashes; "touch pwned" would run in some cwd.
    let src = env.mkdir("-src ;$(touch pwned) `touch pwned` 'q\" [*] |touch pwned&");
    let dst = env.root.join("-dst ;$(touch pwned) $HOME >pwned");
    let markers = [
        env.root.join("pwned"),
        src.join("pwned"),
        dst.join("pwned"),
        env.home.join("pwned"),
        PathBuf::from("/pwned"),
    ];
    env.start_daemon();
    env.wsync_ok(&["add", "--name", "weird", "--", &src.display().to_string()]);
    env.wsync_ok(&[
        "attach",
        "weird",
        "--name",
        "mirror",
        "--",
        &dst.display().to_string(),
    ]);
    let listed = list_json(&env);
    assert_eq!(listed[0].path, src, "the path is stored verbatim");
    let names: Vec<std::ffi::OsString> = vec![
        "-rf ;$(touch pwned) `touch pwned` *.txt".into(),
        "--delete".into(),
        "new\nline".into(),
        std::ffi::OsStr::from_bytes(b"not-utf8-\xff\xfe.bin").to_owned(),
    ];
    for name in &names {
        std::fs::write(src.join(name), b"payload").unwrap();
    }
    poll_until(
        "the hostile-named files at the remote",
        Duration::from_secs(20),
        INTERVAL,
        || {
            names
                .iter()
                .all(|n| std::fs::read(dst.join(n)).is_ok_and(|b| b == b"payload"))
        },
    )
    .unwrap();
    for marker in &markers {
        assert_not_pwned(&env, marker);
    }
    // A relative path starting with '-' after `--` is resolved against the current directory.
    let dashed = env.mkdir("-rf");
    env.wsync_ok(&["add", "--name", "dashed", "--", "-rf"]);
    assert!(list_json(&env).iter().any(|w| w.path == dashed));
}

// ---------------------------------------------------------------------------------------------
// Config and registry files.

/// Runs a `wsyncd` that must refuse to start: it exits (within a deadline) with `code`.
fn run_wsyncd_expecting_exit(env: &TestEnv, code: i32) -> String {
    let out = env.run_daemon_expecting_exit();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() != Some(code) {
        env.fail(&format!(
            "wsyncd exited with {} instead of {code}\nstderr:\n{stderr}",
            out.status
        ));
    }
    stderr
}

/// Everything a file check compares: type, bytes (for files), mtime.
fn snapshot(path: &Path) -> (bool, Vec<u8>, i64, i64) {
    let meta = std::fs::symlink_metadata(path).expect("snapshot");
    let bytes = if meta.is_file() {
        std::fs::read(path).unwrap()
    } else {
        Vec::new()
    };
    (meta.is_dir(), bytes, meta.mtime(), meta.mtime_nsec())
}

fn pidfile(env: &TestEnv) -> PathBuf {
    let mut name = env.socket.clone().into_os_string();
    name.push(".pid");
    PathBuf::from(name)
}

/// After a refused start: no socket, no pidfile, no registry temp files.
fn assert_nothing_left(env: &TestEnv) {
    assert!(!env.socket.exists(), "a refused daemon left its socket");
    assert!(!pidfile(env).exists(), "a refused daemon left its pidfile");
    let temps: Vec<_> = std::fs::read_dir(env.registry.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".wsync-registry-")
        })
        .collect();
    assert!(temps.is_empty(), "registry temp files left: {temps:?}");
}

#[test]
fn a_bad_config_file_stops_wsyncd_naming_file_and_line() {
    let env = TestEnv::new();
    let good = std::fs::read_to_string(&env.config_path).unwrap();
    let lines = good.lines().count();
    let (cut_at, _) = good
        .match_indices("DaemonCommandSocketPath")
        .next()
        .unwrap();
    let cut_line = good[..cut_at].lines().count() + 1;
    let cases: Vec<(String, Vec<u8>, usize, &str)> = vec![
        (
            "bad line".into(),
            format!("{good}this line has no equals sign\n").into_bytes(),
            lines + 1,
            "expected KEY=VALUE",
        ),
        (
            "unknown key".into(),
            format!("{good}Colour=blue\n").into_bytes(),
            lines + 1,
            "unknown key \"Colour\"",
        ),
        (
            "truncated mid-key".into(),
            good.as_bytes()[..cut_at + 10].to_vec(),
            cut_line,
            "expected KEY=VALUE",
        ),
        (
            "truncated after '='".into(),
            good.as_bytes()[..cut_at + "DaemonCommandSocketPath=".len()].to_vec(),
            cut_line,
            "empty value",
        ),
        (
            "relative path".into(),
            format!("{good}LogDirectory=relative/log\n").into_bytes(),
            lines + 1,
            "absolute",
        ),
        (
            "out-of-range number".into(),
            format!("{good}WatchdogIntervalMs=0\n").into_bytes(),
            lines + 1,
            "between",
        ),
    ];
    for (what, bytes, line, needle) in cases {
        std::fs::write(&env.config_path, &bytes).unwrap();
        let before = snapshot(&env.config_path);
        let stderr = run_wsyncd_expecting_exit(&env, DAEMON_FAILURE);
        let position = format!("{}:{line}:", env.config_path.display());
        assert!(
            stderr.contains(&position) && stderr.contains(needle),
            "{what}: the error must name {position} and say {needle:?}: {stderr}"
        );
        assert_eq!(snapshot(&env.config_path), before, "{what}: config changed");
        assert!(!env.socket.exists() && !env.registry.exists(), "{what}");
    }
    // Not UTF-8: refused, naming the file.
    std::fs::write(&env.config_path, b"LogDirectory=/tmp/\xff\xfe\n").unwrap();
    let stderr = run_wsyncd_expecting_exit(&env, DAEMON_FAILURE);
    assert!(
        stderr.contains(&env.config_path.display().to_string()),
        "{stderr}"
    );
}

#[test]
fn a_config_path_that_is_a_directory_or_a_symlink_stops_wsyncd() {
    let env = TestEnv::new();
    let good = std::fs::read(&env.config_path).unwrap();
    let name = env.config_path.display().to_string();

    // A symlink to a perfectly good config is still refused; neither file is touched.
    let real = env.root.join("real.config");
    std::fs::write(&real, &good).unwrap();
    std::fs::remove_file(&env.config_path).unwrap();
    std::os::unix::fs::symlink(&real, &env.config_path).unwrap();
    let real_before = snapshot(&real);
    let link_before = snapshot(&env.config_path);
    let stderr = run_wsyncd_expecting_exit(&env, DAEMON_FAILURE);
    assert!(
        stderr.contains(&name) && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert_eq!(snapshot(&real), real_before);
    assert_eq!(snapshot(&env.config_path), link_before);
    assert!(!env.socket.exists());

    // A directory.
    std::fs::remove_file(&env.config_path).unwrap();
    std::fs::create_dir(&env.config_path).unwrap();
    let stderr = run_wsyncd_expecting_exit(&env, DAEMON_FAILURE);
    assert!(stderr.contains(&name), "{stderr}");
    assert!(env.config_path.is_dir());

    // Missing although named by WSYNC_CONFIG_PATH.
    std::fs::remove_dir(&env.config_path).unwrap();
    let stderr = run_wsyncd_expecting_exit(&env, DAEMON_FAILURE);
    assert!(stderr.contains(&name), "{stderr}");
    assert!(!env.config_path.exists(), "a missing config was created");
}

#[test]
fn a_config_path_that_is_a_fifo_stops_wsyncd() {
    let env = TestEnv::new();
    std::fs::remove_file(&env.config_path).unwrap();
    nix::unistd::mkfifo(&env.config_path, Mode::from_bits_truncate(0o600)).unwrap();
    let stderr = run_wsyncd_expecting_exit(&env, DAEMON_FAILURE);
    assert!(
        stderr.contains(&env.config_path.display().to_string()),
        "{stderr}"
    );
}

/// A registry written by the real daemon (one workspace with a remote), daemon stopped.
fn env_with_real_registry() -> (TestEnv, Vec<u8>) {
    let mut env = TestEnv::new();
    let ws = env.mkdir("ws");
    let mirror = env.root.join("mirror");
    env.start_daemon();
    env.wsync_ok(&["add", &ws.display().to_string()]);
    env.wsync_ok(&["attach", "ws", &mirror.display().to_string()]);
    assert_eq!(env.stop_daemon().code(), Some(0));
    let mode = std::fs::metadata(&env.registry).unwrap().mode() & 0o777;
    assert_eq!(
        mode & 0o077,
        0,
        "the registry is readable by others: {mode:o}"
    );
    let bytes = std::fs::read(&env.registry).unwrap();
    (env, bytes)
}

#[test]
fn a_bad_registry_stops_wsyncd_naming_file_and_position_and_is_never_rewritten() {
    let (env, good) = env_with_real_registry();
    let name = env.registry.display().to_string();
    let half = good[..good.len() / 2].to_vec();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "malformed",
            br#"{"version":1,"workspaces":[}"#.to_vec(),
            "line 1, column 28",
        ),
        ("truncated", half, "line "),
        (
            "wrong type",
            br#"{"version":1,"workspaces":5}"#.to_vec(),
            "line 1, column 27",
        ),
        ("a number", b"5\n".to_vec(), "line 1, column 1"),
        ("null", b"null".to_vec(), "line 1, column 4"),
        ("empty", Vec::new(), "line 1, column 0"),
        (
            "wrong field type",
            br#"{"version":1,"workspaces":[{"name":7,"path":"/x"}]}"#.to_vec(),
            "line 1, column 36",
        ),
        (
            "too new",
            br#"{"version":99,"workspaces":[]}"#.to_vec(),
            "newer",
        ),
        ("not UTF-8", b"{\"version\":1,\xff}".to_vec(), ""),
    ];
    for (what, bytes, needle) in cases {
        std::fs::write(&env.registry, &bytes).unwrap();
        let before = snapshot(&env.registry);
        let stderr = run_wsyncd_expecting_exit(&env, DAEMON_FAILURE);
        assert!(
            stderr.contains(&name) && stderr.contains(needle),
            "{what}: the error must name {name} and {needle:?}: {stderr}"
        );
        assert_eq!(
            snapshot(&env.registry),
            before,
            "{what}: registry was modified"
        );
        assert_nothing_left(&env);
    }
}

#[test]
fn a_registry_that_is_a_directory_or_a_symlink_stops_wsyncd() {
    let (env, good) = env_with_real_registry();
    let name = env.registry.display().to_string();

    // A symlink to a good registry: refused, link and target untouched.
    let real = env.root.join("real-registry.json");
    std::fs::rename(&env.registry, &real).unwrap();
    std::os::unix::fs::symlink(&real, &env.registry).unwrap();
    let (real_before, link_before) = (snapshot(&real), snapshot(&env.registry));
    let stderr = run_wsyncd_expecting_exit(&env, DAEMON_FAILURE);
    assert!(
        stderr.contains(&name) && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert_eq!(snapshot(&real), real_before);
    assert_eq!(std::fs::read(&real).unwrap(), good);
    assert_eq!(snapshot(&env.registry), link_before);
    assert_nothing_left(&env);

    // A dangling symlink is refused too (not treated as "missing, start empty").
    std::fs::remove_file(&env.registry).unwrap();
    std::os::unix::fs::symlink(env.root.join("nowhere.json"), &env.registry).unwrap();
    let stderr = run_wsyncd_expecting_exit(&env, DAEMON_FAILURE);
    assert!(stderr.contains(&name), "{stderr}");
    assert!(!env.root.join("nowhere.json").exists());

    // A directory.
    std::fs::remove_file(&env.registry).unwrap();
    std::fs::create_dir(&env.registry).unwrap();
    let stderr = run_wsyncd_expecting_exit(&env, DAEMON_FAILURE);
    assert!(stderr.contains(&name), "{stderr}");
    assert!(env.registry.is_dir());
    assert_eq!(std::fs::read_dir(&env.registry).unwrap().count(), 0);
    assert_nothing_left(&env);
}

#[test]
fn a_registry_with_entries_attach_would_refuse_stops_wsyncd() {
    let env = TestEnv::new();
    let ws = env.mkdir("ws");
    std::fs::write(ws.join("f"), b"x").unwrap();
    let marker = env.root.join("pwned");
    let registry = serde_json::json!({
        "version": 1,
        "workspaces": [{
            "name": "ws",
            "path": ws,
            "paused": false,
            "excludes": [],
            "remotes": [
                {"name": "a", "target": {"kind": "ssh", "host": "localhost", "path": "/srv/a",
                    "ssh_options": [{"key": "ProxyCommand", "value": format!("touch {}", marker.display())}]}},
                {"name": "b", "target": {"kind": "ssh", "host": "-oProxyCommand=x", "path": "/srv/b"}},
            ],
        }],
    });
    std::fs::write(&env.registry, registry.to_string()).unwrap();
    let before = snapshot(&env.registry);
    let stderr = run_wsyncd_expecting_exit(&env, DAEMON_FAILURE);
    assert!(
        stderr.contains(&env.registry.display().to_string()),
        "{stderr}"
    );
    assert_eq!(snapshot(&env.registry), before);
    assert_not_pwned(&env, &marker);
}

#[test]
fn a_registry_that_is_a_fifo_stops_wsyncd() {
    let env = TestEnv::new();
    nix::unistd::mkfifo(&env.registry, Mode::from_bits_truncate(0o600)).unwrap();
    let stderr = run_wsyncd_expecting_exit(&env, DAEMON_FAILURE);
    assert!(
        stderr.contains(&env.registry.display().to_string()),
        "{stderr}"
    );
    assert_nothing_left(&env);
}

#[test]
fn a_second_wsyncd_exits_clearly_while_the_first_keeps_serving() {
    let (mut env, _ws) = env_with_workspace();
    let first = env.daemon_pid().unwrap();
    let registry = snapshot(&env.registry);
    let pid_bytes = std::fs::read(pidfile(&env)).unwrap();
    let socket_ino = std::fs::symlink_metadata(&env.socket).unwrap().ino();
    for _ in 0..3 {
        let stderr = run_wsyncd_expecting_exit(&env, DAEMON_ALREADY_RUNNING);
        assert!(
            stderr.contains(&format!("another wsyncd (pid {first}) is already running"))
                && stderr.contains(&env.config_path.display().to_string()),
            "{stderr}"
        );
    }
    assert!(env.daemon_exit_status().is_none(), "the first daemon died");
    match env.request(&Request::DaemonInfo {}) {
        Response::DaemonInfo { pid, .. } => assert_eq!(pid, first),
        other => env.fail(&format!("{other:?}")),
    }
    assert_eq!(list_json(&env).len(), 1);
    assert_eq!(snapshot(&env.registry), registry);
    assert_eq!(std::fs::read(pidfile(&env)).unwrap(), pid_bytes);
    assert_eq!(
        std::fs::symlink_metadata(&env.socket).unwrap().ino(),
        socket_ino,
        "the socket was replaced"
    );
}

#[test]
fn daemons_started_at_the_same_moment_leave_exactly_one_running() {
    let env = TestEnv::new();
    let mut children: Vec<_> = (0..4)
        .map(|_| {
            env.command("wsyncd")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn wsyncd")
        })
        .collect();
    let mut codes: Vec<Option<i32>> = vec![None; children.len()];
    let settled = poll_until(
        "exactly one racing daemon to be left",
        Duration::from_secs(15),
        INTERVAL,
        || {
            for (child, code) in children.iter_mut().zip(codes.iter_mut()) {
                if code.is_none() {
                    if let Ok(Some(status)) = child.try_wait() {
                        *code = Some(status.code().unwrap_or(-1));
                    }
                }
            }
            codes.iter().filter(|c| c.is_some()).count() == children.len() - 1
                && env.try_request(&Request::DaemonInfo {}).is_ok()
        },
    )
    .is_ok();
    let survivors: Vec<u32> = children
        .iter()
        .zip(&codes)
        .filter(|(_, c)| c.is_none())
        .map(|(child, _)| child.id())
        .collect();
    let answer = env.try_request(&Request::DaemonInfo {});
    for child in &mut children {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    }
    for child in &mut children {
        let id = child.id();
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
        assert!(!pid_alive(id), "wsyncd {id} survived SIGKILL");
    }
    if !settled {
        env.fail(&format!(
            "racing daemons did not settle: exit codes {codes:?}"
        ));
    }
    assert_eq!(survivors.len(), 1, "exit codes {codes:?}");
    assert!(
        codes.iter().flatten().all(|c| *c == DAEMON_ALREADY_RUNNING),
        "losers must exit with 'already running': {codes:?}"
    );
    match answer {
        Ok(Response::DaemonInfo { pid, .. }) => assert_eq!(pid, survivors[0]),
        other => env.fail(&format!("{other:?}")),
    }
}
