//! Remote targets: parsing `/local/path`, `[user@]host:path` and `ssh://[user@]host[:port]/path`,
//! and the validation that keeps a spec from ever being read as an option or shell text.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::names::{reject_control_chars, ControlCharError};

/// Why a remote spec (typed, or stored in the registry) was refused. Each variant is one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    ControlChar(#[from] ControlCharError),
    #[error("remote is empty; give /abs/path, [user@]host:path or ssh://[user@]host[:port]/path")]
    Empty,
    /// Neither an absolute local path nor `host:path`.
    #[error("remote {spec:?} is neither an absolute local path nor [user@]host:path; local remotes must be absolute (e.g. /srv/mirror)")]
    Unrecognized { spec: String },
    /// The spec's syntax is broken; `problem` says where.
    #[error("remote {spec:?} has {problem}")]
    Malformed { spec: String, problem: &'static str },
    /// `what` ("remote", "user", "host", "remote path") begins with `-`.
    #[error("{what} {value:?} begins with '-' and would be read as an option")]
    OptionLike { what: &'static str, value: String },
    /// The user or host part is missing.
    #[error("{what} is empty")]
    MissingPart { what: &'static str },
    /// A user or host with a character outside `[A-Za-z0-9._-]`.
    #[error("{what} {value:?} contains {found:?}")]
    BadChar {
        what: &'static str,
        value: String,
        found: char,
    },
    #[error("host {host:?} is not a valid IPv6 address")]
    BadIpv6 { host: String },
    #[error("port {text:?} is not a number from 1 to 65535")]
    BadPort { text: String },
    /// A stored target with port 0.
    #[error("port 0 is not a valid port")]
    PortZero,
    /// The path names the remote's root or a home directory, which a full sync would empty.
    #[error("remote {spec:?} points at the remote's root or home directory; name a directory inside it (host:/srv/mirror)")]
    RootOrHome { spec: String },
    /// `~user/...`: only `~` and `~/` (the login user's home) are understood.
    #[error("remote path {path:?} begins with ~user, which wsync does not expand; write that directory's absolute path (or ~/path for one in the login user's home)")]
    OtherHome { path: String },
    #[error("remote path {path:?} contains a '.' segment; write the path without it")]
    DotSegment { path: String },
    /// `what` is "remote path" or "local remote".
    #[error("{what} {path:?} contains a '..' segment")]
    ParentSegment { what: &'static str, path: String },
    #[error("remote path {path:?} contains {found:?}, which a remote shell could interpret")]
    ShellMeta { path: String, found: char },
    /// `what` is "local remote" or "identity file".
    #[error("{what} {path:?} is not an absolute path")]
    NotAbsolute { what: &'static str, path: String },
    #[error(transparent)]
    SshOption(#[from] SshOptionError),
    /// An rsync path (`--rsync-path`) that is not a plain absolute path.
    #[error("rsync path {path:?} {problem}; give the absolute path of the remote's rsync, e.g. /opt/homebrew/bin/rsync")]
    BadRsyncPath { path: String, problem: &'static str },
}

/// Checks the program an SSH remote runs as rsync (`wsync attach --rsync-path`): an absolute
/// path of plain characters (`A-Z a-z 0-9 / . _ + -`), so it can be neither an option nor
/// shell text on the remote (it is quoted there as well).
pub fn validate_rsync_path(path: &str) -> Result<(), SpecError> {
    let bad = |problem| {
        Err(SpecError::BadRsyncPath {
            path: path.to_owned(),
            problem,
        })
    };
    if !path.starts_with('/') {
        return bad("is not absolute");
    }
    if path.ends_with('/') {
        return bad("names a directory");
    }
    if !path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '+' | '-'))
    {
        return bad("contains a character other than letters, digits and / . _ + -");
    }
    if path.split('/').any(|part| part == "..") {
        return bad("contains a '..' segment");
    }
    Ok(())
}

/// Why a `KEY=VALUE` ssh option was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshOptionError {
    #[error(transparent)]
    ControlChar(#[from] ControlCharError),
    #[error("ssh option {text:?} must be KEY=VALUE or KEY VALUE (e.g. UserKnownHostsFile=/path)")]
    NotKeyValue { text: String },
    #[error("ssh option key {key:?} must be letters and digits only")]
    BadKey { key: String },
    /// An option outside [`crate::ssh::ALLOWED_OPTIONS`].
    #[error("ssh option {key} is not allowed: wsync passes only options that shape the connection, none that run commands, load libraries, forward anything or take over its connection sharing; allowed: {}", crate::ssh::ALLOWED_OPTIONS.join(", "))]
    Forbidden { key: String },
    #[error("ssh option {key} needs a value that does not begin with '-'")]
    BadValue { key: String },
    /// A `ProxyJump` value that is not a list of `[user@]host[:port]` hops (or `none`).
    #[error(
        "ProxyJump {value:?} is not a comma-separated list of [user@]host[:port] hops: {problem}"
    )]
    BadProxyJump { value: String, problem: String },
}

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
        /// Absolute, or relative to the remote user's home (`~/x` is stored as `x`, see
        /// [`home_relative`]).
        #[serde(deserialize_with = "deserialize_remote_path")]
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
pub fn parse_spec(spec: &str) -> Result<ParsedSpec, SpecError> {
    reject_control_chars("remote", spec)?;
    if spec.is_empty() {
        return Err(SpecError::Empty);
    }
    if spec.starts_with('-') {
        return Err(SpecError::OptionLike {
            what: "remote",
            value: spec.to_owned(),
        });
    }
    if let Some(rest) = spec.strip_prefix("ssh://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Err(malformed(spec, "no path after the host (ssh://host/path)")),
        };
        let (user, hostport) = split_user(authority);
        let (host, port) = split_port(hostport, spec)?;
        // `ssh://host/~/x`, as scp and sftp read it: `~/x` in the home.
        let path = match path.strip_prefix('/') {
            Some(tilde) if tilde == "~" || tilde.starts_with("~/") => tilde,
            _ => path,
        };
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
        _ => Err(SpecError::Unrecognized {
            spec: spec.to_owned(),
        }),
    }
}

fn malformed(spec: &str, problem: &'static str) -> SpecError {
    SpecError::Malformed {
        spec: spec.to_owned(),
        problem,
    }
}

fn split_user(authority: &str) -> (Option<&str>, &str) {
    match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    }
}

fn split_port<'a>(hostport: &'a str, spec: &str) -> Result<(&'a str, Option<u16>), SpecError> {
    if let Some(rest) = hostport.strip_prefix('[') {
        // [ipv6]:port
        let Some((host, after)) = rest.split_once(']') else {
            return Err(malformed(spec, "an unclosed '[' in its host"));
        };
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(parse_port(port)?))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(malformed(spec, "text after ']' in its host")),
        };
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
        None => Ok((hostport, None)),
    }
}

