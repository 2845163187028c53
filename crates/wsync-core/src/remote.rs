//! Remote targets: parsing `/local/path`, `[user@]host:path` and `ssh://[user@]host[:port]/path`,
//! and the validation that keeps a spec from ever being read as an option or shell text.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::names::reject_control_chars;

/// Where a remote lives. Stored in the registry; the rsync/ssh command builders consume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RemoteTarget {
    /// A directory on this machine (absolute, canonical).
    Local { path: PathBuf },
    /// A directory on another machine, reached with ssh.
    Ssh {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// A host name, address, or `~/.ssh/config` alias.
        host: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        /// Absolute, or relative to the remote user's home.
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity_file: Option<PathBuf>,
        /// Extra `-o KEY=VALUE` options, validated by [`validate_ssh_option`].
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ssh_options: Vec<SshOption>,
    },
}

/// One `-o KEY=VALUE` option for ssh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshOption {
    pub key: String,
    pub value: String,
}

/// ssh options that run local commands; refused because a remote spec must never execute anything.
const FORBIDDEN_SSH_OPTIONS: &[&str] = &[
    "proxycommand",
    "localcommand",
    "permitlocalcommand",
    "knownhostscommand",
    "remotecommand",
    "controlpath",
    "controlmaster",
    // These load and run a local shared library.
    "pkcs11provider",
    "securitykeyprovider",
    // Run through a shell by ssh when X11 forwarding is on.
    "xauthlocation",
];

/// Characters refused in hosts, users and remote paths: the remote side may hand these to a shell.
const SHELL_META: &[char] = &[
    '$', '`', ';', '&', '|', '<', '>', '\\', '"', '\'', '*', '?', '[', ']', '{', '}', '!', '(', ')',
];

/// A spec split into its parts before validation against the filesystem or other workspaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedSpec {
    Local(PathBuf),
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        path: String,
    },
}

/// Parses a remote spec as typed by the user. Local paths must be absolute.
pub fn parse_spec(spec: &str) -> Result<ParsedSpec, String> {
    reject_control_chars("remote", spec)?;
    if spec.is_empty() {
        return Err(
            "remote is empty; give /abs/path, [user@]host:path or ssh://[user@]host[:port]/path"
                .into(),
        );
    }
    if spec.starts_with('-') {
        return Err(format!(
            "remote {spec:?} begins with '-' and would be read as an option"
        ));
    }
    if let Some(rest) = spec.strip_prefix("ssh://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => {
                return Err(format!(
                    "remote {spec:?} has no path after the host (ssh://host/path)"
                ))
            }
        };
        let (user, hostport) = split_user(authority);
        let (host, port) = split_port(hostport, spec)?;
        return ssh_parts(spec, user, host, port, path);
    }
    if spec.starts_with('/') {
        return Ok(ParsedSpec::Local(PathBuf::from(spec)));
    }
    match spec.split_once(':') {
        Some((authority, path)) if !authority.contains('/') => {
            let (user, host) = split_user(authority);
            ssh_parts(spec, user, host, None, path)
        }
        _ => Err(format!(
            "remote {spec:?} is neither an absolute local path nor [user@]host:path; local remotes must be absolute (e.g. /srv/mirror)"
        )),
    }
}

fn split_user(authority: &str) -> (Option<&str>, &str) {
    match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    }
}

fn split_port<'a>(hostport: &'a str, spec: &str) -> Result<(&'a str, Option<u16>), String> {
    if let Some(rest) = hostport.strip_prefix('[') {
        // [ipv6]:port
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("remote {spec:?} has an unclosed '[' in its host"));
        };
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(parse_port(port)?))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(format!("remote {spec:?} has text after ']' in its host")),
        };
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
        None => Ok((hostport, None)),
    }
}

/// Parses a TCP port, 1 to 65535.
pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {text:?} is not a number from 1 to 65535")),
        Ok(p) => Ok(p),
    }
}

