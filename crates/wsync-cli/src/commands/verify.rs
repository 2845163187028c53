//! `wsync verify WORKSPACE [REMOTE-NAME]`: compare a workspace with its remotes by content and
//! list the drift, changing nothing.
//!
//! For each remote the CLI itself runs rsync in its dry-run verify mode (the argv comes from
//! the one builder, `wsync_core::rsync`, plus `--checksum` so contents are compared, not sizes
//! and times), as an argv vector without a shell, and classifies rsync's `--itemize-changes`
//! lines: missing on the remote, different content, extra on the remote, or attributes only.
//!
//! With `--repair`, drift found is handed to the monitor as a checksum resync (request
//! `repair`: a full sync with `--checksum` that passes the same gates as every sync — protect
//! rules, the target marker, the deletion budget), waited for with a flush, and compared
//! again: the report says what was fixed and what is left.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use wsync_core::excludes::{excluded_entries, write_rules, Excludes};
use wsync_core::protocol::{Request, Response};
use wsync_core::registry::{Remote, Workspace};
use wsync_core::remote::RemoteTarget;
use wsync_core::rsync::{
    classify_exit, rsync_argv, ExitClass, RsyncMode, RsyncRequest, DEFAULT_TIMEOUT_SECS,
};
use wsync_core::ssh::SshEndpoint;

use super::workspace::{list_workspaces, resolve, FLUSH_ANSWER_MARGIN};
use super::Ctx;
use crate::cli::VerifyArgs;
use crate::error::CliError;
use crate::exit_codes;
use crate::output::{print, print_json};
use crate::progress::Progress;

pub use wsync_core::rsync::{parse_itemized, Drift};

/// The rsync argv comparing `workspace` with `remote`: the builder's dry-run verify mode
/// (`--delete --dry-run --itemize-changes`) with `--checksum`.
///
/// `rules` is the rules file written from the workspace's excludes by the same matcher the
/// monitor uses (anchored excludes and protect rules), so verify compares exactly what syncing
/// transfers and deletes: a remote path the excludes re-include (`!keep.log`) but the
/// workspace no longer has is reported as extra.
pub fn verify_argv(
    workspace: &Workspace,
    target: &RemoteTarget,
    rules: Option<&Path>,
) -> Vec<OsString> {
    rsync_argv(&RsyncRequest {
        source_root: &workspace.path,
        target,
        // No multiplexing master for a one-off run: ControlPath=none.
        control_path: None,
        mode: RsyncMode::Verify,
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        excludes: &[],
        // The rules file carries the protect rules too.
        protect: &[],
        max_delete: None,
        exclude_from: rules,
        report_transfer_done: false,
        progress: false,
        // Compares whatever is there; a missing marker is the monitor's business.
        marker_id: None,
        backup_dir: None,
        checksum: true,
        remote_rsync: None,
        no_delete_missing_args: false,
        deletion_rules: None,
    })
}

/// One remote's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteReport {
    pub remote: String,
    pub target: String,
    pub in_sync: bool,
    #[serde(flatten)]
    pub drift: Drift,
    /// Set when the comparison itself failed (then the lists may be incomplete).
    pub error: Option<String>,
    /// What to do about `error`.
    #[serde(skip)]
    pub hint: Option<String>,
}

fn compare(workspace: &Workspace, remote: &Remote, rules: &Path) -> RemoteReport {
    let mut report = RemoteReport {
        remote: remote.name.clone(),
        target: remote.target.to_string(),
        in_sync: false,
        drift: Drift::default(),
        error: None,
        hint: None,
    };
    let argv = verify_argv(workspace, &remote.target, Some(rules));
    tracing::debug!(?argv, "running rsync");
    let output = match Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            report.error = Some(format!("cannot run rsync: {e}"));
            report.hint = Some("install rsync (e.g. `sudo apt-get install rsync`)".into());
            return report;
        }
    };
    report.drift = parse_itemized(&String::from_utf8_lossy(&output.stdout));
    let class = classify_exit(output.status.code());
    if matches!(class, ExitClass::Success | ExitClass::Vanished) {
        report.in_sync = report.drift.in_sync();
        return report;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    report.error = Some(format!(
        "rsync exited with {}: {}",
        output.status,
        lines[lines.len().saturating_sub(3)..].join("; ")
    ));
    report.hint = Some(match (SshEndpoint::from_target(&remote.target), class) {
        (Some(ssh), ExitClass::Connection) => format!(
            "check that `ssh -o BatchMode=yes {}{} true` logs in without a prompt (wsync never prompts)",
            ssh.port.map(|p| format!("-p {p} ")).unwrap_or_default(),
            ssh.user_host(false)
        ),
        _ => format!(
            "see `wsync status {}` for the state of its remotes",
            workspace.name
        ),
    });
    report
}

