//! One workspace's supervision state machine: whether its monitor runs, waits to be restarted or
//! has failed, and the crash history behind that. Pure: time is passed in and the running
//! monitor is a type parameter, so every transition is unit-tested here without a process.
//! The [`Supervisor`](crate::supervisor::Supervisor) performs what a transition decides
//! (spawning, logging, the hook).

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use wsync_core::monitor_proto::{HEARTBEAT_INTERVAL, UNRESPONSIVE_AFTER_BEATS};
use wsync_core::protocol::MonitorProcessState;
use wsync_core::registry::Workspace;

use crate::monitor_proc::SpawnError;
use crate::process::ExitDescription;
use crate::restart_policy::{CrashHistory, RestartPolicy, Verdict};

/// The clock, read once per decision: `instant` orders events, `unix_ms` is what `wsync status`
/// shows for a scheduled restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub unix_ms: u64,
}

impl Now {
    pub fn current() -> Self {
        Self {
            instant: Instant::now(),
            unix_ms: wsync_core::unix_ms(SystemTime::now()),
        }
    }
}

/// Where a workspace's monitor is in its lifecycle.
#[derive(Debug)]
pub enum MonitorState<M> {
    /// None runs and none is scheduled; one is started when the workspace should run.
    Stopped,
    Running(M),
    /// It crashed; restart attempt `attempt` is due at `until`.
    BackingOff {
        until: Instant,
        until_unix_ms: u64,
        attempt: u32,
    },
    /// It crashed too often; nothing starts until [`Supervision::reset`] (`wsync restart`).
    Failed,
}

/// How a workspace's last monitor ended, as `wsync status` shows it in `last_exit`.
#[derive(Debug)]
pub enum MonitorEnd {
    /// The process ended (on its own: a crash).
    Exited(ExitDescription),
    /// It could not be started; counts as a crash so the watchdog retries with backoff.
    NotStarted(SpawnError),
    /// It sent no heartbeat for this long, so the watchdog killed it; counts as a crash.
    Unresponsive(Duration),
    /// Never started: the workspace's registry entry breaks a rule `add`/`attach` apply (the
    /// reason, with its fix). Not a crash: nothing retries it.
    Refused(String),
}

impl fmt::Display for MonitorEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MonitorEnd::Exited(exit) => exit.fmt(f),
            MonitorEnd::NotStarted(e) => e.fmt(f),
            MonitorEnd::Unresponsive(silent) => write!(
                f,
                "killed: unresponsive, no heartbeat for {} s",
                silent.as_secs()
            ),
            MonitorEnd::Refused(why) => write!(f, "not started: {why}"),
        }
    }
}

/// Silence after which a running monitor is shown `unresponsive`: three missed heartbeats.
pub const UNRESPONSIVE_AFTER: Duration =
    Duration::from_secs(HEARTBEAT_INTERVAL.as_secs() * UNRESPONSIVE_AFTER_BEATS as u64);

/// A workspace's [`MonitorState`] with the history the restart policy and `wsync status` need.
/// `last_exit` and `restarts` are history, not state: they stay visible once a restarted
/// monitor runs again.
#[derive(Debug)]
pub struct Supervision<M> {
    state: MonitorState<M>,
    history: CrashHistory,
    restarts: u32,
    last_exit: Option<MonitorEnd>,
    /// The running monitor's last heartbeat. Judged only once it has sent one: until its loop
    /// starts (the watches are being set up) silence is not a hang.
    last_beat: Option<Instant>,
}

impl<M> Default for Supervision<M> {
    fn default() -> Self {
        Self {
            state: MonitorState::Stopped,
            history: CrashHistory::default(),
            restarts: 0,
            last_exit: None,
            last_beat: None,
        }
    }
}

impl<M> Supervision<M> {
    pub fn state(&self) -> &MonitorState<M> {
        &self.state
    }

    /// True only when stopped: a monitor started on demand (startup, attach, resume) must not
    /// jump a scheduled restart, revive a failed workspace or start a second one.
    pub fn may_start(&self) -> bool {
        matches!(self.state, MonitorState::Stopped)
    }

    pub fn running(&self) -> Option<&M> {
        match &self.state {
            MonitorState::Running(monitor) => Some(monitor),
            _ => None,
        }
    }

    pub fn running_mut(&mut self) -> Option<&mut M> {
        match &mut self.state {
            MonitorState::Running(monitor) => Some(monitor),
            _ => None,
        }
    }

    /// Stopped → running, for a start on demand.
    pub fn started(&mut self, monitor: M) {
        self.state = MonitorState::Running(monitor);
        self.last_beat = None;
    }

    /// A due restart's monitor runs: stopped (by [`Self::take_due_restart`]) → running, and
    /// the restart is counted.
    pub fn restarted(&mut self, monitor: M) {
        self.restarts += 1;
        self.state = MonitorState::Running(monitor);
        self.last_beat = None;
    }

