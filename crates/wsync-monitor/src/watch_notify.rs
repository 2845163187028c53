//! The `notify` backend (`WatchMode=notify`): one recursive watch on the root through the
//! `notify` crate — FSEvents on macOS, notify's own inotify backend on Linux, so the same
//! translation runs in CI. Its events cross a **bounded** queue from notify's thread to ours:
//! the handler never blocks notify and never grows without limit; an event that finds the
//! queue full is dropped and reported as one [`WatchMsg::Overflow`] (a full sync), as is
//! notify's own Rescan flag (the kernel queue overflowed, or FSEvents' MustScanSubDirs).
//! Events that can never matter (opens, read-only closes) are dropped in the handler itself;
//! the excludes are applied on our side of the queue, where the excluded set and the rules
//! file are kept as with the inotify watcher (`watch_excludes.rs`).
//!
//! What notify cannot tell is handled the plain way: renames carry no pairing the engine can
//! trust across platforms, so each end goes through the normal path (the old name deleted,
//! the new one created — a directory's new name is synced recursively; an old name that may
//! have been a directory is reported moved out, [`MOVED_OUT`], so its deletion is counted by
//! a dry run); and where there is no
//! close-write (FSEvents) a modified file simply waits the settle time.

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;
use wsync_core::monitor_proto::WatchBackendKind;
use wsync_core::rsync::{proof_prefix, COOKIE_PREFIX};

use crate::backend::WatchBackend;
use crate::engine::checksum::TreeSize;
use crate::watch::{Change, ChangeKind, ExcludeConfig, WatchError, WatchMsg};
use crate::watch_excludes::ExcludeState;

/// Events the handler queues before it starts dropping them (and reports an overflow).
pub const QUEUE_CAPACITY: usize = 65_536;

/// How often the reader looks for an overflow while its queue is empty: the event that found
/// the queue full may have been the last one for a while.
const OVERFLOW_CHECK: Duration = Duration::from_millis(100);

/// notify's side of the bounded queue: runs on notify's thread, never blocks.
pub(crate) struct BoundedHandler {
    tx: SyncSender<notify::Result<Event>>,
    overflowed: Arc<AtomicBool>,
}

/// Our side of the bounded queue.
pub(crate) struct EventQueue {
    rx: Receiver<notify::Result<Event>>,
    overflowed: Arc<AtomicBool>,
}

/// A bounded queue of `capacity` events between notify's thread and the reader.
pub(crate) fn event_queue(capacity: usize) -> (BoundedHandler, EventQueue) {
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
    let overflowed = Arc::new(AtomicBool::new(false));
    (
        BoundedHandler {
            tx,
            overflowed: overflowed.clone(),
        },
        EventQueue { rx, overflowed },
    )
}

impl notify::EventHandler for BoundedHandler {
    fn handle_event(&mut self, event: notify::Result<Event>) {
        if event.as_ref().is_ok_and(|e| irrelevant(&e.kind)) {
            return;
        }
        match self.tx.try_send(event) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => self.overflowed.store(true, Ordering::Release),
        }
    }
}

/// Opens, reads and read-only closes: notify's inotify backend reports every one (rsync's
/// own reads included), and none is a change.
fn irrelevant(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if *access != AccessKind::Close(AccessMode::Write))
}

/// What one wait on the queue brought.
pub(crate) enum Received {
    /// Events (at least one), and whether some were dropped since the last wait.
    Events(Vec<notify::Result<Event>>, bool),
    /// Nothing arrived, but events were dropped.
    Overflowed,
    /// Nothing yet.
    Idle,
    /// notify's side is gone.
    Closed,
}

impl EventQueue {
    /// Waits up to `timeout` for events and takes every one queued.
    pub(crate) fn receive(&self, timeout: Duration) -> Received {
        let first = match self.rx.recv_timeout(timeout) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => {
                return if self.overflowed.swap(false, Ordering::AcqRel) {
                    Received::Overflowed
                } else {
                    Received::Idle
                };
            }
            Err(RecvTimeoutError::Disconnected) => return Received::Closed,
        };
        let mut events = vec![first];
        events.extend(self.rx.try_iter());
        Received::Events(events, self.overflowed.swap(false, Ordering::AcqRel))
    }
}

