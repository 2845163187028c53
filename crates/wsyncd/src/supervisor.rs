//! The supervisor: one slot per workspace holding its [`Supervision`] state machine (the monitor
//! process, if any, and its crash history), latest status report and pending flushes. All
//! methods run under the daemon's state lock and never block; stopping a monitor (which waits)
//! happens outside the lock on the [`RunningMonitor`] these methods hand out. The watchdog
//! thread calls [`Supervisor::watchdog_pass`]; monitors' stdout events arrive through
//! [`Supervisor::on_monitor_event`].
//!
//! Hangs, not only exits: each monitor's heartbeats are recorded, and one silent for
//! `MonitorUnresponsiveTimeoutMs` (after its first heartbeat) is SIGKILLed by the watchdog
//! pass and handled as a crash — restarted with backoff, counted against the restart limit —
//! and the hook fires; the pass hands the killed monitor back to be reaped outside the lock.
//!
//! A monitor should run for a workspace that has at least one remote and is not paused. Pausing
//! a workspace whose monitor runs keeps it running (it keeps collecting changes) and tells it
//! `Pause`; a paused workspace gets no monitor at startup.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wsync_core::config::Config;
use wsync_core::monitor_proto::{MonitorCommand, MonitorEvent, MonitorStatus, MonitorTunables};
use wsync_core::protocol::{EventKind, MonitorProcessState, SupervisorStatus};
use wsync_core::registry::Workspace;

use crate::hooks::Hooks;
use crate::monitor_proc::{LaunchSpec, RunningMonitor, SpawnError, StderrTail};
use crate::monitor_state::{MonitorEnd, MonitorState, Now, Supervision};
use crate::process;
use crate::restart_policy::{RestartPolicy, Verdict};
use crate::state::{EventSink, MonitorMessage};
use crate::subscribers::{status_changes, synced, Subscribers};

/// Whether `workspace` should have a monitor started for it.
pub fn should_run(workspace: &Workspace) -> bool {
    !workspace.remotes.is_empty() && !workspace.paused
}

#[derive(Debug, Default)]
struct Slot {
    supervision: Supervision<RunningMonitor>,
    /// The latest report of the running monitor (cleared when a new one starts).
    report: Option<MonitorStatus>,
    tail: StderrTail,
}

struct PendingFlush {
    workspace: String,
    generation: u64,
    reply: oneshot::Sender<Vec<String>>,
}

/// A detach the monitor has not confirmed yet ([`MonitorEvent::Detached`]).
struct PendingDetach {
    workspace: String,
    remote: String,
    generation: u64,
    reply: std::sync::mpsc::Sender<()>,
}

/// Every workspace's monitor.
pub struct Supervisor {
    slots: BTreeMap<String, Slot>,
    launch: LaunchSpec,
    pub policy: RestartPolicy,
    pub stop_grace: Duration,
    /// Heartbeat silence after which a monitor is killed and restarted.
    pub unresponsive_timeout: Duration,
    /// Where each spawned monitor's stdout reader delivers its events.
    events: EventSink,
    next_generation: u64,
    next_flush_id: u64,
    flushes: HashMap<u64, PendingFlush>,
    detaches: Vec<PendingDetach>,
    /// The notification hook (`HookCommand`), fired on state transitions.
    pub hooks: Hooks,
    /// The event stream's subscribers: every transition seen here is published to them.
    pub subscribers: Subscribers,
}

/// Why a flush cannot be started.
#[derive(Debug)]
pub enum FlushStart {
    /// Nothing to wait for (no remotes).
    Nothing,
    /// No monitor runs; the message says why.
    NotRunning(String),
    /// The workspace's monitor has not been started yet (the daemon's start-up checks of its
    /// entry are still running): worth asking again shortly.
    Starting,
    /// Sent as flush `id`; the monitor's answer arrives on the receiver.
    Waiting(u64, oneshot::Receiver<Vec<String>>),
}

