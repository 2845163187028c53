//! The executor: applies an ordered list of [`Op`]s to one target directory, each op through
//! the target's [`TargetRoot`] (resolved beneath its handle, never through a symlink) and each
//! answered with an [`OpResult`] naming what happened to its path.
//!
//! Why in `wsync-core`: the same ops are meant to be applied on an SSH remote by an agent
//! speaking to the monitor over its ssh connection (issue 14), so they are plain serde data
//! and nothing here knows where they came from: file content comes from a [`ContentSource`]
//! (the monitor reads the workspace; an agent would read its stream). The monitor's side —
//! which paths of a batch may go this way and what to do with the rest — is
//! `wsync_monitor::batch::in_process`.
//!
//! The rules, each mirroring what `rsync -a -H --delete` does to a local target:
//! - [`Executor::open`] checks the target's `.wsync-target` marker on the same handle every
//!   op then uses: no op runs on a target that is not provably this workspace's.
//! - A put is atomic: a hidden temp file (`O_EXCL`) in the same directory, the content,
//!   owner (when running as root; the group otherwise where permitted), mode and mtime set on
//!   the descriptor, then renamed over the old entry. A symlink likewise.
//! - Deletions (a removed path, a directory's entries the source no longer has, a directory
//!   replaced by a file) are counted, and none runs past the deletion budget
//!   ([`Limits::max_delete`]): the executor stops there, as rsync's `--max-delete` exit 25.
//! - A rename applies only if the target still looks as the source did before it
//!   ([`rename_if_matching`]), as the replay of `wsync_monitor::batch::renames` requires.
//! - wsync's own entries at the top of the target (the marker, the trash, flush cookies) are
//!   never written, removed or pruned, whatever the ops say.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::UtimensatFlags;
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};

use crate::beneath::{BeneathError, EntryKind, TargetRoot};

/// The largest file put whole by default; larger files go through rsync (delta transfer).
pub const PUT_MAX_DEFAULT: u64 = 1 << 20;

/// An entry's attributes as `rsync -a` keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

impl Meta {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }

    fn times(&self) -> [TimeSpec; 2] {
        [
            TimeSpec::UTIME_OMIT,
            TimeSpec::new(self.mtime_sec, self.mtime_nsec),
        ]
    }
}

/// One operation on the target; paths are relative to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Writes the regular file `path` whole, with the content and attributes the
    /// [`ContentSource`] gives for it, atomically; a directory there is removed first.
    Put { path: PathBuf },
    /// Makes `path` a symlink to `dest` (its own mtime and owner from `meta`), atomically.
    Symlink {
        path: PathBuf,
        dest: PathBuf,
        meta: Meta,
    },
    /// Makes sure `path` is a directory (created, or what else is there removed first).
    Mkdir { path: PathBuf },
    /// Removes `path`: a file, a symlink, or a directory with everything below it. Absent is
    /// fine.
    Remove { path: PathBuf },
    /// Removes every entry of the directory `path` not named in `keep` (`--delete` inside a
    /// listed directory).
    PruneDir { path: PathBuf, keep: Vec<OsString> },
    /// Sets a directory's attributes (`path` empty: the target itself), after its contents
    /// were written (which changed its mtime).
    SetMeta { path: PathBuf, meta: Meta },
    /// Renames `from` to `to` if the target still matches ([`rename_if_matching`]).
    Rename {
        from: PathBuf,
        to: PathBuf,
        is_dir: bool,
        keep_overwritten: bool,
    },
}

impl Op {
    /// The path the op is about (a rename's source).
    pub fn path(&self) -> &Path {
        match self {
            Op::Put { path }
            | Op::Symlink { path, .. }
            | Op::Mkdir { path }
            | Op::Remove { path }
            | Op::PruneDir { path, .. }
            | Op::SetMeta { path, .. } => path,
            Op::Rename { from, .. } => from,
        }
    }
}

