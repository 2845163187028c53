//! The engine's rules, driven through `step()` alone: no runtime, no temp dir, no process.
//! The harness plays the driver: it answers probes with the root it is told about, creates
//! cookies and targets successfully, and records the batches started and the events sent.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wsync_core::monitor_proto::{
    MonitorCommand, MonitorEvent, MonitorStatus, MonitorTunables, RemoteState, WatchBackendKind,
};
use wsync_core::registry::{Remote, Workspace};
use wsync_core::remote::RemoteTarget;
use wsync_core::rsync::{ExitClass, RsyncStats};

use super::*;
use crate::batch::DeletePolicy;
use crate::queue::Rename;
use crate::watch::{Change, ChangeKind, WatchError};

const ROOT: RootId = (1, 100);
const SETTLE: Duration = Duration::from_millis(5);

struct Harness {
    engine: Engine,
    now: Instant,
    /// What a root probe answers.
    root: RootProbe,
    /// Batches started and not yet finished by the test.
    started: Vec<BatchStart>,
    events: Vec<MonitorEvent>,
    /// Every effect other than the answered ones, in order.
    effects: Vec<Effect>,
    exit: Option<Exit>,
    /// Root probes answered.
    probes: usize,
    /// Leave root probes unanswered (a hung root): they are recorded in `effects`.
    hold_probes: bool,
    /// Leave rescans and rewatches unanswered (a walk under way): recorded in `effects`.
    hold_walks: bool,
}

fn remote(name: &str) -> Remote {
    Remote::new(
        name,
        RemoteTarget::Local {
            path: PathBuf::from("/mirror").join(name),
        },
    )
}

impl Harness {
    fn new(remotes: &[&str]) -> Self {
        Self::with(remotes, |_| {})
    }

    fn with(remotes: &[&str], edit: impl FnOnce(&mut Workspace)) -> Self {
        Self::configured(remotes, edit, |_| {})
    }

    /// A harness whose engine proves its remotes every `interval`.
    fn with_proofs(remotes: &[&str], interval: Duration) -> Self {
        Self::configured(
            remotes,
            |_| {},
            |c| c.tunables.proof_interval_ms = interval.as_millis() as u64,
        )
    }

    /// A harness whose start config `configure` adjusts (persisted paths, the initial checksum).
    fn configured(
        remotes: &[&str],
        edit: impl FnOnce(&mut Workspace),
        configure: impl FnOnce(&mut StartConfig),
    ) -> Self {
        let mut workspace = Workspace {
            name: "ws".into(),
            id: String::new(),
            path: "/ws".into(),
            remotes: remotes.iter().map(|r| remote(r)).collect(),
            paused: false,
            excludes: Vec::new(),
            respect_gitignore: true,
            max_delete: Some(100),
            checksum_every_secs: None,
            tuning: Default::default(),
            root_id: None,
        };
        edit(&mut workspace);
        let now = Instant::now();
        let mut config = StartConfig {
            workspace,
            tunables: MonitorTunables {
                settle_ms: SETTLE.as_millis() as u64,
                max_latency_ms: 100,
                proof_interval_ms: 0,
                ..MonitorTunables::default()
            },
            progress: Vec::new(),
            runtime_dir: "/run/wsync".into(),
            rules_file: None,
            root_id: Some(ROOT),
            watches: 3,
            watch_backend: WatchBackendKind::Inotify,
            pending_dir: None,
            pending: Vec::new(),
            initial_checksum: false,
        };
        configure(&mut config);
        let (engine, initial) = Engine::start(config, now);
        let mut h = Self {
            engine,
            now,
            root: RootProbe {
                id: Some(ROOT),
                empty: None,
            },
            started: Vec::new(),
            events: Vec::new(),
            effects: Vec::new(),
            exit: None,
            probes: 0,
            hold_probes: false,
            hold_walks: false,
        };
        h.perform(initial);
        h
    }

    /// Steps with `input` and every answer the effects call for, in the driver's order:
    /// all of a step's effects first, then the answers, first in, first out.
    fn step(&mut self, input: Input) {
        let effects = self.engine.step(input, self.now);
        self.perform(effects);
    }

    fn perform(&mut self, effects: Vec<Effect>) {
        let mut answers = std::collections::VecDeque::new();
        let mut effects = effects;
        loop {
            for effect in effects {
                if let Some(answer) = self.answer(effect) {
                    answers.push_back(answer);
                }
            }
            let Some(answer) = answers.pop_front() else {
                return;
            };
            effects = self.engine.step(answer, self.now);
        }
    }

    /// Records one effect; returns the answer the driver would give.
    fn answer(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::ProbeRoot { .. } if self.hold_probes => {
                self.effects.push(effect);
                None
            }
            Effect::ProbeRoot { purpose, list } => {
                self.probes += 1;
                let mut probe = self.root;
                probe.empty = if list {
                    self.root.empty.or(Some(false))
                } else {
                    None
                };
                Some(Input::RootProbed { purpose, probe })
            }
            Effect::CreateCookie { name } => Some(Input::CookieCreated { name, error: None }),
            // The walk answers when it ends, as the driver's does.
            Effect::Rescan | Effect::Rewatch if !self.hold_walks => {
                self.effects.push(effect);
                Some(Input::Rewalked)
            }
            Effect::StartBatch(start) => {
                assert!(self.probes > 0, "a batch starts only after a root probe");
                self.started.push(start);
                None
            }
            Effect::Emit(event) => {
                self.events.push(event);
                None
            }
            Effect::Exit(exit) => {
                self.exit = Some(exit);
                None
            }
            other => {
                self.effects.push(other);
                None
            }
        }
    }

    /// Remote `a` in sync, then the root replaced by another directory and a change seen in
    /// it: the next dispatch halts.
    fn with_a_replaced_root() -> Self {
        let mut h = Self::new(&["a"]);
        h.initial_sync();
        h.root.id = Some((1, 999));
        h.closed("f");
        h
    }

    /// Moves the clock on and ticks.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.step(Input::Tick);
    }

    fn changes(&mut self, changes: Vec<Change>) {
        self.step(Input::Watch(vec![WatchMsg::Changes(changes)]));
    }

    fn closed(&mut self, path: &str) {
        self.changes(vec![change(path, ChangeKind::Closed, false)]);
    }

    /// Runs the initial full syncs to completion.
    fn initial_sync(&mut self) {
        self.advance(SETTLE * 2);
        let starts = std::mem::take(&mut self.started);
        assert!(!starts.is_empty(), "the initial sync starts");
        for start in starts {
            assert_eq!(start.batch, Batch::Full);
            self.succeed(start);
        }
    }

    /// The only batch started since the last take.
    fn take_one(&mut self) -> BatchStart {
        assert_eq!(self.started.len(), 1, "exactly one batch started");
        self.started.pop().unwrap()
    }

    fn transferred(&mut self, start: &BatchStart) {
        self.step(Input::Transferred {
            remote: start.remote.clone(),
            flight: start.flight,
        });
    }

    fn done(&mut self, start: BatchStart, outcome: Outcome) {
        self.step(Input::BatchDone {
            remote: start.remote,
            flight: start.flight,
            batch: start.batch,
            outcome,
        });
    }

    fn succeed(&mut self, start: BatchStart) {
        self.transferred(&start);
        self.done(
            start,
            Outcome::success(RsyncStats::default(), Duration::ZERO),
        );
    }

    fn fail(&mut self, start: BatchStart, class: ExitClass) {
        let outcome = Outcome::failed(class, "rsync failed".into(), self.now);
        self.done(start, outcome);
    }

    fn flush(&mut self, id: u64, timeout: Duration) {
        self.step(Input::Command(MonitorCommand::Flush {
            id,
            timeout_ms: timeout.as_millis() as u64,
        }));
    }

    /// The cookie of flush `id` shows up in the event stream.
    fn cookie(&mut self, id: u64) {
        let name = format!("{}{id}", self.engine.cookie_prefix);
        self.step(Input::Watch(vec![WatchMsg::Cookie(name)]));
    }

    fn flushed(&self) -> Vec<(u64, Vec<String>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                MonitorEvent::Flushed { id, lagging } => Some((*id, lagging.clone())),
                _ => None,
            })
            .collect()
    }

    fn status(&self) -> MonitorStatus {
        self.engine.status(self.now)
    }

    fn state(&self) -> RemoteState {
        self.status().remotes[0].state
    }

    fn abandoned(&self) -> usize {
        self.effects
            .iter()
            .filter(|e| matches!(e, Effect::AbandonBatch { .. }))
            .count()
    }
}

fn change(path: &str, kind: ChangeKind, is_dir: bool) -> Change {
    Change {
        path: path.into(),
        kind,
        is_dir,
    }
}

fn paths(batch: &Batch) -> (Vec<Rename>, Vec<String>) {
    match batch {
        Batch::Full => panic!("a full sync, not paths"),
        Batch::Paths { renames, paths } => (
            renames.clone(),
            paths.iter().map(|p| p.display().to_string()).collect(),
        ),
    }
}

