//! Request handlers: one function per [`Request`], each answering with the [`Response`] the
//! protocol names. Mutations validate with the registry's checks, save the registry atomically
//! and only then change the in-memory state and reply; a failed save leaves everything as it was.
//! Waiting (stopping a monitor, a flush) always happens with the state lock released.
//!
//! Nothing here touches a user's path with the lock held: a WORKSPACE argument given as a path
//! is resolved first ([`workspace_ref`]), and the registry's checks, which look at the paths
//! they validate, run on a copy of the registry ([`check_off_lock`]) — both in a check process
//! of [`crate::path_check`], with its deadline. So a path on a hung mount fails its own request
//! ("did not respond within 10 s") while every other request is answered and the watchdog keeps
//! supervising.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use wsync_core::monitor_proto::MonitorCommand;
use wsync_core::protocol::{ErrorCode, Request, Response, WorkspaceChange, PROTOCOL_VERSION};
use wsync_core::registry::update::{self, WorkspaceChanges};
use wsync_core::registry::{AddError, AttachError, NewRemote, Registry};
use wsync_core::remote::RemoteTarget;

use crate::path_check::{PathAnswer, PathCheckError, PathJob};
use crate::state::{lock, DaemonState, SharedState};
use crate::subscribers::{Subscription, QUEUE};
use crate::supervisor::{should_run, FlushStart};
use crate::target_check::{self, TargetError};

/// Flush timeout when the request gives none.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time the daemon waits beyond the monitor's own flush deadline.
const FLUSH_SLACK: Duration = Duration::from_secs(5);
/// A check on a copy of the registry is redone when another request changed the registry
/// meanwhile; after this many tries the request gives up.
const CHECK_ATTEMPTS: usize = 5;
/// Backstop for preparing a local target (inspect, the preview's dry run of up to 20 s, the
/// marker): the target answered the path check a moment before, so this only keeps a mount
/// that hangs right then from holding the request for ever.
const LOCAL_TARGET_DEADLINE: Duration = Duration::from_secs(25);

/// What the connection does after sending the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    /// The daemon shuts down (the response has been written first).
    Shutdown,
}

/// Both sides are a `Response` (an error is an answer too), so boxing the error would not make
/// a `Reply` smaller: `clippy::result_large_err` is allowed on the functions returning it.
type Reply = Result<Response, Response>;

/// Answers one request (after the handshake).
pub async fn handle(request: Request, shared: &SharedState) -> (Response, After) {
    match request {
        Request::Shutdown {} => (
            Response::Done {
                message: "wsyncd is shutting down".into(),
            },
            After::Shutdown,
        ),
        Request::Flush {
            workspace,
            timeout_ms,
        } => (
            flush(shared, &workspace, timeout_ms)
                .await
                .unwrap_or_else(|e| e),
            After::Continue,
        ),
        other => {
            let shared = shared.clone();
            let response =
                match tokio::task::spawn_blocking(move || handle_blocking(other, &shared)).await {
                    Ok(reply) => reply.unwrap_or_else(|e| e),
                    Err(e) => error(ErrorCode::Internal, format!("request handler failed: {e}")),
                };
            (response, After::Continue)
        }
    }
}

fn handle_blocking(request: Request, shared: &SharedState) -> Reply {
    match request {
        Request::Hello { .. } => Ok(Response::Hello {
            protocol: PROTOCOL_VERSION,
            version: wsync_core::VERSION.into(),
            pid: std::process::id(),
        }),
        Request::DaemonInfo {} => {
            let s = locked(shared)?;
            Ok(Response::DaemonInfo {
                protocol: PROTOCOL_VERSION,
                version: wsync_core::VERSION.into(),
                pid: std::process::id(),
                uptime_secs: s.started.elapsed().as_secs(),
                socket: s.config.daemon_command_socket_path.clone(),
                registry: s.config.workspace_config_file_path.clone(),
                watchdog_passes: s.watchdog_passes,
            })
        }
        Request::List {} => Ok(Response::Workspaces {
            workspaces: locked(shared)?.registry.workspaces.clone(),
        }),
        Request::Status { workspace } => {
            let wanted = workspace.map(|w| workspace_ref(shared, &w)).transpose()?;
            let s = locked(shared)?;
            let workspaces = match wanted {
                Some(w) => vec![s.workspace_status(&s.registry.workspaces[find(&s.registry, &w)?])],
                None => s
                    .registry
                    .workspaces
                    .iter()
                    .map(|w| s.workspace_status(w))
                    .collect(),
            };
            Ok(Response::Status { workspaces })
        }
        Request::Add {
            path,
            name,
            excludes,
        } => add(shared, path, name, excludes),
        Request::Remove { workspace } => remove(shared, &workspace),
        Request::Attach {
            workspace,
            target,
            name,
            port,
            identity_file,
            ssh_options,
            wait,
            overwrite,
            keep_deleted,
            transport,
            rsync_path,
        } => {
            let new = NewRemote {
                spec: target,
                name,
                port,
                identity_file,
                ssh_options,
                keep_deleted_days: keep_deleted.unwrap_or(0),
                transport,
                rsync_path,
            };
            attach(shared, &workspace, &new, wait, overwrite, keep_deleted)
        }
        Request::Detach { workspace, remote } => detach(shared, &workspace, &remote),
        Request::Pause { workspace } => set_paused(shared, &workspace, true),
        Request::Resume { workspace } => set_paused(shared, &workspace, false),
        Request::Restart { workspace } => restart(shared, &workspace),
        Request::Repair { workspace, remote } => repair(shared, &workspace, remote),
        Request::Update { workspace, changes } => update(shared, &workspace, &changes),
        Request::Flush { .. } | Request::Shutdown {} | Request::Subscribe { .. } => Err(error(
            ErrorCode::Internal,
            "request routed to the wrong handler".into(),
        )),
    }
}

