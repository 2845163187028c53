//! `wsyncd`'s exit codes, one named constant each (also listed in `--help`).

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

/// The exit-code table shown by `wsyncd --help`.
pub const HELP: &str = "\
Configuration: $WSYNC_CONFIG_PATH, else ~/.wsync/wsync.config. Logs: <LogDirectory>/wsyncd.log.*
(filter with WSYNC_LOG, e.g. WSYNC_LOG=debug).

Exit codes:
  0  clean shutdown (SIGINT, SIGTERM or `wsync daemon stop`)
  1  could not start or run (config, registry, socket errors; see the message)
  2  bad command-line usage
  3  another wsyncd is already running for this config
  4  internal state corrupted (a thread panicked); restart the daemon";
