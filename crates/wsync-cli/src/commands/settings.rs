//! `wsync set`: changes a registered workspace's settings through the daemon's `update` request
//! ([`wsync_core::registry::update`]), and the one report of what an update changed that `set`,
//! `add` and `up` print.

use anyhow::Result;
use wsync_core::protocol::{Request, Response};
use wsync_core::registry::update::WorkspaceChanges;
use wsync_core::registry::Workspace;

use super::workspace::resolve_or_cwd;
use super::Ctx;
use crate::cli::SetArgs;
use crate::client::{unexpected, Client};
use crate::error::CliError;
use crate::exit_codes;
use crate::output::println;

/// Whether the first argument of `wsync set` is a setting rather than the workspace: it holds
/// '=' with no '/' before it (a path may hold '=', a key never holds '/').
fn is_setting(arg: &str) -> bool {
    arg.split_once('=')
        .is_some_and(|(key, _)| !key.contains('/'))
}

/// What an update did: the workspace's entry, the keys that changed, whether its monitor
/// restarted.
pub struct Updated {
    pub workspace: Workspace,
    pub changed: Vec<String>,
    pub restarted: bool,
}

/// Sends `changes` for `workspace` as one `update` request.
pub fn update(client: &mut Client, workspace: &str, changes: WorkspaceChanges) -> Result<Updated> {
    match client.call(&Request::Update {
        workspace: workspace.to_owned(),
        changes,
    })? {
        Response::Updated {
            workspace,
            changed,
            restarted,
        } => Ok(Updated {
            workspace,
            changed,
            restarted,
        }),
        other => Err(unexpected(&other)),
    }
}

/// One line: "workspace w: changed watch_mode, excludes; monitor restarted" or "... unchanged".
pub fn describe(updated: &Updated) -> String {
    let name = &updated.workspace.name;
    if updated.changed.is_empty() {
        return format!("workspace {name}: nothing changed (it already has these settings)");
    }
    let restarted = if updated.restarted {
        "; monitor restarted"
    } else {
        ""
    };
    format!(
        "workspace {name}: changed {}{restarted}",
        updated.changed.join(", ")
    )
}

pub fn set(ctx: &Ctx, args: SetArgs) -> Result<i32> {
    let (workspace, settings) = match args.args.split_first() {
        Some((first, rest)) if !is_setting(first) => (Some(first.as_str()), rest),
        _ => (None, args.args.as_slice()),
    };
    if settings.is_empty() {
        return Err(CliError::new(exit_codes::USAGE, "no KEY=VALUE given")
            .with_hint("e.g. `wsync set watch_mode=poll`; `wsync set --help` lists the keys")
            .into());
    }
    // Every setting is understood before the daemon is asked anything.
    let mut changes = WorkspaceChanges::default();
    for setting in settings {
        changes.set_from_text(setting).map_err(|e| {
            CliError::new(exit_codes::USAGE, e.to_string())
                .with_hint("`wsync set --help` lists the keys and their values")
        })?;
    }
    let mut client = ctx.connect()?;
    let workspace = resolve_or_cwd(&mut client, workspace)?;
    let updated = update(&mut client, &workspace, changes)?;
    println(&describe(&updated))?;
    Ok(exit_codes::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_argument_is_a_setting_only_with_a_key() {
        assert!(is_setting("watch_mode=poll"));
        assert!(is_setting("remote.box.transport=rsync"));
        assert!(!is_setting("project"));
        assert!(!is_setting("./dir=odd"));
        assert!(!is_setting("/home/me/a=b"));
    }
}
