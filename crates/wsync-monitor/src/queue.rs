//! A remote's dirty set and its coalescing: paths collapse by identity and under an ancestor
//! already queued (every listed directory is synced recursively), a huge set collapses into
//! "full sync needed", and the timing says when the next batch is due: at once when the latest
//! event was a close-write and no other file is mid-write (close-write ends a file's burst),
//! otherwise a short settle after the last event (deletions and renames come in bursts and
//! chains), capped by the max latency under continuous churn.
//!
//! Paths dropped for a broader entry are still remembered as known dirty (up to
//! [`KNOWN_DIRTY_CAP`]): below a queued directory (which rsync recurses into by size and
//! mtime — `cp -a` also sets each directory's times, queueing it), or everything once the set
//! collapses into a full sync. The batch sends those files by content first.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Past this many paths a batch becomes a full sync (a full rsync is cheaper than a huge list).
pub const FULL_SYNC_THRESHOLD: usize = 10_000;

/// A set collapsed into a full sync remembers at most this many of the paths known to have
/// changed (about 100 MB at worst), which the full sync sends by content
/// (`--ignore-times`). Paths past the cap are compared by size and mtime like the rest of
/// the tree; they are counted (`known_dropped`) and logged.
pub const KNOWN_DIRTY_CAP: usize = 1_000_000;

/// A batch that is mostly deletions (more than half its events), or has at least this many,
/// waits for [`DELETE_SETTLE`] of quiet after the last one (not the short settle, not the
/// latency cap): `rm -rf` pauses now and then, and its first deletions must not go out before
/// the rest shows what it is. (An editor's save that deletes a backup file is not mostly
/// deletions and stays fast.)
pub const DELETE_BURST_MIN: u64 = 16;
/// Quiet needed after the last deletion of a deletion-dominated batch.
pub const DELETE_SETTLE: Duration = Duration::from_millis(50);
/// A batch with at least this many deletions is a deletion storm: held until
/// [`STORM_QUIET`] passes without a deletion (then the root is checked again: a deleted,
/// replaced or emptied root halts with nothing sent), at most [`STORM_CAP`].
pub const STORM_MIN: u64 = 256;
pub const STORM_QUIET: Duration = Duration::from_millis(250);
/// The longest a deletion storm is held; past it, more than `max_delete` deletions halt.
pub const STORM_CAP: Duration = Duration::from_secs(10);
/// Loose git objects deleted this close to a new pack file were packed into it.
pub const REPACK_WINDOW: Duration = Duration::from_secs(60);
/// Burst deletions are held at most this long.
pub const DELETE_BURST_CAP: Duration = Duration::from_secs(1);

/// A rename inside the workspace, replayed on the remote before the batch's rsync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    pub from: PathBuf,
    pub to: PathBuf,
    pub is_dir: bool,
}

/// One rsync's worth of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batch {
    Full,
    /// Renames to replay in order, then the paths to rsync.
    Paths {
        renames: Vec<Rename>,
        paths: Vec<PathBuf>,
    },
}

impl Batch {
    /// Paths and renames in the batch (a full sync counts as one).
    pub fn path_count(&self) -> usize {
        match self {
            Batch::Full => 1,
            Batch::Paths { renames, paths } => renames.len() + paths.len(),
        }
    }
}

/// Paths changed since the last batch was taken.
#[derive(Debug, Default)]
pub struct DirtySet {
    paths: BTreeSet<PathBuf>,
    /// Renames to replay before the paths are synced, in order.
    renames: Vec<Rename>,
    full: bool,
    /// Paths known to have changed that a broader entry covers: below a queued directory, or
    /// anywhere once `full` (see [`KNOWN_DIRTY_CAP`]).
    known: BTreeSet<PathBuf>,
    /// Known paths not remembered past the cap.
    known_dropped: u64,
    /// Counts every change recorded, never reset: the persisted copy is current while it
    /// has not moved.
    revision: u64,
    /// Files created or modified whose close-write has not arrived yet (still being written).
    open: BTreeSet<PathBuf>,
    /// The latest event was a close-write.
    burst_ended: bool,
    /// When the oldest / newest change still waiting arrived.
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    /// Distinct paths deleted (or moved out of the workspace) since the last batch was taken
    /// and not re-created since: a path unlinked and written again (`tar xf`, an editor's
    /// atomic save, a SQLite journal) costs nothing. Past [`FULL_SYNC_THRESHOLD`] paths further
    /// deletions are only counted, in `deleted_beyond`.
    deleted: BTreeSet<PathBuf>,
    deleted_beyond: u64,
    /// When a git pack file last appeared: loose objects deleted within [`REPACK_WINDOW`] of it
    /// were packed into it (`git gc`, `git repack`), not lost. Kept across batches: the pack
    /// and the pruning of loose objects may go out in different ones.
    repacked_at: Option<Instant>,
    /// Renames queued as their two plain paths (not replayed): rsync deletes the old name's
    /// whole subtree and re-creates it under the new one, which is a move, not a loss.
    moved: Vec<Rename>,
    /// Directories moved out of the workspace (or what may have been), among `deleted`: what
    /// they held on the remote is known only for the entries whose deletions were reported.
    deleted_dirs: BTreeSet<PathBuf>,
    /// A failed batch put back deleted unknown contents (see `deletes_unknown_contents`).
    unknown_contents_restored: bool,
    /// Change events of any kind since the last batch was taken.
    events: u64,
    first_delete_at: Option<Instant>,
    last_delete_at: Option<Instant>,
}

