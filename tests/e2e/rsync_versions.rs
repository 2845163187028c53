//! rsync capability checks on both ends (issue 15): a small wrapper script stands in for an
//! older or odd rsync — it prints a fake `--version` banner (openrsync's, 2.6.9's, 3.4.3's)
//! and otherwise execs the real rsync, so every transfer is real. Attach refuses an rsync it
//! cannot use naming the fix; a monitor finding one reports it in status; on 3.4.3 deletions go
//! by the filter-list fallback and still propagate, locally and over SSH.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wsync_core::monitor_proto::RemoteState;
use wsync_core::registry::Remote;
use wsync_tests::env::TestEnv;
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::sshd::Sshd;
use wsync_tests::tree::scratch_dir;

const FLUSH: Duration = Duration::from_secs(30);
const OPENRSYNC: &str = "openrsync: protocol version 29\nrsync version 2.6.9 compatible\n";
const RSYNC_269: &str = "rsync  version 2.6.9  protocol version 29\n";
const RSYNC_343: &str = "rsync  version 3.4.3  protocol version 32\n";

/// The real rsync, found on PATH before any wrapper is put in front of it.
fn real_rsync() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("rsync"))
        .find(|p| p.is_file())
        .expect("rsync on PATH")
}

/// `dir/rsync`: prints `dir/banner` for `--version` while that file exists, otherwise (and
/// for everything else) runs the real rsync. Returns its path.
fn wrapper(dir: &Path, banner: Option<&str>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let script = dir.join("rsync");
    let banner_file = dir.join("banner");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ] && [ -f '{b}' ]; then cat '{b}'; exit 0; fi\nexec '{real}' \"$@\"\n",
            b = banner_file.display(),
            real = real_rsync().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    set_banner(dir, banner);
    script
}

