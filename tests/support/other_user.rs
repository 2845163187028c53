//! `OtherUser`: a second local account for the security tests (the attacker, or the remote user
//! of an SSH target), created with `useradd` under a unique name and removed with its home by
//! `userdel -r` when dropped, even when the test fails. Needs root: [`OtherUser::create`]
//! returns `None` (after printing why) otherwise, and the test skips.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sshd::Sshd;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A user that exists for one test.
pub struct OtherUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Its home, `/tmp/wsynct-home…/home` (the directory above it is root's, mode 0755).
    pub home: PathBuf,
    /// Holds the home; removed after the user.
    base: tempfile::TempDir,
}

impl OtherUser {
    /// Creates `wsynct-<pid>-<n>` with a home under `/tmp`, or `None` when this is not root
    /// (the reason is printed with `test`'s name).
    pub fn create(test: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP {test}: not root, cannot create a second user");
            return None;
        }
        let name = format!(
            "wsynct-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let base = tempfile::Builder::new()
            .prefix("wsynct-home")
            .tempdir_in("/tmp")
            .expect("temp dir for the user's home");
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the home's parent");
        let home = base.path().canonicalize().expect("canonical").join("home");
        // `-p '*'`: no password, yet not a locked account (sshd refuses those with UsePAM no).
        let status = Command::new("useradd")
            .args(["-m", "-U", "-s", "/bin/sh", "-p", "*", "-d"])
            .arg(&home)
            .arg(&name)
            .stdout(Stdio::null())
            .status()
            .expect("running useradd");
        assert!(status.success(), "useradd {name} failed: {status}");
        let user = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("user {name} was created but cannot be looked up"));
        Some(Self {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home,
            base,
        })
    }

    /// The directory holding the home (root's, 0755): its parent on the remote.
    pub fn home_parent(&self) -> &Path {
        self.base.path()
    }

    /// Lets `sshd`'s test key log in as this user (its `~/.ssh/authorized_keys`).
    pub fn authorize(&self, sshd: &Sshd) {
        let ssh = self.home.join(".ssh");
        std::fs::create_dir_all(&ssh).expect("mkdir ~/.ssh");
        let mut public = sshd.identity_file().as_os_str().to_owned();
        public.push(".pub");
        std::fs::copy(&public, ssh.join("authorized_keys")).expect("copy the public key");
        self.chown(&ssh);
        self.chown(&ssh.join("authorized_keys"));
    }

    /// Runs `sh -c script` as this user (no supplementary groups), with `args` as `$1`, `$2`,
    /// ...: paths go as arguments, never into the script. Panics unless it succeeds.
    pub fn sh(&self, script: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
        let out = self
            .sh_command(script, args)
            .output()
            .unwrap_or_else(|e| panic!("running sh as {}: {e}", self.name));
        assert!(
            out.status.success(),
            "as {}: {script} {args:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts `sh -c script` as this user like [`OtherUser::sh`], in the background (an
    /// attacker racing the daemon); the caller stops and reaps it.
    pub fn spawn_sh(&self, script: &str, args: &[&std::ffi::OsStr]) -> std::process::Child {
        self.sh_command(script, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting sh as {}: {e}", self.name))
    }

    fn sh_command(&self, script: &str, args: &[&std::ffi::OsStr]) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg(&self.name)
            .args(args)
            .uid(self.uid)
            .gid(self.gid)
            .current_dir("/")
            .stdin(Stdio::null());
        cmd
    }

    /// Makes `path` (not followed if a symlink) this user's.
    pub fn chown(&self, path: &Path) {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

impl Drop for OtherUser {
    fn drop(&mut self) {
        // `-f`: an sshd session of the test may still be ending (the fixture kills those).
        let status = Command::new("userdel")
            .args(["-r", "-f"])
            .arg(&self.name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("warning: userdel -r {} failed", self.name);
        }
    }
}
