//! Soak phase 1: many workspaces, each with a local remote, on one daemon; every workspace
//! churns at the same time for several rounds, then each remote must equal its source. Records
//! the daemon's CPU time, memory, threads and fds, the monitors' memory, and how fast the
//! daemon answers `status` under that load.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use wsync_core::protocol::{MonitorProcessState, Request};
use wsync_tests::tree::{churn, count_entries, diff_trees};

use super::daemon::Daemon;
use super::{secs, Budget, Section, SoakOptions};
use crate::data::{make_tree, ms, percentile};
use crate::procfs::{mib, proc_stats, ProcStats, TICKS_PER_SEC};

const FLUSH_TIMEOUT: Duration = Duration::from_secs(180);

struct Ws {
    name: String,
    src: PathBuf,
    dst: PathBuf,
}

/// Runs the phase; `Ok(false)` when a check failed (the figures say which).
pub fn run(
    opts: &SoakOptions,
    daemon: &Daemon,
    base: &Path,
    budget: Budget,
    out: &mut Section,
) -> Result<bool> {
    let all: Vec<Ws> = (0..opts.workspaces)
        .map(|i| Ws {
            name: format!("ws{i:02}"),
            src: base.join(format!("ws{i:02}/src")),
            dst: base.join(format!("ws{i:02}/dst")),
        })
        .collect();
    for (i, ws) in all.iter().enumerate() {
        std::fs::create_dir_all(&ws.dst)?;
        churn::seed(&ws.src, i as u64 + 1);
        make_tree(&ws.src, "bulk", 4, 50, 256)?;
    }
    out.add(
        "entries (files and dirs) per workspace at start",
        count_entries(&all[0].src).to_string(),
    );

    let start = Instant::now();
    for ws in &all {
        daemon.add_mirrored(&ws.name, &ws.src, &ws.dst)?;
    }
    let registered = start.elapsed();
    let lagging = flush_all(daemon, &all, budget)?;
    out.add(
        "add + attach all (requests), then initial sync of all (flush)",
        format!(
            "{} + {}",
            secs(registered),
            secs(start.elapsed() - registered)
        ),
    );
    if !lagging.is_empty() {
        out.add("**lagging after the initial flush**", lagging.join(", "));
    }
    let equal = count_equal(&all);
    out.add(
        "remotes equal to their source after the initial sync",
        format!("{equal}/{}", all.len()),
    );

    let before = proc_stats(daemon.pid())?;
    let monitors_before = monitor_stats(daemon)?;
    budget.check("the churn")?;
    let start = Instant::now();
    let status_latency = churn_rounds(opts, daemon, &all, budget)?;
    let churned = start.elapsed();
    out.add(
        "churn (all workspaces at once)",
        format!(
            "{} rounds × {} random ops × {} workspaces in {}",
            opts.rounds,
            opts.ops,
            all.len(),
            secs(churned)
        ),
    );
    let start = Instant::now();
    let lagging = flush_all(daemon, &all, budget)?;
    out.add(
        "converge after the churn (flush all)",
        secs(start.elapsed()),
    );
    if !lagging.is_empty() {
        out.add("**lagging after the final flush**", lagging.join(", "));
    }
    let mut ok = lagging.is_empty();
    let equal = count_equal(&all);
    out.add(
        "remotes equal to their source right after the flush",
        format!("{equal}/{}", all.len()),
    );
    if equal != all.len() {
        ok = false;
        report_differences(&all, budget, out);
    }

    let after = proc_stats(daemon.pid())?;
    let busy = start.elapsed() + churned;
    record_daemon(out, "churn + converge", &before, &after, busy);
    out.add(
        "daemon `status` answer time during the churn",
        format!(
            "p50 {}, max {} ({} requests)",
            ms(percentile(&status_latency, 50.0)),
            ms(status_latency.iter().max().copied().unwrap_or_default()),
            status_latency.len()
        ),
    );
    let monitors = monitor_stats(daemon)?;
    ok &= record_monitors(out, daemon, &monitors_before, &monitors)?;

    let idle = Duration::from_secs(10).min(budget.cap(Duration::from_secs(10)));
    let (d0, m0) = (proc_stats(daemon.pid())?, monitor_stats(daemon)?);
    std::thread::sleep(idle);
    let (d1, m1) = (proc_stats(daemon.pid())?, monitor_stats(daemon)?);
    out.add(
        format!(
            "idle {} s: CPU of the daemon / of all monitors",
            idle.as_secs()
        ),
        format!(
            "{:.0} ms / {:.0} ms",
            (d1.cpu_secs() - d0.cpu_secs()) * 1000.0,
            (cpu_total(&m1) - cpu_total(&m0)) * 1000.0
        ),
    );

    let start = Instant::now();
    for ws in &all {
        daemon.ok(&Request::Remove {
            workspace: ws.name.clone(),
        })?;
    }
    let pids: Vec<u32> = monitors.iter().map(|(pid, _)| *pid).collect();
    let gone = crate::data::poll_since(start, budget.cap(Duration::from_secs(30)), || {
        pids.iter()
            .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    });
    match gone {
        Ok(took) => out.add(
            format!("remove all {} workspaces, their monitors gone", all.len()),
            secs(took),
        ),
        Err(_) => {
            ok = false;
            out.add(
                "**monitors still running after remove**",
                format!("{pids:?}"),
            );
        }
    }
    Ok(ok)
}

