//! [`run`]: the daemon's startup sequence, its async main and its clean shutdown.

use std::sync::Arc;

use anyhow::Context;
use wsync_core::config::Config;
use wsync_core::registry::Registry;

use crate::handlers::chain;
use crate::path_check::{PathAnswer, PathJob};

use crate::pidfile::{PidfileError, PidfileGuard};
use crate::shutdown::Shutdown;
use crate::socket::{self, SocketGuard};
use crate::state::{self, SharedState};
use crate::{logging, server, watchdog, Args, Fatal};

/// Runs the daemon in the foreground until SIGINT, SIGTERM or a shutdown request.
pub fn run(args: &Args) -> Result<(), Fatal> {
    if args.path_check {
        return crate::path_check::serve_one()
            .context("answering a path check")
            .map_err(Fatal::from);
    }
    if let Some(hook) = &args.hook_runner {
        crate::hooks::subreaper_main(hook);
    }
    let config = Config::load().context("loading the wsync config")?;
    logging::init(&config.log_directory);
    let result = start(config);
    if let Err(e) = &result {
        tracing::error!("wsyncd failed: {}", crate::handlers::chain(e));
    }
    result
}

fn start(config: Config) -> Result<(), Fatal> {
    tracing::info!(
        version = wsync_core::VERSION,
        pid = std::process::id(),
        config = %config.file.display(),
        "wsyncd starting"
    );
    let socket_path = config.daemon_command_socket_path.clone();
    let runtime_dir =
        socket::prepare_dir(&socket_path).context("preparing the socket directory")?;
    let pidfile_path = config.pidfile_path();
    let pidfile = match PidfileGuard::acquire(&pidfile_path, &config.file) {
        Ok(guard) => guard,
        Err(PidfileError::AlreadyRunning(e)) => return Err(e.into()),
        Err(e) => return Err(anyhow::Error::new(e).into()),
    };
    let registry_path = &config.workspace_config_file_path;
    let mut registry = Registry::load(registry_path)
        .with_context(|| format!("loading the registry {}", registry_path.display()))?;
    // Entries from before target markers (no id yet): their local targets are marked by the
    // start-up check, unless it refuses them.
    let before_markers: Vec<String> = registry
        .workspaces
        .iter()
        .filter(|w| w.id.is_empty())
        .map(|w| w.name.clone())
        .collect();
    if registry.backfill_ids() {
        // Written once, so the ids (which targets' markers name) never change again.
        registry
            .save(registry_path)
            .with_context(|| format!("saving workspace ids to {}", registry_path.display()))?;
        tracing::info!("workspace ids added to the registry");
    }
    tracing::info!(
        workspaces = registry.workspaces.len(),
        registry = %registry_path.display(),
        "registry loaded"
    );
    socket::remove_stale(&socket_path).context("checking for a stale socket")?;
    let std_listener = socket::bind(&socket_path).context("binding the command socket")?;
    let socket_guard = SocketGuard::new(socket_path.clone());
    tracing::info!(socket = %socket_path.display(), "listening");

    let interval = config.tuning.watchdog_interval;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let shared = state::new_shared(config, registry, runtime_dir, runtime.handle().clone())
        .context("starting the monitor-events thread")?;
    let cleanup = watchdog::FatalCleanup {
        socket: socket_path,
        pidfile: pidfile_path,
    };
    let result = runtime.block_on(async {
        let listener = tokio::net::UnixListener::from_std(std_listener)
            .context("registering the command socket")?;
        let shutdown = Shutdown::new();
        shutdown
            .listen_for_signals()
            .context("installing signal handlers")?;
        watchdog::arm_test_poison_trigger(&shared).context("installing the test trigger")?;
        watchdog::spawn(shared.clone(), interval, cleanup).context("starting the watchdog")?;
        tokio::spawn(check_and_start_all(shared.clone(), before_markers));
        server::serve(listener, shared.clone(), shutdown).await;
        stop_monitors(&shared).await;
        subscribers_told(&shared).await;
        anyhow::Ok(())
    });
    // Connections still open are dropped; a handler stuck in a blocking call is not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(socket_guard);
    drop(pidfile);
    result?;
    tracing::info!("wsyncd stopped");
    Ok(())
}