fn add(shared: &SharedState, path: PathBuf, name: Option<String>, excludes: Vec<String>) -> Reply {
    if !path.is_absolute() {
        return Err(invalid(format!(
            "workspace path {} is relative; send an absolute path",
            path.display()
        )));
    }
    let (mut s, answer) = check_off_lock(shared, &path, |registry| {
        Ok(PathJob::NewWorkspace {
            registry,
            path: path.clone(),
            name: name.clone(),
            excludes: excludes.clone(),
        })
    })?;
    let workspace = refused_or(answer, |a| match a {
        PathAnswer::Workspace { workspace } => Some(workspace),
        _ => None,
    })?;
    commit(&mut s, |r| r.workspaces.push(workspace.clone()))?;
    s.publish_change(&workspace.name, WorkspaceChange::Added);
    tracing::info!(workspace = %workspace.name, path = %workspace.path.display(), "workspace added");
    Ok(Response::Workspace { workspace })
}

fn remove(shared: &SharedState, name_or_path: &str) -> Reply {
    let wanted = workspace_ref(shared, name_or_path)?;
    let (name, monitor, grace) = {
        let mut s = locked(shared)?;
        let index = find(&s.registry, &wanted)?;
        let name = s.registry.workspaces[index].name.clone();
        commit(&mut s, |r| {
            r.workspaces.remove(index);
        })?;
        s.publish_change(&name, WorkspaceChange::Removed);
        let grace = s.supervisor.stop_grace;
        let monitor = s.supervisor.remove(&name);
        (name, monitor, grace)
    };
    if let Some(monitor) = monitor {
        let exit = monitor.stop(grace);
        tracing::info!(workspace = %name, "monitor stopped ({exit})");
    }
    tracing::info!(workspace = %name, "workspace removed");
    Ok(Response::Done {
        message: format!(
            "removed workspace {name:?}; its files and its remotes' copies are left as they are"
        ),
    })
}

