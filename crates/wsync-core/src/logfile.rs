//! The daily log files of the daemon and the monitors: `<LogDirectory>/<prefix>.<YYYY-MM-DD>`
//! (UTC), appended, the same names tracing-appender's daily roller used. wsync opens them itself
//! because tracing-appender creates them with the umask's mode (0644) and follows a symbolic
//! link planted at the name; here the directory is made private first
//! ([`crate::owned::ensure_private_dir`]) and every file, at start and at each day's rollover,
//! is opened by [`crate::owned::open_log_file`] (0600, `O_NOFOLLOW`, ours, one link).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::owned::{ensure_private_dir, PrivateDir};

/// A `Write` that appends to today's log file and moves to a new file when the UTC day changes.
#[derive(Debug)]
pub struct DailyLog {
    dir: PathBuf,
    prefix: String,
    day: i64,
    file: File,
}

impl DailyLog {
    /// Makes `dir` private (see [`ensure_private_dir`]) and opens today's file; the error says
    /// which check failed and how to fix it. Also returns what was found about the directory, for
    /// the caller to log once logging works.
    pub fn open(dir: &Path, prefix: &str) -> std::io::Result<(Self, PrivateDir)> {
        let found = ensure_private_dir(dir, "log directory", "LogDirectory")
            .map_err(std::io::Error::other)?;
        let day = today();
        let file = crate::owned::open_log_file(&file_name(dir, prefix, day))?;
        let log = Self {
            dir: dir.to_owned(),
            prefix: prefix.to_owned(),
            day,
            file,
        };
        Ok((log, found))
    }

    fn roll(&mut self) -> std::io::Result<()> {
        let day = today();
        if day != self.day {
            self.file = crate::owned::open_log_file(&file_name(&self.dir, &self.prefix, day))?;
            self.day = day;
        }
        Ok(())
    }
}

impl Write for DailyLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.roll()?;
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn file_name(dir: &Path, prefix: &str, day: i64) -> PathBuf {
    let (y, m, d) = civil_from_days(day);
    dir.join(format!("{prefix}.{y:04}-{m:02}-{d:02}"))
}

/// Days since 1970-01-01, UTC.
fn today() -> i64 {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs / 86_400).unwrap_or(0)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`), so no date crate is needed for a file name.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_818), (2026, 12, 31));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn todays_file_is_private_and_appended() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let (mut log, _) = DailyLog::open(&dir, "wsyncd.log").unwrap();
        log.write_all(b"one\n").unwrap();
        let (mut again, _) = DailyLog::open(&dir, "wsyncd.log").unwrap();
        again.write_all(b"two\n").unwrap();
        let path = file_name(&dir, "wsyncd.log", today());
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }
}
