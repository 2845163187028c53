//! Errors that carry an exit code and an optional hint, and the printing of any error chain as
//! `error:` / `caused by:` / `hint:` lines.

use std::fmt;
use std::io::Write;

use crate::exit_codes;

/// An error with a specific exit code; anywhere in an `anyhow` chain it decides the exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
    /// A line telling the user what to do, printed as `hint: ...`.
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// True when the error is a broken pipe on our output (e.g. `wsync list | head`): not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The outermost [`CliError`] of an error: its context (`.context(CliError ...)`) or in its chain.
fn cli_error(err: &anyhow::Error) -> Option<&CliError> {
    err.downcast_ref::<CliError>()
        .or_else(|| err.chain().find_map(|e| e.downcast_ref::<CliError>()))
}

/// The exit code an error maps to: the first [`CliError`] in its chain, else [`exit_codes::FAILURE`].
pub fn exit_code(err: &anyhow::Error) -> i32 {
    cli_error(err).map_or(exit_codes::FAILURE, |e| e.code)
}

/// Formats an error as `error: ...`, one `caused by: ...` line per source, then any hint.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = format!("error: {err}\n");
    for cause in err.chain().skip(1) {
        out.push_str(&format!("caused by: {cause}\n"));
    }
    if let Some(hint) = cli_error(err).and_then(|e| e.hint.as_deref()) {
        out.push_str(&format!("hint: {hint}\n"));
    }
    out
}

/// Prints the error to stderr and returns its exit code; a broken pipe exits quietly with 0.
pub fn report(err: &anyhow::Error) -> i32 {
    if is_broken_pipe(err) {
        return exit_codes::OK;
    }
    let _ = std::io::stderr().lock().write_all(render(err).as_bytes());
    exit_code(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn chain_is_printed_with_hint_and_code() {
        let err = Err::<(), _>(
            CliError::new(exit_codes::DAEMON_NOT_RUNNING, "wsyncd is not running")
                .with_hint("start it with `wsync daemon start`"),
        )
        .context("listing workspaces")
        .unwrap_err();
        assert_eq!(exit_code(&err), exit_codes::DAEMON_NOT_RUNNING);
        assert_eq!(
            render(&err),
            "error: listing workspaces\ncaused by: wsyncd is not running\nhint: start it with `wsync daemon start`\n"
        );
    }

    #[test]
    fn a_cli_error_used_as_context_keeps_its_hint_and_code() {
        let err = anyhow::Error::new(std::io::Error::other("line 3: bad key"))
            .context(CliError::new(exit_codes::INVALID, "loading the config").with_hint("fix it"));
        assert_eq!(exit_code(&err), exit_codes::INVALID);
        assert_eq!(
            render(&err),
            "error: loading the config\ncaused by: line 3: bad key\nhint: fix it\n"
        );
    }

    #[test]
    fn plain_errors_are_failures_and_broken_pipes_are_not_errors() {
        let err = anyhow::anyhow!("boom");
        assert_eq!(exit_code(&err), exit_codes::FAILURE);
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing output");
        assert!(is_broken_pipe(&pipe));
        assert_eq!(report(&pipe), exit_codes::OK);
    }
}