/// With `wait` (the CLI waits for the initial sync), the new remote's initial sync reports
/// rsync's progress; otherwise it runs without `--info=progress2`. The remote is validated on a
/// copy of the registry (its path is looked at), the target is looked at (and created or marked,
/// see [`target_check`]), both with the state lock released; then the remote is validated
/// again and committed.
fn attach(
    shared: &SharedState,
    name_or_path: &str,
    new: &NewRemote,
    wait: bool,
    overwrite: bool,
    keep_deleted: Option<u32>,
) -> Reply {
    let wanted = workspace_ref(shared, name_or_path)?;
    let spec = PathBuf::from(&new.spec);
    let job = |registry: Registry| -> Result<PathJob, Response> {
        let index = find(&registry, &wanted)?;
        Ok(PathJob::NewRemote {
            registry,
            index,
            spec: new.spec.clone(),
            name: new.name.clone(),
            port: new.port,
            identity_file: new.identity_file.clone(),
            ssh_options: new.ssh_options.clone(),
            keep_deleted_days: new.keep_deleted_days,
            transport: new.transport,
            rsync_path: new.rsync_path.clone(),
        })
    };
    let remote_of = |a| match a {
        PathAnswer::Remote { remote } => Some(remote),
        _ => None,
    };
    let (mut s, answer) = check_off_lock(shared, &spec, job)?;
    let index = find(&s.registry, &wanted)?;
    if let (PathAnswer::AlreadyAttached { target, .. }, Some(_)) = (&answer, keep_deleted) {
        let target = target.clone();
        return set_keep_deleted(&mut s, index, &target, new.keep_deleted_days);
    }
    let workspace = s.registry.workspaces[index].clone();
    let checks = s.path_checks.clone();
    drop(s);
    let remote = refused_or(answer, remote_of)?;
    // Both ends' rsync before anything is written (the remote's comes with its inspection).
    let local_rsync =
        target_check::check_local_rsync().map_err(|e| error(target_error_code(&e), chain(&e)))?;
    tracing::info!(workspace = %workspace.name, "local rsync: {local_rsync}");
    let description = match &remote.target {
        RemoteTarget::Local { path } => {
            let job = PathJob::PrepareTarget {
                workspace: workspace.clone(),
                remote: remote.clone(),
                overwrite,
            };
            let answer = checks
                .run_within(path, LOCAL_TARGET_DEADLINE.max(checks.timeout), &job)
                .map_err(path_error)?;
            refused_or(answer, |a| match a {
                PathAnswer::Prepared { description } => Some(description),
                _ => None,
            })?
        }
        // ssh runs with its own deadlines (a process wait, off the lock).
        RemoteTarget::Ssh { .. } => target_check::prepare(&workspace, &remote, overwrite)
            .map(|prepared| target_check::describe(prepared, &remote.target))
            .map_err(|e| error(target_error_code(&e), chain(&e)))?,
    };
    tracing::info!(workspace = %workspace.name, "{description}");
    let (mut s, answer) = check_off_lock(shared, &spec, job)?;
    let index = find(&s.registry, &wanted)?;
    let current = s.registry.workspaces[index].clone();
    let remote = refused_or(answer, remote_of)?;
    if current.id != workspace.id {
        return Err(invalid(format!(
            "workspace {name_or_path:?} was replaced while its target was checked; attach again"
        )));
    }
    commit(&mut s, |r| r.workspaces[index].remotes.push(remote.clone()))?;
    let workspace = s.registry.workspaces[index].clone();
    s.publish_change(&workspace.name, WorkspaceChange::Attached);
    tracing::info!(workspace = %workspace.name, remote = %remote.name, target = %remote.target, "remote attached");
    let progress = if wait {
        vec![remote.name.clone()]
    } else {
        Vec::new()
    };
    let command = MonitorCommand::Attach {
        remote,
        progress: wait,
    };
    if !s.supervisor.send_to_running(&workspace.name, command) {
        s.start_monitor_if_stopped(&workspace, progress);
    }
    Ok(Response::Workspace { workspace })
}

/// Applies `changes` to a registered workspace ([`update::apply`] validates them all first):
/// one atomic registry write when anything changed, nothing when nothing did. A changed trash
/// setting reaches the running monitor as an `update` command; anything else the monitor reads
/// at start restarts it (stopped with the state lock released, then started again).
fn update(shared: &SharedState, name_or_path: &str, changes: &WorkspaceChanges) -> Reply {
    let wanted = workspace_ref(shared, name_or_path)?;
    let (workspace, applied, old, grace) = {
        let mut s = locked(shared)?;
        let index = find(&s.registry, &wanted)?;
        let mut entry = s.registry.workspaces[index].clone();
        let applied = update::apply(&mut entry, changes).map_err(|e| match e {
            update::UpdateError::NoSuchRemote { .. } => error(ErrorCode::NotFound, e.to_string()),
            _ => invalid(format!("{e}; nothing was changed")),
        })?;
        if applied.changed.is_empty() {
            return Ok(Response::Updated {
                workspace: entry,
                changed: Vec::new(),
                restarted: false,
            });
        }
        commit(&mut s, |r| r.workspaces[index] = entry.clone())?;
        s.publish_change(&entry.name, WorkspaceChange::Updated);
        tracing::info!(workspace = %entry.name, changed = ?applied.changed, "workspace settings updated");
        let old = if applied.restart {
            s.supervisor.take_running(&entry.name)
        } else {
            for remote in &applied.remote_updates {
                let command = MonitorCommand::Update {
                    remote: remote.clone(),
                };
                s.supervisor.send_to_running(&entry.name, command);
            }
            None
        };
        (entry, applied, old, s.supervisor.stop_grace)
    };
    let restarted = old.is_some();
    if let Some(monitor) = old {
        let exit = monitor.stop(grace);
        tracing::info!(workspace = %workspace.name, "monitor stopped to apply new settings ({exit})");
        let mut s = locked(shared)?;
        // The entry as it is now: another request may have changed it meanwhile.
        if let Some(index) = s.registry.index_of_name(&workspace.name) {
            let current = s.registry.workspaces[index].clone();
            s.start_monitor_if_stopped(&current, Vec::new());
        }
    }
    Ok(Response::Updated {
        workspace,
        changed: applied.changed,
        restarted,
    })
}

