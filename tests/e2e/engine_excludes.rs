//! Excludes in wsync-monitor (issue 4): patterns from `.wsyncignore`, the registry and
//! `.gitignore` files; an excluded directory is neither watched (the watch count proves it) nor
//! transferred (on every transport); `.gitignore` can be switched off; editing
//! `.wsyncignore` at runtime takes effect (newly included paths are synced, newly excluded ones
//! are left alone on the remote).

use std::path::Path;
use std::time::Duration;

use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::transports::{Rig, Via};
use wsync_tests::tree::scratch_dir;
use wsync_tests::watch_mode::counts_watches;

const FLUSH: Duration = Duration::from_secs(30);

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// A project tree: 4 included directories (root, src, src/deep, .git) plus excluded ones.
fn project(src: &Path) {
    write(&src.join("src/main.rs"), "fn main() {}");
    write(&src.join("src/deep/lib.rs"), "");
    write(&src.join("src/debug.log"), "log");
    write(&src.join(".git/HEAD"), "ref: refs/heads/main");
    // `star\*` matches only the file literally named `star*`: its rsync rule must be escaped,
    // or it would hide `starfish` too.
    write(&src.join(".wsyncignore"), "*.log\nstar\\*\n");
    write(&src.join("src/star*"), "excluded");
    write(&src.join("src/starfish"), "included");
    write(&src.join("src/glob*[x] y.log"), "excluded");
    write(&src.join(".gitignore"), "/build\n");
    for d in [
        "node_modules/a/b",
        "node_modules/c",
        "src/node_modules/x",
        "build/out",
    ] {
        write(&src.join(d).join("f.js"), "dep");
    }
}

fn assert_excluded_absent(m: &MonitorProc, dst: &Path) {
    for p in [
        "node_modules",
        "src/node_modules",
        "build",
        "src/debug.log",
        "src/star*",
        "src/glob*[x] y.log",
    ] {
        if dst.join(p).exists() {
            m.fail(&format!("{p} was transferred to {}", dst.display()));
        }
    }
    for p in [
        "src/main.rs",
        "src/deep/lib.rs",
        "src/starfish",
        ".git/HEAD",
        ".wsyncignore",
        ".gitignore",
    ] {
        if !dst.join(p).exists() {
            m.fail(&format!("{p} is missing on {}", dst.display()));
        }
    }
}

fn excluded_directories_are_neither_watched_nor_copied(via: Via) {
    let tmp = scratch_dir();
    let rig = Rig::new(via, tmp.path());
    let src = tmp.path().join("src");
    let dst = tmp.path().join("remote");
    project(&src);
    let mut ws = workspace("excl", &src, vec![rig.remote("r", &dst)]);
    ws.excludes = vec!["node_modules/".into()];
    ws.respect_gitignore = true;
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    let status = m.status().unwrap();
    if counts_watches() {
        assert_eq!(
            status.watches, 4,
            "only root, src, src/deep and .git: {status:?}"
        );
    }
    assert_excluded_absent(&m, &dst);
    // Changes inside or matching excluded patterns are not synced; new excluded dirs are not
    // watched; everything else still is.
    write(&src.join("node_modules/a/new.js"), "x");
    write(&src.join("src/deep/trace.log"), "x");
    std::fs::create_dir_all(src.join("src/deep/node_modules/y")).unwrap();
    write(&src.join("src/deep/node_modules/y/z.js"), "x");
    write(&src.join("src/deep/new.rs"), "x");
    m.flush_ok(FLUSH);
    assert!(dst.join("src/deep/new.rs").exists());
    assert!(!dst.join("node_modules").exists());
    assert!(!dst.join("src/deep/trace.log").exists());
    assert!(!dst.join("src/deep/node_modules").exists());
    if counts_watches() {
        assert_eq!(m.status().unwrap().watches, 4);
    }
    // A directory rename re-sends the subtree recursively: the rules still hold inside it.
    std::fs::rename(src.join("src"), src.join("source")).unwrap();
    m.flush_ok(FLUSH);
    assert!(dst.join("source/deep/new.rs").exists());
    assert!(!dst.join("source/debug.log").exists());
    assert!(!dst.join("source/node_modules").exists());
    assert!(!dst.join("source/deep/node_modules").exists());
}

