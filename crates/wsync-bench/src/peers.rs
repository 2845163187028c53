//! `wsync-bench peers`: wsync beside the strongest setup of a peer that runs here, on the same
//! data in one run: lsyncd `default.direct` for a local target (a `cp`/`mv` per event), lsyncd
//! `default.rsyncssh` with an ssh ControlMaster over SSH (rsync per batch, `ssh mv` for
//! renames), and both SSH setups again through [`DelayRelay`], 25 ms each way.
//!
//! Both tools are measured the same way: the time from the first filesystem change to the
//! moment the destination holds the result, polled on the destination. wsync runs twice, with
//! its default transport (the in-process executor locally, the agent over SSH) and with
//! `transport = rsync` (an rsync per batch), so the executor's gain is measured in the same run.
//! CPU is the time every process below the bench used during the measured runs (the syncer, its
//! rsync/ssh children, the private sshd with its session processes and the agent, the ssh
//! ControlPersist masters — the bench is a child subreaper so they stay below it), divided by the
//! runs: the cost of one change (or one burst) on both ends together.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use wsync_core::registry::Transport as RemoteTransport;
use wsync_core::remote::RemoteTarget;
use wsync_tests::sshd::{current_user, Sshd};

use crate::area::{start_sshd, Area, Transport, TIMEOUT};
use crate::data::{make_tree, ms, percentile, poll_since};
use crate::monitor::MonitorProc;
use crate::procfs::{subtree_cpu_ticks, TICKS_PER_SEC};
use crate::relay::DelayRelay;
use crate::Options;

/// The relay's delay in each direction: a 50 ms round trip.
const ONE_WAY: Duration = Duration::from_millis(25);

#[derive(Clone, Copy)]
enum Place<'a> {
    Local,
    /// SSH to the private sshd, directly or through the delay relay's port.
    Ssh {
        sshd: &'a Sshd,
        port: u16,
        delayed: bool,
    },
}

impl Place<'_> {
    fn label(&self) -> &'static str {
        match self {
            Place::Local => "local",
            Place::Ssh { delayed: false, .. } => "SSH 127.0.0.1",
            Place::Ssh { delayed: true, .. } => "SSH, 50 ms round trip",
        }
    }

    fn peer(&self) -> &'static str {
        match self {
            Place::Local => "lsyncd default.direct",
            Place::Ssh { .. } => "lsyncd rsyncssh + ControlMaster",
        }
    }

    /// What wsync's default transport is here.
    fn wsync_transport(&self) -> &'static str {
        match self {
            Place::Local => "in-process",
            Place::Ssh { .. } => "agent",
        }
    }

    fn transport(&self) -> Transport<'_> {
        match self {
            Place::Local => Transport::Local,
            Place::Ssh { sshd, .. } => Transport::Ssh(sshd),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    OneFile,
    Burst,
    Rename,
    /// The rename plus one 1 KiB file written elsewhere right after it: one batch of both.
    RenameEdit,
    Deletes,
}

/// The scenario names `peers --only` takes, in the order they run.
pub const NAMES: [&str; 5] = ["one-file", "burst", "rename", "rename-edit", "delete"];

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::OneFile,
        Scenario::Burst,
        Scenario::Rename,
        Scenario::RenameEdit,
        Scenario::Deletes,
    ];

    fn title(self) -> &'static str {
        match self {
            Scenario::OneFile => "one 1 KiB file",
            Scenario::Burst => "5,000 new files in 50 dirs",
            Scenario::Rename => "rename of a 5,000-file dir",
            Scenario::RenameEdit => "rename of a 5,000-file dir plus an edit",
            Scenario::Deletes => "1,000 files deleted (of 6,000)",
        }
    }

    /// Its name in [`NAMES`].
    fn name(self) -> &'static str {
        let i = Self::ALL.iter().position(|s| *s == self).unwrap_or(0);
        NAMES[i]
    }
}