/// `attach --keep-deleted DAYS` on a target the workspace already mirrors to: changes that
/// remote's setting, in the registry and in its running monitor (no re-sync).
fn set_keep_deleted(
    s: &mut DaemonState,
    index: usize,
    target: &wsync_core::remote::RemoteTarget,
    days: u32,
) -> Reply {
    let Some(r_index) = s.registry.workspaces[index]
        .remotes
        .iter()
        .position(|r| r.target == *target)
    else {
        return Err(error(
            ErrorCode::NotFound,
            format!("no remote with target {target}; see `wsync list`"),
        ));
    };
    commit(s, |r| {
        r.workspaces[index].remotes[r_index].keep_deleted_days = days;
    })?;
    let workspace = s.registry.workspaces[index].clone();
    let remote = workspace.remotes[r_index].clone();
    s.publish_change(&workspace.name, WorkspaceChange::Updated);
    tracing::info!(workspace = %workspace.name, remote = %remote.name, keep_deleted_days = days, "remote updated");
    s.supervisor
        .send_to_running(&workspace.name, MonitorCommand::Update { remote });
    Ok(Response::Workspace { workspace })
}

/// How long a detach waits at least for the monitor's confirmation, whatever the stop grace.
const DETACH_CONFIRM_MIN: Duration = Duration::from_secs(10);

/// Answers once the monitor confirmed that nothing more is written to the remote's target
/// (its rsyncs killed and gone), waited for with the state lock released, at most the stop
/// grace (and never less than [`DETACH_CONFIRM_MIN`]).
fn detach(shared: &SharedState, name_or_path: &str, remote: &str) -> Reply {
    let wanted = workspace_ref(shared, name_or_path)?;
    let (workspace, to_stop, confirm, grace) = {
        let mut s = locked(shared)?;
        let index = find(&s.registry, &wanted)?;
        let ws = &s.registry.workspaces[index];
        let Some(r_index) = ws.remotes.iter().position(|r| r.name == remote) else {
            return Err(error(
                ErrorCode::NotFound,
                format!(
                    "workspace {:?} has no remote named {remote:?}; see `wsync list`",
                    ws.name
                ),
            ));
        };
        commit(&mut s, |r| {
            r.workspaces[index].remotes.remove(r_index);
        })?;
        let workspace = s.registry.workspaces[index].clone();
        s.publish_change(&workspace.name, WorkspaceChange::Detached);
        tracing::info!(workspace = %workspace.name, remote, "remote detached");
        let (to_stop, confirm) = if workspace.remotes.is_empty() {
            (s.supervisor.take_running(&workspace.name), None)
        } else {
            (None, s.supervisor.begin_detach(&workspace.name, remote))
        };
        (workspace, to_stop, confirm, s.supervisor.stop_grace)
    };
    if let Some(monitor) = to_stop {
        // The monitor exits only once its rsyncs' process groups are gone.
        let exit = monitor.stop(grace);
        tracing::info!(workspace = %workspace.name, "last remote detached; monitor stopped ({exit})");
    }
    if let Some(confirm) = confirm {
        let deadline = grace.max(DETACH_CONFIRM_MIN);
        match confirm.recv_timeout(deadline) {
            // Disconnected: the monitor ended meanwhile, and its rsyncs with it.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!(workspace = %workspace.name, remote, "the monitor did not confirm the detach within {deadline:?}");
                return Err(error(
                    ErrorCode::Timeout,
                    format!(
                        "remote {remote:?} was removed from workspace {:?}, but its monitor did not confirm within {deadline:?} that its transfers stopped: something may still write to the target; run `wsync restart {}` (or wait and check `wsync status`) before reusing the target",
                        workspace.name, workspace.name
                    ),
                ));
            }
        }
    }
    Ok(Response::Workspace { workspace })
}

