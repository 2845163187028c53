//! The SSH agent end to end against the private sshd (the remote user's `XDG_CACHE_HOME` is
//! in the test's temp dir, see `Sshd::remote_cache`): installed on first use and reused by the
//! next monitor; an incompatible agent replaced; an upload directory that cannot be made
//! falls back to rsync and status says why, as does one on a `noexec` mount (root); renames go
//! as agent ops; the agent killed with SIGKILL mid-run is started
//! again and the remote converges; `transport = rsync` forces the old path. The engine's SSH
//! scenarios (`monitor_ssh`, `engine_*` ssh variants) run on the agent too: it is the default.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use wsync_core::monitor_proto::{MonitorCommand, MonitorStatus, TransportStatus};
use wsync_core::registry::{Remote, Transport};
use wsync_tests::env::TestEnv;
use wsync_tests::faults::{add_workspace, attach_ssh, flush_ok, TmpfsMount};
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::poll::poll_until;
use wsync_tests::sshd::Sshd;
use wsync_tests::tree::{churn, diff_trees, scratch_dir, wait_until_equal};

const FLUSH: Duration = Duration::from_secs(30);

fn ssh_remote(sshd: &Sshd, path: &Path, transport: Transport) -> Remote {
    Remote {
        transport,
        ..sshd.remote("r", path)
    }
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn installed(sshd: &Sshd) -> PathBuf {
    sshd.remote_cache()
        .join("wsync")
        .join(wsync_core::VERSION)
        .join("wsync-monitor")
}

fn transport(status: &MonitorStatus, remote: &str) -> Option<TransportStatus> {
    status
        .remotes
        .iter()
        .find(|r| r.name == remote)
        .and_then(|r| r.transport.clone())
}

fn on_agent(status: &MonitorStatus) -> bool {
    matches!(transport(status, "r"), Some(TransportStatus::Agent { .. }))
}

/// The pids of agents running from `binary`.
fn agents(binary: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        if args.next() == Some(binary.as_os_str().as_encoded_bytes())
            && args.next() == Some(&b"agent"[..])
        {
            pids.push(pid);
        }
    }
    pids
}

/// A change written and flushed, then checked on the remote.
fn round(m: &mut MonitorProc, src: &Path, dst: &Path, name: &str) {
    write(&src.join(name), name);
    m.flush_ok(FLUSH);
    let diffs = diff_trees(src, dst);
    if !diffs.is_empty() {
        m.fail(&format!("{diffs:?}"));
    }
}

/// A monitor of `src` with one SSH remote at `dst` (transport auto), its initial sync done and
/// its agent started by a first small change (the agent starts with the first batch).
fn on_its_agent(tmp: &Path, sshd: &Sshd, name: &str, src: &Path, dst: &Path) -> MonitorProc {
    let ws = workspace(name, src, vec![ssh_remote(sshd, dst, Transport::Auto)]);
    let mut m = MonitorProc::start(tmp, ws);
    m.flush_ok(FLUSH);
    round(&mut m, src, dst, "first");
    m.wait_status("the remote on its agent", FLUSH, on_agent);
    m
}

#[test]
fn installed_on_first_use_then_reused_by_the_next_monitor() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src.join("seed"), "s");
    let ws = workspace(
        "agent",
        &src,
        vec![ssh_remote(&sshd, &dst, Transport::Auto)],
    );
    let mut m = MonitorProc::start(tmp.path(), ws.clone());
    m.flush_ok(FLUSH);
    round(&mut m, &src, &dst, "first");
    write(&src.join("d/e/f"), "deep");
    std::fs::rename(src.join("first"), src.join("moved")).unwrap();
    std::fs::remove_file(src.join("seed")).unwrap();
    m.flush_ok(FLUSH);
    assert!(
        diff_trees(&src, &dst).is_empty(),
        "{:?}",
        diff_trees(&src, &dst)
    );
    let status = m.wait_status("the remote on its agent", FLUSH, on_agent);
    let Some(TransportStatus::Agent { version, protocol }) = transport(&status, "r") else {
        unreachable!()
    };
    assert_eq!(version, wsync_core::VERSION);
    assert_eq!(protocol, wsync_core::agent::PROTOCOL_MAX);
    let binary = installed(&sshd);
    let meta = std::fs::metadata(&binary).unwrap_or_else(|e| m.fail(&format!("{e}")));
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    let leftovers: Vec<_> = std::fs::read_dir(binary.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "wsync-monitor")
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    assert!(m.shutdown(Duration::from_secs(10)).success());
    drop(m);

    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    round(&mut m, &src, &dst, "second");
    m.wait_status("the remote on its agent again", FLUSH, on_agent);
    let again = std::fs::metadata(&binary).unwrap();
    assert_eq!(
        (again.ino(), again.mtime(), again.mtime_nsec()),
        (meta.ino(), meta.mtime(), meta.mtime_nsec()),
        "the installed agent must be reused, not uploaded again"
    );
}

