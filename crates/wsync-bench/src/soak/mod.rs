//! `wsync-bench soak`: the load part of issue 6 against one real `wsyncd` — many workspaces
//! under concurrent churn (they must all converge; the daemon's CPU and memory are recorded),
//! then one very large workspace (initial sync, then single-edit latency). Bounded in time,
//! cleans up after itself, prints a markdown summary.

mod big;
mod daemon;
mod load;
pub mod many;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use self::daemon::Daemon;

/// Options of the soak run.
pub struct SoakOptions {
    pub dir: PathBuf,
    pub workspaces: usize,
    pub rounds: usize,
    /// Random operations per workspace per round.
    pub ops: usize,
    pub big_files: usize,
    /// Files per directory of the large tree (100; 10 gives the issue-13 shape, 1,000,000 files
    /// in 100,000 directories).
    pub files_per_dir: usize,
    /// Files created while the large workspace's monitor is SIGSTOPped, so its inotify queue
    /// overflows; 0 skips the overflow step.
    pub overflow_files: usize,
    /// Skip the many-workspace load phase (`--huge`).
    pub only_big: bool,
    pub edits: usize,
    /// Rounds of the large workspace's setup against plain rsync (medians are reported).
    pub setup_rounds: usize,
    pub budget: Duration,
    /// Keep the run's directory (trees, registry, logs) for inspection.
    pub keep: bool,
}

impl SoakOptions {
    /// Parses `soak` arguments (after the subcommand).
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Option<Self>> {
        let mut opts = Self {
            dir: PathBuf::from("/dev/shm"),
            workspaces: 50,
            rounds: 10,
            ops: 100,
            big_files: 200_000,
            files_per_dir: 100,
            overflow_files: 0,
            only_big: false,
            edits: 40,
            setup_rounds: 1,
            budget: Duration::from_secs(540),
            keep: false,
        };
        let mut args = args;
        while let Some(arg) = args.next() {
            let mut value = |name: &str| -> Result<usize> {
                let v = args
                    .next()
                    .with_context(|| format!("{name} needs a value"))?;
                v.parse()
                    .with_context(|| format!("{name}: {v:?} is not a number"))
            };
            match arg.as_str() {
                "--dir" => opts.dir = args.next().context("--dir needs a value")?.into(),
                "--workspaces" => opts.workspaces = value("--workspaces")?.max(1),
                "--rounds" => opts.rounds = value("--rounds")?,
                "--ops" => opts.ops = value("--ops")?,
                "--big-files" => opts.big_files = value("--big-files")?.max(100),
                "--edits" => opts.edits = value("--edits")?.max(1),
                "--files-per-dir" => opts.files_per_dir = value("--files-per-dir")?.max(1),
                "--overflow-files" => opts.overflow_files = value("--overflow-files")?,
                "--setup-rounds" => opts.setup_rounds = value("--setup-rounds")?.max(1),
                "--only-big" => opts.only_big = true,
                "--huge" => {
                    opts.only_big = true;
                    opts.big_files = 1_000_000;
                    opts.files_per_dir = 10;
                    opts.overflow_files = 100_000;
                    opts.setup_rounds = 3;
                    opts.budget = Duration::from_secs(1500);
                }
                "--max-secs" => opts.budget = Duration::from_secs(value("--max-secs")? as u64),
                "--keep" => opts.keep = true,
                "--quick" => {
                    opts.rounds = 3;
                    opts.big_files = 50_000;
                    opts.edits = 15;
                }
                "-h" | "--help" => {
                    println!(
                        "usage: wsync-bench soak [--dir TMPFS_DIR] [--quick] [--workspaces N (50)] \
                         [--rounds N (10)] [--ops N per workspace per round (100)] \
                         [--big-files N (200000)] [--files-per-dir N (100)] \
                         [--overflow-files N (0: no overflow step)] [--only-big] [--edits N (40)] \
                         [--setup-rounds N (1): the large setup against plain rsync, medians] \
                         [--max-secs N (540)] [--keep (leave trees and logs in DIR)] \
                         [--huge (= --only-big --big-files 1000000 --files-per-dir 10 \
                         --overflow-files 100000 --setup-rounds 3 --max-secs 1500; put --max-secs after it)]"
                    );
                    return Ok(None);
                }
                other => bail!("unknown soak argument {other:?} (see --help)"),
            }
        }
        Ok(Some(opts))
    }
}

