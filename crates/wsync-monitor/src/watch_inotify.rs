//! The inotify backend (Linux): one inotify instance with a watch on every directory of the
//! workspace, read by a dedicated thread that keeps the watch table current and turns raw
//! events into [`WatchMsg`]s for the engine. A directory created (or moved in, or renamed) is
//! walked by a second thread, the subtree walker, so the reader goes on reading while `cp -r`
//! or `tar x` builds a big tree; the new directory's change, and every change at or below it,
//! goes out only once the walk has watched it whole (watch first, then list: so its contents
//! are never missed — the change queues the directory, synced recursively), while changes
//! elsewhere keep flowing (`watch_defer.rs`). Excluded entries are never watched nor reported;
//! their bookkeeping is in `watch_excludes.rs`.

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
use crate::watch_defer::Held;
pub use crate::watch_excludes::ExcludeConfig;
use crate::watch_excludes::{read_entries, ExcludeState};
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
    /// The kernel queue overflowed in the events just translated: the reader starts a rescan
    /// once it has let go of the table.
    overflowed: bool,
    /// Directories the events just translated ask to walk (created, moved in, renamed): the
    /// reader hands them to the subtree walker.
    to_walk: Vec<PathBuf>,
    /// Directories queued for the walker and the changes waiting behind them.
    held: Held,
}

/// One read's work for the subtree walker: walk `dirs`, then send `then` (the changes, and
/// flush cookies, that had to wait for the walks), then release `held`.
struct WalkJob {
    dirs: Vec<PathBuf>,
    then: Vec<WatchMsg>,
    held: Vec<PathBuf>,
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
/// lock.
#[derive(Clone)]
pub struct Watcher {
    table: Arc<Mutex<WatchTable>>,
    count: Arc<AtomicU64>,
    rules_file: PathBuf,
    tree: TreeSize,
    overflow: Arc<Mutex<OverflowRescan>>,
    /// Unit tests: the walker waits while this is closed (false).
    #[cfg(test)]
    walk_gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

/// The overflow rescan's turn: one walk at a time, and an overflow during a walk asks for one
/// more (what the first walk already passed may have changed unseen).
#[derive(Default)]
struct OverflowRescan {
    running: bool,
    again: bool,
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
        Self::start_reading(root, config, tx, READ_BUFFER_BYTES)
    }

    /// [`Watcher::start`], reading `buffer_len` bytes of events at most per read.
    fn start_reading(
        root: &Path,
        config: ExcludeConfig,
        tx: UnboundedSender<WatchMsg>,
        buffer_len: usize,
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
            overflowed: false,
            to_walk: Vec::new(),
            held: Held::default(),
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
            overflow: Arc::default(),
            #[cfg(test)]
            walk_gate: Arc::new((Mutex::new(true), std::sync::Condvar::new())),
        };
        let (jobs, queue) = std::sync::mpsc::channel();
        let walker = watcher.clone();
        let walker_tx = tx.clone();
        std::thread::Builder::new()
            .name("subtree-walk".into())
            .spawn(move || walker.walk_loop(queue, walker_tx))?;
        let reader = watcher.clone();
        std::thread::Builder::new()
            .name("inotify".into())
            .spawn(move || reader.read_loop(inotify, tx, jobs, buffer_len))?;
        Ok(watcher)
    }

