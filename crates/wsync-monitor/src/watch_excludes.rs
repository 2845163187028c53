//! The watcher's side of the excludes: the matcher (`wsync_core::excludes`), the set of
//! excluded entries met while walking or heard about in events, the rsync rules file written
//! from exactly that set (anchored `/path` rules, so rsync never transfers what the watcher
//! skips, and never deletes it remotely either), and the reload when `.wsyncignore` or a
//! `.gitignore` changes: watches follow the new patterns and newly included paths are reported
//! as created so they get synced.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use wsync_core::excludes::{write_rules, Excludes, GITIGNORE};

use crate::engine::checksum::{TreeSize, INITIAL_CHECKSUM_MAX_BYTES, INITIAL_CHECKSUM_MAX_FILES};
use crate::watch::{Change, ChangeKind};

/// What the watcher needs to know about a workspace's excludes.
#[derive(Debug, Clone)]
pub struct ExcludeConfig {
    /// The registry's gitignore-syntax patterns.
    pub registry: Vec<String>,
    pub respect_gitignore: bool,
    /// Where the rsync rules go (NUL-separated, read with `--filter=merge` and `--from0`).
    pub rules_file: PathBuf,
}

pub(crate) struct ExcludeState {
    config: ExcludeConfig,
    pub excludes: Excludes,
    /// Excluded entries (relative paths) found so far; nothing below them is looked at.
    pub excluded: BTreeSet<PathBuf>,
    pub rules_file: PathBuf,
    rules_dirty: bool,
    /// The protect rules written with the excluded entries, and the matcher generation they
    /// were computed for (recomputed only when a pattern file was read or dropped).
    protect: (Option<u64>, Vec<Vec<u8>>),
    /// An ignore file changed: reload the patterns after this batch of events.
    pub reload_needed: bool,
}

impl ExcludeState {
    pub fn new(root: &Path, config: ExcludeConfig) -> Self {
        let excludes = load(root, &config);
        Self {
            rules_file: config.rules_file.clone(),
            config,
            excludes,
            excluded: BTreeSet::new(),
            rules_dirty: true,
            protect: (None, Vec::new()),
            reload_needed: false,
        }
    }

    pub fn reload_patterns(&mut self, root: &Path) {
        self.excludes = load(root, &self.config);
        self.excluded.clear();
        self.protect.0 = None;
        self.rules_dirty = true;
    }

    /// Records `rel` as excluded if the patterns say so; true when it is.
    pub fn exclude_if_matched(&mut self, rel: &Path, is_dir: bool) -> bool {
        if !self.excludes.is_excluded(rel, is_dir) {
            return false;
        }
        if self.excluded.insert(rel.to_path_buf()) {
            self.rules_dirty = true;
        }
        true
    }

    /// Forgets excluded entries at or below `rel` (that subtree went away), in time
    /// proportional to what is forgotten.
    pub fn forget_below(&mut self, rel: &Path) {
        let mut gone = crate::queue::below(&self.excluded, rel);
        gone.push(rel.to_path_buf());
        for path in gone {
            self.rules_dirty |= self.excluded.remove(&path);
        }
        self.excludes.forget_below(rel);
    }