#[test]
fn an_incompatible_agent_is_replaced() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let binary = installed(&sshd);
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    // An agent of a future wsync that speaks only protocol 99.
    std::fs::write(
        &binary,
        "#!/bin/sh\necho '{\"agent\":\"wsync-agent\",\"version\":\"99.0.0\",\"protocol_min\":99,\"protocol_max\":99,\"pid\":1}'\ncat >/dev/null\n",
    )
    .unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ws = workspace("skew", &src, vec![ssh_remote(&sshd, &dst, Transport::Auto)]);
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    round(&mut m, &src, &dst, "a");
    let status = m.wait_status("the remote on the replaced agent", FLUSH, on_agent);
    assert!(
        matches!(transport(&status, "r"), Some(TransportStatus::Agent { version, .. }) if version == wsync_core::VERSION)
    );
}

#[test]
fn an_upload_directory_that_cannot_be_made_falls_back_to_rsync_and_says_why() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    // `~/.cache/wsync` is a file: no directory can be made below it, root or not.
    std::fs::create_dir_all(sshd.remote_cache()).unwrap();
    std::fs::write(sshd.remote_cache().join("wsync"), "not a directory").unwrap();
    let ws = workspace(
        "noagent",
        &src,
        vec![ssh_remote(&sshd, &dst, Transport::Auto)],
    );
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    round(&mut m, &src, &dst, "a");
    let status = m.wait_status("the remote on rsync", FLUSH, |s| {
        matches!(transport(s, "r"), Some(TransportStatus::Rsync { why }) if why.contains("cannot create"))
    });
    // Sync goes on by rsync, and the agent is not tried again on every batch.
    round(&mut m, &src, &dst, "b");
    round(&mut m, &src, &dst, "c");
    assert_eq!(
        transport(&m.status().unwrap(), "r"),
        transport(&status, "r")
    );
    let attempts = m.logs().matches("installing the agent").count();
    assert_eq!(attempts, 1, "{}", m.logs());
}

#[test]
fn a_killed_agent_is_started_again_and_the_remote_converges() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    churn::seed(&src, 3);
    let mut m = on_its_agent(tmp.path(), &sshd, "killed", &src, &dst);
    let binary = installed(&sshd);
    let before = agents(&binary);
    assert_eq!(before.len(), 1, "one agent session per remote: {before:?}");
    // Killed while a churn is under way: batches in flight lose their answers.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        for pid in before {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });
    churn::run(&src, 300, 0x5eed_0014);
    killer.join().unwrap();
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, Duration::from_secs(10)).unwrap_or_else(|e| m.fail(&e));
    // The batch that finds the session lost goes by rsync; the next one starts the agent
    // again (the kill may land between batches, so that may take one more change).
    let mut n = 0;
    let back = poll_until(
        "the remote back on an agent",
        FLUSH,
        Duration::from_millis(500),
        || {
            n += 1;
            round(&mut m, &src, &dst, &format!("after{n}"));
            m.status().filter(on_agent)
        },
    );
    if back.is_err() {
        m.fail("the remote did not go back on an agent after changes");
    }
    let now = agents(&binary);
    assert_eq!(now.len(), 1, "{now:?}\n{}", m.logs());
    let started = m.logs().matches("agent session started").count();
    assert!(
        started >= 2,
        "the agent was not started again:\n{}",
        m.logs()
    );
}

#[test]
fn transport_rsync_forces_the_old_path_and_local_targets_go_in_process() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let (src, dst, local) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("local"),
    );
    std::fs::create_dir_all(&src).unwrap();
    let ws = workspace(
        "forced",
        &src,
        vec![
            ssh_remote(&sshd, &dst, Transport::Rsync),
            local_remote("l", &local),
        ],
    );
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    round(&mut m, &src, &dst, "a");
    let status = m.status().unwrap();
    assert!(
        matches!(transport(&status, "r"), Some(TransportStatus::Rsync { why }) if why.contains("setting")),
        "{status:?}"
    );
    assert_eq!(transport(&status, "l"), Some(TransportStatus::InProcess));
    assert!(
        !sshd.remote_cache().join("wsync").exists(),
        "nothing is installed on a remote forced to rsync"
    );
}

