//! wsync-monitor end to end over SSH against a private sshd on 127.0.0.1: the built `-e`
//! command really connects (with a remote path containing spaces), changes arrive over the
//! multiplexed connection, a churn of 500 random operations converges, and an sshd outage
//! backs off and then catches up with nothing lost.

use std::path::Path;
use std::time::Duration;

use wsync_core::monitor_proto::RemoteState;
use wsync_core::registry::Remote;
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::sshd::Sshd;
use wsync_tests::tree::{churn, diff_trees, scratch_dir, wait_until_equal};

const FLUSH: Duration = Duration::from_secs(30);

fn ssh_remote(sshd: &Sshd, name: &str, path: &Path) -> Remote {
    sshd.remote(name, path)
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn changes_reach_an_ssh_remote_with_spaces_in_its_path() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let src = tmp.path().join("src");
    let dst = tmp.path().join("remote side/my mirror");
    write(&src.join("a/b"), "initial");
    write(&src.join("odd/with space"), "s");
    write(&src.join("odd/-dash"), "d");
    write(&src.join("odd/glob*?[x]"), "g");
    write(&src.join("odd/new\nline"), "n");
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("ssh", &src, vec![ssh_remote(&sshd, "r", &dst)]),
    );
    m.flush_ok(FLUSH);
    let diffs = diff_trees(&src, &dst);
    assert!(diffs.is_empty(), "{diffs:?}\nsshd log:\n{}", sshd.log());
    write(&src.join("a/c"), "second");
    std::fs::rename(src.join("odd"), src.join("odd renamed")).unwrap();
    std::fs::remove_file(src.join("a/b")).unwrap();
    m.flush_ok(FLUSH);
    let diffs = diff_trees(&src, &dst);
    assert!(diffs.is_empty(), "{diffs:?}");
    let status = m.status().unwrap();
    assert_eq!(status.remotes[0].state, RemoteState::InSync);
    // The connection is multiplexed: a control socket exists in the runtime dir.
    let sockets = std::fs::read_dir(tmp.path().join("run")).unwrap().count();
    assert!(sockets >= 1, "no ControlPath socket");
    assert!(m.shutdown(Duration::from_secs(10)).success());
}

#[test]
fn churn_converges_over_ssh() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    churn::seed(&src, 7);
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("churn-ssh", &src, vec![ssh_remote(&sshd, "r", &dst)]),
    );
    m.flush_ok(FLUSH);
    churn::run(&src, 500, 0x5eed_0001);
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, Duration::from_secs(5)).unwrap_or_else(|e| m.fail(&e));
}

#[test]
fn an_sshd_outage_backs_off_then_catches_up() {
    let tmp = scratch_dir();
    let mut sshd = Sshd::start(tmp.path());
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    let local = tmp.path().join("local");
    write(&src.join("before"), "1");
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace(
            "outage",
            &src,
            vec![ssh_remote(&sshd, "r", &dst), local_remote("l", &local)],
        ),
    );
    m.flush_ok(FLUSH);
    sshd.stop();
    write(&src.join("during/outage"), "2");
    std::fs::remove_file(src.join("before")).unwrap();
    // The local remote is not held up by the dead one.
    assert_eq!(m.flush(Duration::from_secs(2)), ["r"]);
    assert!(diff_trees(&src, &local).is_empty());
    let status = m.wait_status("ssh remote backing off", FLUSH, |s| {
        s.remotes[0].state == RemoteState::Backoff && s.remotes[0].consecutive_failures >= 1
    });
    assert!(status.remotes[0].pending >= 1, "{status:?}");
    assert!(status.remotes[0].last_error.is_some());
    sshd.resume();
    // Backoff is at most a few seconds after one or two failures.
    m.flush_ok(Duration::from_secs(30));
    wait_until_equal(&src, &dst, Duration::from_secs(5)).unwrap_or_else(|e| m.fail(&e));
    let status = m.status().unwrap();
    assert_eq!(status.remotes[0].consecutive_failures, 0, "{status:?}");
}
