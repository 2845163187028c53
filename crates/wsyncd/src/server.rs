//! The socket server: an accept loop with one task per connection. Each connection must open
//! with `Hello`; frames use the core framing with a per-frame read timeout, so an idle or broken
//! client only ever costs its own task. Peers with another uid are turned away.
//!
//! The handshake settles the connection's protocol: a client speaking any version from
//! `MIN_PROTOCOL_VERSION` to `PROTOCOL_VERSION` is answered in its own (docs/PROTOCOL.md).
//!
//! After `subscribe` the connection has two halves (see [`subscribed`]): a writer task that
//! sends replies and the subscription's events in order, and this task, which keeps reading
//! requests (with no idle timeout: a subscriber may stay silent for ever). A subscriber that
//! stops reading fills its queue and is dropped by the publisher, never waited for.

use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use wsync_core::framing::{self, asynchronous, FrameError, MAX_FRAME_BYTES};
use wsync_core::protocol::{
    ErrorCode, Event, EventKind, Request, Response, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

use crate::handlers::{self, error, After};
use crate::shutdown::Shutdown;
use crate::state::SharedState;
use crate::subscribers::{Subscription, QUEUE};

/// How long a client may take to send one frame (or to read one reply).
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// The kernel send buffer of a subscribed connection: small, so that a subscriber that stops
/// reading is found out by its bounded queue after about [`QUEUE`] events rather than after
/// whatever the kernel's default buffer holds.
const SUBSCRIBER_SNDBUF: usize = 32 * 1024;

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
    let mut greeted: Option<u32> = None;
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
        let Some(protocol) = greeted else {
            let reply = hello(&request);
            if let Response::Hello { protocol, .. } = &reply {
                greeted = Some(*protocol);
            }
            if send(&mut write, &reply).await.is_err() || greeted.is_none() {
                return;
            }
            continue;
        };
        if protocol < request.since() {
            let message = format!(
                "{} needs protocol {} or later; this connection said hello with protocol {protocol}",
                request.type_name(),
                request.since()
            );
            if send(&mut write, &error(ErrorCode::BadRequest, message))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        if let Request::Subscribe { workspace } = request {
            match handlers::subscribe(&shared, workspace).await {
                Ok((reply, subscription)) => {
                    if send(&mut write, &reply).await.is_err() {
                        unsubscribe(&shared, subscription.id);
                        return;
                    }
                    return subscribed(reader, write, subscription, shared, shutdown).await;
                }
                Err(reply) => {
                    if send(&mut write, &reply).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
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

/// The answer to a connection's first frame: `Hello` in the client's protocol when this daemon
/// serves it, otherwise an error saying which side to upgrade.
fn hello(request: &Request) -> Response {
    let Request::Hello { protocol, version } = request else {
        return error(
            ErrorCode::BadRequest,
            "the first message on a connection must be hello".into(),
        );
    };
    let daemon = wsync_core::VERSION;
    if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(protocol) {
        tracing::debug!(client_version = %version, protocol, "client connected");
        return Response::Hello {
            protocol: *protocol,
            version: daemon.into(),
            pid: std::process::id(),
        };
    }
    let fix = if *protocol > PROTOCOL_VERSION {
        "the daemon is older than the client: restart it from the new build with `wsync daemon stop && wsync daemon start`"
    } else {
        "the client is older than the daemon: upgrade it"
    };
    error(
        ErrorCode::ProtocolMismatch,
        format!(
            "protocol mismatch: the client (wsync {version}) speaks protocol {protocol}, this daemon (wsyncd {daemon}) speaks protocols {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; {fix}"
        ),
    )
}

fn unsubscribe(shared: &SharedState, id: u64) {
    if let Ok(mut state) = shared.lock() {
        state.supervisor.subscribers.unsubscribe(id);
    }
}

/// Serves a subscribed connection until either side ends it: requests are still answered, in
/// order, and every event of the subscription is sent between the replies.
async fn subscribed(
    mut reader: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    subscription: Subscription,
    shared: SharedState,
    shutdown: Shutdown,
) {
    let id = subscription.id;
    if let Err(e) = nix::sys::socket::setsockopt(
        write.as_ref(),
        nix::sys::socket::sockopt::SndBuf,
        &SUBSCRIBER_SNDBUF,
    ) {
        tracing::debug!("cannot shrink a subscriber's send buffer: {e}");
    }
    // One reply in flight at most: requests on a connection are answered one at a time.
    let (replies, replies_rx) = mpsc::channel::<Response>(1);
    let mut writer = tokio::spawn(write_subscribed(write, replies_rx, subscription));
    loop {
        let line = tokio::select! {
            _ = &mut writer => break,
            line = asynchronous::read_line(&mut reader) => line,
        };
        let request = match line {
            Ok(line) => framing::decode::<Request>(&line),
            Err(_) => break,
        };
        let (response, after) = match request {
            Err(e) => (
                error(ErrorCode::BadRequest, format!("not a valid request: {e}")),
                handlers::After::Continue,
            ),
            Ok(Request::Subscribe { .. }) => (
                error(
                    ErrorCode::Invalid,
                    "this connection is subscribed already".into(),
                ),
                handlers::After::Continue,
            ),
            Ok(request) => handlers::handle(request, &shared).await,
        };
        if replies.send(response).await.is_err() {
            break;
        }
        if after == After::Shutdown {
            shutdown.trigger("shutdown request");
            break;
        }
    }
    unsubscribe(&shared, id);
    drop(replies);
    // The writer ends once its queue is closed (after what it holds) or its peer is gone.
    let _ = tokio::time::timeout(FRAME_TIMEOUT, writer).await;
}

/// Writes replies and events until both sources end or the peer stops taking them; a queue
/// closed for lagging ends with a `lagged` event.
async fn write_subscribed(
    mut write: OwnedWriteHalf,
    mut replies: mpsc::Receiver<Response>,
    mut subscription: Subscription,
) {
    let mut replies_open = true;
    loop {
        let frame = tokio::select! {
            biased;
            reply = replies.recv(), if replies_open => match reply {
                Some(reply) => reply,
                None => {
                    replies_open = false;
                    continue;
                }
            },
            event = subscription.events.recv() => match event {
                Some(event) => Response::Event { event },
                None if subscription.lagged() => {
                    let event = Event {
                        unix_ms: wsync_core::unix_ms(std::time::SystemTime::now()),
                        workspace: None,
                        kind: EventKind::Lagged { queue: QUEUE as u32 },
                    };
                    let _ = send(&mut write, &Response::Event { event }).await;
                    return;
                }
                None => return,
            },
        };
        let last = matches!(
            &frame,
            Response::Event { event } if event.kind == EventKind::DaemonStopping {}
        );
        // Returning drops the subscription: the daemon's exit waits for that (see daemon.rs).
        if send(&mut write, &frame).await.is_err() || last {
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
