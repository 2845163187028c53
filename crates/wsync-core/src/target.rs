//! Target identity: the `.wsync-target` marker that says a target directory is the mirror of
//! one workspace. It is written at attach (`wsyncd`), never sent from a source nor deleted by
//! rsync (every argv excludes it, see [`crate::rsync`]), and checked before every transfer (a
//! file read for a local target, part of the `--rsync-path` guard and of the rename script over
//! SSH). A target without our marker — an empty mount point, a directory re-created by someone
//! else — is never written to.
//!
//! Here: the marker's format, the attach-time inspection of a target (local, and the POSIX
//! `sh` scripts that inspect and mark an SSH target), and the messages naming the fix.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::beneath::TargetRoot;
use crate::registry::Workspace;

/// The marker's file name, at the top of a target directory.
pub const MARKER_FILE: &str = ".wsync-target";

/// What the marker holds (compact JSON, one line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The workspace's registry id ([`Workspace::id`]).
    pub workspace_id: String,
    /// The machine and directory mirrored here, for people reading the file.
    #[serde(default)]
    pub source_host: String,
    #[serde(default)]
    pub source_path: PathBuf,
    /// When the marker was written, Unix seconds.
    #[serde(default)]
    pub created_unix: u64,
}

impl Marker {
    /// A fresh marker for `workspace`, stamped now.
    pub fn new(workspace: &Workspace) -> Self {
        Self {
            workspace_id: workspace.id.clone(),
            source_host: crate::platform::hostname(),
            source_path: workspace.path.clone(),
            created_unix: crate::unix_ms(std::time::SystemTime::now()) / 1000,
        }
    }

    /// The file's bytes (with a final newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses a marker file's bytes; `None` when they are not a marker.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(bytes)
            .ok()
            .filter(|m| !m.workspace_id.is_empty())
    }
}

/// What attach found at a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    /// Nothing there: it is created with a marker.
    Missing,
    /// Something that is not a directory.
    NotADirectory,
    /// An empty directory: the marker is written.
    Empty,
    /// A directory with a marker (whose, the caller compares).
    Marked(Marker),
    /// A non-empty directory without a (readable) marker: refused without `--overwrite`.
    Unmarked,
}

/// Looks at a local target directory (attach time; follows a symlinked target like rsync, but
/// a path that is itself a symlink shows no marker: see [`read_local`]).
pub fn inspect_local(path: &Path) -> std::io::Result<TargetState> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(if std::fs::symlink_metadata(path).is_ok() {
                // A dangling symlink: creating through it would write somewhere unexpected.
                TargetState::NotADirectory
            } else {
                TargetState::Missing
            });
        }
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Ok(TargetState::NotADirectory);
    }
    if let Some(marker) = read_local(path) {
        return Ok(TargetState::Marked(marker));
    }
    let mut entries = std::fs::read_dir(path)?;
    Ok(if entries.next().is_none() {
        TargetState::Empty
    } else {
        TargetState::Unmarked
    })
}

/// The most of a marker file that is read: a marker is one short JSON line.
pub const MARKER_MAX_BYTES: u64 = 4096;

/// The marker of a local target, if it has a valid one (see [`read_marker`]).
pub fn read_local(path: &Path) -> Option<Marker> {
    read_marker(&TargetRoot::open(path).ok()?)
}

/// The marker of an open target. Only a regular file counts, never followed through a
/// symlink, and at most [`MARKER_MAX_BYTES`] of it are read: anyone who can write the target
/// could plant a link to a FIFO (a read that never returns) or to `/dev/zero` (one that never
/// ends) where the marker goes.
pub fn read_marker(root: &TargetRoot) -> Option<Marker> {
    use std::io::Read;
    let file = root.open_read(Path::new(MARKER_FILE)).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MARKER_MAX_BYTES).read_to_end(&mut bytes).ok()?;
    Marker::parse(&bytes)
}

