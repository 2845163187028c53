//! Tree comparison for the sync tests: names (raw bytes, non-UTF-8 included), file types,
//! contents, symlink targets, permission bits and file mtimes, reported as a readable diff;
//! and `wait_until_equal` with a deadline. Flush cookies at the source root are ignored (they
//! must never appear on a remote, so they are not ignored there); so is the `.wsync-target`
//! marker and the `.wsync-trash` directory at either root (a target's own, never synced:
//! `engine_safety` and `trash` check them directly).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::poll::poll_until;

const COOKIE_PREFIX: &str = wsync_core::rsync::COOKIE_PREFIX;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File { size: u64, mtime: (i64, i64) },
    Dir,
    Symlink(PathBuf),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    mode: u32,
}

fn scan(root: &Path, skip_cookies: bool) -> Result<BTreeMap<PathBuf, Entry>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let name = entry.file_name();
            if rel.as_os_str().is_empty()
                && (name == wsync_core::target::MARKER_FILE || name == wsync_core::trash::TRASH_DIR)
            {
                continue;
            }
            if skip_cookies
                && rel.as_os_str().is_empty()
                && name
                    .as_encoded_bytes()
                    .starts_with(COOKIE_PREFIX.as_bytes())
            {
                continue;
            }
            let path = rel.join(&name);
            let meta = match std::fs::symlink_metadata(root.join(&path)) {
                Ok(meta) => meta,
                // Vanished while scanning a live tree: the next poll sees the new state.
                Err(e) => return Err(format!("{}: {e}", path.display())),
            };
            let ft = meta.file_type();
            let kind = if ft.is_symlink() {
                Kind::Symlink(std::fs::read_link(root.join(&path)).unwrap_or_default())
            } else if ft.is_dir() {
                stack.push(path.clone());
                Kind::Dir
            } else if ft.is_file() {
                Kind::File {
                    size: meta.len(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                }
            } else {
                Kind::Other
            };
            let mode = if ft.is_symlink() {
                0
            } else {
                meta.permissions().mode() & 0o7777
            };
            out.insert(path, Entry { kind, mode });
        }
    }
    Ok(out)
}

fn same_contents(a: &Path, b: &Path) -> bool {
    match (std::fs::read(a), std::fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Differences between `src` and `dst` (empty when equal), one line each, at most `limit`.
pub fn diff_trees(src: &Path, dst: &Path) -> Vec<String> {
    const LIMIT: usize = 20;
    let (a, b) = match (scan(src, true), scan(dst, false)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) => return vec![format!("cannot scan source: {e}")],
        (_, Err(e)) => return vec![format!("cannot scan destination: {e}")],
    };
    let mut diffs = Vec::new();
    for (path, ea) in &a {
        if diffs.len() >= LIMIT {
            break;
        }
        match b.get(path) {
            None => diffs.push(format!("missing on destination: {path:?} ({:?})", ea.kind)),
            Some(eb) if eb.kind != ea.kind => diffs.push(format!(
                "differs: {path:?}: source {:?}, destination {:?}",
                ea.kind, eb.kind
            )),
            Some(eb) if eb.mode != ea.mode => diffs.push(format!(
                "mode differs: {path:?}: source {:o}, destination {:o}",
                ea.mode, eb.mode
            )),
            Some(_) => {
                if matches!(ea.kind, Kind::File { .. })
                    && !same_contents(&src.join(path), &dst.join(path))
                {
                    diffs.push(format!("contents differ: {path:?}"));
                }
            }
        }
    }
    for path in b.keys() {
        if diffs.len() >= LIMIT {
            break;
        }
        if !a.contains_key(path) {
            diffs.push(format!("extra on destination: {path:?}"));
        }
    }
    diffs
}

/// A fresh temp dir for sync tests, on tmpfs (`/dev/shm`) when available: creating thousands
/// of files there is ~40x faster than on a disk-backed /tmp, which keeps the suite short.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("wsync-test-")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::Builder::new()
        .prefix("wsync-test-")
        .tempdir()
        .expect("creating a temp dir")
}

