//! Human output: aligned tables for `list` and `status` (problems first, state coloured on
//! terminals), one line per event for `events`, and relative times such as "3 s ago".

use std::time::SystemTime;

use wsync_core::monitor_proto::{RemoteState, RemoteStatus};
use wsync_core::protocol::{Event, EventKind, MonitorProcessState, WorkspaceStatus};
use wsync_core::registry::Workspace;

/// Longest "last error" shown in the table; `--json` has the full text.
const MAX_ERROR_CHARS: usize = 80;

/// Now, in Unix milliseconds.
pub fn now_unix_ms() -> u64 {
    wsync_core::unix_ms(SystemTime::now())
}

/// "3 s ago", "2 min ago", "5 h ago", "4 d ago"; "never" for `None`, "just now" under a second
/// (and for times in the future, which clock adjustments can produce).
pub fn ago(now_ms: u64, then_ms: Option<u64>) -> String {
    let Some(then) = then_ms else {
        return "never".into();
    };
    let secs = now_ms.saturating_sub(then) / 1000;
    match secs {
        0 => "just now".into(),
        1..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// Microseconds as milliseconds: "0.8 ms", "12 ms", "1.4 s".
pub fn millis(us: u64) -> String {
    match us {
        0..=9_999 => format!("{:.1} ms", us as f64 / 1000.0),
        10_000..=999_999 => format!("{} ms", us / 1000),
        _ => format!("{:.1} s", us as f64 / 1_000_000.0),
    }
}

/// A duration in the two largest units: "45 s", "2 min 5 s", "3 h 4 min", "2 d 3 h".
pub fn duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        3600..=86_399 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// One line of the status table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    pub workspace: String,
    pub remote: String,
    pub state: &'static str,
    pub last_sync_unix_ms: Option<u64>,
    /// The last proof of sync (a change seen arriving on the remote).
    pub verified_unix_ms: Option<u64>,
    /// Change-to-remote latency: p50 and p99, in microseconds.
    pub latency_us: Option<(u64, u64)>,
    pub pending: Option<u64>,
    pub restarts: u32,
    pub pid: Option<u32>,
    /// The workspace's watch mode and the backend its monitor runs ([`watch_cell`]).
    pub watch: String,
    /// How small changes reach the remote: `agent`, `in-process`, or `rsync: why`.
    pub transport: Option<String>,
    /// Both ends' rsync: `local / remote`, `+fallback` when deletions go by the filter list.
    pub rsync: Option<String>,
    pub last_error: Option<String>,
}

/// Longest reason for the rsync transport shown in the table; `--json` has the full text.
const MAX_TRANSPORT_WHY_CHARS: usize = 60;

/// The table's transport cell: the word, and for rsync why.
fn transport_cell(transport: &wsync_core::monitor_proto::TransportStatus) -> String {
    use wsync_core::monitor_proto::TransportStatus;
    match transport {
        TransportStatus::Rsync { why } => {
            format!("rsync: {}", one_line(why, MAX_TRANSPORT_WHY_CHARS))
        }
        other => other.word().to_owned(),
    }
}

/// The RSYNC cell: both ends' versions, and whether deletions go by the fallback.
fn rsync_cell(ends: &wsync_core::rsync_version::RsyncEnds) -> String {
    let label = |v: &Option<wsync_core::rsync_version::RsyncVersion>| {
        v.as_ref().map_or("?".to_owned(), |v| v.label())
    };
    let mut cell = format!("{} / {}", label(&ends.local), label(&ends.remote));
    if ends.deletion_fallback {
        cell.push_str(" +fallback");
    }
    cell
}

/// Sort key: problems first, the worst first; everything else keeps the daemon's order.
fn severity(state: &str) -> u8 {
    match state {
        "failed" => 0,
        "unresponsive" | "halted" => 1,
        "error" | "stalled" => 2,
        "backoff" => 3,
        "unverified" => 4,
        _ => 10,
    }
}

/// One event as a line: "21:40:01 project/mirror syncing (was in-sync), 3 pending".
pub fn event_line(event: &Event) -> String {
    let secs = (event.unix_ms / 1000) % 86_400;
    let clock = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    let place = |remote: Option<&str>| match (event.workspace.as_deref(), remote) {
        (Some(ws), Some(r)) => format!("{ws}/{r}"),
        (Some(ws), None) => ws.to_owned(),
        (None, _) => "wsyncd".to_owned(),
    };
    let (at, what) = match &event.kind {
        EventKind::RemoteState {
            remote,
            state,
            previous,
            pending,
            error,
        } => {
            let mut what = remote_state_name(*state).to_owned();
            if let Some(previous) = previous {
                what += &format!(" (was {})", remote_state_name(*previous));
            }
            if *pending > 0 {
                what += &format!(", {pending} pending");
            }
            if let Some(error) = error.as_deref().filter(|_| *state != RemoteState::InSync) {
                what += &format!(": {}", one_line(error, MAX_ERROR_CHARS));
            }
            (place(Some(remote)), what)
        }
        EventKind::Pending { remote, pending } => {
            (place(Some(remote)), format!("{pending} pending"))
        }
        EventKind::Synced {
            remote,
            full,
            files,
            bytes,
            latency_p50_us,
            ..
        } => {
            let kind = if *full { "full sync: " } else { "" };
            let mut what = format!("{kind}synced {files} file(s), {bytes} bytes");
            if let Some(us) = latency_p50_us {
                what += &format!(", latency {}", millis(*us));
            }
            (place(Some(remote)), what)
        }
        EventKind::Error { remote, message } => (
            place(remote.as_deref()),
            format!("error: {}", one_line(message, MAX_ERROR_CHARS)),
        ),
        EventKind::Halted { reason } => (place(None), format!("halted: {reason}")),
        EventKind::HaltLifted {} => (place(None), "halt lifted".to_owned()),
        EventKind::Verified { remote, .. } => (place(Some(remote)), "verified".to_owned()),
        EventKind::Monitor { state, detail } => {
            let state = serde_json::to_value(state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let mut what = format!("monitor {state}");
            if let Some(detail) = detail {
                what += &format!(" ({detail})");
            }
            (place(None), what)
        }
        EventKind::Workspace { change } => {
            let change = serde_json::to_value(change)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            (place(None), format!("workspace {change}"))
        }
        EventKind::Lagged { queue } => (
            place(None),
            format!("this stream fell {queue} events behind and is dropped"),
        ),
        EventKind::DaemonStopping {} => (place(None), "stopping".to_owned()),
    };
    format!("{clock} {at} {what}")
}

pub fn remote_state_name(state: RemoteState) -> &'static str {
    match state {
        RemoteState::InitialSync => "initial-sync",
        RemoteState::InSync => "in-sync",
        RemoteState::Syncing => "syncing",
        RemoteState::Backoff => "backoff",
        RemoteState::Halted => "halted",
        RemoteState::Error => "error",
        RemoteState::Paused => "paused",
        RemoteState::Unverified => "unverified",
        RemoteState::Stalled => "stalled",
    }
}

fn row_state(ws: &WorkspaceStatus, remote: Option<&RemoteStatus>) -> &'static str {
    match ws.monitor.state {
        MonitorProcessState::Failed => "failed",
        MonitorProcessState::BackingOff => "backoff",
        MonitorProcessState::Unresponsive => "unresponsive",
        MonitorProcessState::Stopped => "stopped",
        MonitorProcessState::Idle => "idle",
        MonitorProcessState::Paused => "paused",
        MonitorProcessState::Running if ws.workspace.paused => "paused",
        MonitorProcessState::Running => match (&ws.report, remote) {
            (Some(report), _) if report.halted.is_some() => "halted",
            (_, Some(r)) => remote_state_name(r.state),
            _ => "starting",
        },
    }
}

