//! A remote's dirty set and its coalescing: paths collapse by identity and under an ancestor
//! already queued (every listed directory is synced recursively), a huge set collapses into
//! "full sync needed", and the settle / max-latency timing says when the next batch is due.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Past this many paths a batch becomes a full sync (a full rsync is cheaper than a huge list).
pub const FULL_SYNC_THRESHOLD: usize = 10_000;

/// One rsync's worth of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batch {
    Full,
    Paths(Vec<PathBuf>),
}

impl Batch {
    /// Paths in the batch (a full sync counts as one).
    pub fn path_count(&self) -> usize {
        match self {
            Batch::Full => 1,
            Batch::Paths(paths) => paths.len(),
        }
    }
}

/// Paths changed since the last batch was taken.
#[derive(Debug, Default)]
pub struct DirtySet {
    paths: BTreeSet<PathBuf>,
    full: bool,
    /// When the oldest / newest change still waiting arrived.
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

impl DirtySet {
    pub fn is_empty(&self) -> bool {
        !self.full && self.paths.is_empty()
    }

    /// Pending paths for status (a pending full sync counts as 1 when nothing else is known).
    pub fn pending(&self) -> u64 {
        if self.full {
            self.paths.len().max(1) as u64
        } else {
            self.paths.len() as u64
        }
    }

    pub fn needs_full(&self) -> bool {
        self.full
    }

    fn touch(&mut self, now: Instant) {
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
    }

    /// Records a changed path (relative to the root; empty means the root: a full sync).
    pub fn add(&mut self, path: &Path, now: Instant) {
        self.touch(now);
        if self.full {
            return;
        }
        if path.as_os_str().is_empty() {
            self.mark_full(now);
            return;
        }
        if path.ancestors().skip(1).any(|a| self.paths.contains(a)) {
            return;
        }
        if !self.paths.insert(path.to_path_buf()) {
            return;
        }
        // Drop descendants: they sort right after `path` (component-wise ordering).
        let below: Vec<PathBuf> = self
            .paths
            .range::<Path, _>((std::ops::Bound::Excluded(path), std::ops::Bound::Unbounded))
            .take_while(|p| p.starts_with(path))
            .cloned()
            .collect();
        for p in below {
            self.paths.remove(&p);
        }
        if self.paths.len() > FULL_SYNC_THRESHOLD {
            self.mark_full(now);
        }
    }

    /// Replaces everything with one full sync.
    pub fn mark_full(&mut self, now: Instant) {
        self.touch(now);
        self.full = true;
        self.paths.clear();
    }

    /// When the next batch is due: `settle` after the last change, but no later than
    /// `max_latency` after the first one. `None` when nothing is pending.
    pub fn due_at(&self, settle: Duration, max_latency: Duration) -> Option<Instant> {
        if self.is_empty() {
            return None;
        }
        let (first, last) = (self.first_at?, self.last_at?);
        Some((last + settle).min(first + max_latency))
    }

    /// Takes everything as one batch.
    pub fn take(&mut self) -> Option<Batch> {
        if self.is_empty() {
            return None;
        }
        self.first_at = None;
        self.last_at = None;
        if std::mem::take(&mut self.full) {
            self.paths.clear();
            return Some(Batch::Full);
        }
        Some(Batch::Paths(
            std::mem::take(&mut self.paths).into_iter().collect(),
        ))
    }

    /// Puts a failed batch back (merged with whatever arrived meanwhile).
    pub fn restore(&mut self, batch: Batch, now: Instant) {
        match batch {
            Batch::Full => self.mark_full(now),
            Batch::Paths(paths) => {
                for path in paths {
                    self.add(&path, now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(set: &mut DirtySet) -> Vec<String> {
        match set.take() {
            Some(Batch::Paths(p)) => p.iter().map(|p| p.display().to_string()).collect(),
            other => panic!("expected paths, got {other:?}"),
        }
    }

    #[test]
    fn collapses_duplicates_and_descendants() {
        let now = Instant::now();
        let mut set = DirtySet::default();
        for p in ["a/b/c", "a/b/c", "a/x", "ab", "a/b", "a/b/d/e", "a-b", "z"] {
            set.add(Path::new(p), now);
        }
        assert_eq!(paths(&mut set), ["a/b", "a/x", "a-b", "ab", "z"]);
        assert!(set.is_empty());
    }

    #[test]
    fn ancestor_queued_first_absorbs_later_children() {
        let now = Instant::now();
        let mut set = DirtySet::default();
        set.add(Path::new("d"), now);
        set.add(Path::new("d/new/file"), now);
        set.add(Path::new("dd/file"), now);
        assert_eq!(paths(&mut set), ["d", "dd/file"]);
    }

    #[test]
    fn root_or_too_many_paths_become_a_full_sync() {
        let now = Instant::now();
        let mut set = DirtySet::default();
        set.add(Path::new("a"), now);
        set.add(Path::new(""), now);
        set.add(Path::new("b"), now);
        assert_eq!(set.take(), Some(Batch::Full));
        for i in 0..=FULL_SYNC_THRESHOLD {
            set.add(Path::new(&format!("f{i}")), now);
        }
        assert!(set.needs_full());
        assert_eq!(set.pending(), 1);
        assert_eq!(set.take(), Some(Batch::Full));
        assert_eq!(set.take(), None);
    }

    #[test]
    fn settle_and_max_latency() {
        let t0 = Instant::now();
        let settle = Duration::from_millis(5);
        let cap = Duration::from_millis(100);
        let mut set = DirtySet::default();
        assert_eq!(set.due_at(settle, cap), None);
        set.add(Path::new("a"), t0);
        assert_eq!(set.due_at(settle, cap), Some(t0 + settle));
        // Continuous churn keeps pushing the settle point, but the cap holds.
        for ms in 1..300 {
            set.add(Path::new("a"), t0 + Duration::from_millis(ms));
        }
        assert_eq!(set.due_at(settle, cap), Some(t0 + cap));
        set.take();
        let t1 = t0 + Duration::from_secs(1);
        set.add(Path::new("b"), t1);
        assert_eq!(set.due_at(settle, cap), Some(t1 + settle));
    }

    #[test]
    fn failed_batch_is_restored_and_merged() {
        let now = Instant::now();
        let mut set = DirtySet::default();
        set.add(Path::new("a/f"), now);
        let batch = set.take().unwrap();
        set.add(Path::new("a"), now);
        set.add(Path::new("b"), now);
        set.restore(batch, now);
        assert_eq!(paths(&mut set), ["a", "b"]);
        set.add(Path::new("x"), now);
        set.restore(Batch::Full, now);
        assert_eq!(set.take(), Some(Batch::Full));
    }
}
