//! The exit codes of `wsync`: named constants, the mapping from daemon error codes, and the
//! one [`TABLE`] that `wsync --help` is rendered from.

use wsync_core::exit_code::{self, ExitCode};
use wsync_core::protocol::ErrorCode;

/// Success.
pub const OK: i32 = 0;
/// Any failure without a more specific code (I/O errors, internal daemon errors).
pub const FAILURE: i32 = 1;
/// The command line could not be parsed (clap's own code).
pub const USAGE: i32 = 2;
/// wsyncd is not running (no socket, or nothing listening on it).
pub const DAEMON_NOT_RUNNING: i32 = 3;
/// No such workspace or remote.
pub const NOT_FOUND: i32 = 4;
/// The daemon refused the request's arguments (bad path, duplicate name, overlap, ...).
pub const INVALID: i32 = 5;
/// The operation timed out, or `flush` found remotes still lagging.
pub const TIMEOUT: i32 = 6;
/// wsync and wsyncd speak different protocol versions.
pub const PROTOCOL_MISMATCH: i32 = 7;
/// `verify` found differences between a workspace and a remote.
pub const DRIFT: i32 = 8;
/// `check-ignore`: none of the given paths is excluded.
pub const NOT_EXCLUDED: i32 = 9;

/// The exit code for a daemon error response.
pub fn for_error_code(code: ErrorCode) -> i32 {
    match code {
        ErrorCode::NotFound => NOT_FOUND,
        ErrorCode::Invalid | ErrorCode::BadRequest => INVALID,
        ErrorCode::Timeout => TIMEOUT,
        ErrorCode::ProtocolMismatch => PROTOCOL_MISMATCH,
        ErrorCode::Internal => FAILURE,
    }
}

/// Every exit code of `wsync`, once: `--help` lists them from here (see [`help`]).
pub const TABLE: &[ExitCode] = &[
    ExitCode::new(OK, "OK", "success"),
    ExitCode::new(
        FAILURE,
        "FAILURE",
        "failure (I/O error, internal daemon error)",
    ),
    ExitCode::new(USAGE, "USAGE", "usage error (bad command line)"),
    ExitCode::new(
        DAEMON_NOT_RUNNING,
        "DAEMON_NOT_RUNNING",
        "wsyncd is not running (start it with `wsync daemon start`)",
    ),
    ExitCode::new(NOT_FOUND, "NOT_FOUND", "no such workspace or remote"),
    ExitCode::new(
        INVALID,
        "INVALID",
        "invalid request (bad path, duplicate name, overlapping workspaces, ...)",
    ),
    ExitCode::new(
        TIMEOUT,
        "TIMEOUT",
        "timed out, or `flush` found remotes still lagging",
    ),
    ExitCode::new(
        PROTOCOL_MISMATCH,
        "PROTOCOL_MISMATCH",
        "protocol mismatch between wsync and wsyncd (restart the daemon)",
    ),
    ExitCode::new(
        DRIFT,
        "DRIFT",
        "`verify` found differences between the workspace and a remote",
    ),
    ExitCode::new(
        NOT_EXCLUDED,
        "NOT_EXCLUDED",
        "`check-ignore`: none of the given paths is excluded",
    ),
];

/// The exit-code block appended to `wsync --help`, rendered from [`TABLE`].
pub fn help() -> String {
    exit_code::render_help(TABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_error_codes_map_to_distinct_exit_codes() {
        assert_eq!(for_error_code(ErrorCode::NotFound), NOT_FOUND);
        assert_eq!(for_error_code(ErrorCode::Invalid), INVALID);
        assert_eq!(for_error_code(ErrorCode::BadRequest), INVALID);
        assert_eq!(for_error_code(ErrorCode::Timeout), TIMEOUT);
        assert_eq!(
            for_error_code(ErrorCode::ProtocolMismatch),
            PROTOCOL_MISMATCH
        );
        assert_eq!(for_error_code(ErrorCode::Internal), FAILURE);
    }

    #[test]
    fn help_lists_every_code() {
        let help = help();
        for code in [
            OK,
            FAILURE,
            USAGE,
            DAEMON_NOT_RUNNING,
            NOT_FOUND,
            INVALID,
            TIMEOUT,
            PROTOCOL_MISMATCH,
            DRIFT,
            NOT_EXCLUDED,
        ] {
            assert!(
                help.contains(&format!("\n  {code}  ")),
                "code {code} missing"
            );
        }
    }

    #[test]
    fn the_table_has_every_constant_once() {
        let codes: Vec<i32> = TABLE.iter().map(|e| e.code).collect();
        assert_eq!(codes, (OK..=NOT_EXCLUDED).collect::<Vec<_>>());
        assert_eq!(exit_code::check_help(TABLE, &help()), Vec::<String>::new());
    }
}
