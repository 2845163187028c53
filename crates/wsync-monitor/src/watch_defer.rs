//! What the inotify reader holds back while new directories are walked off its thread: the
//! directories queued for the subtree walker and every path whose change had to wait behind
//! one ("held"), so a change at or below a directory still being walked — the directory's own
//! creation included — goes out only after the walk (its watches added, its ignore files read,
//! the rules file written), while changes elsewhere go out at once. A later change to a held
//! path waits too, so no change overtakes an earlier one on the same path, and a rename's two
//! halves stay together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::watch::{Change, ChangeKind};

/// Paths with work queued for the walker, counted (two queued jobs may hold one path).
#[derive(Debug, Default)]
pub(crate) struct Held {
    paths: BTreeMap<PathBuf, usize>,
}

/// One read's changes split in two: what goes out now and what waits for the walker.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Split {
    pub now: Vec<Change>,
    pub later: Vec<Change>,
    /// The paths `later` holds (released once they went out).
    pub held: Vec<PathBuf>,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Holds `path` (a directory queued for a walk, or a change's path) until released.
    pub fn hold(&mut self, path: &Path) {
        *self.paths.entry(path.to_path_buf()).or_default() += 1;
    }

    /// Releases one hold of each of `paths`.
    pub fn release(&mut self, paths: &[PathBuf]) {
        for path in paths {
            if let Some(n) = self.paths.get_mut(path) {
                *n -= 1;
                if *n == 0 {
                    self.paths.remove(path);
                }
            }
        }
    }

    /// True when `path` or one of its ancestors is held: O(depth · log held).
    pub fn covers(&self, path: &Path) -> bool {
        !self.paths.is_empty() && path.ancestors().any(|a| self.paths.contains_key(a))
    }

    /// True when `path`, one of its ancestors or anything below it is held (a walk queued
    /// there has not run yet).
    pub fn touches(&self, path: &Path) -> bool {
        self.covers(path)
            || self
                .paths
                .range::<Path, _>((std::ops::Bound::Excluded(path), std::ops::Bound::Unbounded))
                .next()
                .is_some_and(|(p, _)| p.starts_with(path))
    }

    /// Splits `changes` (in order) into those that go out now and those that wait: a change
    /// waits when its path is covered, and a rename's MOVED_FROM and the MOVED_TO right after
    /// it wait together when either does. Every path that waits is held (a later change to it,
    /// or below it, waits as well).
    pub fn split(&mut self, changes: Vec<Change>) -> Split {
        let mut split = Split::default();
        let mut changes = changes.into_iter().peekable();
        while let Some(change) = changes.next() {
            let mut unit = vec![change];
            if let ChangeKind::MovedFrom { cookie } = unit[0].kind {
                if let Some(to) = changes.next_if(|c| c.kind == ChangeKind::MovedTo { cookie }) {
                    unit.push(to);
                }
            }
            if unit.iter().any(|c| self.covers(&c.path)) {
                for c in &unit {
                    self.hold(&c.path);
                    split.held.push(c.path.clone());
                }
                split.later.extend(unit);
            } else {
                split.now.extend(unit);
            }
        }
        split
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, kind: ChangeKind) -> Change {
        Change {
            path: PathBuf::from(path),
            kind,
            is_dir: false,
        }
    }

    fn paths(changes: &[Change]) -> Vec<&str> {
        changes.iter().map(|c| c.path.to_str().unwrap()).collect()
    }

    #[test]
    fn changes_at_or_below_a_walked_dir_wait_the_rest_go_now() {
        let mut held = Held::default();
        held.hold(Path::new("new"));
        let split = held.split(vec![
            change("new", ChangeKind::Created),
            change("other", ChangeKind::Modified),
            change("new/a/b", ChangeKind::Created),
            change("newer", ChangeKind::Created),
        ]);
        assert_eq!(paths(&split.now), ["other", "newer"]);
        assert_eq!(paths(&split.later), ["new", "new/a/b"]);
        // A later change to a path that waits, waits too.
        held.release(&[PathBuf::from("new")]);
        let again = held.split(vec![change("new/a/b", ChangeKind::Modified)]);
        assert_eq!(paths(&again.later), ["new/a/b"]);
        held.release(&split.held);
        held.release(&again.held);
        assert!(held.is_empty(), "{held:?}");
    }

    #[test]
    fn a_rename_waits_whole_when_either_half_is_held() {
        let mut held = Held::default();
        held.hold(Path::new("new"));
        let split = held.split(vec![
            change("new/x", ChangeKind::MovedFrom { cookie: 3 }),
            change("y", ChangeKind::MovedTo { cookie: 3 }),
            change("z", ChangeKind::MovedFrom { cookie: 4 }),
            change("w", ChangeKind::MovedTo { cookie: 4 }),
        ]);
        assert_eq!(paths(&split.later), ["new/x", "y"]);
        assert_eq!(paths(&split.now), ["z", "w"]);
        // The rename's target is held: an edit of it does not overtake the rename.
        assert!(held.covers(Path::new("y")));
        assert!(!held.covers(Path::new("w")));
    }
}
