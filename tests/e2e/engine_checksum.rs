//! Content, not timestamps (issue 11), where size and mtime cannot tell: a dirty set that
//! collapses into a full sync still sends what it knew changed by content; changes collected
//! while paused survive `wsync restart` and a daemon restart (pending files); `wsync verify
//! --repair` fixes drift that plain verify reports; a periodic checksum pass repairs drift on
//! its own; and a checksum resync passes the deletion budget like every sync.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use wsync_core::monitor_proto::MonitorCommand;
use wsync_tests::env::TestEnv;
use wsync_tests::faults::{add_workspace, attach_local, flush_ok, wait_status};
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::poll::poll_until;
use wsync_tests::transports::{Rig, Via};
use wsync_tests::tree::{count_entries, scratch_dir, wait_until_equal};

const FLUSH: Duration = Duration::from_secs(60);

/// One old mtime for every file, so rewrites can keep it exactly (what `cp -a`, `tar` and
/// `rsync -t` from another copy produce).
fn fixed_mtime() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
}

fn write_with_mtime(path: &Path, content: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(fixed_mtime()).unwrap();
}

/// `n` files `dNN/fNNNNN` holding `tag` and a number, all the same size and mtime.
fn tree(root: &Path, n: usize, tag: &str) {
    for i in 0..n {
        write_with_mtime(
            &root.join(format!("d{:02}/f{i:05}", i % 50)),
            &format!("{tag}{i:05}"),
        );
    }
}

/// The files below `root` whose content is not `tag` + number (the stale ones).
fn stale(root: &Path, n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| format!("d{:02}/f{i:05}", i % 50))
        .filter(|rel| {
            let want = format!("{tag}{}", &rel[rel.len() - 5..]);
            std::fs::read_to_string(root.join(rel)).ok().as_deref() != Some(want.as_str())
        })
        .collect()
}

fn cp_a(from: &Path, to: &Path) {
    let mut source = from.as_os_str().to_owned();
    source.push("/.");
    let ok = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(source)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a failed");
}

/// `cp -a` of more files than a dirty set holds, with their mtimes kept, while paused: resume
/// collapses into a full sync, which must still send each of them by content.
fn many_files_copied_over_while_paused(via: Via) {
    // Past the monitor's 10,000-path dirty set (`queue::FULL_SYNC_THRESHOLD`).
    const FILES: usize = 10_050;
    let tmp = scratch_dir();
    let rig = Rig::new(via, tmp.path());
    let remote = |dst: &Path| rig.remote("d", dst);
    let (src, staging) = (tmp.path().join("src"), tmp.path().join("staging"));
    let dst = tmp.path().join("dst");
    tree(&src, FILES, "old-");
    tree(&staging, FILES, "new-");
    let mut m = MonitorProc::start(tmp.path(), workspace("many", &src, vec![remote(&dst)]));
    m.flush_ok(FLUSH);
    assert!(stale(&dst, FILES, "old-").is_empty());
    m.send(&MonitorCommand::Pause);
    m.wait_status("paused", FLUSH, |s| s.paused);
    cp_a(&staging, &src);
    // A flush's cookie proves every event of the copy was read (paused: it reports the
    // remote lagging). Whether the set collapsed into a full sync or its directories absorbed
    // the files (`cp -a` sets each directory's times last), the files are known changed.
    assert_eq!(m.flush(Duration::from_millis(500)), ["d".to_owned()]);
    m.send(&MonitorCommand::Resume);
    m.flush_ok(FLUSH);
    let left = stale(&dst, FILES, "new-");
    assert!(
        left.is_empty(),
        "{} of {FILES} files stale on the remote after resume (same size, same mtime: a size+mtime full sync skips them), first {:?}",
        left.len(),
        &left[..left.len().min(5)]
    );
}

fn a_cp_a_of_many_files_with_kept_mtimes_while_paused_reaches_the_remote(via: Via) {
    many_files_copied_over_while_paused(via);
}

wsync_tests::on_every_transport!(
    a_cp_a_of_many_files_with_kept_mtimes_while_paused_reaches_the_remote
);

/// Initial syncs by checksum would repair the paused changes on their own: switched off, so
/// only the pending files can.
const NO_INITIAL_CHECKSUM: (&str, &str) = ("WSYNC_TEST_INITIAL_CHECKSUM_MAX_FILES", "0");

const SMALL: usize = 40;

/// A workspace of [`SMALL`] files attached to a local remote, synced, then paused with every
/// file rewritten (same size, same mtime) and seen by the monitor.
fn paused_with_rewrites(env: &mut TestEnv, src: &Path, dst: &Path) {
    tree(src, SMALL, "old-");
    env.start_daemon_with_env(&[(NO_INITIAL_CHECKSUM.0, NO_INITIAL_CHECKSUM.1.as_ref())]);
    add_workspace(env, src, "w");
    attach_local(env, "w", dst, "d");
    flush_ok(env, "w", 60);
    env.wsync_ok(&["pause", "w"]);
    wait_status(env, "w", "paused", FLUSH, |s| {
        s.report.as_ref().is_some_and(|r| r.paused)
    });
    tree(src, SMALL, "new-");
    wait_status(env, "w", "the rewrites seen", FLUSH, |s| {
        s.report
            .as_ref()
            .is_some_and(|r| r.remotes.iter().all(|x| x.pending >= SMALL as u64))
    });
}

/// The pending file exists and names the paused changes.
fn pending_file_written(env: &TestEnv) {
    let dir = env.root.join("pending");
    let found = poll_until("a pending file", FLUSH, Duration::from_millis(50), || {
        std::fs::read_dir(&dir).ok().and_then(|entries| {
            entries
                .flatten()
                .find(|e| e.file_name().to_string_lossy().ends_with(".d.pending"))
                .map(|e| e.path())
        })
    })
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    let body = std::fs::read(found).unwrap();
    assert!(body.starts_with(b"wsync-pending 1\n"));
    assert!(
        body.windows(10).any(|w| w == b"d00/f00000"),
        "the paths are in it"
    );
}

