//! End-to-end: `wsync detach` answers only once nothing more is written to that remote's
//! target. The daemon's rsync is a slowed wrapper that runs the real rsync as its *child*
//! (as rsync's own forked receiver is): killing only the process wsync spawned would leave
//! the transfer running, so the target would keep changing after detach returned.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use wsync_tests::env::{pids_mentioning, TestEnv};
use wsync_tests::faults::{add_workspace, arg, attach_local_with};
use wsync_tests::poll::{poll_until, INTERVAL};

const FILES: usize = 40;
const FILE_BYTES: usize = 64 * 1024;

/// The real rsync, found on PATH before the wrapper is put in front of it.
fn real_rsync() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("rsync"))
        .find(|p| p.is_file())
        .expect("rsync on PATH")
}

/// `dir/rsync`: `--version` as the real one; any transfer through the real rsync at 256 KiB/s,
/// run as a child of the wrapper (not exec'd), so the process wsync spawned is not rsync.
fn slow_rsync(dir: &Path) -> std::ffi::OsString {
    std::fs::create_dir_all(dir).unwrap();
    let script = dir.join("rsync");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then exec '{real}' \"$@\"; fi\n'{real}' --bwlimit=256 \"$@\"\nexit $?\n",
            real = real_rsync().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

/// Every entry below `dir` (rsync's temporary files included) with its size and mtime.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    let mut seen = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                todo.push(entry.path());
            }
            let rel = entry.path().strip_prefix(dir).unwrap().to_path_buf();
            seen.insert(rel, (meta.len(), meta.mtime(), meta.mtime_nsec()));
        }
    }
    seen
}

fn regular_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with("f") && e.path().is_file()
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn after_detach_returns_the_target_no_longer_changes() {
    let mut env = TestEnv::with_config("MonitorStopGraceMs=2000\n");
    let path = slow_rsync(&env.root.join("slow-bin"));
    env.start_daemon_with_env(&[("PATH", &path)]);
    let src = env.mkdir("src");
    for i in 0..FILES {
        let body: Vec<u8> = (0..FILE_BYTES).map(|b| (b * 7 + i) as u8).collect();
        std::fs::write(src.join(format!("f{i:03}")), body).unwrap();
    }
    add_workspace(&env, &src, "ws");
    // Two remotes, so detaching one leaves the monitor running (the last one stops it).
    let (kept, dropped) = (env.root.join("kept"), env.root.join("dropped"));
    attach_local_with(&env, "ws", &kept, "kept", &["--no-wait"]);
    attach_local_with(&env, "ws", &dropped, "dropped", &["--no-wait"]);
    // Mid-transfer: some files there, most not.
    poll_until(
        "the initial sync to `dropped` to be under way",
        Duration::from_secs(60),
        INTERVAL,
        || regular_files(&dropped) >= 2,
    )
    .unwrap();
    assert!(regular_files(&dropped) < FILES / 2, "the rsync is too fast");
    env.wsync_ok(&["detach", "ws", "dropped"]);
    let after = snapshot(&dropped);
    // Nothing that could write there runs any more: no rsync (nor a child of one) names it.
    let writers = pids_mentioning(&dropped);
    assert!(
        writers.is_empty(),
        "still running for the detached target: {writers:?}"
    );
    // The other remote's transfer runs on meanwhile: until it is done (seconds at this
    // rate), the detached target must not change at all.
    poll_until(
        "the initial sync to `kept` to finish",
        Duration::from_secs(60),
        INTERVAL,
        || {
            assert_eq!(
                snapshot(&dropped),
                after,
                "the target changed after `wsync detach` returned"
            );
            regular_files(&kept) == FILES
        },
    )
    .unwrap();
    assert_eq!(snapshot(&dropped), after, "the detached target changed");
    assert!(regular_files(&dropped) < FILES, "{:?}", arg(&dropped));
}

/// The last remote detached stops the monitor: it too answers only once the transfer under
/// way is gone, and the target no longer changes.
#[test]
fn detaching_the_last_remote_mid_transfer_leaves_nothing_writing() {
    let mut env = TestEnv::with_config("MonitorStopGraceMs=2000\n");
    let path = slow_rsync(&env.root.join("slow-bin"));
    env.start_daemon_with_env(&[("PATH", &path)]);
    let src = env.mkdir("src");
    for i in 0..FILES {
        let body: Vec<u8> = (0..FILE_BYTES).map(|b| (b * 7 + i) as u8).collect();
        std::fs::write(src.join(format!("f{i:03}")), body).unwrap();
    }
    add_workspace(&env, &src, "ws");
    let only = env.root.join("only");
    attach_local_with(&env, "ws", &only, "only", &["--no-wait"]);
    poll_until(
        "the initial sync to be under way",
        Duration::from_secs(60),
        INTERVAL,
        || regular_files(&only) >= 2,
    )
    .unwrap();
    env.wsync_ok(&["detach", "ws", "only"]);
    let after = snapshot(&only);
    let writers = pids_mentioning(&only);
    assert!(
        writers.is_empty(),
        "still running for the detached target: {writers:?}"
    );
    assert!(
        regular_files(&only) < FILES,
        "the transfer was not cut short"
    );
    assert_eq!(snapshot(&only), after);
}
