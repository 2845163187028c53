//! The one ssh command builder: the ssh argv for an SSH remote (multiplexed connection,
//! batch mode, timeouts), the quoting of that argv into the single `rsync -e` word, and POSIX
//! shell quoting for commands run on the remote. Everything that talks ssh goes through here.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::remote::{RemoteTarget, SshOption};

/// How long ssh waits for the TCP connection and handshake, in seconds. With the ServerAlive
/// probes below, a remote that stops answering is dropped within ~6–8 s (a fresh connection
/// to it within 5 s), instead of the 20–40 s it took with 5 s × 3 probes and a 10 s connect
/// timeout; a live link answers a probe within a round trip, however slow its bandwidth.
pub const CONNECT_TIMEOUT_SECS: u32 = 5;
/// Seconds between keep-alive probes, and probes missed before the connection is dropped.
pub const SERVER_ALIVE_INTERVAL_SECS: u32 = 2;
pub const SERVER_ALIVE_COUNT_MAX: u32 = 3;
/// Seconds an idle multiplexing master stays up after its last client.
pub const CONTROL_PERSIST_SECS: u32 = 60;

/// The `-o` options a remote may set, spelled as ssh documents them (ssh compares names
/// case-insensitively; [`allowed_option`] does too). An allowlist, not a denylist: ssh grows
/// options, and several run commands or load code under other names (`SmartcardDevice` is an
/// alias of `PKCS11Provider`; `KnownHostsCommand`, `LocalCommand`, `ProxyCommand`, `Match exec`),
/// forward things to the remote (`ForwardAgent`, `SendEnv`, `RemoteForward`) or take over the
/// connection sharing wsync relies on (`ControlPath`, `ControlMaster`, `ControlPersist`). What is
/// left shapes how the one connection is made and checked, which is all a mirror needs.
/// `ProxyJump` is allowed with a validated value only (host specs, see
/// [`crate::remote::validate_ssh_option`]). ssh keeps the first value it gets for an option, so
/// [`SshEndpoint::ssh_argv`] puts these before the timeouts wsync sets itself: a user's value wins.
pub const ALLOWED_OPTIONS: &[&str] = &[
    "AddressFamily",
    "BindAddress",
    "BindInterface",
    "CASignatureAlgorithms",
    "CertificateFile",
    "CheckHostIP",
    "Ciphers",
    "Compression",
    "ConnectionAttempts",
    "ConnectTimeout",
    "FingerprintHash",
    "GlobalKnownHostsFile",
    "HashKnownHosts",
    "HostbasedAcceptedAlgorithms",
    "HostKeyAlgorithms",
    "HostKeyAlias",
    "IdentitiesOnly",
    "IdentityFile",
    "IPQoS",
    "KbdInteractiveAuthentication",
    "KexAlgorithms",
    "LogLevel",
    "MACs",
    "NumberOfPasswordPrompts",
    "PasswordAuthentication",
    "Port",
    "PreferredAuthentications",
    "ProxyJump",
    "PubkeyAcceptedAlgorithms",
    "PubkeyAcceptedKeyTypes",
    "PubkeyAuthentication",
    "RekeyLimit",
    "RequiredRSASize",
    "ServerAliveCountMax",
    "ServerAliveInterval",
    "StrictHostKeyChecking",
    "TCPKeepAlive",
    "UpdateHostKeys",
    "User",
    "UserKnownHostsFile",
    "VerifyHostKeyDNS",
];

/// The documented spelling of an allowed `-o` option name, matched case-insensitively as ssh
/// does; `None` for every option not in [`ALLOWED_OPTIONS`].
pub fn allowed_option(key: &str) -> Option<&'static str> {
    ALLOWED_OPTIONS
        .iter()
        .copied()
        .find(|allowed| allowed.eq_ignore_ascii_case(key))
}

/// The parts of an SSH remote the ssh command is built from (all validated by
/// [`crate::remote`] when the remote was added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshEndpoint {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub ssh_options: Vec<SshOption>,
}

impl SshEndpoint {
    /// The endpoint of an SSH target, `None` for a local one.
    pub fn from_target(target: &RemoteTarget) -> Option<Self> {
        match target {
            RemoteTarget::Local { .. } => None,
            RemoteTarget::Ssh {
                user,
                host,
                port,
                identity_file,
                ssh_options,
                ..
            } => Some(Self {
                user: user.clone(),
                host: host.clone(),
                port: *port,
                identity_file: identity_file.clone(),
                ssh_options: ssh_options.clone(),
            }),
        }
    }

    /// `[user@]host` as rsync and ssh take it (IPv6 literals in brackets for rsync's
    /// `host:path` syntax when `for_rsync`).
    pub fn user_host(&self, for_rsync: bool) -> String {
        let host = if for_rsync && self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match &self.user {
            Some(user) => format!("{user}@{host}"),
            None => host,
        }
    }

