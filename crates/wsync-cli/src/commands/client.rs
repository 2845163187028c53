//! `wsync client`: a stdio bridge to the daemon socket for editors that can spawn a process but
//! not open a unix socket. It copies bytes both ways and speaks no protocol itself: the editor
//! sends `hello` and everything after it (docs/PROTOCOL.md), so the bridge never needs to
//! change when the protocol grows.

use std::io::{ErrorKind, Write};
use std::net::Shutdown;

use anyhow::{Context, Result};

use super::Ctx;
use crate::client::connect_socket;
use crate::exit_codes;

pub fn relay(ctx: &Ctx) -> Result<i32> {
    let socket = &ctx.config.daemon_command_socket_path;
    let stream = connect_socket(socket)?;
    let mut to_daemon = stream.try_clone().context("cloning the socket handle")?;
    // stdin → daemon on a thread; at stdin's end the daemon is told (half-close), and it
    // closes the connection once it has answered what it read.
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            if let Err(e) = std::io::copy(&mut stdin, &mut to_daemon) {
                tracing::debug!("relaying stdin to wsyncd: {e}");
            }
            let _ = to_daemon.shutdown(Shutdown::Write);
        })
        .context("starting the stdin relay")?;
    let mut from_daemon = stream;
    let mut stdout = std::io::stdout().lock();
    match copy_flushing(&mut from_daemon, &mut stdout) {
        Ok(()) => Ok(exit_codes::OK),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(exit_codes::OK),
        Err(e) => Err(anyhow::Error::new(e).context("relaying wsyncd's output to stdout")),
    }
}

/// Copies until EOF, flushing after each read: an event must reach the editor when it happens.
fn copy_flushing(from: &mut impl std::io::Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}
