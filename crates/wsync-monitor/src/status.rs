//! Status and flush bookkeeping: the [`MonitorStatus`] snapshot, its rate-limited emission on
//! stdout (at most one per [`STATUS_INTERVAL`], the latest state always sent), and pending
//! flushes (cookie seen → target sequence → every remote caught up, or the deadline).

use std::path::Path;
use std::time::{Duration, Instant};

use wsync_core::monitor_proto::{MonitorEvent, MonitorStatus, RemoteState, RemoteStatus};
use wsync_core::rsync::ExitClass;

use crate::engine::{Engine, Slot};

/// Minimum spacing of status lines.
pub const STATUS_INTERVAL: Duration = Duration::from_millis(100);

/// A flush waiting for its cookie and then for every remote.
pub(crate) struct PendingFlush {
    pub id: u64,
    pub deadline: Instant,
    /// Cookie file name in the root, until its event has been seen.
    pub cookie: Option<String>,
    /// Every change up to this sequence number must be on every remote.
    pub target: Option<u64>,
}

impl PendingFlush {
    pub fn remove_cookie(&self, root: &Path) {
        if let Some(name) = &self.cookie {
            let _ = std::fs::remove_file(root.join(name));
        }
    }
}

fn remote_state(engine: &Engine, slot: &Slot) -> RemoteState {
    if engine.halted.is_some() {
        RemoteState::Halted
    } else if engine.paused {
        RemoteState::Paused
    } else if slot.in_flight.is_some() {
        if slot.initial_done {
            RemoteState::Syncing
        } else {
            RemoteState::InitialSync
        }
    } else if slot.failures > 0 {
        if slot.last_class == Some(ExitClass::Fatal) {
            RemoteState::Error
        } else {
            RemoteState::Backoff
        }
    } else if !slot.initial_done {
        RemoteState::InitialSync
    } else {
        RemoteState::InSync
    }
}

impl Engine {
    pub(crate) fn status(&self) -> MonitorStatus {
        MonitorStatus {
            workspace: self.workspace.clone(),
            watches: self.watcher.as_ref().map_or(0, |w| w.count()),
            overflows: self.overflows,
            rescans: self.rescans,
            watch_error: self.watch_error.clone(),
            halted: self.halted.clone(),
            paused: self.paused,
            remotes: self
                .slots
                .iter()
                .map(|(name, slot)| RemoteStatus {
                    name: name.clone(),
                    state: remote_state(self, slot),
                    last_sync_unix_ms: slot.last_sync_unix_ms,
                    files_sent: slot.files_sent,
                    bytes_sent: slot.bytes_sent,
                    pending: slot.dirty.pending()
                        + slot.in_flight.as_ref().map_or(0, |f| f.len as u64),
                    consecutive_failures: slot.failures,
                    last_error: slot.last_error.clone(),
                    next_retry_unix_ms: if slot.failures > 0 {
                        slot.retry_unix_ms
                    } else {
                        None
                    },
                    progress: slot.in_flight.as_ref().and_then(|f| f.progress),
                })
                .collect(),
        }
    }

    /// Sends the status if it changed and the rate limit allows (or `force`).
    pub(crate) fn emit_status(&mut self, now: Instant, force: bool) {
        if !force && self.last_emit.is_some_and(|at| now < at + STATUS_INTERVAL) {
            return;
        }
        let status = self.status();
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        self.last_status = Some(status.clone());
        self.last_emit = Some(now);
        let _ = self.events.send(MonitorEvent::Status { status });
    }

    /// When the next rate-limited status may go out, if one might be due.
    pub(crate) fn next_status_at(&self) -> Option<Instant> {
        let at = self.last_emit? + STATUS_INTERVAL;
        (self.last_status.as_ref() != Some(&self.status())).then_some(at)
    }

    pub(crate) fn on_cookie(&mut self, name: &str) {
        let seq = self.seq;
        let root = self.root.clone();
        for flush in &mut self.flushes {
            if flush.cookie.as_deref() == Some(name) {
                flush.remove_cookie(&root);
                flush.cookie = None;
                flush.target = Some(seq);
            }
        }
    }

    /// The event queue overflowed: a cookie created before it may never be reported. Flushes
    /// still waiting for theirs wait for the full sync the overflow queued instead.
    pub(crate) fn cookies_lost(&mut self) {
        let seq = self.seq;
        let root = self.root.clone();
        for flush in &mut self.flushes {
            if flush.cookie.is_some() && flush.target.is_none() {
                flush.remove_cookie(&root);
                flush.cookie = None;
                flush.target = Some(seq);
            }
        }
    }

    /// Answers flushes whose remotes all caught up, and those past their deadline.
    pub(crate) fn check_flushes(&mut self, now: Instant) {
        if self.flushes.is_empty() {
            return;
        }
        let active = !self.paused && self.halted.is_none();
        let mut answered = Vec::new();
        self.flushes.retain(|flush| {
            let lagging: Vec<String> = self
                .slots
                .iter()
                .filter(|(_, slot)| {
                    !active || flush.target.is_none_or(|target| !slot.caught_up(target))
                })
                .map(|(name, _)| name.clone())
                .collect();
            let complete = flush.target.is_some() && lagging.is_empty();
            if complete || now >= flush.deadline {
                flush.remove_cookie(&self.root);
                answered.push((flush.id, lagging));
                false
            } else {
                true
            }
        });
        if answered.is_empty() {
            return;
        }
        self.emit_status(now, true);
        for (id, lagging) in answered {
            if !lagging.is_empty() {
                tracing::info!(id, ?lagging, "flush timed out");
            }
            let _ = self.events.send(MonitorEvent::Flushed { id, lagging });
        }
    }
}
