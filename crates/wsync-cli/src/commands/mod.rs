//! One function per command; [`dispatch`] loads the config and routes a parsed command line.

pub mod check_ignore;
mod client;
mod config;
mod daemon;
pub mod docs;
mod events;
mod logs;
mod project;
mod settings;
mod show;
mod trash;
pub mod verify;
mod wait;
mod workspace;

use anyhow::Result;
use clap::CommandFactory;
use wsync_core::config::{Config, ConfigError};

use crate::cli::{Cli, Command, CompletionsArgs, DaemonCommand, TrashCommand};
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
    let command = match cli.command {
        Command::Completions(args) => return completions(args),
        Command::GenerateDocs(args) => return docs::generate(args),
        Command::Init(args) => return project::init(args),
        command => command,
    };
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
    match command {
        Command::Add(args) => workspace::add(&ctx, args),
        Command::Remove(args) => workspace::remove(&ctx, args),
        Command::Attach(args) => workspace::attach(&ctx, args),
        Command::Detach(args) => workspace::detach(&ctx, args),
        Command::Pause(args) => workspace::pause(&ctx, args, true),
        Command::Resume(args) => workspace::pause(&ctx, args, false),
        Command::Restart(args) => workspace::restart(&ctx, args),
        Command::Flush(args) => workspace::flush(&ctx, args),
        Command::Set(args) => settings::set(&ctx, args),
        Command::Up(args) => project::up(&ctx, args),
        Command::Down(args) => project::down(&ctx, args),
        Command::Init(args) => project::init(args),
        Command::List(args) => show::list(&ctx, args),
        Command::Status(args) => show::status(&ctx, args),
        Command::Events(args) => events::events(&ctx, args),
        Command::Client => client::relay(&ctx),
        Command::Logs(args) => logs::logs(&ctx, args),
        Command::Verify(args) => verify::verify(&ctx, args),
        Command::Trash(TrashCommand::List(args)) => trash::list(&ctx, args),
        Command::Trash(TrashCommand::Restore(args)) => trash::restore(&ctx, args),
        Command::CheckIgnore(args) => check_ignore::check_ignore(&ctx, args),
        Command::Config(args) => config::show(&ctx, args),
        Command::Completions(args) => completions(args),
        Command::GenerateDocs(args) => docs::generate(args),
        Command::Daemon(DaemonCommand::Start(args)) => daemon::start(&ctx, args),
        Command::Daemon(DaemonCommand::Stop(args)) => daemon::stop(&ctx, args),
        Command::Daemon(DaemonCommand::Status) => daemon::status(&ctx),
    }
}

/// Writes the completion script for `shell` to stdout (needs no config and no daemon).
fn completions(args: CompletionsArgs) -> Result<i32> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "wsync", &mut script);
    crate::output::print(&String::from_utf8_lossy(&script))?;
    Ok(crate::exit_codes::OK)
}
