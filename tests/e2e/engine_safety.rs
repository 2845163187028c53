//! The safety rails of wsync-monitor (issue 4): a root that goes away, is recreated or is
//! emptied halts the workspace with nothing deleted remotely, and `resume` is the confirmation;
//! full syncs stop at `--max-delete`; a remote target that disappears after attach is an error,
//! never silently re-created. The halts and the cap on every transport; the vanished target
//! locally and over SSH.

use std::path::Path;
use std::time::Duration;

use wsync_core::monitor_proto::{MonitorCommand, RemoteState};
use wsync_core::registry::Remote;
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::sshd::Sshd;
use wsync_tests::transports::{Rig, Via};
use wsync_tests::tree::{count_entries, diff_trees, scratch_dir, wait_until_equal};

const FLUSH: Duration = Duration::from_secs(20);

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn seed(src: &Path) {
    for d in 0..3 {
        for f in 0..4 {
            write(&src.join(format!("d{d}/f{f}")), &format!("{d}/{f}"));
        }
    }
    write(&src.join("top"), "top");
}

fn resume_and_converge(m: &mut MonitorProc, src: &Path, dst: &Path) {
    m.send(&MonitorCommand::Resume);
    m.wait_status("halt lifted", FLUSH, |s| s.halted.is_none());
    m.flush_ok(FLUSH);
    wait_until_equal(src, dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
}

fn remount_root_moved_away_halts_and_deletes_nothing_then_resume_converges(via: Via) {
    let tmp = scratch_dir();
    let rig = Rig::new(via, tmp.path());
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    seed(&src);
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("remount", &src, vec![rig.remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    let before = count_entries(&dst);
    // The "mount" goes away: the path now holds an empty directory (a bare mount point).
    let away = tmp.path().join("mounted-fs");
    std::fs::rename(&src, &away).unwrap();
    std::fs::create_dir(&src).unwrap();
    let status = m.wait_status("halted", FLUSH, |s| s.halted.is_some());
    assert_eq!(status.remotes[0].state, RemoteState::Halted);
    // A resync while the root is still wrong keeps the halt and deletes nothing.
    m.send(&MonitorCommand::Resync);
    assert_eq!(m.flush(Duration::from_millis(300)), ["d"]);
    assert!(m.status().unwrap().halted.is_some());
    assert_eq!(count_entries(&dst), before, "remote entries were deleted");
    // The mount comes back: resume converges.
    std::fs::remove_dir(&src).unwrap();
    std::fs::rename(&away, &src).unwrap();
    write(&src.join("d1/after"), "after the remount");
    resume_and_converge(&mut m, &src, &dst);
}

wsync_tests::on_every_transport!(
    remount_root_moved_away_halts_and_deletes_nothing_then_resume_converges
);

fn an_emptied_root_halts_until_resume_confirms_the_deletions(via: Via) {
    let tmp = scratch_dir();
    let rig = Rig::new(via, tmp.path());
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    seed(&src);
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("emptied", &src, vec![rig.remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    // rm -rf root/*
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }
    let status = m.wait_status("halted", FLUSH, |s| s.halted.is_some());
    let reason = status.halted.unwrap();
    assert!(reason.contains("is empty"), "{reason}");
    assert!(count_entries(&dst) > 0, "the remote was emptied");
    // Resume is the confirmation: the remote is emptied too.
    resume_and_converge(&mut m, &src, &dst);
    assert_eq!(count_entries(&dst), 0);
    // And syncing goes on normally from the empty root.
    write(&src.join("fresh"), "new start");
    m.flush_ok(FLUSH);
    assert!(diff_trees(&src, &dst).is_empty());
}

wsync_tests::on_every_transport!(an_emptied_root_halts_until_resume_confirms_the_deletions);

fn a_recreated_root_halts_and_resume_syncs_the_new_directory(via: Via) {
    let tmp = scratch_dir();
    let rig = Rig::new(via, tmp.path());
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    seed(&src);
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("recreated", &src, vec![rig.remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    let before = count_entries(&dst);
    std::fs::remove_dir_all(&src).unwrap();
    std::fs::create_dir(&src).unwrap();
    write(&src.join("only-in-new-root"), "x");
    let status = m.wait_status("halted", FLUSH, |s| s.halted.is_some());
    assert!(status.halted.unwrap().contains(src.to_str().unwrap()));
    assert_eq!(m.flush(Duration::from_millis(300)), ["d"]);
    assert_eq!(count_entries(&dst), before, "remote entries were deleted");
    assert!(!dst.join("only-in-new-root").exists());
    resume_and_converge(&mut m, &src, &dst);
    // The new directory is watched.
    write(&src.join("later"), "y");
    m.flush_ok(FLUSH);
    assert!(dst.join("later").exists());
}

wsync_tests::on_every_transport!(a_recreated_root_halts_and_resume_syncs_the_new_directory);

fn a_full_sync_stops_at_max_delete_and_halts_with_the_count(via: Via) {
    let tmp = scratch_dir();
    let rig = Rig::new(via, tmp.path());
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src.join("keep"), "k");
    for i in 0..12 {
        write(&dst.join(format!("stale{i}")), "old");
    }
    let mut ws = workspace("cap", &src, vec![rig.remote("d", &dst)]);
    ws.max_delete = Some(5);
    let mut m = MonitorProc::start(tmp.path(), ws);
    let status = m.wait_status("halted at the cap", FLUSH, |s| s.halted.is_some());
    let reason = status.halted.unwrap();
    assert!(
        reason.contains("--max-delete") && reason.contains("7 more skipped"),
        "{reason}"
    );
    assert_eq!(count_entries(&dst), 1 + 7, "rsync deletes at most the cap");
    resume_and_converge(&mut m, &src, &dst);
}

wsync_tests::on_every_transport!(a_full_sync_stops_at_max_delete_and_halts_with_the_count);

#[test]
fn a_local_target_that_disappears_is_an_error_and_is_not_recreated() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("mnt/dst"));
    write(&src.join("a"), "1");
    // Missing at attach: created.
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("target", &src, vec![local_remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    assert!(dst.join("a").exists());
    let unmounted = tmp.path().join("unmounted");
    std::fs::rename(&dst, &unmounted).unwrap();
    write(&src.join("b"), "2");
    let status = m.wait_status("error", FLUSH, |s| s.remotes[0].last_error.is_some());
    let remote = &status.remotes[0];
    assert!(
        remote.last_error.as_deref().unwrap().contains("missing"),
        "{remote:?}"
    );
    assert!(matches!(
        remote.state,
        RemoteState::Error | RemoteState::Syncing
    ));
    assert!(!dst.exists(), "the target was re-created");
    // It comes back: the retry catches up.
    std::fs::rename(&unmounted, &dst).unwrap();
    m.send(&MonitorCommand::Resume);
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
}

fn ssh_remote(sshd: &Sshd, name: &str, path: &Path) -> Remote {
    sshd.remote(name, path)
}

#[test]
fn over_ssh_a_vanished_target_errors_and_an_emptied_root_halts() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let src = tmp.path().join("src");
    let dst = tmp.path().join("remote disk/mirror");
    seed(&src);
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("ssh-safety", &src, vec![ssh_remote(&sshd, "r", &dst)]),
    );
    // Missing at attach: created (--mkpath).
    m.flush_ok(Duration::from_secs(30));
    assert!(diff_trees(&src, &dst).is_empty());
    let unmounted = tmp.path().join("remote disk/unmounted");
    std::fs::rename(&dst, &unmounted).unwrap();
    write(&src.join("d0/new"), "n");
    let status = m.wait_status("error", FLUSH, |s| s.remotes[0].last_error.is_some());
    let error = status.remotes[0].last_error.clone().unwrap();
    assert!(error.contains("missing"), "{error}");
    assert_eq!(status.remotes[0].state, RemoteState::Error);
    assert!(!dst.exists(), "the target was re-created");
    std::fs::rename(&unmounted, &dst).unwrap();
    m.send(&MonitorCommand::Resume);
    m.flush_ok(Duration::from_secs(30));
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
    // Emptying the root halts: the remote emptiness check runs over ssh.
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }
    m.wait_status("halted", FLUSH, |s| s.halted.is_some());
    assert!(count_entries(&dst) > 0);
}
