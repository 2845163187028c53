//! Commands that change one workspace: add, remove, attach, detach, pause/resume, restart, flush;
//! and the resolution of a WORKSPACE argument (a name, or a path in or of a workspace).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use wsync_core::paths;
use wsync_core::protocol::{Request, Response};
use wsync_core::registry::update::WorkspaceChanges;
use wsync_core::registry::Workspace;

use super::{wait, Ctx};
use crate::cli::{AddArgs, AttachArgs, DetachArgs, FlushArgs, WorkspaceArgs};
use crate::client::{unexpected, Client};
use crate::error::CliError;
use crate::exit_codes;
use crate::output::println;
use crate::progress::Progress;

/// Makes `path` absolute against the current directory, without touching the filesystem.
fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path)
        .with_context(|| format!("resolving {} against the current directory", path.display()))?;
    Ok(paths::normalize_lexically(&abs))
}

/// The registry's workspaces, from the daemon.
pub fn list_workspaces(client: &mut Client) -> Result<Vec<Workspace>> {
    match client.call(&Request::List {})? {
        Response::Workspaces { workspaces } => Ok(workspaces),
        other => Err(unexpected(&other)),
    }
}

/// Every workspace whose directory holds `path`, the deepest first.
pub fn containing_all<'a>(workspaces: &'a [Workspace], path: &Path) -> Vec<&'a Workspace> {
    let mut found: Vec<&Workspace> = workspaces
        .iter()
        .filter(|w| path.starts_with(&w.path))
        .collect();
    found.sort_by_key(|w| std::cmp::Reverse(w.path.components().count()));
    found
}

/// The workspace whose directory holds `path` (the innermost, should several).
pub fn containing<'a>(workspaces: &'a [Workspace], path: &Path) -> Option<&'a Workspace> {
    containing_all(workspaces, path).into_iter().next()
}

/// The workspace a command without WORKSPACE means when run in `cwd` (the deepest holding it,
/// as git finds its repository), with a note for stderr when several hold it; `None` when none.
pub fn pick_for_cwd<'a>(
    workspaces: &'a [Workspace],
    cwd: &Path,
) -> Option<(&'a Workspace, Option<String>)> {
    let found = containing_all(workspaces, cwd);
    let picked = *found.first()?;
    let note = (found.len() > 1).then(|| {
        let others: Vec<String> = found[1..]
            .iter()
            .map(|w| format!("{} ({})", w.name, w.path.display()))
            .collect();
        format!(
            "using workspace {} ({}), the deepest of the workspaces holding the current directory; also holding it: {}",
            picked.name,
            picked.path.display(),
            others.join(", ")
        )
    });
    Some((picked, note))
}

/// A WORKSPACE argument resolved as [`resolve`] does, or, when it was omitted, the workspace
/// containing the current directory: what every command taking an optional WORKSPACE calls.
pub fn resolve_or_cwd(client: &mut Client, arg: Option<&str>) -> Result<String> {
    if let Some(arg) = arg {
        return resolve(client, arg);
    }
    match cwd_workspace(client)? {
        Ok(name) => Ok(name),
        Err(cwd) => Err(not_inside_a_workspace(&cwd).into()),
    }
}

/// The name of the workspace holding the current directory (announcing on stderr which one,
/// when nested workspaces hold it), or the directory none holds.
pub fn cwd_workspace(client: &mut Client) -> Result<Result<String, PathBuf>> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    // The registry holds canonical paths; a cwd reached through a symlink must match too.
    let cwd = cwd.canonicalize().unwrap_or(cwd);
    let workspaces = list_workspaces(client)?;
    Ok(match pick_for_cwd(&workspaces, &cwd) {
        Some((ws, note)) => {
            if let Some(note) = note {
                eprintln!("note: {note}");
            }
            Ok(ws.name.clone())
        }
        None => Err(cwd),
    })
}

/// The error of a command without WORKSPACE run outside every workspace.
fn not_inside_a_workspace(cwd: &Path) -> CliError {
    CliError::new(
        exit_codes::NOT_FOUND,
        format!(
            "not inside a workspace ({}); pass WORKSPACE or cd into one (wsync list shows them)",
            cwd.display()
        ),
    )
}

