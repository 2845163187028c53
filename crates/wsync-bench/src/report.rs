//! The benchmark report: the issue-3 scenarios with their targets (local and SSH), the measured
//! figures, whether each target is met, and the markdown table.

use std::fmt;
use std::time::Duration;

use crate::data::ms;

/// The scenarios of issue 3, in the order of its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    OneFile,
    EditLargeTree,
    Burst,
    RenameDir,
    Delete,
    InitialSync,
    Idle,
    GrowingFile,
}

/// Where the remote is: a local path, or over SSH to 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    Local,
    Ssh,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Place::Local => "local",
            Place::Ssh => "SSH 127.0.0.1",
        })
    }
}

/// A target from issue 3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The p50 must be at most this many milliseconds.
    Ms(f64),
    /// wsync's time must be at most this multiple of plain rsync's.
    Ratio(f64),
    /// No CPU at all while idle, and at most this RSS in MiB.
    Idle { rss_mib: f64 },
    /// At most this multiple of the file's size sent.
    Bytes(f64),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ms(v) => write!(f, "≤ {v} ms"),
            Target::Ratio(r) => write!(f, "≤ {r:.2}× plain rsync"),
            Target::Idle { rss_mib } => write!(f, "0 CPU, ≤ {rss_mib} MiB RSS"),
            Target::Bytes(r) => write!(f, "≤ {r}× its size sent (issue 11)"),
        }
    }
}

impl Scenario {
    pub fn title(self) -> &'static str {
        match self {
            Scenario::OneFile => "one 1 KiB file",
            Scenario::EditLargeTree => "one edit in a 50,000-file tree",
            Scenario::Burst => "5,000 new files in 50 dirs, converged",
            Scenario::RenameDir => "rename a dir of 5,000 files",
            Scenario::Delete => "delete 1,000 files",
            Scenario::InitialSync => "initial sync of 50,000 files",
            Scenario::Idle => "idle on 50,000 files",
            Scenario::GrowingFile => "100 MiB written over 5 s via one fd",
        }
    }

    /// The target for this scenario at `place`.
    pub fn target(self, place: Place) -> Target {
        let local = place == Place::Local;
        match self {
            Scenario::OneFile => Target::Ms(if local { 6.5 } else { 25.0 }),
            Scenario::EditLargeTree => Target::Ms(if local { 8.0 } else { 25.0 }),
            Scenario::Burst => Target::Ms(if local { 200.0 } else { 450.0 }),
            Scenario::RenameDir => Target::Ms(if local { 30.0 } else { 50.0 }),
            Scenario::Delete => Target::Ms(if local { 38.0 } else { 80.0 }),
            Scenario::InitialSync => Target::Ratio(1.03),
            Scenario::Idle => Target::Idle { rss_mib: 10.0 },
            Scenario::GrowingFile => Target::Bytes(2.0),
        }
    }
}

/// What was measured for wsync.
#[derive(Debug, Clone)]
pub enum Measured {
    /// Latencies: the median and, when there are enough samples, the 95th percentile.
    Time {
        p50: Duration,
        p95: Option<Duration>,
    },
    /// CPU used over an idle period and the resident set at its end.
    Idle {
        secs: u64,
        cpu_ms: f64,
        rss_kib: u64,
    },
    /// Bytes sent for a file of `size` bytes, and the time from its close to the remote
    /// holding it.
    Bytes {
        sent: u64,
        size: u64,
        converged: Duration,
    },
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: Scenario,
    pub place: Place,
    pub wsync: Measured,
    /// Plain rsync's median on the same data in the same run.
    pub rsync: Option<Duration>,
    pub note: String,
}

impl Row {
    pub fn time(
        scenario: Scenario,
        place: Place,
        p50: Duration,
        p95: Option<Duration>,
        rsync: Duration,
        note: impl Into<String>,
    ) -> Self {
        Self {
            scenario,
            place,
            wsync: Measured::Time { p50, p95 },
            rsync: Some(rsync),
            note: note.into(),
        }
    }

    fn ratio(&self) -> Option<f64> {
        match (&self.wsync, self.rsync) {
            (Measured::Time { p50, .. }, Some(r)) => {
                Some(p50.as_secs_f64() / r.as_secs_f64().max(1e-9))
            }
            _ => None,
        }
    }

