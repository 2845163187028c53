//! The sync engine as a state machine. Everything the monitor reacts to arrives as an
//! [`Input`] (watcher messages, control commands, batch results, probe answers, timers);
//! [`Engine::step`] decides synchronously — no I/O, no runtime — and returns [`Effect`]s
//! (start or abandon a batch, emit a status line, create or remove a cookie, probe the root,
//! rescan, close an ssh master, exit), which the [`driver`] carries out, feeding any answer
//! back as another input.
//!
//! State lives in private sub-structs that own their rules: each remote's [`slot`] (dirty set,
//! batches in flight, health and backoff, delete policy, counters), the change [`intake`]
//! (fresh directories, a pending move), the pending [`flushes`], and the [`halt`] with the
//! delete policy lifting it grants. Change numbers ([`Seq`]) tie them together: a flush
//! targets the newest change numbered when its cookie was seen, and a remote has caught up with
//! it once nothing at or below it waits in its queue or its running transfer.

mod budget;
pub mod checksum;
pub mod driver;
mod flushes;
mod growing;
mod halt;
mod intake;
mod latency;
mod proof;
mod slot;
mod status;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wsync_core::monitor_proto::{
    MonitorCommand, MonitorEvent, MonitorStatus, MonitorTunables, RemoteState, SyncProgress,
    WatchBackendKind,
};
use wsync_core::registry::{Remote, Workspace};

pub use halt::{current_root_id, ProbePurpose, RootId, RootProbe};
pub use intake::FRESH_DIR_WINDOW;
pub use slot::RemoteKey;
pub use status::STATUS_INTERVAL;

use crate::batch::{BatchOptions, DeletePolicy, Destination, Outcome, ProtectSource};
use crate::queue::Batch;
use crate::watch::{Change, WatchMsg};
use checksum::Periodic;
use flushes::Flushes;
use halt::{check_root, Halt};
use intake::Intake;
use proof::Proofs;
#[cfg(test)]
use proof::PROOF_MISSES;
use slot::{OverBudget, RemoteSlot};
use status::StatusOutbox;

/// How long deletions past the budget are held, nothing sent, before the workspace halts: a
/// `node_modules` reinstall or a checkout that re-creates what it removed gets that long.
pub const OVER_BUDGET_GRACE: Duration = Duration::from_secs(5);

/// How often a workspace without working watches runs a full sync instead.
pub const DEGRADED_FULL_SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// How often the trash of each remote that keeps deletions is pruned (and once at start, and
/// after its setting changes): snapshots are kept for days, so an hour late is nothing.
pub const TRASH_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// While paused or halted, a remote's pending paths are written at most this often (only when
/// they changed); at shutdown always. Never in the hot path of an active workspace.
pub const PENDING_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// A change's number in the stream of changes the engine has seen (and the number of the
/// newest one, as a watermark: "every change up to here").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seq(u64);

impl Seq {
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

/// What the engine reacts to.
#[derive(Debug)]
pub enum Input {
    /// Everything the watcher had ready, in order.
    Watch(Vec<WatchMsg>),
    Command(MonitorCommand),
    /// stdin reached EOF.
    CommandsClosed,
    /// A batch's transfer is complete (rsync is in its exit handshake).
    Transferred {
        remote: RemoteKey,
        flight: u64,
    },
    /// A watched full sync's progress.
    Progress {
        remote: RemoteKey,
        flight: u64,
        progress: SyncProgress,
    },
    /// A batch ended (its runner exited or gave up).
    BatchDone {
        remote: RemoteKey,
        flight: u64,
        batch: Batch,
        outcome: Outcome,
    },
    /// The answer to [`Effect::ProbeRoot`].
    RootProbed {
        purpose: ProbePurpose,
        probe: RootProbe,
    },
    /// The answer to [`Effect::CreateCookie`].
    CookieCreated {
        name: String,
        error: Option<String>,
    },
    /// A blocking call of a batch passed its deadline (`Some`: the message naming the call and
    /// its path) or returned after all (`None`); see [`crate::blocking`].
    Stall {
        remote: RemoteKey,
        flight: u64,
        stalled: Option<String>,
    },
    /// The same for a call on the workspace root (a probe, a cookie): while it is out, every
    /// remote is stalled and status and flushes no longer wait for its answer.
    RootStall(Option<String>),
    /// The number of inotify watches changed.
    WatchCount(u64),
    /// The walk of an [`Effect::Rescan`] or [`Effect::Rewatch`] ended (its error, if any, came
    /// as a [`WatchMsg::Error`] before).
    Rewalked,
    /// A timer fired (see [`Engine::next_wake`]).
    Tick,
    /// The monitor is exiting: abandon everything.
    Stop,
}

/// What the engine asks the driver to do.
#[derive(Debug)]
pub enum Effect {
    /// Look at the root (listing it when `list`), answered by [`Input::RootProbed`].
    ProbeRoot {
        purpose: ProbePurpose,
        list: bool,
    },
    StartBatch(BatchStart),
    /// Kill a batch's rsync; its result will not be wanted.
    AbandonBatch {
        remote: RemoteKey,
        flight: u64,
    },
    Emit(MonitorEvent),
    /// Create a flush cookie in the root (never following or reusing an existing name),
    /// answered by [`Input::CookieCreated`].
    CreateCookie {
        name: String,
    },
    RemoveCookie {
        name: String,
    },
    /// Re-walk the tree and add any missing watch; a failure comes back as a watch error.
    Rescan,
    /// Drop every watch and watch the tree afresh (the root is a different directory).
    Rewatch,
    /// Ask a remote's ssh master to exit.
    CloseConnection(Arc<Destination>),
    /// Remove the snapshots in a remote's trash older than its `keep_deleted_days`, in the
    /// background (no answer; a failure is logged and the next prune tries again).
    PruneTrash(Arc<Destination>),
    /// Write a remote's pending paths to `file` atomically (see [`crate::pending`]); an
    /// empty list removes the file. Done in order, off the loop, and finished before exit.
    SavePending {
        file: PathBuf,
        paths: Vec<PathBuf>,
    },
    RemoveRulesFile,
    Exit(Exit),
}

/// A batch to run.
#[derive(Debug)]
pub struct BatchStart {
    pub remote: RemoteKey,
    pub flight: u64,
    pub dest: Arc<Destination>,
    pub batch: Batch,
    pub options: BatchOptions,
}

/// Why the monitor ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown command, EOF on stdin, or a termination signal.
    Clean,
    /// The parent (daemon) went away.
    Orphaned,
}

