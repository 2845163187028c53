//! Packaging checks: the systemd unit verifies, the scripts parse, `scripts/setup.sh` installs
//! into a throwaway HOME without ever overwriting config or registry, the example config
//! documents the real defaults, and the committed diagram matches its Graphviz source.

use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use wsync_core::config::{Config, KNOWN_KEYS};
use wsync_core::framing::{read_frame, write_frame};
use wsync_core::paths;
use wsync_core::protocol::{Request, Response, PROTOCOL_VERSION};
use wsync_core::registry::Registry;
use wsync_tests::env::{bin_dir, pids_mentioning};
use wsync_tests::poll::{poll_until, INTERVAL};

const EMPTY_REGISTRY: &str = "{\"version\":1,\"workspaces\":[]}\n";
const BINS: [&str; 3] = ["wsync", "wsyncd", "wsync-monitor"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", "command -v \"$1\" >/dev/null 2>&1", "sh", tool])
        .status()
        .is_ok_and(|s| s.success())
}

/// A short temp dir under /tmp (the daemon's socket lives below it; socket paths are ~108 bytes).
fn short_tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("wsp")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let root = dir.path().canonicalize().expect("canonical temp dir");
    (dir, root)
}

/// `scripts/setup.sh ARGS` with a clean environment: HOME is `home`, nothing else of the user's
/// (no WSYNC_CONFIG_PATH, XDG_RUNTIME_DIR, XDG_CONFIG_HOME, CARGO_HOME, DBUS address) leaks in.
fn setup(home: &Path, extra_env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(repo().join("scripts/setup.sh"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .current_dir(repo());
    for (key, value) in extra_env {
        cmd.env(key, value);
    }
    cmd.output().expect("run scripts/setup.sh")
}

fn setup_ok(home: &Path, extra_env: &[(&str, &Path)], args: &[&str]) -> String {
    let out = setup(home, extra_env, args);
    assert!(
        out.status.success(),
        "setup.sh {args:?} failed: {}",
        describe(&out)
    );
    text(&out.stdout)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn service_unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        println!("SKIPPED: systemd-analyze is not installed, so the unit cannot be verified here");
        return;
    }
    let (_dir, root) = short_tempdir();
    // The unit as committed: ExecStart must exist for verify, so point it at a real executable.
    let wsyncd = bin_dir().join("wsyncd");
    let exe = if wsyncd.is_file() {
        wsyncd
    } else {
        PathBuf::from("/bin/true")
    };
    let committed = read(&repo().join("config-examples/wsync.service"));
    assert!(
        committed
            .lines()
            .any(|l| l == "ExecStart=%h/.cargo/bin/wsyncd"),
        "the example unit should run %h/.cargo/bin/wsyncd in the foreground"
    );
    let unit = committed.replace(
        "ExecStart=%h/.cargo/bin/wsyncd",
        &format!("ExecStart={}", exe.display()),
    );
    let plain = root.join("plain/wsync.service");
    std::fs::create_dir_all(plain.parent().unwrap()).unwrap();
    std::fs::write(&plain, unit).unwrap();

    // The unit as setup.sh renders it, for a prefix that needs quoting and %-escaping.
    let prefix = root.join("my dir%1");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::os::unix::fs::symlink(&exe, prefix.join("bin/wsyncd")).unwrap();
    let config = root.join("cfg%x.config");
    let rendered = setup_ok(
        &root,
        &[("WSYNC_CONFIG_PATH", &config)],
        &["--prefix", prefix.to_str().unwrap(), "--print-unit"],
    );
    assert!(
        rendered.contains("ExecStart=\"") && rendered.contains("/my dir%%1/bin/wsyncd\""),
        "rendered unit:\n{rendered}"
    );
    assert!(
        rendered.contains("Environment=\"WSYNC_CONFIG_PATH=") && rendered.contains("cfg%%x.config"),
        "rendered unit:\n{rendered}"
    );
    let generated = root.join("generated/wsync.service");
    std::fs::create_dir_all(generated.parent().unwrap()).unwrap();
    std::fs::write(&generated, rendered).unwrap();

    for unit in [&plain, &generated] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(unit)
            .output()
            .expect("run systemd-analyze");
        // verify exits 0 on unknown keys and only warns, so any line about our unit fails too.
        let stderr = text(&out.stderr);
        let about_unit: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("wsync.service") || l.contains(root.to_str().unwrap()))
            .collect();
        assert!(
            out.status.success() && about_unit.is_empty(),
            "systemd-analyze verify {}: {}\n--- unit\n{}",
            unit.display(),
            describe(&out),
            read(unit)
        );
    }
}

