//! Fault injection, local side (issue 6, "Faults"): a remote directory that refuses writes,
//! `kill -9` of monitors and of the daemon during churn, the inotify watch limit, and a source
//! root that is deleted, renamed away, emptied or unmounted while running. Real wsyncd,
//! monitors and rsync, driven through the `wsync` CLI; every wait has a deadline; each test ends
//! with the remotes identical to the source and the status saying so. The SSH faults (outage,
//! hang) are in `faults_network.rs`. `WSYNC_FAULT_SEED=N` reruns the kill rounds with another
//! seed (the default is fixed, so a failure reproduces).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wsync_core::monitor_proto::RemoteState;
use wsync_core::protocol::{MonitorProcessState, Request, Response};
use wsync_core::registry::Registry;
use wsync_tests::env::{pids_mentioning, TestEnv};
use wsync_tests::faults::{
    add_workspace, assert_all_in_sync, attach_local, attach_ssh, cli_status, flush_ok, remote,
    snapshot, status, wait_gone, wait_status, write, TmpfsMount, Unwritable,
};
use wsync_tests::poll::{poll_until, INTERVAL};
use wsync_tests::sshd::Sshd;
use wsync_tests::tree::{churn, count_entries, diff_trees, wait_until_equal};

const FAST: &str = "WatchdogIntervalMs=100\nMonitorStopGraceMs=2000\n";
const WS: &str = "ws";
const WAIT: Duration = Duration::from_secs(20);
/// Exit code of `wsync flush` when remotes are still lagging.
const LAGGING: i32 = 6;

fn assert_equal(env: &TestEnv, src: &Path, dst: &Path) {
    let diffs = diff_trees(src, dst);
    if !diffs.is_empty() {
        env.fail(&format!(
            "{} differs from {}:\n  {}",
            dst.display(),
            src.display(),
            diffs.join("\n  ")
        ));
    }
}

/// `wsync flush` must fail with exit 6 naming `remote`.
fn flush_lags(env: &TestEnv, secs: u64, remote: &str) {
    let out = env.wsync(&["flush", WS, "--timeout", &secs.to_string()]);
    if out.code() != Some(LAGGING)
        || !out
            .stderr
            .contains(&format!("lagging after {secs} s: {remote}"))
    {
        env.fail(&format!(
            "flush should name {remote} as lagging: {}\n{}",
            out.status, out.stderr
        ));
    }
}

/// Waits until both trees are equal, the flush succeeds and every remote reports in sync.
fn converged(env: &TestEnv, src: &Path, remotes: &[&Path]) {
    flush_ok(env, WS, 60);
    for dst in remotes {
        wait_until_equal(src, dst, Duration::from_secs(10)).unwrap_or_else(|e| env.fail(&e));
    }
    wait_status(env, WS, "every remote in sync", WAIT, |s| {
        s.report.as_ref().is_some_and(|r| {
            r.halted.is_none()
                && r.remotes
                    .iter()
                    .all(|r| r.state == RemoteState::InSync && r.consecutive_failures == 0)
        })
    });
    assert_all_in_sync(env, &cli_status(env, WS));
}

// ---------------------------------------------------------------------------------------------
// Remote write failure