    /// Whether the measured figure meets the target.
    pub fn meets_target(&self) -> bool {
        match (self.scenario.target(self.place), &self.wsync) {
            (Target::Ms(limit), Measured::Time { p50, .. }) => p50.as_secs_f64() * 1000.0 <= limit,
            (Target::Ratio(limit), _) => self.ratio().is_some_and(|r| r <= limit),
            (
                Target::Idle { rss_mib },
                Measured::Idle {
                    cpu_ms, rss_kib, ..
                },
            ) => *cpu_ms == 0.0 && (*rss_kib as f64 / 1024.0) <= rss_mib,
            (Target::Bytes(limit), Measured::Bytes { sent, size, .. }) => {
                *sent as f64 <= limit * *size as f64
            }
            _ => false,
        }
    }
}

/// Renders the rows as a markdown table, in the scenario order, local before SSH.
pub fn markdown(rows: &[Row]) -> String {
    let mut rows = rows.to_vec();
    rows.sort_by_key(|r| (r.scenario, r.place));
    let mut out = String::from(
        "| scenario | where | target (issue 3) | wsync p50 | wsync p95 | plain rsync p50 | wsync ÷ rsync | target met | note |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let (p50, p95) = match &r.wsync {
            Measured::Time { p50, p95 } => (ms(*p50), p95.map(ms).unwrap_or_else(|| "—".into())),
            Measured::Idle {
                secs,
                cpu_ms,
                rss_kib,
            } => (
                format!(
                    "{cpu_ms:.0} ms CPU in {secs} s, {:.1} MiB RSS",
                    *rss_kib as f64 / 1024.0
                ),
                "—".into(),
            ),
            Measured::Bytes {
                sent,
                size,
                converged,
            } => (
                format!(
                    "{:.1} MiB sent ({:.2}× its size); on the remote {} after its close",
                    *sent as f64 / (1u64 << 20) as f64,
                    *sent as f64 / (*size).max(1) as f64,
                    ms(*converged)
                ),
                "—".into(),
            ),
        };
        let title = match &r.wsync {
            Measured::Idle { secs, .. } => format!("idle {secs} s on 50,000 files"),
            Measured::Time { .. } | Measured::Bytes { .. } => r.scenario.title().to_owned(),
        };
        out.push_str(&format!(
            "| {title} | {} | {} | {p50} | {p95} | {} | {} | {} | {} |\n",
            r.place,
            r.scenario.target(r.place),
            r.rsync.map(ms).unwrap_or_else(|| "—".into()),
            r.ratio().map(|x| format!("{x:.2}×")).unwrap_or_default(),
            if r.meets_target() { "yes" } else { "**no**" },
            r.note,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked_against_the_median_or_the_ratio() {
        let fast = Row::time(
            Scenario::OneFile,
            Place::Ssh,
            Duration::from_millis(20),
            None,
            Duration::from_millis(200),
            "",
        );
        assert!(fast.meets_target());
        let slow = Row {
            place: Place::Local,
            ..fast.clone()
        };
        assert!(!slow.meets_target());
        let initial = Row::time(
            Scenario::InitialSync,
            Place::Local,
            Duration::from_millis(1020),
            None,
            Duration::from_millis(1000),
            "",
        );
        assert!(initial.meets_target());
        let growing = |sent| Row {
            scenario: Scenario::GrowingFile,
            place: Place::Local,
            wsync: Measured::Bytes {
                sent,
                size: 100,
                converged: Duration::from_millis(130),
            },
            rsync: None,
            note: String::new(),
        };
        assert!(growing(200).meets_target());
        assert!(!growing(201).meets_target());
        assert!(markdown(&[growing(100)]).contains(
            "| ≤ 2× its size sent (issue 11) | 0.0 MiB sent (1.00× its size); on the remote 130"
        ));
        let table = markdown(&[initial, fast, slow]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[2].starts_with("| one 1 KiB file | local | ≤ 6.5 ms"));
        assert!(lines[3].starts_with("| one 1 KiB file | SSH 127.0.0.1 | ≤ 25 ms"));
        assert!(lines[4].contains("≤ 1.03× plain rsync"));
    }
}