/// The human-readable report of one remote.
pub fn render(report: &RemoteReport, attributes: bool) -> String {
    let d = &report.drift;
    let verdict = match (&report.error, report.in_sync) {
        (Some(_), _) => "could not compare".to_owned(),
        (None, true) => "in sync".to_owned(),
        (None, false) => match d.count() {
            1 => "1 difference".to_owned(),
            n => format!("{n} differences"),
        },
    };
    let mut out = format!("{} ({}): {verdict}\n", report.remote, report.target);
    for (label, paths) in [
        ("missing ", &d.missing),
        ("differs ", &d.differs),
        ("extra   ", &d.extra),
    ] {
        for path in paths {
            out.push_str(&format!("  {label} {path}\n"));
        }
    }
    if attributes {
        for path in &d.attributes {
            out.push_str(&format!("  attrs    {path}\n"));
        }
    } else if !d.attributes.is_empty() {
        out.push_str(&format!(
            "  ({} with the same content but other times or permissions; --attributes lists them)\n",
            d.attributes.len()
        ));
    }
    if let Some(error) = &report.error {
        out.push_str(&format!("  error: {error}\n"));
    }
    out
}

pub(super) fn find<'a>(workspaces: &'a [Workspace], name_or_path: &str) -> Option<&'a Workspace> {
    workspaces
        .iter()
        .find(|w| w.name == name_or_path || w.path == Path::new(name_or_path))
}

pub fn verify(ctx: &Ctx, args: VerifyArgs) -> Result<i32> {
    let VerifyArgs {
        workspace,
        remote,
        json,
        attributes,
        repair,
        timeout,
    } = args;
    let remote = remote.as_deref();
    let mut client = ctx.connect()?;
    let name = resolve(&mut client, &workspace)?;
    let workspaces = list_workspaces(&mut client)?;
    drop(client);
    let Some(ws) = find(&workspaces, &name) else {
        return Err(CliError::new(
            exit_codes::NOT_FOUND,
            format!("no workspace named or containing {workspace:?}"),
        )
        .with_hint("`wsync list` shows the workspaces")
        .into());
    };
    let remotes: Vec<&Remote> = ws
        .remotes
        .iter()
        .filter(|r| remote.is_none_or(|name| r.name == name))
        .collect();
    if remotes.is_empty() {
        let names: Vec<&str> = ws.remotes.iter().map(|r| r.name.as_str()).collect();
        let (message, hint) = match remote {
            Some(r) => (
                format!("workspace {} has no remote named {r:?}", ws.name),
                format!("its remotes: {}", names.join(", ")),
            ),
            None => (
                format!("workspace {} has no remotes", ws.name),
                format!("attach one with `wsync attach {} <REMOTE>`", ws.name),
            ),
        };
        return Err(CliError::new(exit_codes::NOT_FOUND, message)
            .with_hint(hint)
            .into());
    }
    if !ws.path.is_dir() {
        return Err(CliError::new(
            exit_codes::FAILURE,
            format!(
                "the directory of workspace {} ({}) is missing",
                ws.name,
                ws.path.display()
            ),
        )
        .with_hint("restore it (syncing is halted meanwhile), or `wsync remove` the workspace")
        .into());
    }
    let rules_dir = tempfile::tempdir()?;
    let rules = rules_dir.path().join("excludes");
    let mut excludes = Excludes::new(&ws.path, &ws.excludes, ws.respect_gitignore);
    // One walk reads every ignore file: the excluded entries, then what the remote keeps.
    let excluded = excluded_entries(&ws.path, &mut excludes)?;
    write_rules(&rules, &excluded, &excludes.protect_rules())?;
    let compare_all = |quiet: bool| -> Result<Vec<RemoteReport>> {
        let mut reports = Vec::new();
        for r in &remotes {
            let progress =
                Progress::spinner(format!("comparing {} with {} by checksum", ws.name, r.name));
            let report = compare(ws, r, &rules);
            drop(progress);
            if !quiet {
                print(&render(&report, attributes))?;
            }
            reports.push(report);
        }
        Ok(reports)
    };
    let reports = compare_all(json)?;
    let drifted = reports.iter().all(|r| r.error.is_none()) && reports.iter().any(|r| !r.in_sync);
    if !repair || !drifted {
        if json {
            print_json(&reports)?;
        }
        return outcome(&ws.name, &reports);
    }
    run_repair(ctx, &ws.name, remote, timeout)?;
    let after = compare_all(true)?;
    let repairs: Vec<RepairReport> = reports
        .into_iter()
        .zip(after)
        .map(|(before, after)| RepairReport::new(before, after))
        .collect();
    if json {
        print_json(&repairs)?;
    } else {
        for r in &repairs {
            print(&r.render(attributes))?;
        }
    }
    let after: Vec<RemoteReport> = repairs.into_iter().map(|r| r.after).collect();
    outcome(&ws.name, &after)
}

