//! The monitor's side of the SSH agent ([`wsync_core::agent`]): one agent session per SSH
//! remote, started over the remote's ssh master; installed on first use (this binary uploaded
//! into `${XDG_CACHE_HOME:-~/.cache}/wsync/<version>/` when the remote's `uname -sm` matches:
//! a temp name, mode 0755, `cksum` compared, `--version` run, renamed into place); and the
//! fallback: a remote whose agent cannot be installed or run, or speaks no common protocol,
//! goes by rsync, and its status says why. A session that breaks (the agent killed, the
//! connection lost) leaves that batch's paths to rsync and is started again by the next batch.
//!
//! A batch is planned as for a local target (`in_process::plan`), the puts' content read here,
//! and the ops streamed to the agent in frames of at most [`CHUNK_BYTES`], all written before
//! any answer is read (pipelined), each preceded by an `Open` that checks the target's marker
//! again — in the same round trip. A batch's renames go in that round trip too when the rest
//! of the batch does not depend on them (`Destination::replay_and_apply_by_agent`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use wsync_core::agent::{self, Hello, Payload, Refusal, Reply, Request};
use wsync_core::executor::{Applied, ContentSource, Op, OpResult, SourceError, PUT_MAX_DEFAULT};
use wsync_core::framing::{self, FrameError};
use wsync_core::monitor_proto::TransportStatus;
use wsync_core::registry::Transport;
use wsync_core::remote::RemoteTarget;
use wsync_core::rsync::DEFAULT_TIMEOUT_SECS;
use wsync_core::ssh::{quote_posix_sh, SshEndpoint};

use super::destination::Stdin;
use super::in_process::{self, Pass, Plan, Workspace};
use super::renames::Replayed;
use super::{Destination, Outcome};
use crate::blocking::StallReport;
use crate::queue::Rename;

/// The most bytes (ops and content) one `Apply` request carries: big enough that a burst is a
/// few frames, small enough that the agent starts on the first while the rest are in flight.
const CHUNK_BYTES: usize = 4 << 20;
/// The most ops one `Apply` carries (its JSON must stay under the frame limit).
const CHUNK_OPS: usize = 2_000;
/// How long the agent's hello may take after its ssh session starts: about as long as ssh
/// takes to give up on a server that stopped answering (its ServerAlive probes).
const HELLO_TIMEOUT: Duration = Duration::from_secs(8);
/// After a session could not be started for a reason that may pass (the connection), the
/// remote goes by rsync this long before an agent is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// The line the start command prints when no agent is installed.
const MISSING: &str = "wsync-agent-missing";
/// The prefix of the install script's answer.
const INSTALL: &str = "wsync-install: ";

/// Where a remote stands with its agent.
enum Mode {
    /// Not tried yet, or retry after the instant.
    Untried {
        not_before: Option<Instant>,
    },
    Running(Box<Session>),
    /// rsync for the monitor's life (the setting, or the agent cannot be used here).
    Rsync,
}

/// One remote's agent link: its session and what status shows. Shared by the clones of its
/// [`Destination`].
pub struct Link {
    mode: tokio::sync::Mutex<Mode>,
    status: Mutex<TransportStatus>,
    /// Set once the remote goes by rsync for good: its batches skip the agent's planning.
    rsync_only: AtomicBool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("status", &self.status())
            .finish()
    }
}

impl Link {
    /// The link for a remote of `target` with the `transport` setting, under the config's
    /// `configured` one.
    pub fn new(target: &RemoteTarget, transport: Transport, configured: Transport) -> Arc<Self> {
        let (mode, status) = match (target, transport) {
            _ if configured == Transport::Rsync => (
                Mode::Rsync,
                TransportStatus::Rsync {
                    why: "the config's Transport setting is rsync".into(),
                },
            ),
            (_, Transport::Rsync) => (
                Mode::Rsync,
                TransportStatus::Rsync {
                    why: "the remote's transport setting is rsync".into(),
                },
            ),
            (RemoteTarget::Local { .. }, Transport::Auto) => (
                Mode::Untried { not_before: None },
                TransportStatus::InProcess,
            ),
            (RemoteTarget::Ssh { .. }, Transport::Auto) => (
                Mode::Untried { not_before: None },
                TransportStatus::Rsync {
                    why: "no change sent yet (the agent starts with the first)".into(),
                },
            ),
        };
        Arc::new(Self {
            rsync_only: AtomicBool::new(matches!(mode, Mode::Rsync)),
            mode: tokio::sync::Mutex::new(mode),
            status: Mutex::new(status),
        })
    }