/// How many registry entries are checked at once at start-up (each in a check process).
const STARTUP_CHECKS_AT_ONCE: usize = 8;

/// Checks every registry entry in a check process with the path deadline
/// ([`PathJob::StartupCheck`]: the rules `attach` applies, for entries written by hand, and
/// the marking of targets from before markers), several at once, and starts each monitor as
/// soon as its entry passes. The socket answers meanwhile: a root or target on a hung mount
/// fails only its own workspace, with the reason and the fix, and the others start.
async fn check_and_start_all(shared: SharedState, before_markers: Vec<String>) {
    let (workspaces, checks) = match shared.lock() {
        Ok(state) => (state.registry.workspaces.clone(), state.path_checks.clone()),
        Err(_) => return,
    };
    let turns = Arc::new(tokio::sync::Semaphore::new(STARTUP_CHECKS_AT_ONCE));
    let mut tasks = tokio::task::JoinSet::new();
    for workspace in workspaces {
        let (shared, checks, turns) = (shared.clone(), checks.clone(), turns.clone());
        let adopt = before_markers.contains(&workspace.name);
        tasks.spawn(async move {
            let Ok(_turn) = turns.acquire_owned().await else {
                return;
            };
            let (name, path) = (workspace.name.clone(), workspace.path.clone());
            let job = PathJob::StartupCheck { workspace, adopt };
            let answer = tokio::task::spawn_blocking(move || checks.run(&path, &job)).await;
            let refused = match answer {
                Ok(Ok(PathAnswer::EntryRefusal { why })) => why,
                Ok(Ok(other)) => Some(format!("unexpected start-up check answer {other:?}")),
                Ok(Err(e)) => Some(format!(
                    "{}; `wsync restart {name}` starts it once its paths answer",
                    chain(&e)
                )),
                Err(e) => Some(format!("the start-up check did not finish: {e}")),
            };
            let Ok(mut state) = shared.lock() else {
                return;
            };
            // What the registry holds now: the entry may have changed or gone meanwhile.
            let Some(current) = state
                .registry
                .workspaces
                .iter()
                .find(|w| w.name == name)
                .cloned()
            else {
                return;
            };
            match refused {
                Some(why) => state.supervisor.refuse(&name, why),
                None => state.start_monitor_if_stopped(&current, Vec::new()),
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Waits (at most [`SUBSCRIBERS_GRACE`]) until every subscribed connection has written its
/// `daemon_stopping` event, published when the monitors began stopping.
async fn subscribers_told(shared: &SharedState) {
    let deadline = tokio::time::Instant::now() + SUBSCRIBERS_GRACE;
    while tokio::time::Instant::now() < deadline {
        let told = shared
            .lock()
            .map_or(true, |s| s.supervisor.subscribers.all_closed());
        if told {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// How long a stopping daemon waits for subscribers to be told.
const SUBSCRIBERS_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Stops every monitor in parallel, each within the stop grace.
async fn stop_monitors(shared: &SharedState) {
    let (monitors, grace) = match shared.lock() {
        Ok(mut state) => {
            state.shutting_down = true;
            let stopping = wsync_core::protocol::EventKind::DaemonStopping {};
            state.supervisor.subscribers.publish(None, stopping);
            (state.supervisor.take_all(), state.supervisor.stop_grace)
        }
        // The watchdog handles a poisoned lock (it exits the process).
        Err(_) => return,
    };
    if monitors.is_empty() {
        return;
    }
    tracing::info!("stopping {} monitor(s), grace {grace:?}", monitors.len());
    let stops: Vec<_> = monitors
        .into_iter()
        .map(|m| {
            tokio::task::spawn_blocking(move || {
                let pid = m.pid;
                let exit = m.stop(grace);
                tracing::info!(pid, "monitor stopped ({exit})");
            })
        })
        .collect();
    for stop in stops {
        let _ = stop.await;
    }
}