/// The excluded set and how notify's paths map onto the tree; shared by the reader thread and
/// rescans.
pub(crate) struct NotifyTree {
    root: PathBuf,
    /// The root as the OS may spell it in events (FSEvents reports `/private/var/...` for
    /// `/var/...`).
    canonical: Option<PathBuf>,
    filter: ExcludeState,
}

impl NotifyTree {
    pub(crate) fn new(root: &Path, config: ExcludeConfig) -> Self {
        let canonical = std::fs::canonicalize(root).ok().filter(|c| c != root);
        Self {
            root: root.to_path_buf(),
            canonical,
            filter: ExcludeState::new(root, config),
        }
    }

    /// Walks `rel` and below, recording the excluded entries met (nothing below them is
    /// looked at); returns the directories reached.
    fn walk(&mut self, rel: &Path, mut counting: Option<&mut TreeSize>) -> HashSet<PathBuf> {
        let mut reached = HashSet::new();
        let mut stack = vec![rel.to_path_buf()];
        while let Some(dir) = stack.pop() {
            stack.extend(
                self.filter
                    .list_dir(&self.root, &dir, counting.as_deref_mut()),
            );
            reached.insert(dir);
        }
        reached
    }

    /// Reads the patterns afresh and walks the whole tree; returns the entries the new
    /// patterns include that the old ones excluded, as created changes.
    fn reload(&mut self) -> Vec<Change> {
        let old: BTreeSet<PathBuf> = std::mem::take(&mut self.filter.excluded);
        self.filter.reload_patterns(&self.root.clone());
        let reached = self.walk(Path::new(""), None);
        let included = self
            .filter
            .newly_included(&self.root, old, |parent| reached.contains(parent));
        tracing::info!(
            excluded = self.filter.excluded.len(),
            newly_included = included.len(),
            "ignore patterns changed; rsync rules follow"
        );
        included
    }

    /// `path` relative to the root, if it is inside it.
    fn relative(&self, path: &Path) -> Option<PathBuf> {
        path.strip_prefix(&self.root)
            .ok()
            .or_else(|| path.strip_prefix(self.canonical.as_ref()?).ok())
            .map(Path::to_path_buf)
    }

