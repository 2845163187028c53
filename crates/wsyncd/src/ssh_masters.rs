//! The ssh multiplexing masters of one monitor's SSH remotes, as the daemon knows them (from the
//! `Start` and `Attach` commands it sent the monitor), so that a monitor that ended without
//! closing them — SIGKILLed after the stop grace, crashed — leaves none behind. ssh daemonizes a
//! master (`ControlPersist`: it forks and calls `setsid`), so it is outside the monitor's process
//! group and killing the group does not reach it; `ssh -O exit` on the same ControlPath does.
//! A monitor that stops cleanly (and one whose remote is detached) closes its own masters; then
//! the control sockets are gone and nothing is run here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wsync_core::monitor_proto::MonitorCommand;
use wsync_core::registry::Remote;
use wsync_core::ssh::SshEndpoint;

/// How long one `ssh -O exit` may take (it only talks to the local master's socket).
const EXIT_TIMEOUT: Duration = Duration::from_secs(3);

/// Remote name → its endpoint and control socket.
#[derive(Debug, Default)]
pub struct SshMasters {
    workspace: String,
    runtime_dir: PathBuf,
    masters: BTreeMap<String, (SshEndpoint, PathBuf)>,
}

impl SshMasters {
    pub fn new(runtime_dir: &Path, workspace: &str) -> Self {
        Self {
            workspace: workspace.to_owned(),
            runtime_dir: runtime_dir.to_owned(),
            masters: BTreeMap::new(),
        }
    }

    /// Notes the SSH remotes a command sent to the monitor names.
    pub fn on_command(&mut self, command: &MonitorCommand) {
        match command {
            MonitorCommand::Start { workspace, .. } => {
                for remote in &workspace.remotes {
                    self.add(remote);
                }
            }
            MonitorCommand::Attach { remote, .. } => self.add(remote),
            // Kept: a master the monitor failed to close is still closed at the end.
            _ => {}
        }
    }

    fn add(&mut self, remote: &Remote) {
        if let Some(endpoint) = SshEndpoint::from_target(&remote.target) {
            let control =
                endpoint.remote_control_path(&self.runtime_dir, &self.workspace, &remote.name);
            self.masters
                .insert(remote.name.clone(), (endpoint, control));
        }
    }

    /// Asks every master whose control socket still exists to exit; blocks up to
    /// [`EXIT_TIMEOUT`] per master.
    pub fn close(self) {
        for (remote, (endpoint, control)) in self.masters {
            if std::fs::symlink_metadata(&control).is_err() {
                continue;
            }
            let argv = endpoint.control_exit_argv(&control);
            tracing::info!(
                workspace = %self.workspace,
                remote,
                "closing the ssh master its monitor left"
            );
            tracing::debug!(?argv, "running ssh");
            let spawned = Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let Ok(mut child) = spawned else { continue };
            let deadline = Instant::now() + EXIT_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// [`SshMasters::close`] on a thread of its own, for callers that hold the daemon's lock.
    pub fn close_in_background(self) {
        if self.masters.is_empty() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("ssh-masters".into())
            .spawn(move || self.close());
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread to close ssh masters: {e}");
        }
    }
}
