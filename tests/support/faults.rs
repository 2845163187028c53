//! Helpers for the fault-injection tests (`tests/e2e/faults*.rs`): workspace setup through the
//! `wsync` CLI, status polling (protocol) and `status --json` checks (CLI), freezing a process
//! tree with SIGSTOP/SIGCONT, read-only bind mounts and immutable directories that undo
//! themselves on drop, and a durable tree snapshot for "nothing was deleted" checks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wsync_core::monitor_proto::RemoteStatus;
use wsync_core::protocol::{Request, Response, WorkspaceStatus};

use crate::env::{descendants, pids_mentioning, TestEnv};
use crate::poll::{poll_until, INTERVAL};
use crate::sshd::{current_user, Sshd};

/// `WSYNC_LONG_FAULTS=1` runs the full-length variants (30 s outages) instead of the CI ones.
pub fn long_faults() -> bool {
    std::env::var_os("WSYNC_LONG_FAULTS").is_some_and(|v| v == "1")
}

/// Milliseconds since the epoch, as the status reports them.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A path as a CLI argument (test paths are UTF-8).
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// `wsync add PATH --name NAME`.
pub fn add_workspace(env: &TestEnv, path: &Path, name: &str) {
    env.wsync_ok(&["add", arg(path), "--name", name]);
}

/// `wsync attach WS PATH --name NAME` (waits for the initial sync).
pub fn attach_local(env: &TestEnv, ws: &str, path: &Path, name: &str) {
    attach_local_with(env, ws, path, name, &[]);
}

/// [`attach_local`] with `extra` arguments.
pub fn attach_local_with(env: &TestEnv, ws: &str, path: &Path, name: &str, extra: &[&str]) {
    let mut args = vec!["attach", ws, arg(path), "--name", name];
    args.extend_from_slice(extra);
    env.wsync_ok(&args);
}

/// `wsync attach WS user@127.0.0.1:PATH` through the test sshd (waits for the initial sync).
pub fn attach_ssh(env: &TestEnv, ws: &str, sshd: &Sshd, path: &Path, name: &str) {
    attach_ssh_with(env, ws, sshd, path, name, &[]);
}

/// [`attach_ssh`] with `extra` arguments.
pub fn attach_ssh_with(
    env: &TestEnv,
    ws: &str,
    sshd: &Sshd,
    path: &Path,
    name: &str,
    extra: &[&str],
) {
    let spec = format!("{}@127.0.0.1:{}", current_user(), arg(path));
    let port = sshd.port().to_string();
    let mut args = vec![
        "attach",
        ws,
        &spec,
        "--name",
        name,
        "--port",
        &port,
        "--identity-file",
        arg(sshd.identity_file()),
        "--ssh-option",
        "UserKnownHostsFile=/dev/null",
        "--ssh-option",
        "StrictHostKeyChecking=no",
        "--ssh-option",
        "LogLevel=ERROR",
    ];
    args.extend_from_slice(extra);
    env.wsync_ok(&args);
}

/// The daemon's status of one workspace, over the protocol (cheap enough to poll).
pub fn status(env: &TestEnv, ws: &str) -> WorkspaceStatus {
    match env.request(&Request::Status {
        workspace: Some(ws.into()),
    }) {
        Response::Status { mut workspaces } if workspaces.len() == 1 => workspaces.remove(0),
        other => env.fail(&format!("status of {ws} failed: {other:?}")),
    }
}

/// `wsync status WS --json`, parsed: what a user or script sees.
pub fn cli_status(env: &TestEnv, ws: &str) -> WorkspaceStatus {
    let out = env.wsync_ok(&["status", ws, "--json"]);
    let mut all: Vec<WorkspaceStatus> = serde_json::from_str(&out)
        .unwrap_or_else(|e| env.fail(&format!("status --json does not parse: {e}\n{out}")));
    if all.len() != 1 {
        env.fail(&format!(
            "status {ws} --json: expected one workspace\n{out}"
        ));
    }
    all.remove(0)
}

/// One remote's report in a status, if the monitor has reported it.
pub fn remote<'a>(status: &'a WorkspaceStatus, name: &str) -> Option<&'a RemoteStatus> {
    status
        .report
        .as_ref()
        .and_then(|r| r.remotes.iter().find(|r| r.name == name))
}

/// Polls the daemon's status (every 50 ms) until `cond` holds; fails with the last status.
pub fn wait_status(
    env: &TestEnv,
    ws: &str,
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut(&WorkspaceStatus) -> bool,
) -> WorkspaceStatus {
    let mut last = None;
    poll_until(what, timeout, Duration::from_millis(50), || {
        let s = status(env, ws);
        let held = cond(&s);
        last = Some(s);
        if held {
            last.take()
        } else {
            None
        }
    })
    .unwrap_or_else(|e| {
        let last = last.map_or_else(String::new, |s| format!("{s:#?}"));
        env.fail(&format!("{e}; last status:\n{last}"))
    })
}

/// `wsync flush WS --timeout SECS` must succeed.
pub fn flush_ok(env: &TestEnv, ws: &str, secs: u64) {
    env.wsync_ok(&["flush", ws, "--timeout", &secs.to_string()]);
}

/// Every remote of the report is in sync with nothing pending and no error: the status tells
/// the truth once the trees are known to be equal.
pub fn assert_all_in_sync(env: &TestEnv, s: &WorkspaceStatus) {
    let Some(report) = &s.report else {
        env.fail(&format!("no monitor report: {s:#?}"));
    };
    let ok = report.halted.is_none()
        && report.remotes.len() == s.workspace.remotes.len()
        && report.remotes.iter().all(|r| {
            r.state == wsync_core::monitor_proto::RemoteState::InSync
                && r.pending == 0
                && r.consecutive_failures == 0
                && r.last_error.is_none()
                && r.next_retry_unix_ms.is_none()
        });
    if !ok {
        env.fail(&format!("expected every remote in sync: {s:#?}"));
    }
}

