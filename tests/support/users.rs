//! A second local user for the security tests (the "attacker" of a daemon run as root): created
//! with `useradd` under a unique name (`wsynct-<pid>-<n>`), removed with `userdel -r` when
//! dropped, also when the test fails. Needs root; [`TestUser::create`] says why it skips.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A user that exists while this value lives.
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// A new user, or `None` (with the reason printed) when the tests do not run as root or
    /// `useradd` is missing: then the caller skips.
    pub fn create(test: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping {test}: it needs root to create a second user");
            return None;
        }
        let name = format!(
            "wsynct-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // Tests run in parallel; useradd fails while another holds the passwd lock.
        let mut last = String::new();
        for _ in 0..50 {
            let out = match Command::new("useradd")
                .args(["-M", "-s", "/usr/sbin/nologin", &name])
                .stdin(Stdio::null())
                .output()
            {
                Ok(out) => out,
                Err(e) => {
                    eprintln!("skipping {test}: cannot run useradd: {e}");
                    return None;
                }
            };
            if out.status.success() {
                let user = nix::unistd::User::from_name(&name)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| {
                        panic!("useradd created {name}, but it cannot be looked up")
                    });
                return Some(Self {
                    name,
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                });
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("useradd {name} kept failing: {last}");
    }

    /// Gives `path` (not what a link points to) to this user.
    pub fn own(&self, path: &std::path::Path) {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("chown {} to {}: {e}", path.display(), self.name));
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for _ in 0..50 {
            let done = Command::new("userdel")
                .args(["-r", &self.name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            // Exit 6: no such user (already gone); 12: no home to remove (we made none).
            if matches!(done.map(|s| s.code()), Ok(Some(0 | 6 | 12)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove test user {}", self.name);
    }
}
