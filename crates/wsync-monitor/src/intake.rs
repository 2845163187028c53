//! Change intake: watcher changes become dirty paths in every remote's queue. A file's
//! create/modify marks it mid-write until its close-write; changes below a directory created in
//! the last [`FRESH_DIR_WINDOW`] queue that directory (one recursive entry for a burst); and a
//! MOVED_FROM paired by cookie with the MOVED_TO right after it becomes a rename that is
//! replayed on the remotes instead of a delete plus a re-upload (`renames.rs`). An unpaired half
//! (a move into or out of the workspace) is a plain create or delete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::engine::{Engine, FRESH_DIR_WINDOW};
use crate::queue::Rename;
use crate::watch::{Change, ChangeKind};

impl Engine {
    pub(crate) fn on_changes(&mut self, changes: Vec<Change>, now: Instant) {
        tracing::trace!(changes = changes.len(), "changes");
        for change in changes {
            self.seq += 1;
            if let Some((cookie, from)) = self.pending_move.take() {
                if change.kind == (ChangeKind::MovedTo { cookie }) {
                    self.on_rename(from, change, now);
                    continue;
                }
                self.add_change(&from, now);
            }
            if let ChangeKind::MovedFrom { cookie } = change.kind {
                self.pending_move = Some((cookie, change));
                continue;
            }
            self.add_change(&change, now);
        }
    }

    /// Flushes a MOVED_FROM whose MOVED_TO never came: the entry left the workspace.
    pub(crate) fn flush_pending_move(&mut self, now: Instant) {
        if let Some((_, from)) = self.pending_move.take() {
            self.add_change(&from, now);
        }
    }

    fn on_rename(&mut self, from: Change, to: Change, now: Instant) {
        let (from_q, to_q) = (self.queue_path(&from, now), self.queue_path(&to, now));
        if from_q != from.path || to_q != to.path {
            // Inside a directory that is still being filled: its recursive sync covers both.
            self.add_change(&from, now);
            self.add_change(&to, now);
            return;
        }
        tracing::trace!(from = %from.path.display(), to = %to.path.display(), "rename");
        let rename = Rename {
            from: from.path,
            to: to.path,
            is_dir: to.is_dir,
        };
        for (_, slot) in &mut self.slots {
            slot.dirty.note_write(&rename.from, false);
            // A running transfer over either end may have read or changed it half before, half
            // after the rename: the remote cannot be trusted to match, so rsync both ends.
            let racing = slot
                .in_flight
                .as_ref()
                .is_some_and(|f| f.touches(&rename.from) || f.touches(&rename.to));
            if racing {
                slot.dirty.add(&rename.from, now);
                slot.dirty.add(&rename.to, now);
            } else {
                slot.dirty.add_rename(rename.clone(), now);
            }
        }
    }

    fn add_change(&mut self, change: &Change, now: Instant) {
        let queued = self.queue_path(change, now);
        let open = match change.kind {
            ChangeKind::Created => Some(!change.is_dir),
            ChangeKind::Modified => Some(true),
            ChangeKind::Deleted | ChangeKind::MovedFrom { .. } | ChangeKind::MovedTo { .. } => {
                Some(false)
            }
            ChangeKind::Closed | ChangeKind::Attrib => None,
        };
        let deletion = matches!(
            change.kind,
            ChangeKind::Deleted | ChangeKind::MovedFrom { .. }
        );
        for (_, slot) in &mut self.slots {
            slot.dirty.add(&queued, now);
            if deletion {
                slot.dirty.note_delete(now);
            }
            if change.kind == ChangeKind::Closed {
                slot.dirty.note_closed(&change.path);
            } else if let Some(open) = open {
                slot.dirty.note_write(&change.path, open);
            }
        }
    }

    /// The path to queue for a change: the change's own, or the newly created directory above
    /// it that is still filling (synced recursively, so one entry covers the whole burst).
    fn queue_path(&mut self, change: &Change, now: Instant) -> PathBuf {
        if self.fresh_dirs.len() > 1024 {
            self.fresh_dirs
                .retain(|_, at| now.duration_since(*at) < FRESH_DIR_WINDOW);
        }
        let fresh = |p: &Path, fresh_dirs: &HashMap<PathBuf, Instant>| {
            fresh_dirs
                .get(p)
                .is_some_and(|at| now.duration_since(*at) < FRESH_DIR_WINDOW)
        };
        let path = &change.path;
        // The topmost fresh ancestor wins (ancestors() runs bottom-up).
        if let Some(dir) = path
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty() && fresh(a, &self.fresh_dirs))
            .last()
        {
            return dir.to_path_buf();
        }
        match change.kind {
            ChangeKind::Created if change.is_dir => {
                self.fresh_dirs.insert(path.clone(), now);
            }
            ChangeKind::Deleted | ChangeKind::MovedFrom { .. } if change.is_dir => {
                self.fresh_dirs.remove(path);
            }
            _ => {}
        }
        path.clone()
    }
}
