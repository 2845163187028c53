//! Recoverable deletions (issue 11): a remote with `keep_deleted_days` keeps what syncs delete
//! or overwrite in `.wsync-trash/<snapshot>/` (incremental batches, full syncs, a rename over
//! an existing file), the trash is never synced from a source nor deleted by a full sync,
//! snapshots past the setting are pruned, `wsync trash list|restore` show and restore them,
//! and with the setting at 0 nothing is kept. Local and SSH remotes, real rsync and sshd.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use wsync_core::monitor_proto::MonitorCommand;
use wsync_core::registry::Remote;
use wsync_core::trash::{snapshot_name, TRASH_DIR};
use wsync_tests::env::TestEnv;
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::poll::poll_until;
use wsync_tests::sshd::{current_user, Sshd};
use wsync_tests::tree::{diff_trees, scratch_dir, wait_until_equal};

const FLUSH: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn keeping(mut remote: Remote, days: u32) -> Remote {
    remote.keep_deleted_days = days;
    remote
}

fn ssh_remote(sshd: &Sshd, path: &Path) -> Remote {
    sshd.remote("r", path)
}

/// A local batch holds its snapshot open until rsync exits, after the flush that waited for
/// it answered; one that kept nothing leaves no trash behind.
fn no_trash_once_the_batch_ends(m: &MonitorProc, dst: &Path, why: &str) {
    poll_until(why, FLUSH, POLL, || {
        (!dst.join(TRASH_DIR).exists()).then_some(())
    })
    .unwrap_or_else(|e| m.fail(&e.to_string()));
}

/// The snapshot directories in `dst`'s trash that hold something, sorted (a local batch's
/// snapshot is there, empty, while the batch runs: removed if it kept nothing).
fn snapshots(dst: &Path) -> Vec<PathBuf> {
    let holds_something = |dir: &Path| std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_some());
    let mut out: Vec<PathBuf> = std::fs::read_dir(dst.join(TRASH_DIR))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|dir| holds_something(dir));
    out.sort();
    out
}

/// The contents `rel` has in each snapshot of `dst`'s trash, oldest first.
fn kept(dst: &Path, rel: &str) -> Vec<String> {
    snapshots(dst)
        .iter()
        .filter_map(|s| std::fs::read_to_string(s.join(rel)).ok())
        .collect()
}

/// Deleted files, overwritten files, a deleted directory and a rename over an existing file:
/// the old contents all land in the trash, and the mirror is exact apart from it.
fn deletions_scenario(dir: &Path, remote: impl Fn(&Path) -> Remote) {
    let src = dir.join("src");
    let dst = dir.join("dst");
    write(&src.join("a.txt"), "old a");
    write(&src.join("b.txt"), "old b");
    write(&src.join("d/c.txt"), "old c");
    write(&src.join("e.txt"), "old e");
    write(&src.join("x.txt"), "x moves over e");
    let mut m = MonitorProc::start(
        dir,
        workspace("trash", &src, vec![keeping(remote(&dst), 7)]),
    );
    m.flush_ok(FLUSH);
    no_trash_once_the_batch_ends(
        &m,
        &dst,
        "an initial sync into an empty target keeps nothing",
    );
    write(&src.join("a.txt"), "new a, longer");
    std::fs::remove_file(src.join("b.txt")).unwrap();
    std::fs::remove_dir_all(src.join("d")).unwrap();
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
    // The old content is kept; a later batch that re-sends the file by content (its events
    // may span two batches) may keep a copy of the new content as well.
    assert_eq!(
        kept(&dst, "a.txt").first().map(String::as_str),
        Some("old a"),
        "overwritten"
    );
    assert_eq!(kept(&dst, "b.txt"), ["old b"], "deleted");
    assert_eq!(
        kept(&dst, "d/c.txt"),
        ["old c"],
        "deleted with its directory"
    );
    std::fs::rename(src.join("x.txt"), src.join("e.txt")).unwrap();
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
    assert_eq!(
        std::fs::read_to_string(dst.join("e.txt")).unwrap(),
        "x moves over e"
    );
    assert_eq!(
        kept(&dst, "e.txt").first().map(String::as_str),
        Some("old e"),
        "overwritten by a rename"
    );
    for snapshot in snapshots(&dst) {
        let name = snapshot.file_name().unwrap().to_str().unwrap();
        assert!(
            wsync_core::trash::snapshot_time(name).is_some(),
            "snapshot {name} is not named by its UTC time"
        );
    }
    assert!(m.shutdown(Duration::from_secs(10)).success());
}

