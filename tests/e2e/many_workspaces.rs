//! 300 workspaces on one daemon (issue 13, "Many workspaces"). Each monitor takes an inotify
//! instance, and a user may have `fs.inotify.max_user_instances` of them (128 by default): the
//! monitors past the limit must poll (saying so in status, naming the limit), never exit and
//! crash-loop; every workspace converges; and the daemon's threads stay flat and its fds grow
//! by a few pipes per monitor, never a thread per monitor. The daemon runs as a throwaway user
//! (the limit is per uid: run as root, 300 monitors would use up the instances every other
//! test of the suite shares), removed afterwards; not root: skipped, saying why.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wsync_core::monitor_proto::RemoteState;
use wsync_core::protocol::{MonitorProcessState, WorkspaceStatus};
use wsync_core::registry::{Registry, Workspace};
use wsync_tests::env::TestEnv;
use wsync_tests::monitor::{local_remote, mark_target, workspace};
use wsync_tests::poll::poll_until;
use wsync_tests::tree::wait_until_equal;
use wsync_tests::users::TestUser;

const MANY: usize = 300;
const FEW: usize = 10;
/// Workspaces that get one change each after all converged.
const SAMPLED: usize = 20;
const SETTLE: Duration = Duration::from_secs(40);

/// Workspace `i`: a small tree and a local remote, under `base`.
fn make_workspace(base: &Path, i: usize) -> Workspace {
    let name = format!("ws{i:03}");
    let src = base.join(&name).join("src");
    let dst = base.join(&name).join("dst");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), format!("workspace {i}\n")).unwrap();
    std::fs::write(src.join("sub/b.txt"), "b\n").unwrap();
    let remote = local_remote("mirror", &dst);
    let ws = workspace(&name, &src, vec![remote.clone()]);
    mark_target(&ws, &remote);
    ws
}

/// Every workspace's status, through the CLI (the daemon answers only its own user).
fn all_status(env: &TestEnv) -> Vec<WorkspaceStatus> {
    let out = env.wsync_ok(&["status", "--json"]);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| env.fail(&format!("status --json does not parse: {e}\n{out}")))
}

fn in_sync(ws: &WorkspaceStatus) -> bool {
    ws.monitor.state == MonitorProcessState::Running
        && ws.report.as_ref().is_some_and(|r| {
            !r.remotes.is_empty() && r.remotes.iter().all(|x| x.state == RemoteState::InSync)
        })
}

/// Waits until all `count` workspaces are in sync; fails at once on a restart or a failed
/// monitor (a crash loop), naming it.
fn wait_all_in_sync(env: &TestEnv, count: usize) -> Vec<WorkspaceStatus> {
    let mut last = Vec::new();
    let settled = poll_until(
        "every workspace in sync",
        SETTLE,
        Duration::from_millis(500),
        || {
            let status = all_status(env);
            if let Some(ws) = status
                .iter()
                .find(|w| w.monitor.restarts > 0 || w.monitor.state == MonitorProcessState::Failed)
            {
                env.fail(&format!(
                    "monitor of {} restarted or failed (a crash loop): {:#?}",
                    ws.workspace.name, ws.monitor
                ));
            }
            let done = status.len() == count && status.iter().all(in_sync);
            last = status;
            done.then_some(())
        },
    );
    if let Err(e) = settled {
        let behind: Vec<String> = last
            .iter()
            .filter(|w| !in_sync(w))
            .take(5)
            .map(|w| format!("{}: {:?} {:?}", w.workspace.name, w.monitor, w.report))
            .collect();
        env.fail(&format!(
            "{e}: {} of {count} in sync; for example:\n{}",
            last.iter().filter(|w| in_sync(w)).count(),
            behind.join("\n")
        ));
    }
    last
}

/// The daemon's OS threads and open fds, from /proc.
fn threads_and_fds(pid: u32) -> (usize, usize) {
    let count = |dir: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{dir}"))
            .unwrap_or_else(|e| panic!("reading /proc/{pid}/{dir}: {e}"))
            .count()
    };
    (count("task"), count("fd"))
}

