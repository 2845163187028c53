//! Drives a real `wsync-monitor` through its stdin/stdout channels, as the daemon does.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use wsync_core::framing::{encode, read_frame};
use wsync_core::monitor_proto::{
    MonitorCommand, MonitorEvent, MonitorStatus, MonitorTunables, RemoteState,
};
use wsync_core::registry::Workspace;

pub struct MonitorProc {
    child: Child,
    stdin: ChildStdin,
    events: Receiver<MonitorEvent>,
    pub last_status: Option<MonitorStatus>,
    next_flush: u64,
}

impl MonitorProc {
    pub fn start(
        bin: &Path,
        workspace: Workspace,
        log_dir: &Path,
        runtime_dir: &Path,
    ) -> Result<Self> {
        Self::start_tuned(
            bin,
            workspace,
            log_dir,
            runtime_dir,
            MonitorTunables::default(),
        )
    }

    /// [`MonitorProc::start`] with tunables other than the defaults (a watch mode, a poll
    /// interval).
    pub fn start_tuned(
        bin: &Path,
        workspace: Workspace,
        log_dir: &Path,
        runtime_dir: &Path,
        tunables: MonitorTunables,
    ) -> Result<Self> {
        let mut child = Command::new(bin)
            .arg("--log-dir")
            .arg(log_dir)
            .arg("--runtime-dir")
            .arg(runtime_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take().context("monitor stdin")?;
        let stdout = child.stdout.take().context("monitor stdout")?;
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            while let Ok(event) = read_frame::<MonitorEvent>(&mut reader) {
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let mut monitor = Self {
            child,
            stdin,
            events,
            last_status: None,
            next_flush: 1,
        };
        monitor.send(&MonitorCommand::Start {
            workspace,
            tunables,
            progress: Vec::new(),
            pending_dir: None,
        })?;
        Ok(monitor)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send(&mut self, cmd: &MonitorCommand) -> Result<()> {
        self.stdin
            .write_all(&encode(cmd))
            .context("writing to monitor")?;
        self.stdin.flush().context("writing to monitor")
    }

    fn drain(&mut self, wait: Duration) -> Option<MonitorEvent> {
        let event = self.events.recv_timeout(wait).ok()?;
        if let MonitorEvent::Status { status } = &event {
            self.last_status = Some(status.clone());
        }
        Some(event)
    }

    /// Sends a flush and waits for its answer; fails if any remote lags.
    pub fn flush(&mut self, timeout: Duration) -> Result<()> {
        let id = self.next_flush;
        self.next_flush += 1;
        self.send(&MonitorCommand::Flush {
            id,
            timeout_ms: timeout.as_millis() as u64,
        })?;
        let deadline = Instant::now() + timeout + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(MonitorEvent::Flushed { id: got, lagging }) =
                self.drain(Duration::from_millis(50))
            {
                if got == id {
                    if lagging.is_empty() {
                        return Ok(());
                    }
                    bail!("flush: remotes lagging: {lagging:?}");
                }
            }
        }
        bail!("flush {id} not answered within {timeout:?}")
    }

    /// Waits until every remote reports in-sync with nothing pending.
    pub fn wait_in_sync(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.drain(Duration::from_millis(20));
            if let Some(status) = &self.last_status {
                if !status.remotes.is_empty()
                    && status
                        .remotes
                        .iter()
                        .all(|r| r.state == RemoteState::InSync && r.pending == 0)
                {
                    return Ok(());
                }
            }
        }
        bail!(
            "monitor not in sync within {timeout:?}: {:?}",
            self.last_status
        )
    }

    /// Total bytes the monitor reports sent, over all remotes. Status lines are rate-limited
    /// (ten a second), so the one after the last sync may trail a flush answer: read for
    /// 250 ms first.
    pub fn bytes_sent(&mut self) -> u64 {
        let until = Instant::now() + Duration::from_millis(250);
        while Instant::now() < until {
            self.drain(Duration::from_millis(10));
        }
        self.last_status
            .as_ref()
            .map_or(0, |s| s.remotes.iter().map(|r| r.bytes_sent).sum())
    }

    pub fn shutdown(mut self) {
        let _ = self.send(&MonitorCommand::Shutdown);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The monitor binary next to this one.
pub fn monitor_bin() -> Result<PathBuf> {
    sibling_bin("wsync-monitor")
}

/// A wsync binary in the same directory as this one (target/release).
pub fn sibling_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name(name);
    if !bin.is_file() {
        bail!(
            "{} not found: build with `cargo build --release --bins` (the scripts do)",
            bin.display()
        );
    }
    Ok(bin)
}
