//! `Sshd`: a private OpenSSH server on 127.0.0.1 for the SSH tests — generated host and user
//! keys, its own config, pidfile and log under the test's temp dir, a free port that survives
//! `stop()`/`start()` (outage tests), and the ssh options a remote spec needs to reach it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wsync_core::remote::{RemoteTarget, SshOption};

use crate::env::descendants;
use crate::poll::{poll_until, INTERVAL};

const SSHD: &str = "/usr/sbin/sshd";

/// A running (or stopped) test sshd. Dropping it kills the server and its sessions.
pub struct Sshd {
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    identity: PathBuf,
    child: Option<Child>,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "wsync-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("running ssh-keygen (apt-get install openssh-client)");
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

/// The user the tests log in as: whoever runs them.
pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into())
}

impl Sshd {
    /// Generates keys and config under `parent/sshd` and starts the server. Besides its own
    /// key file, each user's `~/.ssh/authorized_keys` counts, so a test can log in as a user it
    /// created (`OtherUser::authorize`).
    pub fn start(parent: &Path) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: apt-get install openssh-server (scripts/test.sh does)"
        );
        let dir = parent.join("sshd");
        std::fs::create_dir_all(&dir).expect("creating the sshd dir");
        let host_key = dir.join("host_key");
        let identity = dir.join("id_ed25519");
        keygen(&host_key);
        keygen(&identity);
        std::fs::copy(dir.join("id_ed25519.pub"), dir.join("authorized_keys"))
            .expect("writing authorized_keys");
        let port = free_port();
        let config = dir.join("sshd_config");
        // SHLVL=1: bash run by sshd then skips the user's ~/.bashrc (it reads it only at shell
        // level 1), so the machine's dotfiles stay out of the tests: a `pyenv init` there waits
        // up to 60 s per session on a rehash lock another session left behind.
        let text = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {auth} %h/.ssh/authorized_keys\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             MaxStartups 100:30:200\n\
             MaxSessions 100\n\
             LogLevel INFO\n\
             Subsystem sftp internal-sftp\n\
             Match User {user}\n\
             \tSetEnv XDG_CACHE_HOME={cache} SHLVL=1\n",
            user = current_user(),
            cache = dir.join("remote-cache").display(),
            host_key = host_key.display(),
            pid = dir.join("sshd.pid").display(),
            auth = dir.join("authorized_keys").display(),
        );
        std::fs::write(&config, text).expect("writing sshd_config");
        // Privilege separation needs this directory when sshd runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut sshd = Self {
            dir,
            config,
            port,
            identity,
            child: None,
        };
        sshd.resume();
        sshd
    }

    /// Starts the server again on the same port (after [`Sshd::stop`]).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "sshd is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("sshd.log"))
            .expect("opening sshd.log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sshd");
        self.child = Some(child);
        let port = self.port;
        let what = format!("sshd to listen on {port}");
        let up = poll_until(&what, Duration::from_secs(10), INTERVAL, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if let Err(e) = up {
            panic!("{e}:\n{}", self.log());
        }
    }

    /// Stops the server and every session it spawned (so existing connections break too).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        for sub in descendants(pid) {
            let _ = kill(Pid::from_raw(sub as i32), Signal::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
        let port = self.port;
        let what = format!("sshd to stop listening on {port}");
        poll_until(&what, Duration::from_secs(5), INTERVAL, || {
            TcpStream::connect(("127.0.0.1", port)).is_err()
        })
        .unwrap();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the test user's remote cache is (`XDG_CACHE_HOME` of its ssh sessions): the
    /// agent is installed below it, never in the real home.
    pub fn remote_cache(&self) -> PathBuf {
        self.dir.join("remote-cache")
    }

    /// The private key authorized for [`current_user`].
    pub fn identity_file(&self) -> &Path {
        &self.identity
    }

    /// Options for a throwaway host key.
    pub fn ssh_options() -> Vec<SshOption> {
        [
            ("UserKnownHostsFile", "/dev/null"),
            ("StrictHostKeyChecking", "no"),
            ("LogLevel", "ERROR"),
        ]
        .into_iter()
        .map(|(key, value)| SshOption {
            key: key.into(),
            value: value.into(),
        })
        .collect()
    }

    /// A remote target reaching `path` on this machine through this server.
    /// A remote named `name` at `path` through this server, every other setting at its
    /// default (the SSH twin of [`crate::monitor::local_remote`]).
    pub fn remote(&self, name: &str, path: &Path) -> wsync_core::registry::Remote {
        wsync_core::registry::Remote::new(name, self.target(path))
    }

    pub fn target(&self, path: &Path) -> RemoteTarget {
        RemoteTarget::Ssh {
            user: Some(current_user()),
            host: "127.0.0.1".into(),
            port: Some(self.port),
            path: path.to_string_lossy().into_owned(),
            identity_file: Some(self.identity.clone()),
            ssh_options: Self::ssh_options(),
        }
    }

    /// `wsync attach WS SPEC` argv reaching this server (port, key, throwaway host key),
    /// followed by `extra`.
    pub fn attach_args(&self, workspace: &str, spec: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "attach".into(),
            workspace.into(),
            spec.into(),
            "--port".into(),
            self.port.to_string(),
            "--identity-file".into(),
            self.identity.to_string_lossy().into_owned(),
        ];
        for option in Self::ssh_options() {
            args.push("--ssh-option".into());
            args.push(format!("{}={}", option.key, option.value));
        }
        args.extend(extra.iter().map(|e| (*e).to_owned()));
        args
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop_quietly();
    }
}

impl Sshd {
    fn stop_quietly(&mut self) {
        if let Some(mut child) = self.child.take() {
            for sub in descendants(child.id()) {
                let _ = kill(Pid::from_raw(sub as i32), Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
