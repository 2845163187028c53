//! End-to-end: the Neovim plugin (`editors/nvim`) in `nvim --headless`, through `wsync client`,
//! against a real daemon: a file opened in a workspace, changed, shown pending and then in
//! sync; `:WsyncFlush` and `:WsyncStatus`; a notification when the remote fails. The editor
//! side is `editor_nvim.lua`; it writes its outcome to a file this test reads.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use wsync_tests::env::TestEnv;
use wsync_tests::poll::{poll_until, INTERVAL};

fn nvim() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nvim"))
            .find(|p| p.is_file())
    })
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 test path")
}

#[test]
fn the_statusline_goes_pending_then_in_sync_and_errors_are_notified() {
    let Some(nvim) = nvim() else {
        if nix::unistd::geteuid().is_root() {
            panic!("nvim is missing: scripts/test.sh installs neovim when run as root");
        }
        eprintln!("SKIPPED the_statusline_goes_pending_then_in_sync...: nvim is not installed (scripts/test.sh installs neovim as root)");
        return;
    };
    let mut env = TestEnv::new();
    env.start_daemon();
    let src = env.mkdir("src");
    let file = src.join("notes.txt");
    std::fs::write(&file, "first\n").unwrap();
    let mirror = env.root.join("mirror");
    env.wsync_ok(&["add", s(&src)]);
    env.wsync_ok(&["attach", "src", s(&mirror)]);
    env.wsync_ok(&["pause", "src"]);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let result = env.root.join("nvim-result");
    let mut child = Command::new(nvim)
        .args(["--headless", "-u", "NONE", "-i", "NONE", "-n", "-c"])
        .arg(format!(
            "luafile {}",
            repo.join("tests/e2e/editor_nvim.lua").display()
        ))
        .env("WSYNC_CONFIG_PATH", &env.config_path)
        .env("HOME", &env.home)
        .env("WSYNC_PLUGIN", repo.join("editors/nvim"))
        .env("WSYNC_BIN", wsync_tests::env::bin("wsync"))
        .env("WSYNC_FILE", &file)
        .env("WSYNC_WORKSPACE", "src")
        .env("WSYNC_MIRROR", &mirror)
        .env("WSYNC_RESULT", &result)
        .current_dir(&env.root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nvim");
    let exited = poll_until("nvim to finish", Duration::from_secs(90), INTERVAL, || {
        child.try_wait().ok().flatten()
    });
    if exited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let outcome = std::fs::read_to_string(&result).unwrap_or_else(|_| "no result file".into());
    if !outcome.starts_with("OK") {
        env.fail(&format!("the nvim side: {outcome}"));
    }
    eprintln!("{outcome}");
    // The component went pending, then in sync, in that order.
    let history = outcome
        .lines()
        .find_map(|l| l.strip_prefix("history: "))
        .unwrap_or_default();
    let pending = history.find("wsync: pending 1");
    let in_sync = history.find("wsync: in sync");
    assert!(
        matches!((pending, in_sync), (Some(p), Some(i)) if p < i),
        "{history}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "changed again\n");
}