fn set_banner(dir: &Path, banner: Option<&str>) {
    let file = dir.join("banner");
    match banner {
        Some(text) => std::fs::write(file, text).unwrap(),
        None => {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// PATH with `dir` first.
fn path_with(dir: &Path) -> OsString {
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

#[test]
fn attach_refuses_openrsync_and_2_6_9_naming_the_fix() {
    let mut env = TestEnv::new();
    let bin = env.root.join("fake-bin");
    wrapper(&bin, Some(OPENRSYNC));
    env.start_daemon_with_env(&[("PATH", &path_with(&bin))]);
    let src = env.mkdir("src");
    std::fs::write(src.join("f"), "x").unwrap();
    env.wsync_ok(&["add", src.to_str().unwrap(), "--name", "src"]);
    let dst = env.root.join("mirror");
    for (banner, named) in [(OPENRSYNC, "openrsync"), (RSYNC_269, "rsync 2.6.9")] {
        set_banner(&bin, Some(banner));
        let out = env.wsync(&["attach", "src", dst.to_str().unwrap()]);
        assert!(!out.success(), "{out:?}");
        let err = out.stderr.clone();
        assert!(
            err.contains(named) && err.contains("brew install rsync"),
            "{err}"
        );
        assert!(err.contains("3.1.3"), "{err}");
        assert!(!dst.exists(), "nothing is created on a refused attach");
    }
    // A good rsync: attach goes through.
    set_banner(&bin, None);
    env.wsync_ok(&["attach", "src", dst.to_str().unwrap()]);
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"x");
}

#[test]
fn attach_over_ssh_refuses_an_old_remote_rsync_and_takes_an_rsync_path() {
    let mut env = TestEnv::new();
    let sshd = Sshd::start(&env.root);
    env.start_daemon();
    let src = env.mkdir("src");
    std::fs::write(src.join("f"), "x").unwrap();
    env.wsync_ok(&["add", src.to_str().unwrap(), "--name", "src"]);
    let remote_bin = env.root.join("remote-bin");
    let fake = wrapper(&remote_bin, Some(RSYNC_269));
    let dst = env.root.join("remote mirror");
    let spec = format!("127.0.0.1:{}", dst.display());
    let fake_arg = fake.to_str().unwrap();
    let args = sshd.attach_args("src", &spec, &["--rsync-path", fake_arg]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.wsync(&args);
    assert!(!out.success(), "{out:?}");
    let err = out.stderr.clone();
    assert!(
        err.contains("rsync 2.6.9") && err.contains("127.0.0.1") && err.contains("--rsync-path"),
        "{err}"
    );
    // An option or shell text is no rsync path.
    for bad in ["--daemon", "/bin/rsync;id", "rsync"] {
        let flag = format!("--rsync-path={bad}");
        let args = sshd.attach_args("src", &spec, &[&flag]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = env.wsync(&args).stderr;
        assert!(
            err.contains("absolute path of the remote's rsync"),
            "{bad}: {err}"
        );
    }
    set_banner(&remote_bin, None);
    env.wsync_ok(&args);
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"x");
}

fn ssh_remote(sshd: &Sshd, path: &Path, rsync_path: &Path) -> Remote {
    Remote {
        rsync_path: Some(rsync_path.to_str().unwrap().into()),
        ..sshd.remote("r", path)
    }
}

#[test]
fn a_monitor_start_with_an_old_remote_rsync_reports_it_and_recovers_once_fixed() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    let remote_bin = tmp.path().join("remote-bin");
    let fake = wrapper(&remote_bin, Some(RSYNC_269));
    let dst = tmp.path().join("dst");
    let m = MonitorProc::start(
        tmp.path(),
        workspace("w", &src, vec![ssh_remote(&sshd, &dst, &fake)]),
    );
    let status = m.wait_status("the remote in error", FLUSH, |s| {
        s.remotes[0].state == RemoteState::Error
            && s.remotes[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("rsync 2.6.9"))
    });
    let error = status.remotes[0].last_error.clone().unwrap();
    assert!(error.contains("brew install rsync"), "{error}");
    assert!(
        !dst.join("f").exists(),
        "nothing sent with an rsync wsync cannot use"
    );
    // Fixed on the remote: the retry checks again and syncs.
    set_banner(&remote_bin, None);
    let status = m.wait_status("in sync, both versions shown", FLUSH, |s| {
        s.remotes[0].state == RemoteState::InSync && s.remotes[0].rsync.is_some()
    });
    let ends = status.remotes[0]
        .rsync
        .clone()
        .expect("both versions in status");
    assert!(ends.local.is_some() && ends.remote.is_some(), "{ends:?}");
    assert!(!ends.deletion_fallback);
}

/// Creates, then deletes (a file, a directory tree, a name with wildcards) and checks the
/// deletions reach `dst` while status says they went by the fallback.
fn deletions_propagate_by_the_fallback(m: &mut MonitorProc, src: &Path, dst: &Path) {
    std::fs::create_dir_all(src.join("d/sub")).unwrap();
    for file in ["keep", "gone", "g*[1]", "d/sub/f", "d/x"] {
        std::fs::write(src.join(file), "x").unwrap();
    }
    m.flush_ok(FLUSH);
    assert!(dst.join("d/sub/f").exists() && dst.join("g*[1]").exists());
    // Something on the remote the workspace never had: the fallback must leave it alone.
    std::fs::write(dst.join("remote-only"), "r").unwrap();
    std::fs::remove_file(src.join("gone")).unwrap();
    std::fs::remove_file(src.join("g*[1]")).unwrap();
    std::fs::remove_dir_all(src.join("d")).unwrap();
    m.flush_ok(FLUSH);
    for gone in ["gone", "g*[1]", "d"] {
        assert!(
            !dst.join(gone).exists(),
            "{gone} deleted on the remote\n{}",
            m.logs()
        );
    }
    assert!(dst.join("keep").exists() && dst.join("remote-only").exists());
    let status = m.status().unwrap();
    let ends = status.remotes[0].rsync.clone().expect("versions in status");
    assert!(ends.deletion_fallback, "{ends:?}");
    assert!(m.logs().contains("deleting by the filter-list fallback"));
}

#[test]
fn on_rsync_3_4_3_deletions_go_by_the_fallback_locally() {
    let tmp = scratch_dir();
    let bin = tmp.path().join("fake-bin");
    wrapper(&bin, Some(RSYNC_343));
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // An exclude rule: local deletions then go through rsync, not the in-process executor.
    std::fs::write(src.join(".wsyncignore"), "*.tmp\n").unwrap();
    let dst = tmp.path().join("dst");
    let path = path_with(&bin);
    let mut m = MonitorProc::start_with(
        tmp.path(),
        workspace("w", &src, vec![local_remote("r", &dst)]),
        &[("PATH", path.to_str().unwrap())],
    );
    m.flush_ok(FLUSH);
    deletions_propagate_by_the_fallback(&mut m, &src, &dst);
}

#[test]
fn on_rsync_3_4_3_deletions_go_by_the_fallback_over_ssh() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let remote_bin = tmp.path().join("remote-bin");
    let fake = wrapper(&remote_bin, Some(RSYNC_343));
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let dst = tmp.path().join("dst");
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("w", &src, vec![ssh_remote(&sshd, &dst, &fake)]),
    );
    m.flush_ok(FLUSH);
    deletions_propagate_by_the_fallback(&mut m, &src, &dst);
}
