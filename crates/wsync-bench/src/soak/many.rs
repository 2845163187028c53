//! `wsync-bench soak-many` (issue 13): many workspaces on one `wsyncd`, added in steps (1, 50,
//! 300 by default), each a small tree with one local remote. At every step, once each monitor
//! has settled (in sync, or given up), it records what the daemon costs — threads
//! (`/proc/PID/task`), open fds, RSS — how the monitors fare (running, failed, restarts, watch
//! errors such as a fallback for `fs.inotify.max_user_instances`), and how fast `status`
//! answers, over the socket and as `wsync status`. Then it shuts the daemon down (timed).
//! Threads must not grow with the number of monitors; no monitor may crash-loop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use wsync_core::monitor_proto::RemoteState;
use wsync_core::protocol::{MonitorProcessState, WorkspaceStatus};

use super::daemon::Daemon;
use super::{secs, Budget, Section};
use crate::data::{ms, percentile};
use crate::monitor::sibling_bin;
use crate::procfs::{mib, proc_stats};

/// Options of `soak-many`.
pub struct ManyOptions {
    pub dir: PathBuf,
    /// Workspace counts measured, in increasing order.
    pub steps: Vec<usize>,
    pub budget: Duration,
}

impl ManyOptions {
    /// Parses `soak-many` arguments (after the subcommand); `None` after `--help`.
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Option<Self>> {
        let mut opts = Self {
            dir: PathBuf::from("/dev/shm"),
            steps: vec![1, 50, 300],
            budget: Duration::from_secs(540),
        };
        let mut args = args;
        while let Some(arg) = args.next() {
            let mut value =
                |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--dir" => opts.dir = value("--dir")?.into(),
                "--steps" => {
                    let text = value("--steps")?;
                    let mut steps = text
                        .split(',')
                        .map(|s| s.trim().parse::<usize>())
                        .collect::<Result<Vec<_>, _>>()
                        .with_context(|| format!("--steps: {text:?} is not a list of numbers"))?;
                    steps.retain(|&n| n > 0);
                    steps.sort_unstable();
                    steps.dedup();
                    if steps.is_empty() {
                        bail!("--steps needs at least one count above 0");
                    }
                    opts.steps = steps;
                }
                "--max-secs" => {
                    let v = value("--max-secs")?;
                    let secs: u64 = v
                        .parse()
                        .with_context(|| format!("--max-secs: {v:?} is not a number"))?;
                    opts.budget = Duration::from_secs(secs);
                }
                "-h" | "--help" => {
                    println!(
                        "usage: wsync-bench soak-many [--dir TMPFS_DIR] [--steps 1,50,300] \
                         [--max-secs N (540)]"
                    );
                    return Ok(None);
                }
                other => bail!("unknown soak-many argument {other:?} (see --help)"),
            }
        }
        Ok(Some(opts))
    }
}

/// How long one step may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);
/// Status requests timed per step.
const STATUS_SAMPLES: usize = 20;
/// `wsync status` runs timed per step.
const CLI_SAMPLES: usize = 5;

/// Runs the steps and prints the summary; fails (after printing) when a check did not hold.
pub fn run(opts: &ManyOptions) -> Result<()> {
    let budget = Budget {
        end: Instant::now() + opts.budget,
    };
    let root = opts.dir.join(format!("wsync-many-{}", std::process::id()));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let root = root.canonicalize()?;
    let max = opts.steps.last().copied().unwrap_or(1);
    let mut out = Section::new(format!(
        "up to {max} workspaces on one wsyncd (inotify max_user_instances {})",
        read_sysctl("fs/inotify/max_user_instances")
    ));
    let result = (|| -> Result<bool> {
        let mut daemon = Daemon::start(&root)?;
        let ok = steps(opts, &daemon, &root, budget, &mut out)
            .map_err(|e| e.context(format!("many-workspace run\n{}", daemon.logs(30))))?;
        match daemon.shutdown() {
            Ok(took) => out.add(format!("daemon shutdown with {max} monitors"), secs(took)),
            Err(e) => {
                out.add("daemon shutdown", format!("**failed**: {e:#}"));
                return Ok(false);
            }
        }
        Ok(ok)
    })();
    let _ = std::fs::remove_dir_all(&root);
    println!("{}", out.markdown());
    match result {
        Ok(true) => Ok(()),
        Ok(false) => bail!("soak-many: some checks did not hold (see the summary)"),
        Err(e) => Err(e),
    }
}