/// Resume also confirms the workspace root as it is now (it lifts a replaced root's halt), so
/// the registry records its identity: looked at with the state lock released, within the path
/// deadline.
fn set_paused(shared: &SharedState, name_or_path: &str, paused: bool) -> Reply {
    let wanted = workspace_ref(shared, name_or_path)?;
    let root_now = if paused {
        None
    } else {
        let (path, checks) = {
            let s = locked(shared)?;
            let path = s.registry.workspaces[find(&s.registry, &wanted)?]
                .path
                .clone();
            (path, s.path_checks.clone())
        };
        let answer = checks
            .run(&path, &PathJob::RootIdentity { path: path.clone() })
            .map_err(path_error)?;
        refused_or(answer, |a| match a {
            PathAnswer::RootIdentity { root } => Some(root),
            _ => None,
        })?
    };
    let mut s = locked(shared)?;
    let index = find(&s.registry, &wanted)?;
    let entry = &s.registry.workspaces[index];
    let new_root = root_now.filter(|now| entry.root_id != Some(*now));
    if entry.paused != paused || new_root.is_some() {
        let change = match (entry.paused != paused, paused) {
            (false, _) => None,
            (true, true) => Some(WorkspaceChange::Paused),
            (true, false) => Some(WorkspaceChange::Resumed),
        };
        let name = entry.name.clone();
        commit(&mut s, |r| {
            let entry = &mut r.workspaces[index];
            entry.paused = paused;
            if new_root.is_some() {
                entry.root_id = new_root;
            }
        })?;
        if let Some(change) = change {
            s.publish_change(&name, change);
        }
    }
    let workspace = s.registry.workspaces[index].clone();
    let command = if paused {
        MonitorCommand::Pause
    } else {
        MonitorCommand::Resume
    };
    let sent = s.supervisor.send_to_running(&workspace.name, command);
    if !paused && !sent {
        s.start_monitor_if_stopped(&workspace, Vec::new());
    }
    tracing::info!(workspace = %workspace.name, paused, "workspace {}", if paused { "paused" } else { "resumed" });
    Ok(Response::Workspace { workspace })
}

/// The entry is checked again first (with the state lock released), as at daemon start: one
/// that breaks a rule stays failed with the reason ([`target_check::refusal`]).
fn restart(shared: &SharedState, name_or_path: &str) -> Reply {
    let wanted = workspace_ref(shared, name_or_path)?;
    let (checked, checks) = {
        let s = locked(shared)?;
        let checked = s.registry.workspaces[find(&s.registry, &wanted)?].clone();
        (checked, s.path_checks.clone())
    };
    let answer = checks
        .run(
            &checked.path,
            &PathJob::EntryRefusal {
                workspace: checked.clone(),
            },
        )
        .map_err(path_error)?;
    let refused = refused_or(answer, |a| match a {
        PathAnswer::EntryRefusal { why } => Some(why),
        _ => None,
    })?;
    let (name, old, grace) = {
        let mut s = locked(shared)?;
        let index = find(&s.registry, &wanted)?;
        let name = s.registry.workspaces[index].name.clone();
        let old = s.supervisor.take_running(&name);
        s.supervisor.reset(&name);
        if let Some(why) = &refused {
            s.supervisor.refuse(&name, why.clone());
        }
        (name, old, s.supervisor.stop_grace)
    };
    if let Some(monitor) = old {
        let exit = monitor.stop(grace);
        tracing::info!(workspace = %name, "monitor stopped for restart ({exit})");
    }
    if let Some(why) = refused {
        return Err(invalid(format!(
            "the monitor of {name:?} is not started: {why}"
        )));
    }
    let mut s = locked(shared)?;
    let index = find(&s.registry, &WorkspaceRef::name(&name))?;
    let workspace = s.registry.workspaces[index].clone();
    s.start_monitor_if_stopped(&workspace, Vec::new());
    let message = if workspace.remotes.is_empty() {
        format!(
            "workspace {name:?} has no remotes, so no monitor runs; attach one with `wsync attach`"
        )
    } else if workspace.paused {
        format!("cleared the state of {name:?}; it is paused, run `wsync resume {name}` to start syncing")
    } else if should_run(&workspace) {
        let (status, _) = s.supervisor.status(&workspace);
        match status.pid {
            Some(pid) => format!("restarted the monitor of {name:?} (pid {pid})"),
            None => format!(
                "could not start the monitor of {name:?} ({}); see `wsync status {name}`",
                status.last_exit.unwrap_or_default()
            ),
        }
    } else {
        format!("cleared the state of {name:?}")
    };
    tracing::info!(workspace = %name, "restart requested: {message}");
    Ok(Response::Done { message })
}

