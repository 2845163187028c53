//! Issue 12, case 1: rename replay never writes outside a target. wsync runs as root; a second
//! user created for the test owns a shared directory in the workspace, so rsync gives it that
//! directory's copy in the mirror too. It replaces a mirrored subdirectory with a symlink to a
//! directory only root may write, then renames a file into that subdirectory in the workspace.
//! Replayed by path, root's monitor would move the file over `passwd` in the root-only
//! directory. Now the replay refuses (a local target: `wsync_core::beneath`; SSH: the parent
//! walk of the rename script), rsync replaces the planted link, and the mirror converges.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use wsync_core::registry::Remote;
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::other_user::OtherUser;
use wsync_tests::sshd::Sshd;
use wsync_tests::tree::{diff_trees, scratch_dir, wait_until_equal};

const FLUSH: Duration = Duration::from_secs(30);
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";

/// Every name under `dir` with its content (files) or destination (links).
fn listing(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_symlink() {
                format!("-> {:?}", std::fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".into()
            } else {
                String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned()
            };
            out.push((path.display().to_string(), what));
        }
    }
    out.sort();
    out
}

/// What the attacker does in the workspace once the link is planted in the mirror: moves its
/// file into the linked directory (a replayed rename), or writes a new small file and edits an
/// old one there (puts by the in-process executor on a local target).
#[derive(Clone, Copy, PartialEq)]
enum Then {
    Rename,
    Write,
}

fn scenario(test: &str, then: Then, remote: impl FnOnce(&Path) -> Remote) {
    let tmp = scratch_dir();
    let Some(attacker) = OtherUser::create(test) else {
        return;
    };
    // The attacker must reach the workspace and the mirror, as on a shared machine.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst, secret) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("root-only"),
    );
    std::fs::create_dir_all(src.join("shared/sub")).unwrap();
    std::fs::write(src.join("shared/x"), "the attacker's file\n").unwrap();
    std::fs::write(src.join("shared/sub/keep"), "kept\n").unwrap();
    for path in ["shared", "shared/sub", "shared/x", "shared/sub/keep"] {
        attacker.chown(&src.join(path));
    }
    std::fs::create_dir(&secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(secret.join("passwd"), PASSWD).unwrap();
    let before = listing(&secret);

    let mut m = MonitorProc::start(tmp.path(), workspace("beneath", &src, vec![remote(&dst)]));
    m.flush_ok(FLUSH);
    if let Some(diffs) = Some(diff_trees(&src, &dst)).filter(|d| !d.is_empty()) {
        m.fail(&format!("the initial sync: {diffs:?}"));
    }
    // The mirror's copy of the shared directory is the attacker's (rsync -a as root).
    attacker.sh(
        "rm -rf -- \"$1/shared/sub\" && ln -s -- \"$2\" \"$1/shared/sub\"",
        &[dst.as_os_str(), secret.as_os_str()],
    );
    match then {
        Then::Rename => attacker.sh(
            "mv -- \"$1/shared/x\" \"$1/shared/sub/passwd\"",
            &[src.as_os_str()],
        ),
        Then::Write => attacker.sh(
            "cp -- \"$1/shared/x\" \"$1/shared/sub/passwd\" && echo more >> \"$1/shared/sub/keep\"",
            &[src.as_os_str()],
        ),
    };
    m.flush_ok(FLUSH);
    let after = listing(&secret);
    if after != before {
        m.fail(&format!(
            "root's monitor wrote outside the target: {} was {before:?}, is {after:?}",
            secret.display()
        ));
    }
    if let Err(e) = wait_until_equal(&src, &dst, FLUSH) {
        m.fail(&format!("the mirror does not converge: {e}"));
    }
    let link = std::fs::symlink_metadata(dst.join("shared/sub")).unwrap();
    assert!(link.is_dir(), "the planted link is still there");
    assert_eq!(
        std::fs::read_to_string(dst.join("shared/sub/passwd")).unwrap(),
        "the attacker's file\n"
    );
    let logs = m.logs();
    assert!(
        then == Then::Write || logs.contains("renames fall back to rsync"),
        "the rename was not refused:\n{logs}"
    );
    drop(m);
    drop(attacker);
}

#[test]
fn a_symlinked_mirror_directory_stops_the_local_rename_replay() {
    scenario(
        "hardening_beneath::a_symlinked_mirror_directory_stops_the_local_rename_replay",
        Then::Rename,
        |dst| local_remote("l", dst),
    );
}

/// The in-process executor's puts resolve beneath the target too: the write into the linked
/// directory is refused, rsync gets the directory whole and replaces the link.
#[test]
fn a_symlinked_mirror_directory_stops_the_local_in_process_writes() {
    scenario(
        "hardening_beneath::a_symlinked_mirror_directory_stops_the_local_in_process_writes",
        Then::Write,
        |dst| local_remote("l", dst),
    );
}

#[test]
fn a_symlinked_mirror_directory_stops_the_ssh_rename_replay() {
    let test = "hardening_beneath::a_symlinked_mirror_directory_stops_the_ssh_rename_replay";
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped {test}: it needs root");
        return;
    }
    let sshd_dir = scratch_dir();
    let sshd = Sshd::start(sshd_dir.path());
    scenario(test, Then::Rename, |dst| sshd.remote("r", dst));
}
