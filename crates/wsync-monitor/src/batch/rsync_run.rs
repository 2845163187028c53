//! Running one rsync: stdout and stderr on one pipe (so an error always precedes the
//! transfer-done line), the path list fed on stdin, the early "transfer complete" signal
//! (`--debug=EXIT2`), progress lines passed to a reporter, and the exit classified with the
//! tail of rsync's messages. Dropping the future kills rsync (`kill_on_drop`).

use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::process::Stdio;
use std::time::Instant;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::Command;
use wsync_core::rsync::{
    classify_exit, parse_stats, ExitClass, SENT_LENGTH_PREFIX, TRANSFER_DONE_PREFIX,
};

use super::progress::{read_segment, Reporter};
use super::Outcome;

/// Runs rsync; returns the outcome and everything it printed.
pub(super) async fn run(
    argv: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    transferred: impl FnOnce() + Send,
) -> (Outcome, String) {
    run_reporting(argv, stdin, transferred, None, None).await
}

/// [`run`], passing rsync's progress lines (left out of the returned output) to `progress`;
/// rsync inherits `keep` (a trash snapshot it names as `/proc/self/fd/N`).
pub(super) async fn run_reporting(
    argv: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    transferred: impl FnOnce() + Send,
    mut progress: Option<Reporter<'_>>,
    keep: Option<BorrowedFd<'_>>,
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
    let (reader, writer) = match wsync_core::platform::pipe_cloexec() {
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
    let spawned = spawn_keeping(&mut cmd, keep);
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
            match read_segment(&mut output, &mut line).await {
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
        failed_paths: None,
        sent_lengths: Vec::new(),
        moved: 0,
        rsync: None,
    };
    (outcome, text.into_owned())
}

/// Spawns `cmd`, its child inheriting `keep`. Our descriptors are close-on-exec; `keep` is
/// made inheritable only for this spawn, under a lock every rsync spawn takes, so no other
/// rsync of this monitor inherits it (a child spawned elsewhere at that instant could; it is
/// ours, and the directory stays private to our user either way).
fn spawn_keeping(
    cmd: &mut Command,
    keep: Option<BorrowedFd<'_>>,
) -> std::io::Result<tokio::process::Child> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let Some(fd) = keep else {
        let _spawning = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        return cmd.spawn();
    };
    let _spawning = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
    let spawned = cmd.spawn();
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    spawned
}

/// True for rsync output lines worth showing as an error (not stats or exit debugging).
fn is_message(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty()
        && !line.contains("_exit_cleanup(")
        && !line.starts_with("sent ")
        && !line.starts_with("total size is ")
        && !line.starts_with(SENT_LENGTH_PREFIX)
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
