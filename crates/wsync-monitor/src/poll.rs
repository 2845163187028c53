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
//! Deliberately small: a first step towards a proper backend.

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

/// What changed from `old` to `new`. A directory's own times change with its entries, which
/// report themselves: only its mode (and a type change) is news.
fn changes(old: &BTreeMap<PathBuf, Stamp>, new: &BTreeMap<PathBuf, Stamp>) -> Vec<Change> {
    let mut out = Vec::new();
    let change = |path: &Path, kind, is_dir| Change {
        path: path.to_path_buf(),
        kind,
        is_dir,
    };
    for (path, was) in old {
        match new.get(path) {
            None => out.push(change(path, ChangeKind::Deleted, was.is_dir)),
            Some(now) if now.is_dir != was.is_dir || now.ino != was.ino => {
                out.push(change(path, ChangeKind::Deleted, was.is_dir));
                out.push(change(path, ChangeKind::Created, now.is_dir));
            }
            Some(now) if now.is_dir => {
                if now.mode != was.mode {
                    out.push(change(path, ChangeKind::Attrib, true));
                }
            }
            Some(now) if now != was => out.push(change(path, ChangeKind::Closed, false)),
            Some(_) => {}
        }
    }
    for (path, now) in new {
        if !old.contains_key(path) {
            out.push(change(path, ChangeKind::Created, now.is_dir));
        }
    }
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
                    let found = changes(old, new);
                    if !found.is_empty() {
                        out.push(WatchMsg::Changes(found));
                    }
                }
                (Some(_), None) => out.push(WatchMsg::RootGone),
                // The root is back (or still gone): everything there is new to us.
                (None, Some(new)) => out.push(WatchMsg::Changes(changes(&BTreeMap::new(), new))),
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
        let mut found: Vec<(String, ChangeKind)> = changes(&old, after.entries.as_ref().unwrap())
            .into_iter()
            .map(|c| (c.path.display().to_string(), c.kind))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            found,
            [
                ("d/e/new".into(), ChangeKind::Created),
                ("d/f".into(), ChangeKind::Closed),
                ("gone".into(), ChangeKind::Deleted),
            ]
        );
        assert_eq!(
            after.cookies.into_iter().collect::<Vec<_>>(),
            [format!("{COOKIE_PREFIX}1-1")]
        );
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
