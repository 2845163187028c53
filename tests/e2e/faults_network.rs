//! Fault injection, network side (issue 6, "Faults"): an SSH remote whose server goes away
//! (sshd stopped) and one that hangs (sshd and its sessions frozen with SIGSTOP), next to a
//! local remote of the same workspace. Real wsyncd, monitors, rsync and sshd; every wait has a
//! deadline. CI runs a ~6 s outage; `WSYNC_LONG_FAULTS=1` runs the 30 s version of both.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wsync_core::monitor_proto::RemoteState;
use wsync_tests::env::TestEnv;
use wsync_tests::faults::{
    add_workspace, assert_all_in_sync, attach_local, attach_ssh, cli_status, flush_ok, long_faults,
    now_unix_ms, remote, sshd_listener, wait_status, write, Frozen,
};
use wsync_tests::poll::poll_until;
use wsync_tests::sshd::Sshd;
use wsync_tests::tree::{diff_trees, wait_until_equal};

const FAST: &str = "WatchdogIntervalMs=100\nMonitorStopGraceMs=2000\n";
const WS: &str = "ws";
/// Exit code of `wsync flush` when remotes are still lagging.
const LAGGING: i32 = 6;

struct Setup {
    env: TestEnv,
    sshd: Sshd,
    src: PathBuf,
    local: PathBuf,
    far: PathBuf,
}

/// A workspace with a local remote `local` and an SSH remote `box`, both in sync.
fn setup() -> Setup {
    let mut env = TestEnv::with_config(FAST);
    let sshd = Sshd::start(&env.root);
    let src = env.mkdir("src");
    for d in 0..4 {
        for f in 0..5 {
            write(&src.join(format!("d{d}/f{f}.txt")), &format!("{d}/{f}"));
        }
    }
    let (local, far) = (env.root.join("local"), env.root.join("far side"));
    env.start_daemon();
    add_workspace(&env, &src, WS);
    attach_local(&env, WS, &local, "local");
    attach_ssh(&env, WS, &sshd, &far, "box");
    flush_ok(&env, WS, 30);
    assert_equal(&env, &src, &local);
    assert_equal(&env, &src, &far);
    Setup {
        env,
        sshd,
        src,
        local,
        far,
    }
}

fn assert_equal(env: &TestEnv, src: &Path, dst: &Path) {
    let diffs = diff_trees(src, dst);
    if !diffs.is_empty() {
        env.fail(&format!(
            "{} differs:\n  {}",
            dst.display(),
            diffs.join("\n  ")
        ));
    }
}

/// Creates, edits, deletes and renames a few things (what an editor session does).
fn change_some(src: &Path, tag: &str) {
    write(&src.join(format!("new/{tag}/a.txt")), tag);
    write(&src.join("d0/f0.txt"), &format!("edited during {tag}"));
    let _ = std::fs::remove_file(src.join("d1/f1.txt"));
    let from = src.join("d2/f2.txt");
    if from.exists() {
        std::fs::rename(&from, src.join(format!("d2/renamed-{tag}.txt"))).unwrap();
    }
}

/// `wsync flush WS --timeout SECS` that must fail with exit 6 naming exactly `expected`; returns
/// how long it took.
fn flush_names_lagging(env: &TestEnv, secs: u64, expected: &[&str]) -> Duration {
    let started = Instant::now();
    let out = env.wsync(&["flush", WS, "--timeout", &secs.to_string()]);
    let took = started.elapsed();
    let lagging: Vec<&str> = out
        .stderr
        .lines()
        .find(|l| l.contains("still lagging"))
        .and_then(|l| l.rsplit(": ").next())
        .map(|names| names.split(", ").collect())
        .unwrap_or_default();
    if out.code() != Some(LAGGING) || lagging != expected {
        env.fail(&format!(
            "flush --timeout {secs}: expected exit {LAGGING} naming {expected:?}, got {} naming {lagging:?}\nstdout:\n{}\nstderr:\n{}",
            out.status, out.stdout, out.stderr
        ));
    }
    took
}

/// The local remote stays in sync while `box` is down or hung.
fn local_is_unaffected(env: &TestEnv, src: &Path, local: &Path) {
    wait_until_equal(src, local, Duration::from_secs(5)).unwrap_or_else(|e| env.fail(&e));
    wait_status(env, WS, "local in sync", Duration::from_secs(5), |s| {
        remote(s, "local").is_some_and(|r| {
            r.state == RemoteState::InSync && r.last_error.is_none() && r.consecutive_failures == 0
        })
    });
}

/// Waits for both remotes to be identical to the source and the status to say so.
fn converges(env: &TestEnv, src: &Path, local: &Path, far: &Path, within: Duration) -> Duration {
    let started = Instant::now();
    flush_ok(env, WS, within.as_secs());
    let took = started.elapsed();
    for dst in [local, far] {
        wait_until_equal(src, dst, Duration::from_secs(5)).unwrap_or_else(|e| env.fail(&e));
    }
    wait_status(
        env,
        WS,
        "every remote in sync",
        Duration::from_secs(5),
        |s| {
            s.report.as_ref().is_some_and(|r| {
                r.remotes
                    .iter()
                    .all(|r| r.state == RemoteState::InSync && r.consecutive_failures == 0)
            })
        },
    );
    assert_all_in_sync(env, &cli_status(env, WS));
    took
}