/// Whether the local target holds the marker of workspace `id` (the check before a transfer).
pub fn is_ours_local(path: &Path, id: &str) -> bool {
    read_local(path).is_some_and(|m| m.workspace_id == id)
}

/// Whether an open target holds the marker of workspace `id` (checked on the same handle the
/// writes that follow go through).
pub fn is_ours(root: &TargetRoot, id: &str) -> bool {
    read_marker(root).is_some_and(|m| m.workspace_id == id)
}

/// Creates the local target directory if needed and writes the marker atomically (temp file in
/// the target, then rename).
pub fn write_local(path: &Path, marker: &Marker) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".wsync-target-")
        .suffix(".tmp")
        .tempfile_in(path)?;
    tmp.write_all(&marker.to_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path.join(MARKER_FILE)).map_err(|e| e.error)?;
    Ok(())
}

/// The remote command (for `ssh host CMD`) that inspects an SSH target: its path and the
/// rsync the remote runs ([`crate::rsync::remote_rsync_program`]) are its arguments, quoted by
/// [`crate::ssh::quote_posix_sh`]. It prints six lines — the state word, the resolved
/// directory (`cd -P` + `pwd -P`, empty when there is none), the login directory and `$HOME`
/// (both resolved: what [`crate::target_path::remote_hazard`] compares with), whether the path
/// itself is a symlink, and the first line of that rsync's `--version` (empty when it does not
/// run) — then the marker when there is one; see [`parse_ssh_inspection`]. The version rides
/// on the round trip attach makes anyway.
pub fn ssh_inspect_command(path: &str, rsync_program: &str) -> String {
    let script = format!(
        "d=$1; l=$(pwd -P); h=$(cd -P -- \"$HOME\" 2>/dev/null && pwd -P); k=nolink; [ -h \"$d\" ] && k=link; \
         v=$(\"$2\" --version 2>/dev/null </dev/null | head -n 1); \
         say() {{ printf '%s\\n' \"$1\" \"$2\" \"$l\" \"$h\" $k \"$v\"; }}; \
         if ! [ -e \"$d\" ] && ! [ -h \"$d\" ]; then say missing ''; exit 0; fi; \
         cd -P -- \"$d\" 2>/dev/null || {{ say notdir ''; exit 0; }}; \
         if [ -f {MARKER_FILE} ]; then say marked \"$(pwd -P)\"; head -c 4096 {MARKER_FILE}; \
         elif [ -z \"$(ls -A)\" ]; then say empty \"$(pwd -P)\"; else say unmarked \"$(pwd -P)\"; fi"
    );
    sh_c(&script, "wsync-inspect", &[path, rsync_program])
}

/// What [`ssh_inspect_command`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshInspection {
    pub state: TargetState,
    pub resolution: crate::target_path::RemoteResolution,
    /// The first line of the remote rsync's `--version` (empty when it did not run).
    pub rsync_banner: String,
}

/// Parses the output of [`ssh_inspect_command`].
pub fn parse_ssh_inspection(stdout: &[u8]) -> Option<SshInspection> {
    let text = String::from_utf8_lossy(stdout);
    let mut lines = text.splitn(7, '\n');
    let word = lines.next()?.trim();
    let mut line = || lines.next().map(str::to_owned);
    let some = |l: String| (!l.is_empty()).then_some(l);
    let (resolved, login_dir, home, link) = (line()?, line()?, line()?, line()?);
    let rsync_banner = line()?;
    let state = match word {
        "missing" => TargetState::Missing,
        "notdir" => TargetState::NotADirectory,
        "empty" => TargetState::Empty,
        "unmarked" => TargetState::Unmarked,
        "marked" => match line().and_then(|m| Marker::parse(m.as_bytes())) {
            Some(marker) => TargetState::Marked(marker),
            None => TargetState::Unmarked,
        },
        _ => return None,
    };
    let is_link = match link.as_str() {
        "link" => true,
        "nolink" => false,
        _ => return None,
    };
    Some(SshInspection {
        state,
        resolution: crate::target_path::RemoteResolution {
            resolved: some(resolved),
            login_dir,
            home: some(home),
            is_link,
        },
        rsync_banner,
    })
}