#[test]
fn deleted_and_overwritten_files_land_in_the_trash_locally() {
    let tmp = scratch_dir();
    deletions_scenario(tmp.path(), |dst| local_remote("r", dst));
}

#[test]
fn deleted_and_overwritten_files_land_in_the_trash_over_ssh() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    deletions_scenario(tmp.path(), |dst| ssh_remote(&sshd, dst));
}

/// A full sync's deletions land in the trash; the target's trash survives full syncs; a
/// source's own `.wsync-trash` is never sent. With `keep_days` 0 nothing new is kept, and the
/// trash already there is still never deleted.
fn full_sync_scenario(dir: &Path, keep_days: u32, remote: impl Fn(&Path) -> Remote) {
    let src = dir.join("src");
    let dst = dir.join("dst");
    write(&src.join("a.txt"), "a");
    write(&src.join(".wsync-trash/source-own/f"), "the source's own");
    let earlier = snapshot_name(SystemTime::now() - Duration::from_secs(3600));
    write(
        &dst.join(format!("{TRASH_DIR}/{earlier}/old.txt")),
        "kept earlier",
    );
    write(&dst.join("stale.txt"), "only on the remote");
    let mut m = MonitorProc::start(
        dir,
        workspace("full", &src, vec![keeping(remote(&dst), keep_days)]),
    );
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
    let stale = kept(&dst, "stale.txt");
    if keep_days > 0 {
        assert_eq!(stale, ["only on the remote"], "the full sync's deletion");
    } else {
        assert!(stale.is_empty(), "keep_deleted 0 keeps nothing: {stale:?}");
    }
    m.send(&MonitorCommand::Resync);
    m.flush_ok(FLUSH);
    write(&src.join("b.txt"), "b");
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
    assert_eq!(
        std::fs::read_to_string(dst.join(format!("{TRASH_DIR}/{earlier}/old.txt"))).unwrap(),
        "kept earlier",
        "the trash survives full syncs"
    );
    assert!(
        !dst.join(TRASH_DIR).join("source-own").exists(),
        "a source's .wsync-trash is never synced"
    );
    if keep_days == 0 {
        assert_eq!(snapshots(&dst).len(), 1, "{:?}", snapshots(&dst));
    }
    assert!(m.shutdown(Duration::from_secs(10)).success());
}

#[test]
fn a_full_sync_keeps_its_deletions_and_never_touches_the_trash_locally() {
    let tmp = scratch_dir();
    full_sync_scenario(tmp.path(), 7, |dst| local_remote("r", dst));
}

#[test]
fn a_full_sync_keeps_its_deletions_and_never_touches_the_trash_over_ssh() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    full_sync_scenario(tmp.path(), 7, |dst| ssh_remote(&sshd, dst));
}

#[test]
fn keep_deleted_zero_keeps_nothing_but_still_protects_the_trash() {
    let tmp = scratch_dir();
    full_sync_scenario(tmp.path(), 0, |dst| local_remote("r", dst));
    // And an incremental deletion or overwrite makes no trash either.
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src.join("a.txt"), "a");
    write(&src.join("b.txt"), "b");
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("zero", &src, vec![local_remote("r", &dst)]),
    );
    m.flush_ok(FLUSH);
    write(&src.join("a.txt"), "a, rewritten");
    std::fs::remove_file(src.join("b.txt")).unwrap();
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
    assert!(
        !dst.join(TRASH_DIR).exists(),
        "no trash with keep_deleted 0"
    );
}

