//! What an rsync can do, from its `rsync --version` banner: the parse of the banner, the
//! minimum wsync needs on either end (with the fix named when it is not met: openrsync and
//! 2.6.9, what macOS ships, are refused), and whether its `--delete-missing-args` works (3.4.3
//! and some 3.2.7 distribution backports reject the entry it sends, see
//! [`delete_missing_args_broken_in`]). The daemon checks both ends at attach, each monitor
//! before its first transfer to a remote; status shows what was found.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The oldest rsync wsync runs with, on either end. What needs what:
/// `--modify-window=-1` (mtimes compared to the nanosecond) 3.1.3; `--info=progress2`,
/// `--info=skip1`, `--debug=EXIT2` and `--delete-missing-args` 3.1.0; `--append-verify` and
/// `--protect-args` 3.0.0; `--backup-dir`, `--files-from` and `--from0` 2.6. wsync does not
/// use `--mkpath` (attach creates the target).
pub const MINIMUM: Release = Release {
    major: 3,
    minor: 1,
    patch: 3,
};

/// A release number, `3.2.7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Release {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Which program answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// rsync from rsync.samba.org / RsyncProject.
    Rsync,
    /// OpenBSD's openrsync (macOS's `/usr/bin/rsync` since 15.4): a subset of rsync's options.
    Openrsync,
}

/// One end's rsync as its banner describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RsyncVersion {
    pub flavor: Flavor,
    /// `None` for openrsync (it names only the protocol and the rsync it mimics).
    pub release: Option<Release>,
    /// What followed the release number (`dev`, `pre1`, `-67-g680b8494`): a build that is
    /// not the release itself.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub suffix: String,
    pub protocol: Option<u32>,
}

impl RsyncVersion {
    /// Parses `rsync --version` output (its first lines are enough):
    /// `rsync  version 3.2.7  protocol version 31` or openrsync's
    /// `openrsync: protocol version 29`. `None` when it is neither.
    pub fn parse(banner: &str) -> Option<Self> {
        let first = banner.lines().find(|l| !l.trim().is_empty())?.trim();
        let protocol = first
            .split_once("protocol version ")
            .and_then(|(_, rest)| leading_number(rest));
        if first.starts_with("openrsync") {
            return Some(Self {
                flavor: Flavor::Openrsync,
                release: None,
                suffix: String::new(),
                protocol,
            });
        }
        let rest = first.strip_prefix("rsync")?.trim_start();
        let rest = rest.strip_prefix("version")?.trim_start();
        let word = rest.split_whitespace().next()?;
        let word = word.strip_prefix('v').unwrap_or(word);
        let numeric = word
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .map_or(word, |at| &word[..at])
            .trim_end_matches('.');
        let suffix = &word[numeric.len()..];
        let numbers: Vec<u32> = numeric
            .split('.')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        if !(2..=3).contains(&numbers.len()) {
            return None;
        }
        Some(Self {
            flavor: Flavor::Rsync,
            release: Some(Release {
                major: numbers[0],
                minor: numbers[1],
                patch: numbers.get(2).copied().unwrap_or(0),
            }),
            suffix: suffix.to_owned(),
            protocol,
        })
    }

    /// Why wsync cannot use this rsync, naming `fix` (what to do about this end), or `Ok`.
    pub fn check(&self) -> Result<(), Unsupported> {
        match (self.flavor, self.release) {
            (Flavor::Rsync, Some(release)) if release >= MINIMUM => Ok(()),
            _ => Err(Unsupported {
                found: self.to_string(),
            }),
        }
    }

    /// Whether this rsync, receiving, rejects the entry `--delete-missing-args` sends for a
    /// missing path (`invalid file mode 00 ... protocol incompatibility`): the 3.4.3 release
    /// (fixed in 3.4.4; RsyncProject/rsync#910). Distribution backports of the same fix to
    /// 3.2.7 (Ubuntu's 3.2.7-1ubuntu1.4) and 3.4.1 carry the old number: those are found
    /// by their error ([`delete_missing_args_broken_in`]) instead.
    pub fn delete_missing_args_broken(&self) -> bool {
        self.flavor == Flavor::Rsync
            && self.suffix.is_empty()
            && self.release
                == Some(Release {
                    major: 3,
                    minor: 4,
                    patch: 3,
                })
    }
}