/// The remote command that creates an SSH target (if missing) and writes the marker read from
/// stdin (temp file, then `mv`).
pub fn ssh_mark_command(path: &str) -> String {
    let script = format!(
        "d=$1; mkdir -p -- \"$d\" && cd -P -- \"$d\" && cat > {MARKER_FILE}.tmp && mv -f -- {MARKER_FILE}.tmp {MARKER_FILE}"
    );
    sh_c(&script, "wsync-mark", &[path])
}

/// `sh -c 'SCRIPT' NAME 'ARG'...`: the script is constant text (no user data), the arguments
/// are quoted by the one POSIX quoter.
fn sh_c(script: &str, name: &str, args: &[&str]) -> String {
    let quote =
        |s: &str| String::from_utf8_lossy(&crate::ssh::quote_posix_sh(s.as_bytes())).into_owned();
    let mut command = format!("sh -c {} {name}", quote(script));
    for arg in args {
        command.push(' ');
        command.push_str(&quote(arg));
    }
    command
}

/// The error for a target that holds no marker of this workspace (before a transfer).
/// The error for a target that resolves to `/`, the remote home or a parent of it (the remote
/// guard refused it: a registry edited by hand skips attach's check).
pub fn too_broad_message(target: &dyn std::fmt::Display) -> String {
    format!(
        "remote target {target} resolves to /, the remote user's home or a parent of it, which `wsync attach` refuses (a mirror deletes what the workspace lacks); nothing is written there; detach the remote (`wsync detach`) and attach a directory of its own"
    )
}

