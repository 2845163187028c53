//! Files still being written (a create or modify seen, no close-write yet) when a batch sent
//! them. While such a file grows it is sent at most once per [`RESEND_INTERVAL`]: its writes
//! meanwhile are held here, not in the dirty set, so every other path keeps its normal
//! latency; its close-write sends it at once. And the batch may append to the remote copy
//! (rsync `--append-verify`) instead of sending the file again, when the remote copy's length
//! is known: the length rsync reported sending it last time. That length is forgotten while a
//! transfer of the file runs or fails, when the file went out any other way (inside a listed
//! directory, a full sync), and when the path is deleted, renamed or created anew.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Seq;
use crate::queue::Batch;

/// The least time between two sends of a file that is still being written.
pub const RESEND_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Sent {
    at: Instant,
    /// The batch that sent it last.
    flight: u64,
    /// The remote copy's length, reported by the last batch that sent it and ended well
    /// (`None`: unknown, or that batch is still running).
    length: Option<u64>,
    /// No close-write since it was sent.
    open: bool,
}

/// A file to send as growing, and its remote copy's length when known (see
/// `BatchOptions::growing`).
pub type GrowingFile = (PathBuf, Option<u64>);

#[derive(Debug, Default)]
pub(super) struct GrowingFiles {
    sent: BTreeMap<PathBuf, Sent>,
    /// Paths written again since they were sent, waiting for their resend time.
    held: BTreeSet<PathBuf>,
    /// The oldest change held (see `RemoteSlot::stamp_oldest_dirty`).
    held_oldest: Option<Seq>,
}

impl GrowingFiles {
    /// A write to `path`: true when it is held (the file was sent while open less than
    /// [`RESEND_INTERVAL`] ago), false when it is queued as usual.
    pub fn hold(&mut self, path: &Path, now: Instant) -> bool {
        let recent = self
            .sent
            .get(path)
            .is_some_and(|s| s.open && now < s.at + RESEND_INTERVAL);
        if recent {
            self.held.insert(path.to_path_buf());
        }
        recent
    }

    /// A close-write of `path`: it goes out with the next batch, appended when it grew.
    pub fn closed(&mut self, path: &Path) {
        self.held.remove(path);
        if let Some(sent) = self.sent.get_mut(path) {
            sent.open = false;
        }
    }

    /// `path` (and anything below it) was deleted, renamed, or created anew: whatever is there
    /// now is another file.
    pub fn forget(&mut self, path: &Path) {
        if self.sent.is_empty() {
            return;
        }
        self.sent.retain(|p, _| !p.starts_with(path));
        self.held.retain(|p| !p.starts_with(path));
    }

    /// Numbers the held changes: every change held since the last call is numbered above
    /// `numbered_through`.
    pub fn stamp(&mut self, numbered_through: Seq) {
        if self.held.is_empty() {
            self.held_oldest = None;
        } else if self.held_oldest.is_none() {
            self.held_oldest = Some(numbered_through.next());
        }
    }

    /// The oldest change held, if any.
    pub fn held_oldest(&self) -> Option<Seq> {
        self.held_oldest
    }

    pub fn held(&self) -> u64 {
        self.held.len() as u64
    }

    /// When the first held path is due to go out.
    pub fn next_due(&self) -> Option<Instant> {
        self.held
            .iter()
            .filter_map(|p| self.sent.get(p))
            .map(|s| s.at + RESEND_INTERVAL)
            .min()
    }

    /// Takes the held paths whose resend time has come (they go with the next batch), and the
    /// oldest change among everything that was held.
    pub fn take_due(&mut self, now: Instant) -> (Vec<PathBuf>, Option<Seq>) {
        let sent = &self.sent;
        let due: Vec<PathBuf> = self
            .held
            .iter()
            .filter(|p| sent.get(*p).is_none_or(|s| now >= s.at + RESEND_INTERVAL))
            .cloned()
            .collect();
        for path in &due {
            self.held.remove(path);
        }
        let oldest = if due.is_empty() {
            None
        } else {
            self.held_oldest
        };
        (due, oldest)
    }

