//! A batch's small changes applied in-process to a local target, without an rsync process:
//! which paths may go through [`wsync_core::executor`], the ops they become (planned from the
//! source with `lstat`, never following a symlink: a link is copied as a link, as `rsync -a`
//! does), and the rest of the batch, left to rsync in the same batch.
//!
//! What goes this way: regular files of at most [`PUT_MAX_DEFAULT`] with one link, symlinks,
//! and — only while the workspace has no exclude or protect rule at all (its rsync rules file
//! is empty) — deletions (unless the batch is mostly deletions, or has
//! `queue::DELETE_BURST_MIN` of them: an `rm -rf` under way keeps rsync's path) and listed
//! directories (walked whole: created, filled, pruned of what
//! the source no longer has, their attributes set last). Everything else is left to rsync:
//! larger files (delta transfer), hard-linked files (rsync links their names), special files,
//! deletions and directories while any rule exists (rsync's protect rules decide what a
//! deletion keeps), a directory holding anything the executor leaves to rsync, and any path
//! whose op failed (a symlinked parent directory on the target among them: rsync replaces
//! it). The implied parent directories of what was written get their attributes from the
//! source, as rsync's `--relative` implied directories do. The caller decides when a whole
//! batch stays with rsync (an SSH target, the trash on, growing files, a dry run first).

use std::path::{Path, PathBuf};
use std::time::Instant;

use wsync_core::executor::{
    is_wsyncs_own, ContentSource, Executor, Limits, Meta, Op, OpResult, OpenError, SourceError,
    PUT_MAX_DEFAULT,
};
use wsync_core::rsync::{ExitClass, RsyncStats};

use super::Outcome;

/// The most entries a listed directory may hold to be walked here; a larger one goes to rsync.
const DIR_WALK_MAX: usize = 10_000;

/// What the in-process pass did.
pub enum Pass {
    /// The batch must stop with this outcome (the target is not ours, or the deletion budget
    /// ran out).
    Stop(Outcome),
    /// The pass's outcome (to merge into the batch's) and the paths left to rsync.
    Done {
        outcome: Outcome,
        rest: Vec<PathBuf>,
    },
}

/// The planned ops, and for each the batch path it serves.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub(super) ops: Vec<Op>,
    pub(super) serves: Vec<PathBuf>,
    /// Batch paths left to rsync from the start.
    pub(super) rest: Vec<PathBuf>,
}

/// Plans `paths` (collapsed: none below another) against the source `root`. `rules`: the
/// workspace has exclude or protect rules. `wire`: the ops go to an SSH agent as JSON, so a
/// path (or symlink destination) that is not UTF-8 is left to rsync.
pub(super) fn plan(root: &Path, paths: Vec<PathBuf>, rules: bool, wire: bool) -> Plan {
    let mut plan = Plan::default();
    let mut written: Vec<PathBuf> = Vec::new();
    // A batch that is mostly deletions (`rm -rf` under way) keeps rsync's path and timing:
    // rsync deletes nothing when the sender met an I/O error (a parent directory gone too),
    // which is part of what keeps a source root deleted mid-batch from deleting remotely.
    let missing = paths
        .iter()
        .filter(|p| std::fs::symlink_metadata(root.join(p)).is_err())
        .count();
    let deletes =
        !rules && (missing as u64) < crate::queue::DELETE_BURST_MIN && missing * 2 <= paths.len();
    for path in paths {
        if path.as_os_str().is_empty() {
            plan.rest.push(path);
            continue;
        }
        if is_wsyncs_own(&path) {
            // rsync's fixed excludes keep these: nothing to do for them.
            continue;
        }
        let mut ops = Vec::new();
        if plan_path(root, &path, rules, deletes, &mut ops).is_none()
            || (wire && !ops.iter().all(fits_the_wire))
        {
            plan.rest.push(path);
            continue;
        }
        written.push(path.clone());
        plan.serves.extend(std::iter::repeat_n(path, ops.len()));
        plan.ops.append(&mut ops);
    }
    // Implied directories, deepest first, then the target itself: their mtimes changed as
    // entries were written into them.
    let mut implied: Vec<PathBuf> = written
        .iter()
        .flat_map(|p| p.ancestors().skip(1).map(Path::to_path_buf))
        .collect();
    implied.sort_by(|a, b| {
        b.components()
            .count()
            .cmp(&a.components().count())
            .then(a.cmp(b))
    });
    implied.dedup();
    for dir in implied {
        if let Ok(meta) = std::fs::symlink_metadata(root.join(&dir)) {
            if meta.is_dir() {
                plan.serves.push(dir.clone());
                plan.ops.push(Op::SetMeta {
                    path: dir,
                    meta: Meta::of(&meta),
                });
            }
        }
    }
    plan
}