/// A rename over SSH goes as one agent op (the log says so, the script's `mv` is not run): a
/// directory of 5,000 files keeps its inode on the remote, nothing is re-sent; a rename whose
/// target no longer matches (a directory there already) is not applied and falls back to rsync
/// of both ends, which converges.
#[test]
fn renames_go_by_the_agent_and_one_that_no_longer_matches_falls_back() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    for i in 0..5000 {
        write(&src.join(format!("big/sub{}/f{i}", i % 10)), "k");
    }
    write(&src.join("small/x"), "x");
    let mut m = on_its_agent(tmp.path(), &sshd, "agentrenames", &src, &dst);
    let ino = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.ino()).ok();
    let before = (ino(&dst.join("big")), ino(&dst.join("big/sub3/f3")));
    assert!(before.0.is_some() && before.1.is_some());
    std::fs::rename(src.join("big"), src.join("big renamed")).unwrap();
    m.flush_ok(FLUSH);
    let diffs = diff_trees(&src, &dst);
    if !diffs.is_empty() {
        m.fail(&format!("after the rename: {diffs:?}"));
    }
    let after = (
        ino(&dst.join("big renamed")),
        ino(&dst.join("big renamed/sub3/f3")),
    );
    if after != before {
        m.fail(&format!(
            "the directory was re-sent, not renamed: inodes {before:?} -> {after:?}"
        ));
    }
    if !m.logs().contains("renames replayed by the agent") {
        m.fail("the rename did not go by the agent");
    }
    // The remote has a directory where the rename goes: not applied, rsync converges.
    write(&dst.join("taken/stray"), "remote only");
    let stray_dir = ino(&dst.join("taken"));
    std::fs::rename(src.join("small"), src.join("taken")).unwrap();
    m.flush_ok(FLUSH);
    let diffs = diff_trees(&src, &dst);
    if !diffs.is_empty() {
        m.fail(&format!("after the mismatched rename: {diffs:?}"));
    }
    assert_eq!(ino(&dst.join("taken")), stray_dir, "moved into, not over");
    assert!(!dst.join("taken/small").exists() && !dst.join("small").exists());
    let logs = m.logs();
    if !logs.contains("renames fall back to rsync") || !logs.contains("the remote does not match") {
        m.fail("the mismatched rename did not fall back to rsync");
    }
}

/// A rename and a change elsewhere in one batch (made while paused) go to the agent in one
/// exchange, one round trip instead of two (the log says so), the directory renamed, not
/// re-sent; in such a batch a rename that no longer matches still falls back to rsync of both
/// ends, and the change elsewhere lands too.
#[test]
fn a_rename_and_an_edit_in_one_batch_go_in_one_exchange() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    for i in 0..100 {
        write(&src.join(format!("big/f{i}")), "k");
    }
    write(&src.join("small/x"), "x");
    let mut m = on_its_agent(tmp.path(), &sshd, "agentcombined", &src, &dst);
    let ino = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.ino()).ok();
    let before = ino(&dst.join("big/f3"));
    assert!(before.is_some());
    let in_one_batch = |m: &mut MonitorProc, change: &dyn Fn()| {
        m.send(&MonitorCommand::Pause);
        m.wait_status("paused", FLUSH, |s| s.paused);
        change();
        m.send(&MonitorCommand::Resume);
        m.flush_ok(FLUSH);
    };
    in_one_batch(&mut m, &|| {
        std::fs::rename(src.join("big"), src.join("moved")).unwrap();
        write(&src.join("edited.txt"), "edited");
    });
    let diffs = diff_trees(&src, &dst);
    if !diffs.is_empty() {
        m.fail(&format!("after the rename and the edit: {diffs:?}"));
    }
    if ino(&dst.join("moved/f3")) != before {
        m.fail("the directory was re-sent, not renamed");
    }
    if !m
        .logs()
        .contains("renames and changes in one exchange with the agent")
    {
        m.fail("the rename and the edit did not go in one exchange");
    }
    // The remote has a directory where the rename goes: not applied, rsync converges.
    write(&dst.join("taken/stray"), "remote only");
    in_one_batch(&mut m, &|| {
        std::fs::rename(src.join("small"), src.join("taken")).unwrap();
        write(&src.join("edited2.txt"), "edited again");
    });
    let diffs = diff_trees(&src, &dst);
    if !diffs.is_empty() {
        m.fail(&format!(
            "after the mismatched rename and the edit: {diffs:?}"
        ));
    }
    let logs = m.logs();
    if !logs.contains("renames fall back to rsync") || !logs.contains("the remote does not match") {
        m.fail("the mismatched rename did not fall back to rsync");
    }
}

