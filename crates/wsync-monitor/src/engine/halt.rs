//! The safety rails that keep a vanished source from wiping the remotes. The root must stay the
//! directory the watches were set up on (same device and inode): missing or replaced, the
//! workspace halts with the reason and nothing is synced or deleted. `resume` (or a resync)
//! lifts the halt once the root is a directory again (adopting it if it is a new one). The
//! per-batch checks (empty root with a non-empty remote, a remote target that disappeared, the
//! `--max-delete` cap) run in `batch` and report back through `Outcome::halt`; lifting one of
//! those *deletion* halts is the user's confirmation, so the next full sync runs without the
//! cap and may empty a remote whose root was emptied. A replaced root is never confirmed as
//! empty in the same step: if the new directory is empty, the next sync halts again for that.
//!
//! The engine never reads the filesystem itself: it asks for a [`RootProbe`] (an effect) and
//! decides when the answer comes back.

use std::path::Path;

use crate::batch::DeletePolicy;

/// Device and inode of a directory.
pub type RootId = (u64, u64);

/// What the root looks like right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootProbe {
    /// Device and inode when the root is a directory.
    pub id: Option<RootId>,
    /// Whether it holds nothing but flush cookies; only read when asked for (`None`).
    pub empty: Option<bool>,
}

impl RootProbe {
    /// Looks at `root`; lists it only when `list` (it stops at the first real entry).
    pub fn read(root: &Path, list: bool) -> Self {
        Self {
            id: current_root_id(root),
            empty: list.then(|| crate::batch::root_is_empty(root)),
        }
    }
}

/// Why the engine asked for a probe, so the answer goes to the right rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbePurpose {
    /// Batches are due: the root must still be ours before anything is sent.
    Dispatch,
    /// The watcher saw the root deleted or moved away.
    RootGone,
    /// The kernel dropped the root's watch.
    RootUnwatched,
    /// `resume` or `resync` wants the halt lifted.
    Lift,
}

/// A halted workspace: nothing is synced or deleted until the user lifts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Halt {
    pub reason: String,
    /// The delete policy the remotes' next full sync runs under once it is lifted:
    /// `Confirmed` when lifting confirms the deletions this halt stopped (an emptied root, the
    /// `--max-delete` cap), else `DryRunFirst`.
    pub on_lift: DeletePolicy,
}

impl Halt {
    pub fn root_missing(root: &Path) -> Self {
        Self::unconfirmed(format!(
            "workspace root {} is missing or not a directory; nothing is synced or deleted until it is back and `wsync resume` is run",
            root.display()
        ))
    }

    pub fn root_replaced(root: &Path) -> Self {
        Self::unconfirmed(format!(
            "workspace root {} was replaced by another directory (a mount went away or it was recreated); nothing is synced or deleted until `wsync resume` confirms it",
            root.display()
        ))
    }

    pub fn root_gone(root: &Path) -> Self {
        Self::unconfirmed(format!(
            "workspace root {} was deleted or moved away; nothing is synced or deleted until it is back and `wsync resume` is run",
            root.display()
        ))
    }

    pub fn unconfirmed(reason: String) -> Self {
        Self {
            reason,
            on_lift: DeletePolicy::DryRunFirst,
        }
    }

    /// A halt that stopped deletions: lifting it confirms them.
    pub fn deletions(reason: String) -> Self {
        Self {
            reason,
            on_lift: DeletePolicy::Confirmed,
        }
    }
}

/// The halt a probe calls for, if any: the root must be the directory the watches were set up
/// on (`expected`; `None` when the monitor started without one, and then any directory will
/// do).
pub(super) fn check_root(root: &Path, expected: Option<RootId>, probe: &RootProbe) -> Option<Halt> {
    match (probe.id, expected) {
        (Some(now), Some(then)) if now == then => None,
        (Some(_), None) => None,
        (Some(_), Some(_)) => Some(Halt::root_replaced(root)),
        (None, _) => Some(Halt::root_missing(root)),
    }
}

/// Device and inode of `root` when it is a directory.
pub fn current_root_id(root: &Path) -> Option<RootId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(root)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}
