//! Each op on a real directory; atomicity of puts against a concurrent reader; planted
//! symlinks in parents refused; the deletion budget; the marker; the size limit.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;

/// Content served from memory, with fixed attributes.
#[derive(Default)]
struct Memory(HashMap<PathBuf, Vec<u8>>);

const META: Meta = Meta {
    mode: 0o640,
    uid: 0,
    gid: 0,
    mtime_sec: 1_600_000_000,
    mtime_nsec: 123_456_789,
};

impl ContentSource for Memory {
    fn read(&mut self, path: &Path, max: u64) -> Result<(Vec<u8>, Meta), SourceError> {
        let content = self.0.get(path).ok_or(SourceError::Vanished)?;
        if content.len() as u64 > max {
            return Err(SourceError::Unsuitable("too big".into()));
        }
        let mut meta = META;
        meta.uid = nix::unistd::geteuid().as_raw();
        meta.gid = nix::unistd::getegid().as_raw();
        Ok((content.clone(), meta))
    }
}

/// A target directory holding workspace `00ff`'s marker (the agent's tests use it too).
pub(crate) fn marked() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t");
    std::fs::create_dir(&t).unwrap();
    std::fs::write(
        t.join(crate::target::MARKER_FILE),
        r#"{"workspace_id":"00ff"}"#,
    )
    .unwrap();
    (tmp, t)
}

fn limits(max_delete: Option<u64>) -> Limits {
    Limits {
        max_delete,
        put_max: PUT_MAX_DEFAULT,
    }
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

#[test]
fn each_op_does_what_it_says() {
    let (_tmp, t) = marked();
    std::fs::create_dir_all(t.join("old/deep")).unwrap();
    std::fs::write(t.join("old/deep/x"), "x").unwrap();
    std::fs::create_dir(t.join("d")).unwrap();
    std::fs::write(t.join("d/stale"), "s").unwrap();
    std::fs::write(t.join("d/kept"), "k").unwrap();
    std::fs::write(t.join("was-file"), "f").unwrap();
    let ex = Executor::open(&t, "00ff").unwrap();
    let mut src = Memory::default();
    src.0.insert(p("d/f"), b"hello".to_vec());
    let ops = [
        Op::Put { path: p("d/f") },
        Op::Symlink {
            path: p("d/l"),
            dest: p("../nowhere"),
            meta: META,
        },
        Op::Mkdir {
            path: p("was-file"),
        },
        Op::Mkdir { path: p("new") },
        Op::Remove { path: p("old") },
        Op::Remove { path: p("absent") },
        Op::PruneDir {
            path: p("d"),
            keep: vec!["f".into(), "l".into(), "kept".into()],
        },
        Op::Rename {
            from: p("d/kept"),
            to: p("new/kept"),
            is_dir: false,
            keep_overwritten: false,
        },
        Op::Rename {
            from: p("d/gone"),
            to: p("new/x"),
            is_dir: false,
            keep_overwritten: false,
        },
        Op::SetMeta {
            path: p("d"),
            meta: META,
        },
    ];
    let applied = ex.apply(&ops, &mut src, limits(None));
    let want = [
        OpResult::Done,
        OpResult::Done,
        OpResult::Done,
        OpResult::Done,
        OpResult::Done,
        OpResult::Done,
        OpResult::Done,
        OpResult::Done,
        OpResult::NotApplied,
        OpResult::Done,
    ];
    assert_eq!(applied.results, want);
    assert_eq!(std::fs::read(t.join("d/f")).unwrap(), b"hello");
    let meta = std::fs::metadata(t.join("d/f")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_600_000_000, 123_456_789)
    );
    assert_eq!(std::fs::read_link(t.join("d/l")).unwrap(), p("../nowhere"));
    let link = std::fs::symlink_metadata(t.join("d/l")).unwrap();
    assert_eq!(link.mtime_nsec(), 123_456_789, "a link's own mtime is set");
    assert!(t.join("was-file").is_dir() && t.join("new").is_dir());
    assert!(!t.join("old").exists() && !t.join("d/stale").exists());
    assert_eq!(std::fs::read(t.join("new/kept")).unwrap(), b"k");
    // old, old/deep, old/deep/x, the file where a directory went, d/stale.
    assert_eq!(applied.deleted, 5);
    assert_eq!((applied.written, applied.bytes), (2, 5));
    let d = std::fs::metadata(t.join("d")).unwrap();
    assert_eq!((d.mtime(), d.mode() & 0o7777), (1_600_000_000, 0o640));
    // No temp file is left behind.
    let names: Vec<_> = std::fs::read_dir(t.join("d")).unwrap().flatten().collect();
    assert!(names
        .iter()
        .all(|e| !e.file_name().to_string_lossy().starts_with(".wsync-tmp")));
}

