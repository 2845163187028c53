//! Hard links (issue 11, item 14), for a local and an SSH remote: the initial full sync links
//! the names of one inode on the remote as they are at the source, and a write through one name
//! (inotify reports only that name) reaches every other name of the file inside the workspace.
//! A new link, a removed link and a link broken by an editor's save-by-rename all end with the
//! remote's names and link counts equal to the source's.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use wsync_core::registry::Remote;
use wsync_tests::monitor::{workspace, MonitorProc};
use wsync_tests::transports::{Rig, Via};
use wsync_tests::tree::{diff_trees, scratch_dir};

const FLUSH: Duration = Duration::from_secs(30);

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// Rewrites `path` in place (same inode), as a program writing through that name does.
fn write_through(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Flushes and fails unless the remote equals the source and `linked` are one inode there with
/// exactly that many links.
fn synced(m: &mut MonitorProc, src: &Path, dst: &Path, linked: &[&str], step: &str) {
    m.flush_ok(FLUSH);
    let mut problems = diff_trees(src, dst);
    let first = std::fs::metadata(dst.join(linked[0])).map(|m| m.ino()).ok();
    for name in linked {
        match std::fs::metadata(dst.join(name)) {
            Ok(meta) if Some(meta.ino()) == first && meta.nlink() == linked.len() as u64 => {}
            Ok(meta) => problems.push(format!(
                "{name} on the remote: inode {} with {} links, expected the inode of {} with {}",
                meta.ino(),
                meta.nlink(),
                linked[0],
                linked.len()
            )),
            Err(e) => problems.push(format!("{name} on the remote: {e}")),
        }
    }
    if !problems.is_empty() {
        m.fail(&format!("after {step}:\n  {}", problems.join("\n  ")));
    }
}

fn hard_links_scenario(tmp: &Path, remote: impl FnOnce(&Path) -> Remote) {
    let src = tmp.join("src");
    let dst = tmp.join("dst");
    write(&src.join("a"), "one");
    write(&src.join("solo"), "s");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::hard_link(src.join("a"), src.join("d/b")).unwrap();
    std::fs::hard_link(src.join("a"), src.join("c")).unwrap();
    let mut m = MonitorProc::start(tmp, workspace("links", &src, vec![remote(&dst)]));
    synced(&mut m, &src, &dst, &["a", "d/b", "c"], "the initial sync");

    write_through(&src.join("a"), "two, written through a");
    synced(&mut m, &src, &dst, &["a", "d/b", "c"], "a write through a");

    std::fs::hard_link(src.join("a"), src.join("e")).unwrap();
    synced(&mut m, &src, &dst, &["a", "d/b", "c", "e"], "a new link e");

    write_through(&src.join("d/b"), "three, written through d/b");
    synced(
        &mut m,
        &src,
        &dst,
        &["a", "d/b", "c", "e"],
        "a write through d/b",
    );

    std::fs::remove_file(src.join("c")).unwrap();
    synced(
        &mut m,
        &src,
        &dst,
        &["a", "d/b", "e"],
        "removing the link c",
    );

    // An editor's save: a new file renamed over e breaks e's link.
    write(&src.join(".e.swp"), "four, e on its own");
    std::fs::rename(src.join(".e.swp"), src.join("e")).unwrap();
    synced(&mut m, &src, &dst, &["a", "d/b"], "e saved by rename");
    write_through(&src.join("a"), "five");
    synced(
        &mut m,
        &src,
        &dst,
        &["a", "d/b"],
        "a write through a after e left",
    );
    assert!(m.shutdown(Duration::from_secs(10)).success());
}

fn hard_links_stay_linked_and_current(via: Via) {
    let tmp = scratch_dir();
    let rig = Rig::new(via, tmp.path());
    hard_links_scenario(tmp.path(), |dst| rig.remote("r", dst));
}

wsync_tests::on_every_transport!(hard_links_stay_linked_and_current);
