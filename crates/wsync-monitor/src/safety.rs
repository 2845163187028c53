//! The safety rails that keep a vanished source from wiping the remotes: the root must stay the
//! directory the watches were set up on (same device and inode) — missing or replaced, the
//! workspace halts with the reason and nothing is synced or deleted; `resume` (or a resync)
//! lifts the halt once the root is a directory again (adopting it if it is a new one). The
//! per-batch checks (empty root with a non-empty remote, a remote target that disappeared, the
//! `--max-delete` cap) run in `worker.rs` and report back through `Outcome::halt`; lifting one
//! of those *deletion* halts is the user's confirmation, so the next full sync runs without the
//! cap and may empty a remote whose root was emptied. A replaced root is never confirmed as
//! empty in the same step: if the new directory is empty, the next sync halts again for that.

use std::path::Path;
use std::time::Instant;

use crate::engine::Engine;

impl Engine {
    /// True when the root is the directory the watches were set up on; otherwise halts (never
    /// sync, above all never `--delete`, from a missing or replaced root).
    pub(crate) fn root_ok(&mut self) -> bool {
        match (current_root_id(&self.root), self.root_id) {
            (Some(now), Some(then)) if now == then => true,
            (Some(_), None) => true,
            (Some(_), Some(_)) => {
                self.halt(format!(
                    "workspace root {} was replaced by another directory (a mount went away or it was recreated); nothing is synced or deleted until `wsync resume` confirms it",
                    self.root.display()
                ));
                false
            }
            (None, _) => {
                self.halt(format!(
                    "workspace root {} is missing or not a directory; nothing is synced or deleted until it is back and `wsync resume` is run",
                    self.root.display()
                ));
                false
            }
        }
    }

    pub(crate) fn halt(&mut self, reason: String) {
        self.halt_as(reason, false);
    }

    /// Halts; `confirms_deletions` says whether lifting this halt confirms the deletions it
    /// stopped (an emptied root, the `--max-delete` cap).
    pub(crate) fn halt_as(&mut self, reason: String, confirms_deletions: bool) {
        if self.halted.as_deref() != Some(reason.as_str()) {
            tracing::error!("halted: {reason}");
        }
        self.halted = Some(reason);
        self.halt_confirms = confirms_deletions;
        let now = Instant::now();
        for (_, slot) in &mut self.slots {
            if slot.in_flight.is_some() || !slot.finishing.is_empty() {
                slot.abort_all();
                slot.dirty.mark_full(now);
            }
        }
    }

    /// Lifts a safety halt when the root is a directory again: re-watch the tree (the root may
    /// be a new inode) and resync everything.
    pub(crate) fn lift_halt(&mut self) {
        let Some(reason) = self.halted.clone() else {
            return;
        };
        let Some(id) = current_root_id(self.root()) else {
            tracing::warn!("still halted: {reason}");
            return;
        };
        if let Some(watcher) = &self.watcher {
            // A different directory now: drop every old watch before watching it afresh.
            let result = if self.root_id == Some(id) {
                watcher.rescan()
            } else {
                watcher.rewatch()
            };
            if let Err(message) = result {
                self.watch_error.get_or_insert(message);
            }
        }
        self.root_id = Some(id);
        if self.halt_confirms {
            tracing::info!("halt lifted by the user's confirmation; running a full sync that may delete without cap");
            for (_, slot) in &mut self.slots {
                slot.confirmed = true;
            }
        } else {
            tracing::info!(
                "halt lifted; running a full sync (dry-run first against the --max-delete cap)"
            );
            for (_, slot) in &mut self.slots {
                slot.precheck = true;
            }
        }
        self.halted = None;
        // Deletions seen before the halt were judged by it; the full sync re-judges the tree.
        for (_, slot) in &mut self.slots {
            slot.dirty.reset_deletions();
        }
        self.rescans += 1;
        self.mark_all_full();
    }
}

/// Device and inode of `root` when it is a directory.
pub(crate) fn current_root_id(root: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(root)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}
