//! When a full sync compares by checksum (`--checksum`) instead of size and mtime: the
//! initial sync of a tree small enough to afford it (what changed while no monitor ran), a
//! repair (`wsync verify --repair`), and the workspace's periodic pass (`checksum_every_secs`,
//! off by default), which waits until every remote is idle.

use std::time::{Duration, Instant};

/// The largest tree whose initial sync compares by checksum: both sides read every file, so
/// the cost grows with the bytes. Measured on tmpfs (rsync 3.5, 50,000 files, 319 MiB): a
/// size+mtime initial sync of an unchanged tree takes 0.45–0.55 s, with `--checksum`
/// 0.9–1.2 s; 1 GiB in four files adds 0.6 s. On a disk with a cold cache reading is far
/// slower (a 1 GiB tree is seconds more), so both limits must hold.
pub const INITIAL_CHECKSUM_MAX_FILES: u64 = 50_000;
pub const INITIAL_CHECKSUM_MAX_BYTES: u64 = 1 << 30;

/// The included files and their bytes, counted by the watcher's first walk (stops counting
/// bytes once past [`INITIAL_CHECKSUM_MAX_BYTES`]: the answer is known by then).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeSize {
    pub files: u64,
    pub bytes: u64,
}

impl TreeSize {
    /// True when an initial sync by checksum is affordable (at most `max_files` files and
    /// `max_bytes` bytes).
    pub fn affords_checksum(&self, max_files: u64, max_bytes: u64) -> bool {
        self.files <= max_files && self.bytes <= max_bytes
    }
}

/// The periodic checksum pass of one workspace.
#[derive(Debug, Default)]
pub(super) struct Periodic {
    every: Option<Duration>,
    next: Option<Instant>,
}

impl Periodic {
    /// `every_secs` from the registry (`None` or 0: off); the first pass is one interval away.
    pub fn new(every_secs: Option<u64>, now: Instant) -> Self {
        let every = every_secs.filter(|s| *s > 0).map(Duration::from_secs);
        Self {
            every,
            next: every.map(|e| now + e),
        }
    }

    /// True when a pass is due and the remotes are `idle` (asked only then): the next one is
    /// then scheduled.
    pub fn due(&mut self, now: Instant, idle: impl FnOnce() -> bool) -> bool {
        match (self.next, self.every) {
            (Some(at), Some(every)) if now >= at && idle() => {
                self.next = Some(now + every);
                true
            }
            _ => false,
        }
    }

    /// When the next pass is due, while that is still ahead (a due pass waiting for the
    /// remotes to be idle is rechecked after every input).
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.next.filter(|at| *at > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_periodic_pass_is_off_by_default_and_waits_for_idle() {
        let t0 = Instant::now();
        let mut off = Periodic::new(None, t0);
        assert!(!off.due(t0 + Duration::from_secs(86_400), || true));
        assert!(!Periodic::new(Some(0), t0).due(t0 + Duration::from_secs(1), || true));
        let mut p = Periodic::new(Some(10), t0);
        assert!(!p.due(t0 + Duration::from_secs(9), || true));
        assert_eq!(p.next_wake(t0), Some(t0 + Duration::from_secs(10)));
        let late = t0 + Duration::from_secs(11);
        assert!(!p.due(late, || false), "busy: waits");
        assert_eq!(p.next_wake(late), None, "no busy wake-ups while waiting");
        assert!(p.due(late, || true));
        assert!(!p.due(late, || true), "once per interval");
        assert_eq!(p.next_wake(late), Some(late + Duration::from_secs(10)));
    }

    #[test]
    fn initial_checksum_only_for_small_trees() {
        let (files, bytes) = (INITIAL_CHECKSUM_MAX_FILES, INITIAL_CHECKSUM_MAX_BYTES);
        assert!(TreeSize { files, bytes }.affords_checksum(files, bytes));
        assert!(!TreeSize {
            files: files + 1,
            bytes: 0
        }
        .affords_checksum(files, bytes));
        assert!(!TreeSize {
            files: 1,
            bytes: bytes + 1
        }
        .affords_checksum(files, bytes));
    }
}
