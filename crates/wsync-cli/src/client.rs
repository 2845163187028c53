//! The connection to wsyncd: connect to the command socket, check the protocol in the `Hello`
//! handshake, then send requests and read responses with `wsync_core::framing`.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use wsync_core::framing::{self, FrameError};
use wsync_core::protocol::{ErrorCode, Event, Request, Response, PROTOCOL_VERSION};

use crate::error::CliError;
use crate::exit_codes;

/// How long a request may take before the CLI gives up, unless a command says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the daemon said about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonHello {
    pub version: String,
    pub pid: u32,
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
        Self::handshake_on(connect_socket(socket)?, socket)
    }

    /// Handshakes on an already connected stream; `socket` names it in messages.
    pub fn handshake_on(stream: UnixStream, socket: &Path) -> Result<Self> {
        let writer = stream.try_clone().context("cloning the socket handle")?;
        let mut client = Self {
            reader: BufReader::new(stream),
            writer,
            socket: socket.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            daemon: DaemonHello {
                version: String::new(),
                pid: 0,
            },
        };
        client.set_timeout(DEFAULT_TIMEOUT)?;
        client.daemon = client.handshake()?;
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

    fn handshake(&mut self) -> Result<DaemonHello> {
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
            version: wsync_core::VERSION.to_owned(),
        };
        match self.exchange(&hello).context("handshake with wsyncd")? {
            Response::Hello {
                protocol,
                version,
                pid,
            } => {
                if protocol != PROTOCOL_VERSION {
                    return Err(mismatch(&format!(
                        "wsyncd {version} (pid {pid}) speaks protocol {protocol}, this wsync {} speaks protocol {PROTOCOL_VERSION}",
                        wsync_core::VERSION
                    ))
                    .into());
                }
                Ok(DaemonHello { version, pid })
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
        match self.exchange(request)? {
            Response::Error { code, message } => {
                Err(CliError::new(exit_codes::for_error_code(code), message).into())
            }
            other => Ok(other),
        }
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
