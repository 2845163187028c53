//! Recoverable deletions: a remote with `keep_deleted_days` > 0 keeps what a sync deletes or
//! overwrites there in `.wsync-trash/<snapshot>/` at the top of its target (rsync `--backup
//! --backup-dir`, see [`crate::rsync`]), one snapshot per batch that deleted or overwrote
//! something, named by its UTC start time (`2025-01-31T12-00-00.123Z`: sorts by time, no `:`).
//! The directory is excluded from every transfer at the root, so it is never sent from a
//! source that has one and never deleted by `--delete`; only the age-based prune removes
//! snapshots, by their names (older than the setting, in days).
//!
//! Here: the snapshot names, which snapshots a prune removes, and the parsing of rsync's
//! `--list-only` output into snapshots with their file counts and bytes. The argv that lists,
//! prunes and restores is built by [`crate::rsync::trash_argv`], for local and SSH targets alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The trash directory's name, at the top of a target.
pub const TRASH_DIR: &str = ".wsync-trash";

/// The descriptor number a batch's snapshot has in the rsync that backs up into it, on either
/// end: the monitor `dup2`s its close-on-exec descriptor to this number in the rsync child
/// only (local targets), the remote guard opens the snapshot on it (`exec 9<`, SSH targets);
/// rsync's `--backup-dir` is then [`CHILD_BACKUP_DIR`].
pub const CHILD_FD: i32 = 9;

/// rsync's `--backup-dir` for a snapshot it inherited as [`CHILD_FD`].
pub const CHILD_BACKUP_DIR: &str = "/proc/self/fd/9";