/// Flushes every workspace at once; returns `workspace/remote` names still lagging.
fn flush_all(daemon: &Daemon, all: &[Ws], budget: Budget) -> Result<Vec<String>> {
    let timeout = budget.cap(FLUSH_TIMEOUT);
    if timeout.is_zero() {
        bail!("time budget exhausted before a flush");
    }
    let lagging = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for ws in all {
            let (lagging, errors) = (&lagging, &errors);
            s.spawn(move || match daemon.flush(&ws.name, timeout) {
                Ok(l) => lagging
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(l.into_iter().map(|r| format!("{}/{r}", ws.name))),
                Err(e) => errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("{}: {e:#}", ws.name)),
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    if !errors.is_empty() {
        bail!("flush failed: {}", errors.join("; "));
    }
    Ok(lagging.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// Runs the churn rounds in every workspace at once while polling `status` every 250 ms.
fn churn_rounds(
    opts: &SoakOptions,
    daemon: &Daemon,
    all: &[Ws],
    budget: Budget,
) -> Result<Vec<Duration>> {
    let done = AtomicBool::new(false);
    let latencies = Mutex::new(Vec::new());
    let mut result = Ok(());
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let start = Instant::now();
                if daemon.status().is_ok() {
                    let took = start.elapsed();
                    latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(took);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        for round in 0..opts.rounds {
            if let Err(e) = budget.check(&format!("churn round {round}")) {
                result = Err(e);
                break;
            }
            std::thread::scope(|r| {
                for (i, ws) in all.iter().enumerate() {
                    let seed = 1000 * (round as u64 + 1) + i as u64;
                    r.spawn(move || churn::run(&ws.src, opts.ops, seed));
                }
            });
        }
        done.store(true, Ordering::Relaxed);
    });
    result?;
    Ok(latencies.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn count_equal(all: &[Ws]) -> usize {
    all.iter()
        .filter(|ws| diff_trees(&ws.src, &ws.dst).is_empty())
        .count()
}

/// Which remotes still differ after 30 s more (lost changes) and which caught up (slow): one
/// shared wait for all, then the first few differences of up to five of them.
fn report_differences(all: &[Ws], budget: Budget, out: &mut Section) {
    const SHOWN: usize = 5;
    let start = Instant::now();
    let wait = budget.cap(Duration::from_secs(30));
    let mut differing: Vec<&Ws> = all
        .iter()
        .filter(|ws| !diff_trees(&ws.src, &ws.dst).is_empty())
        .collect();
    let first = differing.len();
    while !differing.is_empty() && start.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(500));
        differing.retain(|ws| !diff_trees(&ws.src, &ws.dst).is_empty());
    }
    out.add(
        format!("**remotes still different {} s later**", wait.as_secs()),
        format!("{} of the {first} that differed", differing.len()),
    );
    for ws in differing.iter().take(SHOWN) {
        let diffs = diff_trees(&ws.src, &ws.dst);
        out.add(
            format!("**{}: first differences**", ws.name),
            diffs.iter().take(3).cloned().collect::<Vec<_>>().join("; "),
        );
    }
}

fn record_daemon(out: &mut Section, phase: &str, a: &ProcStats, b: &ProcStats, wall: Duration) {
    let cpu = b.cpu_secs() - a.cpu_secs();
    out.add(
        format!("daemon CPU during {phase}"),
        format!(
            "{cpu:.2} s in {} ({:.1} % of one core)",
            secs(wall),
            100.0 * cpu / wall.as_secs_f64().max(1e-9)
        ),
    );
    out.add(
        "daemon memory (RSS before → after, peak)",
        format!(
            "{} → {}, peak {}",
            mib(a.rss_kib),
            mib(b.rss_kib),
            mib(b.hwm_kib)
        ),
    );
    out.add(
        "daemon threads / open fds (before → after)",
        format!("{} → {} / {} → {}", a.threads, b.threads, a.fds, b.fds),
    );
}

/// `(pid, stats)` of every running monitor.
fn monitor_stats(daemon: &Daemon) -> Result<Vec<(u32, ProcStats)>> {
    Ok(daemon
        .status()?
        .iter()
        .filter_map(|w| w.monitor.pid)
        .filter_map(|pid| proc_stats(pid).ok().map(|s| (pid, s)))
        .collect())
}

fn cpu_total(monitors: &[(u32, ProcStats)]) -> f64 {
    monitors.iter().map(|(_, s)| s.cpu_ticks).sum::<u64>() as f64 / TICKS_PER_SEC
}

/// CPU of the monitors' finished children (their rsyncs).
fn child_cpu_total(monitors: &[(u32, ProcStats)]) -> f64 {
    monitors.iter().map(|(_, s)| s.child_ticks).sum::<u64>() as f64 / TICKS_PER_SEC
}

/// Records the monitors' memory and CPU, restarts and states; false if one is not running.
fn record_monitors(
    out: &mut Section,
    daemon: &Daemon,
    before: &[(u32, ProcStats)],
    after: &[(u32, ProcStats)],
) -> Result<bool> {
    let rss: u64 = after.iter().map(|(_, s)| s.rss_kib).sum();
    let pss: u64 = after.iter().map(|(_, s)| s.pss_kib).sum();
    let max = after.iter().map(|(_, s)| s.rss_kib).max().unwrap_or(0);
    out.add(
        format!(
            "monitors' memory, {}: RSS total (largest one), PSS total",
            after.len()
        ),
        format!("{} ({}), {}", mib(rss), mib(max), mib(pss)),
    );
    out.add(
        "monitors' CPU during churn + converge, total: own / their rsyncs",
        format!(
            "{:.2} s / {:.2} s",
            cpu_total(after) - cpu_total(before),
            child_cpu_total(after) - child_cpu_total(before)
        ),
    );
    let status = daemon.status()?;
    let restarts: u32 = status.iter().map(|w| w.monitor.restarts).sum();
    let not_running: Vec<String> = status
        .iter()
        .filter(|w| w.monitor.state != MonitorProcessState::Running)
        .map(|w| format!("{}: {:?}", w.workspace.name, w.monitor.state))
        .collect();
    out.add("monitor restarts", restarts.to_string());
    if !not_running.is_empty() {
        out.add("**monitors not running**", not_running.join(", "));
    }
    Ok(restarts == 0 && not_running.is_empty())
}