impl Supervisor {
    /// Monitors' pipes are served by tasks on `runtime`.
    pub fn new(
        config: &Config,
        runtime_dir: std::path::PathBuf,
        events: EventSink,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            slots: BTreeMap::new(),
            launch: LaunchSpec {
                executable: LaunchSpec::find_executable(config.monitor_executable_path.as_ref()),
                log_dir: config.log_directory.clone(),
                runtime_dir,
                tunables: MonitorTunables {
                    settle_ms: config.tuning.settle.as_millis() as u64,
                    max_latency_ms: config.tuning.max_latency.as_millis() as u64,
                    proof_interval_ms: config.tuning.proof_interval.as_millis() as u64,
                    watch_mode: config.tuning.watch_mode,
                    poll_interval_ms: config.tuning.poll_interval.as_millis() as u64,
                    transport: config.tuning.transport,
                },
                runtime,
                pending_dir: config.pending_dir(),
            },
            policy: RestartPolicy::from_tuning(&config.tuning),
            stop_grace: config.tuning.monitor_stop_grace,
            unresponsive_timeout: config.tuning.monitor_unresponsive_timeout,
            events,
            next_generation: 0,
            next_flush_id: 0,
            flushes: HashMap::new(),
            detaches: Vec::new(),
            hooks: Hooks::new(config.hook_command.clone(), config.tuning.hook_timeout),
            subscribers: Subscribers::default(),
        }
    }

    /// Starts `workspace`'s monitor if it is stopped (not running, not waiting for a restart,
    /// not failed) and should run. A failed spawn counts as a crash (so the watchdog retries
    /// with backoff). `progress` names the remotes whose initial sync reports rsync's progress.
    pub fn start_if_stopped(&mut self, workspace: &Workspace, progress: Vec<String>) {
        let slot = self.slots.entry(workspace.name.clone()).or_default();
        if !slot.supervision.may_start() || !should_run(workspace) {
            return;
        }
        match self.spawn(workspace, progress) {
            Ok(monitor) => self.slot(&workspace.name).supervision.started(monitor),
            Err(e) => {
                tracing::error!(workspace = %workspace.name, "{e}");
                self.record_crash(
                    &workspace.name,
                    MonitorEnd::NotStarted(e),
                    Duration::ZERO,
                    Now::current(),
                );
            }
        }
    }

    /// Spawns a monitor with a fresh generation and stderr tail; the caller records it in the
    /// state machine.
    fn spawn(
        &mut self,
        workspace: &Workspace,
        progress: Vec<String>,
    ) -> Result<RunningMonitor, SpawnError> {
        self.next_generation += 1;
        let generation = self.next_generation;
        let tail = StderrTail::default();
        let monitor = RunningMonitor::spawn(
            &self.launch,
            workspace,
            progress,
            generation,
            self.events.clone(),
            tail.clone(),
        )?;
        tracing::info!(workspace = %workspace.name, pid = monitor.pid, "monitor started");
        self.publish_monitor(&workspace.name, MonitorProcessState::Running, None);
        let slot = self.slot(&workspace.name);
        slot.tail = tail;
        slot.report = None;
        Ok(monitor)
    }

    /// The watch mode `workspace`'s monitor is started with (its own, else the config's).
    pub fn watch_mode_of(&self, workspace: &Workspace) -> wsync_core::monitor_proto::WatchMode {
        workspace.tuning.apply(&self.launch.tunables).watch_mode
    }

    fn slot(&mut self, workspace: &str) -> &mut Slot {
        self.slots.entry(workspace.to_owned()).or_default()
    }

    /// Sends `command` to the workspace's running monitor; false when none runs.
    pub fn send_to_running(&self, workspace: &str, command: MonitorCommand) -> bool {
        self.slots
            .get(workspace)
            .and_then(|s| s.supervision.running())
            .is_some_and(|m| m.send(command))
    }

    /// Sends a detach of `remote` to the workspace's running monitor; the receiver gets `()`
    /// once the monitor confirms nothing more is written there (its sender dropped: the
    /// monitor ended, and its rsyncs with it). `None` when no monitor runs: nothing writes.
    pub fn begin_detach(
        &mut self,
        workspace: &str,
        remote: &str,
    ) -> Option<std::sync::mpsc::Receiver<()>> {
        let monitor = self.slots.get(workspace)?.supervision.running()?;
        let generation = monitor.generation;
        if !monitor.send(MonitorCommand::Detach {
            remote: remote.to_owned(),
        }) {
            return None;
        }
        let (reply, rx) = std::sync::mpsc::channel();
        self.detaches.push(PendingDetach {
            workspace: workspace.to_owned(),
            remote: remote.to_owned(),
            generation,
            reply,
        });
        Some(rx)
    }

    /// Takes the running monitor out so the caller can stop it outside the lock; a scheduled
    /// restart is cancelled.
    pub fn take_running(&mut self, workspace: &str) -> Option<RunningMonitor> {
        let monitor = self.slots.get_mut(workspace)?.supervision.take_running()?;
        self.drop_flushes(monitor.generation);
        Some(monitor)
    }

    /// Forgets a removed workspace; returns its monitor to stop.
    pub fn remove(&mut self, workspace: &str) -> Option<RunningMonitor> {
        let monitor = self.take_running(workspace);
        self.slots.remove(workspace);
        self.hooks.forget(workspace);
        monitor
    }

    /// Takes every running monitor (daemon shutdown).
    pub fn take_all(&mut self) -> Vec<RunningMonitor> {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        names.iter().filter_map(|n| self.take_running(n)).collect()
    }

    /// Marks a workspace whose registry entry breaks a rule as failed with `why`, so it is
    /// not started and `wsync status` shows the reason (see [`MonitorEnd::Refused`]).
    pub fn refuse(&mut self, workspace: &str, why: String) {
        tracing::error!(workspace, "monitor not started: {why}");
        self.slot(workspace).supervision.refused(why);
    }

    /// Clears a failed state and the crash count (`wsync restart`).
    pub fn reset(&mut self, workspace: &str) {
        if let Some(slot) = self.slots.get_mut(workspace) {
            slot.supervision.reset();
        }
    }

    /// Process groups of every running monitor (the watchdog's last resort).
    pub fn running_pids(&self) -> Vec<u32> {
        self.slots
            .values()
            .filter_map(|s| s.supervision.running().map(|m| m.pid))
            .collect()
    }

    /// Registers a flush and sends it to the running monitor.
    pub fn begin_flush(&mut self, workspace: &Workspace, timeout_ms: u64) -> FlushStart {
        if workspace.remotes.is_empty() {
            return FlushStart::Nothing;
        }
        let Some(slot) = self.slots.get(&workspace.name) else {
            // Every registered workspace gets a slot once its start-up check is done.
            return FlushStart::Starting;
        };
        let Some(monitor) = slot.supervision.running() else {
            let why = match slot.supervision.state() {
                MonitorState::Failed => format!(
                    "its monitor failed ({}); fix the cause, then run `wsync restart {}`",
                    slot.supervision
                        .last_exit()
                        .map_or_else(|| "unknown exit".to_owned(), ToString::to_string),
                    workspace.name
                ),
                MonitorState::BackingOff { .. } => {
                    "its monitor crashed and is waiting to be restarted; try again shortly".into()
                }
                _ if workspace.paused => {
                    format!("it is paused; run `wsync resume {}` first", workspace.name)
                }
                _ => "its monitor is not running".into(),
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

    /// Applies an event read from a monitor's stdout. A status from a monitor that has been
    /// replaced (an older generation) is ignored.
    pub fn on_monitor_event(&mut self, message: MonitorMessage) {
        let MonitorMessage {
            workspace,
            generation,
            event,
        } = message;
        match event {
            MonitorEvent::Status { status } => {
                if let Some(slot) = self.slots.get_mut(&workspace) {
                    if slot
                        .supervision
                        .running()
                        .is_some_and(|m| m.generation == generation)
                    {
                        self.hooks.on_status(&workspace, &status);
                        let changes = status_changes(slot.report.as_ref(), &status);
                        self.subscribers.publish_all(&workspace, changes);
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
            MonitorEvent::Synced { remote, batch } => {
                if self.slots.get(&workspace).is_some_and(|slot| {
                    slot.supervision
                        .running()
                        .is_some_and(|m| m.generation == generation)
                }) {
                    self.subscribers
                        .publish_all(&workspace, vec![synced(remote, batch)]);
                }
            }
            MonitorEvent::Detached { remote } => {
                let (confirmed, waiting) = std::mem::take(&mut self.detaches)
                    .into_iter()
                    .partition(|d| {
                        d.workspace == workspace && d.remote == remote && d.generation == generation
                    });
                self.detaches = waiting;
                for pending in confirmed {
                    let _ = pending.reply.send(());
                }
            }
            MonitorEvent::Heartbeat => {
                if let Some(slot) = self.slots.get_mut(&workspace) {
                    if slot
                        .supervision
                        .running()
                        .is_some_and(|m| m.generation == generation)
                    {
                        slot.supervision.heartbeat(Instant::now());
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
        self.detaches.retain(|d| d.generation != generation);
    }

    /// The supervisor's view of one workspace, and the monitor's latest report.
    pub fn status(&self, workspace: &Workspace) -> (SupervisorStatus, Option<MonitorStatus>) {
        let empty = Slot::default();
        let slot = self.slots.get(&workspace.name).unwrap_or(&empty);
        let supervision = &slot.supervision;
        let last_log_lines = if supervision.is_failed() {
            slot.tail
                .lock()
                .map(|t| t.iter().cloned().collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let status = SupervisorStatus {
            state: supervision.process_state(workspace, Instant::now()),
            pid: supervision.running().map(|m| m.pid),
            restarts: supervision.restarts(),
            last_exit: supervision.last_exit().map(ToString::to_string),
            last_log_lines,
            next_restart_unix_ms: supervision.next_restart_unix_ms(),
        };
        (status, slot.report.clone())
    }

    /// One watchdog pass: reap monitors that exited on their own, kill those silent for
    /// [`Self::unresponsive_timeout`], record either as a crash, and start those whose backoff
    /// has passed. `workspaces` is the registry's current list. Returns the monitors killed
    /// for silence: the caller reaps them with the lock released ([`RunningMonitor::kill`]).
    #[must_use = "killed monitors must be reaped"]
    pub fn watchdog_pass(&mut self, workspaces: &[Workspace], now: Now) -> Vec<RunningMonitor> {
        let mut killed = Vec::new();
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in &names {
            let Some(slot) = self.slots.get_mut(name) else {
                continue;
            };
            let silent = slot
                .supervision
                .silent_for(now.instant)
                .filter(|silent| *silent >= self.unresponsive_timeout);
            let end = match slot.supervision.running_mut().and_then(|m| m.try_reap()) {
                Some(exit) => MonitorEnd::Exited(exit),
                None => match silent {
                    Some(silent) => MonitorEnd::Unresponsive(silent),
                    None => continue,
                },
            };
            let Some(monitor) = slot.supervision.take_running() else {
                continue;
            };
            let up_for = now.instant.saturating_duration_since(monitor.started);
            self.drop_flushes(monitor.generation);
            if let MonitorEnd::Unresponsive(silent) = end {
                // SIGKILL does not wait: the reaping does, outside the lock.
                process::kill_group(monitor.pid);
                tracing::warn!(
                    workspace = %name,
                    pid = monitor.pid,
                    "monitor sent no heartbeat for {silent:?} (its event loop is stuck); killed it"
                );
                self.hooks.on_unresponsive(name, silent);
                self.subscribers.publish(
                    Some(name),
                    EventKind::Monitor {
                        state: MonitorProcessState::Unresponsive,
                        detail: Some(format!("no heartbeat for {} s; killed", silent.as_secs())),
                    },
                );
                killed.push(monitor);
            }
            self.record_crash(name, end, up_for, now);
        }
        for workspace in workspaces {
            let Some(slot) = self.slots.get_mut(&workspace.name) else {
                continue;
            };
            let Some(attempt) = slot.supervision.take_due_restart(now.instant) else {
                continue;
            };
            // Paused or emptied while backing off: it stays stopped.
            if !should_run(workspace) {
                continue;
            }
            let last_exit = slot
                .supervision
                .last_exit()
                .map(ToString::to_string)
                .unwrap_or_default();
            // A watchdog restart: nobody waits for it, so no progress.
            match self.spawn(workspace, Vec::new()) {
                Ok(monitor) => {
                    let pid = monitor.pid;
                    self.slot(&workspace.name).supervision.restarted(monitor);
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
                    self.record_crash(
                        &workspace.name,
                        MonitorEnd::NotStarted(e),
                        Duration::ZERO,
                        now,
                    );
                }
            }
        }
        killed
    }

    /// Applies the restart policy to a crash: schedule a restart or mark the workspace failed.
    fn record_crash(&mut self, workspace: &str, end: MonitorEnd, up_for: Duration, now: Now) {
        let policy = self.policy;
        let exit = end.to_string();
        let slot = self.slots.entry(workspace.to_owned()).or_default();
        match slot.supervision.crashed(end, up_for, now, &policy) {
            Verdict::Restart { attempt, delay } => {
                tracing::warn!(
                    workspace,
                    attempt,
                    limit = policy.limit,
                    "monitor exited unexpectedly ({exit}) after {up_for:?}; restart attempt {attempt} of {} in {delay:?}",
                    policy.limit
                );
                self.publish_monitor(workspace, MonitorProcessState::BackingOff, Some(exit));
            }
            Verdict::GiveUp { crashes } => {
                tracing::error!(
                    workspace,
                    crashes,
                    "monitor exited unexpectedly ({exit}); it crashed {crashes} times within {:?}, marking the workspace failed until `wsync restart {workspace}`",
                    policy.window
                );
                self.hooks.on_failed(workspace, &exit);
                self.publish_monitor(workspace, MonitorProcessState::Failed, Some(exit));
            }
        }
    }

    fn publish_monitor(
        &mut self,
        workspace: &str,
        state: MonitorProcessState,
        detail: Option<String>,
    ) {
        self.subscribers
            .publish(Some(workspace), EventKind::Monitor { state, detail });
    }
}