/// What became of one op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum OpResult {
    Done,
    /// A rename whose ends no longer match: nothing was changed.
    NotApplied,
    /// The source file is gone (rsync's exit 24 for it): nothing was changed.
    Vanished,
    /// The source is no longer what a put can send (grown past the limit, hard-linked, of
    /// another type): nothing was changed; rsync sends it.
    Unsuitable {
        why: String,
    },
    /// The op failed; `diverged` names a directory on the way that is a symlink or not a
    /// directory on the target (what rsync then sends whole, replacing it).
    Failed {
        path: PathBuf,
        message: String,
        diverged: Option<PathBuf>,
    },
    /// The op would delete `needed` entries, more than the budget has left: nothing was
    /// deleted, and no later op ran.
    OverMaxDelete {
        needed: u64,
    },
    /// Not run: an earlier op stopped the executor.
    Skipped,
}

/// What [`ContentSource::read`] could not give.
#[derive(Debug)]
pub enum SourceError {
    /// The file no longer exists at the source.
    Vanished,
    /// It is no longer a regular file of at most the limit with one link.
    Unsuitable(String),
    Io(std::io::Error),
}

/// Where a put's content comes from.
pub trait ContentSource {
    /// The content and attributes of the regular file `path` as they are now, at most `max`
    /// bytes (a larger file is [`SourceError::Unsuitable`]).
    fn read(&mut self, path: &Path, max: u64) -> Result<(Vec<u8>, Meta), SourceError>;
}

/// The limits a run of ops keeps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// What is left of the deletion budget (`None`: no cap).
    pub max_delete: Option<u64>,
    /// The largest file put whole.
    pub put_max: u64,
}

/// What a run of ops did, one result per op.
#[derive(Debug, Default)]
pub struct Applied {
    pub results: Vec<OpResult>,
    /// Entries deleted (rsync's `files_deleted`).
    pub deleted: u64,
    /// Files and symlinks written, and the bytes of the files.
    pub written: u64,
    pub bytes: u64,
}

/// Whose the written entries are: as root, the source's owner and group (`rsync -a`);
/// otherwise the group where the user may set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owners {
    Preserve,
    GroupIfPermitted,
}

/// The target is not provably this workspace's mirror.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the target holds no marker of this workspace")]
    NotOurs,
    #[error(transparent)]
    Beneath(#[from] BeneathError),
}

/// A target opened for ops, its marker checked.
pub struct Executor {
    root: TargetRoot,
    owners: Owners,
}

impl Executor {
    /// Opens the target `path` and checks it holds `workspace_id`'s marker, on the handle
    /// every op then goes through.
    pub fn open(path: &Path, workspace_id: &str) -> Result<Self, OpenError> {
        let root = TargetRoot::open(path)?;
        if !crate::target::is_ours(&root, workspace_id) {
            return Err(OpenError::NotOurs);
        }
        let owners = if nix::unistd::geteuid().is_root() {
            Owners::Preserve
        } else {
            Owners::GroupIfPermitted
        };
        Ok(Self { root, owners })
    }

    /// The target's handle (for checks a caller makes on the same target).
    pub fn root(&self) -> &TargetRoot {
        &self.root
    }

    /// Applies `ops` in order. An op's failure does not stop the run (its result says what
    /// went wrong); a deletion past the budget does.
    pub fn apply(&self, ops: &[Op], source: &mut dyn ContentSource, limits: Limits) -> Applied {
        let mut run = Run {
            ex: self,
            left: limits.max_delete,
            put_max: limits.put_max,
            applied: Applied::default(),
        };
        let mut stopped = false;
        for op in ops {
            let result = if stopped {
                OpResult::Skipped
            } else {
                run.one(op, source)
            };
            stopped |= matches!(result, OpResult::OverMaxDelete { .. });
            run.applied.results.push(result);
        }
        run.applied
    }

