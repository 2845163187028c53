//! Proof of sync. A remote that says `in-sync` has only not failed; proof is a change seen
//! arriving. While syncing is active, at most once per interval, a proof file
//! (`.wsync-proof-<pid>-<n>`) is created in the workspace root. Its event goes the normal path
//! — watcher, queue, batch — and each remote is proved when it holds that change; the file is
//! removed afterwards (its deletion goes the same way). A batch that lands proves its remote
//! too, so a busy remote needs no probe. A remote whose last proof is older than
//! [`PROOF_MISSES`] intervals while it claims to be in sync is `unverified`: something between
//! the watcher and the remote stopped silently.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use super::Seq;

/// Intervals without a proof before an in-sync remote is `unverified`.
pub const PROOF_MISSES: u32 = 3;

#[derive(Debug, Clone, Copy)]
struct Proved {
    /// The last proof, or when the remote's clock started (attach, resume).
    at: Instant,
    /// Unix milliseconds of the last proof (`None`: none yet).
    unix_ms: Option<u64>,
}

#[derive(Debug)]
struct Pending {
    name: String,
    started: Instant,
    /// The proof file's change number, once its event was seen.
    seq: Option<Seq>,
    /// Remotes that refused the proof file this round.
    refused: HashSet<String>,
}

#[derive(Debug)]
pub(super) struct Proofs {
    /// `None`: proofs are off.
    interval: Option<Duration>,
    prefix: String,
    sequence: u64,
    next_at: Instant,
    pending: Option<Pending>,
    /// Probe at the next chance whatever the clocks say (syncing became active again).
    soon: bool,
    remotes: HashMap<String, Proved>,
}

impl Proofs {
    pub fn new(interval: Option<Duration>, now: Instant) -> Self {
        Self {
            interval: interval.filter(|i| !i.is_zero()),
            prefix: wsync_core::rsync::proof_prefix().to_owned(),
            sequence: 0,
            next_at: now,
            pending: None,
            soon: false,
            remotes: HashMap::new(),
        }
    }

    /// A remote's clock starts (attached, or syncing became active again).
    pub fn start_clock(&mut self, remote: &str, now: Instant) {
        let entry = self.remotes.entry(remote.to_owned()).or_insert(Proved {
            at: now,
            unix_ms: None,
        });
        entry.at = entry.at.max(now);
    }

    /// Syncing becomes active again (resume, a lifted halt): no remote is blamed for the time
    /// it was not allowed to sync; with `probe_soon` a probe goes out at the next chance.
    pub fn restart_clocks(&mut self, now: Instant, probe_soon: bool) {
        for proved in self.remotes.values_mut() {
            proved.at = proved.at.max(now);
        }
        self.next_at = now;
        self.soon = probe_soon;
    }

    pub fn forget(&mut self, remote: &str) {
        self.remotes.remove(remote);
    }

    /// The name of a proof file to create now, if one is due: proofs are on, none is out,
    /// and some remote has had no proof for an interval.
    pub fn due(&mut self, now: Instant) -> Option<String> {
        let interval = self.interval?;
        if self.pending.is_some() || now < self.next_at || self.remotes.is_empty() {
            return None;
        }
        let oldest = self.remotes.values().map(|p| p.at).min()?;
        if now < oldest + interval && !self.soon {
            // Batches proved every remote lately.
            self.next_at = oldest + interval;
            return None;
        }
        self.soon = false;
        self.sequence += 1;
        let name = format!("{}{}", self.prefix, self.sequence);
        self.pending = Some(Pending {
            name: name.clone(),
            started: now,
            seq: None,
            refused: HashSet::new(),
        });
        Some(name)
    }

    pub fn is_proof_file(&self, name: &str) -> bool {
        name.starts_with(&self.prefix)
    }

    /// The proof file could not be created: no proof this round (the remotes go unverified
    /// if that persists).
    pub fn create_failed(&mut self, name: &str, now: Instant) {
        if self.pending.as_ref().is_some_and(|p| p.name == name) {
            self.pending = None;
            self.next_at = now + self.interval.unwrap_or_default();
        }
    }

    /// A change was numbered `seq`: the proof file's creation fixes what must arrive.
    pub fn change_seen(&mut self, path: &Path, seq: Seq) {
        if let Some(p) = self.pending.as_mut() {
            if p.seq.is_none() && path.as_os_str() == p.name.as_str() {
                p.seq = Some(seq);
            }
        }
    }

    /// A batch landed on `remote`: that is proof too.
    pub fn landed(&mut self, remote: &str, now: Instant, unix_ms: u64) {
        if let Some(proved) = self.remotes.get_mut(remote) {
            *proved = Proved {
                at: now,
                unix_ms: Some(unix_ms),
            };
        }
    }