#[test]
fn the_initial_full_sync_starts_only_after_the_root_probe() {
    let mut h = Harness::new(&["a", "b"]);
    assert!(h.started.is_empty(), "nothing before the settle time");
    // Driven by hand: a due batch asks for a probe and starts nothing until it is answered.
    let fx = h.engine.step(Input::Tick, h.now + SETTLE * 2);
    assert!(
        fx.iter().any(|e| matches!(
            e,
            Effect::ProbeRoot {
                purpose: ProbePurpose::Dispatch,
                ..
            }
        )),
        "{fx:?}"
    );
    assert!(!fx.iter().any(|e| matches!(e, Effect::StartBatch(_))));
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Emit(_))),
        "no status while the answer is out"
    );
    let fx = h.engine.step(Input::Tick, h.now + SETTLE * 2);
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::ProbeRoot { .. })),
        "one probe at a time"
    );
    h.now += SETTLE * 2;
    h.probes += 1;
    h.step(Input::RootProbed {
        purpose: ProbePurpose::Dispatch,
        probe: h.root,
    });
    assert_eq!(h.started.len(), 2, "one full sync per remote");
    assert!(h.started.iter().all(|s| s.batch == Batch::Full));
    assert_eq!(h.state(), RemoteState::InitialSync);
    let starts = std::mem::take(&mut h.started);
    for start in starts {
        h.succeed(start);
    }
    h.advance(STATUS_INTERVAL);
    assert!(h
        .status()
        .remotes
        .iter()
        .all(|r| r.state == RemoteState::InSync));
}

#[test]
fn a_close_write_goes_out_at_once_but_a_file_mid_write_waits_for_quiet() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.changes(vec![
        change("big", ChangeKind::Created, false),
        change("big", ChangeKind::Modified, false),
    ]);
    assert!(
        h.started.is_empty(),
        "a file still being written is not sent yet"
    );
    h.closed("small");
    assert!(
        h.started.is_empty(),
        "another file is still mid-write: wait for quiet"
    );
    h.advance(SETTLE * 2);
    let (_, sent) = paths(&h.take_one().batch);
    assert_eq!(sent, ["big", "small"]);

    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("saved");
    let (_, sent) = paths(&h.take_one().batch);
    assert_eq!(sent, ["saved"], "an isolated save waits for nothing");
}

#[test]
fn a_paired_move_is_one_rename_and_a_lone_half_a_plain_path() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.changes(vec![
        change("old", ChangeKind::MovedFrom { cookie: 7 }, false),
        change("new", ChangeKind::MovedTo { cookie: 7 }, false),
    ]);
    h.advance(SETTLE * 2);
    let start = h.take_one();
    let (renames, sent) = paths(&start.batch);
    assert_eq!(
        renames,
        [Rename {
            from: "old".into(),
            to: "new".into(),
            is_dir: false
        }]
    );
    assert!(sent.is_empty());
    h.succeed(start);

    // A MOVED_FROM whose MOVED_TO is not in the same read left the workspace.
    h.changes(vec![change(
        "gone",
        ChangeKind::MovedFrom { cookie: 8 },
        true,
    )]);
    h.advance(SETTLE * 2);
    assert!(h.started.is_empty(), "a batch of deletions waits for quiet");
    h.advance(crate::queue::DELETE_SETTLE);
    let (renames, sent) = paths(&h.take_one().batch);
    assert!(renames.is_empty());
    assert_eq!(sent, ["gone"]);
}

#[test]
fn changes_in_a_fresh_directory_collapse_into_the_directory() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    let mut burst = vec![change("d", ChangeKind::Created, true)];
    for i in 0..50 {
        burst.push(change(&format!("d/f{i}"), ChangeKind::Created, false));
        burst.push(change(&format!("d/f{i}"), ChangeKind::Closed, false));
    }
    burst.push(change("d/sub", ChangeKind::Created, true));
    burst.push(change("d/sub/x", ChangeKind::Closed, false));
    h.changes(burst);
    h.advance(SETTLE * 2);
    let start = h.take_one();
    assert_eq!(
        paths(&start.batch).1,
        ["d"],
        "one recursive entry for the whole burst"
    );
    h.succeed(start);

    // Past the window the directory is old: its files go one by one.
    h.now += FRESH_DIR_WINDOW;
    h.closed("d/late");
    assert_eq!(paths(&h.take_one().batch).1, ["d/late"]);
}

#[test]
fn a_rename_racing_a_running_transfer_falls_back_to_both_ends() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("dir/file");
    let running = h.take_one();
    h.changes(vec![
        change("dir", ChangeKind::MovedFrom { cookie: 1 }, true),
        change("moved", ChangeKind::MovedTo { cookie: 1 }, true),
    ]);
    h.succeed(running);
    h.advance(SETTLE * 2);
    let (renames, sent) = paths(&h.take_one().batch);
    assert!(
        renames.is_empty(),
        "not replayed while a transfer touched it"
    );
    assert_eq!(sent, ["dir", "moved"]);
}

#[test]
fn a_flush_is_answered_once_its_cookie_is_seen_and_the_change_transferred() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.changes(vec![change("f", ChangeKind::Modified, false)]);
    h.flush(1, Duration::from_secs(10));
    h.advance(SETTLE * 2);
    assert!(h.flushed().is_empty(), "the cookie was not seen yet");
    let start = h.take_one();
    h.cookie(1);
    assert!(
        h.effects
            .iter()
            .any(|e| matches!(e, Effect::RemoveCookie { .. })),
        "the cookie is removed once seen"
    );
    assert!(h.flushed().is_empty(), "the change is still being sent");
    h.transferred(&start);
    assert_eq!(
        h.flushed(),
        [(1, vec![])],
        "answered at transfer-done, before the exit"
    );
    h.done(
        start,
        Outcome::success(RsyncStats::default(), Duration::ZERO),
    );
}

/// The initial walk runs beside the initial sync: a flush whose cookie shows up during it
/// waits for the walk's end and for what its catch-up reported (a write before the flush in a
/// directory watched late), not only for what was seen before the cookie.
#[test]
fn a_flush_during_the_initial_walk_waits_for_its_catch_up() {
    let mut h = Harness::new(&["a"]);
    h.step(Input::Watch(vec![WatchMsg::Walking]));
    h.initial_sync();
    h.flush(1, Duration::from_secs(10));
    h.cookie(1);
    assert!(h.flushed().is_empty(), "the walk is still under way");
    h.step(Input::Watch(vec![
        WatchMsg::Changes(vec![change("late/f", ChangeKind::Created, false)]),
        WatchMsg::Walked,
    ]));
    assert!(
        h.effects
            .iter()
            .any(|e| matches!(e, Effect::RemoveCookie { .. })),
        "the cookie counts (and goes) once the walk ended"
    );
    assert!(
        h.flushed().is_empty(),
        "the catch-up's change is not sent yet"
    );
    h.advance(SETTLE * 2);
    let start = h.take_one();
    assert_eq!(paths(&start.batch).1, ["late/f"]);
    h.succeed(start);
    assert_eq!(h.flushed(), [(1, vec![])]);
}

/// Review finding: batch A reports its transfer done, B starts, A then fails (its paths go
/// back to the queue), B succeeds and raises the synced watermark past A: A's changes are
/// still not on the remote, so no flush may count them.
#[test]
fn a_late_failure_after_transfer_done_keeps_the_flush_waiting() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("a");
    let a = h.take_one();
    h.transferred(&a);
    h.flush(1, Duration::from_secs(10));
    h.cookie(1);
    assert_eq!(h.flushed(), [(1, vec![])], "A's transfer is done");
    h.closed("b");
    let b = h.take_one();
    h.flush(2, Duration::from_secs(10));
    h.cookie(2);
    h.fail(a, ExitClass::Partial);
    h.succeed(b);
    assert_eq!(
        h.flushed().len(),
        1,
        "A's change is queued again: flush 2 waits"
    );
    // A's retry succeeds after its backoff: caught up.
    h.advance(Duration::from_secs(1));
    let retry = h.take_one();
    assert_eq!(paths(&retry.batch).1, ["a"]);
    h.succeed(retry);
    assert_eq!(h.flushed(), [(1, vec![]), (2, vec![])]);
}

#[test]
fn a_flush_during_backoff_times_out_naming_the_remote() {
    let mut h = Harness::new(&["good", "bad"]);
    h.initial_sync();
    h.closed("f");
    let starts = std::mem::take(&mut h.started);
    for start in starts {
        if start.remote.name == "bad" {
            h.fail(start, ExitClass::Connection);
        } else {
            h.succeed(start);
        }
    }
    let bad = h.status().remotes[1].clone();
    assert_eq!(bad.state, RemoteState::Backoff);
    assert_eq!(bad.consecutive_failures, 1);
    assert!(bad.next_retry_unix_ms.is_some());
    h.flush(1, Duration::from_millis(500));
    h.cookie(1);
    assert!(h.flushed().is_empty());
    h.advance(Duration::from_millis(500));
    assert_eq!(h.flushed(), [(1, vec!["bad".to_string()])]);
}

#[test]
fn consecutive_failures_back_off_1_then_2_seconds() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("f");
    let first = h.take_one();
    h.fail(first, ExitClass::Other);
    h.advance(Duration::from_millis(999));
    assert!(h.started.is_empty(), "first retry after 1 s");
    h.advance(Duration::from_millis(1));
    let second = h.take_one();
    h.fail(second, ExitClass::Other);
    h.advance(Duration::from_millis(1999));
    assert!(h.started.is_empty(), "second retry after 2 s");
    h.advance(Duration::from_millis(1));
    let retry = h.take_one();
    assert_eq!(paths(&retry.batch).1, ["f"], "the failed batch is retried");
    h.succeed(retry);
    assert_eq!(h.status().remotes[0].consecutive_failures, 0);
}

#[test]
fn a_paused_workspace_sends_nothing_and_flushes_time_out() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.step(Input::Command(MonitorCommand::Pause));
    h.closed("f");
    h.flush(1, Duration::from_millis(200));
    h.cookie(1);
    h.advance(Duration::from_millis(200));
    assert!(h.started.is_empty());
    assert_eq!(h.flushed(), [(1, vec!["a".to_string()])]);
    assert_eq!(h.state(), RemoteState::Paused);
    h.step(Input::Command(MonitorCommand::Resume));
    h.advance(SETTLE * 2);
    assert_eq!(paths(&h.take_one().batch).1, ["f"]);
}

