//! Replaying a batch's renames on a remote before its rsync: `renameat` beneath the target's
//! handle for a local target ([`wsync_core::beneath`]); for an SSH target the same, by its
//! agent (`Destination::replay_by_agent`, one round trip), or where the remote has no agent,
//! one `sh -s` script of `mv` lines over the shared ssh connection (paths quoted by
//! `wsync_core::ssh::quote_posix_sh`). Each rename runs only if the remote matches what the
//! source looked like before it — the source exists with the same type, and the target is
//! absent (or a regular file replaced by a file, as `rename(2)` did at the source, unless the
//! remote keeps what is overwritten in its trash: rsync then does it, with its backup). The first rename that does
//! not apply stops the replay; it and every later one fall back to plain rsync of both ends, so
//! the remote never stays diverged.

use std::path::{Path, PathBuf};

use wsync_core::beneath::{BeneathError, TargetRoot};
use wsync_core::executor::rename_if_matching;
use wsync_core::remote::RemoteTarget;
use wsync_core::rsync::{guard_refusal, ssh_target_checks, TARGET_NOT_OURS};
use wsync_core::ssh::quote_posix_sh;
use wsync_core::target::MARKER_FILE;

use super::Destination;
use crate::blocking::StallReport;
use crate::queue::Rename;

/// How far a replay got.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Renames applied, from the start of the list.
    pub done: usize,
    /// Why the replay stopped early (logged; the rest falls back to rsync).
    pub stopped: Option<String>,
    /// The remote refused the script (its target is not ours, or resolves to the remote home
    /// or above): the error, not a fallback.
    pub refused: Option<String>,
    /// A directory on the way to an end of the rename that stopped the replay is a symlink
    /// (or not a directory) on the remote: rsync sends it whole, which replaces what is there.
    pub diverged: Option<PathBuf>,
}

/// Replays `renames` in order on `dest` (a local target's off the event loop, behind its gate).
/// With `keep_overwritten` (the remote keeps deletions), a rename onto an existing file does
/// not apply: it falls back to rsync, which moves the overwritten file into the trash.
pub async fn replay(
    dest: &Destination,
    renames: &[Rename],
    keep_overwritten: bool,
    stall: StallReport<'_>,
) -> Replayed {
    if renames.is_empty() {
        return Replayed::default();
    }
    match &dest.remote.target {
        RemoteTarget::Local { path } => {
            let call = format!("replaying renames in the target {}", path.display());
            let (path, id, renames) = (path.clone(), dest.workspace_id.clone(), renames.to_vec());
            dest.blocking(call, stall, move || {
                replay_local(&path, &id, &renames, keep_overwritten)
            })
            .await
        }
        RemoteTarget::Ssh { path, .. } => {
            if let Some(replayed) = dest.replay_by_agent(renames, keep_overwritten).await {
                return replayed;
            }
            let script = ssh_script(
                path.as_bytes(),
                &dest.workspace_id,
                renames,
                keep_overwritten,
            );
            match dest.remote_command(b"sh -s", Some(script)).await {
                Ok(out) => ssh_replayed(&out, renames),
                Err(e) => Replayed {
                    done: 0,
                    refused: guard_refusal(&e.to_string(), &dest.remote.target),
                    stopped: Some(e.to_string()),
                    diverged: None,
                },
            }
        }
    }
}

