//! Soak phase 2: one very large workspace (200,000 files by default) on the same daemon:
//! initial sync against plain `rsync -a` of the same tree, then single-edit latency, the
//! monitor's memory and watches, and its idle CPU.

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

const FILES_PER_DIR: usize = 100;
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
    let dirs = opts.big_files.div_ceil(FILES_PER_DIR);
    let start = Instant::now();
    make_tree(&src, "d", dirs, FILES_PER_DIR, 64)?;
    out.add(
        "create the tree (64-byte files)",
        format!(
            "{} files in {dirs} dirs, {}",
            dirs * FILES_PER_DIR,
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
        let rel = format!(
            "d{:04}/f{:05}.txt",
            (i * 7919) % dirs,
            (i * 31) % FILES_PER_DIR
        );
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

fn slash(p: &Path) -> String {
    format!("{}/", p.display())
}
