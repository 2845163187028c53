//! One remote's state: its dirty set, the batch whose transfer is running and those finishing
//! their exit handshake, its health (failures, backoff, last error), its delete policy and its
//! counters. The rules that touch only one remote live here; the engine combines slots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsync_core::backoff::Backoff;
use wsync_core::monitor_proto::{RemoteState, RemoteStatus, SyncProgress, SyncedBatch};
use wsync_core::rsync::{ExitClass, PathFailure, RsyncStats};
use wsync_core::rsync_version::RsyncEnds;

use super::budget::DeletionLedger;
use super::growing::{GrowingFile, GrowingFiles};
use super::intake::{Queued, Write};
use super::latency::{Arrivals, Latencies};
use super::Seq;
use crate::batch::{fallback_paths, DeletePolicy, Destination, Outcome};
use crate::queue::{Batch, DirtySet, Rename};

/// Which attachment of a remote a message is about: a remote detached and attached again is a
/// new generation, so messages from the old one's batches are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteKey {
    pub name: String,
    pub generation: u64,
}

/// A batch whose transfer is running or finishing.
#[derive(Debug)]
struct Flight {
    id: u64,
    /// The newest change numbered when the batch started: on success, everything up to it
    /// that was not left waiting is on the remote.
    newest: Seq,
    /// The oldest change in the batch.
    oldest: Seq,
    /// `synced_through` before this batch, restored if it fails after reporting its transfer
    /// done.
    synced_before: Seq,
    len: usize,
    full: bool,
    /// The paths the batch touches (`None`: everything, a full sync).
    scope: Option<Vec<PathBuf>>,
    /// Paths known to have changed below the batch's entries (everywhere for a full sync),
    /// sent by content; put back if it fails.
    known: Arc<Vec<PathBuf>>,
    /// A full sync comparing by checksum; asked again if it fails.
    checksum: bool,
    /// The latest progress of a watched full sync.
    progress: Option<SyncProgress>,
    /// The deletions the batch is known to make, set aside from the budget until it ends.
    reserved: u64,
    /// The paths it is known to delete.
    deletes: Vec<PathBuf>,
    /// Renames it carries as plain paths (rsync moves their subtrees); put back with it.
    moved: Vec<Rename>,
    /// It deletes directories whose contents were not reported (see
    /// `BatchOptions::deletes_unknown_contents`); put back with it.
    deletes_unknown_contents: bool,
    /// Packed git objects it deletes, which are not charged.
    packed: u64,
    /// The batch ran under the user's confirmation.
    confirmed: bool,
    /// When the changes it carries were queued.
    arrivals: Arrivals,
    /// How long its oldest change had waited when its data was on the remote (set by
    /// [`RemoteSlot::transferred`], which hands `arrivals` to the latencies early).
    oldest_wait: Option<Duration>,
}

impl Flight {
    /// True when the batch touches `path`, something below it, or a directory above it.
    fn touches(&self, path: &Path) -> bool {
        self.scope.as_ref().is_none_or(|paths| {
            paths
                .iter()
                .any(|q| q.starts_with(path) || path.starts_with(q))
        })
    }
}

/// After this many consecutive whole-remote failures the remote shows `error` (the hook fires)
/// instead of `backoff`, while it keeps retrying. A failure to reach the remote also needs
/// [`UNREACHABLE_ERROR_AFTER`]: a laptop going offline for a moment is not news, one that
/// stays away is.
pub(super) const REMOTE_ERROR_AFTER: u32 = 3;
/// How long a remote must have been unreachable (rsync or ssh could not connect, or the
/// transfer was cut) before it shows `error`.
pub(super) const UNREACHABLE_ERROR_AFTER: Duration = Duration::from_secs(60);

/// Consecutive failures and the retry they lead to.
#[derive(Debug, Default)]
struct Health {
    failures: u32,
    /// When the first of the consecutive failures happened.
    failing_since: Option<Instant>,
    /// The failures have gone on long enough to show `error` (see [`REMOTE_ERROR_AFTER`]).
    alerting: bool,
    retry_at: Option<Instant>,
    retry_unix_ms: Option<u64>,
    last_error: Option<String>,
}

impl Health {
    fn succeeded(&mut self) {
        self.failures = 0;
        self.failing_since = None;
        self.alerting = false;
        self.retry_at = None;
        self.retry_unix_ms = None;
        self.last_error = None;
    }

    /// Counts a failure of `class`; returns the delay before the retry.
    fn failed(
        &mut self,
        class: ExitClass,
        message: String,
        now: Instant,
        now_unix_ms: u64,
    ) -> Duration {
        self.failures += 1;
        let since = *self.failing_since.get_or_insert(now);
        let unreachable = matches!(class, ExitClass::Connection | ExitClass::Killed);
        self.alerting = class == ExitClass::Fatal
            || (self.failures >= REMOTE_ERROR_AFTER
                && (!unreachable || now.duration_since(since) >= UNREACHABLE_ERROR_AFTER));
        let delay = Backoff::REMOTE_RETRY.delay(self.failures);
        self.retry_at = Some(now + delay);
        self.retry_unix_ms = Some(now_unix_ms + delay.as_millis() as u64);
        self.last_error = Some(message);
        delay
    }
}