#[test]
fn a_read_only_remote_directory_is_reported_retried_and_converges_once_writable() {
    let mut env = TestEnv::with_config(FAST);
    let src = env.mkdir("src");
    let dst = env.root.join("mirror");
    for dir in ["ro", "rw"] {
        for f in 0..3 {
            write(&src.join(format!("{dir}/f{f}.txt")), &format!("{dir} {f}"));
        }
    }
    env.start_daemon();
    add_workspace(&env, &src, WS);
    attach_local(&env, WS, &dst, "mirror");
    flush_ok(&env, WS, 30);
    assert_equal(&env, &src, &dst);

    let guard = match Unwritable::make(&dst.join("ro")) {
        Ok(guard) => guard,
        Err(why) => {
            eprintln!("SKIPPED a_read_only_remote_directory...: {why}");
            return;
        }
    };
    let how = guard.describe();
    write(&src.join("ro/new.txt"), "cannot land yet");
    write(&src.join("ro/f0.txt"), "edited, cannot land yet");
    write(&src.join("rw/new.txt"), "lands at once");

    let failing = |r: &wsync_core::monitor_proto::RemoteStatus| {
        matches!(r.state, RemoteState::Backoff | RemoteState::Error)
            && r.consecutive_failures >= 1
            && r.pending >= 1
            && r.last_error.as_deref().is_some_and(|e| {
                e.contains("Read-only file system") || e.contains("Operation not permitted")
            })
    };
    let s = wait_status(&env, WS, "the write failure in status", WAIT, |s| {
        remote(s, "mirror").is_some_and(failing)
    });
    let first = remote(&s, "mirror").cloned().expect("reported");
    if first.state == RemoteState::Backoff && first.next_retry_unix_ms.is_none() {
        env.fail(&format!("backoff without a next retry time: {first:?}"));
    }
    // Retried with backoff: more attempts follow, each failing the same way.
    let s = wait_status(&env, WS, "a second failed attempt", WAIT, |s| {
        remote(s, "mirror").is_some_and(|r| failing(r) && r.consecutive_failures >= 2)
    });
    let cli = cli_status(&env, WS);
    if !remote(&cli, "mirror")
        .is_some_and(|r| r.last_error.is_some() && r.consecutive_failures >= 1)
    {
        env.fail(&format!(
            "`wsync status --json` hides the failure: {cli:#?}"
        ));
    }
    flush_lags(&env, 1, "mirror");
    // The writable part of the same batch is not held back.
    wait_until_equal(&src.join("rw"), &dst.join("rw"), Duration::from_secs(5))
        .unwrap_or_else(|e| env.fail(&e));
    assert_eq!(
        std::fs::read_to_string(dst.join("ro/f0.txt")).unwrap(),
        "ro 0",
        "a read-only directory was written ({how})"
    );

    guard.undo().unwrap_or_else(|e| env.fail(&e));
    converged(&env, &src, &[&dst]);
    eprintln!(
        "write failure ({how}): {:?}; {} attempts before the fix",
        first.last_error,
        remote(&s, "mirror").map_or(0, |r| r.consecutive_failures)
    );
}

// ---------------------------------------------------------------------------------------------
// kill -9 rounds

/// Crash restarts must not run out or back off for long: 20 rounds kill about ten monitors.
const KILL_CONFIG: &str =
    "WatchdogIntervalMs=100\nMonitorStopGraceMs=2000\nMonitorRestartLimit=1000\nMonitorRestartWindowSecs=1\n";

/// This test's processes whose command line starts with `program` (or its path).
fn processes_of(env: &TestEnv, program: &str) -> Vec<u32> {
    pids_mentioning(&env.root)
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            let argv0 = String::from_utf8_lossy(argv0);
            argv0 == program || argv0.ends_with(&format!("/{program}"))
        })
        .collect()
}

