//! The inotify backend (Linux): one inotify instance with a watch on every directory of the
//! workspace, read by a dedicated thread that keeps the watch table current (new directories
//! are watched before their change is reported, so their contents are never missed) and turns
//! raw events into [`WatchMsg`]s for the engine. Excluded entries are never watched nor
//! reported; their bookkeeping is in `watch_excludes.rs`.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::mpsc::UnboundedSender;
use wsync_core::monitor_proto::WatchBackendKind;
use wsync_core::rsync::{proof_prefix, COOKIE_PREFIX};

use crate::backend::WatchBackend;
use crate::engine::checksum::TreeSize;
pub use crate::watch_excludes::ExcludeConfig;
use crate::watch_excludes::ExcludeState;
use crate::watch_paths::WatchPaths;

use crate::watch::{Change, ChangeKind, WatchError, WatchMsg};

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

/// The watch descriptor → directory table, shared by the reader thread and rescans (never by
/// the event loop: it reads the published count).
pub struct WatchTable {
    pub(crate) root: PathBuf,
    pub(crate) watches: Watches,
    pub(crate) by_wd: WatchPaths<WatchDescriptor>,
    /// `by_wd.len()`, published after each change for status, which never takes the lock.
    count: Arc<AtomicU64>,
    /// Set once a watch could not be added for a reason other than the directory vanishing.
    pub error: Option<WatchError>,
    pub(crate) filter: ExcludeState,
    /// A watched directory just moved away (cookie, path), until its MOVED_TO shows up.
    pub(crate) moved_dir: Option<(u32, PathBuf)>,
    /// [`MAX_WATCHES_ENV`]: refuse watches past this many, as the kernel's limit would.
    pub(crate) max_watches: Option<usize>,
    /// During the first walk: the included files and bytes seen (whether the initial sync
    /// can afford `--checksum`).
    pub(crate) counting: Option<TreeSize>,
}

/// Test switch: `WSYNC_TEST_MAX_WATCHES=N` makes the watcher refuse more than N watches, exactly
/// as if inotify_add_watch failed with ENOSPC (`fs.inotify.max_user_watches` reached).
pub const MAX_WATCHES_ENV: &str = "WSYNC_TEST_MAX_WATCHES";

fn max_watches_from_env() -> Option<usize> {
    let value = std::env::var(MAX_WATCHES_ENV).ok()?;
    match value.trim().parse() {
        Ok(n) => {
            tracing::warn!("{MAX_WATCHES_ENV}={n}: at most {n} inotify watches (test switch)");
            Some(n)
        }
        Err(_) => {
            tracing::warn!("ignoring {MAX_WATCHES_ENV}={value:?}: not a number");
            None
        }
    }
}

/// The inotify backend's handle: the table (for rescans) and what status reads without its
/// lock (an overflow rescan of a huge tree holds it for seconds).
#[derive(Clone)]
pub struct Watcher {
    table: Arc<Mutex<WatchTable>>,
    count: Arc<AtomicU64>,
    rules_file: PathBuf,
    tree: TreeSize,
}

impl Watcher {
    /// Creates the inotify instance, watches the whole tree (before any sync runs), and starts
    /// the reader thread that sends [`WatchMsg`]s to `tx`. Fails with EMFILE when no instance
    /// can be had (`fs.inotify.max_user_instances`; the caller polls instead).
    pub fn start(
        root: &Path,
        config: ExcludeConfig,
        tx: UnboundedSender<WatchMsg>,
    ) -> io::Result<Self> {
        let inotify = Inotify::init()?;
        let count = Arc::new(AtomicU64::new(0));
        let mut table = WatchTable {
            root: root.to_path_buf(),
            watches: inotify.watches(),
            by_wd: WatchPaths::default(),
            count: count.clone(),
            error: None,
            filter: ExcludeState::new(root, config),
            moved_dir: None,
            max_watches: max_watches_from_env(),
            counting: Some(TreeSize::default()),
        };
        if let Err(message) = table.add_tree(Path::new("")) {
            tracing::error!("{message}");
            let _ = tx.send(WatchMsg::Error(message));
        }
        let tree = table.counting.take().unwrap_or_default();
        table.flush_rules();
        table.publish_count();
        tracing::info!(
            watches = table.by_wd.len(),
            excluded = table.filter.excluded.len(),
            "watching {}",
            root.display()
        );
        let rules_file = table.filter.rules_file.clone();
        let table = Arc::new(Mutex::new(table));
        let watcher = Self {
            table,
            count,
            rules_file,
            tree,
        };
        let reader = watcher.clone();
        std::thread::Builder::new()
            .name("inotify".into())
            .spawn(move || reader.read_loop(inotify, tx))?;
        Ok(watcher)
    }