    fn set_fd_meta(&self, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), Errno> {
        // Owner first: chown clears set-id bits, which the mode then restores.
        match self.owners {
            Owners::Preserve => {
                nix::unistd::fchown(fd, Some(meta.uid.into()), Some(meta.gid.into()))?
            }
            Owners::GroupIfPermitted => {
                match nix::unistd::fchown(fd, None, Some(meta.gid.into())) {
                    Ok(()) | Err(Errno::EPERM) => {}
                    Err(errno) => return Err(errno),
                }
            }
        }
        nix::sys::stat::fchmod(fd, crate::platform::mode(meta.mode))?;
        let [atime, mtime] = meta.times();
        nix::sys::stat::futimens(fd, &atime, &mtime)
    }

    fn set_link_meta(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
    ) -> Result<(), Errno> {
        let owner = match self.owners {
            Owners::Preserve => Some(meta.uid.into()),
            Owners::GroupIfPermitted => None,
        };
        match nix::unistd::fchownat(
            parent,
            name,
            owner,
            Some(meta.gid.into()),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(()) => {}
            Err(Errno::EPERM) if self.owners == Owners::GroupIfPermitted => {}
            Err(errno) => return Err(errno),
        }
        let [atime, mtime] = meta.times();
        nix::sys::stat::utimensat(
            parent,
            name,
            &atime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
    }
}

/// One run of [`Executor::apply`]: the budget left and the tally.
struct Run<'a> {
    ex: &'a Executor,
    left: Option<u64>,
    put_max: u64,
    applied: Applied,
}

impl Run<'_> {
    fn one(&mut self, op: &Op, source: &mut dyn ContentSource) -> OpResult {
        if let Some(path) = [Some(op.path()), rename_to(op)]
            .into_iter()
            .flatten()
            .find(|p| is_wsyncs_own(p))
        {
            return OpResult::Failed {
                path: path.to_path_buf(),
                message: "wsync's own entry at the top of the target is never written".into(),
                diverged: None,
            };
        }
        match self.attempt(op, source) {
            Ok(result) => result,
            Err(e) => failed(e),
        }
    }

    fn attempt(
        &mut self,
        op: &Op,
        source: &mut dyn ContentSource,
    ) -> Result<OpResult, BeneathError> {
        let ex = self.ex;
        let root = &ex.root;
        match op {
            Op::Put { path } => {
                let (content, meta) = match source.read(path, self.put_max) {
                    Ok(read) => read,
                    Err(SourceError::Vanished) => return Ok(OpResult::Vanished),
                    Err(SourceError::Unsuitable(why)) => return Ok(OpResult::Unsuitable { why }),
                    Err(SourceError::Io(e)) => {
                        return Ok(OpResult::Unsuitable {
                            why: format!("reading the source: {e}"),
                        })
                    }
                };
                if let Some(stop) = self.clear_dir(path)? {
                    return Ok(stop);
                }
                root.put_atomic(path, |file| {
                    let mut writer = file;
                    writer.write_all(&content)?;
                    ex.set_fd_meta(file.as_fd(), &meta)
                        .map_err(std::io::Error::from)
                })?;
                self.applied.written += 1;
                self.applied.bytes += content.len() as u64;
                Ok(OpResult::Done)
            }
            Op::Symlink { path, dest, meta } => {
                if let Some(stop) = self.clear_dir(path)? {
                    return Ok(stop);
                }
                root.symlink_atomic(path, dest.as_os_str(), |parent, name| {
                    ex.set_link_meta(parent, name, meta)
                })?;
                self.applied.written += 1;
                Ok(OpResult::Done)
            }
            Op::Mkdir { path } => {
                match root.stat(path)? {
                    Some(st) if st.kind == EntryKind::Dir => return Ok(OpResult::Done),
                    Some(_) => {
                        if let Some(stop) = self.delete(path)? {
                            return Ok(stop);
                        }
                    }
                    None => {}
                }
                root.mkdir(path)?;
                Ok(OpResult::Done)
            }
            Op::Remove { path } => Ok(self.delete(path)?.unwrap_or(OpResult::Done)),
            Op::PruneDir { path, keep } => {
                let names = root.list_dir(path)?;
                let at_top = path.as_os_str().is_empty();
                for name in names {
                    if keep.contains(&name) {
                        continue;
                    }
                    let entry = path.join(&name);
                    if at_top && is_wsyncs_own(&entry) {
                        continue;
                    }
                    if let Some(stop) = self.delete(&entry)? {
                        return Ok(stop);
                    }
                }
                Ok(OpResult::Done)
            }
            Op::SetMeta { path, meta } => {
                let dir = root.open_dir(path)?;
                ex.set_fd_meta(dir.as_fd(), meta)
                    .map_err(|errno| BeneathError::Io {
                        op: "set attributes of",
                        path: path.clone(),
                        source: errno.into(),
                    })?;
                Ok(OpResult::Done)
            }
            Op::Rename {
                from,
                to,
                is_dir,
                keep_overwritten,
            } => Ok(
                if rename_if_matching(root, from, to, *is_dir, *keep_overwritten)? {
                    OpResult::Done
                } else {
                    OpResult::NotApplied
                },
            ),
        }
    }

    /// Removes a directory at `path` (a file or symlink is about to replace it).
    fn clear_dir(&mut self, path: &Path) -> Result<Option<OpResult>, BeneathError> {
        match self.ex.root.stat(path)? {
            Some(st) if st.kind == EntryKind::Dir => self.delete(path),
            _ => Ok(None),
        }
    }

    /// Deletes `path` (tree and all) within the budget; `Some` when the budget stops it.
    fn delete(&mut self, path: &Path) -> Result<Option<OpResult>, BeneathError> {
        let root = &self.ex.root;
        if let Some(left) = self.left {
            let needed = root.count_tree(path)?;
            if needed > left {
                return Ok(Some(OpResult::OverMaxDelete { needed }));
            }
        }
        let removed = root.remove_tree(path)?;
        self.applied.deleted += removed;
        if let Some(left) = self.left.as_mut() {
            *left = left.saturating_sub(removed);
        }
        Ok(None)
    }
}

