//! The `wsync.config` file: `KEY=VALUE` lines, `#` comments, documented defaults.
//!
//! Located at `$WSYNC_CONFIG_PATH` when set (every test uses this), else `~/.wsync/wsync.config`.
//! A missing default file means all defaults; a file named by the environment must exist.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::monitor_proto::WatchMode;
use crate::paths::{self, SettingsFile};

/// Environment variable naming another config file.
pub const CONFIG_PATH_ENV: &str = "WSYNC_CONFIG_PATH";

/// Errors reading or parsing the config file; each names the file and, where there is one, the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is a symbolic link; point {env} at the real file instead", env = CONFIG_PATH_ENV)]
    Symlink { path: PathBuf },
    #[error("config file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("config file {path} is owned by uid {owner}, not by uid {me} that runs wsync (or root), so its owner decides what wsync does: `chown {me} {path}` if it is yours, or point {env} at a file of your own", me = crate::owned::my_uid(), env = CONFIG_PATH_ENV)]
    NotOurs { path: PathBuf, owner: u32 },
    #[error("config file {path} is writable by other users (mode {mode:o}), who could decide what wsync does: `chmod go-w {path}`")]
    Writable { path: PathBuf, mode: u32 },
    #[error("config file {path} does not exist (named by {env}); create it or unset {env}", env = CONFIG_PATH_ENV)]
    Missing { path: PathBuf },
    #[error("{path}:{line}: {problem}")]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// How long the notification hook may run before it is killed (`HookTimeoutMs`).
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Tunables with documented defaults (all optional keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// `WatchdogIntervalMs`: how often the watchdog thread wakes (default 500).
    pub watchdog_interval: Duration,
    /// `MonitorRestartLimit`: crashes tolerated within the window before a workspace is `failed` (default 5).
    pub monitor_restart_limit: u32,
    /// `MonitorRestartWindowSecs`: the crash-counting window (default 600).
    pub monitor_restart_window: Duration,
    /// `MonitorStopGraceMs`: SIGTERM-to-SIGKILL grace when stopping a monitor (default 5000).
    pub monitor_stop_grace: Duration,
    /// `SettleMs`: quiet time after the last event before a batch is synced (default 5).
    pub settle: Duration,
    /// `MaxLatencyMs`: longest a change waits under continuous churn (default 100).
    pub max_latency: Duration,
    /// `MonitorUnresponsiveTimeoutMs`: how long a monitor may send no heartbeat before the
    /// watchdog kills and restarts it as crashed (default 30000).
    pub monitor_unresponsive_timeout: Duration,
    /// `PathCheckTimeoutMs`: how long the daemon waits for a user's path to answer while it
    /// checks an `add`, `attach` or `resume` (default 10000).
    pub path_check_timeout: Duration,
    /// `ProofIntervalSecs`: how often an idle remote gets a proof of sync (default 60; 0 off).
    pub proof_interval: Duration,
    /// `HookTimeoutMs`: how long the hook may run before it and all it started are killed
    /// (default 30000).
    pub hook_timeout: Duration,
    /// `WatchMode`: `auto` (default), `inotify`, `notify` or `poll`; the monitors' watch
    /// backend (see `wsync_core::monitor_proto::WatchMode`).
    pub watch_mode: WatchMode,
    /// `PollIntervalMs`: how often the poll backend walks a workspace's tree (default 2000;
    /// 100 to 600000).
    pub poll_interval: Duration,
    /// `Transport`: `auto` (default) or `rsync`; `rsync` sends every remote's changes by rsync
    /// (see [`crate::registry::Transport`]; a remote's own `transport` can force it too).
    pub transport: crate::registry::Transport,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            watchdog_interval: Duration::from_millis(500),
            monitor_restart_limit: 5,
            monitor_restart_window: Duration::from_secs(600),
            monitor_stop_grace: Duration::from_millis(5000),
            settle: Duration::from_millis(5),
            max_latency: Duration::from_millis(100),
            monitor_unresponsive_timeout: Duration::from_secs(30),
            path_check_timeout: Duration::from_secs(10),
            proof_interval: crate::monitor_proto::DEFAULT_PROOF_INTERVAL,
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
            watch_mode: WatchMode::Auto,
            poll_interval: crate::monitor_proto::DEFAULT_POLL_INTERVAL,
            transport: crate::registry::Transport::Auto,
        }
    }
}

