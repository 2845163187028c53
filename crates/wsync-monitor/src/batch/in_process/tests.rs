//! The in-process path against plain `rsync -a`: random churn on a source, synced once by the
//! executor and once by rsync into two targets, must leave identical trees (types, content,
//! modes, mtimes to the nanosecond, owners, symlink destinations), the targets' roots included.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::queue::collapse;

/// xorshift64*: reproducible churn without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn rsync(args: &[&Path]) {
    let status = std::process::Command::new("rsync")
        .arg("-a")
        .arg("--delete")
        // As the monitor runs it: times compared to the nanosecond (rsync's default compares
        // whole seconds and leaves a time it thinks equal).
        .arg("--modify-window=-1")
        .arg("--exclude=/.wsync-target")
        .args(args)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Every entry below `dir` (and `dir` itself as ""): what `rsync -a` keeps of it.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = if rel.as_os_str().is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(&rel)
        };
        let meta = std::fs::symlink_metadata(&full).unwrap();
        let what = if meta.is_symlink() {
            format!("link {:?}", std::fs::read_link(&full).unwrap())
        } else if meta.is_dir() {
            for entry in std::fs::read_dir(&full).unwrap().flatten() {
                if rel.as_os_str().is_empty() && entry.file_name() == ".wsync-target" {
                    continue;
                }
                stack.push(rel.join(entry.file_name()));
            }
            "dir".to_owned()
        } else {
            format!("file {:x?}", std::fs::read(&full).unwrap())
        };
        let mode = if meta.is_symlink() {
            0
        } else {
            meta.permissions().mode() & 0o7777
        };
        out.insert(
            rel,
            format!(
                "{what} mode {mode:o} mtime {}.{:09} owner {}:{}",
                meta.mtime(),
                meta.mtime_nsec(),
                meta.uid(),
                meta.gid()
            ),
        );
    }
    out
}

fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::new(sec, 0),
        &TimeSpec::new(sec, nsec),
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// One random change under `src`; returns the paths an inotify watcher would queue.
fn churn(rng: &mut Rng, src: &Path, n: u64) -> Vec<PathBuf> {
    let dirs = ["", "a", "a/b", "c", "c/d/e"];
    let dir = PathBuf::from(dirs[rng.below(dirs.len() as u64) as usize]);
    let name = dir.join(format!("n{}", rng.below(12)));
    let full = src.join(&name);
    if !src.join(&dir).is_dir() {
        std::fs::create_dir_all(src.join(&dir)).unwrap();
        return vec![dir
            .ancestors()
            .nth(dir.components().count() - 1)
            .unwrap()
            .into()];
    }
    let exists = std::fs::symlink_metadata(&full).is_ok();
    match rng.below(7) {
        0 | 1 if !full.is_dir() || !exists => {
            let _ = std::fs::remove_file(&full);
            let len = rng.below(3000) as usize;
            std::fs::write(&full, vec![(n % 251) as u8; len]).unwrap();
            let mode = [0o644, 0o600, 0o755, 0o640][rng.below(4) as usize];
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)).unwrap();
            set_mtime(
                &full,
                1_500_000_000 + n as i64,
                rng.below(1_000_000_000) as i64,
            );
        }
        2 if !exists => {
            std::os::unix::fs::symlink(format!("../t{n}"), &full).unwrap();
            set_mtime(&full, 1_400_000_000, 42);
        }
        3 if !exists => {
            std::fs::create_dir(&full).unwrap();
            std::fs::write(full.join("inner"), format!("{n}")).unwrap();
            std::os::unix::fs::symlink("inner", full.join("link")).unwrap();
            set_mtime(&full, 1_300_000_000, 7);
        }
        4 | 5 if exists => {
            if full.is_dir() && !full.is_symlink() {
                std::fs::remove_dir_all(&full).unwrap();
            } else {
                std::fs::remove_file(&full).unwrap();
            }
        }
        6 if exists && !full.is_symlink() => {
            let mode = if full.is_dir() { 0o750 } else { 0o604 };
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        _ => return Vec::new(),
    }
    vec![name]
}

#[test]
fn random_churn_through_the_executor_matches_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, by_executor, by_rsync) = (
        tmp.path().join("src"),
        tmp.path().join("t1"),
        tmp.path().join("t2"),
    );
    for dir in [&src, &by_executor, &by_rsync] {
        std::fs::create_dir(dir).unwrap();
    }
    std::fs::write(
        by_executor.join(".wsync-target"),
        r#"{"workspace_id":"00ff"}"#,
    )
    .unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (src_slash, t1_slash, t2_slash) = (
        PathBuf::from(format!("{}/", src.display())),
        PathBuf::from(format!("{}/", by_executor.display())),
        PathBuf::from(format!("{}/", by_rsync.display())),
    );
    for round in 0..12 {
        let mut changed = Vec::new();
        for n in 0..40 {
            changed.extend(churn(&mut rng, &src, round * 100 + n));
        }
        let paths = collapse(changed.iter());
        match apply(&src, &by_executor, "00ff", paths, false, None, || {
            "not ours".into()
        }) {
            Pass::Done { outcome, rest } => {
                assert_eq!(outcome.class, ExitClass::Success, "{:?}", outcome.error);
                assert!(rest.is_empty(), "left to rsync: {rest:?}");
            }
            Pass::Stop(outcome) => panic!("{:?}", outcome.error),
        }
        rsync(&[&src_slash, &t2_slash]);
        let (got, want) = (tree(&by_executor), tree(&by_rsync));
        if got != want {
            for (path, w) in &want {
                if got.get(path) != Some(w) {
                    eprintln!("{path:?}: executor {:?}, rsync {w}", got.get(path));
                }
            }
            for path in got.keys().filter(|p| !want.contains_key(*p)) {
                eprintln!("{path:?}: only in the executor's target");
            }
            panic!("round {round}: the trees differ");
        }
    }
    // And a plain rsync of the source changes nothing more in the executor's target.
    let before = tree(&by_executor);
    rsync(&[&src_slash, &t1_slash]);
    assert_eq!(tree(&by_executor), before);
}

#[test]
fn with_rules_deletions_and_directories_are_left_to_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, t) = (tmp.path().join("src"), tmp.path().join("t"));
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::create_dir_all(t.join("gone")).unwrap();
    std::fs::write(t.join(".wsync-target"), r#"{"workspace_id":"00ff"}"#).unwrap();
    std::fs::write(src.join("small"), "s").unwrap();
    std::fs::write(src.join("big"), vec![0u8; PUT_MAX_DEFAULT as usize + 1]).unwrap();
    std::fs::write(src.join("linked"), "l").unwrap();
    std::fs::hard_link(src.join("linked"), src.join("dir/other-name")).unwrap();
    let paths: Vec<PathBuf> = ["big", "dir", "gone", "linked", "small"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let Pass::Done { outcome, rest } = apply(&src, &t, "00ff", paths.clone(), true, None, || {
        "not ours".into()
    }) else {
        panic!("stopped");
    };
    assert_eq!(outcome.stats.files_transferred, 1);
    assert_eq!(rest, ["big", "dir", "gone", "linked"].map(PathBuf::from));
    assert!(
        t.join("gone").is_dir(),
        "a deletion waits for rsync's protect rules"
    );
    assert_eq!(std::fs::read(t.join("small")).unwrap(), b"s");
    // Another workspace's target: nothing is written.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    assert!(matches!(
        apply(&src, &other, "00ff", paths, false, None, || "not ours"
            .into()),
        Pass::Stop(_)
    ));
    assert!(!other.join("small").exists());
}
