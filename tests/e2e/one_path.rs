//! Order on one path across the ways a change travels (issue 14): random operations on one
//! name and its sibling — a small file (locally the in-process executor writes it), a file past
//! the executor's 1 MiB limit (always rsync), a directory with a file in it, a symlink, a
//! deletion, renames between the two names — with random pauses, so batches split anywhere and
//! the next change lands while the last one is on its way. After every few operations, and at
//! the end, a flush must bring the remote to exactly the source: a big file handed to rsync and
//! then deleted or replaced by a small one must not come back, and a small write must not be
//! overtaken by an older big one. Deterministic seeds; the failing one is printed.

use std::path::Path;
use std::time::Duration;

use wsync_core::registry::Remote;
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::sshd::Sshd;
use wsync_tests::tree::churn::Rng;
use wsync_tests::tree::{diff_trees, scratch_dir};

const FLUSH: Duration = Duration::from_secs(30);
/// Past the in-process executor's whole-content limit (1 MiB): rsync carries it.
const BIG: usize = (1 << 20) + (1 << 19);
const NAMES: [&str; 2] = ["p", "q"];

/// Removes whatever is at `path` (file, symlink or directory tree).
fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

/// Writes `len` bytes that name operation `op`, so a stale copy on the remote is caught.
fn write_file(path: &Path, op: usize, len: usize) {
    remove_if_dir(path);
    let stamp = format!("op {op} ");
    let body: Vec<u8> = stamp.bytes().cycle().take(len.max(stamp.len())).collect();
    std::fs::write(path, body).unwrap();
}

fn remove_if_dir(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() || m.is_symlink()) {
        remove(path);
    }
}

/// One random operation on one of [`NAMES`]; returns what it did, for the failure message.
fn operate(src: &Path, rng: &mut Rng, op: usize) -> String {
    let name = NAMES[rng.below(2)];
    let path = src.join(name);
    match rng.below(8) {
        0 | 1 => {
            write_file(&path, op, 1 + rng.below(4096));
            format!("small file {name}")
        }
        2 => {
            write_file(&path, op, BIG);
            format!("big file {name}")
        }
        3 => {
            remove(&path);
            format!("remove {name}")
        }
        4 => {
            remove(&path);
            std::fs::create_dir(&path).unwrap();
            std::fs::write(path.join("inner"), format!("op {op}")).unwrap();
            format!("dir {name}")
        }
        5 => {
            remove(&path);
            std::os::unix::fs::symlink(format!("target-{op}"), &path).unwrap();
            format!("symlink {name}")
        }
        _ => {
            let other = src.join(NAMES[(NAMES.iter().position(|n| *n == name).unwrap() + 1) % 2]);
            if std::fs::symlink_metadata(&path).is_err() {
                return format!("rename {name} (absent)");
            }
            remove(&other);
            std::fs::rename(&path, &other).unwrap();
            format!("rename {name} over its sibling")
        }
    }
}

fn scenario(tmp: &Path, seeds: &[u64], ops: usize, remote: impl FnOnce(&Path) -> Remote) {
    let src = tmp.join("src");
    let dst = tmp.join("dst");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("p"), "start").unwrap();
    // Never an empty root: that halts the workspace by design (a mount that went away).
    std::fs::write(src.join("anchor"), "stays").unwrap();
    let mut m = MonitorProc::start(tmp, workspace("one-path", &src, vec![remote(&dst)]));
    m.flush_ok(FLUSH);
    for &seed in seeds {
        let mut rng = Rng::new(seed);
        let mut done = Vec::new();
        for op in 0..ops {
            done.push(operate(&src, &mut rng, op));
            // No pause, a short one, or long enough for a batch to start: the next change
            // then races the transfer of this one.
            match rng.below(4) {
                0 => {}
                1 => std::thread::sleep(Duration::from_millis(2)),
                2 => std::thread::sleep(Duration::from_millis(15)),
                _ => std::thread::sleep(Duration::from_millis(60)),
            }
            if rng.below(6) == 0 || op + 1 == ops {
                m.flush_ok(FLUSH);
                let diffs = diff_trees(&src, &dst);
                if !diffs.is_empty() {
                    m.fail(&format!(
                        "seed {seed:#x}, after op {op} ({}):\n  {}\nops: {done:?}",
                        done.last().unwrap(),
                        diffs.join("\n  ")
                    ));
                }
            }
        }
    }
}

#[test]
fn random_operations_on_one_path_converge_locally() {
    let tmp = scratch_dir();
    scenario(tmp.path(), &[0x0e_0001, 0x0e_0002, 0x0e_0003], 40, |dst| {
        local_remote("l", dst)
    });
}

#[test]
fn random_operations_on_one_path_converge_over_ssh() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    scenario(tmp.path(), &[0x0e_0004], 30, |dst| sshd.remote("r", dst));
}