/// After this many failures of the same path the remote shows `error` naming it.
pub(super) const PATH_ERROR_AFTER: u32 = 3;

/// A path the remote could not write (rsync exit 23) while the rest of its batch landed: it
/// is retried on its own with backoff, and the remote lacks every change from `oldest` on to
/// it until it lands.
#[derive(Debug)]
struct StuckPath {
    failures: u32,
    retry_at: Instant,
    retry_unix_ms: u64,
    message: String,
    oldest: Seq,
}

/// The paths failing on their own (see [`StuckPath`]).
#[derive(Debug, Default)]
struct StuckPaths(BTreeMap<PathBuf, StuckPath>);

impl StuckPaths {
    /// Counts a failure of each path; the rest of `flight` landed, so stuck paths it touched
    /// that did not fail again are cleared.
    fn failed(
        &mut self,
        flight: &Flight,
        failures: Vec<PathFailure>,
        now: Instant,
        now_unix_ms: u64,
    ) {
        self.landed(flight, &failures);
        for PathFailure { path, message } in failures {
            let entry = self.0.entry(path).or_insert(StuckPath {
                failures: 0,
                retry_at: now,
                retry_unix_ms: now_unix_ms,
                message: String::new(),
                oldest: flight.oldest,
            });
            entry.failures += 1;
            let delay = Backoff::REMOTE_RETRY.delay(entry.failures);
            entry.retry_at = now + delay;
            entry.retry_unix_ms = now_unix_ms + delay.as_millis() as u64;
            entry.message = message;
            entry.oldest = entry.oldest.min(flight.oldest);
        }
    }

    /// `flight` succeeded except for `failed`: what else it touched is on the remote.
    fn landed(&mut self, flight: &Flight, failed: &[PathFailure]) {
        self.0
            .retain(|path, _| !flight.touches(path) || failed.iter().any(|f| &f.path == path));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn next_retry(&self) -> Option<Instant> {
        self.0.values().map(|s| s.retry_at).min()
    }

    fn oldest(&self) -> Option<Seq> {
        self.0.values().map(|s| s.oldest).min()
    }

    /// The paths whose retry is due.
    fn due(&self, now: Instant) -> Vec<PathBuf> {
        self.0
            .iter()
            .filter(|(_, s)| s.retry_at <= now)
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn retry_now(&mut self, now: Instant) {
        for stuck in self.0.values_mut() {
            stuck.retry_at = stuck.retry_at.min(now);
        }
    }

    /// The path that failed most often (the first such in order).
    fn worst(&self) -> Option<(&PathBuf, &StuckPath)> {
        self.0.iter().fold(
            None,
            |best: Option<(&PathBuf, &StuckPath)>, (p, s)| match best {
                Some((_, b)) if b.failures >= s.failures => best,
                _ => Some((p, s)),
            },
        )
    }
}

/// A batch the slot just started, for the engine to hand to the batch runner.
pub(super) struct Started {
    pub flight: u64,
    pub batch: Batch,
    pub delete_policy: DeletePolicy,
    /// `--max-delete` for the batch: what is left of the deletion budget (`None`: confirmed).
    pub max_delete: Option<u64>,
    /// See `BatchOptions::moved`.
    pub moved: Vec<Rename>,
    /// See `BatchOptions::deletes_unknown_contents`.
    pub deletes_unknown_contents: bool,
    /// See `BatchOptions::report_transfer_done`.
    pub report_transfer_done: bool,
    pub progress: bool,
    /// See `BatchOptions::growing`.
    pub growing: Vec<GrowingFile>,
    /// See `BatchOptions::by_content`.
    pub by_content: Arc<Vec<PathBuf>>,
    /// See `BatchOptions::checksum`.
    pub checksum: bool,
}

/// What a finished batch means for the workspace.
pub(super) struct Finished {
    /// The batch is on the remote (wholly, or all but paths failing on their own).
    pub landed: bool,
    /// The remote refused a proof-of-sync file: no proof, and not a stuck path either (no
    /// change of the user's failed; the remote goes `unverified` if it persists).
    pub proof_failed: bool,
    /// A safety rail stopped the batch: the workspace halts with this reason.
    pub halt: Option<String>,
    /// What the batch carried, when it landed.
    pub synced: Option<SyncedBatch>,
}

pub(super) struct RemoteSlot {
    key: RemoteKey,
    dest: Arc<Destination>,
    dirty: DirtySet,
    /// The oldest change in `dirty` (`None` when it is empty): a flush target at or above it
    /// is not reached whatever `synced_through` says.
    oldest_dirty: Option<Seq>,
    /// The batch whose transfer is running (at most one per remote).
    transferring: Option<Flight>,
    /// Batches whose transfer is complete, still in rsync's exit handshake; the next batch does
    /// not wait for them, their exit status confirms (or, rarely, retracts) the sync.
    finishing: Vec<Flight>,
    next_flight: u64,
    initial_done: bool,
    delete_policy: DeletePolicy,
    /// Every change up to this one is on the remote (unless still waiting, see `caught_up`).
    synced_through: Seq,
    health: Health,
    /// Paths failing on their own while everything else flows.
    stuck: StuckPaths,
    /// Files still being written: held between sends, appended when that is safe.
    growing: GrowingFiles,
    last_sync_unix_ms: Option<u64>,
    /// Both ends' rsync, from the last batch that checked them (see `Destination::sync`).
    rsync: Option<RsyncEnds>,
    files_sent: u64,
    bytes_sent: u64,
    /// Report rsync's progress on the next full sync (someone waits for the initial sync);
    /// cleared when that full sync ends.
    report_progress: bool,
    deletions: DeletionLedger,
    /// Deletions past the budget are held until then, in case the paths come back (a
    /// `node_modules` reinstall) before the workspace halts.
    over_budget_until: Option<Instant>,
    /// When the changes waiting in `dirty` were queued.
    arrivals: Arrivals,
    latencies: Latencies,
    /// The next full sync compares by checksum (`--checksum`): an affordable initial sync, a
    /// repair, the periodic pass.
    checksum_next_full: bool,
    /// The dirty set's revision last persisted (`Some`: the pending file exists).
    saved: Option<u64>,
    /// A blocking call of this flight passed its deadline: (flight, message naming the call).
    stalled: Option<(u64, String)>,
}

/// A batch about to delete more than the budget allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OverBudget {
    /// Distinct paths it would delete.
    pub count: u64,
    /// How long those deletions came in.
    pub span: Duration,
    pub limit: u64,
    /// Deleted within the window already.
    pub made: u64,
    /// The first of the paths it would delete (sorted), for the message.
    pub first: Vec<PathBuf>,
}

impl RemoteSlot {
    /// A newly attached remote: its first batch is a full sync (by checksum when
    /// `checksum`).
    pub fn new(
        key: RemoteKey,
        dest: Arc<Destination>,
        report_progress: bool,
        checksum: bool,
        now: Instant,
    ) -> Self {
        let mut dirty = DirtySet::default();
        dirty.mark_full(now);
        Self {
            key,
            dest,
            dirty,
            oldest_dirty: None,
            transferring: None,
            finishing: Vec::new(),
            next_flight: 0,
            initial_done: false,
            delete_policy: DeletePolicy::Capped,
            synced_through: Seq::default(),
            health: Health::default(),
            stuck: StuckPaths::default(),
            growing: GrowingFiles::default(),
            last_sync_unix_ms: None,
            rsync: None,
            files_sent: 0,
            bytes_sent: 0,
            report_progress,
            deletions: DeletionLedger::default(),
            over_budget_until: None,
            arrivals: Arrivals::default(),
            latencies: Latencies::default(),
            checksum_next_full: checksum,
            saved: None,
            stalled: None,
        }
    }

