//! The watcher: one inotify instance with a watch on every directory of the workspace, read by
//! a dedicated thread that keeps the watch table current (new directories are watched before
//! their change is reported, so their contents are never missed) and turns raw events into
//! [`WatchMsg`]s for the engine.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::mpsc::UnboundedSender;
use wsync_core::rsync::COOKIE_PREFIX;

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
    /// Adding a watch failed for good (e.g. the inotify watch limit).
    Error(String),
}

const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::DONT_FOLLOW)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::EXCL_UNLINK);

/// The watch descriptor → directory table, shared by the reader thread and rescans.
pub struct WatchTable {
    root: PathBuf,
    watches: Watches,
    by_wd: HashMap<i32, (WatchDescriptor, PathBuf)>,
    /// Set once a watch could not be added for a reason other than the directory vanishing.
    pub error: Option<String>,
}

/// Handle the engine keeps: the table (for counts and rescans).
#[derive(Clone)]
pub struct Watcher {
    table: Arc<Mutex<WatchTable>>,
}

impl Watcher {
    /// Creates the inotify instance, watches the whole tree (before any sync runs), and starts
    /// the reader thread that sends [`WatchMsg`]s to `tx`.
    pub fn start(root: &Path, tx: UnboundedSender<WatchMsg>) -> io::Result<Self> {
        let inotify = Inotify::init()?;
        let mut table = WatchTable {
            root: root.to_path_buf(),
            watches: inotify.watches(),
            by_wd: HashMap::new(),
            error: None,
        };
        if let Err(message) = table.add_tree(Path::new("")) {
            tracing::error!("{message}");
            let _ = tx.send(WatchMsg::Error(message));
        }
        tracing::info!(watches = table.by_wd.len(), "watching {}", root.display());
        let table = Arc::new(Mutex::new(table));
        let watcher = Self { table };
        let reader = watcher.clone();
        std::thread::Builder::new()
            .name("inotify".into())
            .spawn(move || reader.read_loop(inotify, tx))?;
        Ok(watcher)
    }

    fn lock(&self) -> MutexGuard<'_, WatchTable> {
        // A panic while holding the lock leaves a usable table; recover it.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches in use.
    pub fn count(&self) -> u64 {
        self.lock().by_wd.len() as u64
    }

    /// Re-walks the tree and adds any missing watch (after an overflow, or when a halted root
    /// came back). Returns the error message when watching is degraded.
    pub fn rescan(&self) -> Result<(), String> {
        self.lock().add_tree(Path::new(""))
    }

    /// Drops every watch and watches the tree afresh (the root is a different directory now).
    pub fn rewatch(&self) -> Result<(), String> {
        let mut table = self.lock();
        table.remove_tree(Path::new(""));
        table.add_tree(Path::new(""))
    }

    fn read_loop(self, mut inotify: Inotify, tx: UnboundedSender<WatchMsg>) {
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let events = match inotify.read_events_blocking(&mut buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(WatchMsg::Error(format!("reading inotify events: {e}")));
                    return;
                }
            };
            let mut out = Vec::new();
            let mut changes = Vec::new();
            {
                let mut table = self.lock();
                for event in events {
                    table.translate(
                        event.wd,
                        event.mask,
                        event.cookie,
                        event.name,
                        &mut out,
                        &mut changes,
                    );
                }
            }
            if !changes.is_empty() {
                out.insert(0, WatchMsg::Changes(changes));
            }
            for msg in out {
                if tx.send(msg).is_err() {
                    return;
                }
            }
        }
    }
}