    /// The ControlPath socket for this endpoint inside `runtime_dir`: a short hash-based name,
    /// because unix socket paths are limited to 104–108 bytes (`platform::SUN_PATH_LEN`). Endpoints with identical
    /// connection parameters share one master.
    pub fn control_path(&self, runtime_dir: &Path) -> PathBuf {
        self.control_path_for(runtime_dir, b"")
    }

    /// [`SshEndpoint::control_path`] private to `owner` (e.g. workspace and remote name):
    /// owners never share a master, so one closing its connection (`ssh -O exit` on detach or
    /// shutdown) cannot cut another's transfers.
    pub fn control_path_for(&self, runtime_dir: &Path, owner: &[u8]) -> PathBuf {
        let mut key = Vec::new();
        if !owner.is_empty() {
            key.extend_from_slice(owner);
            key.push(0);
        }
        for part in [
            self.user.as_deref().unwrap_or("").as_bytes(),
            self.host.as_bytes(),
            self.port
                .map(|p| p.to_string())
                .unwrap_or_default()
                .as_bytes(),
            self.identity_file
                .as_deref()
                .map(|p| p.as_os_str().as_bytes())
                .unwrap_or(b""),
        ] {
            key.extend_from_slice(part);
            key.push(0);
        }
        for option in &self.ssh_options {
            key.extend_from_slice(option.key.as_bytes());
            key.push(b'=');
            key.extend_from_slice(option.value.as_bytes());
            key.push(0);
        }
        runtime_dir.join(format!("cm-{:016x}", fnv1a64(&key)))
    }

    /// The ControlPath of `workspace`'s remote `remote` (see [`SshEndpoint::control_path_for`]):
    /// what the monitor connects through, and what the daemon asks to exit (`ssh -O exit`) when
    /// a monitor ended without doing so itself.
    pub fn remote_control_path(
        &self,
        runtime_dir: &Path,
        workspace: &str,
        remote: &str,
    ) -> PathBuf {
        let owner = format!("{workspace}\0{remote}");
        self.control_path_for(runtime_dir, owner.as_bytes())
    }

    /// The ssh argv (program first) without the host: what `rsync -e` gets, quoted by
    /// [`quote_for_rsync_e`]. rsync appends `[-l user] host rsync --server ...` itself.
    pub fn ssh_argv(&self, control_path: &Path) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec!["ssh".into()];
        if let Some(port) = self.port {
            argv.push("-p".into());
            argv.push(port.to_string().into());
        }
        if let Some(identity) = &self.identity_file {
            argv.push("-i".into());
            argv.push(escape_percent(identity.as_os_str()));
        }
        // ssh keeps the first value it gets for an option, so the user's options go before
        // wsync's defaults: a user's `ConnectTimeout=60` wins over wsync's 5 s. The options a
        // user cannot override (BatchMode, the Control* trio) are not in [`ALLOWED_OPTIONS`].
        for option in &self.ssh_options {
            argv.push("-o".into());
            argv.push(format!("{}={}", option.key, option.value).into());
        }
        let fixed = [
            "BatchMode=yes".to_owned(),
            format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
            format!("ServerAliveInterval={SERVER_ALIVE_INTERVAL_SECS}"),
            format!("ServerAliveCountMax={SERVER_ALIVE_COUNT_MAX}"),
            "ControlMaster=auto".to_owned(),
            format!("ControlPersist={CONTROL_PERSIST_SECS}"),
        ];
        for option in fixed {
            argv.push("-o".into());
            argv.push(option.into());
        }
        argv.push("-o".into());
        let mut control = OsString::from("ControlPath=");
        control.push(escape_percent(control_path.as_os_str()));
        argv.push(control);
        argv
    }

    /// The single `-e` argument for rsync.
    pub fn rsync_rsh(&self, control_path: &Path) -> OsString {
        quote_for_rsync_e(&self.ssh_argv(control_path))
    }

    /// A full ssh argv that runs `remote_command` (already quoted for the remote shell with
    /// [`quote_posix_sh`]) on the endpoint over the shared connection.
    pub fn command_argv(&self, control_path: &Path, remote_command: &str) -> Vec<OsString> {
        let mut argv = self.ssh_argv(control_path);
        argv.push("--".into());
        argv.push(self.user_host(false).into());
        argv.push(remote_command.into());
        argv
    }

    /// The argv that asks the multiplexing master to exit (`ssh -O exit`).
    pub fn control_exit_argv(&self, control_path: &Path) -> Vec<OsString> {
        let mut argv = self.ssh_argv(control_path);
        argv.push("-O".into());
        argv.push("exit".into());
        argv.push("--".into());
        argv.push(self.user_host(false).into());
        argv
    }
}

