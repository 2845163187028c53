//! Full-sync progress from rsync's `--info=progress2`: reading rsync's output in segments ended
//! by `\r` or `\n` (progress lines end in `\r`), parsing a progress line, and folding the lines
//! of one run into a [`SyncProgress`] that is forwarded to the engine at most once per status
//! interval.
//!
//! A progress2 line is `  1,234,567  45%  1.23MB/s    0:00:01 (xfr#12, to-chk=34/100)`: the
//! bytes of file data sent so far, that as a whole percentage of the size of every file in the
//! list, the rate, the time, and (after each file) the files transferred and `to-chk=N/M`, N of
//! the M entries still to check. While rsync still builds its file list (incremental
//! recursion) it is `ir-chk=N/M` and M is only what is known so far.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use wsync_core::monitor_proto::SyncProgress;

use crate::engine::STATUS_INTERVAL;

/// One parsed progress2 line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub bytes: u64,
    pub percent: u8,
    /// `(xfr#K, to-chk=N/M)` or `ir-chk`; absent on updates in the middle of a file.
    pub check: Option<Check>,
}

/// The `to-chk=N/M` / `ir-chk=N/M` part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub remaining: u64,
    pub total: u64,
    /// `to-chk`: the file list is complete, so `total` is final.
    pub list_complete: bool,
}

/// Parses one progress2 line (surrounding whitespace and `\r` allowed); `None` for any other
/// output.
pub fn parse_line(segment: &[u8]) -> Option<Line> {
    let text = std::str::from_utf8(segment).ok()?.trim();
    let mut words = text.split_whitespace();
    let bytes = number(words.next()?)?;
    let percent: u8 = words.next()?.strip_suffix('%')?.parse().ok()?;
    let rate = words.next()?;
    if !rate.ends_with("/s") {
        return None;
    }
    let time = words.next()?;
    if !time.bytes().all(|b| b.is_ascii_digit() || b == b':') {
        return None;
    }
    let rest: Vec<&str> = words.collect();
    let check = match rest.as_slice() {
        [] => None,
        [xfr, chk] if xfr.starts_with("(xfr#") && xfr.ends_with(',') => {
            Some(parse_check(chk.strip_suffix(')')?)?)
        }
        _ => return None,
    };
    Some(Line {
        bytes,
        percent,
        check,
    })
}

fn parse_check(word: &str) -> Option<Check> {
    let (list_complete, counts) = if let Some(c) = word.strip_prefix("to-chk=") {
        (true, c)
    } else {
        (false, word.strip_prefix("ir-chk=")?)
    };
    let (remaining, total) = counts.split_once('/')?;
    Some(Check {
        remaining: remaining.parse().ok()?,
        total: total.parse().ok()?,
        list_complete,
    })
}

/// `1,234,567` → 1234567.
fn number(word: &str) -> Option<u64> {
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit() || b == b',') {
        return None;
    }
    word.replace(',', "").parse().ok()
}

/// Folds the progress lines of one rsync run into the current [`SyncProgress`].
#[derive(Debug, Default)]
pub struct Tracker {
    list_complete: bool,
    current: Option<SyncProgress>,
}

impl Tracker {
    /// Takes one output segment: `None` when it is not a progress line, else the progress
    /// after it.
    pub fn feed(&mut self, segment: &[u8]) -> Option<SyncProgress> {
        let line = parse_line(segment)?;
        let mut progress = self.current.unwrap_or_default();
        progress.bytes_done = line.bytes;
        if let Some(check) = line.check {
            self.list_complete |= check.list_complete;
            progress.files_done = check.total.saturating_sub(check.remaining);
            progress.files_total = self.list_complete.then_some(check.total);
        }
        progress.bytes_total = if !self.list_complete {
            None
        } else if line.percent >= 100 {
            Some(line.bytes)
        } else if line.percent > 0 {
            // rsync rounds the percentage down: take the middle of the range it allows.
            let estimate = u128::from(line.bytes) * 200 / (2 * u128::from(line.percent) + 1);
            Some(u64::try_from(estimate).unwrap_or(u64::MAX).max(line.bytes))
        } else {
            None
        };
        self.current = Some(progress);
        Some(progress)
    }
}

/// Passes a run's progress to a callback, at most once per [`STATUS_INTERVAL`] (the first at
/// once) and only when it changed.
pub struct Reporter<'a> {
    tracker: Tracker,
    sink: &'a mut (dyn FnMut(SyncProgress) + Send),
    last_sent: Option<(Instant, SyncProgress)>,
    interval: Duration,
}

impl<'a> Reporter<'a> {
    pub fn new(sink: &'a mut (dyn FnMut(SyncProgress) + Send)) -> Self {
        Self {
            tracker: Tracker::default(),
            sink,
            last_sent: None,
            interval: STATUS_INTERVAL,
        }
    }

    /// True when `segment` was a progress line (consumed: it is not an rsync message).
    pub fn feed(&mut self, segment: &[u8]) -> bool {
        let Some(progress) = self.tracker.feed(segment) else {
            return false;
        };
        let now = Instant::now();
        let due = self.last_sent.is_none_or(|(at, sent)| {
            sent != progress && now.saturating_duration_since(at) >= self.interval
        });
        if due {
            self.last_sent = Some((now, progress));
            (self.sink)(progress);
        }
        true
    }
}