fn row_error(ws: &WorkspaceStatus, remote: Option<&RemoteStatus>, state: &str) -> Option<String> {
    let report = ws.report.as_ref();
    let text = remote
        .and_then(|r| r.last_error.clone())
        .or_else(|| report.and_then(|r| r.halted.clone()))
        .or_else(|| match state {
            "failed" | "backoff" => ws
                .monitor
                .last_exit
                .as_ref()
                .map(|e| format!("monitor ended: {e}")),
            "unresponsive" => Some(format!(
                "monitor stuck (no heartbeats); restarted automatically, see `wsync logs {}`",
                ws.workspace.name
            )),
            _ => None,
        })
        .or_else(|| report.and_then(|r| r.watch_error.clone()))?;
    Some(one_line(&text, MAX_ERROR_CHARS))
}

fn one_line(text: &str, max_chars: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max_chars {
        return flat;
    }
    let mut cut: String = flat.chars().take(max_chars - 1).collect();
    cut.push('…');
    cut
}

/// The WATCH cell: the mode the monitor was started with and, when it differs in kind, the
/// backend it runs (`inotify`, `poll`, `auto→poll` for what auto chose, `inotify→poll` for
/// the fallback when no inotify instance was left).
pub fn watch_cell(ws: &WorkspaceStatus) -> String {
    use wsync_core::monitor_proto::{WatchBackendKind, WatchMode};
    let mode = ws.watch_mode.map(|m| match m {
        WatchMode::Auto => "auto",
        WatchMode::Inotify => "inotify",
        WatchMode::Notify => "notify",
        WatchMode::Poll => "poll",
    });
    let backend = ws
        .report
        .as_ref()
        .and_then(|r| r.watch_backend)
        .map(|b| match b {
            WatchBackendKind::Inotify => "inotify",
            WatchBackendKind::Notify => "notify",
            WatchBackendKind::Poll => "poll",
        });
    match (mode, backend) {
        (Some(m), Some(b)) if m == b => m.to_owned(),
        (Some(m), Some(b)) => format!("{m}→{b}"),
        (Some(m), None) => m.to_owned(),
        (None, Some(b)) => b.to_owned(),
        (None, None) => "-".to_owned(),
    }
}

