//! The contract between `wsyncd` and each `wsync-monitor` it starts, written down once here:
//! the daemon side implements it in `wsyncd`'s `monitor_proc`, the monitor side in
//! `wsync-monitor`. The types below are its messages.
//!
//! # Process
//! - argv: `wsync-monitor --log-dir <LogDirectory> --runtime-dir <directory of the daemon
//!   socket>`; the environment is the daemon's (so `WSYNC_CONFIG_PATH` and `WSYNC_LOG` carry
//!   over). The runtime directory holds the monitor's ssh ControlPath sockets.
//! - It runs in its own process group (pgid = its pid), so stopping it reaches its ssh
//!   children and a terminal's Ctrl-C does not. Each rsync it runs has a process group of its
//!   own (so a detach can kill one remote's transfer whole), killed and waited for before the
//!   monitor exits, and dies with the monitor (`PR_SET_PDEATHSIG`) if it is killed.
//! - It must not outlive the daemon: it sets `PR_SET_PDEATHSIG`, and EOF on stdin means the
//!   daemon is gone, so a `kill -9` of `wsyncd` leaves no monitor behind.
//!
//! # Channels (the core framing: one compact JSON object per line)
//! - stdin, control: [`MonitorCommand`]s. The first is always [`MonitorCommand::Start`]; then
//!   any of the others. **EOF on stdin without a `Shutdown` first means the daemon is gone:
//!   the monitor kills its rsyncs and exits at once.**
//! - stdout, status: [`MonitorEvent`]s only — the latest `Status` per workspace is what
//!   `wsync status` shows, and `Flushed` answers a `Flush`. Logs never go to stdout.
//! - stderr: free text. The daemon copies each line into its log and keeps the last few, shown
//!   as `last_log_lines` when the workspace is marked failed.
//!
//! # Messages
//! - Control: `start` carries the workspace (name, path, remotes, ...) and the tunables
//!   (`settle_ms`, `max_latency_ms`, `proof_interval_ms`, `watch_mode` — omitted for `auto`);
//!   then any of `attach {remote}`, `update {remote}` (new settings
//!   for an attached remote), `detach {remote: name}` (answered by `detached {remote}` once
//!   nothing more is written there),
//!   `pause`, `resume` (also lifts a safety halt), `flush {id, timeout_ms}`, `resync`,
//!   `checksum_resync {remote?}`,
//!   `shutdown` (no new batch; the transfers under way finish, then exit 0; SIGTERM abandons
//!   them). Undecodable lines after `start` are logged and skipped. Besides EOF and the
//!   parent-death signal, the monitor checks its parent pid every second.
//! - Status: `status {status}` whenever the status changes, at most ten a second; the latest
//!   state is always sent, so the last line after a sync is current. `flushed {id, lagging}`
//!   answers each flush when every remote holds every change made before it, or at the
//!   deadline with the remotes still behind in `lagging`. `heartbeat` every
//!   [`HEARTBEAT_INTERVAL`] from the monitor's event loop itself, so a loop stuck in a call
//!   goes silent: once a monitor has sent its first heartbeat, the daemon shows it
//!   `unresponsive` after [`UNRESPONSIVE_AFTER_BEATS`] missed ones and kills and restarts it
//!   after `MonitorUnresponsiveTimeoutMs`, as if it had crashed.
//! - Progress: while a watched initial sync runs (its remote is named in `start.progress`, or
//!   attached with `attach.progress`: a CLI waits for it), the remote's status carries
//!   `progress` (bytes and files done, totals once rsync's file list is complete), parsed from
//!   rsync's `--info=progress2`. Every other sync runs without it (it costs ~10% on many small
//!   files).
//!
//! # Lifecycle
//! - Every start is a fresh `Start`, and the monitor does a full initial sync on `Start`, so a
//!   restarted monitor catches up with whatever changed while it was down: by checksum when
//!   the tree is small enough, and the paths in its pending files (`start.pending_dir`) by
//!   content.
//! - Stopping: the daemon sends `Shutdown` and closes stdin, waits half of
//!   `MonitorStopGraceMs`, then SIGTERMs the group (which abandons transfers under way), waits
//!   the rest of the grace, then SIGKILLs the group and reaps the monitor. An exit the daemon
//!   did not ask for is a crash: it is restarted with backoff, or the workspace is marked
//!   failed after too many.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::registry::{Remote, Workspace};

