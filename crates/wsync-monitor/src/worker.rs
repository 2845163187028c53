//! One rsync run for one remote: builds the argv with `wsync_core::rsync`, feeds the path list,
//! collects `--stats` and the error text, and classifies the exit. Also the retry backoff
//! policy. Dropping the future kills rsync (`kill_on_drop`), which is how batches are abandoned.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::Command;
use wsync_core::registry::Remote;
use wsync_core::remote::RemoteTarget;
use wsync_core::rsync::{
    classify_exit, files_from, max_delete_skipped, parse_stats, rsync_argv, vanished_paths,
    ExitClass, RsyncMode, RsyncRequest, RsyncStats, COOKIE_PREFIX, DEFAULT_TIMEOUT_SECS,
    TARGET_MISSING_MARKER, TRANSFER_DONE_PREFIX,
};
use wsync_core::ssh::{quote_posix_sh, SshEndpoint};

use crate::queue::{collapse, transfer_list, Batch};

/// First retry delay after a failure, doubled per consecutive failure up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// Delay before retry number `failures` (1 = first failure).
pub fn backoff_delay(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << shift).min(BACKOFF_CAP)
}

/// Result of one rsync run.
#[derive(Debug)]
pub struct Outcome {
    pub class: ExitClass,
    pub stats: RsyncStats,
    /// The tail of rsync's stderr (or why it could not start), for status.
    pub error: Option<String>,
    pub elapsed: Duration,
    /// Set when a safety rail stopped the batch: the workspace must halt with this reason.
    pub halt: Option<String>,
    /// On exit 24: the files that vanished mid-transfer (`None`: unknown, retry the batch).
    pub vanished: Option<Vec<PathBuf>>,
}

impl Outcome {
    fn failed(class: ExitClass, error: String, started: Instant) -> Self {
        Self {
            class,
            stats: RsyncStats::default(),
            error: Some(error),
            elapsed: started.elapsed(),
            halt: None,
            vanished: None,
        }
    }
}

/// How one batch is to be run, decided by the engine.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The first sync since attach: it may create the target directory.
    pub first: bool,
    /// The user confirmed (with resume) what a safety rail stopped: no `--max-delete` cap, and
    /// an empty root may empty the remote.
    pub confirmed: bool,
    /// `--max-delete` for full syncs.
    pub max_delete: u64,
    /// Dry-run a full sync first and halt, deleting nothing, if it would pass `max_delete`
    /// (after a halt for a missing or replaced root: rsync itself deletes up to the cap).
    pub precheck: bool,
    /// rsync filter rules for the excludes.
    pub exclude_from: Option<PathBuf>,
    /// Patterns protected from deletion on the remote (`--filter=P`).
    pub protect: Vec<String>,
    /// Report a full sync's progress (`--info=progress2`); someone waits for it. Costs ~10%
    /// on many small files, so every other sync runs without it.
    pub progress: bool,
}

/// Where a remote's rsyncs go and with what connection settings.
#[derive(Debug, Clone)]
pub struct Destination {
    pub remote: Remote,
    pub control_path: Option<PathBuf>,
}

impl Destination {
    /// The ssh master is private to this workspace's remote: detaching it (`ssh -O exit`)
    /// must not cut other workspaces' transfers to the same host.
    pub fn new(remote: Remote, runtime_dir: &Path, workspace: &str) -> Self {
        let owner = format!("{workspace}\0{}", remote.name);
        let control_path = SshEndpoint::from_target(&remote.target)
            .map(|ep| ep.control_path_for(runtime_dir, owner.as_bytes()));
        Self {
            remote,
            control_path,
        }
    }

