//! A scenario's scratch area (source, wsync's remote, plain rsync's destination, logs) and the
//! transport both sides use: a local path, or SSH to the test sshd on 127.0.0.1.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use wsync_core::registry::{Remote, Workspace};
use wsync_core::remote::RemoteTarget;
use wsync_core::ssh::quote_for_rsync_e;
use wsync_tests::sshd::{current_user, Sshd};

use crate::data::timed;
use crate::monitor::{monitor_bin, MonitorProc};
use crate::report::Place;

/// How long any single wait of a scenario may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// How the remote is reached, by wsync and by plain rsync alike.
#[derive(Clone, Copy)]
pub enum Transport<'a> {
    Local,
    Ssh(&'a Sshd),
}

impl Transport<'_> {
    pub fn place(&self) -> Place {
        match self {
            Transport::Local => Place::Local,
            Transport::Ssh(_) => Place::Ssh,
        }
    }

    fn suffix(&self) -> &'static str {
        match self {
            Transport::Local => "",
            Transport::Ssh(_) => "-ssh",
        }
    }

    /// The ssh argv (without host) plain rsync uses: a new connection every time.
    fn plain_ssh_argv(sshd: &Sshd) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![
            "ssh".into(),
            "-p".into(),
            sshd.port().to_string().into(),
            "-i".into(),
            sshd.identity_file().as_os_str().to_owned(),
            "-o".into(),
            "BatchMode=yes".into(),
        ];
        for option in Sshd::ssh_options() {
            argv.push("-o".into());
            argv.push(format!("{}={}", option.key, option.value).into());
        }
        argv
    }

    /// The `rsync -e` command plain rsync uses: a fresh ssh connection per run, as a user
    /// without wsync would have it (no ControlMaster).
    fn plain_rsh(sshd: &Sshd) -> OsString {
        quote_for_rsync_e(&Self::plain_ssh_argv(sshd))
    }
}

/// Starts the benchmark's sshd below `base`. Unless `login_rc` is set, remote sessions start
/// with `SHLVL=1`, so bash skips `~/.bashrc`: Debian's bash reads it for every command run by
/// sshd, and a heavy one (pyenv init costs ~125 ms here) would dominate every SSH figure, for
/// wsync and plain rsync alike.
pub fn start_sshd(base: &Path, login_rc: bool) -> Result<Sshd> {
    let mut sshd = Sshd::start(base);
    if !login_rc {
        let config = base.join("sshd/sshd_config");
        let mut text = std::fs::read_to_string(&config)
            .with_context(|| format!("reading {}", config.display()))?;
        text.push_str("SetEnv SHLVL=1\n");
        sshd.stop();
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        sshd.resume();
    }
    Ok(sshd)
}

/// Median time of `ssh host true` on a new connection: what each plain rsync pays first.
pub fn ssh_session_cost(sshd: &Sshd) -> Result<Duration> {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let argv = Transport::plain_ssh_argv(sshd);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .arg("--")
            .arg(format!("{}@127.0.0.1", current_user()))
            .arg("true");
        samples.push(timed(&mut cmd)?);
    }
    Ok(crate::data::percentile(&samples, 50.0))
}

/// A scratch area below the benchmark's base directory.
pub struct Area<'a> {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub plain: PathBuf,
    logs: PathBuf,
    run: PathBuf,
    transport: Transport<'a>,
    /// The workspace id `dst`'s `.wsync-target` marker names (the daemon writes it at
    /// attach; a standalone monitor needs it there).
    id: String,
}

impl<'a> Area<'a> {
    /// A fresh area `base/<name>[-ssh]`.
    pub fn new(base: &Path, name: &str, transport: Transport<'a>) -> Result<Self> {
        let root = base.join(format!("{name}{}", transport.suffix()));
        let _ = std::fs::remove_dir_all(&root);
        let area = Self {
            src: root.join("src"),
            dst: root.join("dst"),
            plain: root.join("plain"),
            logs: root.join("logs"),
            run: root.join("run"),
            transport,
            id: wsync_core::registry::new_workspace_id(),
        };
        for d in [&area.src, &area.dst, &area.plain, &area.logs, &area.run] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        area.mark()?;
        Ok(area)
    }

    /// Writes `dst`'s marker, as attach does.
    fn mark(&self) -> Result<()> {
        let marker = wsync_core::target::Marker::new(&self.workspace());
        wsync_core::target::write_local(&self.dst, &marker)
            .with_context(|| format!("marking {}", self.dst.display()))
    }

    /// Empties wsync's remote and plain rsync's destination, for another initial sync.
    pub fn clear_destinations(&self) -> Result<()> {
        for d in [&self.dst, &self.plain] {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        self.mark()
    }

    pub fn place(&self) -> Place {
        self.transport.place()
    }

    /// The workspace wsync-monitor serves: `src` mirrored to `dst` through the transport.
    pub fn workspace(&self) -> Workspace {
        let target = match self.transport {
            Transport::Local => RemoteTarget::Local {
                path: self.dst.clone(),
            },
            Transport::Ssh(sshd) => sshd.target(&self.dst),
        };
        Workspace {
            name: "bench".into(),
            id: self.id.clone(),
            path: self.src.clone(),
            remotes: vec![Remote::new("dst", target)],
            paused: false,
            excludes: vec![],
            respect_gitignore: false,
            // The delete scenario removes 1,000 files at once, on purpose. rsync's
            // --max-delete takes at most a C int.
            max_delete: Some(i32::MAX as u64),
            checksum_every_secs: None,
            tuning: Default::default(),
            root_id: None,
        }
    }

    /// Starts a monitor on this area without waiting for its initial sync.
    pub fn spawn_monitor(&self) -> Result<MonitorProc> {
        self.spawn_monitor_bin(&monitor_bin()?)
    }

    /// [`Area::spawn_monitor`] with the wsync-monitor binary `bin`.
    pub fn spawn_monitor_bin(&self, bin: &Path) -> Result<MonitorProc> {
        MonitorProc::start(bin, self.workspace(), &self.logs, &self.run)
    }

    /// Starts a monitor serving `workspace` (this area's, changed) without waiting.
    pub fn spawn_monitor_for(&self, workspace: Workspace) -> Result<MonitorProc> {
        MonitorProc::start(&monitor_bin()?, workspace, &self.logs, &self.run)
    }

    /// Starts a monitor and waits for its initial sync.
    pub fn start_monitor(&self) -> Result<MonitorProc> {
        let mut monitor = self.spawn_monitor()?;
        monitor.wait_in_sync(TIMEOUT).context("initial sync")?;
        Ok(monitor)
    }

    /// Plain `rsync -a [--delete] src/ plain/` through the same transport, timed.
    pub fn plain_rsync(&self, delete: bool) -> Result<Duration> {
        let mut cmd = Command::new("rsync");
        cmd.arg("-a");
        if delete {
            cmd.arg("--delete");
        }
        match self.transport {
            Transport::Local => {
                cmd.arg(slash(&self.src)).arg(slash(&self.plain));
            }
            Transport::Ssh(sshd) => {
                cmd.arg("-e")
                    .arg(Transport::plain_rsh(sshd))
                    .arg(slash(&self.src))
                    .arg(format!(
                        "{}@127.0.0.1:{}",
                        current_user(),
                        slash(&self.plain)
                    ));
            }
        }
        timed(&mut cmd)
    }
}

fn slash(p: &Path) -> String {
    format!("{}/", p.display())
}
