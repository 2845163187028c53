//! Every direct write to a local target goes through here: the target directory is opened
//! once ([`TargetRoot::open`], `O_DIRECTORY | O_NOFOLLOW`), every path under it is resolved
//! beneath that handle without following a symlink, and the operation runs on the last
//! component relative to the resolved parent's descriptor (`renameat`, `unlinkat`, `mkdirat`,
//! `fstatat(AT_SYMLINK_NOFOLLOW)`, `openat(O_NOFOLLOW)`), or, for the executor
//! (`crate::executor`), atomic replacement under a hidden `O_EXCL` temp name in the same
//! directory and trees counted or removed by descriptor.
//!
//! Why: other users may own directories inside a mirror (rsync gives a mirrored directory its
//! source owner), so any of them can replace one with a symlink to a directory only the
//! daemon's user may write. A path-based `rename(2)` follows such a link in a parent component;
//! a check of the path beforehand only opens a race. Resolution by descriptor cannot leave the
//! target: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` where the
//! kernel has it (Linux 5.6), otherwise one `openat(O_NOFOLLOW | O_DIRECTORY)` per component
//! (when `openat2` returns `ENOSYS` or `EPERM`: old kernels, seccomp filters). Paths with `..`,
//! `.` or empty components and absolute paths are refused before any system call. What a
//! symlink in the path means for the caller is its choice: the monitor falls back to rsync,
//! which replaces the link.
//!
//! A symlink as the *last* component is never followed either: it is renamed, removed or
//! reported as a symlink, like the entry it is. Directories are pinned by descriptor, so a
//! directory renamed elsewhere inside the target while an operation runs is still the one
//! operated on; one moved out of the target by a user who may write both places is that
//! user's own directory.
//!
//! [`TargetRoot`] is `Send + Sync` (it is one descriptor): callers may run it on a blocking
//! thread pool.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
#[cfg(target_os = "linux")]
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
#[cfg(target_os = "linux")]
use nix::fcntl::{OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

/// Why an operation beneath a target was refused or failed. Each names the path asked for,
/// relative to the target.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    /// The path is absolute, empty, or has a `..`, `.` or empty component.
    #[error("{path:?} is not a plain relative path beneath the target ({why})")]
    InvalidPath { path: PathBuf, why: &'static str },
    /// A component on the way (or, for [`TargetRoot::open`], the target itself) is a symlink.
    #[error("{path:?}: a symlink in the path at {at:?}; nothing beneath a target is reached through a symlink")]
    Symlink { path: PathBuf, at: PathBuf },
    /// A component on the way is not a directory.
    #[error("{path:?}: {at:?} is not a directory")]
    NotADirectory { path: PathBuf, at: PathBuf },
    /// The system call failed (`op` names it); `source.kind()` says why (`NotFound`, ...).
    #[error("{op} {path:?}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BeneathError {
    /// True when the path (or a directory on the way) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// What an entry is, from `fstatat(AT_SYMLINK_NOFOLLOW)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// An entry's metadata (never of a symlink's destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryStat {
    pub kind: EntryKind,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// How paths are resolved beneath the root; [`Resolver::Auto`] is what callers want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2` while the kernel allows it, else [`Resolver::PerComponent`].
    Auto,
    /// One `openat(O_NOFOLLOW | O_DIRECTORY)` per component (what `Auto` falls back to).
    PerComponent,
}

/// Whether this process may call `openat2`: unknown until the first call, then remembered
/// (a seccomp filter or an old kernel does not change while we run). Linux only: elsewhere
/// [`Resolver::Auto`] is the per-component walk.
#[cfg(target_os = "linux")]
static OPENAT2: AtomicU8 = AtomicU8::new(OPENAT2_UNKNOWN);
#[cfg(target_os = "linux")]
const OPENAT2_UNKNOWN: u8 = 0;
#[cfg(target_os = "linux")]
const OPENAT2_WORKS: u8 = 1;
#[cfg(target_os = "linux")]
const OPENAT2_MISSING: u8 = 2;

/// An open target directory; every operation takes a path relative to it.
#[derive(Debug)]
pub struct TargetRoot {
    fd: OwnedFd,
    path: PathBuf,
    // Only Linux has a choice (`openat2`).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    resolver: Resolver,
}

/// A resolved parent directory: the root itself or a descriptor opened beneath it.
enum Parent<'a> {
    Root(BorrowedFd<'a>),
    Opened(OwnedFd),
}

impl AsFd for Parent<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Parent::Root(fd) => *fd,
            Parent::Opened(fd) => fd.as_fd(),
        }
    }
}