    pub fn key(&self) -> &RemoteKey {
        &self.key
    }

    pub fn name(&self) -> &str {
        &self.key.name
    }

    pub fn dest(&self) -> &Arc<Destination> {
        &self.dest
    }

    /// New settings for this remote (same name and target): the batches started after it use
    /// them; one already running keeps its own.
    pub fn set_dest(&mut self, dest: Arc<Destination>) {
        self.dest = dest;
    }

    pub fn is_transferring(&self) -> bool {
        self.transferring.is_some()
    }

    /// Queues one change from intake.
    pub fn queue(&mut self, queued: &Queued, now: Instant) {
        self.arrivals.push(now);
        match queued {
            Queued::Path {
                queue,
                changed,
                write,
                deletion,
                creation,
                is_dir,
                contents_unknown,
            } => {
                if *deletion || *creation {
                    self.growing.forget(changed);
                } else if *write == Write::Open(true)
                    && queue == changed
                    && self.growing.hold(changed, now)
                {
                    // Sent while being written less than a second ago: it waits for its
                    // resend time (or its close-write), the rest of the dirty set does not.
                    return;
                }
                self.dirty.add(queue, now);
                if *deletion {
                    self.dirty.note_delete(changed, *contents_unknown, now);
                } else if *creation {
                    self.dirty.note_created(changed, *is_dir);
                    self.deletions.recreated(changed, *is_dir);
                }
                match write {
                    Write::Closed => {
                        self.growing.closed(changed);
                        self.dirty.note_closed(changed);
                    }
                    Write::Open(open) => self.dirty.note_write(changed, *open),
                    Write::Unchanged => {}
                }
            }
            Queued::Rename(rename) => self.queue_rename(rename, now),
        }
    }