#[test]
fn every_script_parses_and_is_executable() {
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(repo().join("scripts"))
        .expect("scripts/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    assert!(
        scripts.iter().any(|p| p.ends_with("setup.sh")),
        "{scripts:?}"
    );
    for script in &scripts {
        let mode = std::fs::metadata(script).unwrap().permissions().mode();
        assert!(
            mode & 0o111 != 0,
            "{} is not executable (chmod +x)",
            script.display()
        );
        let out = Command::new("bash").arg("-n").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "bash -n {}: {}",
            script.display(),
            describe(&out)
        );
    }
    // Lint ours when shellcheck happens to be installed; it is not part of the required toolchain.
    if have("shellcheck") {
        for name in ["setup.sh", "diagram.sh"] {
            let out = Command::new("shellcheck")
                .arg(repo().join("scripts").join(name))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "shellcheck {name}: {}",
                describe(&out)
            );
        }
    } else {
        println!("shellcheck not installed: lint step not run");
    }
}

/// A property list as JSON: `plutil -convert json` where macOS has it, else Python's plistlib
/// (either parses it strictly); `None` when neither is here.
fn plist_as_json(path: &Path) -> Option<serde_json::Value> {
    let out = if have("plutil") {
        let lint = Command::new("plutil")
            .arg("-lint")
            .arg(path)
            .output()
            .unwrap();
        assert!(lint.status.success(), "plutil -lint: {}", describe(&lint));
        Command::new("plutil")
            .args(["-convert", "json", "-o", "-"])
            .arg(path)
            .output()
            .unwrap()
    } else if have("python3") {
        Command::new("python3")
            .args([
                "-c",
                "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
            ])
            .arg(path)
            .output()
            .unwrap()
    } else {
        return None;
    };
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        describe(&out)
    );
    Some(serde_json::from_slice(&out.stdout).expect("plist as JSON"))
}

#[test]
fn launchd_agent_parses_and_setup_fills_in_the_paths() {
    let (_dir, root) = short_tempdir();
    let committed = repo().join("config-examples/dev.wsync.plist");
    let Some(plist) = plist_as_json(&committed) else {
        println!(
            "SKIPPED: neither plutil nor python3 is installed, so the plist cannot be parsed here"
        );
        return;
    };
    assert_eq!(plist["Label"], "dev.wsync");
    assert_eq!(plist["ProgramArguments"][0], "/Users/YOU/.cargo/bin/wsyncd");
    // Restarted after a crash, not after `wsync daemon stop` (exit 0).
    assert_eq!(plist["KeepAlive"]["SuccessfulExit"], false);
    let path = plist["EnvironmentVariables"]["PATH"].as_str().unwrap();
    assert!(
        path.starts_with("/opt/homebrew/bin:/usr/local/bin:"),
        "Homebrew's rsync must come before /usr/bin's: {path}"
    );

    // Rendered for a prefix and a config path with XML's special characters.
    let prefix = root.join("my <dir> & co");
    let config = root.join("cfg&x.config");
    let rendered = setup_ok(
        &root,
        &[("WSYNC_CONFIG_PATH", &config)],
        &["--prefix", prefix.to_str().unwrap(), "--print-plist"],
    );
    let file = root.join("dev.wsync.plist");
    std::fs::write(&file, &rendered).unwrap();
    let plist = plist_as_json(&file).expect("parsed above");
    assert_eq!(
        plist["ProgramArguments"][0],
        prefix.join("bin/wsyncd").to_str().unwrap(),
        "rendered:\n{rendered}"
    );
    assert_eq!(
        plist["EnvironmentVariables"]["WSYNC_CONFIG_PATH"],
        config.to_str().unwrap()
    );
    assert_eq!(
        plist["StandardErrorPath"],
        root.join(".wsync/launchd.log").to_str().unwrap()
    );
    assert!(
        !rendered.contains("<string>/Users/YOU"),
        "rendered:\n{rendered}"
    );
    // Printing installs nothing.
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1);
}

