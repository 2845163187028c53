//! `MonitorProc`: drives the real `wsync-monitor` binary standalone over its stdin/stdout — sends
//! commands, tracks the latest status and flush answers, waits on conditions with deadlines,
//! and prints the monitor's log when a test fails.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wsync_core::framing::{read_frame, write_frame, FrameError};
use wsync_core::monitor_proto::{
    MonitorCommand, MonitorEvent, MonitorStatus, SyncProgress, SyncedBatch,
};
use wsync_core::registry::{Remote, Workspace};
use wsync_core::remote::RemoteTarget;

use crate::env::bin;
use crate::poll::poll_until;

/// Flush answers and status lines arrive within milliseconds: a coarse poll would dominate the
/// tests' run time.
const POLL: Duration = Duration::from_millis(1);

#[derive(Default)]
struct Seen {
    status: Option<MonitorStatus>,
    statuses: u64,
    /// Every full-sync progress report, in order: (remote, progress).
    progress: Vec<(String, SyncProgress)>,
    flushed: HashMap<u64, Vec<String>>,
    heartbeats: u64,
    /// Every landed batch the monitor reported, in order: (remote, batch).
    synced: Vec<(String, SyncedBatch)>,
    /// Remotes whose detach the monitor confirmed, in order.
    detached: Vec<String>,
    closed: bool,
}

/// A running monitor. Dropping it kills the process (and prints its log if the test failed).
pub struct MonitorProc {
    child: Child,
    stdin: Option<ChildStdin>,
    seen: Arc<Mutex<Seen>>,
    log_dir: PathBuf,
    next_flush: u64,
    /// What `start` carried: an `attach` marks its target for this workspace.
    workspace: Workspace,
}

