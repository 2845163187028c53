//! One `wsync-monitor` child process: how it is spawned, talked to and stopped — the daemon's
//! side of the contract in [`wsync_core::monitor_proto`] (argv, process group, the stdin and
//! stdout channels, stderr, stopping), which is written down there once.
//!
//! Here: the executable is `MonitorExecutablePath`, else `wsync-monitor` next to the `wsyncd`
//! executable, else `wsync-monitor` on `PATH`. Its three pipes are served by three tasks on the
//! daemon's tokio runtime, not by threads, so the daemon's thread count does not grow with the
//! number of monitors: one writes queued [`MonitorCommand`]s to its stdin, one decodes its
//! stdout into [`MonitorEvent`]s for the daemon's [`EventSink`], one logs its stderr and keeps
//! the last [`STDERR_TAIL_LINES`] for `last_log_lines`. Stopping and reaping go through
//! [`crate::process`], which never signals a group whose leader has been reaped.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use wsync_core::framing::{asynchronous, FrameError};
use wsync_core::monitor_proto::{MonitorCommand, MonitorEvent, MonitorTunables};
use wsync_core::registry::Workspace;

use crate::process::{self, ExitDescription};
use crate::ssh_masters::SshMasters;
use crate::state::{EventSink, MonitorMessage};

/// Lines of a monitor's stderr kept for `last_log_lines`.
pub const STDERR_TAIL_LINES: usize = 20;

/// The last lines a monitor wrote on stderr.
pub type StderrTail = Arc<Mutex<VecDeque<String>>>;

/// What every monitor is started with.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub executable: PathBuf,
    pub log_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub tunables: MonitorTunables,
    /// The runtime whose tasks serve the monitors' pipes.
    pub runtime: tokio::runtime::Handle,
    /// Handed to every monitor in `start.pending_dir`.
    pub pending_dir: Option<PathBuf>,
}

impl LaunchSpec {
    /// `configured`, else `wsync-monitor` next to our executable, else `wsync-monitor` on PATH.
    pub fn find_executable(configured: Option<&PathBuf>) -> PathBuf {
        if let Some(path) = configured {
            return path.clone();
        }
        if let Some(beside) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("wsync-monitor")))
            .filter(|p| p.is_file())
        {
            return beside;
        }
        PathBuf::from("wsync-monitor")
    }
}

/// Why a monitor could not be started. The message is what `wsync status` shows as
/// `last_exit` (a failed start counts as a crash), so it carries the OS error itself.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start monitor {}: {source} (set MonitorExecutablePath in the config)", executable.display())]
    Exec {
        executable: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect the pipes of the monitor of {workspace}: {source}")]
    Pipes {
        workspace: String,
        source: std::io::Error,
    },
}

/// A running monitor, owned by its workspace's slot (or by whoever is stopping it).
#[derive(Debug)]
pub struct RunningMonitor {
    child: Child,
    pub pid: u32,
    pub generation: u64,
    pub started: Instant,
    commands: UnboundedSender<MonitorCommand>,
    /// The ssh masters of its SSH remotes, closed once it has been reaped.
    masters: Mutex<SshMasters>,
}