    /// The table, locked.
    fn lock(&self) -> MutexGuard<'_, WatchTable> {
        // A panic while holding the lock leaves a usable table; recover it.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn read_loop(self, mut inotify: Inotify, tx: UnboundedSender<WatchMsg>) {
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let events = match inotify.read_events_blocking(&mut buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(WatchMsg::Error(WatchError::Read(e.to_string())));
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
                table.settle_moved_dir();
                if std::mem::take(&mut table.filter.reload_needed) {
                    let (included, result) = table.reload();
                    if let Err(message) = result {
                        out.push(WatchMsg::Error(message));
                    }
                    changes.extend(included);
                }
                // Before the changes go out: a batch may only run with the rules current.
                table.flush_rules();
                table.publish_count();
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

impl WatchBackend for Watcher {
    fn kind(&self) -> WatchBackendKind {
        WatchBackendKind::Inotify
    }

    /// Bytes counted only up to [`crate::engine::checksum::INITIAL_CHECKSUM_MAX_BYTES`], files always.
    fn initial_tree(&self) -> TreeSize {
        self.tree
    }

    /// As of the last change to the table; never waits for its lock.
    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn rules_file(&self) -> PathBuf {
        self.rules_file.clone()
    }

    /// Re-walks the tree and adds any missing watch.
    fn rescan(&self) -> Result<(), WatchError> {
        let mut table = self.lock();
        let result = table.add_tree(Path::new(""));
        table.flush_rules();
        table.publish_count();
        result
    }

    /// Drops every watch and watches the tree afresh.
    fn rewatch(&self) -> Result<(), WatchError> {
        let mut table = self.lock();
        table.remove_tree(Path::new(""));
        let root = table.root.clone();
        table.filter.reload_patterns(&root);
        let result = table.add_tree(Path::new(""));
        table.flush_rules();
        table.publish_count();
        result
    }
}

impl WatchTable {
    fn publish_count(&self) {
        self.count.store(self.by_wd.len() as u64, Ordering::Relaxed);
    }

    /// Adds watches on `rel` and every included directory below it (watch first, then list,
    /// so nothing created in between is missed), recording the excluded entries found.
    /// Vanished directories are skipped.
    pub(crate) fn add_tree(&mut self, rel: &Path) -> Result<(), WatchError> {
        self.walk(rel, None)
    }

    /// [`WatchTable::add_tree`], also collecting every directory reached in `visited`.
    pub(crate) fn walk(
        &mut self,
        rel: &Path,
        mut visited: Option<&mut HashSet<PathBuf>>,
    ) -> Result<(), WatchError> {
        let mut stack = vec![rel.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let full = self.root.join(&dir);
            let added = if self.at_watch_cap(&dir) {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            } else {
                self.watches.add(&full, MASK)
            };
            match added {
                Ok(wd) => {
                    self.by_wd
                        .insert(wd.get_watch_descriptor_id(), wd, dir.clone());
                }
                Err(e) => {
                    match e.raw_os_error() {
                        Some(libc::ENOENT | libc::ENOTDIR) => continue,
                        Some(libc::ENOSPC) => {
                            let error = WatchError::WatchLimit {
                                watches: self.by_wd.len(),
                                dir: full,
                            };
                            self.error = Some(error.clone());
                            return Err(error);
                        }
                        _ => {
                            tracing::warn!("cannot watch {}: {e}; changes inside are synced only by full syncs", full.display());
                            continue;
                        }
                    }
                }
            }
            if let Some(visited) = visited.as_deref_mut() {
                visited.insert(dir.clone());
            }
            let subdirs = self
                .filter
                .list_dir(&self.root, &dir, self.counting.as_mut());
            stack.extend(subdirs);
        }
        Ok(())
    }

    /// True when the test cap ([`MAX_WATCHES_ENV`]) forbids a new watch on `dir`.
    fn at_watch_cap(&self, dir: &Path) -> bool {
        self.max_watches
            .is_some_and(|cap| self.by_wd.len() >= cap && !self.by_wd.contains_path(dir))
    }

    /// Drops the watches on `rel` and below (a directory moved away).
    pub(crate) fn remove_tree(&mut self, rel: &Path) {
        self.filter.forget_below(rel);
        for wd in self.by_wd.remove_below(rel) {
            let _ = self.watches.remove(wd);
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
        if self.moved_dir.is_some() && !mask.contains(EventMask::MOVED_TO) {
            self.settle_moved_dir();
        }
        let id = wd.get_watch_descriptor_id();
        if mask.contains(EventMask::IGNORED) {
            // Our own removals take the entry out first, so this is the kernel's doing.
            if let Some((_, path)) = self.by_wd.remove(id) {
                if path.as_os_str().is_empty() {
                    out.push(WatchMsg::RootUnwatched);
                }
            }
            return;
        }
        if mask.contains(EventMask::UNMOUNT) {
            // IN_IGNORED follows for every watch on that filesystem.
            tracing::warn!("a watched filesystem was unmounted");
            return;
        }
        let Some(dir) = self.by_wd.path(id) else {
            return;
        };
        let dir = dir.to_path_buf();
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
        if self.filter.excludes.is_pattern_file(&path) && !mask.contains(EventMask::MODIFY) {
            self.filter.reload_needed = true;
        }
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
        // This monitor's proof-of-sync file must reach every remote whatever the excludes say.
        let proof =
            dir.as_os_str().is_empty() && name.as_bytes().starts_with(proof_prefix().as_bytes());
        if !proof && self.filter.on_event(&path, kind, is_dir) {
            return;
        }
        if is_dir {
            match kind {
                ChangeKind::MovedTo { cookie }
                    if self.moved_dir.as_ref().is_some_and(|(c, _)| *c == cookie) =>
                {
                    if let Some((_, from)) = self.moved_dir.take() {
                        if let Err(message) = self.rename_tree(&from, &path) {
                            out.push(WatchMsg::Error(message));
                        }
                    }
                }
                ChangeKind::Created | ChangeKind::MovedTo { .. } => {
                    if let Err(message) = self.add_tree(&path) {
                        out.push(WatchMsg::Error(message));
                    }
                }
                ChangeKind::MovedFrom { cookie } => {
                    self.settle_moved_dir();
                    // Its watches stay until we know whether it moved within the workspace.
                    self.moved_dir = Some((cookie, path.clone()));
                }
                _ => {}
            }
        }
        changes.push(Change { path, kind, is_dir });
    }

    /// A directory moved away without a matching MOVED_TO left the workspace: drop its
    /// watches. Called before any other event and at the end of each read.
    pub(crate) fn settle_moved_dir(&mut self) {
        if let Some((_, from)) = self.moved_dir.take() {
            self.remove_tree(&from);
        }
    }

    /// A watched directory was renamed within the workspace: its watches (same inodes) keep
    /// working, only their paths change — no event queued in between is lost to a re-watch.
    /// The subtree is then walked again: a directory renamed before its own creation event was
    /// handled has no watch yet, and exclude decisions can depend on the location.
    fn rename_tree(&mut self, from: &Path, to: &Path) -> Result<(), WatchError> {
        self.by_wd.rename_below(from, to);
        self.filter.forget_below(from);
        self.add_tree(to)
    }
}

impl WatchTable {
    /// Writes the rules file if the excluded set or the patterns changed (`ExcludeState::flush_rules`).
    pub(crate) fn flush_rules(&mut self) {
        self.filter.flush_rules();
    }

    /// Re-reads the patterns and reconciles the watches with them: directories newly excluded
    /// lose their watches (their remote copies are left alone), newly included ones are
    /// watched and returned as created, so they get synced.
    pub(crate) fn reload(&mut self) -> (Vec<Change>, Result<(), crate::watch::WatchError>) {
        let old = std::mem::take(&mut self.filter.excluded);
        let root = self.root.clone();
        self.filter.reload_patterns(&root);
        let mut visited = HashSet::new();
        let result = self.walk(Path::new(""), Some(&mut visited));
        if result.is_ok() {
            let stale: Vec<i32> = self
                .by_wd
                .iter()
                .filter(|(_, path)| !visited.contains(*path))
                .map(|(id, _)| id)
                .collect();
            for id in stale {
                if let Some((wd, _)) = self.by_wd.remove(id) {
                    let _ = self.watches.remove(wd);
                }
            }
        }
        let included = self
            .filter
            .newly_included(&root, old, |parent| visited.contains(parent));
        tracing::info!(
            watches = self.by_wd.len(),
            excluded = self.filter.excluded.len(),
            newly_included = included.len(),
            "ignore patterns changed; watches and rsync rules follow"
        );
        (included, result)
    }
}