/// Starts the daemon as the env's user on a registry of `workspaces`, waits until all are in
/// sync, and returns the statuses and the daemon's threads and fds then.
fn run_with(env: &mut TestEnv, workspaces: &[Workspace]) -> (Vec<WorkspaceStatus>, (usize, usize)) {
    let registry = Registry {
        workspaces: workspaces.to_vec(),
        ..Registry::default()
    };
    registry.save(&env.registry).expect("writing the registry");
    env.give_to_user(&env.registry);
    let pid = env.start_daemon();
    let status = wait_all_in_sync(env, workspaces.len());
    (status, threads_and_fds(pid))
}

#[test]
fn three_hundred_workspaces_on_one_daemon() {
    let started = Instant::now();
    let Some(user) = TestUser::create("many_workspaces::three_hundred_workspaces_on_one_daemon")
    else {
        return;
    };
    let mut env = TestEnv::new();
    let base = env.mkdir("many");
    let workspaces: Vec<Workspace> = (0..MANY).map(|i| make_workspace(&base, i)).collect();
    env.run_as(user.uid, user.gid);

    // The baseline: a few monitors.
    let (_, (threads_few, fds_few)) = run_with(&mut env, &workspaces[..FEW]);
    env.stop_daemon();

    let (status, (threads_many, fds_many)) = run_with(&mut env, &workspaces);
    let polling: Vec<&WorkspaceStatus> = status
        .iter()
        .filter(|w| {
            w.report
                .as_ref()
                .and_then(|r| r.watch_error.as_deref())
                .is_some_and(|e| e.contains("fs.inotify.max_user_instances"))
        })
        .collect();
    let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(128);
    let watching = status
        .iter()
        .filter(|w| w.report.as_ref().is_some_and(|r| r.watches > 0))
        .count();
    eprintln!(
        "{MANY} workspaces: {watching} watching, {} polling (max_user_instances {limit}); daemon threads {threads_few} → {threads_many}, fds {fds_few} → {fds_many}",
        polling.len()
    );
    // The user has `limit` instances: the rest poll, loudly; none went without either.
    if limit < MANY {
        assert!(
            polling.len() >= MANY - limit,
            "expected at least {} monitors polling, naming fs.inotify.max_user_instances; {} do",
            MANY - limit,
            polling.len()
        );
    }
    assert_eq!(
        watching + polling.len(),
        MANY,
        "each monitor watches or polls"
    );

    // Flat: a thread per monitor would add 290; a handful of threads of slack (the blocking
    // pool). Fds: each monitor costs the daemon its pipes (stdin, stdout, stderr), no more.
    let added = MANY - FEW;
    assert!(
        threads_many <= threads_few + 16,
        "the daemon's threads grew with the monitors: {threads_few} at {FEW} workspaces, {threads_many} at {MANY}"
    );
    assert!(
        fds_many <= fds_few + 4 * added,
        "the daemon's fds grew by more than 4 per monitor: {fds_few} at {FEW} workspaces, {fds_many} at {MANY}"
    );

    // One change in each of a sample, polling ones included, arrives.
    let step = MANY / SAMPLED;
    let sampled: Vec<PathBuf> = (0..SAMPLED)
        .map(|k| {
            let src = workspaces[k * step].path.clone();
            let file = src.join("sub/changed.txt");
            std::fs::write(&file, format!("changed {k}\n")).unwrap();
            env.give_to_user(&file);
            src
        })
        .collect();
    for src in &sampled {
        let dst = src.parent().unwrap().join("dst");
        wait_until_equal(src, &dst, Duration::from_secs(20))
            .unwrap_or_else(|e| env.fail(&format!("{}: {e}", src.display())));
    }
    wait_all_in_sync(&env, MANY);
    eprintln!(
        "many_workspaces: {MANY} workspaces took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(env);
    drop(user);
}