    /// What status shows for the remote's transport.
    pub fn status(&self) -> TransportStatus {
        match self.status.lock() {
            Ok(status) => status.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_status(&self, status: TransportStatus) {
        match self.status.lock() {
            Ok(mut guard) => *guard = status,
            Err(poisoned) => *poisoned.into_inner() = status,
        }
    }

    /// True when small changes may go by an agent on this remote (not rsync for good).
    pub fn may_send(&self) -> bool {
        !self.rsync_only.load(Ordering::Relaxed)
    }

    /// Ends the session (detach, shutdown): its ssh client is killed and reaped, and the
    /// agent sees its stdin close and exits. Waits for the batch using the session, if any.
    pub async fn close(&self) {
        let mut mode = self.mode.lock().await;
        if matches!(*mode, Mode::Running(_)) {
            let ended = std::mem::replace(&mut *mode, Mode::Untried { not_before: None });
            if let Mode::Running(session) = ended {
                let mut child = session.child;
                let _ = child.kill().await;
            }
        }
    }
}

/// A running agent: its ssh client process and pipes.
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    protocol: u32,
    hello: Hello,
}

/// Why no session could be started.
enum StartError {
    /// No agent there, or one that does not run, or speaks no protocol of ours: install.
    Install(String),
    /// ssh itself failed: rsync for now, try later.
    Connection(String),
}

impl Destination {
    /// Applies what of `paths` it can through this SSH remote's agent (see [`in_process`] for
    /// what may go so); everything is left to rsync when no agent can be had.
    pub(super) async fn run_agent(
        &self,
        root: &Path,
        paths: Vec<PathBuf>,
        rules: bool,
        max_delete: Option<u64>,
        stall: StallReport<'_>,
    ) -> Pass {
        let started = Instant::now();
        let plan = self.plan_for_agent(root, paths, rules, stall).await;
        if plan.ops.is_empty() {
            return done_nothing(plan.rest, started);
        }
        let frames = ApplyFrames::new(root, &plan.ops, max_delete);
        let (replies, counts) = match self.exchange_opened(Vec::new(), Some(frames)).await {
            Exchanged::NoAgent => return everything_to_rsync(plan),
            // The connection is down: rsync would meet the same, so the batch fails now and
            // is retried with backoff like any batch whose connection failed.
            Exchanged::ConnectionFailed(why) => {
                return Pass::Stop(Outcome::failed(
                    wsync_core::rsync::ExitClass::Connection,
                    why,
                    started,
                ))
            }
            Exchanged::Replies { replies, counts } => (replies, counts),
        };
        let counts = every_op_counted(counts, plan.ops.len());
        let mut replies = replies.into_iter();
        match replies.next() {
            Some(Reply::Opened) => {}
            Some(Reply::Refused { refusal, message }) => {
                return Pass::Stop(Outcome::failed(
                    wsync_core::rsync::ExitClass::Fatal,
                    self.refused(refusal, &message),
                    started,
                ));
            }
            _ => return everything_to_rsync(plan),
        }
        let applied = gather_applied(&counts, &mut replies);
        in_process::finish(plan, applied, max_delete, started)
    }

    /// The ops of `paths` as the agent takes them (`in_process::plan` with the wire's limits),
    /// planned off the loop: it stats the source.
    async fn plan_for_agent(
        &self,
        root: &Path,
        paths: Vec<PathBuf>,
        rules: bool,
        stall: StallReport<'_>,
    ) -> Plan {
        let owned = root.to_path_buf();
        let call = format!("planning the batch's small files in {}", root.display());
        self.blocking(call, stall, move || {
            in_process::plan(&owned, paths, rules, true)
        })
        .await
    }