struct PeerRow {
    scenario: Scenario,
    place: &'static str,
    transport: &'static str,
    peer: &'static str,
    wsync: Measured,
    wsync_rsync: Measured,
    lsyncd: Measured,
}

/// One tool's runs of one scenario.
struct Measured {
    samples: Vec<Duration>,
    /// CPU of the whole process tree over the measured runs, in clock ticks.
    cpu_ticks: u64,
}

impl Measured {
    fn p50(&self) -> Duration {
        percentile(&self.samples, 50.0)
    }

    /// CPU per run, in milliseconds.
    fn cpu_ms(&self) -> f64 {
        self.cpu_ticks as f64 / TICKS_PER_SEC * 1000.0 / self.samples.len().max(1) as f64
    }
}

/// Runs the comparison and prints its markdown table.
pub fn run(opts: &Options) -> Result<()> {
    let version = Command::new("lsyncd")
        .arg("--version")
        .output()
        .context("running lsyncd --version: install it (apt-get install lsyncd)")?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    // Daemonized ssh masters must stay below the bench for the CPU figures.
    wsync_core::platform::become_subreaper().context("becoming a child subreaper")?;
    let base = opts.dir.join(format!("wsync-peers-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let result = run_all(opts, &base);
    let _ = std::fs::remove_dir_all(&base);
    let rows = result?;
    println!(
        "| scenario (p50) | place | wsync | wsync, rsync transport | peer setup | peer | \
         wsync ÷ rsync transport | wsync ÷ peer | CPU per run: wsync / rsync transport / peer | samples |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let ratio =
        |a: &Measured, b: &Measured| a.p50().as_secs_f64() / b.p50().as_secs_f64().max(1e-9);
    for r in &rows {
        println!(
            "| {} | {} | {} ({}) | {} | {} | {} | {:.2}× | {:.2}× | {:.1} / {:.1} / {:.1} ms | {} each |",
            r.scenario.title(),
            r.place,
            ms(r.wsync.p50()),
            r.transport,
            ms(r.wsync_rsync.p50()),
            r.peer,
            ms(r.lsyncd.p50()),
            ratio(&r.wsync, &r.wsync_rsync),
            ratio(&r.wsync, &r.lsyncd),
            r.wsync.cpu_ms(),
            r.wsync_rsync.cpu_ms(),
            r.lsyncd.cpu_ms(),
            r.wsync.samples.len()
        );
    }
    println!(
        "\n{version}; all measured from the first change to the result polled on the \
         destination; the 50 ms rows go through a TCP relay holding each direction 25 ms. \
         CPU per run: every process below the bench (syncer, rsync, ssh, sshd, agent), \
         summed, divided by the runs (the bench's own polling excluded)."
    );
    Ok(())
}

fn run_all(opts: &Options, base: &Path) -> Result<Vec<PeerRow>> {
    let mut rows = Vec::new();
    rows.extend(place_rows(opts, base, Place::Local)?);
    if opts.ssh {
        let sshd = start_sshd(base, false)?;
        rows.extend(place_rows(
            opts,
            base,
            Place::Ssh {
                sshd: &sshd,
                port: sshd.port(),
                delayed: false,
            },
        )?);
        let relay = DelayRelay::start(sshd.port(), ONE_WAY)?;
        rows.extend(place_rows(
            opts,
            base,
            Place::Ssh {
                sshd: &sshd,
                port: relay.port(),
                delayed: true,
            },
        )?);
    }
    Ok(rows)
}

fn place_rows(opts: &Options, base: &Path, place: Place<'_>) -> Result<Vec<PeerRow>> {
    let mut rows = Vec::new();
    let wanted = |s: Scenario| opts.only.is_empty() || opts.only.iter().any(|o| o == s.name());
    for scenario in Scenario::ALL.into_iter().filter(|s| wanted(*s)) {
        eprintln!("peers [{}]: {}", place.label(), scenario.title());
        let reps = match (scenario, opts.quick) {
            (Scenario::OneFile, false) => 30,
            (Scenario::OneFile, true) => 8,
            (_, false) => 3,
            (_, true) => 1,
        };
        let run = |tool: Tool, label: &str| {
            measure(base, place, scenario, reps, tool)
                .with_context(|| format!("{label}, {}, {}", scenario.title(), place.label()))
        };
        let wsync = run(Tool::Wsync, "wsync")?;
        let wsync_rsync = run(Tool::WsyncRsync, "wsync with the rsync transport")?;
        let lsyncd = run(Tool::Lsyncd, place.peer())?;
        rows.push(PeerRow {
            scenario,
            place: place.label(),
            transport: place.wsync_transport(),
            peer: place.peer(),
            wsync,
            wsync_rsync,
            lsyncd,
        });
    }
    Ok(rows)
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    /// wsync with its default transport.
    Wsync,
    /// wsync with `transport = rsync`.
    WsyncRsync,
    Lsyncd,
}

/// A running syncer on an area.
enum Running {
    Wsync(MonitorProc),
    Lsyncd(Lsyncd),
}

impl Running {
    fn start(area: &Area<'_>, place: Place<'_>, tool: Tool) -> Result<Self> {
        Ok(match tool {
            Tool::Wsync | Tool::WsyncRsync => {
                let mut workspace = area.workspace();
                if tool == Tool::WsyncRsync {
                    workspace.remotes[0].transport = RemoteTransport::Rsync;
                }
                if let (Place::Ssh { port, .. }, RemoteTarget::Ssh { port: p, .. }) =
                    (place, &mut workspace.remotes[0].target)
                {
                    *p = Some(port);
                }
                let mut monitor = area.spawn_monitor_for(workspace)?;
                monitor.wait_in_sync(TIMEOUT)?;
                Running::Wsync(monitor)
            }
            Tool::Lsyncd => Running::Lsyncd(Lsyncd::start(area, place)?),
        })
    }

    fn check_alive(&mut self) -> Result<()> {
        match self {
            Running::Wsync(_) => Ok(()),
            Running::Lsyncd(l) => l.check_alive(),
        }
    }

    fn stop(self) {
        match self {
            Running::Wsync(m) => m.shutdown(),
            Running::Lsyncd(l) => drop(l),
        }
    }
}

fn measure(
    base: &Path,
    place: Place<'_>,
    scenario: Scenario,
    reps: usize,
    tool: Tool,
) -> Result<Measured> {
    let name = format!(
        "peer-{}-{}-{}",
        match scenario {
            Scenario::OneFile => "one",
            Scenario::Burst => "burst",
            Scenario::Rename => "rename",
            Scenario::RenameEdit => "rename-edit",
            Scenario::Deletes => "deletes",
        },
        match tool {
            Tool::Wsync => "wsync",
            Tool::WsyncRsync => "wsync-rsync",
            Tool::Lsyncd => "lsyncd",
        },
        match place {
            Place::Local => "local",
            Place::Ssh { delayed: false, .. } => "ssh",
            Place::Ssh { delayed: true, .. } => "delayed",
        }
    );
    let mut samples = Vec::new();
    let mut cpu_ticks = 0;
    let me = std::process::id();
    match scenario {
        Scenario::OneFile => {
            let area = Area::new(base, &name, place.transport())?;
            make_tree(&area.src, "d", 10, 10, 1024)?;
            let mut running = Running::start(&area, place, tool)?;
            wait_live(&area, &mut running)?;
            let content = vec![b'y'; 1024];
            let cpu_start = subtree_cpu_ticks(me);
            for i in 0..reps {
                let file = format!("new{i}.txt");
                let start = Instant::now();
                std::fs::write(area.src.join(&file), &content)?;
                let dst = area.dst.join(&file);
                samples.push(poll_since(start, TIMEOUT, || {
                    std::fs::read(&dst).is_ok_and(|c| c == content)
                })?);
                // Pacing, not correctness: lets either tool finish its process first.
                std::thread::sleep(Duration::from_millis(100));
            }
            cpu_ticks += subtree_cpu_ticks(me) - cpu_start;
            running.stop();
        }
        Scenario::Burst => {
            for rep in 0..reps {
                let area = Area::new(base, &format!("{name}{rep}"), place.transport())?;
                make_tree(&area.src, "old", 10, 10, 100)?;
                let mut running = Running::start(&area, place, tool)?;
                wait_live(&area, &mut running)?;
                let cpu_start = subtree_cpu_ticks(me);
                let start = Instant::now();
                make_tree(&area.src, "new", 50, 100, 100)?;
                let dst = area.dst.clone();
                samples.push(poll_since(start, TIMEOUT, || {
                    (0..50).all(|d| count(&dst.join(format!("new{d:04}"))) == 100)
                })?);
                cpu_ticks += settled_cpu(me, cpu_start);
                running.stop();
            }
        }
        Scenario::Rename | Scenario::RenameEdit => {
            let content = vec![b'e'; 1024];
            for rep in 0..reps {
                let area = Area::new(base, &format!("{name}{rep}"), place.transport())?;
                make_tree(&area.src, "big", 1, 5000, 1024)?;
                let mut running = Running::start(&area, place, tool)?;
                wait_live(&area, &mut running)?;
                let cpu_start = subtree_cpu_ticks(me);
                let start = Instant::now();
                std::fs::rename(area.src.join("big0000"), area.src.join("renamed"))?;
                let edited = area.dst.join("edited.txt");
                if scenario == Scenario::RenameEdit {
                    std::fs::write(area.src.join("edited.txt"), &content)?;
                }
                let (new, old) = (area.dst.join("renamed"), area.dst.join("big0000"));
                samples.push(poll_since(start, TIMEOUT, || {
                    !old.exists()
                        && count(&new) == 5000
                        && (scenario == Scenario::Rename
                            || std::fs::read(&edited).is_ok_and(|c| c == content))
                })?);
                cpu_ticks += settled_cpu(me, cpu_start);
                running.stop();
            }
        }
        Scenario::Deletes => {
            for rep in 0..reps {
                let area = Area::new(base, &format!("{name}{rep}"), place.transport())?;
                make_tree(&area.src, "keep", 50, 100, 100)?;
                make_tree(&area.src, "del", 10, 100, 100)?;
                let mut running = Running::start(&area, place, tool)?;
                wait_live(&area, &mut running)?;
                let cpu_start = subtree_cpu_ticks(me);
                let start = Instant::now();
                // One unlink per file, as an editor, a build clean or `git checkout` does.
                for d in 0..10 {
                    let dir = area.src.join(format!("del{d:04}"));
                    for f in 0..100 {
                        std::fs::remove_file(dir.join(format!("f{f:05}.txt")))?;
                    }
                }
                let dst = area.dst.clone();
                samples.push(poll_since(start, TIMEOUT, || {
                    (0..10).all(|d| count(&dst.join(format!("del{d:04}"))) == 0)
                })?);
                cpu_ticks += settled_cpu(me, cpu_start);
                running.stop();
            }
        }
    }
    Ok(Measured { samples, cpu_ticks })
}

/// The subtree's CPU since `start`, read once the syncer has had a moment to finish the batch it
/// just delivered (its status report, an rsync exiting): arrival on the destination is polled,
/// the last bookkeeping is not.
fn settled_cpu(me: u32, start: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(100));
    subtree_cpu_ticks(me) - start
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}

/// Files below `dir`, recursively.
fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            _ => 1,
        })
        .sum()
}