/// Parses a TCP port, 1 to 65535.
pub fn parse_port(text: &str) -> Result<u16, SpecError> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(SpecError::BadPort {
            text: text.to_owned(),
        }),
        Ok(p) => Ok(p),
    }
}

fn ssh_parts(
    spec: &str,
    user: Option<&str>,
    host: &str,
    port: Option<u16>,
    path: &str,
) -> Result<ParsedSpec, SpecError> {
    if let Some(user) = user {
        validate_word("user", user)?;
    }
    validate_host(host)?;
    let path = home_relative(path);
    validate_remote_path(spec, &path)?;
    Ok(ParsedSpec::Ssh {
        user: user.map(str::to_owned),
        host: host.to_owned(),
        port,
        path,
    })
}

/// An SSH target's path as every remote command takes it. `~` and `~/x` mean the remote
/// user's home and a path in it; nothing on the way expands a `~` (rsync's `--protect-args`,
/// the quoted guard, inspection and rename scripts), so it would make a directory literally
/// named `~`. ssh sessions, and so rsync and those scripts, start in the home, where a relative
/// path is taken from: `~/x` becomes `x` and `~` becomes empty (which names the home, and is
/// refused). Trailing slashes are dropped, so the path names the directory itself and a link
/// there is seen as a link. Stored targets are read through this too.
pub fn home_relative(path: &str) -> String {
    let relative = if path == "~" {
        ""
    } else if let Some(rest) = path.strip_prefix("~/") {
        rest.trim_start_matches('/')
    } else {
        path
    };
    match relative.trim_end_matches('/') {
        "" if relative.starts_with('/') => "/".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

fn deserialize_remote_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d).map(|path| home_relative(&path))
}

