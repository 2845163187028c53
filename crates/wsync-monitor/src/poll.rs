//! The poll backend (`WatchMode=poll`), chosen by `auto` for network and FUSE sources (where
//! inotify sees only local writes) and used when no inotify instance can be had
//! (`inotify_init` fails with EMFILE: `fs.inotify.max_user_instances` is reached — 128 by
//! default, one per monitor). Every
//! `PollIntervalMs` (`tunables.poll_interval_ms`, two seconds by default) a thread walks the tree (excluded directories skipped and recorded, as the
//! watcher does, with the patterns read afresh each walk) and compares each entry's mtime and
//! ctime (ns), size, inode, type and mode with the last walk; what differs goes to the engine as
//! changes, and a new flush cookie at the root as a cookie, after the changes of the walk that
//! saw it (the root is listed first, so every change made before the cookie is in that walk).
//! This monitor's proof-of-sync files pass the excludes, as they do with the watcher.
//! Changes go out in the order inotify reports them (deletions deepest first, then creations):
//! a directory replaced by a file is one burst. With no close-write to see, a file that
//! changes in two walks running is reported as still being written, so the engine sends a
//! growing file at most once a second, as it does under inotify (see [`changes`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use wsync_core::excludes::{write_rules, Excludes};
use wsync_core::rsync::{proof_prefix, COOKIE_PREFIX};

use wsync_core::monitor_proto::WatchBackendKind;

use crate::backend::WatchBackend;
use crate::engine::checksum::TreeSize;
use crate::watch::{Change, ChangeKind, ExcludeConfig, WatchError, WatchMsg};

/// What a walk remembers of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime_ns: i128,
    ctime_ns: i128,
    size: u64,
    ino: u64,
    mode: u32,
    is_dir: bool,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        let ns = |secs: i64, nsec: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsec);
        Self {
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            size: meta.size(),
            ino: meta.ino(),
            mode: meta.mode(),
            is_dir: meta.is_dir(),
        }
    }
}

/// One walk of the tree.
#[derive(Debug, Default)]
struct Snapshot {
    /// `None`: the root could not be listed.
    entries: Option<BTreeMap<PathBuf, Stamp>>,
    cookies: BTreeSet<String>,
    excluded: BTreeSet<PathBuf>,
    protect: Vec<Vec<u8>>,
}

fn walk(root: &Path, config: &ExcludeConfig) -> Snapshot {
    let mut excludes = Excludes::new(root, &config.registry, config.respect_gitignore);
    let mut snapshot = Snapshot::default();
    let mut entries = BTreeMap::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        excludes.load_dir(&rel);
        let listing = match std::fs::read_dir(root.join(&rel)) {
            Ok(listing) => listing,
            Err(_) if rel.as_os_str().is_empty() => return snapshot,
            Err(_) => continue,
        };
        for entry in listing.flatten() {
            let name = entry.file_name();
            if rel.as_os_str().is_empty() && name.as_bytes().starts_with(COOKIE_PREFIX.as_bytes()) {
                snapshot.cookies.insert(name.to_string_lossy().into_owned());
                continue;
            }
            let child = rel.join(&name);
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            // This monitor's proof-of-sync file must reach every remote whatever the excludes
            // say, as with the watcher.
            let proof = rel.as_os_str().is_empty()
                && name.as_bytes().starts_with(proof_prefix().as_bytes());
            if !proof && excludes.is_excluded(&child, meta.is_dir()) {
                snapshot.excluded.insert(child);
                continue;
            }
            if meta.is_dir() {
                dirs.push(child.clone());
            }
            entries.insert(child, Stamp::of(&meta));
        }
    }
    snapshot.entries = Some(entries);
    snapshot.protect = excludes.protect_rules();
    snapshot
}

/// What the walks remember between them about files being written.
#[derive(Debug, Default)]
struct Writes {
    /// Files created or changed between the last two walks.
    changed: BTreeSet<PathBuf>,
    /// Files reported [`ChangeKind::Modified`] (changed in two walks running: still being
    /// written) and not yet closed.
    open: BTreeSet<PathBuf>,
}

