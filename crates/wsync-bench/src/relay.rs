//! A TCP relay on 127.0.0.1 that holds every chunk for a fixed time in each direction: a
//! network round trip without netem (not available here). It adds latency, not a bandwidth
//! limit: each chunk leaves `one_way` after it arrived, in order.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub struct DelayRelay {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl DelayRelay {
    /// Listens on an ephemeral port and forwards each connection to `127.0.0.1:upstream`.
    pub fn start(upstream: u16, one_way: Duration) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the delay relay")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(down) = conn else { continue };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for s in [&down, &up] {
                    let _ = s.set_nodelay(true);
                }
                if let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) {
                    std::thread::spawn(move || pump(down, up, one_way));
                    std::thread::spawn(move || pump(up2, down2, one_way));
                }
            }
        });
        Ok(Self { port, stop })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
fn pump(mut from: TcpStream, to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        let mut to = to;
        for (due, chunk) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_through_the_relay_takes_twice_the_delay() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_port = echo.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        });
        let relay = DelayRelay::start(echo_port, Duration::from_millis(25)).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", relay.port())).unwrap();
        let start = Instant::now();
        s.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        // A lower bound only: the relay must hold each direction at least its delay.
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
