//! The socket server: an accept loop with one task per connection. Each connection must open
//! with `Hello`; frames use the core framing with a per-frame read timeout, so an idle or broken
//! client only ever costs its own task. Peers with another uid are turned away.

use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use wsync_core::framing::{self, asynchronous, FrameError, MAX_FRAME_BYTES};
use wsync_core::protocol::{ErrorCode, Request, Response, PROTOCOL_VERSION};

use crate::handlers::{self, error, After};
use crate::shutdown::Shutdown;
use crate::state::SharedState;

/// How long a client may take to send one frame (or to read one reply).
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until shutdown is triggered; returning drops the listener.
pub async fn serve(listener: UnixListener, shared: SharedState, shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, shared.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // E.g. EMFILE: back off instead of spinning; existing clients keep going.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn connection(stream: UnixStream, shared: SharedState, shutdown: Shutdown) {
    let me = nix::unistd::geteuid().as_raw();
    let peer = match stream.peer_cred() {
        Ok(cred) => cred,
        Err(e) => {
            tracing::warn!("cannot read peer credentials, closing connection: {e}");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    if peer.uid() != me {
        tracing::warn!(peer_uid = peer.uid(), pid = ?peer.pid(), "refusing connection from another user");
        let message = format!(
            "permission denied: this wsyncd belongs to uid {me}, you are uid {}",
            peer.uid()
        );
        let _ = send(&mut write, &error(ErrorCode::Invalid, message)).await;
        return;
    }
    let mut reader = BufReader::new(read);
    let mut greeted = false;
    loop {
        let line = match tokio::time::timeout(FRAME_TIMEOUT, asynchronous::read_line(&mut reader))
            .await
        {
            Err(_) => {
                tracing::debug!(pid = ?peer.pid(), "closing idle connection");
                return;
            }
            Ok(Ok(line)) => line,
            Ok(Err(FrameError::Closed)) => return,
            Ok(Err(e @ (FrameError::TooLarge | FrameError::Truncated))) => {
                // The stream is out of step (or over): report and close this connection only.
                let message = match e {
                    FrameError::TooLarge => {
                        format!("request larger than the {MAX_FRAME_BYTES}-byte limit; closing the connection")
                    }
                    _ => "incomplete request (connection closed mid-message)".to_owned(),
                };
                tracing::warn!(pid = ?peer.pid(), "bad frame: {e}");
                let _ = send(&mut write, &error(ErrorCode::BadRequest, message)).await;
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!("connection read failed: {e}");
                return;
            }
        };
        let request: Request = match framing::decode(&line) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(pid = ?peer.pid(), "undecodable request: {e}");
                let message = format!("not a valid request: {e}");
                if send(&mut write, &error(ErrorCode::BadRequest, message))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        if !greeted {
            let reply = match &request {
                Request::Hello { protocol, version } if *protocol == PROTOCOL_VERSION => {
                    tracing::debug!(client_version = %version, pid = ?peer.pid(), "client connected");
                    greeted = true;
                    Response::Hello {
                        protocol: PROTOCOL_VERSION,
                        version: wsync_core::VERSION.into(),
                        pid: std::process::id(),
                    }
                }
                Request::Hello { protocol, version } => error(
                    ErrorCode::ProtocolMismatch,
                    format!(
                        "protocol mismatch: the client (wsync {version}) speaks protocol {protocol}, this daemon (wsyncd {}) speaks protocol {PROTOCOL_VERSION}; restart the daemon with `wsync daemon stop && wsync daemon start`",
                        wsync_core::VERSION
                    ),
                ),
                _ => error(
                    ErrorCode::BadRequest,
                    "the first message on a connection must be hello".into(),
                ),
            };
            if send(&mut write, &reply).await.is_err() || !greeted {
                return;
            }
            continue;
        }
        let (response, after) = handlers::handle(request, &shared).await;
        if send(&mut write, &response).await.is_err() {
            return;
        }
        if after == After::Shutdown {
            shutdown.trigger("shutdown request");
            return;
        }
    }
}

async fn send(write: &mut OwnedWriteHalf, response: &Response) -> Result<(), ()> {
    match tokio::time::timeout(FRAME_TIMEOUT, asynchronous::write_frame(write, response)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!("cannot write response: {e}");
            Err(())
        }
        Err(_) => {
            tracing::debug!("client did not read its response in time");
            Err(())
        }
    }
}
