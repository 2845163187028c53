//! `wsync generate-docs DIR` (hidden): writes the shell completion scripts to DIR/completions
//! and the man pages (`wsync.1` and one per subcommand) to DIR/man, all generated from the
//! clap definition. scripts/gen-docs.sh runs it on the repository root; tests/e2e/cli_ux.rs fails
//! when the committed files differ from a fresh run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, GenerateDocsArgs};
use crate::exit_codes;
use crate::output::println;

/// The shells completions are committed for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes every completion script and man page below `dir`; returns the files written.
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>> {
    let completions = dir.join("completions");
    let man = dir.join("man");
    for sub in [&completions, &man] {
        std::fs::create_dir_all(sub).with_context(|| format!("creating {}", sub.display()))?;
    }
    let mut written = Vec::new();
    for shell in SHELLS {
        let path = clap_complete::generate_to(shell, &mut Cli::command(), "wsync", &completions)
            .with_context(|| format!("writing the {shell} completions"))?;
        written.push(path);
    }
    // Pages of subcommands that no longer exist must not linger.
    for entry in std::fs::read_dir(&man).with_context(|| format!("reading {}", man.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    write_pages(&root, &man)?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "1"))
        .collect();
    pages.sort();
    written.extend(pages);
    Ok(written)
}

/// Writes the man page of `cmd` and of each visible subcommand, recursively.
fn write_pages(cmd: &clap::Command, dir: &Path) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut page)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut page)?;
    }
    if let Some(after) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        page.extend_from_slice(after_help_roff(&after.to_string()).as_bytes());
    }
    man.render_version_section(&mut page)?;
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))
}

/// A short line ending in `:` with nothing indented, such as `Examples:` or `Exit codes:`.
fn is_heading(line: &str) -> bool {
    line.strip_suffix(':').is_some_and(|title| {
        title.starts_with(|c: char| c.is_ascii_uppercase())
            && title.chars().all(|c| c.is_ascii_alphabetic() || c == ' ')
            && title.split_whitespace().count() <= 3
    })
}

/// The after-help text as man sections: each heading line (`Examples:`) starts a section,
/// text before the first one is NOTES, and everything is kept as laid out (no-fill), since it
/// holds tables, JSON and command lines.
pub fn after_help_roff(text: &str) -> String {
    let mut out = String::new();
    let mut open = false;
    for line in text.lines() {
        if is_heading(line) {
            if open {
                out.push_str(".fi\n");
            }
            let title = line.trim_end_matches(':').to_uppercase();
            out.push_str(&format!(".SH {title}\n.nf\n"));
            open = true;
            continue;
        }
        if !open {
            out.push_str(".SH NOTES\n.nf\n");
            open = true;
        }
        let escaped = line.replace('\\', "\\e").replace('-', "\\-");
        if escaped.starts_with('.') || escaped.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&escaped);
        out.push('\n');
    }
    if open {
        out.push_str(".fi\n");
    }
    out
}

/// `wsync generate-docs DIR`: writes everything and lists what it wrote.
pub fn generate(args: GenerateDocsArgs) -> Result<i32> {
    for path in write_all(&args.dir)? {
        println(&format!("wrote {}", path.display()))?;
    }
    Ok(exit_codes::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_completions_and_a_page_per_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("man")).unwrap();
        std::fs::write(dir.path().join("man/wsync-gone.1"), "old").unwrap();
        let written = write_all(dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for name in [
            "wsync.bash",
            "_wsync",
            "wsync.fish",
            "wsync.1",
            "wsync-verify.1",
            "wsync-daemon-start.1",
        ] {
            assert!(names.contains(&name.to_owned()), "{name} in {names:?}");
        }
        assert!(!names
            .iter()
            .any(|n| n.contains("generate-docs") || n == "wsync-gone.1"));
        let page = std::fs::read_to_string(dir.path().join("man/wsync-verify.1")).unwrap();
        assert!(
            page.contains(".SH EXAMPLES\n.nf\n  wsync verify project\n"),
            "{page}"
        );
        let main = std::fs::read_to_string(dir.path().join("man/wsync.1")).unwrap();
        for section in [
            ".SH EXAMPLES",
            ".SH ENVIRONMENT",
            ".SH EXIT CODES",
            ".SH VERSION",
        ] {
            assert!(main.contains(section), "{section} in {main}");
        }
    }

    #[test]
    fn after_help_becomes_no_fill_sections_with_escapes() {
        let roff =
            after_help_roff("Runs rsync -a:\n.hidden \\x\n\nExamples:\n  wsync add .\n'quoted'\n");
        assert_eq!(
            roff,
            ".SH NOTES\n.nf\nRuns rsync \\-a:\n\\&.hidden \\ex\n\n.fi\n\
             .SH EXAMPLES\n.nf\n  wsync add .\n\\&'quoted'\n.fi\n"
        );
    }
}
