//! Rate-limited status: a [`MonitorStatus`] goes out when it changed, at most one per
//! [`STATUS_INTERVAL`] (the latest state is always sent, once the interval has passed).

use std::time::{Duration, Instant};

use wsync_core::monitor_proto::MonitorStatus;

/// Minimum spacing of status lines.
pub const STATUS_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub(super) struct StatusOutbox {
    last_status: Option<MonitorStatus>,
    last_emit: Option<Instant>,
}

impl StatusOutbox {
    /// The status to send now, if it changed and the rate limit allows (or `force`).
    pub fn offer(
        &mut self,
        status: MonitorStatus,
        now: Instant,
        force: bool,
    ) -> Option<MonitorStatus> {
        if !force && self.last_emit.is_some_and(|at| now < at + STATUS_INTERVAL) {
            return None;
        }
        if self.last_status.as_ref() == Some(&status) {
            return None;
        }
        self.last_status = Some(status.clone());
        self.last_emit = Some(now);
        Some(status)
    }

    /// When a held-back status may go out, if `current` differs from the last one sent.
    pub fn next_at(&self, current: &MonitorStatus) -> Option<Instant> {
        let at = self.last_emit? + STATUS_INTERVAL;
        (self.last_status.as_ref() != Some(current)).then_some(at)
    }
}
