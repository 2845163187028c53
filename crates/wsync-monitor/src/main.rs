//! `wsync-monitor`: watches one workspace and mirrors it to its remotes (see the library docs).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = wsync_monitor::Args::parse();
    match wsync_monitor::run(args) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("caused by: {cause}");
            }
            std::process::ExitCode::from(wsync_monitor::exit_codes::FATAL)
        }
    }
}
