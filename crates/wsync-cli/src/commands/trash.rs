//! `wsync trash list|restore`: what a remote that keeps deletions (`keep_deleted_days`) holds
//! in its `.wsync-trash`, and copying a snapshot (or some of its paths) back into the
//! workspace, the source of truth: the monitor then syncs the restored files out again.
//!
//! An SSH remote's trash is listed and restored by rsync, with the argv from the one builder
//! (`wsync_core::rsync::trash_argv`), its marker checked by the same guard every sync passes.
//! A local one goes by descriptor ([`wsync_core::trash::LocalTrash`]): `.wsync-trash` and the
//! snapshot are opened beneath the target and checked on their descriptors, listed in
//! process, and a restore's rsync reads the snapshot through `/proc/self/fd/N`, so a trash or
//! snapshot swapped for a symlink by someone who can write the target redirects nothing.

use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Result;
use serde::Serialize;
use wsync_core::registry::{Remote, Workspace};
use wsync_core::remote::RemoteTarget;
use wsync_core::rsync::{
    classify_exit, files_from, parse_itemized, trash_argv, ExitClass, TrashOp, TrashRequest,
    DEFAULT_TIMEOUT_SECS,
};
use wsync_core::trash::{parse_list, snapshot_time, LocalTrash, Snapshot, TRASH_DIR};

use super::workspace::{list_workspaces, resolve};
use super::Ctx;
use crate::cli::{TrashListArgs, TrashRestoreArgs};
use crate::error::CliError;
use crate::exit_codes;
use crate::output::{print, print_json, println};

/// One remote's trash, as `trash list --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteTrash {
    pub remote: String,
    pub target: String,
    pub keep_deleted_days: u32,
    /// Oldest first.
    pub snapshots: Vec<Snapshot>,
    /// Set when the trash could not be listed.
    pub error: Option<String>,
}

pub fn list(ctx: &Ctx, args: TrashListArgs) -> Result<i32> {
    let (ws, remotes) = workspace_and_remotes(ctx, &args.workspace, args.remote.as_deref())?;
    let trashes: Vec<RemoteTrash> = remotes
        .iter()
        .map(|r| {
            let listed = snapshots(&ws, r);
            RemoteTrash {
                remote: r.name.clone(),
                target: r.target.to_string(),
                keep_deleted_days: r.keep_deleted_days,
                error: listed.as_ref().err().cloned(),
                snapshots: listed.unwrap_or_default(),
            }
        })
        .collect();
    if args.json {
        print_json(&trashes)?;
    } else {
        print(&render(&trashes))?;
    }
    match trashes.iter().find(|t| t.error.is_some()) {
        Some(failed) => Err(CliError::new(
            exit_codes::FAILURE,
            format!(
                "cannot list the trash of remote {}: {}",
                failed.remote,
                failed.error.as_deref().unwrap_or_default()
            ),
        )
        .with_hint(format!("see `wsync status {}`", ws.name))
        .into()),
        None => Ok(exit_codes::OK),
    }
}