/// Every rename goes through one [`TargetRoot`] opened once, whose marker is checked on the same
/// handle: a symlink in a parent directory of either end (another user who owns a mirrored
/// directory can plant one) stops the replay, and rsync replaces the link.
/// With `keep_overwritten` (the trash is on) a rename onto an existing file is not replayed:
/// rsync does it, keeping the old file.
fn replay_local(
    target: &Path,
    workspace_id: &str,
    renames: &[Rename],
    keep_overwritten: bool,
) -> Replayed {
    let root = match TargetRoot::open(target) {
        Ok(root) if wsync_core::target::is_ours(&root, workspace_id) => root,
        _ => {
            return Replayed {
                done: 0,
                stopped: Some("the target holds no marker of this workspace".into()),
                refused: Some(wsync_core::target::not_ours_message(&target.display())),
                diverged: None,
            }
        }
    };
    for (done, rename) in renames.iter().enumerate() {
        let result = rename_if_matching(
            &root,
            &rename.from,
            &rename.to,
            rename.is_dir,
            keep_overwritten,
        );
        let result = match result {
            Ok(true) => Ok(()),
            Ok(false) => {
                return Replayed {
                    done,
                    stopped: Some(format!("{rename:?}: the remote does not match")),
                    ..Replayed::default()
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let diverged = match &e {
                BeneathError::Symlink { at, .. } | BeneathError::NotADirectory { at, .. } => {
                    Some(at.clone())
                }
                _ => None,
            };
            return Replayed {
                done,
                stopped: Some(format!("{rename:?}: {e}")),
                refused: None,
                diverged,
            };
        }
    }
    Replayed {
        done: renames.len(),
        ..Replayed::default()
    }
}

/// Reads the script's answer: the number of renames applied, then, when a parent directory of
/// the next one was refused, that directory (as `./path`, to the end of the output). Only an
/// ancestor of that rename's ends is taken from the remote.
fn ssh_replayed(out: &[u8], renames: &[Rename]) -> Replayed {
    use std::os::unix::ffi::OsStrExt;
    let (count, refused) = match out.iter().position(|b| *b == b'\n') {
        Some(at) => (&out[..at], &out[at + 1..]),
        None => (out, &[][..]),
    };
    let done = String::from_utf8_lossy(count)
        .trim()
        .parse::<usize>()
        .unwrap_or(0)
        .min(renames.len());
    let Some(rename) = renames.get(done) else {
        return Replayed {
            done,
            ..Replayed::default()
        };
    };
    let diverged = refused
        .strip_prefix(b"./")
        .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(p)))
        .filter(|p| {
            !p.as_os_str().is_empty()
                && [&rename.from, &rename.to]
                    .iter()
                    .any(|end| end.starts_with(p) && *end != p)
        });
    let why = match &diverged {
        Some(dir) => format!("{dir:?} is a symlink or not a directory on the remote"),
        None => "the remote does not match".into(),
    };
    Replayed {
        done,
        stopped: Some(format!("{rename:?}: {why}")),
        refused: None,
        diverged,
    }
}

/// The script run by `sh -s` on the remote: `cd` to the target and check its marker names
/// `workspace_id` (or report it is not ours), one
/// guarded `mv` per rename, and the number applied on stdout. Relative paths get a `./` prefix
/// so no name can look like an option or a test operator. `plain` walks every parent of both
/// ends (`./a/b/c`: `./a/b`, `./a`) and refuses a symlink or a non-directory: `mv` resolves
/// paths, so a mirrored directory replaced by a link would move files outside the target. The
/// check runs just before each `mv`, not atomically with it: closing that window needs
/// descriptor-relative calls on the remote (a remote agent), which `sh` cannot make. A file
/// rename is `f` (may replace a regular file) or, with `keep_overwritten`, `k` (may not).
pub fn ssh_script(
    target: &[u8],
    workspace_id: &str,
    renames: &[Rename],
    keep_overwritten: bool,
) -> Vec<u8> {
    let mut s = b"d=".to_vec();
    s.extend_from_slice(&quote_posix_sh(target));
    s.extend_from_slice(b"\n");
    s.extend_from_slice(ssh_target_checks().as_bytes());
    s.extend_from_slice(b"\ncd -- \"$d\"");
    // The marker counts only as a regular file, not a symlink (see `wsync_core::target::read_local`),
    // and at most its first 4 KiB are searched.
    s.extend_from_slice(
        format!(" && [ -f {MARKER_FILE} ] && ! [ -h {MARKER_FILE} ] && head -c 4096 {MARKER_FILE} | grep -qF -- ").as_bytes(),
    );
    s.extend_from_slice(&quote_posix_sh(workspace_id.as_bytes()));
    s.extend_from_slice(
        format!(" 2>/dev/null || {{ echo '{TARGET_NOT_OURS}' >&2; exit 97; }}\n").as_bytes(),
    );
    s.extend_from_slice(
        b"n=0\n\
          there() { [ -e \"$1\" ] || [ -h \"$1\" ]; }\n\
          plain() { p=${1%/*}; while [ \"$p\" != . ]; do [ -d \"$p\" ] && ! [ -h \"$p\" ] || return 1; p=${p%/*}; done; }\n\
          op() {\n\
          \x20 plain \"$1\" && plain \"$2\" || return 3\n\
          \x20 if [ \"$3\" = d ]; then [ -d \"$1\" ] && ! [ -h \"$1\" ]; else there \"$1\" && ! { [ -d \"$1\" ] && ! [ -h \"$1\" ]; }; fi || return 1\n\
          \x20 if there \"$2\"; then [ \"$3\" = f ] && [ -f \"$2\" ] && ! [ -h \"$2\" ] || return 1; fi\n\
          \x20 mv -f -- \"$1\" \"$2\"\n\
          }\n",
    );
    for rename in renames {
        s.extend_from_slice(b"op ");
        s.extend_from_slice(&quote_posix_sh(&dot_slash(&rename.from)));
        s.push(b' ');
        s.extend_from_slice(&quote_posix_sh(&dot_slash(&rename.to)));
        s.extend_from_slice(match (rename.is_dir, keep_overwritten) {
            (true, _) => b" d",
            (false, false) => b" f",
            (false, true) => b" k",
        });
        s.extend_from_slice(
            b" || { r=$?; echo $n; [ $r = 3 ] && printf %s \"$p\"; exit 0; }; n=$((n+1))\n",
        );
    }
    s.extend_from_slice(b"echo $n\n");
    s
}

