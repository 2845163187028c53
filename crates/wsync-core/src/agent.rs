//! The SSH agent: `wsync-monitor agent`, run on an SSH remote over the workspace's ssh
//! connection, applying [`crate::executor`] ops to the target there — the same executor, the
//! same beneath-only handle, the same marker check as a local target's in-process pass. This
//! module owns the wire protocol (both ends) and the agent's serve loop; the monitor's side
//! (session, install, fallback) is `wsync_monitor::batch::agent`.
//!
//! The protocol, on the agent's stdin/stdout:
//! - Frames are [`crate::framing`]'s (one compact JSON value per line). A put's content is not
//!   in JSON: an [`Request::Apply`] frame lists a [`Payload`] per put, and the bytes of those
//!   with content follow the frame's newline, raw, concatenated in op order.
//! - The agent speaks first, [`Hello`], with the range of protocol versions it speaks; the
//!   monitor picks the highest both speak ([`negotiate`]) and sends [`Request::Open`] with it.
//!   No common version: the monitor does not open, and syncs that remote with rsync (a version
//!   skew never stops sync). A later protocol adds a version; an agent keeps speaking the
//!   older ones it knows.
//! - Requests are pipelined: the monitor may send any number of `Apply` frames before reading
//!   their answers, which come back in order, one [`Reply`] each.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::executor::{
    Applied, ContentSource, Executor, Limits, Meta, Op, OpResult, OpenError, SourceError,
};
use crate::framing::{self, FrameError};

/// The lowest and highest agent protocol versions this build speaks.
pub const PROTOCOL_MIN: u32 = 1;
pub const PROTOCOL_MAX: u32 = 1;

/// The agent's subcommand of the `wsync-monitor` binary.
pub const AGENT_SUBCOMMAND: &str = "agent";

/// What the agent says first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// `wsync-agent`, so a login banner or a stray program is never taken for an agent.
    pub agent: String,
    /// The wsync version of the agent's build.
    pub version: String,
    pub protocol_min: u32,
    pub protocol_max: u32,
    pub pid: u32,
}

const HELLO_NAME: &str = "wsync-agent";

impl Hello {
    fn this_build() -> Self {
        Self {
            agent: HELLO_NAME.into(),
            version: crate::VERSION.into(),
            protocol_min: PROTOCOL_MIN,
            protocol_max: PROTOCOL_MAX,
            pid: std::process::id(),
        }
    }

    /// True when this is an agent's hello at all.
    pub fn is_agent(&self) -> bool {
        self.agent == HELLO_NAME
    }
}

/// The highest protocol both this build and `hello`'s agent speak.
pub fn negotiate(hello: &Hello) -> Option<u32> {
    let high = hello.protocol_max.min(PROTOCOL_MAX);
    let low = hello.protocol_min.max(PROTOCOL_MIN);
    (high >= low).then_some(high)
}

/// A put's content as the monitor read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "payload", rename_all = "snake_case")]
pub enum Payload {
    /// `len` raw bytes follow the frame, with these attributes.
    Bytes { len: u64, meta: Meta },
    /// The source file is gone.
    Vanished,
    /// The source is no longer what a put can send.
    Unsuitable { why: String },
}

/// Monitor → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Opens the target (relative to the login directory, as ssh and rsync take it) for
    /// `workspace_id`'s ops, speaking `protocol`; answered [`Reply::Opened`] or
    /// [`Reply::Refused`].
    Open {
        protocol: u32,
        target: String,
        workspace_id: String,
    },
    /// Applies `ops` in order; one [`Payload`] per `Put` among them, in order. `continued`:
    /// the same batch as the previous `Apply`, whose deletion budget left (and stop) carries on
    /// instead of `max_delete`. `stop_unless_done`: the first op not done stops the run, the
    /// rest are skipped (a replay of renames, where a later one may depend on an earlier).
    /// Answered [`Reply::Applied`].
    Apply {
        continued: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stop_unless_done: bool,
        ops: Vec<Op>,
        payloads: Vec<Payload>,
        max_delete: Option<u64>,
        put_max: u64,
    },
}

/// Why the agent will not open a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The target holds no marker of this workspace (or cannot be opened).
    NotOurs,
    /// The target resolves to `/`, the remote home or a parent of it.
    TooBroad,
}

