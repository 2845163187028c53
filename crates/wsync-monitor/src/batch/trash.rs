//! A remote's trash, from the monitor's side: the snapshot a batch backs up into (when the
//! remote keeps deletions) and the age-based prune, run at start and hourly off the event loop.
//! A local target's snapshot is created and held open by descriptor
//! ([`wsync_core::trash::LocalSnapshot`]) and its prune runs in process beneath the target's
//! handle: nobody who can write the target can redirect either. SSH targets are pruned by
//! rsync itself (a listing of the trash, then a `--delete` from an empty directory restricted
//! to the expired snapshots), through the one argv builder and its marker guard: no shell
//! text is built from names.

use std::os::fd::BorrowedFd;
use std::time::SystemTime;

use wsync_core::remote::RemoteTarget;
use wsync_core::trash::LocalSnapshot;

use wsync_core::rsync::{
    prune_rules, trash_argv, BackupDir, ExitClass, TrashOp, TrashRequest, DEFAULT_TIMEOUT_SECS,
};
use wsync_core::trash::{backup_dir, expired, parse_list, snapshot_name};

use super::rsync_run::run;
use super::Destination;
use crate::blocking::StallReport;

/// Where one batch keeps what it deletes or overwrites.
pub(super) enum Backup {
    /// A local target's snapshot, open (rsync inherits it).
    Local(LocalSnapshot),
    /// An SSH target's snapshot: created and held by descriptor by the remote guard
    /// (`by_fd`, a remote with `/proc`), else its path relative to the target (the guard
    /// checks the trash by name).
    Remote {
        name: String,
        dir: String,
        by_fd: bool,
    },
}

impl Backup {
    /// rsync's `--backup-dir`.
    pub fn dir(&self) -> BackupDir<'_> {
        match self {
            Backup::Local(snapshot) => BackupDir::Path(snapshot.backup_dir()),
            Backup::Remote {
                name, by_fd: true, ..
            } => BackupDir::RemoteFd(name),
            Backup::Remote { dir, .. } => BackupDir::Path(dir),
        }
    }

    /// The descriptor rsync must inherit for [`Backup::dir`] to mean anything.
    pub fn descriptor(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Backup::Local(snapshot) => Some(snapshot.descriptor()),
            Backup::Remote { .. } => None,
        }
    }
}

impl Destination {
    /// The snapshot for a batch starting now, when this remote keeps deletions: for a local
    /// target created beneath its handle (behind the remote's gate); `Err` with the message
    /// when its trash cannot be trusted.
    pub(super) async fn backup(&self, stall: StallReport<'_>) -> Result<Option<Backup>, String> {
        if self.remote.keep_deleted_days == 0 {
            return Ok(None);
        }
        let name = snapshot_name(SystemTime::now());
        match &self.remote.target {
            RemoteTarget::Ssh { .. } => Ok(Some(Backup::Remote {
                dir: backup_dir(&name),
                name,
                by_fd: self.remote_proc_fd(),
            })),
            RemoteTarget::Local { path } => {
                let target = path.clone();
                let call = format!(
                    "creating a snapshot in the trash {}",
                    path.join(wsync_core::trash::TRASH_DIR).display()
                );
                let made = self
                    .blocking(call, stall, move || LocalSnapshot::create(&target, &name))
                    .await;
                made.map(|snapshot| Some(Backup::Local(snapshot)))
                    .map_err(|e| e.message(&self.remote.target))
            }
        }
    }

    /// Lets go of a batch's snapshot (one nothing was kept in is removed), behind the gate.
    pub(super) async fn release(&self, backup: Option<Backup>, stall: StallReport<'_>) {
        if let Some(Backup::Local(snapshot)) = backup {
            let call = "removing an empty trash snapshot".to_owned();
            self.blocking(call, stall, move || drop(snapshot)).await;
        }
    }

    /// Removes the snapshots older than `keep_deleted_days` from the remote's trash; logs what
    /// it did. Nothing on a target without this workspace's marker (read behind the remote's
    /// gate, a stall of it reported to `stall`).
    pub async fn prune_trash(&self, stall: StallReport<'_>) {
        let days = self.remote.keep_deleted_days;
        if days == 0 {
            return;
        }
        if !self.local_target_is_ours(stall).await {
            tracing::warn!(remote = %self.remote.name, "trash not pruned: the target holds no marker of this workspace");
            return;
        }
        if let RemoteTarget::Local { path } = &self.remote.target {
            let target = path.clone();
            let call = format!(
                "pruning the trash {}",
                path.join(wsync_core::trash::TRASH_DIR).display()
            );
            let pruned = self
                .blocking(call, stall, move || {
                    wsync_core::trash::prune_local(&target, SystemTime::now(), days)
                })
                .await;
            match pruned {
                Ok((0, kept)) => {
                    tracing::debug!(remote = %self.remote.name, snapshots = kept, "trash pruned: nothing older than {days} days")
                }
                Ok((removed, kept)) => {
                    tracing::info!(remote = %self.remote.name, removed, kept, "trash pruned: snapshots older than {days} days removed")
                }
                Err(e) => {
                    tracing::warn!(remote = %self.remote.name, "pruning the trash failed ({e}); the next prune tries again")
                }
            }
            return;
        }
        let empty = match tempfile::Builder::new().prefix("wsync-prune-").tempdir() {
            Ok(dir) => dir,
            Err(e) => {
                tracing::warn!(remote = %self.remote.name, "trash not pruned: cannot create an empty directory: {e}");
                return;
            }
        };
        let request = |op| TrashRequest {
            target: &self.remote.target,
            control_path: self.control_path.as_deref(),
            marker_id: Some(&self.workspace_id),
            local: empty.path(),
            op,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            remote_rsync: self.remote.rsync_path.as_deref(),
        };
        let (listed, output) = run(
            &self.groups,
            trash_argv(&request(TrashOp::List { files: false })),
            None,
            || {},
        )
        .await;
        if listed.class != ExitClass::Success {
            tracing::warn!(remote = %self.remote.name, error = ?listed.error, "trash not pruned: listing it failed");
            return;
        }
        let names: Vec<String> = parse_list(&output).into_iter().map(|s| s.name).collect();
        let old = expired(&names, SystemTime::now(), days);
        if old.is_empty() {
            tracing::debug!(remote = %self.remote.name, snapshots = names.len(), "trash pruned: nothing older than {days} days");
            return;
        }
        let argv = trash_argv(&request(TrashOp::Prune));
        tracing::debug!(remote = %self.remote.name, ?argv, "pruning the trash");
        let (pruned, _) = run(&self.groups, argv, Some(prune_rules(&old)), || {}).await;
        if pruned.class == ExitClass::Success {
            tracing::info!(remote = %self.remote.name, removed = old.len(), kept = names.len() - old.len(), "trash pruned: snapshots older than {days} days removed");
        } else {
            tracing::warn!(remote = %self.remote.name, error = ?pruned.error, "pruning the trash failed; the next prune tries again");
        }
    }
}