    /// The running monitor sent a heartbeat at `now`.
    pub fn heartbeat(&mut self, now: Instant) {
        if matches!(self.state, MonitorState::Running(_)) {
            self.last_beat = Some(now);
        }
    }

    /// How long the running monitor has been silent since its last heartbeat; `None` when
    /// none runs or it has not sent its first one yet.
    pub fn silent_for(&self, now: Instant) -> Option<Duration> {
        match self.state {
            MonitorState::Running(_) => self
                .last_beat
                .map(|beat| now.saturating_duration_since(beat)),
            _ => None,
        }
    }

    /// Backing off with the restart due at `now` → stopped; returns the attempt number, which
    /// the caller starts (or drops, when the workspace should no longer run).
    pub fn take_due_restart(&mut self, now: Instant) -> Option<u32> {
        match self.state {
            MonitorState::BackingOff { until, attempt, .. } if until <= now => {
                self.state = MonitorState::Stopped;
                Some(attempt)
            }
            _ => None,
        }
    }

    /// Running or backing off → stopped (a stop on request: remove, detach, restart, daemon
    /// shutdown); hands back the running monitor for the caller to stop outside the lock.
    /// A failed workspace stays failed.
    pub fn take_running(&mut self) -> Option<M> {
        match std::mem::replace(&mut self.state, MonitorState::Stopped) {
            MonitorState::Running(monitor) => Some(monitor),
            MonitorState::Failed => {
                self.state = MonitorState::Failed;
                None
            }
            MonitorState::Stopped | MonitorState::BackingOff { .. } => None,
        }
    }

    /// A monitor that had been up for `up_for` ended unasked (or could not start): the policy
    /// schedules a restart (→ backing off) or gives up (→ failed). The caller has already taken
    /// the ended monitor out with [`Self::take_running`].
    pub fn crashed(
        &mut self,
        end: MonitorEnd,
        up_for: Duration,
        now: Now,
        policy: &RestartPolicy,
    ) -> Verdict {
        let verdict = policy.on_crash(&mut self.history, now.instant, up_for);
        self.state = match verdict {
            Verdict::Restart { attempt, delay } => MonitorState::BackingOff {
                until: now.instant + delay,
                until_unix_ms: now.unix_ms.saturating_add(delay.as_millis() as u64),
                attempt,
            },
            Verdict::GiveUp { .. } => MonitorState::Failed,
        };
        self.last_exit = Some(end);
        verdict
    }

    /// Any state but running → failed, without a crash: the entry is refused (see
    /// [`MonitorEnd::Refused`]); only [`Self::reset`] (`wsync restart`, which checks the entry
    /// again) lets it start.
    pub fn refused(&mut self, why: String) {
        if !matches!(self.state, MonitorState::Running(_)) {
            self.state = MonitorState::Failed;
            self.last_exit = Some(MonitorEnd::Refused(why));
        }
    }

    /// Failed or backing off → stopped, with a clean crash history (`wsync restart`).
    pub fn reset(&mut self) {
        if !matches!(self.state, MonitorState::Running(_)) {
            self.state = MonitorState::Stopped;
        }
        self.history = CrashHistory::default();
        self.restarts = 0;
        self.last_exit = None;
    }

