//! End-to-end tests of `.wsync.toml` (`wsync init`, `up`, `down`, the disagreement note of
//! `status`) and of commands that default to the workspace holding the current directory,
//! against a real wsyncd.

use std::path::Path;

use wsync_core::registry::Workspace;
use wsync_tests::env::{CliOutput, TestEnv};

/// The CLI's exit codes (crates/wsync-cli/src/exit_codes.rs), repeated on purpose.
const NOT_FOUND: i32 = 4;
const INVALID: i32 = 5;

fn list(env: &TestEnv) -> Vec<Workspace> {
    let out = env.wsync_ok(&["list", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| env.fail(&format!("list --json: {e}\n{out}")))
}

/// `(remote name, keep_deleted_days)` of workspace `name`, sorted.
fn remotes(env: &TestEnv, name: &str) -> Vec<(String, u32)> {
    let all = list(env);
    let Some(ws) = all.iter().find(|w| w.name == name) else {
        env.fail(&format!("workspace {name} is not registered: {all:?}"))
    };
    let mut out: Vec<_> = ws
        .remotes
        .iter()
        .map(|r| (r.name.clone(), r.keep_deleted_days))
        .collect();
    out.sort();
    out
}

fn ok_in(env: &TestEnv, cwd: &Path, args: &[&str]) -> CliOutput {
    let out = env.wsync_in(cwd, args);
    if !out.success() {
        env.fail(&format!(
            "`wsync {}` in {} failed with {}\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            cwd.display(),
            out.status,
            out.stdout,
            out.stderr
        ));
    }
    out
}

fn failing_in(env: &TestEnv, cwd: &Path, args: &[&str], code: i32) -> CliOutput {
    let out = env.wsync_in(cwd, args);
    if out.code() != Some(code) {
        env.fail(&format!(
            "`wsync {}`: expected exit code {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            out.status,
            out.stdout,
            out.stderr
        ));
    }
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

fn write_file(root: &Path, text: &str) {
    std::fs::write(root.join(".wsync.toml"), text).expect("write .wsync.toml");
}

#[test]
fn up_is_idempotent_and_applies_edits_and_down_unregisters() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let proj = env.mkdir("proj");
    let sub = env.mkdir("proj/src/deep");
    let (m1, m2, m3) = (env.mkdir("m1"), env.mkdir("m2"), env.mkdir("m3"));
    write_file(
        &proj,
        &format!(
            "name = \"proj\"\nexcludes = [\"target/\"]\n\n[[remote]]\nspec = \"{}\"\nname = \"one\"\n\n[[remote]]\nspec = \"{}\"\n",
            s(&m1),
            s(&m2)
        ),
    );
    let out = ok_in(&env, &env.root, &["up", s(&proj)]);
    assert!(
        out.stdout.contains("registered workspace proj"),
        "{}",
        out.stdout
    );
    assert_eq!(remotes(&env, "proj"), [("m2".into(), 0), ("one".into(), 0)]);
    let ws = list(&env).into_iter().find(|w| w.name == "proj").unwrap();
    assert_eq!(ws.excludes, ["target/"]);

    // Again, unchanged: nothing is detached or attached, the registry stays as it was.
    let before = std::fs::read(&env.registry).expect("registry");
    let out = ok_in(&env, &sub, &["up"]);
    assert!(
        out.stdout.contains("workspace proj matches"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("attached"), "{}", out.stdout);
    assert_eq!(std::fs::read(&env.registry).expect("registry"), before);

    // Edited: m2 removed, m3 added, one keeps deleted files now; applied from a subdirectory.
    write_file(
        &proj,
        &format!(
            "name = \"proj\"\nexcludes = [\"target/\"]\n[[remote]]\nspec = \"{}\"\nname = \"one\"\nkeep_deleted_days = 3\n[[remote]]\nspec = \"{}\"\n",
            s(&m1),
            s(&m3)
        ),
    );
    let out = ok_in(&env, &sub, &["up"]);
    assert!(out.stdout.contains("detached remote m2"), "{}", out.stdout);
    assert!(out.stdout.contains("attached remote m3"), "{}", out.stdout);
    assert_eq!(remotes(&env, "proj"), [("m3".into(), 0), ("one".into(), 3)]);

    // A remote whose target changed under the same name is detached and attached again.
    let m4 = env.mkdir("m4");
    write_file(
        &proj,
        &format!(
            "[[remote]]\nspec = \"{}\"\nname = \"one\"\nkeep_deleted_days = 3\n[[remote]]\nspec = \"{}\"\nname = \"m3\"\n",
            s(&m1),
            s(&m4)
        ),
    );
    ok_in(&env, &proj, &["up"]);
    let ws = list(&env).into_iter().find(|w| w.name == "proj").unwrap();
    let m3_target = ws
        .remotes
        .iter()
        .find(|r| r.name == "m3")
        .map(|r| r.target.to_string());
    assert_eq!(m3_target.as_deref(), Some(s(&m4)));
    // The file no longer names its excludes: up makes them the default (none).
    assert!(ws.excludes.is_empty(), "{:?}", ws.excludes);
    let out = ok_in(&env, &sub, &["status"]);
    assert!(!out.stderr.contains("disagree"), "{}", out.stderr);

    // status notices a file edited but not applied; quiet once applied.
    let m5 = env.mkdir("m5");
    let text = std::fs::read_to_string(proj.join(".wsync.toml")).unwrap();
    write_file(
        &proj,
        &format!(
            "excludes = [\"target/\"]\n{text}[[remote]]\nspec = \"{}\"\n",
            s(&m5)
        ),
    );
    let out = ok_in(&env, &sub, &["status"]);
    assert!(
        out.stderr.contains("remote m5 not attached"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("excludes differ"), "{}", out.stderr);
    ok_in(&env, &sub, &["up"]);
    let out = ok_in(&env, &sub, &["status"]);
    assert!(!out.stderr.contains("disagree"), "{}", out.stderr);

    let out = ok_in(&env, &sub, &["down"]);
    assert!(
        out.stdout.contains("unregistered workspace proj"),
        "{}",
        out.stdout
    );
    assert!(list(&env).is_empty());
    assert!(proj.join(".wsync.toml").is_file(), "down keeps the file");
    let out = ok_in(&env, &sub, &["down"]);
    assert!(out.stdout.contains("nothing to do"), "{}", out.stdout);
}

#[test]
fn commands_without_workspace_use_the_one_holding_the_current_directory() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let a = env.mkdir("a");
    let deep = env.mkdir("a/x/y");
    let b = env.mkdir("b");
    env.wsync_ok(&["add", s(&a)]);
    env.wsync_ok(&["add", s(&b)]);

    let out = ok_in(&env, &deep, &["status"]);
    let rows: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert!(rows.iter().all(|l| l.starts_with("a ")), "{}", out.stdout);
    assert!(!rows.is_empty(), "{}", out.stdout);
    let out = ok_in(&env, &deep, &["status", "--all"]);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("b ")),
        "{}",
        out.stdout
    );

    ok_in(&env, &deep, &["pause"]);
    let paused: Vec<_> = list(&env).into_iter().map(|w| (w.name, w.paused)).collect();
    assert_eq!(paused, [("a".into(), true), ("b".into(), false)]);

    // Outside every workspace: the whole table for status, a clear error for the rest.
    let out = ok_in(&env, &env.root, &["status"]);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("b ")),
        "{}",
        out.stdout
    );
    let out = failing_in(&env, &env.root, &["resume"], NOT_FOUND);
    assert!(
        out.stderr.contains("not inside a workspace")
            && out
                .stderr
                .contains("pass WORKSPACE or cd into one (wsync list shows them)"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_bad_file_names_file_and_line_and_changes_nothing() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let proj = env.mkdir("proj");
    let m = env.mkdir("m");
    write_file(
        &proj,
        &format!(
            "name = \"proj\"\n[[remote]]\nspec = \"{}\"\nkeep_deleted = 3\n",
            s(&m)
        ),
    );
    let out = failing_in(&env, &proj, &["up"], INVALID);
    let at = format!("{}:4: ", s(&proj.join(".wsync.toml")));
    assert!(out.stderr.contains(&at), "{}", out.stderr);
    assert!(out.stderr.contains("keep_deleted"), "{}", out.stderr);
    assert!(list(&env).is_empty());
}

#[test]
fn init_writes_a_starter_once_and_up_keeps_the_daemons_target_checks() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let proj = env.mkdir("proj");
    let out = ok_in(&env, &proj, &["init"]);
    assert!(out.stdout.contains(".wsync.toml"), "{}", out.stdout);
    let starter = std::fs::read_to_string(proj.join(".wsync.toml")).unwrap();
    let out = failing_in(&env, &proj, &["init"], INVALID);
    assert!(out.stderr.contains("exists already"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(proj.join(".wsync.toml")).unwrap(),
        starter
    );
    ok_in(&env, &proj, &["up"]);
    assert_eq!(remotes(&env, "proj"), []);

    // A non-empty target without our marker: refused by the daemon as `attach` is, and
    // accepted with --overwrite.
    let full = env.mkdir("full");
    std::fs::write(full.join("precious"), "x").unwrap();
    write_file(
        &proj,
        &format!("{starter}\n[[remote]]\nspec = \"{}\"\n", s(&full)),
    );
    let out = env.wsync_in(&proj, &["up"]);
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains("holds no .wsync-target marker"),
        "{}",
        out.stderr
    );
    assert_eq!(remotes(&env, "proj"), []);
    ok_in(&env, &proj, &["up", "--overwrite"]);
    assert_eq!(remotes(&env, "proj"), [("full".into(), 0)]);
}
