//! The resolver's rules, each under both resolvers, and a randomized run (trees with symlinks
//! out of the target, hard links to outside files, a concurrent thread swapping directories
//! for symlinks) checking that nothing outside the target ever changes.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::*;

const BOTH: [Resolver; 2] = [Resolver::Auto, Resolver::PerComponent];

/// `tmp/target` (the root) beside `tmp/outside` (what must never change).
fn layout() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(target.join("d/e")).unwrap();
    std::fs::create_dir_all(outside.join("secret")).unwrap();
    std::fs::write(target.join("d/e/f"), "F").unwrap();
    std::fs::write(outside.join("secret/passwd"), "root:x:0:0").unwrap();
    (tmp, target, outside)
}

/// Every entry under `dir`: kind, and the content of files and the destination of links.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = rel.join(entry.file_name());
            let full = dir.join(&path);
            let meta = std::fs::symlink_metadata(&full).unwrap();
            let what = if meta.is_symlink() {
                format!("link {:?}", std::fs::read_link(&full).unwrap())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".into()
            } else {
                format!("file {:?}", std::fs::read(&full).unwrap_or_default())
            };
            out.insert(path, what);
        }
    }
    out
}

#[test]
fn plain_operations_work_beneath_the_root() {
    for resolver in BOTH {
        let (_tmp, target, _) = layout();
        let root = TargetRoot::open_with(&target, resolver).unwrap();
        let p = Path::new;
        assert_eq!(
            root.stat(p("d/e/f")).unwrap().unwrap().kind,
            EntryKind::File
        );
        assert_eq!(root.stat(p("d/e")).unwrap().unwrap().kind, EntryKind::Dir);
        assert_eq!(root.stat(p("d/nope")).unwrap(), None);
        assert_eq!(root.stat(p("nope/deeper/x")).unwrap(), None, "{resolver:?}");
        root.mkdir(p("d/new")).unwrap();
        root.rename(p("d/e/f"), p("d/new/g")).unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("d/new/g")).unwrap(),
            "F"
        );
        let mut text = String::new();
        std::io::Read::read_to_string(&mut root.open_read(p("d/new/g")).unwrap(), &mut text)
            .unwrap();
        assert_eq!(text, "F");
        root.rename(p("d/new"), p("top")).unwrap();
        root.remove(p("top/g")).unwrap();
        root.remove(p("top")).unwrap();
        assert!(!target.join("top").exists());
        let mut names = root.list_root().unwrap();
        names.sort();
        assert_eq!(names, ["d"]);
        let err = root.rename(p("missing"), p("x")).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(root.mkdir(p("a/b")).unwrap_err().is_not_found());
    }
}

#[test]
fn paths_that_are_not_plainly_beneath_are_refused_up_front() {
    let (_tmp, target, outside) = layout();
    let root = TargetRoot::open(&target).unwrap();
    let escape = format!("{}/secret/passwd", outside.display());
    for bad in [
        "",
        "/etc/passwd",
        escape.as_str(),
        "..",
        "../outside/secret/passwd",
        "d/../../outside/secret/passwd",
        "d/e/..",
        ".",
        "./d",
        "d//e",
        "d/",
    ] {
        let bad = Path::new(bad);
        for err in [
            root.stat(bad).unwrap_err(),
            root.remove(bad).unwrap_err(),
            root.mkdir(bad).unwrap_err(),
            root.rename(bad, Path::new("x")).unwrap_err(),
            root.rename(Path::new("d"), bad).unwrap_err(),
            root.open_read(bad).unwrap_err(),
        ] {
            assert!(
                matches!(err, BeneathError::InvalidPath { .. }),
                "{bad:?}: {err}"
            );
        }
    }
    assert!(target.join("d/e/f").exists());
    assert_eq!(
        std::fs::read_to_string(outside.join("secret/passwd")).unwrap(),
        "root:x:0:0"
    );
}