/// Why a local target's trash cannot take a batch's snapshot.
#[derive(Debug, thiserror::Error)]
pub enum LocalTrashError {
    /// `.wsync-trash` is a symlink or not a directory.
    #[error(".wsync-trash is a symlink or not a directory")]
    NotADirectory,
    /// `.wsync-trash` (or the snapshot) is a directory of another user.
    #[error(".wsync-trash belongs to uid {owner}, not to uid {us} that wsync runs as")]
    NotOurs { owner: u32, us: u32 },
    /// The target, or the trash below it, could not be opened or created.
    #[error("cannot open the trash")]
    Beneath(#[from] crate::beneath::BeneathError),
    /// A call on the opened trash failed.
    #[error("{op} in the trash")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The trash (or a snapshot) is ours but others may write it: not made by wsync.
    #[error("{TRASH_DIR} has mode {mode:o}: others may change it")]
    NotPrivate { mode: u32 },
    /// The snapshot named is not in the trash.
    #[error("no snapshot {name} in the trash")]
    NoSnapshot { name: String },
    /// `/proc/self/fd` does not show the opened snapshot (`/proc` not mounted).
    #[error("/proc/self/fd does not show the trash's descriptor (is /proc mounted?)")]
    NoProc,
}

impl LocalTrashError {
    /// The error for status and logs, naming the target and the fix.
    pub fn message(&self, target: &dyn std::fmt::Display) -> String {
        match self {
            Self::NotADirectory => not_a_directory_message(target),
            Self::NotOurs { owner, us } => format!(
                "remote target {target}: {TRASH_DIR} belongs to uid {owner}, not to uid {us} that wsync runs as (whoever owns it could redirect what a sync keeps there); nothing is written there until it is removed or given to uid {us}"
            ),
            Self::NotPrivate { mode } => format!(
                "remote target {target}: {TRASH_DIR} (or a snapshot in it) has mode {mode:o}, so others may have changed what it holds; wsync makes it 0700: check its contents, then `chmod -R go-rwx` it"
            ),
            other => {
                let mut message = format!("remote target {target}: {other}");
                let mut source = std::error::Error::source(other);
                while let Some(cause) = source {
                    message.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                message
            }
        }
    }
}

/// A batch's snapshot directory in the trash of a local target, created and held open for
/// the batch. rsync is handed it as `/proc/self/fd/N` ([`LocalSnapshot::backup_dir`]), a
/// descriptor it inherits: the kernel resolves that magic link to the directory opened here,
/// so renaming `.wsync-trash` away and planting a symlink in its place while rsync runs
/// redirects nothing (a `--backup-dir` by name is resolved again for every file).
///
/// The trash and the snapshot are made private (owned by the user wsync runs as, mode
/// 0700) and checked on their descriptors, never by name:
/// - nobody else can create, rename or replace anything inside them, so the subdirectories
///   rsync creates in the snapshot cannot be swapped for links either;
/// - nobody else can move them out of the target: Linux lets a directory change its parent
///   only for a caller who may write the directory itself (its `..` changes). Another user
///   who may write the target's top directory can only rename `.wsync-trash` beside it,
///   still inside the target (that batch's backups follow the directory; the next batch
///   creates a new trash).
///
/// A `.wsync-trash` that is a symlink, not a directory or another user's is refused.
#[derive(Debug)]
pub struct LocalSnapshot {
    root: crate::beneath::TargetRoot,
    trash: std::fs::File,
    dir: std::fs::File,
    name: String,
}

impl LocalSnapshot {
    /// Opens (or creates) the trash of the local `target` and creates the snapshot `name`
    /// in it (see [`snapshot_name`]).
    pub fn create(target: &std::path::Path, name: &str) -> Result<Self, LocalTrashError> {
        use crate::beneath::{BeneathError, TargetRoot};
        let root = TargetRoot::open(target)?;
        let rel = std::path::Path::new(TRASH_DIR);
        let trash = match root.open_dir(rel) {
            Ok(dir) => dir,
            Err(e) if e.is_not_found() => {
                match root.mkdir(rel) {
                    Ok(()) => {}
                    Err(BeneathError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e.into()),
                }
                root.open_dir(rel)?
            }
            Err(BeneathError::Symlink { .. } | BeneathError::NotADirectory { .. }) => {
                return Err(LocalTrashError::NotADirectory)
            }
            Err(e) => return Err(e.into()),
        };
        make_private(&trash)?;
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o700);
        match nix::sys::stat::mkdirat(&trash, name, mode) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(errno) => return Err(io("mkdir", errno)),
        }
        let flags = nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC;
        let dir = nix::fcntl::openat(&trash, name, flags, nix::sys::stat::Mode::empty())
            .map(std::fs::File::from)
            .map_err(|errno| match errno {
                nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
                    LocalTrashError::NotADirectory
                }
                errno => io("open", errno),
            })?;
        make_private(&dir)?;
        let snapshot = Self {
            root,
            trash,
            dir,
            name: name.to_owned(),
        };
        // The path rsync gets must lead to this very directory.
        use std::os::unix::fs::MetadataExt;
        let shown = std::fs::metadata(snapshot.held_path()).ok();
        let held = snapshot
            .dir
            .metadata()
            .map_err(|source| LocalTrashError::Io { op: "stat", source })?;
        if shown.is_none_or(|m| (m.dev(), m.ino()) != (held.dev(), held.ino())) {
            return Err(LocalTrashError::NoProc);
        }
        Ok(snapshot)
    }

    /// rsync's `--backup-dir`: the snapshot's descriptor as seen by a process that inherited
    /// it as [`CHILD_FD`] ([`LocalSnapshot::descriptor`]).
    pub fn backup_dir(&self) -> &'static str {
        CHILD_BACKUP_DIR
    }

    /// The snapshot as this process reaches it through its own descriptor.
    pub fn held_path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!("/proc/self/fd/{}", self.dir.as_raw_fd())
    }

    /// The descriptor rsync must inherit, as [`CHILD_FD`]: it is close-on-exec here, and the
    /// spawn `dup2`s it in the child only, so no other child gets it.
    pub fn descriptor(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.dir.as_fd()
    }
}