#[test]
fn nothing_runs_on_a_target_without_this_workspaces_marker() {
    let (_tmp, t) = marked();
    assert!(matches!(
        Executor::open(&t, "00fe"),
        Err(OpenError::NotOurs)
    ));
    std::fs::remove_file(t.join(crate::target::MARKER_FILE)).unwrap();
    assert!(matches!(
        Executor::open(&t, "00ff"),
        Err(OpenError::NotOurs)
    ));
}

#[test]
fn wsyncs_own_entries_are_never_touched() {
    let (_tmp, t) = marked();
    std::fs::create_dir(t.join(crate::trash::TRASH_DIR)).unwrap();
    let ex = Executor::open(&t, "00ff").unwrap();
    let mut src = Memory::default();
    src.0
        .insert(p(crate::target::MARKER_FILE), b"evil".to_vec());
    let ops = [
        Op::Put {
            path: p(crate::target::MARKER_FILE),
        },
        Op::Remove {
            path: p(crate::trash::TRASH_DIR),
        },
        Op::PruneDir {
            path: p(""),
            keep: vec![],
        },
    ];
    let applied = ex.apply(&ops, &mut src, limits(None));
    assert!(matches!(applied.results[0], OpResult::Failed { .. }));
    assert!(matches!(applied.results[1], OpResult::Failed { .. }));
    assert_eq!(applied.results[2], OpResult::Done);
    assert!(crate::target::is_ours(
        &TargetRoot::open(&t).unwrap(),
        "00ff"
    ));
    assert!(t.join(crate::trash::TRASH_DIR).is_dir());
}

#[test]
fn no_deletion_passes_the_budget_and_the_run_stops_there() {
    let (_tmp, t) = marked();
    std::fs::create_dir_all(t.join("big")).unwrap();
    for i in 0..5 {
        std::fs::write(t.join(format!("big/{i}")), "x").unwrap();
    }
    std::fs::write(t.join("one"), "1").unwrap();
    let ex = Executor::open(&t, "00ff").unwrap();
    let mut src = Memory::default();
    src.0.insert(p("after"), b"a".to_vec());
    let ops = [
        Op::Remove { path: p("one") },
        Op::Remove { path: p("big") },
        Op::Put { path: p("after") },
    ];
    let applied = ex.apply(&ops, &mut src, limits(Some(4)));
    assert_eq!(
        applied.results,
        [
            OpResult::Done,
            OpResult::OverMaxDelete { needed: 6 },
            OpResult::Skipped
        ]
    );
    assert_eq!(applied.deleted, 1);
    assert_eq!(std::fs::read_dir(t.join("big")).unwrap().count(), 5);
    assert!(!t.join("after").exists());
}

