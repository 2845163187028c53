//! `wsyncd`: the wsync daemon, run in the foreground (systemd, `wsync daemon start` and tests).
use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = wsyncd::Args::parse();
    match wsyncd::run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                eprintln!("caused by: {cause}");
                source = cause.source();
            }
            std::process::ExitCode::from(err.exit_code())
        }
    }
}