    /// A batch's renames and its other changes in one exchange, one round trip instead of
    /// two: `Open`, the renames' `Apply` (`stop_unless_done`), then the changes' `Apply`
    /// frames, all written before any answer is read. Only for a batch where the changes do
    /// not depend on the renames: one frame of renames and no changed path at or below either
    /// end of one, so a rename that does not apply leaves the changes right, and the rsync of
    /// its ends does the rest (under the deletion budget the exchange left: the caller
    /// subtracts what it deleted). `None` when the batch is not such, or nothing was sent (no
    /// agent, the connection down): the caller replays and applies in two steps.
    pub(super) async fn replay_and_apply_by_agent(
        &self,
        root: &Path,
        renames: &[Rename],
        paths: &[PathBuf],
        rules: bool,
        max_delete: Option<u64>,
        stall: StallReport<'_>,
    ) -> Option<(Replayed, Pass)> {
        let started = Instant::now();
        let [chunk] = rename_chunks(renames)[..] else {
            return None;
        };
        let below_an_end = |p: &PathBuf| {
            chunk
                .iter()
                .any(|r| p.starts_with(&r.from) || p.starts_with(&r.to))
        };
        if !self.agent.may_send() || paths.is_empty() || paths.iter().any(below_an_end) {
            tracing::debug!(remote = %self.remote.name, "renames first, in an exchange of their own: a change at or below a rename's end");
            return None;
        }
        let plan = self
            .plan_for_agent(root, paths.to_vec(), rules, stall)
            .await;
        if plan.ops.is_empty() {
            return None;
        }
        let renames = vec![framing::encode(&rename_apply(chunk, false))];
        let frames = ApplyFrames::new(root, &plan.ops, max_delete);
        let (replies, counts) = match self.exchange_opened(renames, Some(frames)).await {
            Exchanged::Replies { replies, counts } => (replies, counts),
            Exchanged::NoAgent | Exchanged::ConnectionFailed(_) => return None,
        };
        let counts = every_op_counted(counts, plan.ops.len());
        let mut replies = replies.into_iter();
        let (opened, answer) = (replies.next(), replies.next());
        let replayed = match self.rename_answer(chunk, 0, opened, answer) {
            Ok(done) => Replayed {
                done,
                ..Replayed::default()
            },
            Err(stopped) => stopped,
        };
        tracing::debug!(remote = %self.remote.name, renames = replayed.done, "renames and changes in one exchange with the agent");
        let applied = gather_applied(&counts, &mut replies);
        Some((
            replayed,
            in_process::finish(plan, applied, max_delete, started),
        ))
    }

    /// What the agent's answers to one chunk of renames (after `done` applied before it) say:
    /// `Ok` with the renames done in all when every one of the chunk applied, else the replay
    /// as it stopped.
    fn rename_answer(
        &self,
        chunk: &[Rename],
        done: usize,
        opened: Option<Reply>,
        answer: Option<Reply>,
    ) -> Result<usize, Replayed> {
        let results = match (opened, answer) {
            (Some(Reply::Opened), Some(Reply::Applied { results, .. }))
                if results.len() == chunk.len() =>
            {
                results
            }
            (Some(Reply::Refused { refusal, message }), _) => {
                return Err(Replayed {
                    done,
                    refused: Some(self.refused(refusal, &message)),
                    stopped: Some(message),
                    diverged: None,
                })
            }
            // No answer: rsync sends both ends of this and every later rename.
            _ => {
                return Err(Replayed {
                    done,
                    stopped: Some("no answer from the agent".into()),
                    ..Replayed::default()
                })
            }
        };
        let applied = results.iter().take_while(|r| **r == OpResult::Done).count();
        if applied == chunk.len() {
            return Ok(done + applied);
        }
        let rename = &chunk[applied];
        let (why, diverged) = match &results[applied] {
            OpResult::NotApplied => ("the remote does not match".to_owned(), None),
            OpResult::Failed {
                message, diverged, ..
            } => (message.clone(), diverged.clone()),
            other => (format!("{other:?}"), None),
        };
        // Only a directory on the way to this rename's ends is taken from the remote.
        let diverged = diverged.filter(|p| {
            !p.as_os_str().is_empty()
                && [&rename.from, &rename.to]
                    .iter()
                    .any(|end| end.starts_with(p) && *end != p)
        });
        Err(Replayed {
            done: done + applied,
            stopped: Some(format!("{rename:?}: {why}")),
            refused: None,
            diverged,
        })
    }

    /// Sends `frames` (`Apply` requests), then the `Apply` frames `lazy` produces as they are
    /// written, to the remote's agent after an `Open` of the target, without waiting for
    /// answers, and reads the replies (the `Open`'s first). A session that breaks is dropped
    /// (the next batch starts it again) and the replies read so far returned.
    async fn exchange_opened(&self, frames: Vec<Vec<u8>>, lazy: Option<ApplyFrames>) -> Exchanged {
        let mut mode = self.agent.mode.lock().await;
        let session = match self.session(&mut mode).await {
            Ok(Some(session)) => session,
            Ok(None) => return Exchanged::NoAgent,
            Err(why) => return Exchanged::ConnectionFailed(why),
        };
        let open = Request::Open {
            protocol: session.protocol,
            target: self.target_path().to_owned(),
            workspace_id: self.workspace_id.clone(),
        };
        let mut all = vec![framing::encode(&open)];
        all.extend(frames);
        let exchanged = tokio::time::timeout(
            Duration::from_secs(u64::from(DEFAULT_TIMEOUT_SECS) * 2),
            exchange(session, all, lazy),
        )
        .await
        .unwrap_or_else(|_| {
            (
                Vec::new(),
                Vec::new(),
                Some("the agent did not answer in time".into()),
            )
        });
        let (replies, counts, broken) = exchanged;
        if let Some(why) = &broken {
            tracing::warn!(remote = %self.remote.name, "agent session lost, its batch goes by rsync: {why}");
            *mode = Mode::Untried { not_before: None };
            self.agent.set_status(TransportStatus::Rsync {
                why: format!("the agent session was lost ({why}); starting it again"),
            });
        }
        Exchanged::Replies { replies, counts }
    }

