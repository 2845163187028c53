//! wsync-monitor end to end with local remotes: every kind of change mirrored (checked right
//! after a flush, so flush correctness is tested too), a 50 MB file, status counters, pause,
//! attach/detach independence, a failing remote not delaying the others, the safety halt, and
//! the process contract (EOF, shutdown, bad start, crash switch).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use wsync_core::monitor_proto::{MonitorCommand, RemoteState, WatchMode};
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::tree::{diff_trees, scratch_dir, wait_until_equal};
use wsync_tests::watch_mode::{counts_watches, skip_under};

const FLUSH: Duration = Duration::from_secs(20);

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn assert_same(monitor: &MonitorProc, src: &Path, dst: &Path, step: &str) {
    let diffs = diff_trees(src, dst);
    if !diffs.is_empty() {
        monitor.fail(&format!("after {step}:\n  {}", diffs.join("\n  ")));
    }
}

fn set_mtime(path: &Path, secs_ago: u64) {
    let when = SystemTime::now() - Duration::from_secs(secs_ago);
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(when).unwrap();
}

#[test]
fn every_kind_of_change_is_mirrored_and_flush_waits_for_it() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("mirror/copy");
    write(&src.join("pre/existing.txt"), "before start");
    write(&src.join("pre/deep/er/file"), "deep");
    std::fs::write(src.join("empty"), "").unwrap();
    symlink("pre/existing.txt", src.join("link")).unwrap();
    set_mtime(&src.join("pre/existing.txt"), 86_400);
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("basic", &src, vec![local_remote("copy", &dst)]),
    );
    m.flush_ok(FLUSH);
    assert_same(&m, &src, &dst, "the initial sync");

    type Step = (&'static str, Box<dyn Fn(&Path)>);
    let steps: Vec<Step> = vec![
        (
            "create a file",
            Box::new(|s| write(&s.join("new.txt"), "hello")),
        ),
        (
            "modify a file",
            Box::new(|s| write(&s.join("new.txt"), "hello again, longer")),
        ),
        (
            "create an empty file",
            Box::new(|s| write(&s.join("pre/empty2"), "")),
        ),
        (
            "delete a file",
            Box::new(|s| std::fs::remove_file(s.join("pre/deep/er/file")).unwrap()),
        ),
        (
            "rename a file",
            Box::new(|s| std::fs::rename(s.join("new.txt"), s.join("renamed.txt")).unwrap()),
        ),
        (
            "create a nested tree",
            Box::new(|s| {
                for i in 0..5 {
                    write(&s.join(format!("tree/a{i}/b/c/f{i}")), &"x".repeat(i * 100));
                }
            }),
        ),
        (
            "rename a directory",
            Box::new(|s| std::fs::rename(s.join("tree"), s.join("tree2")).unwrap()),
        ),
        (
            "edit inside the renamed directory",
            Box::new(|s| write(&s.join("tree2/a1/b/c/f1"), "edited")),
        ),
        (
            "delete a directory tree",
            Box::new(|s| std::fs::remove_dir_all(s.join("tree2/a2")).unwrap()),
        ),
        (
            "retarget a symlink",
            Box::new(|s| {
                std::fs::remove_file(s.join("link")).unwrap();
                symlink("renamed.txt", s.join("link")).unwrap();
            }),
        ),
        (
            "create a dangling symlink",
            Box::new(|s| symlink("../nowhere", s.join("pre/dangling")).unwrap()),
        ),
        (
            "change permissions",
            Box::new(|s| {
                std::fs::set_permissions(
                    s.join("renamed.txt"),
                    std::fs::Permissions::from_mode(0o640),
                )
                .unwrap();
                std::fs::set_permissions(
                    s.join("pre/deep"),
                    std::fs::Permissions::from_mode(0o700),
                )
                .unwrap();
            }),
        ),
        (
            "change an mtime",
            Box::new(|s| set_mtime(&s.join("renamed.txt"), 3600)),
        ),
        (
            "odd names",
            Box::new(|s| {
                for name in [
                    "with space",
                    "new\nline",
                    "ünïcødé ✓",
                    "-leading-dash",
                    "--",
                    "glob*?[a]{b}",
                    "back\\slash",
                    "quote'\"",
                ] {
                    write(&s.join("odd").join(name), name);
                }
                let raw = OsStr::from_bytes(b"latin1-\xe9\xff");
                std::fs::write(s.join("odd").join(raw), "raw").unwrap();
            }),
        ),
        (
            "edit and delete odd names",
            Box::new(|s| {
                write(&s.join("odd/with space"), "edited");
                std::fs::remove_file(s.join("odd/new\nline")).unwrap();
                std::fs::rename(s.join("odd/-leading-dash"), s.join("odd/-renamed dash")).unwrap();
            }),
        ),
        (
            "replace a file with a directory",
            Box::new(|s| {
                std::fs::remove_file(s.join("renamed.txt")).unwrap();
                write(&s.join("renamed.txt/inside"), "now a dir");
            }),
        ),
        (
            "replace a directory with a file",
            Box::new(|s| {
                std::fs::remove_dir_all(s.join("renamed.txt")).unwrap();
                write(&s.join("renamed.txt"), "a file again");
            }),
        ),
        (
            "move a directory in from outside",
            Box::new(|s| {
                let outside = s.parent().unwrap().join("outside");
                write(&outside.join("x/y"), "came from outside");
                std::fs::rename(&outside, s.join("moved-in")).unwrap();
            }),
        ),
        (
            "move a directory out",
            Box::new(|s| {
                std::fs::rename(s.join("moved-in"), s.parent().unwrap().join("gone-out")).unwrap();
            }),
        ),
    ];
    for (name, step) in steps {
        step(&src);
        m.flush_ok(FLUSH);
        assert_same(&m, &src, &dst, name);
    }
    // The counters follow the flush answer as soon as the last rsync has exited.
    let status = m.wait_status("counters", FLUSH, |s| s.remotes[0].files_sent > 10);
    let remote = &status.remotes[0];
    assert_eq!(remote.state, RemoteState::InSync, "{status:?}");
    assert!(remote.bytes_sent > 0, "{status:?}");
    assert!(remote.last_sync_unix_ms.is_some());
    assert_eq!((remote.pending, remote.consecutive_failures), (0, 0));
    if counts_watches() {
        assert!(status.watches >= 5, "{status:?}");
    }
    let logs = m.logs();
    assert!(
        !logs.contains("full=true") || logs.matches("full=true").count() == 1,
        "only the initial sync may be full:\n{logs}"
    );
    assert!(m.shutdown(Duration::from_secs(10)).success());
}