/// The attack of issue 12: a mirrored directory replaced by a link to a directory only root
/// may write, then a rename into it. Absolute and relative links, at any depth, and a link
/// to a directory inside the target too (not followed either).
#[test]
fn a_symlink_in_a_parent_is_never_followed() {
    for resolver in BOTH {
        for link_to in ["OUTSIDE/secret", "../../outside/secret", "../d/e"] {
            let (_tmp, target, outside) = layout();
            let link_to = link_to.replace("OUTSIDE", &outside.display().to_string());
            std::fs::create_dir(target.join("shared")).unwrap();
            symlink(&link_to, target.join("shared/sub")).unwrap();
            std::fs::write(target.join("shared/x"), "attacker").unwrap();
            let before = snapshot(&outside);
            let root = TargetRoot::open_with(&target, resolver).unwrap();
            let p = Path::new;
            let is_link = |e: BeneathError| match e {
                BeneathError::Symlink { at, .. } => at == Path::new("shared/sub"),
                _ => false,
            };
            let via = p("shared/sub/passwd");
            assert!(is_link(root.rename(p("shared/x"), via).unwrap_err()));
            assert!(is_link(root.rename(via, p("shared/y")).unwrap_err()));
            assert!(is_link(root.remove(via).unwrap_err()));
            assert!(is_link(root.mkdir(p("shared/sub/new")).unwrap_err()));
            assert!(is_link(root.stat(via).unwrap_err()));
            assert!(is_link(root.open_read(via).unwrap_err()));
            assert_eq!(snapshot(&outside), before, "{resolver:?} {link_to}");
            assert!(target.join("d/e/f").exists());
            assert!(target.join("shared/x").exists());
        }
    }
}

/// A link as the last component is an entry like any other: renamed, removed, stat'ed as a
/// link, never read or created through.
#[test]
fn a_symlink_as_the_last_component_is_the_entry_itself() {
    for resolver in BOTH {
        let (_tmp, target, outside) = layout();
        symlink(outside.join("secret"), target.join("d/dirlink")).unwrap();
        symlink(outside.join("secret/passwd"), target.join("d/filelink")).unwrap();
        let before = snapshot(&outside);
        let root = TargetRoot::open_with(&target, resolver).unwrap();
        let p = Path::new;
        assert_eq!(
            root.stat(p("d/dirlink")).unwrap().unwrap().kind,
            EntryKind::Symlink
        );
        assert!(matches!(
            root.open_read(p("d/filelink")).unwrap_err(),
            BeneathError::Symlink { .. }
        ));
        assert!(root.mkdir(p("d/dirlink")).is_err());
        // A file renamed over a link replaces the link, not the file it points to.
        root.rename(p("d/e/f"), p("d/filelink")).unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("d/filelink")).unwrap(),
            "F"
        );
        root.rename(p("d/dirlink"), p("moved")).unwrap();
        assert!(target.join("moved").is_symlink());
        root.remove(p("moved")).unwrap();
        assert_eq!(snapshot(&outside), before, "{resolver:?}");
    }
}

#[test]
fn the_root_itself_must_be_a_directory_and_no_symlink() {
    let (tmp, target, _) = layout();
    let link = tmp.path().join("link");
    symlink(&target, &link).unwrap();
    assert!(matches!(
        TargetRoot::open(&link).unwrap_err(),
        BeneathError::Symlink { .. }
    ));
    assert!(matches!(
        TargetRoot::open(&target.join("d/e/f")).unwrap_err(),
        BeneathError::NotADirectory { .. }
    ));
    assert!(TargetRoot::open(&tmp.path().join("gone"))
        .unwrap_err()
        .is_not_found());
    // A file on the way is named.
    let root = TargetRoot::open(&target).unwrap();
    for resolver in BOTH {
        let root = TargetRoot::open_with(&target, resolver).unwrap();
        match root.stat(Path::new("d/e/f/g")).unwrap_err() {
            BeneathError::NotADirectory { at, .. } => assert_eq!(at, Path::new("d/e/f")),
            other => panic!("{resolver:?}: {other}"),
        }
    }
    let message = root
        .rename(Path::new("d/e/f/g"), Path::new("x"))
        .unwrap_err();
    assert!(
        message.to_string().contains("\"d/e/f\" is not a directory"),
        "{message}"
    );
}

#[test]
fn a_root_can_move_to_a_blocking_pool() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<TargetRoot>();
    send_sync::<BeneathError>();
}

/// A tiny xorshift: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NAMES: [&str; 6] = ["a", "b", "c", "x", "passwd", "secret"];

/// A random tree: directories, files, symlinks to outside (absolute and relative), to inside,
/// to `/`, and hard links to files outside.
fn random_tree(rng: &mut Rng, target: &Path, outside: &Path) {
    let outside_text = outside.display().to_string();
    let links = [
        outside_text.as_str(),
        "../outside",
        "../../outside/secret",
        "../../../outside",
        "/",
        "a",
        "../b",
    ];
    let mut dirs = vec![PathBuf::new()];
    for _ in 0..40 {
        let parent = dirs[rng.below(dirs.len())].clone();
        let path = target.join(&parent).join(rng.pick(&NAMES));
        if std::fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        match rng.below(5) {
            0 | 1 => {
                std::fs::create_dir(&path).unwrap();
                dirs.push(path.strip_prefix(target).unwrap().to_path_buf());
            }
            2 => std::fs::write(&path, "inside").unwrap(),
            3 => symlink(rng.pick(&links), &path).unwrap(),
            _ => std::fs::hard_link(outside.join("secret/passwd"), &path).unwrap(),
        }
    }
}