    /// The table, locked.
    fn lock(&self) -> MutexGuard<'_, WatchTable> {
        // A panic while holding the lock leaves a usable table; recover it.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// The reader thread's loop, reading `buffer_len` bytes of events at most per read (a test
    /// uses a buffer that holds one event, to split every rename across reads).
    fn read_loop(
        self,
        mut inotify: Inotify,
        tx: UnboundedSender<WatchMsg>,
        jobs: std::sync::mpsc::Sender<WalkJob>,
        buffer_len: usize,
    ) {
        let mut buffer = vec![0u8; buffer_len];
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
            let overflowed;
            let job;
            self.translate_all(events, &mut out, &mut changes);
            // The engine pairs a MOVED_FROM only with the change right after it in the same
            // message. The kernel queues a rename's two halves one after the other, so a read
            // can wake between them (or the buffer can end between them): wait briefly for
            // the MOVED_TO before the MOVED_FROM is settled as a move out of the workspace,
            // which would turn a directory rename into a deletion of its whole tree.
            for _ in 0..MOVE_PAIR_READS {
                if !changes
                    .last()
                    .is_some_and(|c| matches!(c.kind, ChangeKind::MovedFrom { .. }))
                    || !readable_within(&inotify, MOVE_PAIR_WAIT)
                {
                    break;
                }
                match inotify.read_events(&mut buffer) {
                    Ok(events) => self.translate_all(events, &mut out, &mut changes),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        let _ = tx.send(WatchMsg::Error(WatchError::Read(e.to_string())));
                        return;
                    }
                }
            }
            {
                let mut table = self.lock();
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
                overflowed = std::mem::take(&mut table.overflowed);
                job = table.hold_back(&mut changes, &mut out);
            }
            if overflowed {
                self.start_overflow_rescan(&tx);
            }
            if let Some(job) = job {
                if let Err(std::sync::mpsc::SendError(job)) = jobs.send(job) {
                    // The walker is gone (it never stops first): walk here.
                    if !self.run_walk_job(job, &tx) {
                        return;
                    }
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

    /// The subtree walker's loop: one job at a time, in the order the reader queued them.
    fn walk_loop(self, queue: std::sync::mpsc::Receiver<WalkJob>, tx: UnboundedSender<WatchMsg>) {
        while let Ok(job) = queue.recv() {
            #[cfg(test)]
            {
                let (open, changed) = &*self.walk_gate;
                let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
                while !*open {
                    open = changed.wait(open).unwrap_or_else(|e| e.into_inner());
                }
            }
            if !self.run_walk_job(job, &tx) {
                return;
            }
        }
    }

    /// Walks the job's directories (watches added, rules written), then sends what waited for
    /// them and releases their paths; false once the engine is gone.
    fn run_walk_job(&self, job: WalkJob, tx: &UnboundedSender<WatchMsg>) -> bool {
        for dir in &job.dirs {
            if let Err(message) = self.walk_unlocked(dir) {
                let _ = tx.send(WatchMsg::Error(message));
            }
        }
        let mut gone = false;
        for msg in job.then {
            gone |= tx.send(msg).is_err();
        }
        // Only once they went out: a later change to these paths must not overtake them.
        self.lock().held.release(&job.held);
        !gone
    }

    /// After a queue overflow: re-walks the tree on a thread of its own, so this reader goes
    /// on delivering events meanwhile (a walk of a huge tree takes seconds, one reaching a hung
    /// mount never ends), then reports [`WatchMsg::Overflow`] — the full sync starts only once
    /// every directory is watched again. An overflow during the walk asks for one more.
    fn start_overflow_rescan(&self, tx: &UnboundedSender<WatchMsg>) {
        {
            let mut turn = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
            if turn.running {
                turn.again = true;
                return;
            }
            turn.running = true;
        }
        let (watcher, tx) = (self.clone(), tx.clone());
        let rescan = move || loop {
            if let Err(message) = watcher.rescan() {
                let _ = tx.send(WatchMsg::Error(message));
            }
            let _ = tx.send(WatchMsg::Overflow);
            let mut turn = watcher.overflow.lock().unwrap_or_else(|e| e.into_inner());
            if !std::mem::take(&mut turn.again) {
                turn.running = false;
                return;
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("rescan".into())
            .spawn(rescan.clone())
        {
            tracing::warn!("cannot start a rescan thread ({e}); rescanning on the reader");
            rescan();
        }
    }

    /// [`WatchTable::walk`] without holding the table's lock across a filesystem call: each
    /// directory's watch and listing happen unlocked, their bookkeeping in short critical
    /// sections, so the reader keeps translating events during a long rescan.
    fn walk_unlocked(&self, rel: &Path) -> Result<(), WatchError> {
        let (root, mut watches) = {
            let table = self.lock();
            (table.root.clone(), table.watches.clone())
        };
        let result = walk(&mut Unlocked(&self.table), &root, &mut watches, rel, None);
        let mut table = self.lock();
        table.flush_rules();
        table.publish_count();
        result
    }

    /// Translates one read's events under the table's lock.
    fn translate_all(
        &self,
        events: inotify::Events<'_>,
        out: &mut Vec<WatchMsg>,
        changes: &mut Vec<Change>,
    ) {
        let mut table = self.lock();
        for event in events {
            table.translate(event.wd, event.mask, event.cookie, event.name, out, changes);
        }
    }
}

/// Bytes read from inotify at a time.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// How long a read that ended on a MOVED_FROM waits for the MOVED_TO (the kernel queues it
/// within the same `rename(2)`: microseconds, unless the renaming thread is preempted), and
/// how many further reads it takes for it. A move out of the workspace pays this once.
const MOVE_PAIR_WAIT: std::time::Duration = std::time::Duration::from_millis(50);
const MOVE_PAIR_READS: usize = 4;

/// Whether `inotify` has events to read within `wait`.
fn readable_within(inotify: &Inotify, wait: std::time::Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    loop {
        match poll(&mut fds, timeout) {
            Ok(n) => return n > 0,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
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

    /// Re-walks the tree and adds any missing watch, without holding the table's lock.
    fn rescan(&self) -> Result<(), WatchError> {
        self.walk_unlocked(Path::new(""))
    }

    /// Drops every watch and watches the tree afresh (the walk without the table's lock).
    fn rewatch(&self) -> Result<(), WatchError> {
        {
            let mut table = self.lock();
            table.remove_tree(Path::new(""));
            let root = table.root.clone();
            table.filter.reload_patterns(&root);
        }
        self.walk_unlocked(Path::new(""))
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
        visited: Option<&mut HashSet<PathBuf>>,
    ) -> Result<(), WatchError> {
        let (root, mut watches) = (self.root.clone(), self.watches.clone());
        walk(&mut Locked(self), &root, &mut watches, rel, visited)
    }

    /// Records the outcome of watching `dir` (at `full`); `Ok(false)` when the walk skips it
    /// (gone, or not watchable: then only full syncs cover it).
    fn record_watch(
        &mut self,
        dir: &Path,
        full: &Path,
        added: io::Result<WatchDescriptor>,
    ) -> Result<bool, WatchError> {
        match added {
            Ok(wd) => {
                self.by_wd
                    .insert(wd.get_watch_descriptor_id(), wd, dir.to_path_buf());
                Ok(true)
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => Ok(false),
                Some(libc::ENOSPC) => {
                    let error = WatchError::WatchLimit {
                        watches: self.by_wd.len(),
                        dir: full.to_path_buf(),
                    };
                    self.error = Some(error.clone());
                    Err(error)
                }
                _ => {
                    tracing::warn!(
                        "cannot watch {}: {e}; changes inside are synced only by full syncs",
                        full.display()
                    );
                    Ok(false)
                }
            },
        }
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
            self.overflowed = true;
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
                        self.rename_tree(&from, &path);
                    }
                }
                ChangeKind::Created | ChangeKind::MovedTo { .. } => self.walk_later(&path),
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
    /// working, only their paths change — no event queued in between is lost to a re-watch —
    /// and so do the excluded entries below it, in time proportional to the moved subtree.
    /// The subtree is walked again (by the walker) only when what the table knows of it may
    /// be incomplete or wrong at the new place: it has no watch yet (renamed before its
    /// creation event was handled), a walk at, above or below it has not run yet, or an
    /// exclude decision depends on the location ([`Excludes::move_keeps_decisions`]).
    ///
    /// [`Excludes::move_keeps_decisions`]: wsync_core::excludes::Excludes::move_keeps_decisions
    fn rename_tree(&mut self, from: &Path, to: &Path) {
        let known = self.by_wd.contains_path(from)
            && !self.held.touches(from)
            && !self.held.covers(to)
            && self.filter.excludes.move_keeps_decisions(from, to);
        self.by_wd.rename_below(from, to);
        if known {
            self.filter.rename_below(from, to);
            return;
        }
        self.filter.forget_below(from);
        self.walk_later(to);
    }

    /// Queues `dir` for the subtree walker; changes at or below it wait for the walk.
    fn walk_later(&mut self, dir: &Path) {
        self.held.hold(dir);
        self.to_walk.push(dir.to_path_buf());
    }

    /// At the end of a read: the job for the walker, if any — the directories to walk, and the
    /// changes (taken out of `changes`) and flush cookies (out of `out`) that must wait for the
    /// walks queued so far; the rest goes out at once.
    fn hold_back(&mut self, changes: &mut Vec<Change>, out: &mut Vec<WatchMsg>) -> Option<WalkJob> {
        let dirs = std::mem::take(&mut self.to_walk);
        if dirs.is_empty() && self.held.is_empty() {
            return None;
        }
        let split = self.held.split(std::mem::take(changes));
        *changes = split.now;
        let mut then = Vec::new();
        if !split.later.is_empty() {
            then.push(WatchMsg::Changes(split.later));
        }
        // A cookie says every event before it was delivered: it waits behind every walk.
        let (cookies, rest): (Vec<WatchMsg>, Vec<WatchMsg>) = std::mem::take(out)
            .into_iter()
            .partition(|m| matches!(m, WatchMsg::Cookie(_)));
        *out = rest;
        then.extend(cookies);
        if dirs.is_empty() && then.is_empty() {
            return None;
        }
        let mut held = split.held;
        held.extend(dirs.iter().cloned());
        Some(WalkJob { dirs, then, held })
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

/// How a walk reaches the table: already locked (the reader, the first walk) or through the
/// mutex, locked only for the bookkeeping between filesystem calls (rescans).
trait TableAccess {
    fn with<R>(&mut self, f: impl FnOnce(&mut WatchTable) -> R) -> R;
}

struct Locked<'a>(&'a mut WatchTable);

impl TableAccess for Locked<'_> {
    fn with<R>(&mut self, f: impl FnOnce(&mut WatchTable) -> R) -> R {
        f(self.0)
    }
}

struct Unlocked<'a>(&'a Mutex<WatchTable>);

impl TableAccess for Unlocked<'_> {
    fn with<R>(&mut self, f: impl FnOnce(&mut WatchTable) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Adds watches on `rel` and every included directory below it (watch first, then list, so
/// nothing created in between is missed), recording the excluded entries found, and every
/// directory reached in `visited`. The watch and the listing of each directory are made
/// outside `table.with`: through [`Unlocked`] no filesystem call holds the lock.
fn walk(
    table: &mut impl TableAccess,
    root: &Path,
    watches: &mut Watches,
    rel: &Path,
    mut visited: Option<&mut HashSet<PathBuf>>,
) -> Result<(), WatchError> {
    let mut stack = vec![rel.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let full = root.join(&dir);
        let added = if table.with(|t| t.at_watch_cap(&dir)) {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            watches.add(&full, MASK)
        };
        if !table.with(|t| t.record_watch(&dir, &full, added))? {
            continue;
        }
        if let Some(visited) = visited.as_deref_mut() {
            visited.insert(dir.clone());
        }
        let entries = read_entries(&full);
        let subdirs = table.with(|t| {
            let counting = t.counting.as_mut();
            t.filter.classify(&dir, entries, counting)
        });
        stack.extend(subdirs);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A read can end between a rename's MOVED_FROM and MOVED_TO (the reader woke between
    /// them, or the buffer was full): both halves must still go out in one message, or the
    /// engine settles the MOVED_FROM as a move out of the workspace and a directory rename
    /// becomes a deletion of its whole tree (the engine_renames flake). A buffer that holds
    /// one event splits every rename.
    #[test]
    fn a_rename_split_across_reads_goes_out_as_one_pair() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        std::fs::write(root.join("d/sub/f"), b"x").unwrap();
        let config = ExcludeConfig {
            registry: Vec::new(),
            respect_gitignore: false,
            rules_file: tmp.path().join("rules"),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // One event with a name of up to 15 bytes: a 16-byte header and the padded name.
        let watcher = Watcher::start_reading(&root, config, tx, 32).unwrap();
        std::fs::rename(root.join("d"), root.join("e")).unwrap();
        std::fs::rename(root.join("e/sub/f"), root.join("e/g")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut messages = Vec::new();
        let moved_to = |messages: &Vec<Vec<Change>>| {
            messages
                .iter()
                .flatten()
                .filter(|c| matches!(c.kind, ChangeKind::MovedTo { .. }))
                .count()
        };
        while moved_to(&messages) < 2 {
            assert!(
                Instant::now() < deadline,
                "renames not seen (a split rename dropped the directory's watches?): {messages:?}"
            );
            match rx.try_recv() {
                Ok(WatchMsg::Changes(changes)) => messages.push(changes),
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        for changes in &messages {
            for (i, change) in changes.iter().enumerate() {
                if let ChangeKind::MovedFrom { cookie } = change.kind {
                    let next = changes.get(i + 1).map(|c| c.kind);
                    assert_eq!(
                        next,
                        Some(ChangeKind::MovedTo { cookie }),
                        "a MOVED_FROM went out without its MOVED_TO: {messages:?}"
                    );
                }
            }
        }
        // The directory's watches moved with it: a change inside the new name is seen.
        std::fs::write(root.join("e/sub/h"), b"y").unwrap();
        let seen = |messages: &Vec<Vec<Change>>| {
            messages
                .iter()
                .flatten()
                .any(|c| c.path == Path::new("e/sub/h"))
        };
        while !seen(&messages) {
            assert!(Instant::now() < deadline, "no event below the renamed dir");
            match rx.try_recv() {
                Ok(WatchMsg::Changes(changes)) => messages.push(changes),
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        drop(watcher);
    }

    /// Receives messages until `done` holds of the changes seen, or fails after `secs`.
    fn receive_until(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<WatchMsg>,
        seen: &mut Vec<Change>,
        secs: u64,
        what: &str,
        done: impl Fn(&[Change]) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(seen) {
            assert!(Instant::now() < deadline, "{what}: not seen in {seen:?}");
            match rx.try_recv() {
                Ok(WatchMsg::Changes(changes)) => seen.extend(changes),
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// A tree that appears at once (moved in, `cp -r`, `tar x`) is walked off the reader: while
    /// the walk waits, changes elsewhere keep coming and nothing of the new tree goes out; once
    /// it ran, the new directory's change goes out with every directory below it watched —
    /// including what was created inside before its watch existed — and changes inside flow.
    #[test]
    fn a_new_tree_is_walked_off_the_reader_and_reported_once_watched() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("other"), b"0").unwrap();
        // A deep tree built outside, moved in whole.
        let outside = tmp.path().join("outside");
        let mut deep = outside.clone();
        let mut dirs = vec![PathBuf::from("new")];
        for level in 0..30 {
            deep.push(format!("d{level}"));
            dirs.push(Path::new("new").join(deep.strip_prefix(&outside).unwrap()));
            std::fs::create_dir_all(&deep).unwrap();
            std::fs::write(deep.join("f"), level.to_string()).unwrap();
        }
        let config = ExcludeConfig {
            registry: Vec::new(),
            respect_gitignore: false,
            rules_file: tmp.path().join("rules"),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = Watcher::start(&root, config, tx).unwrap();
        *watcher.walk_gate.0.lock().unwrap() = false;
        std::fs::rename(&outside, root.join("new")).unwrap();
        // Created below the new tree before any watch there: no event of its own.
        let late = dirs.last().unwrap().join("late");
        std::fs::create_dir(root.join(&late)).unwrap();
        std::fs::write(root.join(&late).join("g"), b"g").unwrap();
        dirs.push(late.clone());
        std::fs::write(root.join("other"), b"1").unwrap();
        let mut seen = Vec::new();
        receive_until(&mut rx, &mut seen, 10, "the edit elsewhere", |s| {
            s.iter().any(|c| c.path == Path::new("other"))
        });
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(msg) = rx.try_recv() {
            if let WatchMsg::Changes(changes) = msg {
                seen.extend(changes);
            }
        }
        assert!(
            !seen.iter().any(|c| c.path.starts_with("new")),
            "the new tree went out before it was watched: {seen:?}"
        );
        {
            let (open, changed) = &*watcher.walk_gate;
            *open.lock().unwrap() = true;
            changed.notify_all();
        }
        receive_until(&mut rx, &mut seen, 10, "the new tree", |s| {
            s.iter().any(|c| c.path == Path::new("new") && c.is_dir)
        });
        {
            let table = watcher.lock();
            for dir in &dirs {
                assert!(
                    table.by_wd.contains_path(dir),
                    "{} not watched when the tree went out",
                    dir.display()
                );
            }
        }
        // Watched to the bottom: a change at the deepest level is seen.
        std::fs::write(root.join(&late).join("h"), b"h").unwrap();
        let h = late.join("h");
        receive_until(&mut rx, &mut seen, 10, "a change at the bottom", |s| {
            s.iter().any(|c| c.path == h)
        });
        drop(watcher);
    }

    /// The walk reads a directory's `.gitignore` only when its listing has one: a nested
    /// `.gitignore` still excludes below it, at the first walk and in a tree moved in later,
    /// and a sibling without one excludes nothing.
    #[test]
    fn a_nested_gitignore_in_the_listing_excludes_below_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        for dir in ["a/skip", "a/keep", "b/skip"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("a/.gitignore"), "skip/\n").unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("skip")).unwrap();
        std::fs::create_dir_all(outside.join("keep")).unwrap();
        std::fs::write(outside.join(".gitignore"), "skip/\n").unwrap();
        let config = ExcludeConfig {
            registry: Vec::new(),
            respect_gitignore: true,
            rules_file: tmp.path().join("rules"),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = Watcher::start(&root, config, tx).unwrap();
        {
            let table = watcher.lock();
            for (dir, watched) in [
                ("a", true),
                ("a/keep", true),
                ("a/skip", false),
                ("b/skip", true),
            ] {
                assert_eq!(table.by_wd.contains_path(Path::new(dir)), watched, "{dir}");
            }
            assert!(table.filter.excluded.contains(Path::new("a/skip")));
        }
        std::fs::rename(&outside, root.join("c")).unwrap();
        let mut seen = Vec::new();
        receive_until(&mut rx, &mut seen, 10, "the moved-in tree", |s| {
            s.iter().any(|c| c.path == Path::new("c") && c.is_dir)
        });
        let table = watcher.lock();
        assert!(table.by_wd.contains_path(Path::new("c/keep")));
        assert!(!table.by_wd.contains_path(Path::new("c/skip")));
        assert!(table.filter.excluded.contains(Path::new("c/skip")));
    }

    /// A renamed directory whose whole subtree is watched is not walked again (issue 13/14: a
    /// move costs the moved entries, not a listing of every file): its rename goes out while
    /// the walker is held shut, with the watches and excluded entries moved by prefix; a rename
    /// whose decisions depend on the place (an anchored pattern) is walked.
    #[test]
    fn a_watched_directory_renamed_goes_out_without_a_walk() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/sub/skip.o")).unwrap();
        std::fs::create_dir_all(root.join("anchored/a")).unwrap();
        std::fs::write(root.join("d/sub/f"), b"x").unwrap();
        let config = |registry: &[&str]| ExcludeConfig {
            registry: registry.iter().map(|p| p.to_string()).collect(),
            respect_gitignore: false,
            rules_file: tmp.path().join("rules"),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = Watcher::start(&root, config(&["*.o"]), tx).unwrap();
        *watcher.walk_gate.0.lock().unwrap() = false;
        std::fs::rename(root.join("d"), root.join("e")).unwrap();
        let mut seen = Vec::new();
        receive_until(&mut rx, &mut seen, 10, "the rename, walker shut", |s| {
            s.iter()
                .any(|c| c.path == Path::new("e") && matches!(c.kind, ChangeKind::MovedTo { .. }))
        });
        {
            let table = watcher.lock();
            assert!(table.by_wd.contains_path(Path::new("e/sub")));
            assert!(!table.by_wd.contains_path(Path::new("d/sub")));
            assert!(table.filter.excluded.contains(Path::new("e/sub/skip.o")));
            assert!(!table.filter.excluded.contains(Path::new("d/sub/skip.o")));
        }
        std::fs::write(root.join("e/sub/g"), b"y").unwrap();
        receive_until(&mut rx, &mut seen, 10, "a change below the new name", |s| {
            s.iter().any(|c| c.path == Path::new("e/sub/g"))
        });
        drop(watcher);
        // `/anchored/c/x` excludes a place below the new name: the rename waits for the walk.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = Watcher::start(&root, config(&["*.o", "/anchored/c/x"]), tx).unwrap();
        *watcher.walk_gate.0.lock().unwrap() = false;
        let mut seen = Vec::new();
        std::fs::rename(root.join("anchored/a"), root.join("anchored/c")).unwrap();
        std::fs::write(root.join("other"), b"1").unwrap();
        receive_until(&mut rx, &mut seen, 10, "the edit elsewhere", |s| {
            s.iter().any(|c| c.path == Path::new("other"))
        });
        assert!(
            !seen.iter().any(|c| c.path == Path::new("anchored/c")),
            "a place-dependent rename went out without its walk: {seen:?}"
        );
        {
            let (open, changed) = &*watcher.walk_gate;
            *open.lock().unwrap() = true;
            changed.notify_all();
        }
        receive_until(&mut rx, &mut seen, 10, "the walked rename", |s| {
            s.iter().any(|c| c.path == Path::new("anchored/c"))
        });
        drop(watcher);
    }
}