    /// Runs one batch to this destination; `transferred` is called as soon as rsync reports
    /// the transfer complete without any message (before its slow exit handshake), and
    /// `progress` with a full sync's progress (see `crate::progress`).
    pub async fn sync(
        &self,
        root: &Path,
        batch: &Batch,
        opts: &SyncOptions,
        transferred: impl FnOnce() + Send,
        mut progress: impl FnMut(wsync_core::monitor_proto::SyncProgress) + Send,
    ) -> Outcome {
        let started = Instant::now();
        if !opts.first {
            if let RemoteTarget::Local { path } = &self.remote.target {
                if !std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
                    let error = missing_target(&self.remote.target);
                    return Outcome::failed(ExitClass::Fatal, error, started);
                }
            }
        }
        if !opts.confirmed && root_is_empty(root) {
            match self.target_is_empty().await {
                Ok(true) => {}
                Ok(false) => {
                    let mut outcome = Outcome::failed(
                        ExitClass::Fatal,
                        "workspace root is empty but the remote is not".into(),
                        started,
                    );
                    outcome.halt = Some(format!(
                        "workspace root {} is empty but remote {} is not (a mount went away, or everything was deleted); nothing is deleted until `wsync resume` confirms it",
                        root.display(),
                        self.remote.name
                    ));
                    return outcome;
                }
                Err(e) => {
                    return Outcome::failed(
                        ExitClass::Connection,
                        format!(
                            "the workspace root is empty and the remote cannot be checked: {e}"
                        ),
                        started,
                    )
                }
            }
        }
        if opts.precheck && !opts.confirmed && *batch == Batch::Full {
            if let Some(outcome) = self.precheck_deletions(root, opts, started).await {
                return outcome;
            }
        }
        let (mode, list) = match batch {
            Batch::Full => (RsyncMode::Full { mkpath: opts.first }, None),
            Batch::Paths { renames, paths } => {
                let replayed = crate::renames::replay(self, renames).await;
                if replayed.target_missing {
                    let error = missing_target(&self.remote.target);
                    return Outcome::failed(ExitClass::Fatal, error, started);
                }
                if let Some(why) = &replayed.stopped {
                    tracing::info!(
                        remote = %self.remote.name,
                        replayed = replayed.done,
                        "renames fall back to rsync: {why}"
                    );
                }
                if replayed.done > 0 {
                    tracing::debug!(remote = %self.remote.name, renames = replayed.done, "renames replayed");
                }
                let fallback = crate::renames::fallback_paths(&renames[replayed.done..]);
                let all = collapse(paths.iter().chain(fallback));
                if all.is_empty() {
                    // Everything was a replayed rename: nothing for rsync to do.
                    transferred();
                    return Outcome {
                        class: ExitClass::Success,
                        stats: RsyncStats::default(),
                        error: None,
                        elapsed: started.elapsed(),
                        halt: None,
                        vanished: None,
                    };
                }
                let (list, has_dir) = transfer_list(root, &all);
                // Listed directories go recursively: re-sending all their files (-I) would make
                // a directory chmod or a refilled new directory cost its whole size.
                let mode = RsyncMode::Paths {
                    ignore_times: !has_dir,
                };
                (mode, Some(list))
            }
        };
        let argv = rsync_argv(&RsyncRequest {
            source_root: root,
            target: &self.remote.target,
            control_path: self.control_path.as_deref(),
            mode,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            excludes: &[],
            protect: &opts.protect,
            max_delete: (!opts.confirmed).then_some(opts.max_delete),
            exclude_from: opts.exclude_from.as_deref(),
            report_transfer_done: true,
            progress: opts.progress && matches!(mode, RsyncMode::Full { .. }),
        });
        let stdin = list.map(|paths| files_from(&paths));
        tracing::debug!(remote = %self.remote.name, ?argv, "running rsync");
        let reporter = (opts.progress && matches!(mode, RsyncMode::Full { .. }))
            .then(|| crate::progress::Reporter::new(&mut progress));
        let (mut outcome, output) = run_reporting(argv, stdin, transferred, reporter).await;
        if outcome.class != ExitClass::Success && output.contains(TARGET_MISSING_MARKER) {
            outcome.class = ExitClass::Fatal;
            outcome.error = Some(missing_target(&self.remote.target));
        }
        if outcome.class == ExitClass::Vanished {
            outcome.vanished = vanished_paths(&output, root);
        }
        if outcome.class == ExitClass::MaxDelete {
            outcome.halt = Some(self.max_delete_reason(opts, &output));
        }
        outcome
    }

    /// A dry run of the full sync with the `--max-delete` cap: `Some` (a halt, or the failure)
    /// when the real one must not run.
    async fn precheck_deletions(
        &self,
        root: &Path,
        opts: &SyncOptions,
        started: Instant,
    ) -> Option<Outcome> {
        let argv = rsync_argv(&RsyncRequest {
            source_root: root,
            target: &self.remote.target,
            control_path: self.control_path.as_deref(),
            mode: RsyncMode::Verify,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            excludes: &[],
            protect: &opts.protect,
            max_delete: Some(opts.max_delete),
            exclude_from: opts.exclude_from.as_deref(),
            report_transfer_done: false,
            progress: false,
        });
        tracing::debug!(remote = %self.remote.name, ?argv, "dry run before a full sync");
        let (mut outcome, output) = run(argv, None, || {}).await;
        match outcome.class {
            ExitClass::Success | ExitClass::Vanished => None,
            ExitClass::MaxDelete => {
                outcome.halt = Some(self.max_delete_reason(opts, &output));
                Some(outcome)
            }
            _ => {
                outcome.elapsed = started.elapsed();
                Some(outcome)
            }
        }
    }

    fn max_delete_reason(&self, opts: &SyncOptions, output: &str) -> String {
        format!(
            "a full sync to remote {} stopped at the --max-delete cap of {} deletions ({} more skipped); nothing more is deleted until `wsync resume` confirms it (or raise the workspace's max_delete)",
            self.remote.name,
            opts.max_delete,
            max_delete_skipped(output).map_or("some".into(), |n| n.to_string()),
        )
    }

    /// Whether the target directory holds nothing (missing counts as empty).
    pub async fn target_is_empty(&self) -> std::io::Result<bool> {
        match &self.remote.target {
            RemoteTarget::Local { path } => match std::fs::read_dir(path) {
                Ok(mut entries) => Ok(entries.next().is_none()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
                Err(e) => Err(e),
            },
            RemoteTarget::Ssh { path, .. } => {
                // Run by `sh -s` whatever the login shell is.
                let mut script = b"test ! -d ".to_vec();
                let quoted = quote_posix_sh(path.as_bytes());
                script.extend_from_slice(&quoted);
                script.extend_from_slice(b" || ls -A -- ");
                script.extend_from_slice(&quoted);
                script.push(b'\n');
                let output = self.remote_command(b"sh -s", Some(script)).await?;
                Ok(output.iter().all(u8::is_ascii_whitespace))
            }
        }
    }

    /// Runs a POSIX shell command (already quoted) on an SSH remote over the shared
    /// connection; returns its stdout, or an error with its stderr when it fails.
    pub async fn remote_command(
        &self,
        script: &[u8],
        stdin: Option<Vec<u8>>,
    ) -> std::io::Result<Vec<u8>> {
        let (Some(endpoint), Some(control)) = (
            SshEndpoint::from_target(&self.remote.target),
            self.control_path.as_deref(),
        ) else {
            return Err(std::io::Error::other("not an ssh remote"));
        };
        let script = String::from_utf8_lossy(script).into_owned();
        let argv = endpoint.command_argv(control, &script);
        tracing::debug!(remote = %self.remote.name, ?argv, "running ssh");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
            let _ = pipe.write_all(&bytes).await;
        }
        let output = tokio::time::timeout(
            Duration::from_secs(u64::from(DEFAULT_TIMEOUT_SECS)),
            child.wait_with_output(),
        )
        .await
        .map_err(|_| std::io::Error::other("ssh command timed out"))??;
        if !output.status.success() {
            let text = String::from_utf8_lossy(&output.stderr);
            return Err(std::io::Error::other(format!(
                "ssh command failed ({}): {}",
                output.status,
                text.trim()
            )));
        }
        Ok(output.stdout)
    }

    /// Asks the ssh multiplexing master (if any) to exit; used on detach and shutdown.
    pub async fn close_connection(&self) {
        let (Some(endpoint), Some(control)) = (
            SshEndpoint::from_target(&self.remote.target),
            self.control_path.as_deref(),
        ) else {
            return;
        };
        if !control.exists() {
            return;
        }
        let argv = endpoint.control_exit_argv(control);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Ok(mut child) = cmd.spawn() {
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        }
    }

    /// Creates a local target directory at attach time.
    pub fn prepare(&self) -> std::io::Result<()> {
        if let RemoteTarget::Local { path } = &self.remote.target {
            std::fs::create_dir_all(path)?;
        }
        Ok(())
    }
}