/// ssh expands `%` tokens in IdentityFile and ControlPath; a literal `%` must be doubled.
fn escape_percent(value: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        out.push(b);
        if b == b'%' {
            out.push(b'%');
        }
    }
    OsString::from_vec(out)
}

/// Joins an argv into one string that rsync's `-e` parser splits back into the same words.
///
/// rsync splits the remote-shell command on spaces only, and honours single and double quotes;
/// inside quotes a doubled quote character stands for itself, and there are no backslash
/// escapes. So a word with a space, a quote, a tab or nothing at all is wrapped in single quotes
/// with every `'` doubled.
pub fn quote_for_rsync_e(argv: &[OsString]) -> OsString {
    let mut out = Vec::new();
    for (i, word) in argv.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        let bytes = word.as_bytes();
        let plain = !bytes.is_empty()
            && !bytes
                .iter()
                .any(|b| matches!(b, b' ' | b'\'' | b'"' | b'\t' | b'\n'));
        if plain {
            out.extend_from_slice(bytes);
            continue;
        }
        out.push(b'\'');
        for &b in bytes {
            out.push(b);
            if b == b'\'' {
                out.push(b'\'');
            }
        }
        out.push(b'\'');
    }
    OsString::from_vec(out)
}

/// Quotes one word for a POSIX shell (the remote user's login shell runs ssh commands).
pub fn quote_posix_sh(word: &[u8]) -> Vec<u8> {
    let safe = !word.is_empty()
        && word
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"%+,-./:=@_".contains(b));
    if safe {
        return word.to_vec();
    }
    let mut out = vec![b'\''];
    for &b in word {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// 64-bit FNV-1a: a stable, dependency-free hash for socket names.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Splits a `-e` string the way rsync does (see `quote_for_rsync_e`); used by the tests to
/// prove the quoting round-trips.
pub fn split_like_rsync_e(cmd: &[u8]) -> Vec<Vec<u8>> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < cmd.len() {
        if cmd[i] == b' ' {
            i += 1;
            continue;
        }
        let mut word = Vec::new();
        let mut in_quote: Option<u8> = None;
        while i < cmd.len() && (cmd[i] != b' ' || in_quote.is_some()) {
            let c = cmd[i];
            if c == b'\'' || c == b'"' {
                match in_quote {
                    None => {
                        in_quote = Some(c);
                        i += 1;
                        continue;
                    }
                    Some(q) if q == c => {
                        if cmd.get(i + 1) == Some(&c) {
                            word.push(c);
                            i += 2;
                        } else {
                            in_quote = None;
                            i += 1;
                        }
                        continue;
                    }
                    Some(_) => {}
                }
            }
            word.push(c);
            i += 1;
        }
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> SshEndpoint {
        SshEndpoint {
            user: Some("me".into()),
            host: "127.0.0.1".into(),
            port: Some(2222),
            identity_file: Some("/tmp/key dir/id 'x'%h".into()),
            ssh_options: vec![SshOption {
                key: "UserKnownHostsFile".into(),
                value: "/tmp/known hosts".into(),
            }],
        }
    }

    #[test]
    fn port_is_two_words_and_options_are_pairs() {
        let argv = endpoint().ssh_argv(Path::new("/run/wsync/cm-1"));
        let words: Vec<&str> = argv.iter().map(|w| w.to_str().unwrap()).collect();
        assert_eq!(&words[..3], &["ssh", "-p", "2222"]);
        assert_eq!(&words[3..5], &["-i", "/tmp/key dir/id 'x'%%h"]);
        assert!(words.windows(2).any(|w| w == ["-o", "BatchMode=yes"]));
        assert!(words
            .windows(2)
            .any(|w| w == ["-o", "ControlPath=/run/wsync/cm-1"]));
        assert_eq!(&words[5..7], &["-o", "UserKnownHostsFile=/tmp/known hosts"]);
    }

    /// ssh keeps the first value of an option: a user's timeout must come before wsync's.
    #[test]
    fn user_options_come_before_wsync_defaults() {
        let mut ep = endpoint();
        ep.ssh_options = vec![
            SshOption {
                key: "ConnectTimeout".into(),
                value: "60".into(),
            },
            SshOption {
                key: "ServerAliveInterval".into(),
                value: "15".into(),
            },
        ];
        let argv = ep.ssh_argv(Path::new("/run/wsync/cm-1"));
        let words: Vec<&str> = argv.iter().map(|w| w.to_str().unwrap()).collect();
        let first = |prefix: &str| {
            words
                .iter()
                .find(|w| w.starts_with(prefix))
                .copied()
                .unwrap()
        };
        assert_eq!(first("ConnectTimeout="), "ConnectTimeout=60");
        assert_eq!(first("ServerAliveInterval="), "ServerAliveInterval=15");
        assert_eq!(first("ServerAliveCountMax="), "ServerAliveCountMax=3");
        assert_eq!(first("BatchMode="), "BatchMode=yes");
    }

    #[test]
    fn rsync_e_quoting_round_trips() {
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![b"ssh", b"-p", b"22"],
            vec![b"ssh", b"-i", b"/a b/c"],
            vec![b"ssh", b"it's", b"say \"hi\"", b""],
            vec![b"ssh", b"''", b"a\tb", b"x\ny", b"'"],
            vec![b"ssh", "ünï cødé".as_bytes(), b"\xff\xfe raw"],
        ];
        for words in cases {
            let argv: Vec<OsString> = words
                .iter()
                .map(|w| OsString::from_vec(w.to_vec()))
                .collect();
            let joined = quote_for_rsync_e(&argv);
            let back = split_like_rsync_e(joined.as_bytes());
            let expected: Vec<Vec<u8>> = words.iter().map(|w| w.to_vec()).collect();
            assert_eq!(back, expected, "joined: {joined:?}");
        }
        let simple = quote_for_rsync_e(&["ssh".into(), "-p".into(), "22".into()]);
        assert_eq!(simple, "ssh -p 22");
    }

    #[test]
    fn whole_ssh_command_round_trips() {
        let ep = endpoint();
        let cp = Path::new("/tmp/run dir/cm-0123");
        let back = split_like_rsync_e(ep.rsync_rsh(cp).as_bytes());
        let argv: Vec<Vec<u8>> = ep
            .ssh_argv(cp)
            .iter()
            .map(|w| w.as_bytes().to_vec())
            .collect();
        assert_eq!(back, argv);
    }

    #[test]
    fn posix_quoting() {
        assert_eq!(quote_posix_sh(b"plain/path-1.txt"), b"plain/path-1.txt");
        assert_eq!(quote_posix_sh(b"a b"), b"'a b'");
        assert_eq!(quote_posix_sh(b"it's"), b"'it'\\''s'");
        assert_eq!(quote_posix_sh(b""), b"''");
        assert_eq!(quote_posix_sh(b"$(x)*"), b"'$(x)*'");
    }

    #[test]
    fn control_path_is_short_and_stable() {
        let ep = endpoint();
        let a = ep.control_path(Path::new("/run/user/0/wsync"));
        assert_eq!(a, ep.control_path(Path::new("/run/user/0/wsync")));
        assert_eq!(a.file_name().unwrap().len(), 19);
        let mut other = ep.clone();
        other.port = Some(22);
        assert_ne!(a, other.control_path(Path::new("/run/user/0/wsync")));
        let dir = Path::new("/run/user/0/wsync");
        let mine = ep.control_path_for(dir, b"ws\0remote");
        assert_eq!(mine, ep.control_path_for(dir, b"ws\0remote"));
        assert_eq!(mine.file_name().unwrap().len(), 19);
        assert_ne!(mine, a);
        assert_ne!(mine, ep.control_path_for(dir, b"ws2\0remote"));
        assert_ne!(mine, ep.control_path_for(dir, b"ws\0other"));
    }

    #[test]
    fn allowed_options_match_case_insensitively_and_nothing_else() {
        assert_eq!(
            allowed_option("userknownhostsfile"),
            Some("UserKnownHostsFile")
        );
        assert_eq!(allowed_option("PROXYJUMP"), Some("ProxyJump"));
        for refused in [
            "SmartcardDevice",
            "PKCS11Provider",
            "SecurityKeyProvider",
            "ProxyCommand",
            "LocalCommand",
            "PermitLocalCommand",
            "KnownHostsCommand",
            "RemoteCommand",
            "Match",
            "Include",
            "ControlPath",
            "ControlMaster",
            "ControlPersist",
            "ForwardAgent",
            "IdentityAgent",
            "SendEnv",
            "SetEnv",
            "LocalForward",
            "RemoteForward",
            "DynamicForward",
            "XAuthLocation",
            "ForwardX11",
            "Tunnel",
            "",
        ] {
            assert_eq!(allowed_option(refused), None, "{refused} allowed");
        }
        let mut sorted = ALLOWED_OPTIONS.to_vec();
        sorted.sort_by_key(|o| o.to_ascii_lowercase());
        assert_eq!(
            sorted, ALLOWED_OPTIONS,
            "keep the list sorted: the error prints it"
        );
    }

    #[test]
    fn user_host_brackets_ipv6_for_rsync() {
        let mut ep = endpoint();
        ep.host = "::1".into();
        assert_eq!(ep.user_host(true), "me@[::1]");
        assert_eq!(ep.user_host(false), "me@::1");
    }
}