/// The time budget of the whole run: every wait is capped by what is left.
#[derive(Clone, Copy)]
pub struct Budget {
    end: Instant,
}

impl Budget {
    /// `wanted`, or less when the budget runs out sooner.
    pub fn cap(&self, wanted: Duration) -> Duration {
        wanted.min(self.end.saturating_duration_since(Instant::now()))
    }

    /// Fails when the budget is spent, naming the step that could not start.
    pub fn check(&self, what: &str) -> Result<()> {
        if Instant::now() >= self.end {
            bail!("time budget exhausted before {what}");
        }
        Ok(())
    }
}

/// A titled list of figures, rendered as a two-column markdown table.
pub struct Section {
    title: String,
    rows: Vec<(String, String)>,
}

impl Section {
    fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    pub fn add(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        let (figure, value) = (figure.into(), value.into());
        eprintln!("soak: {figure}: {value}");
        self.rows.push((figure, value));
    }

    fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n| figure | value |\n|---|---|\n", self.title);
        for (figure, value) in &self.rows {
            out.push_str(&format!("| {figure} | {} |\n", value.replace('|', "\\|")));
        }
        out
    }
}

pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Runs both phases and prints the summary; fails (after printing) if anything did not hold.
pub fn run(opts: &SoakOptions) -> Result<()> {
    let budget = Budget {
        end: Instant::now() + opts.budget,
    };
    let root = opts.dir.join(format!("wsync-soak-{}", std::process::id()));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let root = root.canonicalize()?;
    let started = Instant::now();
    let mut load = Section::new(format!(
        "{} workspaces, one local remote each, on one wsyncd",
        opts.workspaces
    ));
    let mut big = Section::new(format!("one workspace of {} files", opts.big_files));
    let result = (|| -> Result<bool> {
        let mut daemon = Daemon::start(&root)?;
        let load_ok = opts.only_big
            || load::run(opts, &daemon, &root.join("load"), budget, &mut load)
                .map_err(|e| e.context(format!("load phase\n{}", daemon.logs(30))))?;
        let big_ok = big::run(opts, &daemon, &root.join("big"), budget, &mut big)
            .map_err(|e| e.context(format!("large-workspace phase\n{}", daemon.logs(30))))?;
        let alive = daemon.alive();
        big.add(
            "daemon still running at the end",
            if alive { "yes" } else { "**no**" },
        );
        match daemon.shutdown() {
            Ok(took) => big.add("daemon shutdown", secs(took)),
            Err(e) => big.add("daemon shutdown", format!("**failed**: {e:#}")),
        }
        Ok(load_ok && big_ok && alive)
    })();
    if opts.keep {
        eprintln!("soak: kept {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    println!("{}", header(opts, started.elapsed()));
    if !opts.only_big {
        println!("{}", load.markdown());
    }
    println!("{}", big.markdown());
    match result {
        Ok(true) => Ok(()),
        Ok(false) => bail!("soak: some checks did not hold (see the summary)"),
        Err(e) => Err(e),
    }
}

fn header(opts: &SoakOptions, took: Duration) -> String {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "## wsync soak, {date}\n\n{cores} cores, data on {}, {} rounds × {} ops × {} workspaces, \
         whole run {}.\n",
        opts.dir.display(),
        opts.rounds,
        opts.ops,
        opts.workspaces,
        secs(took)
    )
}
