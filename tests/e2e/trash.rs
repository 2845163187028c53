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

/// Another user who can write the target swaps `.wsync-trash` for a symlink to a directory
/// only root may write, at a known moment: the batch's rsync (a wrapper holding it before the
/// real rsync starts, once the batch's snapshot exists) waits until the swap is done. A
/// snapshot handed to rsync by name (`--backup-dir=<target>/.wsync-trash/<snapshot>`) is
/// resolved again for every file and would write what the batch overwrites into that
/// directory; the snapshot held by descriptor never does. Nothing may land outside the target,
/// and once the link is gone syncing converges.
#[test]
fn a_trash_swapped_for_a_symlink_while_syncs_run_redirects_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = scratch_dir();
    let Some(attacker) = wsync_tests::other_user::OtherUser::create("trash::swap_race") else {
        return;
    };
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst, secret, signals) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("root-only"),
        tmp.path().join("signals"),
    );
    for i in 0..40 {
        write(&src.join(format!("f{i:02}")), &format!("version 0 of {i}"));
    }
    std::fs::create_dir(&secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(&signals).unwrap();
    let path = holding_rsync(&tmp.path().join("holding-bin"), &signals, "--backup-dir");
    let mut m = MonitorProc::start_with(
        tmp.path(),
        workspace("trash", &src, vec![keeping(local_remote("r", &dst), 7)]),
        &[("PATH", path.to_str().unwrap())],
    );
    m.flush_ok(FLUSH);
    attacker.chown(&dst);
    attacker.chown(&signals);
    // $1 target, $2 the link's destination, $3 the signals.
    let mut swap = attacker.spawn_sh(
        r#"i=0; while [ ! -e "$3/at-rsync" ]; do sleep 0.01; i=$((i+1)); [ $i -gt 3000 ] && exit 1; done
        mv -T "$1/.wsync-trash" "$1/.aside" && ln -s "$2" "$1/.wsync-trash" && : > "$3/swapped""#,
        &[dst.as_os_str(), secret.as_os_str(), signals.as_os_str()],
    );
    std::fs::write(signals.join("hold"), "").unwrap();
    for i in 0..40 {
        if i % 3 == 0 {
            std::fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
        } else {
            write(
                &src.join(format!("f{i:02}")),
                &format!("version 1 of {i}, longer"),
            );
        }
    }
    let status = swap.wait().unwrap();
    assert!(status.success(), "the swap did not happen: {status}");
    // The held batch ends (its backups go wherever rsync was told to put them).
    m.flush(FLUSH);
    let written: Vec<_> = std::fs::read_dir(&secret).unwrap().flatten().collect();
    if !written.is_empty() {
        m.fail(&format!(
            "a sync wrote outside the target, through the swapped link: {written:?}"
        ));
    }
    // The held snapshot followed the trash renamed aside, inside the target.
    let aside: Vec<_> = std::fs::read_dir(dst.join(".aside"))
        .unwrap()
        .flatten()
        .collect();
    assert!(!aside.is_empty(), "the batch kept nothing");
    std::fs::remove_file(dst.join(TRASH_DIR)).unwrap();
    std::fs::remove_dir_all(dst.join(".aside")).unwrap();
    write(&src.join("after"), "the swap is over");
    m.send(&MonitorCommand::Resume);
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
    assert!(std::fs::read_dir(&secret).unwrap().next().is_none());
    assert!(m.shutdown(Duration::from_secs(10)).success());
    drop(attacker);
}

/// `dir/rsync`: the real rsync, except that the first run with an argument starting with
/// `flag` once `signals/hold` exists (which it removes) first creates `signals/at-rsync` and
/// waits for `signals/swapped`: the moment between wsync's checks of the trash and rsync
/// using it, held open for the attacker.
fn holding_rsync(dir: &Path, signals: &Path, flag: &str) -> std::ffi::OsString {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let real = std::env::split_paths(&path)
        .map(|d| d.join("rsync"))
        .find(|p| p.is_file())
        .expect("rsync on PATH");
    std::fs::create_dir_all(dir).unwrap();
    let script = dir.join("rsync");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ns='{signals}'\ncase \" $* \" in *' {flag}'*)\n  if rm \"$s/hold\" 2>/dev/null; then\n    : > \"$s/at-rsync\"; i=0\n    while [ ! -e \"$s/swapped\" ]; do sleep 0.01; i=$((i+1)); [ $i -gt 3000 ] && exit 99; done\n  fi;;\nesac\nexec '{real}' \"$@\"\n",
            signals = signals.display(),
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    std::env::join_paths(dirs).unwrap()
}