impl DirtySet {
    pub fn is_empty(&self) -> bool {
        !self.full && self.paths.is_empty() && self.renames.is_empty()
    }

    /// Pending paths for status (a pending full sync counts as 1 when nothing else is known).
    pub fn pending(&self) -> u64 {
        if self.full {
            (self.known.len() as u64 + self.known_dropped).max(1)
        } else {
            (self.paths.len() + self.renames.len()) as u64
        }
    }

    pub fn needs_full(&self) -> bool {
        self.full
    }

    /// Notes the deletion of `path` (call with [`DirtySet::add`]); deletions decide the timing
    /// and the deletion budget. `contents_unknown`: a directory (or what may have been one)
    /// moved out, whose contents no event reported; an `rmdir`'s were (each its own event), so
    /// an empty directory removed costs no dry run.
    pub fn note_delete(&mut self, path: &Path, contents_unknown: bool, now: Instant) {
        if self.deleted.len() < FULL_SYNC_THRESHOLD {
            self.deleted.insert(path.to_path_buf());
            if contents_unknown {
                self.deleted_dirs.insert(path.to_path_buf());
            }
        } else if !self.deleted.contains(path) {
            self.deleted_beyond += 1;
        }
        self.first_delete_at.get_or_insert(now);
        self.last_delete_at = Some(now);
    }

    /// Notes that `path` exists again (created, or renamed into place): its deletion, and for a
    /// directory the deletions below it, no longer count.
    pub fn note_created(&mut self, path: &Path, is_dir: bool) {
        if !is_dir && path.parent().is_some_and(is_git_pack_dir) {
            self.repacked_at = self.last_at.or(self.repacked_at);
        }
        if self.deleted.is_empty() {
            return;
        }
        self.deleted.remove(path);
        self.deleted_dirs.remove(path);
        if is_dir {
            for p in below(&self.deleted, path) {
                self.deleted.remove(&p);
                self.deleted_dirs.remove(&p);
            }
        }
    }

    /// True when a deleted directory's contents were not reported deleted with it (a
    /// directory moved out of the workspace, or one whose entries were deleted before it was
    /// watched): rsync deletes whatever the remote holds below it, which only a dry run counts.
    pub fn deletes_unknown_contents(&self) -> bool {
        self.unknown_contents_restored
            || self
                .deleted_dirs
                .iter()
                .any(|dir| below(&self.deleted, dir).is_empty())
    }

    /// A failed batch that deleted unknown contents is put back: its retry still does.
    pub fn restore_unknown_contents(&mut self) {
        self.unknown_contents_restored = true;
    }

    /// Distinct paths deleted and not re-created, and how long the deletions have been coming
    /// in.
    pub fn deletions(&self) -> (u64, Duration) {
        let span = match (self.first_delete_at, self.last_delete_at) {
            (Some(first), Some(last)) => last.duration_since(first),
            _ => Duration::ZERO,
        };
        (self.deletion_count(), span)
    }

    /// Notes a rename queued as its two plain paths (see `moved`).
    pub fn note_moved(&mut self, rename: Rename) {
        if !self.moved.contains(&rename) {
            self.moved.push(rename);
        }
    }

    /// The renames queued as plain paths: the next batch's rsync moves their subtrees.
    pub fn moved(&self) -> &[Rename] {
        &self.moved
    }

    /// The distinct deleted paths known (up to [`FULL_SYNC_THRESHOLD`]) that count as
    /// deletions (see [`DirtySet::packed_deletions`]).
    pub fn deleted_paths(&self) -> Vec<PathBuf> {
        self.deleted
            .iter()
            .filter(|p| !(self.repacked() && is_loose_git_object(p)))
            .cloned()
            .collect()
    }