/// The resolved configuration: every key filled in, from the file or a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this was read from (whether or not it existed).
    pub file: PathBuf,
    /// `WorkspaceConfigFilePath`: the registry (default `~/.wsync/wsync-ws-config.json`).
    pub workspace_config_file_path: PathBuf,
    /// `MonitorExecutablePath`: `None` means "next to wsyncd, else on PATH".
    pub monitor_executable_path: Option<PathBuf>,
    /// `DaemonCommandSocketPath` (default `$XDG_RUNTIME_DIR/wsync/wsyncd.sock`, else `~/.wsync/wsyncd.sock`).
    pub daemon_command_socket_path: PathBuf,
    /// `LogDirectory` (default `~/.wsync/log`).
    pub log_directory: PathBuf,
    /// `HookCommand`: an executable run (directly, no shell) when a remote enters `error` or
    /// `halted` or a workspace is marked `failed` (default: none).
    pub hook_command: Option<PathBuf>,
    pub tuning: Tuning,
}

impl Config {
    /// All defaults, as if the file were missing.
    pub fn defaults(file: PathBuf) -> Self {
        Self {
            file,
            workspace_config_file_path: paths::wsync_home().join("wsync-ws-config.json"),
            monitor_executable_path: None,
            daemon_command_socket_path: paths::default_runtime_dir().join("wsyncd.sock"),
            log_directory: paths::wsync_home().join("log"),
            hook_command: None,
            tuning: Tuning::default(),
        }
    }

    /// The config file in use: `$WSYNC_CONFIG_PATH`, else `~/.wsync/wsync.config`.
    pub fn default_file() -> (PathBuf, bool) {
        match std::env::var_os(CONFIG_PATH_ENV).filter(|p| !p.is_empty()) {
            Some(p) => (paths::expand_home(&p.to_string_lossy()), true),
            None => (paths::wsync_home().join("wsync.config"), false),
        }
    }

    /// Loads the config the environment selects.
    pub fn load() -> Result<Self, ConfigError> {
        let (file, explicit) = Self::default_file();
        Self::load_from(&file, explicit)
    }

