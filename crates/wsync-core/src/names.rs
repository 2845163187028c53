//! Validation of workspace and remote names: short, printable, never read as an option.

/// Longest accepted name, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a workspace or remote name. `what` is "workspace" or "remote", for the message.
///
/// Names are letters, digits and `. _ - + @`, not starting with `-` or `.`; they appear in
/// file names (logs, control sockets) and in CLI arguments, so anything else is refused.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} name is empty"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!(
            "{what} name {name:?} is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if name.starts_with('-') {
        return Err(format!(
            "{what} name {name:?} begins with '-' and would be read as an option"
        ));
    }
    if name.starts_with('.') {
        return Err(format!("{what} name {name:?} begins with '.'"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '@')))
    {
        return Err(format!(
            "{what} name {name:?} contains {bad:?}; use letters, digits and . _ - + @ (pass --name to choose one)"
        ));
    }
    Ok(())
}

/// Rejects control characters (newlines included) anywhere in user-supplied text.
pub fn reject_control_chars(what: &str, value: &str) -> Result<(), String> {
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "{what} {value:?} contains the control character {c:?}"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["proj", "my-proj_2", "a.b", "ümlaut", "x+y@z"] {
            validate_name("workspace", n).unwrap();
        }
    }

    #[test]
    fn rejects_hostile_names() {
        for n in [
            "", "-rf", ".hidden", "a b", "a;b", "a`b`", "a\nb", "../x", "a/b", "$(x)",
        ] {
            assert!(validate_name("remote", n).is_err(), "{n:?} accepted");
        }
        assert!(validate_name("remote", &"x".repeat(65)).is_err());
    }
}
