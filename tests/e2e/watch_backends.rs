//! The watch backends other than inotify, through the real daemon (issue 15): a workspace run
//! with `WatchMode=notify` (notify's own inotify backend here, the code path macOS runs on
//! FSEvents) and with `WatchMode=poll` mirrors creates, edits, renames of files and
//! directories and deletions, keeps excluded entries off the mirror, answers flushes, and
//! shows its backend in status.

use std::path::Path;
use std::time::Duration;

use wsync_core::monitor_proto::{MonitorStatus, WatchBackendKind};
use wsync_core::protocol::{Request, Response};
use wsync_tests::env::TestEnv;
use wsync_tests::poll::{poll_until, INTERVAL};
use wsync_tests::tree::diff_trees;

const WAIT: Duration = Duration::from_secs(30);

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 test path")
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn report(env: &TestEnv, workspace: &str) -> Option<MonitorStatus> {
    match env.request(&Request::Status {
        workspace: Some(workspace.into()),
    }) {
        Response::Status { mut workspaces } if workspaces.len() == 1 => workspaces.remove(0).report,
        other => env.fail(&format!("unexpected status answer: {other:?}")),
    }
}

/// Flushes the workspace (every change made so far is on the mirror once it returns) and
/// checks the trees are the same.
fn flushed_and_same(env: &TestEnv, src: &Path, mirror: &Path, step: &str) {
    env.wsync_ok(&["flush", "src", "--timeout", "30"]);
    let diffs = diff_trees(src, mirror);
    if !diffs.is_empty() {
        env.fail(&format!("after {step}:\n  {}", diffs.join("\n  ")));
    }
}

fn every_change_converges_with(mode: &str, backend: WatchBackendKind) {
    let mut env = TestEnv::with_config(&format!("WatchMode={mode}\n"));
    env.start_daemon();
    let src = env.mkdir("src");
    write(&src.join(".wsyncignore"), "skip/\n*.tmp\n");
    write(&src.join("pre/existing.txt"), "before start");
    write(&src.join("pre/deep/er/file"), "deep");
    let mirror = env.root.join("mirror");
    env.wsync_ok(&["add", s(&src)]);
    env.wsync_ok(&["attach", "src", s(&mirror)]);
    flushed_and_same(&env, &src, &mirror, "the initial sync");

    match poll_until("the backend in status", WAIT, INTERVAL, || {
        report(&env, "src").and_then(|r| r.watch_backend)
    }) {
        Ok(shown) => assert_eq!(shown, backend, "status names the backend in use"),
        Err(e) => env.fail(&format!("{e:?}")),
    }
    let json = env.wsync_ok(&["status", "--json"]);
    assert!(
        json.contains(&format!("\"watch_backend\": \"{mode}\""))
            || json.contains(&format!("\"watch_backend\":\"{mode}\"")),
        "{json}"
    );

    type Step = (&'static str, Box<dyn Fn(&Path)>);
    let steps: Vec<Step> = vec![
        (
            "create a file",
            Box::new(|s| write(&s.join("new.txt"), "hello")),
        ),
        (
            "modify a file",
            Box::new(|s| write(&s.join("new.txt"), "hello again, longer")),
        ),
        (
            "create a nested tree",
            Box::new(|s| {
                write(&s.join("tree/a/b/c.txt"), "c");
                write(&s.join("tree/a/d.txt"), "d");
            }),
        ),
        (
            "rename a file",
            Box::new(|s| std::fs::rename(s.join("new.txt"), s.join("renamed.txt")).unwrap()),
        ),
        (
            "rename a directory",
            Box::new(|s| std::fs::rename(s.join("tree/a"), s.join("moved")).unwrap()),
        ),
        (
            "edit inside the renamed directory",
            Box::new(|s| write(&s.join("moved/b/c.txt"), "c, edited")),
        ),
        (
            "delete a file",
            Box::new(|s| std::fs::remove_file(s.join("pre/deep/er/file")).unwrap()),
        ),
        (
            "delete a directory tree",
            Box::new(|s| std::fs::remove_dir_all(s.join("pre/deep")).unwrap()),
        ),
    ];
    for (step, change) in &steps {
        change(&src);
        flushed_and_same(&env, &src, &mirror, step);
    }

    // Excluded entries, also inside a new directory, never reach the mirror.
    write(&src.join("skip/x"), "excluded");
    write(&src.join("fresh/scratch.tmp"), "excluded");
    write(&src.join("fresh/kept"), "kept");
    env.wsync_ok(&["flush", "src", "--timeout", "30"]);
    assert!(mirror.join("fresh/kept").is_file(), "the included file");
    for excluded in ["skip", "fresh/scratch.tmp"] {
        if mirror.join(excluded).exists() {
            env.fail(&format!("the excluded {excluded} reached the mirror"));
        }
    }
}

#[test]
fn with_watch_mode_notify_every_change_converges() {
    every_change_converges_with("notify", WatchBackendKind::Notify);
}

#[test]
fn with_watch_mode_poll_every_change_converges() {
    every_change_converges_with("poll", WatchBackendKind::Poll);
}
