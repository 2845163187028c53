//! The event loop around the engine: `select!` over commands, signals, batch messages, the
//! watcher and the engine's next wake-up → an [`Input`] → [`Engine::step`] → the effects are
//! carried out here (batches spawned and killed, status written, cookies and probes started).
//! Nothing here touches the workspace or a target on the loop itself: probes and cookies run
//! through the root's [`Gate`] (one call at a time, a stall past the deadline reported as
//! [`Input::RootStall`]), rescans on a blocking thread of their own, and every answer comes
//! back through the same channel as the batches' messages.
//! The loop also sends the daemon a heartbeat every [`HEARTBEAT_INTERVAL`] itself, so a loop
//! stuck in a call goes silent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use wsync_core::monitor_proto::{MonitorCommand, MonitorEvent, HEARTBEAT_INTERVAL};

use super::{BatchStart, Effect, Engine, Exit, Input, RemoteKey, RootProbe};
use crate::backend::{Backend, WatchBackend};
use crate::blocking::{call_deadline, Gate};
use crate::watch::{WatchError, WatchMsg};

/// What the loop listens to and writes to.
pub struct Channels {
    pub watch: UnboundedReceiver<WatchMsg>,
    pub commands: UnboundedReceiver<MonitorCommand>,
    pub events: UnboundedSender<MonitorEvent>,
}

struct Driver {
    root: PathBuf,
    watcher: Backend,
    events: UnboundedSender<MonitorEvent>,
    /// Batch runners by remote and flight: aborting one kills its rsync.
    batches: HashMap<(RemoteKey, u64), JoinHandle<()>>,
    /// Batch runners and the calls made off the loop report here.
    batch_tx: UnboundedSender<Input>,
    /// The workspace root's blocking calls (probes, cookies), one at a time.
    root_gate: Gate,
    /// One rescan at a time: a rescan on a hung tree holds one thread, not one per request.
    rescanning: Arc<tokio::sync::Mutex<()>>,
    /// ssh masters being asked to exit and cookies being removed; awaited (each at most the
    /// call deadline) before the monitor exits.
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
    watcher: Backend,
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
        root_gate: Gate::default(),
        rescanning: Arc::default(),
        closing: Vec::new(),
        saving: None,
        exit: None,
    };
    let mut engine = engine;
    driver.root = engine.root.clone();
    let parent = nix::unistd::getppid().as_raw() as u32;
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let mut commands_open = true;
    let mut watch_open = true;
    let mut watches = driver.watcher.count();
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    driver.carry_out(initial);
    driver.feed(&mut engine, Input::Tick);
    let exit = loop {
        if !wsync_core::platform::parent_is(parent) {
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
        let _ = tokio::time::timeout(call_deadline(), handle).await;
    }
    exit
}

impl Driver {
    /// Steps the engine with `input`, then carries out the effects.
    fn feed(&mut self, engine: &mut Engine, input: Input) {
        let effects = engine.step(input, Instant::now());
        self.carry_out(effects);
    }

