//! `TestEnv`: one isolated wsync installation per test — its own temp dir, config file
//! (`WSYNC_CONFIG_PATH`), `HOME`, socket, registry and log directory — plus the real binaries,
//! deadline-bounded waits, and a log dump when the test fails.

use std::ffi::OsStr;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wsync_core::framing::{read_frame, write_frame};
use wsync_core::protocol::{Request, Response, PROTOCOL_VERSION};

use crate::poll::{poll_until, INTERVAL};

/// How long a test waits for the daemon to answer after starting it.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one `wsync` CLI invocation may take before the test fails.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// The directory holding the built binaries (`target/debug`), found from the test executable.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_owned()
}

/// Path of a built wsync binary; panics with the fix when it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Whether a process exists (a zombie counts).
pub fn pid_alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Pids of live, non-zombie processes whose command line mentions `needle` (e.g. a test's dir).
pub fn pids_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
        {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            found.push(pid);
        }
    }
    found
}

/// All descendants of `pid`, parents before children ([`wsync_core::platform::children_of`]
/// level by level).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let children = wsync_core::platform::children_of(found[i]);
        found.extend(children);
        i += 1;
    }
    found.remove(0);
    found
}

/// The result of one CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// One isolated wsync installation.
pub struct TestEnv {
    _dir: tempfile::TempDir,
    /// Canonical path of the temp dir; everything of this test lives below it.
    pub root: PathBuf,
    pub home: PathBuf,
    pub config_path: PathBuf,
    pub socket: PathBuf,
    pub registry: PathBuf,
    pub log_dir: PathBuf,
    daemon: Option<Child>,
    /// Set by [`TestEnv::run_as`]: the daemon and the CLI run as this uid and gid.
    user: Option<(u32, u32)>,
}

impl TestEnv {
    /// A fresh environment whose config sets every path key; nothing is started.
    pub fn new() -> Self {
        Self::with_config("")
    }

    /// Like [`TestEnv::new`], with extra `KEY=VALUE` lines appended to the config.
    pub fn with_config(extra: &str) -> Self {
        // Keep the path short: the socket lives below it and unix socket paths are ~108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("wst")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let home = root.join("home");
        std::fs::create_dir_all(&home).expect("home dir");
        let config_path = root.join("wsync.config");
        let socket = root.join("wsync/wsyncd.sock");
        let registry = root.join("registry.json");
        let log_dir = root.join("log");
        // The suite's watch-mode pass (WSYNC_TEST_WATCH_MODE), unless the test picks its own.
        let pass = crate::watch_mode::config_lines(extra);
        let config = format!(
            "# written by the test fixture\nWorkspaceConfigFilePath={}\nDaemonCommandSocketPath={}\nLogDirectory={}\nMonitorExecutablePath={}\n{pass}{extra}\n",
            registry.display(),
            socket.display(),
            log_dir.display(),
            bin_dir().join("wsync-monitor").display(),
        );
        std::fs::write(&config_path, config).expect("write config");
        Self {
            _dir: dir,
            root,
            home,
            config_path,
            socket,
            registry,
            log_dir,
            daemon: None,
            user: None,
        }
    }

    /// From now on the daemon and the CLI run as `uid`/`gid` (a throwaway user the test
    /// created: per-user kernel limits such as `fs.inotify.max_user_instances` are then its
    /// own, not shared with the rest of the suite), and everything below the test root is
    /// given to it. The daemon answers only its own user, so [`TestEnv::try_request`] (from
    /// this process) is refused: use the CLI. Call [`TestEnv::give_to_user`] for what the test
    /// creates later.
    pub fn run_as(&mut self, uid: u32, gid: u32) {
        self.user = Some((uid, gid));
        self.give_to_user(&self.root);
    }

    /// Gives `path` and everything below it (links themselves, not their targets) to the
    /// user of [`TestEnv::run_as`].
    pub fn give_to_user(&self, path: &Path) {
        let Some((uid, gid)) = self.user else {
            return;
        };
        let mut stack = vec![path.to_path_buf()];
        while let Some(path) = stack.pop() {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to uid {uid}: {e}", path.display()));
            if path.is_dir() && !path.is_symlink() {
                for entry in std::fs::read_dir(&path)
                    .expect("listing a test dir")
                    .flatten()
                {
                    stack.push(entry.path());
                }
            }
        }
    }

