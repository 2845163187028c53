//! The sync engine: one event loop that owns every remote's dirty set and state and reacts to
//! commands, watcher messages, batch results and timers. Change intake is in `intake.rs`,
//! batches in flight in `flights.rs`, the safety rails in `safety.rs`, control commands in
//! `control.rs`, status and flush bookkeeping in `status.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use wsync_core::monitor_proto::{MonitorCommand, MonitorEvent, MonitorStatus, MonitorTunables};
use wsync_core::registry::Remote;
use wsync_core::rsync::ExitClass;

use crate::flights::{InFlight, WorkerMsg};
use crate::queue::DirtySet;
use crate::safety::current_root_id;
use crate::status::PendingFlush;
use crate::watch::{Change, WatchMsg, Watcher};
use crate::worker::Destination;

/// How long a newly created directory counts as still filling (see `Engine::fresh_dirs`).
pub const FRESH_DIR_WINDOW: Duration = Duration::from_secs(1);

/// How often a workspace without working watches runs a full sync instead.
pub const DEGRADED_FULL_SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// One remote's queue and state.
pub(crate) struct Slot {
    pub dest: std::sync::Arc<Destination>,
    pub generation: u64,
    pub dirty: DirtySet,
    /// The rsync whose transfer is running (at most one per remote).
    pub in_flight: Option<InFlight>,
    /// rsyncs whose transfer is complete, still in their exit handshake; the next batch does not
    /// wait for them, their exit status confirms (or, rarely, retracts) the sync.
    pub finishing: Vec<InFlight>,
    pub(crate) next_flight: u64,
    pub initial_done: bool,
    /// The user confirmed a safety halt (resume): the next full sync may delete without cap.
    pub confirmed: bool,
    /// The lowest sequence number of a change in `dirty` (`None` when it is empty): a flush
    /// target at or above it is not reached whatever `synced_seq` says.
    pub dirty_floor: Option<u64>,
    /// A halt for a missing or replaced root was lifted: the next full sync is dry-run first
    /// and halts, deleting nothing, past the `--max-delete` cap.
    pub precheck: bool,
    /// Every change with a sequence number up to this one is on the remote.
    pub synced_seq: u64,
    pub failures: u32,
    pub retry_at: Option<Instant>,
    pub retry_unix_ms: Option<u64>,
    pub last_class: Option<ExitClass>,
    pub last_error: Option<String>,
    pub last_sync_unix_ms: Option<u64>,
    pub files_sent: u64,
    pub bytes_sent: u64,
    /// Report rsync's progress on the next full sync (someone waits for the initial sync);
    /// cleared when that full sync ends.
    pub report_progress: bool,
}

impl Slot {
    /// Abandons every running rsync (they are killed); their changes count as dirty again.
    pub fn abort_all(&mut self) {
        let flights = self
            .in_flight
            .take()
            .into_iter()
            .chain(self.finishing.drain(..));
        let mut floor = self.dirty_floor;
        for flight in flights {
            flight.handle.abort();
            floor = Some(floor.map_or(flight.floor, |f| f.min(flight.floor)));
        }
        self.dirty_floor = floor;
    }

    /// Changes down to `floor` are back in the dirty set (a failed or abandoned batch).
    pub fn lower_floor(&mut self, floor: u64) {
        self.dirty_floor = Some(self.dirty_floor.map_or(floor, |f| f.min(floor)));
    }
}

impl Slot {
    /// True when the remote holds every change numbered `seq` or lower.
    pub fn caught_up(&self, seq: u64) -> bool {
        // Nothing numbered `seq` or lower may still wait in the queue or in a running
        // transfer (a batch that failed after reporting its transfer done is back in the
        // queue, while a later batch may have raised `synced_seq` past it).
        let waiting = self.dirty_floor.is_some_and(|f| f <= seq)
            || self.in_flight.as_ref().is_some_and(|f| f.floor <= seq);
        !waiting && self.caught_up_by_seq(seq)
    }

