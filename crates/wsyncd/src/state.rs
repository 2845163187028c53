//! The daemon's shared state: config, registry and supervisor behind one `std::sync::Mutex`,
//! and the sink through which monitors' stdout events reach it.
//!
//! A std mutex on purpose: if a thread panics while holding it, the mutex is poisoned and the
//! watchdog thread sees that and restarts the daemon cleanly. Never hold the guard across an
//! `.await`, and never block (wait for a process, sleep, touch a user's path: see
//! [`crate::path_check`]) while holding it.
//!
//! Monitor events: each monitor's stdout reader only decodes lines and hands them to an
//! [`EventSink`]; the state owns the receiving end, on a thread that applies whatever has
//! queued up under one lock. So a reader never touches the state, and a burst of status lines
//! costs one lock, not one per line.

use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use wsync_core::config::Config;
use wsync_core::monitor_proto::MonitorEvent;
use wsync_core::protocol::{EventKind, WorkspaceChange, WorkspaceStatus};
use wsync_core::registry::{Registry, Workspace};

use crate::path_check::PathChecks;
use crate::supervisor::Supervisor;

/// Events applied under one lock at most, so a flood cannot keep the lock from others.
const MAX_EVENTS_PER_LOCK: usize = 64;

/// Everything the daemon knows, guarded by one lock.
pub struct DaemonState {
    pub config: Config,
    pub registry: Registry,
    pub supervisor: Supervisor,
    pub started: Instant,
    /// Set once shutdown begins: nothing new is started after that.
    pub shutting_down: bool,
    /// Watchdog passes completed (reported by `DaemonInfo`, so tests can wait for passes
    /// instead of sleeping).
    pub watchdog_passes: u64,
    /// Counts the registry's committed changes: a check made on a copy of the registry with
    /// the lock released still holds if this has not moved.
    pub registry_revision: u64,
    /// The deadline for filesystem calls on users' paths.
    pub path_checks: PathChecks,
}

/// The state as every task and thread shares it.
pub type SharedState = Arc<Mutex<DaemonState>>;

/// The lock is poisoned: a thread panicked while holding it.
#[derive(Debug, thiserror::Error)]
#[error("the daemon's internal state is corrupted (a thread panicked); the daemon is restarting itself — if it does not come back, run `wsync daemon start`")]
pub struct Poisoned;

/// Locks the state; a poisoned lock is an error, never a panic.
pub fn lock(state: &SharedState) -> Result<MutexGuard<'_, DaemonState>, Poisoned> {
    state.lock().map_err(|_| Poisoned)
}

/// One event from a monitor's stdout, tagged with the monitor that sent it.
#[derive(Debug)]
pub struct MonitorMessage {
    pub workspace: String,
    /// Which spawn of the workspace's monitor sent it: a replaced monitor's late events are
    /// ignored.
    pub generation: u64,
    pub event: MonitorEvent,
}

/// Where monitors' stdout readers deliver their events (see the module docs).
#[derive(Debug, Clone)]
pub struct EventSink(mpsc::Sender<MonitorMessage>);

impl EventSink {
    /// A sink and the receiving end its messages arrive on.
    pub(crate) fn channel() -> (Self, mpsc::Receiver<MonitorMessage>) {
        let (sender, inbox) = mpsc::channel();
        (Self(sender), inbox)
    }

    /// Queues `message` for the state; false when the state is gone (the daemon is ending).
    pub fn deliver(&self, message: MonitorMessage) -> bool {
        self.0.send(message).is_ok()
    }
}

/// Builds the daemon's state and starts the thread that applies monitor events to it.
/// Monitors' pipes are served by tasks on `runtime`.
pub fn new_shared(
    config: Config,
    registry: Registry,
    runtime_dir: PathBuf,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<SharedState> {
    let (sink, inbox) = EventSink::channel();
    let supervisor = Supervisor::new(&config, runtime_dir, sink, runtime);
    let path_checks = PathChecks::new(
        config.tuning.path_check_timeout,
        wsync_core::platform::current_exe(),
    );
    let shared = Arc::new(Mutex::new(DaemonState {
        config,
        registry,
        supervisor,
        started: Instant::now(),
        shutting_down: false,
        watchdog_passes: 0,
        registry_revision: 0,
        path_checks,
    }));
    let weak = Arc::downgrade(&shared);
    std::thread::Builder::new()
        .name("monitor-events".into())
        .spawn(move || apply_monitor_events(&weak, &inbox))?;
    Ok(shared)
}

/// Ends when the state is dropped (its supervisor holds the sending end) or poisoned (the
/// watchdog deals with that).
fn apply_monitor_events(state: &Weak<Mutex<DaemonState>>, inbox: &mpsc::Receiver<MonitorMessage>) {
    while let Ok(first) = inbox.recv() {
        let Some(state) = state.upgrade() else { return };
        let Ok(mut guard) = state.lock() else { return };
        guard.supervisor.on_monitor_event(first);
        for message in inbox.try_iter().take(MAX_EVENTS_PER_LOCK - 1) {
            guard.supervisor.on_monitor_event(message);
        }
    }
}

impl DaemonState {
    /// Starts the monitor of `workspace` if it is stopped and should run, unless the daemon is
    /// shutting down. A monitor started now reports rsync's progress during the initial sync of
    /// the remotes named in `progress` (someone waits for them).
    pub fn start_monitor_if_stopped(&mut self, workspace: &Workspace, progress: Vec<String>) {
        if !self.shutting_down {
            self.supervisor.start_if_stopped(workspace, progress);
        }
    }

    /// Tells subscribers that `workspace`'s registry entry changed.
    pub fn publish_change(&mut self, workspace: &str, change: WorkspaceChange) {
        self.supervisor
            .subscribers
            .publish(Some(workspace), EventKind::Workspace { change });
    }

    /// The full status of one workspace.
    pub fn workspace_status(&self, workspace: &Workspace) -> WorkspaceStatus {
        let (monitor, report) = self.supervisor.status(workspace);
        WorkspaceStatus {
            workspace: workspace.clone(),
            monitor,
            report,
            watch_mode: Some(self.supervisor.watch_mode_of(workspace)),
        }
    }
}
