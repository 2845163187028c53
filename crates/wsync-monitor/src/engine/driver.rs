//! The event loop around the engine: `select!` over commands, signals, batch messages, the
//! watcher and the engine's next wake-up → an [`Input`] → [`Engine::step`] → the effects are
//! carried out here (batches spawned and killed, status written, cookies and probes done), and
//! any answer is fed back at once, before the next input. The loop also sends the daemon a
//! heartbeat every [`HEARTBEAT_INTERVAL`] itself, so a loop stuck in a call goes silent.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use wsync_core::monitor_proto::{MonitorCommand, MonitorEvent, HEARTBEAT_INTERVAL};

use super::{BatchStart, Effect, Engine, Exit, Input, RemoteKey, RootProbe};
use crate::watch::{WatchError, WatchMsg, Watcher};

/// What the loop listens to and writes to.
pub struct Channels {
    pub watch: UnboundedReceiver<WatchMsg>,
    pub commands: UnboundedReceiver<MonitorCommand>,
    pub events: UnboundedSender<MonitorEvent>,
}

struct Driver {
    root: PathBuf,
    watcher: Watcher,
    events: UnboundedSender<MonitorEvent>,
    /// Batch runners by remote and flight: aborting one kills its rsync.
    batches: HashMap<(RemoteKey, u64), JoinHandle<()>>,
    /// Batch runners report here.
    batch_tx: UnboundedSender<Input>,
    /// ssh masters being asked to exit; awaited before the monitor exits.
    closing: Vec<JoinHandle<()>>,
    /// The latest pending-file write; each waits for the one before (so the newest list
    /// wins), and the last is awaited before the monitor exits.
    saving: Option<JoinHandle<()>>,
    exit: Option<Exit>,
}

/// Runs the engine until it exits; `initial` are the effects of its start.
pub async fn run(
    engine: Engine,
    initial: Vec<Effect>,
    watcher: Watcher,
    channels: Channels,
) -> Exit {
    let Channels {
        mut watch,
        mut commands,
        events,
    } = channels;
    let (batch_tx, mut batch_rx) = mpsc::unbounded_channel();
    let mut driver = Driver {
        root: PathBuf::new(),
        watcher,
        events,
        batches: HashMap::new(),
        batch_tx,
        closing: Vec::new(),
        saving: None,
        exit: None,
    };
    let mut engine = engine;
    driver.root = engine.root.clone();
    let parent = nix::unistd::getppid();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let mut commands_open = true;
    let mut watch_open = true;
    let mut watches = driver.watcher.count();
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    driver.carry_out(&mut engine, initial);
    driver.feed(&mut engine, Input::Tick);
    let exit = loop {
        if nix::unistd::getppid() != parent {
            tracing::warn!("parent process is gone; exiting");
            break Exit::Orphaned;
        }
        if let Some(exit) = driver.exit {
            break exit;
        }
        if driver.events.is_closed() {
            tracing::warn!("stdout closed; exiting");
            break Exit::Orphaned;
        }
        let count = driver.watcher.count();
        if count != watches {
            watches = count;
            driver.feed(&mut engine, Input::WatchCount(count));
        }
        let wake = engine.next_wake(Instant::now());
        let input = tokio::select! {
            // Commands first: a pause sent before a change should apply before it.
            biased;
            cmd = commands.recv(), if commands_open => match cmd {
                Some(cmd) => Input::Command(cmd),
                None => {
                    commands_open = false;
                    Input::CommandsClosed
                }
            },
            Some(()) = recv_signal(&mut terminate) => break Exit::Clean,
            Some(()) = recv_signal(&mut interrupt) => break Exit::Clean,
            _ = heartbeat.tick() => {
                let _ = driver.events.send(MonitorEvent::Heartbeat);
                continue;
            }
            Some(input) = batch_rx.recv() => {
                if let Input::BatchDone { remote, flight, .. } = &input {
                    driver.batches.remove(&(remote.clone(), *flight));
                }
                input
            }
            msg = watch.recv(), if watch_open => match msg {
                Some(msg) => {
                    let mut messages = vec![msg];
                    while let Ok(msg) = watch.try_recv() {
                        messages.push(msg);
                    }
                    Input::Watch(messages)
                }
                None => {
                    watch_open = false;
                    Input::Watch(vec![WatchMsg::Error(WatchError::Stopped)])
                }
            },
            _ = tokio::time::sleep_until(wake.into()) => Input::Tick,
        };
        driver.feed(&mut engine, input);
    };
    driver.feed(&mut engine, Input::Stop);
    if let Some(handle) = driver.saving.take() {
        let _ = handle.await;
    }
    for handle in driver.closing.drain(..) {
        let _ = handle.await;
    }
    exit
}

