//! The connection to wsyncd: connect to the command socket, check the protocol in the `Hello`
//! handshake, then send requests and read responses with `wsync_core::framing`.
//!
//! The CLI offers its own `PROTOCOL_VERSION`. An older daemon that serves only older protocols
//! (it refuses the hello with `protocol_mismatch`, or answers in an older protocol) is spoken
//! to in the newest protocol it takes, down to `MIN_PROTOCOL_VERSION`: requests that protocol
//! has work as before, and one it lacks fails before it is sent, naming the daemon's version.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use wsync_core::framing::{self, FrameError};
use wsync_core::protocol::{
    ErrorCode, Event, Request, Response, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

use crate::error::CliError;
use crate::exit_codes;

/// How long a request may take before the CLI gives up, unless a command says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the daemon said about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonHello {
    pub version: String,
    pub pid: u32,
    /// The protocol the connection speaks (this build's, or an older daemon's).
    pub protocol: u32,
}

/// An open, handshaken connection to wsyncd.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    socket: PathBuf,
    timeout: Duration,
    pub daemon: DaemonHello,
}

/// The error shown whenever nothing answers on the socket.
pub fn not_running(socket: &Path) -> CliError {
    CliError::new(
        exit_codes::DAEMON_NOT_RUNNING,
        format!("wsyncd is not running (socket {})", socket.display()),
    )
    .with_hint("start it with `wsync daemon start`")
}

/// Connects to the socket without a handshake (`wsync client` leaves that to its user); a
/// missing socket or refused connection is [`exit_codes::DAEMON_NOT_RUNNING`].
pub fn connect_socket(socket: &Path) -> Result<UnixStream> {
    wsync_core::platform::check_socket_path(socket)?;
    match UnixStream::connect(socket) {
        Ok(stream) => Ok(stream),
        Err(e) if means_not_running(&e) => Err(not_running(socket).into()),
        Err(e) => {
            Err(anyhow::Error::new(e)
                .context(format!("connecting to wsyncd at {}", socket.display())))
        }
    }
}

