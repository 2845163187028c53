//! Batches in flight: starting at most one transfer per remote when its batch is due
//! (`dispatch`), the early "transfer complete" report that lets the next batch start while
//! rsync idles in its exit handshake (`on_transferred`), and applying each exit status
//! (`on_done`: success, vanished files re-queued, failure with backoff, or a safety halt).

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use tokio::task::JoinHandle;
use wsync_core::rsync::ExitClass;

use crate::engine::{unix_ms, Engine, Slot};
use crate::queue::Batch;
use crate::worker::{backoff_delay, Outcome, SyncOptions};

pub(crate) struct InFlight {
    pub id: u64,
    pub seq: u64,
    /// `synced_seq` before this batch, restored if it fails after reporting its transfer done.
    pub prev_synced: u64,
    pub len: usize,
    pub full: bool,
    /// The paths the batch touches (`None`: everything, a full sync).
    pub scope: Option<Vec<PathBuf>>,
    pub handle: JoinHandle<()>,
}

impl InFlight {
    /// True when the batch touches `path`, something below it, or a directory above it.
    pub fn touches(&self, path: &Path) -> bool {
        self.scope.as_ref().is_none_or(|paths| {
            paths
                .iter()
                .any(|q| q.starts_with(path) || path.starts_with(q))
        })
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

impl Engine {
    pub(crate) fn dispatch(&mut self, now: Instant) {
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
            let opts = SyncOptions {
                first: !slot.initial_done,
                confirmed: slot.confirmed,
                max_delete: self.max_delete,
                exclude_from: self.rules_file.clone(),
            };
            let (dest, root, tx) = (slot.dest.clone(), self.root.clone(), self.done_tx.clone());
            let (name, generation) = (name.clone(), slot.generation);
            slot.next_flight += 1;
            let flight = slot.next_flight;
            let len = batch.path_count();
            let batch_full = batch == Batch::Full;
            let scope = match &batch {
                Batch::Full => None,
                Batch::Paths { renames, paths } => Some(
                    paths
                        .iter()
                        .chain(crate::renames::fallback_paths(renames))
                        .cloned()
                        .collect(),
                ),
            };
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
                let outcome = dest.sync(&root, &batch, &opts, transferred).await;
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
                scope,
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
    pub(crate) fn on_transferred(&mut self, name: &str, generation: u64, flight: u64) {
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

    pub(crate) fn on_done(&mut self, done: Done) {
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
            halt,
            vanished,
        } = done.outcome;
        slot.last_class = Some(class);
        let full = done.batch == Batch::Full;
        match class {
            ExitClass::Success | ExitClass::Vanished => {
                if class == ExitClass::Vanished && !full {
                    // A file that vanished mid-transfer may have been renamed, not deleted:
                    // sync it again (its delete or rename event follows the same path).
                    slot.synced_seq = slot.synced_seq.min(flight.prev_synced);
                    match vanished {
                        Some(paths) => {
                            for path in paths {
                                slot.dirty.add(&path, now);
                            }
                        }
                        None => slot.dirty.restore(done.batch.clone(), now),
                    }
                }
                if class == ExitClass::Success || full {
                    slot.synced_seq = slot.synced_seq.max(flight.seq);
                }
                slot.failures = 0;
                slot.retry_at = None;
                slot.retry_unix_ms = None;
                slot.last_error = None;
                slot.initial_done |= full;
                if full {
                    slot.confirmed = false;
                }
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
        if let Some(reason) = halt {
            self.halt_as(reason, true);
        }
    }
}