/// True when `op` serializes as the agent protocol's JSON: its paths are UTF-8.
fn fits_the_wire(op: &Op) -> bool {
    let utf8 = |p: &Path| p.to_str().is_some();
    match op {
        Op::Symlink { path, dest, .. } => utf8(path) && utf8(dest),
        Op::Rename { from, to, .. } => utf8(from) && utf8(to),
        other => utf8(other.path()),
    }
}

/// The ops for one batch path; `None` when it is left to rsync. `deletes`: a missing path may
/// be removed here.
fn plan_path(
    root: &Path,
    path: &Path,
    rules: bool,
    deletes: bool,
    ops: &mut Vec<Op>,
) -> Option<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(root.join(path)) {
        Ok(meta) => meta,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            if rules || !deletes {
                return None;
            }
            ops.push(Op::Remove {
                path: path.to_path_buf(),
            });
            return Some(());
        }
        Err(_) => return None,
    };
    let kind = meta.file_type();
    if kind.is_file() {
        if meta.nlink() > 1 || meta.len() > PUT_MAX_DEFAULT {
            return None;
        }
        ops.push(Op::Put {
            path: path.to_path_buf(),
        });
    } else if kind.is_symlink() {
        let dest = std::fs::read_link(root.join(path)).ok()?;
        ops.push(Op::Symlink {
            path: path.to_path_buf(),
            dest,
            meta: Meta::of(&meta),
        });
    } else if kind.is_dir() && !rules {
        let mut budget = DIR_WALK_MAX;
        walk_dir(root, path, &meta, &mut budget, ops)?;
    } else {
        return None;
    }
    Some(())
}

/// A listed directory, whole: created, its entries, what the target has beyond them pruned,
/// its attributes last.
fn walk_dir(
    root: &Path,
    dir: &Path,
    meta: &std::fs::Metadata,
    budget: &mut usize,
    ops: &mut Vec<Op>,
) -> Option<()> {
    ops.push(Op::Mkdir {
        path: dir.to_path_buf(),
    });
    let mut names: Vec<_> = std::fs::read_dir(root.join(dir))
        .ok()?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .ok()?;
    names.sort();
    for name in &names {
        *budget = budget.checked_sub(1)?;
        let path = dir.join(name);
        let entry = std::fs::symlink_metadata(root.join(&path)).ok()?;
        if entry.is_dir() {
            walk_dir(root, &path, &entry, budget, ops)?;
        } else {
            plan_path(root, &path, false, false, ops)?;
        }
    }
    ops.push(Op::PruneDir {
        path: dir.to_path_buf(),
        keep: names,
    });
    ops.push(Op::SetMeta {
        path: dir.to_path_buf(),
        meta: Meta::of(meta),
    });
    Some(())
}

/// Reads files of the workspace for puts: opened `O_NOFOLLOW`, checked on the descriptor.
pub(super) struct Workspace<'a> {
    pub(super) root: &'a Path,
}

impl ContentSource for Workspace<'_> {
    fn read(&mut self, path: &Path, max: u64) -> Result<(Vec<u8>, Meta), SourceError> {
        use std::io::Read;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags())
            .open(self.root.join(path));
        let file = match file {
            Ok(file) => file,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(SourceError::Vanished)
            }
            Err(e) => return Err(SourceError::Io(e)),
        };
        let meta = file.metadata().map_err(SourceError::Io)?;
        if !meta.is_file() || meta.nlink() > 1 || meta.len() > max {
            return Err(SourceError::Unsuitable(
                "no longer a small regular file with one link".into(),
            ));
        }
        let mut content = Vec::with_capacity(meta.len() as usize);
        file.take(max + 1)
            .read_to_end(&mut content)
            .map_err(SourceError::Io)?;
        if content.len() as u64 > max {
            return Err(SourceError::Unsuitable("grew past the put limit".into()));
        }
        Ok((content, Meta::of(&meta)))
    }
}