pub fn not_ours_message(target: &dyn std::fmt::Display) -> String {
    format!(
        "remote target {target} is missing this workspace's {MARKER_FILE} marker (an unmounted disk, a directory re-created or replaced?); nothing is written there until the marker is back, then syncing resumes by itself; if this directory is the right target after all, detach the remote and attach it again (with --overwrite)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> Workspace {
        serde_json::from_str(r#"{"name":"w","id":"00ff","path":"/src/w"}"#).unwrap()
    }

    #[test]
    fn local_inspection_sees_each_state() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        assert_eq!(inspect_local(&t).unwrap(), TargetState::Missing);
        std::fs::create_dir(&t).unwrap();
        assert_eq!(inspect_local(&t).unwrap(), TargetState::Empty);
        std::fs::write(t.join("x"), "x").unwrap();
        assert_eq!(inspect_local(&t).unwrap(), TargetState::Unmarked);
        std::fs::write(t.join(MARKER_FILE), "garbage").unwrap();
        assert_eq!(inspect_local(&t).unwrap(), TargetState::Unmarked);
        let marker = Marker::new(&ws());
        write_local(&t, &marker).unwrap();
        assert_eq!(inspect_local(&t).unwrap(), TargetState::Marked(marker));
        assert!(is_ours_local(&t, "00ff"));
        assert!(!is_ours_local(&t, "00fe"));
        assert_eq!(
            inspect_local(&t.join("x")).unwrap(),
            TargetState::NotADirectory
        );
    }

    /// Another user who can write the target plants the marker as a link: to a FIFO (a read
    /// that never returns), to `/dev/zero` (one that never ends), or to a copy of a real marker
    /// elsewhere. None of them counts, and the check returns at once.
    #[test]
    fn a_planted_marker_link_or_fifo_is_not_a_marker_and_never_hangs() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("t");
        std::fs::create_dir(&t).unwrap();
        let elsewhere = tmp.path().join("real-marker");
        std::fs::write(&elsewhere, Marker::new(&ws()).to_bytes()).unwrap();
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let started = std::time::Instant::now();
        for target in [Path::new("/dev/zero"), fifo.as_path(), elsewhere.as_path()] {
            let _ = std::fs::remove_file(t.join(MARKER_FILE));
            std::os::unix::fs::symlink(target, t.join(MARKER_FILE)).unwrap();
            assert!(!is_ours_local(&t, "00ff"), "a link to {}", target.display());
        }
        std::fs::remove_file(t.join(MARKER_FILE)).unwrap();
        nix::unistd::mkfifo(&t.join(MARKER_FILE), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(!is_ours_local(&t, "00ff"), "a FIFO in place");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // A huge file with the id past the first 4 KiB is not read that far.
        std::fs::remove_file(t.join(MARKER_FILE)).unwrap();
        let mut big = vec![b' '; 8192];
        big.extend_from_slice(&Marker::new(&ws()).to_bytes());
        std::fs::write(t.join(MARKER_FILE), big).unwrap();
        assert!(!is_ours_local(&t, "00ff"));
    }

    #[test]
    fn parses_the_ssh_inspection() {
        let marker = Marker::new(&ws());
        let mut out =
            b"marked\n/real/t\n/home/u\n/home/u\nlink\nrsync  version 3.2.7  protocol version 31\n"
                .to_vec();
        out.extend_from_slice(&marker.to_bytes());
        let found = parse_ssh_inspection(&out).unwrap();
        assert_eq!(found.state, TargetState::Marked(marker));
        assert_eq!(
            found.rsync_banner,
            "rsync  version 3.2.7  protocol version 31"
        );
        assert_eq!(
            found.resolution,
            crate::target_path::RemoteResolution {
                resolved: Some("/real/t".into()),
                login_dir: "/home/u".into(),
                home: Some("/home/u".into()),
                is_link: true,
            }
        );
        let missing = parse_ssh_inspection(b"missing\n\n/home/u\n\nnolink\n\n").unwrap();
        assert_eq!(missing.state, TargetState::Missing);
        assert_eq!(missing.resolution.resolved, None);
        assert_eq!(missing.resolution.home, None);
        assert_eq!(missing.rsync_banner, "");
        assert_eq!(parse_ssh_inspection(b"bash: no\n"), None);
        assert_eq!(parse_ssh_inspection(b"missing\n"), None);
    }

    /// The script, run by a real `sh` here: the six lines for each state, `~`-free.
    #[test]
    fn the_inspection_script_reports_state_resolution_home_and_link() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let home = root.join("home");
        std::fs::create_dir_all(home.join("t")).unwrap();
        std::os::unix::fs::symlink(&home, root.join("to-home")).unwrap();
        let run = |path: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(ssh_inspect_command(path, "rsync"))
                .current_dir(&home)
                .env("HOME", &home)
                .output()
                .unwrap();
            parse_ssh_inspection(&out.stdout).unwrap()
        };
        let t = run("t");
        assert_eq!(t.state, TargetState::Empty);
        assert_eq!(t.resolution.resolved.as_deref(), home.join("t").to_str());
        assert_eq!(t.resolution.login_dir, home.to_str().unwrap());
        assert_eq!(t.resolution.home.as_deref(), home.to_str());
        assert!(!t.resolution.is_link);
        assert!(t.rsync_banner.starts_with("rsync  version "), "{t:?}");
        let link = run(root.join("to-home").to_str().unwrap());
        assert!(link.resolution.is_link);
        assert_eq!(link.resolution.resolved.as_deref(), home.to_str());
        assert_eq!(run("gone").state, TargetState::Missing);
    }

    #[test]
    fn scripts_quote_the_path_as_one_argument() {
        let cmd = ssh_mark_command("/srv/it's here");
        assert!(cmd.starts_with("sh -c 'd=$1; mkdir -p"), "{cmd}");
        assert!(cmd.ends_with(" wsync-mark '/srv/it'\\''s here'"), "{cmd}");
    }
}
