//! The benchmark scenarios from issue 3. Each measures wsync-monitor and plain rsync on the same
//! data in the same run, locally and (unless `--no-ssh`) over SSH to a private sshd on
//! 127.0.0.1.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::area::{ssh_session_cost, start_sshd, Area, Transport, TIMEOUT};
use crate::data::{count_entries, make_tree, ms, percentile, poll_since};
use crate::procfs::cpu_ticks_and_rss;
use crate::report::{Measured, Row, Scenario};
use crate::Options;

fn reps(opts: &Options, full: usize, quick: usize) -> usize {
    if opts.quick {
        quick
    } else {
        full
    }
}

/// Runs every scenario; returns the rows and notes for below the table.
pub fn all(opts: &Options) -> Result<(Vec<Row>, Vec<String>)> {
    let base = opts.dir.join(format!("wsync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let result = run_all(opts, &base);
    let _ = std::fs::remove_dir_all(&base);
    result
}

fn run_all(opts: &Options, base: &Path) -> Result<(Vec<Row>, Vec<String>)> {
    let mut notes = Vec::new();
    let mut rows = run_transport(opts, base, Transport::Local)?;
    if opts.ssh {
        if !Path::new("/usr/sbin/sshd").exists() {
            bail!("/usr/sbin/sshd is missing: apt-get install openssh-server, or pass --no-ssh");
        }
        eprintln!("bench: starting a private sshd on 127.0.0.1");
        let sshd = start_sshd(base, opts.ssh_login_rc)?;
        notes.push(format!(
            "SSH rows: sshd on 127.0.0.1 from tests/support/sshd.rs{}; a new ssh connection \
             running `true` costs {} (median of 5), which plain rsync pays on every run.",
            if opts.ssh_login_rc {
                ", remote bash reads ~/.bashrc (--ssh-login-rc)"
            } else {
                ", remote sessions with SHLVL=1 so bash skips ~/.bashrc"
            },
            ms(ssh_session_cost(&sshd)?)
        ));
        rows.extend(run_transport(opts, base, Transport::Ssh(&sshd))?);
    }
    Ok((rows, notes))
}

/// The scenario names `--only` takes, in the order they run.
pub const NAMES: [&str; 6] = ["one-file", "large", "burst", "rename", "delete", "growing"];

fn run_transport(opts: &Options, base: &Path, t: Transport<'_>) -> Result<Vec<Row>> {
    let place = t.place();
    let mut rows = Vec::new();
    let wanted = |name: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == name);
    if wanted("one-file") {
        eprintln!("bench [{place}]: one small file");
        rows.push(one_small_file(opts, base, t)?);
    }
    if wanted("large") {
        eprintln!("bench [{place}]: 50,000-file tree (initial sync, one edit, idle)");
        rows.extend(large_tree(opts, base, t)?);
    }
    if wanted("burst") {
        eprintln!("bench [{place}]: burst of 5,000 files");
        rows.push(burst(opts, base, t)?);
    }
    if wanted("rename") {
        eprintln!("bench [{place}]: rename a directory of 5,000 files");
        rows.push(rename_dir(opts, base, t)?);
    }
    if wanted("delete") {
        eprintln!("bench [{place}]: delete 1,000 files");
        rows.push(delete_files(opts, base, t)?);
    }
    if wanted("growing") {
        eprintln!("bench [{place}]: a 100 MiB file written over 5 s through one descriptor");
        rows.push(growing_file(base, t)?);
    }
    Ok(rows)
}

fn p95(samples: &[Duration]) -> Option<Duration> {
    (samples.len() >= 5).then(|| percentile(samples, 95.0))
}

/// Write one 1 KiB file; time until it is on the remote with its full content. Plain rsync:
/// one `rsync -a --delete` of the (100-file) tree per change.
fn one_small_file(opts: &Options, base: &Path, t: Transport<'_>) -> Result<Row> {
    let area = Area::new(base, "one-file", t)?;
    make_tree(&area.src, "d", 10, 10, 1024)?;
    area.plain_rsync(true)?;
    let mut monitor = area.start_monitor()?;
    let content = vec![b'y'; 1024];
    let mut wsync = Vec::new();
    let mut plain = Vec::new();
    for i in 0..reps(opts, 40, 10) {
        let name = format!("new{i}.txt");
        let start = Instant::now();
        std::fs::write(area.src.join(&name), &content)?;
        let dst = area.dst.join(&name);
        wsync.push(poll_since(start, TIMEOUT, || {
            std::fs::read(&dst).is_ok_and(|c| c == content)
        })?);
        monitor.wait_in_sync(TIMEOUT)?;
        plain.push(area.plain_rsync(true)?);
    }
    monitor.shutdown();
    Ok(Row::time(
        Scenario::OneFile,
        area.place(),
        percentile(&wsync, 50.0),
        p95(&wsync),
        percentile(&plain, 50.0),
        format!(
            "{} samples; plain rsync p95 {}",
            wsync.len(),
            ms(percentile(&plain, 95.0))
        ),
    ))
}

/// Initial sync of 50,000 files, then single edits, then (local only) an idle period.
fn large_tree(opts: &Options, base: &Path, t: Transport<'_>) -> Result<Vec<Row>> {
    let area = Area::new(base, "large", t)?;
    make_tree(&area.src, "d", 500, 100, 100)?;
    let (mut initial, mut plain_initial) = (Vec::new(), Vec::new());
    let runs = reps(opts, 3, 1);
    let mut monitor = None;
    for run in 0..runs {
        if run > 0 {
            area.clear_destinations()?;
        }
        plain_initial.push(area.plain_rsync(false)?);
        let start = Instant::now();
        let mut m = area.spawn_monitor()?;
        m.wait_in_sync(TIMEOUT)?;
        initial.push(start.elapsed());
        if run + 1 < runs {
            m.shutdown();
        } else {
            monitor = Some(m);
        }
    }
    let mut monitor = monitor.context("no initial-sync run")?;
    let mut rows = vec![Row::time(
        Scenario::InitialSync,
        area.place(),
        percentile(&initial, 50.0),
        None,
        percentile(&plain_initial, 50.0),
        format!("median of {runs}; wsync: process start to in-sync, watching 501 dirs included"),
    )];

    let mut wsync = Vec::new();
    let mut plain = Vec::new();
    for i in 0..reps(opts, 30, 10) {
        let file = area
            .src
            .join(format!("d{:04}/f{:05}.txt", (i * 37) % 500, (i * 11) % 100));
        let content = format!("edit {i}\n").repeat(20);
        let start = Instant::now();
        std::fs::write(&file, &content)?;
        let dst = area.dst.join(file.strip_prefix(&area.src)?);
        wsync.push(poll_since(start, TIMEOUT, || {
            std::fs::read(&dst).is_ok_and(|c| c == content.as_bytes())
        })?);
        monitor.wait_in_sync(TIMEOUT)?;
        // Only a few full-tree rsyncs: each costs hundreds of milliseconds.
        if i < 5 {
            plain.push(area.plain_rsync(true)?);
        }
    }
    rows.push(Row::time(
        Scenario::EditLargeTree,
        area.place(),
        percentile(&wsync, 50.0),
        p95(&wsync),
        percentile(&plain, 50.0),
        format!(
            "{} samples; plain rsync = a full-tree rsync per change",
            wsync.len()
        ),
    ));

    if matches!(t, Transport::Local) {
        let idle = Duration::from_secs(if opts.quick { 5 } else { 20 });
        let (ticks_before, _) = cpu_ticks_and_rss(monitor.pid())?;
        std::thread::sleep(idle);
        let (ticks_after, rss_kib) = cpu_ticks_and_rss(monitor.pid())?;
        let cpu_ms = ticks_after.saturating_sub(ticks_before) as f64 * 1000.0 / 100.0; // USER_HZ
        rows.push(Row {
            scenario: Scenario::Idle,
            place: area.place(),
            wsync: Measured::Idle {
                secs: idle.as_secs(),
                cpu_ms,
                rss_kib,
            },
            rsync: None,
            note: format!(
                "{} watches; CPU resolution 10 ms",
                monitor.last_status.as_ref().map_or(0, |s| s.watches)
            ),
        });
    }
    monitor.shutdown();
    Ok(rows)
}

/// 5,000 new files in 50 new directories; time until flush confirms the remote has them.
fn burst(opts: &Options, base: &Path, t: Transport<'_>) -> Result<Row> {
    let mut creating = Vec::new();
    let mut wsync = Vec::new();
    let mut plain = Vec::new();
    for rep in 0..reps(opts, 5, 3) {
        let area = Area::new(base, &format!("burst{rep}"), t)?;
        make_tree(&area.src, "old", 10, 10, 100)?;
        area.plain_rsync(true)?;
        let mut monitor = area.start_monitor()?;
        let start = Instant::now();
        make_tree(&area.src, "new", 50, 100, 100)?;
        creating.push(start.elapsed());
        monitor.flush(TIMEOUT)?;
        wsync.push(start.elapsed());
        anyhow::ensure!(
            count_entries(&area.dst.join("new0049")) == 100,
            "burst not converged"
        );
        monitor.shutdown();
        plain.push(area.plain_rsync(true)?);
    }
    Ok(Row::time(
        Scenario::Burst,
        t.place(),
        percentile(&wsync, 50.0),
        None,
        percentile(&plain, 50.0),
        format!(
            "median of {}; wsync: first create to flush answered, including the {} the \
             bench takes to create the files",
            wsync.len(),
            ms(percentile(&creating, 50.0))
        ),
    ))
}

/// Rename a directory holding 5,000 files; time until the remote shows the new name complete.
fn rename_dir(opts: &Options, base: &Path, t: Transport<'_>) -> Result<Row> {
    let mut wsync = Vec::new();
    let mut plain = Vec::new();
    let mut bytes = Vec::new();
    for rep in 0..reps(opts, 5, 3) {
        let area = Area::new(base, &format!("rename{rep}"), t)?;
        make_tree(&area.src, "big", 1, 5000, 1024)?;
        area.plain_rsync(true)?;
        let mut monitor = area.start_monitor()?;
        let before = monitor.bytes_sent();
        let start = Instant::now();
        std::fs::rename(area.src.join("big0000"), area.src.join("renamed"))?;
        let (new, old) = (area.dst.join("renamed"), area.dst.join("big0000"));
        wsync.push(poll_since(start, TIMEOUT, || {
            !old.exists() && count_entries(&new) == 5000
        })?);
        monitor.flush(TIMEOUT)?;
        bytes.push(monitor.bytes_sent().saturating_sub(before));
        monitor.shutdown();
        plain.push(area.plain_rsync(true)?);
    }
    bytes.sort_unstable();
    Ok(Row::time(
        Scenario::RenameDir,
        t.place(),
        percentile(&wsync, 50.0),
        None,
        percentile(&plain, 50.0),
        format!(
            "median of {}; bytes wsync sent per rename (median): {} for 5,000 × 1 KiB",
            wsync.len(),
            bytes.get(bytes.len() / 2).copied().unwrap_or(0)
        ),
    ))
}

/// Delete 1,000 files; time until they are gone from the remote.
fn delete_files(opts: &Options, base: &Path, t: Transport<'_>) -> Result<Row> {
    let mut wsync = Vec::new();
    let mut plain = Vec::new();
    for rep in 0..reps(opts, 5, 3) {
        let area = Area::new(base, &format!("delete{rep}"), t)?;
        make_tree(&area.src, "d", 10, 100, 100)?;
        make_tree(&area.src, "keep", 10, 100, 100)?;
        area.plain_rsync(true)?;
        let monitor = area.start_monitor()?;
        let start = Instant::now();
        for d in 0..10 {
            for f in 0..100 {
                std::fs::remove_file(area.src.join(format!("d{d:04}/f{f:05}.txt")))?;
            }
        }
        let dst = area.dst.clone();
        wsync.push(poll_since(start, TIMEOUT, || {
            (0..10).all(|d| count_entries(&dst.join(format!("d{d:04}"))) == 0)
        })?);
        monitor.shutdown();
        plain.push(area.plain_rsync(true)?);
    }
    Ok(Row::time(
        Scenario::Delete,
        t.place(),
        percentile(&wsync, 50.0),
        None,
        percentile(&plain, 50.0),
        format!(
            "median of {}; wsync: first unlink to all gone remotely",
            wsync.len()
        ),
    ))
}

/// A 100 MiB file written over 5 s in 1 MiB writes through one descriptor (issue 11 item 10):
/// the bytes the monitor reports sent for it, against its size, and the time from its close
/// to the remote holding all of it. Plain rsync: one run sending the finished file.
fn growing_file(base: &Path, t: Transport<'_>) -> Result<Row> {
    const MIB: usize = 1 << 20;
    const CHUNKS: usize = 100;
    let area = Area::new(base, "growing", t)?;
    make_tree(&area.src, "d", 1, 10, 1024)?;
    area.plain_rsync(true)?;
    let mut monitor = area.start_monitor()?;
    monitor.flush(TIMEOUT)?;
    let before = monitor.bytes_sent();
    let path = area.src.join("big.bin");
    let mut file = std::fs::File::create(&path)?;
    // Chunks that differ from each other: over SSH rsync's delta transfer would otherwise
    // match repeated blocks and send almost nothing.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let start = Instant::now();
    for i in 0..CHUNKS {
        let mut chunk = Vec::with_capacity(MIB);
        while chunk.len() < MIB {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.extend_from_slice(&state.to_le_bytes());
        }
        std::io::Write::write_all(&mut file, &chunk)?;
        let next = start + Duration::from_millis(50) * (i as u32 + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let writing = start.elapsed();
    drop(file);
    let closed = Instant::now();
    let size = (CHUNKS * MIB) as u64;
    let dst = area.dst.join("big.bin");
    let src_mtime = std::fs::metadata(&path)?.modified()?;
    let converged = poll_since(closed, TIMEOUT, || {
        std::fs::metadata(&dst)
            .is_ok_and(|m| m.len() == size && m.modified().is_ok_and(|t| t == src_mtime))
    })?;
    monitor.flush(TIMEOUT)?;
    let sent = monitor.bytes_sent().saturating_sub(before);
    monitor.shutdown();
    anyhow::ensure!(
        std::fs::read(&path)? == std::fs::read(&dst)?,
        "the growing file differs on the remote"
    );
    let plain = area.plain_rsync(true)?;
    Ok(Row {
        scenario: Scenario::GrowingFile,
        place: t.place(),
        wsync: Measured::Bytes {
            sent,
            size,
            converged,
        },
        rsync: Some(plain),
        note: format!(
            "written in {:.1} s; wsync: bytes the monitor reports sent while it grew and \
             after its close, and close → on the remote; plain rsync: sending the finished \
             file once",
            writing.as_secs_f64()
        ),
    })
}