/// What changed from `old` to `new`, in the order inotify would report it: deletions first,
/// deepest first (the entries of a removed or replaced directory before the directory), then
/// creations and edits, parents first. So a directory replaced by a file (or a file by a
/// directory) is one burst — the old entries gone, then the new one — never a deletion below a
/// path that is no longer a directory. A directory's own times change with its entries, which
/// report themselves: only its mode (and a type change) is news.
///
/// There is no close-write to see, so a file's writes are judged by the walks: a file that
/// changed since the last walk but not in the one before is a finished edit
/// ([`ChangeKind::Closed`], sent at once); one that changed in two walks running is still being
/// written ([`ChangeKind::Modified`]: the engine sends it at most once a second while it grows,
/// as under inotify), and the first walk that finds it unchanged closes it.
fn changes(
    old: &BTreeMap<PathBuf, Stamp>,
    new: &BTreeMap<PathBuf, Stamp>,
    writes: &mut Writes,
) -> Vec<Change> {
    let mut out = Vec::new();
    let change = |path: &Path, kind, is_dir| Change {
        path: path.to_path_buf(),
        kind,
        is_dir,
    };
    let replaced = |was: &Stamp, now: &Stamp| now.is_dir != was.is_dir || now.ino != was.ino;
    for (path, was) in old.iter().rev() {
        let gone = match new.get(path) {
            None => true,
            Some(now) => replaced(was, now),
        };
        if gone {
            out.push(change(path, ChangeKind::Deleted, was.is_dir));
            writes.open.remove(path);
        }
    }
    let mut changed = BTreeSet::new();
    for (path, now) in new {
        match old.get(path) {
            Some(was) if !replaced(was, now) => {
                if now.is_dir {
                    if now.mode != was.mode {
                        out.push(change(path, ChangeKind::Attrib, true));
                    }
                } else if now != was {
                    let kind = if writes.changed.contains(path) {
                        writes.open.insert(path.clone());
                        ChangeKind::Modified
                    } else {
                        ChangeKind::Closed
                    };
                    out.push(change(path, kind, false));
                    changed.insert(path.clone());
                } else if writes.open.remove(path) {
                    out.push(change(path, ChangeKind::Closed, false));
                }
            }
            _ => {
                out.push(change(path, ChangeKind::Created, now.is_dir));
                if !now.is_dir {
                    // Written by now as far as this walk knows (inotify would have seen its
                    // close-write): it goes out as a finished file, with the deletion of
                    // whatever was there before. A next walk that finds it changed again
                    // reports it still being written.
                    out.push(change(path, ChangeKind::Closed, false));
                    changed.insert(path.clone());
                }
            }
        }
    }
    writes.changed = changed;
    out
}

/// Writes the rsync rules of `snapshot` (see `WatchTable::flush_rules`).
fn write(config: &ExcludeConfig, snapshot: &Snapshot) {
    if let Err(e) = write_rules(&config.rules_file, &snapshot.excluded, &snapshot.protect) {
        tracing::error!(
            "cannot write the rsync exclude rules to {}: {e}",
            config.rules_file.display()
        );
    }
}

/// The included files and bytes a walk saw (whether the initial sync can afford `--checksum`).
fn tree_size(snapshot: &Snapshot) -> TreeSize {
    let mut tree = TreeSize::default();
    for stamp in snapshot.entries.iter().flat_map(BTreeMap::values) {
        if !stamp.is_dir {
            tree.files += 1;
            tree.bytes += stamp.size;
        }
    }
    tree
}

/// The poll backend's handle: nothing to rescan or re-watch (each walk covers the whole tree
/// anyway) and no kernel watches.
pub struct Poller {
    rules_file: PathBuf,
    tree: TreeSize,
}

impl WatchBackend for Poller {
    fn kind(&self) -> WatchBackendKind {
        WatchBackendKind::Poll
    }
    fn initial_tree(&self) -> TreeSize {
        self.tree
    }
    fn count(&self) -> u64 {
        0
    }
    fn rules_file(&self) -> PathBuf {
        self.rules_file.clone()
    }
    fn rescan(&self) -> Result<(), WatchError> {
        Ok(())
    }
    fn rewatch(&self) -> Result<(), WatchError> {
        Ok(())
    }
}