#[test]
fn a_root_gone_halts_and_abandons_the_running_batch() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("f");
    let _running = h.take_one();
    h.root.id = None;
    h.step(Input::Watch(vec![
        WatchMsg::RootGone,
        WatchMsg::RootUnwatched,
    ]));
    let halted = h.status().halted.expect("halted");
    assert!(halted.contains("deleted or moved away"), "{halted}");
    assert_eq!(h.abandoned(), 1);
    assert_eq!(h.state(), RemoteState::Halted);
    h.closed("g");
    h.advance(Duration::from_secs(2));
    assert!(h.started.is_empty(), "nothing is synced while halted");
    // Resume while the root is still missing: still halted.
    h.step(Input::Command(MonitorCommand::Resume));
    assert!(h.status().halted.is_some());
}

#[test]
fn a_root_moved_away_and_back_is_not_a_halt() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.step(Input::Watch(vec![WatchMsg::RootGone]));
    assert_eq!(h.status().halted, None);
}

#[test]
fn a_replaced_root_halts_at_dispatch_and_resume_dry_runs_first() {
    let mut h = Harness::with_a_replaced_root();
    assert!(h.started.is_empty(), "nothing sent from a replaced root");
    let halted = h.status().halted.expect("halted");
    assert!(halted.contains("replaced"), "{halted}");
    h.step(Input::Command(MonitorCommand::Resume));
    assert_eq!(h.status().halted, None);
    assert!(
        h.effects.iter().any(|e| matches!(e, Effect::Rewatch)),
        "a new directory is watched afresh"
    );
    h.advance(SETTLE * 2);
    let start = h.take_one();
    assert_eq!(start.batch, Batch::Full);
    assert_eq!(start.options.delete_policy, DeletePolicy::DryRunFirst);
    h.succeed(start);
    // The next full sync is capped again.
    h.step(Input::Command(MonitorCommand::Resync));
    h.advance(SETTLE * 2);
    assert_eq!(h.take_one().options.delete_policy, DeletePolicy::Capped);
}

#[test]
fn after_a_lift_batches_wait_for_the_rewatch_and_a_flush_meanwhile_is_answered() {
    // A recreated root: resume rewatches it. Until that walk ends, a full sync could miss what
    // changes in a directory not yet watched, and a flush cookie created meanwhile is never
    // seen (the CI failure under notify: the flush waited for a cookie the old watch missed).
    let mut h = Harness::with_a_replaced_root();
    assert!(h.status().halted.is_some());
    h.hold_walks = true;
    h.step(Input::Command(MonitorCommand::Resume));
    assert!(h.effects.iter().any(|e| matches!(e, Effect::Rewatch)));
    h.flush(7, Duration::from_secs(60));
    h.advance(SETTLE * 2);
    assert!(
        h.started.is_empty(),
        "a batch started before the tree was watched again"
    );
    h.hold_walks = false;
    h.step(Input::Rewalked);
    h.advance(SETTLE * 2);
    let start = h.take_one();
    assert_eq!(start.batch, Batch::Full);
    h.succeed(start);
    // No cookie was ever seen; the full sync after the walk answers the flush.
    assert_eq!(h.flushed(), [(7, Vec::<String>::new())]);
}

#[test]
fn a_walk_stuck_past_the_hold_lets_batches_go_and_one_more_full_sync_follows_it() {
    let mut h = Harness::with_a_replaced_root();
    h.hold_walks = true;
    h.step(Input::Command(MonitorCommand::Resume));
    h.advance(SETTLE * 2);
    assert!(h.started.is_empty());
    // The walk hangs (a hung mount below the root): past the hold the full sync goes anyway.
    h.advance(WALK_HOLD);
    let start = h.take_one();
    assert_eq!(start.batch, Batch::Full);
    h.succeed(start);
    h.advance(SETTLE * 2);
    assert!(h.started.is_empty(), "nothing more until the walk ends");
    // It ends at last: the tree is synced once more, since the batch raced the walk.
    h.step(Input::Rewalked);
    h.advance(SETTLE * 2);
    assert_eq!(h.take_one().batch, Batch::Full);
}

#[test]
fn a_root_swapped_while_no_monitor_ran_halts_at_start_until_resume() {
    // The registry recorded another directory than the one the watches were set up on.
    let mut h = Harness::with(&["a"], |w| {
        w.root_id = Some(wsync_core::registry::RootIdentity { dev: 1, ino: 999 });
    });
    let halted = h.status().halted.expect("halted at start");
    assert!(halted.contains("replaced"), "{halted}");
    h.advance(SETTLE * 2);
    assert!(h.started.is_empty(), "nothing sent from a swapped root");
    h.step(Input::Command(MonitorCommand::Resume));
    assert_eq!(h.status().halted, None);
    h.advance(SETTLE * 2);
    let start = h.take_one();
    assert_eq!(start.batch, Batch::Full);
    assert_eq!(start.options.delete_policy, DeletePolicy::DryRunFirst);
    // The recorded root is the current one: no halt.
    let mut h = Harness::with(&["a"], |w| {
        w.root_id = Some(wsync_core::registry::RootIdentity {
            dev: ROOT.0,
            ino: ROOT.1,
        });
    });
    assert_eq!(h.status().halted, None);
    h.advance(SETTLE * 2);
    assert_eq!(h.take_one().batch, Batch::Full);
}

#[test]
fn a_mass_deletion_halts_with_nothing_sent_until_resume_confirms() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    let deletions = (0..101)
        .map(|i| change(&format!("f{i}"), ChangeKind::Deleted, false))
        .collect();
    h.changes(deletions);
    h.advance(Duration::from_secs(1));
    assert!(h.started.is_empty(), "held: nothing deleted remotely");
    assert_eq!(h.status().halted, None, "held for the grace first");
    h.advance(OVER_BUDGET_GRACE);
    assert!(h.started.is_empty(), "nothing deleted remotely");
    let halted = h.status().halted.expect("halted");
    assert!(halted.starts_with("mass deletion: 101 paths"), "{halted}");
    assert!(
        halted.contains(r#"first "f0", "f1", "f10", "f100", "f11""#) && halted.contains("..."),
        "the first paths are named: {halted}"
    );
    h.step(Input::Command(MonitorCommand::Resume));
    h.advance(SETTLE * 2);
    let start = h.take_one();
    assert_eq!(start.batch, Batch::Full);
    assert_eq!(start.options.delete_policy, DeletePolicy::Confirmed);
}

#[test]
fn a_deletion_storm_in_an_emptied_root_is_left_to_the_batch_check() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.root.empty = Some(true);
    let deletions = (0..101)
        .map(|i| change(&format!("f{i}"), ChangeKind::Deleted, false))
        .collect();
    h.changes(deletions);
    h.advance(Duration::from_secs(1));
    let start = h.take_one();
    assert_eq!(h.status().halted, None);
    // The batch finds the root empty and the remote not: its halt confirms on resume.
    let mut outcome = Outcome::failed(ExitClass::Fatal, "root empty".into(), h.now);
    outcome.halt = Some("workspace root /ws is empty but remote a is not".into());
    h.done(start, outcome);
    assert!(h.status().halted.is_some());
    h.step(Input::Command(MonitorCommand::Resume));
    h.advance(SETTLE * 2);
    assert_eq!(h.take_one().options.delete_policy, DeletePolicy::Confirmed);
}

#[test]
fn an_overflow_queues_one_full_sync_and_retargets_waiting_flushes() {
    let mut h = Harness::new(&["a", "b"]);
    h.initial_sync();
    h.flush(1, Duration::from_secs(10));
    h.step(Input::Watch(vec![WatchMsg::Overflow]));
    assert!(
        h.effects
            .iter()
            .any(|e| matches!(e, Effect::RemoveCookie { .. })),
        "the lost cookie is removed"
    );
    h.advance(SETTLE * 2);
    assert_eq!(h.started.len(), 2);
    assert!(h.started.iter().all(|s| s.batch == Batch::Full));
    assert_eq!(h.status().overflows, 1);
    let starts = std::mem::take(&mut h.started);
    for start in starts {
        h.succeed(start);
    }
    assert_eq!(h.flushed(), [(1, vec![])], "answered by the full sync");
    h.advance(Duration::from_secs(5));
    assert!(h.started.is_empty(), "one full sync, not a loop");
}

#[test]
fn a_watch_error_degrades_to_periodic_full_syncs() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    let error = WatchError::WatchLimit {
        watches: 8,
        dir: "/ws/deep".into(),
    };
    h.step(Input::Watch(vec![WatchMsg::Error(error)]));
    let status = h.status();
    assert!(status.watch_error.unwrap().contains("max_user_watches"));
    h.advance(SETTLE * 2);
    let start = h.take_one();
    assert_eq!(start.batch, Batch::Full);
    h.succeed(start);
    h.advance(DEGRADED_FULL_SYNC_INTERVAL);
    h.advance(SETTLE * 2);
    assert_eq!(h.take_one().batch, Batch::Full, "again after the interval");
}

#[test]
fn detach_abandons_the_batch_and_ignores_its_late_result() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("f");
    let stale = h.take_one();
    assert_eq!(stale.flight, 2);
    h.step(Input::Command(MonitorCommand::Detach {
        remote: "a".into(),
    }));
    assert_eq!(h.abandoned(), 1);
    assert!(h
        .effects
        .iter()
        .any(|e| matches!(e, Effect::CloseConnection(_))));
    assert!(h.status().remotes.is_empty());
    // Attached again: a new generation whose flight 2 is running when the old flight 2's
    // failure arrives; it must not touch the new one.
    h.step(Input::Command(MonitorCommand::Attach {
        remote: remote("a"),
        progress: false,
    }));
    h.initial_sync();
    h.closed("g");
    let current = h.take_one();
    assert_eq!(current.flight, stale.flight, "the flight ids collide");
    assert_ne!(current.remote, stale.remote);
    h.fail(stale, ExitClass::Connection);
    let status = h.status().remotes[0].clone();
    assert_eq!(
        status.state,
        RemoteState::Syncing,
        "the new flight still runs"
    );
    assert_eq!(status.consecutive_failures, 0);
    h.succeed(current);
    h.advance(STATUS_INTERVAL);
    assert_eq!(h.state(), RemoteState::InSync);
}