/// Hands a checksum resync to the running monitor, which runs it like any full sync.
fn repair(shared: &SharedState, name_or_path: &str, remote: Option<String>) -> Reply {
    let wanted = workspace_ref(shared, name_or_path)?;
    let s = locked(shared)?;
    let workspace = &s.registry.workspaces[find(&s.registry, &wanted)?];
    let name = workspace.name.clone();
    if let Some(r) = &remote {
        if !workspace.remotes.iter().any(|x| &x.name == r) {
            return Err(error(
                ErrorCode::NotFound,
                format!("workspace {name:?} has no remote named {r:?}; see `wsync list`"),
            ));
        }
    }
    if workspace.paused {
        return Err(invalid(format!(
            "cannot repair workspace {name:?}: it is paused; run `wsync resume {name}` first"
        )));
    }
    let command = MonitorCommand::ChecksumResync {
        remote: remote.clone(),
    };
    if !s.supervisor.send_to_running(&name, command) {
        return Err(invalid(format!(
            "cannot repair workspace {name:?}: its monitor is not running; see `wsync status {name}` (`wsync restart {name}` starts it)"
        )));
    }
    tracing::info!(workspace = %name, ?remote, "checksum resync requested");
    Ok(Response::Done {
        message: format!("a checksum resync of {name:?} is queued"),
    })
}

async fn flush(shared: &SharedState, name_or_path: &str, timeout_ms: Option<u64>) -> Reply {
    let timeout = timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_FLUSH_TIMEOUT);
    let wanted = {
        let (shared, given) = (shared.clone(), name_or_path.to_owned());
        tokio::task::spawn_blocking(move || workspace_ref(&shared, &given))
            .await
            .map_err(|e| error(ErrorCode::Internal, format!("request handler failed: {e}")))??
    };
    // Right after the daemon starts, a workspace's monitor waits for the start-up check of its
    // entry: the flush waits for it too (within its own timeout) rather than failing.
    let started = Instant::now();
    let (name, start) = loop {
        let (name, start) = {
            let mut s = locked(shared)?;
            let index = find(&s.registry, &wanted)?;
            let workspace = s.registry.workspaces[index].clone();
            let left = timeout.saturating_sub(started.elapsed());
            let start = s
                .supervisor
                .begin_flush(&workspace, left.as_millis() as u64);
            (workspace.name, start)
        };
        match start {
            FlushStart::Starting if started.elapsed() < timeout => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            start => break (name, start),
        }
    };
    let timeout = timeout.saturating_sub(started.elapsed());
    let (id, rx) = match start {
        FlushStart::Starting => {
            return Err(error(
                ErrorCode::Timeout,
                format!("cannot flush workspace {name:?}: its monitor did not start within the flush timeout (the daemon is still checking its paths; see `wsync status`)"),
            ))
        }
        FlushStart::Nothing => {
            return Ok(Response::Flushed {
                workspace: name,
                lagging: Vec::new(),
            })
        }
        FlushStart::NotRunning(why) => {
            return Err(invalid(format!("cannot flush workspace {name:?}: {why}")))
        }
        FlushStart::Waiting(id, rx) => (id, rx),
    };
    match tokio::time::timeout(timeout + FLUSH_SLACK, rx).await {
        Ok(Ok(lagging)) => Ok(Response::Flushed {
            workspace: name,
            lagging,
        }),
        Ok(Err(_)) => Err(error(
            ErrorCode::Internal,
            format!("the monitor of {name:?} exited before the flush completed; it is restarted automatically — run the flush again"),
        )),
        Err(_) => {
            if let Ok(mut s) = lock(shared) {
                s.supervisor.cancel_flush(id);
            }
            Err(error(
                ErrorCode::Timeout,
                format!(
                    "the monitor of {name:?} did not answer the flush within {:?}; see `wsync status {name}`",
                    timeout + FLUSH_SLACK
                ),
            ))
        }
    }
}

/// Registers a subscriber to the events of `workspace` (a name or a path; every workspace's
/// when `None`); the connection then forwards what arrives on the subscription (see
/// [`crate::server`]).
pub async fn subscribe(
    shared: &SharedState,
    workspace: Option<String>,
) -> Result<(Response, Subscription), Response> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || subscribe_blocking(&shared, workspace.as_deref()))
        .await
        .map_err(|e| error(ErrorCode::Internal, format!("request handler failed: {e}")))?
}

/// A path filter is resolved within its deadline: this blocks.
fn subscribe_blocking(
    shared: &SharedState,
    workspace: Option<&str>,
) -> Result<(Response, Subscription), Response> {
    let wanted = workspace.map(|w| workspace_ref(shared, w)).transpose()?;
    let mut s = locked(shared)?;
    let name = match &wanted {
        Some(w) => Some(s.registry.workspaces[find(&s.registry, w)?].name.clone()),
        None => None,
    };
    let subscription = s
        .supervisor
        .subscribers
        .subscribe(name.clone())
        .map_err(|e| invalid(e.to_string()))?;
    tracing::info!(subscriber = subscription.id, workspace = ?name, "event subscriber added");
    let reply = Response::Subscribed {
        workspace: name,
        queue: QUEUE as u32,
    };
    Ok((reply, subscription))
}

