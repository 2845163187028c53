//! The notification hook (`HookCommand` in the config): an executable run when a remote enters
//! `error` or `halted`, a workspace's monitor is killed as `unresponsive`, or a workspace is
//! marked `failed`, so users can wire up desktop notifications or alerts.
//!
//! It fires on the transition only: [`AlertTracker`] remembers which remotes were reported and
//! re-arms a remote once it is `in-sync` again (a remote that flaps between `error` and
//! `backoff` is reported once). The hook is executed directly — no shell, argv of one element —
//! with stdin from /dev/null, `WSYNC_WORKSPACE`, `WSYNC_REMOTE` (empty for `failed` and
//! `unresponsive`),
//! `WSYNC_STATE` and `WSYNC_ERROR` in its environment, in its own process group, and its whole
//! group is terminated after [`HOOK_TIMEOUT`] (see [`process::terminate_group`]). It runs on its
//! own thread: the daemon never waits for it. Its output goes to the daemon's log.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use wsync_core::monitor_proto::{MonitorStatus, RemoteState};

use crate::process::{self, ExitDescription};

/// How long a hook may run before its process group is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a hook past its timeout gets after SIGTERM before SIGKILL.
const HOOK_STOP_GRACE: Duration = Duration::from_secs(1);
/// Lines of hook output copied to the daemon's log, at most.
const MAX_OUTPUT_LINES: usize = 20;

/// One notification: what the hook sees in its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEvent {
    pub workspace: String,
    /// `None` when the whole workspace is concerned (`failed`, `unresponsive`).
    pub remote: Option<String>,
    /// `error`, `halted`, `unresponsive` or `failed`.
    pub state: &'static str,
    pub error: String,
}

impl HookEvent {
    /// The environment variables the hook gets.
    pub fn env(&self) -> [(&'static str, &str); 4] {
        [
            ("WSYNC_WORKSPACE", &self.workspace),
            ("WSYNC_REMOTE", self.remote.as_deref().unwrap_or("")),
            ("WSYNC_STATE", self.state),
            ("WSYNC_ERROR", &self.error),
        ]
    }
}

/// Which remotes have been reported, so each problem is reported once.
#[derive(Debug, Default)]
pub struct AlertTracker {
    /// (workspace, remote) → the state last reported.
    alerted: HashMap<(String, String), &'static str>,
}

fn alert_state(state: RemoteState) -> Option<&'static str> {
    match state {
        RemoteState::Error => Some("error"),
        RemoteState::Halted => Some("halted"),
        _ => None,
    }
}

impl AlertTracker {
    /// The events a new status report of `workspace` causes.
    pub fn on_status(&mut self, workspace: &str, status: &MonitorStatus) -> Vec<HookEvent> {
        let mut events = Vec::new();
        for remote in &status.remotes {
            let key = (workspace.to_owned(), remote.name.clone());
            match alert_state(remote.state) {
                Some(state) if self.alerted.get(&key) != Some(&state) => {
                    self.alerted.insert(key, state);
                    let error = match remote.state {
                        RemoteState::Halted => status.halted.clone(),
                        _ => None,
                    }
                    .or_else(|| remote.last_error.clone())
                    .unwrap_or_default();
                    events.push(HookEvent {
                        workspace: workspace.to_owned(),
                        remote: Some(remote.name.clone()),
                        state,
                        error,
                    });
                }
                Some(_) => {}
                // Recovered: the next problem is news again. Retrying (backoff, syncing) is not.
                None if remote.state == RemoteState::InSync => {
                    self.alerted.remove(&key);
                }
                None => {}
            }
        }
        // Detached remotes are forgotten.
        self.alerted.retain(|(ws, remote), _| {
            ws != workspace || status.remotes.iter().any(|r| &r.name == remote)
        });
        events
    }

    /// Forgets a removed workspace.
    pub fn forget(&mut self, workspace: &str) {
        self.alerted.retain(|(ws, _), _| ws != workspace);
    }
}

/// The configured hook, if any, and what it has reported.
#[derive(Debug, Default)]
pub struct Hooks {
    command: Option<PathBuf>,
    pub timeout: Duration,
    tracker: AlertTracker,
}

impl Hooks {
    pub fn new(command: Option<PathBuf>) -> Self {
        Self {
            command,
            timeout: HOOK_TIMEOUT,
            tracker: AlertTracker::default(),
        }
    }

    /// Runs the hook for every remote of `workspace` that just entered `error` or `halted`.
    pub fn on_status(&mut self, workspace: &str, status: &MonitorStatus) {
        for event in self.tracker.on_status(workspace, status) {
            self.fire(event);
        }
    }

