//! Full-sync progress (issue 7): the monitor reports rsync's progress in status during the
//! initial sync of a remote someone waits for (named in `start.progress`, or attached with
//! `attach.progress`), and not for other initial syncs, resyncs or incremental batches; and
//! `wsync attach` without a terminal prints no progress noise but still waits for the initial
//! sync.

use std::path::Path;
use std::time::Duration;

use wsync_core::monitor_proto::{MonitorCommand, RemoteState};
use wsync_tests::env::TestEnv;
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::tree::{diff_trees, scratch_dir};

const FLUSH: Duration = Duration::from_secs(60);

/// Writes `count` files of `mib` MiB each (distinct contents) into `dir`; returns the bytes.
fn big_files(dir: &Path, count: u8, mib: usize) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let block: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    for n in 0..count {
        let mut data = Vec::with_capacity(mib * block.len());
        for i in 0..mib {
            let mut chunk = block.clone();
            chunk[..2].copy_from_slice(&[n, i as u8]);
            data.extend_from_slice(&chunk);
        }
        std::fs::write(dir.join(format!("big-{n:02}.bin")), data).unwrap();
    }
    u64::from(count) * (mib * block.len()) as u64
}

#[test]
fn an_initial_sync_reports_progress_and_incremental_batches_do_not() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    // Large enough that the transfer outlasts a few status intervals (100 ms) even on a fast
    // machine, small enough to take well under a second or two on tmpfs.
    let total = big_files(&src, 24, 10);
    let mut m = MonitorProc::start_reporting(
        tmp.path(),
        workspace("prog", &src, vec![local_remote("copy", &dst)]),
        vec!["copy".into()],
    );
    m.flush_ok(FLUSH);
    let diffs = diff_trees(&src, &dst);
    if !diffs.is_empty() {
        m.fail(&format!("after the initial sync: {diffs:?}"));
    }
    let reports = m.progress_reports();
    if reports.is_empty() {
        m.fail("no progress was reported during a 240 MiB initial sync");
    }
    let mut last = None;
    for (remote, p) in &reports {
        assert_eq!(remote, "copy");
        assert!(p.bytes_done <= total, "{p:?}");
        if let Some(files) = p.files_total {
            // 24 files and the root directory.
            assert_eq!(files, 25, "{p:?}");
            assert!(p.files_done <= files, "{p:?}");
        }
        if let Some(bytes) = p.bytes_total {
            // Estimated from rsync's whole-number percentage.
            assert!(bytes >= p.bytes_done, "{p:?}");
            assert!(bytes > total / 3 * 2 && bytes < total / 3 * 4, "{p:?}");
        }
        if let Some(prev) = last.replace(*p) {
            assert!(p.bytes_done >= prev.bytes_done, "{prev:?} then {p:?}");
            assert!(p.files_done >= prev.files_done, "{prev:?} then {p:?}");
        }
    }
    eprintln!("{} progress reports; last {last:?}", reports.len());
    // The byte counters follow rsync's exit, a little after the flush answer.
    m.wait_status(
        "in sync, without progress, with every byte counted",
        FLUSH,
        |s| {
            let r = &s.remotes[0];
            r.state == RemoteState::InSync && r.progress.is_none() && r.bytes_sent >= total
        },
    );

    // An incremental batch (one large file) runs without --info=progress2.
    std::fs::write(src.join("big-00.bin"), vec![1u8; 20 * 1024 * 1024]).unwrap();
    m.flush_ok(FLUSH);
    assert_eq!(m.progress_reports().len(), reports.len());
    if !m.logs().contains("running rsync") || m.logs().matches("--info=progress2").count() != 1 {
        m.fail("expected exactly one rsync run with --info=progress2 (the initial sync)");
    }
}