impl RsyncVersion {
    /// A short name for tables: `3.2.7`, `3.4.3-67-g680b8494`, `openrsync`.
    pub fn label(&self) -> String {
        match (self.flavor, self.release) {
            (Flavor::Rsync, Some(release)) => format!("{release}{}", self.suffix),
            (Flavor::Rsync, None) => "rsync".into(),
            (Flavor::Openrsync, _) => "openrsync".into(),
        }
    }
}

impl fmt::Display for RsyncVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.flavor, self.release) {
            (Flavor::Rsync, Some(release)) => write!(f, "rsync {release}{}", self.suffix)?,
            (Flavor::Rsync, None) => write!(f, "rsync (unknown version)")?,
            (Flavor::Openrsync, _) => write!(f, "openrsync")?,
        }
        if let Some(protocol) = self.protocol {
            write!(f, " (protocol {protocol})")?;
        }
        Ok(())
    }
}

fn leading_number(text: &str) -> Option<u32> {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// An rsync wsync cannot use; [`Unsupported::message`] names the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// What was found (`openrsync (protocol 29)`, `rsync 2.6.9 (protocol 29)`).
    pub found: String,
}

/// Which end of a transfer an rsync is on, for the fix a message names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End<'a> {
    /// This machine's `rsync` (the one on wsync's `PATH`).
    Local,
    /// The rsync an SSH remote runs (`host` names it, `rsync_path` is what the remote is set
    /// to run, if anything).
    Remote {
        host: &'a str,
        rsync_path: Option<&'a str>,
    },
}

impl Unsupported {
    /// The user's message: what was found, what wsync needs, and the fix for that end.
    pub fn message(&self, end: End<'_>) -> String {
        let needs = format!("wsync needs rsync {MINIMUM} or later");
        match end {
            End::Local => format!(
                "the local rsync is {} and {needs} on both ends: install it (macOS: `brew install rsync`; Linux: your package manager) and make sure it comes first on the PATH wsyncd runs with, then run `wsync restart`",
                self.found
            ),
            End::Remote { host, rsync_path } => {
                let running = rsync_path.map_or_else(
                    || "`rsync` on the remote's PATH".to_owned(),
                    |p| format!("{p} (its rsync path)"),
                );
                format!(
                    "the rsync on {host} ({running}) is {} and {needs} on both ends: install it there (macOS: `brew install rsync`), or point this remote at one with `wsync attach --rsync-path /path/to/rsync` (detach it first)",
                    self.found
                )
            }
        }
    }
}

/// The message of a receiving rsync that rejects `--delete-missing-args`'s entry for a
/// missing path (3.4.3 and its backports): seen in a failed run's output, the remote is
/// switched to the deletion fallback and the batch is run again.
pub const DELETE_MISSING_ARGS_REJECTED: &str = "invalid file mode 00 for ";

/// True when `output` (rsync's stderr) shows the `--delete-missing-args` rejection.
pub fn delete_missing_args_broken_in(output: &str) -> bool {
    output.contains(DELETE_MISSING_ARGS_REJECTED)
}

