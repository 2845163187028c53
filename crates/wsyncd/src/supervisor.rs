//! The supervisor: one slot per workspace holding its monitor process (if any), crash history,
//! latest status report and pending flushes. All methods run under the daemon's state lock and
//! never block; stopping a monitor (which waits) happens outside the lock on the
//! [`RunningMonitor`] these methods hand out. The watchdog thread calls [`Supervisor::supervise`].
//!
//! A monitor should run for a workspace that has at least one remote and is not paused. Pausing
//! a workspace whose monitor runs keeps it running (it keeps collecting changes) and tells it
//! `Pause`; a paused workspace gets no monitor at startup.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;
use wsync_core::config::Config;
use wsync_core::monitor_proto::{MonitorCommand, MonitorEvent, MonitorStatus, MonitorTunables};
use wsync_core::protocol::{MonitorProcessState, SupervisorStatus};
use wsync_core::registry::Workspace;

use crate::hooks::Hooks;
use crate::monitor_proc::{LaunchSpec, RunningMonitor, StderrTail};
use crate::restart_policy::{CrashHistory, RestartPolicy, Verdict};
use crate::state::DaemonState;

/// Whether `workspace` should have a monitor started for it.
pub fn should_run(workspace: &Workspace) -> bool {
    !workspace.remotes.is_empty() && !workspace.paused
}

#[derive(Debug, Default)]
struct Slot {
    running: Option<RunningMonitor>,
    history: CrashHistory,
    restarts: u32,
    last_exit: Option<String>,
    failed: bool,
    next_restart: Option<(Instant, u64)>,
    pending_attempt: u32,
    report: Option<MonitorStatus>,
    tail: StderrTail,
}

struct PendingFlush {
    workspace: String,
    generation: u64,
    reply: oneshot::Sender<Vec<String>>,
}

/// Every workspace's monitor.
pub struct Supervisor {
    slots: BTreeMap<String, Slot>,
    launch: LaunchSpec,
    pub policy: RestartPolicy,
    pub stop_grace: Duration,
    next_generation: u64,
    next_flush_id: u64,
    flushes: HashMap<u64, PendingFlush>,
    /// The notification hook (`HookCommand`), fired on state transitions.
    pub hooks: Hooks,
}

/// Why a flush cannot be started.
#[derive(Debug)]
pub enum FlushStart {
    /// Nothing to wait for (no remotes).
    Nothing,
    /// No monitor runs; the message says why.
    NotRunning(String),
    /// Sent as flush `id`; the monitor's answer arrives on the receiver.
    Waiting(u64, oneshot::Receiver<Vec<String>>),
}

impl Supervisor {
    pub fn new(config: &Config, runtime_dir: std::path::PathBuf) -> Self {
        Self {
            slots: BTreeMap::new(),
            launch: LaunchSpec {
                executable: LaunchSpec::find_executable(config.monitor_executable_path.as_ref()),
                log_dir: config.log_directory.clone(),
                runtime_dir,
                tunables: MonitorTunables {
                    settle_ms: config.tuning.settle.as_millis() as u64,
                    max_latency_ms: config.tuning.max_latency.as_millis() as u64,
                },
            },
            policy: RestartPolicy::from_tuning(&config.tuning),
            stop_grace: config.tuning.monitor_stop_grace,
            next_generation: 0,
            next_flush_id: 0,
            flushes: HashMap::new(),
            hooks: Hooks::new(config.hook_command.clone()),
        }
    }

    /// Starts `workspace`'s monitor unless it runs, waits for a restart, is failed, or should
    /// not run. A failed spawn counts as a crash (so the watchdog retries with backoff).
    /// `progress` names the remotes whose initial sync reports rsync's progress.
    pub fn ensure_running(
        &mut self,
        workspace: &Workspace,
        state: &Arc<Mutex<DaemonState>>,
        progress: Vec<String>,
    ) {
        let slot = self.slots.entry(workspace.name.clone()).or_default();
        if slot.running.is_some()
            || slot.failed
            || slot.next_restart.is_some()
            || !should_run(workspace)
        {
            return;
        }
        if let Err(e) = self.spawn(workspace, state, progress) {
            tracing::error!(workspace = %workspace.name, "{e}");
            self.record_crash(&workspace.name, e, Duration::ZERO, Instant::now());
        }
    }

