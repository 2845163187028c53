//! `wsync events`: the daemon's event stream, one line (or one JSON object) per event.

use anyhow::{Context, Result};
use wsync_core::protocol::{Event, EventKind};

use super::workspace::{cwd_workspace, resolve};
use super::Ctx;
use crate::cli::EventsArgs;
use crate::client::{Client, EventStream};
use crate::error::CliError;
use crate::exit_codes;
use crate::output::print;
use crate::render;

pub fn events(ctx: &Ctx, args: EventsArgs) -> Result<i32> {
    let EventsArgs {
        workspace,
        all,
        json,
    } = args;
    let mut stream = subscribe(ctx, workspace.as_deref(), all)?;
    loop {
        let event = stream.next_event()?;
        let line = if json {
            serde_json::to_string(&event).context("encoding JSON")?
        } else {
            render::event_line(&event)
        };
        print(&format!("{line}\n"))?;
        if let Some(end) = end_of_stream(&event) {
            return end;
        }
    }
}

/// Subscribes to `workspace` (a name or path), else to the workspace holding the current
/// directory unless `all`, else to every workspace. Returns the stream and the name it is
/// filtered on.
pub fn subscribe(ctx: &Ctx, workspace: Option<&str>, all: bool) -> Result<EventStream> {
    let (client, name) = subscribed_to(ctx, workspace, all)?;
    client.subscribe(name)
}

/// The connection and the workspace name a command without WORKSPACE applies to.
pub fn subscribed_to(
    ctx: &Ctx,
    workspace: Option<&str>,
    all: bool,
) -> Result<(Client, Option<String>)> {
    let mut client = ctx.connect()?;
    let name = match workspace {
        Some(w) => Some(resolve(&mut client, w)?),
        None if !all => cwd_workspace(&mut client)?.ok(),
        None => None,
    };
    Ok((client, name))
}

/// How a stream ends after `event`, if it is a last one: the daemon stopping is a normal end,
/// being dropped for reading too slowly is not.
pub fn end_of_stream(event: &Event) -> Option<Result<i32>> {
    match event.kind {
        EventKind::DaemonStopping {} => Some(Ok(exit_codes::OK)),
        EventKind::Lagged { queue } => Some(Err(CliError::new(
            exit_codes::FAILURE,
            format!("wsyncd dropped this event stream: it fell {queue} events behind"),
        )
        .with_hint("run it again; read its output without delay (e.g. not through a pager that is stopped)")
        .into())),
        _ => None,
    }
}
