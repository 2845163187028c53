//! The watchdog: a dedicated OS thread (not a tokio task a stuck runtime could starve) that
//! wakes every `WatchdogIntervalMs` and
//! 1. exits the daemon when the state lock is poisoned (a thread panicked holding it): it logs
//!    the panic, kills the monitors' process groups, removes socket and pidfile and exits with
//!    [`exit_codes::STATE_POISONED`], so systemd (or the user) starts a clean daemon;
//! 2. otherwise runs [`Supervisor::watchdog_pass`](crate::supervisor::Supervisor::watchdog_pass):
//!    kills monitors that stopped sending heartbeats, restarts crashed (or killed) monitors
//!    with backoff, or marks them failed, and counts the pass (`watchdog_passes` in
//!    `DaemonInfo`); the killed ones are reaped on a thread of their own, with the lock
//!    released and without holding up the next pass.
//!
//! Test-only trigger: when the daemon starts with `WSYNC_TEST_POISON=1` in its environment,
//! SIGUSR1 makes a fresh thread panic while holding the state lock. Without the variable no
//! handler is installed and the code is inert.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use crate::monitor_proc::RunningMonitor;
use crate::monitor_state::Now;
use crate::state::SharedState;
use crate::{exit_codes, logging, process};

/// Environment switch arming the test-only poison trigger.
pub const TEST_POISON_ENV: &str = "WSYNC_TEST_POISON";

/// How long the monitors get after SIGTERM when the daemon ends itself on a poisoned lock.
const FATAL_STOP_GRACE: Duration = Duration::from_secs(1);

/// Files the watchdog removes when it has to end the daemon itself.
#[derive(Debug, Clone)]
pub struct FatalCleanup {
    pub socket: PathBuf,
    pub pidfile: PathBuf,
}

/// Starts the watchdog thread. It ends when the daemon begins shutting down.
pub fn spawn(
    shared: SharedState,
    interval: Duration,
    cleanup: FatalCleanup,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || run(shared, interval, cleanup))
}

fn run(shared: SharedState, interval: Duration, cleanup: FatalCleanup) {
    loop {
        std::thread::sleep(interval);
        let pass = std::panic::catch_unwind(AssertUnwindSafe(|| run_pass(&shared)));
        match pass {
            Ok(PassOutcome::Continue) => {}
            Ok(PassOutcome::Stop) => return,
            Ok(PassOutcome::Poisoned(pids)) => fatal(&pids, &cleanup),
            // The guard was dropped while unwinding, so the next pass sees the poison.
            Err(_) => tracing::error!("watchdog pass panicked"),
        }
    }
}

/// What a watchdog pass found.
enum PassOutcome {
    Continue,
    Stop,
    Poisoned(Vec<u32>),
}

fn run_pass(shared: &SharedState) -> PassOutcome {
    let mut guard = match shared.lock() {
        Ok(guard) => guard,
        Err(poisoned) => {
            return PassOutcome::Poisoned(poisoned.into_inner().supervisor.running_pids())
        }
    };
    if guard.shutting_down {
        return PassOutcome::Stop;
    }
    let state = &mut *guard;
    let killed = state
        .supervisor
        .watchdog_pass(&state.registry.workspaces, Now::current());
    state.watchdog_passes += 1;
    drop(guard);
    for monitor in killed {
        reap(monitor);
    }
    PassOutcome::Continue
}

/// Reaps a monitor killed for silence. SIGKILL ends even a stopped process or one waiting on a
/// hung FUSE mount, but not one in an uninterruptible NFS wait, so the wait runs on its own
/// thread.
fn reap(monitor: RunningMonitor) {
    let pid = monitor.pid;
    let spawned = std::thread::Builder::new()
        .name("monitor-reaper".into())
        .spawn(move || {
            let exit = monitor.kill();
            tracing::info!(pid, "unresponsive monitor reaped ({exit})");
        });
    if let Err(e) = spawned {
        // The monitor was moved into the failed closure and dropped with it: its pipes are
        // closed, and init reaps it when the daemon exits.
        tracing::warn!(pid, "cannot start a thread to reap the killed monitor: {e}");
    }
}

fn fatal(pids: &[u32], cleanup: &FatalCleanup) -> ! {
    let cause = logging::last_panic().unwrap_or_else(|| "unknown panic".into());
    tracing::error!(
        "the daemon's state lock is poisoned ({cause}); stopping {} monitor(s), removing the socket and pidfile and exiting with status {}",
        pids.len(),
        exit_codes::STATE_POISONED
    );
    // Short and fixed: the state holding the configured grace cannot be trusted any more, and
    // the process exits right after, so nobody reaps (init does).
    process::terminate_groups(pids, FATAL_STOP_GRACE);
    for path in [&cleanup.socket, &cleanup.pidfile] {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    }
    eprintln!("error: wsyncd's internal state was corrupted ({cause}); exiting");
    std::process::exit(i32::from(exit_codes::STATE_POISONED));
}

/// Arms the test-only poison trigger when `WSYNC_TEST_POISON=1` (see the module docs).
pub fn arm_test_poison_trigger(shared: &SharedState) -> std::io::Result<()> {
    if std::env::var_os(TEST_POISON_ENV).is_none_or(|v| v != "1") {
        return Ok(());
    }
    tracing::warn!("{TEST_POISON_ENV}=1: SIGUSR1 will poison the state lock (test-only)");
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let shared = shared.clone();
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            let shared = shared.clone();
            let _ = std::thread::Builder::new()
                .name("poison-trigger".into())
                .spawn(move || {
                    let _guard = shared.lock();
                    panic!("test-only poison trigger ({TEST_POISON_ENV}): panicking while holding the state lock");
                });
        }
    });
    Ok(())
}