#[test]
fn a_50_mb_file_arrives_whole() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(&src).unwrap();
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("big", &src, vec![local_remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    let block: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut file = std::fs::File::create(src.join("big.bin")).unwrap();
    for i in 0..50u8 {
        let mut chunk = block.clone();
        chunk[0] = i;
        std::io::Write::write_all(&mut file, &chunk).unwrap();
    }
    drop(file);
    m.flush_ok(Duration::from_secs(60));
    assert_same(&m, &src, &dst, "writing 50 MB");
    m.wait_status("50 MB counted", FLUSH, |s| {
        s.remotes[0].bytes_sent >= 50 * 1024 * 1024
    });
    // Each landed batch was reported on its own: the initial full sync first (no watched
    // change in it), then incremental batches that carried the file's 50 MB.
    let batches = m.synced_batches();
    let (first, rest) = batches.split_first().expect("no batch reported");
    assert!(
        first.1.full && first.1.oldest_change_us.is_none(),
        "{batches:?}"
    );
    let sent: u64 = rest
        .iter()
        .filter(|(remote, b)| remote == "d" && !b.full && b.paths >= 1)
        .map(|(_, b)| b.bytes)
        .sum();
    assert!(sent >= 50 * 1024 * 1024, "{batches:?}");
    assert!(
        rest.iter().all(|(_, b)| b.oldest_change_us.is_some()),
        "{batches:?}"
    );
}

#[test]
fn pause_holds_changes_and_resume_delivers_them() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(&src).unwrap();
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("p", &src, vec![local_remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    m.send(&MonitorCommand::Pause);
    // A change racing the command may legitimately go first: wait until the pause is in effect.
    m.wait_status("pause applied", FLUSH, |s| s.paused);
    write(&src.join("while-paused"), "x");
    assert_eq!(m.flush(Duration::from_millis(300)), ["d"]);
    let status = m.wait_status("paused", FLUSH, |s| s.paused && s.remotes[0].pending == 1);
    assert_eq!(status.remotes[0].state, RemoteState::Paused);
    assert!(!dst.join("while-paused").exists());
    m.send(&MonitorCommand::Resume);
    m.flush_ok(FLUSH);
    assert_same(&m, &src, &dst, "resume");
}

#[test]
fn attach_and_detach_do_not_resync_other_remotes() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write(&src.join("f"), "1");
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace(
            "ad",
            &src,
            vec![local_remote("a", &a), local_remote("b", &b)],
        ),
    );
    m.flush_ok(FLUSH);
    // A full resync of a would delete this; incremental syncs leave it alone.
    std::fs::write(a.join("marker-only-on-a"), "x").unwrap();
    // Flush answers once the data is there; the counters follow when rsync exits.
    let before = m.wait_status("initial syncs counted", FLUSH, |s| {
        s.remotes.iter().all(|r| r.files_sent == 1)
    });
    let c = tmp.path().join("c");
    m.send(&MonitorCommand::Attach {
        remote: local_remote("c", &c),
        progress: false,
    });
    write(&src.join("g"), "2");
    m.flush_ok(FLUSH);
    assert_eq!(std::fs::read_to_string(c.join("g")).unwrap(), "2");
    assert_eq!(std::fs::read_to_string(b.join("g")).unwrap(), "2");
    assert!(a.join("marker-only-on-a").exists(), "remote a was resynced");
    m.send(&MonitorCommand::Detach { remote: "c".into() });
    // Commands and file events reach the monitor on different channels: a change made before
    // the detach is applied may still go to c (in process, that batch takes a millisecond).
    m.wait_status("c detached", FLUSH, |s| s.remotes.len() == 2);
    write(&src.join("h"), "3");
    m.flush_ok(FLUSH);
    let after = m.wait_status("c gone, h counted", FLUSH, |s| {
        s.remotes.len() == 2 && s.remotes.iter().all(|r| r.files_sent >= 3)
    });
    assert!(a.join("marker-only-on-a").exists(), "remote a was resynced");
    assert!(!c.join("h").exists(), "a detached remote got a change");
    assert!(b.join("h").exists());
    for (x, y) in before.remotes.iter().zip(&after.remotes) {
        assert_eq!(x.name, y.name);
        // Only g and h (one file each) went to a and b since the first flush.
        assert_eq!(y.files_sent, x.files_sent + 2, "{x:?} -> {y:?}");
    }
    let logs = m.logs();
    for name in ["a", "b"] {
        let full = logs.matches(&format!("remote={name} full=true")).count();
        assert_eq!(full, 1, "remote {name} had {full} full syncs:\n{logs}");
    }
}

