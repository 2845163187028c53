//! `wsync daemon start|stop|status`: run wsyncd in the background, stop it and wait, describe it.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wsync_core::config::CONFIG_PATH_ENV;
use wsync_core::protocol::{Request, Response};

use super::Ctx;
use crate::cli::{DaemonStartArgs, DaemonStopArgs};
use crate::client::{not_running, unexpected, Client};
use crate::error::{self, CliError};
use crate::exit_codes;
use crate::output::println;
use crate::render;

/// How often start/stop look at the socket.
const POLL: Duration = Duration::from_millis(50);
/// The daemon executable's file name.
const DAEMON_EXE: &str = "wsyncd";
/// File in LogDirectory that collects the daemon's stderr (panics, early start-up failures).
pub const STDERR_LOG: &str = "wsyncd.stderr.log";

/// `wsyncd` next to the running `wsync`, else the first one on `PATH`.
fn find_daemon() -> Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(DAEMON_EXE)));
    if let Some(path) = beside.as_ref().filter(|p| p.is_file()) {
        return Ok(path.clone());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(DAEMON_EXE))
            .find(|p| p.is_file())
    });
    on_path.ok_or_else(|| {
        CliError::new(
            exit_codes::FAILURE,
            format!(
                "cannot find {DAEMON_EXE} next to this wsync{} or on PATH",
                beside
                    .and_then(|p| p.parent().map(|d| format!(" (in {})", d.display())))
                    .unwrap_or_default()
            ),
        )
        .with_hint("install the three wsync binaries together, e.g. with scripts/setup.sh")
        .into()
    })
}

/// What the daemon wrote to stderr since `offset`, trimmed to its last lines.
fn stderr_since(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.take(64 * 1024).read_to_string(&mut text);
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

pub fn start(ctx: &Ctx, args: DaemonStartArgs) -> Result<i32> {
    let timeout_secs = args.timeout;
    let socket = &ctx.config.daemon_command_socket_path;
    if let Some(client) = Client::probe(socket)? {
        println(&format!(
            "wsyncd is already running (pid {}, socket {})",
            client.daemon.pid,
            socket.display()
        ))?;
        return Ok(exit_codes::OK);
    }
    let exe = find_daemon()?;
    let log_dir = &ctx.config.log_directory;
    std::fs::create_dir_all(log_dir)
        .with_context(|| format!("creating the log directory {}", log_dir.display()))?;
    let stderr_path = log_dir.join(STDERR_LOG);
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&stderr_path)
        .with_context(|| format!("opening {}", stderr_path.display()))?;
    let offset = stderr.metadata().map(|m| m.len()).unwrap_or(0);
    tracing::debug!(exe = %exe.display(), "spawning the daemon");
    // Own process group: Ctrl-C in this terminal must not reach the daemon. The config path
    // (WSYNC_CONFIG_PATH) is inherited with the rest of the environment.
    let mut command = Command::new(&exe);
    if std::env::var_os(CONFIG_PATH_ENV).is_some_and(|v| !v.is_empty()) {
        // The daemon runs in `/`: hand it the config path in absolute form.
        let file = std::path::absolute(&ctx.config.file).unwrap_or(ctx.config.file.clone());
        command.env(CONFIG_PATH_ENV, file);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .current_dir("/")
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut last_problem: Option<anyhow::Error> = None;
    loop {
        match Client::probe(socket) {
            Ok(Some(client)) => {
                println(&format!(
                    "started wsyncd (pid {}, socket {})",
                    client.daemon.pid,
                    socket.display()
                ))?;
                return Ok(exit_codes::OK);
            }
            Ok(None) => {}
            Err(e) if error::exit_code(&e) == exit_codes::PROTOCOL_MISMATCH => return Err(e),
            Err(e) => last_problem = Some(e),
        }
        if let Some(status) = child.try_wait().context("checking on wsyncd")? {
            let output = stderr_since(&stderr_path, offset);
            return Err(CliError::new(
                exit_codes::FAILURE,
                format!(
                    "wsyncd exited during start-up ({status}){}",
                    if output.is_empty() {
                        String::new()
                    } else {
                        format!(":\n{output}")
                    }
                ),
            )
            .with_hint(format!(
                "see its log in {} and {}",
                log_dir.display(),
                stderr_path.display()
            ))
            .into());
        }
        if Instant::now() >= deadline {
            let mut err = CliError::new(
                exit_codes::TIMEOUT,
                format!(
                    "wsyncd (pid {}) did not answer on {} within {timeout_secs} s",
                    child.id(),
                    socket.display()
                ),
            )
            .with_hint(format!("see its log in {}", log_dir.display()));
            if let Some(problem) = last_problem {
                err.message
                    .push_str(&format!("; last attempt: {problem:#}"));
            }
            return Err(err.into());
        }
        std::thread::sleep(POLL);
    }
}

pub fn stop(ctx: &Ctx, args: DaemonStopArgs) -> Result<i32> {
    let timeout_secs = args.timeout;
    let socket = &ctx.config.daemon_command_socket_path;
    let Some(mut client) = Client::probe(socket)? else {
        println(&format!(
            "wsyncd is not running (socket {})",
            socket.display()
        ))?;
        return Ok(exit_codes::OK);
    };
    let pid = client.daemon.pid;
    match client.call(&Request::Shutdown {}) {
        Ok(Response::Done { .. }) => {}
        Ok(other) => return Err(unexpected(&other)),
        // It may close the connection before answering; the wait below tells.
        Err(e) => tracing::debug!("shutdown request: {e:#}"),
    }
    drop(client);
    let pidfile = ctx.config.pidfile_path();
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let answering = matches!(Client::probe(socket), Ok(Some(_)));
        if !answering && (!pidfile.exists() || !wsync_core::platform::pid_alive(pid)) {
            println(&format!("stopped wsyncd (pid {pid})"))?;
            return Ok(exit_codes::OK);
        }
        if Instant::now() >= deadline {
            return Err(CliError::new(
                exit_codes::TIMEOUT,
                format!("wsyncd (pid {pid}) is still running after {timeout_secs} s"),
            )
            .with_hint(format!(
                "see its log in {}; `kill {pid}` asks it to stop",
                ctx.config.log_directory.display()
            ))
            .into());
        }
        std::thread::sleep(POLL);
    }
}

pub fn status(ctx: &Ctx) -> Result<i32> {
    let socket = &ctx.config.daemon_command_socket_path;
    let Some(mut client) = Client::probe(socket)? else {
        return Err(not_running(socket).into());
    };
    match client.call(&Request::DaemonInfo {})? {
        Response::DaemonInfo {
            protocol,
            version,
            pid,
            uptime_secs,
            socket,
            registry,
            ..
        } => {
            println(&format!(
                "wsyncd is running\n  pid:      {pid}\n  version:  {version} (protocol {protocol})\n  uptime:   {}\n  socket:   {}\n  registry: {}\n  config:   {}\n  logs:     {}",
                render::duration(uptime_secs),
                socket.display(),
                registry.display(),
                ctx.config.file.display(),
                ctx.config.log_directory.display(),
            ))?;
            Ok(exit_codes::OK)
        }
        other => Err(unexpected(&other)),
    }
}
