//! Throwaway system users for tests that need a second user (root only): created with `useradd`
//! under a unique name (`wsynct-<pid>-<n>`), removed with `userdel -r` on drop, even when the
//! test failed.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A user that exists while this value lives.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// Creates a user without a home directory or login shell. `Err` says why not (not root,
    /// no `useradd`): the test then skips, printing it.
    pub fn create() -> Result<Self, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        if !nix::unistd::geteuid().is_root() {
            return Err("creating a test user needs root".into());
        }
        let name = format!(
            "wsynct-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("useradd")
            .args(["-M", "-N", "-s", "/usr/sbin/nologin", &name])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run useradd: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "useradd {name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // From here on Drop removes it, whatever fails next.
        let mut user = Self {
            name,
            uid: 0,
            gid: 0,
        };
        let found = nix::unistd::User::from_name(&user.name)
            .map_err(|e| format!("looking up {}: {e}", user.name))?
            .ok_or_else(|| format!("{} vanished after useradd", user.name))?;
        user.uid = found.uid.as_raw();
        user.gid = found.gid.as_raw();
        Ok(user)
    }

    /// `chown -R` of `path` to this user.
    pub fn give(&self, path: &std::path::Path) {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(path)
            .status()
            .expect("running chown");
        assert!(status.success(), "chown -R {} failed", path.display());
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let removed = Command::new("userdel")
            .args(["-r", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Exit 12: there was no home directory to remove; the user is gone all the same.
        if !removed.is_ok_and(|s| s.success() || s.code() == Some(12)) {
            eprintln!(
                "warning: userdel -r {} failed; remove it by hand",
                self.name
            );
        }
    }
}