fn dot_slash(rel: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = b"./".to_vec();
    out.extend_from_slice(rel.as_os_str().as_bytes());
    out
}

/// The paths rsync must cover for renames that were not replayed: both ends of each.
pub fn fallback_paths(renames: &[Rename]) -> impl Iterator<Item = &PathBuf> {
    renames.iter().flat_map(|r| [&r.from, &r.to])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rename(from: &str, to: &str, is_dir: bool) -> Rename {
        Rename {
            from: from.into(),
            to: to.into(),
            is_dir,
        }
    }

    /// Marks `t` as the target of workspace `00ff`.
    fn mark(t: &Path) {
        std::fs::write(t.join(MARKER_FILE), r#"{"workspace_id":"00ff"}"#).unwrap();
    }

    /// Runs the script for `renames` on `t` and reads its answer as the monitor does.
    fn replay_by_script(t: &Path, renames: &[Rename]) -> Replayed {
        let script = ssh_script(t.as_os_str().as_encoded_bytes(), "00ff", renames, false);
        let (out, err) = run_script_raw(&script);
        assert!(!out.is_empty(), "{err}");
        ssh_replayed(&out, renames)
    }

    fn run_script(script: &[u8]) -> (String, String) {
        let (out, err) = run_script_raw(script);
        (String::from_utf8_lossy(&out).trim().to_owned(), err)
    }

    fn run_script_raw(script: &[u8]) -> (Vec<u8>, String) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(script).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A hand-edited registry entry naming the remote home: the script refuses before any
    /// `mv`, even with our marker there, and says why.
    #[test]
    fn the_ssh_script_refuses_a_target_that_is_the_remote_home() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().canonicalize().unwrap();
        std::fs::write(home.join("a"), "A").unwrap();
        mark(&home);
        let ops = [rename("a", "b", false)];
        let script = ssh_script(home.as_os_str().as_encoded_bytes(), "00ff", &ops, false);
        let mut child = std::process::Command::new("sh")
            .arg("-s")
            .current_dir(&home)
            .env("HOME", &home)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&script).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(97), "{err}");
        assert!(err.contains(wsync_core::rsync::TARGET_TOO_BROAD), "{err}");
        assert!(out.stdout.is_empty());
        assert!(home.join("a").exists() && !home.join("b").exists());
        // A directory below the home replays as usual.
        let sub = home.join("mirror");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("a"), "A").unwrap();
        mark(&sub);
        assert_eq!(replay_by_script(&sub, &ops).done, 1);
    }

    #[test]
    fn the_ssh_script_replays_swaps_and_odd_names_and_stops_on_mismatch() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("target dir");
        std::fs::create_dir_all(t.join("d")).unwrap();
        std::fs::write(t.join("a"), "A").unwrap();
        std::fs::write(t.join("b"), "B").unwrap();
        std::fs::write(t.join("-n"), "N").unwrap();
        std::fs::write(t.join("it's $x"), "Q").unwrap();
        mark(&t);
        let ops = [
            rename("a", "tmp", false),
            rename("b", "a", false),
            rename("tmp", "b", false),
            rename("-n", "new\nline", false),
            rename("it's $x", "d/q", false),
            rename("d", "e", true),
            // The remote has no such file: stop here.
            rename("missing", "x", false),
            rename("e", "f", true),
        ];
        let script = ssh_script(t.as_os_str().as_encoded_bytes(), "00ff", &ops, false);
        let (out, err) = run_script(&script);
        assert_eq!(out, "6", "{err}");
        assert_eq!(std::fs::read_to_string(t.join("a")).unwrap(), "B");
        assert_eq!(std::fs::read_to_string(t.join("b")).unwrap(), "A");
        assert_eq!(std::fs::read_to_string(t.join("new\nline")).unwrap(), "N");
        assert_eq!(std::fs::read_to_string(t.join("e/q")).unwrap(), "Q");
        // A directory never moves into an existing directory.
        std::fs::create_dir(t.join("g")).unwrap();
        let (out, _) = run_script(&ssh_script(
            t.as_os_str().as_encoded_bytes(),
            "00ff",
            &[rename("e", "g", true)],
            false,
        ));
        assert_eq!(out, "0");
        assert!(t.join("e/q").exists());
        let (_, err) = run_script(&ssh_script(b"/nonexistent/x", "00ff", &ops, false));
        assert!(err.contains(TARGET_NOT_OURS), "{err}");
        // Another workspace's marker, or none: nothing moves.
        let (out, err) = run_script(&ssh_script(
            t.as_os_str().as_encoded_bytes(),
            "00fe",
            &[rename("b", "c", false)],
            false,
        ));
        assert!(err.contains(TARGET_NOT_OURS) && out.is_empty(), "{err}");
        assert!(t.join("b").exists());
    }

    /// A remote that keeps what is overwritten: a rename onto an existing file is left to
    /// rsync (which moves the old file into the trash), locally and in the SSH script.
    #[test]
    fn a_rename_over_a_file_falls_back_when_the_remote_keeps_overwritten_files() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        std::fs::write(t.join("new"), "N").unwrap();
        std::fs::write(t.join("old"), "O").unwrap();
        mark(t);
        let over = [rename("new", "old", false)];
        assert_eq!(replay_local(t, "00ff", &over, true).done, 0);
        let script = ssh_script(t.as_os_str().as_encoded_bytes(), "00ff", &over, true);
        assert_eq!(run_script(&script).0, "0");
        assert_eq!(std::fs::read_to_string(t.join("old")).unwrap(), "O");
        // A rename onto nothing still replays.
        let free = [rename("new", "fresh", false)];
        let script = ssh_script(t.as_os_str().as_encoded_bytes(), "00ff", &free, true);
        assert_eq!(run_script(&script).0, "1");
        assert_eq!(std::fs::read_to_string(t.join("fresh")).unwrap(), "N");
    }

    #[test]
    fn local_replay_checks_the_remote_first() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        std::fs::create_dir(t.join("dir")).unwrap();
        std::fs::write(t.join("f"), "F").unwrap();
        std::fs::write(t.join("g"), "G").unwrap();
        mark(t);
        let r = replay_local(
            t,
            "00ff",
            &[
                rename("f", "g", false),
                rename("dir", "g", true),
                rename("g", "h", false),
            ],
            false,
        );
        assert_eq!(r.done, 1, "{r:?}");
        assert_eq!(std::fs::read_to_string(t.join("g")).unwrap(), "F");
        assert!(t.join("dir").is_dir());
        assert!(
            replay_local(&t.join("gone"), "00ff", &[rename("a", "b", false)], false)
                .refused
                .is_some()
        );
        assert!(replay_local(t, "00fe", &[rename("g", "h", false)], false)
            .refused
            .is_some());
        assert!(t.join("g").exists());
    }

    /// `tmp/t` (marked) with `shared/x`, and `shared/sub` replaced by a link to `tmp/secret`
    /// (a directory only root may write, holding `passwd`): the attack of issue 12.
    fn planted(tmp: &Path) -> (PathBuf, PathBuf) {
        let (t, secret) = (tmp.join("t"), tmp.join("secret"));
        std::fs::create_dir_all(t.join("shared/real")).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("passwd"), "root:x:0:0").unwrap();
        std::fs::write(t.join("shared/x"), "attacker").unwrap();
        std::fs::write(t.join("shared/real/y"), "Y").unwrap();
        std::os::unix::fs::symlink(&secret, t.join("shared/sub")).unwrap();
        mark(&t);
        (t, secret)
    }

    fn secret_intact(secret: &Path) {
        let names: Vec<_> = std::fs::read_dir(secret)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["passwd"]);
        assert_eq!(
            std::fs::read_to_string(secret.join("passwd")).unwrap(),
            "root:x:0:0"
        );
    }

    /// Into, out of and within the linked directory: nothing moves, the replay stops at once.
    const THROUGH_THE_LINK: [(&str, &str, bool); 3] = [
        ("shared/x", "shared/sub/passwd", false),
        ("shared/sub/passwd", "shared/stolen", false),
        ("shared/sub/passwd", "shared/sub/other", false),
    ];

    #[test]
    fn local_replay_never_goes_through_a_symlinked_parent() {
        for (from, to, is_dir) in THROUGH_THE_LINK {
            let tmp = tempfile::tempdir().unwrap();
            let (t, secret) = planted(tmp.path());
            let r = replay_local(&t, "00ff", &[rename(from, to, is_dir)], false);
            assert_eq!(r.done, 0, "{from} -> {to}: {r:?}");
            let why = r.stopped.unwrap_or_default();
            assert!(why.contains("a symlink in the path"), "{why}");
            assert!(r.refused.is_none());
            // rsync then sends the directory whole, replacing the link.
            assert_eq!(r.diverged.as_deref(), Some(Path::new("shared/sub")));
            secret_intact(&secret);
            assert!(t.join("shared/x").exists());
        }
        // A plain nested rename still applies.
        let tmp = tempfile::tempdir().unwrap();
        let (t, _) = planted(tmp.path());
        let r = replay_local(
            &t,
            "00ff",
            &[rename("shared/real/y", "shared/real/z", false)],
            false,
        );
        assert_eq!(r.done, 1, "{r:?}");
    }

    #[test]
    fn the_ssh_script_never_goes_through_a_symlinked_parent() {
        for (from, to, is_dir) in THROUGH_THE_LINK {
            let tmp = tempfile::tempdir().unwrap();
            let (t, secret) = planted(tmp.path());
            let renames = [
                rename(from, to, is_dir),
                rename("shared/real/y", "shared/real/z", false),
            ];
            let r = replay_by_script(&t, &renames);
            assert_eq!(r.done, 0, "{from} -> {to}: {r:?}");
            assert_eq!(r.diverged.as_deref(), Some(Path::new("shared/sub")));
            secret_intact(&secret);
            assert!(t.join("shared/x").exists() && t.join("shared/real/y").exists());
        }
        let tmp = tempfile::tempdir().unwrap();
        let (t, _) = planted(tmp.path());
        // A file where a parent directory should be is refused too, and named; a plain nested
        // rename applies.
        let r = replay_by_script(
            &t,
            &[
                rename("shared/real/y", "shared/real/z", false),
                rename("shared/real/z", "shared/x/z", false),
            ],
        );
        assert_eq!(r.done, 1, "{r:?}");
        assert_eq!(r.diverged.as_deref(), Some(Path::new("shared/x")));
        assert!(t.join("shared/real/z").exists());
        // A mismatch that is no diverged directory names none.
        let r = replay_by_script(&t, &[rename("shared/nothing", "shared/real/w", false)]);
        assert_eq!((r.done, r.diverged), (0, None));
    }

    /// The remote's answer names a directory only on the way to the refused rename's ends.
    #[test]
    fn a_diverged_directory_is_taken_from_the_remote_only_on_the_way() {
        let renames = [rename("a/b/c", "d/e", false)];
        for (answer, diverged) in [
            (&b"0\n./a/b"[..], Some("a/b")),
            (b"0\n./d", Some("d")),
            (b"0\n./d/e", None),
            (b"0\n./etc", None),
            (b"0\n/etc", None),
            (b"0\n", None),
            (b"1\n./a", None),
        ] {
            let r = ssh_replayed(answer, &renames);
            assert_eq!(r.diverged.as_deref(), diverged.map(Path::new), "{answer:?}");
        }
    }
}