#[test]
fn setup_help_and_bad_options() {
    let (_dir, root) = short_tempdir();
    let help = setup_ok(&root, &[], &["--help"]);
    for option in [
        "--prefix",
        "--no-service",
        "--no-start",
        "--prebuilt",
        "--print-unit",
        "--print-plist",
        "--uninstall",
        "--purge",
    ] {
        assert!(help.contains(option), "--help lacks {option}:\n{help}");
    }
    let out = setup(&root, &[], &["--frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("unknown option"),
        "{}",
        describe(&out)
    );
    let out = setup(&root, &[], &["--purge"]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("--uninstall"),
        "{}",
        describe(&out)
    );
    // Nothing was installed or written by any of these.
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn diagram_is_up_to_date_with_its_source() {
    assert!(
        have("dot"),
        "Graphviz `dot` is not installed: install graphviz (apt-get install graphviz) so the \
         committed images/architecture.svg and .png can be checked against images/architecture.dot"
    );
    let (_dir, root) = short_tempdir();
    let out = Command::new(repo().join("scripts/diagram.sh"))
        .arg(&root)
        .current_dir(repo())
        .output()
        .expect("run scripts/diagram.sh");
    assert!(
        out.status.success(),
        "scripts/diagram.sh: {}",
        describe(&out)
    );
    for name in ["architecture.svg", "architecture.png"] {
        let fresh = std::fs::read(root.join(name)).unwrap();
        let committed = std::fs::read(repo().join("images").join(name))
            .unwrap_or_else(|e| panic!("images/{name}: {e}; run scripts/diagram.sh"));
        assert!(
            fresh == committed,
            "images/{name} is stale: it does not match images/architecture.dot rendered by this \
             machine's Graphviz; run scripts/diagram.sh and commit the result"
        );
    }
}

#[test]
fn example_config_documents_every_key_with_its_real_default() {
    let example = read(&repo().join("config-examples/wsync.config"));
    // Every "# Key=value" line, uncommented, must parse and give exactly the default.
    let uncommented: String = example
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.split_once('=')
                .is_some_and(|(k, _)| KNOWN_KEYS.contains(&k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    for key in KNOWN_KEYS {
        assert!(
            uncommented.contains(&format!("{key}=")),
            "config-examples/wsync.config does not document {key}"
        );
    }
    let file = Path::new("/example/wsync.config");
    let parsed = Config::parse(file, &uncommented)
        .unwrap_or_else(|e| panic!("the example's documented values do not parse: {e}"));
    let defaults = Config::defaults(file.to_owned());
    assert_eq!(parsed.tuning, defaults.tuning, "documented tuning defaults");
    assert_eq!(
        parsed.workspace_config_file_path,
        defaults.workspace_config_file_path
    );
    assert_eq!(parsed.log_directory, defaults.log_directory);
    // Documented for the case without XDG_RUNTIME_DIR.
    assert_eq!(
        parsed.daemon_command_socket_path,
        paths::wsync_home().join("wsyncd.sock")
    );
    // The default monitor is "next to wsyncd, else PATH"; the example shows cargo's bin dir.
    assert_eq!(
        parsed.monitor_executable_path,
        Some(paths::home_dir().join(".cargo/bin/wsync-monitor"))
    );
}

/// Installs the already-built debug binaries (no release build: that takes minutes).
fn prebuilt() -> String {
    let dir = bin_dir();
    for bin in BINS {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
            dir.join(bin).display()
        );
    }
    dir.to_str().expect("UTF-8 target dir").to_owned()
}

#[test]
fn setup_installs_and_never_overwrites_config_or_registry() {
    let (_dir, root) = short_tempdir();
    let home = root.join("home");
    std::fs::create_dir(&home).unwrap();
    let prefix = root.join("prefix");
    let src = prebuilt();
    let args = [
        "--prefix",
        prefix.to_str().unwrap(),
        "--prebuilt",
        &src,
        "--no-start",
    ];

    let first = setup_ok(&home, &[], &args);
    for bin in BINS {
        let installed = prefix.join("bin").join(bin);
        assert_eq!(
            std::fs::read(&installed).unwrap_or_default(),
            std::fs::read(Path::new(&src).join(bin)).unwrap(),
            "{} is not the built binary",
            installed.display()
        );
        let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
        assert_eq!(mode & 0o755, 0o755, "{}", installed.display());
    }
    let config_path = home.join(".wsync/wsync.config");
    let registry_path = home.join(".wsync/wsync-ws-config.json");
    let config = Config::load_from(&config_path, true)
        .unwrap_or_else(|e| panic!("written config does not load: {e}\n{first}"));
    assert_eq!(
        config.monitor_executable_path,
        Some(prefix.join("bin/wsync-monitor")),
        "the config must name the installed monitor"
    );
    assert_eq!(read(&registry_path), EMPTY_REGISTRY);
    assert!(Registry::load(&registry_path)
        .unwrap()
        .workspaces
        .is_empty());
    assert!(home.join(".wsync/log").is_dir());
    assert!(first.contains("wsync add ~/project") && first.contains("wsync status"));

    // A second run keeps what the user has, byte for byte.
    let my_config = format!("{}# edited by the user\nSettleMs=20\n", read(&config_path));
    std::fs::write(&config_path, &my_config).unwrap();
    let my_registry = "{\"version\":1,\"workspaces\":[],\"note\":0}";
    std::fs::write(&registry_path, my_registry).unwrap();
    let second = setup_ok(&home, &[], &args);
    assert_eq!(read(&config_path), my_config);
    assert_eq!(read(&registry_path), my_registry);
    assert!(
        second.contains("kept existing") && second.contains("up to date"),
        "{second}"
    );

    // WSYNC_CONFIG_PATH is respected, and the registry follows the config's own key.
    let custom = root.join("custom.config");
    let custom_registry = root.join("reg/custom.json");
    std::fs::write(
        &custom,
        format!("WorkspaceConfigFilePath={}\n", custom_registry.display()),
    )
    .unwrap();
    setup_ok(&home, &[("WSYNC_CONFIG_PATH", &custom)], &args);
    assert_eq!(read(&custom_registry), EMPTY_REGISTRY);
    let fresh = root.join("fresh.config");
    setup_ok(&home, &[("WSYNC_CONFIG_PATH", &fresh)], &args);
    assert!(Config::load_from(&fresh, true).is_ok());

    // --uninstall removes the binaries and keeps config and registry; --purge removes those.
    setup_ok(
        &home,
        &[],
        &["--prefix", prefix.to_str().unwrap(), "--uninstall"],
    );
    for bin in BINS {
        assert!(!prefix.join("bin").join(bin).exists(), "{bin} left behind");
    }
    assert_eq!(read(&config_path), my_config);
    assert_eq!(read(&registry_path), my_registry);
    setup_ok(
        &home,
        &[],
        &[
            "--prefix",
            prefix.to_str().unwrap(),
            "--uninstall",
            "--purge",
        ],
    );
    assert!(
        !home.join(".wsync").exists(),
        "--purge should remove ~/.wsync"
    );
}

/// Asks the daemon at `socket` for its pid (Hello handshake).
fn daemon_pid(socket: &Path) -> Option<u32> {
    let stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut writer = stream.try_clone().ok()?;
    write_frame(
        &mut writer,
        &Request::Hello {
            protocol: PROTOCOL_VERSION,
            version: wsync_core::VERSION.into(),
        },
    )
    .ok()?;
    match read_frame(&mut BufReader::new(stream)).ok()? {
        Response::Hello { pid, .. } => Some(pid),
        _ => None,
    }
}

/// Whether `pid` is a live process (a zombie nobody reaped does not count).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// Kills whatever of this test is still running (the daemon runs from the test's prefix).
struct KillOnDrop(PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in pids_mentioning(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn setup_starts_the_daemon_in_the_background_once_and_restarts_it_on_upgrade() {
    let (_dir, root) = short_tempdir();
    let _cleanup = KillOnDrop(root.clone());
    let home = root.join("home");
    std::fs::create_dir(&home).unwrap();
    let prefix = root.join("prefix");
    let src = prebuilt();
    let args = [
        "--prefix",
        prefix.to_str().unwrap(),
        "--prebuilt",
        &src,
        "--no-service",
    ];
    let socket = home.join(".wsync/wsyncd.sock");
    let log_dir = home.join(".wsync/log");
    let logs = || {
        std::fs::read_dir(&log_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| format!("--- {}\n{}", e.path().display(), read(&e.path())))
                    .collect::<String>()
            })
            .unwrap_or_default()
    };

    let first = setup(&home, &[], &args);
    assert!(first.status.success(), "{}\n{}", describe(&first), logs());
    let pid = daemon_pid(&socket).unwrap_or_else(|| {
        panic!(
            "setup.sh returned but no daemon answers on {}\n{}\n{}",
            socket.display(),
            describe(&first),
            logs()
        )
    });

    // Re-running changes nothing: same daemon, no second one.
    let second = setup_ok(&home, &[], &args);
    assert!(second.contains("already running"), "{second}");
    assert_eq!(daemon_pid(&socket), Some(pid), "the daemon was replaced");

    // New binaries: the running daemon is replaced by one running them.
    let alt = root.join("alt");
    std::fs::create_dir(&alt).unwrap();
    for bin in BINS {
        std::fs::copy(Path::new(&src).join(bin), alt.join(bin)).unwrap();
    }
    let mut monitor = std::fs::OpenOptions::new()
        .append(true)
        .open(alt.join("wsync-monitor"))
        .unwrap();
    std::io::Write::write_all(&mut monitor, b"\0").unwrap();
    drop(monitor);
    let alt_args = [
        args[0],
        args[1],
        "--prebuilt",
        alt.to_str().unwrap(),
        args[4],
    ];
    let third = setup_ok(&home, &[], &alt_args);
    assert!(third.contains("restarting the daemon"), "{third}");
    let new_pid = daemon_pid(&socket).expect("a daemon after the upgrade");
    assert_ne!(new_pid, pid, "the daemon still runs the old binaries");
    assert!(
        poll_until(
            "the old wsyncd to exit",
            Duration::from_secs(10),
            INTERVAL,
            || !running(pid)
        )
        .is_ok(),
        "the old wsyncd {pid} still runs"
    );
    let pid = new_pid;

    // --uninstall stops it and removes the binaries.
    setup_ok(
        &home,
        &[],
        &["--prefix", prefix.to_str().unwrap(), "--uninstall"],
    );
    assert!(
        poll_until(
            "wsyncd to exit after --uninstall",
            Duration::from_secs(10),
            INTERVAL,
            || !running(pid)
        )
        .is_ok(),
        "wsyncd {pid} still runs after --uninstall\n{}",
        logs()
    );
    assert!(!prefix.join("bin/wsyncd").exists());
    assert!(home.join(".wsync/wsync.config").is_file());
}

/// The fenced code blocks of a markdown file whose opening line is exactly "```<lang>".
fn code_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line.trim_start() == format!("```{lang}") => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}

/// Parses `line` as the given type and checks it re-encodes to exactly the same frame.
macro_rules! assert_wire_example {
    ($ty:ty, $line:expr) => {{
        let line: &str = $line;
        let value: $ty = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "docs/ARCHITECTURE.md or PROTOCOL.md example is not a valid {}: {e}\n{line}",
                stringify!($ty)
            )
        });
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            line,
            "docs/ARCHITECTURE.md or PROTOCOL.md example is not in the exact wire form"
        );
    }};
}