/// Everything the engine starts from: the `start` message and what the monitor set up.
#[derive(Debug)]
pub struct StartConfig {
    pub workspace: Workspace,
    pub tunables: MonitorTunables,
    /// Remotes whose initial sync reports progress (someone waits for it).
    pub progress: Vec<String>,
    /// Where ssh ControlPath sockets go.
    pub runtime_dir: PathBuf,
    /// The rsync rules file for the excluded entries (kept by the watcher).
    pub rules_file: Option<PathBuf>,
    /// The root's identity when the watches were set up (`None`: it was missing).
    pub root_id: Option<RootId>,
    /// The inotify watches in place.
    pub watches: u64,
    /// The watch backend the watcher runs (shown in status).
    pub watch_backend: WatchBackendKind,
    /// Where each remote's pending paths are persisted (`crate::pending`); `None`: nowhere.
    pub pending_dir: Option<PathBuf>,
    /// Pending paths an earlier monitor persisted, by remote name: the initial full sync
    /// sends them by content.
    pub pending: Vec<(String, Vec<PathBuf>)>,
    /// Initial full syncs compare by checksum (the tree is small enough, see
    /// [`checksum::TreeSize::affords_checksum`]).
    pub initial_checksum: bool,
}

/// Watching's health, for status and the degraded mode.
#[derive(Debug, Default)]
struct Watching {
    backend: Option<WatchBackendKind>,
    watches: u64,
    overflows: u64,
    rescans: u64,
    error: Option<String>,
    /// Polling instead of inotify (no instance left): shown, but events are still complete.
    polling: Option<String>,
    /// When watching is degraded: the next full sync that stands in for events.
    next_degraded_sync: Option<Instant>,
    /// Rescans and rewatches asked for and not yet walked.
    walks: u32,
    /// Since when one has been under way; full syncs wait for it until [`WALK_HOLD`] has passed.
    walking_since: Option<Instant>,
    /// A batch started while a walk was still under way (past the hold): when it ends, the
    /// tree is synced in full once more, since that batch may have missed what the walk had
    /// not yet watched.
    walk_raced: bool,
    /// While the initial walk goes on beside the initial syncs ([`WatchMsg::Walking`]): the
    /// flush cookies seen meanwhile, which count only once it has ended (a change written
    /// before them may still be reported by the walk's catch-up).
    initial_walk: Option<Vec<String>>,
}

/// How long batches wait for a rescan or rewatch under way. A full sync that starts before the
/// tree is watched again can miss what changes in a directory not yet watched, and a flush
/// cookie created then is never seen; past this hold (a walk stuck on a hung mount) batches go
/// on and one more full sync follows the walk.
const WALK_HOLD: Duration = Duration::from_secs(10);

pub struct Engine {
    root: PathBuf,
    workspace: String,
    /// The registry id a target's `.wsync-target` marker must name.
    workspace_id: String,
    tunables: MonitorTunables,
    runtime_dir: PathBuf,
    /// The rsync rules for the excluded entries.
    rules_file: Option<PathBuf>,
    protect: ProtectSource,
    /// The workspace's explicit deletion budget (`max_delete`); `None`: the default rule (see
    /// `budget`).
    max_delete: Option<u64>,
    /// Where pending paths are persisted (see [`Effect::SavePending`]).
    pending_dir: Option<PathBuf>,
    /// Not before then is a paused or halted workspace's pending list written again.
    next_save: Instant,
    /// A remote's first full sync compares by checksum.
    initial_checksum: bool,
    periodic: Periodic,
    /// `.wsync-cookie-<pid>-`: this process's flush cookies.
    cookie_prefix: String,
    slots: Vec<RemoteSlot>,
    next_generation: u64,
    /// The newest change numbered.
    newest: Seq,
    /// `newest` when the dirty sets were last stamped (see `RemoteSlot::stamp_oldest_dirty`).
    stamped_through: Seq,
    paused: bool,
    halt: Option<Halt>,
    /// Device and inode of the root the watches were set up on.
    root_id: Option<RootId>,
    intake: Intake,
    flushes: Flushes,
    proofs: Proofs,
    watching: Watching,
    /// A call on the root passed its deadline (the message naming it) and has not returned.
    root_stall: Option<String>,
    outbox: StatusOutbox,
    /// Answers still to come for effects that always get one (probes, cookie): until
    /// they are in, no flush is answered and no status sent, so neither shows a half-decided
    /// state.
    awaiting: usize,
    /// A dispatch probe is out.
    dispatch_probed: bool,
    /// Shutdown asked: no new batches; exit once the transfers under way finish.
    draining: bool,
    exiting: bool,
    /// When the trashes are pruned next ([`TRASH_PRUNE_INTERVAL`]).
    next_prune: Instant,
}

