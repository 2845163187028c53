//! Filesystem calls on a user's paths (a workspace or target being checked, a WORKSPACE
//! argument given as a path), made with the state lock released, with a deadline, and in a
//! process of their own, so a path on a hung mount (NFS, sshfs, a FUSE server that never
//! answers) fails its request with "path X did not respond within 10 s" instead of blocking
//! the daemon.
//!
//! Why a process: a call waiting on a hung mount cannot be cancelled, and on NFS or FUSE it
//! cannot even be killed once the server has the request. A thread stuck like that would keep
//! the daemon from ever exiting; a child process stuck like that is left behind (SIGKILLed, and
//! reaped whenever it ends). The child is `wsyncd` itself, run with the hidden `--path-check`
//! flag: it reads one [`PathJob`] as a JSON line on stdin, does it, and writes one
//! [`PathAnswer`] line on stdout. While [`MAX_STUCK`] children are stuck, new checks are
//! refused instead of piling up processes.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};
use wsync_core::framing;
use wsync_core::protocol::Response;
use wsync_core::registry::{
    AttachError, NewRemote, NewWorkspace, Registry, Remote, RootIdentity, Workspace,
};
use wsync_core::remote::RemoteTarget;
use wsync_core::target_path;

use crate::handlers::{add_error_code, attach_error_code, chain, error, target_error_code};
use crate::target_check;

/// Checks past their deadline whose process may still be blocked before new checks are refused.
pub const MAX_STUCK: usize = 32;

/// The hidden command-line flag that makes `wsyncd` a check process.
pub const FLAG: &str = "--path-check";

/// One filesystem job on a user's path, done in a check process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum PathJob {
    /// A WORKSPACE argument: its canonical form (itself when it cannot be resolved).
    Canonicalize { path: PathBuf },
    /// `add`: the registry's checks of a new workspace (they look at its path).
    NewWorkspace {
        registry: Registry,
        path: PathBuf,
        name: Option<String>,
        excludes: Vec<String>,
    },
    /// `attach`: the registry's checks of a new remote for workspace `index` (they resolve a
    /// local target's path and an identity file).
    NewRemote {
        registry: Registry,
        index: usize,
        spec: String,
        name: Option<String>,
        port: Option<u16>,
        identity_file: Option<PathBuf>,
        ssh_options: Vec<String>,
        keep_deleted_days: u32,
        transport: wsync_core::registry::Transport,
        #[serde(default)]
        rsync_path: Option<String>,
    },
    /// `resume`: the identity of the workspace root now.
    RootIdentity { path: PathBuf },
    /// `restart`: why the entry must not be started, if it must not
    /// ([`target_check::refusal`]).
    EntryRefusal { workspace: Workspace },
    /// Daemon start-up: [`PathJob::EntryRefusal`], and when the entry may start and `adopt` is
    /// set (an entry from before target markers), its unmarked local targets get one
    /// ([`target_check::adopt_pre_marker_targets`]).
    StartupCheck { workspace: Workspace, adopt: bool },
    /// `attach`: inspect a local target, then create or mark it (see [`target_check`]).
    PrepareTarget {
        workspace: Workspace,
        remote: Remote,
        overwrite: bool,
    },
}

/// What a check process found.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum PathAnswer {
    Canonical {
        path: PathBuf,
    },
    Workspace {
        workspace: Workspace,
    },
    Remote {
        remote: Remote,
    },
    RootIdentity {
        root: Option<RootIdentity>,
    },
    /// The target is ours now; how, for the log.
    Prepared {
        description: String,
    },
    EntryRefusal {
        why: Option<String>,
    },
    /// The checks refused: the answer for the client.
    Refused {
        response: Response,
    },
    /// `attach` refused because the workspace already mirrors to `target` (which `attach
    /// --keep-deleted` turns into a change of that remote).
    AlreadyAttached {
        target: RemoteTarget,
        response: Response,
    },
}

