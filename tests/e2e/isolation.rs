//! Failure isolation per path (issue 11 item 9): a path the remote cannot write (rsync exit
//! 23) is retried on its own while every other change keeps flowing; after 3 failures the
//! remote shows `error` naming it and the notification hook fires once, naming it; it
//! converges once the path is writable. Real wsyncd,
//! monitor and rsync; the unwritable directory is a read-only bind mount in the test's temp dir.

use std::time::{Duration, Instant};

use wsync_core::monitor_proto::RemoteState;
use wsync_tests::env::{hook_lines, TestEnv};
use wsync_tests::faults::{
    add_workspace, attach_local, flush_ok, remote, status, wait_status, write, Unwritable,
};
use wsync_tests::poll::{poll_until, INTERVAL};
use wsync_tests::tree::{diff_trees, wait_until_equal};

const FAST: &str = "WatchdogIntervalMs=100\nMonitorStopGraceMs=2000\n";
const WS: &str = "ws";

/// A running daemon with workspace [`WS`] (`files` written in `src`) synced to a local
/// remote `mirror` at `dst`, and the hook log when `hook`.
struct Synced {
    env: TestEnv,
    log: Option<std::path::PathBuf>,
    src: std::path::PathBuf,
    dst: std::path::PathBuf,
}

fn synced(files: &[&str], hook: bool) -> Synced {
    let mut env = TestEnv::with_config(FAST);
    let log = hook.then(|| env.install_hook());
    let src = env.mkdir("src");
    let dst = env.root.join("mirror");
    for file in files {
        write(&src.join(file), "old");
    }
    env.start_daemon();
    add_workspace(&env, &src, WS);
    attach_local(&env, WS, &dst, "mirror");
    flush_ok(&env, WS, 30);
    Synced { env, log, src, dst }
}

#[test]
fn a_path_the_remote_cannot_write_fails_alone_while_other_changes_arrive() {
    let Synced { env, src, dst, .. } = synced(&["ro/f.txt", "rw/f.txt"], false);

    let guard = match Unwritable::make(&dst.join("ro")) {
        Ok(guard) => guard,
        Err(why) => {
            eprintln!("SKIPPED a_path_the_remote_cannot_write...: {why}");
            return;
        }
    };
    write(&src.join("ro/f.txt"), "cannot land yet");
    wait_status(
        &env,
        WS,
        "the path's first failure",
        Duration::from_secs(10),
        |s| remote(s, "mirror").is_some_and(|r| r.consecutive_failures >= 1),
    );
    // Unrelated changes, made while the path keeps failing, each arrive within seconds.
    for round in 0..3 {
        let text = format!("round {round}");
        write(&src.join("rw/f.txt"), &text);
        let started = Instant::now();
        wait_until_equal(&src.join("rw"), &dst.join("rw"), Duration::from_secs(3)).unwrap_or_else(
            |e| env.fail(&format!("round {round}: an unrelated change waited: {e}")),
        );
        eprintln!(
            "round {round}: unrelated change landed in {:?}",
            started.elapsed()
        );
    }
    let s = wait_status(
        &env,
        WS,
        "error naming the path after 3 failures",
        Duration::from_secs(20),
        |s| {
            remote(s, "mirror").is_some_and(|r| {
                r.state == RemoteState::Error
                    && r.consecutive_failures >= 3
                    && r.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("ro/f.txt"))
            })
        },
    );
    eprintln!("status: {:?}", remote(&s, "mirror"));
    let out = env.wsync(&["flush", WS, "--timeout", "1"]);
    if out.success() {
        env.fail("flush says in sync while ro/f.txt is not on the remote");
    }

    guard.undo().unwrap_or_else(|e| env.fail(&e));
    flush_ok(&env, WS, 60);
    let diffs = diff_trees(&src, &dst);
    if !diffs.is_empty() {
        env.fail(&format!("not converged:\n  {}", diffs.join("\n  ")));
    }
    wait_status(&env, WS, "in sync", Duration::from_secs(10), |s| {
        remote(s, "mirror").is_some_and(|r| r.state == RemoteState::InSync)
    });
}