    fn queue_rename(&mut self, rename: &Rename, now: Instant) {
        self.growing.forget(&rename.from);
        self.growing.forget(&rename.to);
        self.dirty.note_write(&rename.from, false);
        self.dirty.note_created(&rename.to, rename.is_dir);
        self.deletions.recreated(&rename.to, rename.is_dir);
        // A running transfer over either end may have read or changed it half before, half
        // after the rename: the remote cannot be trusted to match, so rsync both ends.
        let racing = self
            .transferring
            .as_ref()
            .is_some_and(|f| f.touches(&rename.from) || f.touches(&rename.to));
        if racing {
            self.dirty.add(&rename.from, now);
            self.dirty.add(&rename.to, now);
            self.dirty.note_moved(rename.clone());
        } else {
            self.dirty.add_rename(rename.clone(), now);
        }
    }

    pub fn mark_full(&mut self, now: Instant) {
        self.dirty.mark_full(now);
    }

    /// Queues a full sync that compares every file by checksum.
    pub fn mark_checksum_full(&mut self, now: Instant) {
        self.dirty.mark_full(now);
        self.checksum_next_full = true;
    }

    /// Paths an earlier monitor knew were dirty (its pending file): the next full sync sends
    /// them by content. The file stays until they are on the remote.
    pub fn restore_persisted(&mut self, paths: &[PathBuf], now: Instant) {
        self.dirty.restore_known(paths, now);
        self.saved = Some(u64::MAX);
    }

    /// Nothing waits, runs or is stuck.
    pub fn is_clean(&self) -> bool {
        self.dirty.is_empty()
            && self.transferring.is_none()
            && self.finishing.is_empty()
            && self.stuck.is_empty()
    }

    /// Every path known to wait for this remote: queued, in a running batch (its known ones
    /// too) or stuck, at most `KNOWN_DIRTY_CAP` (what a later monitor sends by content).
    pub fn pending_paths(&self) -> Vec<PathBuf> {
        let flights = self.transferring.iter().chain(&self.finishing);
        let mut all: std::collections::BTreeSet<&PathBuf> = self.dirty.waiting_paths().collect();
        for flight in flights {
            all.extend(flight.scope.iter().flatten());
            all.extend(flight.known.iter());
        }
        all.extend(self.stuck.0.keys());
        all.into_iter()
            .take(crate::queue::KNOWN_DIRTY_CAP)
            .cloned()
            .collect()
    }

    /// The persisted copy's state: `(revision now, revision saved)`.
    pub fn persisted(&self) -> (u64, Option<u64>) {
        (self.dirty.revision(), self.saved)
    }

    /// Records that the pending file now holds `revision` (`None`: removed).
    pub fn set_saved(&mut self, revision: Option<u64>) {
        self.saved = revision;
    }

    /// Gives a newly non-empty dirty set its oldest change: every change added since the
    /// last call is numbered above `numbered_through` (a conservative bound: at worst a flush
    /// waits for a change made just after it).
    pub fn stamp_oldest_dirty(&mut self, numbered_through: Seq) {
        if self.dirty.is_empty() {
            self.oldest_dirty = None;
        } else if self.oldest_dirty.is_none() {
            self.oldest_dirty = Some(numbered_through.next());
        }
        self.growing.stamp(numbered_through);
    }

    /// When this remote's next batch is due, if one is waiting (a retry waits for its time).
    pub fn due_at(
        &self,
        now: Instant,
        settle: Duration,
        max_latency: Duration,
        explicit: Option<u64>,
    ) -> Option<Instant> {
        if self.transferring.is_some() {
            return None;
        }
        let due = match self.health.retry_at {
            Some(at) if at > now => Some(at),
            _ => [
                self.dirty.due_at(settle, max_latency),
                self.stuck.next_retry(),
                self.growing.next_due(),
            ]
            .into_iter()
            .flatten()
            .min(),
        };
        match self.over_budget_until {
            Some(until) if until > now && self.over_budget(now, explicit).is_some() => {
                due.map(|d| d.max(until))
            }
            _ => due,
        }
    }

    /// Deletions past the budget are being held (see `hold_over_budget`).
    pub fn held_for_budget(&self, now: Instant, explicit: Option<u64>) -> bool {
        self.over_budget_until.is_some_and(|until| until > now)
            && self.over_budget(now, explicit).is_some()
    }

    /// True when a batch may start now.
    pub fn ready(&self, now: Instant, settle: Duration, max_latency: Duration) -> bool {
        let retrying = self.health.retry_at.is_some();
        self.transferring.is_none()
            && self.health.retry_at.is_none_or(|at| at <= now)
            && (self
                .dirty
                .due_at(settle, max_latency)
                .is_some_and(|due| due <= now || retrying)
                || self.stuck.next_retry().is_some_and(|at| at <= now)
                || self.growing.next_due().is_some_and(|at| at <= now))
    }

    /// Deletions set aside for batches still running.
    fn reserved(&self) -> u64 {
        self.transferring
            .iter()
            .chain(&self.finishing)
            .map(|f| f.reserved)
            .sum()
    }

