//! Soak phase 2: one very large workspace (200,000 files by default) on the same daemon:
//! initial sync against plain `rsync -a` of the same tree, then single-edit latency, the
//! monitor's memory and watches, its idle CPU, and (`--overflow-files`) the recovery from an
//! inotify queue overflow: files created while the monitor is SIGSTOPped.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use wsync_core::monitor_proto::RemoteState;
use wsync_core::protocol::Request;
use wsync_tests::tree::count_entries;

use super::daemon::Daemon;
use super::{secs, Budget, Section, SoakOptions};
use crate::data::{make_tree, ms, percentile, poll_every, poll_since, timed, STATUS_POLL};
use crate::procfs::{mib, proc_stats};

const NAME: &str = "big";

/// Runs the phase; `Ok(false)` when a check failed (the figures say which).
pub fn run(
    opts: &SoakOptions,
    daemon: &Daemon,
    base: &Path,
    budget: Budget,
    out: &mut Section,
) -> Result<bool> {
    budget.check("the large workspace")?;
    let (src, dst, plain) = (base.join("src"), base.join("dst"), base.join("plain"));
    std::fs::create_dir_all(&dst)?;
    let per_dir = opts.files_per_dir;
    let dirs = opts.big_files.div_ceil(per_dir);
    let start = Instant::now();
    make_tree(&src, "d", dirs, per_dir, 64)?;
    out.add(
        "create the tree (64-byte files)",
        format!(
            "{} files in {dirs} dirs, {}",
            dirs * per_dir,
            secs(start.elapsed())
        ),
    );
    // Plain rsync and wsync's setup take turns (wsync first in odd rounds but the last, which
    // leaves its workspace for the steps below), so neither always runs on the tmpfs the other
    // just emptied; the medians compare. Three copies of the tree do not fit the tmpfs: a
    // round that runs wsync first removes its copy before plain rsync runs.
    let rounds = opts.setup_rounds.max(1);
    let (mut plain_times, mut wsync_times, mut overheads) = (Vec::new(), Vec::new(), Vec::new());
    let (mut walks, mut full_syncs) = (Vec::new(), Vec::new());
    let mut monitor_pid = None;
    let mut watches = 0;
    let plain_rsync = || -> Result<Duration> {
        let took = timed(
            Command::new("rsync")
                .arg("-a")
                .arg(slash(&src))
                .arg(slash(&plain)),
        )?;
        std::fs::remove_dir_all(&plain)?;
        Ok(took)
    };
    // One untimed copy first: on this VM memory is slow the first time it is touched (a copy on
    // fresh tmpfs pages took 35.5 s, later ones 24.0 and 21.8 s, wsync's rsync arguments or
    // not), so whichever setup ran first would carry that cost.
    plain_rsync()?;
    let mut set_up = false;
    let tear_down = |set_up: &mut bool| -> Result<()> {
        if std::mem::take(set_up) {
            daemon.ok(&Request::Remove {
                workspace: NAME.into(),
            })?;
            std::fs::remove_dir_all(&dst)?;
            std::fs::create_dir_all(&dst)?;
        }
        Ok(())
    };
    for round in 0..rounds {
        budget.check("a setup round")?;
        let wsync_first = round % 2 == 1 && round + 1 < rounds;
        let plain_time = if wsync_first {
            None
        } else {
            Some(plain_rsync()?)
        };
        tear_down(&mut set_up)?;
        let (initial, pid, w) = setup(daemon, &src, &dst, budget)?;
        set_up = true;
        (monitor_pid, watches) = (pid, w);
        if let Some((walk, full_sync)) = setup_split(daemon.log_dir(), round + 1) {
            walks.push(walk);
            full_syncs.push(full_sync);
        }
        let plain_time = match plain_time {
            Some(t) => t,
            None => {
                tear_down(&mut set_up)?;
                plain_rsync()?
            }
        };
        plain_times.push(plain_time);
        wsync_times.push(initial);
        overheads.push(initial.as_secs_f64() - plain_time.as_secs_f64());
    }
    let (plain_med, wsync_med) = (
        percentile(&plain_times, 50.0),
        percentile(&wsync_times, 50.0),
    );
    out.add(
        format!(
            "initial sync: wsync (add + attach → in-sync) / plain rsync -a, median of {rounds}"
        ),
        format!(
            "{} / {} ({:.2}×)",
            secs(wsync_med),
            secs(plain_med),
            wsync_med.as_secs_f64() / plain_med.as_secs_f64().max(1e-9)
        ),
    );
    overheads.sort_by(f64::total_cmp);
    out.add(
        "wsync's time beyond plain rsync's, each round (sorted; median)",
        format!(
            "{} ({:+.2} s)",
            overheads
                .iter()
                .map(|o| format!("{o:+.2} s"))
                .collect::<Vec<_>>()
                .join(", "),
            overheads[overheads.len() / 2]
        ),
    );
    if !walks.is_empty() {
        out.add(
            "of which: the monitor's watch walk / its initial full sync (from its log), medians",
            format!(
                "{} / {}",
                secs(percentile(&walks, 50.0)),
                secs(percentile(&full_syncs, 50.0))
            ),
        );
    }
    let (n_src, n_dst) = (count_entries(&src), count_entries(&dst));
    let mut ok = n_src == n_dst;
    out.add(
        "entries on the remote after the initial sync",
        format!(
            "{n_dst} of {n_src}{}",
            if ok { "" } else { " **(missing)**" }
        ),
    );

    let mut samples = Vec::new();
    for i in 0..opts.edits {
        budget.check("an edit")?;
        let rel = format!("d{:04}/f{:05}.txt", (i * 7919) % dirs, (i * 31) % per_dir);
        let content = format!("soak edit {i}\n").repeat(8);
        let start = Instant::now();
        std::fs::write(src.join(&rel), &content)?;
        let target = dst.join(&rel);
        samples.push(poll_since(
            start,
            budget.cap(Duration::from_secs(30)),
            || std::fs::read(&target).is_ok_and(|c| c == content.as_bytes()),
        )?);
        // Let the monitor go idle again, so each edit is an isolated change.
        std::thread::sleep(Duration::from_millis(50));
    }
    out.add(
        format!(
            "single-edit latency, {} edits (p50 / p95 / max)",
            samples.len()
        ),
        format!(
            "{} / {} / {}",
            ms(percentile(&samples, 50.0)),
            ms(percentile(&samples, 95.0)),
            ms(samples.iter().max().copied().unwrap_or_default())
        ),
    );

    if let Some(pid) = monitor_pid {
        let idle = budget.cap(Duration::from_secs(10));
        let (m0, d0) = (proc_stats(pid)?, proc_stats(daemon.pid())?);
        std::thread::sleep(idle);
        let (m1, d1) = (proc_stats(pid)?, proc_stats(daemon.pid())?);
        out.add(
            "monitor: watches, RSS (peak), PSS",
            format!(
                "{watches}, {} ({}), {}",
                mib(m1.rss_kib),
                mib(m1.hwm_kib),
                mib(m1.pss_kib)
            ),
        );
        out.add(
            format!(
                "idle {} s: CPU of the monitor / of the daemon",
                idle.as_secs()
            ),
            format!(
                "{:.0} ms / {:.0} ms",
                (m1.cpu_secs() - m0.cpu_secs()) * 1000.0,
                (d1.cpu_secs() - d0.cpu_secs()) * 1000.0
            ),
        );
        if opts.overflow_files > 0 {
            ok &= overflow(opts, daemon, pid, &src, &dst, dirs, budget, out)?;
            let m2 = proc_stats(pid)?;
            out.add(
                "monitor RSS after the overflow recovery (peak over the whole run)",
                format!("{} ({})", mib(m2.rss_kib), mib(m2.hwm_kib)),
            );
        }
        out.add(
            "daemon RSS at the end (peak over the whole run)",
            format!("{} ({})", mib(d1.rss_kib), mib(d1.hwm_kib)),
        );
    } else {
        ok = false;
        out.add("**monitor pid**", "not reported by status");
    }
    daemon.ok(&Request::Remove {
        workspace: NAME.into(),
    })?;
    Ok(ok)
}

