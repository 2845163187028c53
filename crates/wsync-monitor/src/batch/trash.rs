//! A remote's trash, from the monitor's side: the snapshot a batch backs up into (when the
//! remote keeps deletions) and the age-based prune, run at start and hourly off the event loop.
//! Both local and SSH targets are pruned by rsync itself (a listing of the trash, then a
//! `--delete` from an empty directory restricted to the expired snapshots), through the one
//! argv builder and, for SSH, its marker guard: no shell text is built from names.

use std::time::SystemTime;

use wsync_core::rsync::{
    prune_rules, trash_argv, ExitClass, TrashOp, TrashRequest, DEFAULT_TIMEOUT_SECS,
};
use wsync_core::trash::{backup_dir, expired, parse_list, snapshot_name};

use super::rsync_run::run;
use super::Destination;
use crate::blocking::StallReport;

impl Destination {
    /// The `--backup-dir` for a batch starting now, when this remote keeps deletions.
    pub(super) fn backup_dir(&self) -> Option<String> {
        (self.remote.keep_deleted_days > 0).then(|| backup_dir(&snapshot_name(SystemTime::now())))
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
        if !self.local_trash_is_safe(stall).await {
            let why = wsync_core::trash::not_a_directory_message(&self.remote.target);
            tracing::warn!(remote = %self.remote.name, "trash not pruned: {why}");
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
        let (pruned, _) = run(argv, Some(prune_rules(&old)), || {}).await;
        if pruned.class == ExitClass::Success {
            tracing::info!(remote = %self.remote.name, removed = old.len(), kept = names.len() - old.len(), "trash pruned: snapshots older than {days} days removed");
        } else {
            tracing::warn!(remote = %self.remote.name, error = ?pruned.error, "pruning the trash failed; the next prune tries again");
        }
    }
}