/// One row per remote (one row for a workspace without remotes), problems first.
pub fn status_rows(statuses: &[WorkspaceStatus]) -> Vec<StatusRow> {
    let mut rows = Vec::new();
    for ws in statuses {
        let reported = |name: &str| {
            ws.report
                .as_ref()
                .and_then(|r| r.remotes.iter().find(|s| s.name == name))
        };
        let names: Vec<Option<&str>> = if ws.workspace.remotes.is_empty() {
            vec![None]
        } else {
            ws.workspace
                .remotes
                .iter()
                .map(|r| Some(r.name.as_str()))
                .collect()
        };
        for name in names {
            let remote = name.and_then(reported);
            let state = row_state(ws, remote);
            rows.push(StatusRow {
                workspace: ws.workspace.name.clone(),
                remote: name.unwrap_or("-").to_owned(),
                state,
                last_sync_unix_ms: remote.and_then(|r| r.last_sync_unix_ms),
                verified_unix_ms: remote.and_then(|r| r.verified_unix_ms),
                latency_us: remote
                    .and_then(|r| r.throughput)
                    .map(|t| (t.latency_p50_us, t.latency_p99_us)),
                pending: remote.map(|r| r.pending),
                restarts: ws.monitor.restarts,
                pid: ws.monitor.pid,
                watch: watch_cell(ws),
                transport: remote
                    .and_then(|r| r.transport.as_ref())
                    .map(transport_cell),
                rsync: remote.and_then(|r| r.rsync.as_ref()).map(rsync_cell),
                last_error: row_error(ws, remote, state),
            });
        }
    }
    rows.sort_by_key(|r| severity(r.state));
    rows
}

