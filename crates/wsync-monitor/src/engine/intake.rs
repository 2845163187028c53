//! Change intake: turns the watcher's changes into what every remote queues. A file's
//! create/modify marks it mid-write until its close-write; changes below a directory created
//! in the last [`FRESH_DIR_WINDOW`] queue that directory (one recursive entry for a burst); and
//! a MOVED_FROM paired by cookie with the MOVED_TO right after it becomes a rename replayed on
//! the remotes instead of a delete plus a re-upload. An unpaired half (a move into or out of
//! the workspace) is a plain create or delete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::queue::Rename;
use crate::watch::{Change, ChangeKind};

/// How long a newly created directory counts as still filling.
pub const FRESH_DIR_WINDOW: Duration = Duration::from_secs(1);

/// What a change says about a file being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Write {
    /// Created or modified (`true`: a file still being written) or gone (`false`).
    Open(bool),
    /// A close-write: the file's burst of writes is over.
    Closed,
    /// An attribute change: says nothing about writing.
    Unchanged,
}

/// One entry for every remote's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Queued {
    Path {
        /// The path to sync: the change's own, or the fresh directory above it.
        queue: PathBuf,
        /// The path the change was about.
        changed: PathBuf,
        write: Write,
        /// A delete or a move out of the workspace (they decide the deletion timing).
        deletion: bool,
        /// A create or a move into the workspace: a deletion of this path no longer counts.
        creation: bool,
        is_dir: bool,
        /// A directory (or what may have been one) moved out of the workspace: what the
        /// remote holds below it was never reported. (An `rmdir` needs the directory empty:
        /// its contents went by their own events.)
        contents_unknown: bool,
    },
    Rename(Rename),
}

#[derive(Debug, Default)]
pub(super) struct Intake {
    /// Directories created in the last [`FRESH_DIR_WINDOW`].
    fresh_dirs: HashMap<PathBuf, Instant>,
    /// A MOVED_FROM waiting for its MOVED_TO (they arrive back to back).
    pending_move: Option<(u32, Change)>,
}

impl Intake {
    /// Takes one change; returns what to queue (nothing while a MOVED_FROM waits for its pair).
    pub fn accept(&mut self, change: Change, now: Instant) -> Vec<Queued> {
        let mut out = Vec::new();
        if let Some((cookie, from)) = self.pending_move.take() {
            if change.kind == (ChangeKind::MovedTo { cookie }) {
                self.pair(from, change, now, &mut out);
                return out;
            }
            out.push(self.plain(&from, now));
        }
        if let ChangeKind::MovedFrom { cookie } = change.kind {
            self.pending_move = Some((cookie, change));
            return out;
        }
        out.push(self.plain(&change, now));
        out
    }

    /// Everything the watcher had was read: a MOVED_FROM still waiting left the workspace
    /// (the watcher sends both halves of a rename in one message, waiting for the MOVED_TO
    /// when a read ends on a MOVED_FROM).
    pub fn end_of_read(&mut self, now: Instant) -> Option<Queued> {
        let (_, from) = self.pending_move.take()?;
        Some(self.plain(&from, now))
    }

    fn pair(&mut self, from: Change, to: Change, now: Instant, out: &mut Vec<Queued>) {
        let (from_q, to_q) = (self.path_to_queue(&from, now), self.path_to_queue(&to, now));
        if from_q != from.path || to_q != to.path {
            // Inside a directory that is still being filled: its recursive sync covers both.
            out.push(self.plain(&from, now));
            out.push(self.plain(&to, now));
            return;
        }
        tracing::trace!(from = %from.path.display(), to = %to.path.display(), "rename");
        out.push(Queued::Rename(Rename {
            from: from.path,
            to: to.path,
            is_dir: to.is_dir,
        }));
    }

    fn plain(&mut self, change: &Change, now: Instant) -> Queued {
        let write = match change.kind {
            ChangeKind::Created => Write::Open(!change.is_dir),
            ChangeKind::Modified => Write::Open(true),
            ChangeKind::Deleted | ChangeKind::MovedFrom { .. } | ChangeKind::MovedTo { .. } => {
                Write::Open(false)
            }
            ChangeKind::Closed => Write::Closed,
            ChangeKind::Attrib => Write::Unchanged,
        };
        Queued::Path {
            queue: self.path_to_queue(change, now),
            changed: change.path.clone(),
            write,
            deletion: matches!(
                change.kind,
                ChangeKind::Deleted | ChangeKind::MovedFrom { .. }
            ),
            creation: matches!(
                change.kind,
                ChangeKind::Created | ChangeKind::MovedTo { .. }
            ),
            is_dir: change.is_dir,
            contents_unknown: change.is_dir && matches!(change.kind, ChangeKind::MovedFrom { .. }),
        }
    }

    /// The path to queue for a change: the change's own, or the newly created directory above
    /// it that is still filling (synced recursively, so one entry covers the whole burst).
    fn path_to_queue(&mut self, change: &Change, now: Instant) -> PathBuf {
        if let Some(dir) = self.fresh_ancestor(&change.path, now) {
            return dir;
        }
        self.track_fresh_dir(change, now);
        change.path.clone()
    }

    /// The topmost ancestor of `path` created within the window.
    fn fresh_ancestor(&mut self, path: &Path, now: Instant) -> Option<PathBuf> {
        if self.fresh_dirs.len() > 1024 {
            self.fresh_dirs
                .retain(|_, at| now.duration_since(*at) < FRESH_DIR_WINDOW);
        }
        let fresh = |p: &Path| {
            self.fresh_dirs
                .get(p)
                .is_some_and(|at| now.duration_since(*at) < FRESH_DIR_WINDOW)
        };
        // ancestors() runs bottom-up: the last match is the topmost.
        path.ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty() && fresh(a))
            .last()
            .map(Path::to_path_buf)
    }

    /// A new directory starts its window; a deleted or moved-away one ends it.
    fn track_fresh_dir(&mut self, change: &Change, now: Instant) {
        match change.kind {
            ChangeKind::Created if change.is_dir => {
                self.fresh_dirs.insert(change.path.clone(), now);
            }
            ChangeKind::Deleted | ChangeKind::MovedFrom { .. } if change.is_dir => {
                self.fresh_dirs.remove(&change.path);
            }
            _ => {}
        }
    }
}
