//! End-to-end tests of proof of sync (a file created in the workspace root and seen arriving on
//! each remote through the normal path), the `unverified` state and its hook, and the latency
//! figures in status. The daemon runs with `ProofIntervalSecs=1`.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use wsync_core::monitor_proto::{RemoteState, RemoteStatus};
use wsync_core::protocol::{Request, Response};
use wsync_tests::env::TestEnv;
use wsync_tests::poll::{poll_until, INTERVAL};

const WAIT: Duration = Duration::from_secs(30);

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 test path")
}

fn remote(env: &TestEnv, workspace: &str, name: &str) -> Option<RemoteStatus> {
    match env.request(&Request::Status {
        workspace: Some(workspace.into()),
    }) {
        Response::Status { mut workspaces } if workspaces.len() == 1 => workspaces
            .remove(0)
            .report?
            .remotes
            .into_iter()
            .find(|r| r.name == name),
        other => env.fail(&format!("unexpected status answer: {other:?}")),
    }
}

fn proof_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(wsync_core::rsync::PROOF_PREFIX))
        .collect()
}

#[test]
fn an_idle_remote_is_proved_every_interval_and_status_shows_it() {
    let mut env = TestEnv::with_config("ProofIntervalSecs=1\n");
    env.start_daemon();
    let src = env.mkdir("src");
    // A user exclude that would match the proof file: the proof still goes through.
    std::fs::write(src.join(".gitignore"), ".*\n!.gitignore\n").unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    let mirror = env.root.join("mirror");
    env.wsync_ok(&["add", s(&src)]);
    env.wsync_ok(&["attach", "src", s(&mirror)]);
    let first = poll_until("a first proof", WAIT, INTERVAL, || {
        remote(&env, "src", "mirror").and_then(|r| r.verified_unix_ms)
    })
    .unwrap();
    // Nothing changes in the workspace, yet the proof keeps getting renewed: the probe file
    // travels to the mirror and back out of it.
    let later = poll_until("a proof from an idle probe", WAIT, INTERVAL, || {
        remote(&env, "src", "mirror")
            .and_then(|r| r.verified_unix_ms)
            .filter(|&t| t >= first + 1500)
    });
    if later.is_err() {
        env.fail("the idle remote's proof was not renewed");
    }
    // Each probe file is removed from the workspace and the mirror once proved.
    poll_until("the probe files to be cleaned up", WAIT, INTERVAL, || {
        (proof_files(&src).len() <= 1 && proof_files(&mirror).len() <= 1).then_some(())
    })
    .unwrap();
    let table = env.wsync_ok(&["status"]);
    assert!(table.contains("VERIFIED"), "{table}");
    assert!(
        !table.contains("never"),
        "the remote shows when it was verified: {table}"
    );

    // A change reports its latency.
    std::fs::write(src.join("g"), "y").unwrap();
    let t = poll_until("latency figures", WAIT, INTERVAL, || {
        remote(&env, "src", "mirror").and_then(|r| r.throughput)
    })
    .unwrap();
    assert!(t.samples >= 1 && t.latency_p50_us > 0, "{t:?}");
    assert!(t.latency_p99_us >= t.latency_p50_us, "{t:?}");
    let json = env.wsync_ok(&["status", "--json"]);
    assert!(json.contains("\"latency_p50_us\""), "{json}");
}

/// A tmpfs mounted over a directory of the test's own, unmounted on drop.
struct MountedOver<'a>(&'a Path);

impl MountedOver<'_> {
    fn mount(dir: &Path) -> Option<MountedOver<'_>> {
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| MountedOver(dir))
    }
}

impl Drop for MountedOver<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).output();
    }
}

