//! Commands on a workspace's project file (`.wsync.toml`, [`wsync_core::project_file`]): `init`
//! writes a starter, `up` applies the file through the daemon's ordinary requests (add, update,
//! detach, attach: the daemon runs its usual checks), `down` unregisters; and the one-line note
//! `status` prints when a file and the registry disagree.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wsync_core::paths;
use wsync_core::project_file::{self, ProjectFile, ProjectRemote, RemotePlan, FILE_NAME};
use wsync_core::protocol::{Request, Response};
use wsync_core::registry::{AttachError, NewRemote, Registry, Remote, Workspace};

use super::settings;
use super::workspace::{expect_workspace, list_workspaces};
use super::Ctx;
use crate::cli::{ProjectDirArgs, UpArgs};
use crate::client::{unexpected, Client};
use crate::error::CliError;
use crate::exit_codes;
use crate::output::println;

/// The workspace root a command on a project file means: DIR when given (canonical), else the
/// directory of the nearest `.wsync.toml` at or above the current directory.
fn project_root(dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = dir {
        return dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()));
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let cwd = cwd.canonicalize().unwrap_or(cwd);
    match project_file::find_upwards(&cwd)
        .as_deref()
        .and_then(Path::parent)
    {
        Some(root) => Ok(root.to_owned()),
        None => Err(CliError::new(
            exit_codes::NOT_FOUND,
            format!(
                "no {FILE_NAME} in {} or any directory above it",
                cwd.display()
            ),
        )
        .with_hint("pass the workspace's directory, or create the file with `wsync init`")
        .into()),
    }
}

/// Loads `root`'s project file; a parse error (file:line) is a usage problem the user fixes.
fn load(root: &Path) -> Result<ProjectFile> {
    let path = root.join(FILE_NAME);
    ProjectFile::load(&path).map_err(|e| {
        let hint = "the keys are listed in the README (\"Project files\"); `wsync init` in an empty directory writes a commented example";
        CliError::new(exit_codes::INVALID, e.to_string())
            .with_hint(hint)
            .into()
    })
}

/// What the daemon's attach takes for one `[[remote]]`: a relative local spec or identity
/// file is relative to the workspace root (where the file is), not to the current directory.
fn new_remote(root: &Path, r: &ProjectRemote) -> NewRemote {
    let relative_local = r.spec == "." || r.spec.starts_with("./") || r.spec.starts_with("../");
    let spec = if relative_local {
        paths::normalize_lexically(&root.join(&r.spec))
            .to_string_lossy()
            .into_owned()
    } else {
        r.spec.clone()
    };
    let identity_file = r
        .identity_file
        .as_ref()
        .map(|f| root.join(paths::expand_home(&f.to_string_lossy())));
    NewRemote {
        spec,
        name: r.name.clone(),
        port: r.port,
        identity_file,
        ssh_options: r.ssh_options.clone(),
        keep_deleted_days: r.keep_deleted_days,
        transport: r.transport,
        rsync_path: None,
    }
}

/// The file's remotes as the registry would hold them once attached to `ws`, in file order,
/// computed with the registry's own validation on a copy in which `ws` has no remotes (so a
/// remote already attached is not refused as such). Only for planning: the daemon checks each
/// attach again, and the target checks (marker, emptiness) run only there.
fn file_remotes(
    workspaces: &[Workspace],
    ws: &Workspace,
    root: &Path,
    file: &ProjectFile,
) -> Vec<Result<Remote, AttachError>> {
    let mut registry = Registry {
        workspaces: workspaces.to_vec(),
        ..Registry::default()
    };
    let Some(index) = registry.workspaces.iter().position(|w| w.id == ws.id) else {
        return Vec::new();
    };
    registry.workspaces[index].remotes.clear();
    file.remotes
        .iter()
        .map(|r| registry.check_new_remote(index, &new_remote(root, r)))
        .collect()
}

pub fn init(args: ProjectDirArgs) -> Result<i32> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("reading the current directory")?,
    };
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let name = dir.file_name().map_or_else(
        || "workspace".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let path = dir.join(FILE_NAME);
    let mut out = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CliError::new(
                exit_codes::INVALID,
                format!(
                    "{} exists already; init never overwrites it",
                    path.display()
                ),
            )
            .with_hint("edit it and run `wsync up`, or delete it to start over")
            .into())
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    out.write_all(project_file::starter(&name).as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    println(&format!(
        "wrote {}\nnext: add a [[remote]] to it, then run `wsync up`",
        path.display()
    ))?;
    Ok(exit_codes::OK)
}

