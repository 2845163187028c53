//! The watch backend a pass of the end-to-end suite runs under: `WSYNC_TEST_WATCH_MODE=notify`
//! or `poll` (unset: each test's own choice, inotify by default). `scripts/test.sh` runs the
//! watcher-dependent modules once per mode; [`TestEnv`](crate::env::TestEnv) writes the mode
//! into each test's config (`WatchMode=`, and a short `PollIntervalMs` for poll) and
//! [`MonitorProc`](crate::monitor::MonitorProc) into its start message. A test that cannot
//! work under a backend calls [`skip_under`] and says why.

use wsync_core::monitor_proto::{MonitorTunables, WatchMode};

/// The variable that selects the pass.
pub const VAR: &str = "WSYNC_TEST_WATCH_MODE";

/// A file the skips of a pass are appended to (set by `scripts/test.sh`).
pub const SKIP_LOG_VAR: &str = "WSYNC_TEST_SKIP_LOG";

/// The poll interval of a poll pass: short, so a test's waits stay short.
pub const POLL_INTERVAL_MS: u64 = 200;

/// The backend this pass forces, if any. A value other than `notify`, `poll`, `inotify` or
/// `auto` stops the test: a typo must not run the suite silently under the default.
pub fn forced() -> Option<WatchMode> {
    let value = std::env::var(VAR).ok().filter(|v| !v.is_empty())?;
    match WatchMode::parse(&value) {
        Some(WatchMode::Auto) => None,
        Some(mode) => Some(mode),
        None => panic!(
            "{VAR}={value:?}: use one of {}",
            WatchMode::NAMES.join(", ")
        ),
    }
}

fn name(mode: WatchMode) -> &'static str {
    match mode {
        WatchMode::Auto => "auto",
        WatchMode::Inotify => "inotify",
        WatchMode::Notify => "notify",
        WatchMode::Poll => "poll",
    }
}

/// The config lines of this pass (empty when none is forced, or when `extra`, the test's own
/// lines, already chooses a `WatchMode`).
pub fn config_lines(extra: &str) -> String {
    let own = extra
        .lines()
        .any(|l| l.trim_start().starts_with("WatchMode"));
    match forced() {
        Some(mode) if !own => {
            let mut lines = format!("WatchMode={}\n", name(mode));
            if mode == WatchMode::Poll && !extra.contains("PollIntervalMs") {
                lines.push_str(&format!("PollIntervalMs={POLL_INTERVAL_MS}\n"));
            }
            lines
        }
        _ => String::new(),
    }
}

/// The start message's tunables for this pass.
pub fn tunables() -> MonitorTunables {
    let mut tunables = MonitorTunables::default();
    if let Some(mode) = forced() {
        tunables.watch_mode = mode;
        if mode == WatchMode::Poll {
            tunables.poll_interval_ms = POLL_INTERVAL_MS;
        }
    }
    tunables
}

/// True (after printing why, so a skip is never silent) when this pass runs under one of
/// `modes`, which the calling test cannot work with: it should return at once.
pub fn skip_under(modes: &[WatchMode], test: &str, reason: &str) -> bool {
    match forced() {
        Some(mode) if modes.contains(&mode) => {
            let line = format!("SKIPPED: {test} under {VAR}={}: {reason}", name(mode));
            eprintln!("{line}");
            // libtest hides a passing test's output: scripts/test.sh prints this file after
            // the pass, so the skip is seen.
            if let Some(log) = std::env::var_os(SKIP_LOG_VAR) {
                use std::io::Write;
                if let Ok(mut file) = std::fs::File::options().create(true).append(true).open(log) {
                    let _ = writeln!(file, "{line}");
                }
            }
            true
        }
        _ => false,
    }
}

/// True when the backend of this pass counts its watches in status (inotify, the default):
/// notify and poll report 0, so a test checks watch counts only when this holds.
pub fn counts_watches() -> bool {
    matches!(forced(), None | Some(WatchMode::Inotify))
}
