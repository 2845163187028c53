//! Growing files (issue 11 item 10): a file written for seconds through one descriptor is sent
//! at most once a second while it grows, appended (`--append-verify`) rather than sent whole,
//! and at once when closed; it converges with the right content, and the bytes the monitor
//! reports sent stay within twice its size, to a local and an SSH target. A file truncated and
//! rewritten through its descriptor (shorter, then longer with other content) ends up right on
//! the remote: rsync's append would skip the first and the whole-file check must catch the
//! second. Real monitor, real rsync, real sshd on 127.0.0.1.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use wsync_core::monitor_proto::{MonitorStatus, RemoteState};
use wsync_tests::monitor::{local_remote, workspace, MonitorProc};
use wsync_tests::sshd::Sshd;
use wsync_tests::tree::churn::Rng;
use wsync_tests::tree::{diff_trees, scratch_dir, wait_until_equal};

const MIB: usize = 1 << 20;
const FLUSH: Duration = Duration::from_secs(60);

fn bytes_sent(status: &MonitorStatus) -> u64 {
    status.remotes.iter().map(|r| r.bytes_sent).sum()
}

fn files_sent(status: &MonitorStatus) -> u64 {
    status.remotes.iter().map(|r| r.files_sent).sum()
}

/// `n` bytes that neither compress nor repeat.
fn noise(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Writes `chunks` MiB through `file`, one MiB every `every`, flushing each to the file.
fn grow(file: &mut File, rng: &mut Rng, chunks: usize, every: Duration) {
    let start = Instant::now();
    for i in 0..chunks {
        file.write_all(&noise(rng, MIB)).unwrap();
        let next = start + every * (i as u32 + 1);
        // Pacing the writer, not waiting for the monitor.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// Writes a file of `chunks` MiB over about `chunks × every` through one descriptor, closes it,
/// and checks the remote converges with at most twice the file's size reported sent, and the
/// file sent about once a second (over SSH rsync's delta transfer keeps the bytes down even
/// when the file is sent every 100 ms, but each send reads and checksums the whole file).
fn grows_within_twice_its_size(m: &mut MonitorProc, src: &Path, dst: &Path, chunks: usize) {
    m.flush_ok(FLUSH);
    let before = m
        .wait_status("the initial sync counted", FLUSH, |s| {
            s.remotes.iter().all(|r| r.state == RemoteState::InSync)
        })
        .clone();
    let (before, files_before) = (bytes_sent(&before), files_sent(&before));
    let path = src.join("logs/big.bin");
    let mut file = File::create(&path).unwrap();
    let writing = Instant::now();
    grow(
        &mut file,
        &mut Rng::new(11),
        chunks,
        Duration::from_millis(100),
    );
    let writing = writing.elapsed();
    drop(file);
    let size = (chunks * MIB) as u64;
    m.flush_ok(FLUSH);
    wait_until_equal(src, dst, Duration::from_secs(10)).unwrap_or_else(|e| m.fail(&e));
    // The last batch's stats arrive with its exit, just after the flush may be answered.
    let status = m.wait_status("the whole file counted as sent", FLUSH, |s| {
        bytes_sent(s) - before >= size
    });
    let sent = bytes_sent(&status) - before;
    let sends = files_sent(&status) - files_before;
    eprintln!(
        "{chunks} MiB written over {writing:?}: sent {sends} times, {sent} bytes ({:.2}× the file)",
        sent as f64 / size as f64
    );
    // Once when it appeared, once a second while written, once when closed (and a spare).
    let most = writing.as_secs() + 4;
    if sends > most {
        m.fail(&format!(
            "the growing file was sent {sends} times in {writing:?}: more than once a second"
        ));
    }
    if sent > 2 * size {
        m.fail(&format!(
            "{sent} bytes sent for a {size}-byte file: more than twice its size"
        ));
    }
}

#[test]
fn a_file_growing_for_seconds_is_appended_not_resent_whole_locally() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(src.join("logs")).unwrap();
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("grow", &src, vec![local_remote("m", &dst)]),
    );
    grows_within_twice_its_size(&mut m, &src, &dst, 30);
}

#[test]
fn a_file_growing_for_seconds_is_appended_not_resent_whole_over_ssh() {
    let tmp = scratch_dir();
    let sshd = Sshd::start(tmp.path());
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(src.join("logs")).unwrap();
    let remote = sshd.remote("r", &dst);
    let mut m = MonitorProc::start(tmp.path(), workspace("grow-ssh", &src, vec![remote]));
    grows_within_twice_its_size(&mut m, &src, &dst, 30);
}

#[test]
fn a_growing_file_truncated_and_rewritten_ends_up_right_on_the_remote() {
    let tmp = scratch_dir();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(&src).unwrap();
    let mut m = MonitorProc::start(
        tmp.path(),
        workspace("regrow", &src, vec![local_remote("m", &dst)]),
    );
    m.flush_ok(FLUSH);
    let path = src.join("data.bin");
    let mut rng = Rng::new(23);
    let mut file = File::create(&path).unwrap();
    // Long enough to be sent while open at least twice: its remote length is known.
    grow(&mut file, &mut rng, 12, Duration::from_millis(150));
    m.wait_status("the growing file sent", FLUSH, |s| {
        bytes_sent(s) >= 4 * MIB as u64
    });
    // Truncated and rewritten shorter, then closed: an append would be skipped (the remote
    // copy is longer), leaving the old content there.
    file.set_len(0).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(&noise(&mut rng, 3 * MIB)).unwrap();
    drop(file);
    m.flush_ok(FLUSH);
    wait_until_equal(&src, &dst, Duration::from_secs(10))
        .unwrap_or_else(|e| m.fail(&format!("truncated and rewritten shorter: {e}")));

    // Grown again through one descriptor, then truncated and rewritten longer with other
    // content: the append's whole-file check fails and rsync sends it again.
    let mut file = File::options().append(true).open(&path).unwrap();
    grow(&mut file, &mut rng, 6, Duration::from_millis(150));
    file.set_len(0).unwrap();
    file.write_all(&noise(&mut rng, 12 * MIB)).unwrap();
    drop(file);
    m.flush_ok(FLUSH);
    let diffs = diff_trees(&src, &dst);
    if !diffs.is_empty() {
        m.fail(&format!(
            "truncated and rewritten longer:\n  {}",
            diffs.join("\n  ")
        ));
    }
}