pub fn up(ctx: &Ctx, args: UpArgs) -> Result<i32> {
    let root = project_root(args.dir.as_deref())?;
    let file = load(&root)?;
    let mut client = ctx.connect()?;
    let mut workspaces = list_workspaces(&mut client)?;
    let ws = match workspaces.iter().find(|w| w.path == root) {
        Some(ws) => ws.clone(),
        None => {
            let ws = expect_workspace(client.call(&Request::Add {
                path: root.clone(),
                name: file.name.clone(),
                excludes: file.excludes.clone(),
            })?)?;
            println(&format!(
                "registered workspace {} ({})",
                ws.name,
                ws.path.display()
            ))?;
            workspaces.push(ws.clone());
            ws
        }
    };
    // Every remote must make sense before anything changes.
    let mut wanted = Vec::new();
    for (r, found) in file
        .remotes
        .iter()
        .zip(file_remotes(&workspaces, &ws, &root, &file))
    {
        let remote = found.map_err(|e| {
            CliError::new(
                exit_codes::INVALID,
                format!(
                    "{}: remote {:?}: {e}",
                    root.join(FILE_NAME).display(),
                    r.spec
                ),
            )
        })?;
        wanted.push((r, remote));
    }
    let plan = RemotePlan::new(
        &ws.remotes,
        &wanted
            .iter()
            .map(|(_, r)| Some(r.clone()))
            .collect::<Vec<_>>(),
    );
    for r in &plan.detach {
        expect_workspace(client.call(&Request::Detach {
            workspace: ws.name.clone(),
            remote: r.name.clone(),
        })?)?;
        println(&format!("detached remote {} ({})", r.name, r.target))?;
    }
    // The workspace's settings (and the settings of remotes that stay) in one update, before
    // new remotes are attached: their initial sync then uses them.
    let updated =
        settings::update(&mut client, &ws.name, file.changes(&plan)).with_context(|| {
            format!(
                "applying the settings of {}",
                root.join(FILE_NAME).display()
            )
        })?;
    if !updated.changed.is_empty() {
        println(&settings::describe(&updated))?;
    }
    for r in &plan.attach {
        let Some((entry, _)) = wanted.iter().find(|(_, w)| w == r) else {
            continue;
        };
        let new = new_remote(&root, entry);
        let reply = client
            .call(&Request::Attach {
                workspace: ws.name.clone(),
                target: new.spec,
                name: Some(r.name.clone()),
                port: new.port,
                identity_file: new.identity_file,
                ssh_options: new.ssh_options,
                wait: false,
                overwrite: args.overwrite,
                keep_deleted: Some(new.keep_deleted_days),
                transport: new.transport,
                rsync_path: None,
            })
            .with_context(|| format!("attaching remote {} from {FILE_NAME}", r.name))?;
        expect_workspace(reply)?;
        println(&format!("attached remote {} ({})", r.name, r.target))?;
    }
    if plan.detach.is_empty() && plan.attach.is_empty() && updated.changed.is_empty() {
        println(&format!(
            "workspace {} matches {}: nothing changed",
            ws.name,
            root.join(FILE_NAME).display()
        ))?;
    }
    // What the daemon has no request for stays as registered: say so rather than pretend.
    let workspaces = list_workspaces(&mut client)?;
    if let Some(now) = workspaces.iter().find(|w| w.id == ws.id) {
        let remotes = file_remotes(&workspaces, now, &root, &file);
        let left = file.differences(
            now,
            &remotes.into_iter().map(Result::ok).collect::<Vec<_>>(),
        );
        if !left.is_empty() {
            eprintln!(
                "note: not applied (wsyncd cannot change these on a registered workspace; `wsync down` then `wsync up` re-registers it): {}",
                left.join(", ")
            );
        }
    }
    Ok(exit_codes::OK)
}

pub fn down(ctx: &Ctx, args: ProjectDirArgs) -> Result<i32> {
    let root = project_root(args.dir.as_deref())?;
    let mut client = ctx.connect()?;
    let workspaces = list_workspaces(&mut client)?;
    let Some(ws) = workspaces.iter().find(|w| w.path == root) else {
        println(&format!(
            "{} is not a registered workspace; nothing to do",
            root.display()
        ))?;
        return Ok(exit_codes::OK);
    };
    match client.call(&Request::Remove {
        workspace: ws.name.clone(),
    })? {
        Response::Done { .. } => {
            println(&format!(
                "unregistered workspace {} (no files were deleted; `wsync up` registers it again)",
                ws.name
            ))?;
            Ok(exit_codes::OK)
        }
        other => Err(unexpected(&other)),
    }
}

/// How long `status` waits for a workspace root to answer when it reads its project file.
const FILE_READ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

enum Loaded {
    Absent,
    File(ProjectFile),
    Failed(String),
    NoAnswer,
}

/// Reads a project file on a thread of its own: a workspace root on a hung mount must not
/// stall `wsync status` (the thread is left behind; the CLI exits soon after).
fn load_within(path: &std::path::Path, deadline: std::time::Duration) -> Loaded {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let loaded = if !path.is_file() {
            Loaded::Absent
        } else {
            match ProjectFile::load(&path) {
                Ok(file) => Loaded::File(file),
                Err(e) => Loaded::Failed(e.to_string()),
            }
        };
        let _ = tx.send(loaded);
    });
    rx.recv_timeout(deadline).unwrap_or(Loaded::NoAnswer)
}

/// One line per workspace in `shown` whose `.wsync.toml` disagrees with the registry (or
/// cannot be read), for `wsync status`.
pub fn disagreements(client: &mut Client, shown: &[&Workspace]) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut all = None;
    for ws in shown {
        let path = ws.path.join(FILE_NAME);
        let file = match load_within(&path, FILE_READ_DEADLINE) {
            Loaded::Absent => continue,
            Loaded::File(file) => file,
            Loaded::Failed(e) => {
                notes.push(format!("workspace {}: {e}", ws.name));
                continue;
            }
            Loaded::NoAnswer => {
                notes.push(format!(
                    "workspace {}: {} did not answer within {} s (a hung mount?); its {FILE_NAME} was not compared",
                    ws.name,
                    ws.path.display(),
                    FILE_READ_DEADLINE.as_secs()
                ));
                continue;
            }
        };
        let all = match &all {
            Some(all) => all,
            None => all.insert(list_workspaces(client)?),
        };
        let remotes = file_remotes(all, ws, &ws.path, &file);
        let differences =
            file.differences(ws, &remotes.into_iter().map(Result::ok).collect::<Vec<_>>());
        if !differences.is_empty() {
            notes.push(format!(
                "workspace {}: {FILE_NAME} and the registry disagree ({}); `wsync up {}` applies the file",
                ws.name,
                differences.join(", "),
                ws.path.display()
            ));
        }
    }
    Ok(notes)
}