#[test]
fn shutdown_lets_the_running_transfer_finish_then_exits() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("f");
    let running = h.take_one();
    h.step(Input::Command(MonitorCommand::Shutdown));
    h.closed("g");
    h.advance(Duration::from_secs(1));
    assert!(h.started.is_empty(), "no new batch while draining");
    assert_eq!(h.exit, None);
    h.step(Input::CommandsClosed);
    assert_eq!(
        h.exit, None,
        "EOF after a shutdown is the daemon waiting for us"
    );
    h.transferred(&running);
    assert_eq!(h.exit, Some(Exit::Clean));

    let mut h = Harness::new(&["a"]);
    h.step(Input::CommandsClosed);
    assert_eq!(h.exit, Some(Exit::Clean), "EOF alone: the daemon is gone");
}

#[test]
fn a_vanished_file_is_queued_again_without_a_backoff() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("tmp");
    let start = h.take_one();
    let mut outcome = Outcome::failed(ExitClass::Vanished, "vanished".into(), h.now);
    outcome.vanished = Some(vec!["tmp".into()]);
    h.done(start, outcome);
    assert_eq!(h.status().remotes[0].consecutive_failures, 0);
    h.advance(SETTLE * 2);
    assert_eq!(paths(&h.take_one().batch).1, ["tmp"]);
}

#[test]
fn status_lines_are_rate_limited_and_the_latest_always_follows() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    // The held-back status goes out, then an interval passes quietly.
    h.advance(STATUS_INTERVAL);
    h.advance(STATUS_INTERVAL);
    let count = |h: &Harness| {
        h.events
            .iter()
            .filter(|e| matches!(e, MonitorEvent::Status { .. }))
            .count()
    };
    let before = count(&h);
    h.changes(vec![change("x", ChangeKind::Modified, false)]);
    assert_eq!(
        count(&h),
        before + 1,
        "a change after a quiet interval goes out at once"
    );
    h.changes(vec![change("y", ChangeKind::Modified, false)]);
    assert_eq!(count(&h), before + 1, "the next waits for the interval");
    let wake = h.engine.next_wake(h.now);
    assert_eq!(
        wake,
        h.now + SETTLE,
        "the batch is due before the held-back status"
    );
    h.now += Duration::from_millis(1);
    let wake = h.engine.next_wake(h.now);
    assert!(
        wake <= h.now + STATUS_INTERVAL,
        "the held-back status wakes the loop"
    );
    h.advance(STATUS_INTERVAL);
    assert_eq!(count(&h), before + 2);
    let last = h.events.iter().rev().find_map(|e| match e {
        MonitorEvent::Status { status } => Some(status.clone()),
        _ => None,
    });
    assert_eq!(last, Some(h.status()), "the latest state was sent");
}

#[test]
fn a_missing_root_at_start_halts_until_it_is_back() {
    let mut h = Harness::new(&["a"]);
    h.root.id = None;
    let (engine, initial) = Engine::start(
        StartConfig {
            workspace: Workspace {
                name: "ws".into(),
                id: String::new(),
                path: "/ws".into(),
                remotes: vec![remote("a")],
                paused: false,
                excludes: Vec::new(),
                respect_gitignore: true,
                max_delete: None,
                checksum_every_secs: None,
                tuning: Default::default(),
                root_id: None,
            },
            tunables: MonitorTunables {
                settle_ms: 5,
                max_latency_ms: 100,
                proof_interval_ms: 0,
                ..MonitorTunables::default()
            },
            progress: vec!["a".into()],
            runtime_dir: "/run".into(),
            rules_file: None,
            root_id: None,
            watches: 0,
            watch_backend: WatchBackendKind::Inotify,
            pending_dir: None,
            pending: Vec::new(),
            initial_checksum: false,
        },
        h.now,
    );
    h.engine = engine;
    h.perform(initial);
    assert!(h.status().halted.unwrap().contains("missing"));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.probes, 0, "a halted workspace does not even probe");
    h.step(Input::Command(MonitorCommand::Resume));
    assert!(h.status().halted.is_some(), "still missing");
    // The root appears: resume adopts it and the initial sync runs, watched.
    h.root.id = Some(ROOT);
    h.step(Input::Command(MonitorCommand::Resume));
    assert_eq!(h.status().halted, None);
    h.advance(SETTLE * 2);
    let start = h.take_one();
    assert_eq!(start.batch, Batch::Full);
    assert!(start.options.progress);
}

#[test]
fn eof_exits_without_starting_or_answering_anything() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.flush(1, Duration::from_secs(10));
    h.cookie(1);
    h.changes(vec![change("late", ChangeKind::Modified, false)]);
    let (started, flushed) = (h.started.len(), h.flushed().len());
    h.now += SETTLE * 2;
    h.step(Input::CommandsClosed);
    assert_eq!(h.exit, Some(Exit::Clean));
    assert_eq!(h.started.len(), started, "no batch starts on the way out");
    assert_eq!(h.flushed().len(), flushed);
    h.step(Input::Stop);
    let last = h.events.iter().rev().find_map(|e| match e {
        MonitorEvent::Status { status } => Some(status.clone()),
        _ => None,
    });
    let last = last.expect("a last status");
    assert_eq!(
        last.remotes[0].pending, 1,
        "the unsent change is still pending"
    );
    assert!(h
        .effects
        .iter()
        .any(|e| matches!(e, Effect::RemoveRulesFile)));
}

#[test]
fn the_first_status_carries_the_watch_count() {
    let mut h = Harness::new(&["a"]);
    h.advance(Duration::from_millis(1));
    let first = h.events.iter().find_map(|e| match e {
        MonitorEvent::Status { status } => Some(status.clone()),
        _ => None,
    });
    assert_eq!(first.expect("a first status").watches, 3);
    h.step(Input::WatchCount(9));
    h.advance(STATUS_INTERVAL);
    assert_eq!(h.status().watches, 9);
}

#[test]
fn a_path_deleted_and_recreated_again_and_again_costs_nothing() {
    // A SQLite journal, `tar xf` over existing files, an editor's atomic save.
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    let mut churn = Vec::new();
    for _ in 0..500 {
        churn.push(change("db-journal", ChangeKind::Created, false));
        churn.push(change("db-journal", ChangeKind::Closed, false));
        churn.push(change("db-journal", ChangeKind::Deleted, false));
    }
    for i in 0..150 {
        let name = format!("tarred{i}");
        churn.push(change(&name, ChangeKind::Deleted, false));
        churn.push(change(&name, ChangeKind::Created, false));
        churn.push(change(&name, ChangeKind::Closed, false));
    }
    h.changes(churn);
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.status().halted,
        None,
        "1 distinct deletion, not 650 events"
    );
    assert_eq!(h.take_one().options.max_delete, Some(100));
}

#[test]
fn deletions_in_chunks_halt_once_the_window_has_used_the_budget() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    let mut deleted = 0;
    for chunk in 0..3 {
        let deletions = (0..40)
            .map(|i| change(&format!("c{chunk}/f{i}"), ChangeKind::Deleted, false))
            .collect();
        h.changes(deletions);
        h.advance(Duration::from_millis(300));
        if h.started.is_empty() {
            h.advance(OVER_BUDGET_GRACE);
            break;
        }
        let start = h.take_one();
        let left = start.options.max_delete.expect("capped");
        assert_eq!(left, 100 - deleted, "--max-delete carries what is left");
        h.transferred(&start);
        let stats = RsyncStats {
            files_deleted: 40,
            ..RsyncStats::default()
        };
        h.done(start, Outcome::success(stats, Duration::ZERO));
        deleted += 40;
    }
    assert_eq!(deleted, 80, "the third chunk would pass the budget of 100");
    let halted = h.status().halted.expect("halted");
    assert!(halted.contains("80 deleted in the last 60 s"), "{halted}");
    // Resume confirms: the full sync runs uncapped and the window starts afresh.
    h.step(Input::Command(MonitorCommand::Resume));
    h.advance(SETTLE * 2);
    let full = h.take_one();
    assert_eq!(full.options.max_delete, None);
    h.succeed(full);
    h.closed("x");
    assert_eq!(h.take_one().options.max_delete, Some(100));
}

#[test]
fn the_default_budget_is_half_the_tree_seen_by_the_last_full_sync() {
    let mut h = Harness::with(&["a"], |ws| ws.max_delete = None);
    h.advance(SETTLE * 2);
    let initial = h.take_one();
    assert_eq!(
        initial.options.max_delete,
        Some(wsync_core::rsync::DEFAULT_MAX_DELETE),
        "before the tree's size is known"
    );
    h.transferred(&initial);
    let stats = RsyncStats {
        files_total: 3_000,
        ..RsyncStats::default()
    };
    h.done(initial, Outcome::success(stats, Duration::ZERO));
    // 1,400 of 3,000 go through...
    let deletions = (0..1_400)
        .map(|i| change(&format!("sub/f{i}"), ChangeKind::Deleted, false))
        .collect();
    h.changes(deletions);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.status().halted, None);
    let start = h.take_one();
    assert_eq!(start.options.max_delete, Some(1_500));
    h.transferred(&start);
    let stats = RsyncStats {
        files_deleted: 1_400,
        ..RsyncStats::default()
    };
    h.done(start, Outcome::success(stats, Duration::ZERO));
    // ... and 200 more within the minute would pass half the tree.
    let deletions = (0..200)
        .map(|i| change(&format!("more/f{i}"), ChangeKind::Deleted, false))
        .collect();
    h.changes(deletions);
    h.advance(Duration::from_secs(1));
    h.advance(OVER_BUDGET_GRACE);
    assert!(h.status().halted.is_some());
    assert!(h.started.is_empty());
}

