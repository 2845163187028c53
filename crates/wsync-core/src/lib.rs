//! wsync-core: the types every wsync process shares — the config file, the workspace registry,
//! remote specs, the daemon socket protocol with its framing, and the monitor's control/status
//! channel. One home per concept; the binaries call these and never re-implement them.

pub mod agent;
pub mod backoff;
pub mod beneath;
pub mod config;
pub mod excludes;
pub mod executor;
pub mod exit_code;
pub mod framing;
pub mod logfile;
pub mod monitor_proto;
pub mod names;
pub mod owned;
pub mod paths;
pub mod platform;
pub mod project_file;
pub mod protect;
pub mod protocol;
pub mod registry;
pub mod remote;
pub mod rsync;
pub mod rsync_version;
pub mod ssh;
pub mod target;
pub mod target_path;
pub mod trash;

/// `at` in Unix milliseconds, the unit of every `*_unix_ms` field on the wire (0 before 1970).
pub fn unix_ms(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The wsync version every binary reports (all crates share the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
