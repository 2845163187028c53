//! Running one rsync: stdout and stderr on one pipe (so an error always precedes the
//! transfer-done line), the path list fed on stdin, the early "transfer complete" signal
//! (`--debug=EXIT2`), progress lines passed to a reporter, and the exit classified with the
//! tail of rsync's messages. Each rsync runs in a process group of its own, registered in its
//! remote's [`RsyncGroups`]: dropping the future kills the whole group (rsync's forked
//! receiver and generator, its ssh), and a detach kills and waits for every group of the
//! remote before it is confirmed. rsync dies with the monitor (`PR_SET_PDEATHSIG`), since the
//! daemon's signals to the monitor's group no longer reach it.

use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::Command;
use wsync_core::rsync::{
    classify_exit, parse_stats, ExitClass, SENT_LENGTH_PREFIX, TRANSFER_DONE_PREFIX,
};

use super::progress::{read_segment, Reporter};
use super::Outcome;

/// The process groups of one remote's rsyncs still running (clones share them), and whether
/// the remote is stopped: once it is, no rsync starts for it.
#[derive(Debug, Clone, Default)]
pub struct RsyncGroups(Arc<Mutex<Groups>>);

#[derive(Debug, Default)]
struct Groups {
    stopped: bool,
    /// Leaders (= group ids) of the groups started and not yet seen gone.
    live: Vec<Pid>,
}

/// How often [`RsyncGroups::stop`] looks whether the killed groups are gone.
const GONE_POLL: Duration = Duration::from_millis(5);