fn colour_code(state: &str) -> Option<&'static str> {
    match state {
        "failed" | "unresponsive" | "halted" | "error" | "stalled" => Some("1;31"),
        "backoff" | "stopped" | "unverified" => Some("33"),
        "syncing" | "initial-sync" | "starting" => Some("36"),
        "in-sync" => Some("32"),
        "paused" => Some("2"),
        _ => None,
    }
}

/// Aligns cells into columns; `paint` optionally wraps a cell (after padding is computed).
fn table(header: &[&str], rows: &[Vec<String>], paint: impl Fn(usize, &str) -> String) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for (index, row) in std::iter::once(&header_row).chain(rows).enumerate() {
        let mut line = String::new();
        for (col, cell) in row.iter().enumerate() {
            let pad = widths[col].saturating_sub(cell.chars().count());
            let text = if index == 0 {
                cell.clone()
            } else {
                paint(col, cell)
            };
            line.push_str(&text);
            if col + 1 < row.len() {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The `wsync status` table.
pub fn status_table(statuses: &[WorkspaceStatus], now_ms: u64, colour: bool) -> String {
    if statuses.is_empty() {
        return "no workspaces; add one with `wsync add <PATH>`\n".into();
    }
    let rows: Vec<Vec<String>> = status_rows(statuses)
        .into_iter()
        .map(|r| {
            let (last_sync, verified) = if r.remote == "-" {
                ("-".into(), "-".into())
            } else {
                (
                    ago(now_ms, r.last_sync_unix_ms),
                    ago(now_ms, r.verified_unix_ms),
                )
            };
            vec![
                r.workspace,
                r.remote,
                r.state.to_owned(),
                last_sync,
                verified,
                r.latency_us.map_or("-".into(), |(p50, p99)| {
                    format!("{} / {}", millis(p50), millis(p99))
                }),
                r.pending.map_or("-".into(), |p| p.to_string()),
                r.restarts.to_string(),
                r.pid.map_or("-".into(), |p| p.to_string()),
                r.watch,
                r.transport.unwrap_or_else(|| "-".into()),
                r.rsync.unwrap_or_else(|| "-".into()),
                r.last_error.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = [
        "WORKSPACE",
        "REMOTE",
        "STATE",
        "LAST SYNC",
        "VERIFIED",
        "LATENCY p50/p99",
        "PENDING",
        "RESTARTS",
        "PID",
        "WATCH",
        "TRANSPORT",
        "RSYNC local/remote",
        "LAST ERROR",
    ];
    table(&header, &rows, |col, cell| match colour_code(cell) {
        Some(code) if colour && col == 2 => format!("\x1b[{code}m{cell}\x1b[0m"),
        _ => cell.to_owned(),
    })
}

/// The `wsync list` table.
pub fn list_table(workspaces: &[Workspace]) -> String {
    if workspaces.is_empty() {
        return "no workspaces; add one with `wsync add <PATH>`\n".into();
    }
    let rows: Vec<Vec<String>> = workspaces
        .iter()
        .map(|w| {
            let remotes = if w.remotes.is_empty() {
                "-".to_owned()
            } else {
                w.remotes
                    .iter()
                    .map(|r| match r.keep_deleted_days {
                        0 => format!("{}={}", r.name, r.target),
                        days => format!("{}={} (keeps deleted {days} d)", r.name, r.target),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                w.name.clone(),
                w.path.display().to_string(),
                remotes,
                if w.paused { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    table(&["NAME", "PATH", "REMOTES", "PAUSED"], &rows, |_, c| {
        c.to_owned()
    })
}

/// Whether to colour output: stdout is a terminal and `NO_COLOR` is unset or empty.
pub fn use_colour() -> bool {
    use std::io::IsTerminal;
    colour_allowed(
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stdout().is_terminal(),
    )
}

/// The `NO_COLOR` convention (no-color.org): colour only on a terminal, and never when
/// `NO_COLOR` is set to a non-empty value.
pub fn colour_allowed(no_color: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests;