/// Turns a WORKSPACE argument into what the daemon understands. A workspace name is sent as is;
/// a path (anything with a `/`, `.`/`..`, or an existing entry that is not a workspace name)
/// becomes the name of the workspace containing it, else its canonical absolute form.
pub fn resolve(client: &mut Client, arg: &str) -> Result<String> {
    let looks_like_path = arg.contains('/') || arg == "." || arg == "..";
    if !looks_like_path && !Path::new(arg).exists() {
        return Ok(arg.to_owned());
    }
    let workspaces = list_workspaces(client)?;
    if !looks_like_path && workspaces.iter().any(|w| w.name == arg) {
        return Ok(arg.to_owned());
    }
    let path = match Path::new(arg).canonicalize() {
        Ok(p) => p,
        Err(_) => absolute(Path::new(arg))?,
    };
    Ok(match containing(&workspaces, &path) {
        Some(w) => w.name.clone(),
        None => path.to_string_lossy().into_owned(),
    })
}

/// The workspace in a reply to add, attach, detach, pause or resume.
pub(super) fn expect_workspace(response: Response) -> Result<Workspace> {
    match response {
        Response::Workspace { workspace } => Ok(workspace),
        other => Err(unexpected(&other)),
    }
}

pub fn add(ctx: &Ctx, args: AddArgs) -> Result<i32> {
    let path = absolute(&args.path)?;
    let mut client = ctx.connect()?;
    let ws = expect_workspace(client.call(&Request::Add {
        path,
        name: args.name,
        excludes: args.excludes,
    })?)?;
    println(&format!(
        "added workspace {} ({})\nnext: wsync attach {} <REMOTE>",
        ws.name,
        ws.path.display(),
        ws.name
    ))?;
    // The watch settings are the workspace's own: set on the new entry (no monitor runs yet).
    if args.watch_mode.is_some() || args.poll_interval_ms.is_some() {
        let changes = WorkspaceChanges {
            watch_mode: args.watch_mode.map(Some),
            poll_interval_ms: args.poll_interval_ms.map(Some),
            ..WorkspaceChanges::default()
        };
        let updated = super::settings::update(&mut client, &ws.name, changes)?;
        println(&super::settings::describe(&updated))?;
    }
    Ok(exit_codes::OK)
}

pub fn remove(ctx: &Ctx, args: WorkspaceArgs) -> Result<i32> {
    let mut client = ctx.connect()?;
    let workspace = resolve_or_cwd(&mut client, args.workspace.as_deref())?;
    match client.call(&Request::Remove {
        workspace: workspace.clone(),
    })? {
        Response::Done { .. } => {
            println(&format!(
                "removed workspace {workspace} (no files were deleted)"
            ))?;
            Ok(exit_codes::OK)
        }
        other => Err(unexpected(&other)),
    }
}

/// `./dir` and `../dir` are clearly local: make them absolute (the daemon wants absolute paths).
fn remote_spec(spec: &str) -> Result<String> {
    let relative = spec == "." || spec == ".." || spec.starts_with("./") || spec.starts_with("../");
    if relative {
        return Ok(absolute(Path::new(spec))?.to_string_lossy().into_owned());
    }
    Ok(spec.to_owned())
}

pub fn attach(ctx: &Ctx, args: AttachArgs) -> Result<i32> {
    // How long to wait for the initial sync; `None` returns once the daemon accepted the remote.
    let wait = (!args.no_wait).then(|| Duration::from_secs(args.timeout));
    let identity_file = match args.identity_file {
        Some(f) => Some(absolute(&paths::expand_home(&f.to_string_lossy()))?),
        None => None,
    };
    let target = remote_spec(&args.remote)?;
    let mut client = ctx.connect()?;
    let workspace = resolve(&mut client, &args.workspace)?;
    // Which remotes were there: with --keep-deleted, a target already attached is updated.
    let before: Vec<(String, u32)> = list_workspaces(&mut client)?
        .into_iter()
        .find(|w| w.name == workspace)
        .map(|w| {
            w.remotes
                .into_iter()
                .map(|r| (r.name, r.keep_deleted_days))
                .collect()
        })
        .unwrap_or_default();
    let ws = expect_workspace(client.call(&Request::Attach {
        workspace,
        target,
        name: args.name,
        port: args.port,
        identity_file,
        ssh_options: args.ssh_options,
        // Waiting for the initial sync: the monitor reports its progress (for the bar).
        wait: wait.is_some(),
        overwrite: args.overwrite,
        keep_deleted: args.keep_deleted,
        transport: args.transport,
        rsync_path: args.rsync_path,
    })?)?;
    let added = ws
        .remotes
        .iter()
        .find(|r| !before.iter().any(|(name, _)| *name == r.name));
    if let (None, Some(days)) = (added, args.keep_deleted) {
        let changed = ws
            .remotes
            .iter()
            .find(|r| !before.contains(&(r.name.clone(), r.keep_deleted_days)))
            .or_else(|| ws.remotes.iter().find(|r| r.keep_deleted_days == days));
        let name = changed.map_or("the remote", |r| r.name.as_str());
        println(&match days {
            0 => format!("remote {name} of workspace {} keeps no deleted files now (its .wsync-trash is left as it is)", ws.name),
            _ => format!("remote {name} of workspace {} keeps deleted and overwritten files for {days} days in .wsync-trash (`wsync trash list {}`)", ws.name, ws.name),
        })?;
        return Ok(exit_codes::OK);
    }
    let Some(remote) = added.or(ws.remotes.last()) else {
        return Err(anyhow::anyhow!(
            "wsyncd accepted the remote but lists none for workspace {}",
            ws.name
        ));
    };
    println(&format!(
        "attached remote {} ({}) to workspace {}",
        remote.name, remote.target, ws.name
    ))?;
    if let Some(timeout) = wait {
        match wait::initial_sync(&mut client, &ws.name, &remote.name, timeout)? {
            wait::InitialSync::Paused => println(&format!(
                "workspace {0} is paused; {1} syncs after `wsync resume {0}`",
                ws.name, remote.name
            ))?,
            _ => println(&format!("{} is in sync", remote.name))?,
        }
    }
    Ok(exit_codes::OK)
}

