//! `poll_until`: the one way the end-to-end tests wait. Every wait polls a condition until a
//! deadline and names what it awaited when the deadline passes; nothing sleeps a fixed time to
//! let something happen.

use std::fmt;
use std::time::{Duration, Instant};

/// The usual polling interval: short next to the waits' deadlines, long enough not to burn a
/// core on the shared CI machine.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// What a probe passed to [`poll_until`] returns: `true` or `Some(value)` once it holds.
pub trait Ready {
    /// What [`poll_until`] returns once the probe holds.
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// A wait whose deadline passed; says what was awaited and for how long.
pub struct TimedOut {
    what: String,
    timeout: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.timeout, self.what
        )
    }
}

// `.unwrap()` on a wait prints the sentence, not a struct.
impl fmt::Debug for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for TimedOut {}

/// Calls `probe` at once and then every `interval` until it holds (`true`, or `Some(value)`)
/// and returns its value; after `timeout` without it, [`TimedOut`] naming `what` (the probe
/// is always called once more at the deadline, so a slow machine gets its last chance).
pub fn poll_until<R: Ready>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> R,
) -> Result<R::Value, TimedOut> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().ready() {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(TimedOut {
                what: what.to_owned(),
                timeout,
            });
        }
        std::thread::sleep(interval.min(deadline - now));
    }
}