#[test]
fn a_workspace_whose_changes_silently_stop_arriving_goes_unverified_and_fires_the_hook() {
    let mut env = TestEnv::with_config("ProofIntervalSecs=1\n");
    let log = env.root.join("hook.log");
    let hook = env.root.join("hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nprintf '%s|%s|%s\\n' \"$WSYNC_WORKSPACE\" \"$WSYNC_REMOTE\" \"$WSYNC_STATE\" >> '{}'\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    writeln!(
        std::fs::File::options()
            .append(true)
            .open(&env.config_path)
            .unwrap(),
        "HookCommand={}",
        hook.display()
    )
    .unwrap();
    env.start_daemon();
    let src = env.mkdir("src");
    std::fs::write(src.join("f"), "x").unwrap();
    let mirror = env.root.join("mirror");
    env.wsync_ok(&["add", s(&src)]);
    env.wsync_ok(&["attach", "src", s(&mirror)]);
    poll_until("the initial sync", WAIT, INTERVAL, || {
        (remote(&env, "src", "mirror")?.state == RemoteState::InSync).then_some(())
    })
    .unwrap();
    // A filesystem mounted over the workspace root (a disk mounted over a project, an
    // automounter): writes under the path go to the new filesystem, the watches stay on the
    // old directory, and no event — so no change — arrives any more. Nothing fails; only the
    // missing proof shows it.
    let Some(mounted) = MountedOver::mount(&src) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let unverified = poll_until("the remote to go unverified", WAIT, INTERVAL, || {
        (remote(&env, "src", "mirror")?.state == RemoteState::Unverified).then_some(())
    });
    if unverified.is_err() {
        env.fail(&format!(
            "changes stopped arriving and the remote never went unverified: {:?}",
            remote(&env, "src", "mirror")
        ));
    }
    poll_until("the hook to report it", WAIT, INTERVAL, || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("src|mirror|unverified"))
    })
    .unwrap();
    // The mount goes away: the next probe arrives and proves the remote again.
    drop(mounted);
    poll_until("the remote to be proved again", WAIT, INTERVAL, || {
        (remote(&env, "src", "mirror")?.state == RemoteState::InSync).then_some(())
    })
    .unwrap();
}

#[test]
fn a_users_own_proof_like_files_keep_their_excludes_and_protection() {
    let mut env = TestEnv::with_config("ProofIntervalSecs=1\n");
    env.start_daemon();
    let src = env.mkdir("src");
    // Names that begin like a proof file but are the user's: excluded, so never sent, and a
    // remote copy is protected from deletion like any other excluded path.
    std::fs::write(
        src.join(".gitignore"),
        "/.wsync-proof-notes\n/.wsync-proof-keep\n",
    )
    .unwrap();
    std::fs::write(src.join(".wsync-proof-notes"), "private").unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    let mirror = env.root.join("mirror");
    env.wsync_ok(&["add", s(&src)]);
    env.wsync_ok(&["attach", "src", s(&mirror)]);
    let first = poll_until("a first proof", WAIT, INTERVAL, || {
        remote(&env, "src", "mirror").and_then(|r| r.verified_unix_ms)
    })
    .unwrap();
    std::fs::write(mirror.join(".wsync-proof-keep"), "remote only").unwrap();
    // A change to the excluded file, and a full sync (a restart), each had their chance.
    std::fs::write(src.join(".wsync-proof-notes"), "private, edited").unwrap();
    env.wsync_ok(&["restart", "src"]);
    poll_until("a proof after the restart", WAIT, INTERVAL, || {
        remote(&env, "src", "mirror")
            .and_then(|r| r.verified_unix_ms)
            .filter(|&t| t >= first + 2500)
    })
    .unwrap();
    assert!(
        !mirror.join(".wsync-proof-notes").exists(),
        "an excluded user file was sent because its name begins like a proof file"
    );
    assert!(
        mirror.join(".wsync-proof-keep").exists(),
        "a protected remote file was deleted because its name begins like a proof file"
    );
}

/// The pid in a proof file's name (`.wsync-proof-<pid>-<n>`).
fn proof_pid(name: &str) -> Option<i32> {
    name.strip_prefix(wsync_core::rsync::PROOF_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_proof_file_left_by_a_killed_monitor_is_removed_by_the_next_one() {
    let mut env = TestEnv::with_config("ProofIntervalSecs=1\n");
    env.start_daemon();
    let src = env.mkdir("src");
    std::fs::write(src.join("f"), "x").unwrap();
    let (mirror, stuck) = (env.root.join("mirror"), env.root.join("stuck"));
    env.wsync_ok(&["add", s(&src)]);
    env.wsync_ok(&["attach", "src", s(&mirror), "--name", "mirror"]);
    env.wsync_ok(&["attach", "src", s(&stuck), "--name", "stuck"]);
    // A remote that never takes the proof: each probe file stays out for a whole interval.
    std::fs::remove_file(stuck.join(wsync_core::target::MARKER_FILE)).unwrap();
    // The monitor dies (SIGKILL: no clean exit) while its probe file is in the workspace.
    let left = poll_until(
        "a monitor killed with its probe file out",
        WAIT,
        INTERVAL,
        || {
            let name = proof_files(&src).into_iter().next()?;
            let pid = proof_pid(&name)?;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
                .ok()?;
            src.join(&name).exists().then_some(name)
        },
    )
    .unwrap();
    let gone = poll_until("the next monitor to remove it", WAIT, INTERVAL, || {
        (!src.join(&left).exists() && !mirror.join(&left).exists()).then_some(())
    });
    if gone.is_err() {
        env.fail(&format!(
            "{left} was left in the workspace (and synced on as a user file) after its monitor died"
        ));
    }
}