/// A path split into its checked components.
struct Rel<'p> {
    path: &'p Path,
    parents: Vec<&'p OsStr>,
    name: &'p OsStr,
}

impl TargetRoot {
    /// Opens the target directory `path` (not through a symlink at its last component: a
    /// target replaced by a link is not ours).
    pub fn open(path: &Path) -> Result<Self, BeneathError> {
        Self::open_with(path, Resolver::Auto)
    }

    /// Like [`TargetRoot::open`] with a chosen resolver (tests run both).
    pub fn open_with(path: &Path, resolver: Resolver) -> Result<Self, BeneathError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match nix::fcntl::open(path, flags, Mode::empty()) {
            Ok(fd) => Ok(Self {
                fd,
                path: path.to_path_buf(),
                resolver,
            }),
            Err(errno @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink());
                Err(if is_link {
                    BeneathError::Symlink {
                        path: path.to_path_buf(),
                        at: path.to_path_buf(),
                    }
                } else if errno == Errno::ENOTDIR {
                    BeneathError::NotADirectory {
                        path: path.to_path_buf(),
                        at: path.to_path_buf(),
                    }
                } else {
                    io_error("open", path, errno)
                })
            }
            Err(errno) => Err(io_error("open", path, errno)),
        }
    }

    /// The target directory as it was given to [`TargetRoot::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata of `rel` itself (a symlink is reported as one); `None` when it, or a
    /// directory on the way to it, does not exist.
    pub fn stat(&self, rel: &Path) -> Result<Option<EntryStat>, BeneathError> {
        let rel = split(rel)?;
        let parent = match self.parent(&rel) {
            Ok(parent) => parent,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        match nix::sys::stat::fstatat(&parent, rel.name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(entry_stat(&st))),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(io_error("stat", rel.path, errno)),
        }
    }

    /// Renames `from` to `to` (`renameat`): a file replaces a file at `to`, a directory an
    /// empty directory, as `rename(2)` does; a symlink at either end is the entry moved or
    /// replaced, never followed.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), BeneathError> {
        let (from, to) = (split(from)?, split(to)?);
        let from_parent = self.parent(&from)?;
        let to_parent = self.parent(&to)?;
        nix::fcntl::renameat(&from_parent, from.name, &to_parent, to.name)
            .map_err(|errno| io_error("rename", from.path, errno))
    }

    /// Removes `rel`: a file, a symlink (not its destination) or an empty directory.
    pub fn remove(&self, rel: &Path) -> Result<(), BeneathError> {
        let rel = split(rel)?;
        let parent = self.parent(&rel)?;
        match nix::unistd::unlinkat(&parent, rel.name, UnlinkatFlags::NoRemoveDir) {
            // Linux answers EISDIR for a directory (POSIX allows EPERM: not followed here).
            Err(Errno::EISDIR) => {
                nix::unistd::unlinkat(&parent, rel.name, UnlinkatFlags::RemoveDir)
            }
            other => other,
        }
        .map_err(|errno| io_error("remove", rel.path, errno))
    }

    /// Removes the empty directory `rel`; anything else there (a symlink planted in its place,
    /// a file) is left and answered with an error.
    pub fn rmdir(&self, rel: &Path) -> Result<(), BeneathError> {
        let rel = split(rel)?;
        let parent = self.parent(&rel)?;
        nix::unistd::unlinkat(&parent, rel.name, UnlinkatFlags::RemoveDir)
            .map_err(|errno| io_error("rmdir", rel.path, errno))
    }

    /// Creates the directory `rel` (mode 0777 less the umask, like `mkdir(1)`); its parent
    /// must exist.
    pub fn mkdir(&self, rel: &Path) -> Result<(), BeneathError> {
        let rel = split(rel)?;
        let parent = self.parent(&rel)?;
        nix::sys::stat::mkdirat(&parent, rel.name, Mode::from_bits_truncate(0o777))
            .map_err(|errno| io_error("mkdir", rel.path, errno))
    }

    /// Opens `rel` for reading, not through a symlink and without blocking on a FIFO (a
    /// caller that wants a regular file checks `metadata()`).
    pub fn open_read(&self, rel: &Path) -> Result<File, BeneathError> {
        let rel = split(rel)?;
        let parent = self.parent(&rel)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        match nix::fcntl::openat(&parent, rel.name, flags, Mode::empty()) {
            Ok(fd) => Ok(File::from(fd)),
            Err(Errno::ELOOP) => Err(BeneathError::Symlink {
                path: rel.path.to_path_buf(),
                at: rel.path.to_path_buf(),
            }),
            Err(errno) => Err(io_error("open", rel.path, errno)),
        }
    }

    /// The names in the target directory itself (not `.` and `..`).
    pub fn list_root(&self) -> Result<Vec<OsString>, BeneathError> {
        self.list_dir(Path::new(""))
    }

    /// The names in the directory `rel` (not `.` and `..`; `rel` empty: the target itself),
    /// opened beneath the root, never through a symlink.
    pub fn list_dir(&self, rel: &Path) -> Result<Vec<OsString>, BeneathError> {
        let dir = self.open_dir(rel)?;
        list_fd(dir.as_fd(), rel)
    }

    /// Opens the directory `rel` (empty: the target itself) for reading and for setting its
    /// metadata (`fchmod`, `fchown`, `futimens` on the descriptor), not through a symlink.
    pub fn open_dir(&self, rel: &Path) -> Result<File, BeneathError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if rel.as_os_str().is_empty() {
            return nix::fcntl::openat(&self.fd, ".", flags, Mode::empty())
                .map(File::from)
                .map_err(|errno| io_error("open", rel, errno));
        }
        let split = split(rel)?;
        let parent = self.parent(&split)?;
        match nix::fcntl::openat(&parent, split.name, flags, Mode::empty()) {
            Ok(fd) => Ok(File::from(fd)),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let st = nix::sys::stat::fstatat(&parent, split.name, AtFlags::AT_SYMLINK_NOFOLLOW);
                Err(match st.map(|st| entry_stat(&st).kind) {
                    Ok(EntryKind::Symlink) => BeneathError::Symlink {
                        path: rel.to_path_buf(),
                        at: rel.to_path_buf(),
                    },
                    Ok(_) => BeneathError::NotADirectory {
                        path: rel.to_path_buf(),
                        at: rel.to_path_buf(),
                    },
                    Err(errno) => io_error("open", rel, errno),
                })
            }
            Err(errno) => Err(io_error("open", rel, errno)),
        }
    }

    /// Replaces `rel` atomically with a new regular file: `write` fills a hidden temp file
    /// created `O_EXCL | O_NOFOLLOW` (mode 0600) in the same directory, then it is renamed
    /// over `rel` (a file or symlink there is replaced; a directory is an error). A reader
    /// sees the old entry or the whole new file, never a part. On any failure the temp file
    /// is removed.
    pub fn put_atomic(
        &self,
        rel: &Path,
        write: impl FnOnce(&File) -> std::io::Result<()>,
    ) -> Result<(), BeneathError> {
        let split = split(rel)?;
        let parent = self.parent(&split)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let (temp, fd) = create_temp(split.name, |temp| {
            nix::fcntl::openat(&parent, temp, flags, Mode::from_bits_truncate(0o600))
        })
        .map_err(|errno| io_error("create", rel, errno))?;
        let file = File::from(fd);
        let written = write(&file).map_err(|source| BeneathError::Io {
            op: "write",
            path: rel.to_path_buf(),
            source,
        });
        drop(file);
        let done = written.and_then(|()| {
            nix::fcntl::renameat(&parent, temp.as_os_str(), &parent, split.name)
                .map_err(|errno| io_error("rename", rel, errno))
        });
        if done.is_err() {
            let _ = nix::unistd::unlinkat(&parent, temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
        done
    }

    /// Replaces `rel` atomically with a symlink to `dest`: created under a hidden temp name in
    /// the same directory, handed to `finish` (the parent's descriptor and the temp name: to
    /// set the link's own times and owner), then renamed over `rel`.
    pub fn symlink_atomic(
        &self,
        rel: &Path,
        dest: &OsStr,
        finish: impl FnOnce(BorrowedFd<'_>, &OsStr) -> Result<(), Errno>,
    ) -> Result<(), BeneathError> {
        let split = split(rel)?;
        let parent = self.parent(&split)?;
        let (temp, ()) = create_temp(split.name, |temp| {
            nix::unistd::symlinkat(dest, &parent, temp)
        })
        .map_err(|errno| io_error("symlink", rel, errno))?;
        let done = finish(parent.as_fd(), temp.as_os_str())
            .map_err(|errno| io_error("set attributes of", rel, errno))
            .and_then(|()| {
                nix::fcntl::renameat(&parent, temp.as_os_str(), &parent, split.name)
                    .map_err(|errno| io_error("rename", rel, errno))
            });
        if done.is_err() {
            let _ = nix::unistd::unlinkat(&parent, temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
        done
    }

    /// The entries [`TargetRoot::remove_tree`] would remove: 1 for a file or symlink, a
    /// directory and everything below it (0 when `rel` does not exist).
    pub fn count_tree(&self, rel: &Path) -> Result<u64, BeneathError> {
        match self.stat(rel)? {
            None => Ok(0),
            Some(st) if st.kind != EntryKind::Dir => Ok(1),
            Some(_) => {
                let dir = self.open_dir(rel)?;
                walk_tree(dir.as_fd(), rel, false).map(|n| n + 1)
            }
        }
    }

    /// Removes `rel` and, for a directory, everything below it, walking by descriptor: no
    /// symlink is followed (a link is removed as the entry it is) and nothing outside the
    /// directory is reached. Returns the entries removed (0 when `rel` does not exist).
    pub fn remove_tree(&self, rel: &Path) -> Result<u64, BeneathError> {
        match self.stat(rel)? {
            None => Ok(0),
            Some(st) if st.kind != EntryKind::Dir => self.remove(rel).map(|()| 1),
            Some(_) => {
                let dir = self.open_dir(rel)?;
                let below = walk_tree(dir.as_fd(), rel, true)?;
                drop(dir);
                self.remove(rel).map(|()| below + 1)
            }
        }
    }

    /// The directory holding `rel`'s last component, opened beneath the root.
    fn parent<'s>(&'s self, rel: &Rel<'_>) -> Result<Parent<'s>, BeneathError> {
        if rel.parents.is_empty() {
            return Ok(Parent::Root(self.fd.as_fd()));
        }
        #[cfg(target_os = "linux")]
        if self.resolver == Resolver::Auto && OPENAT2.load(Ordering::Relaxed) != OPENAT2_MISSING {
            if let Some(resolved) = self.parent_openat2(rel) {
                return resolved;
            }
        }
        self.parent_per_component(rel)
    }

    #[cfg(target_os = "linux")]
    /// `None` when `openat2` cannot be used (or cannot say precisely what went wrong: the
    /// per-component walk then names the offending component).
    fn parent_openat2(&self, rel: &Rel<'_>) -> Option<Result<Parent<'_>, BeneathError>> {
        let dirs: PathBuf = rel.parents.iter().collect();
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        // EAGAIN: a concurrent rename or mount raced the lookup; the kernel asks to retry.
        for _ in 0..4 {
            match nix::fcntl::openat2(&self.fd, &dirs, how) {
                Ok(fd) => {
                    OPENAT2.store(OPENAT2_WORKS, Ordering::Relaxed);
                    return Some(Ok(Parent::Opened(fd)));
                }
                Err(Errno::EAGAIN) => continue,
                Err(Errno::ENOSYS | Errno::EPERM)
                    if OPENAT2.load(Ordering::Relaxed) == OPENAT2_UNKNOWN =>
                {
                    OPENAT2.store(OPENAT2_MISSING, Ordering::Relaxed);
                    return None;
                }
                // ELOOP (a symlink), EXDEV (escaped: cannot happen without `..` or a link),
                // ENOTDIR: the walk says where.
                Err(Errno::ELOOP | Errno::EXDEV | Errno::ENOTDIR) => return None,
                Err(errno) => return Some(Err(io_error("open", rel.path, errno))),
            }
        }
        None
    }

    fn parent_per_component(&self, rel: &Rel<'_>) -> Result<Parent<'_>, BeneathError> {
        let flags =
            crate::platform::DIR_HANDLE | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut current = Parent::Root(self.fd.as_fd());
        let mut at = PathBuf::new();
        for component in &rel.parents {
            at.push(component);
            match nix::fcntl::openat(&current, *component, flags, Mode::empty()) {
                Ok(fd) => current = Parent::Opened(fd),
                // O_PATH | O_NOFOLLOW opens a symlink itself, which O_DIRECTORY then refuses
                // with ENOTDIR; without O_PATH it would be ELOOP. Either way: look at it.
                Err(errno @ (Errno::ENOTDIR | Errno::ELOOP)) => {
                    let st =
                        nix::sys::stat::fstatat(&current, *component, AtFlags::AT_SYMLINK_NOFOLLOW);
                    return Err(match st.map(|st| entry_stat(&st).kind) {
                        Ok(EntryKind::Symlink) => BeneathError::Symlink {
                            path: rel.path.to_path_buf(),
                            at,
                        },
                        Ok(EntryKind::Dir) => io_error("open", rel.path, errno),
                        Ok(_) => BeneathError::NotADirectory {
                            path: rel.path.to_path_buf(),
                            at,
                        },
                        Err(errno) => io_error("open", rel.path, errno),
                    });
                }
                Err(errno) => return Err(io_error("open", rel.path, errno)),
            }
        }
        Ok(current)
    }
}

/// Checks `path` and splits it into parent components and the last one.
fn split(path: &Path) -> Result<Rel<'_>, BeneathError> {
    let invalid = |why| BeneathError::InvalidPath {
        path: path.to_path_buf(),
        why,
    };
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(invalid("empty"));
    }
    if bytes.starts_with(b"/") {
        return Err(invalid("absolute"));
    }
    // `Path::components` would quietly drop `.` and empty components: look at the bytes.
    let mut names: Vec<&OsStr> = Vec::new();
    for name in bytes.split(|b| *b == b'/') {
        match name {
            b"" => return Err(invalid("an empty component")),
            b"." => return Err(invalid("a `.` component")),
            b".." => return Err(invalid("a `..` component")),
            _ => names.push(OsStr::from_bytes(name)),
        }
    }
    let name = names.pop().ok_or_else(|| invalid("empty"))?;
    Ok(Rel {
        path,
        parents: names,
        name,
    })
}

// `nlink_t` is u64 on x86_64 Linux and u32 elsewhere; `dev_t` is i32 and `mode_t` u16 on macOS.
#[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
fn entry_stat(st: &nix::sys::stat::FileStat) -> EntryStat {
    let format = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let kind = match format {
        SFlag::S_IFREG => EntryKind::File,
        SFlag::S_IFDIR => EntryKind::Dir,
        SFlag::S_IFLNK => EntryKind::Symlink,
        _ => EntryKind::Other,
    };
    EntryStat {
        kind,
        dev: st.st_dev as u64,
        ino: st.st_ino,
        nlink: u64::from(st.st_nlink),
        size: u64::try_from(st.st_size).unwrap_or(0),
        mode: u32::from(st.st_mode) & 0o7777,
    }
}

fn io_error(op: &'static str, path: &Path, errno: Errno) -> BeneathError {
    BeneathError::Io {
        op,
        path: path.to_path_buf(),
        source: std::io::Error::from(errno),
    }
}

/// The files (every entry that is not a directory: regular files, symlinks, ...) below the
/// open directory `dir` and their sizes added up, walked by descriptor like
/// [`TargetRoot::count_tree`]: no symlink is followed. `rel` names `dir` in errors.
pub fn files_below(dir: BorrowedFd<'_>, rel: &Path) -> Result<(u64, u64), BeneathError> {
    let (mut files, mut bytes) = (0, 0);
    for name in list_fd(dir, rel)? {
        let path = rel.join(&name);
        let st = nix::sys::stat::fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|errno| io_error("stat", &path, errno))?;
        let entry = entry_stat(&st);
        if entry.kind == EntryKind::Dir {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let sub = nix::fcntl::openat(dir, name.as_os_str(), flags, Mode::empty())
                .map_err(|errno| io_error("open", &path, errno))?;
            let (f, b) = files_below(sub.as_fd(), &path)?;
            files += f;
            bytes += b;
        } else {
            files += 1;
            bytes += entry.size;
        }
    }
    Ok((files, bytes))
}

/// The names in the open directory `dir` (not `.` and `..`; `rel` names it in errors).
pub fn list_fd(dir: BorrowedFd<'_>, rel: &Path) -> Result<Vec<OsString>, BeneathError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = nix::dir::Dir::openat(dir, ".", flags, Mode::empty())
        .map_err(|errno| io_error("list", rel, errno))?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|errno| io_error("list", rel, errno))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// Counts (and with `remove`, removes) everything below the open directory `dir`, depth
/// first, each subdirectory opened `O_NOFOLLOW | O_DIRECTORY` relative to its parent.
fn walk_tree(dir: BorrowedFd<'_>, rel: &Path, remove: bool) -> Result<u64, BeneathError> {
    let mut count = 0;
    for name in list_fd(dir, rel)? {
        let path = rel.join(&name);
        let st = nix::sys::stat::fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|errno| io_error("stat", &path, errno))?;
        if entry_stat(&st).kind == EntryKind::Dir {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let sub = nix::fcntl::openat(dir, name.as_os_str(), flags, Mode::empty())
                .map_err(|errno| io_error("open", &path, errno))?;
            count += walk_tree(sub.as_fd(), &path, remove)?;
            if remove {
                nix::unistd::unlinkat(dir, name.as_os_str(), UnlinkatFlags::RemoveDir)
                    .map_err(|errno| io_error("remove", &path, errno))?;
            }
        } else if remove {
            nix::unistd::unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|errno| io_error("remove", &path, errno))?;
        }
        count += 1;
    }
    Ok(count)
}

/// A hidden temp name beside `name` that `create` made (`O_EXCL` or `symlinkat`, so an entry
/// already there, planted or left over, is never reused): `.wsync-tmp.<name>.<pid>.<n>`.
fn create_temp<T>(
    name: &OsStr,
    mut create: impl FnMut(&OsStr) -> Result<T, Errno>,
) -> Result<(OsString, T), Errno> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // Long names are cut so the temp name stays within NAME_MAX (255).
    let stem = &name.as_bytes()[..name.len().min(200)];
    let mut last = Errno::EEXIST;
    for _ in 0..16 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut temp = TEMP_PREFIX.as_bytes().to_vec();
        temp.extend_from_slice(stem);
        temp.extend_from_slice(format!(".{}.{n}", std::process::id()).as_bytes());
        let temp = OsStr::from_bytes(&temp).to_os_string();
        match create(&temp) {
            Ok(made) => return Ok((temp, made)),
            Err(Errno::EEXIST) => last = Errno::EEXIST,
            Err(errno) => return Err(errno),
        }
    }
    Err(last)
}

/// What every temp name of [`TargetRoot::put_atomic`] and [`TargetRoot::symlink_atomic`]
/// starts with.
pub const TEMP_PREFIX: &str = ".wsync-tmp.";

#[cfg(test)]
mod tests;