impl RsyncGroups {
    fn groups(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses every rsync from now on, SIGKILLs every group still running and waits until
    /// each is gone (no process left in it), at most `deadline`; false past it.
    pub async fn stop(&self, deadline: Duration) -> bool {
        let started = Instant::now();
        {
            let mut groups = self.groups();
            groups.stopped = true;
            for leader in &groups.live {
                let _ = killpg(*leader, Signal::SIGKILL);
            }
        }
        loop {
            let left = {
                let mut groups = self.groups();
                // ESRCH: no process is left in the group (the leader reaped too).
                groups
                    .live
                    .retain(|leader| killpg(*leader, None) != Err(nix::errno::Errno::ESRCH));
                groups.live.len()
            };
            if left == 0 {
                return true;
            }
            if started.elapsed() >= deadline {
                tracing::warn!(
                    groups = left,
                    "rsync process groups still running after SIGKILL"
                );
                return false;
            }
            tokio::time::sleep(GONE_POLL).await;
        }
    }

    /// Spawns `cmd` in a group of its own and registers it; refused once stopped.
    fn spawn(
        &self,
        cmd: &mut Command,
        keep: Option<BorrowedFd<'_>>,
    ) -> std::io::Result<(tokio::process::Child, Group)> {
        let mut groups = self.groups();
        if groups.stopped {
            return Err(std::io::Error::other(
                "the remote is being detached; no rsync starts for it",
            ));
        }
        cmd.process_group(0);
        let child = spawn_keeping(cmd, keep)?;
        let leader = child.id().map(|id| Pid::from_raw(id as i32));
        if let Some(leader) = leader {
            groups.live.push(leader);
        }
        Ok((
            child,
            Group {
                groups: self.clone(),
                leader,
                ended: false,
            },
        ))
    }
}

/// One running rsync's group: killed whole when dropped before rsync ended (its batch
/// abandoned), forgotten when it ended.
struct Group {
    groups: RsyncGroups,
    leader: Option<Pid>,
    ended: bool,
}

impl Group {
    /// rsync exited and was reaped: its children (which exit with it) are not waited for.
    fn ended(mut self) {
        self.ended = true;
        if let Some(leader) = self.leader {
            self.groups.groups().live.retain(|l| *l != leader);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let (false, Some(leader)) = (self.ended, self.leader) {
            // Stays registered until gone: a detach waits for it.
            let _ = killpg(leader, Signal::SIGKILL);
        }
    }
}

/// Runs rsync; returns the outcome and everything it printed.
pub(super) async fn run(
    groups: &RsyncGroups,
    argv: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    transferred: impl FnOnce() + Send,
) -> (Outcome, String) {
    run_reporting(groups, argv, stdin, transferred, None, None).await
}

/// [`run`], passing rsync's progress lines (left out of the returned output) to `progress`;
/// rsync inherits `keep` (a trash snapshot it names as `/proc/self/fd/N`, see
/// [`spawn_keeping`]).
pub(super) async fn run_reporting(
    groups: &RsyncGroups,
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
    let spawned = groups.spawn(&mut cmd, keep);
    // Our copies of the write end must go, or the pipe never reaches EOF.
    drop(cmd);
    let (mut child, group) = match spawned {
        Ok(spawned) => spawned,
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
    group.ended();
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

/// Spawns `cmd`, its child inheriting `keep` as [`wsync_core::trash::CHILD_FD`] and nothing
/// else of ours. `keep` stays close-on-exec in the monitor at all times: only the child,
/// between fork and exec, `dup2`s it to the fixed number (a `dup2`ed descriptor is not
/// close-on-exec). So no other child, spawned by any thread at the same instant, can
/// inherit it.
///
/// The one `unsafe` block of the workspace (`unsafe_code` is denied elsewhere): std offers no
/// safe way to place a descriptor in a child, and flipping close-on-exec in the monitor
/// around a spawn leaks it to whatever other thread forks meanwhile.
#[allow(unsafe_code)]
fn spawn_keeping(
    cmd: &mut Command,
    keep: Option<BorrowedFd<'_>>,
) -> std::io::Result<tokio::process::Child> {
    use std::os::fd::AsRawFd;
    let raw = keep.map(|fd| fd.as_raw_fd());
    let fixed = wsync_core::trash::CHILD_FD;
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe calls (prctl, dup2, fcntl), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            // rsync runs in a group of its own (out of reach of the daemon's signals to the
            // monitor's group): it must die with the monitor (its loop thread forks it).
            #[cfg(target_os = "linux")]
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let Some(raw) = raw else {
                return Ok(());
            };
            // Standard streams are set up before this runs: a descriptor among them
            // would have been replaced.
            if raw <= 2 {
                return Err(std::io::Error::from_raw_os_error(libc::EBADF));
            }
            let done = if raw == fixed {
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, fixed)
            };
            if done < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// The snapshot's descriptor reaches the rsync child (at the fixed number its
    /// `--backup-dir` names) and no child spawned at the same time by another thread: those
    /// children's `/proc/<pid>/fd` are read while they run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_rsync_child_inherits_the_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let snapshot =
            wsync_core::trash::LocalSnapshot::create(tmp.path(), "2025-01-31T12-00-00.123Z")
                .unwrap();
        let held = snapshot.descriptor();
        let held_meta = std::fs::File::from(held.try_clone_to_owned().unwrap())
            .metadata()
            .unwrap();
        let held_id = (held_meta.dev(), held_meta.ino());
        let stop = Arc::new(AtomicBool::new(false));
        let others = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut checked, mut leaked) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let mut child = std::process::Command::new("sleep")
                        .arg("30")
                        .spawn()
                        .unwrap();
                    let dir = format!("/proc/{}/fd", child.id());
                    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                        let seen = std::fs::metadata(entry.path()).ok();
                        if seen.is_some_and(|m| (m.dev(), m.ino()) == held_id) {
                            leaked.push(entry.path());
                        }
                    }
                    child.kill().unwrap();
                    child.wait().unwrap();
                    checked += 1;
                }
                (checked, leaked)
            })
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let mut spawned = 0;
        while spawned < 300 && Instant::now() < deadline {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "test -d \"$1\"", "sh", snapshot.backup_dir()]);
            let status = spawn_keeping(&mut cmd, Some(held))
                .unwrap()
                .wait()
                .await
                .unwrap();
            assert!(status.success(), "the rsync child sees its snapshot");
            spawned += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let (checked, leaked) = others.join().unwrap();
        assert!(
            checked >= 20,
            "only {checked} other children were looked at"
        );
        assert!(
            leaked.is_empty(),
            "{} of {checked} concurrently spawned children inherited the snapshot, e.g. {:?}",
            leaked.len(),
            &leaked[..leaked.len().min(3)]
        );
        let flags = nix::fcntl::fcntl(held, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "close-on-exec in the monitor");
    }
}