/// Waits until the destination holds the whole source tree, then proves the syncer is
/// watching: a probe file written now must arrive.
fn wait_live(area: &Area<'_>, running: &mut Running) -> Result<()> {
    let want = count_files(&area.src);
    let start = Instant::now();
    while count_files(&area.dst) < want {
        running.check_alive()?;
        if start.elapsed() > TIMEOUT {
            bail!("initial sync not done within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let probe = area.src.join(".live-probe");
    std::fs::write(&probe, b"live")?;
    let arrived = area.dst.join(".live-probe");
    poll_since(Instant::now(), TIMEOUT, || arrived.exists()).context("live probe")?;
    std::fs::remove_file(&probe)?;
    poll_since(Instant::now(), TIMEOUT, || !arrived.exists()).context("live probe removal")?;
    // The probe's removal lands before its batch ends (rsync deletes, then reports and
    // exits): a change timed right after would measure the wait for that batch's end too.
    if let Running::Wsync(monitor) = running {
        monitor
            .flush(TIMEOUT)
            .context("flush after the live probe")?;
    }
    Ok(())
}

/// An `lsyncd -nodaemon` process on an area, with its ssh ControlMaster when over SSH.
struct Lsyncd {
    child: Child,
    master: Option<(PathBuf, u16)>,
    log: PathBuf,
}

/// A Lua string literal.
fn lua(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Lsyncd {
    fn start(area: &Area<'_>, place: Place<'_>) -> Result<Self> {
        let logs = area.src.with_file_name("lsyncd");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join("lsyncd.log");
        let src = area.src.to_string_lossy();
        let dst = area.dst.to_string_lossy();
        let mut master = None;
        let sync = match place {
            Place::Local => format!(
                "sync {{ default.direct, source = {}, target = {}, delay = 0 }}",
                lua(&src),
                lua(&dst)
            ),
            Place::Ssh { sshd, port, .. } => {
                // Short: a unix socket path is limited to 108 bytes.
                let control = PathBuf::from(format!(
                    "/tmp/wsb-{}-{port}-{}.cm",
                    std::process::id(),
                    area.src
                        .parent()
                        .and_then(|p| p.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ));
                let key = sshd.identity_file().to_string_lossy().into_owned();
                let cp = control.to_string_lossy().into_owned();
                let options = [
                    ("ControlMaster", "auto"),
                    ("ControlPath", cp.as_str()),
                    ("ControlPersist", "60"),
                    ("UserKnownHostsFile", "/dev/null"),
                    ("StrictHostKeyChecking", "no"),
                    ("LogLevel", "ERROR"),
                    ("BatchMode", "yes"),
                ];
                let rsh = std::iter::once(format!("ssh -p {port} -i {key}"))
                    .chain(options.iter().map(|(k, v)| format!("-o {k}={v}")))
                    .collect::<Vec<_>>()
                    .join(" ");
                let ssh_options = options
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", lua(v)))
                    .collect::<Vec<_>>()
                    .join(", ");
                master = Some((control, port));
                format!(
                    "sync {{ default.rsyncssh, source = {}, host = {}, targetdir = {}, \
                     delay = 0, rsync = {{ archive = true, rsh = {} }}, \
                     ssh = {{ port = {port}, identityFile = {}, options = {{ {ssh_options} }} }} }}",
                    lua(&src),
                    lua(&format!("{}@127.0.0.1", current_user())),
                    lua(&dst),
                    lua(&rsh),
                    lua(&key),
                )
            }
        };
        let config = logs.join("lsyncd.lua");
        std::fs::write(
            &config,
            format!(
                "settings {{ logfile = {}, nodaemon = true }}\n{sync}\n",
                lua(&log.to_string_lossy())
            ),
        )?;
        let child = Command::new("lsyncd")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting lsyncd")?;
        Ok(Self { child, master, log })
    }

    /// Fails once lsyncd has exited (a refused config, a failed startup rsync).
    fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("lsyncd exited ({status}): {}", self.log_text()),
            Err(err) => bail!("waiting for lsyncd: {err}"),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Lsyncd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((control, port)) = self.master.take() {
            let _ = Command::new("ssh")
                .arg("-o")
                .arg(format!("ControlPath={}", control.display()))
                .args(["-p", &port.to_string(), "-O", "exit"])
                .arg(format!("{}@127.0.0.1", current_user()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
