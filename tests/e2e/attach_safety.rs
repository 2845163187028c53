//! What attach, add and the daemon's start refuse to mirror into (issue 12, items 2, 6, 7 and
//! 10): a local path that another user redirected with a planted symlink, an SSH target that
//! resolves to the remote's root, home or a parent of it or is a symlink, a hand-edited
//! registry entry that skips those rules; and `~/x` on an SSH remote meaning the remote home.
//! The daemon runs as root with a second user created for the test (the attacker, or the
//! remote's user); those tests skip when not root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wsync_core::protocol::{MonitorProcessState, Request, Response, WorkspaceStatus};
use wsync_core::target::{read_local, write_local, Marker, MARKER_FILE};
use wsync_tests::env::{CliOutput, TestEnv};
use wsync_tests::other_user::OtherUser;
use wsync_tests::sshd::Sshd;
use wsync_tests::tree::{diff_trees, wait_until_equal};

const FLUSH: Duration = Duration::from_secs(30);
/// Refusals are `invalid` (exit 5).
const INVALID: i32 = 5;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn status(env: &TestEnv, workspace: &str) -> WorkspaceStatus {
    match env.request(&Request::Status {
        workspace: Some(workspace.into()),
    }) {
        Response::Status { mut workspaces } if workspaces.len() == 1 => workspaces.remove(0),
        other => env.fail(&format!("status: {other:?}")),
    }
}

fn assert_refused(env: &TestEnv, out: &CliOutput, needles: &[&str]) {
    if out.code() != Some(INVALID) {
        env.fail(&format!(
            "expected a refusal (exit {INVALID}), got {:?}:\n{}{}",
            out.code(),
            out.stdout,
            out.stderr
        ));
    }
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "no {needle:?} in:\n{}",
            out.stderr
        );
    }
}

/// A victim directory with files another user must not get deleted.
fn victim(dir: &Path) {
    for i in 0..3 {
        write(&dir.join(format!("secret{i}")), "root only");
    }
    chmod(dir, 0o700);
}

fn assert_untouched(dir: &Path) {
    for i in 0..3 {
        assert_eq!(
            std::fs::read_to_string(dir.join(format!("secret{i}"))).unwrap(),
            "root only",
            "{} lost its files",
            dir.display()
        );
    }
    assert!(
        !dir.join(MARKER_FILE).exists(),
        "{} was marked",
        dir.display()
    );
}

/// Item 2: `ln -s /var/lib/private-data /tmp/backup` by another user, then root attaches
/// `/tmp/backup` (with `--overwrite`, believing it is an old mirror): refused, naming the link
/// or directory at fault and the resolved path to give instead; nothing is written there. The
/// same link made by root, in root's directory, is followed as before. `add` gets the rule too.
#[test]
fn a_path_another_user_redirected_is_refused_by_attach_and_add() {
    let Some(attacker) = OtherUser::create("attach_safety::planted_symlink") else {
        return;
    };
    let mut env = TestEnv::new();
    env.start_daemon();
    let src = env.mkdir("src");
    write(&src.join("a.txt"), "mine");
    env.wsync_ok(&["add", s(&src)]);
    let private = env.mkdir("private-data");
    victim(&private);

    // A shared directory without the sticky bit: anyone may replace its entries.
    let open = env.mkdir("open");
    chmod(&open, 0o777);
    std::os::unix::fs::symlink(&private, open.join("backup")).unwrap();
    attacker.chown(&open.join("backup"));
    // A directory the attacker owns, holding the attacker's link.
    let theirs = env.mkdir("theirs");
    attacker.chown(&theirs);
    std::os::unix::fs::symlink(&private, theirs.join("backup")).unwrap();
    attacker.chown(&theirs.join("backup"));
    // A sticky shared directory like /tmp: the attacker's own entry in it is theirs to swap.
    let sticky = env.mkdir("sticky");
    chmod(&sticky, 0o1777);
    std::os::unix::fs::symlink(&private, sticky.join("backup")).unwrap();
    attacker.chown(&sticky.join("backup"));

    let owned = format!("owned by uid {} ({})", attacker.uid, attacker.name);
    for (link, at_fault, why) in [
        (
            open.join("backup"),
            open.clone(),
            "other users may write (mode 0777",
        ),
        (theirs.join("backup"), theirs.clone(), owned.as_str()),
        (sticky.join("backup"), sticky.join("backup"), owned.as_str()),
    ] {
        let out = env.wsync(&["attach", "src", s(&link), "--overwrite"]);
        let through = format!("through {},", at_fault.display());
        let fix = format!(
            "if you trust {}, give that path directly",
            private.display()
        );
        assert_refused(&env, &out, &[&through, why, &fix]);
        assert_untouched(&private);
    }
    let listed = env.wsync_ok(&["list"]);
    assert!(!listed.contains("private-data"), "{listed}");

    // `add` of a workspace source through the attacker's link: refused the same way.
    let out = env.wsync(&["add", s(&open.join("backup")), "--name", "stolen"]);
    assert_refused(&env, &out, &["other users may write", "if you trust"]);

    // Root's own link in root's own directory is trusted: attached at the resolved path.
    let mirror = env.mkdir("mirror");
    let mine = env.root.join("mine");
    std::os::unix::fs::symlink(&mirror, &mine).unwrap();
    env.wsync_ok(&["attach", "src", s(&mine)]);
    wait_until_equal(&src, &mirror, FLUSH).unwrap_or_else(|e| env.fail(&e));
    let ws = status(&env, "src").workspace;
    assert_eq!(ws.remotes.len(), 1);
    assert!(format!("{:?}", ws.remotes[0].target).contains(s(&mirror)));
    assert_untouched(&private);
}

