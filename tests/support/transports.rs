//! The transports an engine scenario runs on: a local target in process and by rsync
//! (`transport = rsync` turns the in-process executor off), an SSH target by its agent and by
//! rsync. A scenario takes a [`Rig`] for the remote it syncs to; [`on_every_transport!`]
//! makes one test per [`Via`] of it, so no scenario is copied per transport.

use std::path::Path;

use wsync_core::registry::{Remote, Transport};

use crate::env::TestEnv;
use crate::faults::{attach_local_with, attach_ssh_with};
use crate::monitor::local_remote;
use crate::sshd::Sshd;

/// How a scenario's changes reach its remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A local target, small changes by the in-process executor (the default).
    InProcess,
    /// A local target with `transport = rsync`: every change by rsync.
    LocalRsync,
    /// An SSH target, small changes by the agent (the default).
    Agent,
    /// An SSH target with `transport = rsync`.
    SshRsync,
}

impl Via {
    pub fn is_ssh(self) -> bool {
        matches!(self, Via::Agent | Via::SshRsync)
    }

    fn transport(self) -> Transport {
        match self {
            Via::InProcess | Via::Agent => Transport::Auto,
            Via::LocalRsync | Via::SshRsync => Transport::Rsync,
        }
    }
}

/// A scenario's remote side: the sshd of an SSH [`Via`], started in the test's temp dir.
pub struct Rig {
    via: Via,
    sshd: Option<Sshd>,
}

impl Rig {
    /// Starts what `via` needs (an sshd under `dir` for an SSH target).
    pub fn new(via: Via, dir: &Path) -> Self {
        let sshd = via.is_ssh().then(|| Sshd::start(dir));
        Self { via, sshd }
    }

    pub fn via(&self) -> Via {
        self.via
    }

    /// The sshd of an SSH rig.
    pub fn sshd(&self) -> Option<&Sshd> {
        self.sshd.as_ref()
    }

    /// A remote `name` at `path` on this rig's transport.
    pub fn remote(&self, name: &str, path: &Path) -> Remote {
        let remote = match &self.sshd {
            Some(sshd) => sshd.remote(name, path),
            None => local_remote(name, path),
        };
        Remote {
            transport: self.via.transport(),
            ..remote
        }
    }

    /// `wsync attach WS PATH --name NAME` on this rig's transport (waits for the initial sync).
    pub fn attach(&self, env: &TestEnv, ws: &str, path: &Path, name: &str) {
        let extra: &[&str] = match self.via.transport() {
            Transport::Auto => &[],
            Transport::Rsync => &["--transport", "rsync"],
        };
        match &self.sshd {
            Some(sshd) => attach_ssh_with(env, ws, sshd, path, name, extra),
            None => attach_local_with(env, ws, path, name, extra),
        }
    }
}

/// `on_every_transport!(scenario)`: a module `scenario` of four tests, `in_process`,
/// `local_rsync`, `agent` and `ssh_rsync`, each calling `scenario(Via::…)`.
#[macro_export]
macro_rules! on_every_transport {
    ($scenario:ident) => {
        mod $scenario {
            use $crate::transports::Via;

            #[test]
            fn in_process() {
                super::$scenario(Via::InProcess);
            }

            #[test]
            fn local_rsync() {
                super::$scenario(Via::LocalRsync);
            }

            #[test]
            fn agent() {
                super::$scenario(Via::Agent);
            }

            #[test]
            fn ssh_rsync() {
                super::$scenario(Via::SshRsync);
            }
        }
    };
}
