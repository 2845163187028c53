//! Progress display for commands that wait (attach's initial sync, flush): a spinner on stderr
//! that turns into a bar (bytes, files, percentage) while the daemon reports a full sync's
//! progress, shown only when both stdout and stderr are terminals.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{HumanBytes, HumanCount, ProgressBar, ProgressStyle};
use wsync_core::monitor_proto::SyncProgress;

/// The bar's length: positions are in thousandths.
const SCALE: u64 = 1000;

/// A spinner or bar with a message, or nothing when output is not interactive.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Whether the bar style is on (else the spinner's).
    showing_bar: bool,
}

impl Progress {
    /// Starts a spinner showing `message`.
    pub fn spinner(message: impl Into<String>) -> Self {
        if !(std::io::stdout().is_terminal() && std::io::stderr().is_terminal()) {
            return Self {
                bar: None,
                showing_bar: false,
            };
        }
        let progress = Self::with_bar(ProgressBar::new_spinner(), message);
        if let Some(bar) = &progress.bar {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        progress
    }

    fn with_bar(bar: ProgressBar, message: impl Into<String>) -> Self {
        let progress = Self {
            bar: Some(bar),
            showing_bar: false,
        };
        progress.set_style(false);
        progress.set_message(message);
        progress
    }

    /// Whether anything is drawn (callers skip extra work for a hidden display).
    pub fn visible(&self) -> bool {
        self.bar.is_some()
    }

    pub fn set_message(&self, message: impl Into<String>) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.into());
        }
    }

    /// Shows `message` with a full sync's progress as a bar, or as a spinner without one.
    pub fn update(&mut self, message: &str, sync: Option<&SyncProgress>) {
        let Some(bar) = &self.bar else {
            return;
        };
        let (fraction, details) = match sync {
            Some(p) => {
                let (fraction, details) = describe(p);
                (fraction, Some(details))
            }
            None => (None, None),
        };
        let want_bar = fraction.is_some();
        if want_bar != self.showing_bar {
            self.showing_bar = want_bar;
            self.set_style(want_bar);
        }
        if let Some(permille) = fraction {
            bar.set_length(SCALE);
            bar.set_position(permille);
        }
        bar.set_message(match details {
            Some(details) => format!("{message}: {details}"),
            None => message.to_owned(),
        });
    }

    fn set_style(&self, with_bar: bool) {
        let Some(bar) = &self.bar else {
            return;
        };
        let template = if with_bar {
            "{spinner} [{bar:30}] {percent:>3}% {msg} ({elapsed})"
        } else {
            "{spinner} {msg} ({elapsed})"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// How far a full sync is, in thousandths (`None` while no total is known), and a description
/// such as `1.50 MiB of ~3.00 MiB, 120/6,031 files`. The fraction is the larger of the bytes'
/// and the files' (a resync of mostly unchanged files sends a small part of the total size
/// but checks every file).
pub fn describe(p: &SyncProgress) -> (Option<u64>, String) {
    let part = |done: u64, total: Option<u64>| {
        total
            .filter(|&t| t > 0)
            .map(|t| (u128::from(done.min(t)) * u128::from(SCALE) / u128::from(t)) as u64)
    };
    let fraction = match (
        part(p.bytes_done, p.bytes_total),
        part(p.files_done, p.files_total),
    ) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let bytes = match p.bytes_total {
        Some(total) => format!("{} of ~{}", HumanBytes(p.bytes_done), HumanBytes(total)),
        None => format!("{}", HumanBytes(p.bytes_done)),
    };
    let files = match p.files_total {
        Some(total) => format!("{}/{} files", HumanCount(p.files_done), HumanCount(total)),
        None => format!("{} files so far", HumanCount(p.files_done)),
    };
    (fraction, format!("{bytes}, {files}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::ProgressDrawTarget;

    fn sync(bytes: (u64, Option<u64>), files: (u64, Option<u64>)) -> SyncProgress {
        SyncProgress {
            bytes_done: bytes.0,
            bytes_total: bytes.1,
            files_done: files.0,
            files_total: files.1,
        }
    }

    #[test]
    fn describes_known_and_unknown_totals() {
        assert_eq!(
            describe(&sync((1536, None), (32, None))),
            (None, "1.50 KiB, 32 files so far".into())
        );
        assert_eq!(
            describe(&sync((1536, Some(3072)), (10, Some(6031)))),
            (Some(500), "1.50 KiB of ~3.00 KiB, 10/6,031 files".into())
        );
        // A resync: little to send, but every file checked.
        assert_eq!(
            describe(&sync((10, Some(1_000_000)), (6031, Some(6031)))).0,
            Some(1000)
        );
        assert_eq!(describe(&sync((0, Some(0)), (0, None))).0, None);
    }

    #[test]
    fn the_bar_follows_progress_and_falls_back_to_the_spinner() {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        let mut progress = Progress::with_bar(bar.clone(), "initial sync to m");
        assert!(progress.visible());
        assert_eq!(bar.message(), "initial sync to m");
        progress.update(
            "initial sync to m",
            Some(&sync((2048, Some(4096)), (3, Some(10)))),
        );
        assert!(progress.showing_bar);
        assert_eq!((bar.position(), bar.length()), (500, Some(SCALE)));
        assert_eq!(
            bar.message(),
            "initial sync to m: 2.00 KiB of ~4.00 KiB, 3/10 files"
        );
        progress.update("initial sync to m", Some(&sync((4096, None), (3, None))));
        assert!(!progress.showing_bar);
        assert_eq!(bar.message(), "initial sync to m: 4.00 KiB, 3 files so far");
        progress.update("initial sync to m: copying", None);
        assert_eq!(bar.message(), "initial sync to m: copying");
        drop(progress);
        assert!(bar.is_finished());
    }
}