impl Engine {
    /// The engine for a `start` message, and the effects of attaching its remotes.
    pub fn start(config: StartConfig, now: Instant) -> (Self, Vec<Effect>) {
        let StartConfig {
            workspace,
            tunables,
            progress,
            runtime_dir,
            rules_file,
            root_id,
            watches,
            watch_backend,
            pending_dir,
            pending,
            initial_checksum,
        } = config;
        // The registry's record of the root (from add, or the last resume): a root swapped
        // while no monitor ran is caught like one swapped under a running monitor.
        let persisted = workspace.root_id.map(|r| (r.dev, r.ino));
        let proofs = Proofs::new(tunables.proof_interval(), now);
        let mut engine = Self {
            root: workspace.path.clone(),
            workspace: workspace.name.clone(),
            workspace_id: workspace.id.clone(),
            tunables,
            runtime_dir,
            rules_file,
            protect: ProtectSource {
                registry: workspace.excludes.clone(),
                respect_gitignore: workspace.respect_gitignore,
            },
            max_delete: workspace.max_delete,
            pending_dir,
            next_save: now,
            initial_checksum,
            periodic: Periodic::new(workspace.checksum_every_secs, now),
            cookie_prefix: format!(
                "{}{}-",
                wsync_core::rsync::COOKIE_PREFIX,
                std::process::id()
            ),
            slots: Vec::new(),
            next_generation: 0,
            newest: Seq::default(),
            stamped_through: Seq::default(),
            paused: workspace.paused,
            halt: None,
            root_id: persisted.or(root_id),
            intake: Intake::default(),
            flushes: Flushes::default(),
            proofs,
            watching: Watching {
                backend: Some(watch_backend),
                watches,
                ..Watching::default()
            },
            root_stall: None,
            outbox: StatusOutbox::default(),
            awaiting: 0,
            dispatch_probed: false,
            draining: false,
            exiting: false,
            next_prune: now,
        };
        let mut fx = Vec::new();
        if root_id.is_none() {
            let halt = Halt::unconfirmed(format!(
                "workspace root {} is missing or not a directory; nothing is synced until it is back and `wsync resume` is run",
                engine.root.display()
            ));
            engine.halt(halt, now, &mut fx);
        } else if persisted.is_some_and(|p| Some(p) != root_id) {
            tracing::warn!("the workspace root is not the directory the registry recorded");
            engine.halt(Halt::root_replaced(&engine.root), now, &mut fx);
        }
        for remote in workspace.remotes {
            let watched = progress.contains(&remote.name);
            engine.attach(remote, watched, now);
        }
        for (name, paths) in pending {
            if let Some(slot) = engine.slots.iter_mut().find(|s| s.name() == name) {
                tracing::info!(
                    remote = name,
                    paths = paths.len(),
                    "changes pending from an earlier monitor go by content"
                );
                slot.restore_persisted(&paths, now);
            }
        }
        (engine, fx)
    }

