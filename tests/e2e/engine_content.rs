//! Content, not timestamps, for what the watcher saw change (issue 11): a same-size rewrite
//! that keeps its mtime (`cp -p`, `tar`, a coarse clock) reaches the remote even in a batch that
//! also holds a directory.

use std::path::Path;
use std::time::Duration;

use wsync_core::monitor_proto::MonitorCommand;
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::tree::scratch_dir;

const FLUSH: Duration = Duration::from_secs(20);

fn rewrite_keeping_mtime(path: &Path, content: &str) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::write(path, content).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(mtime).unwrap();
}

#[test]
fn a_same_size_rewrite_with_its_old_mtime_is_sent_in_a_batch_with_a_directory() {
    let tmp = scratch_dir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("config"), "port=1111").unwrap();
    let ws = workspace("content", &src, vec![local_remote("d", &dst)]);
    let mut m = MonitorProc::start(tmp.path(), ws);
    m.flush_ok(FLUSH);
    assert_eq!(
        std::fs::read_to_string(dst.join("config")).unwrap(),
        "port=1111"
    );
    // Paused, so both changes go out in one batch when it resumes.
    m.send(&MonitorCommand::Pause);
    m.wait_status("paused", FLUSH, |s| s.paused);
    std::fs::create_dir(src.join("new-dir")).unwrap();
    std::fs::write(src.join("new-dir/file"), "x").unwrap();
    rewrite_keeping_mtime(&src.join("config"), "port=2222");
    m.send(&MonitorCommand::Resume);
    m.flush_ok(FLUSH);
    assert_eq!(
        std::fs::read_to_string(dst.join("new-dir/file")).unwrap(),
        "x"
    );
    assert_eq!(
        std::fs::read_to_string(dst.join("config")).unwrap(),
        "port=2222",
        "same size, same mtime: skipped by a size+mtime comparison"
    );
}