    fn repacked(&self) -> bool {
        match (self.repacked_at, self.last_delete_at) {
            (Some(pack), Some(delete)) => {
                delete.max(pack).duration_since(delete.min(pack)) < REPACK_WINDOW
            }
            _ => false,
        }
    }

    fn deletion_count(&self) -> u64 {
        (self.deleted.len() as u64 + self.deleted_beyond).saturating_sub(self.packed_deletions())
    }

    /// Deleted loose git objects (and their emptied fan-out directories) when a pack file
    /// appeared too: their content moved into the pack, so they do not count as deletions.
    pub fn packed_deletions(&self) -> u64 {
        if !self.repacked() {
            return 0;
        }
        self.deleted
            .iter()
            .filter(|p| is_loose_git_object(p))
            .count() as u64
    }

    /// Forgets the deletions (the user confirmed, or a halt was lifted).
    pub fn reset_deletions(&mut self) {
        self.deleted.clear();
        self.deleted_dirs.clear();
        self.deleted_beyond = 0;
        self.events = 0;
        self.first_delete_at = None;
        self.last_delete_at = None;
    }

    /// Changes recorded so far (see `revision`).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Every path waiting: the listed ones, both ends of the renames and, after a collapse,
    /// the known ones (none of the full sync's implicit rest).
    pub fn waiting_paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.paths
            .iter()
            .chain(self.renames.iter().flat_map(|r| [&r.from, &r.to]))
            .chain(&self.known)
    }

    /// Remembers `path` as known dirty under a broader entry (see [`KNOWN_DIRTY_CAP`]).
    fn remember(&mut self, path: &Path) {
        if path.as_os_str().is_empty() || self.known.contains(path) {
            return;
        }
        if self.known.len() < KNOWN_DIRTY_CAP {
            self.known.insert(path.to_path_buf());
        } else {
            if self.known_dropped == 0 {
                tracing::warn!(
                    "more than {KNOWN_DIRTY_CAP} paths changed before a full sync: the rest are compared by size and mtime only (`wsync verify --repair` compares everything by content)"
                );
            }
            self.known_dropped += 1;
        }
    }

    /// Adds paths known to have changed to the next batch (a failed one's, or those an
    /// earlier monitor persisted); they go with a full sync when nothing else waits.
    pub fn restore_known<'a>(
        &mut self,
        paths: impl IntoIterator<Item = &'a PathBuf>,
        now: Instant,
    ) {
        if self.is_empty() {
            self.mark_full(now);
        }
        for path in paths {
            self.remember(path);
        }
    }

    fn touch(&mut self, now: Instant) {
        self.events += 1;
        self.revision += 1;
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
    }

    /// Records a changed path (relative to the root; empty means the root: a full sync).
    pub fn add(&mut self, path: &Path, now: Instant) {
        self.touch(now);
        self.burst_ended = false;
        if self.full {
            self.remember(path);
            return;
        }
        if path.as_os_str().is_empty() {
            self.mark_full(now);
            return;
        }
        if path.ancestors().skip(1).any(|a| self.paths.contains(a)) {
            self.remember(path);
            return;
        }
        if !self.paths.insert(path.to_path_buf()) {
            return;
        }
        // Drop descendants: they sort right after `path` (component-wise ordering).
        for p in below(&self.paths, path) {
            self.paths.remove(&p);
            self.remember(&p);
        }
        if self.paths.len() > FULL_SYNC_THRESHOLD {
            self.mark_full(now);
        }
    }

    /// Notes that a file is being written (`open`: created or modified) or is not any more
    /// (`!open`: delete, rename). Only affects when the batch is due.
    pub fn note_write(&mut self, path: &Path, open: bool) {
        if open {
            if self.open.len() < FULL_SYNC_THRESHOLD {
                self.open.insert(path.to_path_buf());
            }
        } else if !self.open.is_empty() {
            self.open.remove(path);
        }
    }

    /// Takes the files still being written (see [`DirtySet::note_write`]); call right before
    /// [`DirtySet::take`], which forgets them.
    pub fn take_open(&mut self) -> BTreeSet<PathBuf> {
        std::mem::take(&mut self.open)
    }

    /// Notes a close-write of `path` (call after [`DirtySet::add`]): its burst is over.
    pub fn note_closed(&mut self, path: &Path) {
        self.note_write(path, false);
        self.burst_ended = true;
    }

    /// Records a rename `from` → `to` inside the workspace, to be replayed on the remote (a
    /// `mv` instead of a delete plus a re-upload). Pending changes below `from` move along.
    /// When something at or above either end is already queued (a new directory, a changed
    /// file), the rename is not worth replaying: both ends are queued as plain paths instead.
    pub fn add_rename(&mut self, rename: Rename, now: Instant) {
        if self.full {
            self.touch(now);
            self.remember(&rename.from);
            self.remember(&rename.to);
            return;
        }
        // Known changes below the old name are now below the new one.
        for path in below(&self.known, &rename.from) {
            self.known.remove(&path);
            if let Ok(rest) = path.strip_prefix(&rename.from) {
                self.known.insert(rename.to.join(rest));
            }
        }
        let covered =
            |p: &Path, paths: &BTreeSet<PathBuf>| p.ancestors().any(|a| paths.contains(a));
        if covered(&rename.from, &self.paths)
            || rename
                .to
                .ancestors()
                .skip(1)
                .any(|a| self.paths.contains(a))
        {
            self.add(&rename.from, now);
            self.add(&rename.to, now);
            self.note_moved(rename);
            return;
        }
        self.touch(now);
        // A completed rename still waits the settle: renames come in chains (`mv a b; mv b a`,
        // an editor's save dance), and a chain split across batches sends the later rename,
        // its old name now queued by the walk of the first, as a plain rsync move, which
        // deletes the remote-only protected files inside it (engine_protect's nested
        // `.gitignore` test lost `app/.env` one run in three when this was due at once).
        self.burst_ended = false;
        for path in below(&self.paths, &rename.from) {
            self.paths.remove(&path);
            if let Ok(rest) = path.strip_prefix(&rename.from) {
                self.paths.insert(rename.to.join(rest));
            }
        }
        self.renames.push(rename);
        if self.renames.len() + self.paths.len() > FULL_SYNC_THRESHOLD {
            self.mark_full(now);
        }
    }

    /// Replaces everything with one full sync; the paths queued so far are remembered as
    /// known dirty.
    pub fn mark_full(&mut self, now: Instant) {
        self.touch(now);
        self.full = true;
        let paths = std::mem::take(&mut self.paths);
        let renames = std::mem::take(&mut self.renames);
        for path in paths
            .iter()
            .chain(renames.iter().flat_map(|r| [&r.from, &r.to]))
        {
            self.remember(path);
        }
    }

    /// When the next batch is due: right away when no file is mid-write (close-write ends a
    /// file's burst, so an isolated change waits for nothing); otherwise `settle` after the last
    /// change, but no later than `max_latency` after the first one. `None` when nothing is
    /// pending.
    pub fn due_at(&self, settle: Duration, max_latency: Duration) -> Option<Instant> {
        if self.is_empty() {
            return None;
        }
        let (first, last) = (self.first_at?, self.last_at?);
        if let (Some(first_del), Some(last_del)) = (self.first_delete_at, self.last_delete_at) {
            let deletions = self.deletion_count();
            let (quiet, cap) = if deletions >= STORM_MIN {
                (STORM_QUIET, STORM_CAP)
            } else if deletions >= DELETE_BURST_MIN || deletions * 2 > self.events {
                (DELETE_SETTLE, DELETE_BURST_CAP)
            } else {
                (Duration::ZERO, Duration::ZERO)
            };
            if !quiet.is_zero() {
                let due = (last + settle).max(last_del + quiet);
                return Some(due.min(first.min(first_del) + cap.max(max_latency)));
            }
        }
        if self.burst_ended && self.open.is_empty() {
            return Some(last);
        }
        Some((last + settle).min(first + max_latency))
    }

    /// Takes everything as one batch.
    pub fn take(&mut self) -> Option<Batch> {
        self.take_with_known().map(|(batch, _)| batch)
    }

    /// Takes everything as one batch, with the paths known to have changed that its entries
    /// cover (sorted).
    pub fn take_with_known(&mut self) -> Option<(Batch, Vec<PathBuf>)> {
        if self.is_empty() {
            return None;
        }
        self.first_at = None;
        self.last_at = None;
        self.reset_deletions();
        self.moved.clear();
        self.unknown_contents_restored = false;
        // A file still being written shows up again with its next modify or close-write.
        self.open.clear();
        if std::mem::take(&mut self.full) {
            self.paths.clear();
            self.renames.clear();
            if self.known_dropped > 0 {
                tracing::info!(
                    dropped = self.known_dropped,
                    "full sync: changed paths past the remembered cap go by size and mtime"
                );
            }
            self.known_dropped = 0;
            let known = std::mem::take(&mut self.known).into_iter().collect();
            return Some((Batch::Full, known));
        }
        let batch = Batch::Paths {
            renames: std::mem::take(&mut self.renames),
            paths: std::mem::take(&mut self.paths).into_iter().collect(),
        };
        self.known_dropped = 0;
        let known = std::mem::take(&mut self.known).into_iter().collect();
        Some((batch, known))
    }

    /// Puts a failed batch back (merged with whatever arrived meanwhile). Its renames may or
    /// may not have happened on the remote: both ends become plain paths, which rsync fixes
    /// either way.
    pub fn restore(&mut self, batch: Batch, now: Instant) {
        match batch {
            Batch::Full => self.mark_full(now),
            Batch::Paths { renames, paths } => {
                for rename in renames {
                    self.add(&rename.from, now);
                    self.add(&rename.to, now);
                    self.note_moved(rename);
                }
                for path in paths {
                    self.add(&path, now);
                }
            }
        }
    }
}