#[test]
fn deletions_past_the_budget_that_come_back_within_the_grace_never_halt() {
    // rm -rf node_modules, then a reinstall a few seconds later.
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    let files: Vec<String> = (0..300).map(|i| format!("node_modules/p{i}")).collect();
    let mut removal: Vec<Change> = files
        .iter()
        .map(|f| change(f, ChangeKind::Deleted, false))
        .collect();
    removal.push(change("node_modules", ChangeKind::Deleted, true));
    h.changes(removal);
    h.advance(Duration::from_secs(1));
    h.advance(Duration::from_secs(2));
    assert!(h.started.is_empty(), "held, not sent");
    assert_eq!(h.status().halted, None);
    assert!(
        h.engine.next_wake(h.now) > h.now,
        "a held batch does not spin the loop"
    );
    let mut reinstall = vec![change("node_modules", ChangeKind::Created, true)];
    for f in &files {
        reinstall.push(change(f, ChangeKind::Created, false));
        reinstall.push(change(f, ChangeKind::Closed, false));
    }
    h.changes(reinstall);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.status().halted, None);
    let start = h.take_one();
    assert_eq!(paths(&start.batch).1, ["node_modules"]);
}

#[test]
fn a_sync_stopped_by_max_delete_halts_and_resume_confirms() {
    // A directory moved out of the workspace: one event, thousands of remote deletions that
    // only rsync can count; its --max-delete stops it and the workspace halts.
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.changes(vec![change(
        "big-dir",
        ChangeKind::MovedFrom { cookie: 3 },
        true,
    )]);
    h.advance(Duration::from_secs(1));
    let start = h.take_one();
    assert_eq!(start.options.max_delete, Some(100));
    let stopped = |h: &Harness| {
        let mut outcome = Outcome::failed(ExitClass::MaxDelete, "max-delete".into(), h.now);
        outcome.stats.files_deleted = 100;
        outcome.halt = Some("a sync to remote a stopped at the --max-delete cap".into());
        outcome
    };
    let outcome = stopped(&h);
    h.done(start, outcome);
    assert_eq!(
        h.status().halted,
        None,
        "held first: it may be on its way back"
    );
    // The retries keep hitting the cap (--max-delete=0 now); past the hold, the halt.
    let mut retries = 0;
    while h.status().halted.is_none() {
        h.advance(Duration::from_millis(500));
        if let Some(retry) = h.started.pop() {
            assert_eq!(retry.options.max_delete, Some(0));
            let outcome = stopped(&h);
            h.done(retry, outcome);
            retries += 1;
        }
        assert!(retries < 10, "halts in the end");
    }
    assert!(h.status().halted.unwrap().contains("--max-delete"));
    h.step(Input::Command(MonitorCommand::Resume));
    h.advance(Duration::from_secs(2));
    let full = h.take_one();
    assert_eq!(full.options.delete_policy, DeletePolicy::Confirmed);
    assert_eq!(full.options.max_delete, None);
}

/// Exit 23 with every error line naming a path: those paths failed, the rest landed.
fn partial(failing: &[&str]) -> Outcome {
    let mut outcome = Outcome::failed(
        ExitClass::Partial,
        "rsync exited with 23".into(),
        Instant::now(),
    );
    outcome.failed_paths = Some(
        failing
            .iter()
            .map(|p| wsync_core::rsync::PathFailure {
                path: p.into(),
                message: format!(
                    "mkstemp \"/mirror/a/{p}.tmp\" failed: Read-only file system (30)"
                ),
            })
            .collect(),
    );
    outcome
}

#[test]
fn a_path_the_remote_cannot_write_is_retried_on_its_own_while_other_changes_flow() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("ro/f");
    let first = h.take_one();
    h.closed("ok");
    h.done(first, partial(&["ro/f"]));
    // No whole-remote backoff: the change made meanwhile goes out at once.
    let next = h.take_one();
    assert_eq!(
        paths(&next.batch).1,
        ["ok"],
        "the failing path waits for its retry"
    );
    h.succeed(next);
    let s = h.status().remotes[0].clone();
    assert_eq!(s.state, RemoteState::Backoff);
    assert_eq!(s.consecutive_failures, 1);
    assert!(s.next_retry_unix_ms.is_some());
    assert!(
        s.last_error.as_deref().is_some_and(|e| e.contains("ro/f")),
        "{s:?}"
    );
    // A flush reports the remote lagging: it does not hold that change.
    h.flush(1, Duration::from_millis(500));
    h.cookie(1);
    h.advance(Duration::from_millis(500));
    assert_eq!(h.flushed(), [(1, vec!["a".to_string()])]);
    // The retry, after 1 s, carries the failing path alone.
    h.advance(Duration::from_millis(500));
    let retry = h.take_one();
    assert_eq!(paths(&retry.batch).1, ["ro/f"]);
    h.succeed(retry);
    assert_eq!(h.state(), RemoteState::InSync);
    h.flush(2, Duration::from_secs(5));
    h.cookie(2);
    assert_eq!(h.flushed().last(), Some(&(2, vec![])));
}

#[test]
fn a_path_failing_three_times_puts_the_remote_in_error_naming_it() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("ro/f");
    let first = h.take_one();
    h.done(first, partial(&["ro/f"]));
    // Backoff per path: 1 s, then 2 s.
    for (attempt, delay) in [(2, 1), (3, 2)] {
        h.advance(Duration::from_millis(delay * 1000 - 1));
        assert!(h.started.is_empty(), "retry {attempt} not before {delay} s");
        h.advance(Duration::from_millis(1));
        let retry = h.take_one();
        assert_eq!(paths(&retry.batch).1, ["ro/f"]);
        assert_eq!(h.state(), RemoteState::Syncing);
        h.done(retry, partial(&["ro/f"]));
        let expected = if attempt >= 3 {
            RemoteState::Error
        } else {
            RemoteState::Backoff
        };
        assert_eq!(h.state(), expected, "after {attempt} failures");
    }
    let s = h.status().remotes[0].clone();
    assert_eq!(s.consecutive_failures, 3);
    let error = s.last_error.unwrap_or_default();
    assert!(
        error.contains("ro/f") && error.contains("Read-only file system"),
        "{error}"
    );
    // Unknown failures keep today's behaviour: the whole remote backs off.
    h.advance(Duration::from_secs(4));
    let retry = h.take_one();
    h.fail(retry, ExitClass::Partial);
    h.closed("other");
    h.advance(SETTLE * 2);
    assert!(h.started.is_empty(), "the whole remote is in backoff");
}

/// Retries the failed batch once its backoff is over and fails it again with `outcome`.
fn retry_and_fail(h: &mut Harness, outcome: impl Fn(&Harness) -> Outcome) {
    let failures = h.status().remotes[0].consecutive_failures;
    h.advance(wsync_core::backoff::Backoff::REMOTE_RETRY.delay(failures));
    let retry = h.take_one();
    let outcome = outcome(h);
    h.done(retry, outcome);
}

#[test]
fn a_remote_failing_whole_three_times_shows_error_keeps_retrying_and_recovers() {
    // rsync exit 23 whose message names no path (e.g. `failed to set times on "/target/."`
    // when the target directory is immutable): the whole remote fails.
    let whole = |h: &Harness| {
        Outcome::failed(
            ExitClass::Partial,
            "rsync: [generator] failed to set times on \"/mirror/a/.\": Operation not permitted (1)".into(),
            h.now,
        )
    };
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("f");
    let first = h.take_one();
    h.done(first, whole(&h));
    assert_eq!(h.state(), RemoteState::Backoff, "one failure is not news");
    retry_and_fail(&mut h, whole);
    assert_eq!(h.state(), RemoteState::Backoff, "nor two");
    retry_and_fail(&mut h, whole);
    let s = h.status().remotes[0].clone();
    assert_eq!(s.state, RemoteState::Error, "{s:?}");
    assert_eq!(s.consecutive_failures, 3);
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("failed to set times")),
        "{s:?}"
    );
    // Still retried with backoff (4 s now), and still an error while it keeps failing.
    assert!(s.next_retry_unix_ms.is_some());
    retry_and_fail(&mut h, whole);
    assert_eq!(h.state(), RemoteState::Error);
    h.advance(Duration::from_secs(8));
    let retry = h.take_one();
    h.succeed(retry);
    let s = h.status().remotes[0].clone();
    assert_eq!(s.state, RemoteState::InSync, "{s:?}");
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!(s.last_error, None);
}