    /// The error of a target the agent refused to open.
    fn refused(&self, refusal: Refusal, message: &str) -> String {
        tracing::warn!(remote = %self.remote.name, "the agent refused the target: {message}");
        match refusal {
            Refusal::NotOurs => wsync_core::target::not_ours_message(&self.remote.target),
            Refusal::TooBroad => wsync_core::target::too_broad_message(&self.remote.target),
        }
    }

    /// Replays `renames` through the remote's agent: `rename_if_matching` beneath the target's
    /// handle, its marker checked on it, the first rename that does not apply stopping the
    /// replay (`stop_unless_done`) as the script's would. `None`: the remote has no agent
    /// session to use (rsync only, or it could not be started), and the script replays them.
    pub(super) async fn replay_by_agent(
        &self,
        renames: &[Rename],
        keep_overwritten: bool,
    ) -> Option<Replayed> {
        if !self.agent.may_send() {
            return None;
        }
        let mut done = 0;
        for chunk in rename_chunks(renames) {
            let apply = rename_apply(chunk, keep_overwritten);
            let frames = vec![framing::encode(&apply)];
            let replies = match self.exchange_opened(frames, None).await {
                Exchanged::Replies { replies, .. } => replies,
                // Nothing was sent: the script tries (and says what failed).
                Exchanged::NoAgent | Exchanged::ConnectionFailed(_) if done == 0 => return None,
                Exchanged::NoAgent | Exchanged::ConnectionFailed(_) => Vec::new(),
            };
            let mut replies = replies.into_iter();
            let (opened, answer) = (replies.next(), replies.next());
            match self.rename_answer(chunk, done, opened, answer) {
                Ok(now) => done = now,
                Err(stopped) => return Some(stopped),
            }
        }
        tracing::debug!(remote = %self.remote.name, renames = done, "renames replayed by the agent");
        Some(Replayed {
            done,
            ..Replayed::default()
        })
    }

    /// The target path on the remote, as rsync reaches it.
    fn target_path(&self) -> &str {
        match &self.remote.target {
            RemoteTarget::Ssh { path, .. } => path,
            RemoteTarget::Local { .. } => "",
        }
    }

