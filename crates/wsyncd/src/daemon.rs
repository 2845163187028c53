//! [`run`]: the daemon's startup sequence, its async main and its clean shutdown.

use anyhow::Context;
use wsync_core::config::Config;
use wsync_core::registry::Registry;

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
    // Before anything touches a path: an entry written by hand gets the rules attach applies,
    // and one that breaks them is neither adopted below nor started.
    let refused = crate::target_check::refused_entries(&registry);
    let before_markers: Vec<String> = registry
        .workspaces
        .iter()
        .filter(|w| w.id.is_empty() && !refused.iter().any(|(name, _)| *name == w.name))
        .map(|w| w.name.clone())
        .collect();
    if registry.backfill_ids() {
        // Written once, so the ids (which targets' markers name) never change again.
        registry
            .save(registry_path)
            .with_context(|| format!("saving workspace ids to {}", registry_path.display()))?;
        tracing::info!("workspace ids added to the registry");
    }
    for ws in registry
        .workspaces
        .iter()
        .filter(|w| before_markers.contains(&w.name))
    {
        crate::target_check::adopt_pre_marker_targets(ws);
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
        if let Ok(mut state) = shared.lock() {
            for (name, why) in refused {
                state.supervisor.refuse(&name, why);
            }
            state.start_all_monitors();
        }
        watchdog::spawn(shared.clone(), interval, cleanup).context("starting the watchdog")?;
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
