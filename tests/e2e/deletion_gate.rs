//! The deletion budget (issue 11): every batch kind passes one gate that counts distinct paths
//! deleted on the remote over a sliding window. Each test drives a real wsync-monitor and real
//! rsync against a local remote, the way a user's tools delete: `mv` out of the workspace,
//! `rm -rf` in chunks with pauses, a SQLite journal, `tar xf` over existing files, and a
//! deliberate subdirectory removal.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use wsync_core::registry::Remote;
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::sshd::Sshd;
use wsync_tests::tree::{count_entries, scratch_dir, wait_until_equal};

const FLUSH: Duration = Duration::from_secs(30);

fn tree(root: &Path, dirs: usize, files: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            std::fs::write(dir.join(format!("f{f:03}")), format!("{d}/{f}")).unwrap();
        }
    }
}

/// `mv` of a 3,000-file directory out of the workspace: one event, 3,031 remote deletions.
/// The batch is dry-run first (the engine cannot count what the directory held), halts with
/// nothing deleted, and its message gives the count and the first paths inside it.
#[test]
fn a_directory_moved_out_of_the_workspace_is_bounded_by_max_delete() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src.join("big"), 30, 100);
    std::fs::write(src.join("keep"), "k").unwrap();
    let mut ws = workspace("moved", &src, vec![local_remote("d", &dst)]);
    ws.max_delete = Some(1_000);
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    let before = count_entries(&dst);
    std::fs::rename(src.join("big"), tmp.path().join("big-elsewhere")).unwrap();
    let status = m.wait_status("halted at the budget", FLUSH, |s| s.halted.is_some());
    let reason = status.halted.unwrap();
    if count_entries(&dst) != before {
        m.fail(&format!("deleted before the halt: {reason}"));
    }
    assert!(
        reason.contains("would delete 3031 paths") && reason.contains("\"big/d0"),
        "the preview names the count and the paths inside the moved directory: {reason}"
    );
    // Resume is the confirmation: the move propagates.
    m.send(&wsync_core::monitor_proto::MonitorCommand::Resume);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
}

/// Renames that rsync carries out are capped like every batch. A rename that cannot be
/// replayed (the remote already has a directory at the new name) goes through rsync, which
/// deletes the old subtree and re-creates it: a move, not a loss, so 1,516 entries move under
/// a `max_delete` of 1,000. The same kind of batch with a 3,000-file directory moved out of the
/// workspace is dry-run first and halts with nothing of it deleted.
fn renames_through_rsync_scenario(dir: &Path, remote: impl Fn(&Path) -> Remote) {
    let (src, dst) = (dir.join("src"), dir.join("dst"));
    tree(&src.join("m"), 15, 100);
    tree(&src.join("m2"), 1, 10);
    tree(&src.join("big"), 30, 100);
    let mut ws = workspace("moves", &src, vec![remote(&dst)]);
    ws.max_delete = Some(1_000);
    let mut m = MonitorProc::start(dir, ws);
    m.flush_ok(FLUSH);
    std::fs::create_dir(dst.join("taken")).unwrap();
    std::fs::rename(src.join("m"), src.join("taken")).unwrap();
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
    if let Some(reason) = m.status().and_then(|s| s.halted) {
        m.fail(&format!("a move through rsync halted: {reason}"));
    }
    if !m.logs().contains("renames fall back to rsync") {
        m.fail("the rename was replayed: the test needs rsync to carry it out");
    }
    // A rename rsync carries out and a directory moved out of the workspace, back to back.
    std::fs::create_dir(dst.join("taken2")).unwrap();
    let big = count_entries(&dst.join("big"));
    std::fs::rename(src.join("m2"), src.join("taken2")).unwrap();
    std::fs::rename(src.join("big"), dir.join("big-elsewhere")).unwrap();
    let status = m.wait_status("halted at the budget", FLUSH, |s| s.halted.is_some());
    let reason = status.halted.unwrap();
    assert_eq!(
        count_entries(&dst.join("big")),
        big,
        "the moved-out directory was deleted in part: {reason}"
    );
    assert!(reason.contains("would delete 3031 paths"), "{reason}");
    m.send(&wsync_core::monitor_proto::MonitorCommand::Resume);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
    assert!(m.shutdown(Duration::from_secs(10)).success());
}

#[test]
fn renames_rsync_carries_out_are_capped_but_a_move_costs_nothing_locally() {
    let tmp = scratch_dir();
    renames_through_rsync_scenario(tmp.path(), |dst| local_remote("d", dst));
}

