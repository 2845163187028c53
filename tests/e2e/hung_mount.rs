//! A remote on a mount that stops answering (issue 13): a FUSE filesystem that never replies
//! (`tests/support/fuse.rs`) is mounted over one of two local targets after their initial sync.
//! The other remote must keep converging within 2 s of each change, status must show the hung
//! one `stalled` naming the call, the hook must fire, `wsync flush` must answer per remote
//! instead of hanging, and the remote must recover once the mount answers again.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use wsync_core::monitor_proto::RemoteState;
use wsync_tests::env::{hook_lines, TestEnv};
use wsync_tests::faults::{
    add_workspace, attach_local, cli_status, flush_ok, remote, wait_status, write,
};
use wsync_tests::fuse::HungMount;
use wsync_tests::poll::poll_until;
use wsync_tests::tree::wait_until_equal;

const WS: &str = "ws";
/// The monitor's deadline for a blocking call, shortened for the test (default 10 s).
const DEADLINE_MS: &str = "1000";
/// The promise: a healthy remote converges within 2 s of each change.
const CONVERGE: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(30);
/// Exit code of `wsync flush` when remotes are lagging.
const LAGGING: i32 = 6;

/// Writes `rel` in `src` and waits (at most [`CONVERGE`]) for the same bytes in `dst`.
fn change_arrives(env: &TestEnv, src: &Path, dst: &Path, rel: &str) {
    let text = format!("content of {rel}\n");
    write(&src.join(rel), &text);
    let arrived = poll_until(
        &format!("{rel} to reach the healthy remote"),
        CONVERGE,
        Duration::from_millis(20),
        || std::fs::read_to_string(dst.join(rel)).is_ok_and(|t| t == text),
    );
    if let Err(e) = arrived {
        env.fail(&format!("{e}: the hung remote held up the healthy one"));
    }
}

#[test]
fn a_hung_target_stalls_only_its_remote_and_recovers() {
    let mut env = TestEnv::new();
    let src = env.mkdir("src");
    let ok = env.mkdir("ok");
    let hung = env.mkdir("hung");
    let hook_log = env.install_hook();
    env.start_daemon_with_env(&[("WSYNC_TEST_CALL_DEADLINE_MS", OsStr::new(DEADLINE_MS))]);
    write(&src.join("before.txt"), "before\n");
    add_workspace(&env, &src, WS);
    attach_local(&env, WS, &ok, "ok");
    attach_local(&env, WS, &hung, "hung");
    flush_ok(&env, WS, 60);
    // Declared after `env`: dropped (released and unmounted) before the temp dir goes.
    let mut mount = match HungMount::mount(&hung) {
        Ok(mount) => mount,
        Err(why) => {
            eprintln!(
                "skipping hung_mount::a_hung_target_stalls_only_its_remote_and_recovers: {why}"
            );
            return;
        }
    };

    change_arrives(&env, &src, &ok, "first.txt");
    let s = wait_status(&env, WS, "the hung remote to be stalled", WAIT, |s| {
        remote(s, "hung").is_some_and(|r| r.state == RemoteState::Stalled)
    });
    let error = remote(&s, "hung")
        .and_then(|r| r.last_error.clone())
        .unwrap_or_default();
    let marker = mount.path().join(".wsync-target");
    assert!(
        error.contains(&format!("reading the target marker {}", marker.display())),
        "the stall names the call and its path: {error}"
    );
    assert_eq!(
        remote(&s, "ok").map(|r| r.state),
        Some(RemoteState::InSync),
        "{s:#?}"
    );
    // What a user sees.
    let json = cli_status(&env, WS);
    assert_eq!(
        remote(&json, "hung").map(|r| r.state),
        Some(RemoteState::Stalled)
    );
    let table = env.wsync_ok(&["status", WS]);
    assert!(
        table.lines().any(|l| l.contains("hung")
            && l.contains("stalled")
            && l.contains("reading the target marker")),
        "{table}"
    );
    poll_until(
        "the hook to report the stall",
        WAIT,
        Duration::from_millis(50),
        || {
            hook_lines(&hook_log)
                .iter()
                .any(|l| l.starts_with(&format!("{WS}|hung|stalled|reading the target marker")))
        },
    )
    .unwrap_or_else(|e| env.fail(&format!("{e}: {:?}", hook_lines(&hook_log))));

    // More changes keep flowing to the healthy remote while the call still hangs.
    for i in 0..3 {
        change_arrives(&env, &src, &ok, &format!("during-{i}.txt"));
    }
    // A flush answers per remote at once, not at its timeout (and never hangs).
    let started = Instant::now();
    let out = env.wsync(&["flush", WS, "--timeout", "120"]);
    let took = started.elapsed();
    if out.code() != Some(LAGGING)
        || !out.stderr.contains("remote still lagging: hung")
        || !out
            .stderr
            .contains("hung: stalled — reading the target marker")
        || took >= Duration::from_secs(100)
    {
        env.fail(&format!(
            "flush should name the stalled remote at once (took {took:?}): {}\n{}",
            out.status, out.stderr
        ));
    }

    // The mount answers again (its calls fail, the mount goes): the remote catches up.
    mount.release();
    flush_ok(&env, WS, 60);
    wait_until_equal(&src, &hung, Duration::from_secs(10)).unwrap_or_else(|e| env.fail(&e));
    wait_status(&env, WS, "both remotes in sync", WAIT, |s| {
        s.report.as_ref().is_some_and(|r| {
            r.remotes
                .iter()
                .all(|r| r.state == RemoteState::InSync && r.last_error.is_none())
        })
    });
}

/// `wsync status` reads each workspace's `.wsync.toml` to compare it with the registry: a
/// workspace root on a mount that stops answering costs it that read's 2 s deadline and a
/// line naming the root, never a hang.
#[test]
fn status_answers_when_a_workspace_root_hangs() {
    let mut env = TestEnv::new();
    let root = env.mkdir("src");
    std::fs::write(root.join(".wsync.toml"), "").unwrap();
    env.start_daemon();
    add_workspace(&env, &root, WS);
    let _hung = match HungMount::mount(&root) {
        Ok(mount) => mount,
        Err(why) => {
            eprintln!("SKIPPED status_answers_when_a_workspace_root_hangs: {why}");
            return;
        }
    };
    let out = env.wsync(&["status", WS]);
    let text = format!("{}{}", out.stdout, out.stderr);
    if !text.contains("did not answer within 2 s") || !text.contains(&root.display().to_string()) {
        env.fail(&format!(
            "status does not say the hung root did not answer:\n{text}"
        ));
    }
}