/// Agent → monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// The target is open and its marker checked.
    Opened,
    /// The target was not opened; `message` says why.
    Refused { refusal: Refusal, message: String },
    /// One result per op of the `Apply`, and what it did.
    Applied {
        results: Vec<OpResult>,
        deleted: u64,
        written: u64,
        bytes: u64,
    },
    /// The request could not be read or was out of order; the agent exits after it.
    Error { message: String },
}

/// Serves the protocol on `input`/`output` until the monitor closes its end; the agent's
/// whole life. Errors are the stream's (the monitor went away mid-frame).
pub fn serve(input: &mut impl BufRead, output: &mut impl Write) -> Result<(), FrameError> {
    framing::write_frame(output, &Hello::this_build())?;
    let mut executor: Option<Executor> = None;
    // The budget left by the last `Apply`, and whether it stopped there.
    let mut left: Option<u64> = None;
    let mut stopped = false;
    loop {
        let request: Request = match framing::read_frame(input) {
            Ok(request) => request,
            Err(FrameError::Closed) => return Ok(()),
            Err(FrameError::Undecodable(e)) => {
                let message = format!("undecodable request: {e}");
                framing::write_frame(output, &Reply::Error { message })?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let reply = match request {
            Request::Open {
                protocol,
                target,
                workspace_id,
            } => {
                if !(PROTOCOL_MIN..=PROTOCOL_MAX).contains(&protocol) {
                    let message = format!(
                        "protocol {protocol} asked; this agent speaks {PROTOCOL_MIN} to {PROTOCOL_MAX}"
                    );
                    framing::write_frame(output, &Reply::Error { message })?;
                    return Ok(());
                }
                match open(&target, &workspace_id) {
                    Ok(opened) => {
                        executor = Some(opened);
                        Reply::Opened
                    }
                    Err(refused) => refused,
                }
            }
            Request::Apply {
                continued,
                stop_unless_done,
                ops,
                payloads,
                max_delete,
                put_max,
            } => {
                let mut source = Streamed::read(input, &ops, payloads)?;
                let Some(executor) = executor.as_ref() else {
                    let message = "ops sent before the target was opened".into();
                    framing::write_frame(output, &Reply::Error { message })?;
                    return Ok(());
                };
                if !continued {
                    left = max_delete;
                    stopped = false;
                }
                let applied = if stopped {
                    Applied {
                        results: vec![OpResult::Skipped; ops.len()],
                        ..Applied::default()
                    }
                } else {
                    let limits = Limits {
                        max_delete: left,
                        put_max,
                    };
                    if stop_unless_done {
                        one_by_one(executor, &ops, &mut source, limits)
                    } else {
                        executor.apply(&ops, &mut source, limits)
                    }
                };
                stopped |= applied
                    .results
                    .iter()
                    .any(|r| matches!(r, OpResult::OverMaxDelete { .. }));
                if let Some(left) = left.as_mut() {
                    *left = left.saturating_sub(applied.deleted);
                }
                Reply::Applied {
                    results: applied.results,
                    deleted: applied.deleted,
                    written: applied.written,
                    bytes: applied.bytes,
                }
            }
        };
        framing::write_frame(output, &reply)?;
    }
}

/// Applies `ops` one at a time until one is not done; the rest are skipped.
fn one_by_one(
    executor: &Executor,
    ops: &[Op],
    source: &mut dyn ContentSource,
    mut limits: Limits,
) -> Applied {
    let mut all = Applied::default();
    for op in ops {
        if all.results.last().is_some_and(|r| *r != OpResult::Done) {
            all.results.push(OpResult::Skipped);
            continue;
        }
        let one = executor.apply(std::slice::from_ref(op), source, limits);
        if let Some(left) = limits.max_delete.as_mut() {
            *left = left.saturating_sub(one.deleted);
        }
        all.deleted += one.deleted;
        all.written += one.written;
        all.bytes += one.bytes;
        all.results.extend(one.results);
    }
    all
}

/// Opens `target` as the monitor's rsync would reach it: refused when it resolves to `/`, the
/// login directory or `$HOME` or a parent of one (what attach refuses and the rsync guard
/// checks), or holds no marker of `workspace_id`.
fn open(target: &str, workspace_id: &str) -> Result<Executor, Reply> {
    let path = Path::new(target);
    if let Ok(resolved) = std::fs::canonicalize(path) {
        let homes = [
            std::env::current_dir().ok(),
            std::env::var_os("HOME").map(PathBuf::from),
        ];
        let too_broad = resolved == Path::new("/")
            || homes
                .iter()
                .flatten()
                .filter_map(|h| std::fs::canonicalize(h).ok())
                .any(|home| home.starts_with(&resolved));
        if too_broad {
            return Err(Reply::Refused {
                refusal: Refusal::TooBroad,
                message: crate::rsync::TARGET_TOO_BROAD.into(),
            });
        }
    }
    Executor::open(path, workspace_id).map_err(|e| Reply::Refused {
        refusal: Refusal::NotOurs,
        message: match e {
            OpenError::NotOurs => e.to_string(),
            OpenError::Beneath(e) => format!("opening the target: {e}"),
        },
    })
}

/// One put's content as the monitor sent it, or why it sent none.
type Content = Result<(Vec<u8>, Meta), SourceError>;

/// The puts' content of one `Apply`, read off the stream after its frame.
struct Streamed {
    by_path: HashMap<PathBuf, VecDeque<Content>>,
}

impl Streamed {
    fn read(
        input: &mut impl BufRead,
        ops: &[Op],
        payloads: Vec<Payload>,
    ) -> Result<Self, FrameError> {
        let mut by_path: HashMap<PathBuf, VecDeque<_>> = HashMap::new();
        let puts = ops.iter().filter_map(|op| match op {
            Op::Put { path } => Some(path),
            _ => None,
        });
        for (path, payload) in puts.zip(payloads) {
            let content = match payload {
                Payload::Bytes { len, meta } => {
                    if len > crate::framing::MAX_FRAME_BYTES as u64 * 64 {
                        return Err(FrameError::TooLarge);
                    }
                    let mut bytes = vec![0; len as usize];
                    input.read_exact(&mut bytes).map_err(|e| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
                        _ => FrameError::Io(e),
                    })?;
                    Ok((bytes, meta))
                }
                Payload::Vanished => Err(SourceError::Vanished),
                Payload::Unsuitable { why } => Err(SourceError::Unsuitable(why)),
            };
            by_path.entry(path.clone()).or_default().push_back(content);
        }
        Ok(Self { by_path })
    }
}

impl ContentSource for Streamed {
    fn read(&mut self, path: &Path, max: u64) -> Result<(Vec<u8>, Meta), SourceError> {
        let content = self
            .by_path
            .get_mut(path)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| Err(SourceError::Unsuitable("no content was sent".into())))?;
        if content.0.len() as u64 > max {
            return Err(SourceError::Unsuitable("larger than the put limit".into()));
        }
        Ok(content)
    }
}

