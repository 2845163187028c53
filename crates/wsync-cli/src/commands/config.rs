//! `wsync config --paths [--json]` and `wsync config --path NAME`: the paths the config file in
//! effect resolves to, so that scripts (scripts/setup.sh) ask wsync instead of parsing it.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::ser::{Serialize, SerializeMap, Serializer};
use wsync_core::config::Config;

use super::Ctx;
use crate::cli::{ConfigArgs, PathName};
use crate::exit_codes;
use crate::output::{print, print_json};

/// One resolved path: which, its label in the text output, and its value (`None` when unset).
struct Entry {
    name: PathName,
    label: &'static str,
    /// What an unset value means, for the text output.
    unset: &'static str,
    path: Option<PathBuf>,
}

/// Every path the config resolves, in the order they are shown.
fn entries(config: &Config) -> Vec<Entry> {
    let entry = |name, label, unset, path: Option<&Path>| Entry {
        name,
        label,
        unset,
        path: path.map(Path::to_owned),
    };
    vec![
        entry(PathName::ConfigFile, "config file", "", Some(&config.file)),
        entry(
            PathName::Registry,
            "registry",
            "",
            Some(&config.workspace_config_file_path),
        ),
        entry(
            PathName::Socket,
            "socket",
            "",
            Some(&config.daemon_command_socket_path),
        ),
        entry(
            PathName::PidFile,
            "pid file",
            "",
            Some(&config.pidfile_path()),
        ),
        entry(
            PathName::RuntimeDirectory,
            "runtime directory",
            "none",
            config.runtime_dir(),
        ),
        entry(
            PathName::LogDirectory,
            "log directory",
            "",
            Some(&config.log_directory),
        ),
        entry(
            PathName::MonitorExecutable,
            "monitor executable",
            "not set: wsync-monitor next to wsyncd, else on PATH",
            config.monitor_executable_path.as_deref(),
        ),
        entry(
            PathName::HookCommand,
            "hook command",
            "not set",
            config.hook_command.as_deref(),
        ),
    ]
}

/// The `--json` object: one key per entry, in order, `null` when unset.
struct Report<'a>(&'a [Entry]);

impl Serialize for Report<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for e in self.0 {
            map.serialize_entry(&e.name.key(), &e.path)?;
        }
        map.end()
    }
}

/// The text output: `label:` and the path, aligned; a missing config file says so.
fn render(entries: &[Entry]) -> String {
    let width = entries.iter().map(|e| e.label.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for e in entries {
        let value = match &e.path {
            Some(p) if e.name == PathName::ConfigFile && !p.exists() => {
                format!("{} (not found: every default applies)", p.display())
            }
            Some(p) => p.display().to_string(),
            None => format!("({})", e.unset),
        };
        out.push_str(&format!(
            "{:<width$} {value}\n",
            format!("{}:", e.label),
            width = width
        ));
    }
    out
}

pub fn show(ctx: &Ctx, args: ConfigArgs) -> Result<i32> {
    let entries = entries(&ctx.config);
    if let Some(name) = args.path {
        // Alone on its line for `$(wsync config --path NAME)`; nothing at all when unset.
        if let Some(path) = entries
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.path.as_ref())
        {
            print(&format!("{}\n", path.display()))?;
        }
    } else if args.json {
        print_json(&Report(&entries))?;
    } else {
        print(&render(&entries))?;
    }
    Ok(exit_codes::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    fn config() -> Config {
        Config::parse(
            Path::new("/cfg/wsync.config"),
            "WorkspaceConfigFilePath=/r/reg.json\nDaemonCommandSocketPath=/run/w/s.sock\nLogDirectory=/l\nHookCommand=/bin/hook\n",
        )
        .unwrap()
    }

    #[test]
    fn every_path_name_has_one_entry_in_order() {
        let names: Vec<PathName> = entries(&config()).iter().map(|e| e.name).collect();
        assert_eq!(names, PathName::value_variants());
    }

    #[test]
    fn json_has_a_key_per_path_and_null_for_unset_ones() {
        let json = serde_json::to_value(Report(&entries(&config()))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "config_file": "/cfg/wsync.config",
                "registry": "/r/reg.json",
                "socket": "/run/w/s.sock",
                "pid_file": "/run/w/s.sock.pid",
                "runtime_directory": "/run/w",
                "log_directory": "/l",
                "monitor_executable": null,
                "hook_command": "/bin/hook",
            })
        );
        let text = serde_json::to_string(&Report(&entries(&config()))).unwrap();
        assert!(
            text.starts_with("{\"config_file\":"),
            "keys keep their order: {text}"
        );
    }

    #[test]
    fn text_aligns_labels_and_explains_unset_paths() {
        let text = render(&entries(&config()));
        assert!(
            text.contains("\nregistry:           /r/reg.json\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "\nmonitor executable: (not set: wsync-monitor next to wsyncd, else on PATH)\n"
            ),
            "{text}"
        );
        assert!(
            text.starts_with("config file:        /cfg/wsync.config (not found"),
            "{text}"
        );
    }
}
