//! Progress display for commands that wait (attach's initial sync, flush): a spinner on stderr,
//! shown only when both stdout and stderr are terminals.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner with a message, or nothing when output is not interactive.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// Starts a spinner showing `message`.
    pub fn spinner(message: impl Into<String>) -> Self {
        if !(std::io::stdout().is_terminal() && std::io::stderr().is_terminal()) {
            return Self(None);
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self(Some(bar))
    }

    pub fn set_message(&self, message: impl Into<String>) {
        if let Some(bar) = &self.0 {
            bar.set_message(message.into());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
