//! A remote's connection settings and the commands run on it besides rsync: the shared ssh
//! master (`ControlPath` private to this workspace's remote), shell commands over it, the
//! check of a local target's `.wsync-target` marker, and the check of both ends' rsync before
//! the first transfer ([`Destination::check_rsync`]). Nothing here creates a target: attach
//! does, with its marker (`wsync_core::target`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::blocking::{Gate, StallReport};
use tokio::process::Command;
use wsync_core::beneath::TargetRoot;
use wsync_core::registry::Remote;
use wsync_core::remote::RemoteTarget;
use wsync_core::rsync::{
    guard_refusal, remote_version_command, ssh_target_checks, ExitClass, DEFAULT_TIMEOUT_SECS,
};
use wsync_core::rsync_version::{self, End, RsyncEnds, RsyncVersion};

use super::Outcome;
use wsync_core::ssh::{quote_posix_sh, SshEndpoint};

/// What a remote command reads on its stdin.
pub enum Stdin {
    Bytes(Vec<u8>),
    /// Streamed from its current offset by the kernel (`sendfile`), never read whole.
    File(std::fs::File),
}

/// This machine's rsync (what every transfer runs), or why it cannot be used.
async fn local_rsync() -> Result<RsyncVersion, String> {
    let mut cmd = Command::new("rsync");
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let cannot = |why: String| {
        format!(
            "cannot run the local rsync ({why}): install rsync {} or later (macOS: `brew install rsync`) on the PATH wsyncd runs with",
            rsync_version::MINIMUM
        )
    };
    let output = match tokio::time::timeout(VERSION_DEADLINE, cmd.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(cannot(e.to_string())),
        Err(_) => return Err(cannot("no answer to --version".into())),
    };
    let banner = String::from_utf8_lossy(&output.stdout);
    RsyncVersion::parse(&banner).ok_or_else(|| {
        cannot(format!(
            "it answered {:?} to --version",
            banner.lines().next().unwrap_or("")
        ))
    })
}

/// Where a remote's rsyncs go and with what connection settings.
#[derive(Debug, Clone)]
pub struct Destination {
    pub remote: Remote,
    pub control_path: Option<PathBuf>,
    /// The workspace id the target's marker must name.
    pub workspace_id: String,
    /// This remote's blocking filesystem calls, one at a time with a deadline.
    gate: Gate,
    /// The remote's transport for small changes: its agent session (SSH), what status shows.
    pub(super) agent: Arc<super::agent::Link>,
    /// Both ends' rsync once checked and found usable (checked again after a refusal, so a
    /// fix is picked up by the next retry); shared by the batches of this remote.
    rsync: Arc<Mutex<Option<RsyncEnds>>>,
    /// The SSH remote shows descriptors in `/proc/<pid>/fd` (found by the rsync check): its
    /// guard holds a batch's trash snapshot by descriptor ([`BackupDir::RemoteFd`]).
    ///
    /// [`BackupDir::RemoteFd`]: wsync_core::rsync::BackupDir::RemoteFd
    proc_fd: Arc<std::sync::atomic::AtomicBool>,
    /// This remote's rsyncs still running, killed and waited for by [`Destination::stop`].
    pub(super) groups: super::rsync_run::RsyncGroups,
}

/// How long `rsync --version` may take, locally or over the connection.
const VERSION_DEADLINE: Duration = Duration::from_secs(15);

impl Destination {
    /// The ssh master is private to this workspace's remote: detaching it (`ssh -O exit`)
    /// must not cut other workspaces' transfers to the same host.
    /// `configured`: the config's `Transport` (`rsync` wins over the remote's own setting).
    pub fn new(
        remote: Remote,
        runtime_dir: &Path,
        workspace: &str,
        workspace_id: &str,
        configured: wsync_core::registry::Transport,
    ) -> Self {
        let control_path = SshEndpoint::from_target(&remote.target)
            .map(|ep| ep.remote_control_path(runtime_dir, workspace, &remote.name));
        let agent = super::agent::Link::new(&remote.target, remote.transport, configured);
        Self {
            remote,
            control_path,
            workspace_id: workspace_id.to_owned(),
            gate: Gate::default(),
            agent,
            rsync: Arc::default(),
            proc_fd: Arc::default(),
            groups: Default::default(),
        }
    }

    /// Both ends' rsync, once checked.
    pub fn rsync_ends(&self) -> Option<RsyncEnds> {
        self.rsync.lock().ok().and_then(|ends| ends.clone())
    }

    /// Whether deletions go by the filter-list fallback ([`RsyncMode::Deletions`]): the
    /// receiving rsync's `--delete-missing-args` is broken.
    ///
    /// [`RsyncMode::Deletions`]: wsync_core::rsync::RsyncMode::Deletions
    pub fn deletion_fallback(&self) -> bool {
        self.rsync_ends().is_some_and(|ends| ends.deletion_fallback)
    }

    /// The receiving rsync rejected `--delete-missing-args` (a backport of 3.4.3's bug under
    /// an older number): deletions go by the fallback from now on.
    pub fn use_deletion_fallback(&self) {
        if let Ok(mut ends) = self.rsync.lock() {
            if let Some(ends) = ends.as_mut() {
                if !ends.deletion_fallback {
                    tracing::warn!(remote = %self.remote.name, "the receiving rsync rejects --delete-missing-args: deletions go by the filter-list fallback from now on");
                }
                ends.deletion_fallback = true;
            }
        }
    }