    fn caught_up_by_seq(&self, seq: u64) -> bool {
        self.synced_seq >= seq
            || (self.initial_done
                && self.dirty.is_empty()
                && self.in_flight.is_none()
                && self.failures == 0)
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown command, EOF on stdin, or a termination signal.
    Clean,
    /// The parent (daemon) went away.
    Orphaned,
}

pub struct Engine {
    pub(crate) root: PathBuf,
    pub(crate) workspace: String,
    pub(crate) tunables: MonitorTunables,
    pub(crate) runtime_dir: PathBuf,
    pub(crate) slots: Vec<(String, Slot)>,
    pub(crate) seq: u64,
    pub(crate) paused: bool,
    pub(crate) halted: Option<String>,
    /// `--max-delete` cap for full syncs.
    pub max_delete: u64,
    /// The rsync rules for the excluded entries (kept by the watcher).
    pub(crate) rules_file: Option<PathBuf>,
    /// The workspace's registry patterns and gitignore switch, for the protect rules that keep
    /// remote-only excluded paths from being deleted (`excludes::protect_patterns`).
    pub(crate) protect_source: (Vec<String>, bool),
    /// Whether lifting the current halt confirms the deletions it stopped.
    pub(crate) halt_confirms: bool,
    pub(crate) overflows: u64,
    pub(crate) rescans: u64,
    pub(crate) watch_error: Option<String>,
    pub(crate) watcher: Option<Watcher>,
    pub(crate) flushes: Vec<PendingFlush>,
    pub(crate) events: UnboundedSender<MonitorEvent>,
    pub(crate) last_status: Option<MonitorStatus>,
    pub(crate) last_emit: Option<Instant>,
    pub(crate) next_degraded_sync: Option<Instant>,
    /// Device and inode of the root the watches were set up on.
    pub(crate) root_id: Option<(u64, u64)>,
    /// `seq` when the dirty floors were last noted (see `Engine::note_floors`).
    pub(crate) floor_seq: u64,
    next_generation: u64,
    /// Directories created in the last [`FRESH_DIR_WINDOW`]: changes below them queue the
    /// directory itself (one recursive entry instead of thousands of paths while it fills).
    pub(crate) fresh_dirs: HashMap<PathBuf, Instant>,
    /// A MOVED_FROM waiting for its MOVED_TO (they arrive back to back).
    pub(crate) pending_move: Option<(u32, Change)>,
    pub(crate) done_tx: UnboundedSender<WorkerMsg>,
    done_rx: Option<UnboundedReceiver<WorkerMsg>>,
    parent: nix::unistd::Pid,
}

pub(crate) use wsync_core::unix_ms;

impl Engine {
    pub fn new(
        root: PathBuf,
        workspace: String,
        tunables: MonitorTunables,
        runtime_dir: PathBuf,
        events: UnboundedSender<MonitorEvent>,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            root,
            workspace,
            tunables,
            runtime_dir,
            slots: Vec::new(),
            seq: 0,
            paused: false,
            halted: None,
            max_delete: wsync_core::rsync::DEFAULT_MAX_DELETE,
            halt_confirms: false,
            rules_file: None,
            protect_source: (Vec::new(), true),
            overflows: 0,
            rescans: 0,
            watch_error: None,
            watcher: None,
            flushes: Vec::new(),
            events,
            last_status: None,
            last_emit: None,
            next_degraded_sync: None,
            root_id: None,
            floor_seq: 0,
            next_generation: 0,
            fresh_dirs: HashMap::new(),
            pending_move: None,
            done_tx,
            done_rx: Some(done_rx),
            parent: nix::unistd::getppid(),
        }
    }