/// Snapshots older than the setting are removed at start (by name: one named 30 days ago);
/// newer ones and entries that are not snapshots stay.
fn prune_scenario(dir: &Path, remote: impl Fn(&Path) -> Remote) {
    let src = dir.join("src");
    let dst = dir.join("dst");
    write(&src.join("a.txt"), "a");
    let old = snapshot_name(SystemTime::now() - Duration::from_secs(30 * 86_400));
    let recent = snapshot_name(SystemTime::now() - Duration::from_secs(86_400));
    write(&dst.join(format!("{TRASH_DIR}/{old}/d/old.txt")), "old");
    write(
        &dst.join(format!("{TRASH_DIR}/{recent}/recent.txt")),
        "recent",
    );
    write(
        &dst.join(format!("{TRASH_DIR}/notes/mine.txt")),
        "not a snapshot",
    );
    let mut m = MonitorProc::start(
        dir,
        workspace("prune", &src, vec![keeping(remote(&dst), 7)]),
    );
    let gone = dst.join(TRASH_DIR).join(&old);
    poll_until("the old snapshot to be pruned", FLUSH, POLL, || {
        !gone.exists()
    })
    .unwrap_or_else(|e| m.fail(&e.to_string()));
    m.flush_ok(FLUSH);
    assert!(dst
        .join(format!("{TRASH_DIR}/{recent}/recent.txt"))
        .exists());
    assert!(dst.join(format!("{TRASH_DIR}/notes/mine.txt")).exists());
    assert!(m.shutdown(Duration::from_secs(10)).success());
}

#[test]
fn old_snapshots_are_pruned_locally() {
    let tmp = scratch_dir();
    prune_scenario(tmp.path(), |dst| local_remote("r", dst));
}

#[test]
fn old_snapshots_are_pruned_over_ssh() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    prune_scenario(tmp.path(), |dst| ssh_remote(&sshd, dst));
}

// ---- through the daemon and the CLI -------------------------------------------------------

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `wsync attach` argv for the test sshd's `path`, plus `extra`.
fn ssh_attach(ws: &str, sshd: &Sshd, path: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "attach".into(),
        ws.into(),
        format!("{}@127.0.0.1:{}", current_user(), s(path)),
        "--name".into(),
        "r".into(),
        "--port".into(),
        sshd.port().to_string(),
        "--identity-file".into(),
        s(sshd.identity_file()).into(),
    ];
    for option in [
        "UserKnownHostsFile=/dev/null",
        "StrictHostKeyChecking=no",
        "LogLevel=ERROR",
    ] {
        args.push("--ssh-option".into());
        args.push(option.into());
    }
    args.extend(extra.iter().map(|e| (*e).to_owned()));
    args
}

