//! The watch contract every backend (`crate::backend`) speaks: the [`Change`]s and other
//! [`WatchMsg`]s the engine reads, and why watching can degrade ([`WatchError`]). The inotify
//! backend, Linux only, is in `watch_inotify.rs`; excluded entries' bookkeeping (rsync rules,
//! reloading changed ignore files) is in `watch_excludes.rs`.

use std::path::PathBuf;

pub use crate::watch_excludes::ExcludeConfig;

/// What a change event was; kept (not just the path) so rename pairing can use the cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Modified,
    /// A file opened for writing was closed: its burst of writes is over.
    Closed,
    Attrib,
    Deleted,
    MovedFrom {
        cookie: u32,
    },
    MovedTo {
        cookie: u32,
    },
}

/// One change below the root; `path` is relative to it (empty for the root itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
    pub is_dir: bool,
}

/// Messages from the watcher thread to the engine.
#[derive(Debug)]
pub enum WatchMsg {
    Changes(Vec<Change>),
    /// A flush cookie (file name) appeared: every event before it has been delivered.
    Cookie(String),
    /// The kernel queue overflowed; watches have been re-established, a full sync is needed.
    Overflow,
    /// The workspace root was deleted or moved away.
    RootGone,
    /// The kernel dropped the root's watch (IN_IGNORED: its filesystem was unmounted, or it
    /// was deleted): nothing below it is watched any more.
    RootUnwatched,
    /// The initial walk goes on beside the initial syncs: flushes wait for [`WatchMsg::Walked`]
    /// (a change in a directory not yet watched may still be reported).
    Walking,
    /// The initial walk ended: every directory is watched, and what changed before its
    /// directory was watched has been reported.
    Walked,
    /// Watching is degraded for good (e.g. the inotify watch limit).
    Error(WatchError),
    /// The chosen backend could not start (no inotify instance left): the tree is polled
    /// instead (see [`crate::poll`]); the text, for status, names the limit to raise.
    Polling(String),
}

/// Why watching is degraded: events can no longer be trusted to be complete, so the engine
/// falls back to periodic full syncs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// `inotify_add_watch` failed with ENOSPC: `fs.inotify.max_user_watches` is reached.
    #[error("inotify watch limit reached after {watches} watches while watching {}: raise it with `sysctl fs.inotify.max_user_watches=524288` (and fs.inotify.max_user_instances); falling back to periodic full syncs", .dir.display())]
    WatchLimit { watches: usize, dir: PathBuf },
    /// Reading the inotify descriptor failed.
    #[error("reading inotify events: {0}")]
    Read(String),
    /// The watcher thread ended.
    #[error("the watcher thread stopped")]
    Stopped,
    /// The `notify` backend reported an error (`WatchMode=notify`).
    #[error("the notify watch backend failed: {0}; falling back to periodic full syncs")]
    Notify(String),
}