/// Adds the large workspace and attaches its remote; returns the time to in-sync, the
/// monitor's pid and its watch count.
fn setup(
    daemon: &Daemon,
    src: &Path,
    dst: &Path,
    budget: Budget,
) -> Result<(Duration, Option<u32>, u64)> {
    let start = Instant::now();
    daemon.add_mirrored(NAME, src, dst)?;
    let (mut monitor_pid, mut watches) = (None, 0);
    let initial = poll_every(
        start,
        budget.cap(Duration::from_secs(300)),
        STATUS_POLL,
        || {
            let Ok(status) = daemon.status() else {
                return false;
            };
            let Some(ws) = status.iter().find(|w| w.workspace.name == NAME) else {
                return false;
            };
            monitor_pid = ws.monitor.pid;
            let Some(report) = &ws.report else {
                return false;
            };
            watches = report.watches;
            !report.remotes.is_empty()
                && report
                    .remotes
                    .iter()
                    .all(|r| r.state == RemoteState::InSync && r.pending == 0)
        },
    );
    match initial {
        Ok(d) => Ok((d, monitor_pid, watches)),
        Err(_) => bail!("the large workspace did not reach in-sync in time"),
    }
}

/// SIGSTOPs the monitor, creates `opts.overflow_files` files across the watched directories
/// (far more events than the kernel queues), SIGCONTs it and times until status shows the
/// overflow and the remote in sync again; then checks every new file arrived.
#[allow(clippy::too_many_arguments)]
fn overflow(
    opts: &SoakOptions,
    daemon: &Daemon,
    pid: u32,
    src: &Path,
    dst: &Path,
    dirs: usize,
    budget: Budget,
    out: &mut Section,
) -> Result<bool> {
    budget.check("the overflow step")?;
    let per_dir = opts.overflow_files.div_ceil(dirs).max(1);
    let new_files: Vec<String> = (0..opts.overflow_files)
        .map(|i| format!("d{:04}/overflow{:05}.txt", i / per_dir, i % per_dir))
        .collect();
    let overflows_before = overflows(daemon)?;
    let monitor = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(monitor, nix::sys::signal::Signal::SIGSTOP)?;
    let created = (|| -> Result<Duration> {
        let start = Instant::now();
        for rel in &new_files {
            std::fs::write(src.join(rel), b"created while the monitor was stopped\n")?;
        }
        Ok(start.elapsed())
    })();
    nix::sys::signal::kill(monitor, nix::sys::signal::Signal::SIGCONT)?;
    let created = created?;
    let start = Instant::now();
    let recovered = poll_every(
        start,
        budget.cap(Duration::from_secs(600)),
        STATUS_POLL,
        || {
            let Ok(status) = daemon.status() else {
                return false;
            };
            status
                .iter()
                .find(|w| w.workspace.name == NAME)
                .and_then(|w| w.report.as_ref())
                .is_some_and(|r| {
                    r.overflows > overflows_before
                        && !r.remotes.is_empty()
                        && r.remotes
                            .iter()
                            .all(|r| r.state == RemoteState::InSync && r.pending == 0)
                })
        },
    );
    let Ok(recovered) = recovered else {
        out.add("**overflow recovery**", "did not get back in sync in time");
        return Ok(false);
    };
    let missing = new_files
        .iter()
        .filter(|rel| !dst.join(rel).exists())
        .count();
    out.add(
        format!(
            "overflow: {} files created while SIGSTOPped ({}), SIGCONT → in sync",
            new_files.len(),
            secs(created)
        ),
        format!(
            "{}{}",
            secs(recovered),
            if missing == 0 {
                String::new()
            } else {
                format!(" **({missing} missing on the remote)**")
            }
        ),
    );
    Ok(missing == 0)
}