#[test]
fn a_failing_remote_backs_off_without_delaying_the_others() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let good = tmp.path().join("good");
    write(&src.join("f"), "1");
    // A target below a regular file can never be created.
    std::fs::write(tmp.path().join("plain-file"), "").unwrap();
    let bad = tmp.path().join("plain-file/sub");
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace(
            "fail",
            &src,
            vec![local_remote("bad", &bad), local_remote("good", &good)],
        ),
    );
    // The good remote converges on its own schedule; the bad one never holds it up.
    wait_until_equal(&src, &good, FLUSH).unwrap_or_else(|e| m.fail(&e));
    write(&src.join("g"), "2");
    wait_until_equal(&src, &good, FLUSH).unwrap_or_else(|e| m.fail(&e));
    assert_eq!(m.flush(Duration::from_millis(500)), ["bad"]);
    let status = m.wait_status("bad remote backing off", FLUSH, |s| {
        s.remotes[0].consecutive_failures >= 1 && s.remotes[0].last_error.is_some()
    });
    let bad_status = &status.remotes[0];
    assert!(
        matches!(
            bad_status.state,
            RemoteState::Backoff | RemoteState::Error | RemoteState::InitialSync
        ),
        "{bad_status:?}"
    );
    assert!(bad_status.next_retry_unix_ms.is_some(), "{bad_status:?}");
    assert_eq!(status.remotes[1].state, RemoteState::InSync);
}

