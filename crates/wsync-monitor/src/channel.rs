//! The monitor's channel to the daemon: reading [`MonitorCommand`] lines from stdin (the first
//! must be `start`), writing [`MonitorEvent`] lines to stdout, and the guards that keep the
//! monitor from outliving its parent (parent-death signal, the test crash switch).

use std::path::PathBuf;

use tokio::io::{AsyncBufRead, BufReader, Stdin};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use wsync_core::framing::{asynchronous, FrameError};
use wsync_core::monitor_proto::{MonitorCommand, MonitorEvent, MonitorTunables};
use wsync_core::registry::Workspace;

/// Test switch: when this variable names an existing file, the monitor exits with
/// [`crate::exit_codes::TEST_CRASH`] at startup (the supervisor tests use it).
pub const CRASH_FILE_ENV: &str = "WSYNC_TEST_MONITOR_CRASH_FILE";

/// True when the crash switch is set and its file exists.
pub fn crash_requested() -> bool {
    std::env::var_os(CRASH_FILE_ENV)
        .map(PathBuf::from)
        .is_some_and(|path| path.exists())
}

/// Asks the kernel to send SIGTERM when the parent dies (best effort; logged on failure). Where
/// the kernel cannot (macOS), stdin EOF and the driver's parent-pid check end the monitor.
pub fn die_with_parent() {
    if let Err(e) = wsync_core::platform::die_with_parent(nix::sys::signal::Signal::SIGTERM) {
        eprintln!("wsync-monitor: warning: cannot set the parent-death signal: {e}");
    }
}

pub type Input = BufReader<Stdin>;

/// The `start` message: the workspace, the tunables, the remotes whose initial sync reports
/// progress, and where pending paths are persisted.
pub type Start = (Workspace, MonitorTunables, Vec<String>, Option<PathBuf>);

/// Why the monitor cannot start (exit status [`crate::exit_codes::BAD_START`]).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the first message must be start, got {0}")]
    NotStart(String),
    #[error("stdin closed before the start message")]
    Closed,
    #[error("bad start message: {0}")]
    Undecodable(FrameError),
    #[error("bad start message: {0}")]
    Invalid(String),
}

/// Reads the first message, which must be `start`.
pub async fn read_start(input: &mut Input) -> Result<Start, StartError> {
    match asynchronous::read_frame::<MonitorCommand, _>(input).await {
        Ok(MonitorCommand::Start {
            workspace,
            tunables,
            progress,
            pending_dir,
        }) => Ok((workspace, tunables, progress, pending_dir)),
        Ok(other) => Err(StartError::NotStart(format!("{other:?}"))),
        Err(FrameError::Closed) => Err(StartError::Closed),
        Err(e) => Err(StartError::Undecodable(e)),
    }
}

/// Forwards commands until EOF (the channel then closes, which the engine reads as shutdown).
/// Undecodable lines are logged and skipped; a broken stream ends the channel.
pub async fn read_commands<R: AsyncBufRead + Unpin>(
    mut input: R,
    tx: UnboundedSender<MonitorCommand>,
) {
    loop {
        match asynchronous::read_frame::<MonitorCommand, _>(&mut input).await {
            Ok(cmd) => {
                if tx.send(cmd).is_err() {
                    return;
                }
            }
            Err(FrameError::Undecodable(e)) => {
                tracing::error!("ignoring undecodable command: {e}");
            }
            Err(FrameError::Closed) => return,
            Err(e) => {
                tracing::error!("control channel broken: {e}");
                return;
            }
        }
    }
}

/// Writes events to stdout until the engine drops its sender; stops at the first write error
/// (the daemon is gone; the engine notices the closed channel).
pub async fn write_events(mut rx: UnboundedReceiver<MonitorEvent>) {
    let mut out = tokio::io::stdout();
    while let Some(event) = rx.recv().await {
        if let Err(e) = asynchronous::write_frame(&mut out, &event).await {
            tracing::warn!("cannot write to stdout: {e}");
            return;
        }
    }
}