#[test]
fn kill_9_of_monitors_and_the_daemon_during_churn_loses_nothing() {
    let rounds = 20;
    let seed: u64 = std::env::var("WSYNC_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xfa17_5eed);
    let mut env = TestEnv::with_config(KILL_CONFIG);
    let sshd = Sshd::start(&env.root);
    let src = env.mkdir("src");
    let (local, far) = (env.root.join("local"), env.root.join("far"));
    // The churn runs below `tree/`; the anchor keeps the root from ever being empty (which
    // would rightly halt the workspace).
    let tree = src.join("tree");
    churn::seed(&tree, seed);
    write(&src.join("anchor.txt"), "never churned");
    env.start_daemon();
    add_workspace(&env, &src, WS);
    attach_local(&env, WS, &local, "local");
    attach_ssh(&env, WS, &sshd, &far, "box");
    flush_ok(&env, WS, 30);

    let mut rng = churn::Rng::new(seed);
    let mut pid = status(&env, WS).monitor.pid.expect("a running monitor");
    let (mut monitor_kills, mut daemon_kills) = (0, 0);
    let started = Instant::now();
    for round in 0..rounds {
        // ~10-30 bursts of 5 operations, 10 ms apart: a churn of 0.1-0.4 s, with rsyncs running
        // all along; the kill lands at a random moment inside it (or just after).
        let bursts = 10 + rng.below(20);
        let churn_seed = rng.next_u64();
        let kill_daemon = rng.below(2) == 0;
        let delay = Duration::from_millis(rng.below(400) as u64);
        let root = tree.clone();
        let churner = std::thread::spawn(move || {
            for burst in 0..bursts {
                churn::run(&root, 5, churn_seed.wrapping_add(burst as u64));
                std::thread::sleep(Duration::from_millis(10)); // pacing the churn
            }
        });
        std::thread::sleep(delay); // fault timing, not synchronisation
        if kill_daemon {
            env.kill_daemon();
            daemon_kills += 1;
            if !wait_gone(pid, WAIT) {
                env.fail(&format!("round {round}: monitor {pid} outlived its daemon"));
            }
        } else {
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap_or_else(|e| {
                env.fail(&format!(
                    "round {round}: monitor {pid} was already gone: {e}"
                ))
            });
            monitor_kills += 1;
        }
        churner.join().expect("churn thread");
        if kill_daemon {
            env.start_daemon();
        }
        let old = pid;
        let s = wait_status(&env, WS, "a new monitor", WAIT, |s| {
            s.monitor.state == MonitorProcessState::Running
                && s.monitor.pid.is_some_and(|p| p != old)
        });
        pid = s.monitor.pid.expect("pid");
    }
    let rounds_took = started.elapsed();

    converged(&env, &src, &[&local, &far]);
    let registry = Registry::load(&env.registry)
        .unwrap_or_else(|e| env.fail(&format!("the registry no longer parses: {e}")));
    assert_eq!(registry.workspaces.len(), 1);
    assert_eq!(registry.workspaces[0].remotes.len(), 2);
    // No rsync of a killed monitor is left behind.
    if poll_until(
        "the rsyncs of killed monitors to go",
        WAIT,
        INTERVAL,
        || processes_of(&env, "rsync").is_empty(),
    )
    .is_err()
    {
        env.fail(&format!(
            "rsync processes left running: {:?}",
            processes_of(&env, "rsync")
        ));
    }
    let monitors = processes_of(&env, "wsync-monitor");
    if monitors != [pid] {
        env.fail(&format!(
            "expected exactly the current monitor {pid}, found {monitors:?}"
        ));
    }
    eprintln!(
        "{rounds} rounds (seed {seed:#x}): {monitor_kills} monitor kills, {daemon_kills} daemon kills in {rounds_took:?}; {} entries converged",
        count_entries(&src)
    );
}

// ---------------------------------------------------------------------------------------------
// inotify watch limit

#[test]
fn past_the_watch_limit_status_names_the_sysctl_and_full_syncs_keep_converging() {
    const CAP: u64 = 20;
    let mut env = TestEnv::with_config(FAST);
    let src = env.mkdir("src");
    let dst = env.root.join("mirror");
    for d in 0..60 {
        write(&src.join(format!("d{d:02}/sub/f.txt")), &d.to_string());
    }
    let daemon = env.start_daemon_with_env(&[("WSYNC_TEST_MAX_WATCHES", OsStr::new("20"))]);
    add_workspace(&env, &src, WS);
    attach_local(&env, WS, &dst, "mirror");
    let s = wait_status(&env, WS, "the watch error", WAIT, |s| {
        s.report.as_ref().is_some_and(|r| r.watch_error.is_some())
    });
    let report = s.report.expect("report");
    let error = report.watch_error.unwrap_or_default();
    assert!(error.contains("fs.inotify.max_user_watches"), "{error}");
    assert!(report.watches <= CAP, "{} watches in use", report.watches);
    let cli = cli_status(&env, WS);
    assert!(
        cli.report
            .as_ref()
            .and_then(|r| r.watch_error.as_deref())
            .is_some_and(|e| e.contains("fs.inotify.max_user_watches")),
        "{cli:#?}"
    );
    // Changes in directories that have no watch still arrive, without a flush (the fallback's
    // periodic full syncs), and then with one.
    for d in [0, 30, 59] {
        write(&src.join(format!("d{d:02}/sub/new.txt")), "unwatched?");
    }
    std::fs::remove_file(src.join("d45/sub/f.txt")).unwrap();
    wait_until_equal(&src, &dst, WAIT).unwrap_or_else(|e| env.fail(&e));
    write(&src.join("d59/sub/late.txt"), "late");
    converged(&env, &src, &[&dst]);
    // The daemon stays up and the monitor never crashed.
    assert!(env.daemon_exit_status().is_none(), "wsyncd exited");
    match env.request(&Request::DaemonInfo {}) {
        Response::DaemonInfo { pid, .. } => assert_eq!(pid, daemon),
        other => env.fail(&format!("daemon info: {other:?}")),
    }
    let s = status(&env, WS);
    assert_eq!(s.monitor.restarts, 0, "{s:#?}");
    assert!(
        env.logs().contains("fs.inotify.max_user_watches"),
        "the limit is not in the logs"
    );
}

// ---------------------------------------------------------------------------------------------
// Source root deleted / renamed away / emptied / unmounted

/// A workspace `ws` at `<root>/src/ws` with a few dozen files (plus what `prepare` adds) and a
/// local remote in sync; `before` is a copy of the remote taken then.
struct RootCase {
    env: TestEnv,
    src: PathBuf,
    dst: PathBuf,
    before: PathBuf,
}

/// Small on purpose: its `rm -rf` must finish well inside the engine's settle time, or the
/// test measures the large-tree case (see the last test).
fn seed_tree(src: &Path) {
    for d in 0..4 {
        for f in 0..6 {
            write(
                &src.join(format!("d{d}/s{}/f{f}.txt", f % 3)),
                &format!("{d}/{f}"),
            );
        }
    }
    write(&src.join("top.txt"), "top");
}

fn root_case(prepare: impl FnOnce(&Path)) -> RootCase {
    let mut env = TestEnv::with_config(FAST);
    let src = env.root.join("src/ws");
    std::fs::create_dir_all(&src).unwrap();
    prepare(&src);
    seed_tree(&src);
    let dst = env.root.join("mirror");
    env.start_daemon();
    add_workspace(&env, &src, WS);
    attach_local(&env, WS, &dst, "mirror");
    flush_ok(&env, WS, 30);
    assert_equal(&env, &src, &dst);
    let before = env.root.join("mirror-before");
    snapshot(&dst, &before);
    RootCase {
        env,
        src,
        dst,
        before,
    }
}

/// The fault has happened: status must say halted with `reason_has` in the reason, for the
/// workspace and the remote, through the CLI too; and the remote must be exactly as before.
fn halts_and_deletes_nothing(case: &RootCase, reason_has: &str) -> String {
    let env = &case.env;
    let s = wait_status(env, WS, "halted", WAIT, |s| {
        s.report.as_ref().is_some_and(|r| r.halted.is_some())
            && remote(s, "mirror").is_some_and(|r| r.state == RemoteState::Halted)
    });
    let reason = s.report.and_then(|r| r.halted).unwrap_or_default();
    if !reason.contains(reason_has) {
        env.fail(&format!(
            "halt reason should mention {reason_has:?}: {reason}"
        ));
    }
    // Halted remotes never count as caught up; the flush also gives anything pending time.
    flush_lags(env, 1, "mirror");
    let cli = cli_status(env, WS);
    let cli_halted = cli.report.as_ref().and_then(|r| r.halted.clone());
    if cli_halted.is_none()
        || !remote(&cli, "mirror").is_some_and(|r| r.state == RemoteState::Halted)
    {
        env.fail(&format!(
            "`wsync status --json` does not show the halt: {cli:#?}"
        ));
    }
    let diffs = diff_trees(&case.before, &case.dst);
    if !diffs.is_empty() {
        env.fail(&format!(
            "the remote changed after the source root went away ({} of {} entries left; reason {reason:?}):\n  {}",
            count_entries(&case.dst),
            count_entries(&case.before),
            diffs.join("\n  ")
        ));
    }
    assert!(env.daemon_pid().is_some());
    reason
}

/// `wsync resume` (the user's confirmation) once the root is back: the remote converges.
fn resume_converges(case: &RootCase) {
    case.env.wsync_ok(&["resume", WS]);
    converged(&case.env, &case.src, &[&case.dst]);
}

#[test]
fn a_deleted_source_root_halts_and_deletes_nothing_remotely() {
    let case = root_case(|_| {});
    // `rm -rf`: the contents go first (file by file), then the root itself.
    std::fs::remove_dir_all(&case.src).unwrap();
    halts_and_deletes_nothing(&case, "src/ws");
    std::fs::create_dir(&case.src).unwrap();
    write(&case.src.join("fresh.txt"), "a new start");
    resume_converges(&case);
}

#[test]
fn a_source_root_renamed_away_halts_and_deletes_nothing_remotely() {
    let case = root_case(|_| {});
    let away = case.env.root.join("src/ws-moved");
    std::fs::rename(&case.src, &away).unwrap();
    // Work goes on in the moved directory; none of it is the workspace's.
    write(&away.join("d0/elsewhere.txt"), "x");
    halts_and_deletes_nothing(&case, "src/ws");
    std::fs::rename(&away, &case.src).unwrap();
    write(&case.src.join("back.txt"), "back");
    resume_converges(&case);
}

#[test]
fn an_emptied_source_root_halts_and_deletes_nothing_remotely() {
    let case = root_case(|_| {});
    // `rm -rf root/*`: the root stays, everything in it goes, entry by entry.
    for entry in std::fs::read_dir(&case.src).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }
    halts_and_deletes_nothing(&case, "empty");
    // Resume confirms: the remote is emptied too.
    resume_converges(&case);
    assert_eq!(count_entries(&case.dst), 0);
}