    /// The running session, started (and the agent installed) if need be; `None`: rsync;
    /// `Err`: the connection failed.
    async fn session<'m>(&self, mode: &'m mut Mode) -> Result<Option<&'m mut Session>, String> {
        if let Mode::Untried { not_before } = mode {
            if not_before.is_some_and(|at| Instant::now() < at) {
                return Ok(None);
            }
            match self.connect().await {
                Ok(session) => {
                    tracing::info!(
                        remote = %self.remote.name,
                        version = %session.hello.version,
                        protocol = session.protocol,
                        pid = session.hello.pid,
                        "agent session started"
                    );
                    self.agent.set_status(TransportStatus::Agent {
                        version: session.hello.version.clone(),
                        protocol: session.protocol,
                    });
                    *mode = Mode::Running(Box::new(session));
                }
                Err(StartError::Connection(why)) => {
                    tracing::warn!(remote = %self.remote.name, "agent not started, rsync for now: {why}");
                    self.agent.set_status(TransportStatus::Rsync {
                        why: format!("the agent could not be started ({why}); trying again"),
                    });
                    *mode = Mode::Untried {
                        not_before: Some(Instant::now() + RETRY_AFTER),
                    };
                    return Err(format!("starting the agent: {why}"));
                }
                Err(StartError::Install(why)) => {
                    tracing::warn!(remote = %self.remote.name, "no agent on this remote, rsync from now on: {why}");
                    self.agent.set_status(TransportStatus::Rsync { why });
                    self.agent.rsync_only.store(true, Ordering::Relaxed);
                    *mode = Mode::Rsync;
                }
            }
        }
        match mode {
            Mode::Running(session) => Ok(Some(session)),
            _ => Ok(None),
        }
    }

    /// Starts the agent, installing it first when it is missing or unusable.
    async fn connect(&self) -> Result<Session, StartError> {
        let first = match self.start().await {
            Ok(session) => return Ok(session),
            Err(StartError::Connection(why)) => return Err(StartError::Connection(why)),
            Err(StartError::Install(why)) => why,
        };
        tracing::info!(remote = %self.remote.name, "installing the agent: {first}");
        self.install().await.map_err(StartError::Install)?;
        self.start().await.map_err(|e| match e {
            StartError::Install(why) | StartError::Connection(why) => {
                StartError::Install(format!("the agent installed does not start: {why}"))
            }
        })
    }

    /// Runs the installed agent over the ssh master and reads its hello.
    async fn start(&self) -> Result<Session, StartError> {
        let script = format!(
            "{}a=$c/wsync/{}/wsync-monitor; if [ -f \"$a\" ] && [ -x \"$a\" ] && [ -O \"$a\" ]; then exec \"$a\" {}; fi; echo {MISSING}",
            cache_dir_sh(),
            version_word(),
            agent::AGENT_SUBCOMMAND
        );
        let mut child = self
            .ssh_sh(&script)
            .map_err(|e| StartError::Connection(format!("running ssh: {e}")))?;
        let (Some(stdin), Some(stdout), stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(StartError::Connection("ssh has no pipes".into()));
        };
        let mut stdout = BufReader::with_capacity(64 * 1024, stdout);
        let line =
            tokio::time::timeout(HELLO_TIMEOUT, framing::asynchronous::read_line(&mut stdout))
                .await;
        let line = match line {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                let status = child.wait().await.ok().and_then(|s| s.code());
                let stderr = read_tail(stderr).await;
                // ssh exits 255 when it cannot connect; anything else came from the remote.
                return Err(if status == Some(255) {
                    StartError::Connection(format!("ssh: {stderr}"))
                } else {
                    StartError::Install(format!(
                        "the agent did not start ({e}, exit {}): {stderr}",
                        status.map_or("unknown".into(), |s| s.to_string())
                    ))
                });
            }
            Err(_) => {
                return Err(StartError::Connection(
                    "no hello from the agent in time".into(),
                ))
            }
        };
        if line.starts_with(MISSING.as_bytes()) {
            return Err(StartError::Install("no agent installed".into()));
        }
        let hello: Hello = match framing::decode(&line) {
            Ok(hello) if Hello::is_agent(&hello) => hello,
            _ => {
                return Err(StartError::Install(format!(
                    "the agent said {:?}, not a hello",
                    String::from_utf8_lossy(&line)
                )))
            }
        };
        let Some(protocol) = agent::negotiate(&hello) else {
            return Err(StartError::Install(format!(
                "the agent (wsync {}) speaks protocol {} to {}, this monitor {} to {}",
                hello.version,
                hello.protocol_min,
                hello.protocol_max,
                agent::PROTOCOL_MIN,
                agent::PROTOCOL_MAX
            )));
        };
        if let Some(stderr) = stderr {
            // The agent's stderr goes to this log, not into a full pipe.
            let remote = self.remote.name.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::warn!(%remote, "agent: {line}");
                }
            });
        }
        Ok(Session {
            child,
            stdin,
            stdout,
            protocol,
            hello,
        })
    }

    /// Uploads this binary as the remote's agent; `Err` says why it could not be.
    async fn install(&self) -> Result<(), String> {
        let local = tokio::task::spawn_blocking(|| {
            let uname = std::process::Command::new("uname")
                .arg("-sm")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running uname: {e}"))?;
            let uname = String::from_utf8_lossy(&uname.stdout).trim().to_owned();
            // The running binary's own inode (a path could name a newer build by now), hashed
            // as it is read, then streamed from the start: never held whole (tens of MiB).
            let reading = |e: std::io::Error| format!("reading this monitor's binary: {e}");
            let mut binary = std::fs::File::open("/proc/self/exe").map_err(reading)?;
            let cksum = file_cksum(&mut binary).map_err(reading)?;
            Ok::<_, String>((uname, binary, cksum))
        })
        .await
        .map_err(|e| format!("reading this monitor's binary: {e}"))??;
        let (uname, binary, cksum) = local;
        let script = install_script(&uname, &cksum);
        let mut command = b"sh -c ".to_vec();
        command.extend_from_slice(&quote_posix_sh(script.as_bytes()));
        let started = Instant::now();
        let out = self
            .remote_command_reading(&command, Some(Stdin::File(binary)))
            .await
            .map_err(|e| format!("uploading the agent failed: {e}"))?;
        let out = String::from_utf8_lossy(&out);
        let answer = out
            .lines()
            .find_map(|l| l.strip_prefix(INSTALL))
            .unwrap_or("no answer from the install script");
        if answer == "ok" {
            tracing::info!(remote = %self.remote.name, elapsed_ms = started.elapsed().as_millis() as u64, "agent installed");
            Ok(())
        } else {
            Err(format!("the agent could not be installed: {answer}"))
        }
    }

    /// An ssh client running the POSIX `sh` script `script` on the remote, pipes open.
    fn ssh_sh(&self, script: &str) -> std::io::Result<Child> {
        let (Some(endpoint), Some(control)) = (
            SshEndpoint::from_target(&self.remote.target),
            self.control_path.as_deref(),
        ) else {
            return Err(std::io::Error::other("not an ssh remote"));
        };
        let mut command = b"sh -c ".to_vec();
        command.extend_from_slice(&quote_posix_sh(script.as_bytes()));
        let argv = endpoint.command_argv(control, &String::from_utf8_lossy(&command));
        tracing::debug!(remote = %self.remote.name, ?argv, "starting the agent");
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
    }
}

