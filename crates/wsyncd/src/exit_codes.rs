//! `wsyncd`'s exit codes, one named constant each, and the one [`TABLE`] that `--help` lists.

use wsync_core::exit_code::{self, ExitCode};

/// Clean shutdown (SIGINT, SIGTERM or a shutdown request).
pub const SUCCESS: u8 = 0;
/// Could not start or run: bad config, unreadable registry, socket in use, ...
pub const FAILURE: u8 = 1;
/// Bad command-line usage (clap's own code).
pub const USAGE: u8 = 2;
/// Another wsyncd already runs for this config.
pub const ALREADY_RUNNING: u8 = 3;
/// The watchdog found the daemon's state lock poisoned (a thread panicked holding it).
pub const STATE_POISONED: u8 = 4;

/// Every exit code of `wsyncd`, once: `--help` lists them from here (see [`help`]).
pub const TABLE: &[ExitCode] = &[
    ExitCode::new(
        SUCCESS as i32,
        "SUCCESS",
        "clean shutdown (SIGINT, SIGTERM or `wsync daemon stop`)",
    ),
    ExitCode::new(
        FAILURE as i32,
        "FAILURE",
        "could not start or run (config, registry, socket errors; see the message)",
    ),
    ExitCode::new(USAGE as i32, "USAGE", "bad command-line usage"),
    ExitCode::new(
        ALREADY_RUNNING as i32,
        "ALREADY_RUNNING",
        "another wsyncd is already running for this config",
    ),
    ExitCode::new(
        STATE_POISONED as i32,
        "STATE_POISONED",
        "internal state corrupted (a thread panicked); restart the daemon",
    ),
];

/// Where `wsyncd` reads its config and writes its logs, shown in `--help` above the exit codes.
const FILES: &str = "\
Configuration: $WSYNC_CONFIG_PATH, else ~/.wsync/wsync.config. Logs: <LogDirectory>/wsyncd.log.*
(filter with WSYNC_LOG, e.g. WSYNC_LOG=debug).";

/// The text after `wsyncd --help`'s options: [`FILES`], then the exit codes from [`TABLE`].
pub fn help() -> String {
    format!("{FILES}\n\n{}", exit_code::render_help(TABLE))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn help_lists_every_exit_code_in_the_table() {
        for help in [
            crate::Args::command().render_long_help().to_string(),
            crate::Args::command().render_help().to_string(),
        ] {
            let problems = exit_code::check_help(TABLE, &help);
            assert!(problems.is_empty(), "{problems:#?}\n{help}");
            assert!(help.contains("WSYNC_CONFIG_PATH"), "{help}");
        }
    }

    #[test]
    fn the_table_has_every_constant_once() {
        let codes: Vec<i32> = TABLE.iter().map(|e| e.code).collect();
        assert_eq!(
            codes,
            [SUCCESS, FAILURE, USAGE, ALREADY_RUNNING, STATE_POISONED].map(i32::from)
        );
    }
}