/// Both ends of one remote, as status shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RsyncEnds {
    /// This machine's rsync (`None` until checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<RsyncVersion>,
    /// The remote's (for a local target, the same program as `local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RsyncVersion>,
    /// Deletions go by the filter-list fallback: the receiving rsync's
    /// `--delete-missing-args` is broken.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deletion_fallback: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSYNC_327: &str = "rsync  version 3.2.7  protocol version 31\nCopyright (C) 1996-2022 by Andrew Tridgell, Wayne Davison, and others.\nWeb site: https://rsync.samba.org/\n";
    const RSYNC_269: &str = "rsync  version 2.6.9  protocol version 29\nCopyright (C) 1996-2006 by Andrew Tridgell, Wayne Davison, and others.\n";
    const OPENRSYNC: &str = "openrsync: protocol version 29\nrsync version 2.6.9 compatible\n";

    fn release(major: u32, minor: u32, patch: u32) -> Option<Release> {
        Some(Release {
            major,
            minor,
            patch,
        })
    }

    #[test]
    fn parses_the_banners_wsync_meets() {
        let v = RsyncVersion::parse(RSYNC_327).unwrap();
        assert_eq!(
            (v.flavor, v.release, v.protocol),
            (Flavor::Rsync, release(3, 2, 7), Some(31))
        );
        assert_eq!(v.to_string(), "rsync 3.2.7 (protocol 31)");
        let v = RsyncVersion::parse(OPENRSYNC).unwrap();
        assert_eq!((v.flavor, v.release), (Flavor::Openrsync, None));
        assert_eq!(v.to_string(), "openrsync (protocol 29)");
        let v =
            RsyncVersion::parse("rsync  version 3.4.3-67-g680b8494  protocol version 32").unwrap();
        assert_eq!(
            (v.release, v.suffix.as_str()),
            (release(3, 4, 3), "-67-g680b8494")
        );
        let v = RsyncVersion::parse("rsync  version v3.2.0pre1  protocol version 31").unwrap();
        assert_eq!((v.release, v.suffix.as_str()), (release(3, 2, 0), "pre1"));
        let v = RsyncVersion::parse("rsync version 3.1  protocol version 31").unwrap();
        assert_eq!(v.release, release(3, 1, 0));
        for junk in [
            "",
            "sh: rsync: not found",
            "rsync: command not found",
            "rsync version x",
        ] {
            assert_eq!(RsyncVersion::parse(junk), None, "{junk}");
        }
    }

    #[test]
    fn refuses_what_macos_ships_and_anything_before_3_1_3() {
        for refused in [
            OPENRSYNC,
            RSYNC_269,
            "rsync  version 3.0.9  protocol version 30",
            "rsync  version 3.1.2  protocol version 31",
        ] {
            let v = RsyncVersion::parse(refused).unwrap();
            let err = v.check().unwrap_err();
            let local = err.message(End::Local);
            assert!(local.contains("brew install rsync"), "{local}");
            assert!(
                local.contains(&err.found) && local.contains("3.1.3"),
                "{local}"
            );
            let remote = err.message(End::Remote {
                host: "mac",
                rsync_path: None,
            });
            assert!(
                remote.contains("--rsync-path") && remote.contains("mac"),
                "{remote}"
            );
        }
        for accepted in [
            "rsync  version 3.1.3  protocol version 31",
            RSYNC_327,
            "rsync  version 3.5.0  protocol version 32",
        ] {
            assert_eq!(RsyncVersion::parse(accepted).unwrap().check(), Ok(()));
        }
    }

    #[test]
    fn knows_which_delete_missing_args_is_broken() {
        let broken = |banner: &str| {
            RsyncVersion::parse(banner)
                .unwrap()
                .delete_missing_args_broken()
        };
        assert!(broken("rsync  version 3.4.3  protocol version 32"));
        assert!(!broken("rsync  version 3.4.4  protocol version 32"));
        assert!(!broken(
            "rsync  version 3.4.3-67-g680b8494  protocol version 32"
        ));
        // A backport keeps the old number: only its error tells.
        assert!(!broken(RSYNC_327));
        assert!(delete_missing_args_broken_in(
            "invalid file mode 00 for timezone [Receiver]\nrsync error: protocol incompatibility (code 2) at flist.c(874) [Receiver=3.4.3]\n"
        ));
        assert!(!delete_missing_args_broken_in(
            "rsync error: some files vanished"
        ));
    }

    #[test]
    fn the_ends_round_trip_as_json() {
        let ends = RsyncEnds {
            local: RsyncVersion::parse(RSYNC_327),
            remote: RsyncVersion::parse("rsync  version 3.4.3  protocol version 32"),
            deletion_fallback: true,
        };
        let json = serde_json::to_string(&ends).unwrap();
        assert_eq!(
            json,
            r#"{"local":{"flavor":"rsync","release":{"major":3,"minor":2,"patch":7},"protocol":31},"remote":{"flavor":"rsync","release":{"major":3,"minor":4,"patch":3},"protocol":32},"deletion_fallback":true}"#
        );
        assert_eq!(serde_json::from_str::<RsyncEnds>(&json).unwrap(), ends);
        assert_eq!(
            serde_json::from_str::<RsyncEnds>("{}").unwrap(),
            RsyncEnds::default()
        );
    }
}
