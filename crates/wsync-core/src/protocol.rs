//! The daemon socket protocol: typed requests and responses, one compact JSON object per line.
//!
//! Every connection starts with [`Request::Hello`]; the daemon answers [`Response::Hello`] and the
//! client checks `protocol` before sending anything else. A connection may carry many requests;
//! after [`Request::Subscribe`] it also carries [`Response::Event`]s pushed by the daemon.
//! The whole contract, with the compatibility policy, is `docs/PROTOCOL.md`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::monitor_proto::WatchMode;
use crate::monitor_proto::{MonitorStatus, RemoteState};
use crate::registry::update::WorkspaceChanges;
use crate::registry::Workspace;

/// The protocol this build speaks. Bumped when a message is added (a client must know the daemon
/// understands it) or changed incompatibly; see the policy in `docs/PROTOCOL.md`.
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest protocol a daemon still serves: a client speaking it is answered in it.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// The first protocol with [`Request::Subscribe`] and [`Response::Event`].
pub const SUBSCRIBE_SINCE: u32 = 2;

/// The first protocol with [`Request::Update`] and [`Response::Updated`] (added to protocol 2
/// before any release spoke it: see `docs/PROTOCOL.md`).
pub const UPDATE_SINCE: u32 = 2;

impl Request {
    /// The oldest protocol that defines this request: a connection greeted with an older one
    /// is refused it, and a client talking to an older daemon does not send it.
    pub fn since(&self) -> u32 {
        match self {
            Request::Subscribe { .. } => SUBSCRIBE_SINCE,
            Request::Update { .. } => UPDATE_SINCE,
            _ => MIN_PROTOCOL_VERSION,
        }
    }

    /// The request's `type` on the wire, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::DaemonInfo {} => "daemon_info",
            Request::List {} => "list",
            Request::Status { .. } => "status",
            Request::Add { .. } => "add",
            Request::Remove { .. } => "remove",
            Request::Attach { .. } => "attach",
            Request::Detach { .. } => "detach",
            Request::Pause { .. } => "pause",
            Request::Resume { .. } => "resume",
            Request::Flush { .. } => "flush",
            Request::Restart { .. } => "restart",
            Request::Repair { .. } => "repair",
            Request::Shutdown {} => "shutdown",
            Request::Subscribe { .. } => "subscribe",
            Request::Update { .. } => "update",
        }
    }
}

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
    /// Answered by [`Response::Subscribed`]; from then on the connection also carries an
    /// [`Response::Event`] for each thing that happens (to `workspace` only, when set). Other
    /// requests keep working on the connection. Protocol 2 and later.
    Subscribe {
        #[serde(default)]
        workspace: Option<String>,
    },
    /// Changes a registered workspace's settings, all or none, with the checks of `add` and
    /// `attach`: a key of `changes` left out stays as it is, `null` resets it to its default,
    /// an unknown key is refused. Answered by [`Response::Updated`]; the monitor is restarted
    /// only when what it reads at start changed. Protocol 2 and later.
    Update {
        workspace: String,
        changes: WorkspaceChanges,
    },
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
    /// Answers [`Request::Subscribe`]: `workspace` is the filter (resolved to a name), `queue`
    /// how many events may wait for this subscriber before it is dropped as lagging.
    Subscribed {
        workspace: Option<String>,
        queue: u32,
    },
    /// One pushed event (only on a subscribed connection, never as an answer).
    Event { event: Event },
    /// Answers [`Request::Update`]: the entry as it is now, the keys whose value changed (empty:
    /// the workspace already had every value asked) and whether its monitor was restarted.
    Updated {
        workspace: Workspace,
        changed: Vec<String>,
        restarted: bool,
    },
}

/// Something that happened, pushed to subscribers as it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When the daemon learnt of it (unix milliseconds).
    pub unix_ms: u64,
    /// The workspace concerned; absent for events about the daemon or the subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What an [`Event`] reports; its `kind` field on the wire. Clients ignore kinds and fields
/// they do not know (new ones may be added without a protocol bump).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A remote entered a new state (`previous` is `None` for a remote seen for the first
    /// time since its monitor started); `pending` and `error` as in its status.
    RemoteState {
        remote: String,
        state: RemoteState,
        previous: Option<RemoteState>,
        pending: u64,
        error: Option<String>,
    },
    /// The changes waiting for a remote changed in number while its state stayed the same.
    Pending { remote: String, pending: u64 },
    /// One batch landed on a remote: whether it was a full sync, the paths it was asked to
    /// sync, the files and bytes it sent, how long its oldest change waited (microseconds),
    /// and the remote's change-to-remote latency (median and 99th percentile over the last
    /// changes, microseconds) once known. One event per batch, as the monitor reports it.
    Synced {
        remote: String,
        #[serde(default)]
        full: bool,
        #[serde(default)]
        paths: u64,
        files: u64,
        bytes: u64,
        #[serde(default)]
        oldest_change_us: Option<u64>,
        latency_p50_us: Option<u64>,
        latency_p99_us: Option<u64>,
    },
    /// A new error message: a remote's sync failed (`remote` set), or watching degraded.
    Error {
        remote: Option<String>,
        message: String,
    },
    /// Syncing of the workspace halted for safety; `wsync resume` lifts it.
    Halted { reason: String },
    /// The halt was lifted.
    HaltLifted {},
    /// Proof of sync: a change was seen arriving on the remote at `verified_unix_ms`.
    Verified {
        remote: String,
        verified_unix_ms: u64,
    },
    /// The workspace's monitor process changed state (started, crashed and backing off,
    /// failed, killed as unresponsive); `detail` says how it ended, when it did.
    Monitor {
        state: MonitorProcessState,
        detail: Option<String>,
    },
    /// The workspace's registry entry changed.
    Workspace { change: WorkspaceChange },
    /// The subscriber fell `queue` events behind and is dropped: the last event on the
    /// connection, which the daemon then closes. Subscribe again (and re-read `status`).
    Lagged { queue: u32 },
    /// The daemon is stopping: the last event on the connection.
    DaemonStopping {},
}

/// How a registry entry changed ([`EventKind::Workspace`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceChange {
    Added,
    Removed,
    Attached,
    Detached,
    Paused,
    Resumed,
    /// A remote's settings changed (e.g. `keep_deleted_days`).
    Updated,
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
    /// The watch mode the workspace's monitor is started with: its own `watch_mode`, else the
    /// daemon's `WatchMode` (what `auto` then chose is `report.watch_backend`). Absent from
    /// older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_mode: Option<WatchMode>,
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