    /// Adds a remote; its first batch is a full sync (which creates the target directory),
    /// reporting rsync's progress when `progress` is set.
    pub(crate) fn add_remote(&mut self, remote: Remote, progress: bool) {
        if self.slots.iter().any(|(name, _)| *name == remote.name) {
            tracing::warn!(remote = %remote.name, "attach ignored: a remote of that name is attached");
            return;
        }
        let dest = Destination::new(remote, &self.runtime_dir, &self.workspace);
        let mut last_error = None;
        if let Err(e) = dest.prepare() {
            tracing::warn!(remote = %dest.remote.name, "cannot create target directory: {e}");
            last_error = Some(format!("cannot create target directory: {e}"));
        }
        self.next_generation += 1;
        self.seq += 1;
        let mut dirty = DirtySet::default();
        dirty.mark_full(Instant::now());
        tracing::info!(remote = %dest.remote.name, target = %dest.remote.target, "remote attached");
        self.slots.push((
            dest.remote.name.clone(),
            Slot {
                dest: std::sync::Arc::new(dest),
                generation: self.next_generation,
                dirty,
                in_flight: None,
                finishing: Vec::new(),
                next_flight: 0,
                initial_done: false,
                confirmed: false,
                dirty_floor: None,
                precheck: false,
                synced_seq: 0,
                failures: 0,
                retry_at: None,
                retry_unix_ms: None,
                last_class: None,
                last_error,
                last_sync_unix_ms: None,
                files_sent: 0,
                bytes_sent: 0,
                report_progress: progress,
            },
        ));
    }

    /// Gives each newly non-empty dirty set its floor: every change added since the last call
    /// is numbered above `floor_seq` then (a conservative bound: at worst a flush waits for a
    /// change made just after it). Called before every dispatch.
    pub(crate) fn note_floors(&mut self) {
        for (_, slot) in &mut self.slots {
            if slot.dirty.is_empty() {
                slot.dirty_floor = None;
            } else if slot.dirty_floor.is_none() {
                slot.dirty_floor = Some(self.floor_seq + 1);
            }
        }
        self.floor_seq = self.seq;
    }

    /// Marks every remote for a full sync.
    pub(crate) fn mark_all_full(&mut self) {
        self.seq += 1;
        let now = Instant::now();
        for (_, slot) in &mut self.slots {
            slot.dirty.mark_full(now);
        }
    }

