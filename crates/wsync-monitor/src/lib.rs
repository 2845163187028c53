//! wsync-monitor: watches one workspace and mirrors every change to each of its remotes with
//! rsync. The daemon spawns one per workspace; it runs just as well on its own.
//!
//! # Command line
//!
//! `wsync-monitor [--log-dir DIR] [--runtime-dir DIR]`
//!
//! - `--log-dir DIR`: log to `DIR/monitor-<workspace>.log.<YYYY-MM-DD>` (daily rolling, no
//!   colours). Without it, logs go to stderr. `WSYNC_LOG` sets the filter (e.g. `debug`,
//!   `wsync_monitor=trace`). Nothing but the status channel is ever written to stdout.
//! - `--runtime-dir DIR`: where the ssh ControlPath sockets go (created 0700). Default
//!   `$XDG_RUNTIME_DIR/wsync`, else `/tmp/wsync-<uid>`; a directory whose path is too long for
//!   a unix socket, or that is not ours (owner, a symlink) or is writable by others, falls back
//!   to the latter, then to a fresh `mkdtemp` directory. Each workspace's remote has its own
//!   ssh master (`cm-<hash of workspace, remote and connection settings>`), so detaching one
//!   never cuts another's transfers.
//!
//! # The channel (daemon ↔ monitor)
//!
//! Control commands on stdin, status events on stdout: the contract (messages, ordering, EOF
//! and exit rules) is documented once, in [`wsync_core::monitor_proto`]. The engine's own shape
//! (inputs → `step()` → effects) is described in [`engine`].
//!
//! # Timing
//!
//! A batch goes out at once when the latest event was a close-write and no other file is
//! mid-write (an isolated save waits for nothing); after any other event (delete, rename,
//! mkdir, a file still being written) it waits `settle_ms` of quiet, capped by
//! `max_latency_ms` under continuous churn. While a remote's rsync runs, new changes collect
//! into its next batch, which starts as soon as rsync reports the transfer complete
//! (`--debug=EXIT2`), not after its 20–40 ms exit handshake. Files created inside a directory
//! made in the last second queue that directory (one recursive entry for a whole burst), and
//! mass deletions in a small directory list the directory. Batches of files only use
//! `--ignore-times`; batches with directories send their changed files first with it, and
//! rely on nanosecond mtimes (`--modify-window=-1`) inside the directories. Changed paths a
//! broader entry covers (below a queued directory, or all of them once a dirty set collapses
//! into a full sync) are remembered and sent by content first too; what waits while paused or
//! halted, or when the monitor stops, is persisted in `start.pending_dir` ([`pending`]) and
//! sent by content by the next monitor, whose initial sync compares by checksum when the tree
//! is small ([`engine::checksum`]).
//!
//! A flush is answered, and a remote counts as in sync, once the transfer is complete; the
//! file and byte counters in status follow when rsync exits a few tens of milliseconds later
//! (a failure reported only at exit puts the batch back and retries it).
//!
//! # Renames
//!
//! A MOVED_FROM paired by cookie with the MOVED_TO right after it is a rename inside the
//! workspace (a read that ends on a MOVED_FROM waits up to 50 ms for its MOVED_TO, which the
//! kernel may not have queued yet, so both halves always go out together): the watcher keeps the directory's watches (same inodes, paths remapped) and the
//! engine queues a rename instead of a delete plus a re-upload; pending changes below the old
//! name move along. Before a batch's rsync, its renames are replayed in order on each remote —
//! `rename(2)` for a local target, one `sh -s` script of guarded `mv` lines over the shared ssh
//! connection — each only if the remote matches (source present with the same type, target
//! absent or a regular file replaced by a file). The first that does not match, and all after
//! it, fall back to rsync of both ends; so do renames inside a still-filling new directory,
//! renames of paths already queued, and renames touching a batch whose transfer is running. A
//! lone half (a move into or out of the workspace) is a plain create or delete. A batch of
//! nothing but replayed renames runs no rsync at all. Files rsync reports as vanished (exit 24)
//! are queued again, since they may have been renamed rather than deleted.
//!
//! # Excludes
//!
//! Patterns in gitignore syntax from `.wsyncignore` at the root, the workspace's registry
//! `excludes` and (when `respect_gitignore`) every `.gitignore`, matched by
//! `wsync_core::excludes` (the `ignore` crate). An excluded directory is never watched or
//! descended into; events about excluded entries are dropped; and the excluded entries met are
//! written as anchored, wildcard-escaped rules (`- /path`, NUL-separated) to
//! `<runtime-dir>/excludes-<workspace>-<pid>`, passed to every rsync with `--filter=merge`, so
//! rsync never transfers them and, without `--delete-excluded`, never deletes their remote
//! copies. After them come the protect rules of every ignore file the walk read
//! (`Excludes::protect_rules`, rebuilt only when one is read again): remote-only paths the
//! patterns exclude are kept, re-included ones are not. Editing `.wsyncignore` or a `.gitignore` reloads the patterns at once: watches follow
//! and newly included paths are synced. VCS directories are synced unless excluded. Known
//! limit: an excluded file created inside a directory while that directory is being
//! transferred recursively may be copied once (the running rsync read the rules before it
//! existed); it is then left alone like any excluded remote path.
//!
//! # Safety rails
//!
//! The workspace halts (state `halted`, the reason in status, nothing synced or deleted) when
//! the root is missing or replaced (device/inode changed), or is empty while a remote is not.
//! `resume` (or `resync`) lifts the halt once the root is a directory again; lifting an
//! emptied-root or `--max-delete` halt is the user's confirmation, so the next full sync
//! propagates the deletions without the cap. Every batch passes the deletion budget (see
//! `engine::budget`): a batch whose known deletions pass what is left halts before it starts,
//! and every rsync runs with `--max-delete` set to what is left; rsync deletes up to it and the
//! workspace halts with the number skipped. A remote's target directory is created or
//! marked by the daemon at attach (`.wsync-target`, `wsync_core::target`), never here: before
//! every batch its marker must name this workspace, or the batch fails with an error (`error`
//! state) and writes nothing (for SSH, a guard in `--rsync-path` and in the rename script).
//!
//! A flush writes a cookie file `.wsync-cookie-<pid>-<id>` in the workspace root and waits for
//! its inotify event, which proves every earlier event has been read; the cookie is removed at
//! once and is never sent to (or deleted from) a remote.
//!
//! # Exit status
//!
//! See [`exit_codes::TABLE`] (also printed by `--help`).
//!
//! # Test switches
//!
//! `WSYNC_TEST_MONITOR_CRASH_FILE=<path>`: if that file exists at startup, the monitor exits
//! with status 3 before doing anything (the supervisor tests create it to simulate a crashing
//! monitor).
//!
//! `WSYNC_TEST_INITIAL_CHECKSUM_MAX_FILES=<N>`: initial full syncs compare by checksum only
//! for trees of at most N files (at most the built-in 50,000; `0`: never), so a test can tell
//! what the pending files repair from what a checksum initial sync would.
//!
//! `WSYNC_TEST_MAX_WATCHES=<N>`: the watcher refuses to add more than N inotify watches and
//! behaves exactly as when the kernel's `fs.inotify.max_user_watches` is reached (ENOSPC): the
//! `watch_error` in status names the sysctl, and the workspace falls back to a full sync every
//! `DEGRADED_FULL_SYNC_INTERVAL` (and on every flush). For the fault tests, which must not
//! change machine-wide settings.
//!
//! `WSYNC_TEST_INITIAL_WALK_DELAY_MS=<N>`: the inotify backend hands its initial walk off to
//! a thread beside the initial sync right after the root (as it does for a huge tree) and waits
//! N ms before each directory, so a test can write into a directory not yet watched.
//! `WSYNC_TEST_NO_CATCH_UP=1`: that walk does not report what changed before each late watch
//! (to see the test of the catch-up fail).
//!
//! `WSYNC_TEST_CALL_DEADLINE_MS=<N>`: the deadline of every blocking filesystem call (default
//! 10 s, see [`blocking`]) after which the remote is reported `stalled`; the hung-mount tests
//! shorten it.
//!
//! # Standalone use
//!
//! ```text
//! printf '%s\n' \
//!   '{"cmd":"start","workspace":{"name":"demo","path":"/home/me/demo","remotes":[{"name":"copy","target":{"kind":"local","path":"/srv/demo"}}]},"tunables":{"settle_ms":5,"max_latency_ms":100}}' \
//!   '{"cmd":"flush","id":1,"timeout_ms":10000}' \
//!   | wsync-monitor
//! ```
//!
//! exits after the flush answer, because stdin ends; keep stdin open (e.g. `cat fifo |`) to keep
//! it mirroring. An SSH remote's target is
//! `{"kind":"ssh","user":"me","host":"box","port":22,"path":"/srv/demo","identity_file":"/home/me/.ssh/id_ed25519","ssh_options":[{"key":"StrictHostKeyChecking","value":"no"}]}`.

