//! Pending flushes: cookie → target → answer. A flush writes a cookie file in the root; its
//! event proves every earlier event has been read, so the newest change numbered then is the
//! flush's target, and the flush is answered once every remote holds every change up to it
//! (or at its deadline, naming the remotes still behind).

use std::time::Instant;

use super::Seq;

#[derive(Debug)]
struct PendingFlush {
    id: u64,
    deadline: Instant,
    /// Cookie file name in the root, until its event has been seen.
    cookie: Option<String>,
    /// Every change up to this one must be on every remote.
    target: Option<Seq>,
}

/// A flush ready to be answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Answer {
    pub id: u64,
    pub lagging: Vec<String>,
    /// Its cookie, if never seen: to be removed.
    pub cookie: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Flushes {
    pending: Vec<PendingFlush>,
}

impl Flushes {
    /// A flush waiting for its cookie's event.
    pub fn await_cookie(&mut self, id: u64, deadline: Instant, cookie: String) {
        self.pending.push(PendingFlush {
            id,
            deadline,
            cookie: Some(cookie),
            target: None,
        });
    }

    /// A flush whose target is known at once (no cookie can prove more).
    pub fn await_target(&mut self, id: u64, deadline: Instant, target: Seq) {
        self.pending.push(PendingFlush {
            id,
            deadline,
            cookie: None,
            target: Some(target),
        });
    }

    /// A cookie could not be created: its flush flushes what is known.
    pub fn cookie_failed(&mut self, name: &str, newest: Seq) {
        for flush in &mut self.pending {
            if flush.cookie.as_deref() == Some(name) {
                flush.cookie = None;
                flush.target = Some(newest);
            }
        }
    }

    /// A cookie's event arrived: its flush targets `newest`. Returns the cookie to remove.
    pub fn cookie_seen(&mut self, name: &str, newest: Seq) -> Option<String> {
        let mut seen = None;
        for flush in &mut self.pending {
            if flush.cookie.as_deref() == Some(name) {
                seen = flush.cookie.take();
                flush.target = Some(newest);
            }
        }
        seen
    }

    /// The event queue overflowed: a cookie created before it may never be reported. Flushes
    /// still waiting for theirs wait for the full sync the overflow queued instead. Returns the
    /// cookies to remove.
    pub fn cookies_lost(&mut self, newest: Seq) -> Vec<String> {
        let mut lost = Vec::new();
        for flush in &mut self.pending {
            if flush.target.is_none() {
                if let Some(cookie) = flush.cookie.take() {
                    lost.push(cookie);
                }
                flush.target = Some(newest);
            }
        }
        lost
    }

    /// Takes the flushes that are complete (`lagging` of their target is empty and syncing
    /// is `active`), whose lagging remotes are all `stalled`, or past their deadline.
    /// `lagging(target)` names the remotes that do not hold every change up to `target`; every
    /// remote lags while not `active` or before the target is known.
    pub fn answer(
        &mut self,
        now: Instant,
        active: bool,
        all: &[String],
        stalled: &[String],
        lagging: impl Fn(Seq) -> Vec<String>,
    ) -> Vec<Answer> {
        let mut answers = Vec::new();
        self.pending.retain_mut(|flush| {
            let behind = match flush.target {
                Some(target) if active => lagging(target),
                _ => all.to_vec(),
            };
            let complete = flush.target.is_some() && behind.is_empty();
            let given_up = !behind.is_empty() && behind.iter().all(|r| stalled.contains(r));
            if complete || given_up || now >= flush.deadline {
                answers.push(Answer {
                    id: flush.id,
                    lagging: behind,
                    cookie: flush.cookie.take(),
                });
                false
            } else {
                true
            }
        });
        answers
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|f| f.deadline).min()
    }

    /// Drops every flush unanswered (the monitor is exiting); returns their cookies.
    pub fn abandon(&mut self) -> Vec<String> {
        self.pending.drain(..).filter_map(|f| f.cookie).collect()
    }
}