    /// Turns one of notify's events into messages (cookies, overflows, the root gone) and
    /// changes, which go out before the messages.
    /// Translates one read's events. On Linux a rename inside the workspace arrives as
    /// `From`, `To` and `Both` with one tracker: its `From` is left out (`Both` reports it,
    /// knowing what it was); a `From` without its `Both` is a move out.
    pub(crate) fn translate_all(
        &mut self,
        events: Vec<notify::Result<Event>>,
        out: &mut Vec<WatchMsg>,
        changes: &mut Vec<Change>,
    ) {
        let renamed: HashSet<usize> = events
            .iter()
            .filter_map(|e| e.as_ref().ok())
            .filter(|e| e.kind == EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .filter_map(|e| e.attrs.tracker())
            .collect();
        for event in events {
            let paired_from = event.as_ref().is_ok_and(|e| {
                e.kind == EventKind::Modify(ModifyKind::Name(RenameMode::From))
                    && e.attrs.tracker().is_some_and(|t| renamed.contains(&t))
            });
            if !paired_from {
                self.translate(event, out, changes);
            }
        }
    }

    fn translate(
        &mut self,
        event: notify::Result<Event>,
        out: &mut Vec<WatchMsg>,
        changes: &mut Vec<Change>,
    ) {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                out.push(WatchMsg::Error(notify_error(&error)));
                return;
            }
        };
        if event.need_rescan() {
            tracing::warn!("notify asked for a rescan (events were lost); running a full sync");
            self.walk(Path::new(""), None);
            out.push(WatchMsg::Overflow);
            return;
        }
        for (path, kind, is_dir) in ends(&event) {
            if let Some(rel) = self.relative(&path) {
                self.one(rel, kind, is_dir, out, changes);
            }
        }
    }

    fn one(
        &mut self,
        rel: PathBuf,
        kind: ChangeKind,
        is_dir: bool,
        out: &mut Vec<WatchMsg>,
        changes: &mut Vec<Change>,
    ) {
        if rel.as_os_str().is_empty() {
            match kind {
                ChangeKind::Deleted | ChangeKind::MovedFrom { .. } => out.push(WatchMsg::RootGone),
                ChangeKind::Attrib => changes.push(Change {
                    path: rel,
                    kind,
                    is_dir: true,
                }),
                _ => {}
            }
            return;
        }
        let top_level = rel.parent() == Some(Path::new(""));
        let name = rel.as_os_str().as_bytes();
        if top_level && name.starts_with(COOKIE_PREFIX.as_bytes()) {
            if kind == ChangeKind::Created {
                out.push(WatchMsg::Cookie(rel.to_string_lossy().into_owned()));
            }
            return;
        }
        // notify watches excluded directories too (one recursive watch): drop what is below.
        let below_excluded = rel
            .ancestors()
            .skip(1)
            .any(|a| self.filter.excluded.contains(a));
        if below_excluded {
            return;
        }
        if self.filter.excludes.is_pattern_file(&rel) && kind != ChangeKind::Modified {
            self.filter.reload_needed = true;
        }
        // This monitor's proof-of-sync file must reach every remote whatever the excludes say.
        let proof = top_level && name.starts_with(proof_prefix().as_bytes());
        if !proof && self.filter.on_event(&rel, kind, is_dir) {
            return;
        }
        match kind {
            // What was inside a new directory before its watch existed sent no events: record
            // its excluded entries now (the engine syncs the directory recursively).
            ChangeKind::Created if is_dir => {
                self.walk(&rel, None);
            }
            ChangeKind::Deleted | ChangeKind::MovedFrom { .. } => self.filter.forget_below(&rel),
            _ => {}
        }
        changes.push(Change {
            path: rel,
            kind,
            is_dir,
        });
    }

    /// After a read: reloads the patterns if an ignore file changed, then writes the rules
    /// (before the changes go out: a batch may only run with the rules current).
    pub(crate) fn settle(&mut self, changes: &mut Vec<Change>) {
        if std::mem::take(&mut self.filter.reload_needed) {
            changes.extend(self.reload());
        }
        self.filter.flush_rules();
    }
}

/// A path renamed away whose other end no event names: reported as a move out of the
/// workspace (no `MovedTo` ever carries this cookie, so nothing pairs with it), as possibly a
/// directory — the engine then cannot count what the remote deletes below it, and a capped
/// batch is dry-run first.
const MOVED_OUT: ChangeKind = ChangeKind::MovedFrom { cookie: u32::MAX };

