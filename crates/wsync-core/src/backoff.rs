//! Exponential backoff, the one policy behind every retry in wsync: a remote's failed batch
//! (1 s → 60 s) and a crashed monitor's restart (0.5 s → 30 s). Pure: callers keep the
//! attempt count and the clock.

use std::time::Duration;

/// Delay `base` before the first retry, doubled for each further attempt, never above `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// A remote's retry after a failed batch.
    pub const REMOTE_RETRY: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(60),
    };
    /// A crashed monitor's restart.
    pub const MONITOR_RESTART: Backoff = Backoff {
        base: Duration::from_millis(500),
        cap: Duration::from_secs(30),
    };

    /// The delay before attempt `attempt` (1-based; 0 counts as 1): base, 2×base, 4×base, …,
    /// at most `cap`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << shift).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_to_the_cap() {
        let b = Backoff::REMOTE_RETRY;
        let secs: Vec<u64> = [0, 1, 2, 6, 7, 1000, u32::MAX]
            .iter()
            .map(|&a| b.delay(a).as_secs())
            .collect();
        assert_eq!(secs, [1, 1, 2, 32, 60, 60, 60]);
        let r = Backoff::MONITOR_RESTART;
        assert_eq!(r.delay(1), Duration::from_millis(500));
        assert_eq!(r.delay(3), Duration::from_secs(2));
        assert_eq!(r.delay(40), Duration::from_secs(30));
    }
}