pub fn restore(ctx: &Ctx, args: TrashRestoreArgs) -> Result<i32> {
    let TrashRestoreArgs {
        workspace,
        snapshot,
        paths,
        remote,
        force,
    } = args;
    if snapshot_time(&snapshot).is_none() {
        return Err(CliError::new(
            exit_codes::INVALID,
            format!("{snapshot:?} is not a trash snapshot name (like 2025-01-31T12-00-00.123Z)"),
        )
        .with_hint(format!(
            "`wsync trash list {workspace}` shows the snapshots"
        ))
        .into());
    }
    let (ws, remotes) = workspace_and_remotes(ctx, &workspace, remote.as_deref())?;
    let [remote] = remotes.as_slice() else {
        let names: Vec<&str> = remotes.iter().map(|r| r.name.as_str()).collect();
        return Err(CliError::new(
            exit_codes::INVALID,
            format!("workspace {} has several remotes", ws.name),
        )
        .with_hint(format!("pass --remote NAME, one of: {}", names.join(", ")))
        .into());
    };
    let relative = paths
        .iter()
        .map(|p| workspace_relative(&ws.path, p))
        .collect::<Result<Vec<_>>>()?;
    let listed = snapshots(&ws, remote).map_err(|e| {
        CliError::new(
            exit_codes::FAILURE,
            format!("cannot list the trash of remote {}: {e}", remote.name),
        )
    })?;
    if !listed.iter().any(|s| s.name == snapshot) {
        return Err(CliError::new(
            exit_codes::NOT_FOUND,
            format!("remote {} has no trash snapshot {snapshot}", remote.name),
        )
        .with_hint(format!(
            "`wsync trash list {} --remote {}` shows its snapshots",
            ws.name, remote.name
        ))
        .into());
    }
    // A local snapshot is held open from the check until rsync has read it.
    let held = match &remote.target {
        RemoteTarget::Local { path } => {
            let cannot = |e: String| {
                CliError::new(
                    exit_codes::FAILURE,
                    format!(
                        "cannot restore from {snapshot} of remote {}: {e}",
                        remote.name
                    ),
                )
            };
            let trash = local_trash(&ws, remote, path)
                .map_err(cannot)?
                .ok_or_else(|| cannot(format!("the target has no {TRASH_DIR}")))?;
            Some(
                trash
                    .hold_snapshot(&snapshot)
                    .map_err(|e| cannot(e.message(&remote.target)))?,
            )
        }
        RemoteTarget::Ssh { .. } => None,
    };
    let held_path = held.as_ref().map(|h| h.path());
    let argv = trash_argv(&TrashRequest {
        target: &remote.target,
        control_path: None,
        marker_id: Some(&ws.id),
        local: &ws.path,
        op: TrashOp::Restore {
            snapshot: &snapshot,
            paths: !relative.is_empty(),
            force,
            held: held_path.as_deref(),
        },
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        remote_rsync: None,
    });
    let stdin = (!relative.is_empty()).then(|| files_from(&relative));
    let output = run(&argv, stdin)?;
    drop(held);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let copied = parse_itemized(&stdout);
    let copied = copied.missing.len() + copied.differs.len();
    let kept = stdout.lines().filter(|l| l.ends_with(" exists")).count();
    if !matches!(
        classify_exit(output.status.code()),
        ExitClass::Success | ExitClass::Vanished
    ) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        return Err(CliError::new(
            exit_codes::FAILURE,
            format!(
                "restoring from {snapshot} of remote {} stopped after {copied} path(s): rsync exited with {}: {}",
                remote.name,
                output.status,
                lines[lines.len().saturating_sub(3)..].join("; ")
            ),
        )
        .with_hint("paths are relative to the workspace root, as `wsync trash list` shows them")
        .into());
    }
    println(&format!(
        "restored {copied} path(s) from {snapshot} of remote {} into {}",
        remote.name,
        ws.path.display()
    ))?;
    if kept > 0 {
        println(&format!(
            "{kept} path(s) exist in the workspace and were left as they are; --force overwrites them"
        ))?;
    }
    Ok(exit_codes::OK)
}

/// The workspace and its remotes (only `remote` when given).
fn workspace_and_remotes(
    ctx: &Ctx,
    workspace: &str,
    remote: Option<&str>,
) -> Result<(Workspace, Vec<Remote>)> {
    let mut client = ctx.connect()?;
    let name = resolve(&mut client, workspace)?;
    let workspaces = list_workspaces(&mut client)?;
    drop(client);
    let Some(ws) = super::verify::find(&workspaces, &name) else {
        return Err(CliError::new(
            exit_codes::NOT_FOUND,
            format!("no workspace named or containing {workspace:?}"),
        )
        .with_hint("`wsync list` shows the workspaces")
        .into());
    };
    let remotes: Vec<Remote> = ws
        .remotes
        .iter()
        .filter(|r| remote.is_none_or(|name| r.name == name))
        .cloned()
        .collect();
    if remotes.is_empty() {
        let names: Vec<&str> = ws.remotes.iter().map(|r| r.name.as_str()).collect();
        return Err(CliError::new(
            exit_codes::NOT_FOUND,
            match remote {
                Some(r) => format!("workspace {} has no remote named {r:?}", ws.name),
                None => format!("workspace {} has no remotes", ws.name),
            },
        )
        .with_hint(format!("its remotes: {}", names.join(", ")))
        .into());
    }
    Ok((ws.clone(), remotes))
}

