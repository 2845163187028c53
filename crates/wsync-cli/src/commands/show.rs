//! Read-only commands: `list` and `status` (table or JSON, once or `--watch`, which follows the
//! daemon's event stream and asks for the status again only when something happened).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result};
use wsync_core::protocol::{Request, Response, WorkspaceStatus};

use super::workspace::{cwd_workspace, resolve};
use super::Ctx;
use crate::cli::{ListArgs, StatusArgs};
use crate::client::{unexpected, Client};
use crate::exit_codes;
use crate::output::{print, print_json};
use crate::render;

/// How often `status --watch` redraws a terminal (the relative times move) with nothing new.
const REDRAW_INTERVAL: Duration = Duration::from_secs(1);

pub fn list(ctx: &Ctx, args: ListArgs) -> Result<i32> {
    let mut client = ctx.connect()?;
    let workspaces = match client.call(&Request::List {})? {
        Response::Workspaces { workspaces } => workspaces,
        other => return Err(unexpected(&other)),
    };
    if args.json {
        print_json(&workspaces)?;
    } else {
        print(&render::list_table(&workspaces))?;
    }
    Ok(exit_codes::OK)
}

fn fetch(client: &mut Client, workspace: Option<&str>) -> Result<Vec<WorkspaceStatus>> {
    match client.call(&Request::Status {
        workspace: workspace.map(str::to_owned),
    })? {
        Response::Status { workspaces } => Ok(workspaces),
        other => Err(unexpected(&other)),
    }
}

fn snapshot(statuses: &[WorkspaceStatus], json: bool, pretty: bool) -> Result<String> {
    if !json {
        return Ok(render::status_table(
            statuses,
            render::now_unix_ms(),
            render::use_colour(),
        ));
    }
    let text = if pretty {
        serde_json::to_string_pretty(statuses)
    } else {
        serde_json::to_string(statuses)
    };
    Ok(text.context("encoding JSON")? + "\n")
}

pub fn status(ctx: &Ctx, args: StatusArgs) -> Result<i32> {
    let StatusArgs {
        workspace,
        all,
        json,
        watch,
    } = args;
    let mut client = ctx.connect()?;
    let workspace = match workspace {
        Some(w) => Some(resolve(&mut client, &w)?),
        // Inside a workspace, that one (as every command without WORKSPACE); elsewhere all.
        None if !all => cwd_workspace(&mut client)?.ok(),
        None => None,
    };
    let workspace = workspace.as_deref();
    if !watch {
        let statuses = fetch(&mut client, workspace)?;
        if json {
            print_json(&statuses)?;
        } else {
            print(&snapshot(&statuses, false, true)?)?;
        }
        let shown: Vec<_> = statuses.iter().map(|s| &s.workspace).collect();
        for note in super::project::disagreements(&mut client, &shown)? {
            eprintln!("note: {note}");
        }
        return Ok(exit_codes::OK);
    }
    watch_status(ctx, client, workspace.map(str::to_owned), json)
}

/// `status --watch`: subscribed first (so nothing that happens after the first snapshot is
/// missed), then a snapshot after each burst of events.
fn watch_status(
    ctx: &Ctx,
    mut client: Client,
    workspace: Option<String>,
    json: bool,
) -> Result<i32> {
    let mut stream = ctx.connect()?.subscribe(workspace.clone())?;
    let (events, arrived) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || loop {
            let next = stream.next_event();
            let end = next.is_err();
            if events.send(next).is_err() || end {
                return;
            }
        })
        .context("starting the event reader")?;
    let terminal = std::io::stdout().is_terminal();
    let mut last: Option<Vec<WorkspaceStatus>> = None;
    let mut statuses = fetch(&mut client, workspace.as_deref())?;
    loop {
        if terminal {
            // Home the cursor and clear the screen, then redraw (relative times change anyway).
            let body = snapshot(&statuses, json, true)?;
            print(&format!(
                "\x1b[H\x1b[2J{body}\nfollowing wsyncd's events; Ctrl-C to stop\n"
            ))?;
        } else if last.as_ref() != Some(&statuses) {
            // One compact JSON document per line, or one table per change separated by a blank line.
            let body = snapshot(&statuses, json, false)?;
            print(&if json { body } else { format!("{body}\n") })?;
        }
        last = Some(statuses.clone());
        let wait = if terminal {
            REDRAW_INTERVAL
        } else {
            Duration::MAX
        };
        let first = match arrived.recv_timeout(wait) {
            Ok(next) => next?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(anyhow::anyhow!("the event reader stopped"))
            }
        };
        // A burst costs one status request.
        for event in std::iter::once(Ok(first)).chain(arrived.try_iter()) {
            if let Some(end) = super::events::end_of_stream(&event?) {
                return end;
            }
        }
        // A fresh connection: the daemon closes one left idle for 30 s between events.
        statuses = fetch(&mut ctx.connect()?, workspace.as_deref())?;
    }
}