#[test]
fn a_vanished_root_halts_and_deletes_nothing() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    write(&src.join("keep/me"), "precious");
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("halt", &src, vec![local_remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    let away = tmp.path().join("src.away");
    std::fs::rename(&src, &away).unwrap();
    let status = m.wait_status("halted", FLUSH, |s| s.halted.is_some());
    assert_eq!(status.remotes[0].state, RemoteState::Halted);
    m.send(&MonitorCommand::Resync);
    assert_eq!(m.flush(Duration::from_millis(500)), ["d"]);
    assert_eq!(
        std::fs::read_to_string(dst.join("keep/me")).unwrap(),
        "precious"
    );
    std::fs::rename(&away, &src).unwrap();
    write(&src.join("keep/new"), "after");
    m.send(&MonitorCommand::Resume);
    m.wait_status("halt lifted", FLUSH, |s| s.halted.is_none());
    m.flush_ok(FLUSH);
    assert_same(&m, &src, &dst, "the root came back");
    write(&src.join("keep/newer"), "watched again");
    wait_until_equal(&src, &dst, FLUSH).unwrap_or_else(|e| m.fail(&e));
}

#[test]
fn process_contract_eof_shutdown_bad_start_and_crash_switch() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let dst = tmp.path().join("dst");
    // EOF on stdin: exit 0 promptly.
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("eof", &src, vec![local_remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    let started = std::time::Instant::now();
    assert!(m.close_stdin_and_wait(Duration::from_secs(5)).success());
    assert!(started.elapsed() < Duration::from_secs(3));
    // Shutdown: exit 0, and nothing but JSON ever appeared on stdout (the reader would panic).
    let mut m = MonitorProc::start(tmp.path(), workspace("sd", &src, vec![]));
    assert!(m.shutdown(Duration::from_secs(5)).success());
    // A bad first message: exit 2.
    let bin = wsync_tests::env::bin("wsync-monitor");
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"{\"cmd\":\"pause\"}\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    // The crash switch: exit 3 at once.
    let crash = tmp.path().join("crash");
    std::fs::write(&crash, "").unwrap();
    let out = Command::new(&bin)
        .env("WSYNC_TEST_MONITOR_CRASH_FILE", &crash)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

/// Issue 5: a graceful shutdown lets the transfer under way finish (the daemon's SIGTERM at the
/// end of its grace period is what abandons one). rsync writes to a temporary file and renames
/// it, so an abandoned transfer would leave no `big.bin` at all.
#[test]
fn shutdown_lets_the_transfer_under_way_finish() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("drain", &src, vec![local_remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    let size = 400u64 << 20;
    // Written beside the workspace and renamed in: every watch backend sees it whole (the
    // poll backend could otherwise find it half written and send that).
    let outside = tmp.path().join("big.bin.part");
    std::fs::write(&outside, vec![7u8; size as usize]).unwrap();
    std::fs::rename(&outside, src.join("big.bin")).unwrap();
    let arrived = || std::fs::metadata(dst.join("big.bin")).is_ok_and(|m| m.len() == size);
    // Status reports are rate-limited: a fast machine may finish before one says "syncing".
    m.wait_status("the transfer to start", FLUSH, |s| {
        s.remotes[0].state == RemoteState::Syncing || arrived()
    });
    m.send(&MonitorCommand::Shutdown);
    let status = m.close_stdin_and_wait(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    if !arrived() {
        m.fail("the transfer under way was abandoned by a graceful shutdown");
    }
}

/// An idle monitor's private memory stays small (issue 14: under 10 MiB RSS per process). Its
/// anonymous pages are what the monitor itself makes; the rest of its RSS is shared code. The
/// log writer's queue once made every monitor hold 4 MiB of them from the start.
#[test]
fn an_idle_monitor_holds_little_anonymous_memory() {
    if skip_under(
        &[WatchMode::Notify],
        "an_idle_monitor_holds_little_anonymous_memory",
        "the notify crate's own threads and buffers hold ~5 MiB more (6 MiB in all, measured); the bound is the default backend's",
    ) {
        return;
    }
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src.join("a/file"), "x");
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("lean", &src, vec![local_remote("d", &dst)]),
    );
    m.flush_ok(FLUSH);
    let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", m.pid())).unwrap();
    let anon_kib: u64 = rollup
        .lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| m.fail(&format!("no Anonymous line in smaps_rollup:\n{rollup}")));
    // About 1 MiB today (debug or release build); 4 MiB more with the old log queue.
    if anon_kib > 3 * 1024 {
        m.fail(&format!(
            "an idle monitor holds {anon_kib} KiB of anonymous memory (at most 3072 expected)"
        ));
    }
}