    /// Applies one input; returns what to do.
    pub fn step(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Watch(messages) => {
                for message in messages {
                    self.on_watch(message, now, &mut fx);
                }
                // Both halves of a rename come in one message; a lone half is a move into or out
                // of the workspace.
                if let Some(queued) = self.intake.end_of_read(now) {
                    for slot in &mut self.slots {
                        slot.queue(&queued, now);
                    }
                }
            }
            Input::Command(cmd) => self.on_command(cmd, now, &mut fx),
            Input::CommandsClosed if self.draining => {}
            Input::CommandsClosed => {
                tracing::info!("control channel closed (EOF); exiting");
                self.exit(Exit::Clean, &mut fx);
            }
            Input::Transferred { remote, flight } => {
                tracing::trace!(remote = remote.name, flight, "transfer complete");
                if let Some(slot) = self.slot_mut(&remote) {
                    if slot.transferred(flight, wall_ms(), now) {
                        self.proofs.landed(&remote.name, now, wall_ms());
                    }
                }
            }
            Input::Progress {
                remote,
                flight,
                progress,
            } => {
                if let Some(slot) = self.slot_mut(&remote) {
                    slot.set_progress(flight, progress);
                }
            }
            Input::BatchDone {
                remote,
                flight,
                batch,
                outcome,
            } => {
                let finished = self.slot_mut(&remote).and_then(|slot| {
                    slot.finished(flight, batch, outcome, now, wall_ms(), OVER_BUDGET_GRACE)
                });
                match finished.as_ref() {
                    Some(f) if f.proof_failed => self.proofs.refused(&remote.name),
                    Some(f) if f.landed => self.proofs.landed(&remote.name, now, wall_ms()),
                    _ => {}
                }
                if let Some(batch) = finished.as_ref().and_then(|f| f.synced) {
                    fx.push(Effect::Emit(MonitorEvent::Synced {
                        remote: remote.name.clone(),
                        batch,
                    }));
                }
                if let Some(reason) = finished.and_then(|f| f.halt) {
                    self.halt(Halt::deletions(reason), now, &mut fx);
                }
            }
            Input::RootProbed { purpose, probe } => {
                self.awaiting = self.awaiting.saturating_sub(1);
                self.on_probe(purpose, probe, now, &mut fx);
            }
            Input::CookieCreated { name, error } if self.proofs.is_proof_file(&name) => {
                self.awaiting = self.awaiting.saturating_sub(1);
                if let Some(error) = error {
                    tracing::warn!(
                        "cannot create the proof-of-sync file in the workspace root: {error}"
                    );
                    self.proofs.create_failed(&name, now);
                }
            }
            Input::CookieCreated { name, error } => {
                self.awaiting = self.awaiting.saturating_sub(1);
                if let Some(error) = error {
                    tracing::warn!("cannot create flush cookie in the workspace root: {error}; flushing what is known");
                    self.flushes.cookie_failed(&name, self.newest);
                }
            }
            Input::Stall {
                remote,
                flight,
                stalled,
            } => {
                if let Some(slot) = self.slot_mut(&remote) {
                    slot.set_stalled(flight, stalled);
                }
            }
            Input::RootStall(stalled) => {
                match &stalled {
                    Some(message) => tracing::warn!("workspace root stalled: {message}"),
                    None => tracing::info!("workspace root answers again"),
                }
                self.root_stall = stalled;
            }
            Input::WatchCount(count) => self.watching.watches = count,
            Input::Rewalked => self.rewalked(now, &mut fx),
            Input::Tick => {}
            Input::Stop => {
                self.stop(now, &mut fx);
                return fx;
            }
        }
        // Exiting: nothing new starts and no flush is answered; `Stop` follows.
        if !self.exiting {
            self.after_input(now, &mut fx);
        }
        fx
    }

    /// When the engine next needs a [`Input::Tick`] (a batch due, a retry, a flush deadline,
    /// a held-back status, a degraded full sync), at most a second away.
    pub fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + Duration::from_secs(1);
        if self.active() {
            let (settle, cap) = (self.tunables.settle(), self.tunables.max_latency());
            for slot in &self.slots {
                if let Some(due) = slot.due_at(now, settle, cap, self.max_delete) {
                    wake = wake.min(due);
                }
            }
        }
        if let Some(at) = self.flushes.next_deadline() {
            wake = wake.min(at);
        }
        if let Some(at) = self.outbox.next_at(&self.status(now)) {
            wake = wake.min(at);
        }
        if let Some(at) = self.watching.next_degraded_sync {
            wake = wake.min(at);
        }
        if let Some(at) = self.walk_holds(now) {
            wake = wake.min(at);
        }
        if let Some(at) = self.proofs.next_wake(now) {
            wake = wake.min(at);
        }
        if self.keeps_deletions() {
            wake = wake.min(self.next_prune);
        }
        if let Some(at) = self.periodic.next_wake(now) {
            wake = wake.min(at);
        }
        wake.max(now)
    }

    fn active(&self) -> bool {
        !self.paused && self.halt.is_none()
    }

    fn keeps_deletions(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.dest().remote.keep_deleted_days > 0)
    }

    fn slot_mut(&mut self, key: &RemoteKey) -> Option<&mut RemoteSlot> {
        self.slots.iter_mut().find(|s| s.key() == key)
    }

    fn exit(&mut self, exit: Exit, fx: &mut Vec<Effect>) {
        if !self.exiting {
            self.exiting = true;
            fx.push(Effect::Exit(exit));
        }
    }

    /// Asks for a rescan or rewatch of the tree (answered by [`Input::Rewalked`]).
    fn rewalk(&mut self, effect: Effect, now: Instant, fx: &mut Vec<Effect>) {
        debug_assert!(matches!(effect, Effect::Rescan | Effect::Rewatch));
        if self.watching.walks == 0 {
            self.watching.walking_since = Some(now);
        }
        self.watching.walks += 1;
        fx.push(effect);
    }

    /// A rescan or rewatch ended. When none is left, flushes stop waiting for cookies created
    /// while the tree was not (yet) watched, and a batch that raced the walk is followed by
    /// one more full sync.
    fn rewalked(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        self.watching.walks = self.watching.walks.saturating_sub(1);
        if self.watching.walks > 0 {
            return;
        }
        self.watching.walking_since = None;
        self.cookies_lost(fx);
        if std::mem::take(&mut self.watching.walk_raced) {
            tracing::info!(
                "a batch ran before the tree was watched again; syncing it in full once more"
            );
            self.mark_all_full(now);
        }
    }

    /// While a rescan or rewatch is under way (up to [`WALK_HOLD`]), batches wait.
    fn walk_holds(&self, now: Instant) -> Option<Instant> {
        let until = self.watching.walking_since? + WALK_HOLD;
        (now < until).then_some(until)
    }

    fn probe(&mut self, purpose: ProbePurpose, list: bool, fx: &mut Vec<Effect>) {
        self.awaiting += 1;
        fx.push(Effect::ProbeRoot { purpose, list });
    }

    // ---- inputs -------------------------------------------------------------------------

    fn on_watch(&mut self, message: WatchMsg, now: Instant, fx: &mut Vec<Effect>) {
        match message {
            WatchMsg::Changes(changes) => self.on_changes(changes, now),
            WatchMsg::Cookie(name) => match self.watching.initial_walk.as_mut() {
                Some(deferred) => deferred.push(name),
                None => self.cookie_seen(&name, fx),
            },
            WatchMsg::Walking => self.watching.initial_walk = Some(Vec::new()),
            WatchMsg::Walked => {
                for name in self.watching.initial_walk.take().unwrap_or_default() {
                    self.cookie_seen(&name, fx);
                }
            }
            WatchMsg::Overflow => {
                self.watching.overflows += 1;
                self.watching.rescans += 1;
                self.mark_all_full(now);
                self.cookies_lost(fx);
            }
            WatchMsg::RootGone => self.probe(ProbePurpose::RootGone, false, fx),
            // Already halted (the root was deleted): its watch going is no news.
            WatchMsg::RootUnwatched if self.halt.is_some() => {}
            WatchMsg::RootUnwatched => self.probe(ProbePurpose::RootUnwatched, false, fx),
            WatchMsg::Polling(message) => self.watching.polling = Some(message),
            WatchMsg::Error(error) => {
                if self.watching.error.is_none() {
                    tracing::error!("watching degraded: {error}");
                    self.watching.error = Some(error.to_string());
                    self.watching.next_degraded_sync = Some(now);
                }
            }
        }
    }

    fn on_changes(&mut self, changes: Vec<Change>, now: Instant) {
        tracing::trace!(changes = changes.len(), "changes");
        for change in changes {
            self.newest = self.newest.next();
            self.proofs.change_seen(&change.path, self.newest);
            for queued in self.intake.accept(change, now) {
                for slot in &mut self.slots {
                    slot.queue(&queued, now);
                }
            }
        }
    }

    fn on_command(&mut self, cmd: MonitorCommand, now: Instant, fx: &mut Vec<Effect>) {
        tracing::debug!(?cmd, "command");
        match cmd {
            MonitorCommand::Start { .. } => tracing::warn!("ignoring a second start message"),
            MonitorCommand::Attach { remote, progress } => self.attach(remote, progress, now),
            MonitorCommand::Update { remote } => self.update(remote, now),
            MonitorCommand::Detach { remote } => self.detach(&remote, fx),
            MonitorCommand::Pause => {
                tracing::info!("paused");
                self.paused = true;
            }
            MonitorCommand::Resume => {
                tracing::info!("resumed");
                self.paused = false;
                self.proofs.restart_clocks(now, self.halt.is_none());
                self.request_lift(fx);
                self.retry_now(now);
            }
            MonitorCommand::Resync => {
                tracing::info!("full resync requested");
                self.request_lift(fx);
                self.mark_all_full(now);
                self.watching.rescans += 1;
                self.retry_now(now);
            }
            MonitorCommand::ChecksumResync { remote } => {
                tracing::info!(?remote, "checksum resync requested");
                self.request_lift(fx);
                self.newest = self.newest.next();
                for slot in &mut self.slots {
                    if remote.as_ref().is_none_or(|name| name == slot.name()) {
                        slot.mark_checksum_full(now);
                    }
                }
                self.retry_now(now);
            }
            MonitorCommand::Flush { id, timeout_ms } => self.start_flush(id, timeout_ms, now, fx),
            MonitorCommand::Shutdown => {
                tracing::info!("shutdown requested: finishing the transfers under way");
                self.draining = true;
            }
        }
    }

    fn on_probe(
        &mut self,
        purpose: ProbePurpose,
        probe: RootProbe,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        match purpose {
            ProbePurpose::Dispatch => {
                self.dispatch_probed = false;
                self.dispatch(&probe, now, fx);
            }
            // A root moved away and back again is the same directory: not a reason to halt.
            ProbePurpose::RootGone if self.root_id.is_some() && probe.id == self.root_id => {}
            ProbePurpose::RootGone => self.halt(Halt::root_gone(&self.root), now, fx),
            ProbePurpose::RootUnwatched if self.halt.is_some() => {}
            ProbePurpose::RootUnwatched => {
                // Halts unless the root is still the same directory (then watch it again).
                if let Some(halt) = check_root(&self.root, self.root_id, &probe) {
                    self.halt(halt, now, fx);
                    return;
                }
                tracing::warn!("the root's watch was dropped; watching the tree again");
                self.rewalk(Effect::Rescan, now, fx);
                self.watching.rescans += 1;
                self.mark_all_full(now);
                self.cookies_lost(fx);
            }
            ProbePurpose::Lift => self.lift(&probe, now, fx),
        }
    }

    // ---- remotes ------------------------------------------------------------------------

    /// Adds a remote; its first batch is a full sync, reporting rsync's progress when
    /// `progress` is set. The target is not created here: attach did that, with its marker,
    /// and every batch checks the marker first.
    fn attach(&mut self, remote: Remote, progress: bool, now: Instant) {
        if self.slots.iter().any(|s| s.name() == remote.name) {
            tracing::warn!(remote = %remote.name, "attach ignored: a remote of that name is attached");
            return;
        }
        let dest = Arc::new(Destination::new(
            remote,
            &self.runtime_dir,
            &self.workspace,
            &self.workspace_id,
            self.tunables.transport,
        ));
        self.next_generation += 1;
        self.newest = self.newest.next();
        let key = RemoteKey {
            name: dest.remote.name.clone(),
            generation: self.next_generation,
        };
        tracing::info!(remote = %dest.remote.name, target = %dest.remote.target, "remote attached");
        self.proofs.start_clock(&key.name, now);
        if dest.remote.keep_deleted_days > 0 {
            self.next_prune = now;
        }
        self.slots.push(RemoteSlot::new(
            key,
            dest,
            progress,
            self.initial_checksum,
            now,
        ));
    }

    /// New settings for an attached remote; a prune follows at once (a shorter
    /// `keep_deleted_days` may expire snapshots).
    fn update(&mut self, remote: Remote, now: Instant) {
        let dest = Destination::new(
            remote,
            &self.runtime_dir,
            &self.workspace,
            &self.workspace_id,
            self.tunables.transport,
        );
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| s.name() == dest.remote.name && s.dest().remote.target == dest.remote.target)
        else {
            tracing::warn!(remote = %dest.remote.name, "update ignored: no remote of that name and target");
            return;
        };
        tracing::info!(remote = %dest.remote.name, keep_deleted_days = dest.remote.keep_deleted_days, "remote settings updated");
        slot.set_dest(Arc::new(dest));
        self.next_prune = now;
    }

    fn detach(&mut self, name: &str, fx: &mut Vec<Effect>) {
        let Some(index) = self.slots.iter().position(|s| s.name() == name) else {
            tracing::warn!(remote = name, "detach ignored: no such remote");
            return;
        };
        let mut slot = self.slots.remove(index);
        self.proofs.forget(name);
        for flight in slot.abandon_all() {
            fx.push(Effect::AbandonBatch {
                remote: slot.key().clone(),
                flight,
            });
        }
        tracing::info!(remote = name, "remote detached");
        if let Some(file) = self.pending_file(name) {
            fx.push(Effect::SavePending {
                file,
                paths: Vec::new(),
            });
        }
        fx.push(Effect::CloseConnection(slot.dest().clone()));
    }

    /// Remotes in backoff retry at once (the user asked for action).
    fn retry_now(&mut self, now: Instant) {
        for slot in &mut self.slots {
            slot.retry_now(now);
        }
    }

    fn mark_all_full(&mut self, now: Instant) {
        self.newest = self.newest.next();
        for slot in &mut self.slots {
            slot.mark_full(now);
        }
    }

    // ---- flushes ------------------------------------------------------------------------

    fn start_flush(&mut self, id: u64, timeout_ms: u64, now: Instant, fx: &mut Vec<Effect>) {
        let deadline = now + Duration::from_millis(timeout_ms);
        if self.watching.error.is_some() {
            // Events cannot be trusted to be complete: only a full sync proves convergence.
            self.mark_all_full(now);
            self.flushes.await_target(id, deadline, self.newest);
            return;
        }
        let name = format!("{}{id}", self.cookie_prefix);
        self.flushes.await_cookie(id, deadline, name.clone());
        self.awaiting += 1;
        fx.push(Effect::CreateCookie { name });
    }

    /// A flush cookie arrived: its flush waits for every change seen before it.
    fn cookie_seen(&mut self, name: &str, fx: &mut Vec<Effect>) {
        if let Some(cookie) = self.flushes.cookie_seen(name, self.newest) {
            fx.push(Effect::RemoveCookie { name: cookie });
        }
    }

    fn cookies_lost(&mut self, fx: &mut Vec<Effect>) {
        for name in self.flushes.cookies_lost(self.newest) {
            fx.push(Effect::RemoveCookie { name });
        }
    }

    fn answer_flushes(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.flushes.is_empty() {
            return;
        }
        let all: Vec<String> = self.slots.iter().map(|s| s.name().to_owned()).collect();
        // A stalled remote will not catch up before its call returns: a flush waiting only for
        // such remotes is answered now, naming them.
        let stalled: Vec<String> = self
            .slots
            .iter()
            .filter(|s| self.root_stall.is_some() || s.stalled().is_some())
            .map(|s| s.name().to_owned())
            .collect();
        let slots = &self.slots;
        let lagging = |target: Seq| {
            slots
                .iter()
                .filter(|s| !s.caught_up(target))
                .map(|s| s.name().to_owned())
                .collect()
        };
        let answers = self
            .flushes
            .answer(now, self.active(), &all, &stalled, lagging);
        if answers.is_empty() {
            return;
        }
        self.emit_status(now, true, fx);
        for answer in answers {
            if let Some(name) = answer.cookie {
                fx.push(Effect::RemoveCookie { name });
            }
            if !answer.lagging.is_empty() {
                tracing::info!(id = answer.id, lagging = ?answer.lagging, "flush timed out");
            }
            fx.push(Effect::Emit(MonitorEvent::Flushed {
                id: answer.id,
                lagging: answer.lagging,
            }));
        }
    }

    // ---- safety rails -------------------------------------------------------------------

    /// Halts: nothing is synced or deleted; running batches are abandoned.
    fn halt(&mut self, halt: Halt, now: Instant, fx: &mut Vec<Effect>) {
        if self.halt.as_ref().map(|h| h.reason.as_str()) != Some(halt.reason.as_str()) {
            tracing::error!("halted: {}", halt.reason);
        }
        self.halt = Some(halt);
        // A proof round ends with the halt: its file is not left in the root meanwhile.
        if let Some(name) = self.proofs.abandon() {
            fx.push(Effect::RemoveCookie { name });
        }
        for slot in &mut self.slots {
            for flight in slot.interrupt(now) {
                fx.push(Effect::AbandonBatch {
                    remote: slot.key().clone(),
                    flight,
                });
            }
        }
    }

    fn request_lift(&mut self, fx: &mut Vec<Effect>) {
        if self.halt.is_some() {
            self.probe(ProbePurpose::Lift, false, fx);
        }
    }

    /// Lifts the halt when the root is a directory again: re-watch the tree (the root may be a
    /// new inode) and resync everything.
    fn lift(&mut self, probe: &RootProbe, now: Instant, fx: &mut Vec<Effect>) {
        let Some(halt) = self.halt.clone() else {
            return;
        };
        let Some(id) = probe.id else {
            tracing::warn!("still halted: {}", halt.reason);
            return;
        };
        // A different directory now: drop every old watch before watching it afresh.
        let walk = if self.root_id == Some(id) {
            Effect::Rescan
        } else {
            Effect::Rewatch
        };
        self.rewalk(walk, now, fx);
        self.root_id = Some(id);
        match halt.on_lift {
            DeletePolicy::Confirmed => tracing::info!(
                "halt lifted by the user's confirmation; running a full sync that may delete without cap"
            ),
            _ => tracing::info!(
                "halt lifted; running a full sync (dry-run first against the --max-delete cap)"
            ),
        }
        for slot in &mut self.slots {
            slot.after_halt(halt.on_lift);
        }
        self.halt = None;
        // No probe now: the full sync that follows proves each remote when it lands, and a
        // file created in a root that may still be a bare mount point would be left there.
        self.proofs.restart_clocks(now, false);
        self.watching.rescans += 1;
        self.mark_all_full(now);
    }

    // ---- after every input ----------------------------------------------------------------

    fn after_input(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        self.stamp_dirty_sets();
        if let Some(at) = self.watching.next_degraded_sync {
            if now >= at {
                self.mark_all_full(now);
                self.watching.next_degraded_sync = Some(now + DEGRADED_FULL_SYNC_INTERVAL);
            }
        }
        if now >= self.next_prune && !self.draining {
            self.next_prune = now + TRASH_PRUNE_INTERVAL;
            for slot in &self.slots {
                if slot.dest().remote.keep_deleted_days > 0 {
                    fx.push(Effect::PruneTrash(slot.dest().clone()));
                }
            }
        }
        // Fields, not `active()`: the closure borrows them beside `periodic`.
        let (paused, halted, draining, slots) =
            (self.paused, self.halt.is_some(), self.draining, &self.slots);
        let idle = || !paused && !halted && !draining && slots.iter().all(|s| s.is_clean());
        if self.periodic.due(now, idle) {
            tracing::info!("periodic checksum pass");
            self.newest = self.newest.next();
            for slot in &mut self.slots {
                slot.mark_checksum_full(now);
            }
        }
        self.save_pending(now, fx);
        if self.draining {
            if self.slots.iter().all(|s| !s.is_transferring()) {
                tracing::info!("current transfers finished; exiting");
                self.exit(Exit::Clean, fx);
                return;
            }
        } else {
            self.request_dispatch(now, fx);
            self.prove(now, fx);
        }
        // An answer stuck behind a hung root would hold status and flushes forever.
        if self.awaiting > 0 && self.root_stall.is_none() {
            return;
        }
        self.answer_flushes(now, fx);
        self.emit_status(now, false, fx);
    }

    /// Starts a proof-of-sync round when one is due, and ends the one out once every remote
    /// holds it (see `proof`).
    fn prove(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let slots = &self.slots;
        let done = self.proofs.settle(now, wall_ms(), |remote, seq| {
            slots.iter().any(|s| s.name() == remote && s.caught_up(seq))
        });
        if let Some(name) = done {
            fx.push(Effect::RemoveCookie { name });
        }
        if self.active() {
            if let Some(name) = self.proofs.due(now) {
                self.awaiting += 1;
                fx.push(Effect::CreateCookie { name });
            }
        }
    }

    #[cfg(test)]
    fn proofs_created(&self) -> usize {
        self.proofs.created()
    }

    #[cfg(test)]
    fn pending_proof(&self) -> Option<String> {
        self.proofs.pending_name()
    }

    /// A remote's pending file, when pending paths are persisted.
    fn pending_file(&self, remote: &str) -> Option<PathBuf> {
        let dir = self.pending_dir.as_deref()?;
        Some(crate::pending::file_for(
            dir,
            &self.workspace_id,
            &self.workspace,
            remote,
        ))
    }

    /// Persists what waits while nothing is sent (paused, halted), at most every
    /// [`PENDING_SAVE_INTERVAL`], and removes a file once its remote caught up. An active
    /// workspace with no file costs one comparison per remote here.
    fn save_pending(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.pending_dir.is_none() {
            return;
        }
        let hold = !self.active() && now >= self.next_save;
        let mut saved = false;
        for i in 0..self.slots.len() {
            let (revision, persisted) = self.slots[i].persisted();
            let clean = self.slots[i].is_clean();
            let paths = if persisted.is_some() && clean {
                Vec::new()
            } else if hold && !clean && persisted != Some(revision) {
                self.slots[i].pending_paths()
            } else {
                continue;
            };
            let Some(file) = self.pending_file(self.slots[i].name()) else {
                return;
            };
            saved |= !paths.is_empty();
            self.slots[i].set_saved((!paths.is_empty()).then_some(revision));
            fx.push(Effect::SavePending { file, paths });
        }
        if saved {
            self.next_save = now + PENDING_SAVE_INTERVAL;
        }
    }

    fn stamp_dirty_sets(&mut self) {
        for slot in &mut self.slots {
            slot.stamp_oldest_dirty(self.stamped_through);
        }
        self.stamped_through = self.newest;
    }

    fn ready(&self, now: Instant) -> Vec<usize> {
        if !self.active() || self.walk_holds(now).is_some() {
            return Vec::new();
        }
        let (settle, cap) = (self.tunables.settle(), self.tunables.max_latency());
        (0..self.slots.len())
            .filter(|&i| {
                let slot = &self.slots[i];
                slot.ready(now, settle, cap) && !slot.held_for_budget(now, self.max_delete)
            })
            .collect()
    }

    /// The first due remote about to delete more than its budget has left (unconfirmed).
    fn deletion_storm(&self, ready: &[usize], now: Instant) -> Option<(String, OverBudget)> {
        ready.iter().find_map(|&i| {
            let slot = &self.slots[i];
            slot.over_budget(now, self.max_delete)
                .map(|over| (slot.name().to_owned(), over))
        })
    }

    /// Batches are due: the root is probed first (listed when a deletion storm is pending).
    fn request_dispatch(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.dispatch_probed {
            return;
        }
        let ready = self.ready(now);
        if ready.is_empty() {
            return;
        }
        let list = self.deletion_storm(&ready, now).is_some();
        self.dispatch_probed = true;
        self.probe(ProbePurpose::Dispatch, list, fx);
    }

    /// Starts the due batches, at most one per remote, once the root proved to be ours.
    fn dispatch(&mut self, probe: &RootProbe, now: Instant, fx: &mut Vec<Effect>) {
        let ready = self.ready(now);
        if ready.is_empty() {
            return;
        }
        if let Some(halt) = check_root(&self.root, self.root_id, probe) {
            self.halt(halt, now, fx);
            return;
        }
        // A deletion storm that does not (yet) look like a vanished root halts, with nothing
        // sent, until `resume` confirms. An emptied root is left to the batch's own check (its
        // reason names the empty root).
        if let Some((remote, over)) = self.deletion_storm(&ready, now) {
            let held = self
                .slots
                .iter_mut()
                .find(|s| s.name() == remote)
                .is_some_and(|slot| slot.hold_over_budget(now, OVER_BUDGET_GRACE));
            if held && probe.empty != Some(true) {
                tracing::info!(
                    remote,
                    deletions = over.count,
                    "deletions past the budget held for {} s in case they come back",
                    OVER_BUDGET_GRACE.as_secs()
                );
                return;
            }
            if probe.empty != Some(true) {
                let first: Vec<std::path::Display<'_>> =
                    over.first.iter().map(|p| p.display()).collect();
                let reason = format!(
                    "mass deletion: {} paths deleted in {:.1} s in workspace root {} (more than remote {remote}'s deletion budget, max_delete = {}, allows: {} deleted in the last {} s), first {}; nothing is deleted remotely until `wsync resume` confirms it",
                    over.count,
                    over.span.as_secs_f64(),
                    self.root.display(),
                    over.limit,
                    over.made,
                    budget::DELETION_WINDOW.as_secs(),
                    crate::batch::first_paths(&first, over.count),
                );
                self.halt(Halt::deletions(reason), now, fx);
                return;
            }
        }
        self.stamp_dirty_sets();
        for i in ready {
            let newest = self.newest;
            let slot = &mut self.slots[i];
            let Some(started) = slot.start(newest, now, self.max_delete) else {
                continue;
            };
            if self.watching.walks > 0 {
                self.watching.walk_raced = true;
            }
            fx.push(Effect::StartBatch(BatchStart {
                remote: slot.key().clone(),
                flight: started.flight,
                dest: slot.dest().clone(),
                batch: started.batch,
                options: BatchOptions {
                    delete_policy: started.delete_policy,
                    max_delete: started.max_delete,
                    moved: started.moved,
                    deletes_unknown_contents: started.deletes_unknown_contents,
                    report_transfer_done: started.report_transfer_done,
                    exclude_from: self.rules_file.clone(),
                    protect: self.protect.clone(),
                    progress: started.progress,
                    growing: started.growing,
                    by_content: started.by_content,
                    checksum: started.checksum,
                },
            }));
        }
    }

    // ---- status and exit ----------------------------------------------------------------

    fn status(&self, now: Instant) -> MonitorStatus {
        let halted = self.halt.is_some();
        MonitorStatus {
            workspace: self.workspace.clone(),
            watch_backend: self.watching.backend,
            watches: self.watching.watches,
            overflows: self.watching.overflows,
            rescans: self.watching.rescans,
            watch_error: self
                .watching
                .error
                .clone()
                .or_else(|| self.watching.polling.clone()),
            halted: self.halt.as_ref().map(|h| h.reason.clone()),
            paused: self.paused,
            remotes: self
                .slots
                .iter()
                .map(|slot| {
                    let mut status =
                        slot.status(halted, self.paused, now, self.root_stall.as_deref());
                    status.verified_unix_ms = self.proofs.last_unix_ms(slot.name());
                    if status.state == RemoteState::InSync
                        && self.proofs.unverified(slot.name(), now)
                    {
                        status.state = RemoteState::Unverified;
                    }
                    status
                })
                .collect(),
        }
    }

    fn emit_status(&mut self, now: Instant, force: bool, fx: &mut Vec<Effect>) {
        if let Some(status) = self.outbox.offer(self.status(now), now, force) {
            fx.push(Effect::Emit(MonitorEvent::Status { status }));
        }
    }

    /// Persists what waits, abandons every batch and flush, sends the last status, and lets
    /// go of the remotes.
    fn stop(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        for i in 0..self.slots.len() {
            let paths = self.slots[i].pending_paths();
            if paths.is_empty() && self.slots[i].persisted().1.is_none() {
                continue;
            }
            if let Some(file) = self.pending_file(self.slots[i].name()) {
                tracing::info!(
                    remote = self.slots[i].name(),
                    paths = paths.len(),
                    "pending paths persisted"
                );
                fx.push(Effect::SavePending { file, paths });
            }
        }
        for slot in &mut self.slots {
            for flight in slot.abandon_all() {
                fx.push(Effect::AbandonBatch {
                    remote: slot.key().clone(),
                    flight,
                });
            }
        }
        for name in self
            .flushes
            .abandon()
            .into_iter()
            .chain(self.proofs.abandon())
        {
            fx.push(Effect::RemoveCookie { name });
        }
        self.emit_status(now, true, fx);
        fx.push(Effect::RemoveRulesFile);
        for slot in &self.slots {
            fx.push(Effect::CloseConnection(slot.dest().clone()));
        }
    }
}

/// Now in Unix milliseconds, for the `*_unix_ms` status fields.
fn wall_ms() -> u64 {
    wsync_core::unix_ms(SystemTime::now())
}