impl Drop for LocalSnapshot {
    /// A snapshot nothing was kept in is removed, and then an empty trash (anything holding
    /// a file stays): a target gets a trash only once a sync keeps something.
    fn drop(&mut self) {
        let removed = nix::unistd::unlinkat(
            &self.trash,
            self.name.as_str(),
            nix::unistd::UnlinkatFlags::RemoveDir,
        );
        // By name, so only as a directory: the trash held may have been renamed away since and
        // a symlink planted under its name, which `remove` would have deleted.
        if removed.is_ok() {
            let _ = self.root.rmdir(std::path::Path::new(TRASH_DIR));
        }
    }
}

/// A local target's trash opened for `wsync trash list|restore`: `.wsync-trash` opened beneath
/// the target's handle (never through a symlink), checked on its descriptor to be a private
/// directory of ours (owner and mode 0700, as every sync leaves it), and each snapshot opened
/// by descriptor below it the same way. Nothing is read by name after the check, so a trash or
/// snapshot swapped for a link (or another user's directory) lists and restores nothing from
/// elsewhere.
#[derive(Debug)]
pub struct LocalTrash {
    trash: std::fs::File,
}

impl LocalTrash {
    /// The trash of the local `target`; `None` when it has none.
    pub fn open(target: &std::path::Path) -> Result<Option<Self>, LocalTrashError> {
        use crate::beneath::{BeneathError, TargetRoot};
        let root = TargetRoot::open(target)?;
        let trash = match root.open_dir(std::path::Path::new(TRASH_DIR)) {
            Ok(dir) => dir,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(BeneathError::Symlink { .. } | BeneathError::NotADirectory { .. }) => {
                return Err(LocalTrashError::NotADirectory)
            }
            Err(e) => return Err(e.into()),
        };
        check_private(&trash)?;
        Ok(Some(Self { trash }))
    }

    /// The snapshots (entries named like one, see [`snapshot_time`]), oldest first, each
    /// with the files below it and their bytes.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, LocalTrashError> {
        use std::os::fd::AsFd;
        let here = std::path::Path::new(TRASH_DIR);
        let mut names: Vec<String> = crate::beneath::list_fd(self.trash.as_fd(), here)?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| snapshot_time(n).is_some())
            .collect();
        names.sort();
        let mut snapshots = Vec::new();
        for name in names {
            let dir = self.open_snapshot(&name)?;
            let (files, bytes) = crate::beneath::files_below(dir.as_fd(), &here.join(&name))?;
            snapshots.push(Snapshot { name, files, bytes });
        }
        Ok(snapshots)
    }

    /// The snapshot `name`, opened `O_NOFOLLOW | O_DIRECTORY` relative to the trash and
    /// checked like it: what a restore reads, handed to rsync as `/proc/self/fd/N`.
    pub fn open_snapshot(&self, name: &str) -> Result<std::fs::File, LocalTrashError> {
        let flags = nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC;
        let dir = nix::fcntl::openat(&self.trash, name, flags, nix::sys::stat::Mode::empty())
            .map(std::fs::File::from)
            .map_err(|errno| match errno {
                nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
                    LocalTrashError::NotADirectory
                }
                nix::errno::Errno::ENOENT => LocalTrashError::NoSnapshot {
                    name: name.to_owned(),
                },
                errno => io("open", errno),
            })?;
        check_private(&dir)?;
        Ok(dir)
    }

    /// The snapshot `name` ([`LocalTrash::open_snapshot`]) on a descriptor a child process
    /// inherits (not close-on-exec), for a single-threaded caller that spawns one rsync.
    pub fn hold_snapshot(&self, name: &str) -> Result<HeldSnapshot, LocalTrashError> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.open_snapshot(name)?;
        let fd = nix::unistd::dup(&dir).map_err(|errno| io("dup", errno))?;
        let held = HeldSnapshot { fd };
        // The path rsync gets must lead to this very directory.
        let shown = std::fs::metadata(held.path()).ok();
        let meta = dir
            .metadata()
            .map_err(|source| LocalTrashError::Io { op: "stat", source })?;
        if shown.is_none_or(|m| (m.dev(), m.ino()) != (meta.dev(), meta.ino())) {
            return Err(LocalTrashError::NoProc);
        }
        Ok(held)
    }
}