/// Walks the tree once (the rules file is written before this returns, so the first sync
/// has it), then polls it on a thread of its own until `tx` closes.
pub fn start(
    root: &Path,
    config: ExcludeConfig,
    interval: Duration,
    tx: UnboundedSender<WatchMsg>,
) -> io::Result<Poller> {
    let root = root.to_path_buf();
    let mut last = walk(&root, &config);
    let mut writes = Writes::default();
    write(&config, &last);
    let poller = Poller {
        rules_file: config.rules_file.clone(),
        tree: tree_size(&last),
    };
    std::thread::Builder::new()
        .name("poll".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            let next = walk(&root, &config);
            if next.excluded != last.excluded || next.protect != last.protect {
                write(&config, &next);
            }
            let mut out = Vec::new();
            match (&last.entries, &next.entries) {
                (Some(old), Some(new)) => {
                    let found = changes(old, new, &mut writes);
                    if !found.is_empty() {
                        out.push(WatchMsg::Changes(found));
                    }
                }
                (Some(_), None) => out.push(WatchMsg::RootGone),
                // The root is back (or still gone): everything there is new to us.
                (None, Some(new)) => {
                    writes = Writes::default();
                    out.push(WatchMsg::Changes(changes(
                        &BTreeMap::new(),
                        new,
                        &mut writes,
                    )))
                }
                (None, None) => {}
            }
            for cookie in next.cookies.difference(&last.cookies) {
                out.push(WatchMsg::Cookie(cookie.clone()));
            }
            for msg in out {
                if tx.send(msg).is_err() {
                    return;
                }
            }
            last = next;
        })?;
    Ok(poller)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> ExcludeConfig {
        ExcludeConfig {
            registry: vec!["skip/".into()],
            respect_gitignore: true,
            rules_file: dir.join("rules"),
        }
    }

    #[test]
    fn a_walk_compare_finds_creates_edits_deletes_and_skips_excluded_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::create_dir_all(root.join("skip/deep")).unwrap();
        std::fs::write(root.join("d/f"), "1").unwrap();
        std::fs::write(root.join("gone"), "x").unwrap();
        let config = config(tmp.path());
        let before = walk(&root, &config);
        let old = before.entries.clone().unwrap();
        assert!(before.excluded.contains(Path::new("skip")));
        assert!(
            !old.contains_key(Path::new("skip/deep")),
            "not descended into"
        );

        std::fs::write(root.join("d/f"), "22").unwrap();
        std::fs::remove_file(root.join("gone")).unwrap();
        std::fs::write(root.join("d/e/new"), "n").unwrap();
        std::fs::write(root.join("skip/deep/ignored"), "i").unwrap();
        std::fs::write(root.join(format!("{COOKIE_PREFIX}1-1")), "").unwrap();
        let after = walk(&root, &config);
        let mut found: Vec<(String, ChangeKind)> = changes(
            &old,
            after.entries.as_ref().unwrap(),
            &mut Writes::default(),
        )
        .into_iter()
        .map(|c| (c.path.display().to_string(), c.kind))
        .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            found,
            [
                ("d/e/new".into(), ChangeKind::Created),
                ("d/e/new".into(), ChangeKind::Closed),
                ("d/f".into(), ChangeKind::Closed),
                ("gone".into(), ChangeKind::Deleted),
            ]
        );
        assert_eq!(
            after.cookies.into_iter().collect::<Vec<_>>(),
            [format!("{COOKIE_PREFIX}1-1")]
        );
    }

    fn kinds(found: Vec<Change>) -> Vec<(String, ChangeKind, bool)> {
        found
            .into_iter()
            .map(|c| (c.path.display().to_string(), c.kind, c.is_dir))
            .collect()
    }

    /// Walks `root` and returns what changed since `last` (which becomes this walk).
    fn step(
        root: &Path,
        config: &ExcludeConfig,
        last: &mut BTreeMap<PathBuf, Stamp>,
        writes: &mut Writes,
    ) -> Vec<(String, ChangeKind, bool)> {
        let next = walk(root, config).entries.unwrap();
        let found = changes(last, &next, writes);
        *last = next;
        kinds(found)
    }

    #[test]
    fn a_directory_replaced_by_a_file_and_back_is_one_burst_deletions_deepest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/e/f"), "1").unwrap();
        std::fs::write(root.join("d/g"), "2").unwrap();
        let config = config(tmp.path());
        let mut last = walk(&root, &config).entries.unwrap();
        let mut writes = Writes::default();

        std::fs::remove_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d"), "a file now").unwrap();
        assert_eq!(
            step(&root, &config, &mut last, &mut writes),
            [
                ("d/g".into(), ChangeKind::Deleted, false),
                ("d/e/f".into(), ChangeKind::Deleted, false),
                ("d/e".into(), ChangeKind::Deleted, true),
                ("d".into(), ChangeKind::Deleted, true),
                ("d".into(), ChangeKind::Created, false),
                ("d".into(), ChangeKind::Closed, false),
            ]
        );

        std::fs::remove_file(root.join("d")).unwrap();
        std::fs::create_dir_all(root.join("d/h")).unwrap();
        std::fs::write(root.join("d/h/i"), "a dir again").unwrap();
        assert_eq!(
            step(&root, &config, &mut last, &mut writes),
            [
                ("d".into(), ChangeKind::Deleted, false),
                ("d".into(), ChangeKind::Created, true),
                ("d/h".into(), ChangeKind::Created, true),
                ("d/h/i".into(), ChangeKind::Created, false),
                ("d/h/i".into(), ChangeKind::Closed, false),
            ]
        );
    }

    #[test]
    fn a_file_changing_in_walks_running_is_open_until_a_walk_finds_it_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("edited"), "1").unwrap();
        let config = config(tmp.path());
        let mut last = walk(&root, &config).entries.unwrap();
        let mut writes = Writes::default();
        let grow = |text: &str| {
            use std::io::Write;
            let mut f = std::fs::File::options()
                .append(true)
                .create(true)
                .open(root.join("log"))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };

        // A one-off edit is finished: sent at once.
        std::fs::write(root.join("edited"), "22").unwrap();
        grow("a");
        assert_eq!(
            step(&root, &config, &mut last, &mut writes),
            [
                ("edited".into(), ChangeKind::Closed, false),
                ("log".into(), ChangeKind::Created, false),
                ("log".into(), ChangeKind::Closed, false),
            ]
        );
        // Still growing: written, not closed (the engine holds it to once a second).
        grow("b");
        assert_eq!(
            step(&root, &config, &mut last, &mut writes),
            [("log".into(), ChangeKind::Modified, false)]
        );
        grow("c");
        assert_eq!(
            step(&root, &config, &mut last, &mut writes),
            [("log".into(), ChangeKind::Modified, false)]
        );
        // It stopped: the first quiet walk closes it, the next says nothing.
        assert_eq!(
            step(&root, &config, &mut last, &mut writes),
            [("log".into(), ChangeKind::Closed, false)]
        );
        assert_eq!(step(&root, &config, &mut last, &mut writes), []);
    }

    #[test]
    fn a_same_size_edit_with_its_mtime_restored_is_caught_by_ctime() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let path = root.join("f");
        std::fs::write(&path, "aaaa").unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let config = config(tmp.path());
        let mut last = walk(&root, &config).entries.unwrap();
        let before = last[Path::new("f")];
        std::fs::write(&path, "bbbb").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let next = walk(&root, &config).entries.unwrap();
        let after = next[Path::new("f")];
        assert_eq!(
            (after.mtime_ns, after.size, after.ino),
            (before.mtime_ns, before.size, before.ino),
            "only ctime tells"
        );
        assert_eq!(
            kinds(changes(&last, &next, &mut Writes::default())),
            [("f".into(), ChangeKind::Closed, false)]
        );
        last = next;
        assert!(changes(
            &last,
            &walk(&root, &config).entries.unwrap(),
            &mut Writes::default()
        )
        .is_empty());
    }

    #[test]
    fn the_first_walk_sizes_the_tree_for_the_initial_checksum_decision() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::create_dir_all(root.join("skip")).unwrap();
        std::fs::write(root.join("d/e/f"), "12345").unwrap();
        std::fs::write(root.join("g"), "678").unwrap();
        std::fs::write(root.join("skip/big"), vec![0u8; 4096]).unwrap();
        let tree = tree_size(&walk(&root, &config(tmp.path())));
        // Directories and excluded entries are not sent, so they do not count.
        assert_eq!((tree.files, tree.bytes), (2, 8));
    }

    #[test]
    fn this_monitors_proof_file_passes_an_exclude_that_matches_it_and_a_users_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let own = format!("{}1", proof_prefix());
        std::fs::write(root.join(&own), "").unwrap();
        std::fs::write(root.join(".wsync-proof-notes"), "mine").unwrap();
        let config = ExcludeConfig {
            registry: vec![format!("{}*", wsync_core::rsync::PROOF_PREFIX)],
            respect_gitignore: true,
            rules_file: tmp.path().join("rules"),
        };
        let walked = walk(&root, &config);
        assert!(walked.entries.unwrap().contains_key(Path::new(&own)));
        assert!(walked.excluded.contains(Path::new(".wsync-proof-notes")));
        assert!(!walked.excluded.contains(Path::new(&own)));
    }
}