pub mod backend;
pub mod batch;
pub mod blocking;
pub mod channel;
pub mod engine;
pub mod exit_codes;
pub mod logging;
pub mod pending;
pub mod poll;
pub mod queue;
pub mod watch;
#[cfg(target_os = "linux")]
mod watch_defer;
mod watch_excludes;
#[cfg(target_os = "linux")]
mod watch_inotify;
pub mod watch_notify;
#[cfg(target_os = "linux")]
mod watch_paths;

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::io::BufReader;
use tokio::sync::mpsc;

/// Command-line arguments.
#[derive(Debug, clap::Parser)]
#[command(
    name = "wsync-monitor",
    version = wsync_core::VERSION,
    about = "Watches one workspace and mirrors it to its remotes (spawned by wsyncd)",
    after_help = exit_codes::help()
)]
pub struct Args {
    /// Log to `DIR/monitor-<workspace>.log` (daily rolling) instead of stderr.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Directory for ssh ControlPath sockets.
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What else the binary runs besides the monitor.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the SSH agent protocol on stdin/stdout (run on an SSH remote by the monitor over
    /// its ssh connection; see `wsync_core::agent`).
    Agent,
}

/// Runs the monitor; returns the exit status.
pub fn run(args: Args) -> anyhow::Result<u8> {
    if let Some(Command::Agent) = args.command {
        // The agent is the monitor's own binary, uploaded as is: one build to install, no
        // second binary to keep in step with the executor.
        wsync_core::agent::serve_stdio().context("serving the agent protocol")?;
        return Ok(exit_codes::OK);
    }
    if channel::crash_requested() {
        eprintln!(
            "wsync-monitor: {} exists; exiting with status 3 as asked",
            channel::CRASH_FILE_ENV
        );
        return Ok(exit_codes::TEST_CRASH);
    }
    channel::die_with_parent();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run_async(args));
    // The stdin reader may sit in a blocking read; do not wait for it.
    runtime.shutdown_background();
    result
}

