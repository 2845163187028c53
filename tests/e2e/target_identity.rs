//! Target identity (issue 11): attach looks at a target first and refuses one that is not
//! provably ours (unrelated files: a preview and `--overwrite`; another workspace's marker);
//! the `.wsync-target` marker is never synced nor deleted; a target without our marker (a
//! vanished disk, an empty mount point) is never re-created or written, and recovers by
//! itself when the marker is back. Local and SSH targets, through the real daemon and CLI.

use std::path::Path;
use std::time::Duration;

use wsync_core::monitor_proto::RemoteState;
use wsync_core::protocol::{Request, Response};
use wsync_core::registry::Workspace;
use wsync_core::target::{read_local, MARKER_FILE};
use wsync_tests::env::TestEnv;
use wsync_tests::poll::poll_until;
use wsync_tests::sshd::{current_user, Sshd};
use wsync_tests::tree::{diff_trees, wait_until_equal};

const FLUSH: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
/// `attach` refusals are `invalid` (exit 5).
const INVALID: i32 = 5;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn workspace(env: &TestEnv, name: &str) -> Workspace {
    match env.request(&Request::List {}) {
        Response::Workspaces { workspaces } => workspaces
            .into_iter()
            .find(|w| w.name == name)
            .unwrap_or_else(|| env.fail(&format!("no workspace {name}"))),
        other => env.fail(&format!("list: {other:?}")),
    }
}

/// `wsync attach` argv for the test sshd's `path`, plus `extra`.
fn ssh_attach(ws: &str, sshd: &Sshd, path: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let spec = format!("{}@127.0.0.1:{}", current_user(), s(path));
    sshd.attach_args(ws, &spec, &[&["--name", name], extra].concat())
}

fn run(env: &TestEnv, args: &[String]) -> wsync_tests::env::CliOutput {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.wsync(&args)
}

/// 50 unrelated files in `dir`, and one the workspace has too (with other content).
fn unrelated(dir: &Path) {
    for i in 0..50 {
        write(&dir.join(format!("old/f{i:02}")), "keep me");
    }
    write(&dir.join("a.txt"), "theirs");
}

fn assert_refused_with_preview(env: &TestEnv, out: &wsync_tests::env::CliOutput, dir: &Path) {
    assert_eq!(out.code(), Some(INVALID), "{}", out.stderr);
    for needle in [
        "not empty and holds no .wsync-target marker",
        // The 50 files and their directory.
        "delete 51 path(s) there and overwrite 1",
        "overwritten:\n    a.txt",
        "old/f00",
        "and 41 more",
        "--overwrite",
    ] {
        assert!(
            out.stderr.contains(needle),
            "no {needle:?} in:\n{}",
            out.stderr
        );
    }
    assert_eq!(std::fs::read_dir(dir.join("old")).unwrap().count(), 50);
    assert_eq!(
        std::fs::read_to_string(dir.join("a.txt")).unwrap(),
        "theirs"
    );
    assert!(!dir.join(MARKER_FILE).exists());
    let _ = env;
}

#[test]
fn unrelated_files_are_refused_with_a_preview_until_overwrite_confirms() {
    let mut env = TestEnv::new();
    let sshd = Sshd::start(&env.root);
    env.start_daemon();
    let src = env.mkdir("src");
    write(&src.join("a.txt"), "mine");
    env.wsync_ok(&["add", s(&src)]);
    let (local, remote) = (env.mkdir("backup"), env.mkdir("ssh backup"));
    unrelated(&local);
    unrelated(&remote);

    let out = env.wsync(&["attach", "src", s(&local)]);
    assert_refused_with_preview(&env, &out, &local);
    let out = run(&env, &ssh_attach("src", &sshd, &remote, "box", &[]));
    assert_refused_with_preview(&env, &out, &remote);
    assert!(
        workspace(&env, "src").remotes.is_empty(),
        "nothing attached"
    );

    env.wsync_ok(&["attach", "src", s(&local), "--overwrite"]);
    let out = run(
        &env,
        &ssh_attach("src", &sshd, &remote, "box", &["--overwrite"]),
    );
    assert!(out.success(), "{}", out.stderr);
    let id = workspace(&env, "src").id;
    for dir in [&local, &remote] {
        assert!(
            diff_trees(&src, dir).is_empty(),
            "{:?}",
            diff_trees(&src, dir)
        );
        assert_eq!(read_local(dir).map(|m| m.workspace_id), Some(id.clone()));
    }
}