/// How often a monitor sends [`MonitorEvent::Heartbeat`].
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// Heartbeats a monitor may miss before the daemon reports it `unresponsive`.
pub const UNRESPONSIVE_AFTER_BEATS: u32 = 3;

/// Control messages, daemon → monitor, one JSON object per line on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum MonitorCommand {
    /// Must be the first line: the workspace to serve and the tunables.
    Start {
        workspace: Workspace,
        tunables: MonitorTunables,
        /// Names of remotes whose initial sync reports rsync's progress (someone waits for it);
        /// every other full sync runs without `--info=progress2`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        progress: Vec<String>,
        /// The directory for the monitor's pending-change files (one per remote: the paths
        /// still to sync, kept while paused or halted and at shutdown, read at the next start
        /// and sent by content). Omitted: nothing is persisted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_dir: Option<PathBuf>,
    },
    /// Adds a remote without disturbing the others (it gets its own initial sync, which
    /// reports rsync's progress when `progress` is set).
    Attach {
        remote: Remote,
        #[serde(default)]
        progress: bool,
    },
    /// Replaces the settings of an attached remote of the same name and target (its
    /// `keep_deleted_days`); the batches after it use them, nothing is re-synced.
    Update { remote: Remote },
    /// Removes a remote: its rsyncs are killed (each runs in its own process group, killed
    /// whole) and waited for, its in-process executor call or agent session ends, nothing new
    /// starts for it; then [`MonitorEvent::Detached`] confirms.
    Detach { remote: String },
    /// Stops pushing; changes keep being collected.
    Pause,
    /// Resumes pushing; also lifts a safety halt (the user's confirmation).
    Resume,
    /// Answered by [`MonitorEvent::Flushed`] with the same id once every remote holds every
    /// change made before the command, or when `timeout_ms` passes.
    Flush { id: u64, timeout_ms: u64 },
    /// Queues a full sync to every remote.
    Resync,
    /// Queues a full sync comparing every file by checksum (`rsync --checksum`) to every
    /// remote, or only to `remote` when set (`wsync verify --repair`). It passes the same gates
    /// as any sync: protect rules, the target marker, the deletion budget.
    ChecksumResync {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote: Option<String>,
    },
    /// Start no new batch, let the transfers under way finish, and exit 0 (SIGTERM abandons
    /// them; EOF after `Shutdown` does not).
    Shutdown,
}

/// Tunables the daemon passes from its config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorTunables {
    pub settle_ms: u64,
    pub max_latency_ms: u64,
    /// How often an idle remote gets a proof of sync (0: never); see `ProofIntervalSecs`.
    #[serde(default = "default_proof_interval_ms")]
    pub proof_interval_ms: u64,
    /// Which watch backend the monitor uses (`WatchMode`); omitted for `auto`, so older
    /// monitors and daemons agree on the default.
    #[serde(default, skip_serializing_if = "WatchMode::is_auto")]
    pub watch_mode: WatchMode,
    /// How often the poll backend walks the tree (`PollIntervalMs`); omitted at the default
    /// (2000), so older monitors parse it.
    #[serde(
        default = "default_poll_interval_ms",
        skip_serializing_if = "is_default_poll_interval_ms"
    )]
    pub poll_interval_ms: u64,
    /// The `Transport` config key: `rsync` sends every remote's changes by rsync, whatever
    /// the remote's own setting; omitted for `auto`.
    #[serde(default, skip_serializing_if = "crate::registry::Transport::is_auto")]
    pub transport: crate::registry::Transport,
}