/// A frozen process tree (SIGSTOP); thawed (SIGCONT) by [`Frozen::thaw`] or on drop.
pub struct Frozen {
    pids: Vec<u32>,
}

impl Frozen {
    /// Stops `root` first (so it forks nothing new), then its descendants until no new one
    /// appears.
    pub fn freeze(root: u32) -> Self {
        let mut pids = vec![root];
        let _ = kill(Pid::from_raw(root as i32), Signal::SIGSTOP);
        loop {
            let fresh: Vec<u32> = descendants(root)
                .into_iter()
                .filter(|p| !pids.contains(p))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for pid in fresh {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
                pids.push(pid);
            }
        }
        Self { pids }
    }

    /// How many processes are frozen.
    pub fn len(&self) -> usize {
        self.pids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }

    /// Continues every frozen process.
    pub fn thaw(mut self) {
        self.thaw_all();
    }

    fn thaw_all(&mut self) {
        for pid in self.pids.drain(..).rev() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.thaw_all();
    }
}

/// The pid of the test sshd's listener: the process started with `-f <root>/sshd/sshd_config`.
pub fn sshd_listener(root: &Path) -> Option<u32> {
    let config = root.join("sshd/sshd_config");
    let pids = pids_mentioning(&config);
    // Its sessions re-exec sshd with the same arguments; the listener is their ancestor.
    pids.iter()
        .copied()
        .find(|&p| pids.iter().all(|&q| q == p || !descendants(q).contains(&p)))
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A directory made unwritable in a way root cannot bypass, undone on drop.
pub enum Unwritable {
    /// A read-only bind mount of the directory onto itself.
    ReadOnlyBind(PathBuf),
    /// `chattr +i` on the directory (no entries can be created or removed in it).
    Immutable(PathBuf),
}

impl Unwritable {
    /// Tries a read-only bind mount, then `chattr +i`; the error says why neither worked.
    pub fn make(dir: &Path) -> Result<Self, String> {
        let path = arg(dir);
        let bind = run("mount", &["--bind", path, path]).and_then(|()| {
            run("mount", &["-o", "remount,ro,bind", path]).inspect_err(|_| {
                let _ = run("umount", &["-l", path]);
            })
        });
        let bind_err = match bind {
            Ok(()) => return Ok(Self::ReadOnlyBind(dir.to_owned())),
            Err(e) => e,
        };
        match run("chattr", &["+i", path]) {
            Ok(()) => Ok(Self::Immutable(dir.to_owned())),
            Err(chattr_err) => Err(format!(
                "no way to make a directory unwritable for root here: {bind_err}; {chattr_err}"
            )),
        }
    }

    /// `chattr +i` only (root's ext4 under /tmp has it, tmpfs does not): the directory's own
    /// inode refuses changes, through any handle already open on it too.
    pub fn immutable(dir: &Path) -> Result<Self, String> {
        run("chattr", &["+i", arg(dir)]).map(|()| Self::Immutable(dir.to_owned()))
    }

    /// What was done, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::ReadOnlyBind(p) => format!("read-only bind mount on {}", p.display()),
            Self::Immutable(p) => format!("chattr +i on {}", p.display()),
        }
    }

    /// Makes the directory writable again.
    pub fn undo(self) -> Result<(), String> {
        let result = self.undo_ref();
        std::mem::forget(self);
        result
    }

    fn undo_ref(&self) -> Result<(), String> {
        match self {
            Self::ReadOnlyBind(p) => run("umount", &[arg(p)])
                .or_else(|e| run("umount", &["-l", arg(p)]).map_err(|e2| format!("{e}; {e2}"))),
            Self::Immutable(p) => run("chattr", &["-i", arg(p)]),
        }
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        let _ = self.undo_ref();
    }
}

/// A mount point of a fresh tmpfs, unmounted (lazily) on drop unless already gone.
pub struct TmpfsMount {
    path: PathBuf,
    mounted: bool,
}

impl TmpfsMount {
    pub fn mount(path: &Path) -> Result<Self, String> {
        Self::mount_with(path, "size=64m")
    }

    /// [`TmpfsMount::mount`] with the mount `options` (e.g. `size=512m,noexec`).
    pub fn mount_with(path: &Path, options: &str) -> Result<Self, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        run(
            "mount",
            &["-t", "tmpfs", "-o", options, "wsync-test", arg(path)],
        )?;
        Ok(Self {
            path: path.to_owned(),
            mounted: true,
        })
    }

    /// Unmounts it now (the directory below shows through).
    pub fn unmount(&mut self) -> Result<(), String> {
        run("umount", &["-l", arg(&self.path)])?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = run("umount", &["-l", arg(&self.path)]);
        }
    }
}

/// A copy of `src` at `dst` (`cp -a`), to compare a remote against later.
pub fn snapshot(src: &Path, dst: &Path) {
    if let Err(e) = run("cp", &["-a", arg(src), arg(dst)]) {
        panic!("snapshot of {}: {e}", src.display());
    }
}

/// Writes `text` to `path`, creating parent directories.
pub fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("creating parent directories");
    }
    std::fs::write(path, text).expect("writing a test file");
}

/// Waits until `pid` is gone (or a zombie); returns whether it went.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let what = format!("process {pid} to go");
    poll_until(&what, timeout, INTERVAL, || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.is_empty()
            || stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
    })
    .is_ok()
}