#[test]
fn an_unreachable_remote_shows_error_only_after_a_minute_of_failures() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("f");
    let started = h.now;
    let first = h.take_one();
    h.fail(first, ExitClass::Connection);
    // 1, 2, 4, 8, 16 s of backoff: five more failures within 31 s, a blip (a laptop
    // changing networks) that is not news.
    for _ in 0..5 {
        retry_and_fail(&mut h, |h| {
            Outcome::failed(
                ExitClass::Connection,
                "ssh: connect to host box port 22: Network is unreachable".into(),
                h.now,
            )
        });
        assert_eq!(
            h.state(),
            RemoteState::Backoff,
            "after {:?}",
            h.now - started
        );
    }
    // The next retry (32 s later) is past a minute of failing: reported, and still retried.
    retry_and_fail(&mut h, |h| {
        Outcome::failed(
            ExitClass::Connection,
            "ssh: connect to host box port 22: Network is unreachable".into(),
            h.now,
        )
    });
    let s = h.status().remotes[0].clone();
    assert!(h.now - started >= Duration::from_secs(60));
    assert_eq!(s.state, RemoteState::Error, "{s:?}");
    assert!(s
        .last_error
        .is_some_and(|e| e.contains("Network is unreachable")));
    assert!(s.next_retry_unix_ms.is_some());
    retry_and_fail(&mut h, |h| {
        Outcome::failed(ExitClass::Killed, "killed".into(), h.now)
    });
    assert_eq!(h.state(), RemoteState::Error);
    h.advance(Duration::from_secs(60));
    let retry = h.take_one();
    h.succeed(retry);
    assert_eq!(h.state(), RemoteState::InSync);
}

// ---- proof of sync and latency ---------------------------------------------------------

const PROOF: Duration = Duration::from_secs(60);

fn created_proofs(h: &Harness) -> usize {
    // The harness answers CreateCookie itself; the proof file's name is the engine's.
    h.engine.proofs_created()
}

#[test]
fn an_idle_remote_is_proved_by_a_file_that_travels_the_normal_path() {
    let mut h = Harness::with_proofs(&["a"], PROOF);
    h.initial_sync();
    assert_eq!(h.state(), RemoteState::InSync);
    let landed = h.status().remotes[0].verified_unix_ms;
    assert!(landed.is_some(), "the initial sync is a proof");
    h.advance(PROOF / 2);
    assert_eq!(
        created_proofs(&h),
        0,
        "proved half an interval ago: no probe"
    );
    h.advance(PROOF / 2);
    assert_eq!(
        created_proofs(&h),
        1,
        "an interval without a proof: a probe"
    );
    let name = h.engine.pending_proof().expect("a proof file is out");
    // Its creation comes back as an ordinary change, queued and sent like any.
    h.changes(vec![change(&name, ChangeKind::Created, false)]);
    h.advance(SETTLE * 2);
    let start = h.take_one();
    assert!(
        matches!(&start.batch, Batch::Paths { paths, .. } if paths.iter().any(|p| p.as_os_str() == name.as_str())),
        "the proof file goes in a normal batch"
    );
    h.succeed(start);
    assert!(
        h.effects
            .iter()
            .any(|e| matches!(e, Effect::RemoveCookie { name: n } if *n == name)),
        "once on the remote the proof file is removed again"
    );
    assert_eq!(h.engine.pending_proof(), None);
}

#[test]
fn a_remote_that_never_receives_the_proof_goes_unverified_and_recovers() {
    let mut h = Harness::with_proofs(&["a"], PROOF);
    h.initial_sync();
    // Every interval a probe goes out, but its event never comes (the watcher went deaf).
    for _ in 0..PROOF_MISSES {
        h.advance(PROOF);
    }
    h.advance(Duration::from_millis(1));
    assert_eq!(h.state(), RemoteState::Unverified);
    assert!(created_proofs(&h) >= 2, "a probe each round");
    // A change that lands proves it again.
    h.advance(PROOF);
    if let Some(name) = h.engine.pending_proof() {
        h.changes(vec![change(&name, ChangeKind::Created, false)]);
    } else {
        h.closed("f");
    }
    h.advance(SETTLE * 2);
    let start = h.take_one();
    h.succeed(start);
    assert_eq!(h.state(), RemoteState::InSync);
}

#[test]
fn a_paused_workspace_is_not_probed_and_resume_is_not_blamed_for_the_pause() {
    let mut h = Harness::with_proofs(&["a"], PROOF);
    h.initial_sync();
    h.step(Input::Command(MonitorCommand::Pause));
    h.advance(PROOF * 5);
    assert_eq!(created_proofs(&h), 0, "no probe while paused");
    assert_eq!(h.state(), RemoteState::Paused);
    h.step(Input::Command(MonitorCommand::Resume));
    assert_ne!(h.state(), RemoteState::Unverified);
    assert_eq!(created_proofs(&h), 1, "resume probes at once");
}

#[test]
fn status_reports_change_to_remote_latency() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("f");
    h.advance(Duration::from_millis(30));
    let start = h.take_one();
    h.advance(Duration::from_millis(20));
    h.succeed(start);
    let t = h.status().remotes[0].throughput.expect("a change landed");
    // Queued at 0, due at once (a close-write), landed 50 ms later.
    assert_eq!(t.latency_p50_us, 50_000);
    assert!(t.samples >= 1);
}

/// The trash of a remote that keeps deletions is pruned at start, hourly and after its
/// setting changes; a remote that keeps nothing is never pruned, and an `update` reaches the
/// batches after it without a full sync.
#[test]
fn trashes_are_pruned_at_start_hourly_and_after_an_update() {
    let prunes = |h: &mut Harness| -> Vec<String> {
        std::mem::take(&mut h.effects)
            .into_iter()
            .filter_map(|e| match e {
                Effect::PruneTrash(dest) => Some(dest.remote.name.clone()),
                _ => None,
            })
            .collect()
    };
    let mut h = Harness::with(&["keeps", "plain"], |ws| {
        ws.remotes[0].keep_deleted_days = 7;
    });
    h.initial_sync();
    assert_eq!(
        prunes(&mut h),
        ["keeps"],
        "at start, only the remote that keeps"
    );
    h.advance(Duration::from_secs(60));
    assert!(prunes(&mut h).is_empty(), "not again within the hour");
    assert!(h.engine.next_wake(h.now) <= h.now + Duration::from_secs(1));
    h.advance(TRASH_PRUNE_INTERVAL);
    assert_eq!(prunes(&mut h), ["keeps"], "an hour later");

    let mut updated = remote("plain");
    updated.keep_deleted_days = 1;
    h.step(Input::Command(MonitorCommand::Update { remote: updated }));
    assert_eq!(
        prunes(&mut h),
        ["keeps", "plain"],
        "at once after an update"
    );
    h.closed("f");
    h.advance(SETTLE * 2);
    let starts = std::mem::take(&mut h.started);
    assert!(starts.iter().all(|s| s.batch != Batch::Full), "no re-sync");
    let plain = starts.iter().find(|s| s.remote.name == "plain").unwrap();
    assert_eq!(
        plain.dest.remote.keep_deleted_days, 1,
        "the next batch uses it"
    );
}

/// A batch that sent `lengths` of its growing files.
fn sent(lengths: &[(&str, u64)]) -> Outcome {
    let mut outcome = Outcome::success(RsyncStats::default(), Duration::ZERO);
    outcome.sent_lengths = lengths.iter().map(|(p, l)| (p.into(), *l)).collect();
    outcome
}

fn modified(h: &mut Harness, path: &str) {
    h.changes(vec![change(path, ChangeKind::Modified, false)]);
}

#[test]
fn a_file_still_being_written_goes_out_at_most_once_a_second_and_at_once_when_closed() {
    let ms = Duration::from_millis;
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.changes(vec![change("big", ChangeKind::Created, false)]);
    modified(&mut h, "big");
    h.advance(SETTLE * 2);
    let first = h.take_one();
    assert_eq!(paths(&first.batch).1, ["big"]);
    assert_eq!(first.options.growing, [("big".into(), None)]);
    h.transferred(&first);
    h.done(first, sent(&[("big", 1 << 20)]));
    // Written again 200 ms after it went out: it waits until a second has passed.
    h.advance(ms(200));
    modified(&mut h, "big");
    h.advance(SETTLE * 2);
    assert!(h.started.is_empty(), "sent 200 ms ago: held");
    assert_eq!(h.status().remotes[0].pending, 1, "held changes are pending");
    // Another path is not held, and a close-write of it goes out at once.
    h.closed("small");
    let other = h.take_one();
    assert_eq!(paths(&other.batch).1, ["small"]);
    assert!(other.options.growing.is_empty());
    h.succeed(other);
    h.advance(ms(500));
    modified(&mut h, "big");
    // Sent at t, now t + 710 ms: due at t + 1 s.
    h.advance(ms(289));
    assert!(h.started.is_empty(), "still before the second is over");
    assert_eq!(
        h.engine.next_wake(h.now),
        h.now + ms(1),
        "woken when it is due"
    );
    h.advance(ms(1));
    let second = h.take_one();
    assert_eq!(paths(&second.batch).1, ["big"]);
    assert_eq!(
        second.options.growing,
        [("big".into(), Some(1 << 20))],
        "the length the last batch reported"
    );
    h.transferred(&second);
    h.done(second, sent(&[("big", 3 << 20)]));
    // The close-write goes out at once, appended from the last length.
    h.advance(ms(100));
    modified(&mut h, "big");
    h.closed("big");
    let last = h.take_one();
    assert_eq!(paths(&last.batch).1, ["big"]);
    assert_eq!(last.options.growing, [("big".into(), Some(3 << 20))]);
    h.succeed(last);
    // Closed and sent: the next write to it is an ordinary change again.
    modified(&mut h, "big");
    h.closed("big");
    assert!(h.take_one().options.growing.is_empty());
}

#[test]
fn a_held_growing_file_keeps_a_flush_waiting_until_it_is_sent() {
    let ms = Duration::from_millis;
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    modified(&mut h, "log");
    h.advance(SETTLE * 2);
    let first = h.take_one();
    h.transferred(&first);
    h.done(first, sent(&[("log", 10)]));
    h.advance(ms(100));
    modified(&mut h, "log");
    h.flush(1, Duration::from_secs(5));
    h.cookie(1);
    h.advance(ms(500));
    assert!(
        h.flushed().is_empty(),
        "the held write is not on the remote"
    );
    h.advance(ms(400));
    let second = h.take_one();
    h.transferred(&second);
    assert_eq!(h.flushed(), [(1, vec![])]);
    h.done(second, sent(&[("log", 20)]));
}