#[test]
fn renames_rsync_carries_out_are_capped_but_a_move_costs_nothing_over_ssh() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    renames_through_rsync_scenario(tmp.path(), |dst| Remote {
        name: "d".into(),
        target: sshd.target(dst),
        keep_deleted_days: 0,
    });
}

#[test]
fn an_rm_rf_in_chunks_with_pauses_halts_with_at_least_half_the_remote_intact() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src, 30, 100);
    let ws = workspace("chunks", &src, vec![local_remote("d", &dst)]);
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    let before = count_entries(&dst);
    // One directory at a time, with the pauses of a slow or interrupted rm -rf.
    for d in 0..30 {
        std::fs::remove_dir_all(src.join(format!("d{d:03}"))).unwrap();
        std::thread::sleep(Duration::from_millis(100 * (1 + d % 4))); // pacing, not synchronisation
    }
    let status = m.wait_status("halted", FLUSH, |s| s.halted.is_some());
    let left = count_entries(&dst);
    assert!(
        left * 2 >= before,
        "only {left} of {before} remote entries left; halted: {:?}",
        status.halted
    );
}

#[test]
fn a_sqlite_journal_created_and_deleted_thousands_of_times_never_halts() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src, 2, 10);
    let ws = workspace("sqlite", &src, vec![local_remote("d", &dst)]);
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    let (db, journal) = (src.join("dev.sqlite3"), src.join("dev.sqlite3-journal"));
    for commit in 0..3_000 {
        std::fs::write(&journal, format!("rollback {commit}")).unwrap();
        std::fs::write(&db, format!("state {commit}")).unwrap();
        std::fs::remove_file(&journal).unwrap();
        if commit % 100 == 0 {
            std::thread::sleep(Duration::from_millis(1)); // pacing, not synchronisation
        }
    }
    m.flush_ok(FLUSH);
    assert_eq!(m.status().unwrap().halted, None);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
}

#[test]
fn tar_xf_over_existing_files_never_halts() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src, 15, 100);
    let archive = tmp.path().join("tree.tar");
    let tar = |args: &[&str]| {
        let status = Command::new("tar").args(args).current_dir(&src).status();
        assert!(status.unwrap().success(), "tar {args:?}");
    };
    tar(&["cf", archive.to_str().unwrap(), "."]);
    let ws = workspace("tar", &src, vec![local_remote("d", &dst)]);
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    // GNU tar removes each existing file before extracting it again: 1,500 deletions that
    // delete nothing in the end.
    tar(&["xf", archive.to_str().unwrap()]);
    m.flush_ok(FLUSH);
    assert_eq!(m.status().unwrap().halted, None);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
}

#[test]
fn deleting_a_subdirectory_of_3000_files_from_a_big_tree_propagates() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src.join("keep"), 90, 100);
    tree(&src.join("old-build"), 30, 100);
    let ws = workspace("subdir", &src, vec![local_remote("d", &dst)]);
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    std::fs::remove_dir_all(src.join("old-build")).unwrap();
    m.flush_ok(FLUSH);
    assert_eq!(m.status().unwrap().halted, None);
    assert!(!dst.join("old-build").exists());
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
}

#[test]
fn git_gc_never_halts() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src.join("code"), 10, 30);
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "gc.auto=0",
            ])
            .args(args)
            .current_dir(&src)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q"]);
    // History: every file rewritten over 20 commits, all objects loose.
    for commit in 0..20 {
        for d in 0..10 {
            std::fs::write(
                src.join(format!("code/d{d:03}/f{:03}", commit % 30)),
                format!("v{commit}"),
            )
            .unwrap();
        }
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", &format!("c{commit}")]);
    }
    let ws = workspace("gc", &src, vec![local_remote("d", &dst)]);
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    let loose = count_entries(&src.join(".git/objects"));
    git(&["gc", "-q", "--prune=now"]);
    m.flush_ok(FLUSH);
    assert_eq!(
        m.status().unwrap().halted,
        None,
        "git gc packed {loose} loose object entries"
    );
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
}

#[test]
fn rm_rf_node_modules_then_a_reinstall_never_halts() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src.join("app"), 5, 100);
    tree(&src.join("node_modules"), 20, 100);
    let ws = workspace("npm", &src, vec![local_remote("d", &dst)]);
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    std::fs::remove_dir_all(src.join("node_modules")).unwrap();
    // The package manager resolves for a while before it writes anything.
    std::thread::sleep(Duration::from_millis(1_500)); // the user's pause, not synchronisation
    tree(&src.join("node_modules"), 20, 100);
    m.flush_ok(FLUSH);
    assert_eq!(m.status().unwrap().halted, None);
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
}