/// The snapshots in a remote's trash, or why they cannot be listed.
fn snapshots(ws: &Workspace, remote: &Remote) -> Result<Vec<Snapshot>, String> {
    if let RemoteTarget::Local { path } = &remote.target {
        return match local_trash(ws, remote, path)? {
            Some(trash) => trash.snapshots().map_err(|e| e.message(&remote.target)),
            None => Ok(Vec::new()),
        };
    }
    let argv = trash_argv(&TrashRequest {
        target: &remote.target,
        control_path: None,
        marker_id: Some(&ws.id),
        local: &ws.path,
        op: TrashOp::List { files: true },
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        remote_rsync: None,
    });
    let output = run(&argv, None).map_err(|e| e.to_string())?;
    if classify_exit(output.status.code()) != ExitClass::Success {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if let Some(refused) = wsync_core::rsync::guard_refusal(&stderr, &remote.target) {
            return Err(refused);
        }
        let last = stderr.lines().rfind(|l| !l.trim().is_empty());
        return Err(format!(
            "rsync exited with {}: {}",
            output.status,
            last.unwrap_or_default()
        ));
    }
    Ok(parse_list(&String::from_utf8_lossy(&output.stdout)))
}

/// A local target's trash, opened by descriptor once its marker proved the target ours.
fn local_trash(ws: &Workspace, remote: &Remote, path: &Path) -> Result<Option<LocalTrash>, String> {
    if !wsync_core::target::is_ours_local(path, &ws.id) {
        return Err(wsync_core::target::not_ours_message(&remote.target));
    }
    LocalTrash::open(path).map_err(|e| e.message(&remote.target))
}

fn run(argv: &[std::ffi::OsString], stdin: Option<Vec<u8>>) -> Result<std::process::Output> {
    use std::io::Write;
    tracing::debug!(?argv, "running rsync");
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
        .map_err(|e| {
            CliError::new(exit_codes::FAILURE, format!("cannot run rsync: {e}"))
                .with_hint("install rsync (e.g. `sudo apt-get install rsync`)")
        })?;
    if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
        // rsync exiting early closes the pipe; its exit status tells why.
        let _ = pipe.write_all(&bytes);
    }
    Ok(child.wait_with_output()?)
}

/// A path to restore, relative to the workspace root: given so (as `trash list` and the
/// snapshot show them), or absolute inside the workspace. Never `..` or the root itself.
fn workspace_relative(root: &Path, path: &Path) -> Result<PathBuf> {
    let relative = if path.is_absolute() {
        path.strip_prefix(root)
            .map(Path::to_path_buf)
            .map_err(|_| {
                CliError::new(
                    exit_codes::INVALID,
                    format!(
                        "{} is not inside the workspace {}",
                        path.display(),
                        root.display()
                    ),
                )
            })?
    } else {
        path.to_path_buf()
    };
    let clean: PathBuf = relative
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    let bad = clean.as_os_str().is_empty()
        || clean
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        || clean.starts_with(TRASH_DIR);
    if bad {
        return Err(CliError::new(
            exit_codes::INVALID,
            format!("{} is not a path below the workspace root", path.display()),
        )
        .with_hint("name paths relative to the workspace root, without `..`; no PATH restores the whole snapshot")
        .into());
    }
    Ok(clean)
}

/// The `trash list` table: one line per snapshot, with each remote's setting.
fn render(trashes: &[RemoteTrash]) -> String {
    let mut out = String::new();
    for trash in trashes {
        let keeps = match trash.keep_deleted_days {
            0 => "keeps no deleted files".to_owned(),
            1 => "keeps deleted files for 1 day".to_owned(),
            n => format!("keeps deleted files for {n} days"),
        };
        out.push_str(&format!("{} ({}): {keeps}\n", trash.remote, trash.target));
        if let Some(error) = &trash.error {
            out.push_str(&format!("  error: {error}\n"));
        } else if trash.snapshots.is_empty() {
            out.push_str("  no snapshots\n");
        }
        for s in &trash.snapshots {
            out.push_str(&format!(
                "  {}  {:>7} file(s)  {:>12} bytes\n",
                s.name, s.files, s.bytes
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_paths_stay_below_the_workspace_root() {
        let root = Path::new("/ws");
        assert_eq!(
            workspace_relative(root, Path::new("./d/f")).unwrap(),
            PathBuf::from("d/f")
        );
        assert_eq!(
            workspace_relative(root, Path::new("/ws/d/f")).unwrap(),
            PathBuf::from("d/f")
        );
        for bad in [
            "../x",
            "d/../../x",
            "/elsewhere/f",
            ".",
            "/ws",
            ".wsync-trash/x",
        ] {
            assert!(workspace_relative(root, Path::new(bad)).is_err(), "{bad}");
        }
    }
}