    /// The waiting deletions when they exceed what is left of the budget (never once the user
    /// confirmed them).
    pub fn over_budget(&self, now: Instant, explicit: Option<u64>) -> Option<OverBudget> {
        if self.delete_policy == DeletePolicy::Confirmed {
            return None;
        }
        let (count, span) = self.dirty.deletions();
        let left = self.deletions.left(now, explicit, self.reserved());
        (count > left).then(|| OverBudget {
            count,
            span,
            limit: self.deletions.limit(explicit),
            made: self.deletions.made_within(now),
            first: self
                .dirty
                .deleted_paths()
                .into_iter()
                .take(crate::batch::FIRST_PATHS)
                .collect(),
        })
    }

    /// The waiting deletions pass the budget: true while they are still held (the first time,
    /// the hold of `grace` starts), false once it is over and the workspace must halt.
    pub fn hold_over_budget(&mut self, now: Instant, grace: Duration) -> bool {
        let until = *self.over_budget_until.get_or_insert(now + grace);
        now < until
    }

    /// Takes the dirty set as the next batch. `newest` is the newest change numbered so far;
    /// `explicit` is the workspace's `max_delete`.
    pub fn start(&mut self, newest: Seq, now: Instant, explicit: Option<u64>) -> Option<Started> {
        // Stuck paths due for a retry go with the batch.
        for path in self.stuck.due(now) {
            self.dirty.add(&path, now);
        }
        // Growing files due for their next send, still being written.
        let (resend, held_oldest) = self.growing.take_due(now);
        for path in resend {
            self.dirty.add(&path, now);
            self.dirty.note_write(&path, true);
        }
        if let Some(oldest) = held_oldest {
            self.put_back_from(oldest);
        }
        let (known_deletions, _) = self.dirty.deletions();
        let deletes = self.dirty.deleted_paths();
        let moved = self.dirty.moved().to_vec();
        let deletes_unknown_contents = self.dirty.deletes_unknown_contents();
        // Loose git objects packed by `git gc` are deleted by rsync but are not a loss.
        let packed = self.dirty.packed_deletions();
        let confirmed = self.delete_policy == DeletePolicy::Confirmed;
        let max_delete =
            (!confirmed).then(|| self.deletions.left(now, explicit, self.reserved()) + packed);
        let open = self.dirty.take_open();
        let (batch, known) = self.dirty.take_with_known()?;
        // rsync reports the transfer complete even when --max-delete stopped deletions: a
        // capped batch that may delete waits for its exit status.
        let may_delete = known_deletions > 0
            || !moved.is_empty()
            || matches!(&batch, Batch::Paths { renames, .. } if !renames.is_empty());
        let known = Arc::new(known);
        let oldest = self.oldest_dirty.take().unwrap_or(newest);
        self.health.retry_at = None;
        self.next_flight += 1;
        let growing = self.growing.sending(self.next_flight, &batch, &open, now);
        let full = batch == Batch::Full;
        let checksum = full && std::mem::take(&mut self.checksum_next_full);
        let scope = match &batch {
            Batch::Full => None,
            Batch::Paths { renames, paths } => Some(
                paths
                    .iter()
                    .chain(fallback_paths(renames))
                    .cloned()
                    .collect(),
            ),
        };
        self.transferring = Some(Flight {
            id: self.next_flight,
            newest,
            oldest,
            synced_before: self.synced_through,
            len: if full {
                known.len().max(1)
            } else {
                batch.path_count()
            },
            full,
            scope,
            known: known.clone(),
            checksum,
            progress: None,
            reserved: known_deletions,
            deletes,
            moved: moved.clone(),
            deletes_unknown_contents,
            packed,
            confirmed,
            arrivals: std::mem::take(&mut self.arrivals),
            oldest_wait: None,
        });
        Some(Started {
            flight: self.next_flight,
            delete_policy: self.delete_policy,
            report_transfer_done: max_delete.is_none() || !may_delete,
            max_delete,
            moved,
            deletes_unknown_contents,
            progress: self.report_progress && full,
            growing,
            batch,
            by_content: known,
            checksum,
        })
    }

    /// A blocking call of `flight` passed its deadline (`Some`, naming it) or returned after
    /// all (`None`). Ignored once the flight is over.
    pub fn set_stalled(&mut self, flight: u64, stalled: Option<String>) {
        let running = self
            .transferring
            .iter()
            .chain(&self.finishing)
            .any(|f| f.id == flight);
        match stalled {
            Some(message) if running => {
                tracing::warn!(remote = %self.key.name, "stalled: {message}");
                self.stalled = Some((flight, message));
            }
            Some(_) => {}
            None => {
                if self.stalled.as_ref().is_some_and(|(f, _)| *f == flight) {
                    tracing::info!(remote = %self.key.name, "no longer stalled");
                    self.stalled = None;
                }
            }
        }
    }

    /// The message of a call past its deadline, while one is.
    pub fn stalled(&self) -> Option<&str> {
        self.stalled.as_ref().map(|(_, message)| message.as_str())
    }

    pub fn set_progress(&mut self, flight: u64, progress: SyncProgress) {
        if let Some(f) = self.transferring.as_mut().filter(|f| f.id == flight) {
            f.progress = Some(progress);
        }
    }

