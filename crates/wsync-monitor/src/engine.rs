//! The sync engine: one event loop that owns every remote's dirty set and state, feeds watcher
//! changes into them, starts at most one rsync per remote when its batch is due, and applies
//! each outcome (success, retry with backoff, full resync). Control commands are in
//! `control.rs`, status and flush bookkeeping in `status.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use wsync_core::monitor_proto::{MonitorCommand, MonitorEvent, MonitorStatus, MonitorTunables};
use wsync_core::registry::Remote;
use wsync_core::rsync::ExitClass;

use crate::queue::{Batch, DirtySet};
use crate::status::PendingFlush;
use crate::watch::{Change, ChangeKind, WatchMsg, Watcher};
use crate::worker::{backoff_delay, Destination, Outcome};

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
    next_flight: u64,
    pub initial_done: bool,
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
}

pub(crate) struct InFlight {
    pub id: u64,
    pub seq: u64,
    /// `synced_seq` before this batch, restored if it fails after reporting its transfer done.
    pub prev_synced: u64,
    pub len: usize,
    pub full: bool,
    pub handle: JoinHandle<()>,
}

impl Slot {
    /// Abandons every running rsync (they are killed).
    pub fn abort_all(&mut self) {
        if let Some(flight) = self.in_flight.take() {
            flight.handle.abort();
        }
        for flight in self.finishing.drain(..) {
            flight.handle.abort();
        }
    }
}

impl Slot {
    /// True when the remote holds every change numbered `seq` or lower.
    pub fn caught_up(&self, seq: u64) -> bool {
        self.synced_seq >= seq
            || (self.initial_done
                && self.dirty.is_empty()
                && self.in_flight.is_none()
                && self.failures == 0)
    }
}

/// A finished rsync, sent back by the batch task.
pub(crate) struct Done {
    pub name: String,
    pub generation: u64,
    pub flight: u64,
    pub batch: Batch,
    pub outcome: Outcome,
}

/// Messages from batch tasks to the loop.
pub(crate) enum WorkerMsg {
    /// The transfer is complete (rsync is in its exit handshake).
    Transferred {
        name: String,
        generation: u64,
        flight: u64,
    },
    Done(Done),
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
    next_generation: u64,
    /// Directories created in the last [`FRESH_DIR_WINDOW`]: changes below them queue the
    /// directory itself (one recursive entry instead of thousands of paths while it fills).
    fresh_dirs: HashMap<PathBuf, Instant>,
    done_tx: UnboundedSender<WorkerMsg>,
    done_rx: Option<UnboundedReceiver<WorkerMsg>>,
    parent: nix::unistd::Pid,
}

pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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
            next_generation: 0,
            fresh_dirs: HashMap::new(),
            done_tx,
            done_rx: Some(done_rx),
            parent: nix::unistd::getppid(),
        }
    }

    /// Adds a remote; its first batch is a full sync (which creates the target directory).
    pub(crate) fn add_remote(&mut self, remote: Remote) {
        if self.slots.iter().any(|(name, _)| *name == remote.name) {
            tracing::warn!(remote = %remote.name, "attach ignored: a remote of that name is attached");
            return;
        }
        let dest = Destination::new(remote, &self.runtime_dir);
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
                synced_seq: 0,
                failures: 0,
                retry_at: None,
                retry_unix_ms: None,
                last_class: None,
                last_error,
                last_sync_unix_ms: None,
                files_sent: 0,
                bytes_sent: 0,
            },
        ));
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
        let exit = loop {
            if nix::unistd::getppid() != self.parent {
                tracing::warn!("parent process is gone; exiting");
                break Exit::Orphaned;
            }
            let now = Instant::now();
            self.periodic(now);
            self.dispatch(now);
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
                cmd = commands.recv() => match cmd {
                    Some(MonitorCommand::Shutdown) => {
                        tracing::info!("shutdown requested");
                        break Exit::Clean;
                    }
                    Some(cmd) => self.on_command(cmd),
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
                },
                msg = watch_rx.recv() => match msg {
                    Some(msg) => {
                        self.on_watch(msg);
                        while let Ok(msg) = watch_rx.try_recv() {
                            self.on_watch(msg);
                        }
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

    /// True when the root is the directory the watches were set up on; otherwise halts (never
    /// sync, above all never `--delete`, from a missing or replaced root).
    fn root_ok(&mut self) -> bool {
        match (current_root_id(&self.root), self.root_id) {
            (Some(now), Some(then)) if now == then => true,
            (Some(_), None) => true,
            (Some(_), Some(_)) => {
                self.halt(format!(
                    "workspace root {} was replaced by another directory (a mount went away or it was recreated); nothing is synced or deleted until `wsync resume` confirms it",
                    self.root.display()
                ));
                false
            }
            (None, _) => {
                self.halt(format!(
                    "workspace root {} is missing or not a directory; nothing is synced or deleted until it is back and `wsync resume` is run",
                    self.root.display()
                ));
                false
            }
        }
    }

    pub(crate) fn halt(&mut self, reason: String) {
        if self.halted.is_none() {
            tracing::error!("halted: {reason}");
        }
        self.halted = Some(reason);
        let now = Instant::now();
        for (_, slot) in &mut self.slots {
            if slot.in_flight.is_some() || !slot.finishing.is_empty() {
                slot.abort_all();
                slot.dirty.mark_full(now);
            }
        }
    }

    fn dispatch(&mut self, now: Instant) {
        if self.paused || self.halted.is_some() {
            return;
        }
        let settle = self.tunables.settle();
        let cap = self.tunables.max_latency();
        let ready: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                let slot = &self.slots[i].1;
                slot.in_flight.is_none()
                    && slot.retry_at.is_none_or(|at| at <= now)
                    && slot
                        .dirty
                        .due_at(settle, cap)
                        .is_some_and(|due| due <= now || slot.retry_at.is_some())
            })
            .collect();
        if ready.is_empty() || !self.root_ok() {
            return;
        }
        for i in ready {
            let seq = self.seq;
            let (name, slot) = &mut self.slots[i];
            let Some(batch) = slot.dirty.take() else {
                continue;
            };
            slot.retry_at = None;
            let first = !slot.initial_done;
            let (dest, root, tx) = (slot.dest.clone(), self.root.clone(), self.done_tx.clone());
            let (name, generation) = (name.clone(), slot.generation);
            slot.next_flight += 1;
            let flight = slot.next_flight;
            let len = batch.path_count();
            let batch_full = batch == Batch::Full;
            let handle = tokio::spawn(async move {
                let early = (tx.clone(), name.clone());
                let transferred = move || {
                    let (tx, name) = early;
                    let _ = tx.send(WorkerMsg::Transferred {
                        name,
                        generation,
                        flight,
                    });
                };
                let outcome = dest.sync(&root, &batch, first, transferred).await;
                let _ = tx.send(WorkerMsg::Done(Done {
                    name,
                    generation,
                    flight,
                    batch,
                    outcome,
                }));
            });
            slot.in_flight = Some(InFlight {
                id: flight,
                seq,
                prev_synced: slot.synced_seq,
                len,
                full: batch_full,
                handle,
            });
        }
    }

    fn slot_mut(&mut self, name: &str, generation: u64) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|(n, s)| n == name && s.generation == generation)
            .map(|(_, slot)| slot)
    }

    /// The transfer of a batch is complete: count it as synced (its exit status confirms
    /// later) and let the next batch start without waiting for rsync's exit handshake.
    fn on_transferred(&mut self, name: &str, generation: u64, flight: u64) {
        tracing::trace!(remote = name, flight, "transfer complete");
        let Some(slot) = self.slot_mut(name, generation) else {
            return;
        };
        if slot.in_flight.as_ref().is_none_or(|f| f.id != flight) {
            return;
        }
        let Some(flight) = slot.in_flight.take() else {
            return;
        };
        slot.synced_seq = slot.synced_seq.max(flight.seq);
        slot.initial_done |= flight.full;
        slot.failures = 0;
        slot.retry_at = None;
        slot.retry_unix_ms = None;
        slot.last_error = None;
        slot.last_class = Some(ExitClass::Success);
        slot.last_sync_unix_ms = Some(unix_ms(SystemTime::now()));
        slot.finishing.push(flight);
    }

    fn on_done(&mut self, done: Done) {
        let now = Instant::now();
        let Some(slot) = self.slot_mut(&done.name, done.generation) else {
            return;
        };
        let flight = if slot.in_flight.as_ref().is_some_and(|f| f.id == done.flight) {
            slot.in_flight.take()
        } else {
            slot.finishing
                .iter()
                .position(|f| f.id == done.flight)
                .map(|i| slot.finishing.remove(i))
        };
        let Some(flight) = flight else {
            return;
        };
        tracing::trace!(remote = %done.name, flight = flight.id, "rsync exited");
        let Outcome {
            class,
            stats,
            error,
            elapsed,
        } = done.outcome;
        slot.last_class = Some(class);
        let full = done.batch == Batch::Full;
        match class {
            ExitClass::Success | ExitClass::Vanished => {
                slot.synced_seq = slot.synced_seq.max(flight.seq);
                slot.failures = 0;
                slot.retry_at = None;
                slot.retry_unix_ms = None;
                slot.last_error = None;
                slot.initial_done |= full;
                slot.files_sent += stats.files_transferred;
                slot.bytes_sent += stats.bytes_sent;
                slot.last_sync_unix_ms = Some(unix_ms(SystemTime::now()));
                tracing::info!(
                    remote = %done.name,
                    full,
                    paths = flight.len,
                    files = stats.files_transferred,
                    deleted = stats.files_deleted,
                    bytes = stats.bytes_sent,
                    ms = elapsed.as_millis() as u64,
                    "synced"
                );
            }
            _ => {
                slot.synced_seq = slot.synced_seq.min(flight.prev_synced);
                slot.dirty.restore(done.batch, now);
                slot.failures += 1;
                let delay = backoff_delay(slot.failures);
                slot.retry_at = Some(now + delay);
                slot.retry_unix_ms = Some(unix_ms(SystemTime::now() + delay));
                let message = error.unwrap_or_else(|| format!("rsync failed ({class:?})"));
                tracing::warn!(
                    remote = %done.name,
                    attempt = slot.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    ?class,
                    "sync failed: {message}"
                );
                slot.last_error = Some(message);
            }
        }
    }

    fn on_watch(&mut self, msg: WatchMsg) {
        let now = Instant::now();
        match msg {
            WatchMsg::Changes(changes) => {
                tracing::trace!(changes = changes.len(), "changes");
                for change in changes {
                    self.seq += 1;
                    let queued = self.queue_path(&change, now);
                    let open = match change.kind {
                        ChangeKind::Created => Some(!change.is_dir),
                        ChangeKind::Modified => Some(true),
                        ChangeKind::Deleted
                        | ChangeKind::MovedFrom { .. }
                        | ChangeKind::MovedTo { .. } => Some(false),
                        ChangeKind::Closed | ChangeKind::Attrib => None,
                    };
                    for (_, slot) in &mut self.slots {
                        slot.dirty.add(&queued, now);
                        if change.kind == ChangeKind::Closed {
                            slot.dirty.note_closed(&change.path);
                        } else if let Some(open) = open {
                            slot.dirty.note_write(&change.path, open);
                        }
                    }
                }
            }
            WatchMsg::Cookie(name) => self.on_cookie(&name),
            WatchMsg::Overflow => {
                self.overflows += 1;
                self.rescans += 1;
                self.mark_all_full();
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
            WatchMsg::Error(message) => {
                if self.watch_error.is_none() {
                    tracing::error!("watching degraded: {message}");
                    self.watch_error = Some(message);
                    self.next_degraded_sync = Some(now);
                }
            }
        }
    }

    /// The path to queue for a change: the change's own, or the newly created directory above
    /// it that is still filling (synced recursively, so one entry covers the whole burst).
    fn queue_path(&mut self, change: &Change, now: Instant) -> PathBuf {
        if self.fresh_dirs.len() > 1024 {
            self.fresh_dirs
                .retain(|_, at| now.duration_since(*at) < FRESH_DIR_WINDOW);
        }
        let fresh = |p: &Path, fresh_dirs: &HashMap<PathBuf, Instant>| {
            fresh_dirs
                .get(p)
                .is_some_and(|at| now.duration_since(*at) < FRESH_DIR_WINDOW)
        };
        let path = &change.path;
        // The topmost fresh ancestor wins (ancestors() runs bottom-up).
        if let Some(dir) = path
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty() && fresh(a, &self.fresh_dirs))
            .last()
        {
            return dir.to_path_buf();
        }
        match change.kind {
            ChangeKind::Created if change.is_dir => {
                self.fresh_dirs.insert(path.clone(), now);
            }
            ChangeKind::Deleted | ChangeKind::MovedFrom { .. } if change.is_dir => {
                self.fresh_dirs.remove(path);
            }
            _ => {}
        }
        path.clone()
    }

    /// The workspace root (for cookies).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
}

/// Device and inode of `root` when it is a directory.
pub(crate) fn current_root_id(root: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(root)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
