//! One function per command; [`dispatch`] loads the config and routes a parsed command line.

mod daemon;
mod logs;
mod show;
mod wait;
mod workspace;

use anyhow::{Context, Result};
use clap::CommandFactory;
use wsync_core::config::Config;

use crate::cli::{Cli, Command, DaemonCommand};
use crate::client::Client;

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
    if let Command::Completions { shell } = cli.command {
        return completions(shell);
    }
    let config = Config::load().context("loading the wsync config file")?;
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
        Command::Completions { shell } => completions(shell),
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