/// The large workspace's overflow count, as status reports it.
fn overflows(daemon: &Daemon) -> Result<u64> {
    Ok(daemon
        .status()?
        .iter()
        .find(|w| w.workspace.name == NAME)
        .and_then(|w| w.report.as_ref())
        .map_or(0, |r| r.overflows))
}

/// From the large workspace's monitor log, for its `nth` monitor (1-based: one per setup
/// round, appended to one file): the watch walk (from "monitor starting" to "watching") and
/// the first full sync's own duration (its `synced … full=true … ms=` line). Status counts the
/// remote in sync when rsync reports the transfer done, before rsync exits and that line is
/// written: it is waited for, a few seconds at most.
fn setup_split(log_dir: &Path, nth: usize) -> Option<(Duration, Duration)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(split) = read_setup_split(log_dir, nth) {
            return Some(split);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_setup_split(log_dir: &Path, nth: usize) -> Option<(Duration, Duration)> {
    let log = std::fs::read_dir(log_dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("monitor-big"))
        .find_map(|e| std::fs::read_to_string(e.path()).ok())?;
    // "2026-12-01T21:04:23.130432Z  INFO …": seconds of the day.
    let at = |line: &str| -> Option<f64> {
        let time = line.get(11..26)?;
        let mut parts = time.split(':');
        let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
        Some(
            h.parse::<f64>().ok()? * 3600.0
                + m.parse::<f64>().ok()? * 60.0
                + s.parse::<f64>().ok()?,
        )
    };
    let mut lines = log
        .lines()
        .skip_while({
            let mut seen = 0;
            move |l| {
                if l.contains("monitor starting") {
                    seen += 1;
                }
                seen < nth
            }
        })
        .peekable();
    let started = at(lines.next()?)?;
    let mut rest = lines.take_while(|l| !l.contains("monitor starting"));
    // The backend's module is in the line's target (`wsync_monitor::watch_inotify: watching
    // /path watches=…`): match the message, whatever module logs it.
    let walk = at(rest.find(|l| l.contains(": watching /"))?)? - started;
    let synced = rest.find(|l| l.contains("full=true"))?;
    let ms: f64 = synced
        .split("ms=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((
        Duration::from_secs_f64(walk.max(0.0)),
        Duration::from_secs_f64(ms / 1000.0),
    ))
}

fn slash(p: &Path) -> String {
    format!("{}/", p.display())
}
