//! Batches in flight: starting at most one transfer per remote when its batch is due
//! (`dispatch`), the early "transfer complete" report that lets the next batch start while
//! rsync idles in its exit handshake (`on_transferred`), and applying each exit status
//! (`on_done`: success, vanished files re-queued, failure with backoff, or a safety halt).

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use tokio::task::JoinHandle;
use wsync_core::monitor_proto::SyncProgress;
use wsync_core::rsync::ExitClass;

use crate::engine::{unix_ms, Engine, Slot};
use crate::queue::Batch;
use crate::worker::{backoff_delay, Outcome, SyncOptions};

pub(crate) struct InFlight {
    pub id: u64,
    pub seq: u64,
    /// The lowest sequence number of a change in the batch.
    pub floor: u64,
    /// `synced_seq` before this batch, restored if it fails after reporting its transfer done.
    pub prev_synced: u64,
    pub len: usize,
    pub full: bool,
    /// The paths the batch touches (`None`: everything, a full sync).
    pub scope: Option<Vec<PathBuf>>,
    pub handle: JoinHandle<()>,
    /// The latest progress of a full sync (see `crate::progress`).
    pub progress: Option<SyncProgress>,
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
    /// A full sync's progress (at most one per status interval).
    Progress {
        name: String,
        generation: u64,
        flight: u64,
        progress: SyncProgress,
    },
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
        if ready.is_empty() || !self.root_ok() || self.mass_deletion(&ready) {
            return;
        }
        self.note_floors();
        for i in ready {
            let seq = self.seq;
            let (name, slot) = &mut self.slots[i];
            let Some(batch) = slot.dirty.take() else {
                continue;
            };
            let floor = slot.dirty_floor.take().unwrap_or(seq);
            slot.retry_at = None;
            let opts = SyncOptions {
                first: !slot.initial_done,
                confirmed: slot.confirmed,
                precheck: slot.precheck,
                max_delete: self.max_delete,
                exclude_from: self.rules_file.clone(),
                // Read at dispatch, so an edited .wsyncignore protects at once.
                protect: wsync_core::excludes::protect_patterns(
                    &self.root,
                    &self.protect_source.0,
                    self.protect_source.1,
                ),
                progress: slot.report_progress && batch == Batch::Full,
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
                let (progress_tx, progress_name) = (tx.clone(), name.clone());
                let progress = move |progress| {
                    let _ = progress_tx.send(WorkerMsg::Progress {
                        name: progress_name.clone(),
                        generation,
                        flight,
                        progress,
                    });
                };
                let outcome = dest.sync(&root, &batch, &opts, transferred, progress).await;
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
                floor,
                prev_synced: slot.synced_seq,
                len,
                full: batch_full,
                scope,
                handle,
                progress: None,
            });
        }
    }

    /// The safety rail for deletion storms that do not (yet) look like a vanished root: a
    /// batch about to propagate more deletions than `max_delete` halts instead, with nothing
    /// sent, until `resume` confirms. An emptied root is left to the worker's own check (its
    /// reason names the empty root). Returns true when it halted.
    fn mass_deletion(&mut self, ready: &[usize]) -> bool {
        let storm = ready.iter().find_map(|&i| {
            let slot = &self.slots[i].1;
            let (count, span) = slot.dirty.deletions();
            (!slot.confirmed && count > self.max_delete).then_some((count, span))
        });
        let Some((count, span)) = storm else {
            return false;
        };
        if crate::worker::root_is_empty(&self.root) {
            return false;
        }
        self.halt_as(
            format!(
                "mass deletion: {count} paths deleted in {:.1} s in workspace root {} (more than max_delete = {}); nothing is deleted remotely until `wsync resume` confirms it",
                span.as_secs_f64(),
                self.root.display(),
                self.max_delete
            ),
            true,
        );
        true
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
        // A watched full sync is over once transferred: a resync queued now runs quietly.
        slot.report_progress &= !flight.full;
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
        if full {
            // The watched full sync is over (whatever its outcome): later ones run quietly.
            slot.report_progress = false;
        }
        match class {
            ExitClass::Success | ExitClass::Vanished => {
                if class == ExitClass::Vanished && !full {
                    // A file that vanished mid-transfer may have been renamed, not deleted:
                    // sync it again (its delete or rename event follows the same path).
                    slot.synced_seq = slot.synced_seq.min(flight.prev_synced);
                    slot.lower_floor(flight.floor);
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
                    slot.precheck = false;
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
                slot.lower_floor(flight.floor);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wsync_core::monitor_proto::MonitorTunables;
    use wsync_core::registry::Remote;
    use wsync_core::remote::RemoteTarget;
    use wsync_core::rsync::RsyncStats;

    use super::*;
    use crate::watch::{Change, ChangeKind};

    fn outcome(class: ExitClass) -> Outcome {
        Outcome {
            class,
            stats: RsyncStats::default(),
            error: (class != ExitClass::Success).then(|| "failed".into()),
            elapsed: Duration::ZERO,
            halt: None,
            vanished: None,
        }
    }

    /// Dispatches the slot's batch (the task never runs: the runtime is not driven) and
    /// returns its flight id and batch.
    fn dispatch_one(engine: &mut Engine) -> (u64, Batch) {
        let before = engine.slots[0].1.dirty.take();
        let batch = before.clone().expect("something to dispatch");
        engine.slots[0]
            .1
            .dirty
            .restore(batch.clone(), Instant::now());
        engine.dispatch(Instant::now() + Duration::from_secs(5));
        let flight = engine.slots[0].1.in_flight.as_ref().expect("dispatched");
        (flight.id, batch)
    }

    fn done(engine: &mut Engine, flight: u64, batch: Batch, class: ExitClass) {
        let (name, generation) = (engine.slots[0].0.clone(), engine.slots[0].1.generation);
        engine.on_done(Done {
            name,
            generation,
            flight,
            batch,
            outcome: outcome(class),
        });
    }

    fn transferred(engine: &mut Engine, flight: u64) {
        let (name, generation) = (engine.slots[0].0.clone(), engine.slots[0].1.generation);
        engine.on_transferred(&name, generation, flight);
    }

    fn change(engine: &mut Engine, path: &str) -> u64 {
        let change = Change {
            path: path.into(),
            kind: ChangeKind::Closed,
            is_dir: false,
        };
        engine.on_changes(vec![change], Instant::now());
        engine.seq
    }

    /// Review finding: batch A reports its transfer done, B starts, A then fails (its paths go
    /// back to the queue), B succeeds and raises `synced_seq` past A: A's changes are still
    /// not on the remote, so no flush may count them as caught up.
    #[test]
    fn a_late_failure_keeps_the_remote_behind_after_a_later_success() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _enter = runtime.enter();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("src");
        std::fs::create_dir(&root).unwrap();
        let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
        let tunables = MonitorTunables {
            settle_ms: 5,
            max_latency_ms: 100,
        };
        let mut engine = Engine::new(root, "ws".into(), tunables, tmp.path().into(), events);
        engine.add_remote(
            Remote {
                name: "dst".into(),
                target: RemoteTarget::Local {
                    path: tmp.path().join("dst"),
                },
            },
            false,
        );
        let (initial, batch) = dispatch_one(&mut engine);
        transferred(&mut engine, initial);
        done(&mut engine, initial, batch, ExitClass::Success);
        let seq_a = change(&mut engine, "a");
        let (a, batch_a) = dispatch_one(&mut engine);
        transferred(&mut engine, a);
        assert!(engine.slots[0].1.caught_up(seq_a), "transfer of A done");
        let seq_b = change(&mut engine, "b");
        let (b, batch_b) = dispatch_one(&mut engine);
        assert!(!engine.slots[0].1.caught_up(seq_b), "B is running");
        done(&mut engine, a, batch_a, ExitClass::Partial);
        transferred(&mut engine, b);
        done(&mut engine, b, batch_b, ExitClass::Success);
        let slot = &engine.slots[0].1;
        assert!(slot.synced_seq >= seq_b, "B raised synced_seq");
        assert!(!slot.caught_up(seq_a), "A's change is queued again");
        assert!(!slot.caught_up(seq_b));
        // A's retry succeeds: caught up.
        engine.slots[0].1.retry_at = None;
        let (retry, batch) = dispatch_one(&mut engine);
        transferred(&mut engine, retry);
        done(&mut engine, retry, batch, ExitClass::Success);
        assert!(engine.slots[0].1.caught_up(seq_b));
    }
}