#[test]
fn another_workspaces_target_is_refused_and_an_empty_or_own_one_adopted() {
    let mut env = TestEnv::new();
    let sshd = Sshd::start(&env.root);
    env.start_daemon();
    let (one, two) = (env.mkdir("one"), env.mkdir("two"));
    write(&one.join("1.txt"), "one");
    write(&two.join("2.txt"), "two");
    env.wsync_ok(&["add", s(&one)]);
    env.wsync_ok(&["add", s(&two)]);
    // An empty target: the marker is written and the sync runs.
    let shared = env.mkdir("shared");
    env.wsync_ok(&["attach", "one", s(&shared)]);
    assert!(diff_trees(&one, &shared).is_empty());
    let id = workspace(&env, "one").id;
    assert_eq!(read_local(&shared).map(|m| m.workspace_id), Some(id));
    // The same directory reached over ssh (the registry cannot see the overlap; the marker
    // can), even with --overwrite.
    for extra in [&[][..], &["--overwrite"][..]] {
        let out = run(&env, &ssh_attach("two", &sshd, &shared, "box", extra));
        assert_eq!(out.code(), Some(INVALID), "{}", out.stderr);
        assert!(
            out.stderr.contains("mirror of another workspace"),
            "{}",
            out.stderr
        );
    }
    assert!(diff_trees(&one, &shared).is_empty(), "untouched");
    // Detached and attached again (over ssh this time): our own marker, adopted without
    // --overwrite although the target is not empty.
    env.wsync_ok(&["detach", "one", "shared"]);
    let out = run(&env, &ssh_attach("one", &sshd, &shared, "box", &[]));
    assert!(out.success(), "{}", out.stderr);
    write(&one.join("3.txt"), "three");
    env.wsync_ok(&["flush", "one", "--timeout", "30"]);
    assert!(diff_trees(&one, &shared).is_empty());
}

#[test]
fn the_marker_is_never_synced_from_the_source_nor_deleted_by_full_syncs() {
    let mut env = TestEnv::new();
    let sshd = Sshd::start(&env.root);
    env.start_daemon();
    let src = env.mkdir("src");
    write(&src.join("a.txt"), "a");
    write(&src.join(MARKER_FILE), "the source's own file of that name");
    env.wsync_ok(&["add", s(&src)]);
    let (local, remote) = (env.root.join("local"), env.root.join("remote"));
    env.wsync_ok(&["attach", "src", s(&local)]);
    let out = run(&env, &ssh_attach("src", &sshd, &remote, "box", &[]));
    assert!(out.success(), "{}", out.stderr);
    let id = workspace(&env, "src").id;
    let ours = |dir: &Path| read_local(dir).is_some_and(|m| m.workspace_id == id);
    // Edited, then deleted at the source; a restart runs full syncs again.
    write(&src.join(MARKER_FILE), "edited");
    env.wsync_ok(&["flush", "src", "--timeout", "30"]);
    std::fs::remove_file(src.join(MARKER_FILE)).unwrap();
    env.wsync_ok(&["flush", "src", "--timeout", "30"]);
    env.wsync_ok(&["restart", "src"]);
    write(&src.join("b.txt"), "b");
    env.wsync_ok(&["flush", "src", "--timeout", "30"]);
    for dir in [&local, &remote] {
        assert!(ours(dir), "{}: {:?}", dir.display(), read_local(dir));
        assert!(
            diff_trees(&src, dir).is_empty(),
            "{:?}",
            diff_trees(&src, dir)
        );
    }
}

