//! The command socket's filesystem side: a 0700 directory owned by us (checked and created by
//! [`wsync_core::owned::ensure_private_dir`]: a link there is refused, never chmodded through), the stale-socket probe
//! (a socket file is deleted only when connecting to it is refused), binding with mode 0600,
//! and [`SocketGuard`], which removes the socket on clean exit.
//!
//! The server uses `tokio::net::UnixListener` rather than the `interprocess` crate: tokio gives
//! the peer's credentials (`SO_PEERCRED`) directly, and binding a std listener ourselves keeps
//! the probe, the bind and the chmod in one place.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use wsync_core::owned::{ensure_private_dir, OwnedError, PrivateDir};

/// Why the socket cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("socket path {0} has no parent directory")]
    NoParent(PathBuf),
    #[error(transparent)]
    TooLong(#[from] wsync_core::platform::SocketPathTooLong),
    #[error(transparent)]
    Dir(#[from] OwnedError),
    #[error(
        "{0} exists and is not a socket; move it away or choose another DaemonCommandSocketPath"
    )]
    NotASocket(PathBuf),
    #[error("a process already answers on {0} (but holds no pidfile for this config); stop it or choose another DaemonCommandSocketPath")]
    InUse(PathBuf),
    #[error("cannot probe existing socket {path}")]
    Probe {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove stale socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Creates the socket's directory (mode 0700) or tightens an existing one we own; the
/// directory is the runtime directory too (pidfile, ssh control sockets, rule files).
pub fn prepare_dir(socket: &Path) -> Result<PathBuf, SocketError> {
    wsync_core::platform::check_socket_path(socket)?;
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => return Err(SocketError::NoParent(socket.to_owned())),
    };
    match ensure_private_dir(&dir, "socket directory", "DaemonCommandSocketPath")? {
        PrivateDir::Private => {}
        PrivateDir::Tightened { was } => tracing::info!(
            "socket directory {} had mode {was:o}; set to 0700",
            dir.display()
        ),
        PrivateDir::Readable { mode } => tracing::warn!(
            "socket directory {} has mode {mode:o}, not 0700; the socket itself is 0600 and peers are checked by uid",
            dir.display()
        ),
    }
    Ok(dir)
}

/// Removes a socket file left by a crashed daemon: only when a connect to it is refused.
pub fn remove_stale(socket: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SocketError::Probe {
                path: socket.to_owned(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket(socket.to_owned()));
    }
    match UnixStream::connect(socket) {
        Ok(_) => Err(SocketError::InUse(socket.to_owned())),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(
                "removing stale socket {} (connect refused)",
                socket.display()
            );
            std::fs::remove_file(socket).map_err(|source| SocketError::RemoveStale {
                path: socket.to_owned(),
                source,
            })
        }
        Err(source) => Err(SocketError::Probe {
            path: socket.to_owned(),
            source,
        }),
    }
}

/// Binds the socket and restricts it to mode 0600.
pub fn bind(socket: &Path) -> Result<UnixListener, SocketError> {
    let bind_err = |source| SocketError::Bind {
        path: socket.to_owned(),
        source,
    };
    let listener = UnixListener::bind(socket).map_err(bind_err)?;
    let guard = SocketGuard::new(socket.to_owned());
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    std::mem::forget(guard);
    Ok(listener)
}

/// Removes the socket file when dropped (clean exit).
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
}

impl SocketGuard {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!("cannot remove socket {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn stale_socket_is_removed_and_live_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let sock = run.join("s.sock");
        prepare_dir(&sock).unwrap();
        let mode = std::fs::metadata(&run).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let live = bind(&sock).unwrap();
        assert_eq!(std::fs::metadata(&sock).unwrap().mode() & 0o777, 0o600);
        assert!(matches!(remove_stale(&sock), Err(SocketError::InUse(_))));
        drop(live); // the file stays, nobody listens: stale
        assert!(sock.exists());
        remove_stale(&sock).unwrap();
        assert!(!sock.exists());

        std::fs::write(&sock, b"not a socket").unwrap();
        assert!(matches!(
            remove_stale(&sock),
            Err(SocketError::NotASocket(_))
        ));
    }
}
