//! `wsync-monitor`'s exit codes, one named constant each, and the one [`TABLE`] that `--help`
//! lists. The daemon reads these as a monitor's exit (see `wsync_core::monitor_proto`).

use wsync_core::exit_code::{self, ExitCode};

/// After `shutdown`, EOF on stdin, SIGTERM or SIGINT.
pub const OK: u8 = 0;
/// A fatal runtime error (cannot start the runtime or the watcher).
pub const FATAL: u8 = 1;
/// The first message on stdin was missing or not a valid `start`.
pub const BAD_START: u8 = 2;
/// `WSYNC_TEST_MONITOR_CRASH_FILE` named an existing file.
pub const TEST_CRASH: u8 = 3;

/// Every exit code of `wsync-monitor`, once.
pub const TABLE: &[ExitCode] = &[
    ExitCode::new(OK as i32, "OK", "shutdown, EOF on stdin, SIGTERM or SIGINT"),
    ExitCode::new(
        FATAL as i32,
        "FATAL",
        "fatal error (cannot start the runtime or the watcher)",
    ),
    ExitCode::new(
        BAD_START as i32,
        "BAD_START",
        "the first message on stdin was missing or not a valid start",
    ),
    ExitCode::new(
        TEST_CRASH as i32,
        "TEST_CRASH",
        "test crash switch (WSYNC_TEST_MONITOR_CRASH_FILE names an existing file)",
    ),
];

/// The text after `--help`'s options: what the channels carry, then the exit codes.
pub fn help() -> String {
    format!(
        "Reads JSON-line commands on stdin (the first must be start) and writes JSON-line status \
on stdout.\n\n{}",
        exit_code::render_help(TABLE)
    )
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn help_lists_every_exit_code_in_the_table() {
        let help = crate::Args::command().render_long_help().to_string();
        let problems = exit_code::check_help(TABLE, &help);
        assert!(problems.is_empty(), "{problems:#?}\n{help}");
        let codes: Vec<i32> = TABLE.iter().map(|e| e.code).collect();
        assert_eq!(codes, [OK, FATAL, BAD_START, TEST_CRASH].map(i32::from));
    }
}