    /// Runs until shutdown. `commands` yields `None` at EOF on stdin.
    pub async fn run(
        mut self,
        mut watch_rx: UnboundedReceiver<WatchMsg>,
        mut commands: UnboundedReceiver<MonitorCommand>,
    ) -> Exit {
        let mut done_rx = self.done_rx.take().expect("run is called once");
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        // After a Shutdown command: no new batches; exit once the transfers under way finish.
        // The daemon sends SIGTERM when its grace period runs out, which abandons them.
        let mut draining = false;
        let mut commands_open = true;
        let exit = loop {
            if nix::unistd::getppid() != self.parent {
                tracing::warn!("parent process is gone; exiting");
                break Exit::Orphaned;
            }
            let now = Instant::now();
            self.note_floors();
            self.periodic(now);
            if draining {
                if self.slots.iter().all(|(_, slot)| slot.in_flight.is_none()) {
                    tracing::info!("current transfers finished; exiting");
                    break Exit::Clean;
                }
            } else {
                self.dispatch(now);
            }
            self.check_flushes(now);
            self.emit_status(now, false);
            if self.events.is_closed() {
                tracing::warn!("stdout closed; exiting");
                break Exit::Orphaned;
            }
            let wake = self.next_wake(now);
            tokio::select! {
                // Commands first: a pause sent before a change should apply before it.
                biased;
                cmd = commands.recv(), if commands_open => match cmd {
                    Some(MonitorCommand::Shutdown) => {
                        tracing::info!("shutdown requested: finishing the transfers under way");
                        draining = true;
                    }
                    Some(cmd) => self.on_command(cmd),
                    // EOF after a Shutdown is the daemon stopping us gracefully; EOF alone means
                    // the daemon is gone.
                    None if draining => commands_open = false,
                    None => {
                        tracing::info!("control channel closed (EOF); exiting");
                        break Exit::Clean;
                    }
                },
                Some(()) = recv_signal(&mut terminate) => break Exit::Clean,
                Some(()) = recv_signal(&mut interrupt) => break Exit::Clean,
                Some(msg) = done_rx.recv() => match msg {
                    WorkerMsg::Transferred { name, generation, flight } => {
                        self.on_transferred(&name, generation, flight);
                    }
                    WorkerMsg::Done(done) => self.on_done(done),
                    WorkerMsg::Progress { name, generation, flight, progress } => {
                        self.on_progress(&name, generation, flight, progress);
                    }
                },
                msg = watch_rx.recv() => match msg {
                    Some(msg) => {
                        self.on_watch(msg);
                        while let Ok(msg) = watch_rx.try_recv() {
                            self.on_watch(msg);
                        }
                        // Both halves of a rename come in one read; a lone half is a move
                        // into or out of the workspace.
                        self.flush_pending_move(Instant::now());
                    }
                    None => {
                        self.on_watch(WatchMsg::Error("the watcher thread stopped".into()));
                        watch_rx = mpsc::unbounded_channel().1;
                    }
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        };
        self.shutdown().await;
        exit
    }

    async fn shutdown(&mut self) {
        for (_, slot) in &mut self.slots {
            slot.abort_all();
        }
        let flushes = std::mem::take(&mut self.flushes);
        for flush in flushes {
            flush.remove_cookie(&self.root);
        }
        self.emit_status(Instant::now(), true);
        if let Some(watcher) = &self.watcher {
            watcher.remove_rules_file();
        }
        let dests: Vec<_> = self.slots.iter().map(|(_, s)| s.dest.clone()).collect();
        for dest in dests {
            dest.close_connection().await;
        }
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + Duration::from_secs(1);
        let active = !self.paused && self.halted.is_none();
        for (_, slot) in &self.slots {
            if !active || slot.in_flight.is_some() {
                continue;
            }
            let due = match slot.retry_at {
                Some(at) if at > now => Some(at),
                _ => slot
                    .dirty
                    .due_at(self.tunables.settle(), self.tunables.max_latency()),
            };
            if let Some(due) = due {
                wake = wake.min(due);
            }
        }
        for flush in &self.flushes {
            wake = wake.min(flush.deadline);
        }
        if let Some(at) = self.next_status_at() {
            wake = wake.min(at);
        }
        if let Some(at) = self.next_degraded_sync {
            wake = wake.min(at);
        }
        wake.max(now)
    }

    fn periodic(&mut self, now: Instant) {
        if let Some(at) = self.next_degraded_sync {
            if now >= at {
                self.mark_all_full();
                self.next_degraded_sync = Some(now + DEGRADED_FULL_SYNC_INTERVAL);
            }
        }
    }

    fn on_watch(&mut self, msg: WatchMsg) {
        let now = Instant::now();
        match msg {
            WatchMsg::Changes(changes) => self.on_changes(changes, now),
            WatchMsg::Cookie(name) => self.on_cookie(&name),
            WatchMsg::Overflow => {
                self.overflows += 1;
                self.rescans += 1;
                self.mark_all_full();
                self.cookies_lost();
            }
            // A root moved away and back again is the same directory: not a reason to halt.
            WatchMsg::RootGone
                if self.root_id.is_some() && current_root_id(&self.root) == self.root_id => {}
            WatchMsg::RootGone => {
                self.halt(format!(
                    "workspace root {} was deleted or moved away; nothing is synced or deleted until it is back and `wsync resume` is run",
                    self.root.display()
                ));
            }
            // Already halted (the root was deleted): its watch going is no news.
            WatchMsg::RootUnwatched if self.halted.is_some() => {}
            WatchMsg::RootUnwatched => {
                // Halts unless the root is still the same directory (then watch it again).
                if self.root_ok() {
                    tracing::warn!("the root's watch was dropped; watching the tree again");
                    if let Some(watcher) = &self.watcher {
                        if let Err(message) = watcher.rescan() {
                            self.on_watch(WatchMsg::Error(message));
                        }
                    }
                    self.rescans += 1;
                    self.mark_all_full();
                    self.cookies_lost();
                }
            }
            WatchMsg::Error(message) => {
                if self.watch_error.is_none() {
                    tracing::error!("watching degraded: {message}");
                    self.watch_error = Some(message);
                    self.next_degraded_sync = Some(now);
                }
            }
        }
    }

    /// The workspace root (for cookies).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
