//! What wsync keeps for itself is ours: the socket (runtime) directory, the log directory and
//! its files, the registry and the config. Each is checked with `lstat`/`fstat` before use —
//! no symbolic link, owned by the user wsync runs as, not writable by anyone else — because a
//! daemon run as root in a directory another user can write would otherwise append to, chmod or
//! read whatever that user links there. Directories are created 0700, log files 0600, both
//! opened with `O_NOFOLLOW`; and [`write_atomic`] is the one way a file is replaced (a temp
//! file with a unique name, created `O_EXCL` in the same directory, then renamed).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::libc;

/// Why a directory or file wsync keeps for itself was refused. `what` names it ("log
/// directory"), `setting` the config key that chooses it (the fix is to point it elsewhere).
#[derive(Debug, thiserror::Error)]
pub enum OwnedError {
    #[error("{what} {} is a symbolic link; wsync never follows a link to its own files: set {setting} to a real directory", path.display())]
    Symlink {
        what: &'static str,
        setting: &'static str,
        path: PathBuf,
    },
    #[error("{what} {} exists and is not a directory; move it away or set {setting} to another path", path.display())]
    NotADirectory {
        what: &'static str,
        setting: &'static str,
        path: PathBuf,
    },
    #[error("{what} {} is owned by uid {owner}, not by uid {me} that runs wsync, so its owner could read or replace what wsync keeps there: set {setting} to a directory of your own, or `chown {me} {}` if it is yours", path.display(), path.display())]
    NotOwned {
        what: &'static str,
        setting: &'static str,
        path: PathBuf,
        owner: u32,
        me: u32,
    },
    #[error("{what} {} is writable by other users (mode {mode:o}), who could plant links there: set {setting} to a private directory, e.g. under ~/.wsync, or `chmod 700 {}`", path.display(), path.display())]
    Writable {
        what: &'static str,
        setting: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error("cannot create or open {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The uid wsync runs as (the effective one: what the kernel checks).
pub fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether a file owned by `uid` may configure wsync: ours, or root's (root can change anything
/// of ours anyway).
pub fn trusted_owner(uid: u32) -> bool {
    uid == my_uid() || uid == 0
}

/// What [`ensure_private_dir`] found (for the caller to log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateDir {
    /// Created now, or already 0700 (or stricter).
    Private,
    /// It had mode `was`; now 0700.
    Tightened { was: u32 },
    /// Readable (not writable) by others with mode `mode`, and not ours to tighten: nobody can
    /// plant anything, and what wsync creates inside is private by itself (0600 files).
    Readable { mode: u32 },
}

/// Whether `mode` lets the group or others write.
pub fn writable_by_others(mode: u32) -> bool {
    mode & 0o022 != 0
}

/// Makes `dir` a private directory of ours: created 0700 (with any missing parents) when
/// missing; refused when it is a symbolic link (never chmodded through), not a directory, owned
/// by someone else, or writable by others and not ours to tighten. An existing directory wsync
/// made or that is named for it (its own or its parent's name contains "wsync", like
/// `~/.wsync/log` or `$XDG_RUNTIME_DIR/wsync`) is tightened to 0700; tightening `/tmp` or
/// `/var/log` would break the system, so a shared directory like that is refused instead. Every
/// check and the chmod go through one `O_NOFOLLOW` descriptor, so a swap between them changes
/// nothing.
pub fn ensure_private_dir(
    dir: &Path,
    what: &'static str,
    setting: &'static str,
) -> Result<PrivateDir, OwnedError> {
    let path = || dir.to_owned();
    let io = |source| OwnedError::Io {
        what,
        path: path(),
        source,
    };
    let existed = match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(OwnedError::Symlink {
                what,
                setting,
                path: path(),
            })
        }
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
            false
        }
        Err(e) => return Err(io(e)),
    };
    let handle = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => OwnedError::Symlink {
                what,
                setting,
                path: path(),
            },
            Some(libc::ENOTDIR) => OwnedError::NotADirectory {
                what,
                setting,
                path: path(),
            },
            _ => io(e),
        })?;
    let meta = handle.metadata().map_err(io)?;
    let me = my_uid();
    if meta.uid() != me {
        return Err(OwnedError::NotOwned {
            what,
            setting,
            path: path(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(PrivateDir::Private);
    }
    if !existed || named_for_wsync(dir) {
        nix::sys::stat::fchmod(&handle, nix::sys::stat::Mode::S_IRWXU).map_err(|e| io(e.into()))?;
        return Ok(PrivateDir::Tightened { was: mode });
    }
    if writable_by_others(mode) {
        return Err(OwnedError::Writable {
            what,
            setting,
            path: path(),
            mode,
        });
    }
    Ok(PrivateDir::Readable { mode })
}

fn named_for_wsync(dir: &Path) -> bool {
    let named = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .is_some_and(|n| n.to_string_lossy().to_lowercase().contains("wsync"))
    };
    named(Some(dir)) || named(dir.parent())
}

/// Opens a log file of ours for appending: created 0600, never through a symbolic link
/// (`O_NOFOLLOW`), and refused unless it is a regular file we own with no other name (a hard
/// link planted to another file would have more than one). An existing file is set to 0600.
pub fn open_log_file(path: &Path) -> std::io::Result<File> {
    let file = std::fs::File::options()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let refuse = |why: String| {
        Err(std::io::Error::other(format!(
            "refusing log file {}: {why}",
            path.display()
        )))
    };
    if !meta.is_file() {
        return refuse("not a regular file".into());
    }
    if meta.uid() != my_uid() {
        return refuse(format!("owned by uid {}", meta.uid()));
    }
    if meta.nlink() != 1 {
        return refuse(format!("it has {} hard links", meta.nlink()));
    }
    if meta.mode() & 0o777 != 0o600 {
        nix::sys::stat::fchmod(
            &file,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )?;
    }
    Ok(file)
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content: a temp
/// file named `<temp_prefix><random>.tmp`, created with `O_EXCL` (mode 0600) in the same
/// directory — unique, so two writers of different files in one directory never share it —
/// synced, `before_rename` run (tests simulate a crash there), renamed over `path`, directory
/// synced.
pub fn write_atomic(
    path: &Path,
    temp_prefix: &str,
    bytes: &[u8],
    before_rename: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(temp_prefix)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    before_rename()?; // on error the temp file is removed when `tmp` drops
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_new_directory_is_0700_and_a_loose_one_named_for_wsync_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/b/log");
        ensure_private_dir(&fresh, "log directory", "LogDirectory").unwrap();
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        let ours = tmp.path().join(".wsync/log");
        std::fs::create_dir_all(&ours).unwrap();
        std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&ours, "log directory", "LogDirectory").unwrap();
        assert_eq!(mode(&ours), 0o700);
    }

    #[test]
    fn links_shared_and_foreign_directories_are_refused_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("victim");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = tmp.path().join("wsync-link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err =
            ensure_private_dir(&link, "socket directory", "DaemonCommandSocketPath").unwrap_err();
        assert!(matches!(err, OwnedError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("DaemonCommandSocketPath"), "{err}");
        assert_eq!(mode(&target), 0o755, "chmodded through the link");

        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = ensure_private_dir(&shared, "log directory", "LogDirectory").unwrap_err();
        assert!(
            matches!(err, OwnedError::Writable { mode: 0o1777, .. }),
            "{err}"
        );
        assert_eq!(mode(&shared), 0o1777);

        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = ensure_private_dir(&file, "log directory", "LogDirectory").unwrap_err();
        assert!(matches!(err, OwnedError::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn log_files_are_0600_and_never_opened_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("wsyncd.log.2026-01-01");
        drop(open_log_file(&log).unwrap());
        assert_eq!(mode(&log), 0o600);
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_log_file(&log).unwrap());
        assert_eq!(mode(&log), 0o600, "an existing file is tightened");

        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        let planted = tmp.path().join("wsyncd.log.2026-01-02");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(open_log_file(&planted).is_err());
        let hard = tmp.path().join("wsyncd.log.2026-01-03");
        std::fs::hard_link(&victim, &hard).unwrap();
        assert!(open_log_file(&hard).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
    }

    #[test]
    fn atomic_writes_leave_only_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("my.a");
        write_atomic(&file, ".wsync-x-", b"one", || Ok(())).unwrap();
        let failed = write_atomic(&file, ".wsync-x-", b"two", || {
            Err(std::io::Error::other("crash"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"one");
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "a temp file was left"
        );
    }
}
