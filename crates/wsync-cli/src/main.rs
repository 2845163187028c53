//! `wsync`: the command line client of the wsync daemon. All logic lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = wsync_cli::cli::Cli::parse();
    wsync_cli::logging::init();
    let code = wsync_cli::run(cli);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
