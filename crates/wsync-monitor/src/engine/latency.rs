//! Change-to-remote latency and throughput, per remote: when each change was queued
//! ([`Arrivals`], carried by the batch that sends it) and, once that batch is on the remote,
//! how long each waited ([`Latencies`]: the last [`SAMPLES`] changes, and the files and bytes
//! sent over the last minute).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use wsync_core::monitor_proto::Throughput;

/// How many of the latest changes the percentiles cover.
pub const SAMPLES: usize = 1000;

/// At most this many arrival times are kept per batch: past it, every other one is dropped
/// (and from then on only every second change is kept), so a burst of a million changes costs
/// kilobytes, not megabytes, and the sample stays spread over the whole burst.
const ARRIVALS_KEPT: usize = 2048;

/// When the changes waiting in a queue (or carried by a batch) arrived, evenly sampled.
#[derive(Debug, Default, Clone)]
pub(super) struct Arrivals {
    times: Vec<Instant>,
    /// Keep one change in `stride`.
    stride: usize,
    skipped: usize,
}

impl Arrivals {
    pub fn push(&mut self, at: Instant) {
        let stride = self.stride.max(1);
        self.skipped += 1;
        if self.skipped < stride {
            return;
        }
        self.skipped = 0;
        self.times.push(at);
        if self.times.len() >= ARRIVALS_KEPT {
            let mut i = 0;
            self.times.retain(|_| {
                i += 1;
                i % 2 == 0
            });
            self.stride = stride * 2;
        }
    }

    /// When the oldest of these changes arrived (they are kept in arrival order).
    pub fn oldest(&self) -> Option<Instant> {
        self.times.first().copied()
    }

    /// Puts a failed batch's arrivals back in front of what came since.
    pub fn restore(&mut self, mut earlier: Arrivals) {
        earlier.times.append(&mut self.times);
        earlier.stride = earlier.stride.max(self.stride);
        *self = earlier;
    }
}

#[derive(Debug, Default)]
pub(super) struct Latencies {
    samples: VecDeque<Duration>,
    /// (when, files, bytes) of each batch landed in the last minute.
    minute: VecDeque<(Instant, u64, u64)>,
}

impl Latencies {
    /// A batch carrying `arrivals` is on the remote at `now`.
    pub fn landed(&mut self, arrivals: Arrivals, now: Instant, files: u64, bytes: u64) {
        for at in arrivals.times {
            if self.samples.len() == SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back(now.saturating_duration_since(at));
        }
        self.minute.push_back((now, files, bytes));
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        while self
            .minute
            .front()
            .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) > Duration::from_secs(60))
        {
            self.minute.pop_front();
        }
    }

    /// The figures for status; `None` before the first change landed.
    pub fn throughput(&self, now: Instant) -> Option<Throughput> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<Duration> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let pick = |p: f64| {
            let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1].as_micros() as u64
        };
        let recent = self
            .minute
            .iter()
            .filter(|(at, _, _)| now.saturating_duration_since(*at) <= Duration::from_secs(60));
        let (files, bytes) =
            recent.fold((0, 0), |(f, b), (_, files, bytes)| (f + files, b + bytes));
        Some(Throughput {
            latency_p50_us: pick(50.0),
            latency_p99_us: pick(99.0),
            samples: sorted.len() as u64,
            files_last_minute: files,
            bytes_last_minute: bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_cover_the_latest_changes() {
        let t0 = Instant::now();
        let mut l = Latencies::default();
        let mut a = Arrivals::default();
        for i in 0..100u64 {
            a.push(t0 + Duration::from_millis(i));
        }
        // Landed at 100 ms: the waits are 1..=100 ms.
        l.landed(a, t0 + Duration::from_millis(100), 100, 4096);
        let t = l.throughput(t0 + Duration::from_millis(100)).unwrap();
        assert_eq!(t.latency_p50_us, 50_000);
        assert_eq!(t.latency_p99_us, 99_000);
        assert_eq!((t.files_last_minute, t.bytes_last_minute), (100, 4096));
        let later = l.throughput(t0 + Duration::from_secs(120)).unwrap();
        assert_eq!(
            later.files_last_minute, 0,
            "a minute later the rate is zero"
        );
        assert_eq!(later.samples, 100, "the percentiles still cover them");
    }

    #[test]
    fn a_huge_burst_keeps_a_bounded_even_sample() {
        let t0 = Instant::now();
        let mut a = Arrivals::default();
        for i in 0..1_000_000u64 {
            a.push(t0 + Duration::from_micros(i));
        }
        assert!(a.times.len() < ARRIVALS_KEPT);
        assert!(a.times.len() > ARRIVALS_KEPT / 4);
        let last = *a.times.last().unwrap();
        assert!(
            last > t0 + Duration::from_millis(900),
            "spread over the whole burst"
        );
    }
}