async fn run_async(args: Args) -> anyhow::Result<u8> {
    let mut input = BufReader::new(tokio::io::stdin());
    let (workspace, tunables, progress, pending_dir) = match channel::read_start(&mut input).await {
        Ok(start) => start,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(exit_codes::BAD_START);
        }
    };
    if let Err(e) = wsync_core::names::validate_name("workspace", &workspace.name) {
        eprintln!("error: bad start message: {e}");
        return Ok(exit_codes::BAD_START);
    }
    if !workspace.path.is_absolute() {
        eprintln!(
            "error: bad start message: workspace path {} is not absolute",
            workspace.path.display()
        );
        return Ok(exit_codes::BAD_START);
    }
    let _guard = logging::init(args.log_dir.as_deref(), &workspace.name);
    tracing::info!(
        workspace = %workspace.name,
        path = %workspace.path.display(),
        remotes = workspace.remotes.len(),
        pid = std::process::id(),
        "monitor starting"
    );
    let runtime_dir = runtime_dir(args.runtime_dir.as_deref());
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(channel::write_events(events_rx));
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    tokio::spawn(channel::read_commands(input, cmd_tx));

    // Watch first, then sync: the remotes' initial full syncs are queued only after every
    // directory is watched (on a huge tree, the root and what the walk reached; the rest is
    // watched beside them and reports what changed before its watch), so nothing changed
    // during them is missed.
    let (watch_tx, watch_rx) = mpsc::unbounded_channel();
    let root = workspace.path.clone();
    let exclude_config = watch::ExcludeConfig {
        registry: workspace.excludes.clone(),
        respect_gitignore: workspace.respect_gitignore,
        rules_file: runtime_dir.join(format!(
            "excludes-{}-{}",
            workspace.name,
            std::process::id()
        )),
    };
    let watch_mode = tunables.watch_mode;
    let poll_interval = tunables.poll_interval();
    let watcher = tokio::task::spawn_blocking(move || {
        batch::remove_stale_proofs(&root);
        backend::start(&root, exclude_config, watch_mode, poll_interval, watch_tx)
    })
    .await
    .context("starting the watcher")?
    .with_context(|| format!("starting the {watch_mode:?} watch backend"))?;
    let root_id = engine::current_root_id(&workspace.path);
    let pending_dir = pending_dir.filter(|dir| match create_private_dir(dir) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "cannot use {} for pending changes: {e}; they will not survive a restart",
                dir.display()
            );
            false
        }
    });
    let pending = load_pending(pending_dir.as_deref(), &workspace);
    let tree = watcher.initial_tree();
    let (max_files, max_bytes) = initial_checksum_limits();
    let initial_checksum = max_files > 0 && tree.affords_checksum(max_files, max_bytes);
    tracing::info!(
        files = tree.files,
        bytes = tree.bytes,
        checksum = initial_checksum,
        "initial full syncs compare {}",
        if initial_checksum {
            "by checksum (a small tree)"
        } else {
            "by size and mtime (a large tree)"
        }
    );
    let (engine, initial) = engine::Engine::start(
        engine::StartConfig {
            workspace,
            tunables,
            progress,
            runtime_dir,
            rules_file: Some(watcher.rules_file()),
            root_id,
            watches: watcher.count(),
            watch_backend: watcher.kind(),
            pending_dir,
            pending,
            initial_checksum,
        },
        std::time::Instant::now(),
    );
    let channels = engine::driver::Channels {
        watch: watch_rx,
        commands: cmd_rx,
        events: events_tx,
    };
    let exit = engine::driver::run(engine, initial, watcher, channels).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    tracing::info!(?exit, "monitor exiting");
    Ok(exit_codes::OK)
}

