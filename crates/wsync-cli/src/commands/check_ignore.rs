//! `wsync check-ignore PATH...`: whether each path is excluded from syncing, and by which rule,
//! decided by the same matcher the monitor uses (`wsync_core::excludes`), like
//! `git check-ignore -v`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;
use wsync_core::excludes::{ExcludeMatch, Excludes};

use super::workspace::{containing, list_workspaces};
use super::Ctx;
use crate::cli::CheckIgnoreArgs;
use crate::error::CliError;
use crate::exit_codes;
use crate::output::{print, print_json};

/// The verdict for one path.
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub path: PathBuf,
    pub workspace: String,
    pub excluded: bool,
    /// The deciding rule: `source:line: pattern`, or `None` when no rule matches.
    pub rule: Option<String>,
    /// The excluded ancestor directory when the path is excluded through it.
    pub via: Option<PathBuf>,
}

pub fn check_ignore(ctx: &Ctx, args: CheckIgnoreArgs) -> Result<i32> {
    let CheckIgnoreArgs { paths, json } = args;
    let mut client = ctx.connect()?;
    let workspaces = list_workspaces(&mut client)?;
    drop(client);
    let mut verdicts = Vec::new();
    for arg in &paths {
        let path = resolve_path(arg)?;
        let Some(ws) = containing(&workspaces, &path) else {
            return Err(CliError::new(
                exit_codes::NOT_FOUND,
                format!("{} is not inside any workspace", arg.display()),
            )
            .with_hint("`wsync list` shows the workspaces and their directories")
            .into());
        };
        let rel = path.strip_prefix(&ws.path).unwrap_or(Path::new(""));
        let is_dir = path.is_dir() || arg.as_os_str().as_encoded_bytes().ends_with(b"/");
        let decided = if rel.as_os_str().is_empty() {
            None // the root itself is always synced
        } else {
            Excludes::new(&ws.path, &ws.excludes, ws.respect_gitignore).explain(rel, is_dir)
        };
        verdicts.push(verdict(path.clone(), &ws.name, rel, decided));
    }
    if json {
        print_json(&verdicts)?;
    } else {
        for v in &verdicts {
            print(&format!("{}\n", describe(v)))?;
        }
    }
    Ok(if verdicts.iter().any(|v| v.excluded) {
        exit_codes::OK
    } else {
        exit_codes::NOT_EXCLUDED
    })
}

/// Absolute and canonical where it exists (the last component may not exist yet).
fn resolve_path(arg: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(arg)?;
    if let Ok(canonical) = abs.canonicalize() {
        return Ok(canonical);
    }
    Ok(wsync_core::paths::canonicalize_lenient(&abs)?)
}

fn verdict(path: PathBuf, workspace: &str, rel: &Path, decided: Option<ExcludeMatch>) -> Verdict {
    let excluded = decided.as_ref().is_some_and(|m| m.excluded);
    let via = decided
        .as_ref()
        .filter(|m| m.path != rel)
        .map(|m| m.path.clone());
    let rule = decided.map(|m| {
        let bang = if m.excluded { "" } else { "!" };
        format!("{}:{}: {bang}{}", m.source, m.line, m.pattern)
    });
    Verdict {
        path,
        workspace: workspace.to_owned(),
        excluded,
        rule,
        via,
    }
}

/// One line a person reads.
pub fn describe(v: &Verdict) -> String {
    let path = v.path.display();
    match (&v.rule, v.excluded, &v.via) {
        (Some(rule), true, Some(dir)) => {
            format!(
                "{path}: excluded (its directory {} matches {rule})",
                dir.display()
            )
        }
        (Some(rule), true, None) => format!("{path}: excluded by {rule}"),
        (Some(rule), false, _) => format!("{path}: synced (re-included by {rule})"),
        (None, _, _) => format!("{path}: synced (no rule matches)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsync_core::excludes::ExcludeSource;

    #[test]
    fn describes_each_kind_of_verdict() {
        let m = |path: &str, excluded| ExcludeMatch {
            path: path.into(),
            source: ExcludeSource::File("/w/.wsyncignore".into()),
            line: 3,
            pattern: "target/".into(),
            excluded,
        };
        let v = verdict(
            "/w/target/x".into(),
            "w",
            Path::new("target/x"),
            Some(m("target", true)),
        );
        assert_eq!(
            describe(&v),
            "/w/target/x: excluded (its directory target matches /w/.wsyncignore:3: target/)"
        );
        let v = verdict(
            "/w/target".into(),
            "w",
            Path::new("target"),
            Some(m("target", true)),
        );
        assert_eq!(
            describe(&v),
            "/w/target: excluded by /w/.wsyncignore:3: target/"
        );
        let v = verdict(
            "/w/keep".into(),
            "w",
            Path::new("keep"),
            Some(m("keep", false)),
        );
        assert_eq!(
            describe(&v),
            "/w/keep: synced (re-included by /w/.wsyncignore:3: !target/)"
        );
        let v = verdict("/w/a".into(), "w", Path::new("a"), None);
        assert_eq!(describe(&v), "/w/a: synced (no rule matches)");
    }
}
