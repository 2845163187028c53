//! A real `wsyncd` for the soak run, isolated like the test fixture: its own config file
//! (`WSYNC_CONFIG_PATH`), `HOME`, socket, registry and logs under the run's tmpfs directory; a
//! socket client speaking the daemon protocol; and a `Drop` that stops everything it started.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wsync_core::framing::{read_frame, write_frame};
use wsync_core::protocol::{Request, Response, WorkspaceStatus, PROTOCOL_VERSION};
use wsync_tests::env::pids_mentioning;

use crate::monitor::{monitor_bin, sibling_bin};

/// A running `wsyncd`. Dropping it shuts the daemon down (its monitors follow it) and kills
/// anything still running from the run's directory.
pub struct Daemon {
    child: Option<Child>,
    root: PathBuf,
    socket: PathBuf,
    log_dir: PathBuf,
}

impl Daemon {
    /// Writes a config under `root` and starts `wsyncd` in the foreground with it.
    pub fn start(root: &Path) -> Result<Self> {
        let wsyncd = sibling_bin("wsyncd")?;
        let home = root.join("home");
        std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        let config = root.join("wsync.config");
        let socket = root.join("run/wsyncd.sock");
        let log_dir = root.join("log");
        std::fs::write(
            &config,
            format!(
                "# written by wsync-bench soak\nWorkspaceConfigFilePath={}\nDaemonCommandSocketPath={}\nLogDirectory={}\nMonitorExecutablePath={}\n",
                root.join("registry.json").display(),
                socket.display(),
                log_dir.display(),
                monitor_bin()?.display(),
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let stderr = std::fs::File::create(root.join("wsyncd.stderr"))?;
        let child = Command::new(&wsyncd)
            .env("WSYNC_CONFIG_PATH", &config)
            .env("HOME", &home)
            .env_remove("XDG_RUNTIME_DIR")
            .env("NO_COLOR", "1")
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", wsyncd.display()))?;
        // scripts/soak.sh kills this pid if the run itself is killed.
        std::fs::write(root.join("wsyncd.pid"), child.id().to_string())?;
        let mut daemon = Self {
            child: Some(child),
            root: root.to_path_buf(),
            socket,
            log_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if daemon.request(&Request::DaemonInfo {}).is_ok() {
                return Ok(daemon);
            }
            if let Some(child) = daemon.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "wsyncd exited at startup with {status}\n{}",
                        daemon.logs(40)
                    );
                }
            }
            if Instant::now() > deadline {
                bail!("wsyncd did not answer within 15 s\n{}", daemon.logs(40));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where the daemon and its monitors write their logs.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the daemon process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends one request on a fresh connection, after the `Hello` handshake.
    pub fn request(&self, request: &Request) -> Result<Response> {
        let stream = UnixStream::connect(&self.socket)
            .with_context(|| format!("connecting to {}", self.socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
            version: wsync_core::VERSION.into(),
        };
        write_frame(&mut writer, &hello)?;
        let _: Response = read_frame(&mut reader)?;
        write_frame(&mut writer, request)?;
        Ok(read_frame(&mut reader)?)
    }

    /// [`Daemon::request`] that turns an error response into an error.
    pub fn ok(&self, request: &Request) -> Result<Response> {
        match self.request(request)? {
            Response::Error { code, message } => bail!("{request:?}: {code:?}: {message}"),
            other => Ok(other),
        }
    }

    /// Adds workspace `name` at `src` and attaches the local remote `mirror` at `dst`, without
    /// waiting for its initial sync.
    pub fn add_mirrored(&self, name: &str, src: &Path, dst: &Path) -> Result<()> {
        self.ok(&Request::Add {
            path: src.to_path_buf(),
            name: Some(name.into()),
            excludes: Vec::new(),
        })?;
        self.ok(&Request::Attach {
            workspace: name.into(),
            target: dst.to_string_lossy().into_owned(),
            name: Some("mirror".into()),
            port: None,
            identity_file: None,
            ssh_options: Vec::new(),
            wait: false,
            overwrite: false,
            keep_deleted: None,
            transport: Default::default(),
            rsync_path: None,
        })?;
        Ok(())
    }

    /// Every workspace's status.
    pub fn status(&self) -> Result<Vec<WorkspaceStatus>> {
        match self.ok(&Request::Status { workspace: None })? {
            Response::Status { workspaces } => Ok(workspaces),
            other => bail!("unexpected answer to status: {other:?}"),
        }
    }

    /// Flushes one workspace; returns the remotes still lagging at the deadline.
    pub fn flush(&self, workspace: &str, timeout: Duration) -> Result<Vec<String>> {
        let request = Request::Flush {
            workspace: workspace.into(),
            timeout_ms: Some(timeout.as_millis() as u64),
        };
        match self.ok(&request)? {
            Response::Flushed { lagging, .. } => Ok(lagging),
            other => bail!("unexpected answer to flush: {other:?}"),
        }
    }

    /// The last `lines` lines of the daemon's stderr and of every log file.
    pub fn logs(&self, lines: usize) -> String {
        let mut files = vec![self.root.join("wsyncd.stderr")];
        if let Ok(rd) = std::fs::read_dir(&self.log_dir) {
            let mut logs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            logs.sort();
            files.extend(logs);
        }
        let mut out = String::new();
        for file in files {
            let text = std::fs::read(&file).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            if tail.is_empty() {
                continue;
            }
            out.push_str(&format!("===== {} =====\n", file.display()));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Asks the daemon to shut down and waits for it; returns how long that took.
    pub fn shutdown(&mut self) -> Result<Duration> {
        let start = Instant::now();
        let answer = self.request(&Request::Shutdown {});
        let Some(mut child) = self.child.take() else {
            bail!("wsyncd is not running");
        };
        let deadline = start + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                let _ = std::fs::remove_file(self.root.join("wsyncd.pid"));
                answer.context("shutdown request")?;
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(self.root.join("wsyncd.pid"));
        bail!("wsyncd did not exit within 30 s of a shutdown request ({answer:?})")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(self.root.join("wsyncd.pid"));
        }
        // Monitors die with the daemon; anything else of this run (rsync) goes too.
        for pid in pids_mentioning(&self.root) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}