fn ssh_parts(
    spec: &str,
    user: Option<&str>,
    host: &str,
    port: Option<u16>,
    path: &str,
) -> Result<ParsedSpec, String> {
    if let Some(user) = user {
        validate_word("user", user)?;
    }
    validate_host(host)?;
    validate_remote_path(spec, path)?;
    Ok(ParsedSpec::Ssh {
        user: user.map(str::to_owned),
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

fn validate_word(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.starts_with('-') {
        return Err(format!(
            "{what} {value:?} begins with '-' and would be read as an option"
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("{what} {value:?} contains {c:?}"));
    }
    Ok(())
}

fn validate_host(host: &str) -> Result<(), String> {
    if host.contains(':') {
        // An IPv6 literal (from ssh://[..]); hex digits, colons and dots only.
        if host
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Ok(());
        }
        return Err(format!("host {host:?} is not a valid IPv6 address"));
    }
    validate_word("host", host)
}

/// Checks the path part of an SSH remote.
pub fn validate_remote_path(spec: &str, path: &str) -> Result<(), String> {
    // `/.`, `~/.`, `//` and `~user` all name the remote's root or a home directory: a full sync
    // with --delete there would empty it. Look at the meaningful segments, not the spelling.
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let names_a_home = segments.len() == 1 && segments[0].starts_with('~');
    if segments.iter().all(|s| *s == ".") || names_a_home {
        return Err(format!(
            "remote {spec:?} points at the remote's root or home directory; name a directory inside it (host:/srv/mirror)"
        ));
    }
    if segments.contains(&".") {
        return Err(format!(
            "remote path {path:?} contains a '.' segment; write the path without it"
        ));
    }
    if path.starts_with('-') {
        return Err(format!(
            "remote path {path:?} begins with '-' and would be read as an option"
        ));
    }
    if let Some(c) = path.chars().find(|c| SHELL_META.contains(c)) {
        return Err(format!(
            "remote path {path:?} contains {c:?}, which a remote shell could interpret"
        ));
    }
    if path.split('/').any(|seg| seg == "..") {
        return Err(format!("remote path {path:?} contains a '..' segment"));
    }
    Ok(())
}

/// Re-checks a stored target (e.g. from a hand-edited registry) with the rules `attach` applies,
/// short of touching the filesystem: a remote that was never valid is never used.
pub fn validate_target(target: &RemoteTarget) -> Result<(), String> {
    match target {
        RemoteTarget::Local { path } => {
            let text = path.to_string_lossy();
            reject_control_chars("remote path", &text)?;
            if !path.is_absolute() {
                return Err(format!("local remote {text:?} is not an absolute path"));
            }
            if text.split('/').any(|seg| seg == "..") {
                return Err(format!("local remote {text:?} contains a '..' segment"));
            }
            Ok(())
        }
        RemoteTarget::Ssh {
            user,
            host,
            port,
            path,
            identity_file,
            ssh_options,
        } => {
            let spec = target.to_string();
            reject_control_chars("remote", &spec)?;
            if let Some(user) = user {
                validate_word("user", user)?;
            }
            validate_host(host)?;
            if *port == Some(0) {
                return Err("port 0 is not a valid port".into());
            }
            validate_remote_path(&spec, path)?;
            if let Some(file) = identity_file {
                let text = file.to_string_lossy();
                reject_control_chars("identity file", &text)?;
                if !file.is_absolute() {
                    return Err(format!("identity file {text:?} is not an absolute path"));
                }
            }
            for option in ssh_options {
                validate_ssh_option(&format!("{}={}", option.key, option.value))?;
            }
            Ok(())
        }
    }
}

/// Checks a `KEY=VALUE` ssh option and splits it.
pub fn validate_ssh_option(text: &str) -> Result<SshOption, String> {
    reject_control_chars("ssh option", text)?;
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "ssh option {text:?} must be KEY=VALUE (e.g. UserKnownHostsFile=/path)"
        ));
    };
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "ssh option key {key:?} must be letters and digits only"
        ));
    }
    if FORBIDDEN_SSH_OPTIONS.contains(&key.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "ssh option {key} is not allowed: it runs commands or controls wsync's own connection sharing"
        ));
    }
    if value.is_empty() || value.starts_with('-') {
        return Err(format!(
            "ssh option {key} needs a value that does not begin with '-'"
        ));
    }
    Ok(SshOption {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

impl fmt::Display for RemoteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteTarget::Local { path } => write!(f, "{}", path.display()),
            RemoteTarget::Ssh {
                user,
                host,
                port,
                path,
                ..
            } => {
                let user = user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                match port {
                    Some(port) if path.starts_with('/') => {
                        write!(f, "ssh://{user}{host}:{port}{path}")
                    }
                    Some(port) => write!(f, "{user}{host}:{path} (port {port})"),
                    None => write!(f, "{user}{host}:{path}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            parse_spec("/srv/m").unwrap(),
            ParsedSpec::Local("/srv/m".into())
        );
        assert_eq!(
            parse_spec("me@box:/srv/m").unwrap(),
            ParsedSpec::Ssh {
                user: Some("me".into()),
                host: "box".into(),
                port: None,
                path: "/srv/m".into()
            }
        );
        assert_eq!(
            parse_spec("alias:backup").unwrap(),
            ParsedSpec::Ssh {
                user: None,
                host: "alias".into(),
                port: None,
                path: "backup".into()
            }
        );
        assert_eq!(
            parse_spec("ssh://me@127.0.0.1:2222/srv/m").unwrap(),
            ParsedSpec::Ssh {
                user: Some("me".into()),
                host: "127.0.0.1".into(),
                port: Some(2222),
                path: "/srv/m".into()
            }
        );
        assert_eq!(
            parse_spec("ssh://[::1]:22/x").unwrap(),
            ParsedSpec::Ssh {
                user: None,
                host: "::1".into(),
                port: Some(22),
                path: "/x".into()
            }
        );
    }

    #[test]
    fn rejects_options_shell_and_roots() {
        for bad in [
            "-oProxyCommand=touch /tmp/x",
            "host:$(touch /tmp/x)",
            "host:/a;rm -rf /",
            "host:`id`",
            "-host:/x",
            "host:-x",
            "host:",
            "host:/",
            "host:~",
            "host:/.",
            "host:~/.",
            "host:./.",
            "host://",
            "host:~root",
            "host:~root/",
            "host:/srv/./m",
            "ho st:/x",
            "host:/a/../b",
            "relative/dir",
            "ssh://host",
            "ssh://host:0/x",
            "ssh://host:99999/x",
            "a\nb:/x",
            "",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ssh_options_are_validated() {
        let o = validate_ssh_option("UserKnownHostsFile=/tmp/kh").unwrap();
        assert_eq!(
            (o.key.as_str(), o.value.as_str()),
            ("UserKnownHostsFile", "/tmp/kh")
        );
        for bad in [
            "ProxyCommand=nc x",
            "NoEquals",
            "Key=-x",
            "K y=1",
            "LocalCommand=id",
            "A=b\nc",
        ] {
            assert!(validate_ssh_option(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn stored_targets_are_revalidated() {
        let ssh = |host: &str, path: &str, key: &str| RemoteTarget::Ssh {
            user: None,
            host: host.into(),
            port: None,
            path: path.into(),
            identity_file: None,
            ssh_options: vec![SshOption {
                key: key.into(),
                value: "x".into(),
            }],
        };
        assert!(validate_target(&ssh("h", "/srv", "User")).is_ok());
        assert!(validate_target(&ssh("h", "/srv", "ProxyCommand")).is_err());
        assert!(validate_target(&ssh("-oProxyCommand=x", "/srv", "User")).is_err());
        assert!(validate_target(&ssh("h", "$(id)", "User")).is_err());
        assert!(validate_target(&RemoteTarget::Local { path: "rel".into() }).is_err());
    }

    #[test]
    fn displays_round_trip_through_the_parser() {
        for spec in [
            "/srv/m",
            "me@box:/srv/m",
            "box:rel/dir",
            "ssh://me@box:2222/srv/m",
        ] {
            let target = match parse_spec(spec).unwrap() {
                ParsedSpec::Local(path) => RemoteTarget::Local { path },
                ParsedSpec::Ssh {
                    user,
                    host,
                    port,
                    path,
                } => RemoteTarget::Ssh {
                    user,
                    host,
                    port,
                    path,
                    identity_file: None,
                    ssh_options: vec![],
                },
            };
            assert_eq!(target.to_string(), spec);
        }
    }
}
