//! Waiting for a newly attached remote's initial sync: poll the daemon's status, show progress
//! (a bar while the monitor reports rsync's progress), and stop at in-sync, at a failure (with
//! its error), or at the deadline. Also the progress poller `flush` runs beside its request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::HumanBytes;
use wsync_core::monitor_proto::{RemoteState, SyncProgress};
use wsync_core::protocol::{MonitorProcessState, Request, Response, WorkspaceStatus};

use crate::client::{unexpected, Client};
use crate::error::CliError;
use crate::exit_codes;
use crate::progress::Progress;

/// How often the status is polled while waiting.
const POLL: Duration = Duration::from_millis(100);

/// Where a remote's initial sync stands, judged from one status snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialSync {
    /// Still going; the text describes the progress.
    Waiting(String),
    InSync,
    /// The workspace is paused: nothing will be synced until it is resumed.
    Paused,
    /// The sync failed (the remote keeps being retried); the text says why.
    Failed(String),
}

/// Judges `remote`'s initial sync from its workspace's status.
pub fn judge(status: &WorkspaceStatus, remote: &str) -> InitialSync {
    if status.workspace.paused || status.monitor.state == MonitorProcessState::Paused {
        return InitialSync::Paused;
    }
    if status.monitor.state == MonitorProcessState::Failed {
        let why = status
            .monitor
            .last_exit
            .as_deref()
            .unwrap_or("unknown exit");
        return InitialSync::Failed(format!(
            "the workspace's monitor failed ({why}); fix the cause, then `wsync restart {}`",
            status.workspace.name
        ));
    }
    let report = status.report.as_ref();
    if let Some(halted) = report.and_then(|r| r.halted.as_deref()) {
        return InitialSync::Failed(format!("syncing is halted: {halted}"));
    }
    let Some(r) = report.and_then(|r| r.remotes.iter().find(|r| r.name == remote)) else {
        return InitialSync::Waiting(format!("initial sync to {remote}: starting"));
    };
    match r.state {
        // Unverified comes only after the initial sync landed.
        RemoteState::InSync | RemoteState::Unverified => InitialSync::InSync,
        RemoteState::Error | RemoteState::Backoff | RemoteState::Halted | RemoteState::Stalled => {
            InitialSync::Failed(
                r.last_error
                    .clone()
                    .unwrap_or_else(|| format!("remote is in state {:?}", r.state)),
            )
        }
        RemoteState::Paused => InitialSync::Paused,
        RemoteState::InitialSync | RemoteState::Syncing if r.files_sent == 0 => {
            InitialSync::Waiting(format!("initial sync to {remote}: copying"))
        }
        RemoteState::InitialSync | RemoteState::Syncing => InitialSync::Waiting(format!(
            "initial sync to {remote}: {} files, {} sent",
            r.files_sent,
            HumanBytes(r.bytes_sent)
        )),
    }
}

/// The progress of `remote`'s running full sync, if the monitor reports one.
pub fn remote_progress(status: &WorkspaceStatus, remote: &str) -> Option<SyncProgress> {
    status
        .report
        .as_ref()?
        .remotes
        .iter()
        .find(|r| r.name == remote)?
        .progress
}

pub fn workspace_status(client: &mut Client, workspace: &str) -> Result<Option<WorkspaceStatus>> {
    match client.call(&Request::Status {
        workspace: Some(workspace.to_owned()),
    })? {
        Response::Status { workspaces } => Ok(workspaces.into_iter().next()),
        other => Err(unexpected(&other)),
    }
}

/// Shows the progress of any full sync of `workspace` on `progress` until `stop` is set
/// (`flush` runs it on its own connection while its request waits). Errors end the polling
/// quietly: the flush answer is what counts.
pub fn show_full_syncs(
    mut client: Client,
    workspace: &str,
    progress: &mut Progress,
    message: &str,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(status)) = workspace_status(&mut client, workspace) else {
            return;
        };
        let syncing = status.report.as_ref().and_then(|report| {
            report
                .remotes
                .iter()
                .find_map(|r| Some((r.name.clone(), r.progress?)))
        });
        match syncing {
            Some((remote, p)) => progress.update(&format!("full sync to {remote}"), Some(&p)),
            None => progress.update(message, None),
        }
        std::thread::sleep(POLL);
    }
}