    /// `remote` refused this round's proof file: it is not proved by it.
    pub fn refused(&mut self, remote: &str) {
        if let Some(p) = self.pending.as_mut() {
            p.refused.insert(remote.to_owned());
        }
    }

    /// Marks the remotes holding the proof file's change as proved; once all are, or the
    /// round's interval is over, ends the round and returns the file to remove.
    pub fn settle(
        &mut self,
        now: Instant,
        unix_ms: u64,
        caught_up: impl Fn(&str, Seq) -> bool,
    ) -> Option<String> {
        let interval = self.interval?;
        let pending = self.pending.as_ref()?;
        let mut all = true;
        if let Some(seq) = pending.seq {
            for (remote, proved) in &mut self.remotes {
                if pending.refused.contains(remote)
                    || (proved.at >= pending.started && proved.unix_ms.is_some())
                {
                    continue;
                }
                if caught_up(remote, seq) {
                    *proved = Proved {
                        at: now,
                        unix_ms: Some(unix_ms),
                    };
                } else {
                    all = false;
                }
            }
        } else {
            all = false;
        }
        if all || now >= pending.started + interval {
            self.next_at = now + interval;
            return self.pending.take().map(|p| p.name);
        }
        None
    }

    /// True when `remote` has had no proof for [`PROOF_MISSES`] intervals.
    pub fn unverified(&self, remote: &str, now: Instant) -> bool {
        match (self.interval, self.remotes.get(remote)) {
            (Some(interval), Some(proved)) => now >= proved.at + interval * PROOF_MISSES,
            _ => false,
        }
    }

    pub fn last_unix_ms(&self, remote: &str) -> Option<u64> {
        self.remotes.get(remote).and_then(|p| p.unix_ms)
    }

    /// When a probe is next due, a round times out, or a remote turns unverified.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        let interval = self.interval?;
        let mut wake = match &self.pending {
            Some(p) => p.started + interval,
            None => self.next_at,
        };
        for proved in self.remotes.values() {
            let turns = proved.at + interval * PROOF_MISSES;
            if turns > now {
                wake = wake.min(turns);
            }
        }
        Some(wake.max(now))
    }

    #[cfg(test)]
    pub fn created(&self) -> usize {
        self.sequence as usize
    }

    #[cfg(test)]
    pub fn pending_name(&self) -> Option<String> {
        self.pending.as_ref().map(|p| p.name.clone())
    }

    /// The proof file still out, to remove when the monitor exits.
    pub fn abandon(&mut self) -> Option<String> {
        self.pending.take().map(|p| p.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(60);

    #[test]
    fn a_probe_proves_the_remotes_that_hold_it_and_the_rest_go_unverified() {
        let t0 = Instant::now();
        let mut p = Proofs::new(Some(I), t0);
        p.start_clock("a", t0);
        p.start_clock("b", t0);
        assert_eq!(p.due(t0), None, "both clocks just started");
        let t1 = t0 + I;
        let name = p.due(t1).expect("a probe is due after an interval");
        assert!(p.is_proof_file(&name));
        assert_eq!(p.due(t1), None, "one probe at a time");
        p.change_seen(Path::new(&name), Seq(7));
        // `a` holds change 7, `b` does not.
        let removed = p.settle(t1, 1_000, |r, s| r == "a" && s == Seq(7));
        assert_eq!(removed, None, "the round waits for b");
        assert_eq!(p.last_unix_ms("a"), Some(1_000));
        assert_eq!(p.last_unix_ms("b"), None);
        // The round times out; b never proves.
        assert_eq!(p.settle(t1 + I, 2_000, |_, _| false), Some(name));
        assert!(!p.unverified("b", t0 + I * 2));
        assert!(p.unverified("b", t0 + I * PROOF_MISSES));
        assert!(!p.unverified("a", t0 + I * PROOF_MISSES));
    }

    #[test]
    fn landed_batches_make_probes_unnecessary_and_resume_restarts_the_clocks() {
        let t0 = Instant::now();
        let mut p = Proofs::new(Some(I), t0);
        p.start_clock("a", t0);
        p.landed("a", t0 + I / 2, 5);
        assert_eq!(p.due(t0 + I), None, "a batch proved a half interval ago");
        assert!(p.due(t0 + I + I / 2).is_some());
        let mut p = Proofs::new(Some(I), t0);
        p.start_clock("a", t0);
        p.restart_clocks(t0 + I * 5, true);
        assert!(
            !p.unverified("a", t0 + I * 5),
            "paused time is not held against it"
        );
    }

    #[test]
    fn off_means_no_probes_and_never_unverified() {
        let t0 = Instant::now();
        let mut p = Proofs::new(None, t0);
        p.start_clock("a", t0);
        assert_eq!(p.due(t0 + I * 10), None);
        assert!(!p.unverified("a", t0 + I * 10));
        assert_eq!(p.next_wake(t0), None);
    }
}
