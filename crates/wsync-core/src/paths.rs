//! Home, runtime and default locations, and `~`/`$HOME` expansion of configured paths.

use std::path::{Component, Path, PathBuf};

/// The user's home directory: `$HOME`, or the password database when it is unset.
pub fn home_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `~/.wsync`, home of the default config, registry and logs.
pub fn wsync_home() -> PathBuf {
    home_dir().join(".wsync")
}

/// Directory for the socket and pidfile: `$XDG_RUNTIME_DIR/wsync` when set, otherwise `~/.wsync`.
pub fn default_runtime_dir() -> PathBuf {
    match crate::platform::runtime_dir() {
        Some(dir) => dir.join("wsync"),
        None => wsync_home(),
    }
}

/// Expands a leading `~` and every `$HOME` / `${HOME}` in a configured path.
pub fn expand_home(raw: &str) -> PathBuf {
    let home = home_dir();
    let home = home.to_string_lossy();
    let replaced = raw.replace("${HOME}", &home).replace("$HOME", &home);
    if replaced == "~" {
        return PathBuf::from(home.as_ref());
    }
    if let Some(rest) = replaced.strip_prefix("~/") {
        return Path::new(home.as_ref()).join(rest);
    }
    PathBuf::from(replaced)
}

/// Removes `.` components and resolves `..` lexically (no filesystem access).
pub fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Canonicalizes a path that may not exist yet: the longest existing ancestor is resolved through
/// the filesystem (symlinks included) and the missing tail is appended lexically.
pub fn canonicalize_lenient(path: &Path) -> std::io::Result<PathBuf> {
    let normalized = normalize_lexically(path);
    let mut existing = normalized.as_path();
    let mut tail = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(canonical) => {
                let mut result = canonical;
                for part in tail.iter().rev() {
                    result.push(part);
                }
                return Ok(result);
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Err(err);
                };
                tail.push(name.to_owned());
                existing = parent;
            }
            Err(err) => return Err(err),
        }
    }
}

/// What reading a config or registry file found.
#[derive(Debug)]
pub enum SettingsFile {
    Missing,
    /// Refused: a link could point anywhere; the setting should name the real file.
    Symlink,
    /// Refused: a FIFO or device would block the read forever.
    NotAFile,
    /// Refused: owned by another user (neither us nor root), who could rewrite what wsync does.
    NotOurs {
        owner: u32,
    },
    /// Refused: writable by the group or others (mode shown), who could rewrite it.
    Writable {
        mode: u32,
    },
    Text(String),
}

/// Reads a config or registry file, refusing symlinks, non-regular files and files another
/// user owns or may write, before any read. The checks are made on the opened descriptor
/// (`O_NOFOLLOW`, `fstat`), so the file read is the file checked.
pub fn read_settings_file(path: &Path) -> std::io::Result<SettingsFile> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => return Ok(SettingsFile::Symlink),
        Ok(meta) if !meta.is_file() => return Ok(SettingsFile::NotAFile),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SettingsFile::Missing),
        Err(e) => return Err(e),
    }
    let opened = std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(SettingsFile::Symlink),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(SettingsFile::NotAFile);
    }
    if !crate::owned::trusted_owner(meta.uid()) {
        return Ok(SettingsFile::NotOurs { owner: meta.uid() });
    }
    if crate::owned::writable_by_others(meta.mode()) {
        return Ok(SettingsFile::Writable {
            mode: meta.mode() & 0o7777,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(SettingsFile::Text(text))
}

/// True when `a` and `b` are the same path or one lies inside the other (component-wise).
pub fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_tilde_and_home_variable() {
        let home = home_dir();
        assert_eq!(expand_home("~/x"), home.join("x"));
        assert_eq!(expand_home("$HOME/y"), home.join("y"));
        assert_eq!(expand_home("${HOME}/z"), home.join("z"));
        assert_eq!(expand_home("/abs"), PathBuf::from("/abs"));
    }

    #[test]
    fn lenient_canonicalization_keeps_missing_tail() {
        let dir = tempfile::tempdir().unwrap();
        let canon = dir.path().canonicalize().unwrap();
        let got = canonicalize_lenient(&dir.path().join("a/../b/c")).unwrap();
        assert_eq!(got, canon.join("b/c"));
    }

    #[test]
    fn overlap_is_component_wise() {
        assert!(overlaps(Path::new("/a/b"), Path::new("/a")));
        assert!(overlaps(Path::new("/a"), Path::new("/a/b/c")));
        assert!(!overlaps(Path::new("/a/bc"), Path::new("/a/b")));
    }
}