/// What [`Destination::exchange_opened`] got.
enum Exchanged {
    /// No session: rsync only, or not to be tried yet.
    NoAgent,
    /// The session could not be started for the connection.
    ConnectionFailed(String),
    /// The replies, the `Open`'s first; fewer than the frames when the session broke. `counts`:
    /// the ops of each lazily produced `Apply` frame written (all of them unless it broke).
    Replies {
        replies: Vec<Reply>,
        counts: Vec<usize>,
    },
}

/// `renames` in runs that fit one `Apply` frame (its JSON under the frame limit), one
/// exchange each: a later run goes only when every rename of the earlier applied.
fn rename_chunks(renames: &[Rename]) -> Vec<&[Rename]> {
    use std::os::unix::ffi::OsStrExt;
    // Each path's JSON is at most 6 times its bytes (`\u00XX` escapes) plus the keys.
    let budget = framing::MAX_FRAME_BYTES / 2;
    let size = |r: &Rename| {
        6 * (r.from.as_os_str().as_bytes().len() + r.to.as_os_str().as_bytes().len()) + 100
    };
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, rename) in renames.iter().enumerate() {
        let len = size(rename);
        if i > start && (bytes + len > budget || i - start >= CHUNK_OPS) {
            chunks.push(&renames[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < renames.len() {
        chunks.push(&renames[start..]);
    }
    chunks
}

/// Writes `frames`, then each frame `lazy` produces, and reads one reply per frame written,
/// at once (the agent answers the first while the rest are in flight); the replies read, the
/// ops of each lazy frame written, and why the session broke if it did. At most two lazy
/// frames exist at a time (one being written, one read ahead), so a batch of many files costs
/// a few [`CHUNK_BYTES`] of memory, not its size.
async fn exchange(
    session: &mut Session,
    frames: Vec<Vec<u8>>,
    lazy: Option<ApplyFrames>,
) -> (Vec<Reply>, Vec<usize>, Option<String>) {
    let Session { stdin, stdout, .. } = session;
    // (frames written, all written): what the reader may wait for.
    let (written_tx, mut written_rx) = tokio::sync::watch::channel((0usize, false));
    let write = async {
        let mut counts = Vec::new();
        let mut sent = 0;
        let result = async {
            for frame in &frames {
                stdin.write_all(frame).await?;
                sent += 1;
                written_tx.send_replace((sent, false));
            }
            stdin.flush().await?;
            if let Some(lazy) = lazy {
                let (tx, mut rx) = tokio::sync::mpsc::channel(1);
                // Dropping `rx` (a write failed) ends the producer at its next frame.
                tokio::task::spawn_blocking(move || lazy.produce(&tx));
                while let Some(Encoded { bytes, ops }) = rx.recv().await {
                    stdin.write_all(&bytes).await?;
                    stdin.flush().await?;
                    counts.push(ops);
                    sent += 1;
                    written_tx.send_replace((sent, false));
                }
            }
            Ok::<(), std::io::Error>(())
        }
        .await;
        written_tx.send_replace((sent, true));
        (result, counts)
    };
    let read = async {
        let mut replies = Vec::new();
        loop {
            let (sent, done) = *written_rx.borrow_and_update();
            if replies.len() >= sent {
                if done || written_rx.changed().await.is_err() {
                    break;
                }
                continue;
            }
            match framing::asynchronous::read_line(stdout).await {
                Ok(line) => match framing::decode::<Reply>(&line) {
                    Ok(Reply::Error { message }) => {
                        return (replies, Some(format!("the agent: {message}")))
                    }
                    Ok(reply) => replies.push(reply),
                    Err(e) => return (replies, Some(e.to_string())),
                },
                Err(FrameError::Closed) => return (replies, Some("the agent exited".into())),
                Err(e) => return (replies, Some(e.to_string())),
            }
        }
        (replies, None)
    };
    let ((written, counts), (replies, broken)) = tokio::join!(write, read);
    match (written, broken) {
        (_, Some(why)) => (replies, counts, Some(why)),
        (Err(e), None) => (replies, counts, Some(format!("writing to the agent: {e}"))),
        (Ok(()), None) => (replies, counts, None),
    }
}

/// The `Apply` of one chunk of renames: one by one, the first not done skipping the rest.
fn rename_apply(chunk: &[Rename], keep_overwritten: bool) -> Request {
    Request::Apply {
        continued: false,
        stop_unless_done: true,
        ops: chunk
            .iter()
            .map(|r| Op::Rename {
                from: r.from.clone(),
                to: r.to.clone(),
                is_dir: r.is_dir,
                keep_overwritten,
            })
            .collect(),
        payloads: Vec::new(),
        max_delete: None,
        put_max: PUT_MAX_DEFAULT,
    }
}

/// The answers to `Apply` frames of `counts` ops each, merged; an unanswered frame's ops are
/// failed (rsync sends their paths, and deletes what they lack).
fn gather_applied(counts: &[usize], replies: &mut impl Iterator<Item = Reply>) -> Applied {
    let mut applied = Applied::default();
    for &count in counts {
        match replies.next() {
            Some(Reply::Applied {
                results,
                deleted,
                written,
                bytes,
            }) if results.len() == count => {
                applied.results.extend(results);
                applied.deleted += deleted;
                applied.written += written;
                applied.bytes += bytes;
            }
            _ => {
                let lost = OpResult::Failed {
                    path: PathBuf::new(),
                    message: "no answer from the agent".into(),
                    diverged: None,
                };
                applied.results.extend(std::iter::repeat_n(lost, count));
            }
        }
    }
    applied
}

/// One `Apply` request, encoded with its content, and how many ops it holds.
struct Encoded {
    bytes: Vec<u8>,
    ops: usize,
}

/// A batch's ops as `Apply` requests of at most [`CHUNK_BYTES`] / [`CHUNK_OPS`], each made
/// (the puts' content read: `O_NOFOLLOW`, checked on the descriptor, as in process) only
/// when the one before is on its way: a batch's content is never all in memory at once.
struct ApplyFrames {
    root: PathBuf,
    ops: Vec<Op>,
    max_delete: Option<u64>,
}

impl ApplyFrames {
    fn new(root: &Path, ops: &[Op], max_delete: Option<u64>) -> Self {
        Self {
            root: root.to_path_buf(),
            ops: ops.to_vec(),
            max_delete,
        }
    }

    /// Sends each request to `tx` as it is made (blocking: it reads files), until the ops are
    /// done or the receiver is gone.
    fn produce(self, tx: &tokio::sync::mpsc::Sender<Encoded>) {
        let mut start = 0;
        while start < self.ops.len() {
            let request = self.request_from(&mut start);
            if tx.blocking_send(request).is_err() {
                return;
            }
        }
    }

    /// The request of the ops from `*start` on that fit one frame; `*start` moves past them.
    fn request_from(&self, start: &mut usize) -> Encoded {
        let mut source = Workspace { root: &self.root };
        let ops = &self.ops;
        let mut payloads = Vec::new();
        let mut content = Vec::new();
        let mut end = *start;
        while end < ops.len() && end - *start < CHUNK_OPS && content.len() < CHUNK_BYTES {
            if let Op::Put { path } = &ops[end] {
                payloads.push(match source.read(path, PUT_MAX_DEFAULT) {
                    Ok((bytes, meta)) => {
                        content.extend_from_slice(&bytes);
                        Payload::Bytes {
                            len: bytes.len() as u64,
                            meta,
                        }
                    }
                    Err(SourceError::Vanished) => Payload::Vanished,
                    Err(SourceError::Unsuitable(why)) => Payload::Unsuitable { why },
                    Err(SourceError::Io(e)) => Payload::Unsuitable {
                        why: format!("reading the source: {e}"),
                    },
                });
            }
            end += 1;
        }
        let request = Request::Apply {
            continued: *start > 0,
            stop_unless_done: false,
            ops: ops[*start..end].to_vec(),
            payloads,
            max_delete: self.max_delete,
            put_max: PUT_MAX_DEFAULT,
        };
        let mut bytes = framing::encode(&request);
        bytes.append(&mut content);
        let encoded = Encoded {
            bytes,
            ops: end - *start,
        };
        *start = end;
        encoded
    }
}

/// `counts` (the ops of each `Apply` frame written) with one more, unanswered, frame for the
/// ops never written (the session broke first): those are failed, and go to rsync.
fn every_op_counted(mut counts: Vec<usize>, ops: usize) -> Vec<usize> {
    let written: usize = counts.iter().sum();
    if written < ops {
        counts.push(ops - written);
    }
    counts
}

fn done_nothing(rest: Vec<PathBuf>, started: Instant) -> Pass {
    Pass::Done {
        outcome: Outcome::success(Default::default(), started.elapsed()),
        rest,
    }
}

/// No agent: every path of the plan goes by rsync.
fn everything_to_rsync(plan: Plan) -> Pass {
    let mut rest = plan.rest;
    rest.extend(
        plan.serves
            .into_iter()
            .filter(|p| !p.as_os_str().is_empty()),
    );
    let rest = crate::queue::collapse(rest.iter());
    done_nothing(rest, Instant::now())
}

/// Sets `$c` to the remote cache directory: `$XDG_CACHE_HOME` when absolute, else
/// `~/.cache`.
fn cache_dir_sh() -> &'static str {
    "case ${XDG_CACHE_HOME-} in /*) c=$XDG_CACHE_HOME;; *) c=$HOME/.cache;; esac; "
}

/// This build's version, quoted for the remote shell (it names the install directory).
fn version_word() -> String {
    String::from_utf8_lossy(&quote_posix_sh(wsync_core::VERSION.as_bytes())).into_owned()
}

/// The script that installs the agent from its stdin, atomically: only on a remote whose
/// `uname -sm` is `uname`; written under a temp name, mode 0755, its `cksum` compared with
/// `cksum`, run with `--version`, then renamed into place. It answers one `wsync-install:`
/// line: `ok`, or what failed (and removes the temp file); an upload that may not be executed
/// (exit 126: the directory is on a `noexec` mount) says `noexec` first, as status shows it.
fn install_script(uname: &str, cksum: &str) -> String {
    let q = |s: &str| String::from_utf8_lossy(&quote_posix_sh(s.as_bytes())).into_owned();
    let expected_version = format!("wsync-monitor {}", wsync_core::VERSION);
    format!(
        "fail() {{ rm -f -- \"$t\"; echo \"{INSTALL}$*\"; exit 0; }}; t=; \
         u=$(uname -sm); [ \"$u\" = {uname} ] || fail \"the remote is $u, this monitor {uname_text}\"; \
         {cache}d=$c/wsync/{version}; \
         mkdir -p -- \"$d\" 2>/dev/null && [ -d \"$d\" ] && ! [ -h \"$d\" ] || fail \"cannot create the directory $d\"; \
         t=$d/.wsync-monitor.$$.tmp; \
         (umask 077; cat > \"$t\") 2>/dev/null || fail \"cannot write $t\"; \
         chmod 0755 \"$t\" || fail \"cannot make $t executable\"; \
         s=$(cksum < \"$t\"); [ \"$s\" = {cksum} ] || fail \"$t has checksum $s, expected {cksum_text} (a partial upload)\"; \
         v=$(\"$t\" --version 2>&1); r=$?; \
         [ $r != 126 ] || fail \"noexec: programs cannot run from $d (is it mounted noexec?): $v\"; \
         [ $r = 0 ] || fail \"$t does not run: $v\"; \
         [ \"$v\" = {expected} ] || fail \"$t says $v, expected {expected_text}\"; \
         mv -f -- \"$t\" \"$d/wsync-monitor\" || fail \"cannot rename $t into place\"; \
         echo \"{INSTALL}ok\"",
        uname = q(uname),
        uname_text = uname.replace(['"', '$', '`', '\\'], ""),
        cache = cache_dir_sh(),
        version = version_word(),
        cksum = q(cksum),
        cksum_text = cksum,
        expected = q(&expected_version),
        expected_text = expected_version,
    )
}

/// The POSIX `cksum` of `file` read to its end through a bounded buffer, the file left at
/// its start again.
fn file_cksum(file: &mut std::fs::File) -> std::io::Result<String> {
    use std::io::{Read, Seek};
    let mut sum = agent::Cksum::default();
    let mut buf = vec![0; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => sum.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    file.rewind()?;
    Ok(sum.finish())
}

/// The end of a stderr pipe, for an error message.
async fn read_tail(stderr: Option<tokio::process::ChildStderr>) -> String {
    let Some(mut stderr) = stderr else {
        return String::new();
    };
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stderr.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    let text = text.trim();
    let start = text.len().saturating_sub(400);
    text.get(start..).unwrap_or(text).to_owned()
}
