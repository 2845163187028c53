//! The notification hook (`HookCommand` in the config): an executable run when a remote enters
//! `error`, `halted`, `stalled` or `unverified`, a workspace's monitor is killed as
//! `unresponsive`, or a workspace is marked `failed`, so users can wire up desktop notifications
//! or alerts.
//!
//! It fires on the transition only: [`AlertTracker`] remembers which remotes were reported and
//! re-arms a remote once it is `in-sync` again (a remote that flaps between `error` and
//! `backoff` is reported once). The hook is executed directly — no shell, argv of one element —
//! with stdin from /dev/null, `WSYNC_WORKSPACE`, `WSYNC_REMOTE` (empty for `failed` and
//! `unresponsive`), `WSYNC_STATE` and `WSYNC_ERROR` in its environment, in its own process
//! group, below a small runner process that kills every descendant it leaves — at the end, or
//! after [`HOOK_TIMEOUT`] (`HookTimeoutMs`) — even one that left the group with `setsid` (see
//! [`subreaper_main`]). It runs on its own thread: the daemon never waits for it. Its output
//! goes to the daemon's log.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use wsync_core::monitor_proto::{MonitorStatus, RemoteState};
use wsync_core::platform;

use crate::process::{self, ExitDescription};

/// How long a hook may run before it and everything it started are killed (`HookTimeoutMs`).
pub const HOOK_TIMEOUT: Duration = wsync_core::config::DEFAULT_HOOK_TIMEOUT;
/// How long a hook past its timeout gets after SIGTERM before SIGKILL.
const HOOK_STOP_GRACE: Duration = Duration::from_secs(1);
/// The longest the runner spends killing and reaping what the hook left.
const REAP_DEADLINE: Duration = Duration::from_secs(5);
/// What the daemon gives the runner, once told to stop, before it kills the runner too.
const RUNNER_STOP_GRACE: Duration = Duration::from_secs(8);
/// The flag that makes `wsyncd` the runner of one hook instead of the daemon.
pub const RUNNER_FLAG: &str = "--hook-runner";
/// The runner's exit code when the hook could not be executed (as a shell reports it).
const NOT_EXECUTED: i32 = 127;
/// Lines of hook output copied to the daemon's log, at most.
const MAX_OUTPUT_LINES: usize = 20;

/// One notification: what the hook sees in its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEvent {
    pub workspace: String,
    /// `None` when the whole workspace is concerned (`failed`, `unresponsive`).
    pub remote: Option<String>,
    /// `error`, `halted`, `stalled`, `unverified`, `unresponsive` or `failed`.
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
        RemoteState::Unverified => Some("unverified"),
        RemoteState::Stalled => Some("stalled"),
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
    pub fn new(command: Option<PathBuf>, timeout: Duration) -> Self {
        Self {
            command,
            timeout,
            tracker: AlertTracker::default(),
        }
    }

    /// Runs the hook for every remote of `workspace` that just entered `error`, `halted`,
    /// `stalled` or `unverified`.
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
            .spawn(move || run(&platform::current_exe(), &command, &event, timeout));
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

