//! The other names of hard-linked files in a batch. inotify reports a write under the one name
//! it went through, so when a batch lists a regular file with more than one link, the
//! workspace is walked for its other names (readdir only, a stat only on an inode match, never
//! into another filesystem, stopping once every link is found) and they are listed too; rsync's
//! `-H` then links them on the remote as they are at the source. What this does not cover is
//! written in the README (Troubleshooting: hard links).

use std::collections::HashMap;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

use wsync_core::rsync::COOKIE_PREFIX;

/// Multiply-linked regular files of one batch: inode → links not yet found.
#[derive(Debug, Default)]
pub struct Linked {
    dev: u64,
    left: HashMap<u64, u64>,
}

impl Linked {
    /// The regular files in `list` (relative to `root`) with more than one link.
    pub fn in_list(root: &Path, list: &[PathBuf]) -> Self {
        let Ok(meta) = std::fs::symlink_metadata(root) else {
            return Self::default();
        };
        let dev = meta.dev();
        let mut left = HashMap::new();
        for path in list {
            if let Ok(meta) = std::fs::symlink_metadata(root.join(path)) {
                // A hard link never crosses a filesystem: one below a mount point inside the
                // workspace has no other name we could find by inode number alone.
                if meta.is_file() && meta.nlink() > 1 && meta.dev() == dev {
                    left.insert(meta.ino(), meta.nlink());
                }
            }
        }
        Self { dev, left }
    }

    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
    }

    /// Every name of these files inside `root` (the listed ones included), found by walking the
    /// tree. Names outside the workspace are not ours to send; the walk then reaches the end.
    pub fn names(mut self, root: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(root.join(&rel)) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let name = entry.file_name();
                if rel.as_os_str().is_empty()
                    && name
                        .as_encoded_bytes()
                        .starts_with(COOKIE_PREFIX.as_bytes())
                {
                    continue;
                }
                let path = rel.join(&name);
                if kind.is_dir() {
                    if std::fs::symlink_metadata(entry.path()).is_ok_and(|m| m.dev() == self.dev) {
                        stack.push(path);
                    }
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let ino = entry.ino();
                let Some(left) = self.left.get_mut(&ino) else {
                    continue;
                };
                found.push(path);
                *left -= 1;
                if *left == 0 {
                    self.left.remove(&ino);
                    if self.left.is_empty() {
                        return found;
                    }
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(root: &Path, list: &[&str]) -> Vec<PathBuf> {
        let list: Vec<PathBuf> = list.iter().map(PathBuf::from).collect();
        let mut out = Linked::in_list(root, &list).names(root);
        out.sort();
        out
    }

    #[test]
    fn finds_every_name_of_a_listed_multiply_linked_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("ws"), tmp.path().join("outside"));
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("a"), "A").unwrap();
        std::fs::write(root.join("plain"), "P").unwrap();
        std::fs::hard_link(root.join("a"), root.join("d/e/b")).unwrap();
        std::fs::hard_link(root.join("a"), root.join("#c")).unwrap();
        std::fs::hard_link(root.join("a"), &outside).unwrap();
        assert_eq!(
            names(&root, &["d/e/b"]),
            ["#c", "a", "d/e/b"].map(PathBuf::from)
        );
        // A flush cookie is never a name to send.
        std::fs::hard_link(root.join("plain"), root.join(".wsync-cookie-1")).unwrap();
        assert_eq!(names(&root, &["plain"]), [PathBuf::from("plain")]);
        std::fs::remove_file(root.join(".wsync-cookie-1")).unwrap();
        // Single-link files, directories and missing paths need no walk.
        assert!(Linked::in_list(&root, &["plain".into(), "d".into(), "gone".into()]).is_empty());
        std::fs::remove_file(&outside).unwrap();
        assert_eq!(
            names(&root, &["a", "#c"]),
            ["#c", "a", "d/e/b"].map(PathBuf::from)
        );
    }
}