pub fn detach(ctx: &Ctx, args: DetachArgs) -> Result<i32> {
    let DetachArgs { workspace, remote } = args;
    let mut client = ctx.connect()?;
    let workspace = resolve(&mut client, &workspace)?;
    let ws = expect_workspace(client.call(&Request::Detach {
        workspace,
        remote: remote.clone(),
    })?)?;
    println(&format!(
        "detached remote {remote} from workspace {} (its files stay)",
        ws.name
    ))?;
    Ok(exit_codes::OK)
}

/// `pause` (`pause == true`) and `resume`: the same request but for its variant.
pub fn pause(ctx: &Ctx, args: WorkspaceArgs, pause: bool) -> Result<i32> {
    let mut client = ctx.connect()?;
    let workspace = resolve_or_cwd(&mut client, args.workspace.as_deref())?;
    let request = if pause {
        Request::Pause { workspace }
    } else {
        Request::Resume { workspace }
    };
    let ws = expect_workspace(client.call(&request)?)?;
    if pause {
        println(&format!(
            "paused workspace {0}; changes are collected and pushed after `wsync resume {0}`",
            ws.name
        ))?;
    } else {
        println(&format!("resumed workspace {}", ws.name))?;
    }
    Ok(exit_codes::OK)
}

pub fn restart(ctx: &Ctx, args: WorkspaceArgs) -> Result<i32> {
    let mut client = ctx.connect()?;
    let workspace = resolve_or_cwd(&mut client, args.workspace.as_deref())?;
    match client.call(&Request::Restart {
        workspace: workspace.clone(),
    })? {
        Response::Done { .. } => {
            println(&format!("restarted the monitor of workspace {workspace}"))?;
            Ok(exit_codes::OK)
        }
        other => Err(unexpected(&other)),
    }
}

/// One line per lagging remote with its state and last error (a stalled remote names the call
/// it waits for), from a fresh status (empty when it cannot be had); and whether one of them
/// is stalled.
fn lagging_details(client: &mut Client, workspace: &str, lagging: &[String]) -> (String, bool) {
    let Ok(Some(status)) = wait::workspace_status(client, workspace) else {
        return (String::new(), false);
    };
    let Some(report) = status.report else {
        return (String::new(), false);
    };
    let mut out = String::new();
    let mut stalled = false;
    for name in lagging {
        if let Some(remote) = report.remotes.iter().find(|r| &r.name == name) {
            stalled |= remote.state == wsync_core::monitor_proto::RemoteState::Stalled;
            out.push_str(&format!(
                "\n  {name}: {}",
                crate::render::remote_state_name(remote.state)
            ));
            if let Some(error) = &remote.last_error {
                out.push_str(&format!(" — {error}"));
            }
        }
    }
    (out, stalled)
}

/// Extra time the CLI grants the daemon beyond the flush timeout before giving up on it.
pub(super) const FLUSH_ANSWER_MARGIN: Duration = Duration::from_secs(15);