/// Runs `command` for `event` below `runner` (`wsyncd --hook-runner`, see [`subreaper_main`])
/// and waits for it, at most `timeout`: then the runner is told to stop (SIGTERM), which
/// terminates the hook and kills everything it left. Logs what happened and returns how it
/// ended.
pub fn run(runner: &Path, command: &Path, event: &HookEvent, timeout: Duration) -> HookOutcome {
    // Checked here so a missing or non-executable hook is reported as such (the runner would
    // only be able to say "exit status 127").
    if let Err(e) = nix::unistd::access(command, nix::unistd::AccessFlags::X_OK) {
        return log_failure(command, event, HookError::Spawn(e.into()));
    }
    let (reader, writer) = match platform::pipe_cloexec() {
        Ok(pair) => pair,
        Err(e) => return log_failure(command, event, HookError::Pipe(e.into())),
    };
    let reader = std::fs::File::from(reader);
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return log_failure(command, event, HookError::Pipe(e)),
    };
    let mut cmd = Command::new(runner);
    cmd.arg(RUNNER_FLAG)
        .arg(command)
        .envs(event.env())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0);
    let spawned = cmd.spawn();
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
    // Not joined: should the runner itself be killed, what it left may hold the pipe open.
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
        // The runner's group is the runner alone (the hook has its own); before reaping, so
        // the pgid is still ours.
        process::kill_group(pid);
        HookOutcome::Exited(child.wait().into())
    } else {
        // The runner stops the hook (SIGTERM, a grace, then SIGKILL to all it left); SIGKILL to
        // the runner is the last resort.
        process::terminate_group(pid, RUNNER_STOP_GRACE);
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

/// `wsyncd --hook-runner HOOK`: runs HOOK (environment and stdio inherited from the daemon's
/// [`run`]) in a process group of its own, waits for it to exit or for SIGTERM (the daemon's
/// timeout, or the daemon's death via the parent-death signal), then kills every process the
/// hook left and exits with the hook's status (re-raising the signal that ended it).
///
/// Why a subreaper: a hook's descendant that calls `setsid` leaves the hook's process group, so
/// no `killpg` reaches it, and once its parent exits it is reparented to init and nothing links
/// it to the hook any more. Tracking descendants by pid from the daemon loses exactly those (a
/// `setsid sleep &` whose parent exits at once is reparented before any scan can see it). With
/// `prctl(PR_SET_CHILD_SUBREAPER)` the runner becomes their parent instead of init, so "every
/// child of the runner" is complete: kill them, reap them, repeat until `ECHILD`. The runner is
/// a process of its own (not the daemon) because the subreaper bit would otherwise collect every
/// orphan of the monitors too.
pub fn subreaper_main(hook: &Path) -> ! {
    std::process::exit(match subreap(hook) {
        Ok(status) => exit_like(status),
        Err(e) => {
            eprintln!("wsyncd hook runner: {e}");
            NOT_EXECUTED
        }
    })
}

fn subreap(hook: &Path) -> std::io::Result<std::process::ExitStatus> {
    use nix::sys::signal::Signal;
    let parent = nix::unistd::getppid().as_raw() as u32;
    // Without a subreaper (macOS) only what stays in the hook's process group is killed.
    platform::become_subreaper()?;
    platform::die_with_parent(Signal::SIGTERM)?;
    // SIGTERM and SIGINT are read instead of ending the runner: the clean-up below must run.
    let stops = platform::HeldSignals::hold(&[Signal::SIGTERM, Signal::SIGINT])?;
    let mut cmd = Command::new(hook);
    cmd.process_group(0);
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
    let mut child = spawned.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot run {}: {e}", hook.display()))
    })?;
    let pid = child.id();
    loop {
        if process::has_exited(pid) {
            break;
        }
        // The daemon gone before the parent-death signal was armed (or where there is none)
        // counts as a stop too.
        let stop = stops.arrived() || !platform::parent_is(parent);
        if stop {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
            process::wait_exit(&[pid], HOOK_STOP_GRACE);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Before reaping the hook, so its pgid cannot have been reused.
    process::kill_group(pid);
    let status = child.wait()?;
    process::kill_and_reap_children(REAP_DEADLINE);
    stops.release()?;
    Ok(status)
}

/// The runner's exit code for the hook's `status`; for a signal, first the same signal on the
/// runner itself, so the daemon sees the hook's own death.
fn exit_like(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return code;
    }
    let signal = status.signal().unwrap_or(0);
    if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
        let _ = nix::sys::signal::raise(sig);
    }
    // A signal whose default is to be ignored (or that std ignores, SIGPIPE): as a shell says it.
    128 + signal
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
                    verified_unix_ms: None,
                    throughput: None,
                    transport: None,
                    rsync: None,
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
        // A hung mount is news too, once, until the remote is in sync again.
        let e = t.on_status("w", &report(&[("a", Stalled), ("b", InSync)]));
        assert_eq!(states(&e), [("a".into(), "stalled")]);
        assert_eq!(e[0].error, "a broke");
        assert!(t.on_status("w", &report(&[("a", Stalled)])).is_empty());
        assert!(t.on_status("w", &report(&[("a", InSync)])).is_empty());
        assert_eq!(t.on_status("w", &report(&[("a", Stalled)])).len(), 1);
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
    fn a_missing_or_non_executable_hook_is_reported_without_running_anything() {
        let dir = tempfile::tempdir().unwrap();
        // Never reached: the runner is only started for a hook that can be executed.
        let runner = dir.path().join("no-runner");
        let ended = run(&runner, &dir.path().join("nope"), &event(), HOOK_TIMEOUT);
        assert!(
            matches!(ended, HookOutcome::NotRun(HookError::Spawn(_))),
            "{ended}"
        );
        assert!(ended.to_string().starts_with("cannot run it"), "{ended}");
        let script = dir.path().join("hook");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let ended = run(&runner, &script, &event(), HOOK_TIMEOUT);
        assert!(
            matches!(ended, HookOutcome::NotRun(HookError::Spawn(_))),
            "{ended}"
        );
    }
}