/// The snapshots `wsync trash list --json` reports for the workspace's only remote.
fn listed(env: &TestEnv, ws: &str) -> Vec<serde_json::Value> {
    let out = env.wsync_ok(&["trash", "list", ws, "--json"]);
    let value: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| env.fail(&format!("trash list --json: {e}: {out}")));
    value[0]["snapshots"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `attach --keep-deleted 7`; a deleted file is listed and restored into the workspace, then
/// synced out again; an overwritten file's old content is restored only with `--force`; the
/// setting shows in `list` and is changed by `attach --keep-deleted 0` on the attached target.
fn cli_scenario(env: &mut TestEnv, attach: &[String], dst: &Path) {
    let src = env.mkdir("src");
    write(&src.join("keep.txt"), "precious");
    write(&src.join("edit.txt"), "first draft");
    env.wsync_ok(&["add", s(&src)]);
    let args: Vec<&str> = attach.iter().map(String::as_str).collect();
    let mut with_keep = args.clone();
    with_keep.extend(["--keep-deleted", "7"]);
    env.wsync_ok(&with_keep);
    let list = env.wsync_ok(&["list"]);
    assert!(list.contains("(keeps deleted 7 d)"), "{list}");
    assert!(listed(env, "src").is_empty());

    std::fs::remove_file(src.join("keep.txt")).unwrap();
    write(&src.join("edit.txt"), "second draft");
    env.wsync_ok(&["flush", "src"]);
    wait_until_equal(&src, dst, FLUSH).unwrap_or_else(|e| env.fail(&e));
    let snaps = listed(env, "src");
    let files: u64 = snaps.iter().map(|s| s["files"].as_u64().unwrap()).sum();
    // Both old files (a re-send of the edit may add a copy of its new content).
    assert!(files >= 2, "{snaps:?}");
    let with = |rel: &str| {
        snapshots(dst)
            .into_iter()
            .find(|s| s.join(rel).exists())
            .map(|s| s.file_name().unwrap().to_str().unwrap().to_owned())
            .unwrap_or_else(|| env.fail(&format!("no snapshot holds {rel}")))
    };
    let (deleted_in, edited_in) = (with("keep.txt"), with("edit.txt"));

    let out = env.wsync_ok(&["trash", "restore", "src", &deleted_in, "keep.txt"]);
    assert!(out.contains("restored 1 path(s)"), "{out}");
    assert_eq!(
        std::fs::read_to_string(src.join("keep.txt")).unwrap(),
        "precious"
    );
    // The newer local edit is left alone without --force.
    let out = env.wsync_ok(&["trash", "restore", "src", &edited_in, "edit.txt"]);
    assert!(out.contains("left as they are; --force"), "{out}");
    assert_eq!(
        std::fs::read_to_string(src.join("edit.txt")).unwrap(),
        "second draft"
    );
    env.wsync_ok(&["trash", "restore", "src", &edited_in, "edit.txt", "--force"]);
    assert_eq!(
        std::fs::read_to_string(src.join("edit.txt")).unwrap(),
        "first draft"
    );
    env.wsync_ok(&["flush", "src"]);
    wait_until_equal(&src, dst, FLUSH).unwrap_or_else(|e| env.fail(&e));
    let bad = env.wsync(&["trash", "restore", "src", "../x"]);
    assert_eq!(bad.code(), Some(5), "{}", bad.stderr);

    // Turned off on the attached remote: the next deletion is not kept.
    let before = snapshots(dst).len();
    let mut off = args.clone();
    off.extend(["--keep-deleted", "0"]);
    let out = env.wsync_ok(&off);
    assert!(out.contains("keeps no deleted files now"), "{out}");
    assert!(!env.wsync_ok(&["list"]).contains("keeps deleted"));
    std::fs::remove_file(src.join("keep.txt")).unwrap();
    env.wsync_ok(&["flush", "src"]);
    wait_until_equal(&src, dst, FLUSH).unwrap_or_else(|e| env.fail(&e));
    assert_eq!(snapshots(dst).len(), before);
    let diffs = diff_trees(&src, dst);
    assert!(diffs.is_empty(), "{diffs:?}");
}

#[test]
fn trash_list_and_restore_through_the_cli_locally() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let dst = env.root.join("mirror");
    let attach = vec!["attach".to_owned(), "src".into(), s(&dst).into()];
    cli_scenario(&mut env, &attach, &dst);
}

#[test]
fn trash_list_and_restore_through_the_cli_over_ssh() {
    let mut env = TestEnv::new();
    let sshd = Sshd::start(&env.root);
    env.start_daemon();
    let dst = env.root.join("ssh mirror");
    let attach = ssh_attach("src", &sshd, &dst, &[]);
    cli_scenario(&mut env, &attach, &dst);
}

/// A `.wsync-trash` planted as a symlink by another user who can write the target: rsync's
/// `--backup-dir` would follow it and write what a sync overwrites into a directory of the
/// attacker's choosing. The batch is refused instead (the remote shows `error` naming the
/// trash), nothing lands there, and once the link is gone syncing resumes by itself.
#[test]
fn a_trash_planted_as_a_symlink_on_a_local_target_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = scratch_dir();
    let Some(attacker) = wsync_tests::other_user::OtherUser::create("trash::planted_symlink")
    else {
        return;
    };
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst, secret) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("root-only"),
    );
    write(&src.join("a.txt"), "old a");
    std::fs::create_dir(&secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("trash", &src, vec![keeping(local_remote("r", &dst), 7)]),
    );
    m.flush_ok(FLUSH);
    no_trash_once_the_batch_ends(&m, &dst, "the initial sync keeps nothing");
    // The target is a directory the other user can write (a shared one).
    attacker.chown(&dst);
    attacker.sh(
        "ln -s -- \"$2\" \"$1/.wsync-trash\"",
        &[dst.as_os_str(), secret.as_os_str()],
    );
    write(&src.join("a.txt"), "new a, longer");
    let s = m.wait_status("the remote in error naming the trash", FLUSH, |s| {
        s.remotes[0].state == wsync_core::monitor_proto::RemoteState::Error
            && s.remotes[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains(".wsync-trash is a symlink"))
    });
    eprintln!("{:?}", s.remotes[0]);
    let written: Vec<_> = std::fs::read_dir(&secret).unwrap().flatten().collect();
    if !written.is_empty() {
        m.fail(&format!(
            "the sync wrote through the planted link: {written:?}"
        ));
    }
    assert_eq!(std::fs::read_to_string(dst.join("a.txt")).unwrap(), "old a");
    std::fs::remove_file(dst.join(TRASH_DIR)).unwrap();
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
    assert_eq!(kept(&dst, "a.txt"), ["old a"]);
    assert!(std::fs::read_dir(&secret).unwrap().next().is_none());
    assert!(m.shutdown(Duration::from_secs(10)).success());
    drop(attacker);
}

