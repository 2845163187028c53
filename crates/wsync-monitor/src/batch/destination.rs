//! A remote's connection settings and the commands run on it besides rsync: the shared ssh
//! master (`ControlPath` private to this workspace's remote), shell commands over it, and the
//! check of a local target's `.wsync-target` marker. Nothing here creates a target: attach
//! does, with its marker (`wsync_core::target`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::blocking::{Gate, StallReport};
use tokio::process::Command;
use wsync_core::beneath::TargetRoot;
use wsync_core::registry::Remote;
use wsync_core::remote::RemoteTarget;
use wsync_core::rsync::{ssh_target_checks, DEFAULT_TIMEOUT_SECS};
use wsync_core::ssh::{quote_posix_sh, SshEndpoint};

/// Where a remote's rsyncs go and with what connection settings.
#[derive(Debug, Clone)]
pub struct Destination {
    pub remote: Remote,
    pub control_path: Option<PathBuf>,
    /// The workspace id the target's marker must name.
    pub workspace_id: String,
    /// This remote's blocking filesystem calls, one at a time with a deadline.
    gate: Gate,
}

impl Destination {
    /// The ssh master is private to this workspace's remote: detaching it (`ssh -O exit`)
    /// must not cut other workspaces' transfers to the same host.
    pub fn new(remote: Remote, runtime_dir: &Path, workspace: &str, workspace_id: &str) -> Self {
        let control_path = SshEndpoint::from_target(&remote.target)
            .map(|ep| ep.remote_control_path(runtime_dir, workspace, &remote.name));
        Self {
            remote,
            control_path,
            workspace_id: workspace_id.to_owned(),
            gate: Gate::default(),
        }
    }

    /// Runs a blocking filesystem call of this remote's batch off the loop (see
    /// [`crate::blocking`]); `call` names it and its path for the stall report.
    pub async fn blocking<T: Send + 'static>(
        &self,
        call: String,
        stall: StallReport<'_>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        self.gate.run(call, stall, f).await
    }

    /// For a local target: whether it holds this workspace's marker (one small file read;
    /// SSH targets are checked by the remote guard of each command instead).
    pub async fn local_target_is_ours(&self, stall: StallReport<'_>) -> bool {
        match &self.remote.target {
            RemoteTarget::Local { path } => {
                let (path, id) = (path.clone(), self.workspace_id.clone());
                let call = format!(
                    "reading the target marker {}",
                    path.join(wsync_core::target::MARKER_FILE).display()
                );
                self.blocking(call, stall, move || {
                    wsync_core::target::is_ours_local(&path, &id)
                })
                .await
            }
            RemoteTarget::Ssh { .. } => true,
        }
    }

    /// Whether the target directory holds nothing but its marker and its trash (missing counts
    /// as empty): what wsync keeps there is not the workspace's.
    pub async fn target_is_empty(&self, stall: StallReport<'_>) -> std::io::Result<bool> {
        let marker = wsync_core::target::MARKER_FILE;
        let ours = |name: &[u8]| {
            name == marker.as_bytes() || name == wsync_core::trash::TRASH_DIR.as_bytes()
        };
        match &self.remote.target {
            RemoteTarget::Local { path } => {
                let path = path.clone();
                let call = format!("listing the target {}", path.display());
                self.blocking(call, stall, move || {
                    match TargetRoot::open(&path).and_then(|root| root.list_root()) {
                        Ok(names) => Ok(names.iter().all(|name| ours(name.as_encoded_bytes()))),
                        Err(e) if e.is_not_found() => Ok(true),
                        Err(e) => Err(std::io::Error::other(e)),
                    }
                })
                .await
            }
            RemoteTarget::Ssh { path, .. } => {
                // Run by `sh -s` whatever the login shell is; a target that resolves to the
                // remote home or above is refused like every other command on it.
                let mut script = b"d=".to_vec();
                script.extend_from_slice(&quote_posix_sh(path.as_bytes()));
                script.extend_from_slice(b"; ");
                script.extend_from_slice(ssh_target_checks().as_bytes());
                script.extend_from_slice(b"test ! -d \"$d\" || ls -A -- \"$d\"\n");
                let output = self.remote_command(b"sh -s", Some(script)).await?;
                Ok(output
                    .split(|b| *b == b'\n')
                    .all(|name| name.trim_ascii().is_empty() || ours(name)))
            }
        }
    }

    /// Runs a POSIX shell command (already quoted) on an SSH remote over the shared
    /// connection; returns its stdout, or an error with its stderr when it fails.
    pub async fn remote_command(
        &self,
        script: &[u8],
        stdin: Option<Vec<u8>>,
    ) -> std::io::Result<Vec<u8>> {
        let (Some(endpoint), Some(control)) = (
            SshEndpoint::from_target(&self.remote.target),
            self.control_path.as_deref(),
        ) else {
            return Err(std::io::Error::other("not an ssh remote"));
        };
        let script = String::from_utf8_lossy(script).into_owned();
        let argv = endpoint.command_argv(control, &script);
        tracing::debug!(remote = %self.remote.name, ?argv, "running ssh");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
            let _ = pipe.write_all(&bytes).await;
        }
        let output = tokio::time::timeout(
            Duration::from_secs(u64::from(DEFAULT_TIMEOUT_SECS)),
            child.wait_with_output(),
        )
        .await
        .map_err(|_| std::io::Error::other("ssh command timed out"))??;
        if !output.status.success() {
            let text = String::from_utf8_lossy(&output.stderr);
            return Err(std::io::Error::other(format!(
                "ssh command failed ({}): {}",
                output.status,
                text.trim()
            )));
        }
        Ok(output.stdout)
    }

    /// Asks the ssh multiplexing master (if any) to exit; used on detach and shutdown.
    pub async fn close_connection(&self) {
        let (Some(endpoint), Some(control)) = (
            SshEndpoint::from_target(&self.remote.target),
            self.control_path.as_deref(),
        ) else {
            return;
        };
        if !control.exists() {
            return;
        }
        let argv = endpoint.control_exit_argv(control);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Ok(mut child) = cmd.spawn() {
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        }
    }
}
