//! wsync-bench: the issue-3 benchmark (each scenario runs wsync-monitor and plain `rsync -a` on
//! the same data in the same run, locally and over SSH, and reports medians, their ratio and the
//! issue's targets as a markdown table), the issue-6 soak run (`wsync-bench soak`), the
//! issue-13 many-workspace run (`wsync-bench soak-many`) and the side-by-side with lsyncd, the
//! strongest peer that runs here (`wsync-bench peers`).

mod area;
mod data;
mod dirs;
mod monitor;
mod peers;
mod poll_walk;
mod procfs;
mod relay;
mod report;
mod scenarios;
mod soak;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

pub use report::Row;

/// Benchmark options: `--dir DIR` (a tmpfs; default /dev/shm), `--quick` (fewer repetitions,
/// 5 s idle instead of 20 s), `--no-ssh` (local rows only), `--ssh-login-rc` (let the remote
/// bash read ~/.bashrc, as sshd normally makes it do), `--only NAME,...` (only those scenarios,
/// see [`scenarios::NAMES`]).
pub struct Options {
    pub dir: PathBuf,
    pub quick: bool,
    pub ssh: bool,
    pub ssh_login_rc: bool,
    /// Scenario names to run (empty: all).
    pub only: Vec<String>,
}

const USAGE: &str =
    "usage: wsync-bench [--dir TMPFS_DIR] [--quick] [--no-ssh] [--ssh-login-rc]\n       \
                     [--only one-file,large,burst,rename,delete,growing]\n       \
                     wsync-bench peers [--dir TMPFS_DIR] [--quick] [--no-ssh]\n       \
                     [--only one-file,burst,rename,rename-edit,delete]\n       \
                     wsync-bench soak [--help | options]\n       \
                     wsync-bench soak-many [--help | options]\n       \
                     wsync-bench dirs [--help | options]\n       \
                     wsync-bench poll-walk [--help | options]";

pub fn run(args: Vec<String>) -> Result<()> {
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("poll-walk") {
        args.next();
        return poll_walk::run(args);
    }
    if args.peek().map(String::as_str) == Some("dirs") {
        args.next();
        return dirs::run(args);
    }
    if args.peek().map(String::as_str) == Some("soak") {
        args.next();
        return match soak::SoakOptions::parse(args)? {
            Some(opts) => soak::run(&opts),
            None => Ok(()),
        };
    }
    if args.peek().map(String::as_str) == Some("soak-many") {
        args.next();
        return match soak::many::ManyOptions::parse(args)? {
            Some(opts) => soak::many::run(&opts),
            None => Ok(()),
        };
    }
    let mut opts = Options {
        dir: PathBuf::from("/dev/shm"),
        quick: false,
        ssh: true,
        ssh_login_rc: false,
        only: Vec::new(),
    };
    let peers = args.peek().map(String::as_str) == Some("peers");
    if peers {
        args.next();
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => opts.dir = args.next().context("--dir needs a value")?.into(),
            "--quick" => opts.quick = true,
            "--no-ssh" => opts.ssh = false,
            "--ssh-login-rc" => opts.ssh_login_rc = true,
            "--only" => {
                let names = args.next().context("--only needs scenario names")?;
                // scripts/bench.sh passes the same list to both runs: each runs the names
                // it has (`rename-edit` is the peers' only).
                let known: Vec<&str> = scenarios::NAMES
                    .iter()
                    .chain(
                        peers::NAMES
                            .iter()
                            .filter(|n| !scenarios::NAMES.contains(n)),
                    )
                    .copied()
                    .collect();
                for name in names.split(',') {
                    if !known.contains(&name) {
                        bail!(
                            "unknown scenario {name:?}: choose from {}",
                            known.join(", ")
                        );
                    }
                    opts.only.push(name.to_owned());
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if peers {
        return peers::run(&opts);
    }
    let (rows, notes) = scenarios::all(&opts)?;
    println!("{}", report::markdown(&rows));
    for note in notes {
        println!("{note}\n");
    }
    Ok(())
}
