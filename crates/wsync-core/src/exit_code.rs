//! Exit-code tables: each binary lists its exit codes once, as a `TABLE` of [`ExitCode`]s; its
//! `--help` block is rendered from that table and its test checks the help against it.

/// One exit code of a binary: the status, the name of its constant and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCode {
    /// The process exit status (`0..=255`; `i32` because that is what a parent's
    /// `ExitStatus::code()` reports and what the CLI's constants are).
    pub code: i32,
    /// The name of the constant holding `code` (`DAEMON_NOT_RUNNING`), for messages and docs.
    pub name: &'static str,
    /// What the code means, as `--help` shows it (lowercase, no final period).
    pub meaning: &'static str,
}

impl ExitCode {
    pub const fn new(code: i32, name: &'static str, meaning: &'static str) -> Self {
        Self {
            code,
            name,
            meaning,
        }
    }
}

/// The heading of the rendered block (a man page section, too).
pub const HEADING: &str = "Exit codes:";

/// The `Exit codes:` block for `--help`: the heading, then `  CODE  meaning` per entry, codes
/// right-aligned to the widest; no trailing newline.
pub fn render_help(table: &[ExitCode]) -> String {
    let width = table
        .iter()
        .map(|e| e.code.to_string().len())
        .max()
        .unwrap_or(1);
    let mut out = String::from(HEADING);
    for entry in table {
        out.push_str(&format!(
            "\n  {:>width$}  {}",
            entry.code,
            entry.meaning,
            width = width
        ));
    }
    out
}

/// Problems with a table or with a help text rendered from it; empty means all is well.
/// Checks that codes and names are unique and that `help` holds each entry's line.
pub fn check_help(table: &[ExitCode], help: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, entry) in table.iter().enumerate() {
        for other in &table[..i] {
            if other.code == entry.code {
                problems.push(format!(
                    "code {} is both {} and {}",
                    entry.code, other.name, entry.name
                ));
            }
            if other.name == entry.name {
                problems.push(format!("{} is listed twice", entry.name));
            }
        }
        if !(0..=255).contains(&entry.code) {
            problems.push(format!(
                "{} = {} is not an exit status (0..=255)",
                entry.name, entry.code
            ));
        }
    }
    let rendered = render_help(table);
    for (entry, line) in table.iter().zip(rendered.lines().skip(1)) {
        if !help.lines().any(|l| l == line) {
            problems.push(format!(
                "{} ({}) is missing from the help: expected the line {line:?}",
                entry.name, entry.code
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[ExitCode] = &[
        ExitCode::new(0, "OK", "success"),
        ExitCode::new(3, "GONE", "it went away (try again)"),
    ];

    #[test]
    fn renders_a_heading_and_one_line_per_code() {
        assert_eq!(
            render_help(TABLE),
            "Exit codes:\n  0  success\n  3  it went away (try again)"
        );
    }

    #[test]
    fn wide_codes_are_right_aligned() {
        let table = [ExitCode::new(1, "A", "a"), ExitCode::new(101, "B", "b")];
        assert_eq!(render_help(&table), "Exit codes:\n    1  a\n  101  b");
    }

    #[test]
    fn check_help_finds_missing_lines_and_duplicates() {
        let help = format!("Usage: x\n\n{}\n", render_help(TABLE));
        assert_eq!(check_help(TABLE, &help), Vec::<String>::new());
        let problems = check_help(TABLE, "Exit codes:\n  0  success\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("GONE (3)"), "{problems:?}");
        let dup = [ExitCode::new(1, "A", "a"), ExitCode::new(1, "A", "b")];
        assert_eq!(check_help(&dup, &render_help(&dup)).len(), 2);
        let bad = [ExitCode::new(256, "BIG", "too big")];
        assert_eq!(check_help(&bad, &render_help(&bad)).len(), 1);
    }
}
