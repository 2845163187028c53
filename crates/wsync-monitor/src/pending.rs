//! Pending-change files: the paths still to sync to one remote, persisted so that changes
//! collected while a workspace is paused or halted, or not yet sent when the monitor stops,
//! survive a monitor or daemon restart. The next monitor reads them at start and its initial
//! full sync sends those files by content (`--ignore-times`), not by size and mtime.
//!
//! One file per workspace and remote, `<pending_dir>/<workspace id>.<remote>.pending`, in the
//! directory the daemon names in `start.pending_dir` (next to the registry, so it survives a
//! reboot too). Format version 1: the line `wsync-pending 1\n`, then each path relative to the
//! workspace root followed by a NUL byte (any file name is representable). At most
//! `queue::KNOWN_DIRTY_CAP` paths are read; an entry that is absolute or has a `.`/`..`
//! component is dropped.
//!
//! Written atomically: a temp file created with `O_EXCL` under a unique name in the same
//! directory, fsynced, renamed over the old file. The engine decides when (while paused or
//! halted, at most once a second and only when something changed; at shutdown), never per
//! event; the file is removed once its remote has caught up.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::queue::KNOWN_DIRTY_CAP;

/// The first line of every pending file (format version 1).
const HEADER: &[u8] = b"wsync-pending 1\n";

/// A pending file larger than this is not read (a million long paths fit well below it).
const MAX_FILE_BYTES: u64 = 512 << 20;

/// The pending file of `remote` in `dir`: named by the workspace id (by its name when the
/// registry gave it none), whose characters, like the remote's, are validated names.
pub fn file_for(dir: &Path, workspace_id: &str, workspace: &str, remote: &str) -> PathBuf {
    let owner = if workspace_id.is_empty() {
        workspace
    } else {
        workspace_id
    };
    dir.join(format!("{owner}.{remote}.pending"))
}

/// Replaces `file` with `paths` atomically; an empty list removes it.
pub fn save(file: &Path, paths: &[PathBuf]) -> std::io::Result<()> {
    if paths.is_empty() {
        return match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = file.parent().unwrap_or(Path::new("."));
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut out = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)?;
        let mut buf = Vec::with_capacity(HEADER.len() + paths.len() * 64);
        buf.extend_from_slice(HEADER);
        for path in paths {
            buf.extend_from_slice(path.as_os_str().as_bytes());
            buf.push(0);
        }
        out.write_all(&buf)?;
        out.sync_all()?;
        std::fs::rename(&temp, file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Reads `file`: `Ok(None)` when there is none. A file that is not a regular file, is too
/// large or has another header is an error (the caller logs it and goes on without).
pub fn load(file: &Path) -> std::io::Result<Option<Vec<PathBuf>>> {
    let mut input = match std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = input.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    Read::take(&mut input, MAX_FILE_BYTES).read_to_end(&mut bytes)?;
    let Some(body) = bytes.strip_prefix(HEADER) else {
        return Err(std::io::Error::other(
            "not a pending file of this version (header `wsync-pending 1`)",
        ));
    };
    Ok(Some(parse(body)))
}

/// The valid relative paths of a file's body, at most [`KNOWN_DIRTY_CAP`].
fn parse(body: &[u8]) -> Vec<PathBuf> {
    body.split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| PathBuf::from(OsString::from_vec(entry.to_vec())))
        .filter(|path| path.components().all(|c| matches!(c, Component::Normal(_))))
        .take(KNOWN_DIRTY_CAP)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_name_and_replaces_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let file = file_for(tmp.path(), "00ff", "ws", "mirror");
        assert_eq!(file, tmp.path().join("00ff.mirror.pending"));
        assert_eq!(load(&file).unwrap(), None);
        let names: Vec<PathBuf> = ["a", "dir/#x", "new\nline", "-dash", "sp ace/;y"]
            .iter()
            .map(PathBuf::from)
            .collect();
        save(&file, &names).unwrap();
        assert_eq!(load(&file).unwrap(), Some(names));
        save(&file, &[PathBuf::from("b")]).unwrap();
        assert_eq!(load(&file).unwrap(), Some(vec![PathBuf::from("b")]));
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left behind");
        save(&file, &[]).unwrap();
        assert_eq!(load(&file).unwrap(), None);
        save(&file, &[]).unwrap();
    }

    #[test]
    fn refuses_other_versions_links_and_escaping_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("w.r.pending");
        std::fs::write(&file, b"wsync-pending 2\nx\0").unwrap();
        assert!(load(&file).is_err());
        std::fs::write(&file, b"wsync-pending 1\n/abs\0../up\0a/../b\0./c\0ok\0\0").unwrap();
        assert_eq!(load(&file).unwrap(), Some(vec![PathBuf::from("ok")]));
        let link = tmp.path().join("l.r.pending");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(load(&link).is_err(), "a planted symlink is not followed");
        let fifo = tmp.path().join("f.r.pending");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(load(&fifo).is_err(), "a FIFO does not hang the start");
    }
}
