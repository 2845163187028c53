//! `wsync logs [WORKSPACE] [-f]`: print or follow the daemon's log, or a workspace monitor's.
//!
//! Log files are daily-rolled (`wsync_core::logfile`) in LogDirectory: `wsyncd.log.<date>` for the
//! daemon and `monitor-<workspace>.log.<date>` for monitors (names owned by wsyncd and
//! wsync-monitor); the newest file is the current one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::workspace::resolve;
use super::Ctx;
use crate::cli::LogsArgs;
use crate::client::Client;
use crate::error::CliError;
use crate::exit_codes;
use crate::output::print;

/// How often `--follow` looks for new lines and newer files.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// The file-name prefix of the log for the daemon (`None`) or a workspace's monitor.
pub fn prefix(workspace: Option<&str>) -> String {
    match workspace {
        None => "wsyncd.log".into(),
        Some(name) => format!("monitor-{name}.log"),
    }
}

/// The newest log file in `dir` named `<prefix>` or `<prefix>.<date>`.
pub fn latest(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let dated = format!("{prefix}.");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name == prefix || name.starts_with(&dated)
        })
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .max_by(|a, b| a.file_name().cmp(&b.file_name()))
}

/// The last `n` lines of `text`, each ending with a newline.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The workspace's name: resolved by the daemon when it runs, else the argument as given.
fn workspace_name(ctx: &Ctx, arg: &str) -> Result<String> {
    match Client::probe(&ctx.config.daemon_command_socket_path)? {
        Some(mut client) => resolve(&mut client, arg),
        None => Ok(arg.to_owned()),
    }
}

pub fn logs(ctx: &Ctx, args: LogsArgs) -> Result<i32> {
    let LogsArgs {
        workspace,
        follow,
        lines,
    } = args;
    let name = workspace.map(|w| workspace_name(ctx, &w)).transpose()?;
    let dir = &ctx.config.log_directory;
    let prefix = prefix(name.as_deref());
    let Some(mut path) = latest(dir, &prefix) else {
        let whose = match &name {
            Some(n) => format!("the monitor of workspace {n}"),
            None => "wsyncd".into(),
        };
        return Err(CliError::new(
            exit_codes::NOT_FOUND,
            format!(
                "no log of {whose} in {} (looked for {prefix}.*)",
                dir.display()
            ),
        )
        .with_hint("logs appear once the process has run; check LogDirectory in the config file")
        .into());
    };
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    print(&tail(&String::from_utf8_lossy(&text), lines))?;
    if !follow {
        return Ok(exit_codes::OK);
    }
    let mut offset = u64::try_from(text.len()).unwrap_or(u64::MAX);
    loop {
        std::thread::sleep(FOLLOW_POLL);
        if let Some(newer) = latest(dir, &prefix).filter(|p| *p != path) {
            path = newer;
            offset = 0;
        }
        let Ok(mut file) = File::open(&path) else {
            continue;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0; // truncated or replaced
        }
        if len == offset {
            continue;
        }
        let mut chunk = Vec::new();
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.take(len - offset).read_to_end(&mut chunk))
            .with_context(|| format!("reading {}", path.display()))?;
        offset += u64::try_from(chunk.len()).unwrap_or(0);
        print(&String::from_utf8_lossy(&chunk))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_newest_dated_file_of_the_right_process() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "wsyncd.log.2026-01-01",
            "wsyncd.log.2026-01-02",
            "monitor-web.log.2026-01-03",
            "monitor-web2.log.2026-01-04",
            "wsyncd.stderr.log",
        ] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let name = |p: Option<PathBuf>| {
            p.and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        };
        assert_eq!(
            name(latest(dir.path(), &prefix(None))).as_deref(),
            Some("wsyncd.log.2026-01-02")
        );
        assert_eq!(
            name(latest(dir.path(), &prefix(Some("web")))).as_deref(),
            Some("monitor-web.log.2026-01-03")
        );
        assert_eq!(latest(dir.path(), &prefix(Some("nope"))), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb", 5), "a\nb\n");
        assert_eq!(tail("", 5), "");
    }
}