#[test]
fn architecture_doc_examples_match_the_wire_types() {
    use wsync_core::monitor_proto::{MonitorCommand, MonitorEvent};
    use wsync_core::protocol::WorkspaceStatus;

    // The socket examples live in PROTOCOL.md, the monitor channel's and the registry's here.
    let doc = read(&repo().join("docs/ARCHITECTURE.md")) + &read(&repo().join("docs/PROTOCOL.md"));
    let mut counts = [0usize; 4];
    for block in code_blocks(&doc, "text") {
        for line in block.lines() {
            if let Some(json) = line.strip_prefix("→ ") {
                assert_wire_example!(Request, json);
                counts[0] += 1;
            } else if let Some(json) = line.strip_prefix("← ") {
                assert_wire_example!(Response, json);
                counts[1] += 1;
            } else if let Some(json) = line.strip_prefix("stdin  ") {
                assert_wire_example!(MonitorCommand, json);
                counts[2] += 1;
            } else if let Some(json) = line.strip_prefix("stdout ") {
                assert_wire_example!(MonitorEvent, json);
                counts[3] += 1;
            }
        }
    }
    assert!(
        counts.iter().all(|&n| n >= 2),
        "expected socket and monitor examples, found {counts:?}"
    );

    let json_blocks = code_blocks(&doc, "json");
    let registry = json_blocks
        .iter()
        .find(|b| b.contains("\"version\""))
        .expect("a registry example");
    let parsed = Registry::parse(Path::new("docs/ARCHITECTURE.md"), registry)
        .unwrap_or_else(|e| panic!("registry example: {e}"));
    assert_eq!(parsed.version, wsync_core::registry::SCHEMA_VERSION);
    assert_eq!(parsed.workspaces[0].remotes.len(), 2);
    let status = json_blocks
        .iter()
        .find(|b| b.contains("\"monitor\""))
        .expect("a status example");
    serde_json::from_str::<WorkspaceStatus>(status)
        .unwrap_or_else(|e| panic!("status example: {e}"));
}