/// A path of 1–4 components from [`NAMES`], now and then with a `..`, `.` or empty component
/// or absolute (those must be refused before anything is touched).
fn random_path(rng: &mut Rng) -> (String, bool) {
    let mut parts: Vec<&str> = (0..1 + rng.below(4)).map(|_| rng.pick(&NAMES)).collect();
    let valid = rng.below(8) != 0;
    if !valid {
        let at = rng.below(parts.len() + 1);
        parts.insert(at, ["..", ".", ""][rng.below(3)]);
    }
    let mut path = parts.join("/");
    if !valid && rng.below(4) == 0 {
        path.insert(0, '/');
    }
    (path, valid)
}

/// Top-level names only (the root is a plain directory, so these path calls cannot follow a
/// link): swaps directories around and replaces one with a link out of the target for a while.
fn swapper(target: PathBuf, outside: PathBuf, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = Rng(seed | 1);
    while !stop.load(Ordering::Relaxed) {
        let (a, b) = (rng.pick(&NAMES), rng.pick(&NAMES));
        let (pa, pb) = (target.join(a), target.join(b));
        if rng.below(2) == 0 {
            let _ = std::fs::rename(&pa, &pb);
        } else if std::fs::rename(&pa, target.join(".parked")).is_ok() {
            let _ = symlink(&outside, &pa);
            std::thread::yield_now();
            let _ = std::fs::remove_file(&pa);
            let _ = std::fs::rename(target.join(".parked"), &pa);
        }
    }
}

fn fuzz_round(seed: u64, resolver: Resolver) -> usize {
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("secret/sub")).unwrap();
    std::fs::write(outside.join("secret/passwd"), "root:x:0:0").unwrap();
    std::fs::write(outside.join("a"), "outside a").unwrap();
    symlink("secret", outside.join("b")).unwrap();
    std::fs::create_dir(&target).unwrap();
    random_tree(&mut rng, &target, &outside);
    let before = snapshot(&outside);
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (target, outside, stop) = (target.clone(), outside.clone(), stop.clone());
        let seed = rng.next();
        std::thread::spawn(move || swapper(target, outside, stop, seed))
    };
    let root = TargetRoot::open_with(&target, resolver).unwrap();
    let mut done = 0;
    for _ in 0..300 {
        let (from, from_ok) = random_path(&mut rng);
        let (to, to_ok) = random_path(&mut rng);
        let (from, to) = (Path::new(&from), Path::new(&to));
        let op = rng.below(5);
        let result = match op {
            0 => root.rename(from, to).map(drop),
            1 => root.remove(from),
            2 => root.mkdir(from),
            3 => root.stat(from).map(drop),
            _ => root.open_read(from).map(drop),
        };
        // A path with `..`, `.`, an empty component or a leading `/` is refused before any
        // system call, and only such a path is.
        let refusable = !from_ok || (op == 0 && !to_ok);
        let refused = matches!(result, Err(BeneathError::InvalidPath { .. }));
        assert_eq!(refused, refusable, "{from:?} {to:?}: {result:?}");
        done += usize::from(result.is_ok());
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    let after = snapshot(&outside);
    assert_eq!(
        after, before,
        "seed {seed} ({resolver:?}): something outside the target changed"
    );
    done
}

/// Bounded for the normal suite (about a second); `WSYNC_BENEATH_FUZZ_ROUNDS` runs longer
/// (`scripts/soak.sh` does), `WSYNC_BENEATH_FUZZ_SEED` replays one printed seed.
#[test]
fn fuzz_nothing_outside_the_target_is_ever_touched() {
    let rounds: u64 = std::env::var("WSYNC_BENEATH_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let first_seed = std::env::var("WSYNC_BENEATH_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("beneath fuzz: {rounds} rounds from seed {first_seed} (WSYNC_BENEATH_FUZZ_SEED)");
    let started = Instant::now();
    let mut done = 0;
    for round in 0..rounds {
        let seed = first_seed.wrapping_add(round.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
        let resolver = BOTH[(round % 2) as usize];
        done += fuzz_round(seed, resolver);
    }
    // Not vacuous: operations did succeed beneath the target while the racer ran.
    assert!(done > rounds as usize, "only {done} operations succeeded");
    eprintln!(
        "beneath fuzz: {done} operations succeeded in {:?}",
        started.elapsed()
    );
}