#[test]
fn a_vanished_target_is_not_recreated_at_start_and_recovers_when_back() {
    let mut env = TestEnv::new();
    let sshd = Sshd::start(&env.root);
    env.start_daemon();
    let src = env.mkdir("src");
    write(&src.join("a.txt"), "a");
    env.wsync_ok(&["add", s(&src)]);
    let (local, remote) = (
        env.root.join("disk/mirror"),
        env.root.join("ssh disk/mirror"),
    );
    env.wsync_ok(&["attach", "src", s(&local)]);
    let out = run(&env, &ssh_attach("src", &sshd, &remote, "box", &[]));
    assert!(out.success(), "{}", out.stderr);
    // The disks go away while the daemon is down; an empty mount point stays at the remote
    // path, none at the local one.
    env.stop_daemon();
    let (local_away, remote_away) = (env.root.join("disk/away"), env.root.join("ssh disk/away"));
    std::fs::rename(&local, &local_away).unwrap();
    std::fs::rename(&remote, &remote_away).unwrap();
    std::fs::create_dir(&remote).unwrap();
    write(&src.join("b.txt"), "made while the disks were away");
    env.start_daemon();
    let errors = poll_until("both remotes in error", FLUSH, POLL, || {
        let Response::Status { workspaces } = env.request(&Request::Status {
            workspace: Some("src".into()),
        }) else {
            return None;
        };
        let remotes = workspaces.first()?.report.as_ref()?.remotes.clone();
        (remotes.len() == 2 && remotes.iter().all(|r| r.state == RemoteState::Error))
            .then_some(remotes)
    })
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    for remote in &errors {
        let error = remote.last_error.as_deref().unwrap_or_default();
        assert!(
            error.contains(MARKER_FILE) && error.contains("--overwrite"),
            "{error}"
        );
    }
    let out = env.wsync(&["flush", "src", "--timeout", "2"]);
    assert!(!out.success(), "flush must not say in sync: {}", out.stdout);
    assert!(!local.exists(), "the local target was re-created");
    assert_eq!(std::fs::read_dir(&remote).unwrap().count(), 0, "written to");
    // Remounted: each recovers by itself (its retry), with the change made meanwhile.
    std::fs::rename(&local_away, &local).unwrap();
    std::fs::remove_dir(&remote).unwrap();
    std::fs::rename(&remote_away, &remote).unwrap();
    for dir in [&local, &remote] {
        wait_until_equal(&src, dir, FLUSH).unwrap_or_else(|e| env.fail(&e));
    }
    env.wsync_ok(&["flush", "src", "--timeout", "30"]);
}

#[test]
fn a_root_swapped_while_the_daemon_was_down_halts_at_start_until_resume() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let src = env.mkdir("src");
    for i in 0..20 {
        write(&src.join(format!("f{i}")), "original");
    }
    env.wsync_ok(&["add", s(&src)]);
    let mirror = env.root.join("mirror");
    env.wsync_ok(&["attach", "src", s(&mirror)]);
    assert!(workspace(&env, "src").root_id.is_some(), "recorded at add");
    env.stop_daemon();
    // Another directory in its place (a mount that went away, a re-clone).
    std::fs::rename(&src, env.root.join("src-old")).unwrap();
    write(&src.join("only.txt"), "new");
    env.start_daemon();
    let halted = poll_until("the workspace to halt", FLUSH, POLL, || {
        let Response::Status { workspaces } = env.request(&Request::Status {
            workspace: Some("src".into()),
        }) else {
            return None;
        };
        workspaces.first()?.report.as_ref()?.halted.clone()
    })
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    assert!(halted.contains("replaced"), "{halted}");
    assert!(mirror.join("f0").exists(), "the old files were deleted");
    // Resume confirms the new root; it is recorded, so a restart does not halt again.
    env.wsync_ok(&["resume", "src"]);
    wait_until_equal(&src, &mirror, FLUSH).unwrap_or_else(|e| env.fail(&e));
    env.stop_daemon();
    env.start_daemon();
    write(&src.join("later.txt"), "later");
    env.wsync_ok(&["flush", "src", "--timeout", "30"]);
    assert!(diff_trees(&src, &mirror).is_empty());
}

#[test]
fn a_registry_from_before_markers_keeps_its_local_mirrors_syncing() {
    let mut env = TestEnv::new();
    let src = env.mkdir("src");
    let mirror = env.mkdir("mirror");
    for dir in [&src, &mirror] {
        write(&dir.join("a.txt"), "synced by an older wsync");
    }
    // An older wsync's registry: no ids, no root identity, no marker in the mirror.
    let registry = serde_json::json!({
        "version": 1,
        "workspaces": [{
            "name": "src",
            "path": src,
            "remotes": [{"name": "mirror", "target": {"kind": "local", "path": mirror}}],
        }],
    });
    std::fs::write(&env.registry, registry.to_string()).unwrap();
    env.start_daemon();
    write(&src.join("b.txt"), "after the upgrade");
    env.wsync_ok(&["flush", "src", "--timeout", "30"]);
    let ws = workspace(&env, "src");
    assert_eq!(read_local(&mirror).map(|m| m.workspace_id), Some(ws.id));
    assert!(ws.root_id.is_some());
    assert!(diff_trees(&src, &mirror).is_empty());
}