#[test]
fn a_growing_files_length_is_forgotten_when_its_batch_fails_or_it_is_replaced() {
    let ms = Duration::from_millis;
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    modified(&mut h, "f");
    h.advance(SETTLE * 2);
    let first = h.take_one();
    h.done(first, sent(&[("f", 10)]));
    // The next batch fails (an append may have written part of its data): unknown again.
    h.advance(Duration::from_secs(1));
    modified(&mut h, "f");
    h.advance(SETTLE * 2);
    let second = h.take_one();
    assert_eq!(second.options.growing, [("f".into(), Some(10))]);
    h.fail(second, ExitClass::Connection);
    h.advance(Duration::from_secs(1));
    let retry = h.take_one();
    assert_eq!(retry.options.growing, [("f".into(), None)]);
    h.done(retry, sent(&[("f", 20)]));
    // Deleted and created anew: another file, sent as an ordinary one first.
    h.advance(ms(10));
    h.changes(vec![
        change("f", ChangeKind::Deleted, false),
        change("f", ChangeKind::Created, false),
    ]);
    h.advance(crate::queue::DELETE_SETTLE + SETTLE);
    let recreated = h.take_one();
    assert_eq!(paths(&recreated.batch).1, ["f"], "not held: another file");
    assert_eq!(recreated.options.growing, [("f".into(), None)]);
}

// ---- content, not timestamps, for what is known to have changed ---------------------------