/// Another user who can write the target races the daemon (root) in a loop while syncs
/// delete and overwrite: whenever a real `.wsync-trash` is there, it is renamed aside and a
/// symlink to a directory only root may write takes its place for 30 ms, then the directory
/// is put back. A trash checked by name and then handed to rsync by name would
/// write into that directory whenever the swap fell between the two; the snapshot held by
/// descriptor never does. Nothing may land outside the target, and once the race stops
/// syncing converges.
#[test]
fn a_trash_swapped_for_a_symlink_while_syncs_run_redirects_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = scratch_dir();
    let Some(attacker) = wsync_tests::other_user::OtherUser::create("trash::swap_race") else {
        return;
    };
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst, secret, stop) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("root-only"),
        tmp.path().join("stop"),
    );
    for i in 0..40 {
        write(&src.join(format!("f{i:02}")), &format!("version 0 of {i}"));
    }
    std::fs::create_dir(&secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("trash", &src, vec![keeping(local_remote("r", &dst), 7)]),
    );
    m.flush_ok(FLUSH);
    attacker.chown(&dst);
    // $1 target, $2 the link's destination, $3 the stop file.
    let mut race = attacker.spawn_sh(
        r#"t="$1/.wsync-trash"
        while [ ! -e "$3" ]; do
            if [ -d "$t" ] && [ ! -L "$t" ] && mv -T "$t" "$1/.aside" 2>/dev/null; then
                ln -s "$2" "$t"; sleep 0.03; rm -f "$t"; mv -T "$1/.aside" "$t"
            fi
            sleep 0.005
        done 2>/dev/null; exit 0"#,
        &[dst.as_os_str(), secret.as_os_str(), stop.as_os_str()],
    );
    for round in 1..=25 {
        for i in 0..40 {
            if (i + round) % 3 == 0 {
                let _ = std::fs::remove_file(src.join(format!("f{i:02}")));
            } else {
                write(
                    &src.join(format!("f{i:02}")),
                    &format!(
                        "version {round} of {i}, longer each time {}",
                        "x".repeat(round)
                    ),
                );
            }
        }
        // A refused batch backs off; resume retries at once, so batches keep running.
        m.send(&MonitorCommand::Resume);
        m.flush(Duration::from_secs(2));
    }
    std::fs::write(&stop, "").unwrap();
    let status = race.wait().unwrap();
    assert!(status.success(), "the racing script failed: {status}");
    let written: Vec<_> = std::fs::read_dir(&secret).unwrap().flatten().collect();
    if !written.is_empty() {
        m.fail(&format!(
            "a sync wrote outside the target, through the swapped link: {written:?}"
        ));
    }
    // What the race left: a link, or the trash renamed aside (inside the target).
    let trash = dst.join(TRASH_DIR);
    if std::fs::symlink_metadata(&trash).is_ok_and(|m| m.is_symlink()) {
        std::fs::remove_file(&trash).unwrap();
    }
    if dst.join(".aside").exists() {
        std::fs::remove_dir_all(dst.join(".aside")).unwrap();
    }
    write(&src.join("after"), "the race is over");
    m.send(&MonitorCommand::Resume);
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
    let kept_somewhere = snapshots(&dst).len();
    eprintln!("snapshots kept after the race: {kept_somewhere}");
    assert!(std::fs::read_dir(&secret).unwrap().next().is_none());
    assert!(m.shutdown(Duration::from_secs(10)).success());
    drop(attacker);
}