/// Polls until the trees are equal; on timeout returns the last diff.
pub fn wait_until_equal(src: &Path, dst: &Path, timeout: Duration) -> Result<(), String> {
    let mut diffs = Vec::new();
    let what = format!("{} and {} to be equal", src.display(), dst.display());
    poll_until(&what, timeout, Duration::from_millis(20), || {
        diffs = diff_trees(src, dst);
        diffs.is_empty()
    })
    .map_err(|_| {
        format!(
            "{} and {} still differ after {timeout:?}:\n  {}",
            src.display(),
            dst.display(),
            diffs.join("\n  ")
        )
    })
}

/// Number of entries below `root` (for tests that count).
pub fn count_entries(root: &Path) -> usize {
    scan(root, true).map(|m| m.len()).unwrap_or(0)
}

/// Random tree operations for churn tests (lsyncd-style): creates, edits, moves, deletes of files
/// and directories, with a small deterministic PRNG so failures reproduce.
pub mod churn {
    use std::path::{Path, PathBuf};

    /// xorshift64*: deterministic, dependency-free.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Self(seed.max(1))
        }
        pub fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n.max(1) as u64) as usize
        }
    }

    fn walk(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let (mut files, mut dirs) = (Vec::new(), vec![root.to_path_buf()]);
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
                for entry in entries.flatten() {
                    match entry.file_type() {
                        Ok(t) if t.is_dir() => dirs.push(entry.path()),
                        Ok(_) => files.push(entry.path()),
                        Err(_) => {}
                    }
                }
            }
            i += 1;
        }
        (files, dirs)
    }

    /// Creates a starting tree of a few directories and files.
    pub fn seed(root: &Path, seed: u64) {
        let mut rng = Rng::new(seed);
        for d in 0..5 {
            for f in 0..6 {
                let dir = root.join(format!("d{d}")).join(format!("s{}", f % 2));
                std::fs::create_dir_all(&dir).unwrap();
                let len = rng.below(3000);
                std::fs::write(dir.join(format!("f{f}")), vec![b'a' + (f as u8); len]).unwrap();
            }
        }
    }

    /// Applies `ops` random operations below `root`.
    pub fn run(root: &Path, ops: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        for op in 0..ops {
            let (files, dirs) = walk(root);
            let dir = &dirs[rng.below(dirs.len())];
            let name = format!("n{op}{}", ["", " sp", "-x", "é"][rng.below(4)]);
            let result = match rng.below(10) {
                0..=2 => std::fs::write(dir.join(&name), vec![b'c'; rng.below(5000)]),
                3 | 4 if !files.is_empty() => {
                    let f = &files[rng.below(files.len())];
                    std::fs::write(f, format!("edit {op} {}", rng.next_u64()))
                }
                5 if !files.is_empty() => {
                    let f = &files[rng.below(files.len())];
                    std::fs::rename(f, dir.join(&name))
                }
                6 if !files.is_empty() => std::fs::remove_file(&files[rng.below(files.len())]),
                7 => std::fs::create_dir(dir.join(&name))
                    .and_then(|()| std::fs::write(dir.join(&name).join("inner"), "in")),
                8 if dirs.len() > 1 => {
                    let d = &dirs[1 + rng.below(dirs.len() - 1)];
                    let target = root.join(&name);
                    std::fs::rename(d, target)
                }
                9 if dirs.len() > 4 && rng.below(3) == 0 => {
                    std::fs::remove_dir_all(&dirs[1 + rng.below(dirs.len() - 1)])
                }
                _ => std::fs::write(root.join(&name), "top"),
            };
            // Racing our own earlier ops (e.g. a moved parent) is fine; the tree is re-walked.
            let _ = result;
        }
    }
}