    /// Batch `flight` sends `batch` now; `open` are the files in it still being written.
    /// Returns the files to send as growing (those still being written, or sent so before),
    /// with their remote copy's length when known.
    pub fn sending(
        &mut self,
        flight: u64,
        batch: &Batch,
        open: &BTreeSet<PathBuf>,
        now: Instant,
    ) -> Vec<GrowingFile> {
        let paths = match batch {
            Batch::Full => {
                // Everything goes whole: what was held is in it, no length holds after it.
                *self = Self::default();
                return Vec::new();
            }
            Batch::Paths { paths, .. } => paths,
        };
        let mut growing = Vec::new();
        for path in paths {
            self.held.remove(path);
            let known = self.sent.get(path);
            // No close-write seen since it was sent: still being written, whatever queued it.
            let is_open = open.contains(path) || known.is_some_and(|s| s.open);
            if !is_open && known.is_none() {
                // Sent some other way (a directory recursively, or an ordinary file): the
                // lengths of files at or below it are no longer what the remote holds.
                self.sent.retain(|p, _| !p.starts_with(path));
                continue;
            }
            growing.push((path.clone(), known.and_then(|s| s.length)));
            self.sent.insert(
                path.clone(),
                Sent {
                    at: now,
                    flight,
                    length: None,
                    open: is_open,
                },
            );
        }
        growing
    }

    /// Batch `flight` ended (or was abandoned: `lengths` empty): the files it sent as growing
    /// have the lengths it reported; a file closed before it was sent is done with.
    pub fn finished(&mut self, flight: u64, lengths: &[(PathBuf, u64)]) {
        self.sent.retain(|path, sent| {
            if sent.flight != flight {
                return true;
            }
            sent.length = lengths.iter().find(|(p, _)| p == path).map(|(_, l)| *l);
            sent.open
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(paths: &[&str]) -> Batch {
        Batch::Paths {
            renames: Vec::new(),
            paths: paths.iter().map(PathBuf::from).collect(),
        }
    }

    fn set(paths: &[&str]) -> BTreeSet<PathBuf> {
        paths.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn a_length_holds_only_from_the_batch_that_sent_it_last() {
        let t0 = Instant::now();
        let mut g = GrowingFiles::default();
        let f = PathBuf::from("d/f");
        let open = set(&["d/f"]);
        assert_eq!(
            g.sending(1, &batch(&["d/f"]), &open, t0),
            [(f.clone(), None)]
        );
        // A second batch starts before the first one's exit: the length is still unknown.
        assert_eq!(
            g.sending(2, &batch(&["d/f"]), &open, t0),
            [(f.clone(), None)]
        );
        g.finished(1, &[(f.clone(), 10)]);
        g.finished(2, &[(f.clone(), 20)]);
        assert_eq!(
            g.sending(3, &batch(&["d/f"]), &open, t0),
            [(f.clone(), Some(20))]
        );
        // Abandoned or failed: unknown again.
        g.finished(3, &[]);
        assert_eq!(
            g.sending(4, &batch(&["d/f"]), &open, t0),
            [(f.clone(), None)]
        );
        g.finished(4, &[(f.clone(), 30)]);
        // Sent inside a listed directory, or by a full sync: the length is gone.
        assert!(g.sending(5, &batch(&["d"]), &set(&[]), t0).is_empty());
        assert_eq!(
            g.sending(6, &batch(&["d/f"]), &open, t0),
            [(f.clone(), None)]
        );
        g.finished(6, &[(f.clone(), 30)]);
        g.sending(7, &Batch::Full, &set(&[]), t0);
        assert!(g.sending(8, &batch(&["d/f"]), &set(&[]), t0).is_empty());
    }

    #[test]
    fn a_closed_file_goes_once_more_then_is_done_with() {
        let t0 = Instant::now();
        let mut g = GrowingFiles::default();
        let f = PathBuf::from("d/f");
        g.sending(1, &batch(&["d/f"]), &set(&["d/f"]), t0);
        g.finished(1, &[(f.clone(), 10)]);
        assert!(g.hold(&f, t0));
        g.closed(&f);
        assert_eq!(g.held(), 0, "a close-write is not held");
        assert!(!g.hold(&f, t0), "nor is anything after it");
        assert_eq!(
            g.sending(2, &batch(&["d/f"]), &set(&[]), t0),
            [(f.clone(), Some(10))],
            "the close-write's batch appends"
        );
        g.finished(2, &[(f.clone(), 12)]);
        assert!(g.sending(3, &batch(&["d/f"]), &set(&[]), t0).is_empty());
        // Deleted, renamed or re-created below a directory: forgotten.
        g.sending(4, &batch(&["d/f"]), &set(&["d/f"]), t0);
        g.finished(4, &[(f.clone(), 12)]);
        g.forget(Path::new("d"));
        assert!(!g.hold(&f, t0));
        assert_eq!(
            g.sending(5, &batch(&["d/f"]), &set(&["d/f"]), t0),
            [(f, None)]
        );
    }
}