fn locked(shared: &SharedState) -> Result<std::sync::MutexGuard<'_, DaemonState>, Response> {
    lock(shared).map_err(|e| error(ErrorCode::Internal, e.to_string()))
}

/// A request's WORKSPACE argument: a name, or a path resolved before the lock is taken.
#[derive(Debug, Clone)]
struct WorkspaceRef {
    given: String,
    /// `given` canonicalized, when it is an absolute path that names no workspace.
    canonical: Option<PathBuf>,
}

impl WorkspaceRef {
    fn name(name: &str) -> Self {
        Self {
            given: name.to_owned(),
            canonical: None,
        }
    }
}

/// Resolves a WORKSPACE argument: a workspace's name as it is, an absolute path canonicalized
/// with the lock released and within the path deadline (it may lie on a hung mount).
fn workspace_ref(shared: &SharedState, given: &str) -> Result<WorkspaceRef, Response> {
    let checks = {
        let s = locked(shared)?;
        if s.registry.index_of_name(given).is_some() || !Path::new(given).is_absolute() {
            return Ok(WorkspaceRef::name(given));
        }
        s.path_checks.clone()
    };
    let path = PathBuf::from(given);
    let answer = checks
        .run(&path, &PathJob::Canonicalize { path: path.clone() })
        .map_err(path_error)?;
    let canonical = refused_or(answer, |a| match a {
        PathAnswer::Canonical { path } => Some(path),
        _ => None,
    })?;
    Ok(WorkspaceRef {
        given: given.to_owned(),
        canonical: Some(canonical),
    })
}

/// The index of the workspace `wanted` names, or a NotFound response. Touches no file.
fn find(registry: &Registry, wanted: &WorkspaceRef) -> Result<usize, Response> {
    registry
        .index_of_name(&wanted.given)
        .or_else(|| {
            let canonical = wanted.canonical.as_deref()?;
            registry.index_of_path(canonical)
        })
        .ok_or_else(|| {
            error(
                ErrorCode::NotFound,
                format!("no workspace named {:?}; see `wsync list`", wanted.given),
            )
        })
}

/// Runs the job `make_job` builds from a copy of the registry — registry validation that looks
/// at the user's `path` on the filesystem — in a check process, with the lock released and
/// within the path deadline; then takes the lock and returns it with the answer, provided no
/// request changed the registry meanwhile (otherwise the job runs again on the new registry).
fn check_off_lock<'s>(
    shared: &'s SharedState,
    path: &Path,
    make_job: impl Fn(Registry) -> Result<PathJob, Response>,
) -> Result<(MutexGuard<'s, DaemonState>, PathAnswer), Response> {
    for _ in 0..CHECK_ATTEMPTS {
        let (snapshot, revision, checks) = {
            let s = locked(shared)?;
            (
                s.registry.clone(),
                s.registry_revision,
                s.path_checks.clone(),
            )
        };
        let job = make_job(snapshot)?;
        let answer = checks.run(path, &job).map_err(path_error)?;
        let s = locked(shared)?;
        if s.registry_revision == revision {
            return Ok((s, answer));
        }
    }
    Err(error(
        ErrorCode::Internal,
        format!(
            "the registry kept changing while {} was checked; try again",
            path.display()
        ),
    ))
}

/// A refusal from the checks, or the answer a handler expected.
fn refused_or<T>(
    answer: PathAnswer,
    want: impl FnOnce(PathAnswer) -> Option<T>,
) -> Result<T, Response> {
    match answer {
        PathAnswer::Refused { response } | PathAnswer::AlreadyAttached { response, .. } => {
            Err(response)
        }
        other => {
            let text = format!("{other:?}");
            want(other).ok_or_else(|| {
                error(
                    ErrorCode::Internal,
                    format!("unexpected answer from a path check: {text}"),
                )
            })
        }
    }
}

/// The answer to a path that did not respond: the user can fix the mount.
fn path_error(e: PathCheckError) -> Response {
    let code = match e {
        PathCheckError::TimedOut { .. } | PathCheckError::TooManyStuck { .. } => ErrorCode::Timeout,
        PathCheckError::Process { .. } => ErrorCode::Internal,
    };
    error(code, chain(&e))
}

/// Saves a changed copy of the registry, then adopts it; on a failed save nothing changes.
fn commit(state: &mut DaemonState, change: impl FnOnce(&mut Registry)) -> Result<(), Response> {
    let mut next = state.registry.clone();
    change(&mut next);
    if let Err(e) = next.save(&state.config.workspace_config_file_path) {
        tracing::error!("{}", chain(&e));
        return Err(error(
            ErrorCode::Internal,
            format!("{}; nothing was changed", chain(&e)),
        ));
    }
    state.registry = next;
    state.registry_revision += 1;
    Ok(())
}