#[test]
fn only_a_watched_initial_sync_reports_progress() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let (quiet, watched) = (tmp.path().join("quiet"), tmp.path().join("watched"));
    big_files(&src, 24, 10);
    // Started without `progress`: its initial sync runs without --info=progress2.
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("prog", &src, vec![local_remote("quiet", &quiet)]),
    );
    m.flush_ok(FLUSH);
    assert!(diff_trees(&src, &quiet).is_empty());
    if !m.progress_reports().is_empty() || m.logs().contains("--info=progress2") {
        m.fail("an initial sync nobody waits for reported progress");
    }
    // Attached with `progress`: its initial sync reports it (the other remote stays quiet).
    m.send(&MonitorCommand::Attach {
        remote: local_remote("watched", &watched),
        progress: true,
    });
    m.flush_ok(FLUSH);
    assert!(diff_trees(&src, &watched).is_empty());
    let reports = m.progress_reports();
    if reports.is_empty() || reports.iter().any(|(r, _)| r != "watched") {
        m.fail(&format!(
            "expected progress for \"watched\" only: {reports:?}"
        ));
    }
    // A resync afterwards runs quietly for both.
    m.send(&MonitorCommand::Resync);
    m.flush_ok(FLUSH);
    m.wait_status("both in sync after the resync", FLUSH, |s| {
        s.remotes.iter().all(|r| r.state == RemoteState::InSync)
    });
    assert_eq!(m.progress_reports().len(), reports.len());
    if m.logs().matches("--info=progress2").count() != 1 {
        m.fail("expected exactly one rsync run with --info=progress2 (the watched attach)");
    }
}

#[test]
fn attach_without_a_terminal_prints_no_progress_and_waits_for_the_initial_sync() {
    let mut env = TestEnv::new();
    // Debug logs name each rsync's argv.
    env.start_daemon_with_env(&[("WSYNC_LOG", "wsync_monitor=debug,info".as_ref())]);
    let src = env.mkdir("w");
    let total = big_files(&src.join("data"), 8, 4);
    env.wsync_ok(&["add", src.to_str().unwrap()]);
    let mirror = env.root.join("m");
    let out = env.wsync(&["attach", "w", mirror.to_str().unwrap()]);
    if !out.success() {
        env.fail(&format!("attach failed: {}\n{}", out.stdout, out.stderr));
    }
    // Returned only once the remote holds everything.
    let diffs = diff_trees(&src, &mirror);
    assert!(
        diffs.is_empty(),
        "attach returned before the sync: {diffs:?}"
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].starts_with("attached remote m ("),
        "{}",
        out.stdout
    );
    assert_eq!(lines[1], "m is in sync");
    // No bar, spinner or carriage return anywhere.
    assert!(out.stderr.is_empty(), "stderr: {:?}", out.stderr);
    assert!(!out.stdout.contains('\r'), "{:?}", out.stdout);
    assert!(total > 0);

    let out = env.wsync(&["flush", "w", "--timeout", "30"]);
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "workspace w: every remote is in sync\n");
    assert!(out.stderr.is_empty(), "stderr: {:?}", out.stderr);

    // The waiting attach asked for progress; one with --no-wait does not.
    let quiet = env.root.join("q");
    env.wsync_ok(&["attach", "w", quiet.to_str().unwrap(), "--no-wait"]);
    let out = env.wsync(&["flush", "w", "--timeout", "30"]);
    assert!(out.success(), "{}", out.stderr);
    assert!(diff_trees(&src, &quiet).is_empty());
    let runs = progress_runs(&env.log_dir);
    if runs != 1 {
        env.fail(&format!(
            "expected one rsync with --info=progress2 (the waited-for attach), saw {runs}"
        ));
    }
}

/// How many rsync runs logged under `log_dir` asked for `--info=progress2`.
fn progress_runs(log_dir: &Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(log_dir).unwrap().flatten() {
        let text = std::fs::read(entry.path()).unwrap_or_default();
        count += String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| l.contains("running rsync") && l.contains("--info=progress2"))
            .count();
    }
    count
}