/// The POSIX `cksum` of `bytes` (CRC-32 of the bytes and their length), as `cksum < file`
/// prints it: `CRC LENGTH`. How an upload is compared on a remote that may lack `sha256sum`.
pub fn posix_cksum(bytes: &[u8]) -> String {
    let mut sum = Cksum::default();
    sum.update(bytes);
    sum.finish()
}

/// [`posix_cksum`] fed piecewise: the agent binary is hashed as it is read, never held whole.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cksum {
    crc: u32,
    len: u64,
}

impl Cksum {
    // Table-driven: the agent binary is tens of MiB, hashed on every install.
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = (i as u32) << 24;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 0x8000_0000 != 0 {
                    (crc << 1) ^ 0x04C1_1DB7
                } else {
                    crc << 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };

    fn feed(crc: u32, byte: u8) -> u32 {
        (crc << 8) ^ Self::TABLE[((crc >> 24) as u8 ^ byte) as usize]
    }

    /// Adds the next `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.crc = bytes.iter().fold(self.crc, |crc, b| Self::feed(crc, *b));
        self.len += bytes.len() as u64;
    }

    /// `CRC LENGTH` of everything added.
    pub fn finish(self) -> String {
        let mut crc = self.crc;
        let mut len = self.len;
        while len > 0 {
            crc = Self::feed(crc, (len & 0xff) as u8);
            len >>= 8;
        }
        format!("{} {}", !crc, self.len)
    }
}

/// Runs the agent on this process's stdin/stdout (what `wsync-monitor agent` does).
pub fn serve_stdio() -> Result<(), FrameError> {
    let stdin = std::io::stdin();
    let mut input = std::io::BufReader::with_capacity(256 * 1024, stdin.lock());
    let stdout = std::io::stdout();
    let mut output = std::io::BufWriter::new(stdout.lock());
    serve(&mut input, &mut output)
}

#[cfg(test)]
mod tests;