/// A snapshot held open for a child process, which reaches it as [`HeldSnapshot::path`].
#[derive(Debug)]
pub struct HeldSnapshot {
    fd: std::os::fd::OwnedFd,
}

impl HeldSnapshot {
    /// `/proc/self/fd/N`: the snapshot, in this process and in a child that inherited it.
    pub fn path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }
}

/// The opened directory `dir` must be ours and private (mode 0700 or stricter).
fn check_private(dir: &std::fs::File) -> Result<(), LocalTrashError> {
    let mode = ours_mode(dir)?;
    if mode & 0o077 != 0 {
        return Err(LocalTrashError::NotPrivate {
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// The opened directory `dir` must be ours; its group and others lose every permission.
fn make_private(dir: &std::fs::File) -> Result<(), LocalTrashError> {
    if ours_mode(dir)? & 0o077 != 0 {
        nix::sys::stat::fchmod(dir, nix::sys::stat::Mode::from_bits_truncate(0o700))
            .map_err(|errno| io("chmod", errno))?;
    }
    Ok(())
}

/// The mode of the opened directory `dir`, which must be owned by this process's user.
fn ours_mode(dir: &std::fs::File) -> Result<u32, LocalTrashError> {
    use std::os::unix::fs::MetadataExt;
    let meta = dir
        .metadata()
        .map_err(|source| LocalTrashError::Io { op: "stat", source })?;
    let us = nix::unistd::geteuid().as_raw();
    if meta.uid() != us {
        return Err(LocalTrashError::NotOurs {
            owner: meta.uid(),
            us,
        });
    }
    Ok(meta.mode())
}

fn io(op: &'static str, errno: nix::errno::Errno) -> LocalTrashError {
    LocalTrashError::Io {
        op,
        source: std::io::Error::from(errno),
    }
}

/// Removes the snapshots of the local `target`'s trash older than `keep_days` (see
/// [`expired`]), in process: listed and removed by descriptor beneath the target, never
/// through a symlink, so a `.wsync-trash` replaced by a link to another directory makes the
/// prune fail, not delete there. Returns the snapshots removed and those kept.
pub fn prune_local(
    target: &std::path::Path,
    now: SystemTime,
    keep_days: u32,
) -> Result<(usize, usize), crate::beneath::BeneathError> {
    let root = crate::beneath::TargetRoot::open(target)?;
    let trash = std::path::Path::new(TRASH_DIR);
    let names: Vec<String> = match root.list_dir(trash) {
        Ok(names) => names
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect(),
        Err(e) if e.is_not_found() => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let old = expired(&names, now, keep_days);
    for name in &old {
        root.remove_tree(&trash.join(name))?;
    }
    Ok((old.len(), names.len() - old.len()))
}

/// The error for a target whose trash is a symlink or not a directory.
pub fn not_a_directory_message(target: &dyn std::fmt::Display) -> String {
    format!(
        "remote target {target}: {TRASH_DIR} is a symlink or not a directory (planted by someone who can write the target?); nothing is written there until it is removed or replaced by a directory"
    )
}

/// The error for an SSH target whose guard could not hold a batch's snapshot as ours.
pub fn snapshot_unsafe_message(target: &dyn std::fmt::Display) -> String {
    format!(
        "remote target {target}: the trash snapshot could not be created, or {TRASH_DIR} (or the snapshot) is not a directory of the remote user beneath the target (planted by someone who can write the target?); nothing is written there until {TRASH_DIR} is removed or given to the remote user"
    )
}

/// The largest `keep_deleted_days` accepted (ten years).
pub const MAX_KEEP_DELETED_DAYS: u32 = 3650;

const DAY: Duration = Duration::from_secs(86_400);

/// The snapshot name for a batch started at `at`: `YYYY-MM-DDTHH-MM-SS.mmmZ`, UTC. Milliseconds,
/// because two batches within one second must not share a snapshot: rsync would replace the
/// first one's copy of a file overwritten twice with the second one's.
pub fn snapshot_name(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rest = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}-{:02}-{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The time a snapshot name stands for; `None` for anything that is not exactly a snapshot
/// name (such entries are never pruned, listed or restored from).
pub fn snapshot_time(name: &str) -> Option<SystemTime> {
    let b = name.as_bytes();
    // 0123456789012345678901234
    // 2025-01-31T12-00-00.123Z
    if b.len() != 24 {
        return None;
    }
    let layout_ok = b.iter().enumerate().all(|(i, &c)| match i {
        4 | 7 | 13 | 16 => c == b'-',
        10 => c == b'T',
        19 => c == b'.',
        23 => c == b'Z',
        _ => c.is_ascii_digit(),
    });
    if !layout_ok {
        return None;
    }
    let num = |r: std::ops::Range<usize>| name[r].parse::<u32>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = u64::try_from(days).ok()? * 86_400
        + u64::from(hour) * 3600
        + u64::from(min) * 60
        + u64::from(sec);
    let at = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(u64::from(ms));
    // A day that does not exist (Feb 30) does not round-trip.
    (snapshot_name(at) == name).then_some(at)
}

/// The `--backup-dir` for a snapshot, relative to the target directory.
pub fn backup_dir(snapshot: &str) -> String {
    format!("{TRASH_DIR}/{snapshot}")
}

/// The snapshots among `names` that a prune at `now` removes: those whose name is a snapshot
/// name older than `keep_days` days. Nothing when `keep_days` is 0 (the trash is off: what is
/// there was kept by an earlier setting, and is left for the user).
pub fn expired(names: &[String], now: SystemTime, keep_days: u32) -> Vec<&str> {
    if keep_days == 0 {
        return Vec::new();
    }
    let Some(cutoff) = now.checked_sub(DAY * keep_days) else {
        return Vec::new();
    };
    names
        .iter()
        .filter(|n| snapshot_time(n).is_some_and(|at| at < cutoff))
        .map(String::as_str)
        .collect()
}

/// One snapshot in a trash directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub name: String,
    /// Regular files and symlinks below it.
    pub files: u64,
    /// Their sizes added up.
    pub bytes: u64,
}

/// Parses `rsync --list-only --no-human-readable` output of a target filtered to its trash
/// (see [`crate::rsync::TrashOp::List`]): one [`Snapshot`] per snapshot directory, oldest
/// first. Lines look like `-rw-r--r--   1234 2025/01/31 12:00:00 .wsync-trash/<name>/path`.
pub fn parse_list(output: &str) -> Vec<Snapshot> {
    let mut snapshots: std::collections::BTreeMap<String, Snapshot> = Default::default();
    for line in output.lines() {
        let mut parts = line.split_whitespace();
        let (Some(perms), Some(size)) = (parts.next(), parts.next()) else {
            continue;
        };
        // perms, size, date, time, then the name (which may hold spaces).
        let Some(name) = name_after_fields(line, 4) else {
            continue;
        };
        let Some(rest) = name
            .strip_prefix(TRASH_DIR)
            .and_then(|r| r.strip_prefix('/'))
        else {
            continue;
        };
        let (snapshot, below) = rest.split_once('/').unwrap_or((rest, ""));
        if snapshot_time(snapshot).is_none() {
            continue;
        }
        let entry = snapshots
            .entry(snapshot.to_owned())
            .or_insert_with(|| Snapshot {
                name: snapshot.to_owned(),
                ..Snapshot::default()
            });
        if !below.is_empty() && !perms.starts_with('d') {
            entry.files += 1;
            entry.bytes += size.parse::<u64>().unwrap_or(0);
        }
    }
    snapshots.into_values().collect()
}

/// The text after the first `n` whitespace-separated fields of `line`.
fn name_after_fields(line: &str, n: usize) -> Option<&str> {
    let mut rest = line;
    for _ in 0..n {
        rest = rest.trim_start();
        let end = rest.find(' ')?;
        rest = &rest[end..];
    }
    // One space after the time; the name is the rest, as rsync printed it.
    rest.strip_prefix(' ')
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01 (the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn snapshot_names_are_utc_sortable_and_round_trip() {
        let at = UNIX_EPOCH + Duration::from_millis(1_738_324_800_123);
        assert_eq!(snapshot_name(at), "2025-01-31T12-00-00.123Z");
        assert_eq!(snapshot_time("2025-01-31T12-00-00.123Z"), Some(at));
        assert_eq!(snapshot_name(UNIX_EPOCH), "1970-01-01T00-00-00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(snapshot_name(leap), "2000-02-29T00-00-00.000Z");
        let (a, b) = (
            snapshot_name(at),
            snapshot_name(at + Duration::from_millis(1)),
        );
        assert!(a < b);
        for bad in [
            "2025-02-30T12-00-00.000Z",
            "2025-01-31T24-00-00.000Z",
            "2025-01-31T12-00-00Z",
            "../2025-01-31T12-00-00",
            "2025-01-31T12:00:00.000Z",
            "x025-01-31T12-00-00.000Z",
            "",
        ] {
            assert_eq!(snapshot_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_snapshots_older_than_the_setting_expire() {
        let now = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400);
        let names: Vec<String> = [
            snapshot_name(now - DAY * 8),
            snapshot_name(now - DAY * 7 + Duration::from_secs(60)),
            snapshot_name(now),
            "notes".to_owned(),
            "1999-01-01".to_owned(),
        ]
        .into();
        assert_eq!(expired(&names, now, 7), vec![names[0].as_str()]);
        assert_eq!(expired(&names, now, 0), Vec::<&str>::new());
        assert_eq!(expired(&names, now, 1).len(), 2);
    }

    #[test]
    fn parses_rsync_list_output_into_snapshots() {
        let out = "\
drwxr-xr-x           4096 2025/01/31 12:00:00 .wsync-trash
drwxr-xr-x           4096 2025/01/31 12:00:00 .wsync-trash/2025-01-31T12-00-00.123Z
-rw-r--r--             10 2025/01/31 12:00:00 .wsync-trash/2025-01-31T12-00-00.123Z/a b
drwxr-xr-x           4096 2025/01/31 12:00:00 .wsync-trash/2025-01-31T12-00-00.123Z/d
-rw-r--r--           1000 2025/01/31 12:00:00 .wsync-trash/2025-01-31T12-00-00.123Z/d/x
drwxr-xr-x           4096 2025/01/30 12:00:00 .wsync-trash/2025-01-30T12-00-00.000Z
drwxr-xr-x           4096 2025/01/30 12:00:00 .wsync-trash/stray
-rw-r--r--              1 2025/01/30 12:00:00 .wsync-trash/stray/f
";
        assert_eq!(
            parse_list(out),
            vec![
                Snapshot {
                    name: "2025-01-30T12-00-00.000Z".into(),
                    files: 0,
                    bytes: 0
                },
                Snapshot {
                    name: "2025-01-31T12-00-00.123Z".into(),
                    files: 2,
                    bytes: 1010
                },
            ]
        );
    }

    #[test]
    fn a_local_snapshot_is_private_held_open_and_removed_when_nothing_was_kept() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path();
        let name = "2025-01-31T12-00-00.123Z";
        let snapshot = LocalSnapshot::create(target, name).unwrap();
        let trash = target.join(TRASH_DIR);
        for dir in [trash.clone(), trash.join(name)] {
            let meta = std::fs::symlink_metadata(&dir).unwrap();
            assert!(meta.is_dir());
            assert_eq!(meta.mode() & 0o777, 0o700, "{}", dir.display());
            assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        }
        // The trash renamed away and a link planted: the descriptor still leads to the
        // snapshot made, never through the link.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::rename(&trash, target.join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &trash).unwrap();
        std::fs::write(Path::new(&snapshot.held_path()).join("kept"), "k").unwrap();
        assert!(target.join("moved").join(name).join("kept").exists());
        assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
        drop(snapshot);
        assert!(
            target.join("moved").join(name).join("kept").exists(),
            "kept stays"
        );
        // A symlink is refused; an empty snapshot and trash are removed when let go.
        assert!(matches!(
            LocalSnapshot::create(target, name),
            Err(LocalTrashError::NotADirectory)
        ));
        std::fs::remove_file(&trash).unwrap();
        std::fs::create_dir(&trash).unwrap();
        std::fs::set_permissions(&trash, std::fs::Permissions::from_mode(0o777)).unwrap();
        let empty = LocalSnapshot::create(target, name).unwrap();
        let meta = std::fs::metadata(&trash).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700, "made private");
        drop(empty);
        assert!(!trash.exists(), "an empty trash is removed");
        if nix::unistd::geteuid().is_root() {
            std::fs::create_dir(&trash).unwrap();
            std::os::unix::fs::lchown(&trash, Some(65534), Some(65534)).unwrap();
            assert!(matches!(
                LocalSnapshot::create(target, name),
                Err(LocalTrashError::NotOurs { owner: 65534, .. })
            ));
        }
    }

    /// An empty snapshot let go after its trash was renamed away and a symlink planted under
    /// the trash's name: the snapshot goes, the planted link stays (the e2e swap test found
    /// the link deleted by name, then a fresh trash made in its place).
    #[test]
    fn letting_go_of_an_empty_snapshot_leaves_a_link_planted_under_the_trash_name() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path();
        let name = "2025-01-31T12-00-00.123Z";
        let snapshot = LocalSnapshot::create(target, name).unwrap();
        let trash = target.join(TRASH_DIR);
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::rename(&trash, target.join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &trash).unwrap();
        drop(snapshot);
        assert!(
            !target.join("moved").join(name).exists(),
            "the empty snapshot goes"
        );
        assert!(
            std::fs::symlink_metadata(&trash).is_ok_and(|m| m.file_type().is_symlink()),
            "the planted link was removed"
        );
    }

    #[test]
    fn a_local_prune_removes_only_expired_snapshots_and_never_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let (target, outside) = (tmp.path().join("t"), tmp.path().join("outside"));
        let now = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400);
        let (old, new) = (snapshot_name(now - DAY * 8), snapshot_name(now));
        for name in [&old, &new] {
            std::fs::create_dir_all(target.join(TRASH_DIR).join(name).join("d")).unwrap();
            std::fs::write(target.join(TRASH_DIR).join(name).join("d/f"), "x").unwrap();
        }
        assert_eq!(prune_local(&target, now, 7).unwrap(), (1, 1));
        assert!(!target.join(TRASH_DIR).join(&old).exists());
        assert!(target.join(TRASH_DIR).join(&new).exists());
        std::fs::create_dir_all(outside.join(&old)).unwrap();
        std::fs::rename(target.join(TRASH_DIR), tmp.path().join("aside")).unwrap();
        std::os::unix::fs::symlink(&outside, target.join(TRASH_DIR)).unwrap();
        assert!(prune_local(&target, now, 7).is_err());
        assert!(
            outside.join(&old).exists(),
            "nothing removed through the link"
        );
    }
}