impl RunningMonitor {
    /// Spawns the monitor for `workspace` and sends it `Start`. Its stdout events go to
    /// `events` tagged with `generation`, so a replaced monitor's late events are ignored.
    /// `progress` names the remotes whose initial sync reports rsync's progress.
    pub fn spawn(
        launch: &LaunchSpec,
        workspace: &Workspace,
        progress: Vec<String>,
        generation: u64,
        events: EventSink,
        tail: StderrTail,
    ) -> Result<Self, SpawnError> {
        let mut command = Command::new(&launch.executable);
        command
            .arg("--log-dir")
            .arg(&launch.log_dir)
            .arg("--runtime-dir")
            .arg(&launch.runtime_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = spawn_on_lasting_thread(command).map_err(|source| SpawnError::Exec {
            executable: launch.executable.clone(),
            source,
        })?;
        let pid = child.id();
        let (tx, rx) = unbounded_channel();
        let start = MonitorCommand::Start {
            workspace: workspace.clone(),
            // The config's tunables with the workspace's own overrides.
            tunables: workspace.tuning.apply(&launch.tunables),
            progress,
            pending_dir: launch.pending_dir.clone(),
        };
        let mut masters = SshMasters::new(&launch.runtime_dir, &workspace.name);
        masters.on_command(&start);
        // The receiver is alive (it is in `rx`), so this cannot fail.
        let _ = tx.send(start);
        let name = workspace.name.clone();
        let pipes = (|| -> std::io::Result<_> {
            // Registering the pipes with the runtime's reactor needs its context.
            let _context = launch.runtime.enter();
            let stdin = child.stdin.take().ok_or_else(missing_pipe)?;
            let stdout = child.stdout.take().ok_or_else(missing_pipe)?;
            let stderr = child.stderr.take().ok_or_else(missing_pipe)?;
            Ok((
                pipe::Sender::from_owned_fd(OwnedFd::from(stdin))?,
                pipe::Receiver::from_owned_fd(OwnedFd::from(stdout))?,
                pipe::Receiver::from_owned_fd(OwnedFd::from(stderr))?,
            ))
        })();
        let mut monitor = Self {
            child,
            pid,
            generation,
            started: Instant::now(),
            commands: tx,
            masters: Mutex::new(masters),
        };
        let (stdin, stdout, stderr) = match pipes {
            Ok(pipes) => pipes,
            Err(source) => {
                monitor.kill_and_reap();
                return Err(SpawnError::Pipes {
                    workspace: name,
                    source,
                });
            }
        };
        launch.runtime.spawn(write_commands(stdin, rx));
        let n = name.clone();
        launch
            .runtime
            .spawn(async move { read_events(stdout, n, generation, &events).await });
        launch
            .runtime
            .spawn(async move { read_stderr(stderr, &name, pid, tail).await });
        Ok(monitor)
    }

    /// Queues a command for the monitor's stdin; false when its stdin is already closed.
    pub fn send(&self, command: MonitorCommand) -> bool {
        if let Ok(mut masters) = self.masters.lock() {
            masters.on_command(&command);
        }
        self.commands.send(command).is_ok()
    }

    /// `Some(how it ended)` when the process has exited (then the group is killed and the
    /// child reaped); `None` while it runs. Never blocks.
    pub fn try_reap(&mut self) -> Option<ExitDescription> {
        if !process::has_exited(self.pid) {
            return None;
        }
        let exit = self.kill_and_reap();
        // The caller holds the daemon's lock: no process waits here.
        self.take_masters().close_in_background();
        Some(exit)
    }

    /// Stops the monitor (see the module docs); blocks for at most about `grace`.
    pub fn stop(mut self, grace: Duration) -> ExitDescription {
        let _ = self.commands.send(MonitorCommand::Shutdown);
        // Closing our end of the channel makes the writer task close stdin after `Shutdown`.
        let (tx, _) = unbounded_channel();
        drop(std::mem::replace(&mut self.commands, tx));
        // Half the grace to finish on its own (it lets the transfers under way end), the rest
        // after SIGTERM.
        let half = grace / 2;
        if !process::wait_exit(&[self.pid], half)
            && !process::terminate_group(self.pid, grace.saturating_sub(half))
        {
            tracing::warn!(
                pid = self.pid,
                "monitor did not stop within {grace:?}; killed its process group"
            );
        }
        let exit = self.kill_and_reap();
        // Waited for: at shutdown the daemon exits right after.
        self.take_masters().close();
        exit
    }

    fn take_masters(&mut self) -> SshMasters {
        match self.masters.get_mut() {
            Ok(masters) => std::mem::take(masters),
            Err(poisoned) => std::mem::take(poisoned.into_inner()),
        }
    }

    /// Kills the monitor's whole group at once and reaps it (it stopped answering: nothing
    /// it has under way is worth waiting for), then closes its ssh masters. Blocks until the
    /// leader is reaped: call it with the daemon's lock released.
    pub fn kill(mut self) -> ExitDescription {
        let exit = self.kill_and_reap();
        self.take_masters().close();
        exit
    }

    /// Kills the whole group now (any survivors) and reaps the leader.
    fn kill_and_reap(&mut self) -> ExitDescription {
        process::kill_group(self.pid);
        self.child.wait().into()
    }
}

type Job = Box<dyn FnOnce() + Send>;

static SPAWNER: OnceLock<Result<Mutex<mpsc::Sender<Job>>, String>> = OnceLock::new();

/// Forks `command` from one thread that lives as long as the daemon. The monitor asks for
/// `PR_SET_PDEATHSIG`, which fires when the *thread* that forked it exits, and handlers run on
/// tokio's blocking pool, whose idle threads retire: a monitor forked there would be killed
/// seconds later.
fn spawn_on_lasting_thread(mut command: Command) -> std::io::Result<Child> {
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("monitor-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map(|_| Mutex::new(tx))
            .map_err(|e| format!("cannot start the monitor-spawner thread: {e}"))
    });
    let sender = spawner
        .as_ref()
        .map_err(|e| std::io::Error::other(e.clone()))?;
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = reply_tx.send(command.spawn());
    });
    sender
        .lock()
        .map_err(|_| std::io::Error::other("monitor-spawner lock poisoned"))?
        .send(job)
        .map_err(|_| std::io::Error::other("monitor-spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("monitor-spawner thread is gone"))?
}

fn missing_pipe() -> std::io::Error {
    std::io::Error::other("child pipe missing")
}

async fn write_commands(
    mut stdin: impl AsyncWrite + Unpin,
    mut commands: UnboundedReceiver<MonitorCommand>,
) {
    while let Some(command) = commands.recv().await {
        if let Err(e) = asynchronous::write_frame(&mut stdin, &command).await {
            tracing::debug!("monitor stdin closed: {e}");
            break;
        }
    }
    // Dropping stdin here is the monitor's EOF.
}

/// Decodes the monitor's stdout and delivers each event to `events`, until EOF.
async fn read_events(
    stdout: impl AsyncRead + Unpin,
    workspace: String,
    generation: u64,
    events: &EventSink,
) {
    let mut reader = BufReader::new(stdout);
    loop {
        let event: MonitorEvent = match asynchronous::read_frame(&mut reader).await {
            Ok(event) => event,
            Err(FrameError::Undecodable(e)) => {
                tracing::warn!(workspace, "ignoring undecodable line from monitor: {e}");
                continue;
            }
            Err(FrameError::Closed) => return,
            Err(e) => {
                tracing::warn!(workspace, "monitor status channel broken: {e}");
                break;
            }
        };
        let message = MonitorMessage {
            workspace: workspace.clone(),
            generation,
            event,
        };
        if !events.deliver(message) {
            break;
        }
    }
    // Keep draining so the monitor never blocks on a full pipe.
    let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
}

async fn read_stderr(stderr: impl AsyncRead + Unpin, workspace: &str, pid: u32, tail: StderrTail) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
        if line.is_empty() {
            continue;
        }
        tracing::info!(target: "wsyncd::monitor_stderr", workspace, pid, "{line}");
        if let Ok(mut tail) = tail.lock() {
            if tail.len() >= STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stdout_events_reach_the_sink_tagged_and_bad_lines_are_skipped() {
        let stdout = concat!(
            r#"{"event":"flushed","id":1,"lagging":[]}"#,
            "\n",
            "not json\n",
            r#"{"event":"flushed","id":2,"lagging":["box"]}"#,
            "\n",
        );
        let (sink, inbox) = EventSink::channel();
        read_events(stdout.as_bytes(), "proj".into(), 7, &sink).await;
        let got: Vec<(String, u64, MonitorEvent)> = inbox
            .try_iter()
            .map(|m| (m.workspace, m.generation, m.event))
            .collect();
        let flushed = |id, lagging: &[&str]| MonitorEvent::Flushed {
            id,
            lagging: lagging.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_eq!(
            got,
            [
                ("proj".to_owned(), 7, flushed(1, &[])),
                ("proj".to_owned(), 7, flushed(2, &["box"])),
            ]
        );
    }

    #[tokio::test]
    async fn a_reader_whose_sink_is_gone_keeps_draining() {
        let (sink, inbox) = EventSink::channel();
        drop(inbox);
        let line = format!("{}\n", r#"{"event":"flushed","id":1,"lagging":[]}"#);
        let mut stdout = std::io::Cursor::new(line.repeat(1000).into_bytes());
        read_events(&mut stdout, "proj".into(), 1, &sink).await;
        assert_eq!(stdout.position() as usize, stdout.get_ref().len());
    }
}