pub fn flush(ctx: &Ctx, args: FlushArgs) -> Result<i32> {
    let timeout_secs = args.timeout;
    let mut client = ctx.connect()?;
    let workspace = resolve_or_cwd(&mut client, args.workspace.as_deref())?;
    client.set_timeout(Duration::from_secs(timeout_secs) + FLUSH_ANSWER_MARGIN)?;
    let message = format!("waiting for every remote of {workspace}");
    let mut progress = Progress::spinner(message.clone());
    // A second connection polls the status for the progress bar while this one waits.
    let poller = progress.visible().then(|| ctx.connect().ok()).flatten();
    let stop = AtomicBool::new(false);
    let response = std::thread::scope(|scope| {
        if let Some(poller) = poller {
            let (progress, stop, workspace) = (&mut progress, &stop, &workspace);
            let message = &message;
            scope.spawn(move || {
                wait::show_full_syncs(poller, workspace, progress, message, stop);
            });
        }
        let response = client.call(&Request::Flush {
            workspace: workspace.clone(),
            timeout_ms: Some(timeout_secs.saturating_mul(1000)),
        });
        stop.store(true, Ordering::Relaxed);
        response
    })?;
    drop(progress);
    match response {
        Response::Flushed { workspace, lagging } if lagging.is_empty() => {
            println(&format!("workspace {workspace}: every remote is in sync"))?;
            Ok(exit_codes::OK)
        }
        Response::Flushed { workspace, lagging } => {
            let (details, stalled) = lagging_details(&mut client, &workspace, &lagging);
            Err(CliError::new(
                exit_codes::TIMEOUT,
                format!(
                    "workspace {workspace}: {} still lagging{}: {}{details}",
                    if lagging.len() == 1 {
                        "remote"
                    } else {
                        "remotes"
                    },
                    // A flush waiting only for stalled remotes is answered before its timeout.
                    if stalled {
                        String::new()
                    } else {
                        format!(" after {timeout_secs} s")
                    },
                    lagging.join(", "),
                ),
            )
            .with_hint(format!(
                "see `wsync status {workspace}` for the state and last error of each remote"
            ))
            .into())
        }
        other => Err(unexpected(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(name: &str, path: &str) -> Workspace {
        Workspace {
            name: name.into(),
            id: String::new(),
            path: path.into(),
            remotes: vec![],
            paused: false,
            excludes: vec![],
            respect_gitignore: true,
            max_delete: None,
            checksum_every_secs: None,
            tuning: Default::default(),
            root_id: None,
        }
    }

    #[test]
    fn a_path_inside_a_workspace_finds_it() {
        let all = [ws("a", "/src/a"), ws("ab", "/src/ab")];
        let found = |p: &str| containing(&all, Path::new(p)).map(|w| w.name.as_str());
        assert_eq!(found("/src/a"), Some("a"));
        assert_eq!(found("/src/a/deep/file"), Some("a"));
        assert_eq!(found("/src/ab/x"), Some("ab"));
        assert_eq!(found("/src"), None);
    }

    #[test]
    fn the_current_directory_picks_the_deepest_workspace_and_says_so() {
        let all = [
            ws("outer", "/src/o"),
            ws("inner", "/src/o/sub"),
            ws("other", "/x"),
        ];
        let pick =
            |p: &str| pick_for_cwd(&all, Path::new(p)).map(|(w, note)| (w.name.as_str(), note));
        assert_eq!(pick("/src/o/a"), Some(("outer", None)));
        assert_eq!(pick("/x"), Some(("other", None)));
        let (name, note) = pick("/src/o/sub/deep").unwrap();
        assert_eq!(name, "inner");
        let note = note.expect("nested workspaces are announced");
        assert!(
            note.contains("inner (/src/o/sub)") && note.contains("outer (/src/o)"),
            "{note}"
        );
        // A sibling sharing a name prefix is not inside.
        assert_eq!(pick("/src/o-sibling"), None);
        assert_eq!(pick("/"), None);
        assert!(not_inside_a_workspace(Path::new("/tmp"))
            .to_string()
            .contains("pass WORKSPACE or cd into one (wsync list shows them)"));
    }

    #[test]
    fn relative_local_remotes_become_absolute() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            remote_spec("./mirror").unwrap(),
            cwd.join("mirror").to_string_lossy()
        );
        assert_eq!(remote_spec("host:dir").unwrap(), "host:dir");
        assert_eq!(remote_spec("/srv/m").unwrap(), "/srv/m");
    }
}
