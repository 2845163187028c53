//! A monitor that cannot get an inotify instance (issue 13, "Many workspaces"): instead of
//! exiting (and crash-looping into `failed`) it polls the tree, says so in status naming
//! `fs.inotify.max_user_instances`, and still mirrors every change. The limit is reached for
//! real without touching the machine-wide sysctl: the monitor runs as a throwaway user whose
//! instances a helper process (this test binary, running [`hold_inotify_instances`] as that
//! user) has used up.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::inotify::{InitFlags, Inotify};
use wsync_tests::monitor::{local_remote, mark_target, workspace, MonitorProc};
use wsync_tests::tree::{diff_trees, scratch_dir, wait_until_equal};
use wsync_tests::users::TestUser;

const HOLD_ENV: &str = "WSYNC_TEST_HOLD_INOTIFY";
const HELPER: &str = "poll_mode::hold_inotify_instances";
const WAIT: Duration = Duration::from_secs(30);

/// Not a test: the helper process of the test below. Takes every inotify instance its user may
/// have, prints `HELD <n> <error>`, and holds them until stdin closes.
#[test]
#[ignore = "helper process of poll_mode::a_monitor_without_inotify_instances_polls"]
fn hold_inotify_instances() {
    if std::env::var_os(HOLD_ENV).is_none() {
        return;
    }
    let mut held = Vec::new();
    let error = loop {
        match Inotify::init(InitFlags::IN_CLOEXEC) {
            Ok(instance) if held.len() < 100_000 => held.push(instance),
            Ok(_) => break "stopped at 100000".to_owned(),
            Err(e) => break e.to_string(),
        }
    };
    // Straight to the pipe: libtest may hold on to what `println!` writes.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "HELD {} {error}", held.len());
    let _ = out.flush();
    drop(out);
    let _ = std::io::stdin().read(&mut [0u8; 1]);
}

/// Gives `path` and everything below it to `user`.
fn give(user: &TestUser, path: &std::path::Path) {
    user.own(path);
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            give(user, &entry.path());
        }
    }
}

/// The helper process, killed on drop.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_monitor_without_inotify_instances_polls() {
    let Some(user) = TestUser::create("poll_mode::a_monitor_without_inotify_instances_polls")
    else {
        return;
    };
    let exe = std::env::current_exe().expect("test executable");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        HELPER,
        "--nocapture",
        "--test-threads=1",
    ])
    .env(HOLD_ENV, "1")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    std::os::unix::process::CommandExt::uid(&mut cmd, user.uid);
    std::os::unix::process::CommandExt::gid(&mut cmd, user.gid);
    let mut holder = Holder(cmd.spawn().expect("spawning the helper"));
    let stdout = holder.0.stdout.take().expect("piped stdout");
    let held = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("HELD "))
        .expect("the helper reports what it holds");
    assert!(
        held.contains("EMFILE"),
        "the helper must have hit the instance limit: {held}"
    );

    let tmp = scratch_dir();
    let (src, dst, dir) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("mon"),
    );
    for d in [&src, &dst, &dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::create_dir_all(src.join("keep/deep")).unwrap();
    std::fs::write(src.join("keep/deep/old.txt"), "old\n").unwrap();
    std::fs::write(src.join("gone.txt"), "bye\n").unwrap();
    let remote = local_remote("m", &dst);
    let mut ws = workspace("polled", &src, vec![remote.clone()]);
    ws.excludes = vec!["skip/".into()];
    mark_target(&ws, &remote);
    give(&user, tmp.path());
    let mut monitor = MonitorProc::start_as(&dir, ws, user.uid, user.gid);

    let status = monitor.wait_status("poll mode reported", WAIT, |s| {
        s.watch_error
            .as_deref()
            .is_some_and(|e| e.contains("fs.inotify.max_user_instances"))
    });
    assert_eq!(status.watches, 0, "{status:?}");
    monitor.flush_ok(WAIT);
    wait_until_equal(&src, &dst, WAIT).unwrap_or_else(|e| monitor.fail(&e));

    // Every kind of change arrives, found by walking; the excluded directory is not sent.
    std::fs::write(src.join("keep/deep/old.txt"), "edited, longer\n").unwrap();
    std::fs::write(src.join("keep/new.txt"), "new\n").unwrap();
    std::fs::create_dir_all(src.join("fresh/sub")).unwrap();
    std::fs::write(src.join("fresh/sub/f.txt"), "f\n").unwrap();
    std::fs::remove_file(src.join("gone.txt")).unwrap();
    std::fs::create_dir_all(src.join("skip")).unwrap();
    std::fs::write(src.join("skip/local-only.txt"), "x\n").unwrap();
    give(&user, &src);
    monitor.flush_ok(WAIT);
    std::fs::remove_dir_all(src.join("skip")).unwrap();
    let diffs = diff_trees(&src, &dst);
    if !diffs.is_empty() {
        monitor.fail(&format!("the remote differs: {diffs:?}"));
    }
    assert!(
        !dst.join("skip").exists(),
        "the excluded directory was sent"
    );
    drop(monitor);
    drop(holder);
}