#[test]
fn docs_cover_every_config_key_and_their_links_resolve() {
    for doc in ["README.md", "docs/ARCHITECTURE.md"] {
        let path = repo().join(doc);
        let text = read(&path);
        for key in KNOWN_KEYS {
            assert!(text.contains(key), "{doc} does not document {key}");
        }
        // Relative links and images: ](target) where target is not a URL or an anchor.
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let resolved = path.parent().unwrap().join(target);
            assert!(
                resolved.exists(),
                "{doc} links to {target}, which does not exist"
            );
        }
    }
    let readme = read(&repo().join("README.md"));
    assert!(readme.contains("images/architecture.svg"));
    for command in ["scripts/setup.sh", "scripts/test.sh"] {
        assert!(
            readme.contains(command),
            "README quick start lacks {command}"
        );
    }
}

/// The crates `cargo install` takes, and the binary each installs.
const INSTALLABLE: [(&str, &str); 3] = [
    ("crates/wsync-cli", "wsync"),
    ("crates/wsyncd", "wsyncd"),
    ("crates/wsync-monitor", "wsync-monitor"),
];

/// The cargo running this test (cargo sets `CARGO`), else the one on PATH; `None` (the test
/// skips, saying so) when there is none.
fn cargo() -> Option<PathBuf> {
    if let Some(cargo) = std::env::var_os("CARGO") {
        return Some(cargo.into());
    }
    have("cargo").then(|| PathBuf::from("cargo"))
}