    /// A command for a wsync binary with this environment's config, `HOME` and no
    /// `XDG_RUNTIME_DIR`, so nothing can reach the real user's files.
    pub fn command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(bin(binary));
        cmd.env("WSYNC_CONFIG_PATH", &self.config_path)
            .env("HOME", &self.home)
            .env_remove("XDG_RUNTIME_DIR")
            .env("NO_COLOR", "1")
            .current_dir(&self.root);
        if let Some((uid, gid)) = self.user {
            // As root, std drops the supplementary groups too.
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        }
        cmd
    }

    /// Creates a directory below the test root and returns its path.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let path = self.root.join(rel);
        std::fs::create_dir_all(&path).expect("mkdir");
        path
    }

    /// Starts `wsyncd` in the foreground and waits until it answers on its socket.
    pub fn start_daemon(&mut self) -> u32 {
        self.start_daemon_with_env(&[])
    }

    /// [`TestEnv::start_daemon`] with extra environment variables (the test-only switches).
    pub fn start_daemon_with_env(&mut self, vars: &[(&str, &OsStr)]) -> u32 {
        assert!(self.daemon.is_none(), "daemon already started by this test");
        let mut cmd = self.command("wsyncd");
        for (key, value) in vars {
            cmd.env(key, value);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsyncd");
        let pid = child.id();
        self.daemon = Some(child);
        let answered = poll_until(
            "wsyncd to answer on its socket",
            DAEMON_START_TIMEOUT,
            INTERVAL,
            || {
                if let Some(status) = self.daemon_exit_status() {
                    self.fail(&format!("wsyncd exited during startup with {status}"));
                }
                if self.user.is_some() {
                    // Another user's daemon refuses this process: ask through the CLI.
                    return self.wsync(&["daemon", "status"]).success();
                }
                self.try_request(&Request::DaemonInfo {}).is_ok()
            },
        );
        if let Err(e) = answered {
            self.fail(&e.to_string());
        }
        pid
    }

    /// Runs a `wsyncd` that is expected to exit by itself (refusing to start), with a
    /// deadline; returns its output.
    pub fn run_daemon_expecting_exit(&self) -> std::process::Output {
        let mut child = self
            .command("wsyncd")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsyncd");
        if poll_until(
            "wsyncd to exit by itself",
            Duration::from_secs(10),
            INTERVAL,
            || matches!(child.try_wait(), Ok(Some(_))),
        )
        .is_err()
        {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wsyncd output");
            self.fail(&format!(
                "wsyncd was expected to exit at once but still ran after 10 s\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        child.wait_with_output().expect("wsyncd output")
    }

    /// The daemon started by this test, if still tracked.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// `Some(status)` when the daemon this test started has exited.
    pub fn daemon_exit_status(&mut self) -> Option<ExitStatus> {
        self.daemon
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends `signal` to the daemon and waits (bounded) for it to exit; returns its status.
    pub fn signal_daemon(&mut self, signal: Signal, timeout: Duration) -> ExitStatus {
        let mut child = self.daemon.take().expect("no daemon started");
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
        let exited = poll_until("wsyncd to exit", timeout, INTERVAL, || {
            child.try_wait().ok().flatten()
        });
        exited.unwrap_or_else(|_| {
            let _ = child.kill();
            let _ = child.wait();
            self.fail(&format!(
                "wsyncd did not exit within {timeout:?} after {signal}"
            ))
        })
    }

    /// Waits (bounded) for the daemon to exit on its own; returns its status.
    pub fn wait_daemon_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = poll_until("wsyncd to exit", timeout, INTERVAL, || {
            self.daemon_exit_status()
        })
        .unwrap_or_else(|e| self.fail(&e.to_string()));
        self.daemon = None;
        status
    }

    /// SIGTERM, waiting for a clean exit.
    pub fn stop_daemon(&mut self) -> ExitStatus {
        self.signal_daemon(Signal::SIGTERM, Duration::from_secs(30))
    }

    /// SIGKILL, as a crash.
    pub fn kill_daemon(&mut self) {
        self.signal_daemon(Signal::SIGKILL, Duration::from_secs(10));
    }

    /// Forgets the daemon without stopping it (e.g. after `wsync daemon stop` ended it).
    pub fn forget_daemon(&mut self) -> Option<Child> {
        self.daemon.take()
    }

    /// Runs the CLI with a deadline.
    pub fn wsync(&self, args: &[&str]) -> CliOutput {
        self.wsync_in(&self.root, args)
    }

    /// Runs the CLI in directory `cwd` (a workspace, for commands that default to it).
    pub fn wsync_in(&self, cwd: &Path, args: &[&str]) -> CliOutput {
        let mut child = self
            .command("wsync")
            .current_dir(cwd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsync");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let finished = poll_until("wsync to finish", CLI_TIMEOUT, INTERVAL, || {
            child.try_wait().ok().flatten()
        });
        let status = finished.unwrap_or_else(|_| {
            let _ = child.kill();
            let _ = child.wait();
            self.fail(&format!(
                "`wsync {}` did not finish within {CLI_TIMEOUT:?}",
                args.join(" ")
            ))
        });
        CliOutput {
            status,
            stdout: out_reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
        }
    }

    /// Runs the CLI and returns stdout; fails the test (with logs) on a non-zero exit.
    pub fn wsync_ok(&self, args: &[&str]) -> String {
        let out = self.wsync(args);
        if !out.success() {
            self.fail(&format!(
                "`wsync {}` failed with {}\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                out.status,
                out.stdout,
                out.stderr
            ));
        }
        out.stdout
    }

    /// Sends one request on a fresh connection (after the Hello handshake).
    pub fn try_request(&self, request: &Request) -> Result<Response, String> {
        let stream = UnixStream::connect(&self.socket).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
            version: wsync_core::VERSION.into(),
        };
        write_frame(&mut writer, &hello).map_err(|e| e.to_string())?;
        let _: Response = read_frame(&mut reader).map_err(|e| e.to_string())?;
        write_frame(&mut writer, request).map_err(|e| e.to_string())?;
        read_frame(&mut reader).map_err(|e| e.to_string())
    }

    /// [`TestEnv::try_request`] that fails the test when the daemon does not answer.
    pub fn request(&self, request: &Request) -> Response {
        self.try_request(request)
            .unwrap_or_else(|e| self.fail(&format!("request {request:?} failed: {e}")))
    }

    /// Every log file below the log directory, concatenated with headers.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<_> = std::fs::read_dir(&self.log_dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for file in files {
            let text = std::fs::read(&file).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let tail: Vec<&str> = text.lines().rev().take(200).collect();
            out.push_str(&format!(
                "===== {} (last {} lines) =====\n",
                file.display(),
                tail.len()
            ));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Fails the test with `message` and the daemon and monitor logs.
    pub fn fail(&self, message: &str) -> ! {
        panic!("{message}\n\n{}", self.logs());
    }

    /// Writes an executable hook that appends its environment as one `|`-separated line
    /// (workspace, remote, state, error) to `hook.log` in the test root, and points
    /// `HookCommand` at it (before the daemon starts). Returns the log's path, for
    /// [`hook_lines`].
    pub fn install_hook(&self) -> PathBuf {
        let log = self.root.join("hook.log");
        let hook = self.root.join("hook");
        let script = format!(
            "#!/bin/sh\nprintf '%s|%s|%s|%s\\n' \"$WSYNC_WORKSPACE\" \"$WSYNC_REMOTE\" \"$WSYNC_STATE\" \"$WSYNC_ERROR\" >> '{}'\n",
            log.display()
        );
        std::fs::write(&hook, script).expect("writing the test hook");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .expect("making the test hook executable");
        let mut config = std::fs::File::options()
            .append(true)
            .open(&self.config_path)
            .expect("opening the test config");
        writeln!(config, "HookCommand={}", hook.display()).expect("writing the test config");
        log
    }
}

/// The lines the hook of [`TestEnv::install_hook`] has logged so far, one per run.
pub fn hook_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if let Some(mut child) = self.daemon.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let exited = poll_until("wsyncd to exit", Duration::from_secs(10), INTERVAL, || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if exited.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Anything of this test still running (a crashed daemon's monitors, rsync, sshd) goes too.
        for pid in pids_mentioning(&self.root) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}
