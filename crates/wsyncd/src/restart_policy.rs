//! The monitor restart policy as data: how many crashes within which window are tolerated, and
//! the backoff between restarts ([`Backoff::MONITOR_RESTART`]). Pure logic (time is passed in),
//! unit-tested here.

use std::time::{Duration, Instant};

use wsync_core::backoff::Backoff;
use wsync_core::config::Tuning;

/// Limits for restarting a crashed monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Crashes tolerated within `window`; one more marks the workspace failed.
    pub limit: u32,
    pub window: Duration,
    pub backoff: Backoff,
}

impl RestartPolicy {
    pub fn from_tuning(tuning: &Tuning) -> Self {
        Self {
            limit: tuning.monitor_restart_limit,
            window: tuning.monitor_restart_window,
            backoff: Backoff::MONITOR_RESTART,
        }
    }

    /// Delay before restart attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt)
    }

    /// Records a crash at `now` of a monitor that had been up for `up_for`, and decides.
    pub fn on_crash(&self, history: &mut CrashHistory, now: Instant, up_for: Duration) -> Verdict {
        if up_for >= self.window {
            // It ran fine for a whole window: earlier crashes no longer count.
            *history = CrashHistory::default();
        }
        match history.window_start {
            Some(start) if now.saturating_duration_since(start) <= self.window => {}
            _ => {
                history.window_start = Some(now);
                history.crashes = 0;
            }
        }
        history.crashes += 1;
        if history.crashes > self.limit {
            Verdict::GiveUp {
                crashes: history.crashes,
            }
        } else {
            Verdict::Restart {
                attempt: history.crashes,
                delay: self.backoff(history.crashes),
            }
        }
    }
}

/// Crashes counted in the current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashHistory {
    window_start: Option<Instant>,
    crashes: u32,
}

impl CrashHistory {
    pub fn crashes(&self) -> u32 {
        self.crashes
    }
}

/// What to do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Restart after `delay`; `attempt` counts restarts within the window, from 1.
    Restart { attempt: u32, delay: Duration },
    /// Too many crashes within the window: mark the workspace failed.
    GiveUp { crashes: u32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(limit: u32, window_secs: u64) -> RestartPolicy {
        RestartPolicy {
            limit,
            window: Duration::from_secs(window_secs),
            backoff: Backoff::MONITOR_RESTART,
        }
    }

    const BACKOFF_BASE: Duration = Backoff::MONITOR_RESTART.base;
    const BACKOFF_CAP: Duration = Backoff::MONITOR_RESTART.cap;

    #[test]
    fn backoff_doubles_from_half_a_second_and_is_capped() {
        let p = policy(5, 600);
        let ms: Vec<u128> = (1..=8).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(p.backoff(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn gives_up_after_more_than_limit_crashes_in_the_window() {
        let p = policy(3, 600);
        let mut h = CrashHistory::default();
        let t0 = Instant::now();
        let short = Duration::from_millis(10);
        for attempt in 1..=3 {
            let now = t0 + Duration::from_secs(attempt as u64);
            assert_eq!(
                p.on_crash(&mut h, now, short),
                Verdict::Restart {
                    attempt,
                    delay: p.backoff(attempt)
                }
            );
        }
        assert_eq!(
            p.on_crash(&mut h, t0 + Duration::from_secs(5), short),
            Verdict::GiveUp { crashes: 4 }
        );
    }

    #[test]
    fn zero_limit_gives_up_at_once() {
        let p = policy(0, 600);
        let mut h = CrashHistory::default();
        assert_eq!(
            p.on_crash(&mut h, Instant::now(), Duration::ZERO),
            Verdict::GiveUp { crashes: 1 }
        );
    }

    #[test]
    fn crashes_outside_the_window_start_a_new_count() {
        let p = policy(2, 60);
        let mut h = CrashHistory::default();
        let t0 = Instant::now();
        let short = Duration::from_secs(1);
        p.on_crash(&mut h, t0, short);
        p.on_crash(&mut h, t0 + Duration::from_secs(10), short);
        assert_eq!(h.crashes(), 2);
        let v = p.on_crash(&mut h, t0 + Duration::from_secs(61), short);
        assert_eq!(
            v,
            Verdict::Restart {
                attempt: 1,
                delay: BACKOFF_BASE
            }
        );
    }

    #[test]
    fn a_monitor_up_for_a_whole_window_has_its_count_reset() {
        let p = policy(2, 60);
        let mut h = CrashHistory::default();
        let t0 = Instant::now();
        p.on_crash(&mut h, t0, Duration::from_secs(1));
        p.on_crash(&mut h, t0 + Duration::from_secs(2), Duration::from_secs(1));
        // Up for the whole window before this crash (the clock says only 50 s passed since the
        // window started, but uptime wins).
        let v = p.on_crash(
            &mut h,
            t0 + Duration::from_secs(50),
            Duration::from_secs(60),
        );
        assert_eq!(
            v,
            Verdict::Restart {
                attempt: 1,
                delay: BACKOFF_BASE
            }
        );
    }
}