/// The paths an event names, each with the change it is and whether it is (or, for a path
/// gone, may have been) a directory.
fn ends(event: &Event) -> Vec<(PathBuf, ChangeKind, bool)> {
    let dir_now = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let each = |kind: ChangeKind, is_dir: &dyn Fn(&Path) -> bool| {
        event
            .paths
            .iter()
            .map(|p| (p.clone(), kind, is_dir(p)))
            .collect::<Vec<_>>()
    };
    match &event.kind {
        EventKind::Create(CreateKind::Folder) => each(ChangeKind::Created, &|_| true),
        EventKind::Create(CreateKind::File) => each(ChangeKind::Created, &|_| false),
        EventKind::Create(_) => each(ChangeKind::Created, &dir_now),
        EventKind::Remove(RemoveKind::Folder) => each(ChangeKind::Deleted, &|_| true),
        EventKind::Remove(_) => each(ChangeKind::Deleted, &|_| false),
        EventKind::Modify(ModifyKind::Metadata(_)) => each(ChangeKind::Attrib, &dir_now),
        // Gone, and what it was no event says: maybe a directory, whose contents no event
        // reports (a move out of the workspace).
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => each(MOVED_OUT, &|_| true),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => each(ChangeKind::Created, &dir_now),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => match event.paths.as_slice() {
            [from, to] => {
                let is_dir = dir_now(to);
                // A directory's old name goes with its contents unreported, as a move out.
                let gone = if is_dir {
                    MOVED_OUT
                } else {
                    ChangeKind::Deleted
                };
                vec![
                    (from.clone(), gone, is_dir),
                    (to.clone(), ChangeKind::Created, is_dir),
                ]
            }
            _ => Vec::new(),
        },
        // FSEvents: a path renamed, in or out — which end it is, only its presence tells.
        EventKind::Modify(ModifyKind::Name(_)) => event
            .paths
            .iter()
            .map(|p| match std::fs::symlink_metadata(p) {
                Ok(meta) => (p.clone(), ChangeKind::Created, meta.is_dir()),
                Err(_) => (p.clone(), MOVED_OUT, true),
            })
            .collect(),
        EventKind::Modify(_) => each(ChangeKind::Modified, &dir_now)
            .into_iter()
            .filter(|(_, _, is_dir)| !is_dir)
            .collect(),
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
            each(ChangeKind::Closed, &|_| false)
        }
        EventKind::Access(_) | EventKind::Any | EventKind::Other => Vec::new(),
    }
}

/// The watch error for one of notify's errors; the watch limit names the sysctl to raise.
fn notify_error(error: &notify::Error) -> WatchError {
    match &error.kind {
        notify::ErrorKind::MaxFilesWatch => WatchError::Notify(
            "inotify watch limit reached: raise it with `sysctl fs.inotify.max_user_watches=524288`"
                .into(),
        ),
        _ => WatchError::Notify(error.to_string()),
    }
}

/// The backend's handle.
pub struct NotifyWatcher {
    root: PathBuf,
    watcher: Mutex<RecommendedWatcher>,
    tree: Arc<Mutex<NotifyTree>>,
    rules_file: PathBuf,
    initial: TreeSize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves usable state; recover it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// notify's errors as I/O errors, so the caller can see EMFILE (no inotify instance left).
fn io_error(error: notify::Error) -> io::Error {
    match error.kind {
        notify::ErrorKind::Io(e) => e,
        _ => io::Error::other(error.to_string()),
    }
}

impl NotifyWatcher {
    /// Watches the tree (one recursive watch; symlinks are not followed), walks it for the
    /// excluded entries and its size (before any sync runs), and starts the reader thread that
    /// sends [`WatchMsg`]s to `tx`.
    pub fn start(
        root: &Path,
        config: ExcludeConfig,
        tx: UnboundedSender<WatchMsg>,
    ) -> io::Result<Self> {
        let (handler, queue) = event_queue(QUEUE_CAPACITY);
        let mut watcher = RecommendedWatcher::new(
            handler,
            notify::Config::default().with_follow_symlinks(false),
        )
        .map_err(io_error)?;
        if let Err(error) = watcher.watch(root, RecursiveMode::Recursive) {
            let error = notify_error(&error);
            tracing::error!("{error}");
            let _ = tx.send(WatchMsg::Error(error));
        }
        let mut tree = NotifyTree::new(root, config);
        let mut initial = TreeSize::default();
        tree.walk(Path::new(""), Some(&mut initial));
        tree.filter.flush_rules();
        tracing::info!(
            excluded = tree.filter.excluded.len(),
            "watching {} (notify, recursive)",
            root.display()
        );
        let rules_file = tree.filter.rules_file.clone();
        let tree = Arc::new(Mutex::new(tree));
        let reader = tree.clone();
        std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || read_loop(&queue, &reader, &tx))?;
        Ok(Self {
            root: root.to_path_buf(),
            watcher: Mutex::new(watcher),
            tree,
            rules_file,
            initial,
        })
    }
}

