//! The event stream's fan-out: every subscribed connection has a bounded queue here, and
//! [`Subscribers::publish`] puts an event in each matching queue without ever waiting. A queue
//! that is full means its connection fell behind: that subscriber is dropped (its connection
//! writes what is queued, then a final `lagged` event, and closes), so a client that stops
//! reading costs at most [`QUEUE`] events and never slows the daemon.
//!
//! [`status_changes`] turns two successive monitor reports into the events between them; it is
//! pure and unit-tested. Publishing happens under the daemon's lock (from the supervisor and the
//! request handlers), which is why it must not block.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use wsync_core::monitor_proto::{MonitorStatus, RemoteState, RemoteStatus, SyncedBatch};
use wsync_core::protocol::{Event, EventKind};

/// Events that may wait for one subscriber before it is dropped as lagging.
pub const QUEUE: usize = 256;

/// Subscribed connections at most; one more is refused (each costs a queue and a task).
pub const MAX_SUBSCRIBERS: usize = 64;

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
#[error("{MAX_SUBSCRIBERS} clients are subscribed already; close one (`wsync events`, `wsync status --watch`, an editor) and retry")]
pub struct TooManySubscribers;

struct Subscriber {
    id: u64,
    workspace: Option<String>,
    queue: mpsc::Sender<Event>,
    lagged: Arc<AtomicBool>,
}

/// One connection's end of a subscription.
#[derive(Debug)]
pub struct Subscription {
    pub id: u64,
    pub events: mpsc::Receiver<Event>,
    lagged: Arc<AtomicBool>,
}

impl Subscription {
    /// Whether the queue was closed because it overflowed (rather than at shutdown).
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }
}

/// Every live subscription.
#[derive(Default)]
pub struct Subscribers {
    list: Vec<Subscriber>,
    next_id: u64,
}