    /// The transfer of a batch is complete: count it as synced (its exit status confirms
    /// later) and let the next batch start without waiting for rsync's exit handshake.
    /// Returns whether it was this slot's running batch (it is then on the remote).
    pub fn transferred(&mut self, flight: u64, now_unix_ms: u64, now: Instant) -> bool {
        if self.transferring.as_ref().is_none_or(|f| f.id != flight) {
            return false;
        }
        let Some(mut flight) = self.transferring.take() else {
            return false;
        };
        // Counted now, when the data is there; its exit figures add the bytes later.
        let arrivals = std::mem::take(&mut flight.arrivals);
        flight.oldest_wait = arrivals
            .oldest()
            .map(|at| now.saturating_duration_since(at));
        self.latencies.landed(arrivals, now, 0, 0);
        self.synced_through = self.synced_through.max(flight.newest);
        self.stuck.landed(&flight, &[]);
        self.initial_done |= flight.full;
        // A watched full sync is over once transferred: a resync queued now runs quietly.
        self.report_progress &= !flight.full;
        self.health.succeeded();
        self.last_sync_unix_ms = Some(now_unix_ms);
        self.finishing.push(flight);
        true
    }

    /// Applies a batch's exit: success, vanished files queued again, or a failure that puts
    /// the batch back and backs off. `None` when the batch is not this slot's (abandoned).
    pub fn finished(
        &mut self,
        flight: u64,
        batch: Batch,
        outcome: Outcome,
        now: Instant,
        now_unix_ms: u64,
        grace: Duration,
    ) -> Option<Finished> {
        let mut flight = if self.transferring.as_ref().is_some_and(|f| f.id == flight) {
            self.transferring.take()
        } else {
            self.finishing
                .iter()
                .position(|f| f.id == flight)
                .map(|i| self.finishing.remove(i))
        }?;
        if self.stalled.as_ref().is_some_and(|(f, _)| *f == flight.id) {
            self.stalled = None;
        }
        let name = self.key.name.clone();
        tracing::trace!(remote = %name, flight = flight.id, "rsync exited");
        let Outcome {
            class,
            stats,
            error,
            elapsed,
            halt,
            vanished,
            failed_paths,
            sent_lengths,
            moved: outcome_moved,
            rsync,
        } = outcome;
        if rsync.is_some() {
            self.rsync = rsync;
        }
        self.growing.finished(flight.id, &sent_lengths);
        let full = batch == Batch::Full;
        // What rsync deleted counts against the budget whatever the exit; a confirmed batch's
        // deletions were the user's decision and clear the slate.
        // rsync moving a directory deletes the old subtree it re-creates: not a loss.
        let deleted = stats
            .files_deleted
            .saturating_sub(flight.packed)
            .saturating_sub(outcome_moved);
        self.deletions.record(now, &flight.deletes, deleted);
        if flight.confirmed {
            self.deletions.forgive();
        }
        if full {
            // The watched full sync is over (whatever its outcome): later ones run quietly.
            self.report_progress = false;
        }
        let arrivals = std::mem::take(&mut flight.arrivals);
        let landed = matches!(
            (class, &failed_paths),
            (ExitClass::Partial, Some(_)) | (ExitClass::Success | ExitClass::Vanished, _)
        );
        let oldest_change_us = flight
            .oldest_wait
            .or_else(|| {
                arrivals
                    .oldest()
                    .map(|at| now.saturating_duration_since(at))
            })
            .map(|wait| wait.as_micros() as u64);
        let synced = if landed {
            self.latencies
                .landed(arrivals, now, stats.files_transferred, stats.bytes_sent);
            let throughput = self.latencies.throughput(now);
            Some(SyncedBatch {
                full,
                paths: if full { 0 } else { flight.len as u64 },
                files: stats.files_transferred,
                bytes: stats.bytes_sent,
                oldest_change_us,
                latency_p50_us: throughput.map(|t| t.latency_p50_us),
                latency_p99_us: throughput.map(|t| t.latency_p99_us),
            })
        } else {
            self.arrivals.restore(arrivals);
            None
        };
        let mut proof_failed = false;
        let failed_paths = failed_paths.map(|mut failures| {
            failures.retain(|f| {
                let proof = is_proof_file(&f.path);
                if proof {
                    tracing::warn!(remote = %name, path = %f.path.display(), "the remote refused the proof-of-sync file: {}", f.message);
                }
                proof_failed |= proof;
                !proof
            });
            failures
        });
        match (class, failed_paths) {
            (ExitClass::Partial, Some(failures)) => {
                // Everything but the failing paths landed: no whole-remote backoff.
                self.synced_through = self.synced_through.max(flight.newest);
                if let Some(paths) = vanished {
                    for path in paths {
                        self.dirty.add(&path, now);
                    }
                }
                for f in &failures {
                    tracing::warn!(remote = %name, path = %f.path.display(), "path failed: {}", f.message);
                }
                self.stuck.failed(&flight, failures, now, now_unix_ms);
                self.landed(full, &stats, now_unix_ms);
            }
            (ExitClass::Success | ExitClass::Vanished, _) => {
                self.stuck.landed(&flight, &[]);
                if class == ExitClass::Vanished && !full {
                    // A file that vanished mid-transfer may have been renamed, not deleted:
                    // sync it again (its delete or rename event follows the same path).
                    self.synced_through = self.synced_through.min(flight.synced_before);
                    self.put_back_from(flight.oldest);
                    match vanished {
                        Some(paths) => {
                            for path in paths {
                                self.dirty.add(&path, now);
                            }
                        }
                        None => {
                            self.restore(batch, &flight, now);
                            self.put_back_known(&flight, now);
                        }
                    }
                }
                if class == ExitClass::Success || full {
                    self.synced_through = self.synced_through.max(flight.newest);
                }
                self.landed(full, &stats, now_unix_ms);
                tracing::info!(
                    remote = %name,
                    full,
                    paths = flight.len,
                    files = stats.files_transferred,
                    deleted = stats.files_deleted,
                    bytes = stats.bytes_sent,
                    ms = elapsed.as_millis() as u64,
                    "synced"
                );
            }
            (_, _) => {
                self.synced_through = self.synced_through.min(flight.synced_before);
                self.restore(batch, &flight, now);
                self.put_back_known(&flight, now);
                self.put_back_from(flight.oldest);
                let message = error.unwrap_or_else(|| format!("rsync failed ({class:?})"));
                let attempt = self.health.failures + 1;
                let delay = self.health.failed(class, message.clone(), now, now_unix_ms);
                tracing::warn!(
                    remote = %name,
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    ?class,
                    "sync failed: {message}"
                );
            }
        }
        // An incremental batch stopped by --max-delete is held first, like deletions past the
        // budget found before a batch: what rsync was deleting may be on its way back (a
        // directory re-created a moment ago, still filling). The retry after the backoff
        // halts once the hold is over.
        let halt = match halt {
            Some(reason) if class == ExitClass::MaxDelete && !full => {
                let until = *self.over_budget_until.get_or_insert(now + grace);
                (now >= until).then_some(reason)
            }
            other => other,
        };
        Some(Finished {
            landed: landed && !proof_failed,
            proof_failed,
            halt,
            synced,
        })
    }

