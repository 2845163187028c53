//! Attach-time target identity: looks at a new remote's target before it is registered
//! (locally with the filesystem, over SSH with one short-lived `ssh` running the inspection
//! script of `wsync_core::target`), then creates it or writes the `.wsync-target` marker, or
//! refuses. A non-empty target without a marker is refused with a preview of what the first
//! sync would delete and overwrite (an `rsync --dry-run --itemize-changes`) unless the user
//! confirmed with `--overwrite`. Runs with the daemon's state lock released: every call here
//! is I/O on a user path or a process wait, each with a deadline.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wsync_core::excludes::{excluded_entries, write_rules, Excludes};
use wsync_core::registry::{Remote, Workspace};
use wsync_core::remote::RemoteTarget;
use wsync_core::rsync::{
    self, parse_itemized, rsync_argv, RsyncMode, RsyncRequest, DEFAULT_TIMEOUT_SECS,
};
use wsync_core::rsync_version::{self, End, RsyncVersion};
use wsync_core::ssh::SshEndpoint;
use wsync_core::target::{self, Marker, TargetState, MARKER_FILE};
use wsync_core::target_path::{self, RemoteHazard};

/// How long the ssh inspection and marking may take (ssh's own ConnectTimeout is 5 s).
const SSH_DEADLINE: Duration = Duration::from_secs(15);
/// How long the preview's dry run may take (the CLI waits 30 s for an answer).
const PREVIEW_DEADLINE: Duration = Duration::from_secs(20);
/// Paths listed per kind in a refusal.
const PREVIEW_PATHS: usize = 10;

/// What attach did to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    Created,
    Marked,
    Adopted,
    Overwritten,
}

/// Why a target cannot be attached.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target {target} exists and is not a directory")]
    NotADirectory { target: String },
    #[error("target {target} is the mirror of another workspace ({} on {}, per its {MARKER_FILE}); two mirrors into one place delete each other's files: pick another directory, or detach it there first", marker.source_path.display(), if marker.source_host.is_empty() { "an unknown host" } else { &marker.source_host })]
    OtherWorkspace { target: String, marker: Box<Marker> },
    #[error("target {target} is not empty and holds no {MARKER_FILE} marker; the first sync would make it a copy of the workspace: {preview}\nrerun with --overwrite to confirm (the marker is then written)")]
    Unmarked { target: String, preview: String },
    #[error("cannot look at target {target} ({message}); nothing was attached: attach again once it can be reached")]
    Inspect { target: String, message: String },
    #[error("cannot write the {MARKER_FILE} marker in {target}: {message}")]
    Mark { target: String, message: String },
    #[error("target {target} cannot be a remote: {problem}")]
    Unsafe {
        target: String,
        problem: RemoteHazard,
    },
    /// An rsync on one end that wsync cannot use; the message names the fix.
    #[error("{message}")]
    Rsync { message: String },
}

/// How long `rsync --version` may take on this machine.
const LOCAL_RSYNC_DEADLINE: Duration = Duration::from_secs(10);

/// This machine's rsync (the first on wsyncd's PATH, what the monitors run), or why wsync
/// cannot use it, naming the fix: checked at every attach, before anything is written.
pub fn check_local_rsync() -> Result<RsyncVersion, TargetError> {
    let argv: Vec<OsString> = vec!["rsync".into(), "--version".into()];
    let refused = |message| TargetError::Rsync { message };
    let (_, stdout, _) = run(&argv, None, LOCAL_RSYNC_DEADLINE).map_err(|e| {
        refused(format!(
            "cannot run the local rsync ({e}): install rsync {} or later (macOS: `brew install rsync`) on the PATH wsyncd runs with",
            rsync_version::MINIMUM
        ))
    })?;
    let banner = String::from_utf8_lossy(&stdout);
    judge(&banner, End::Local).map_err(refused)
}

/// The version `banner` names, or the message refusing it for `end`.
fn judge(banner: &str, end: End<'_>) -> Result<RsyncVersion, String> {
    let first = banner.lines().next().unwrap_or("").trim();
    let Some(version) = RsyncVersion::parse(banner) else {
        let what = match end {
            End::Local => "the local rsync".to_owned(),
            End::Remote { host, rsync_path } => {
                format!("{} on {host}", rsync::remote_rsync_program(rsync_path))
            }
        };
        let said = if first.is_empty() {
            "did not run".to_owned()
        } else {
            format!("answered {first:?}")
        };
        let fix = match end {
            End::Local => "install it (macOS: `brew install rsync`) on the PATH wsyncd runs with",
            End::Remote { .. } => "install it there (macOS: `brew install rsync`), or give its path with `wsync attach --rsync-path`",
        };
        return Err(format!(
            "{what} {said} to `--version`; wsync needs rsync {} or later on both ends: {fix}",
            rsync_version::MINIMUM
        ));
    };
    version.check().map_err(|e| e.message(end))?;
    Ok(version)
}

