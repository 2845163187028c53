//! The CLI's own diagnostics: tracing to stderr only, filtered by `WSYNC_LOG` (default `warn`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Environment variable overriding the log filter.
pub const LOG_ENV: &str = "WSYNC_LOG";

/// Installs the stderr subscriber; safe to call once per process.
pub fn init() {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(crate::render::colour_allowed(
            std::env::var_os("NO_COLOR").as_deref(),
            std::io::stderr().is_terminal(),
        ))
        .with_target(false)
        .without_time()
        .try_init();
}
