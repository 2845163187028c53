//! The exit codes of `wsync`: named constants, the mapping from daemon error codes, and the
//! table shown in `wsync --help`.

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

/// The exit-code table appended to `wsync --help`.
pub const HELP: &str = "\
Exit codes:
  0  success
  1  failure (I/O error, internal daemon error)
  2  usage error (bad command line)
  3  wsyncd is not running (start it with `wsync daemon start`)
  4  no such workspace or remote
  5  invalid request (bad path, duplicate name, overlapping workspaces, ...)
  6  timed out, or `flush` found remotes still lagging
  7  protocol mismatch between wsync and wsyncd (restart the daemon)
  8  `verify` found differences between the workspace and a remote
  9  `check-ignore`: none of the given paths is excluded";

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
        ] {
            assert!(
                HELP.contains(&format!("\n  {code}  ")),
                "code {code} missing"
            );
        }
    }
}
