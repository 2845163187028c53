//! One rsync run for one remote: builds the argv with `wsync_core::rsync`, feeds the path list,
//! collects `--stats` and the error text, and classifies the exit. Also the retry backoff
//! policy. Dropping the future kills rsync (`kill_on_drop`), which is how batches are abandoned.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use wsync_core::registry::Remote;
use wsync_core::remote::RemoteTarget;
use wsync_core::rsync::{
    classify_exit, files_from, parse_stats, rsync_argv, ExitClass, RsyncMode, RsyncRequest,
    RsyncStats, DEFAULT_TIMEOUT_SECS,
};
use wsync_core::ssh::SshEndpoint;

use crate::queue::Batch;

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
}

/// Where a remote's rsyncs go and with what connection settings.
#[derive(Debug, Clone)]
pub struct Destination {
    pub remote: Remote,
    pub control_path: Option<PathBuf>,
}

impl Destination {
    pub fn new(remote: Remote, runtime_dir: &Path) -> Self {
        let control_path =
            SshEndpoint::from_target(&remote.target).map(|ep| ep.control_path(runtime_dir));
        Self {
            remote,
            control_path,
        }
    }

    /// Runs one batch to this destination.
    pub async fn sync(&self, root: &Path, batch: &Batch, first: bool) -> Outcome {
        let mode = match batch {
            Batch::Full => RsyncMode::Full { mkpath: first },
            Batch::Paths(_) => RsyncMode::Paths,
        };
        let argv = rsync_argv(&RsyncRequest {
            source_root: root,
            target: &self.remote.target,
            control_path: self.control_path.as_deref(),
            mode,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            excludes: &[],
            max_delete: None,
        });
        let stdin = match batch {
            Batch::Paths(paths) => Some(files_from(paths)),
            Batch::Full => None,
        };
        tracing::debug!(remote = %self.remote.name, ?argv, "running rsync");
        run(argv, stdin).await
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

async fn run(argv: Vec<OsString>, stdin: Option<Vec<u8>>) -> Outcome {
    let started = Instant::now();
    let failed = |error: String| Outcome {
        class: ExitClass::Fatal,
        stats: RsyncStats::default(),
        error: Some(error),
        elapsed: started.elapsed(),
    };
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
    let mut child = match cmd.spawn() {
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
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let read_out = async {
        let mut buf = Vec::new();
        if let Some(pipe) = out.as_mut() {
            let _ = pipe.read_to_end(&mut buf).await;
        }
        buf
    };
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(pipe) = err.as_mut() {
            let _ = pipe.read_to_end(&mut buf).await;
        }
        buf
    };
    let (_, stdout, stderr, status) = tokio::join!(feed, read_out, read_err, child.wait());
    let status = match status {
        Ok(status) => status,
        Err(e) => return failed(format!("waiting for rsync: {e}")),
    };
    let class = classify_exit(status.code());
    let stats = parse_stats(&String::from_utf8_lossy(&stdout));
    let error = (class != ExitClass::Success).then(|| {
        let text = String::from_utf8_lossy(&stderr);
        let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join("; ");
        format!("rsync exited with {status}: {tail}")
    });
    Outcome {
        class,
        stats,
        error,
        elapsed: started.elapsed(),
    }
}

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
