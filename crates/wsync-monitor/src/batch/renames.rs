//! Replaying a batch's renames on a remote before its rsync: `rename(2)` for a local target, one
//! `sh -s` script of `mv` lines over the shared ssh connection for an SSH target (paths quoted
//! by `wsync_core::ssh::quote_posix_sh`). Each rename runs only if the remote matches what the
//! source looked like before it — the source exists with the same type, and the target is
//! absent (or a regular file replaced by a file, as `rename(2)` did at the source). The first rename that does
//! not apply stops the replay; it and every later one fall back to plain rsync of both ends, so
//! the remote never stays diverged.

use std::path::{Path, PathBuf};

use wsync_core::remote::RemoteTarget;
use wsync_core::rsync::TARGET_NOT_OURS;
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
    /// The remote's target directory is gone (an error, not a fallback).
    pub target_missing: bool,
}

/// Replays `renames` in order on `dest` (a local target's off the event loop).
pub async fn replay(dest: &Destination, renames: &[Rename], stall: StallReport<'_>) -> Replayed {
    if renames.is_empty() {
        return Replayed::default();
    }
    match &dest.remote.target {
        RemoteTarget::Local { path } => {
            let call = format!("replaying renames in the target {}", path.display());
            let (path, id, renames) = (path.clone(), dest.workspace_id.clone(), renames.to_vec());
            dest.blocking(call, stall, move || replay_local(&path, &id, &renames))
                .await
        }
        RemoteTarget::Ssh { path, .. } => {
            let script = ssh_script(path.as_bytes(), &dest.workspace_id, renames);
            match dest.remote_command(b"sh -s", Some(script)).await {
                Ok(out) => {
                    let text = String::from_utf8_lossy(&out);
                    let done = text.trim().parse::<usize>().unwrap_or(0).min(renames.len());
                    let stopped = (done < renames.len()).then(|| {
                        format!("the remote does not match the rename {:?}", renames[done])
                    });
                    Replayed {
                        done,
                        stopped,
                        target_missing: false,
                    }
                }
                Err(e) => Replayed {
                    done: 0,
                    target_missing: e.to_string().contains(TARGET_NOT_OURS),
                    stopped: Some(e.to_string()),
                },
            }
        }
    }
}

fn replay_local(target: &Path, workspace_id: &str, renames: &[Rename]) -> Replayed {
    if !wsync_core::target::is_ours_local(target, workspace_id) {
        return Replayed {
            done: 0,
            stopped: Some("the target holds no marker of this workspace".into()),
            target_missing: true,
        };
    }
    for (done, rename) in renames.iter().enumerate() {
        let (from, to) = (target.join(&rename.from), target.join(&rename.to));
        let applies = match std::fs::symlink_metadata(&from) {
            Ok(meta) if meta.is_dir() == rename.is_dir => match std::fs::symlink_metadata(&to) {
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
                // A file replaced by a file, as rename(2) did at the source; never into a
                // directory or through a symlink.
                Ok(existing) => existing.file_type().is_file() && !rename.is_dir,
            },
            _ => false,
        };
        let result = if applies {
            std::fs::rename(&from, &to).map_err(|e| e.to_string())
        } else {
            Err("the remote does not match".into())
        };
        if let Err(e) = result {
            return Replayed {
                done,
                stopped: Some(format!("{rename:?}: {e}")),
                target_missing: false,
            };
        }
    }
    Replayed {
        done: renames.len(),
        stopped: None,
        target_missing: false,
    }
}

/// The script run by `sh -s` on the remote: `cd` to the target and check its marker names
/// `workspace_id` (or report it is not ours), one
/// guarded `mv` per rename, and the number applied on stdout. Relative paths get a `./` prefix
/// so no name can look like an option or a test operator.
pub fn ssh_script(target: &[u8], workspace_id: &str, renames: &[Rename]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(b"cd -- ");
    s.extend_from_slice(&quote_posix_sh(target));
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
          op() {\n\
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
        s.extend_from_slice(if rename.is_dir { b" d" } else { b" f" });
        s.extend_from_slice(b" || { echo $n; exit 0; }; n=$((n+1))\n");
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

    fn run_script(script: &[u8]) -> (String, String) {
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
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
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
        let script = ssh_script(t.as_os_str().as_encoded_bytes(), "00ff", &ops);
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
        ));
        assert_eq!(out, "0");
        assert!(t.join("e/q").exists());
        let (_, err) = run_script(&ssh_script(b"/nonexistent/x", "00ff", &ops));
        assert!(err.contains(TARGET_NOT_OURS), "{err}");
        // Another workspace's marker, or none: nothing moves.
        let (out, err) = run_script(&ssh_script(
            t.as_os_str().as_encoded_bytes(),
            "00fe",
            &[rename("b", "c", false)],
        ));
        assert!(err.contains(TARGET_NOT_OURS) && out.is_empty(), "{err}");
        assert!(t.join("b").exists());
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
        );
        assert_eq!(r.done, 1, "{r:?}");
        assert_eq!(std::fs::read_to_string(t.join("g")).unwrap(), "F");
        assert!(t.join("dir").is_dir());
        assert!(replay_local(&t.join("gone"), "00ff", &[rename("a", "b", false)]).target_missing);
        assert!(replay_local(t, "00fe", &[rename("g", "h", false)]).target_missing);
        assert!(t.join("g").exists());
    }
}
