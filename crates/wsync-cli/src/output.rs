//! Writing to stdout without panicking: errors (a closed pipe included) are returned, and
//! [`crate::error::report`] treats a broken pipe as a normal end.

use std::io::Write;

use anyhow::{Context, Result};

/// Writes `text` to stdout and flushes.
pub fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

/// Writes `text` and a newline to stdout.
pub fn println(text: &str) -> Result<()> {
    print(&format!("{text}\n"))
}

/// Writes `value` as pretty JSON and a newline.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("encoding JSON")?;
    println(&text)
}