fn rename_to(op: &Op) -> Option<&Path> {
    match op {
        Op::Rename { to, .. } => Some(to),
        _ => None,
    }
}

fn failed(e: BeneathError) -> OpResult {
    let (path, diverged) = match &e {
        BeneathError::Symlink { path, at } | BeneathError::NotADirectory { path, at } => {
            (path.clone(), Some(at.clone()))
        }
        BeneathError::InvalidPath { path, .. } | BeneathError::Io { path, .. } => {
            (path.clone(), None)
        }
    };
    let message = match &e {
        BeneathError::Io { source, .. } => format!("{e}: {source}"),
        _ => e.to_string(),
    };
    OpResult::Failed {
        path,
        message,
        diverged,
    }
}

/// True for wsync's own entries at the top of a target, which no op touches: the marker, the
/// trash (and what is in it), flush cookies (what rsync's fixed excludes keep).
pub fn is_wsyncs_own(rel: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Some(first) = rel.iter().next() else {
        return false;
    };
    let first = first.as_bytes();
    first == crate::target::MARKER_FILE.as_bytes()
        || first == crate::trash::TRASH_DIR.as_bytes()
        || first.starts_with(crate::rsync::COOKIE_PREFIX.as_bytes())
}

/// Renames `from` to `to` beneath `root` if the target looks as the source did before the
/// rename: `from` exists with the same type (directory or not), and `to` is absent or a regular
/// file replaced by a file, as `rename(2)` did at the source — never into a directory or over
/// a symlink, and with `keep_overwritten` (the trash is on) never over a file at all. Returns
/// whether it renamed.
pub fn rename_if_matching(
    root: &TargetRoot,
    from: &Path,
    to: &Path,
    is_dir: bool,
    keep_overwritten: bool,
) -> Result<bool, BeneathError> {
    let Some(source) = root.stat(from)? else {
        return Ok(false);
    };
    if (source.kind == EntryKind::Dir) != is_dir {
        return Ok(false);
    }
    let applies = match root.stat(to)? {
        None => true,
        Some(existing) => existing.kind == EntryKind::File && !is_dir && !keep_overwritten,
    };
    if applies {
        root.rename(from, to)?;
    }
    Ok(applies)
}

#[cfg(test)]
pub(crate) mod tests;