/// Reads up to and including the next `\r` or `\n` (or to EOF) into `buf`; returns the number
/// of bytes read, 0 at EOF.
pub async fn read_segment<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut read = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(read);
        }
        let (used, done) = match available.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        buf.extend_from_slice(&available[..used]);
        reader.consume(used);
        read += used;
        if done {
            return Ok(read);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_progress2_lines() {
        assert_eq!(
            parse_line(b"      1,234,567  45%    1.23MB/s    0:00:01 (xfr#12, to-chk=34/100)\r"),
            Some(Line {
                bytes: 1_234_567,
                percent: 45,
                check: Some(Check {
                    remaining: 34,
                    total: 100,
                    list_complete: true
                })
            })
        );
        assert_eq!(
            parse_line(b"              2   0%    0.00kB/s    0:00:00 (xfr#1, ir-chk=1199/1231)"),
            Some(Line {
                bytes: 2,
                percent: 0,
                check: Some(Check {
                    remaining: 1199,
                    total: 1231,
                    list_complete: false
                })
            })
        );
        // Within a large file: no counts.
        assert_eq!(
            parse_line(b"    104,857,600  39%  452.35MB/s    0:00:00  "),
            Some(Line {
                bytes: 104_857_600,
                percent: 39,
                check: None
            })
        );
        assert_eq!(
            parse_line(b"  262,145,092 100%  180.22MB/s    0:00:01 (xfr#305, to-chk=0/307)\n")
                .map(|l| (l.bytes, l.percent)),
            Some((262_145_092, 100))
        );
    }

    #[test]
    fn other_output_is_not_progress() {
        for line in [
            "",
            "\r",
            "client_run waiting on 9272",
            "Number of files: 307 (reg: 305, dir: 2)",
            "Total bytes sent: 262,226,984",
            "sent 262,226,984 bytes  received 5,829 bytes  104,893,125.20 bytes/sec",
            "rsync: [sender] change_dir \"/x\" failed: No such file or directory (2)",
            "file has vanished: \"/ws/a 1,2 3%\"",
            "1,234 45% 1MB/s 0:00:01 (xfr#1, to-chk=x/3)",
            "1,234 45% 1MB/s 0:00:01 trailing words here",
            "1,234 450% 1MB/s 0:00:01",
        ] {
            assert_eq!(parse_line(line.as_bytes()), None, "{line:?}");
        }
    }

    #[test]
    fn tracker_learns_totals_once_the_list_is_complete() {
        let mut t = Tracker::default();
        let p = t
            .feed(b"  2   0%    0.00kB/s    0:00:00 (xfr#1, ir-chk=1199/1231)\r")
            .unwrap();
        assert_eq!(
            p,
            SyncProgress {
                bytes_done: 2,
                bytes_total: None,
                files_done: 32,
                files_total: None
            }
        );
        assert_eq!(t.feed(b"Number of files: 3\n"), None);
        let p = t
            .feed(b" 1,000,000  50%  1.00MB/s    0:00:01 (xfr#9, to-chk=10/6031)\r")
            .unwrap();
        assert_eq!(p.files_done, 6021);
        assert_eq!(p.files_total, Some(6031));
        // 50 % means 50.0–50.99 %: about 1,990,000 bytes in all.
        assert_eq!(p.bytes_total, Some(1_980_198));
        // A mid-file update keeps the counts.
        let p = t.feed(b" 1,500,000  75%  1.00MB/s    0:00:01\r").unwrap();
        assert_eq!((p.files_done, p.files_total), (6021, Some(6031)));
        let p = t
            .feed(b" 2,000,000 100%  1.00MB/s    0:00:02 (xfr#10, to-chk=0/6031)\n")
            .unwrap();
        assert_eq!(p.bytes_total, Some(2_000_000));
        assert_eq!(p.files_done, 6031);
    }

    #[test]
    fn reporter_sends_the_first_and_then_at_most_one_per_interval() {
        let mut sent = Vec::new();
        let mut sink = |p: SyncProgress| sent.push(p.bytes_done);
        {
            let mut r = Reporter::new(&mut sink);
            assert!(r.feed(b" 1 0% 0.00kB/s 0:00:00 (xfr#1, to-chk=2/3)\r"));
            assert!(r.feed(b" 2 0% 0.00kB/s 0:00:00 (xfr#2, to-chk=1/3)\r"));
            assert!(!r.feed(b"Number of files: 3\n"));
            r.interval = Duration::ZERO;
            assert!(r.feed(b" 3 100% 0.00kB/s 0:00:00 (xfr#3, to-chk=0/3)\r"));
            assert!(r.feed(b" 3 100% 0.00kB/s 0:00:00 (xfr#3, to-chk=0/3)\n"));
        }
        assert_eq!(sent, [1, 3]);
    }

    #[tokio::test]
    async fn segments_end_at_carriage_returns_and_newlines() {
        let input: &[u8] = b"a\rbb\ncc\r\ndd";
        let mut reader = tokio::io::BufReader::with_capacity(2, input);
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            if read_segment(&mut reader, &mut buf).await.unwrap() == 0 {
                break;
            }
            out.push(String::from_utf8(buf).unwrap());
        }
        assert_eq!(out, ["a\r", "bb\n", "cc\r", "\n", "dd"]);
    }
}