#[test]
fn changes_collected_while_paused_survive_wsync_restart() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let mut env = TestEnv::new();
    paused_with_rewrites(&mut env, &src, &dst);
    pending_file_written(&env);
    env.wsync_ok(&["restart", "w"]);
    env.wsync_ok(&["resume", "w"]);
    flush_ok(&env, "w", 60);
    let left = stale(&dst, SMALL, "new-");
    assert!(left.is_empty(), "stale after restart and resume: {left:?}");
    // Caught up: the file is gone, so the next start sends nothing again by content.
    poll_until(
        "the pending file removed",
        FLUSH,
        Duration::from_millis(50),
        || {
            std::fs::read_dir(env.root.join("pending"))
                .map(|d| d.count() == 0)
                .unwrap_or(true)
        },
    )
    .unwrap_or_else(|e| env.fail(&e.to_string()));
}

#[test]
fn changes_collected_while_paused_survive_a_daemon_restart() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let mut env = TestEnv::new();
    paused_with_rewrites(&mut env, &src, &dst);
    assert!(env.stop_daemon().success());
    pending_file_written(&env);
    env.start_daemon_with_env(&[(NO_INITIAL_CHECKSUM.0, NO_INITIAL_CHECKSUM.1.as_ref())]);
    env.wsync_ok(&["resume", "w"]);
    flush_ok(&env, "w", 60);
    let left = stale(&dst, SMALL, "new-");
    assert!(left.is_empty(), "stale after a daemon restart: {left:?}");
}

/// Rewrites a remote file behind wsync's back, keeping its size and mtime: only a content
/// comparison sees it.
fn corrupt(dst: &Path, rel: &str) {
    let path = dst.join(rel);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    write_with_mtime(&path, &"X".repeat(len));
}

fn verify_repair_fixes_drift(env: &mut TestEnv, dst: &Path, attach: impl FnOnce(&TestEnv)) {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    tree(&src, SMALL, "v-");
    env.start_daemon();
    add_workspace(env, &src, "w");
    attach(env);
    flush_ok(env, "w", 60);
    corrupt(dst, "d01/f00001");
    corrupt(dst, "d02/f00002");
    let plain = env.wsync(&["verify", "w"]);
    assert_eq!(plain.code(), Some(8), "{plain:?}");
    assert!(plain.stdout.contains("differs  d01/f00001"), "{plain:?}");
    // Size and mtime see nothing: a flush does not repair it.
    flush_ok(env, "w", 60);
    assert_eq!(stale(dst, SMALL, "v-").len(), 2);
    let repaired = env.wsync(&["verify", "w", "--repair"]);
    assert!(repaired.success(), "{repaired:?}\n{}", env.logs());
    assert!(repaired.stdout.contains("repaired 2"), "{repaired:?}");
    assert!(
        repaired.stdout.contains("fixed    d01/f00001"),
        "{repaired:?}"
    );
    assert!(stale(dst, SMALL, "v-").is_empty());
    assert!(env.wsync(&["verify", "w"]).success());
    // Nothing to repair: says so and exits 0.
    let again = env.wsync(&["verify", "w", "--repair"]);
    assert!(
        again.success() && again.stdout.contains("in sync"),
        "{again:?}"
    );
}

fn verify_repair_fixes_same_size_same_mtime_drift(via: Via) {
    let tmp = scratch_dir();
    let rig = Rig::new(via, tmp.path());
    let dst = tmp.path().join("dst");
    let mut env = TestEnv::new();
    verify_repair_fixes_drift(&mut env, &dst, |env| rig.attach(env, "w", &dst, "d"));
}

wsync_tests::on_every_transport!(verify_repair_fixes_same_size_same_mtime_drift);

#[test]
fn verify_repair_of_a_paused_workspace_says_to_resume() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src, 3, "v-");
    let mut env = TestEnv::new();
    env.start_daemon();
    add_workspace(&env, &src, "w");
    attach_local(&env, "w", &dst, "d");
    flush_ok(&env, "w", 60);
    corrupt(&dst, "d01/f00001");
    env.wsync_ok(&["pause", "w"]);
    let out = env.wsync(&["verify", "w", "--repair"]);
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("wsync resume w"), "{out:?}");
    assert_eq!(stale(&dst, 3, "v-").len(), 1, "nothing written");
}

#[test]
fn a_periodic_checksum_pass_repairs_drift() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src, SMALL, "v-");
    let mut ws = workspace("periodic", &src, vec![local_remote("d", &dst)]);
    ws.checksum_every_secs = Some(1);
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    corrupt(&dst, "d03/f00003");
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
}

#[test]
fn a_checksum_resync_passes_the_deletion_budget() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    tree(&src, SMALL, "v-");
    let mut ws = workspace("budget", &src, vec![local_remote("d", &dst)]);
    ws.max_delete = Some(2);
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    // Remote-only files a resync would delete, more than the budget allows.
    for i in 0..10 {
        std::fs::write(dst.join(format!("extra{i}")), "e").unwrap();
    }
    let before = count_entries(&dst);
    m.send(&MonitorCommand::ChecksumResync { remote: None });
    let status = m.wait_status("halted at the budget", FLUSH, |s| s.halted.is_some());
    assert!(
        status
            .halted
            .as_deref()
            .unwrap_or_default()
            .contains("max-delete"),
        "{status:?}"
    );
    assert!(before - count_entries(&dst) <= 2, "deleted past max_delete");
}