wsync_tests::on_every_transport!(excluded_directories_are_neither_watched_nor_copied);

#[test]
fn gitignore_can_be_switched_off() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    project(&src);
    let mut ws = workspace("nogit", &src, vec![local_remote("d", &dst)]);
    ws.respect_gitignore = false;
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    assert!(
        dst.join("build/out/f.js").exists(),
        "build/ is only gitignored"
    );
    assert!(
        dst.join("node_modules/c/f.js").exists(),
        "no registry pattern here"
    );
    assert!(
        !dst.join("src/debug.log").exists(),
        ".wsyncignore always applies"
    );
}

#[test]
fn editing_wsyncignore_at_runtime_takes_effect() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    project(&src);
    write(&src.join("docs/guide.md"), "v1");
    let mut ws = workspace("live", &src, vec![local_remote("d", &dst)]);
    ws.respect_gitignore = true;
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    assert!(!dst.join("src/debug.log").exists());
    assert!(dst.join("docs/guide.md").exists());
    let watches = m.status().unwrap().watches;
    // Logs are included again, docs/ is excluded from now on.
    write(&src.join(".wsyncignore"), "docs/\n");
    m.flush_ok(FLUSH);
    assert_eq!(
        std::fs::read_to_string(dst.join("src/debug.log"))
            .ok()
            .as_deref(),
        Some("log"),
        "a newly included file is synced"
    );
    if counts_watches() {
        let status = m.wait_status("docs unwatched", FLUSH, |s| s.watches < watches);
        assert_eq!(status.watches, watches - 1, "{status:?}");
    }
    write(&src.join("docs/guide.md"), "v2");
    std::fs::remove_file(src.join("src/main.rs")).unwrap();
    m.flush_ok(FLUSH);
    assert!(!dst.join("src/main.rs").exists());
    assert_eq!(
        std::fs::read_to_string(dst.join("docs/guide.md")).unwrap(),
        "v1",
        "a newly excluded path is left alone on the remote"
    );
    // A full resync leaves it alone too (no --delete-excluded).
    m.send(&wsync_core::monitor_proto::MonitorCommand::Resync);
    m.flush_ok(FLUSH);
    assert!(dst.join("docs/guide.md").exists());
    // The node_modules dirs were never excluded here: they are on the remote.
    assert!(dst.join("node_modules/c/f.js").exists());
}

/// What a remote holds that the workspace never had — a `node_modules/` or `target/` built on
/// the remote — must survive full syncs when an exclude matches it, as lsyncd and Mutagen users
/// expect; a remote-only path no rule matches is still removed by the mirror.
#[test]
fn remote_only_paths_matching_an_exclude_survive_full_syncs() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src.join(".wsyncignore"), "*.log\n");
    write(&src.join(".gitignore"), "target/\n");
    write(&src.join("a.txt"), "a");
    let built_on_the_remote = [
        "node_modules/dep/index.js",
        "target/debug/app",
        "server.log",
        "sub/deep.log",
    ];
    for p in built_on_the_remote {
        write(&dst.join(p), "remote");
    }
    write(
        &dst.join("stale.txt"),
        "no rule matches: the mirror removes it",
    );
    let mut ws = workspace("prot", &src, vec![local_remote("d", &dst)]);
    ws.excludes = vec!["node_modules/".into()];
    ws.respect_gitignore = true;
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    let check = |m: &MonitorProc, stale: &str| {
        for p in built_on_the_remote {
            if !dst.join(p).exists() {
                m.fail(&format!("remote-only excluded {p} was deleted"));
            }
        }
        if dst.join(stale).exists() {
            m.fail(&format!(
                "{stale} should have been removed by the full sync"
            ));
        }
    };
    check(&m, "stale.txt");
    assert!(dst.join("a.txt").exists());

    // A directory new in the workspace goes recursively with --delete; a resync is a full sync.
    write(&src.join("sub/new.txt"), "n");
    m.flush_ok(FLUSH);
    assert!(dst.join("sub/new.txt").exists());
    write(&dst.join("stale2.txt"), "x");
    m.send(&wsync_core::monitor_proto::MonitorCommand::Resync);
    m.flush_ok(FLUSH);
    check(&m, "stale2.txt");
}
