//! Logging for the monitor: a daily-rolling file `DIR/monitor-<workspace>.log.<date>` (no
//! ANSI, a private directory and 0600 files: [`wsync_core::logfile`]) with `--log-dir`, stderr
//! otherwise; never stdout, which carries the status channel.
//! `WSYNC_LOG` overrides the filter (default `info`).

use std::path::Path;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines the log writer's queue holds before it drops new ones. tracing-appender's default,
/// 128,000, is a channel whose slots are all written when it is made: 4 MiB resident in every
/// monitor, 40% of an idle one's RSS. 8,192 lines (256 KiB) outlast any burst the monitor logs
/// at `info`; a `debug` burst past it loses lines rather than blocking the event loop on disk.
const LOG_LINES_BUFFERED: usize = 8_192;

/// Installs the global subscriber; keep the guard alive until exit so buffered lines are written.
pub fn init(log_dir: Option<&Path>, workspace: &str) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_env("WSYNC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if let Some(dir) = log_dir {
        match wsync_core::logfile::DailyLog::open(dir, &format!("monitor-{workspace}.log")) {
            Ok((log, _)) => {
                // The daemon reports on the directory; it made it.
                let (writer, guard) = NonBlockingBuilder::default()
                    .buffered_lines_limit(LOG_LINES_BUFFERED)
                    .finish(log);
                let installed = tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_writer(writer)
                    .with_ansi(false)
                    .try_init();
                return installed.is_ok().then_some(guard);
            }
            Err(e) => eprintln!(
                "wsync-monitor: warning: cannot log to {}: {e}; logging to stderr",
                dir.display()
            ),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    None
}