/// Asks the monitor for a checksum resync and waits for it to land (a flush numbered after
/// it).
fn run_repair(ctx: &Ctx, workspace: &str, remote: Option<&str>, timeout_secs: u64) -> Result<()> {
    let mut client = ctx.connect()?;
    let progress = Progress::spinner(format!(
        "repairing {workspace}: full sync by checksum{}",
        remote.map(|r| format!(" to {r}")).unwrap_or_default()
    ));
    client.call(&Request::Repair {
        workspace: workspace.to_owned(),
        remote: remote.map(str::to_owned),
    })?;
    client.set_timeout(Duration::from_secs(timeout_secs) + FLUSH_ANSWER_MARGIN)?;
    let answer = client.call(&Request::Flush {
        workspace: workspace.to_owned(),
        timeout_ms: Some(timeout_secs.saturating_mul(1000)),
    })?;
    drop(progress);
    if let Response::Flushed { lagging, .. } = answer {
        if !lagging.is_empty() {
            tracing::info!(?lagging, "remotes still lagging after the repair");
        }
    }
    Ok(())
}

/// What `--repair` did to one remote: the drift before, what is left, what was fixed.
#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    pub remote: String,
    pub target: String,
    /// In sync now.
    pub in_sync: bool,
    /// The drift found before the repair that is gone now.
    pub fixed: Drift,
    /// The drift still there (state `halted` in `wsync status` when the deletion budget
    /// stopped the repair).
    pub left: Drift,
    pub error: Option<String>,
    #[serde(skip)]
    after: RemoteReport,
}

impl RepairReport {
    fn new(before: RemoteReport, after: RemoteReport) -> Self {
        let gone = |was: &[String], now: &[String]| -> Vec<String> {
            was.iter().filter(|p| !now.contains(p)).cloned().collect()
        };
        let (b, a) = (&before.drift, &after.drift);
        Self {
            remote: after.remote.clone(),
            target: after.target.clone(),
            in_sync: after.in_sync,
            fixed: Drift {
                missing: gone(&b.missing, &a.missing),
                differs: gone(&b.differs, &a.differs),
                extra: gone(&b.extra, &a.extra),
                attributes: gone(&b.attributes, &a.attributes),
            },
            left: a.clone(),
            error: after.error.clone(),
            after,
        }
    }

    fn render(&self, attributes: bool) -> String {
        let f = &self.fixed;
        let mut out = format!(
            "{} ({}): repaired {} (missing {}, differs {}, extra {})\n",
            self.remote,
            self.target,
            f.count(),
            f.missing.len(),
            f.differs.len(),
            f.extra.len()
        );
        for (label, paths) in [
            ("sent    ", &f.missing),
            ("fixed   ", &f.differs),
            ("deleted ", &f.extra),
        ] {
            for path in paths {
                out.push_str(&format!("  {label} {path}\n"));
            }
        }
        if !self.after.in_sync || self.after.error.is_some() {
            out.push_str("still: ");
            out.push_str(&render(&self.after, attributes));
        }
        out
    }
}

