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
use crate::data::{make_tree, ms, percentile, poll_since, timed};
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
    let plain_time = timed(
        Command::new("rsync")
            .arg("-a")
            .arg(slash(&src))
            .arg(slash(&plain)),
    )?;
    let _ = std::fs::remove_dir_all(&plain);

    let start = Instant::now();
    daemon.ok(&Request::Add {
        path: src.clone(),
        name: Some(NAME.into()),
        excludes: Vec::new(),
    })?;
    daemon.ok(&Request::Attach {
        workspace: NAME.into(),
        target: dst.to_string_lossy().into_owned(),
        name: Some("mirror".into()),
        port: None,
        identity_file: None,
        ssh_options: Vec::new(),
        wait: false,
        overwrite: false,
        keep_deleted: None,
        transport: Default::default(),
        rsync_path: None,
    })?;
    let mut monitor_pid = None;
    let mut watches = 0;
    let initial = poll_since(start, budget.cap(Duration::from_secs(300)), || {
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
    });
    let initial = match initial {
        Ok(d) => d,
        Err(_) => bail!("the large workspace did not reach in-sync in time"),
    };
    out.add(
        "initial sync: wsync (add + attach → in-sync) / plain rsync -a",
        format!(
            "{} / {} ({:.2}×)",
            secs(initial),
            secs(plain_time),
            initial.as_secs_f64() / plain_time.as_secs_f64().max(1e-9)
        ),
    );
    if let Some((walk, full_sync)) = setup_split(daemon.log_dir()) {
        out.add(
            "of which: the monitor's watch walk / its initial full sync (from its log)",
            format!("{} / {}", secs(walk), secs(full_sync)),
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
    let recovered = poll_since(start, budget.cap(Duration::from_secs(600)), || {
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
    });
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

/// From the large workspace's monitor log: the watch walk (from "monitor starting" to
/// "watching") and the first full sync's own duration (its `synced … full=true … ms=` line).
fn setup_split(log_dir: &Path) -> Option<(Duration, Duration)> {
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
    let line = |needle: &str| log.lines().find(|l| l.contains(needle));
    // The backend's module is in the line's target (`wsync_monitor::watch_inotify: watching
    // /path watches=…`): match the message, whatever module logs it.
    let walk = at(line(": watching /")?)? - at(line("monitor starting")?)?;
    let synced = line("full=true")?;
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