/// The paths in `set` strictly below `path`: they sort right after it (component-wise order).
pub(crate) fn below(set: &BTreeSet<PathBuf>, path: &Path) -> Vec<PathBuf> {
    set.range::<Path, _>((std::ops::Bound::Excluded(path), std::ops::Bound::Unbounded))
        .take_while(|p| p.starts_with(path))
        .cloned()
        .collect()
}

/// `.git/objects/pack`, at any depth.
fn is_git_pack_dir(dir: &Path) -> bool {
    let mut tail = dir.components().rev();
    tail.next().is_some_and(|c| c.as_os_str() == "pack")
        && tail.next().is_some_and(|c| c.as_os_str() == "objects")
        && tail.next().is_some_and(|c| c.as_os_str() == ".git")
}

/// A loose git object `.git/objects/ab/cdef…` or its fan-out directory `.git/objects/ab`, at
/// any depth.
fn is_loose_git_object(path: &Path) -> bool {
    let fan_out = |name: &std::ffi::OsStr| {
        name.len() == 2 && name.as_encoded_bytes().iter().all(u8::is_ascii_hexdigit)
    };
    let names: Vec<&std::ffi::OsStr> = path.iter().collect();
    let under_objects = |i: usize| i >= 2 && names[i - 1] == "objects" && names[i - 2] == ".git";
    match names.len() {
        0 => false,
        n => {
            (fan_out(names[n - 1]) && under_objects(n - 1))
                || (n >= 2 && fan_out(names[n - 2]) && under_objects(n - 2))
        }
    }
}