impl Driver {
    /// Steps the engine with `input`, then carries out the effects.
    fn feed(&mut self, engine: &mut Engine, input: Input) {
        let effects = engine.step(input, Instant::now());
        self.carry_out(engine, effects);
    }

    /// Carries out `effects` in order, then steps the engine with each answer they produced
    /// (first in, first out), and so on until nothing more is asked.
    fn carry_out(&mut self, engine: &mut Engine, effects: Vec<Effect>) {
        let mut answers = VecDeque::new();
        let mut effects = effects;
        loop {
            for effect in effects {
                if let Some(answer) = self.perform(effect) {
                    answers.push_back(answer);
                }
            }
            let Some(answer) = answers.pop_front() else {
                return;
            };
            effects = engine.step(answer, Instant::now());
        }
    }

    /// Carries out one effect; returns the engine's answer when it wants one.
    fn perform(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::ProbeRoot { purpose, list } => Some(Input::RootProbed {
                purpose,
                probe: RootProbe::read(&self.root, list),
            }),
            Effect::StartBatch(start) => {
                let key = (start.remote.clone(), start.flight);
                let handle =
                    tokio::spawn(run_batch(start, self.root.clone(), self.batch_tx.clone()));
                self.batches.insert(key, handle);
                None
            }
            Effect::AbandonBatch { remote, flight } => {
                if let Some(handle) = self.batches.remove(&(remote, flight)) {
                    handle.abort();
                }
                None
            }
            Effect::Emit(event) => {
                let _ = self.events.send(event);
                None
            }
            Effect::CreateCookie { name } => {
                // create_new: never follow or reuse something already at that name.
                let created = std::fs::File::options()
                    .write(true)
                    .create_new(true)
                    .open(self.root.join(&name));
                Some(Input::CookieCreated {
                    name,
                    error: created.err().map(|e| e.to_string()),
                })
            }
            Effect::RemoveCookie { name } => {
                let _ = std::fs::remove_file(self.root.join(name));
                None
            }
            Effect::Rescan => self.watcher.rescan().err().map(watch_failed),
            Effect::Rewatch => self.watcher.rewatch().err().map(watch_failed),
            Effect::CloseConnection(dest) => {
                self.closing.retain(|handle| !handle.is_finished());
                self.closing
                    .push(tokio::spawn(async move { dest.close_connection().await }));
                None
            }
            Effect::PruneTrash(dest) => {
                // Off the loop; nothing waits for it (an hour later the next one runs).
                tokio::spawn(async move { dest.prune_trash().await });
                None
            }
            Effect::SavePending { file, paths } => {
                let before = self.saving.take();
                self.saving = Some(tokio::spawn(async move {
                    if let Some(before) = before {
                        let _ = before.await;
                    }
                    let shown = file.clone();
                    let written =
                        tokio::task::spawn_blocking(move || crate::pending::save(&file, &paths))
                            .await;
                    match written {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(
                            "cannot write pending changes to {}: {e}; a restart will compare them by size and mtime",
                            shown.display()
                        ),
                        Err(e) => tracing::warn!("writing pending changes failed: {e}"),
                    }
                }));
                None
            }
            Effect::RemoveRulesFile => {
                self.watcher.remove_rules_file();
                None
            }
            Effect::Exit(exit) => {
                self.exit.get_or_insert(exit);
                None
            }
        }
    }
}

fn watch_failed(error: WatchError) -> Input {
    Input::Watch(vec![WatchMsg::Error(error)])
}

/// Runs one batch and reports its transfer, progress and end to the loop.
async fn run_batch(start: BatchStart, root: PathBuf, tx: UnboundedSender<Input>) {
    let BatchStart {
        remote,
        flight,
        dest,
        batch,
        options,
    } = start;
    let (early_tx, early_key) = (tx.clone(), remote.clone());
    let transferred = move || {
        let _ = early_tx.send(Input::Transferred {
            remote: early_key,
            flight,
        });
    };
    let (progress_tx, progress_key) = (tx.clone(), remote.clone());
    let progress = move |progress| {
        let _ = progress_tx.send(Input::Progress {
            remote: progress_key.clone(),
            flight,
            progress,
        });
    };
    let outcome = dest
        .sync(&root, &batch, &options, transferred, progress)
        .await;
    let _ = tx.send(Input::BatchDone {
        remote,
        flight,
        batch,
        outcome,
    });
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