impl WatchTable {
    /// Adds watches on `rel` and every directory below it (watch first, then list, so nothing
    /// created in between is missed). Vanished directories are skipped.
    fn add_tree(&mut self, rel: &Path) -> Result<(), String> {
        let mut stack = vec![rel.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let full = self.root.join(&dir);
            match self.watches.add(&full, MASK) {
                Ok(wd) => {
                    self.by_wd
                        .insert(wd.get_watch_descriptor_id(), (wd, dir.clone()));
                }
                Err(e) => {
                    match e.raw_os_error() {
                        Some(libc::ENOENT | libc::ENOTDIR) => continue,
                        Some(libc::ENOSPC) => {
                            let message = format!(
                            "inotify watch limit reached after {} watches while watching {}: raise it with `sysctl fs.inotify.max_user_watches=524288` (and fs.inotify.max_user_instances); falling back to periodic full syncs",
                            self.by_wd.len(),
                            full.display()
                        );
                            self.error = Some(message.clone());
                            return Err(message);
                        }
                        _ => {
                            tracing::warn!("cannot watch {}: {e}; changes inside are synced only by full syncs", full.display());
                            continue;
                        }
                    }
                }
            }
            let entries = match std::fs::read_dir(&full) {
                Ok(entries) => entries,
                Err(_) => continue,
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(dir.join(entry.file_name()));
                }
            }
        }
        Ok(())
    }

    /// Drops the watches on `rel` and below (a directory moved away).
    fn remove_tree(&mut self, rel: &Path) {
        let gone: Vec<i32> = self
            .by_wd
            .iter()
            .filter(|(_, (_, path))| path.starts_with(rel))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some((wd, _)) = self.by_wd.remove(&id) {
                let _ = self.watches.remove(wd);
            }
        }
    }

    fn translate(
        &mut self,
        wd: WatchDescriptor,
        mask: EventMask,
        cookie: u32,
        name: Option<&OsStr>,
        out: &mut Vec<WatchMsg>,
        changes: &mut Vec<Change>,
    ) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!("inotify queue overflowed; rescanning and running a full sync");
            if let Err(message) = self.add_tree(Path::new("")) {
                out.push(WatchMsg::Error(message));
            }
            out.push(WatchMsg::Overflow);
            return;
        }
        let id = wd.get_watch_descriptor_id();
        if mask.contains(EventMask::IGNORED) {
            self.by_wd.remove(&id);
            return;
        }
        let Some((_, dir)) = self.by_wd.get(&id) else {
            return;
        };
        let dir = dir.clone();
        let is_dir = mask.contains(EventMask::ISDIR);
        let Some(name) = name else {
            // Events about a watched directory itself; its parent reports the rest.
            if dir.as_os_str().is_empty() {
                if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
                    out.push(WatchMsg::RootGone);
                } else if mask.contains(EventMask::ATTRIB) {
                    changes.push(Change {
                        path: dir,
                        kind: ChangeKind::Attrib,
                        is_dir: true,
                    });
                }
            }
            return;
        };
        if dir.as_os_str().is_empty() && name.as_bytes().starts_with(COOKIE_PREFIX.as_bytes()) {
            if mask.contains(EventMask::CREATE) {
                out.push(WatchMsg::Cookie(name.to_string_lossy().into_owned()));
            }
            return;
        }
        let path = dir.join(name);
        let kind = if mask.contains(EventMask::CREATE) {
            ChangeKind::Created
        } else if mask.contains(EventMask::DELETE) {
            ChangeKind::Deleted
        } else if mask.contains(EventMask::MOVED_FROM) {
            ChangeKind::MovedFrom { cookie }
        } else if mask.contains(EventMask::MOVED_TO) {
            ChangeKind::MovedTo { cookie }
        } else if mask.contains(EventMask::ATTRIB) {
            ChangeKind::Attrib
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            ChangeKind::Closed
        } else {
            ChangeKind::Modified
        };
        if is_dir {
            match kind {
                ChangeKind::Created | ChangeKind::MovedTo { .. } => {
                    if let Err(message) = self.add_tree(&path) {
                        out.push(WatchMsg::Error(message));
                    }
                }
                ChangeKind::MovedFrom { .. } => self.remove_tree(&path),
                _ => {}
            }
        }
        changes.push(Change { path, kind, is_dir });
    }
}