    /// Checks both ends' rsync before this remote's first transfer (a monitor start, an
    /// attach, an update), and after a refusal before each retry: `Err` with the outcome that
    /// ends the batch (the version refused and the fix named, or the remote unreachable).
    /// An SSH remote runs the transfers' own guard with `--version` (the marker and the
    /// target are checked with it) over the connection the transfers then share.
    pub async fn check_rsync(&self) -> Result<(), Outcome> {
        if self.rsync_ends().is_some() {
            return Ok(());
        }
        let started = Instant::now();
        let fatal = |message: String| Outcome::failed(ExitClass::Fatal, message, started);
        let local = local_rsync().await.map_err(|e| fatal(e.clone()))?;
        local.check().map_err(|e| fatal(e.message(End::Local)))?;
        let remote = match &self.remote.target {
            RemoteTarget::Local { .. } => local.clone(),
            RemoteTarget::Ssh { host, .. } => {
                let rsync_path = self.remote.rsync_path.as_deref();
                let end = End::Remote { host, rsync_path };
                let command =
                    remote_version_command(&self.remote.target, &self.workspace_id, rsync_path)
                        .unwrap_or_default();
                let out = match self.remote_command(command.as_bytes(), None).await {
                    Ok(out) => out,
                    Err(e) => {
                        let text = e.to_string();
                        return Err(match guard_refusal(&text, &self.remote.target) {
                            Some(refused) => fatal(refused),
                            None => Outcome::failed(
                                ExitClass::Connection,
                                format!("cannot check the remote's rsync: {text}"),
                                started,
                            ),
                        });
                    }
                };
                let banner = String::from_utf8_lossy(&out);
                let proc_fd = banner
                    .lines()
                    .any(|l| l == wsync_core::rsync::PROC_FD_PROBE);
                self.proc_fd
                    .store(proc_fd, std::sync::atomic::Ordering::Relaxed);
                if !proc_fd {
                    tracing::info!(remote = %self.remote.name, "the remote shows no /proc/<pid>/fd (not Linux): its trash snapshots are checked by name before each batch, not held by descriptor");
                }
                let banner: String = banner
                    .lines()
                    .filter(|l| *l != wsync_core::rsync::PROC_FD_PROBE)
                    .map(|l| format!("{l}\n"))
                    .collect();
                let version = RsyncVersion::parse(&banner).ok_or_else(|| {
                    fatal(format!(
                        "{} on {host} is not rsync (it answered {:?} to --version); wsync needs rsync {} or later there: install it (macOS: `brew install rsync`), or give its path with `wsync attach --rsync-path` (detach it first)",
                        wsync_core::rsync::remote_rsync_program(rsync_path),
                        banner.lines().next().unwrap_or(""),
                        rsync_version::MINIMUM
                    ))
                })?;
                version.check().map_err(|e| fatal(e.message(end)))?;
                version
            }
        };
        // The receiver is the remote's rsync (for a local target, this machine's).
        let ends = RsyncEnds {
            deletion_fallback: remote.delete_missing_args_broken(),
            local: Some(local),
            remote: Some(remote),
        };
        tracing::info!(remote = %self.remote.name, local = ?ends.local.as_ref().map(ToString::to_string), remote_rsync = ?ends.remote.as_ref().map(ToString::to_string), deletion_fallback = ends.deletion_fallback, "rsync checked on both ends");
        if let Ok(mut slot) = self.rsync.lock() {
            *slot = Some(ends);
        }
        Ok(())
    }

    /// Whether the SSH remote's guard can hold a trash snapshot by descriptor (known after
    /// [`Destination::check_rsync`]).
    pub fn remote_proc_fd(&self) -> bool {
        self.proc_fd.load(std::sync::atomic::Ordering::Relaxed)
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
        self.remote_command_reading(script, stdin.map(Stdin::Bytes))
            .await
    }

    /// [`Destination::remote_command`] with its stdin from `stdin`: a file is streamed by the
    /// kernel, never read whole (the agent's upload is this binary).
    pub async fn remote_command_reading(
        &self,
        script: &[u8],
        stdin: Option<Stdin>,
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
        if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
            // A write error is the remote's exit, which its status reports.
            let _ = match input {
                Stdin::Bytes(bytes) => pipe.write_all(&bytes).await,
                Stdin::File(mut file) => {
                    // A blocking copy off the runtime: `std::io::copy` from a file into a pipe
                    // is `sendfile`/`splice` in the kernel, no buffer of ours at all.
                    match pipe.into_owned_fd() {
                        Ok(fd) => {
                            let mut pipe = std::fs::File::from(fd);
                            tokio::task::spawn_blocking(move || {
                                std::io::copy(&mut file, &mut pipe).map(drop)
                            })
                            .await
                            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                        }
                        Err(e) => Err(e),
                    }
                }
            };
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

    /// How small changes reach this remote now (status).
    pub fn transport(&self) -> wsync_core::monitor_proto::TransportStatus {
        self.agent.status()
    }

    /// Asks the ssh multiplexing master (if any) to exit; used on detach and shutdown.
    /// Stops everything this remote does (it is being detached), within `deadline`: no rsync
    /// starts for it any more, each one running is killed with its process group and waited
    /// for, the executor's filesystem call under way returns, the agent session ends (its
    /// ssh client killed and reaped). True when all of that happened in time.
    pub async fn stop(&self, deadline: Duration) -> bool {
        let started = Instant::now();
        let rsyncs_gone = self.groups.stop(deadline).await;
        let left = deadline.saturating_sub(started.elapsed());
        let call_returned = tokio::time::timeout(left, self.gate.idle()).await.is_ok();
        let left = deadline.saturating_sub(started.elapsed());
        let agent_gone = tokio::time::timeout(left, self.agent.close()).await.is_ok();
        rsyncs_gone && call_returned && agent_gone
    }

    pub async fn close_connection(&self) {
        self.agent.close().await;
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