/// Test switch: `WSYNC_TEST_INITIAL_CHECKSUM_MAX_FILES=N` lowers the file-count limit of the
/// initial sync by checksum (`0`: never), so a test can tell what the pending files repair
/// from what a checksum initial sync would.
pub const INITIAL_CHECKSUM_MAX_FILES_ENV: &str = "WSYNC_TEST_INITIAL_CHECKSUM_MAX_FILES";

/// The tree size up to which initial syncs compare by checksum (see `engine::checksum`).
fn initial_checksum_limits() -> (u64, u64) {
    use engine::checksum::{INITIAL_CHECKSUM_MAX_BYTES, INITIAL_CHECKSUM_MAX_FILES};
    let files = std::env::var(INITIAL_CHECKSUM_MAX_FILES_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(INITIAL_CHECKSUM_MAX_FILES, |n| {
            tracing::warn!("{INITIAL_CHECKSUM_MAX_FILES_ENV}={n} (test switch)");
            n.min(INITIAL_CHECKSUM_MAX_FILES)
        });
    (files, INITIAL_CHECKSUM_MAX_BYTES)
}

/// The pending paths earlier monitors persisted for the workspace's remotes.
fn load_pending(
    dir: Option<&Path>,
    workspace: &wsync_core::registry::Workspace,
) -> Vec<(String, Vec<PathBuf>)> {
    let Some(dir) = dir else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for remote in &workspace.remotes {
        let file = pending::file_for(dir, &workspace.id, &workspace.name, &remote.name);
        match pending::load(&file) {
            Ok(Some(paths)) => out.push((remote.name.clone(), paths)),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "ignoring pending changes in {}: {e}; the initial sync compares by size and mtime",
                file.display()
            ),
        }
    }
    out
}

/// The ssh socket directory: ours (owner checked) and 0700. Falls back to `/tmp/wsync-<uid>`
/// when the given one is too long for socket paths or is not safe, and last to a fresh
/// `mkdtemp` directory; never a directory another user could have prepared (a ControlPath
/// socket planted there would see every transfer).
fn runtime_dir(requested: Option<&Path>) -> PathBuf {
    // ssh adds a ".XXXXXXXXXXXXXXXX" suffix while binding "cm-<16 hex>" below the directory.
    const MAX_DIR_LEN: usize = wsync_core::platform::SOCKET_PATH_MAX - 1 - 19 - 17;
    let fallback = PathBuf::from(format!("/tmp/wsync-{}", nix::unistd::getuid()));
    let preferred = requested.map(Path::to_path_buf).unwrap_or_else(|| {
        wsync_core::platform::runtime_dir()
            .map(|d| d.join("wsync"))
            .unwrap_or_else(|| fallback.clone())
    });
    for dir in [preferred, fallback] {
        if dir.as_os_str().len() > MAX_DIR_LEN {
            tracing::warn!(
                "runtime directory {} is too long for ssh sockets",
                dir.display()
            );
            continue;
        }
        match create_private_dir(&dir) {
            Ok(()) => return dir,
            Err(e) => tracing::warn!("cannot use runtime directory {}: {e}", dir.display()),
        }
    }
    match nix::unistd::mkdtemp("/tmp/wsync-XXXXXX") {
        Ok(dir) => {
            tracing::warn!("using a fresh runtime directory {}", dir.display());
            dir
        }
        Err(e) => {
            // Nothing safe: ssh sockets will fail to bind and SSH syncs report the error.
            tracing::error!("cannot create any private runtime directory: {e}");
            PathBuf::from("/nonexistent/wsync-runtime")
        }
    }
}

/// Creates `dir` 0700 (with parents) and checks it is a real directory owned by us that no one
/// else can write to; read/search bits for others are removed.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("not a directory (a symlink?)"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "owned by uid {}, not by uid {me}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "writable by others (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_dirs_must_be_private_and_ours() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/wsync");
        create_private_dir(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(create_private_dir(&open).is_err(), "world-writable");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        assert!(create_private_dir(&link).is_err(), "a symlink");
        let readable = tmp.path().join("readable");
        std::fs::create_dir(&readable).unwrap();
        std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&readable).unwrap();
        let mode = std::fs::metadata(&readable).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Whatever happens, the chosen directory is private and never /tmp itself.
        let chosen = runtime_dir(Some(&open));
        assert_ne!(chosen, open);
        assert_ne!(chosen, Path::new("/tmp"));
    }
}