fn validate_word(what: &'static str, value: &str) -> Result<(), SpecError> {
    if value.is_empty() {
        return Err(SpecError::MissingPart { what });
    }
    if value.starts_with('-') {
        return Err(SpecError::OptionLike {
            what,
            value: value.to_owned(),
        });
    }
    if let Some(found) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(SpecError::BadChar {
            what,
            value: value.to_owned(),
            found,
        });
    }
    Ok(())
}

fn validate_host(host: &str) -> Result<(), SpecError> {
    if host.contains(':') {
        // An IPv6 literal (from ssh://[..]); hex digits, colons and dots only.
        if host
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Ok(());
        }
        return Err(SpecError::BadIpv6 {
            host: host.to_owned(),
        });
    }
    validate_word("host", host)
}

/// Checks the path part of an SSH remote.
pub fn validate_remote_path(spec: &str, path: &str) -> Result<(), SpecError> {
    // `/.`, `~/.`, `//` and `~user` all name the remote's root or a home directory: a full sync
    // with --delete there would empty it. Look at the meaningful segments, not the spelling.
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let names_a_home = segments.len() == 1 && segments[0].starts_with('~');
    if segments.iter().all(|s| *s == ".") || names_a_home {
        return Err(SpecError::RootOrHome {
            spec: spec.to_owned(),
        });
    }
    let owned = || path.to_owned();
    if segments.first().is_some_and(|s| s.starts_with('~')) {
        // `~user/x`: nothing expands it (see [`home_relative`]), so it would be a literal name.
        return Err(SpecError::OtherHome { path: owned() });
    }
    if segments.contains(&".") {
        return Err(SpecError::DotSegment { path: owned() });
    }
    if path.starts_with('-') {
        return Err(SpecError::OptionLike {
            what: "remote path",
            value: owned(),
        });
    }
    if let Some(found) = path.chars().find(|c| SHELL_META.contains(c)) {
        return Err(SpecError::ShellMeta {
            path: owned(),
            found,
        });
    }
    if path.split('/').any(|seg| seg == "..") {
        return Err(SpecError::ParentSegment {
            what: "remote path",
            path: owned(),
        });
    }
    Ok(())
}

/// Re-checks a stored target (e.g. from a hand-edited registry) with the rules `attach` applies,
/// short of touching the filesystem: a remote that was never valid is never used.
pub fn validate_target(target: &RemoteTarget) -> Result<(), SpecError> {
    match target {
        RemoteTarget::Local { path } => {
            let text = path.to_string_lossy();
            reject_control_chars("remote path", &text)?;
            if !path.is_absolute() {
                return Err(SpecError::NotAbsolute {
                    what: "local remote",
                    path: text.into_owned(),
                });
            }
            if text.split('/').any(|seg| seg == "..") {
                return Err(SpecError::ParentSegment {
                    what: "local remote",
                    path: text.into_owned(),
                });
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
                return Err(SpecError::PortZero);
            }
            validate_remote_path(&spec, path)?;
            if let Some(file) = identity_file {
                let text = file.to_string_lossy();
                reject_control_chars("identity file", &text)?;
                if !file.is_absolute() {
                    return Err(SpecError::NotAbsolute {
                        what: "identity file",
                        path: text.into_owned(),
                    });
                }
            }
            for option in ssh_options {
                validate_ssh_option(&format!("{}={}", option.key, option.value))?;
            }
            Ok(())
        }
    }
}