fn missing_target(target: &RemoteTarget) -> String {
    format!(
        "remote target directory {target} is missing (an unmounted disk?); it is not re-created: bring it back, or detach and attach the remote again"
    )
}

/// True when the root holds nothing but flush cookies (or cannot be listed: rsync decides).
pub fn root_is_empty(root: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else {
        return false;
    };
    !entries.flatten().any(|e| {
        !e.file_name()
            .as_encoded_bytes()
            .starts_with(COOKIE_PREFIX.as_bytes())
    })
}

/// Runs rsync; returns the outcome and everything it printed.
async fn run(
    argv: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    transferred: impl FnOnce() + Send,
) -> (Outcome, String) {
    run_reporting(argv, stdin, transferred, None).await
}

/// [`run`], passing rsync's progress lines (left out of the returned output) to `progress`.
async fn run_reporting(
    argv: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    transferred: impl FnOnce() + Send,
    mut progress: Option<crate::progress::Reporter<'_>>,
) -> (Outcome, String) {
    let started = Instant::now();
    let failed = |error: String| {
        (
            Outcome::failed(ExitClass::Fatal, error, started),
            String::new(),
        )
    };
    // stdout and stderr share one pipe, so an error message always arrives before the
    // transfer-done line that follows it: the line counts only when nothing came first.
    let (reader, writer) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(pair) => pair,
        Err(e) => return failed(format!("cannot create a pipe for rsync: {e}")),
    };
    let writer2 = match writer.try_clone() {
        Ok(fd) => fd,
        Err(e) => return failed(format!("cannot create a pipe for rsync: {e}")),
    };
    let mut output = match tokio::net::unix::pipe::Receiver::from_owned_fd(reader) {
        Ok(pipe) => BufReader::new(pipe),
        Err(e) => return failed(format!("cannot create a pipe for rsync: {e}")),
    };
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        .kill_on_drop(true);
    let spawned = cmd.spawn();
    // Our copies of the write end must go, or the pipe never reaches EOF.
    drop(cmd);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return failed(format!("cannot run rsync: {e} (is rsync installed?)")),
    };
    let input = child.stdin.take();
    let feed = async move {
        if let (Some(mut pipe), Some(bytes)) = (input, stdin) {
            // rsync exiting early closes the pipe; its exit status tells why.
            let _ = pipe.write_all(&bytes).await;
            let _ = pipe.shutdown().await;
        }
    };
    let read_out = async {
        let mut transferred = Some(transferred);
        let mut text = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            match crate::progress::read_segment(&mut output, &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.starts_with(TRANSFER_DONE_PREFIX.as_bytes()) {
                if text.iter().all(u8::is_ascii_whitespace) {
                    if let Some(notify) = transferred.take() {
                        notify();
                    }
                }
                continue;
            }
            if progress.as_mut().is_some_and(|p| p.feed(&line)) {
                continue;
            }
            text.extend_from_slice(&line);
        }
        text
    };
    let (_, text, status) = tokio::join!(feed, read_out, child.wait());
    let status = match status {
        Ok(status) => status,
        Err(e) => return failed(format!("waiting for rsync: {e}")),
    };
    let class = classify_exit(status.code());
    let text = String::from_utf8_lossy(&text);
    let stats = parse_stats(&text);
    let error = (class != ExitClass::Success).then(|| {
        let tail: Vec<&str> = text.lines().filter(|l| is_message(l)).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join("; ");
        format!("rsync exited with {status}: {tail}")
    });
    let outcome = Outcome {
        class,
        stats,
        error,
        elapsed: started.elapsed(),
        halt: None,
        vanished: None,
    };
    (outcome, text.into_owned())
}

/// True for rsync output lines worth showing as an error (not stats or exit debugging).
fn is_message(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty()
        && !line.contains("_exit_cleanup(")
        && !line.starts_with("sent ")
        && !line.starts_with("total size is ")
        && !STATS_KEYS.iter().any(|k| line.starts_with(k))
}

const STATS_KEYS: [&str; 12] = [
    "Number of ",
    "Total file size",
    "Total transferred file size",
    "Literal data",
    "Matched data",
    "File list ",
    "Total bytes ",
    "client_run",
    "rsync[",
    "[sender]",
    "[receiver]",
    "[generator]",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        assert_eq!(backoff_delay(1), Duration::from_secs(1));
        assert_eq!(backoff_delay(2), Duration::from_secs(2));
        assert_eq!(backoff_delay(6), Duration::from_secs(32));
        assert_eq!(backoff_delay(7), Duration::from_secs(60));
        assert_eq!(backoff_delay(1000), Duration::from_secs(60));
    }
}
