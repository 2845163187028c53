//! One daemon per config: an exclusively flock'ed pidfile held for the daemon's lifetime by
//! [`PidfileGuard`], which removes the file on drop. A second daemon fails at once with
//! [`AlreadyRunning`] and changes nothing (the file is opened without truncation).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Another daemon holds the lock.
#[derive(Debug, thiserror::Error)]
#[error("another wsyncd ({pid}) is already running for config {config}; stop it with `wsync daemon stop` first (lock file {pidfile})")]
pub struct AlreadyRunning {
    /// "pid N", or "pid unknown" while the other daemon is still writing it.
    pub pid: String,
    pub config: String,
    pub pidfile: String,
}

/// Holds the pidfile lock; removes the file when dropped.
#[derive(Debug)]
pub struct PidfileGuard {
    path: PathBuf,
    _lock: Flock<File>,
}

/// Errors other than "already running".
#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    #[error(transparent)]
    AlreadyRunning(#[from] AlreadyRunning),
    #[error("cannot open or lock pidfile {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PidfileGuard {
    /// Takes the lock on `path` and writes our pid into it; `config` is named in errors.
    pub fn acquire(path: &Path, config: &Path) -> Result<Self, PidfileError> {
        let io = |source: std::io::Error| PidfileError::Io {
            path: path.to_owned(),
            source,
        };
        // A daemon that is exiting unlinks the file while we may be waiting on its inode;
        // retry until the locked inode is the one at `path`.
        for _ in 0..10 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    let pid = match text.trim().parse::<u32>() {
                        Ok(pid) => format!("pid {pid}"),
                        Err(_) => "pid unknown".to_owned(),
                    };
                    return Err(AlreadyRunning {
                        pid,
                        config: config.display().to_string(),
                        pidfile: path.display().to_string(),
                    }
                    .into());
                }
                Err((_, errno)) => return Err(io(errno.into())),
            };
            let held = lock.metadata().map_err(io)?;
            match std::fs::metadata(path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {}
                _ => continue,
            }
            lock.set_len(0).map_err(io)?;
            lock.rewind().map_err(io)?;
            writeln!(lock, "{}", std::process::id()).map_err(io)?;
            lock.sync_all().map_err(io)?;
            return Ok(Self {
                path: path.to_owned(),
                _lock: lock,
            });
        }
        Err(io(std::io::Error::other(
            "the pidfile kept being replaced while locking it",
        )))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidfileGuard {
    fn drop(&mut self) {
        // Unlink while still holding the lock, so no other daemon can hold a lock on this inode.
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove pidfile {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_file_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        let guard = PidfileGuard::acquire(&path, Path::new("/cfg")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        let err = PidfileGuard::acquire(&path, Path::new("/cfg")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && msg.contains("/cfg"),
            "{msg}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        drop(guard);
        assert!(!path.exists());
        let _again = PidfileGuard::acquire(&path, Path::new("/cfg")).unwrap();
    }
}