    /// A batch (`full`: a full sync) is on the remote: health, counters, and what a full sync
    /// learns (the tree's size; its confirmation is used up).
    fn landed(&mut self, full: bool, stats: &RsyncStats, now_unix_ms: u64) {
        self.health.succeeded();
        // Whatever held deletions past the budget resolved itself.
        self.over_budget_until = None;
        self.initial_done |= full;
        if full {
            self.delete_policy = DeletePolicy::Capped;
            self.deletions.tree_seen(stats.files_total);
        }
        self.files_sent += stats.files_transferred;
        self.bytes_sent += stats.bytes_sent;
        self.last_sync_unix_ms = Some(now_unix_ms);
    }

    /// A batch that did not land waits again, still a move when it was one (its retry's dry
    /// run must not count the moved subtree as a loss) and still deleting unknown contents
    /// when it did (its retry is dry-run first too).
    fn restore(&mut self, batch: Batch, flight: &Flight, now: Instant) {
        self.dirty.restore(batch, now);
        for rename in &flight.moved {
            self.dirty.note_moved(rename.clone());
        }
        if flight.deletes_unknown_contents {
            self.dirty.restore_unknown_contents();
        }
    }

    /// Changes from `oldest` on are waiting again (a failed or abandoned batch).
    fn put_back_from(&mut self, oldest: Seq) {
        self.oldest_dirty = Some(self.oldest_dirty.map_or(oldest, |o| o.min(oldest)));
    }

    /// A failed batch's known paths (and a full sync's checksum) go with the next one.
    fn put_back_known(&mut self, flight: &Flight, now: Instant) {
        self.dirty.restore_known(flight.known.iter(), now);
        self.checksum_next_full |= flight.full && flight.checksum;
    }

    /// Abandons every batch (the runner kills them); their changes count as waiting again.
    /// Returns the abandoned flights.
    pub fn abandon_all(&mut self) -> Vec<u64> {
        self.take_flights().iter().map(|f| f.id).collect()
    }

    fn take_flights(&mut self) -> Vec<Flight> {
        let mut flights: Vec<Flight> = self
            .transferring
            .take()
            .into_iter()
            .chain(self.finishing.drain(..))
            .collect();
        for flight in &mut flights {
            self.put_back_from(flight.oldest);
            self.arrivals.restore(std::mem::take(&mut flight.arrivals));
            // Killed mid-append, the remote copy's length is unknown.
            self.growing.finished(flight.id, &[]);
        }
        // Its runner is gone; a call it left hanging is reported by the next batch waiting
        // behind it.
        self.stalled = None;
        flights
    }

