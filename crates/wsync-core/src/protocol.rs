//! The daemon socket protocol: typed requests and responses, one compact JSON object per line.
//!
//! Every connection starts with [`Request::Hello`]; the daemon answers [`Response::Hello`] and the
//! client checks `protocol` before sending anything else. A connection may carry many requests.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::monitor_proto::MonitorStatus;
use crate::registry::Workspace;

/// Bumped on any incompatible change to [`Request`] or [`Response`].
pub const PROTOCOL_VERSION: u32 = 1;

/// A client's request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Opens a connection; answered by [`Response::Hello`].
    Hello { protocol: u32, version: String },
    /// Answered by [`Response::DaemonInfo`].
    // Empty struct variants, not unit variants: serde applies `deny_unknown_fields` only to
    // these, so `{"type":"shutdown","dry_run":true}` is refused instead of stopping the daemon.
    DaemonInfo {},
    /// Answered by [`Response::Workspaces`].
    List {},
    /// Answered by [`Response::Status`]; `None` means every workspace.
    Status {
        #[serde(default)]
        workspace: Option<String>,
    },
    /// Answered by [`Response::Workspace`] with the new entry.
    Add {
        path: PathBuf,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        excludes: Vec<String>,
    },
    /// Answered by [`Response::Done`].
    Remove { workspace: String },
    /// Answered by [`Response::Workspace`] with the updated entry.
    Attach {
        workspace: String,
        target: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        identity_file: Option<PathBuf>,
        #[serde(default)]
        ssh_options: Vec<String>,
        /// The CLI waits for the initial sync (a person is watching): the monitor reports
        /// rsync's progress during that sync only. Absent in old clients: `false`.
        #[serde(default)]
        wait: bool,
        /// The user confirmed (`wsync attach --overwrite`) that a non-empty target without a
        /// `.wsync-target` marker becomes the mirror: what the workspace lacks is deleted
        /// there. Without it such a target is refused with a preview. Absent in old clients:
        /// `false`.
        #[serde(default)]
        overwrite: bool,
        /// `wsync attach --keep-deleted DAYS`: the remote's `keep_deleted_days`. On a target
        /// already attached to the workspace it changes that remote's setting instead (the
        /// reply is the updated entry; no sync is waited for). Absent: 0 for a new remote.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep_deleted: Option<u32>,
        /// `wsync attach --transport`: the remote's [`crate::registry::Transport`]. Absent:
        /// `auto`.
        #[serde(default, skip_serializing_if = "crate::registry::Transport::is_auto")]
        transport: crate::registry::Transport,
        /// `wsync attach --rsync-path PATH`: what the SSH remote runs as rsync. Absent: `rsync`
        /// on its PATH.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rsync_path: Option<String>,
    },
    /// Answered by [`Response::Workspace`] with the updated entry.
    Detach { workspace: String, remote: String },
    /// Answered by [`Response::Workspace`]; persisted in the registry.
    Pause { workspace: String },
    /// Answered by [`Response::Workspace`]; persisted in the registry.
    Resume { workspace: String },
    /// Answered by [`Response::Flushed`] once every remote holds every change made before it.
    Flush {
        workspace: String,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Restarts the workspace's monitor and clears a `failed` state; answered by [`Response::Done`].
    Restart { workspace: String },
    /// Queues a full sync comparing every file by checksum to the workspace's remotes (only
    /// `remote` when set), through the same gates as every sync (`wsync verify --repair`);
    /// answered by [`Response::Done`] once the monitor has it (a flush then waits for it).
    Repair {
        workspace: String,
        #[serde(default)]
        remote: Option<String>,
    },
    /// Stops the daemon gracefully; answered by [`Response::Done`] before it exits.
    Shutdown {},
}

/// The daemon's reply to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Answers [`Request::Hello`].
    Hello {
        protocol: u32,
        version: String,
        pid: u32,
    },
    /// Answers [`Request::DaemonInfo`].
    DaemonInfo {
        protocol: u32,
        version: String,
        pid: u32,
        uptime_secs: u64,
        socket: PathBuf,
        registry: PathBuf,
        /// Watchdog passes since the daemon started: a client can wait for passes (e.g. to see
        /// that a failed monitor stays failed) instead of sleeping. 0 from an older daemon.
        #[serde(default)]
        watchdog_passes: u64,
    },
    /// Answers [`Request::List`].
    Workspaces { workspaces: Vec<Workspace> },
    /// Answers [`Request::Add`], [`Request::Attach`], [`Request::Detach`], pause and resume.
    Workspace { workspace: Workspace },
    /// Answers [`Request::Status`].
    Status { workspaces: Vec<WorkspaceStatus> },
    /// Answers [`Request::Flush`]: `lagging` names remotes not in sync by the deadline.
    Flushed {
        workspace: String,
        lagging: Vec<String>,
    },
    /// Answers requests that only need an acknowledgement.
    Done { message: String },
    /// Any request that failed; `message` is meant for the user and names the fix.
    Error { code: ErrorCode, message: String },
}

/// Why a request failed; the CLI maps these to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not a request (bad JSON, wrong shape, too large).
    BadRequest,
    /// The client speaks another protocol version.
    ProtocolMismatch,
    /// No such workspace or remote.
    NotFound,
    /// The request was understood but its arguments are not acceptable.
    Invalid,
    /// The operation did not complete in time.
    Timeout,
    /// The daemon failed internally (e.g. could not write the registry).
    Internal,
}

/// What the daemon knows about one workspace: its registry entry, its supervisor's view of the
/// monitor process, and the monitor's latest status report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceStatus {
    pub workspace: Workspace,
    pub monitor: SupervisorStatus,
    /// `None` until the monitor has reported.
    pub report: Option<MonitorStatus>,
}

/// The supervisor's view of a workspace's monitor process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorStatus {
    pub state: MonitorProcessState,
    pub pid: Option<u32>,
    /// Restarts after crashes since the daemon started (or since `wsync restart`).
    pub restarts: u32,
    /// How the last monitor process ended, e.g. "exit status 1" or "signal 9 (SIGKILL)".
    pub last_exit: Option<String>,
    /// The last lines of the monitor's log when it was marked failed.
    #[serde(default)]
    pub last_log_lines: Vec<String>,
    /// Unix milliseconds of the next restart attempt while backing off.
    pub next_restart_unix_ms: Option<u64>,
}

/// Lifecycle of a workspace's monitor process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorProcessState {
    /// No remotes: nothing to run.
    Idle,
    /// Paused by the user.
    Paused,
    Running,
    /// Running, but its heartbeats stopped (its event loop is stuck); killed and restarted
    /// like a crash once `MonitorUnresponsiveTimeoutMs` passes.
    Unresponsive,
    /// Crashed; waiting before the next restart.
    BackingOff,
    /// Crashed too often; waits for `wsync restart`.
    Failed,
    Stopped,
}
