//! The watch table's two indexes, kept consistent: watch descriptor → directory, for events, and
//! directory → watch descriptor in path order, where a directory's subtree is one contiguous
//! range (component-wise order), so moving or dropping a subtree costs O(size of the subtree
//! · log n), not a pass over every watch of a huge tree.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// Watches by id and by path. `W` is the descriptor (inotify's `WatchDescriptor`; anything in
/// unit tests).
#[derive(Debug)]
pub(crate) struct WatchPaths<W> {
    by_wd: HashMap<i32, (W, PathBuf)>,
    /// (path, id): a path may briefly have two watches (a directory replaced by another).
    by_path: BTreeSet<(PathBuf, i32)>,
}

impl<W> Default for WatchPaths<W> {
    fn default() -> Self {
        Self {
            by_wd: HashMap::new(),
            by_path: BTreeSet::new(),
        }
    }
}

impl<W> WatchPaths<W> {
    pub fn len(&self) -> usize {
        self.by_wd.len()
    }

    /// Records watch `id` on `path` (re-adding a watched inode moves its entry).
    pub fn insert(&mut self, id: i32, wd: W, path: PathBuf) {
        if let Some((_, old)) = self.by_wd.remove(&id) {
            self.by_path.remove(&(old, id));
        }
        self.by_path.insert((path.clone(), id));
        self.by_wd.insert(id, (wd, path));
    }

    pub fn path(&self, id: i32) -> Option<&Path> {
        self.by_wd.get(&id).map(|(_, path)| path.as_path())
    }

    pub fn contains_path(&self, path: &Path) -> bool {
        self.subtree(path).next().is_some_and(|(p, _)| p == path)
    }

    /// Forgets watch `id`; returns its descriptor and path.
    pub fn remove(&mut self, id: i32) -> Option<(W, PathBuf)> {
        let (wd, path) = self.by_wd.remove(&id)?;
        self.by_path.remove(&(path.clone(), id));
        Some((wd, path))
    }

    /// The entries at or below `rel`, in path order.
    fn subtree<'a>(&'a self, rel: &'a Path) -> impl Iterator<Item = &'a (PathBuf, i32)> + 'a {
        self.by_path
            .range::<(PathBuf, i32), _>((
                Bound::Included((rel.to_path_buf(), i32::MIN)),
                Bound::Unbounded,
            ))
            .take_while(move |(path, _)| path.starts_with(rel))
    }

    /// Forgets the watches at or below `rel`; returns their descriptors.
    pub fn remove_below(&mut self, rel: &Path) -> Vec<W> {
        let ids: Vec<i32> = self.subtree(rel).map(|(_, id)| *id).collect();
        ids.into_iter()
            .filter_map(|id| self.remove(id).map(|(wd, _)| wd))
            .collect()
    }

    /// The watches at or below `from` now live below `to` (a directory renamed: same inodes).
    /// Returns how many moved.
    pub fn rename_below(&mut self, from: &Path, to: &Path) -> usize {
        let moved: Vec<(PathBuf, i32)> = self.subtree(from).cloned().collect();
        for (path, id) in &moved {
            self.by_path.remove(&(path.clone(), *id));
        }
        for (path, id) in &moved {
            let Ok(rest) = path.strip_prefix(from) else {
                continue;
            };
            let new = to.join(rest);
            self.by_path.insert((new.clone(), *id));
            if let Some(entry) = self.by_wd.get_mut(id) {
                entry.1 = new;
            }
        }
        moved.len()
    }

    /// Every watch: (id, path).
    pub fn iter(&self) -> impl Iterator<Item = (i32, &Path)> {
        self.by_wd
            .iter()
            .map(|(id, (_, path))| (*id, path.as_path()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(paths: &[&str]) -> WatchPaths<()> {
        let mut t = WatchPaths::default();
        for (id, path) in paths.iter().enumerate() {
            t.insert(id as i32, (), PathBuf::from(path));
        }
        t
    }

    fn sorted(t: &WatchPaths<()>) -> Vec<String> {
        let mut all: Vec<String> = t.iter().map(|(_, p)| p.display().to_string()).collect();
        all.sort();
        all
    }

    #[test]
    fn a_move_touches_only_the_moved_subtree() {
        // Siblings whose names extend the moved one ("a b", "ab", "a.txt") sort around it
        // byte-wise but are not below it.
        let mut t = table(&["", "a", "a/x", "a/x/y", "a b", "ab", "a.txt", "b", "b/a"]);
        for i in 0..10_000 {
            t.insert(100 + i, (), PathBuf::from(format!("big/{i}")));
        }
        assert_eq!(t.rename_below(Path::new("a"), Path::new("c/a2")), 3);
        assert_eq!(t.path(1), Some(Path::new("c/a2")));
        assert_eq!(t.path(3), Some(Path::new("c/a2/x/y")));
        assert_eq!(t.path(4), Some(Path::new("a b")));
        assert!(t.contains_path(Path::new("c/a2/x")));
        assert!(!t.contains_path(Path::new("a/x")));
        assert!(!t.contains_path(Path::new("c")), "only what was watched");
        let removed = t.remove_below(Path::new("b"));
        assert_eq!(removed.len(), 2);
        assert_eq!(t.len(), 10_007);
        assert!(sorted(&t).starts_with(&["".into(), "a b".into(), "a.txt".into(), "ab".into(),]));
    }

    #[test]
    fn a_watch_added_again_moves_and_removal_keeps_both_indexes_in_step() {
        let mut t = table(&["", "a", "a/x"]);
        // The inode of "a/x" watched again under a new name (moved while unwatched).
        t.insert(2, (), PathBuf::from("z"));
        assert!(!t.contains_path(Path::new("a/x")));
        assert_eq!(t.remove_below(Path::new("a")).len(), 1);
        assert_eq!(t.remove(2).map(|(_, p)| p), Some(PathBuf::from("z")));
        assert_eq!(sorted(&t), [""]);
        // The root's subtree is everything.
        let mut t = table(&["", "a", "b/c"]);
        assert_eq!(t.remove_below(Path::new("")).len(), 3);
        assert_eq!(t.len(), 0);
    }
}