    /// What `wsync status` calls this state at `now`; a stopped or running monitor is
    /// described by the workspace's registry entry first (no remotes: idle; paused), except
    /// that a running one silent for [`UNRESPONSIVE_AFTER`] is `unresponsive` even if paused.
    pub fn process_state(&self, workspace: &Workspace, now: Instant) -> MonitorProcessState {
        match self.state {
            MonitorState::Failed => MonitorProcessState::Failed,
            MonitorState::BackingOff { .. } => MonitorProcessState::BackingOff,
            _ if workspace.remotes.is_empty() => MonitorProcessState::Idle,
            _ if self
                .silent_for(now)
                .is_some_and(|silent| silent >= UNRESPONSIVE_AFTER) =>
            {
                MonitorProcessState::Unresponsive
            }
            _ if workspace.paused => MonitorProcessState::Paused,
            MonitorState::Running(_) => MonitorProcessState::Running,
            MonitorState::Stopped => MonitorProcessState::Stopped,
        }
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.state, MonitorState::Failed)
    }

    pub fn next_restart_unix_ms(&self) -> Option<u64> {
        match self.state {
            MonitorState::BackingOff { until_unix_ms, .. } => Some(until_unix_ms),
            _ => None,
        }
    }

    /// Restarts after crashes since the daemon started or the last [`Self::reset`].
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    pub fn last_exit(&self) -> Option<&MonitorEnd> {
        self.last_exit.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use wsync_core::registry::Remote;
    use wsync_core::remote::RemoteTarget;

    use super::*;

    /// Stands in for a running monitor process.
    #[derive(Debug, PartialEq)]
    struct Fake(u32);

    fn policy(limit: u32) -> RestartPolicy {
        RestartPolicy {
            limit,
            window: Duration::from_secs(600),
            backoff: wsync_core::backoff::Backoff::MONITOR_RESTART,
        }
    }

    fn at(t0: Instant, ms: u64) -> Now {
        Now {
            instant: t0 + Duration::from_millis(ms),
            unix_ms: 1_000_000 + ms,
        }
    }

    fn workspace(remotes: usize, paused: bool) -> Workspace {
        Workspace {
            name: "w".into(),
            id: String::new(),
            path: "/w".into(),
            remotes: (0..remotes)
                .map(|i| {
                    Remote::new(
                        format!("r{i}"),
                        RemoteTarget::Local {
                            path: format!("/m{i}").into(),
                        },
                    )
                })
                .collect(),
            paused,
            excludes: vec![],
            respect_gitignore: true,
            max_delete: None,
            checksum_every_secs: None,
            tuning: Default::default(),
            root_id: None,
        }
    }

    fn killed() -> MonitorEnd {
        MonitorEnd::Exited(ExitDescription::Signal(9))
    }

    /// Crashes the running monitor at `now`, as the watchdog does.
    fn crash(s: &mut Supervision<Fake>, now: Now, policy: &RestartPolicy) -> Verdict {
        assert!(s.take_running().is_some(), "nothing ran");
        s.crashed(killed(), Duration::from_millis(10), now, policy)
    }

    #[test]
    fn a_crash_backs_off_then_the_due_restart_runs_and_is_counted() {
        let (t0, p) = (Instant::now(), policy(5));
        let mut s = Supervision::default();
        assert!(s.may_start());
        s.started(Fake(1));
        assert_eq!(s.running(), Some(&Fake(1)));
        let verdict = crash(&mut s, at(t0, 0), &p);
        assert_eq!(
            verdict,
            Verdict::Restart {
                attempt: 1,
                delay: Duration::from_millis(500)
            }
        );
        assert!(
            !s.may_start(),
            "a start on demand must wait for the backoff"
        );
        assert_eq!(s.next_restart_unix_ms(), Some(1_000_500));
        assert_eq!(
            s.process_state(&workspace(1, false), t0),
            MonitorProcessState::BackingOff
        );
        assert_eq!(s.take_due_restart(t0 + Duration::from_millis(499)), None);
        assert_eq!(s.take_due_restart(t0 + Duration::from_millis(500)), Some(1));
        s.restarted(Fake(2));
        assert_eq!(
            s.process_state(&workspace(1, false), t0),
            MonitorProcessState::Running
        );
        assert_eq!(s.restarts(), 1);
        assert_eq!(
            s.last_exit().map(ToString::to_string).as_deref(),
            Some("signal 9 (SIGKILL)")
        );
        assert_eq!(s.next_restart_unix_ms(), None);
    }

    #[test]
    fn more_crashes_than_the_limit_fail_until_reset() {
        let (t0, p) = (Instant::now(), policy(2));
        let mut s = Supervision::default();
        s.started(Fake(1));
        for (i, delay) in [(1, 500), (2, 1000)] {
            let now = at(t0, i * 10_000);
            assert_eq!(
                crash(&mut s, now, &p),
                Verdict::Restart {
                    attempt: i as u32,
                    delay: Duration::from_millis(delay)
                }
            );
            assert_eq!(
                s.take_due_restart(now.instant + Duration::from_secs(1)),
                Some(i as u32)
            );
            s.restarted(Fake(i as u32 + 1));
        }
        assert_eq!(
            crash(&mut s, at(t0, 30_000), &p),
            Verdict::GiveUp { crashes: 3 }
        );
        assert!(s.is_failed());
        assert_eq!(
            s.process_state(&workspace(1, false), t0),
            MonitorProcessState::Failed
        );
        // Failed wins over idle and paused, and neither time nor a stop request revives it.
        assert_eq!(
            s.process_state(&workspace(0, true), t0),
            MonitorProcessState::Failed
        );
        assert_eq!(s.take_due_restart(t0 + Duration::from_secs(3600)), None);
        assert_eq!(s.take_running(), None);
        assert!(s.is_failed() && !s.may_start());
        assert_eq!(s.restarts(), 2);

        s.reset();
        assert!(s.may_start());
        assert_eq!((s.restarts(), s.last_exit().is_none()), (0, true));
        // A clean history: the next crash is attempt 1 again.
        s.started(Fake(9));
        assert_eq!(
            crash(&mut s, at(t0, 31_000), &p),
            Verdict::Restart {
                attempt: 1,
                delay: Duration::from_millis(500)
            }
        );
    }

    #[test]
    fn a_refused_entry_is_failed_with_its_reason_until_reset() {
        let mut s: Supervision<Fake> = Supervision::default();
        s.refused("remote \"r\" is the home directory".into());
        assert!(s.is_failed() && !s.may_start());
        assert_eq!(
            s.process_state(&workspace(1, false), Instant::now()),
            MonitorProcessState::Failed
        );
        assert_eq!(
            s.last_exit().map(ToString::to_string).as_deref(),
            Some("not started: remote \"r\" is the home directory")
        );
        assert_eq!(s.restarts(), 0, "a refusal is not a crash");
        s.reset();
        assert!(s.may_start());
    }

    #[test]
    fn a_stop_request_cancels_a_scheduled_restart() {
        let (t0, p) = (Instant::now(), policy(5));
        let mut s = Supervision::default();
        s.started(Fake(1));
        crash(&mut s, at(t0, 0), &p);
        assert_eq!(s.take_running(), None);
        assert!(s.may_start());
        assert_eq!(s.take_due_restart(t0 + Duration::from_secs(60)), None);
        // History survives a stop: status still shows the crash.
        assert_eq!(s.restarts(), 0);
        assert!(s.last_exit().is_some());
    }

    #[test]
    fn a_failed_start_counts_as_a_crash() {
        let (t0, p) = (Instant::now(), policy(0));
        let mut s: Supervision<Fake> = Supervision::default();
        let error = SpawnError::Exec {
            executable: "/nope/wsync-monitor".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        let verdict = s.crashed(MonitorEnd::NotStarted(error), Duration::ZERO, at(t0, 0), &p);
        assert_eq!(verdict, Verdict::GiveUp { crashes: 1 });
        assert!(s.is_failed());
        let text = s.last_exit().map(ToString::to_string).unwrap_or_default();
        assert!(
            text.starts_with("cannot start monitor /nope/wsync-monitor"),
            "{text}"
        );
    }

    #[test]
    fn a_stopped_or_running_monitor_is_described_by_the_registry_first() {
        let t0 = Instant::now();
        let mut s = Supervision::default();
        assert_eq!(
            s.process_state(&workspace(0, false), t0),
            MonitorProcessState::Idle
        );
        assert_eq!(
            s.process_state(&workspace(1, true), t0),
            MonitorProcessState::Paused
        );
        assert_eq!(
            s.process_state(&workspace(1, false), t0),
            MonitorProcessState::Stopped
        );
        s.started(Fake(1));
        // Pausing keeps the monitor running; status says paused.
        assert_eq!(
            s.process_state(&workspace(1, true), t0),
            MonitorProcessState::Paused
        );
        assert_eq!(
            s.process_state(&workspace(1, false), t0),
            MonitorProcessState::Running
        );
        assert_eq!(s.take_running(), Some(Fake(1)));
        assert_eq!(
            s.process_state(&workspace(1, false), t0),
            MonitorProcessState::Stopped
        );
    }

    #[test]
    fn a_monitor_silent_for_three_heartbeats_is_unresponsive_once_it_has_beaten() {
        let t0 = Instant::now();
        let later = |secs| t0 + Duration::from_secs(secs);
        let mut s = Supervision::default();
        s.heartbeat(t0);
        assert_eq!(s.silent_for(t0), None, "nothing runs: nothing to hear");
        s.started(Fake(1));
        // Before its first heartbeat (setting up watches) silence is not judged.
        assert_eq!(s.silent_for(later(600)), None);
        assert_eq!(
            s.process_state(&workspace(1, false), later(600)),
            MonitorProcessState::Running
        );
        s.heartbeat(later(1));
        assert_eq!(s.silent_for(later(6)), Some(Duration::from_secs(5)));
        assert_eq!(
            s.process_state(&workspace(1, false), later(6)),
            MonitorProcessState::Running
        );
        assert_eq!(UNRESPONSIVE_AFTER, Duration::from_secs(6));
        assert_eq!(
            s.process_state(&workspace(1, false), later(7)),
            MonitorProcessState::Unresponsive
        );
        // A paused monitor still beats; one that stopped is unresponsive all the same.
        assert_eq!(
            s.process_state(&workspace(1, true), later(7)),
            MonitorProcessState::Unresponsive
        );
        s.heartbeat(later(8));
        assert_eq!(
            s.process_state(&workspace(1, false), later(9)),
            MonitorProcessState::Running
        );
        // A restarted monitor starts unjudged again.
        let p = policy(5);
        crash(&mut s, at(t0, 9_000), &p);
        assert_eq!(s.take_due_restart(later(20)), Some(1));
        s.restarted(Fake(2));
        assert_eq!(s.silent_for(later(100)), None);
        let end = MonitorEnd::Unresponsive(Duration::from_secs(30));
        assert_eq!(
            end.to_string(),
            "killed: unresponsive, no heartbeat for 30 s"
        );
    }
}