/// The `WatchMode` config key: how a monitor learns of changes in its workspace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    /// inotify, except on network and FUSE filesystems (poll), falling back to poll when no
    /// inotify instance is left.
    #[default]
    Auto,
    /// One inotify watch per directory (falls back to poll when no instance is left).
    Inotify,
    /// The `notify` crate, one recursive watch on the root (FSEvents on macOS, its own
    /// inotify backend on Linux).
    Notify,
    /// Walk the tree every `PollIntervalMs` (two seconds by default) and compare each entry's
    /// stamps.
    Poll,
}

impl WatchMode {
    /// Every mode, as the config file spells it.
    pub const NAMES: &[&str] = &["auto", "inotify", "notify", "poll"];

    pub fn is_auto(&self) -> bool {
        *self == WatchMode::Auto
    }

    /// Parses the config file's spelling (`auto`, `inotify`, `notify`, `poll`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "auto" => Some(Self::Auto),
            "inotify" => Some(Self::Inotify),
            "notify" => Some(Self::Notify),
            "poll" => Some(Self::Poll),
            _ => None,
        }
    }
}

/// The watch backend a monitor actually runs (what `auto` chose, or the poll fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchBackendKind {
    Inotify,
    Notify,
    Poll,
}

fn default_proof_interval_ms() -> u64 {
    DEFAULT_PROOF_INTERVAL.as_millis() as u64
}

fn default_poll_interval_ms() -> u64 {
    DEFAULT_POLL_INTERVAL.as_millis() as u64
}

fn is_default_poll_interval_ms(ms: &u64) -> bool {
    *ms == default_poll_interval_ms()
}

/// How often the poll backend walks the tree by default (`PollIntervalMs`): two seconds.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The default proof-of-sync interval: a minute.
pub const DEFAULT_PROOF_INTERVAL: Duration = Duration::from_secs(60);

impl MonitorTunables {
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }
    pub fn max_latency(&self) -> Duration {
        Duration::from_millis(self.max_latency_ms)
    }
    /// `None`: proofs of sync are off.
    pub fn proof_interval(&self) -> Option<Duration> {
        (self.proof_interval_ms > 0).then(|| Duration::from_millis(self.proof_interval_ms))
    }
    /// How often the poll backend walks the tree (never below 100 ms, whatever was sent).
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(100))
    }
}

impl Default for MonitorTunables {
    fn default() -> Self {
        Self {
            settle_ms: 5,
            max_latency_ms: 100,
            proof_interval_ms: default_proof_interval_ms(),
            watch_mode: WatchMode::Auto,
            poll_interval_ms: default_poll_interval_ms(),
            transport: crate::registry::Transport::Auto,
        }
    }
}

/// Status messages, monitor → daemon, one JSON object per line on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum MonitorEvent {
    /// The full current status; sent on every state change (rate-limited) and after each sync.
    Status { status: MonitorStatus },
    /// Answers [`MonitorCommand::Flush`]; `lagging` names remotes not in sync.
    Flushed { id: u64, lagging: Vec<String> },
    /// Sent every [`HEARTBEAT_INTERVAL`] by the event loop: it still turns.
    Heartbeat,
    /// One batch landed on a remote (sent as it lands, before the status that counts it), so
    /// the daemon's `synced` events are one per batch, not one per rate-limited status.
    Synced { remote: String, batch: SyncedBatch },
    /// Answers [`MonitorCommand::Detach`]: nothing more will be written to that remote's
    /// target by this monitor (sent at once for a remote it does not have).
    Detached { remote: String },
}

/// What one landed batch carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedBatch {
    /// A full sync (initial, resync, checksum pass) rather than an incremental batch.
    pub full: bool,
    /// Paths the batch was asked to sync (0 for a full sync).
    pub paths: u64,
    /// Files rsync or the executor transferred, and the bytes sent.
    pub files: u64,
    pub bytes: u64,
    /// How long the batch's oldest change waited until it was on the remote (microseconds);
    /// `None` when the batch carried no watched change (a full sync at start).
    pub oldest_change_us: Option<u64>,
    /// The remote's change-to-remote latency (median, 99th percentile; microseconds) over
    /// its last changes, this batch's included; `None` before any change landed.
    pub latency_p50_us: Option<u64>,
    pub latency_p99_us: Option<u64>,
}