impl PathJob {
    /// Does the job (in the check process).
    pub fn perform(self) -> PathAnswer {
        let refused = |code, message| PathAnswer::Refused {
            response: error(code, message),
        };
        match self {
            PathJob::Canonicalize { path } => PathAnswer::Canonical {
                path: path.canonicalize().unwrap_or(path),
            },
            PathJob::NewWorkspace {
                registry,
                path,
                name,
                excludes,
            } => {
                let new = NewWorkspace {
                    path,
                    name,
                    excludes,
                };
                match registry.check_new_workspace(&new) {
                    Ok(workspace) => PathAnswer::Workspace { workspace },
                    Err(e) => refused(add_error_code(&e), chain(&e)),
                }
            }
            PathJob::NewRemote {
                registry,
                index,
                spec,
                name,
                port,
                identity_file,
                ssh_options,
                keep_deleted_days,
                transport,
                rsync_path,
            } => {
                let new = NewRemote {
                    spec,
                    name,
                    port,
                    identity_file,
                    ssh_options,
                    keep_deleted_days,
                    transport,
                    rsync_path,
                };
                match registry.check_new_remote(index, &new) {
                    Ok(remote) => PathAnswer::Remote { remote },
                    Err(AttachError::AlreadyAttached { target, workspace }) => {
                        let e = AttachError::AlreadyAttached {
                            target: target.clone(),
                            workspace,
                        };
                        PathAnswer::AlreadyAttached {
                            target: *target,
                            response: error(attach_error_code(&e), chain(&e)),
                        }
                    }
                    Err(e) => refused(attach_error_code(&e), chain(&e)),
                }
            }
            PathJob::EntryRefusal { workspace } => PathAnswer::EntryRefusal {
                why: target_check::refusal(&workspace, &target_path::local_homes()),
            },
            PathJob::StartupCheck { workspace, adopt } => {
                let why = target_check::refusal(&workspace, &target_path::local_homes());
                if why.is_none() && adopt {
                    target_check::adopt_pre_marker_targets(&workspace);
                }
                PathAnswer::EntryRefusal { why }
            }
            PathJob::RootIdentity { path } => PathAnswer::RootIdentity {
                root: RootIdentity::of(&path),
            },
            PathJob::PrepareTarget {
                workspace,
                remote,
                overwrite,
            } => match target_check::prepare(&workspace, &remote, overwrite) {
                Ok(prepared) => PathAnswer::Prepared {
                    description: target_check::describe(prepared, &remote.target),
                },
                Err(e) => refused(target_error_code(&e), chain(&e)),
            },
        }
    }
}

/// The check process's `main`: one job from stdin, its answer on stdout.
pub fn serve_one() -> std::io::Result<()> {
    let mut input = std::io::BufReader::new(std::io::stdin().lock());
    let job: PathJob = framing::read_frame(&mut input).map_err(std::io::Error::other)?;
    let answer = job.perform();
    let mut out = std::io::stdout().lock();
    framing::write_frame(&mut out, &answer).map_err(std::io::Error::other)?;
    out.flush()
}