/// `O_NOFOLLOW | O_NONBLOCK`: a symlink swapped in is not followed, a FIFO does not block.
fn libc_flags() -> i32 {
    (nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits()
}

/// Applies what of `paths` the executor can to the local `target` (marker `workspace_id`),
/// on the calling thread (run it off the event loop). `rules`: the workspace has exclude or
/// protect rules; `max_delete`: what is left of the deletion budget.
pub fn apply(
    root: &Path,
    target: &Path,
    workspace_id: &str,
    paths: Vec<PathBuf>,
    rules: bool,
    max_delete: Option<u64>,
    not_ours: impl FnOnce() -> String,
) -> Pass {
    let started = Instant::now();
    let plan = plan(root, paths, rules, false);
    if plan.ops.is_empty() {
        return Pass::Done {
            outcome: Outcome::success(RsyncStats::default(), started.elapsed()),
            rest: plan.rest,
        };
    }
    let executor = match Executor::open(target, workspace_id) {
        Ok(executor) => executor,
        Err(OpenError::NotOurs | OpenError::Beneath(_)) => {
            return Pass::Stop(Outcome::failed(ExitClass::Fatal, not_ours(), started))
        }
    };
    let limits = Limits {
        max_delete,
        put_max: PUT_MAX_DEFAULT,
    };
    let applied = executor.apply(&plan.ops, &mut Workspace { root }, limits);
    finish(plan, applied, max_delete, started)
}

/// What the executor's `applied` results for `plan` (wherever they ran) mean for the batch:
/// its outcome, and the paths left to rsync (a failed op's, and what it found diverged).
pub(super) fn finish(
    plan: Plan,
    applied: wsync_core::executor::Applied,
    max_delete: Option<u64>,
    started: Instant,
) -> Pass {
    let stats = RsyncStats {
        files_transferred: applied.written,
        files_deleted: applied.deleted,
        bytes_sent: applied.bytes,
        files_total: plan.ops.len() as u64,
    };
    let mut rest = plan.rest;
    let mut vanished = Vec::new();
    let mut over = None;
    for (result, path) in applied.results.iter().zip(&plan.serves) {
        match result {
            OpResult::Done | OpResult::NotApplied => {}
            OpResult::Vanished => vanished.push(path.clone()),
            OpResult::Unsuitable { why } => {
                tracing::debug!(path = %path.display(), "left to rsync: {why}");
                rest.push(path.clone());
            }
            OpResult::Failed {
                message, diverged, ..
            } => {
                tracing::debug!(path = %path.display(), "left to rsync: {message}");
                rest.push(path.clone());
                rest.extend(diverged.clone());
            }
            OpResult::OverMaxDelete { needed } => over = Some(*needed),
            OpResult::Skipped => {}
        }
    }
    let mut outcome = Outcome::success(stats, started.elapsed());
    if let Some(needed) = over {
        outcome.class = ExitClass::MaxDelete;
        outcome.error = Some(format!(
            "a deletion of {needed} entries would pass what is left of the deletion budget ({})",
            max_delete.unwrap_or(0)
        ));
        return Pass::Stop(outcome);
    }
    if !vanished.is_empty() {
        outcome.class = ExitClass::Vanished;
        outcome.vanished = Some(vanished);
    }
    // A failed put's path and the directory found diverged above it: rsync sends the directory.
    // The root itself (its attributes failed) is never listed to rsync, which sets them as an
    // implied directory of what it sends; collapsing with it would swallow every other path.
    let rest = crate::queue::collapse(rest.iter().filter(|p| !p.as_os_str().is_empty()));
    Pass::Done { outcome, rest }
}

#[cfg(test)]
mod tests;
