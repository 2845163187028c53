//! Protect rules from the same matcher (issue 11, items 2 and 3): what rsync's `--delete`
//! keeps on a remote is decided by every ignore file at any depth, with `!` re-includes — a
//! remote-only path a nested `.gitignore` excludes survives attach and full syncs, and the
//! deletion of a re-included file reaches the remote (local and SSH targets); `wsync verify`
//! reports a re-included file left on the remote.

use std::path::Path;
use std::time::Duration;

use wsync_core::monitor_proto::MonitorCommand;
use wsync_tests::env::TestEnv;
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::poll::{poll_until, INTERVAL};
use wsync_tests::sshd::Sshd;
use wsync_tests::tree::scratch_dir;

const FLUSH: Duration = Duration::from_secs(30);
/// The CLI's "drift found" exit code (crates/wsync-cli/src/exit_codes.rs), repeated on purpose.
const DRIFT: i32 = 8;

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 test path")
}

/// A monitor on `src` with a local remote `local` and an SSH remote `remote`.
fn start_local_and_ssh(
    tmp: &Path,
    sshd: &Sshd,
    name: &str,
    src: &Path,
    local: &Path,
    remote: &Path,
) -> MonitorProc {
    let mut ws = workspace(
        name,
        src,
        vec![local_remote("l", local), sshd.remote("r", remote)],
    );
    ws.respect_gitignore = true;
    MonitorProc::start(tmp, ws)
}

#[test]
fn a_remote_only_path_under_a_nested_gitignore_survives_attach_and_full_syncs() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let src = tmp.path().join("src");
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    write(&src.join("app/.gitignore"), ".env\n");
    write(&src.join("app/main.rs"), "fn main() {}");
    let remote_only = ["app/.env", "app/config/.env"];
    for dst in [&local, &remote] {
        for p in remote_only {
            write(&dst.join(p), "SECRET=remote");
        }
        write(&dst.join("app/stale.rs"), "no rule matches it");
        write(&dst.join(".env"), "outside app/: not excluded");
    }
    let mut m = start_local_and_ssh(tmp.path(), &sshd, "nested", &src, &local, &remote);
    m.flush_ok(FLUSH);
    let check = |m: &MonitorProc, when: &str| {
        for dst in [&local, &remote] {
            for p in remote_only {
                if !dst.join(p).exists() {
                    m.fail(&format!(
                        "{when}: remote-only excluded {p} was deleted on {dst:?}"
                    ));
                }
            }
            for p in ["app/stale.rs", ".env"] {
                if dst.join(p).exists() {
                    m.fail(&format!(
                        "{when}: {p} should have been removed from {dst:?}"
                    ));
                }
            }
            assert!(dst.join("app/main.rs").exists(), "{when}");
        }
    };
    check(&m, "first sync");
    // Every full sync, and incremental batches with a listed directory (recursive --delete).
    for dst in [&local, &remote] {
        write(&dst.join("app/stale.rs"), "again");
    }
    m.send(&MonitorCommand::Resync);
    m.flush_ok(FLUSH);
    check(&m, "resync");
    write(&src.join("app/lib/mod.rs"), "");
    std::fs::rename(src.join("app"), src.join("app2")).unwrap();
    std::fs::rename(src.join("app2"), src.join("app")).unwrap();
    m.flush_ok(FLUSH);
    check(&m, "directory re-sent");
}

#[test]
fn the_deletion_of_a_re_included_file_reaches_the_remote() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let src = tmp.path().join("src");
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    write(&src.join(".wsyncignore"), "*.log\n!keep.log\n");
    write(&src.join("keep.log"), "wanted");
    write(&src.join("sub/keep.log"), "wanted");
    write(&src.join("noise.log"), "excluded");
    for dst in [&local, &remote] {
        write(&dst.join("remote-only.log"), "built on the remote");
    }
    let mut m = start_local_and_ssh(tmp.path(), &sshd, "reinc", &src, &local, &remote);
    m.flush_ok(FLUSH);
    for dst in [&local, &remote] {
        assert!(dst.join("keep.log").exists() && dst.join("sub/keep.log").exists());
        assert!(!dst.join("noise.log").exists());
    }
    std::fs::remove_file(src.join("keep.log")).unwrap();
    std::fs::remove_file(src.join("sub/keep.log")).unwrap();
    m.flush_ok(FLUSH);
    for dst in [&local, &remote] {
        for p in ["keep.log", "sub/keep.log"] {
            if dst.join(p).exists() {
                m.fail(&format!(
                    "re-included {p} deleted locally is still on {dst:?}"
                ));
            }
        }
        if !dst.join("remote-only.log").exists() {
            m.fail(&format!("excluded remote-only.log was deleted on {dst:?}"));
        }
    }
}

#[test]
fn attach_keeps_nested_exclusions_and_verify_reports_a_re_included_leftover() {
    let mut env = TestEnv::new();
    env.start_daemon();
    let src = env.mkdir("pv");
    write(&src.join(".wsyncignore"), "*.log\n!keep.log\n");
    write(&src.join("app/.gitignore"), ".env\n");
    write(&src.join("app/main.rs"), "");
    let mirror = env.root.join("pv-mirror");
    env.wsync_ok(&["add", s(&src)]);
    env.wsync_ok(&["attach", "pv", s(&mirror)]);
    assert!(mirror.join("app/main.rs").exists());
    // Remote-only: excluded by the nested file (kept, not drift) and re-included (drift).
    write(&mirror.join("app/.env"), "SECRET=remote");
    write(&mirror.join("keep.log"), "left behind");
    let out = env.wsync(&["verify", "pv"]);
    if out.code() != Some(DRIFT) || !out.stdout.contains("keep.log") {
        env.fail(&format!(
            "verify should report keep.log: {}\n{}\n{}",
            out.status, out.stdout, out.stderr
        ));
    }
    assert!(!out.stdout.contains(".env"), "{}", out.stdout);
    // A full sync (the monitor's restart) removes the leftover and keeps the excluded file.
    env.wsync_ok(&["restart", "pv"]);
    poll_until("the full sync deleting keep.log", FLUSH, INTERVAL, || {
        !mirror.join("keep.log").exists()
    })
    .unwrap_or_else(|e| env.fail(&e.to_string()));
    assert!(mirror.join("app/.env").exists(), "app/.env was deleted");
    let out = env.wsync_ok(&["verify", "pv"]);
    assert!(out.contains("): in sync"), "{out}");
}