/// Inspects `remote`'s target for `workspace` and makes it ours (created, marked or adopted),
/// or says why not.
pub fn prepare(
    workspace: &Workspace,
    remote: &Remote,
    overwrite: bool,
) -> Result<Prepared, TargetError> {
    let name = remote.target.to_string();
    let state = inspect(remote)?;
    let outcome = match state {
        TargetState::NotADirectory => return Err(TargetError::NotADirectory { target: name }),
        TargetState::Marked(marker) if marker.workspace_id == workspace.id => {
            return Ok(Prepared::Adopted)
        }
        TargetState::Marked(marker) => {
            return Err(TargetError::OtherWorkspace {
                target: name,
                marker: Box::new(marker),
            })
        }
        TargetState::Missing => Prepared::Created,
        TargetState::Empty => Prepared::Marked,
        TargetState::Unmarked if overwrite => Prepared::Overwritten,
        TargetState::Unmarked => {
            return Err(TargetError::Unmarked {
                preview: preview(workspace, remote),
                target: name,
            })
        }
    };
    mark(&remote.target, &Marker::new(workspace)).map_err(|message| TargetError::Mark {
        target: name,
        message,
    })?;
    Ok(outcome)
}

/// The target's state; an SSH target resolved on the remote is refused first when it is the
/// remote's root, home or a parent of it, or a symlink (`wsync_core::target_path`). A local
/// target was resolved and judged when the remote was validated (`check_new_remote`).
fn inspect(remote: &Remote) -> Result<TargetState, TargetError> {
    let target = &remote.target;
    let name = || target.to_string();
    let failed = |message: String| TargetError::Inspect {
        target: name(),
        message,
    };
    match target {
        RemoteTarget::Local { path } => {
            target::inspect_local(path).map_err(|e| failed(e.to_string()))
        }
        RemoteTarget::Ssh { path, host, .. } => {
            let rsync_path = remote.rsync_path.as_deref();
            let command =
                target::ssh_inspect_command(path, rsync::remote_rsync_program(rsync_path));
            let out = ssh(target, &command, None).map_err(failed)?;
            let found = target::parse_ssh_inspection(&out).ok_or_else(|| {
                failed(format!(
                    "unexpected answer: {}",
                    String::from_utf8_lossy(&out)
                ))
            })?;
            tracing::debug!(%target, ?found, "target inspected");
            if let Some(problem) = target_path::remote_hazard(&found.resolution) {
                return Err(TargetError::Unsafe {
                    target: name(),
                    problem,
                });
            }
            // The remote's rsync came with the inspection (no round trip of its own).
            let end = End::Remote { host, rsync_path };
            let version = judge(&found.rsync_banner, end)
                .map_err(|message| TargetError::Rsync { message })?;
            tracing::info!(%target, "remote rsync: {version}");
            Ok(found.state)
        }
    }
}

fn mark(target: &RemoteTarget, marker: &Marker) -> Result<(), String> {
    match target {
        RemoteTarget::Local { path } => {
            target::write_local(path, marker).map_err(|e| e.to_string())
        }
        RemoteTarget::Ssh { path, .. } => ssh(
            target,
            &target::ssh_mark_command(path),
            Some(marker.to_bytes()),
        )
        .map(|_| ()),
    }
}

/// Runs one remote command over a fresh ssh (no multiplexing master: ControlPath=none).
fn ssh(target: &RemoteTarget, command: &str, stdin: Option<Vec<u8>>) -> Result<Vec<u8>, String> {
    let endpoint = SshEndpoint::from_target(target).ok_or("not an ssh remote")?;
    let argv = endpoint.command_argv(Path::new("none"), command);
    tracing::debug!(?argv, "running ssh");
    let (status, stdout, stderr) = run(&argv, stdin, SSH_DEADLINE)?;
    if !status {
        return Err(format!(
            "ssh failed: {}",
            String::from_utf8_lossy(&stderr).trim()
        ));
    }
    Ok(stdout)
}

/// What a first sync would delete and overwrite in `target`: counts and the first paths.
fn preview(workspace: &Workspace, remote: &Remote) -> String {
    match dry_run(workspace, remote) {
        Ok(output) => {
            let mut drift = parse_itemized(&output);
            drift.extra.sort();
            drift.differs.sort();
            let mut text = format!(
                "it would delete {} path(s) there and overwrite {}",
                drift.extra.len(),
                drift.differs.len()
            );
            for (what, paths) in [("deleted", &drift.extra), ("overwritten", &drift.differs)] {
                if paths.is_empty() {
                    continue;
                }
                text.push_str(&format!("\n  {what}:"));
                for path in paths.iter().take(PREVIEW_PATHS) {
                    text.push_str(&format!("\n    {path}"));
                }
                if paths.len() > PREVIEW_PATHS {
                    text.push_str(&format!("\n    ... and {} more", paths.len() - PREVIEW_PATHS));
                }
            }
            text
        }
        Err(e) => format!("its contents could not be previewed ({e}); everything there that the workspace lacks would be deleted"),
    }
}

