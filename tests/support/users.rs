//! `TestUser`: a second, unprivileged user for the security tests, which run wsync as root and
//! this user as the attacker. Created with `useradd` under a unique name (`wsynct-<pid>-<n>`),
//! its home inside the test's temp dir, and removed (`userdel -r`) when dropped, even when the
//! test fails. Tests that need one skip with a printed reason when not run as root.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A user created for one test.
pub struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    /// Creates the user (home under `dir`); `None`, with the reason printed, when this process
    /// is not root or `useradd` is missing: the calling test then skips.
    pub fn create(dir: &Path, test: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "skipped {test}: it needs root (to run wsync as root and create a second user)"
            );
            return None;
        }
        let name = format!(
            "wsynct-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let home: PathBuf = dir.join(format!("home-{name}"));
        let added = Command::new("useradd")
            .args([
                "--create-home",
                "--user-group",
                "--shell",
                "/bin/sh",
                "--home-dir",
            ])
            .arg(&home)
            .arg(&name)
            .stdin(Stdio::null())
            .output();
        match added {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "useradd {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => {
                eprintln!("skipped {test}: cannot run useradd ({e}; apt-get install passwd)");
                return None;
            }
        }
        // From here on Drop removes the user, whatever happens.
        let mut user = Self {
            name,
            uid: 0,
            gid: 0,
        };
        let entry = nix::unistd::User::from_name(&user.name)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("{} was created but cannot be looked up", user.name));
        user.uid = entry.uid.as_raw();
        user.gid = entry.gid.as_raw();
        Some(user)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes the user own `path` (not following a symlink there).
    pub fn chown(&self, path: &Path) {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("chown {} to {}: {e}", path.display(), self.name));
    }

    /// Runs `sh -c script` as this user (no supplementary groups) with `args` as `$1`, `$2`, ...:
    /// paths go as arguments, never into the script. Panics unless it succeeds.
    pub fn sh(&self, script: &str, args: &[&OsStr]) -> Output {
        use std::os::unix::process::CommandExt;
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(&self.name)
            .args(args)
            .uid(self.uid)
            .gid(self.gid)
            .current_dir("/")
            .stdin(Stdio::null())
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
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Every command run as the user was waited for: nothing of it is left running.
        let removed = Command::new("userdel")
            .arg("-r")
            .arg(&self.name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !removed.is_ok_and(|s| s.success()) {
            eprintln!(
                "warning: userdel -r {} failed; remove the user by hand",
                self.name
            );
        }
    }
}