fn steps(
    opts: &ManyOptions,
    daemon: &Daemon,
    root: &Path,
    budget: Budget,
    out: &mut Section,
) -> Result<bool> {
    let mut ok = true;
    let mut added = 0;
    let mut first_threads = None;
    for &count in &opts.steps {
        budget.check(&format!("the step of {count} workspaces"))?;
        let start = Instant::now();
        while added < count {
            add_workspace(daemon, root, added)?;
            added += 1;
        }
        let registered = start.elapsed();
        let settled = settle(daemon, budget.cap(SETTLE_TIMEOUT))?;
        let settle_took = start.elapsed() - registered;
        let stats = proc_stats(daemon.pid())?;
        let (socket_p50, socket_max) = time_status_requests(daemon)?;
        let cli = time_cli_status(root)?;
        let tally = Tally::of(&daemon.status()?);
        out.add(
            format!("{count}: add + attach, then all settled"),
            format!(
                "{} + {}{}",
                secs(registered),
                secs(settle_took),
                if settled { "" } else { " (**not settled**)" }
            ),
        );
        out.add(
            format!("{count}: daemon threads / fds / RSS"),
            format!("{} / {} / {}", stats.threads, stats.fds, mib(stats.rss_kib)),
        );
        out.add(
            format!("{count}: monitors running in sync / failed / other, restarts, watch errors"),
            format!(
                "{} / {} / {}, {}, {}",
                tally.in_sync, tally.failed, tally.other, tally.restarts, tally.watch_errors
            ),
        );
        out.add(
            format!("{count}: `status` over the socket p50 / max; `wsync status` median"),
            format!("{} / {}; {}", ms(socket_p50), ms(socket_max), ms(cli)),
        );
        if let Some(example) = &tally.example_error {
            out.add(
                format!("{count}: example watch error or exit"),
                example.clone(),
            );
        }
        let base = *first_threads.get_or_insert(stats.threads);
        // Flat: a handful of threads of slack (the blocking pool's idle threads), never one
        // per monitor.
        if stats.threads > base + 8 {
            out.add(
                format!("**{count}: threads grew with the monitors**"),
                format!("{base} → {}", stats.threads),
            );
            ok = false;
        }
        ok &= settled && tally.failed == 0 && tally.other == 0;
    }
    Ok(ok)
}

/// Adds workspace `i` (a small tree) with a local remote, without waiting for its sync.
fn add_workspace(daemon: &Daemon, root: &Path, i: usize) -> Result<()> {
    let name = format!("ws{i:03}");
    let src = root.join(format!("many/{name}/src"));
    let dst = root.join(format!("many/{name}/dst"));
    std::fs::create_dir_all(src.join("sub"))?;
    std::fs::write(src.join("a.txt"), format!("workspace {i}\n"))?;
    std::fs::write(src.join("sub/b.txt"), "b\n")?;
    daemon.add_mirrored(&name, &src, &dst)?;
    Ok(())
}

/// Waits until every monitor is in sync or has given up (failed); false at the deadline.
fn settle(daemon: &Daemon, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let tally = Tally::of(&daemon.status()?);
        if tally.other == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What the monitors are doing.
#[derive(Debug, Default)]
struct Tally {
    in_sync: usize,
    failed: usize,
    /// Starting, syncing, backing off, stopped, unresponsive...
    other: usize,
    restarts: u32,
    watch_errors: usize,
    example_error: Option<String>,
}

impl Tally {
    fn of(status: &[WorkspaceStatus]) -> Self {
        let mut tally = Self::default();
        for ws in status {
            tally.restarts += ws.monitor.restarts;
            let watch_error = ws.report.as_ref().and_then(|r| r.watch_error.clone());
            if watch_error.is_some() {
                tally.watch_errors += 1;
            }
            let problem = watch_error.or_else(|| ws.monitor.last_exit.clone());
            if tally.example_error.is_none() {
                tally.example_error = problem;
            }
            let in_sync = ws.monitor.state == MonitorProcessState::Running
                && ws.report.as_ref().is_some_and(|r| {
                    !r.remotes.is_empty()
                        && r.remotes.iter().all(|x| x.state == RemoteState::InSync)
                });
            match ws.monitor.state {
                _ if in_sync => tally.in_sync += 1,
                MonitorProcessState::Failed => tally.failed += 1,
                _ => tally.other += 1,
            }
        }
        tally
    }
}

/// p50 and max of [`STATUS_SAMPLES`] status requests over the socket.
fn time_status_requests(daemon: &Daemon) -> Result<(Duration, Duration)> {
    let mut samples = Vec::with_capacity(STATUS_SAMPLES);
    for _ in 0..STATUS_SAMPLES {
        let start = Instant::now();
        daemon.status()?;
        samples.push(start.elapsed());
    }
    let max = samples.iter().max().copied().unwrap_or_default();
    Ok((percentile(&samples, 50.0), max))
}

/// Median wall time of `wsync status` (the whole CLI: connect, request, render).
fn time_cli_status(root: &Path) -> Result<Duration> {
    let wsync = sibling_bin("wsync")?;
    let mut samples = Vec::with_capacity(CLI_SAMPLES);
    for _ in 0..CLI_SAMPLES {
        let start = Instant::now();
        let status = Command::new(&wsync)
            .arg("status")
            .env("WSYNC_CONFIG_PATH", root.join("wsync.config"))
            .env("HOME", root.join("home"))
            .env_remove("XDG_RUNTIME_DIR")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {}", wsync.display()))?;
        // `wsync status` exits non-zero when a workspace has a problem; the time still counts.
        let _ = status;
        samples.push(start.elapsed());
    }
    Ok(percentile(&samples, 50.0))
}

fn read_sysctl(name: &str) -> String {
    std::fs::read_to_string(Path::new("/proc/sys").join(name))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