    fn spawn(
        &mut self,
        workspace: &Workspace,
        state: &Arc<Mutex<DaemonState>>,
        progress: Vec<String>,
    ) -> Result<u32, String> {
        self.next_generation += 1;
        let generation = self.next_generation;
        let tail = StderrTail::default();
        let monitor = RunningMonitor::spawn(
            &self.launch,
            workspace,
            progress,
            generation,
            Arc::downgrade(state),
            tail.clone(),
        )?;
        let pid = monitor.pid;
        tracing::info!(workspace = %workspace.name, pid, "monitor started");
        let slot = self.slots.entry(workspace.name.clone()).or_default();
        slot.running = Some(monitor);
        slot.tail = tail;
        slot.report = None;
        Ok(pid)
    }

    /// Sends `command` to the workspace's running monitor; false when none runs.
    pub fn send(&self, workspace: &str, command: MonitorCommand) -> bool {
        self.slots
            .get(workspace)
            .and_then(|s| s.running.as_ref())
            .is_some_and(|m| m.send(command))
    }

    /// Takes the running monitor out so the caller can stop it outside the lock.
    pub fn take(&mut self, workspace: &str) -> Option<RunningMonitor> {
        let slot = self.slots.get_mut(workspace)?;
        slot.next_restart = None;
        let monitor = slot.running.take()?;
        self.drop_flushes(monitor.generation);
        Some(monitor)
    }

    /// Forgets a removed workspace; returns its monitor to stop.
    pub fn remove(&mut self, workspace: &str) -> Option<RunningMonitor> {
        let monitor = self.take(workspace);
        self.slots.remove(workspace);
        self.hooks.forget(workspace);
        monitor
    }

    /// Takes every running monitor (daemon shutdown).
    pub fn take_all(&mut self) -> Vec<RunningMonitor> {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        names.iter().filter_map(|n| self.take(n)).collect()
    }

    /// Clears a failed state and the crash count (`wsync restart`).
    pub fn reset(&mut self, workspace: &str) {
        if let Some(slot) = self.slots.get_mut(workspace) {
            slot.failed = false;
            slot.history = CrashHistory::default();
            slot.restarts = 0;
            slot.last_exit = None;
            slot.next_restart = None;
        }
    }

    /// Process groups of every running monitor (the watchdog's last resort).
    pub fn running_pids(&self) -> Vec<u32> {
        self.slots
            .values()
            .filter_map(|s| s.running.as_ref().map(|m| m.pid))
            .collect()
    }

    /// Registers a flush and sends it to the running monitor.
    pub fn begin_flush(&mut self, workspace: &Workspace, timeout_ms: u64) -> FlushStart {
        if workspace.remotes.is_empty() {
            return FlushStart::Nothing;
        }
        let Some(slot) = self.slots.get(&workspace.name) else {
            return FlushStart::NotRunning("it has no monitor".into());
        };
        let Some(monitor) = slot.running.as_ref() else {
            let why = if slot.failed {
                format!(
                    "its monitor failed ({}); fix the cause, then run `wsync restart {}`",
                    slot.last_exit.as_deref().unwrap_or("unknown exit"),
                    workspace.name
                )
            } else if slot.next_restart.is_some() {
                "its monitor crashed and is waiting to be restarted; try again shortly".into()
            } else if workspace.paused {
                format!("it is paused; run `wsync resume {}` first", workspace.name)
            } else {
                "its monitor is not running".into()
            };
            return FlushStart::NotRunning(why);
        };
        self.next_flush_id += 1;
        let id = self.next_flush_id;
        let (tx, rx) = oneshot::channel();
        let generation = monitor.generation;
        if !monitor.send(MonitorCommand::Flush { id, timeout_ms }) {
            return FlushStart::NotRunning("its monitor is exiting".into());
        }
        self.flushes.insert(
            id,
            PendingFlush {
                workspace: workspace.name.clone(),
                generation,
                reply: tx,
            },
        );
        FlushStart::Waiting(id, rx)
    }

    /// Applies an event read from a monitor's stdout.
    pub fn on_monitor_event(&mut self, workspace: &str, generation: u64, event: MonitorEvent) {
        match event {
            MonitorEvent::Status { status } => {
                if let Some(slot) = self.slots.get_mut(workspace) {
                    if slot
                        .running
                        .as_ref()
                        .is_some_and(|m| m.generation == generation)
                    {
                        self.hooks.on_status(workspace, &status);
                        slot.report = Some(status);
                    }
                }
            }
            MonitorEvent::Flushed { id, lagging } => {
                if let Some(pending) = self.flushes.remove(&id) {
                    if pending.workspace == workspace {
                        let _ = pending.reply.send(lagging);
                    }
                }
            }
        }
    }

    /// Forgets a flush whose requester stopped waiting.
    pub fn cancel_flush(&mut self, id: u64) {
        self.flushes.remove(&id);
    }