fn read_loop(queue: &EventQueue, tree: &Mutex<NotifyTree>, tx: &UnboundedSender<WatchMsg>) {
    loop {
        let (events, overflowed) = match queue.receive(OVERFLOW_CHECK) {
            Received::Events(events, overflowed) => (events, overflowed),
            Received::Overflowed => (Vec::new(), true),
            Received::Idle => {
                if tx.is_closed() {
                    return;
                }
                continue;
            }
            Received::Closed => return,
        };
        let mut out = Vec::new();
        let mut changes = Vec::new();
        {
            let mut tree = lock(tree);
            tree.translate_all(events, &mut out, &mut changes);
            if overflowed {
                tracing::warn!(
                    "more than {QUEUE_CAPACITY} notify events queued; dropping them and running a full sync"
                );
                tree.walk(Path::new(""), None);
                out.push(WatchMsg::Overflow);
            }
            tree.settle(&mut changes);
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

impl WatchBackend for NotifyWatcher {
    fn kind(&self) -> WatchBackendKind {
        WatchBackendKind::Notify
    }

    fn initial_tree(&self) -> TreeSize {
        self.initial
    }

    /// notify does not say how many kernel watches its recursive watch holds.
    fn count(&self) -> u64 {
        0
    }

    fn rules_file(&self) -> PathBuf {
        self.rules_file.clone()
    }

    /// notify keeps no watch of ours to repair piecemeal: watch the root afresh.
    fn rescan(&self) -> Result<(), WatchError> {
        self.rewatch()
    }

    fn rewatch(&self) -> Result<(), WatchError> {
        let watched = {
            let mut watcher = lock(&self.watcher);
            let _ = watcher.unwatch(&self.root);
            watcher.watch(&self.root, RecursiveMode::Recursive)
        };
        let mut tree = lock(&self.tree);
        let root = tree.root.clone();
        tree.filter.reload_patterns(&root);
        tree.walk(Path::new(""), None);
        tree.filter.flush_rules();
        watched.map_err(|e| notify_error(&e))
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{DataChange, MetadataKind};
    use notify::EventHandler as _;

    use super::*;

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        tree: NotifyTree,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("skip/deep")).unwrap();
        std::fs::create_dir_all(root.join("d")).unwrap();
        let config = ExcludeConfig {
            registry: vec!["skip/".into(), "*.tmp".into()],
            respect_gitignore: true,
            rules_file: tmp.path().join("rules"),
        };
        let mut tree = NotifyTree::new(&root, config);
        tree.walk(Path::new(""), None);
        Fixture {
            _tmp: tmp,
            root,
            tree,
        }
    }

    fn event(kind: EventKind, paths: &[&Path]) -> notify::Result<Event> {
        let mut event = Event::new(kind);
        for path in paths {
            event = event.add_path(path.to_path_buf());
        }
        Ok(event)
    }

    impl Fixture {
        /// The messages for `events`, changes first, as the reader sends them.
        fn feed(&mut self, events: Vec<notify::Result<Event>>) -> Vec<WatchMsg> {
            let (mut out, mut changes) = (Vec::new(), Vec::new());
            self.tree.translate_all(events, &mut out, &mut changes);
            self.tree.settle(&mut changes);
            if !changes.is_empty() {
                out.insert(0, WatchMsg::Changes(changes));
            }
            out
        }

        fn changes(
            &mut self,
            events: Vec<notify::Result<Event>>,
        ) -> Vec<(String, ChangeKind, bool)> {
            let mut found = Vec::new();
            for msg in self.feed(events) {
                match msg {
                    WatchMsg::Changes(changes) => found.extend(
                        changes
                            .into_iter()
                            .map(|c| (c.path.display().to_string(), c.kind, c.is_dir)),
                    ),
                    other => panic!("unexpected {other:?}"),
                }
            }
            found
        }
    }

    #[test]
    fn creates_writes_closes_attribs_and_deletes_become_changes() {
        let mut f = fixture();
        let file = f.root.join("d/f");
        std::fs::write(&file, "x").unwrap();
        let found = f.changes(vec![
            event(EventKind::Create(CreateKind::File), &[&file]),
            event(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                &[&file],
            ),
            event(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &[&file],
            ),
            event(
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                &[&file],
            ),
            event(EventKind::Remove(RemoveKind::File), &[&file]),
            event(EventKind::Create(CreateKind::Folder), &[&f.root.join("e")]),
            event(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                &[&file],
            ),
        ]);
        assert_eq!(
            found,
            [
                ("d/f".into(), ChangeKind::Created, false),
                ("d/f".into(), ChangeKind::Modified, false),
                ("d/f".into(), ChangeKind::Closed, false),
                ("d/f".into(), ChangeKind::Attrib, false),
                ("d/f".into(), ChangeKind::Deleted, false),
                ("e".into(), ChangeKind::Created, true),
            ]
        );
    }

    #[test]
    fn renames_go_through_both_ends_and_a_lone_old_end_is_a_move_out() {
        let mut f = fixture();
        std::fs::create_dir(f.root.join("new")).unwrap();
        let (old, new) = (f.root.join("old"), f.root.join("new"));
        // Without trackers: From, To and Both each as they come; FSEvents: Any for each end
        // (presence tells which). A name gone with nothing saying what it was may have been a
        // directory: a move out.
        let found = f.changes(vec![
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                &[&old],
            ),
            event(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &[&new]),
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &[&old, &new],
            ),
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::Any)),
                &[&old],
            ),
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::Any)),
                &[&new],
            ),
        ]);
        assert_eq!(
            found,
            [
                ("old".into(), MOVED_OUT, true),
                ("new".into(), ChangeKind::Created, true),
                ("old".into(), MOVED_OUT, true),
                ("new".into(), ChangeKind::Created, true),
                ("old".into(), MOVED_OUT, true),
                ("new".into(), ChangeKind::Created, true),
            ]
        );
        assert!(
            !found
                .iter()
                .any(|(_, k, _)| matches!(k, ChangeKind::MovedTo { .. })),
            "no cookie pairing"
        );
        // Linux, a file renamed inside the workspace: its From is left out (Both says it was a
        // file); a From whose Both never comes (moved out) is a move out.
        std::fs::write(f.root.join("file2"), "x").unwrap();
        let (file, file2, gone) = (
            f.root.join("file"),
            f.root.join("file2"),
            f.root.join("gone"),
        );
        let tracked =
            |kind, paths: &[&Path], tracker| event(kind, paths).map(|e| e.set_tracker(tracker));
        let found = f.changes(vec![
            tracked(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                &[&file],
                7,
            ),
            tracked(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                &[&file2],
                7,
            ),
            tracked(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &[&file, &file2],
                7,
            ),
            tracked(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                &[&gone],
                8,
            ),
        ]);
        assert_eq!(
            found,
            [
                ("file2".into(), ChangeKind::Created, false),
                ("file".into(), ChangeKind::Deleted, false),
                ("file2".into(), ChangeKind::Created, false),
                ("gone".into(), MOVED_OUT, true),
            ]
        );
    }

    #[test]
    fn excluded_entries_and_everything_below_them_are_dropped_and_recorded() {
        let mut f = fixture();
        let fresh = f.root.join("d/build.tmp");
        let found = f.changes(vec![
            event(
                EventKind::Create(CreateKind::File),
                &[&f.root.join("skip/deep/x")],
            ),
            event(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                &[&f.root.join("skip/y")],
            ),
            event(EventKind::Create(CreateKind::File), &[&fresh]),
            event(
                EventKind::Create(CreateKind::File),
                &[&f.root.join("d/kept")],
            ),
        ]);
        assert_eq!(found, [("d/kept".into(), ChangeKind::Created, false)]);
        assert!(f.tree.filter.excluded.contains(Path::new("d/build.tmp")));
        let rules = std::fs::read(&f.tree.filter.rules_file).unwrap();
        assert!(
            rules
                .windows(b"/d/build.tmp".len())
                .any(|w| w == b"/d/build.tmp"),
            "the rules file names the new excluded entry"
        );
    }

    #[test]
    fn a_new_directory_is_walked_for_excluded_entries_inside_it() {
        let mut f = fixture();
        // Made before the watch on it existed: no event for what is inside.
        std::fs::create_dir_all(f.root.join("app/skip")).unwrap();
        let found = f.changes(vec![event(
            EventKind::Create(CreateKind::Folder),
            &[&f.root.join("app")],
        )]);
        assert_eq!(found, [("app".into(), ChangeKind::Created, true)]);
        assert!(f.tree.filter.excluded.contains(Path::new("app/skip")));
    }

    #[test]
    fn cookies_rescans_errors_and_the_root_going_are_messages() {
        let mut f = fixture();
        let cookie = format!("{COOKIE_PREFIX}1-1");
        let file = f.root.join("d/f");
        let out = f.feed(vec![
            event(EventKind::Create(CreateKind::File), &[&file]),
            event(
                EventKind::Create(CreateKind::File),
                &[&f.root.join(&cookie)],
            ),
            Ok(Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)),
            Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch)),
            event(EventKind::Remove(RemoveKind::Folder), &[&f.root]),
            event(
                EventKind::Create(CreateKind::File),
                &[Path::new("/elsewhere/f")],
            ),
        ]);
        let shape: Vec<String> = out
            .iter()
            .map(|m| match m {
                WatchMsg::Changes(c) => format!("changes {}", c.len()),
                WatchMsg::Cookie(name) => format!("cookie {name}"),
                WatchMsg::Overflow => "overflow".into(),
                WatchMsg::RootGone => "root gone".into(),
                WatchMsg::Error(e) => format!("error {e}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(shape.len(), 5, "{shape:?}");
        assert_eq!(shape[0], "changes 1", "changes go out before the cookie");
        assert_eq!(shape[1], format!("cookie {cookie}"));
        assert_eq!(shape[2], "overflow");
        assert!(
            shape[3].contains("fs.inotify.max_user_watches"),
            "{}",
            shape[3]
        );
        assert_eq!(shape[4], "root gone");
    }

    #[test]
    fn a_full_queue_drops_events_and_reports_one_overflow() {
        let (mut handler, queue) = event_queue(2);
        let file = PathBuf::from("/r/f");
        for _ in 0..5 {
            handler.handle_event(event(EventKind::Create(CreateKind::File), &[&file]));
        }
        // Reads are never queued, so they cannot fill it.
        handler.handle_event(event(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            &[&file],
        ));
        match queue.receive(Duration::from_secs(5)) {
            Received::Events(events, overflowed) => {
                assert_eq!(events.len(), 2, "bounded at its capacity");
                assert!(overflowed, "the dropped events are reported");
            }
            _ => panic!("expected the queued events"),
        }
        // Reported once; an overflow found while the queue is empty is reported too.
        assert!(matches!(
            queue.receive(Duration::from_millis(10)),
            Received::Idle
        ));
        for _ in 0..3 {
            handler.handle_event(event(EventKind::Create(CreateKind::File), &[&file]));
        }
        assert!(matches!(
            queue.receive(Duration::from_secs(5)),
            Received::Events(ref e, true) if e.len() == 2
        ));
        handler.handle_event(event(EventKind::Create(CreateKind::File), &[&file]));
        handler.handle_event(event(EventKind::Create(CreateKind::File), &[&file]));
        handler.handle_event(event(EventKind::Create(CreateKind::File), &[&file]));
        let _ = queue.rx.try_iter().count();
        assert!(matches!(
            queue.receive(Duration::from_millis(10)),
            Received::Overflowed
        ));
        drop(handler);
        assert!(matches!(
            queue.receive(Duration::from_millis(10)),
            Received::Closed
        ));
    }
}