fn dry_run(workspace: &Workspace, remote: &Remote) -> Result<String, String> {
    let target = &remote.target;
    let rules_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rules = rules_dir.path().join("excludes");
    let mut excludes = Excludes::new(
        &workspace.path,
        &workspace.excludes,
        workspace.respect_gitignore,
    );
    let excluded = excluded_entries(&workspace.path, &mut excludes).map_err(|e| e.to_string())?;
    // The rules file carries the protect rules too (one decision with the monitor's).
    write_rules(&rules, &excluded, &excludes.protect_rules()).map_err(|e| e.to_string())?;
    let argv = rsync_argv(&RsyncRequest {
        source_root: &workspace.path,
        target,
        control_path: None,
        mode: RsyncMode::Verify,
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        excludes: &[],
        protect: &[],
        max_delete: None,
        exclude_from: Some(&rules),
        report_transfer_done: false,
        progress: false,
        marker_id: None,
        backup_dir: None,
        checksum: false,
        remote_rsync: remote.rsync_path.as_deref(),
        no_delete_missing_args: false,
        deletion_rules: None,
    });
    tracing::debug!(?argv, "attach preview");
    let (ok, stdout, stderr) = run(&argv, None, PREVIEW_DEADLINE)?;
    if !ok {
        return Err(format!(
            "rsync failed: {}",
            String::from_utf8_lossy(&stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Runs `argv` with `stdin`, killing it at `deadline`: (success, stdout, stderr).
fn run(
    argv: &[OsString],
    stdin: Option<Vec<u8>>,
    deadline: Duration,
) -> Result<(bool, Vec<u8>, Vec<u8>), String> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", argv[0].to_string_lossy()))?;
    if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
        let _ = pipe.write_all(&bytes);
    }
    let readers = [
        child.stdout.take().map(reader),
        child.stderr.take().map(reader),
    ];
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", deadline.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let [stdout, stderr] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
    Ok((status.success(), stdout, stderr))
}

fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        out
    })
}

/// Upgrading from a registry written before markers (the workspace just got its id): its
/// local targets that hold files but no marker were its mirrors, so they get the marker.
/// An empty or missing one is left alone (it may be an empty mount point): its remote shows
/// the missing-marker error and its fix. SSH targets are not contacted at startup; they
/// need `wsync detach` and `wsync attach --overwrite`.
pub fn adopt_pre_marker_targets(workspace: &Workspace) {
    for remote in &workspace.remotes {
        let RemoteTarget::Local { path } = &remote.target else {
            tracing::warn!(workspace = %workspace.name, remote = %remote.name, "SSH target attached before markers: detach and attach it again with --overwrite");
            continue;
        };
        match target::inspect_local(path) {
            Ok(TargetState::Unmarked) => match target::write_local(path, &Marker::new(workspace)) {
                Ok(()) => {
                    tracing::info!(workspace = %workspace.name, remote = %remote.name, "target {} attached before markers: marker written", path.display())
                }
                Err(e) => {
                    tracing::warn!(workspace = %workspace.name, remote = %remote.name, "cannot write the marker in {}: {e}", path.display())
                }
            },
            Ok(state) => {
                tracing::warn!(workspace = %workspace.name, remote = %remote.name, ?state, "target {} attached before markers left without one", path.display())
            }
            Err(e) => {
                tracing::warn!(workspace = %workspace.name, remote = %remote.name, "cannot look at target {}: {e}", path.display())
            }
        }
    }
}

/// Why `workspace`'s entry must not be started, if it must not, with the fix: checked at
/// daemon start-up before adopting or starting it, and again by `wsync restart`, each time in
/// a check process ([`crate::path_check`]). Reads the filesystem.
pub fn refusal(workspace: &Workspace, homes: &[std::path::PathBuf]) -> Option<String> {
    target_path::check_entry(workspace, homes)
        .err()
        .map(|e| e.to_string())
}

/// For log lines.
pub fn describe(prepared: Prepared, target: &RemoteTarget) -> String {
    let what = match prepared {
        Prepared::Created => "created with its marker",
        Prepared::Marked => "empty: marker written",
        Prepared::Adopted => "already this workspace's mirror: adopted",
        Prepared::Overwritten => "not empty, --overwrite given: marker written",
    };
    format!("target {target} {what}")
}