/// The protocol code for a refused `add`. Every rule the user broke is `invalid` (exit 5): the
/// protocol has no `conflict` code, and adding one would break clients of the same protocol
/// version. Listed one by one so a new variant needs a decision here.
pub(crate) fn add_error_code(e: &AddError) -> ErrorCode {
    match e {
        AddError::ControlChar(_)
        | AddError::OptionLike { .. }
        | AddError::Unusable { .. }
        | AddError::NotADirectory { .. }
        | AddError::Unresolvable { .. }
        | AddError::Untrusted(_)
        | AddError::NotUtf8 { .. }
        | AddError::TooBroad { .. }
        | AddError::Name(_)
        | AddError::NameTaken { .. }
        | AddError::OverlapsWorkspace { .. }
        | AddError::OverlapsRemote { .. }
        | AddError::EmptyExclude => ErrorCode::Invalid,
    }
}

/// The protocol code for a refused `attach`: a workspace that is gone is `not_found`; every
/// rule the user broke is `invalid` (see [`add_error_code`]).
pub(crate) fn attach_error_code(e: &AttachError) -> ErrorCode {
    match e {
        AttachError::NoSuchWorkspace { .. } => ErrorCode::NotFound,
        AttachError::Spec(_)
        | AttachError::SshOption(_)
        | AttachError::PortZero
        | AttachError::KeepDeletedTooLong
        | AttachError::PortMismatch
        | AttachError::RsyncPathLocal
        | AttachError::SshOnlyOption
        | AttachError::ParentSegment { .. }
        | AttachError::Unresolvable { .. }
        | AttachError::Untrusted(_)
        | AttachError::NotUtf8 { .. }
        | AttachError::TooBroad { .. }
        | AttachError::NotADirectory { .. }
        | AttachError::OverlapsWorkspace { .. }
        | AttachError::OverlapsRemote { .. }
        | AttachError::NoIdentityFile { .. }
        | AttachError::IdentityFile(_)
        | AttachError::Name(_)
        | AttachError::NameTaken { .. }
        | AttachError::AlreadyAttached { .. } => ErrorCode::Invalid,
    }
}

/// The protocol code for a target attach refused: what the user can change is `invalid`; a
/// target that could not be looked at or written is `internal` (an I/O failure, not a rule).
pub(crate) fn target_error_code(e: &TargetError) -> ErrorCode {
    match e {
        TargetError::NotADirectory { .. }
        | TargetError::OtherWorkspace { .. }
        | TargetError::Unmarked { .. }
        | TargetError::Unsafe { .. }
        | TargetError::Rsync { .. } => ErrorCode::Invalid,
        TargetError::Inspect { .. } | TargetError::Mark { .. } => ErrorCode::Internal,
    }
}

fn invalid(message: String) -> Response {
    error(ErrorCode::Invalid, message)
}

/// An error response.
pub fn error(code: ErrorCode, message: String) -> Response {
    Response::Error { code, message }
}

/// An error and its causes on one line: "a: b: c".
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsync_core::names::NameError;
    use wsync_core::remote::SpecError;

    #[test]
    fn a_missing_workspace_is_not_found_and_broken_rules_are_invalid() {
        let gone = AttachError::NoSuchWorkspace { index: 7 };
        assert_eq!(attach_error_code(&gone), ErrorCode::NotFound);
        let taken = AttachError::NameTaken {
            workspace: "w".into(),
            name: "r".into(),
        };
        assert_eq!(attach_error_code(&taken), ErrorCode::Invalid);
        assert_eq!(
            attach_error_code(&AttachError::Spec(SpecError::Empty)),
            ErrorCode::Invalid
        );
        let name = AddError::Name(NameError::Empty { what: "workspace" });
        assert_eq!(add_error_code(&name), ErrorCode::Invalid);
        assert_eq!(
            add_error_code(&AddError::NameTaken { name: "w".into() }),
            ErrorCode::Invalid
        );
    }

    #[test]
    fn refusals_keep_their_io_cause_in_the_message() {
        let e = AddError::Unusable {
            path: "/srv/missing".into(),
            source: std::io::Error::from_raw_os_error(2),
        };
        let Response::Error { code, message } = error(add_error_code(&e), chain(&e)) else {
            unreachable!()
        };
        assert_eq!(code, ErrorCode::Invalid);
        assert_eq!(
            message,
            format!(
                "/srv/missing cannot be used as a workspace: {}",
                std::io::Error::from_raw_os_error(2)
            )
        );
    }
}