    fn drop_flushes(&mut self, generation: u64) {
        self.flushes.retain(|_, f| f.generation != generation);
    }

    /// The supervisor's view of one workspace, and the monitor's latest report.
    pub fn status(&self, workspace: &Workspace) -> (SupervisorStatus, Option<MonitorStatus>) {
        let empty = Slot::default();
        let slot = self.slots.get(&workspace.name).unwrap_or(&empty);
        let state = if slot.failed {
            MonitorProcessState::Failed
        } else if slot.next_restart.is_some() {
            MonitorProcessState::BackingOff
        } else if workspace.remotes.is_empty() {
            MonitorProcessState::Idle
        } else if workspace.paused {
            MonitorProcessState::Paused
        } else if slot.running.is_some() {
            MonitorProcessState::Running
        } else {
            MonitorProcessState::Stopped
        };
        let last_log_lines = if slot.failed {
            slot.tail
                .lock()
                .map(|t| t.iter().cloned().collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let status = SupervisorStatus {
            state,
            pid: slot.running.as_ref().map(|m| m.pid),
            restarts: slot.restarts,
            last_exit: slot.last_exit.clone(),
            last_log_lines,
            next_restart_unix_ms: slot.next_restart.map(|(_, ms)| ms),
        };
        (status, slot.report.clone())
    }

    /// One watchdog pass: reap monitors that exited on their own, record the crash, and start
    /// those whose backoff has passed. `workspaces` is the registry's current list.
    pub fn supervise(
        &mut self,
        workspaces: &[Workspace],
        now: Instant,
        state: &Arc<Mutex<DaemonState>>,
    ) {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in &names {
            let Some(slot) = self.slots.get_mut(name) else {
                continue;
            };
            let Some(monitor) = slot.running.as_mut() else {
                continue;
            };
            let Some(exit) = monitor.try_reap() else {
                continue;
            };
            let (generation, up_for) = (monitor.generation, now.duration_since(monitor.started));
            slot.running = None;
            self.drop_flushes(generation);
            self.record_crash(name, exit.to_string(), up_for, now);
        }
        for workspace in workspaces {
            let Some(slot) = self.slots.get_mut(&workspace.name) else {
                continue;
            };
            match slot.next_restart {
                Some((at, _)) if at <= now => {}
                _ => continue,
            }
            slot.next_restart = None;
            if slot.running.is_some() || !should_run(workspace) {
                continue;
            }
            let attempt = slot.pending_attempt;
            let last_exit = slot.last_exit.clone().unwrap_or_default();
            // A watchdog restart: nobody waits for it, so no progress.
            match self.spawn(workspace, state, Vec::new()) {
                Ok(pid) => {
                    if let Some(slot) = self.slots.get_mut(&workspace.name) {
                        slot.restarts += 1;
                    }
                    tracing::warn!(
                        workspace = %workspace.name,
                        attempt,
                        limit = self.policy.limit,
                        pid,
                        "monitor restarted after it exited with {last_exit} (restart attempt {attempt})"
                    );
                }
                Err(e) => {
                    tracing::error!(workspace = %workspace.name, "{e}");
                    self.record_crash(&workspace.name, e, Duration::ZERO, now);
                }
            }
        }
    }

    /// Applies the restart policy to a crash: schedule a restart or mark the workspace failed.
    fn record_crash(&mut self, workspace: &str, exit: String, up_for: Duration, now: Instant) {
        let policy = self.policy;
        let slot = self.slots.entry(workspace.to_owned()).or_default();
        match policy.on_crash(&mut slot.history, now, up_for) {
            Verdict::Restart { attempt, delay } => {
                tracing::warn!(
                    workspace,
                    attempt,
                    limit = policy.limit,
                    "monitor exited unexpectedly ({exit}) after {up_for:?}; restart attempt {attempt} of {} in {delay:?}",
                    policy.limit
                );
                slot.next_restart = Some((now + delay, unix_ms_after(delay)));
                slot.pending_attempt = attempt;
            }
            Verdict::GiveUp { crashes } => {
                tracing::error!(
                    workspace,
                    crashes,
                    "monitor exited unexpectedly ({exit}); it crashed {crashes} times within {:?}, marking the workspace failed until `wsync restart {workspace}`",
                    policy.window
                );
                slot.failed = true;
                slot.next_restart = None;
                self.hooks.on_failed(workspace, &exit);
            }
        }
        slot.last_exit = Some(exit);
    }
}

fn unix_ms_after(delay: Duration) -> u64 {
    wsync_core::unix_ms(SystemTime::now() + delay)
}
