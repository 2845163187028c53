//! Test data and timing helpers: tree generation, polling a destination, medians.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Creates `dirs` directories of `files` files of `size` bytes each under `root`.
pub fn make_tree(root: &Path, prefix: &str, dirs: usize, files: usize, size: usize) -> Result<()> {
    let content = vec![b'x'; size];
    for d in 0..dirs {
        let dir = root.join(format!("{prefix}{d:04}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..files {
            std::fs::write(dir.join(format!("f{f:05}.txt")), &content)?;
        }
    }
    Ok(())
}

/// Runs a command to completion and returns its wall time; fails on a non-zero exit.
pub fn timed(cmd: &mut Command) -> Result<Duration> {
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(start.elapsed())
}

/// Polls `cond` with a short spin until it holds; returns the elapsed time since `start`.
pub fn poll_since(
    start: Instant,
    timeout: Duration,
    cond: impl FnMut() -> bool,
) -> Result<Duration> {
    poll_every(start, timeout, Duration::from_micros(200), cond)
}

/// How often a wait on `wsync status` asks: a status request costs the daemon and the monitor
/// CPU, and asked every 200 µs through a 36 s initial sync it took ~3.5 s from the rsync being
/// timed on two cores.
pub const STATUS_POLL: Duration = Duration::from_millis(50);

/// Polls `cond` every `interval` until it holds; returns the elapsed time since `start`.
pub fn poll_every(
    start: Instant,
    timeout: Duration,
    interval: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration> {
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("condition not reached within {timeout:?}");
        }
        std::thread::sleep(interval);
    }
}

/// Number of entries in a directory (0 when it does not exist).
pub fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}

/// The p-th percentile (0–100) of `samples`, by nearest rank.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