/// A monitor's report on its workspace and every remote.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MonitorStatus {
    pub workspace: String,
    /// The watch backend in use (`None` from a monitor that predates the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_backend: Option<WatchBackendKind>,
    /// Kernel watches in use (inotify: one per directory; 0 for notify and poll).
    pub watches: u64,
    /// Kernel queue overflows and rescans requested by the watcher.
    pub overflows: u64,
    /// Full rescans done for any reason.
    pub rescans: u64,
    /// Set when watching is degraded (e.g. the watch limit was hit) and what is done instead.
    pub watch_error: Option<String>,
    /// Set while syncing is halted for safety (root missing, replaced or emptied).
    pub halted: Option<String>,
    pub paused: bool,
    pub remotes: Vec<RemoteStatus>,
}

/// Per-remote sync state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStatus {
    pub name: String,
    pub state: RemoteState,
    /// Unix milliseconds of the last successful sync.
    pub last_sync_unix_ms: Option<u64>,
    pub files_sent: u64,
    pub bytes_sent: u64,
    /// Paths changed but not yet synced (a full resync counts as 1 when nothing else is known).
    pub pending: u64,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// Unix milliseconds of the next retry while in backoff.
    pub next_retry_unix_ms: Option<u64>,
    /// How far the running full sync (initial sync or resync) is, from rsync's progress
    /// output; absent between full syncs and during incremental batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<SyncProgress>,
    /// Unix milliseconds of the last proof of sync: a change seen arriving on the remote
    /// (a batch that landed, or the idle probe's file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_unix_ms: Option<u64>,
    /// Change-to-remote latency and throughput; absent until a change has landed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    /// Both ends' rsync as the monitor found them before its first transfer (and whether
    /// deletions go by the fallback); absent until checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync: Option<crate::rsync_version::RsyncEnds>,
    /// How small changes reach the remote now; absent from a monitor that predates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportStatus>,
}

/// The transport a remote's small changes go by (big files, full syncs and `verify` always
/// go by rsync).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransportStatus {
    /// A local target: the executor in the monitor's own process.
    InProcess,
    /// An SSH target: the agent on the remote, of this version, speaking this protocol.
    Agent { version: String, protocol: u32 },
    /// rsync for everything, and why (the setting, or the agent could not be used).
    Rsync { why: String },
}

impl TransportStatus {
    /// The one word the status table shows.
    pub fn word(&self) -> &'static str {
        match self {
            TransportStatus::InProcess => "in-process",
            TransportStatus::Agent { .. } => "agent",
            TransportStatus::Rsync { .. } => "rsync",
        }
    }
}

/// Change-to-remote latency over the last 1,000 changes, and what the last minute sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Throughput {
    /// Median time from a change's event until the batch holding it was on the remote.
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    /// Changes the percentiles cover (at most 1,000).
    pub samples: u64,
    pub files_last_minute: u64,
    pub bytes_last_minute: u64,
}

/// Progress of a full sync, from rsync's `--info=progress2`. Totals are `None` until known:
/// rsync builds its file list incrementally, so the total grows while it is still scanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncProgress {
    /// Bytes of file data done (sent, or found already up to date).
    pub bytes_done: u64,
    /// Total bytes of file data, once the file list is complete (estimated from rsync's
    /// whole-percent figure until 100 %).
    pub bytes_total: Option<u64>,
    /// Files and directories checked.
    pub files_done: u64,
    /// Files and directories in the transfer, once the file list is complete.
    pub files_total: Option<u64>,
}

/// Where a remote is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemoteState {
    InitialSync,
    InSync,
    Syncing,
    Backoff,
    Halted,
    Error,
    Paused,
    /// Claims nothing is pending, but no change has been seen arriving for three proof
    /// intervals: something between the watcher and the remote stopped silently.
    Unverified,
    /// A filesystem call on its target (or on the workspace root) passed its deadline: a hung
    /// mount. `last_error` names the call and its path; it recovers when the call returns.
    Stalled,
}