/// Sorted paths with duplicates and paths below a listed directory dropped.
pub fn collapse<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Vec<PathBuf> {
    let mut set = DirtySet::default();
    let now = Instant::now();
    for path in paths {
        set.add(path, now);
    }
    match set.take() {
        Some(Batch::Paths { paths, .. }) => paths,
        _ => Vec::new(),
    }
}

/// Below this many deletions in one directory, they stay individual paths.
pub const DELETION_GROUP_MIN: usize = 16;

/// Prepares a batch's path list for rsync: a directory whose deleted entries outnumber what is
/// left in it (files only) is listed itself instead — one recursive `--delete` of a small
/// directory is far cheaper than hundreds of missing arguments, and never costs more than the
/// list it replaces. Returns the list and whether it holds a directory (see `ignore_times`).
pub fn transfer_list(root: &Path, paths: &[PathBuf]) -> (Vec<PathBuf>, bool) {
    use std::collections::BTreeMap;
    let mut missing: BTreeMap<&Path, usize> = BTreeMap::new();
    let mut has_dir = false;
    for path in paths {
        match std::fs::symlink_metadata(root.join(path)) {
            Ok(meta) => has_dir |= meta.is_dir(),
            Err(_) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    *missing.entry(parent).or_default() += 1;
                }
            }
        }
    }
    let groups: Vec<&Path> = missing
        .into_iter()
        .filter(|&(dir, deleted)| {
            deleted >= DELETION_GROUP_MIN && small_flat_dir(&root.join(dir), deleted)
        })
        .map(|(dir, _)| dir)
        .collect();
    if groups.is_empty() {
        return (paths.to_vec(), has_dir);
    }
    let mut set = DirtySet::default();
    let now = Instant::now();
    for dir in &groups {
        set.add(dir, now);
    }
    for path in paths {
        set.add(path, now);
    }
    let list = match set.take() {
        Some(Batch::Paths { paths: list, .. }) => list,
        _ => paths.to_vec(),
    };
    (list, true)
}