    /// Runs the hook for a workspace just marked `failed`.
    pub fn on_failed(&mut self, workspace: &str, last_exit: &str) {
        self.fire(HookEvent {
            workspace: workspace.to_owned(),
            remote: None,
            state: "failed",
            error: format!("the monitor crashed too often (last: {last_exit}); fix the cause, then run `wsync restart {workspace}`"),
        });
    }

    /// Runs the hook for a workspace whose monitor was just killed for sending no heartbeat
    /// for `silent` (it is restarted like a crashed one).
    pub fn on_unresponsive(&mut self, workspace: &str, silent: Duration) {
        self.fire(HookEvent {
            workspace: workspace.to_owned(),
            remote: None,
            state: "unresponsive",
            error: format!("the monitor sent no heartbeat for {} s (its event loop was stuck); it was killed and is restarted — if this repeats, see `wsync logs {workspace}`", silent.as_secs()),
        });
    }

    /// Forgets a removed workspace.
    pub fn forget(&mut self, workspace: &str) {
        self.tracker.forget(workspace);
    }

    /// Starts the hook for `event` on its own thread (nothing happens without a hook).
    fn fire(&self, event: HookEvent) {
        let Some(command) = self.command.clone() else {
            return;
        };
        let timeout = self.timeout;
        let spawned = std::thread::Builder::new()
            .name("hook".into())
            .spawn(move || run(&command, &event, timeout));
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread for the hook: {e}");
        }
    }
}

/// How the hook ended; `Display` is the text logged for it.
#[derive(Debug)]
pub enum HookOutcome {
    /// It ended on its own.
    Exited(ExitDescription),
    /// It ran past the timeout and its group was terminated.
    Killed {
        after: Duration,
        exit: ExitDescription,
    },
    /// It could not be started.
    NotRun(HookError),
}

impl std::fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookOutcome::Exited(exit) => write!(f, "{exit}"),
            HookOutcome::Killed { after, exit } => write!(f, "killed after {after:?} ({exit})"),
            HookOutcome::NotRun(e) => write!(f, "{e}"),
        }
    }
}

/// Why the hook could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot create a pipe: {0}")]
    Pipe(#[source] std::io::Error),
    #[error("cannot run it: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Runs `command` for `event` and waits for it, at most `timeout` (then terminates its process
/// group); logs what happened and returns how it ended.
pub fn run(command: &Path, event: &HookEvent, timeout: Duration) -> HookOutcome {
    let (reader, writer) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(pair) => pair,
        Err(e) => return log_failure(command, event, HookError::Pipe(e.into())),
    };
    let reader = std::fs::File::from(reader);
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return log_failure(command, event, HookError::Pipe(e)),
    };
    let mut cmd = Command::new(command);
    cmd.envs(event.env())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0);
    let mut spawned = cmd.spawn();
    // A script being written right now (or by a concurrent fork) is briefly busy.
    for _ in 0..5 {
        match &spawned {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(20));
                spawned = cmd.spawn();
            }
            _ => break,
        }
    }
    // Our copies of the write end must go, or the reader never sees EOF.
    drop(cmd);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return log_failure(command, event, HookError::Spawn(e)),
    };
    tracing::info!(
        hook = %command.display(),
        pid = child.id(),
        workspace = %event.workspace,
        remote = event.remote.as_deref().unwrap_or(""),
        state = event.state,
        "running the hook"
    );
    let pid = child.id();
    // Not joined: a grandchild that escaped the process group may hold the pipe open.
    let _ = std::thread::Builder::new()
        .name("hook-output".into())
        .spawn(move || {
            for line in BufReader::new(reader)
                .lines()
                .map_while(Result::ok)
                .take(MAX_OUTPUT_LINES)
            {
                tracing::info!(pid, "hook: {line}");
            }
        });
    let outcome = if process::wait_exit(&[pid], timeout) {
        // Whatever the hook left running in its group goes too (before reaping, so the pgid
        // is still ours).
        process::kill_group(pid);
        HookOutcome::Exited(child.wait().into())
    } else {
        process::terminate_group(pid, HOOK_STOP_GRACE);
        HookOutcome::Killed {
            after: timeout,
            exit: child.wait().into(),
        }
    };
    match &outcome {
        HookOutcome::Exited(exit) if exit.is_success() => {
            tracing::info!(hook = %command.display(), pid, "hook finished");
        }
        _ => tracing::warn!(hook = %command.display(), pid, "hook ended with {outcome}"),
    }
    outcome
}

