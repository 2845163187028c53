//! The daemon's logging: tracing to a daily rolling `<LogDirectory>/wsyncd.log.<date>` (appended,
//! no ANSI, a private directory and 0600 files: [`wsync_core::logfile`]), filtered by `WSYNC_LOG`
//! (default `info`); stderr when the directory is unusable or not ours.
//! Also a panic hook that logs panics and remembers the last one for the watchdog.

use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use wsync_core::logfile::DailyLog;
use wsync_core::owned::PrivateDir;

/// Environment variable holding a tracing filter, e.g. `debug` or `wsyncd=trace`.
pub const LOG_ENV: &str = "WSYNC_LOG";
/// Base name of the daemon's log files inside `LogDirectory`.
pub const LOG_FILE_PREFIX: &str = "wsyncd.log";

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Installs the global subscriber. Never fails: problems are reported on stderr.
pub fn init(log_dir: &Path) {
    let filter = match std::env::var(LOG_ENV) {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("warning: ignoring {LOG_ENV}={spec:?}: {e}; logging at info");
            EnvFilter::new("info")
        }),
        _ => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_thread_names(true);
    match DailyLog::open(log_dir, LOG_FILE_PREFIX) {
        Ok((log, found)) => {
            // Blocking writer on purpose: the watchdog may end the process with `exit`, and a
            // background writer would lose the lines that explain why.
            let _ = builder.with_writer(Mutex::new(log)).try_init();
            match found {
                PrivateDir::Private => {}
                PrivateDir::Tightened { was } => tracing::info!(
                    "log directory {} had mode {was:o}; set to 0700",
                    log_dir.display()
                ),
                PrivateDir::Readable { mode } => tracing::warn!(
                    "log directory {} has mode {mode:o}, not 0700: others can list it (the files are 0600); set LogDirectory to a private directory to hide the names",
                    log_dir.display()
                ),
            }
        }
        Err(e) => {
            eprintln!(
                "warning: cannot write logs to {}: {e}; logging to stderr instead",
                log_dir.display()
            );
            let _ = builder.with_writer(std::io::stderr).try_init();
        }
    }
    install_panic_hook();
}

fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let message = format!(
            "thread {:?} panicked: {info}",
            thread.name().unwrap_or("<unnamed>")
        );
        tracing::error!("{message}");
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(message);
        }
        default_hook(info);
    }));
}

/// The most recent panic's description, if any thread panicked.
pub fn last_panic() -> Option<String> {
    LAST_PANIC.lock().ok().and_then(|p| p.clone())
}