/// True when `dir` is a directory holding at most `limit` entries, none of them a directory.
fn small_flat_dir(dir: &Path, limit: usize) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut count = 0;
    for entry in entries {
        let Ok(entry) = entry else {
            return false;
        };
        count += 1;
        if count > limit || entry.file_type().is_ok_and(|t| t.is_dir()) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths_of(batch: &Batch) -> Vec<String> {
        match batch {
            Batch::Paths { paths, .. } => paths.iter().map(|p| p.display().to_string()).collect(),
            Batch::Full => panic!("a full sync"),
        }
    }

    fn paths(set: &mut DirtySet) -> Vec<String> {
        match set.take() {
            Some(Batch::Paths { renames, paths }) if renames.is_empty() => {
                paths.iter().map(|p| p.display().to_string()).collect()
            }
            other => panic!("expected paths, got {other:?}"),
        }
    }

    fn rename(from: &str, to: &str) -> Rename {
        Rename {
            from: from.into(),
            to: to.into(),
            is_dir: false,
        }
    }

    #[test]
    fn renames_keep_order_and_carry_pending_changes_along() {
        let now = Instant::now();
        let mut set = DirtySet::default();
        set.add(Path::new("d/changed"), now);
        set.add_rename(rename("d", "e"), now);
        set.add_rename(rename("a", "tmp"), now);
        set.add_rename(rename("b", "a"), now);
        set.add_rename(rename("tmp", "b"), now);
        assert_eq!(set.pending(), 5);
        match set.take() {
            Some(Batch::Paths { renames, paths }) => {
                let pairs: Vec<(&str, &str)> = renames
                    .iter()
                    .map(|r| (r.from.to_str().unwrap(), r.to.to_str().unwrap()))
                    .collect();
                assert_eq!(pairs, [("d", "e"), ("a", "tmp"), ("b", "a"), ("tmp", "b")]);
                assert_eq!(paths, [PathBuf::from("e/changed")]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_completed_rename_waits_the_settle_so_a_chain_of_renames_goes_in_one_batch() {
        let (settle, cap) = (Duration::from_millis(5), Duration::from_millis(100));
        let t0 = Instant::now();
        let mut set = DirtySet::default();
        set.add_rename(rename("d", "e"), t0);
        assert_eq!(set.due_at(settle, cap), Some(t0 + settle));
    }

    #[test]
    fn renames_of_queued_paths_become_plain_paths() {
        let now = Instant::now();
        let mut set = DirtySet::default();
        set.add(Path::new("new-dir"), now);
        set.add_rename(rename("new-dir/x", "new-dir/y"), now);
        set.add(Path::new("edited"), now);
        set.add_rename(rename("edited", "moved"), now);
        set.add_rename(rename("f", "new-dir/f"), now);
        assert_eq!(paths(&mut set), ["edited", "f", "moved", "new-dir"]);
        // A failed batch with renames comes back as plain paths.
        set.add_rename(rename("p", "q"), now);
        let batch = set.take().unwrap();
        set.restore(batch, now);
        assert_eq!(paths(&mut set), ["p", "q"]);
        // A full sync drops the renames.
        set.add_rename(rename("p", "q"), now);
        set.mark_full(now);
        assert_eq!(set.take(), Some(Batch::Full));
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
    fn paths_covered_by_a_queued_directory_are_still_known_and_move_with_renames() {
        let now = Instant::now();
        let mut set = DirtySet::default();
        // `cp -a` writes the files, then sets the directory's times: the directory absorbs them.
        set.add(Path::new("d/a"), now);
        set.add(Path::new("d"), now);
        set.add(Path::new("d/b"), now);
        set.add(Path::new("e/c"), now);
        let (batch, known) = set.take_with_known().unwrap();
        assert_eq!(paths_of(&batch), ["d", "e/c"]);
        assert_eq!(known, [PathBuf::from("d/a"), PathBuf::from("d/b")]);
        assert_eq!(set.take_with_known(), None, "taken with the batch");
        set.add(Path::new("x/f"), now);
        set.add(Path::new("x"), now);
        set.add_rename(rename("x", "y"), now);
        let (_, known) = set.take_with_known().unwrap();
        assert_eq!(known, [PathBuf::from("y/f")]);
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
        // The collapsed set still knows its paths, and counts them as pending.
        assert_eq!(set.pending(), FULL_SYNC_THRESHOLD as u64 + 1);
        set.add(Path::new("late"), now);
        set.add_rename(rename("r1", "r2"), now);
        let (batch, known) = set.take_with_known().unwrap();
        assert_eq!(batch, Batch::Full);
        assert_eq!(known.len(), FULL_SYNC_THRESHOLD + 4);
        assert!(known.contains(&PathBuf::from("late")) && known.contains(&PathBuf::from("r2")));
        assert_eq!(set.take(), None);
        // A plain full sync knows nothing and counts as one.
        set.mark_full(now);
        assert_eq!(set.pending(), 1);
        assert_eq!(set.take_with_known(), Some((Batch::Full, Vec::new())));
    }

    #[test]
    fn settle_and_max_latency() {
        let t0 = Instant::now();
        let settle = Duration::from_millis(5);
        let cap = Duration::from_millis(100);
        let mut set = DirtySet::default();
        assert_eq!(set.due_at(settle, cap), None);
        set.add(Path::new("a"), t0);
        set.note_write(Path::new("a"), true);
        assert_eq!(set.due_at(settle, cap), Some(t0 + settle));
        // Continuous writing keeps pushing the settle point, but the cap holds.
        for ms in 1..300 {
            set.add(Path::new("a"), t0 + Duration::from_millis(ms));
            set.note_write(Path::new("a"), true);
        }
        assert_eq!(set.due_at(settle, cap), Some(t0 + cap));
        set.take();
        let t1 = t0 + Duration::from_secs(1);
        set.add(Path::new("b"), t1);
        set.note_write(Path::new("b"), true);
        assert_eq!(set.due_at(settle, cap), Some(t1 + settle));
    }

    #[test]
    fn loose_git_objects_packed_by_gc_are_not_deletions() {
        let t0 = Instant::now();
        let mut set = DirtySet::default();
        for p in ["p/.git/objects/ab/cdef01", "p/.git/objects/ab", "src/gone"] {
            set.add(Path::new(p), t0);
            set.note_delete(Path::new(p), false, t0);
        }
        // A plain file named like an object elsewhere is a deletion like any other.
        set.note_delete(Path::new("objects/ab/cd"), false, t0);
        assert_eq!(set.deletions().0, 4, "no pack yet: all count");
        set.note_created(Path::new("p/.git/objects/pack/pack-1.pack"), false);
        assert_eq!(set.deletions().0, 2);
        assert_eq!(set.packed_deletions(), 2);
        assert_eq!(
            set.deleted_paths(),
            [PathBuf::from("objects/ab/cd"), PathBuf::from("src/gone")]
        );
        // The pack may go out in an earlier batch than the pruning.
        set.take();
        let later = t0 + Duration::from_secs(2);
        set.add(Path::new("p/.git/objects/cd/0123"), later);
        set.note_delete(Path::new("p/.git/objects/cd/0123"), false, later);
        assert_eq!(set.packed_deletions(), 1);
        // ... but not long after.
        set.take();
        let much_later = t0 + REPACK_WINDOW + Duration::from_secs(1);
        set.add(Path::new("p/.git/objects/ef/0123"), much_later);
        set.note_delete(Path::new("p/.git/objects/ef/0123"), false, much_later);
        assert_eq!(set.packed_deletions(), 0);
    }

    #[test]
    fn deletion_bursts_and_storms_wait_for_quiet_past_the_latency_cap() {
        let t0 = Instant::now();
        let settle = Duration::from_millis(5);
        let cap = Duration::from_millis(100);
        let ms = Duration::from_millis;
        let mut set = DirtySet::default();
        // An editor's save deleting its backup file: the ordinary settle.
        set.add(Path::new("f"), t0);
        set.add(Path::new("f~"), t0);
        set.note_delete(Path::new("f~"), false, t0);
        set.add(Path::new("f"), t0);
        assert_eq!(set.due_at(settle, cap), Some(t0 + settle));
        set.take();
        // Mostly deletions (even one): DELETE_SETTLE of quiet.
        set.add(Path::new("gone"), t0);
        set.note_delete(Path::new("gone"), false, t0);
        assert_eq!(set.due_at(settle, cap), Some(t0 + DELETE_SETTLE));
        set.take();
        // Many deletions among many other changes: a burst all the same.
        for i in 0..DELETE_BURST_MIN {
            for j in 0..3 {
                set.add(Path::new(&format!("new{i}-{j}")), t0);
            }
            set.add(Path::new(&format!("f{i}")), t0);
            set.note_delete(Path::new(&format!("f{i}")), false, t0);
        }
        assert_eq!(set.due_at(settle, cap), Some(t0 + DELETE_SETTLE));
        // A storm lasting past the latency cap is held until STORM_QUIET after its last one.
        for i in 0..STORM_MIN * 2 {
            let at = t0 + ms(i);
            set.add(Path::new(&format!("s{i}")), at);
            set.note_delete(Path::new(&format!("s{i}")), false, at);
        }
        let last = t0 + ms(STORM_MIN * 2 - 1);
        assert_eq!(set.due_at(settle, cap), Some(last + STORM_QUIET));
        assert_eq!(
            set.deletions(),
            (STORM_MIN * 2 + DELETE_BURST_MIN, last - t0)
        );
        // ... but not forever.
        let late = t0 + STORM_CAP + ms(1);
        set.add(Path::new("late"), late);
        set.note_delete(Path::new("late"), false, late);
        assert_eq!(set.due_at(settle, cap), Some(t0 + STORM_CAP));
        set.take();
        assert_eq!(set.deletions(), (0, Duration::ZERO));
        set.add(Path::new("one"), late);
        set.add(Path::new("one~"), late);
        set.note_delete(Path::new("one~"), false, late);
        assert_eq!(set.due_at(settle, cap), Some(late + settle));
    }

    #[test]
    fn due_at_once_unless_a_file_is_mid_write() {
        let t0 = Instant::now();
        let settle = Duration::from_millis(5);
        let cap = Duration::from_millis(100);
        let mut set = DirtySet::default();
        set.add(Path::new("f"), t0);
        set.note_write(Path::new("f"), true);
        assert_eq!(set.due_at(settle, cap), Some(t0 + settle));
        let t1 = t0 + Duration::from_millis(1);
        set.add(Path::new("f"), t1);
        set.note_closed(Path::new("f"));
        assert_eq!(set.due_at(settle, cap), Some(t1));
        // A deletion (or anything but a close-write) settles: more usually follow.
        set.add(Path::new("h"), t1);
        assert_eq!(set.due_at(settle, cap), Some(t1 + settle));
        set.add(Path::new("g"), t1);
        set.note_write(Path::new("g"), true);
        set.add(Path::new("f"), t1);
        set.note_closed(Path::new("f"));
        assert_eq!(set.due_at(settle, cap), Some(t1 + settle), "g is mid-write");
        set.take();
        // Taking the batch forgets writers.
        set.add(Path::new("f"), t1);
        set.note_closed(Path::new("f"));
        assert_eq!(set.due_at(settle, cap), Some(t1));
    }

    #[test]
    fn mass_deletions_in_a_small_directory_list_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for d in ["emptied", "big", "nested"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        std::fs::write(root.join("emptied/left"), "").unwrap();
        std::fs::create_dir(root.join("nested/sub")).unwrap();
        for i in 0..(DELETION_GROUP_MIN + 2) {
            std::fs::write(root.join(format!("big/keep{i}")), "").unwrap();
        }
        let mut paths: Vec<PathBuf> = Vec::new();
        for d in ["emptied", "big", "nested"] {
            for i in 0..DELETION_GROUP_MIN {
                paths.push(format!("{d}/gone{i}").into());
            }
        }
        paths.push("emptied/left".into());
        paths.push("top-gone".into());
        paths.sort();
        let (list, has_dir) = transfer_list(root, &paths);
        assert!(has_dir);
        assert!(list.contains(&PathBuf::from("emptied")));
        let under = |p: &PathBuf, d: &str| p.starts_with(d) && p != Path::new(d);
        assert!(!list.iter().any(|p| under(p, "emptied")), "{list:?}");
        // More left than deleted, or a subdirectory: keep the individual paths.
        assert_eq!(
            list.iter().filter(|p| under(p, "big")).count(),
            DELETION_GROUP_MIN
        );
        assert_eq!(
            list.iter().filter(|p| under(p, "nested")).count(),
            DELETION_GROUP_MIN
        );
        assert!(list.contains(&PathBuf::from("top-gone")));
        let few = vec![PathBuf::from("emptied/gone1")];
        assert_eq!(transfer_list(root, &few), (few.clone(), false));
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

    #[test]
    fn a_deleted_directory_without_its_contents_is_unknown_and_renames_as_paths_are_kept() {
        let now = Instant::now();
        let mut set = DirtySet::default();
        // `rm -rf d`: the entries first, then the directory.
        set.add(Path::new("d/f"), now);
        set.note_delete(Path::new("d/f"), false, now);
        set.add(Path::new("d"), now);
        set.note_delete(Path::new("d"), true, now);
        assert!(!set.deletes_unknown_contents());
        // `mv big ..`: only the directory is reported.
        set.add(Path::new("big"), now);
        set.note_delete(Path::new("big"), true, now);
        assert!(set.deletes_unknown_contents());
        set.note_created(Path::new("big"), true);
        assert!(!set.deletes_unknown_contents(), "moved back in");
        set.note_delete(Path::new("big"), true, now);
        let r = rename("x", "y");
        set.restore(
            Batch::Paths {
                renames: vec![r.clone()],
                paths: Vec::new(),
            },
            now,
        );
        assert_eq!(set.moved(), [r]);
        set.take();
        set.add(Path::new("big"), now);
        set.restore_unknown_contents();
        assert!(set.deletes_unknown_contents(), "a failed batch's retry");
        set.take();
        assert!(set.moved().is_empty());
        assert!(!set.deletes_unknown_contents());
    }
}