/// Polls until `remote` of `workspace` is in sync; errors name the cause and the way out.
pub fn initial_sync(
    client: &mut Client,
    workspace: &str,
    remote: &str,
    timeout: Duration,
) -> Result<InitialSync> {
    let mut progress = Progress::spinner(format!("initial sync to {remote}"));
    let deadline = Instant::now() + timeout;
    loop {
        let Some(status) = workspace_status(client, workspace)? else {
            return Err(anyhow::anyhow!(
                "workspace {workspace} vanished while syncing"
            ));
        };
        match judge(&status, remote) {
            InitialSync::Waiting(text) => match remote_progress(&status, remote) {
                Some(p) => progress.update(&format!("initial sync to {remote}"), Some(&p)),
                None => progress.update(&text, None),
            },
            InitialSync::Failed(why) => {
                return Err(CliError::new(
                    exit_codes::FAILURE,
                    format!("remote {remote} was attached to {workspace}, but its initial sync failed: {why}"),
                )
                .with_hint(format!(
                    "the remote stays attached and is retried; watch it with `wsync status {workspace}`, or remove it with `wsync detach {workspace} {remote}`"
                ))
                .into())
            }
            done => return Ok(done),
        }
        if Instant::now() >= deadline {
            return Err(CliError::new(
                exit_codes::TIMEOUT,
                format!(
                    "remote {remote} is still in its initial sync after {} s; it continues in the background",
                    timeout.as_secs()
                ),
            )
            .with_hint(format!("follow it with `wsync status {workspace} --watch`"))
            .into());
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsync_core::monitor_proto::{MonitorStatus, RemoteStatus};
    use wsync_core::protocol::SupervisorStatus;
    use wsync_core::registry::Workspace;

    fn status(state: Option<RemoteState>) -> WorkspaceStatus {
        WorkspaceStatus {
            workspace: Workspace {
                name: "w".into(),
                id: String::new(),
                path: "/w".into(),
                remotes: vec![],
                paused: false,
                excludes: vec![],
                respect_gitignore: true,
                max_delete: None,
                checksum_every_secs: None,
                tuning: Default::default(),
                root_id: None,
            },
            monitor: SupervisorStatus {
                state: MonitorProcessState::Running,
                pid: Some(1),
                restarts: 0,
                last_exit: None,
                last_log_lines: vec![],
                next_restart_unix_ms: None,
            },
            report: Some(MonitorStatus {
                remotes: state
                    .into_iter()
                    .map(|state| RemoteStatus {
                        name: "r".into(),
                        state,
                        last_sync_unix_ms: None,
                        files_sent: 3,
                        bytes_sent: 2048,
                        pending: 0,
                        consecutive_failures: 0,
                        last_error: Some("rsync: connection refused".into()),
                        next_retry_unix_ms: None,
                        progress: None,
                        verified_unix_ms: None,
                        throughput: None,
                        transport: None,
                        rsync: None,
                    })
                    .collect(),
                ..MonitorStatus::default()
            }),
            watch_mode: None,
        }
    }

    #[test]
    fn judges_each_state() {
        assert_eq!(
            judge(&status(None), "r"),
            InitialSync::Waiting("initial sync to r: starting".into())
        );
        assert_eq!(
            judge(&status(Some(RemoteState::InitialSync)), "r"),
            InitialSync::Waiting("initial sync to r: 3 files, 2.00 KiB sent".into())
        );
        assert_eq!(
            judge(&status(Some(RemoteState::InSync)), "r"),
            InitialSync::InSync
        );
        assert_eq!(
            judge(&status(Some(RemoteState::Backoff)), "r"),
            InitialSync::Failed("rsync: connection refused".into())
        );
        let mut copying = status(Some(RemoteState::InitialSync));
        copying.report.as_mut().unwrap().remotes[0].files_sent = 0;
        assert_eq!(
            judge(&copying, "r"),
            InitialSync::Waiting("initial sync to r: copying".into())
        );
        let mut paused = status(Some(RemoteState::Syncing));
        paused.workspace.paused = true;
        assert_eq!(judge(&paused, "r"), InitialSync::Paused);
        let mut failed = status(None);
        failed.monitor.state = MonitorProcessState::Failed;
        assert!(
            matches!(judge(&failed, "r"), InitialSync::Failed(m) if m.contains("wsync restart w"))
        );
    }
}