    /// Loads `file`; when it is missing, defaults apply unless `must_exist`.
    pub fn load_from(file: &Path, must_exist: bool) -> Result<Self, ConfigError> {
        let path = file.to_owned();
        match paths::read_settings_file(file) {
            Ok(SettingsFile::Text(text)) => Self::parse(file, &text),
            Ok(SettingsFile::Missing) if must_exist => Err(ConfigError::Missing { path }),
            Ok(SettingsFile::Missing) => Ok(Self::defaults(path)),
            Ok(SettingsFile::Symlink) => Err(ConfigError::Symlink { path }),
            Ok(SettingsFile::NotAFile) => Err(ConfigError::NotAFile { path }),
            Ok(SettingsFile::NotOurs { owner }) => Err(ConfigError::NotOurs { path, owner }),
            Ok(SettingsFile::Writable { mode }) => Err(ConfigError::Writable { path, mode }),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parses config text; `file` is only used in error messages and `Config::file`.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut config = Self::defaults(file.to_owned());
        for (index, raw_line) in text.lines().enumerate() {
            let line_no = index + 1;
            let err = |problem: String| ConfigError::Line {
                path: file.to_owned(),
                line: line_no,
                problem,
            };
            let line = raw_line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(err(format!("expected KEY=VALUE, found {line:?}")));
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                return Err(err("missing key before '='".into()));
            }
            if value.is_empty() {
                return Err(err(format!("{key} has an empty value")));
            }
            config.apply(key, value).map_err(err)?;
        }
        Ok(config)
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "WorkspaceConfigFilePath" => self.workspace_config_file_path = absolute(key, value)?,
            "MonitorExecutablePath" => self.monitor_executable_path = Some(absolute(key, value)?),
            "DaemonCommandSocketPath" => self.daemon_command_socket_path = absolute(key, value)?,
            "LogDirectory" => self.log_directory = absolute(key, value)?,
            "HookCommand" => self.hook_command = Some(absolute(key, value)?),
            "WatchdogIntervalMs" => self.tuning.watchdog_interval = millis(key, value, 10, 60_000)?,
            "MonitorRestartLimit" => {
                self.tuning.monitor_restart_limit = number(key, value, 0, 1000)? as u32
            }
            "MonitorRestartWindowSecs" => {
                self.tuning.monitor_restart_window =
                    Duration::from_secs(number(key, value, 1, 86_400 * 7)?)
            }
            "MonitorStopGraceMs" => {
                self.tuning.monitor_stop_grace = millis(key, value, 0, 600_000)?
            }
            "SettleMs" => self.tuning.settle = millis(key, value, 0, 10_000)?,
            "MaxLatencyMs" => self.tuning.max_latency = millis(key, value, 1, 60_000)?,
            "MonitorUnresponsiveTimeoutMs" => {
                self.tuning.monitor_unresponsive_timeout = millis(key, value, 1000, 3_600_000)?
            }
            "PathCheckTimeoutMs" => {
                self.tuning.path_check_timeout = millis(key, value, 100, 600_000)?
            }
            "ProofIntervalSecs" => {
                self.tuning.proof_interval = Duration::from_secs(number(key, value, 0, 86_400)?)
            }
            "HookTimeoutMs" => self.tuning.hook_timeout = millis(key, value, 100, 600_000)?,
            "WatchMode" => {
                self.tuning.watch_mode = WatchMode::parse(value).ok_or_else(|| {
                    format!(
                        "WatchMode must be one of {}, found {value:?}",
                        WatchMode::NAMES.join(", ")
                    )
                })?
            }
            "PollIntervalMs" => {
                self.tuning.poll_interval = millis(key, value, MIN_POLL_INTERVAL_MS, 600_000)
                    .map_err(|e| {
                        format!("{e} (the poll backend's walk interval, in milliseconds)")
                    })?
            }
            "Transport" => self.tuning.transport = value.parse()?,
            other => {
                return Err(format!(
                    "unknown key {other:?}; known keys: {}",
                    KNOWN_KEYS.join(", ")
                ))
            }
        }
        Ok(())
    }

    /// The directory holding the socket and the pidfile, which wsyncd creates (mode 0700) and
    /// hands to the monitors for their ssh control sockets: the socket's parent.
    pub fn runtime_dir(&self) -> Option<&Path> {
        self.daemon_command_socket_path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
    }

    /// Where monitors persist each remote's pending changes (`pending/` next to the registry,
    /// so they survive a daemon restart and a reboot; see `wsync_core::monitor_proto`'s
    /// `start.pending_dir`).
    pub fn pending_dir(&self) -> Option<PathBuf> {
        self.workspace_config_file_path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(|dir| dir.join("pending"))
    }

    /// The pidfile guarding one daemon per config: the socket path with `.pid` appended.
    pub fn pidfile_path(&self) -> PathBuf {
        let mut name = self.daemon_command_socket_path.clone().into_os_string();
        name.push(".pid");
        PathBuf::from(name)
    }
}

/// Every key the config file accepts.
pub const KNOWN_KEYS: &[&str] = &[
    "WorkspaceConfigFilePath",
    "MonitorExecutablePath",
    "DaemonCommandSocketPath",
    "LogDirectory",
    "HookCommand",
    "WatchdogIntervalMs",
    "MonitorRestartLimit",
    "MonitorRestartWindowSecs",
    "MonitorStopGraceMs",
    "SettleMs",
    "MaxLatencyMs",
    "MonitorUnresponsiveTimeoutMs",
    "PathCheckTimeoutMs",
    "ProofIntervalSecs",
    "HookTimeoutMs",
    "WatchMode",
    "PollIntervalMs",
    "Transport",
];