fn log_failure(command: &Path, event: &HookEvent, problem: HookError) -> HookOutcome {
    tracing::warn!(
        hook = %command.display(),
        workspace = %event.workspace,
        "hook not run: {problem} (check HookCommand in the config file)"
    );
    HookOutcome::NotRun(problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsync_core::monitor_proto::RemoteStatus;

    fn report(states: &[(&str, RemoteState)]) -> MonitorStatus {
        MonitorStatus {
            workspace: "w".into(),
            remotes: states
                .iter()
                .map(|(name, state)| RemoteStatus {
                    name: (*name).into(),
                    state: *state,
                    last_sync_unix_ms: None,
                    files_sent: 0,
                    bytes_sent: 0,
                    pending: 0,
                    consecutive_failures: 1,
                    last_error: Some(format!("{name} broke")),
                    next_retry_unix_ms: None,
                    progress: None,
                })
                .collect(),
            ..MonitorStatus::default()
        }
    }

    fn states(events: &[HookEvent]) -> Vec<(String, &'static str)> {
        events
            .iter()
            .map(|e| (e.remote.clone().unwrap_or_default(), e.state))
            .collect()
    }

    #[test]
    fn fires_on_the_transition_only_and_rearms_when_in_sync() {
        use RemoteState::*;
        let mut t = AlertTracker::default();
        assert!(t.on_status("w", &report(&[("a", InitialSync)])).is_empty());
        let e = t.on_status("w", &report(&[("a", Error), ("b", InSync)]));
        assert_eq!(states(&e), [("a".into(), "error")]);
        assert_eq!(e[0].error, "a broke");
        // Persisting, or retrying in between, is not news.
        assert!(t.on_status("w", &report(&[("a", Error)])).is_empty());
        assert!(t.on_status("w", &report(&[("a", Backoff)])).is_empty());
        assert!(t.on_status("w", &report(&[("a", Syncing)])).is_empty());
        assert!(t.on_status("w", &report(&[("a", Error)])).is_empty());
        // A different problem is.
        let mut halted = report(&[("a", Halted)]);
        halted.halted = Some("root missing".into());
        let e = t.on_status("w", &halted);
        assert_eq!(states(&e), [("a".into(), "halted")]);
        assert_eq!(e[0].error, "root missing");
        // Recovery re-arms.
        assert!(t.on_status("w", &report(&[("a", InSync)])).is_empty());
        assert_eq!(t.on_status("w", &report(&[("a", Error)])).len(), 1);
    }

    #[test]
    fn workspaces_are_independent_and_detached_remotes_forgotten() {
        use RemoteState::*;
        let mut t = AlertTracker::default();
        assert_eq!(t.on_status("w", &report(&[("a", Error)])).len(), 1);
        assert_eq!(t.on_status("v", &report(&[("a", Error)])).len(), 1);
        // Detached, then attached again with the same name and still broken: news.
        assert!(t.on_status("w", &report(&[])).is_empty());
        assert_eq!(t.on_status("w", &report(&[("a", Error)])).len(), 1);
        t.forget("v");
        assert_eq!(t.on_status("v", &report(&[("a", Error)])).len(), 1);
    }

    fn event() -> HookEvent {
        HookEvent {
            workspace: "proj".into(),
            remote: Some("box".into()),
            state: "error",
            error: "it's \"broken\"; $(rm -rf /)".into(),
        }
    }

    #[test]
    fn the_hook_gets_its_environment_without_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = dir.path().join("hook");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s|%s|%s|%s' \"$WSYNC_WORKSPACE\" \"$WSYNC_REMOTE\" \"$WSYNC_STATE\" \"$WSYNC_ERROR\" > {}\n",
                out.display()
            ),
        )
        .unwrap();
        let mut perms = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&script, perms).unwrap();
        let ended = run(&script, &event(), HOOK_TIMEOUT);
        assert!(
            matches!(&ended, HookOutcome::Exited(exit) if exit.is_success()),
            "{ended}"
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "proj|box|error|it's \"broken\"; $(rm -rf /)"
        );
    }

    #[test]
    fn a_slow_hook_is_killed_and_a_missing_one_reported() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("hook");
        std::fs::write(&script, "#!/bin/sh\nsleep 30 & sleep 30\n").unwrap();
        let mut perms = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&script, perms).unwrap();
        let started = std::time::Instant::now();
        let ended = run(&script, &event(), Duration::from_millis(300));
        assert!(matches!(ended, HookOutcome::Killed { .. }), "{ended}");
        assert!(ended.to_string().starts_with("killed after"), "{ended}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let ended = run(&dir.path().join("nope"), &event(), HOOK_TIMEOUT);
        assert!(
            matches!(ended, HookOutcome::NotRun(HookError::Spawn(_))),
            "{ended}"
        );
        assert!(ended.to_string().starts_with("cannot run it"), "{ended}");
    }
}