/// Why a path check gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum PathCheckError {
    #[error("path {} did not respond within {}; is it on a hung mount (NFS, sshfs, FUSE)? fix or unmount it, then try again", path.display(), seconds(*timeout))]
    TimedOut { path: PathBuf, timeout: Duration },
    #[error("{stuck} earlier checks of paths that did not respond are still blocked; fix the hung mount, then try again")]
    TooManyStuck { stuck: usize },
    #[error("cannot check {}", path.display())]
    Process {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// "10 s", or "0.5 s" for a deadline under a second.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The deadline, the executable of the check processes, and the ones left behind; cheap to
/// clone (clones share what was left behind).
#[derive(Debug, Clone)]
pub struct PathChecks {
    pub timeout: Duration,
    executable: PathBuf,
    stuck: Arc<Mutex<Vec<Child>>>,
}

impl PathChecks {
    /// Check processes run `executable` (wsyncd itself).
    pub fn new(timeout: Duration, executable: PathBuf) -> Self {
        Self {
            timeout,
            executable,
            stuck: Arc::default(),
        }
    }

    /// Check processes past their deadline that have not ended yet (reaping those that have).
    pub fn stuck(&self) -> usize {
        let mut stuck = self.stuck.lock().unwrap_or_else(|p| p.into_inner());
        stuck.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
        stuck.len()
    }

    /// Does `job` (filesystem calls on `path`) in a check process, waiting for it at most
    /// [`Self::timeout`].
    pub fn run(&self, path: &Path, job: &PathJob) -> Result<PathAnswer, PathCheckError> {
        self.run_within(path, self.timeout, job)
    }

    /// [`Self::run`] with another deadline.
    pub fn run_within(
        &self,
        path: &Path,
        timeout: Duration,
        job: &PathJob,
    ) -> Result<PathAnswer, PathCheckError> {
        let stuck = self.stuck();
        if stuck >= MAX_STUCK {
            return Err(PathCheckError::TooManyStuck { stuck });
        }
        let failed = |source| PathCheckError::Process {
            path: path.to_owned(),
            source,
        };
        let mut child = Command::new(&self.executable)
            .arg(FLAG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(failed)?;
        let deadline = Instant::now() + timeout;
        let answer = exchange(&mut child, job, deadline);
        let answer = match answer {
            Ok(Some(line)) => line,
            Ok(None) => {
                // Past the deadline: it is blocked in the kernel. SIGKILL ends it as soon as
                // the call returns (at once for a request the server has not taken yet).
                let _ = child.kill();
                tracing::warn!(
                    path = %path.display(),
                    pid = child.id(),
                    "path did not respond within {timeout:?}; its check process is left behind"
                );
                self.stuck
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(child);
                return Err(PathCheckError::TimedOut {
                    path: path.to_owned(),
                    timeout,
                });
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(e));
            }
        };
        // It answered, so it is exiting: this wait is short.
        let _ = child.wait();
        framing::decode(&answer).map_err(|e| failed(std::io::Error::other(e)))
    }
}

/// Sends `job` and reads the answer line until EOF or `deadline`; `Ok(None)` at the deadline.
fn exchange(
    child: &mut Child,
    job: &PathJob,
    deadline: Instant,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut stdin = child.stdin.take().ok_or_else(missing_pipe)?;
    // A job is small next to a pipe's buffer, and the child reads it first thing.
    framing::write_frame(&mut stdin, job).map_err(std::io::Error::other)?;
    drop(stdin);
    let mut stdout = child.stdout.take().ok_or_else(missing_pipe)?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        match stdout.read(&mut buffer) {
            Ok(0) => return Ok(Some(answer)),
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn missing_pipe() -> std::io::Error {
    std::io::Error::other("check process pipe missing")
}

#[cfg(test)]
mod tests {
    use wsync_core::protocol::ErrorCode;

    use super::*;

    /// Check processes run this test binary, which does not know `--path-check`; what runs
    /// is exercised end to end (tests/e2e/liveness.rs). Here: the deadline and the
    /// left-behind count, with `sleep` standing in for a call that hangs.
    fn checks(timeout: Duration, executable: &str) -> PathChecks {
        PathChecks::new(timeout, PathBuf::from(executable))
    }

    #[test]
    fn a_process_past_its_deadline_is_reported_left_behind_and_reaped_once_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        // Ignores its argument and stdin, then hangs for a while.
        let script = dir.path().join("hang");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 2\n").unwrap();
        let mut perms = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&script, perms).unwrap();
        let checks = checks(Duration::from_millis(100), script.to_str().unwrap());
        let job = PathJob::Canonicalize {
            path: "/mnt/hung/ws".into(),
        };
        let started = Instant::now();
        let err = checks.run(Path::new("/mnt/hung/ws"), &job).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(
            err.to_string(),
            "path /mnt/hung/ws did not respond within 0.1 s; is it on a hung mount (NFS, sshfs, FUSE)? fix or unmount it, then try again"
        );
        // SIGKILLed at the deadline: reaped at the next look.
        let deadline = Instant::now() + Duration::from_secs(10);
        while checks.stuck() != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(checks.stuck(), 0, "the ended check process was not reaped");
    }

    #[test]
    fn a_check_process_that_cannot_start_is_an_error_not_a_hang() {
        let checks = checks(Duration::from_secs(10), "/nonexistent/wsyncd");
        let job = PathJob::RootIdentity { path: "/x".into() };
        let err = checks.run(Path::new("/x"), &job).unwrap_err();
        assert!(matches!(err, PathCheckError::Process { .. }), "{err}");
    }

    #[test]
    fn jobs_are_done_in_process_too() {
        let dir = tempfile::tempdir().unwrap();
        let canonical = dir.path().canonicalize().unwrap();
        let job = PathJob::Canonicalize {
            path: canonical.join("."),
        };
        assert!(matches!(job.perform(), PathAnswer::Canonical { path } if path == canonical));
        let job = PathJob::NewWorkspace {
            registry: Registry::default(),
            path: canonical.join("missing"),
            name: None,
            excludes: vec![],
        };
        match job.perform() {
            PathAnswer::Refused {
                response: Response::Error { code, message },
            } => {
                assert_eq!(code, ErrorCode::Invalid);
                assert!(
                    message.contains("cannot be used as a workspace"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