/// The shortest `PollIntervalMs`: below it a walk of a large tree would never rest.
pub const MIN_POLL_INTERVAL_MS: u64 = 100;

fn absolute(key: &str, value: &str) -> Result<PathBuf, String> {
    let path = paths::expand_home(value);
    if !path.is_absolute() {
        return Err(format!(
            "{key} must be an absolute path (or start with ~ or $HOME), found {value:?}"
        ));
    }
    Ok(path)
}

fn number(key: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = value
        .parse()
        .map_err(|_| format!("{key} must be a whole number, found {value:?}"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("{key} must be between {min} and {max}, found {n}"));
    }
    Ok(n)
}

fn millis(key: &str, value: &str, min: u64, max: u64) -> Result<Duration, String> {
    number(key, value, min, max).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/test.config"), text)
    }

    #[test]
    fn parses_keys_comments_and_blank_lines() {
        let c = parse(
            "# comment\n\nWorkspaceConfigFilePath=/a/reg.json\n  LogDirectory = /a/log  \nDaemonCommandSocketPath=/a/s.sock\nMonitorExecutablePath=/bin/mon\nWatchdogIntervalMs=250\n",
        )
        .unwrap();
        assert_eq!(c.workspace_config_file_path, PathBuf::from("/a/reg.json"));
        assert_eq!(c.log_directory, PathBuf::from("/a/log"));
        assert_eq!(c.daemon_command_socket_path, PathBuf::from("/a/s.sock"));
        assert_eq!(c.monitor_executable_path, Some(PathBuf::from("/bin/mon")));
        assert_eq!(c.tuning.watchdog_interval, Duration::from_millis(250));
        assert_eq!(c.pidfile_path(), PathBuf::from("/a/s.sock.pid"));
        assert_eq!(c.runtime_dir(), Some(Path::new("/a")));
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse("# x\nLogDirectory=/l\nColour=blue\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/test.config:3: unknown key \"Colour\""),
            "{e}"
        );
    }

    #[test]
    fn poll_interval_defaults_to_two_seconds_and_bad_values_name_the_bounds() {
        assert_eq!(
            parse("").unwrap().tuning.poll_interval,
            Duration::from_millis(2000)
        );
        let c = parse("PollIntervalMs=250\n").unwrap();
        assert_eq!(c.tuning.poll_interval, Duration::from_millis(250));
        let e = parse("PollIntervalMs=10\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/test.config:1: PollIntervalMs must be between 100 and 600000, found 10 (the poll backend's walk interval, in milliseconds)"
        );
        let e = parse("PollIntervalMs=2s\n").unwrap_err().to_string();
        assert!(
            e.contains("PollIntervalMs must be a whole number, found \"2s\""),
            "{e}"
        );
    }

    #[test]
    fn transport_defaults_to_auto_and_names_the_choices_when_wrong() {
        use crate::registry::Transport;
        assert_eq!(parse("").unwrap().tuning.transport, Transport::Auto);
        let c = parse("Transport=rsync\n").unwrap();
        assert_eq!(c.tuning.transport, Transport::Rsync);
        let e = parse("Transport=agent\n").unwrap_err().to_string();
        assert!(e.contains("use auto or rsync"), "{e}");
    }

    #[test]
    fn watch_mode_defaults_to_auto_and_names_the_choices_when_wrong() {
        assert_eq!(parse("").unwrap().tuning.watch_mode, WatchMode::Auto);
        for (text, mode) in [
            ("auto", WatchMode::Auto),
            ("inotify", WatchMode::Inotify),
            ("notify", WatchMode::Notify),
            ("poll", WatchMode::Poll),
        ] {
            let c = parse(&format!("WatchMode={text}\n")).unwrap();
            assert_eq!(c.tuning.watch_mode, mode);
        }
        let e = parse("WatchMode=fsevents\n").unwrap_err().to_string();
        assert!(
            e.contains(
                ":1: WatchMode must be one of auto, inotify, notify, poll, found \"fsevents\""
            ),
            "{e}"
        );
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let e = parse("LogDirectory=/l\njust words\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/test.config:2: expected KEY=VALUE"),
            "{e}"
        );
        let e = parse("LogDirectory=\n").unwrap_err().to_string();
        assert!(e.contains(":1: LogDirectory has an empty value"), "{e}");
        let e = parse("=x\n").unwrap_err().to_string();
        assert!(e.contains(":1: missing key"), "{e}");
    }

    #[test]
    fn relative_paths_and_bad_numbers_are_rejected() {
        let e = parse("LogDirectory=log\n").unwrap_err().to_string();
        assert!(e.contains("must be an absolute path"), "{e}");
        let e = parse("MonitorRestartLimit=lots\n").unwrap_err().to_string();
        assert!(e.contains("whole number"), "{e}");
        let e = parse("WatchdogIntervalMs=1\n").unwrap_err().to_string();
        assert!(e.contains("between 10 and 60000"), "{e}");
        let e = parse("MonitorUnresponsiveTimeoutMs=10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("between 1000 and 3600000"), "{e}");
    }

    #[test]
    fn liveness_deadlines_default_and_parse() {
        let c = parse("").unwrap();
        assert_eq!(
            c.tuning.monitor_unresponsive_timeout,
            Duration::from_secs(30)
        );
        assert_eq!(c.tuning.path_check_timeout, Duration::from_secs(10));
        let c = parse("MonitorUnresponsiveTimeoutMs=8000\nPathCheckTimeoutMs=500\n").unwrap();
        assert_eq!(
            c.tuning.monitor_unresponsive_timeout,
            Duration::from_secs(8)
        );
        assert_eq!(c.tuning.path_check_timeout, Duration::from_millis(500));
    }

    #[test]
    fn hook_command_is_optional_and_absolute() {
        assert_eq!(parse("").unwrap().hook_command, None);
        let c = parse("HookCommand=/usr/local/bin/notify\n").unwrap();
        assert_eq!(c.hook_command, Some(PathBuf::from("/usr/local/bin/notify")));
        let e = parse("HookCommand=notify-send\n").unwrap_err().to_string();
        assert!(e.contains("HookCommand must be an absolute path"), "{e}");
    }

    #[test]
    fn home_expansion_applies_to_values() {
        let c = parse("LogDirectory=~/logs\nWorkspaceConfigFilePath=$HOME/r.json\n").unwrap();
        assert_eq!(c.log_directory, paths::home_dir().join("logs"));
        assert_eq!(
            c.workspace_config_file_path,
            paths::home_dir().join("r.json")
        );
    }

    #[test]
    fn missing_file_gives_defaults_unless_explicit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("none.config");
        let c = Config::load_from(&file, false).unwrap();
        assert_eq!(c, Config::defaults(file.clone()));
        assert!(c
            .workspace_config_file_path
            .ends_with(".wsync/wsync-ws-config.json"));
        assert!(c.log_directory.ends_with(".wsync/log"));
        assert!(c.daemon_command_socket_path.ends_with("wsyncd.sock"));
        assert!(matches!(
            Config::load_from(&file, true),
            Err(ConfigError::Missing { .. })
        ));
    }

    #[test]
    fn symlinked_config_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.config");
        std::fs::write(&real, "LogDirectory=/l\n").unwrap();
        let link = dir.path().join("link.config");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            Config::load_from(&link, true),
            Err(ConfigError::Symlink { .. })
        ));
    }

    #[test]
    fn a_fifo_config_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("cfg");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            Config::load_from(&fifo, true),
            Err(ConfigError::NotAFile { .. })
        ));
    }
}
