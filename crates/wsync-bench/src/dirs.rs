//! `wsync-bench dirs`: the watch table on a huge tree (issue 13, "Huge trees"). One monitor
//! watches a tree of `--dirs` directories (100,000 by default: 1,000 × 100, empty) mirrored to a
//! local remote, then:
//! - a small directory (10 subdirectories) is renamed back and forth `--moves` times, each
//!   followed by a flush: the monitor's CPU per move is what the watch table costs (O(moved
//!   subtree), not O(all watches)), besides the flush's own round trip;
//! - the monitor is stopped (SIGSTOP), 20,000 files are created so the inotify queue overflows,
//!   and it is continued: the time until a flush is answered (the rescan and full sync done).
//!
//! `--monitor PATH` runs another wsync-monitor binary (e.g. an older build, for before/after).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::area::{Area, Transport};
use crate::data::{ms, percentile};
use crate::monitor::monitor_bin;
use crate::procfs::proc_stats;

struct DirsOptions {
    dir: PathBuf,
    dirs: usize,
    moves: usize,
    monitor: Option<PathBuf>,
}

const USAGE: &str =
    "usage: wsync-bench dirs [--dir TMPFS_DIR] [--dirs N (100000)] [--moves N (50)] [--monitor PATH]";

pub fn run(args: impl Iterator<Item = String>) -> Result<()> {
    let mut opts = DirsOptions {
        dir: PathBuf::from("/dev/shm"),
        dirs: 100_000,
        moves: 50,
        monitor: None,
    };
    let mut args = args;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--dir" => opts.dir = value("--dir")?.into(),
            "--dirs" => opts.dirs = value("--dirs")?.parse().context("--dirs")?,
            "--moves" => opts.moves = value("--moves")?.parse().context("--moves")?,
            "--monitor" => opts.monitor = Some(value("--monitor")?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} ({USAGE})"),
        }
    }
    let base = opts
        .dir
        .join(format!("wsync-bench-dirs-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let result = measure(&opts, &base);
    let _ = std::fs::remove_dir_all(&base);
    for (figure, value) in result? {
        println!("| {figure} | {value} |");
    }
    Ok(())
}

fn measure(opts: &DirsOptions, base: &Path) -> Result<Vec<(String, String)>> {
    let area = Area::new(base, "dirs", Transport::Local)?;
    let per_top = 100;
    for i in 0..opts.dirs.div_ceil(per_top) {
        for j in 0..per_top.min(opts.dirs - i * per_top) {
            std::fs::create_dir_all(area.src.join(format!("t{i:04}/s{j:03}")))?;
        }
    }
    for j in 0..10 {
        std::fs::create_dir_all(area.src.join(format!("mv/a/s{j}")))?;
    }
    let bin = match &opts.monitor {
        Some(bin) => bin.clone(),
        None => monitor_bin()?,
    };
    let started = Instant::now();
    let mut monitor = area.spawn_monitor_bin(&bin)?;
    monitor
        .wait_in_sync(Duration::from_secs(600))
        .context("initial sync")?;
    let mut figures = vec![(
        format!("{} dirs: watch + initial sync", opts.dirs),
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    )];
    let pid = monitor.pid();

    let cpu0 = proc_stats(pid)?.cpu_secs();
    let mut flushes = Vec::new();
    for i in 0..opts.moves {
        let (from, to) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
        let start = Instant::now();
        std::fs::rename(area.src.join("mv").join(from), area.src.join("mv").join(to))?;
        monitor.flush(Duration::from_secs(60))?;
        flushes.push(start.elapsed());
    }
    let cpu = proc_stats(pid)?.cpu_secs() - cpu0;
    figures.push((
        format!("directory move (10 subdirs) among {} watches, {} moves: monitor CPU per move / flush p50", opts.dirs, opts.moves),
        format!(
            "{:.2} ms / {}",
            cpu * 1000.0 / opts.moves.max(1) as f64,
            ms(percentile(&flushes, 50.0))
        ),
    ));

    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP)?;
    let burst = area.src.join("burst");
    std::fs::create_dir_all(&burst)?;
    for i in 0..20_000 {
        std::fs::write(burst.join(format!("f{i:05}")), b"x")?;
    }
    let start = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGCONT)?;
    monitor.flush(Duration::from_secs(600))?;
    let recovered = start.elapsed();
    figures.push((
        "overflow recovery (20,000 files created while stopped): SIGCONT → flush answered".into(),
        format!("{:.2} s", recovered.as_secs_f64()),
    ));
    Ok(figures)
}