#[test]
fn an_unmounted_source_root_halts_and_deletes_nothing_remotely() {
    // The workspace lives on a filesystem mounted at its root; the mount goes away and leaves
    // the empty mount point (Syncthing's remount case).
    let mut mount = None;
    let case = root_case(|src| match TmpfsMount::mount(src) {
        Ok(m) => mount = Some(m),
        Err(why) => eprintln!("cannot mount a tmpfs ({why}); the test runs without one"),
    });
    // Rebound after `case`, so the mount goes before the temp dir does.
    let Some(mut mount) = mount else {
        eprintln!("SKIPPED an_unmounted_source_root...: mounting is not allowed here");
        return;
    };
    mount.unmount().unwrap_or_else(|e| case.env.fail(&e));
    halts_and_deletes_nothing(&case, "src/ws");
    write(&case.src.join("on-the-bare-mount-point.txt"), "x");
    resume_converges(&case);
}

/// `rm -rf` of a big tree, paced so it lasts ~0.4 s wherever the test runs (a plain
/// `remove_dir_all` of these 3,000 files takes 70-120 ms here, right at the engine's 100 ms
/// latency cap, so the outcome would depend on the machine): depth first, files before their
/// directory, the root last.
fn slow_rm_rf(root: &Path) {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        for entry in std::fs::read_dir(&dirs[i]).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            }
        }
        i += 1;
    }
    let mut removed = 0;
    for dir in dirs.iter().rev() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if !entry.file_type().unwrap().is_dir() {
                std::fs::remove_file(entry.path()).unwrap();
                removed += 1;
                if removed % 40 == 0 {
                    std::thread::sleep(Duration::from_millis(5)); // pacing, not synchronisation
                }
            }
        }
        std::fs::remove_dir(dir).unwrap();
    }
}