fn by_content(start: &BatchStart) -> Vec<String> {
    start
        .options
        .by_content
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

fn saves(h: &Harness) -> Vec<(PathBuf, Vec<PathBuf>)> {
    h.effects
        .iter()
        .filter_map(|e| match e {
            Effect::SavePending { file, paths } => Some((file.clone(), paths.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_dirty_set_collapsed_into_a_full_sync_still_sends_its_known_paths_by_content() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.step(Input::Command(MonitorCommand::Pause));
    let count = crate::queue::FULL_SYNC_THRESHOLD + 50;
    let changes: Vec<Change> = (0..count)
        .map(|i| change(&format!("f{i:05}"), ChangeKind::Closed, false))
        .collect();
    h.changes(changes);
    h.step(Input::Command(MonitorCommand::Resume));
    h.advance(SETTLE * 2);
    let start = h.take_one();
    assert_eq!(
        start.batch,
        Batch::Full,
        "past the threshold: one full sync"
    );
    let known = by_content(&start);
    assert_eq!(known.len(), count, "every known path goes by content");
    assert_eq!(known[0], "f00000");
    assert!(!start.options.checksum);
    assert_eq!(h.status().remotes[0].pending, count as u64);
    // A failed full sync keeps them for the retry.
    h.fail(start, ExitClass::Connection);
    h.advance(Duration::from_secs(2));
    let retry = h.take_one();
    assert_eq!(retry.batch, Batch::Full);
    assert_eq!(by_content(&retry).len(), count);
    h.succeed(retry);
    // Once landed they are forgotten: the next full sync knows nothing more.
    h.step(Input::Command(MonitorCommand::Resync));
    h.advance(SETTLE * 2);
    assert!(by_content(&h.take_one()).is_empty());
}

#[test]
fn an_overflow_or_a_halt_keeps_the_paths_already_known() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.step(Input::Command(MonitorCommand::Pause));
    h.closed("queued");
    h.step(Input::Watch(vec![WatchMsg::Overflow]));
    h.closed("after");
    h.step(Input::Command(MonitorCommand::Resume));
    h.advance(SETTLE * 2);
    let start = h.take_one();
    assert_eq!(start.batch, Batch::Full);
    assert_eq!(by_content(&start), ["after", "queued"]);
    h.succeed(start);
    // A batch of paths cut short by a halt: the full sync after the lift still knows them.
    h.closed("running");
    let running = h.take_one();
    assert_eq!(paths(&running.batch).1, ["running"]);
    h.root.id = None;
    h.step(Input::Watch(vec![
        WatchMsg::RootGone,
        WatchMsg::RootUnwatched,
    ]));
    assert!(h.status().halted.is_some());
    assert_eq!(h.abandoned(), 1);
    h.root.id = Some(ROOT);
    h.step(Input::Command(MonitorCommand::Resume));
    h.advance(SETTLE * 2);
    let after = h.take_one();
    assert_eq!(after.batch, Batch::Full);
    assert_eq!(by_content(&after), ["running"]);
}

#[test]
fn pending_paths_are_persisted_while_paused_and_at_stop_never_while_active() {
    let dir = PathBuf::from("/state/pending");
    let mut h = Harness::configured(
        &["a"],
        |w| w.id = "00ff".into(),
        |c| c.pending_dir = Some(dir.clone()),
    );
    h.initial_sync();
    h.closed("live");
    let live = h.take_one();
    h.succeed(live);
    assert!(saves(&h).is_empty(), "an active workspace writes nothing");
    h.step(Input::Command(MonitorCommand::Pause));
    h.closed("x");
    let file = dir.join("00ff.a.pending");
    assert_eq!(saves(&h), [(file.clone(), vec![PathBuf::from("x")])]);
    // More changes within the interval wait for it; nothing new, nothing written.
    h.closed("y");
    assert_eq!(saves(&h).len(), 1);
    h.advance(PENDING_SAVE_INTERVAL);
    assert_eq!(
        saves(&h)[1],
        (file.clone(), vec![PathBuf::from("x"), PathBuf::from("y")])
    );
    h.advance(PENDING_SAVE_INTERVAL * 3);
    assert_eq!(saves(&h).len(), 2, "unchanged: not written again");
    // Resumed and synced: the file goes.
    h.step(Input::Command(MonitorCommand::Resume));
    h.advance(SETTLE);
    let resumed = h.take_one();
    h.succeed(resumed);
    assert_eq!(saves(&h)[2], (file.clone(), vec![]));
    // At stop, whatever waits or runs is written.
    h.closed("in-flight");
    let _running = h.take_one();
    h.closed("queued");
    h.step(Input::Stop);
    assert_eq!(
        saves(&h)[3],
        (
            file,
            vec![PathBuf::from("in-flight"), PathBuf::from("queued")]
        )
    );
}

#[test]
fn paths_persisted_by_an_earlier_monitor_go_by_content_in_the_initial_sync() {
    let dir = PathBuf::from("/state/pending");
    let mut h = Harness::configured(
        &["a", "b"],
        |w| w.id = "00ff".into(),
        |c| {
            c.pending_dir = Some(dir.clone());
            c.pending = vec![("a".into(), vec!["p/x".into(), "q".into()])];
        },
    );
    h.advance(SETTLE * 2);
    let starts = std::mem::take(&mut h.started);
    let (a, b): (Vec<_>, Vec<_>) = starts.into_iter().partition(|s| s.remote.name == "a");
    assert_eq!(by_content(&a[0]), ["p/x", "q"]);
    assert!(by_content(&b[0]).is_empty());
    assert!(
        saves(&h).is_empty(),
        "the file stays until the paths landed"
    );
    h.succeed(a.into_iter().next().unwrap());
    assert_eq!(saves(&h), [(dir.join("00ff.a.pending"), vec![])]);
}

#[test]
fn checksum_full_syncs_initial_on_request_and_periodic() {
    let mut h = Harness::configured(
        &["a", "b"],
        |w| w.checksum_every_secs = Some(60),
        |c| c.initial_checksum = true,
    );
    h.advance(SETTLE * 2);
    let starts = std::mem::take(&mut h.started);
    assert!(starts
        .iter()
        .all(|s| s.batch == Batch::Full && s.options.checksum));
    for start in starts {
        h.succeed(start);
    }
    // A plain resync compares by size and mtime; a checksum resync of one remote by content.
    h.step(Input::Command(MonitorCommand::Resync));
    h.advance(SETTLE * 2);
    let starts = std::mem::take(&mut h.started);
    assert!(starts.iter().all(|s| !s.options.checksum));
    for start in starts {
        h.succeed(start);
    }
    h.step(Input::Command(MonitorCommand::ChecksumResync {
        remote: Some("b".into()),
    }));
    h.advance(SETTLE * 2);
    let start = h.take_one();
    assert_eq!(
        (start.remote.name.as_str(), start.options.checksum),
        ("b", true)
    );
    h.succeed(start);
    // The periodic pass waits until every remote is idle.
    h.now += Duration::from_secs(60);
    h.closed("busy");
    let busy = std::mem::take(&mut h.started);
    assert_eq!(busy.len(), 2);
    assert!(busy.iter().all(|s| !s.options.checksum));
    for start in busy {
        h.succeed(start);
    }
    h.advance(SETTLE);
    let starts = std::mem::take(&mut h.started);
    assert_eq!(starts.len(), 2);
    assert!(starts
        .iter()
        .all(|s| s.batch == Batch::Full && s.options.checksum));
    for start in starts {
        h.succeed(start);
    }
    h.advance(Duration::from_secs(30));
    assert!(h.started.is_empty(), "once per interval");
}

const HUNG: &str =
    "reading the target marker /mirror/hung/.wsync-target has not returned within 10 s";

/// The last status line sent.
fn last_status(h: &Harness) -> MonitorStatus {
    h.events
        .iter()
        .rev()
        .find_map(|e| match e {
            MonitorEvent::Status { status } => Some(status.clone()),
            _ => None,
        })
        .expect("a status line was sent")
}

#[test]
fn a_remote_whose_call_hangs_is_stalled_alone_and_recovers_when_it_returns() {
    let mut h = Harness::new(&["hung", "ok"]);
    h.initial_sync();
    h.closed("f");
    let mut starts = std::mem::take(&mut h.started);
    assert_eq!(starts.len(), 2);
    starts.sort_by(|a, b| a.remote.name.cmp(&b.remote.name));
    let ok = starts.pop().unwrap();
    let hung = starts.pop().unwrap();
    h.step(Input::Stall {
        remote: hung.remote.clone(),
        flight: hung.flight,
        stalled: Some(HUNG.into()),
    });
    let status = h.status();
    assert_eq!(status.remotes[0].state, RemoteState::Stalled);
    assert_eq!(status.remotes[0].last_error.as_deref(), Some(HUNG));
    assert_eq!(status.remotes[1].state, RemoteState::Syncing);
    h.succeed(ok);
    // A flush waiting only for the stalled remote is answered at once, naming it.
    h.flush(1, Duration::from_secs(60));
    h.cookie(1);
    assert_eq!(h.flushed(), [(1, vec!["hung".to_owned()])]);
    // The other remote keeps going.
    h.closed("g");
    let next = h.take_one();
    assert_eq!(next.remote.name, "ok");
    h.succeed(next);
    h.advance(STATUS_INTERVAL);
    let sent = last_status(&h);
    assert_eq!(sent.remotes[0].state, RemoteState::Stalled, "{sent:?}");
    assert_eq!(sent.remotes[1].state, RemoteState::InSync, "{sent:?}");
    // The call returns: the batch carries on, and lands.
    h.step(Input::Stall {
        remote: hung.remote.clone(),
        flight: hung.flight,
        stalled: None,
    });
    assert_eq!(h.state(), RemoteState::Syncing);
    h.succeed(hung);
    let next = h.take_one();
    assert_eq!(paths(&next.batch).1, ["g"], "what queued meanwhile follows");
    h.succeed(next);
    assert_eq!(h.state(), RemoteState::InSync);
}

#[test]
fn a_stall_report_of_an_abandoned_batch_is_ignored() {
    let mut h = Harness::new(&["hung"]);
    h.initial_sync();
    h.closed("f");
    let start = h.take_one();
    h.step(Input::Command(MonitorCommand::Detach {
        remote: "hung".into(),
    }));
    h.step(Input::Command(MonitorCommand::Attach {
        remote: remote("hung"),
        progress: false,
    }));
    h.step(Input::Stall {
        remote: start.remote,
        flight: start.flight,
        stalled: Some(HUNG.into()),
    });
    assert_ne!(h.state(), RemoteState::Stalled);
}

#[test]
fn a_hung_root_stalls_every_remote_and_no_longer_holds_status_or_flushes() {
    let mut h = Harness::new(&["a", "b"]);
    h.initial_sync();
    h.hold_probes = true;
    h.closed("f");
    assert!(h.started.is_empty(), "no batch before the root answers");
    h.flush(1, Duration::from_secs(60));
    h.advance(STATUS_INTERVAL);
    assert!(h.flushed().is_empty(), "the flush waits for the probe");
    let before = h.events.len();
    let message = "probing the workspace root /ws has not returned within 10 s";
    h.step(Input::RootStall(Some(message.into())));
    h.advance(STATUS_INTERVAL);
    assert!(
        h.events.len() > before,
        "status goes out despite the probe out"
    );
    let sent = last_status(&h);
    for r in &sent.remotes {
        assert_eq!(r.state, RemoteState::Stalled, "{sent:?}");
        assert_eq!(r.last_error.as_deref(), Some(message));
    }
    assert_eq!(h.flushed(), [(1, vec!["a".to_owned(), "b".to_owned()])]);
    // The probe returns after all: the batches go out.
    h.step(Input::RootStall(None));
    h.hold_probes = false;
    h.probes += 1;
    h.step(Input::RootProbed {
        purpose: ProbePurpose::Dispatch,
        probe: h.root,
    });
    assert_eq!(h.started.len(), 2);
    assert!(h
        .status()
        .remotes
        .iter()
        .all(|r| r.state == RemoteState::Syncing));
}

#[test]
fn a_hung_root_shows_stalled_rather_than_unverified_and_the_missing_proof_stays_known() {
    let mut h = Harness::with_proofs(&["a"], PROOF);
    h.initial_sync();
    for _ in 0..PROOF_MISSES {
        h.advance(PROOF);
    }
    h.advance(Duration::from_millis(1));
    assert_eq!(h.state(), RemoteState::Unverified);
    // The proof file cannot even be written: the hung call is what the user must see.
    let message = "creating the proof file /ws/.wsync-proof-1-1 has not returned within 10 s";
    h.step(Input::RootStall(Some(message.into())));
    let remote = h.status().remotes[0].clone();
    assert_eq!(remote.state, RemoteState::Stalled);
    assert_eq!(remote.last_error.as_deref(), Some(message));
    h.step(Input::RootStall(None));
    assert_eq!(h.state(), RemoteState::Unverified, "still no proof");
}

#[test]
fn a_halt_ends_the_proof_round_and_removes_its_file_and_a_lift_creates_none() {
    let mut h = Harness::with_proofs(&["a"], PROOF);
    h.initial_sync();
    h.advance(PROOF);
    let name = h.engine.pending_proof().expect("a probe is out");
    // The root goes away (an unmounted disk): nothing of wsync's may stay in the mount point.
    h.root.id = None;
    h.step(Input::Watch(vec![WatchMsg::RootGone]));
    assert!(h.engine.halt.is_some());
    assert!(
        h.effects
            .iter()
            .any(|e| matches!(e, Effect::RemoveCookie { name: n } if *n == name)),
        "the halt removes the proof file"
    );
    assert_eq!(h.engine.pending_proof(), None);
    // The root is back and the halt lifted: the full sync proves the remote; no probe file is
    // written into a root that may still be a bare mount point.
    h.root.id = Some(ROOT);
    let before = created_proofs(&h);
    h.step(Input::Command(MonitorCommand::Resume));
    assert_eq!(created_proofs(&h), before, "no probe at the lift");
}

#[test]
fn a_dir_renamed_while_a_batch_sends_a_file_inside_it_goes_as_a_move_not_a_deletion() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("big/sub1/f1");
    h.advance(SETTLE * 2);
    let first = h.take_one();
    // The rename arrives while that batch is still transferring inside the old name.
    h.changes(vec![
        change("big", ChangeKind::MovedFrom { cookie: 9 }, true),
        change("big2", ChangeKind::MovedTo { cookie: 9 }, true),
    ]);
    h.succeed(first);
    h.advance(SETTLE * 2);
    let second = h.take_one();
    let moved = |s: &BatchStart| -> Vec<(String, String)> {
        s.options
            .moved
            .iter()
            .map(|r| (r.from.display().to_string(), r.to.display().to_string()))
            .collect()
    };
    assert_eq!(
        moved(&second),
        [("big".to_string(), "big2".to_string())],
        "both ends rsynced for a racing rename are a move: {:?}",
        second.batch
    );
    assert!(
        !second.options.report_transfer_done,
        "a capped move waits for rsync's exit status"
    );
}

#[test]
fn a_failed_move_batch_is_retried_as_a_move() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    h.closed("big/sub1/f1");
    h.advance(SETTLE * 2);
    let first = h.take_one();
    h.changes(vec![
        change("big", ChangeKind::MovedFrom { cookie: 9 }, true),
        change("big2", ChangeKind::MovedTo { cookie: 9 }, true),
    ]);
    h.succeed(first);
    h.advance(SETTLE * 2);
    let second = h.take_one();
    assert_eq!(second.options.moved.len(), 1);
    h.fail(second, ExitClass::Partial);
    h.advance(Duration::from_secs(2));
    let retry = h.take_one();
    assert_eq!(
        retry.options.moved.len(),
        1,
        "the retry still moves a subtree through rsync: {:?}",
        retry.batch
    );
}

#[test]
fn a_directory_moved_out_counts_whole_and_the_old_side_of_a_move_costs_nothing() {
    let mut h = Harness::new(&["a"]);
    h.initial_sync();
    // `mv big ..`: only the directory is reported; what it held is known from a dry run.
    h.changes(vec![change(
        "big",
        ChangeKind::MovedFrom { cookie: 3 },
        true,
    )]);
    h.advance(Duration::from_secs(1));
    let start = h.take_one();
    assert!(start.options.deletes_unknown_contents);
    assert_eq!(start.options.max_delete, Some(100), "the cap bounds it");
    assert!(!start.options.report_transfer_done);
    let stats = RsyncStats {
        files_deleted: 61,
        ..RsyncStats::default()
    };
    h.done(start, Outcome::success(stats, Duration::ZERO));
    h.closed("x");
    h.advance(Duration::from_secs(1));
    let next = h.take_one();
    assert_eq!(next.options.max_delete, Some(39), "all 61 counted");
    // A rename carried out by rsync: the old subtree's deletions were a move.
    h.closed("d/sub/f1");
    h.advance(Duration::from_secs(1));
    h.succeed(next);
    let sending = h.take_one();
    h.changes(vec![
        change("d", ChangeKind::MovedFrom { cookie: 9 }, true),
        change("d2", ChangeKind::MovedTo { cookie: 9 }, true),
    ]);
    h.succeed(sending);
    h.advance(Duration::from_secs(1));
    let moving = h.take_one();
    assert_eq!(moving.options.moved.len(), 1);
    assert_eq!(moving.options.max_delete, Some(39), "capped like any batch");
    let mut outcome = Outcome::success(
        RsyncStats {
            files_deleted: 31,
            ..RsyncStats::default()
        },
        Duration::ZERO,
    );
    outcome.moved = 30;
    h.done(moving, outcome);
    h.closed("y");
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.take_one().options.max_delete,
        Some(38),
        "only the deletion that was not a move counts"
    );
}
