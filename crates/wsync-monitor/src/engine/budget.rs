//! The deletion budget: how many paths one remote may lose within [`DELETION_WINDOW`] before
//! the workspace halts for the user's confirmation. Every batch kind passes it — incremental
//! batches and full syncs alike run with `--max-delete` set to what is left, and a batch whose
//! known deletions exceed what is left halts before it starts. The budget is the workspace's
//! explicit `max_delete` when set; otherwise half of the remote's tree as of its last full sync
//! (at least [`BUDGET_FLOOR`]), or [`DEFAULT_MAX_DELETE`] before the tree's size is known. So an
//! `rm -rf` done in chunks stops with at least half of a large tree intact, while deleting a
//! subdirectory of a few thousand files from a big tree goes through.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wsync_core::rsync::DEFAULT_MAX_DELETE;

/// How long a deletion counts against the budget.
pub const DELETION_WINDOW: Duration = Duration::from_secs(60);

/// The smallest default budget, whatever the tree's size.
pub const BUDGET_FLOOR: u64 = 500;

/// One remote's recent deletions and the size of its tree. Deletions are counted as distinct
/// paths where the engine knows them (a path deleted again and again, or re-created, counts
/// once or not at all); what rsync deleted beyond them (the contents of a directory moved out
/// of the workspace) is counted by number.
#[derive(Debug, Default)]
pub(super) struct DeletionLedger {
    /// Paths deleted, with when.
    paths: BTreeMap<PathBuf, Instant>,
    /// Deletions rsync reported beyond the known paths, with when.
    beyond: VecDeque<(Instant, u64)>,
    /// Entries in the tree at the last full sync (rsync's `Number of files`).
    tree: Option<u64>,
}

impl DeletionLedger {
    /// The budget per window: `explicit` (the workspace's `max_delete`) when set.
    pub fn limit(&self, explicit: Option<u64>) -> u64 {
        explicit.unwrap_or_else(|| {
            self.tree
                .map_or(DEFAULT_MAX_DELETE, |tree| (tree / 2).max(BUDGET_FLOOR))
        })
    }

    /// Deletions made within the window before `now`.
    pub fn made_within(&self, now: Instant) -> u64 {
        let recent = |at: &Instant| now.saturating_duration_since(*at) < DELETION_WINDOW;
        let paths = self.paths.values().filter(|at| recent(at)).count() as u64;
        let beyond: u64 = self
            .beyond
            .iter()
            .filter(|(at, _)| recent(at))
            .map(|(_, n)| n)
            .sum();
        paths + beyond
    }

    /// What is left of the budget at `now` once `reserved` (deletions of batches still
    /// running) is set aside.
    pub fn left(&self, now: Instant, explicit: Option<u64>, reserved: u64) -> u64 {
        self.limit(explicit)
            .saturating_sub(self.made_within(now))
            .saturating_sub(reserved)
    }

    /// A batch that was to delete `known` paths ended having deleted `count` entries on the
    /// remote: the known paths count (all of them: which ones existed remotely is not known),
    /// and whatever rsync deleted beyond them.
    pub fn record(&mut self, now: Instant, known: &[PathBuf], count: u64) {
        let old = |at: &Instant| now.saturating_duration_since(*at) >= DELETION_WINDOW;
        self.paths.retain(|_, at| !old(at));
        while self.beyond.front().is_some_and(|(at, _)| old(at)) {
            self.beyond.pop_front();
        }
        if count == 0 {
            return;
        }
        for path in known {
            self.paths.insert(path.clone(), now);
        }
        let beyond = count.saturating_sub(known.len() as u64);
        if beyond > 0 {
            self.beyond.push_back((now, beyond));
        }
    }

    /// `path` exists again: its deletion, and for a directory those below it, no longer count.
    pub fn recreated(&mut self, path: &Path, is_dir: bool) {
        if self.paths.is_empty() {
            return;
        }
        self.paths.remove(path);
        if is_dir {
            let below: Vec<PathBuf> = self
                .paths
                .range::<Path, _>((std::ops::Bound::Excluded(path), std::ops::Bound::Unbounded))
                .take_while(|(p, _)| p.starts_with(path))
                .map(|(p, _)| p.clone())
                .collect();
            for p in below {
                self.paths.remove(&p);
            }
        }
    }

    /// A full sync saw `entries` in the tree.
    pub fn tree_seen(&mut self, entries: u64) {
        if entries > 0 {
            self.tree = Some(entries);
        }
    }

    /// The user confirmed the deletions made: they no longer count.
    pub fn forgive(&mut self) {
        self.paths.clear();
        self.beyond.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_half_the_tree_with_a_floor_or_the_explicit_cap() {
        let mut ledger = DeletionLedger::default();
        assert_eq!(ledger.limit(None), DEFAULT_MAX_DELETE, "tree not known yet");
        ledger.tree_seen(50_000);
        assert_eq!(ledger.limit(None), 25_000);
        ledger.tree_seen(100);
        assert_eq!(ledger.limit(None), BUDGET_FLOOR);
        assert_eq!(BUDGET_FLOOR, 500);
        assert_eq!(ledger.limit(Some(5)), 5);
        ledger.tree_seen(0);
        assert_eq!(
            ledger.limit(None),
            BUDGET_FLOOR,
            "an empty listing keeps the last size"
        );
    }

    #[test]
    fn deletions_count_for_the_window_then_expire() {
        let t0 = Instant::now();
        let mut ledger = DeletionLedger::default();
        ledger.tree_seen(3_000);
        ledger.record(t0, &[], 400);
        ledger.record(t0 + Duration::from_secs(30), &[], 600);
        assert_eq!(ledger.left(t0 + Duration::from_secs(31), None, 0), 500);
        assert_eq!(ledger.left(t0 + Duration::from_secs(31), None, 450), 50);
        assert_eq!(ledger.left(t0 + Duration::from_secs(31), None, 900), 0);
        assert_eq!(
            ledger.left(t0 + DELETION_WINDOW, None, 0),
            900,
            "the first expired"
        );
        ledger.forgive();
        assert_eq!(ledger.left(t0 + Duration::from_secs(31), None, 0), 1_500);
    }

    #[test]
    fn a_path_deleted_again_and_again_or_recreated_counts_once_or_not_at_all() {
        let t0 = Instant::now();
        let mut ledger = DeletionLedger::default();
        let journal = [PathBuf::from("db-journal")];
        for i in 0..500 {
            ledger.record(t0 + Duration::from_millis(i), &journal, 1);
        }
        assert_eq!(ledger.made_within(t0 + Duration::from_secs(1)), 1);
        ledger.recreated(Path::new("db-journal"), false);
        assert_eq!(ledger.made_within(t0 + Duration::from_secs(1)), 0);
        // A directory moved out: one known path, thousands deleted below it.
        ledger.record(t0, &[PathBuf::from("big")], 3_001);
        assert_eq!(ledger.made_within(t0), 3_001);
        // node_modules removed, then installed again.
        let files: Vec<PathBuf> = (0..50).map(|i| format!("nm/p{i}").into()).collect();
        ledger.record(t0, &files, 50);
        ledger.recreated(Path::new("nm"), true);
        assert_eq!(ledger.made_within(t0), 3_001);
    }
}
