//! wsync-cli: the `wsync` command. [`cli`] defines the arguments, [`client`] talks to wsyncd,
//! [`commands`] implements each command, [`render`] draws tables, [`exit_codes`] and [`error`]
//! decide how failures look and end.

pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod exit_codes;
pub mod logging;
pub mod output;
pub mod progress;
pub mod render;

/// Runs a parsed command line; returns the process exit code (errors are printed to stderr).
pub fn run(cli: cli::Cli) -> i32 {
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => error::report(&err),
    }
}
