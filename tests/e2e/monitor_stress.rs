//! wsync-monitor under load with a local remote: lsyncd's churn test (500 random creates, edits,
//! moves and deletes) and watchman's recrawl test (SIGSTOP the monitor, create 20,000 files so
//! the inotify queue overflows, SIGCONT: one rescan, and the remote converges); and a rescan
//! that cannot finish (it reached a hung mount inside the workspace) must not stop the events.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wsync_core::monitor_proto::WatchMode;
use wsync_tests::hang_fs::HangFs;
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::tree::{churn, scratch_dir, wait_until_equal};
use wsync_tests::watch_mode::{counts_watches, skip_under};

const FLUSH: Duration = Duration::from_secs(30);

#[test]
fn churn_converges_locally() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    churn::seed(&src, 3);
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("churn", &src, vec![local_remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    for round in 0..2u64 {
        churn::run(&src, 250, 0xc0ffee + round);
        m.flush_ok(FLUSH);
        wait_until_equal(&src, &dst, Duration::from_secs(5)).unwrap_or_else(|e| m.fail(&e));
    }
    let status = m.status().unwrap();
    assert_eq!(status.overflows, 0, "{status:?}");
}

#[test]
fn recrawl_after_a_queue_overflow_converges() {
    if skip_under(
        &[WatchMode::Poll],
        "monitor_stress::recrawl_after_a_queue_overflow_converges",
        "it makes the kernel's inotify queue overflow; the poll backend has no queue to overflow",
    ) {
        return;
    }
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    // Directories that already exist (and are watched), so the burst floods the event queue.
    for d in 0..20 {
        std::fs::create_dir_all(src.join(format!("burst{d}"))).unwrap();
    }
    std::fs::create_dir_all(src.join("existing")).unwrap();
    std::fs::write(src.join("existing/f"), "x").unwrap();
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("recrawl", &src, vec![local_remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    overflow_while_stopped(&m, &src, || {
        std::fs::write(src.join("existing/f"), "edited while stopped").unwrap()
    });
    m.flush_ok(Duration::from_secs(60));
    wait_until_equal(&src, &dst, Duration::from_secs(10)).unwrap_or_else(|e| m.fail(&e));
    let status = m.wait_status("overflow counted", FLUSH, |s| s.overflows >= 1);
    assert!(status.rescans >= 1, "{status:?}");
    if counts_watches() {
        assert!(status.watches >= 22, "{status:?}");
    }
    // Watching still works after the rescan.
    std::fs::create_dir(src.join("burst3/new-dir")).unwrap();
    std::fs::write(src.join("burst3/new-dir/after"), "after the recrawl").unwrap();
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, Duration::from_secs(5)).unwrap_or_else(|e| m.fail(&e));
}

/// Creates 20,000 files in `burst0..20` of `src` while the monitor is stopped: more events than
/// the kernel queues (16,384 by default), so it reports an overflow when it runs again; `also`
/// runs before it does.
fn overflow_while_stopped(m: &MonitorProc, src: &std::path::Path, also: impl FnOnce()) {
    let pid = Pid::from_raw(m.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    for d in 0..20 {
        let dir = src.join(format!("burst{d}"));
        for f in 0..1000 {
            std::fs::write(dir.join(format!("file{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    also();
    kill(pid, Signal::SIGCONT).unwrap();
}

#[test]
fn a_rescan_stuck_on_a_hung_mount_does_not_stop_the_events() {
    if skip_under(
        &[WatchMode::Notify, WatchMode::Poll],
        "monitor_stress::a_rescan_stuck_on_a_hung_mount_does_not_stop_the_events",
        "it checks inotify's unlocked overflow rescan; notify's own recursive walk (and the poll walk) block on the hung mount with no deadline, a known limit of those backends",
    ) {
        return;
    }
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    for d in 0..20 {
        std::fs::create_dir_all(src.join(format!("burst{d}"))).unwrap();
    }
    // Watched from the start: a directory created later is walked by the reader itself.
    std::fs::create_dir_all(src.join("mnt")).unwrap();
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("stuck-rescan", &src, vec![local_remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    // A mount inside the workspace that stops answering after the initial sync (a hung NFS
    // share below a project): the overflow rescan walks into it and never comes back.
    let hung = match HangFs::mount(&src.join("mnt")) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("skipping: no never-answering FUSE filesystem here: {why}");
            return;
        }
    };
    m.flush_ok(FLUSH);
    let before = hung.requests();
    overflow_while_stopped(&m, &src, || {});
    assert!(
        hung.wait_for_requests(before + 1, FLUSH),
        "the rescan never reached the hung mount"
    );
    // The walk is blocked in the mount: changes still reach the remote and flushes answer.
    std::fs::write(src.join("during-the-rescan"), "delivered").unwrap();
    m.flush_ok(FLUSH);
    assert_eq!(
        std::fs::read_to_string(dst.join("during-the-rescan")).unwrap_or_default(),
        "delivered"
    );
    let status = m.status().unwrap();
    assert_eq!(
        status.overflows, 0,
        "counted once the walk is done: {status:?}"
    );
    // The mount answers again (failing every call): the walk ends, the full sync follows.
    drop(hung);
    m.wait_status("overflow counted", FLUSH, |s| s.overflows >= 1);
    m.flush_ok(Duration::from_secs(60));
    wait_until_equal(&src, &dst, Duration::from_secs(10)).unwrap_or_else(|e| m.fail(&e));
}

/// A tree that appears at once (`cp -a` of a deep and wide tree) is walked off the inotify
/// reader (issue 13): it still arrives whole — files created in its directories before their
/// watches existed included — and edits elsewhere made meanwhile arrive too.
#[test]
fn a_tree_copied_in_at_once_arrives_whole() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("other.txt"), "0\n").unwrap();
    let mut deep = outside.join("deep");
    for level in 0..40 {
        deep.push(format!("level{level}"));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f.txt"), format!("{level}\n")).unwrap();
    }
    for d in 0..200 {
        let dir = outside.join(format!("wide/d{d}/sub"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..5 {
            std::fs::write(dir.join(format!("f{f}.txt")), format!("{d}/{f}\n")).unwrap();
        }
    }
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("copied-in", &src, vec![local_remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    let mut cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&outside)
        .arg(src.join("copied"))
        .spawn()
        .expect("running cp");
    let mut edits = 0;
    while cp.try_wait().unwrap().is_none() {
        edits += 1;
        std::fs::write(src.join("other.txt"), format!("{edits}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(cp.wait().unwrap().success());
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, Duration::from_secs(10)).unwrap_or_else(|e| m.fail(&e));
}

/// The initial walk runs beside the initial sync (a huge tree's walk takes seconds): a file
/// written, after that sync passed it, into a directory the walk has not watched yet must still
/// reach the remote, and a flush meanwhile waits for it (the walk's catch-up reports what
/// changed before each late watch). `WSYNC_TEST_NO_CATCH_UP=1` makes this test fail.
#[test]
fn a_write_into_a_directory_not_yet_watched_arrives() {
    if skip_under(
        &[WatchMode::Poll, WatchMode::Notify],
        "monitor_stress::a_write_into_a_directory_not_yet_watched_arrives",
        "only the inotify backend walks beside the initial sync",
    ) {
        return;
    }
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    // A chain of 10 directories, each watched a second after the one above it.
    let deepest: std::path::PathBuf = (0..10).map(|i| format!("level{i}")).collect();
    std::fs::create_dir_all(src.join(&deepest)).unwrap();
    std::fs::write(src.join(&deepest).join("old"), "before").unwrap();
    let mut m = MonitorProc::start_with(
        tmp.path(),
        workspace("late-watch", &src, vec![local_remote("d", &dst)]),
        &[("WSYNC_TEST_INITIAL_WALK_DELAY_MS", "1000")],
    );
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
    std::fs::write(src.join(&deepest).join("old"), "edited during the walk").unwrap();
    std::fs::write(src.join(&deepest).join("new"), "created during the walk").unwrap();
    assert!(
        !m.logs().contains("the whole tree is watched"),
        "the walk ended before the writes; this test needs a longer WSYNC_TEST_INITIAL_WALK_DELAY_MS"
    );
    m.flush_ok(FLUSH);
    let arrived = std::fs::read_to_string(dst.join(&deepest).join("new"));
    let edited = std::fs::read_to_string(dst.join(&deepest).join("old"));
    if arrived.as_deref().ok() != Some("created during the walk")
        || edited.as_deref().ok() != Some("edited during the walk")
    {
        m.fail(&format!(
            "after the flush the remote has new={arrived:?} old={edited:?}"
        ));
    }
}