#[test]
fn a_planted_symlink_in_a_parent_is_refused_and_named() {
    let (tmp, t) = marked();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("passwd"), "root").unwrap();
    std::fs::create_dir(t.join("shared")).unwrap();
    std::os::unix::fs::symlink(&outside, t.join("shared/sub")).unwrap();
    let ex = Executor::open(&t, "00ff").unwrap();
    let mut src = Memory::default();
    src.0.insert(p("shared/sub/passwd"), b"owned".to_vec());
    let ops = [
        Op::Put {
            path: p("shared/sub/passwd"),
        },
        Op::Remove {
            path: p("shared/sub/passwd"),
        },
        Op::Mkdir {
            path: p("shared/sub/x"),
        },
        Op::Symlink {
            path: p("shared/sub/l"),
            dest: p("/etc"),
            meta: META,
        },
        Op::SetMeta {
            path: p("shared/sub"),
            meta: META,
        },
        Op::PruneDir {
            path: p("shared/sub"),
            keep: vec![],
        },
    ];
    let applied = ex.apply(&ops, &mut src, limits(None));
    for result in &applied.results {
        match result {
            OpResult::Failed { diverged, .. } => {
                assert_eq!(
                    diverged.as_deref(),
                    Some(Path::new("shared/sub")),
                    "{result:?}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    let names: Vec<_> = std::fs::read_dir(&outside).unwrap().flatten().collect();
    assert_eq!(names.len(), 1);
    assert_eq!(std::fs::read(outside.join("passwd")).unwrap(), b"root");
    // Removing the link itself removes the link, not what it points to.
    let applied = ex.apply(
        &[Op::Remove {
            path: p("shared/sub"),
        }],
        &mut src,
        limits(None),
    );
    assert_eq!(applied.results, [OpResult::Done]);
    assert_eq!(applied.deleted, 1);
    assert!(outside.join("passwd").exists());
}

#[test]
fn a_file_over_the_limit_is_left_alone() {
    let (_tmp, t) = marked();
    std::fs::write(t.join("f"), "old").unwrap();
    let ex = Executor::open(&t, "00ff").unwrap();
    let mut src = Memory::default();
    src.0.insert(p("f"), vec![b'x'; 11]);
    let applied = ex.apply(
        &[Op::Put { path: p("f") }, Op::Put { path: p("gone") }],
        &mut src,
        Limits {
            max_delete: None,
            put_max: 10,
        },
    );
    assert!(matches!(applied.results[0], OpResult::Unsuitable { .. }));
    assert_eq!(applied.results[1], OpResult::Vanished);
    assert_eq!(std::fs::read(t.join("f")).unwrap(), b"old");
}

/// A reader opening the file in a loop while puts replace it sees one whole version or the
/// other, never a prefix or a mix.
#[test]
fn a_reader_never_sees_a_partial_file() {
    let (_tmp, t) = marked();
    let versions: Vec<Vec<u8>> = (0..2u8).map(|v| vec![b'a' + v; 512 * 1024]).collect();
    std::fs::write(t.join("f"), &versions[0]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, path, versions) = (stop.clone(), t.join("f"), versions.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let got = std::fs::read(&path).unwrap();
                assert!(
                    versions.contains(&got),
                    "a partial file of {} bytes",
                    got.len()
                );
                reads += 1;
            }
            reads
        })
    };
    let ex = Executor::open(&t, "00ff").unwrap();
    for i in 0..60 {
        let mut src = Memory::default();
        src.0.insert(p("f"), versions[i % 2].clone());
        let applied = ex.apply(&[Op::Put { path: p("f") }], &mut src, limits(None));
        assert_eq!(applied.results, [OpResult::Done]);
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}

#[test]
fn ops_round_trip_as_json() {
    let ops = vec![
        Op::Put { path: p("a b") },
        Op::PruneDir {
            path: p("d"),
            keep: vec!["x".into()],
        },
        Op::Rename {
            from: p("a"),
            to: p("b"),
            is_dir: true,
            keep_overwritten: false,
        },
    ];
    let json = serde_json::to_string(&ops).unwrap();
    assert!(json.starts_with(r#"[{"op":"put","path":"a b"}"#), "{json}");
    let back: Vec<Op> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ops);
}