fn large_tree(src: &Path) {
    for d in 0..30 {
        for f in 0..100 {
            write(&src.join(format!("big{d:02}/f{f}.txt")), "x");
        }
    }
}

#[test]
fn a_large_source_root_deleted_with_rm_rf_deletes_nothing_remotely() {
    let case = root_case(large_tree);
    let started = Instant::now();
    slow_rm_rf(&case.src);
    let took = started.elapsed();
    let reason = halts_and_deletes_nothing(&case, "src/ws");
    eprintln!("rm -rf took {took:?}; halted: {reason}");
    std::fs::create_dir(&case.src).unwrap();
    write(&case.src.join("fresh.txt"), "a new start");
    // A new root is not a confirmation to delete: the full sync stops at the --max-delete cap
    // (3,000 deletions > 1,000) and halts again; the second resume confirms.
    case.env.wsync_ok(&["resume", WS]);
    wait_status(&case.env, WS, "the max-delete halt", WAIT, |s| {
        s.report
            .as_ref()
            .and_then(|r| r.halted.as_deref())
            .is_some_and(|h| h.contains("--max-delete"))
    });
    assert_eq!(
        count_entries(&case.dst),
        count_entries(&case.before),
        "deleted past the --max-delete cap without confirmation"
    );
    resume_converges(&case);
}

/// `rm -rf root/*` of a big tree, paced like [`slow_rm_rf`]: the root stays, so no root event
/// ever comes; the deletion storm is held until it ends, and then the root is empty.
#[test]
fn a_large_source_root_emptied_with_rm_rf_star_deletes_nothing_remotely() {
    let case = root_case(large_tree);
    let started = Instant::now();
    for entry in std::fs::read_dir(&case.src).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            slow_rm_rf(&path);
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }
    let took = started.elapsed();
    let reason = halts_and_deletes_nothing(&case, "empty");
    eprintln!("rm -rf root/* took {took:?}; halted: {reason}");
    // Resume confirms: the remote is emptied too.
    resume_converges(&case);
    assert_eq!(count_entries(&case.dst), 0);
}

/// Most of a big tree deleted while the root keeps something: more deletions than the
/// workspace's max_delete (1,000 by default) halt with nothing deleted; resume confirms.
#[test]
fn a_mass_deletion_past_max_delete_halts_until_resume_confirms() {
    let case = root_case(large_tree);
    for d in 0..30 {
        slow_rm_rf(&case.src.join(format!("big{d:02}")));
    }
    let reason = halts_and_deletes_nothing(&case, "mass deletion");
    assert!(reason.contains("max_delete"), "{reason}");
    resume_converges(&case);
}
