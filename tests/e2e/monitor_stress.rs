//! wsync-monitor under load with a local remote: lsyncd's churn test (500 random creates, edits,
//! moves and deletes) and watchman's recrawl test (SIGSTOP the monitor, create 20,000 files so
//! the inotify queue overflows, SIGCONT: one rescan, and the remote converges).

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::tree::{churn, scratch_dir, wait_until_equal};

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
    let pid = Pid::from_raw(m.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    for d in 0..20 {
        let dir = src.join(format!("burst{d}"));
        for f in 0..1000 {
            std::fs::write(dir.join(format!("file{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    std::fs::write(src.join("existing/f"), "edited while stopped").unwrap();
    kill(pid, Signal::SIGCONT).unwrap();
    m.flush_ok(Duration::from_secs(60));
    wait_until_equal(&src, &dst, Duration::from_secs(10)).unwrap_or_else(|e| m.fail(&e));
    let status = m.wait_status("overflow counted", FLUSH, |s| s.overflows >= 1);
    assert!(status.rescans >= 1, "{status:?}");
    assert!(status.watches >= 22, "{status:?}");
    // Watching still works after the rescan.
    std::fs::create_dir(src.join("burst3/new-dir")).unwrap();
    std::fs::write(src.join("burst3/new-dir/after"), "after the recrawl").unwrap();
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, Duration::from_secs(5)).unwrap_or_else(|e| m.fail(&e));
}