impl Subscribers {
    /// Registers a subscriber to `workspace`'s events (every workspace's when `None`).
    pub fn subscribe(
        &mut self,
        workspace: Option<String>,
    ) -> Result<Subscription, TooManySubscribers> {
        self.list.retain(|s| !s.queue.is_closed());
        if self.list.len() >= MAX_SUBSCRIBERS {
            return Err(TooManySubscribers);
        }
        self.next_id += 1;
        let (queue, events) = mpsc::channel(QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        self.list.push(Subscriber {
            id: self.next_id,
            workspace,
            queue,
            lagged: lagged.clone(),
        });
        Ok(Subscription {
            id: self.next_id,
            events,
            lagged,
        })
    }

    /// Forgets a subscriber whose connection ended.
    pub fn unsubscribe(&mut self, id: u64) {
        self.list.retain(|s| s.id != id);
    }

    /// Queues an event for every subscriber it concerns; never waits. A subscriber whose queue
    /// is full is dropped (see the module docs). `workspace` `None`: every subscriber.
    pub fn publish(&mut self, workspace: Option<&str>, kind: EventKind) {
        if self.list.is_empty() {
            return;
        }
        let event = Event {
            unix_ms: wsync_core::unix_ms(std::time::SystemTime::now()),
            workspace: workspace.map(str::to_owned),
            kind,
        };
        self.list.retain(|s| {
            let wanted = match (&s.workspace, workspace) {
                (Some(filter), Some(ws)) => filter == ws,
                (Some(_), None) | (None, _) => true,
            };
            if !wanted {
                return true;
            }
            match s.queue.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        subscriber = s.id,
                        "event subscriber fell {QUEUE} events behind; dropping it"
                    );
                    s.lagged.store(true, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Queues `kinds`, in order, for `workspace`.
    pub fn publish_all(&mut self, workspace: &str, kinds: Vec<EventKind>) {
        for kind in kinds {
            self.publish(Some(workspace), kind);
        }
    }

    /// Whether every subscriber's connection has let go of its queue (after `daemon_stopping`,
    /// once it is written).
    pub fn all_closed(&self) -> bool {
        self.list.iter().all(|s| s.queue.is_closed())
    }

    /// Subscribers now (for tests and logs).
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The `synced` event for one batch a monitor reports landed.
pub fn synced(remote: String, batch: SyncedBatch) -> EventKind {
    EventKind::Synced {
        remote,
        full: batch.full,
        paths: batch.paths,
        files: batch.files,
        bytes: batch.bytes,
        oldest_change_us: batch.oldest_change_us,
        latency_p50_us: batch.latency_p50_us,
        latency_p99_us: batch.latency_p99_us,
    }
}

/// The events between a workspace's previous monitor report (`None`: its monitor just
/// started) and the new one, in the order a reader wants them: halts first, then each remote's
/// state, sync, proof and error.
pub fn status_changes(old: Option<&MonitorStatus>, new: &MonitorStatus) -> Vec<EventKind> {
    let mut events = Vec::new();
    let old_halt = old.and_then(|o| o.halted.as_deref());
    match (old_halt, new.halted.as_deref()) {
        (None, Some(reason)) => events.push(EventKind::Halted {
            reason: reason.to_owned(),
        }),
        (Some(_), None) => events.push(EventKind::HaltLifted {}),
        _ => {}
    }
    let old_watch = old.and_then(|o| o.watch_error.as_deref());
    if let Some(message) = new.watch_error.as_deref().filter(|m| Some(*m) != old_watch) {
        events.push(EventKind::Error {
            remote: None,
            message: message.to_owned(),
        });
    }
    for remote in &new.remotes {
        let before = old.and_then(|o| o.remotes.iter().find(|r| r.name == remote.name));
        remote_changes(before, remote, &mut events);
    }
    events
}

fn remote_changes(before: Option<&RemoteStatus>, now: &RemoteStatus, events: &mut Vec<EventKind>) {
    let name = || now.name.clone();
    let previous = before.map(|b| b.state);
    if previous != Some(now.state) {
        events.push(EventKind::RemoteState {
            remote: name(),
            state: now.state,
            previous,
            pending: now.pending,
            error: now.last_error.clone(),
        });
    } else if before.is_some_and(|b| b.pending != now.pending) {
        events.push(EventKind::Pending {
            remote: name(),
            pending: now.pending,
        });
    }
    if let Some(at) = now
        .verified_unix_ms
        .filter(|at| before.is_none_or(|b| b.verified_unix_ms != Some(*at)))
    {
        events.push(EventKind::Verified {
            remote: name(),
            verified_unix_ms: at,
        });
    }
    let old_error = before.and_then(|b| b.last_error.as_deref());
    let failing = !matches!(now.state, RemoteState::InSync | RemoteState::Syncing);
    if let Some(message) = now
        .last_error
        .as_deref()
        .filter(|m| failing && Some(*m) != old_error)
    {
        events.push(EventKind::Error {
            remote: Some(name()),
            message: message.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsync_core::monitor_proto::Throughput;

    fn remote(state: RemoteState, pending: u64) -> RemoteStatus {
        RemoteStatus {
            name: "m".into(),
            state,
            last_sync_unix_ms: None,
            files_sent: 0,
            bytes_sent: 0,
            pending,
            consecutive_failures: 0,
            last_error: None,
            next_retry_unix_ms: None,
            progress: None,
            verified_unix_ms: None,
            throughput: None,
            transport: None,
            rsync: None,
        }
    }

    fn report(remotes: Vec<RemoteStatus>) -> MonitorStatus {
        MonitorStatus {
            workspace: "w".into(),
            remotes,
            ..MonitorStatus::default()
        }
    }

    #[test]
    fn a_change_then_its_sync_give_state_pending_and_verified_events() {
        let start = report(vec![remote(RemoteState::InSync, 0)]);
        let first = status_changes(None, &start);
        assert!(
            matches!(
                &first[..],
                [EventKind::RemoteState {
                    previous: None,
                    state: RemoteState::InSync,
                    ..
                }]
            ),
            "{first:?}"
        );
        let busy = report(vec![remote(RemoteState::Syncing, 1)]);
        let more = report(vec![remote(RemoteState::Syncing, 3)]);
        let mut done = remote(RemoteState::InSync, 0);
        done.last_sync_unix_ms = Some(5);
        done.files_sent = 3;
        done.bytes_sent = 300;
        done.verified_unix_ms = Some(5);
        done.throughput = Some(Throughput {
            latency_p50_us: 7,
            latency_p99_us: 9,
            ..Throughput::default()
        });
        let done = report(vec![done]);
        assert_eq!(
            status_changes(Some(&start), &busy),
            vec![EventKind::RemoteState {
                remote: "m".into(),
                state: RemoteState::Syncing,
                previous: Some(RemoteState::InSync),
                pending: 1,
                error: None,
            }]
        );
        assert_eq!(
            status_changes(Some(&busy), &more),
            vec![EventKind::Pending {
                remote: "m".into(),
                pending: 3
            }]
        );
        let events = status_changes(Some(&more), &done);
        assert!(matches!(
            events[0],
            EventKind::RemoteState {
                state: RemoteState::InSync,
                ..
            }
        ));
        assert!(matches!(
            events[1],
            EventKind::Verified {
                verified_unix_ms: 5,
                ..
            }
        ));
        // Batches are reported by the monitor as they land, not derived from counters.
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(status_changes(Some(&done), &done).is_empty());
    }

    #[test]
    fn a_landed_batch_is_one_synced_event_with_its_own_figures() {
        let batch = SyncedBatch {
            full: false,
            paths: 2,
            files: 2,
            bytes: 2048,
            oldest_change_us: Some(3100),
            latency_p50_us: Some(4100),
            latency_p99_us: Some(12000),
        };
        assert_eq!(
            synced("mirror".into(), batch),
            EventKind::Synced {
                remote: "mirror".into(),
                full: false,
                paths: 2,
                files: 2,
                bytes: 2048,
                oldest_change_us: Some(3100),
                latency_p50_us: Some(4100),
                latency_p99_us: Some(12000),
            }
        );
    }

    #[test]
    fn halts_and_errors_are_reported_once() {
        let ok = report(vec![remote(RemoteState::InSync, 0)]);
        let mut failing = remote(RemoteState::Error, 2);
        failing.last_error = Some("rsync: connection refused".into());
        let mut halted = report(vec![failing.clone()]);
        halted.halted = Some("the workspace root is gone".into());
        let events = status_changes(Some(&ok), &halted);
        assert!(matches!(&events[0], EventKind::Halted { reason } if reason.contains("root")));
        assert!(matches!(
            &events[1],
            EventKind::RemoteState {
                state: RemoteState::Error,
                ..
            }
        ));
        assert!(
            matches!(&events[2], EventKind::Error { remote: Some(r), message } if r == "m" && message.contains("refused"))
        );
        // The same error again is not news; the halt lifted is.
        let still = report(vec![failing]);
        assert_eq!(
            status_changes(Some(&halted), &still),
            vec![EventKind::HaltLifted {}]
        );
    }

    #[test]
    fn a_full_queue_drops_its_subscriber_and_never_blocks() {
        let mut subscribers = Subscribers::default();
        let mut slow = subscribers.subscribe(None).unwrap();
        let mut other = subscribers.subscribe(Some("other".into())).unwrap();
        for _ in 0..QUEUE + 10 {
            subscribers.publish(Some("w"), EventKind::HaltLifted {});
        }
        assert_eq!(
            subscribers.len(),
            1,
            "the slow one is gone, the filtered one stays"
        );
        assert!(slow.lagged());
        let mut queued = 0;
        while slow.events.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, QUEUE);
        assert!(other.events.try_recv().is_err(), "filtered out");
        subscribers.publish(Some("other"), EventKind::HaltLifted {});
        assert!(other.events.try_recv().is_ok());
        assert!(!other.lagged());
    }
}
