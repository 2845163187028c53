//! Validation of workspace and remote names: short, printable, never read as an option.

/// Longest accepted name, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// Why a workspace or remote name was refused. `what` is "workspace" or "remote".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} name is empty")]
    Empty { what: &'static str },
    #[error("{what} name {name:?} is longer than {MAX_NAME_LEN} characters")]
    TooLong { what: &'static str, name: String },
    #[error("{what} name {name:?} begins with '-' and would be read as an option")]
    OptionLike { what: &'static str, name: String },
    #[error("{what} name {name:?} begins with '.'")]
    Hidden { what: &'static str, name: String },
    #[error("{what} name {name:?} contains {bad:?}; use letters, digits and . _ - + @ (pass --name to choose one)")]
    BadChar {
        what: &'static str,
        name: String,
        bad: char,
    },
}

/// Checks a workspace or remote name. `what` is "workspace" or "remote", for the message.
///
/// Names are letters, digits and `. _ - + @`, not starting with `-` or `.`; they appear in
/// file names (logs, control sockets) and in CLI arguments, so anything else is refused.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), NameError> {
    let owned = || name.to_owned();
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            name: owned(),
        });
    }
    if name.starts_with('-') {
        return Err(NameError::OptionLike {
            what,
            name: owned(),
        });
    }
    if name.starts_with('.') {
        return Err(NameError::Hidden {
            what,
            name: owned(),
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '@')))
    {
        return Err(NameError::BadChar {
            what,
            name: owned(),
            bad,
        });
    }
    Ok(())
}

/// User-supplied text (a path, a spec, a pattern) with a control character in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} contains the control character {found:?}")]
pub struct ControlCharError {
    pub what: &'static str,
    pub value: String,
    pub found: char,
}

/// Rejects control characters (newlines included) anywhere in user-supplied text.
pub fn reject_control_chars(what: &'static str, value: &str) -> Result<(), ControlCharError> {
    match value.chars().find(|c| c.is_control()) {
        Some(found) => Err(ControlCharError {
            what,
            value: value.to_owned(),
            found,
        }),
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

    #[test]
    fn each_rule_has_its_variant() {
        let v = |n: &str| validate_name("remote", n).unwrap_err();
        assert!(matches!(v(""), NameError::Empty { what: "remote" }));
        assert!(matches!(v(&"x".repeat(65)), NameError::TooLong { .. }));
        assert!(matches!(v("-rf"), NameError::OptionLike { .. }));
        assert!(matches!(v(".x"), NameError::Hidden { .. }));
        assert!(matches!(v("a b"), NameError::BadChar { bad: ' ', .. }));
        assert_eq!(
            v("-rf").to_string(),
            "remote name \"-rf\" begins with '-' and would be read as an option"
        );
    }

    #[test]
    fn control_characters_are_named() {
        let err = reject_control_chars("path", "a\nb").unwrap_err();
        assert_eq!(err.found, '\n');
        assert_eq!(
            err.to_string(),
            "path \"a\\nb\" contains the control character '\\n'"
        );
        assert!(reject_control_chars("path", "ab").is_ok());
    }
}
