//! wsyncd: the daemon's startup sequence and the modules it wires together.
//!
//! Startup order (each step refuses to go on when it fails, and touches nothing further):
//! config → socket directory (0700) → locked pidfile → registry → stale-socket probe → bind the
//! socket (0600) → monitors and watchdog → accept loop. SIGINT, SIGTERM and a `Shutdown` request
//! all end in the one shutdown path in [`daemon`]: stop accepting, stop the monitors, remove
//! socket and pidfile.

pub mod daemon;
pub mod exit_codes;
pub mod handlers;
pub mod hooks;
pub mod logging;
pub mod monitor_proc;
pub mod monitor_state;
pub mod path_check;
pub mod pidfile;
pub mod process;
pub mod restart_policy;
pub mod server;
pub mod shutdown;
pub mod socket;
pub mod ssh_masters;
pub mod state;
pub mod subscribers;
pub mod supervisor;
mod target_check;
pub mod watchdog;

use clap::Parser;

pub use daemon::run;

/// Command-line arguments of `wsyncd`.
#[derive(Debug, Parser)]
#[command(
    name = "wsyncd",
    version = wsync_core::VERSION,
    about = "The wsync daemon: keeps the workspace registry, serves the `wsync` CLI on a unix \
             socket and supervises one wsync-monitor per workspace.",
    long_about = None,
    after_help = exit_codes::help(),
)]
pub struct Args {
    /// Internal: run as a check process of the daemon (one filesystem job on a user's path,
    /// see `path_check`), not as the daemon.
    #[arg(long = "path-check", hide = true)]
    pub path_check: bool,
    /// Internal: run this hook and kill everything it leaves (hooks.rs, `subreaper_main`).
    #[arg(long = "hook-runner", hide = true, value_name = "HOOK")]
    pub hook_runner: Option<std::path::PathBuf>,
}

/// A fatal daemon error with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error(transparent)]
    AlreadyRunning(#[from] pidfile::AlreadyRunning),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Fatal {
    /// The process exit code for this error (see [`exit_codes`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Fatal::AlreadyRunning(_) => exit_codes::ALREADY_RUNNING,
            Fatal::Other(_) => exit_codes::FAILURE,
        }
    }
}
