//! Names rsync could misread in a `--files-from` list (issue 11, item 12): files whose names
//! begin with `#` or `;` (rsync's comment characters: Emacs autosaves are `#file#`) or `-`, at
//! the workspace root and below, are created, modified, renamed and deleted on a local and an
//! SSH remote by incremental batches, exactly like any other name.

use std::path::Path;
use std::time::Duration;

use wsync_core::registry::Remote;
use wsync_tests::monitor::{workspace, MonitorProc};
use wsync_tests::transports::{Rig, Via};
use wsync_tests::tree::{diff_trees, scratch_dir};

const FLUSH: Duration = Duration::from_secs(30);

/// Every odd name, at the root and one level down.
const NAMES: [&str; 10] = [
    "#x", ";x", "-x", "#auto#", "d/#x", "d/;x", "d/-x", "d/#auto#", "#dir/-f", "#dir/#f",
];

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// Flushes and fails unless the remote equals the source.
fn synced(m: &mut MonitorProc, src: &Path, dst: &Path, step: &str) {
    m.flush_ok(FLUSH);
    let diffs = diff_trees(src, dst);
    if !diffs.is_empty() {
        m.fail(&format!("after {step}:\n  {}", diffs.join("\n  ")));
    }
}

fn odd_names_scenario(tmp: &Path, remote: impl FnOnce(&Path) -> Remote) {
    let src = tmp.join("src");
    let dst = tmp.join("dst");
    write(&src.join("keep"), "k");
    write(&src.join("d/keep"), "k");
    let mut m = MonitorProc::start(tmp, workspace("names", &src, vec![remote(&dst)]));
    synced(&mut m, &src, &dst, "the initial sync");

    for name in NAMES {
        write(&src.join(name), "created");
    }
    synced(&mut m, &src, &dst, "creating the odd names");

    for name in NAMES {
        write(&src.join(name), "modified, longer");
    }
    synced(&mut m, &src, &dst, "modifying them");

    for name in ["#x", ";x", "-x", "d/#x", "d/;x", "d/-x"] {
        std::fs::rename(src.join(name), src.join(format!("{name}2"))).unwrap();
    }
    std::fs::rename(src.join("keep"), src.join("#keep#")).unwrap();
    std::fs::rename(src.join("d/keep"), src.join(";moved up")).unwrap();
    std::fs::rename(src.join("#dir"), src.join(";dir")).unwrap();
    synced(&mut m, &src, &dst, "renaming them");

    for name in [
        "#x2", ";x2", "-x2", "d/#x2", "d/;x2", "d/-x2", "#auto#", "#keep#",
    ] {
        std::fs::remove_file(src.join(name)).unwrap();
    }
    std::fs::remove_dir_all(src.join(";dir")).unwrap();
    synced(&mut m, &src, &dst, "deleting them");
    assert!(m.shutdown(Duration::from_secs(10)).success());
}

fn names_starting_with_comment_or_option_characters_sync(via: Via) {
    let tmp = scratch_dir();
    let rig = Rig::new(via, tmp.path());
    odd_names_scenario(tmp.path(), |dst| rig.remote("r", dst));
}

wsync_tests::on_every_transport!(names_starting_with_comment_or_option_characters_sync);