/// `cargo install --locked --path crates/…` works as the README says, for each of the three
/// crates, into a temp `--root`. Offline, a debug build in the existing target dir (a release
/// build would take minutes): what is checked is the install, not the optimiser.
#[test]
fn cargo_install_puts_the_three_binaries_in_a_prefix() {
    let Some(cargo) = cargo() else {
        eprintln!("SKIPPED: cargo_install_puts_the_three_binaries_in_a_prefix: cargo not found");
        return;
    };
    let target_dir = bin_dir()
        .parent()
        .expect("the target dir above target/debug")
        .to_path_buf();
    let prefix = tempfile::tempdir().expect("temp dir");
    for (path, bin) in INSTALLABLE {
        let out = Command::new(&cargo)
            .current_dir(repo())
            .args([
                "install",
                "--locked",
                "--offline",
                "--debug",
                "--path",
                path,
            ])
            .arg("--root")
            .arg(prefix.path())
            .env("CARGO_TARGET_DIR", &target_dir)
            .output()
            .expect("running cargo install");
        assert!(
            out.status.success(),
            "cargo install --path {path}: {}",
            describe(&out)
        );
        let installed = prefix.path().join("bin").join(bin);
        let out = Command::new(&installed)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", installed.display()));
        assert!(out.status.success(), "{bin} --version: {}", describe(&out));
        assert_eq!(
            text(&out.stdout).trim(),
            format!("{bin} {}", wsync_core::VERSION),
            "{}",
            describe(&out)
        );
    }
}