/// The exit: a failed comparison beats drift, which beats success.
fn outcome(workspace: &str, reports: &[RemoteReport]) -> Result<i32> {
    if let Some(failed) = reports.iter().find(|r| r.error.is_some()) {
        let mut err = CliError::new(
            exit_codes::FAILURE,
            format!(
                "could not compare workspace {workspace} with remote {}: {}",
                failed.remote,
                failed.error.as_deref().unwrap_or_default()
            ),
        );
        if let Some(hint) = &failed.hint {
            err = err.with_hint(hint.clone());
        }
        return Err(err.into());
    }
    let drifted: Vec<&str> = reports
        .iter()
        .filter(|r| !r.in_sync)
        .map(|r| r.remote.as_str())
        .collect();
    if drifted.is_empty() {
        return Ok(exit_codes::OK);
    }
    Err(CliError::new(
        exit_codes::DRIFT,
        format!(
            "workspace {workspace} differs from {}: {}",
            if drifted.len() == 1 { "remote" } else { "remotes" },
            drifted.join(", ")
        ),
    )
    .with_hint(format!(
        "changes still in flight show up too: run `wsync flush {workspace}` first; if the drift stays, `wsync restart {workspace}` makes the monitor do a full sync"
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_itemized_changes() {
        let out = "\
created directory /srv/m
.d..t...... ./
>f+++++++++ new.txt
cd+++++++++ newdir/
cL+++++++++ link -> target
>fc.t...... changed.txt
>f.st...... grown.txt
cLc.t...... moved-link -> elsewhere
.f...p..... mode-only.sh
.f..t...... touched.txt
*deleting   old.log
*deleting   gone/
.f          unchanged-with-itemize-all
Number of files: 12 (reg: 9, dir: 3)
Total bytes sent: 1,234
sent 1,234 bytes  received 56 bytes
";
        let d = parse_itemized(out);
        assert_eq!(d.missing, ["new.txt", "newdir/", "link -> target"]);
        assert_eq!(
            d.differs,
            ["changed.txt", "grown.txt", "moved-link -> elsewhere"]
        );
        assert_eq!(d.extra, ["old.log", "gone/"]);
        assert_eq!(d.attributes, ["./", "mode-only.sh", "touched.txt"]);
        assert!(!d.in_sync());
        let only_attrs = parse_itemized(".d..t...... ./\n.f...p..... x\n");
        assert!(only_attrs.in_sync());
        assert!(parse_itemized("").in_sync());
    }

    #[test]
    fn argv_compares_by_checksum_in_a_dry_run_without_a_shell() {
        let ws = Workspace {
            name: "w".into(),
            id: String::new(),
            path: "/src/w".into(),
            remotes: vec![],
            paused: false,
            excludes: vec!["target/".into()],
            respect_gitignore: true,
            max_delete: Some(3),
            checksum_every_secs: None,
            tuning: Default::default(),
            root_id: None,
        };
        let target = RemoteTarget::Local {
            path: "/srv/m".into(),
        };
        let argv: Vec<String> = verify_argv(&ws, &target, Some(Path::new("/run/rules")))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(&argv[..2], ["rsync", "-a"]);
        for flag in [
            "--checksum",
            "--dry-run",
            "--itemize-changes",
            "--delete",
            "--from0",
            "--filter=merge /run/rules",
        ] {
            assert!(argv.contains(&flag.to_owned()), "{flag} in {argv:?}");
        }
        assert!(!argv.iter().any(|a| a.starts_with("--max-delete")));
        assert_eq!(&argv[argv.len() - 3..], ["--", "/src/w/", "/srv/m/"]);
    }

    fn report(drift: Drift, error: Option<&str>) -> RemoteReport {
        RemoteReport {
            remote: "m".into(),
            target: "/srv/m".into(),
            in_sync: error.is_none() && drift.in_sync(),
            drift,
            error: error.map(str::to_owned),
            hint: None,
        }
    }

    #[test]
    fn renders_and_exits_by_verdict() {
        let clean = report(Drift::default(), None);
        assert_eq!(render(&clean, false), "m (/srv/m): in sync\n");
        assert_eq!(
            outcome("w", std::slice::from_ref(&clean)).unwrap(),
            exit_codes::OK
        );
        let drift = report(
            Drift {
                missing: vec!["a".into()],
                extra: vec!["b".into()],
                attributes: vec!["c".into()],
                ..Drift::default()
            },
            None,
        );
        let text = render(&drift, false);
        assert!(text.starts_with("m (/srv/m): 2 differences\n  missing  a\n  extra    b\n"));
        assert!(text.contains("--attributes lists them"), "{text}");
        assert!(render(&drift, true).contains("  attrs    c\n"));
        let err = outcome("w", &[clean.clone(), drift]).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), exit_codes::DRIFT);
        assert!(err.to_string().contains("differs from remote: m"), "{err}");
        let broken = report(Drift::default(), Some("rsync exited with 255"));
        assert!(render(&broken, false).contains("could not compare"));
        let err = outcome("w", &[broken]).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), exit_codes::FAILURE);
    }
}