#[test]
fn an_ssh_outage_shows_backoff_keeps_the_local_remote_in_sync_and_catches_up() {
    let Setup {
        env,
        mut sshd,
        src,
        local,
        far,
    } = setup();
    let outage = if long_faults() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(6)
    };
    sshd.stop();
    let down = Instant::now();
    change_some(&src, "outage");

    // The status tells the truth: backoff, the error, a retry time in the future.
    let s = wait_status(
        &env,
        WS,
        "box in backoff with an error and a future retry",
        Duration::from_secs(20),
        |s| {
            remote(s, "box").is_some_and(|r| {
                r.state == RemoteState::Backoff
                    && r.consecutive_failures >= 1
                    && r.pending >= 1
                    && r.last_error.is_some()
                    && r.next_retry_unix_ms.is_some_and(|t| t > now_unix_ms())
            })
        },
    );
    let first_backoff = down.elapsed();
    let error = remote(&s, "box").and_then(|r| r.last_error.clone());
    if !error
        .as_deref()
        .is_some_and(|e| e.contains("Connection refused"))
    {
        env.fail(&format!("last_error should say why: {error:?}"));
    }
    // What a user sees through the CLI agrees (polled: a retry may be running at that moment).
    let seen = poll_until(
        "`wsync status --json` to show box in backoff",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let s = cli_status(&env, WS);
            remote(&s, "box")
                .filter(|r| r.state == RemoteState::Backoff && r.last_error.is_some())
                .cloned()
        },
    );
    if seen.is_err() {
        env.fail("`wsync status --json` never showed box in backoff");
    }
    flush_names_lagging(&env, 2, &["box"]);
    local_is_unaffected(&env, &src, &local);

    // Keep working while it is down; every change must arrive later.
    let mut n = 0;
    while down.elapsed() < outage {
        n += 1;
        write(&src.join(format!("during/{n}.txt")), &n.to_string());
        std::thread::sleep(Duration::from_millis(250)); // pacing the edits, not synchronisation
    }
    let failures = remote(&status_now(&env), "box").map_or(0, |r| r.consecutive_failures);
    local_is_unaffected(&env, &src, &local);
    sshd.resume();
    let caught_up = converges(&env, &src, &local, &far, Duration::from_secs(90));
    eprintln!(
        "outage {outage:?}: first backoff after {first_backoff:?} ({error:?}), {failures} failed attempts, caught up {caught_up:?} after sshd returned"
    );
}

fn status_now(env: &TestEnv) -> wsync_core::protocol::WorkspaceStatus {
    wsync_tests::faults::status(env, WS)
}

#[test]
fn a_hanging_ssh_remote_times_out_retries_and_flush_reports_it() {
    let Setup {
        env,
        sshd,
        src,
        local,
        far,
    } = setup();
    let listener = sshd_listener(&env.root)
        .unwrap_or_else(|| env.fail(&format!("no sshd listener found\n{}", sshd.log())));
    // Accepts connections (the kernel completes the handshake), never answers.
    let frozen = Frozen::freeze(listener);
    let stopped = Instant::now();
    assert!(frozen.len() >= 2, "expected the listener and a session");
    change_some(&src, "hang");

    // flush does not hang: it names the stuck remote once its timeout passes.
    let took = flush_names_lagging(&env, 3, &["box"]);
    assert!(took < Duration::from_secs(10), "flush took {took:?}");
    local_is_unaffected(&env, &src, &local);
    let s = status_now(&env);
    match remote(&s, "box") {
        Some(r) if r.pending >= 1 && r.state != RemoteState::InSync => {}
        other => env.fail(&format!("box should be behind: {other:?}")),
    }

    // The hung rsync times out and is retried. Measured ~12 s (was 29-40 s with 5 s x 3
    // probes and a 10 s connect timeout): the multiplexed master drops the frozen server after
    // its ServerAlive probes (2 s x 3, ~6-8 s), then ssh falls back to a direct connection that
    // hits ConnectTimeout (5 s) in the banner exchange; rsync's own --timeout=15 is the
    // backstop.
    let s = wait_status(
        &env,
        WS,
        "the hung sync to time out",
        Duration::from_secs(25),
        |s| remote(s, "box").is_some_and(|r| r.consecutive_failures >= 1),
    );
    let timed_out = stopped.elapsed();
    assert!(
        timed_out < Duration::from_secs(20),
        "the hung remote took {timed_out:?} to time out"
    );
    let error = remote(&s, "box").and_then(|r| r.last_error.clone());
    if !error
        .as_deref()
        .is_some_and(|e| e.to_lowercase().contains("time"))
    {
        env.fail(&format!("last_error should name the timeout: {s:#?}"));
    }
    wait_status(&env, WS, "a retry of box", Duration::from_secs(20), |s| {
        remote(s, "box")
            .is_some_and(|r| r.consecutive_failures >= 1 && r.state == RemoteState::Syncing)
    });
    let retried = stopped.elapsed();
    if long_faults() {
        let hold = Duration::from_secs(30);
        while stopped.elapsed() < hold {
            std::thread::sleep(Duration::from_millis(200)); // holding the fault, not synchronisation
        }
    }
    local_is_unaffected(&env, &src, &local);
    frozen.thaw();
    let caught_up = converges(&env, &src, &local, &far, Duration::from_secs(90));
    eprintln!(
        "hang: flush answered in {took:?}; first timeout after {timed_out:?} ({error:?}); retry running at {retried:?}; caught up {caught_up:?} after SIGCONT"
    );
}