/// Removes the package at drop, whatever happened in between, when `dpkg -i` installed it.
struct InstalledDeb {
    name: &'static str,
}

impl Drop for InstalledDeb {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-r", self.name]).output();
    }
}

/// As root (and with dpkg and cargo-deb): `scripts/deb.sh` builds the package, `dpkg -i`
/// installs it, the three binaries, man pages, completions, example config and user unit are
/// where the package says, and `dpkg -r` removes them. The machine is left as it was: a guard
/// runs `dpkg -r` even when a check fails.
#[test]
fn the_debian_package_installs_and_removes_cleanly() {
    let root = nix::unistd::Uid::effective().is_root();
    for (missing, why) in [
        (!root, "not running as root"),
        (!have("dpkg"), "dpkg not found"),
        (
            !have("cargo-deb"),
            "cargo-deb not found (cargo install --locked cargo-deb)",
        ),
    ] {
        if missing {
            eprintln!("SKIPPED: the_debian_package_installs_and_removes_cleanly: {why}");
            return;
        }
    }
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "wsync"])
        .output()
        .expect("dpkg-query");
    if text(&status.stdout).contains("installed") {
        eprintln!(
            "SKIPPED: the_debian_package_installs_and_removes_cleanly: a wsync package is already installed here; not touching it"
        );
        return;
    }
    let target_dir = bin_dir().parent().expect("target dir").to_path_buf();
    let out = Command::new(repo().join("scripts/deb.sh"))
        .args(["--profile", "dev"])
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .expect("running scripts/deb.sh");
    assert!(out.status.success(), "scripts/deb.sh: {}", describe(&out));
    let deb = text(&out.stdout)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no .deb path printed: {}", describe(&out)));
    let out = Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .output()
        .expect("dpkg -i");
    let guard = InstalledDeb { name: "wsync" };
    assert!(
        out.status.success(),
        "dpkg -i {}: {}",
        deb.display(),
        describe(&out)
    );
    let listed = Command::new("dpkg")
        .args(["-L", "wsync"])
        .output()
        .expect("dpkg -L");
    let listed = text(&listed.stdout);
    let expected = [
        "/usr/bin/wsync",
        "/usr/bin/wsyncd",
        "/usr/bin/wsync-monitor",
        "/usr/share/man/man1/wsync.1.gz",
        "/usr/share/bash-completion/completions/wsync",
        "/usr/share/zsh/vendor-completions/_wsync",
        "/usr/share/fish/vendor_completions.d/wsync.fish",
        "/usr/lib/systemd/user/wsync.service",
        "/usr/share/doc/wsync/examples/wsync.config",
    ];
    for path in expected {
        let on_disk = Path::new(path).exists() || Path::new(path.trim_end_matches(".gz")).exists();
        assert!(on_disk, "{path} not installed; dpkg -L lists:\n{listed}");
    }
    for bin in BINS {
        let out = Command::new(format!("/usr/bin/{bin}"))
            .arg("--version")
            .output()
            .expect("running the installed binary");
        assert!(out.status.success(), "/usr/bin/{bin}: {}", describe(&out));
    }
    let unit = read(Path::new("/usr/lib/systemd/user/wsync.service"));
    assert!(unit.contains("/usr/bin/wsyncd"), "{unit}");
    drop(guard);
    let still = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "wsync"])
        .output()
        .expect("dpkg-query");
    assert!(
        !text(&still.stdout).contains(" installed"),
        "dpkg -r left it installed: {}",
        text(&still.stdout)
    );
    for path in expected {
        assert!(
            !Path::new(path).exists(),
            "{path} is still there after dpkg -r"
        );
    }
}
