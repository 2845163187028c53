//! The daemon's shared state: config, registry and supervisor behind one `std::sync::Mutex`.
//!
//! A std mutex on purpose: if a thread panics while holding it, the mutex is poisoned and the
//! watchdog thread sees that and restarts the daemon cleanly. Never hold the guard across an
//! `.await`, and never block (wait for a process, sleep) while holding it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use wsync_core::config::Config;
use wsync_core::protocol::WorkspaceStatus;
use wsync_core::registry::{Registry, Workspace};

use crate::supervisor::Supervisor;

/// Everything the daemon knows, guarded by one lock.
pub struct DaemonState {
    pub config: Config,
    pub registry: Registry,
    pub supervisor: Supervisor,
    pub started: Instant,
    /// Set once shutdown begins: nothing new is started after that.
    pub shutting_down: bool,
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

impl DaemonState {
    pub fn new(config: Config, registry: Registry, runtime_dir: PathBuf) -> Self {
        let supervisor = Supervisor::new(&config, runtime_dir);
        Self {
            config,
            registry,
            supervisor,
            started: Instant::now(),
            shutting_down: false,
        }
    }

    /// Starts the monitor of `workspace` if it should run (and we are not shutting down).
    pub fn ensure_monitor(&mut self, workspace: &Workspace, shared: &SharedState) {
        self.ensure_monitor_reporting(workspace, shared, Vec::new());
    }

    /// [`Self::ensure_monitor`], where a monitor started now reports rsync's progress during
    /// the initial sync of the remotes named in `progress` (someone waits for them).
    pub fn ensure_monitor_reporting(
        &mut self,
        workspace: &Workspace,
        shared: &SharedState,
        progress: Vec<String>,
    ) {
        if !self.shutting_down {
            self.supervisor.ensure_running(workspace, shared, progress);
        }
    }

    /// Starts a monitor for every workspace that should have one.
    pub fn start_all(&mut self, shared: &SharedState) {
        let workspaces = self.registry.workspaces.clone();
        for workspace in &workspaces {
            self.ensure_monitor(workspace, shared);
        }
    }

    /// The full status of one workspace.
    pub fn workspace_status(&self, workspace: &Workspace) -> WorkspaceStatus {
        let (monitor, report) = self.supervisor.status(workspace);
        WorkspaceStatus {
            workspace: workspace.clone(),
            monitor,
            report,
        }
    }
}