/// True for connect errors that mean "no daemon here" rather than "something is wrong".
fn means_not_running(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

impl Client {
    /// Connects and handshakes; a missing socket or refused connection is
    /// [`exit_codes::DAEMON_NOT_RUNNING`] with a hint naming `wsync daemon start`.
    pub fn connect(socket: &Path) -> Result<Self> {
        let first = Self::handshake_in(connect_socket(socket)?, socket, PROTOCOL_VERSION);
        let Err(refused) = first else { return first };
        if !refused_protocol(&refused) {
            return Err(refused);
        }
        // An older daemon closes the connection after refusing: offer each older protocol
        // on a new one.
        for protocol in (MIN_PROTOCOL_VERSION..PROTOCOL_VERSION).rev() {
            match Self::handshake_in(connect_socket(socket)?, socket, protocol) {
                Ok(client) => {
                    tracing::debug!(protocol, daemon = %client.daemon.version, "the daemon speaks an older protocol");
                    return Ok(client);
                }
                Err(e) if refused_protocol(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(refused)
    }

    /// Handshakes on an already connected stream in this build's protocol (or an older one
    /// the daemon answers in); `socket` names it in messages.
    pub fn handshake_on(stream: UnixStream, socket: &Path) -> Result<Self> {
        Self::handshake_in(stream, socket, PROTOCOL_VERSION)
    }

    fn handshake_in(stream: UnixStream, socket: &Path, protocol: u32) -> Result<Self> {
        let writer = stream.try_clone().context("cloning the socket handle")?;
        let mut client = Self {
            reader: BufReader::new(stream),
            writer,
            socket: socket.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            daemon: DaemonHello {
                version: String::new(),
                pid: 0,
                protocol,
            },
        };
        client.set_timeout(DEFAULT_TIMEOUT)?;
        client.daemon = client.handshake(protocol)?;
        Ok(client)
    }

    /// Connects if a daemon answers; `Ok(None)` when none is running.
    pub fn probe(socket: &Path) -> Result<Option<Self>> {
        match Self::connect(socket) {
            Ok(c) => Ok(Some(c)),
            Err(e) if crate::error::exit_code(&e) == exit_codes::DAEMON_NOT_RUNNING => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets how long to wait for each response.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.timeout = timeout;
        self.writer
            .set_read_timeout(Some(timeout))
            .and_then(|()| self.writer.set_write_timeout(Some(timeout)))
            .context("setting socket timeouts")
    }

    /// Says hello in `offered`; the daemon answers in it or in an older protocol this build
    /// still speaks.
    fn handshake(&mut self, offered: u32) -> Result<DaemonHello> {
        let hello = Request::Hello {
            protocol: offered,
            version: wsync_core::VERSION.to_owned(),
        };
        match self.exchange(&hello).context("handshake with wsyncd")? {
            Response::Hello {
                protocol,
                version,
                pid,
            } => {
                if !(MIN_PROTOCOL_VERSION..=offered).contains(&protocol) {
                    return Err(mismatch(&format!(
                        "wsyncd {version} (pid {pid}) speaks protocol {protocol}, this wsync {} speaks protocols {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}",
                        wsync_core::VERSION
                    ))
                    .into());
                }
                Ok(DaemonHello {
                    version,
                    pid,
                    protocol,
                })
            }
            Response::Error {
                code: ErrorCode::ProtocolMismatch,
                message,
            } => Err(mismatch(&message).into()),
            Response::Error { code, message } => {
                Err(CliError::new(exit_codes::for_error_code(code), message).into())
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Sends one request and returns the daemon's answer; an error response becomes a
    /// [`CliError`] with the matching exit code and the daemon's message.
    pub fn call(&mut self, request: &Request) -> Result<Response> {
        if request.since() > self.daemon.protocol {
            return Err(self.too_old(request));
        }
        match self.exchange(request)? {
            // A daemon of this protocol built before the request was added to it.
            Response::Error {
                code: ErrorCode::BadRequest,
                message,
            } if message.contains(&format!("unknown variant `{}`", request.type_name())) => {
                Err(self.too_old(request))
            }
            Response::Error { code, message } => {
                Err(CliError::new(exit_codes::for_error_code(code), message).into())
            }
            other => Ok(other),
        }
    }

    /// The error for a request the daemon does not know, naming its version.
    fn too_old(&self, request: &Request) -> anyhow::Error {
        CliError::new(
            exit_codes::PROTOCOL_MISMATCH,
            format!(
                "wsyncd {} (pid {}, protocol {}) is older than this wsync {} and has no `{}` request (protocol {} and later)",
                self.daemon.version,
                self.daemon.pid,
                self.daemon.protocol,
                wsync_core::VERSION,
                request.type_name(),
                request.since()
            ),
        )
        .with_hint("restart the daemon from this build: `wsync daemon stop` and `wsync daemon start`")
        .into()
    }

    /// Subscribes this connection to the daemon's events (`workspace`'s only, when set): the
    /// connection becomes an [`EventStream`], read without a timeout.
    pub fn subscribe(mut self, workspace: Option<String>) -> Result<EventStream> {
        match self.call(&Request::Subscribe { workspace })? {
            Response::Subscribed { .. } => {}
            other => return Err(unexpected(&other)),
        }
        self.writer
            .set_read_timeout(None)
            .context("setting socket timeouts")?;
        Ok(EventStream {
            reader: self.reader,
            socket: self.socket,
        })
    }

    fn exchange(&mut self, request: &Request) -> Result<Response> {
        tracing::debug!(?request, "sending");
        framing::write_frame(&mut self.writer, request)
            .map_err(|e| self.io_error(e, "sending a request to wsyncd"))?;
        let response: Response = framing::read_frame(&mut self.reader)
            .map_err(|e| self.io_error(e, "reading wsyncd's answer"))?;
        tracing::debug!(?response, "received");
        Ok(response)
    }

    fn io_error(&self, err: FrameError, doing: &str) -> anyhow::Error {
        let timed_out = matches!(&err, FrameError::Io(io) if matches!(
            io.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ));
        if timed_out {
            return CliError::new(
                exit_codes::TIMEOUT,
                format!(
                    "wsyncd (socket {}) did not answer within {} s",
                    self.socket.display(),
                    self.timeout.as_secs()
                ),
            )
            .with_hint("check the daemon with `wsync daemon status` and its log in LogDirectory")
            .into();
        }
        if matches!(err, FrameError::Closed | FrameError::Truncated) {
            return anyhow::Error::new(err).context(format!(
                "{doing}: wsyncd closed the connection (did it stop or crash?)"
            ));
        }
        anyhow::Error::new(err).context(doing.to_owned())
    }
}

/// A subscribed connection: the daemon's events as they happen.
#[derive(Debug)]
pub struct EventStream {
    reader: BufReader<UnixStream>,
    socket: PathBuf,
}

impl EventStream {
    /// Waits for the next event; an error once the daemon has closed the connection.
    pub fn next_event(&mut self) -> Result<Event> {
        loop {
            match framing::read_frame(&mut self.reader) {
                Ok(Response::Event { event }) => return Ok(event),
                // Nothing else is asked on this connection; an answer would be stray.
                Ok(other) => tracing::debug!(?other, "ignoring a non-event frame"),
                Err(FrameError::Closed | FrameError::Truncated) => {
                    return Err(CliError::new(
                        exit_codes::DAEMON_NOT_RUNNING,
                        format!(
                            "wsyncd (socket {}) closed the event stream",
                            self.socket.display()
                        ),
                    )
                    .with_hint(
                        "check it with `wsync daemon status`; start it with `wsync daemon start`",
                    )
                    .into())
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context("reading wsyncd's events"));
                }
            }
        }
    }
}

/// Whether a handshake failed because the daemon refused the protocol offered.
fn refused_protocol(err: &anyhow::Error) -> bool {
    crate::error::exit_code(err) == exit_codes::PROTOCOL_MISMATCH
}

fn mismatch(detail: &str) -> CliError {
    CliError::new(
        exit_codes::PROTOCOL_MISMATCH,
        format!("wsync and wsyncd are incompatible: {detail}"),
    )
    .with_hint(
        "install wsync and wsyncd from the same build, then restart the daemon: `wsync daemon stop` and `wsync daemon start`",
    )
}

/// The error for a response of the wrong kind.
pub fn unexpected(response: &Response) -> anyhow::Error {
    let kind = serde_json::to_value(response)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str().map(str::to_owned)))
        .unwrap_or_else(|| "?".into());
    anyhow!("unexpected answer from wsyncd: {kind:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    /// Runs `peer` as the daemon's side of a socket pair and handshakes with it.
    fn with_peer(
        peer: impl FnOnce(&mut BufReader<UnixStream>, &mut UnixStream) + Send + 'static,
    ) -> Result<Client> {
        let (ours, theirs) = UnixStream::pair().unwrap();
        // Not joined: a failed assertion in the peer shows up as the client's I/O error.
        std::thread::spawn(move || {
            let mut writer = theirs.try_clone().unwrap();
            let mut reader = BufReader::new(theirs);
            let hello: Request = framing::read_frame(&mut reader).unwrap();
            assert!(matches!(
                hello,
                Request::Hello {
                    protocol: PROTOCOL_VERSION,
                    ..
                }
            ));
            peer(&mut reader, &mut writer);
        });
        Client::handshake_on(ours, Path::new("/run/test.sock"))
    }

    fn hello(protocol: u32) -> Response {
        Response::Hello {
            protocol,
            version: "9.9.9".into(),
            pid: 77,
        }
    }

    #[test]
    fn a_different_protocol_is_refused_with_what_to_do() {
        let err = with_peer(|_, w| framing::write_frame(w, &hello(PROTOCOL_VERSION + 1)).unwrap())
            .unwrap_err();
        assert_eq!(crate::error::exit_code(&err), exit_codes::PROTOCOL_MISMATCH);
        let text = crate::error::render(&err);
        assert!(
            text.contains(&format!(
                "wsyncd 9.9.9 (pid 77) speaks protocol {}",
                PROTOCOL_VERSION + 1
            )),
            "{text}"
        );
        assert!(
            text.contains("hint: install wsync and wsyncd from the same build"),
            "{text}"
        );
    }

    /// A daemon of protocol 1 only, as wsyncd was before protocol 2: it refuses a hello in
    /// another protocol and closes the connection; in protocol 1 it answers `list`.
    fn old_daemon(dir: &Path) -> PathBuf {
        let socket = dir.join("old.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let stream = stream.unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let Ok(Request::Hello { protocol, .. }) = framing::read_frame(&mut reader) else {
                    continue;
                };
                if protocol != 1 {
                    let refusal = Response::Error {
                        code: ErrorCode::ProtocolMismatch,
                        message: format!("protocol mismatch: the client speaks protocol {protocol}, this daemon (wsyncd 0.0.1) speaks protocol 1"),
                    };
                    framing::write_frame(&mut writer, &refusal).unwrap();
                    continue;
                }
                framing::write_frame(&mut writer, &hello(1)).unwrap();
                while let Ok(request) = framing::read_frame::<Request>(&mut reader) {
                    let answer = match request {
                        Request::List {} => Response::Workspaces { workspaces: vec![] },
                        _ => Response::Error {
                            code: ErrorCode::BadRequest,
                            message: "unexpected".into(),
                        },
                    };
                    framing::write_frame(&mut writer, &answer).unwrap();
                }
            }
        });
        socket
    }

    #[test]
    fn an_old_daemon_is_spoken_to_in_its_protocol_and_named_for_what_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let socket = old_daemon(dir.path());
        let mut client = Client::connect(&socket).unwrap();
        assert_eq!(client.daemon.protocol, 1);
        // What protocol 1 has works.
        assert!(matches!(
            client.call(&Request::List {}).unwrap(),
            Response::Workspaces { .. }
        ));
        // What it lacks fails before it is sent, naming the daemon's version.
        let update = Request::Update {
            workspace: "w".into(),
            changes: Default::default(),
        };
        let err = client.call(&update).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), exit_codes::PROTOCOL_MISMATCH);
        let text = crate::error::render(&err);
        assert!(
            text.contains("wsyncd 9.9.9 (pid 77, protocol 1) is older than this wsync"),
            "{text}"
        );
        assert!(text.contains("no `update` request (protocol 2"), "{text}");
        // The connection is still good.
        assert!(client.call(&Request::List {}).is_ok());
    }

    #[test]
    fn a_daemon_of_this_protocol_without_a_request_is_named_too() {
        let mut client = with_peer(|r, w| {
            framing::write_frame(w, &hello(PROTOCOL_VERSION)).unwrap();
            let _: Result<Request, _> = framing::read_frame(r);
            let answer = Response::Error {
                code: ErrorCode::BadRequest,
                message: "not a valid request: unknown variant `update`, expected one of `hello`"
                    .into(),
            };
            framing::write_frame(w, &answer).unwrap();
        })
        .unwrap();
        let update = Request::Update {
            workspace: "w".into(),
            changes: Default::default(),
        };
        let err = client.call(&update).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), exit_codes::PROTOCOL_MISMATCH);
        assert!(err.to_string().contains("has no `update` request"), "{err}");
    }

    #[test]
    fn error_responses_carry_the_daemon_message_and_exit_code() {
        let mut client = with_peer(|r, w| {
            framing::write_frame(w, &hello(PROTOCOL_VERSION)).unwrap();
            let _: Request = framing::read_frame(r).unwrap();
            let answer = Response::Error {
                code: ErrorCode::NotFound,
                message: "no workspace named \"x\"".into(),
            };
            framing::write_frame(w, &answer).unwrap();
        })
        .unwrap();
        assert_eq!(client.daemon.pid, 77);
        let err = client.call(&Request::List {}).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), exit_codes::NOT_FOUND);
        assert_eq!(err.to_string(), "no workspace named \"x\"");
    }

    #[test]
    fn a_silent_daemon_times_out() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut client = Client {
            reader: BufReader::new(ours.try_clone().unwrap()),
            writer: ours,
            socket: "/run/test.sock".into(),
            timeout: DEFAULT_TIMEOUT,
            daemon: DaemonHello {
                version: String::new(),
                pid: 0,
                protocol: PROTOCOL_VERSION,
            },
        };
        client.set_timeout(Duration::from_millis(50)).unwrap();
        let err = client.call(&Request::List {}).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), exit_codes::TIMEOUT);
    }

    #[test]
    fn a_missing_socket_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let err = Client::connect(&dir.path().join("none.sock")).unwrap_err();
        assert_eq!(
            crate::error::exit_code(&err),
            exit_codes::DAEMON_NOT_RUNNING
        );
        assert!(Client::probe(&dir.path().join("none.sock"))
            .unwrap()
            .is_none());
    }
}
