//! One function per command; [`dispatch`] loads the config and routes a parsed command line.

pub mod check_ignore;
mod daemon;
pub mod docs;
mod logs;
mod show;
pub mod verify;
mod wait;
mod workspace;

use anyhow::Result;
use clap::CommandFactory;
use wsync_core::config::{Config, ConfigError};

use crate::cli::{Cli, Command, DaemonCommand};
use crate::client::Client;
use crate::error::CliError;
use crate::exit_codes;

/// What every command needs: the resolved configuration.
pub struct Ctx {
    pub config: Config,
}

impl Ctx {
    /// Connects to the daemon named by the config (exit code 3 with a hint when it is not running).
    pub fn connect(&self) -> Result<Client> {
        Client::connect(&self.config.daemon_command_socket_path)
    }
}

/// Runs one command; returns the exit code for outcomes that are not errors.
pub fn dispatch(cli: Cli) -> Result<i32> {
    match &cli.command {
        Command::Completions { shell } => return completions(*shell),
        Command::GenerateDocs { dir } => return docs::generate(dir),
        _ => {}
    }
    let config = Config::load().map_err(|e| {
        let hint = match &e {
            ConfigError::Missing { .. } | ConfigError::Symlink { .. } => {
                "see config-examples/wsync.config for a commented example"
            }
            _ => "fix that line; every key, its default and its range are documented in config-examples/wsync.config and the README",
        };
        anyhow::Error::new(e).context(
            CliError::new(exit_codes::FAILURE, "loading the wsync config file").with_hint(hint),
        )
    })?;
    tracing::debug!(file = %config.file.display(), socket = %config.daemon_command_socket_path.display(), "config loaded");
    let ctx = Ctx { config };
    match cli.command {
        Command::Add {
            path,
            name,
            excludes,
        } => workspace::add(&ctx, &path, name, excludes),
        Command::Remove { workspace } => workspace::remove(&ctx, &workspace),
        Command::Attach {
            workspace,
            remote,
            name,
            port,
            identity_file,
            ssh_options,
            no_wait,
            timeout,
        } => workspace::attach(
            &ctx,
            &workspace,
            workspace::AttachArgs {
                remote,
                name,
                port,
                identity_file,
                ssh_options,
                wait: (!no_wait).then(|| std::time::Duration::from_secs(timeout)),
            },
        ),
        Command::Detach { workspace, remote } => workspace::detach(&ctx, &workspace, &remote),
        Command::Pause { workspace } => workspace::pause(&ctx, &workspace, true),
        Command::Resume { workspace } => workspace::pause(&ctx, &workspace, false),
        Command::Restart { workspace } => workspace::restart(&ctx, &workspace),
        Command::Flush { workspace, timeout } => workspace::flush(&ctx, &workspace, timeout),
        Command::List { json } => show::list(&ctx, json),
        Command::Status {
            workspace,
            json,
            watch,
        } => show::status(&ctx, workspace.as_deref(), json, watch),
        Command::Logs {
            workspace,
            follow,
            lines,
        } => logs::logs(&ctx, workspace.as_deref(), follow, lines),
        Command::Verify {
            workspace,
            remote,
            json,
            attributes,
        } => verify::verify(&ctx, &workspace, remote.as_deref(), json, attributes),
        Command::CheckIgnore { paths, json } => check_ignore::check_ignore(&ctx, &paths, json),
        Command::Completions { shell } => completions(shell),
        Command::GenerateDocs { dir } => docs::generate(&dir),
        Command::Daemon(DaemonCommand::Start { timeout }) => daemon::start(&ctx, timeout),
        Command::Daemon(DaemonCommand::Stop { timeout }) => daemon::stop(&ctx, timeout),
        Command::Daemon(DaemonCommand::Status) => daemon::status(&ctx),
    }
}

/// Writes the completion script for `shell` to stdout (needs no config and no daemon).
fn completions(shell: clap_complete::Shell) -> Result<i32> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "wsync", &mut script);
    crate::output::print(&String::from_utf8_lossy(&script))?;
    Ok(crate::exit_codes::OK)
}