    /// A halt: running batches are abandoned and the remote will need a full sync, which
    /// still knows what they were sending.
    pub fn interrupt(&mut self, now: Instant) -> Vec<u64> {
        if self.transferring.is_none() && self.finishing.is_empty() {
            return Vec::new();
        }
        let flights = self.take_flights();
        self.dirty.mark_full(now);
        for flight in &flights {
            self.dirty.restore_known(flight.scope.iter().flatten(), now);
            self.put_back_known(flight, now);
        }
        flights.iter().map(|f| f.id).collect()
    }

    /// A halt was lifted: the next full sync deletes under `policy`, and the deletions seen
    /// before the halt are forgotten (the full sync re-judges the tree). A confirmation is
    /// never weakened by a later, unconfirming lift.
    pub fn after_halt(&mut self, policy: DeletePolicy) {
        if self.delete_policy != DeletePolicy::Confirmed {
            self.delete_policy = policy;
        }
        self.dirty.reset_deletions();
    }

    /// A remote in backoff retries at once (the user asked for action).
    pub fn retry_now(&mut self, now: Instant) {
        if self.health.retry_at.is_some() {
            self.health.retry_at = Some(now);
        }
        self.stuck.retry_now(now);
    }

    /// True when the remote holds every change numbered `seq` or lower.
    pub fn caught_up(&self, seq: Seq) -> bool {
        // Nothing numbered `seq` or lower may still wait in the queue or in a running
        // transfer (a batch that failed after reporting its transfer done is back in the
        // queue, while a later batch may have raised `synced_through` past it).
        let waiting = self.oldest_dirty.is_some_and(|o| o <= seq)
            || self.stuck.oldest().is_some_and(|o| o <= seq)
            || self.growing.held_oldest().is_some_and(|o| o <= seq)
            || self.transferring.as_ref().is_some_and(|f| f.oldest <= seq);
        !waiting
            && (self.synced_through >= seq
                || (self.initial_done
                    && self.dirty.is_empty()
                    && self.transferring.is_none()
                    && self.health.failures == 0
                    && self.stuck.is_empty()
                    && self.growing.held() == 0))
    }

    fn state(&self, halted: bool, paused: bool) -> RemoteState {
        if halted {
            RemoteState::Halted
        } else if paused {
            RemoteState::Paused
        } else if self.transferring.is_some() {
            if self.initial_done {
                RemoteState::Syncing
            } else {
                RemoteState::InitialSync
            }
        } else if self.health.failures > 0 {
            if self.health.alerting {
                RemoteState::Error
            } else {
                RemoteState::Backoff
            }
        } else if let Some((_, worst)) = self.stuck.worst() {
            if worst.failures >= PATH_ERROR_AFTER {
                RemoteState::Error
            } else {
                RemoteState::Backoff
            }
        } else if !self.initial_done {
            RemoteState::InitialSync
        } else {
            RemoteState::InSync
        }
    }

    /// This remote's status line; `root_stalled`: a call on the workspace root passed its
    /// deadline, which stalls every remote.
    pub fn status(
        &self,
        halted: bool,
        paused: bool,
        now: Instant,
        root_stalled: Option<&str>,
    ) -> RemoteStatus {
        let worst = self.stuck.worst();
        let (failures, last_error, next_retry) = match worst {
            Some((path, stuck)) if self.health.failures == 0 => (
                stuck.failures,
                Some(format!(
                    "{} failed {} times ({} paths failing): {}",
                    path.display(),
                    stuck.failures,
                    self.stuck.len(),
                    stuck.message
                )),
                self.stuck.0.values().map(|s| s.retry_unix_ms).min(),
            ),
            _ => (
                self.health.failures,
                self.health.last_error.clone(),
                if self.health.failures > 0 {
                    self.health.retry_unix_ms
                } else {
                    None
                },
            ),
        };
        let stalled = root_stalled
            .or(self.stalled())
            .filter(|_| !halted && !paused);
        let (state, last_error) = match stalled {
            Some(message) => (RemoteState::Stalled, Some(message.to_owned())),
            None => (self.state(halted, paused), last_error),
        };
        RemoteStatus {
            name: self.key.name.clone(),
            state,
            last_sync_unix_ms: self.last_sync_unix_ms,
            files_sent: self.files_sent,
            bytes_sent: self.bytes_sent,
            pending: self.dirty.pending()
                + self.transferring.as_ref().map_or(0, |f| f.len as u64)
                + self.stuck.len()
                + self.growing.held(),
            consecutive_failures: failures,
            last_error,
            next_retry_unix_ms: next_retry,
            progress: self.transferring.as_ref().and_then(|f| f.progress),
            verified_unix_ms: None,
            throughput: self.latencies.throughput(now),
            transport: Some(self.dest.transport()),
            rsync: self.rsync.clone(),
        }
    }
}

/// One of this monitor's proof-of-sync files, at the workspace root.
fn is_proof_file(path: &Path) -> bool {
    path.parent()
        .is_some_and(|p| p.as_os_str().is_empty() || p == Path::new("."))
        && path.file_name().is_some_and(|n| {
            n.to_string_lossy()
                .starts_with(wsync_core::rsync::proof_prefix())
        })
}