/// The agent's upload directory (`~/.cache/wsync` of the remote user) on a `noexec` mount: the
/// upload cannot run, so the remote goes by rsync, `wsync status`'s TRANSPORT column says why
/// (`noexec`), and sync converges. Needs root for the mount (a tmpfs inside the test's temp
/// dir, unmounted by its guard).
#[test]
fn an_upload_directory_on_a_noexec_mount_falls_back_to_rsync_and_status_says_why() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: mounting a noexec tmpfs needs root");
        return;
    }
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    // Big enough for the debug binary: the upload itself must succeed, only running it fails.
    let _mount = TmpfsMount::mount_with(&sshd.remote_cache().join("wsync"), "size=1g,noexec")
        .unwrap_or_else(|e| panic!("mounting the noexec tmpfs: {e}"));
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src.join("seed"), "s");
    let mut env = TestEnv::new();
    env.start_daemon();
    add_workspace(&env, &src, "w");
    attach_ssh(&env, "w", &sshd, &dst, "r");
    write(&src.join("a"), "a");
    flush_ok(&env, "w", 60);
    let table = poll_until(
        "status's TRANSPORT column saying noexec",
        FLUSH,
        Duration::from_millis(100),
        || {
            let table = env.wsync_ok(&["status"]);
            table
                .contains("rsync: the agent could not be installed: noexec")
                .then_some(table)
        },
    )
    .unwrap_or_else(|e| env.fail(&format!("{e}: {}", env.wsync_ok(&["status"]))));
    assert!(table.contains("TRANSPORT"), "{table}");
    // Sync goes on by rsync: changes, a rename, a deletion.
    write(&src.join("d/b"), "b");
    std::fs::rename(src.join("a"), src.join("a2")).unwrap();
    std::fs::remove_file(src.join("seed")).unwrap();
    flush_ok(&env, "w", 60);
    wait_until_equal(&src, &dst, Duration::from_secs(10)).unwrap_or_else(|e| env.fail(&e));
    let leftovers: Vec<_> = std::fs::read_dir(sshd.remote_cache().join("wsync"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "upload left behind: {leftovers:?}");
}

/// The peak resident memory of process `pid` (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .expect("a VmHWM line")
}

/// A batch of many small files goes to the agent a few frames at a time: the monitor reads
/// the next frame's files while the one before is written, so its memory does not grow with
/// the batch (it once held every file's content until the whole batch was sent: 1.83 GB for
/// 2,000 files of 900 KiB).
#[test]
fn a_big_batch_goes_to_the_agent_in_bounded_memory() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src.join("seed"), "s");
    let mut m = on_its_agent(tmp.path(), &sshd, "bounded", &src, &dst);
    // 300 files of 900 KiB (each under the 1 MiB put limit), made beside the workspace and
    // moved in at once: one batch, one new directory, every file a put.
    let staged = tmp.path().join("staged");
    std::fs::create_dir_all(&staged).unwrap();
    for i in 0..300u32 {
        let mut content = vec![(i % 251) as u8; 900 << 10];
        content[..4].copy_from_slice(&i.to_le_bytes());
        std::fs::write(staged.join(format!("f{i:03}")), content).unwrap();
    }
    let before = peak_rss_mib(m.pid());
    std::fs::rename(&staged, src.join("bulk")).unwrap();
    m.flush_ok(Duration::from_secs(120));
    let diffs = diff_trees(&src, &dst);
    if !diffs.is_empty() {
        m.fail(&format!("the batch did not arrive whole: {diffs:?}"));
    }
    if !m.status().is_some_and(|s| on_agent(&s)) {
        m.fail("the batch went by rsync: this test needs the agent");
    }
    let peak = peak_rss_mib(m.pid());
    // The batch is 264 MiB; a few 4 MiB frames in flight cost a few dozen MiB at most.
    if peak > before.max(40) + 100 {
        m.fail(&format!(
            "the monitor's peak RSS went from {before} MiB to {peak} MiB for a 264 MiB batch"
        ));
    }
}
