//! The watch backends behind one contract, and the choice among them. Every backend walks
//! the tree before it returns (so the first sync has the rules file and the tree's size; the
//! inotify backend only as far as the tree's size decides, then beside the first sync:
//! [`WatchMsg::Walking`]),
//! then sends [`WatchMsg`]s — the engine's only view of the workspace — until the channel
//! closes: `inotify` ([`crate::watch`], one watch per directory), `notify`
//! ([`crate::watch_notify`], one recursive watch through the `notify` crate) and `poll`
//! ([`crate::poll`], a walk every `PollIntervalMs`, two seconds by default). `WatchMode` picks one per workspace.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use wsync_core::monitor_proto::{WatchBackendKind, WatchMode};

use crate::engine::checksum::TreeSize;
use crate::watch::{ExcludeConfig, WatchError, WatchMsg};

/// What the event loop asks of a running backend; its events come through the channel it was
/// started with. `rescan` and `rewatch` block (they walk the tree) and run off the loop.
pub trait WatchBackend: Send + Sync {
    /// Which backend this is (shown in status).
    fn kind(&self) -> WatchBackendKind;
    /// The included files and bytes the first walk saw (whether the initial sync can afford
    /// `--checksum`).
    fn initial_tree(&self) -> TreeSize;
    /// Kernel watches in use, for status (0 where the backend does not count them).
    fn count(&self) -> u64;
    /// The rsync rules file for the excluded entries (always written, possibly empty).
    fn rules_file(&self) -> PathBuf;
    /// Re-walks the tree and restores any missing watch (after an overflow, or when a halted
    /// root came back). Returns the error when watching is degraded.
    fn rescan(&self) -> Result<(), WatchError>;
    /// Drops every watch and watches the tree afresh (the root is a different directory now).
    fn rewatch(&self) -> Result<(), WatchError>;
    /// Removes the rules file (at exit).
    fn remove_rules_file(&self) {
        let _ = std::fs::remove_file(self.rules_file());
    }
}

/// A running backend, shared by the event loop and its rescans.
pub type Backend = Arc<dyn WatchBackend>;

/// Starts the backend `mode` asks for on `root`. `auto` is inotify, except on a network or
/// FUSE filesystem (polled: inotify sees only the writes made through this machine's kernel);
/// off Linux, where there is no inotify, `auto` and `inotify` are notify (FSEvents on macOS).
/// When no inotify instance is left (EMFILE) the tree is polled instead, and a
/// [`WatchMsg::Polling`] says so in status.
pub fn start(
    root: &Path,
    config: ExcludeConfig,
    mode: WatchMode,
    poll_interval: Duration,
    tx: UnboundedSender<WatchMsg>,
) -> io::Result<Backend> {
    let mode = match mode {
        WatchMode::Auto => match remote_filesystem(root) {
            Some(fs) => {
                tracing::info!(
                    "{} is on {fs}, where inotify misses changes made by other machines: polling it every {} (set WatchMode=inotify to watch it anyway)",
                    root.display(),
                    every(poll_interval)
                );
                WatchMode::Poll
            }
            None => WatchMode::Inotify,
        },
        mode => mode,
    };
    let started: io::Result<Backend> = match mode {
        WatchMode::Poll => {
            return Ok(Arc::new(crate::poll::start(
                root,
                config,
                poll_interval,
                tx,
            )?))
        }
        WatchMode::Notify => {
            crate::watch_notify::NotifyWatcher::start(root, config.clone(), tx.clone())
                .map(|w| Arc::new(w) as Backend)
        }
        #[cfg(target_os = "linux")]
        WatchMode::Auto | WatchMode::Inotify => {
            crate::watch_inotify::Watcher::start(root, config.clone(), tx.clone())
                .map(|w| Arc::new(w) as Backend)
        }
        #[cfg(not(target_os = "linux"))]
        WatchMode::Auto | WatchMode::Inotify => {
            crate::watch_notify::NotifyWatcher::start(root, config.clone(), tx.clone())
                .map(|w| Arc::new(w) as Backend)
        }
    };
    match started {
        Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
            let message = polling_message(&e, poll_interval);
            tracing::error!("{message}");
            let poller = crate::poll::start(root, config, poll_interval, tx.clone())?;
            let _ = tx.send(WatchMsg::Polling(message));
            Ok(Arc::new(poller))
        }
        other => other,
    }
}

/// The status text of poll mode when inotify was wanted.
pub fn polling_message(error: &io::Error, interval: Duration) -> String {
    format!(
        "no inotify instance available ({error}): the per-user limit fs.inotify.max_user_instances is reached (one per monitor); polling the tree every {} instead — raise it with `sysctl fs.inotify.max_user_instances=1024`",
        every(interval)
    )
}

/// A poll interval as a person reads it: `2 s`, `0.2 s`.
fn every(interval: Duration) -> String {
    format!("{} s", interval.as_secs_f64())
}

/// Filesystem types (statfs `f_type`) whose changes need not pass through this kernel.
const REMOTE_FILESYSTEMS: &[(i64, &str)] = &[
    (0x6969, "NFS"),
    (0x517B, "SMB"),
    (0xFE53_4D42, "SMB2"),
    (0xFF53_4D42, "CIFS"),
    (0x6573_5546, "FUSE"),
];

/// The name of the network or FUSE filesystem `root` is on, if it is on one.
#[cfg(target_os = "linux")]
fn remote_filesystem(root: &Path) -> Option<&'static str> {
    let stat = nix::sys::statfs::statfs(root).ok()?;
    remote_filesystem_type(stat.filesystem_type().0 as i64)
}

/// Filesystem type names (statfs `f_fstypename`, macOS) whose changes need not pass through
/// this kernel.
#[cfg(not(target_os = "linux"))]
const REMOTE_FILESYSTEM_NAMES: &[(&str, &str)] = &[
    ("nfs", "NFS"),
    ("smbfs", "SMB"),
    ("afpfs", "AFP"),
    ("webdav", "WebDAV"),
    ("macfuse", "FUSE"),
    ("osxfuse", "FUSE"),
    ("fuse", "FUSE"),
];

/// The name of the network or FUSE filesystem `root` is on, if it is on one.
#[cfg(not(target_os = "linux"))]
fn remote_filesystem(root: &Path) -> Option<&'static str> {
    let stat = nix::sys::statfs::statfs(root).ok()?;
    let name = stat.filesystem_type_name();
    REMOTE_FILESYSTEM_NAMES
        .iter()
        .find(|(fs, _)| *fs == name)
        .map(|(_, shown)| *shown)
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn remote_filesystem_type(f_type: i64) -> Option<&'static str> {
    REMOTE_FILESYSTEMS
        .iter()
        .find(|(magic, _)| *magic == f_type)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_fuse_types_are_polled_and_local_ones_are_not() {
        assert_eq!(remote_filesystem_type(0x6969), Some("NFS"));
        assert_eq!(remote_filesystem_type(0xFF53_4D42), Some("CIFS"));
        assert_eq!(remote_filesystem_type(0x6573_5546), Some("FUSE"));
        // ext4, tmpfs, btrfs, overlayfs
        for local in [0xEF53, 0x0102_1994, 0x9123_683E, 0x794C_7630] {
            assert_eq!(remote_filesystem_type(local), None);
        }
        // A temp dir on the test machine is local (tmpfs or a disk).
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(remote_filesystem(tmp.path()), None);
    }
}