#[test]
fn a_path_failing_three_times_fires_the_hook_naming_it() {
    let Synced { env, log, src, dst } = synced(&["ro/f.txt", "rw/f.txt"], true);
    let log = log.expect("hook installed");
    let guard = match Unwritable::make(&dst.join("ro")) {
        Ok(guard) => guard,
        Err(why) => {
            eprintln!("SKIPPED a_path_failing_three_times_fires_the_hook_naming_it: {why}");
            return;
        }
    };
    write(&src.join("ro/f.txt"), "cannot land yet");
    // Failures one and two (backoff) are not news; the third (error) is.
    wait_status(
        &env,
        WS,
        "the path's second failure",
        Duration::from_secs(10),
        |s| remote(s, "mirror").is_some_and(|r| r.consecutive_failures >= 2),
    );
    assert!(
        hook_lines(&log).is_empty(),
        "the hook ran while the path was only retrying: {:?}",
        hook_lines(&log)
    );
    let fired = poll_until("the hook to run", Duration::from_secs(30), INTERVAL, || {
        !hook_lines(&log).is_empty()
    });
    if fired.is_err() {
        env.fail(&format!(
            "the hook did not run after 3 failures of ro/f.txt; status {:?}",
            remote(&status(&env, WS), "mirror")
        ));
    }
    let lines = hook_lines(&log);
    let fields: Vec<&str> = lines[0].splitn(4, '|').collect();
    assert_eq!(fields[..3], [WS, "mirror", "error"], "{lines:?}");
    assert!(
        fields[3].contains("ro/f.txt") && fields[3].contains("Read-only file system"),
        "WSYNC_ERROR names the path: {lines:?}"
    );
    guard.undo().unwrap_or_else(|e| env.fail(&e));
    flush_ok(&env, WS, 60);
    wait_until_equal(&src, &dst, Duration::from_secs(10)).unwrap_or_else(|e| env.fail(&e));
}

/// A failure rsync cannot pin on a path (`failed to set times on "/target/."` when the target
/// directory itself is immutable, `chattr +i`) fails the whole remote: after 3 consecutive failures it
/// shows `error` with rsync's message and the hook fires, once, while it keeps retrying; once
/// the directory is writable again it converges and shows `in-sync`.
#[test]
fn a_remote_failing_whole_three_times_shows_error_and_fires_the_hook_once() {
    let Synced { env, log, src, dst } = synced(&["sub/f.txt"], true);
    let log = log.expect("hook installed");
    // Not a bind mount over the target: a handle opened on the target before it would still
    // reach the directory below the mount.
    let guard = match Unwritable::immutable(&dst) {
        Ok(guard) => guard,
        Err(why) => {
            eprintln!("SKIPPED a_remote_failing_whole_three_times...: chattr +i failed: {why}");
            return;
        }
    };
    eprintln!("target made unwritable: {}", guard.describe());
    // A new file at the root: rsync cannot create it, nor set the root's times (a message
    // naming no workspace path), so the whole remote fails.
    write(&src.join("new.txt"), "cannot land yet");
    wait_status(
        &env,
        WS,
        "the remote's second failure",
        Duration::from_secs(15),
        |s| remote(s, "mirror").is_some_and(|r| r.consecutive_failures >= 2),
    );
    assert!(
        hook_lines(&log).is_empty(),
        "the hook ran while the remote was only retrying: {:?}",
        hook_lines(&log)
    );
    let s = wait_status(
        &env,
        WS,
        "error after 3 whole-remote failures",
        Duration::from_secs(30),
        |s| {
            remote(s, "mirror").is_some_and(|r| {
                r.state == RemoteState::Error
                    && r.consecutive_failures >= 3
                    && r.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("failed to set times"))
            })
        },
    );
    eprintln!("status: {:?}", remote(&s, "mirror"));
    let fired = poll_until("the hook to run", Duration::from_secs(30), INTERVAL, || {
        !hook_lines(&log).is_empty()
    });
    if fired.is_err() {
        env.fail("the hook did not run for a remote in error");
    }
    // Still retried with backoff, still failing, still reported once.
    let failures = remote(&s, "mirror").map_or(0, |r| r.consecutive_failures);
    wait_status(
        &env,
        WS,
        "another failed retry",
        Duration::from_secs(30),
        |s| remote(s, "mirror").is_some_and(|r| r.consecutive_failures > failures),
    );
    let lines = hook_lines(&log);
    assert_eq!(lines.len(), 1, "the hook fires once: {lines:?}");
    let fields: Vec<&str> = lines[0].splitn(4, '|').collect();
    assert_eq!(fields[..3], [WS, "mirror", "error"], "{lines:?}");
    assert!(fields[3].contains("failed to set times"), "{lines:?}");

    guard.undo().unwrap_or_else(|e| env.fail(&e));
    flush_ok(&env, WS, 90);
    wait_until_equal(&src, &dst, Duration::from_secs(10)).unwrap_or_else(|e| env.fail(&e));
    wait_status(&env, WS, "in sync", Duration::from_secs(10), |s| {
        remote(s, "mirror").is_some_and(|r| r.state == RemoteState::InSync)
    });
    assert_eq!(hook_lines(&log).len(), 1, "{:?}", hook_lines(&log));
}