/// Checks an ssh `-o` option, written `KEY=VALUE`, `KEY VALUE` or `KEY = VALUE` as ssh accepts
/// it, and splits it; the key comes back in its documented spelling. Only the options in
/// [`crate::ssh::ALLOWED_OPTIONS`] pass. Applied to what `attach` is given and, through
/// [`validate_target`], to every registry entry the daemon loads.
pub fn validate_ssh_option(text: &str) -> Result<SshOption, SshOptionError> {
    reject_control_chars("ssh option", text)?;
    let text_trimmed = text.trim();
    let key_end = text_trimmed
        .find(|c: char| c == '=' || c.is_whitespace())
        .ok_or_else(|| SshOptionError::NotKeyValue {
            text: text.to_owned(),
        })?;
    let key = &text_trimmed[..key_end];
    // ssh's own parser: whitespace, at most one '=', whitespace.
    let rest = text_trimmed[key_end..].trim_start();
    let value = rest.strip_prefix('=').unwrap_or(rest).trim();
    let key_owned = || key.to_owned();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(SshOptionError::BadKey { key: key_owned() });
    }
    let Some(key) = crate::ssh::allowed_option(key) else {
        return Err(SshOptionError::Forbidden { key: key_owned() });
    };
    if value.is_empty() || value.starts_with('-') {
        return Err(SshOptionError::BadValue {
            key: key.to_owned(),
        });
    }
    if key == "ProxyJump" {
        validate_proxy_jump(value)?;
    }
    Ok(SshOption {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// A `ProxyJump` value: `none`, or hops `[ssh://][user@]host[:port]` separated by commas, each
/// part held to the rules of a remote spec's user, host and port (ssh turns every hop into an
/// ssh command line of its own, so nothing in it may read as an option or shell text).
fn validate_proxy_jump(value: &str) -> Result<(), SshOptionError> {
    let bad = |problem: String| SshOptionError::BadProxyJump {
        value: value.to_owned(),
        problem,
    };
    if value.eq_ignore_ascii_case("none") {
        return Ok(());
    }
    for hop in value.split(',') {
        let plain = hop.strip_prefix("ssh://").unwrap_or(hop);
        let (user, hostport) = split_user(plain);
        if let Some(user) = user {
            validate_word("user", user).map_err(|e| bad(e.to_string()))?;
        }
        let (host, _port) = split_port(hostport, hop).map_err(|e| bad(e.to_string()))?;
        validate_host(host).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
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
    fn each_rule_has_its_variant() {
        let e = |spec: &str| parse_spec(spec).unwrap_err();
        assert!(matches!(e(""), SpecError::Empty));
        assert!(matches!(e("a\nb:/x"), SpecError::ControlChar(_)));
        assert!(matches!(
            e("-oProxyCommand=x"),
            SpecError::OptionLike { what: "remote", .. }
        ));
        assert!(matches!(
            e("host:-x"),
            SpecError::OptionLike {
                what: "remote path",
                ..
            }
        ));
        assert!(matches!(e("relative/dir"), SpecError::Unrecognized { .. }));
        assert!(matches!(e("ssh://host"), SpecError::Malformed { .. }));
        assert!(matches!(e("ssh://[::1/x"), SpecError::Malformed { .. }));
        assert!(matches!(e("ssh://host:0/x"), SpecError::BadPort { .. }));
        assert!(matches!(e("host:~"), SpecError::RootOrHome { .. }));
        assert!(matches!(e("host:/srv/./m"), SpecError::DotSegment { .. }));
        assert!(matches!(e("host:/a/../b"), SpecError::ParentSegment { .. }));
        assert!(matches!(
            e("host:`id`"),
            SpecError::ShellMeta { found: '`', .. }
        ));
        assert!(matches!(
            e("ho st:/x"),
            SpecError::BadChar { what: "host", .. }
        ));
        assert!(matches!(
            e("@h:/x"),
            SpecError::MissingPart { what: "user" }
        ));
        assert!(matches!(e("ssh://[::g]/x"), SpecError::BadIpv6 { .. }));
        assert_eq!(
            e("ssh://host").to_string(),
            "remote \"ssh://host\" has no path after the host (ssh://host/path)"
        );
    }

    #[test]
    fn ssh_option_rules_have_their_variants() {
        let e = |text: &str| validate_ssh_option(text).unwrap_err();
        assert!(matches!(e("NoEquals"), SshOptionError::NotKeyValue { .. }));
        assert!(matches!(e("K-y=1"), SshOptionError::BadKey { .. }));
        assert!(matches!(
            e("proxycommand=nc"),
            SshOptionError::Forbidden { .. }
        ));
        assert!(matches!(e("User=-x"), SshOptionError::BadValue { .. }));
        assert!(matches!(e("A=b\nc"), SshOptionError::ControlChar(_)));
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
    fn ssh_options_by_allowlist_in_both_spellings() {
        let ok = |text: &str| {
            let o = validate_ssh_option(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            (o.key, o.value)
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(ok("port 2222"), pair("Port", "2222"));
        assert_eq!(ok(" ConnectTimeout = 3 "), pair("ConnectTimeout", "3"));
        assert_eq!(ok("ciphers=aes128-ctr"), pair("Ciphers", "aes128-ctr"));
        assert_eq!(ok("ProxyJump=none"), pair("ProxyJump", "none"));
        assert_eq!(
            ok("ProxyJump jump@bastion:2200,ssh://[::1]:22,h2"),
            pair("ProxyJump", "jump@bastion:2200,ssh://[::1]:22,h2")
        );
        let err = validate_ssh_option("SmartcardDevice=/tmp/evil.so").unwrap_err();
        assert!(matches!(err, SshOptionError::Forbidden { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("ssh option SmartcardDevice is not allowed"),
            "{text}"
        );
        assert!(
            text.contains("allowed: AddressFamily, BindAddress"),
            "{text}"
        );
        for refused in [
            "smartcarddevice /tmp/evil.so",
            "PKCS11Provider=/x.so",
            "KnownHostsCommand=/bin/id",
            "Match=exec id",
            "ForwardAgent=yes",
            "ControlPersist=yes",
        ] {
            assert!(
                matches!(
                    validate_ssh_option(refused),
                    Err(SshOptionError::Forbidden { .. })
                ),
                "{refused:?} accepted"
            );
        }
        for bad_jump in [
            "ProxyJump=-oProxyCommand=id",
            "ProxyJump=a,-b",
            "ProxyJump=a b",
            "ProxyJump=a,,b",
            "ProxyJump=$(id)",
            "ProxyJump=u@h:notaport",
            "ProxyJump=-u@h",
        ] {
            assert!(
                matches!(
                    validate_ssh_option(bad_jump),
                    Err(SshOptionError::BadProxyJump { .. } | SshOptionError::BadValue { .. })
                ),
                "{bad_jump:?} accepted"
            );
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
        assert!(validate_target(&ssh("h", "/srv", "SmartcardDevice")).is_err());
        assert!(validate_target(&ssh("-oProxyCommand=x", "/srv", "User")).is_err());
        assert!(validate_target(&ssh("h", "$(id)", "User")).is_err());
        assert!(validate_target(&RemoteTarget::Local { path: "rel".into() }).is_err());
        assert!(matches!(
            validate_target(&ssh("h", "/srv", "ProxyCommand")),
            Err(SpecError::SshOption(SshOptionError::Forbidden { .. }))
        ));
        assert!(matches!(
            validate_target(&RemoteTarget::Local { path: "rel".into() }),
            Err(SpecError::NotAbsolute {
                what: "local remote",
                ..
            })
        ));
    }

    #[test]
    fn a_tilde_means_the_remote_home_which_relative_paths_start_from() {
        let path = |spec: &str| match parse_spec(spec) {
            Ok(ParsedSpec::Ssh { path, .. }) => path,
            other => panic!("{spec}: {other:?}"),
        };
        assert_eq!(path("host:~/x"), "x");
        assert_eq!(path("host:~//x/y/"), "x/y");
        assert_eq!(path("ssh://u@host:22/~/x"), "x");
        assert_eq!(path("ssh://u@host/srv/m/"), "/srv/m");
        assert_eq!(path("host:x"), "x");
        // The home itself, however written, is refused.
        for spec in [
            "host:~",
            "host:~/",
            "host:~//",
            "ssh://host/~",
            "ssh://host/~/",
        ] {
            assert!(
                matches!(parse_spec(spec), Err(SpecError::RootOrHome { .. })),
                "{spec} accepted"
            );
        }
        assert!(matches!(
            parse_spec("host:~root/x"),
            Err(SpecError::OtherHome { .. })
        ));
        // A registry written before this (or by hand) reads the same.
        let stored: RemoteTarget =
            serde_json::from_str(r#"{"kind":"ssh","host":"h","path":"~/x/"}"#).unwrap();
        assert!(matches!(stored, RemoteTarget::Ssh { ref path, .. } if path == "x"));
        assert_eq!(home_relative("/"), "/");
        assert_eq!(home_relative("~"), "");
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

#[cfg(test)]
mod rsync_path_tests {
    use super::validate_rsync_path;

    #[test]
    fn an_rsync_path_is_a_plain_absolute_path() {
        for ok in [
            "/usr/bin/rsync",
            "/opt/homebrew/bin/rsync",
            "/home/u/.local/bin/rsync-3.4_1+x",
        ] {
            assert!(validate_rsync_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "rsync",
            "-e",
            "--daemon",
            "/usr/bin/rsync --daemon",
            "/usr/bin/$(id)",
            "/bin/rsync;rm",
            "/a/'b",
            "/a/../rsync",
            "/usr/bin/",
            "/a\nb",
        ] {
            let err = validate_rsync_path(bad).unwrap_err().to_string();
            assert!(
                err.contains("absolute path of the remote's rsync"),
                "{bad}: {err}"
            );
        }
    }
}
