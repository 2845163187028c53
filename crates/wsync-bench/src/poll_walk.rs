//! `wsync-bench poll-walk`: the CPU one poll walk costs (issue 15: "CPU per poll of a
//! 50,000-file tree measured and quoted"). A real `wsync-monitor` runs `WatchMode=poll` on a
//! generated tree (by default 50,000 files in 500 directories, on a tmpfs), syncs it to a local
//! mirror, then sits idle while its poll thread walks the tree every `--interval-ms`; the
//! process's CPU time over the idle window (from /proc) divided by the walks in it is the
//! figure. The monitor's other idle work (a heartbeat every 2 s) is negligible beside it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use wsync_core::monitor_proto::{MonitorTunables, WatchMode};
use wsync_tests::monitor::{local_remote, mark_target, workspace};

use crate::monitor::{monitor_bin, MonitorProc};
use crate::procfs::{proc_stats, TICKS_PER_SEC};

const USAGE: &str =
    "usage: wsync-bench poll-walk [--dir TMPFS_DIR] [--files N] [--interval-ms MS] [--secs S]\n  \
    the CPU per poll walk of an idle N-file tree (defaults: /dev/shm, 50000, 1000, 20)";

struct Options {
    dir: PathBuf,
    files: usize,
    interval_ms: u64,
    secs: u64,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Option<Options>> {
    let mut opts = Options {
        dir: PathBuf::from("/dev/shm"),
        files: 50_000,
        interval_ms: 1000,
        secs: 20,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--dir" => opts.dir = value("--dir")?.into(),
            "--files" => opts.files = value("--files")?.parse().context("--files: a number")?,
            "--interval-ms" => {
                opts.interval_ms = value("--interval-ms")?
                    .parse()
                    .context("--interval-ms: a number")?
            }
            "--secs" => opts.secs = value("--secs")?.parse().context("--secs: a number")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if opts.files == 0 || opts.secs == 0 || opts.interval_ms < 100 {
        bail!("--files and --secs must be positive and --interval-ms at least 100\n{USAGE}");
    }
    Ok(Some(opts))
}

/// `files` small files, 100 to a directory.
fn make_tree(root: &Path, files: usize) -> Result<()> {
    for i in 0..files {
        let dir = root.join(format!("d{:04}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        std::fs::write(dir.join(format!("f{i}.txt")), format!("file {i}\n"))?;
    }
    Ok(())
}

pub fn run(args: impl Iterator<Item = String>) -> Result<()> {
    let Some(opts) = parse(args)? else {
        return Ok(());
    };
    let tmp = tempfile::Builder::new()
        .prefix("wsync-poll-walk")
        .tempdir_in(&opts.dir)
        .with_context(|| format!("a temp dir in {}", opts.dir.display()))?;
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, opts.files)?;
    let ws = workspace("pollwalk", &src, vec![local_remote("m", &dst)]);
    mark_target(&ws, &ws.remotes[0]);
    let tunables = MonitorTunables {
        watch_mode: WatchMode::Poll,
        poll_interval_ms: opts.interval_ms,
        ..MonitorTunables::default()
    };
    let mut monitor = MonitorProc::start_tuned(
        &monitor_bin()?,
        ws,
        &tmp.path().join("log"),
        &tmp.path().join("run"),
        tunables,
    )?;
    monitor
        .wait_in_sync(Duration::from_secs(600))
        .with_context(|| format!("the initial sync of {} files", opts.files))?;
    // Let the first walks after the initial sync go by, then measure an idle window.
    std::thread::sleep(Duration::from_millis(2 * opts.interval_ms));
    let pid = monitor.pid();
    let before = proc_stats(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(opts.secs));
    let after = proc_stats(pid)?;
    let wall = t0.elapsed().as_secs_f64();
    monitor.shutdown();
    let cpu = (after.cpu_ticks - before.cpu_ticks) as f64 / TICKS_PER_SEC;
    // The poll thread sleeps the interval after each walk, so walks = wall / (interval + w),
    // and a walk on a tmpfs is CPU-bound (w ≈ its CPU): per walk = cpu · interval / (wall − cpu).
    let interval = opts.interval_ms as f64 / 1000.0;
    let per_walk = cpu * interval / (wall - cpu).max(f64::EPSILON);
    let walks = wall / (interval + per_walk);
    println!(
        "poll walk of {} files ({} directories), every {} ms, idle for {wall:.1} s: {cpu:.2} s CPU over ~{walks:.0} walks = {:.0} ms CPU per walk ({:.1}% of a core at this interval)",
        opts.files,
        opts.files.div_ceil(100),
        opts.interval_ms,
        per_walk * 1000.0,
        100.0 * cpu / wall
    );
    Ok(())
}