    /// Carries out `effects` in order; answers come back later as inputs.
    fn carry_out(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            self.perform(effect);
        }
    }

    /// Carries out one effect.
    fn perform(&mut self, effect: Effect) {
        match effect {
            Effect::ProbeRoot { purpose, list } => {
                let root = self.root.clone();
                let call = format!("probing the workspace root {}", root.display());
                self.on_root(call, move || {
                    Some(Input::RootProbed {
                        purpose,
                        probe: RootProbe::read(&root, list),
                    })
                });
            }
            Effect::StartBatch(start) => {
                let key = (start.remote.clone(), start.flight);
                let handle =
                    tokio::spawn(run_batch(start, self.root.clone(), self.batch_tx.clone()));
                self.batches.insert(key, handle);
            }
            Effect::AbandonBatch { remote, flight } => {
                if let Some(handle) = self.batches.remove(&(remote, flight)) {
                    handle.abort();
                }
            }
            Effect::Emit(event) => {
                let _ = self.events.send(event);
            }
            Effect::CreateCookie { name } => {
                let path = self.root.join(&name);
                let call = format!("creating the {} {}", cookie_kind(&name), path.display());
                self.on_root(call, move || {
                    // create_new: never follow or reuse something already at that name.
                    let created = std::fs::File::options()
                        .write(true)
                        .create_new(true)
                        .open(&path);
                    Some(Input::CookieCreated {
                        name,
                        error: created.err().map(|e| e.to_string()),
                    })
                });
            }
            Effect::RemoveCookie { name } => {
                let call = format!(
                    "removing the {} {}",
                    cookie_kind(&name),
                    self.root.join(&name).display()
                );
                let path = self.root.join(name);
                let handle = self.on_root(call, move || {
                    let _ = std::fs::remove_file(&path);
                    None
                });
                self.closing.retain(|handle| !handle.is_finished());
                self.closing.push(handle);
            }
            Effect::Rescan => self.rescan(|w| w.rescan()),
            Effect::Rewatch => self.rescan(|w| w.rewatch()),
            Effect::CloseConnection(dest) => {
                self.closing.retain(|handle| !handle.is_finished());
                self.closing
                    .push(tokio::spawn(async move { dest.close_connection().await }));
            }
            Effect::StopRemote { remote, dest } => {
                let tx = self.batch_tx.clone();
                self.closing.retain(|handle| !handle.is_finished());
                self.closing.push(tokio::spawn(async move {
                    let stopped = dest.stop(call_deadline()).await;
                    dest.close_connection().await;
                    let _ = tx.send(Input::RemoteStopped { remote, stopped });
                }));
            }
            Effect::PruneTrash(dest) => {
                // Off the loop; nothing waits for it (an hour later the next one runs). Its
                // marker read goes through the remote's gate: a hung target holds that, and
                // the remote's next batch, queued behind it, reports the stall.
                tokio::spawn(async move { dest.prune_trash(&|_| {}).await });
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
            }
            Effect::RemoveRulesFile => self.watcher.remove_rules_file(),
            Effect::Exit(exit) => {
                self.exit.get_or_insert(exit);
            }
        }
    }

    /// Runs `f`, a blocking call on the workspace root named by `call`, through the root's
    /// gate; what it returns is fed to the engine.
    fn on_root(
        &self,
        call: String,
        f: impl FnOnce() -> Option<Input> + Send + 'static,
    ) -> JoinHandle<()> {
        let (gate, tx) = (self.root_gate.clone(), self.batch_tx.clone());
        tokio::spawn(async move {
            let report = |stalled| {
                let _ = tx.send(Input::RootStall(stalled));
            };
            if let Some(answer) = gate.run(call, &report, f).await {
                let _ = tx.send(answer);
            }
        })
    }

    /// Re-walks the tree off the loop (after the rescan before it); a failure comes back as a
    /// watch error.
    fn rescan(&self, walk: fn(&dyn WatchBackend) -> Result<(), WatchError>) {
        let (watcher, lock, tx) = (
            self.watcher.clone(),
            self.rescanning.clone(),
            self.batch_tx.clone(),
        );
        tokio::spawn(async move {
            let _turn = lock.lock_owned().await;
            let walked = tokio::task::spawn_blocking(move || walk(&*watcher)).await;
            if let Ok(Err(error)) = walked {
                let _ = tx.send(Input::Watch(vec![WatchMsg::Error(error)]));
            }
            let _ = tx.send(Input::Rewalked);
        });
    }
}

/// What a cookie named `name` is, for a stall report: proof-of-sync files share the cookies'
/// effects.
fn cookie_kind(name: &str) -> &'static str {
    if name.starts_with(wsync_core::rsync::PROOF_PREFIX) {
        "proof file"
    } else {
        "flush cookie"
    }
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
    let stall = |stalled| {
        let _ = tx.send(Input::Stall {
            remote: remote.clone(),
            flight,
            stalled,
        });
    };
    let outcome = dest
        .sync(&root, &batch, &options, transferred, progress, &stall)
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