/// Another user who can write a local target swaps `.wsync-trash` for a symlink to a directory
/// only root may read, at the moment between the restore's checks and rsync reading the
/// snapshot (held there by an rsync wrapper). A snapshot checked and then read by name would
/// restore what that directory holds into the workspace; the snapshot held by descriptor
/// restores its own content. And a `.wsync-trash` of the other user's making is not listed.
#[test]
fn a_local_restore_reads_the_snapshot_it_checked_whatever_is_swapped_in() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = TestEnv::new();
    let Some(attacker) = wsync_tests::other_user::OtherUser::create("trash::restore_by_descriptor")
    else {
        return;
    };
    std::fs::set_permissions(&env.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.start_daemon();
    let (src, dst, secret, signals) = (
        env.mkdir("src"),
        env.root.join("mirror"),
        env.root.join("root-only"),
        env.mkdir("signals"),
    );
    let path = holding_rsync(&env.root.join("holding-bin"), &signals, "--itemize-changes");
    write(&src.join("keep.txt"), "precious");
    // Not an emptied root (that halts).
    write(&src.join("other.txt"), "stays");
    env.wsync_ok(&["add", s(&src), "--name", "src"]);
    env.wsync_ok(&["attach", "src", s(&dst), "--keep-deleted", "7"]);
    std::fs::remove_file(src.join("keep.txt")).unwrap();
    env.wsync_ok(&["flush", "src"]);
    let snapshot = snapshots(&dst)
        .into_iter()
        .find(|s| s.join("keep.txt").exists())
        .unwrap_or_else(|| env.fail("no snapshot holds keep.txt"));
    let name = snapshot.file_name().unwrap().to_str().unwrap().to_owned();
    // What the attacker wants root to copy into the workspace.
    std::fs::create_dir_all(secret.join(&name)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    write(&secret.join(&name).join("keep.txt"), "root's secret");
    write(&secret.join(&name).join("stolen.txt"), "root's secret");
    attacker.chown(&dst);
    attacker.chown(&signals);
    // $1 target, $2 the link's destination, $3 the signals.
    let mut swap = attacker.spawn_sh(
        r#"i=0; while [ ! -e "$3/at-rsync" ]; do sleep 0.01; i=$((i+1)); [ $i -gt 3000 ] && exit 1; done
        mv -T "$1/.wsync-trash" "$1/.aside" && ln -s "$2" "$1/.wsync-trash" && : > "$3/swapped""#,
        &[dst.as_os_str(), secret.as_os_str(), signals.as_os_str()],
    );
    std::fs::write(signals.join("hold"), "").unwrap();
    let out = env
        .command("wsync")
        .env("PATH", &path)
        .args(["trash", "restore", "src", &name])
        .output()
        .unwrap();
    let status = swap.wait().unwrap();
    assert!(status.success(), "the swap did not happen: {status}");
    let restored = std::fs::read_to_string(src.join("keep.txt")).ok();
    if src.join("stolen.txt").exists() || restored.as_deref() == Some("root's secret") {
        env.fail("the restore read through the swapped link, outside the target");
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(restored.as_deref(), Some("precious"));

    // A `.wsync-trash` of the other user's (a directory, not a link) holding a snapshot.
    std::fs::remove_file(dst.join(TRASH_DIR)).unwrap();
    attacker.sh(
        "mkdir -p \"$1/.wsync-trash/$2\" && echo planted > \"$1/.wsync-trash/$2/planted.txt\"",
        &[dst.as_os_str(), std::ffi::OsStr::new(&name)],
    );
    let listed = env.wsync(&["trash", "list", "src"]);
    assert!(!listed.success(), "{}", listed.stdout);
    assert!(
        listed.stdout.contains("belongs to uid"),
        "{}",
        listed.stdout
    );
    let planted = env.wsync(&["trash", "restore", "src", &name]);
    assert!(!planted.success(), "{}", planted.stdout);
    assert!(
        !src.join("planted.txt").exists(),
        "restored the other user's files"
    );
    drop(attacker);
}