/// A workspace description for `start`.
pub fn workspace(name: &str, path: &Path, remotes: Vec<Remote>) -> Workspace {
    // Stable for a name and path, so a test that restarts its monitor keeps its targets.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name
        .bytes()
        .chain(path.as_os_str().as_encoded_bytes().iter().copied())
    {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    Workspace {
        name: name.into(),
        id: format!("{hash:016x}"),
        path: path.to_path_buf(),
        remotes,
        paused: false,
        excludes: Vec::new(),
        respect_gitignore: false,
        max_delete: None,
        checksum_every_secs: None,
        tuning: Default::default(),
        root_id: None,
    }
}

/// A local remote.
pub fn local_remote(name: &str, path: &Path) -> Remote {
    Remote::new(
        name,
        RemoteTarget::Local {
            path: path.to_path_buf(),
        },
    )
}

/// Does what the daemon's attach does before a monitor sees a remote: creates its target (on
/// this machine for the test sshd too) with the `.wsync-target` marker of `workspace`, unless
/// it already holds one. A test's content already there is kept, as `attach --overwrite`
/// would.
pub fn mark_target(workspace: &Workspace, remote: &Remote) {
    let path = match &remote.target {
        RemoteTarget::Local { path } => path.clone(),
        RemoteTarget::Ssh { path, .. } => PathBuf::from(path),
    };
    if path.exists() && wsync_core::target::read_local(&path).is_some() {
        return;
    }
    // A test that makes a remote fail on purpose (a file where the directory should be) gets
    // no marker: the monitor reports the failure as it would any unusable target.
    let _ = wsync_core::target::write_local(&path, &wsync_core::target::Marker::new(workspace));
}

impl MonitorProc {
    /// Starts `wsync-monitor` with logs and sockets under `dir`, and sends `start`.
    pub fn start(dir: &Path, workspace: Workspace) -> Self {
        Self::start_with(dir, workspace, &[])
    }

    /// Like [`MonitorProc::start`] with extra environment variables.
    pub fn start_with(dir: &Path, workspace: Workspace, envs: &[(&str, &str)]) -> Self {
        Self::launch(dir, workspace, envs, Vec::new())
    }

    /// Starts a monitor without marking (or creating) any target first: a restart after the
    /// target went away.
    pub fn start_unprepared(dir: &Path, workspace: Workspace) -> Self {
        Self::spawn(dir, workspace, &[], Vec::new(), None)
    }

    /// Starts a monitor running as `uid`/`gid` (its workspace, targets and `dir` must be theirs;
    /// targets already marked).
    pub fn start_as(dir: &Path, workspace: Workspace, uid: u32, gid: u32) -> Self {
        Self::spawn(dir, workspace, &[], Vec::new(), Some((uid, gid)))
    }

    /// Like [`MonitorProc::start`], asking for progress during the initial sync of the remotes
    /// named in `progress` (as the daemon does when `wsync attach` waits).
    pub fn start_reporting(dir: &Path, workspace: Workspace, progress: Vec<String>) -> Self {
        Self::launch(dir, workspace, &[], progress)
    }

    fn launch(
        dir: &Path,
        workspace: Workspace,
        envs: &[(&str, &str)],
        progress: Vec<String>,
    ) -> Self {
        for remote in &workspace.remotes {
            mark_target(&workspace, remote);
        }
        Self::spawn(dir, workspace, envs, progress, None)
    }

    fn spawn(
        dir: &Path,
        workspace: Workspace,
        envs: &[(&str, &str)],
        progress: Vec<String>,
        user: Option<(u32, u32)>,
    ) -> Self {
        let log_dir = dir.join("logs");
        let runtime_dir = dir.join("run");
        let stderr = std::fs::create_dir_all(&log_dir)
            .and_then(|()| std::fs::File::create(log_dir.join("monitor.stderr")))
            .expect("creating the monitor's stderr file");
        let mut cmd = Command::new(bin("wsync-monitor"));
        cmd.arg("--log-dir")
            .arg(&log_dir)
            .arg("--runtime-dir")
            .arg(&runtime_dir)
            .env("WSYNC_LOG", "wsync_monitor=debug,info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (key, value) in envs {
            cmd.env(key, value);
        }
        if let Some((uid, gid)) = user {
            for path in [log_dir.clone(), log_dir.join("monitor.stderr")] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
            }
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        }
        let mut child = cmd.spawn().expect("spawning wsync-monitor");
        let stdout = child.stdout.take().expect("piped stdout");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let reader_seen = seen.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let event = read_frame::<MonitorEvent>(&mut reader);
                let mut seen = reader_seen.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Ok(MonitorEvent::Status { status }) => {
                        let reports = status
                            .remotes
                            .iter()
                            .filter_map(|r| Some((r.name.clone(), r.progress?)));
                        seen.progress.extend(reports);
                        seen.status = Some(status);
                        seen.statuses += 1;
                    }
                    Ok(MonitorEvent::Flushed { id, lagging }) => {
                        seen.flushed.insert(id, lagging);
                    }
                    Ok(MonitorEvent::Heartbeat) => seen.heartbeats += 1,
                    Ok(MonitorEvent::Synced { remote, batch }) => seen.synced.push((remote, batch)),
                    Ok(MonitorEvent::Detached { remote }) => seen.detached.push(remote),
                    Err(FrameError::Undecodable(e)) => panic!("monitor wrote a bad line: {e}"),
                    Err(_) => {
                        seen.closed = true;
                        return;
                    }
                }
            }
        });
        let mut monitor = Self {
            stdin: child.stdin.take(),
            child,
            seen,
            log_dir,
            next_flush: 1,
            workspace: workspace.clone(),
        };
        monitor.send(&MonitorCommand::Start {
            workspace,
            // The suite's watch-mode pass (WSYNC_TEST_WATCH_MODE), if any.
            tunables: crate::watch_mode::tunables(),
            progress,
            pending_dir: None,
        });
        monitor
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command.
    pub fn send(&mut self, cmd: &MonitorCommand) {
        if let MonitorCommand::Attach { remote, .. } = cmd {
            mark_target(&self.workspace, remote);
        }
        let stdin = self.stdin.as_mut().expect("stdin is open");
        write_frame(stdin, cmd).expect("writing to the monitor");
        stdin.flush().expect("flushing the monitor's stdin");
    }

    /// Flushes; returns the lagging remotes. Panics if no answer comes within `timeout` + 10 s.
    pub fn flush(&mut self, timeout: Duration) -> Vec<String> {
        let id = self.next_flush;
        self.next_flush += 1;
        self.send(&MonitorCommand::Flush {
            id,
            timeout_ms: timeout.as_millis() as u64,
        });
        let seen = self.seen.clone();
        let what = format!("the answer to flush {id}");
        poll_until(&what, timeout + Duration::from_secs(10), POLL, || {
            seen.lock().unwrap().flushed.remove(&id)
        })
        .unwrap_or_else(|e| self.fail(&e.to_string()))
    }

    /// Flushes and fails the test unless every remote caught up.
    pub fn flush_ok(&mut self, timeout: Duration) {
        let lagging = self.flush(timeout);
        if !lagging.is_empty() {
            self.fail(&format!(
                "flush timed out with lagging remotes {lagging:?}; status {:?}",
                self.status()
            ));
        }
    }

    /// The latest status line.
    pub fn status(&self) -> Option<MonitorStatus> {
        self.seen.lock().unwrap().status.clone()
    }

    /// Heartbeats received so far.
    /// Remotes whose detach the monitor confirmed so far.
    pub fn detached(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .detached
            .clone()
    }

    pub fn heartbeats(&self) -> u64 {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .heartbeats
    }

    /// Every landed batch the monitor reported so far, in order: (remote, batch).
    pub fn synced_batches(&self) -> Vec<(String, SyncedBatch)> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .synced
            .clone()
    }

    /// Every progress report seen in status lines so far, in order: (remote, progress).
    pub fn progress_reports(&self) -> Vec<(String, SyncProgress)> {
        self.seen.lock().unwrap().progress.clone()
    }

    /// Waits until the latest status satisfies `cond`; returns it.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&MonitorStatus) -> bool,
    ) -> MonitorStatus {
        let seen = self.seen.clone();
        let what = format!("status: {what}");
        poll_until(&what, timeout, POLL, || {
            seen.lock()
                .unwrap()
                .status
                .as_ref()
                .filter(|s| cond(s))
                .cloned()
        })
        .unwrap_or_else(|e| self.fail(&format!("{e}; last {:?}", self.status())))
    }

    /// Closes stdin and waits for the exit.
    pub fn close_stdin_and_wait(&mut self, timeout: Duration) -> ExitStatus {
        self.stdin = None;
        self.wait_exit(timeout)
    }

    /// Sends `shutdown` and waits for the exit.
    pub fn shutdown(&mut self, timeout: Duration) -> ExitStatus {
        self.send(&MonitorCommand::Shutdown);
        self.wait_exit(timeout)
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        poll_until("the monitor to exit", timeout, POLL, || {
            child.try_wait().ok().flatten()
        })
        .unwrap_or_else(|e| self.fail(&e.to_string()))
    }

    /// Everything the monitor logged.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.log_dir) {
            let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths {
                out.push_str(&format!("==> {} <==\n", path.display()));
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
        out
    }

    /// Fails the test with `message` (the log is printed when the fixture drops).
    pub fn fail(&self, message: &str) -> ! {
        panic!("{message}");
    }
}

impl Drop for MonitorProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- monitor logs ---\n{}", self.logs());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