/// Item 7: a registry edited by hand (here: from before markers, so the daemon would adopt and
/// mark the targets) with a remote that is the home directory, and one reached through a link
/// to the home's parent. Neither is started — not even marked — and status says why with the
/// fix; `wsync restart` checks again and refuses again; the other workspace syncs.
#[test]
fn hand_edited_registry_entries_get_the_attach_rules_at_daemon_start() {
    let mut env = TestEnv::new();
    let bad = env.mkdir("bad");
    let bad2 = env.mkdir("bad2");
    let good = env.mkdir("good");
    for dir in [&bad, &bad2, &good] {
        write(&dir.join("a.txt"), "source");
    }
    write(&env.home.join("keep.txt"), "the home's own file");
    let up = env.root.join("up");
    std::os::unix::fs::symlink(&env.root, &up).unwrap();
    let mirror = env.mkdir("mirror");
    let marker: Marker =
        serde_json::from_str(r#"{"workspace_id":"00aa","source_path":"/x"}"#).unwrap();
    write_local(&mirror, &marker).unwrap();
    let registry = serde_json::json!({
        "version": 1,
        "workspaces": [
            {"name": "bad", "path": bad,
             "remotes": [{"name": "home", "target": {"kind": "local", "path": env.home}}]},
            {"name": "bad2", "path": bad2,
             "remotes": [{"name": "up", "target": {"kind": "local", "path": up}}]},
            {"name": "good", "id": "00aa", "path": good,
             "remotes": [{"name": "mirror", "target": {"kind": "local", "path": mirror}}]},
        ],
    });
    std::fs::write(&env.registry, registry.to_string()).unwrap();
    env.start_daemon();

    for (name, remote) in [("bad", "home"), ("bad2", "up")] {
        // Entries are checked after the socket is up (in check processes, several at once).
        let st = wsync_tests::poll::poll_until(
            &format!("{name} to be refused"),
            Duration::from_secs(30),
            wsync_tests::poll::INTERVAL,
            || {
                Some(status(&env, name))
                    .filter(|st| st.monitor.state != MonitorProcessState::Stopped)
            },
        )
        .unwrap_or_else(|e| env.fail(&e.to_string()));
        assert_eq!(st.monitor.state, MonitorProcessState::Failed, "{name}");
        assert_eq!(st.monitor.pid, None, "{name}");
        let why = st.monitor.last_exit.unwrap_or_default();
        for needle in [
            "not started",
            "is /, the home directory or a parent of it",
            &format!("wsync detach {name} {remote}"),
        ] {
            assert!(why.contains(needle), "{name}: no {needle:?} in {why:?}");
        }
    }
    let table = env.wsync_ok(&["status"]);
    assert!(table.contains("failed"), "{table}");
    env.wsync_ok(&["flush", "good", "--timeout", "30"]);
    assert!(diff_trees(&good, &mirror).is_empty());
    assert_eq!(
        std::fs::read_to_string(env.home.join("keep.txt")).unwrap(),
        "the home's own file"
    );
    assert!(read_local(&env.home).is_none(), "the home was marked");
    assert!(
        read_local(&env.root).is_none(),
        "the home's parent was marked"
    );

    let out = env.wsync(&["restart", "bad"]);
    assert_refused(&env, &out, &["not started", "wsync detach bad home"]);
    assert_eq!(
        status(&env, "bad").monitor.state,
        MonitorProcessState::Failed
    );
    // Once the bad remote is gone, restart starts it (nothing left to mirror: idle).
    env.wsync_ok(&["detach", "bad", "home"]);
    env.wsync_ok(&["restart", "bad"]);
    assert_eq!(status(&env, "bad").monitor.state, MonitorProcessState::Idle);
    assert!(env.home.join("keep.txt").exists());
}

/// A second user whose home the test sshd logs in to, a daemon as root, and a workspace `src`
/// holding `files`. `None` when not root. Bound in this order, the sshd (and its sessions)
/// stops before the user is removed.
fn ssh_setup(test: &str, files: &[&str]) -> Option<(OtherUser, TestEnv, Sshd, PathBuf)> {
    let user = OtherUser::create(test)?;
    let mut env = TestEnv::new();
    let sshd = Sshd::start(&env.root);
    user.authorize(&sshd);
    env.start_daemon();
    let src = env.mkdir("src");
    for file in files {
        write(&src.join(file), "mine");
    }
    env.wsync_ok(&["add", s(&src)]);
    Some((user, env, sshd, src))
}

fn run(env: &TestEnv, args: &[String]) -> CliOutput {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.wsync(&args)
}

/// Item 6: over SSH, the remote user's home written absolutely, its parent, and a symlink to
/// it are refused even with `--overwrite` (the first sync would delete the home, `.ssh`
/// included); so is a target that is itself a symlink. A dedicated directory is accepted.
#[test]
fn ssh_targets_resolving_to_the_home_or_a_link_are_refused() {
    let Some((user, env, sshd, src)) = ssh_setup("attach_safety::ssh_home", &["a.txt"]) else {
        return;
    };
    let keep = user.home.join("keep.txt");
    write(&keep, "the remote home's own file");
    user.chown(&keep);
    let data = user.home.join("data");
    write(&data.join("theirs.txt"), "not to be emptied");
    user.chown(&data);
    let to_home = user.home_parent().join("to-home");
    std::os::unix::fs::symlink(&user.home, &to_home).unwrap();
    let to_data = user.home_parent().join("to-data");
    std::os::unix::fs::symlink(&data, &to_data).unwrap();

    let at = |path: &Path| format!("ssh://{}@127.0.0.1{}", user.name, s(path));
    for path in [&user.home, &user.home_parent().to_path_buf(), &to_home] {
        let out = run(&env, &sshd.attach_args("src", &at(path), &["--overwrite"]));
        let home = format!("the remote user's home ({})", user.home.display());
        assert_refused(&env, &out, &["cannot be a remote", &home]);
    }
    let out = run(
        &env,
        &sshd.attach_args("src", &at(&to_data), &["--overwrite"]),
    );
    let fix = format!("if you trust {}, attach that path directly", data.display());
    assert_refused(&env, &out, &["is a symbolic link on the remote", &fix]);

    assert!(user.home.join(".ssh/authorized_keys").exists());
    assert_eq!(
        std::fs::read_to_string(&keep).unwrap(),
        "the remote home's own file"
    );
    assert!(data.join("theirs.txt").exists() && !data.join(MARKER_FILE).exists());
    assert!(status(&env, "src").workspace.remotes.is_empty());

    // A directory inside the home is fine.
    let mirror = user.home.join("mirror");
    run(&env, &sshd.attach_args("src", &at(&mirror), &[]));
    wait_until_equal(&src, &mirror, FLUSH).unwrap_or_else(|e| env.fail(&e));
}

/// Item 10: `host:~/x` is `x` in the remote user's home — created there with its marker,
/// synced, renames replayed and verified there — never a directory literally named `~`;
/// `host:~` (the home) is still refused.
#[test]
fn a_tilde_path_on_an_ssh_remote_is_in_the_remote_home() {
    let files = ["a.txt", "dir/b.txt"];
    let Some((user, env, sshd, src)) = ssh_setup("attach_safety::tilde", &files) else {
        return;
    };

    let home_spec = format!("{}@127.0.0.1:~", user.name);
    let out = run(&env, &sshd.attach_args("src", &home_spec, &["--overwrite"]));
    assert_refused(&env, &out, &["root or home directory"]);

    let spec = format!("{}@127.0.0.1:~/mirror", user.name);
    let out = run(&env, &sshd.attach_args("src", &spec, &["--name", "tilde"]));
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    let mirror = user.home.join("mirror");
    wait_until_equal(&src, &mirror, FLUSH).unwrap_or_else(|e| env.fail(&e));
    assert!(!user.home.join("~").exists(), "a literal ~ was created");
    let ws = status(&env, "src").workspace;
    assert_eq!(read_local(&mirror).map(|m| m.workspace_id), Some(ws.id));

    std::fs::rename(src.join("dir"), src.join("moved")).unwrap();
    std::fs::rename(src.join("a.txt"), src.join("moved/a.txt")).unwrap();
    env.wsync_ok(&["flush", "src", "--timeout", "30"]);
    wait_until_equal(&src, &mirror, FLUSH).unwrap_or_else(|e| env.fail(&e));
    env.wsync_ok(&["verify", "src"]);
    assert!(!user.home.join("~").exists(), "a literal ~ was created");
}

/// Item 7 over SSH: a hand-edited registry entry whose SSH target is the remote user's home
/// (holding this workspace's marker, as if attached by an older wsync) is refused by the
/// remote guard before every transfer: the remote shows `error` saying why, and nothing in
/// the home is written or deleted (`.ssh` included).
#[test]
fn a_hand_edited_ssh_target_naming_the_remote_home_is_refused_by_the_guard() {
    let Some(user) = OtherUser::create("attach_safety::ssh_registry_home") else {
        return;
    };
    let mut env = TestEnv::new();
    let sshd = Sshd::start(&env.root);
    user.authorize(&sshd);
    let src = env.mkdir("src");
    write(&src.join("a.txt"), "mine");
    let keep = user.home.join("keep.txt");
    write(&keep, "the remote home's own file");
    user.chown(&keep);
    let marker: Marker =
        serde_json::from_str(r#"{"workspace_id":"00bb","source_path":"/x"}"#).unwrap();
    write_local(&user.home, &marker).unwrap();
    let target = wsync_core::remote::RemoteTarget::Ssh {
        user: Some(user.name.clone()),
        host: "127.0.0.1".into(),
        port: Some(sshd.port()),
        path: s(&user.home).into(),
        identity_file: Some(sshd.identity_file().to_owned()),
        ssh_options: Sshd::ssh_options(),
    };
    let registry = serde_json::json!({
        "version": 1,
        "workspaces": [{"name": "src", "id": "00bb", "path": src,
                        "remotes": [{"name": "home", "target": target}]}],
    });
    std::fs::write(&env.registry, registry.to_string()).unwrap();
    env.start_daemon();
    let st =
        wsync_tests::faults::wait_status(&env, "src", "the home remote in error", FLUSH, |s| {
            wsync_tests::faults::remote(s, "home").is_some_and(|r| {
                r.state == wsync_core::monitor_proto::RemoteState::Error
                    && r.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("resolves to /, the remote user's home"))
            })
        });
    eprintln!("{:?}", wsync_tests::faults::remote(&st, "home"));
    // A change made now is refused the same way.
    write(&src.join("b.txt"), "mine too");
    let out = env.wsync(&["flush", "src", "--timeout", "3"]);
    assert!(!out.success(), "flush succeeded into the home");
    assert!(user.home.join(".ssh/authorized_keys").exists());
    assert_eq!(
        std::fs::read_to_string(&keep).unwrap(),
        "the remote home's own file"
    );
    assert!(!user.home.join("a.txt").exists() && !user.home.join("b.txt").exists());
    drop(sshd);
    drop(env);
    drop(user);
}