    /// Excluded entries below `from` are now below `to` (a directory renamed, its decisions
    /// kept: [`Excludes::move_keeps_decisions`]), in time proportional to what moves. Only
    /// the inotify backend (Linux) renames a watched subtree in place.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub fn rename_below(&mut self, from: &Path, to: &Path) {
        for path in crate::queue::below(&self.excluded, from) {
            self.excluded.remove(&path);
            if let Ok(rest) = path.strip_prefix(from) {
                self.excluded.insert(to.join(rest));
            }
            self.rules_dirty = true;
        }
    }

    /// Keeps the excluded set current for one event; true when the event is about an excluded
    /// entry and must be dropped.
    pub fn on_event(&mut self, path: &Path, kind: ChangeKind, is_dir: bool) -> bool {
        if self.excludes.is_empty() && self.excluded.is_empty() {
            return false;
        }
        match kind {
            ChangeKind::Created | ChangeKind::MovedTo { .. } => {
                self.exclude_if_matched(path, is_dir)
            }
            ChangeKind::Deleted | ChangeKind::MovedFrom { .. } => {
                if self.excluded.remove(path) {
                    self.rules_dirty = true;
                    return true;
                }
                self.excludes.is_excluded(path, is_dir)
            }
            ChangeKind::Modified | ChangeKind::Closed | ChangeKind::Attrib => {
                self.excluded.contains(path) || self.excludes.is_excluded(path, is_dir)
            }
        }
    }

    /// Writes the rules file if the excluded set or the patterns changed: the anchored rules
    /// for the excluded entries, then the protect rules of every ignore file the walk read
    /// (`Excludes::protect_rules`), so a batch's rsync keeps exactly the remote paths the
    /// matcher excludes without reading the tree's ignore files again.
    pub(crate) fn flush_rules(&mut self) {
        let generation = self.excludes.generation();
        if self.protect.0 != Some(generation) {
            self.protect = (Some(generation), self.excludes.protect_rules());
            self.rules_dirty = true;
        }
        if !std::mem::take(&mut self.rules_dirty) {
            return;
        }
        if let Err(e) = write_rules(&self.rules_file, &self.excluded, &self.protect.1) {
            tracing::error!(
                "cannot write the rsync exclude rules to {}: {e}",
                self.rules_file.display()
            );
            self.rules_dirty = true;
        }
    }

    /// Lists `dir` (relative to `root`) after loading its ignore file: records the excluded
    /// entries, counts the included files into `counting` (sizes only while the initial
    /// checksum decision is open) and returns the included subdirectories. An unreadable
    /// directory lists as empty.
    pub(crate) fn list_dir(
        &mut self,
        root: &Path,
        dir: &Path,
        counting: Option<&mut TreeSize>,
    ) -> Vec<PathBuf> {
        let entries = read_entries(&root.join(dir));
        self.classify(dir, entries, counting)
    }

    /// The bookkeeping half of [`ExcludeState::list_dir`], on entries read by
    /// [`read_entries`] (possibly without the watch table's lock).
    pub(crate) fn classify(
        &mut self,
        dir: &Path,
        entries: Vec<std::fs::DirEntry>,
        mut counting: Option<&mut TreeSize>,
    ) -> Vec<PathBuf> {
        let has_gitignore = entries.iter().any(|e| e.file_name() == GITIGNORE);
        self.excludes.load_dir_listed(dir, has_gitignore);
        let mut subdirs = Vec::new();
        for entry in entries {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let child = dir.join(entry.file_name());
            if self.exclude_if_matched(&child, is_dir) {
                continue;
            }
            if is_dir {
                subdirs.push(child);
            } else if let Some(tree) = counting.as_deref_mut() {
                tree.files += 1;
                // One stat per file, and only while the answer is open.
                if tree.bytes <= INITIAL_CHECKSUM_MAX_BYTES
                    && tree.files <= INITIAL_CHECKSUM_MAX_FILES
                {
                    tree.bytes += entry.metadata().map_or(0, |m| m.len());
                }
            }
        }
        subdirs
    }

    /// After a reload: the entries excluded before (`old`) that the new patterns include,
    /// whose parent the walk reached (`reached`), as created changes so they get synced.
    pub(crate) fn newly_included(
        &self,
        root: &Path,
        old: BTreeSet<PathBuf>,
        reached: impl Fn(&Path) -> bool,
    ) -> Vec<Change> {
        old.into_iter()
            .filter(|p| !self.excluded.contains(p))
            .filter(|p| p.parent().is_some_and(&reached))
            .filter_map(|path| {
                let meta = std::fs::symlink_metadata(root.join(&path)).ok()?;
                Some(Change {
                    path,
                    kind: ChangeKind::Created,
                    is_dir: meta.is_dir(),
                })
            })
            .collect()
    }
}

/// The entries of directory `full` (the I/O half of a listing: the file types come with the
/// listing on most filesystems). An unreadable directory lists as empty.
pub(crate) fn read_entries(full: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(full).map_or_else(|_| Vec::new(), |entries| entries.flatten().collect())
}

fn load(root: &Path, config: &ExcludeConfig) -> Excludes {
    let excludes = Excludes::new(root, &config.registry, config.respect_gitignore);
    for warning in excludes.warnings() {
        tracing::warn!("excludes: {warning}");
    }
    excludes
}
