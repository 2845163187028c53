//! [`HangFs`]: a FUSE filesystem that never answers, the way a hung NFS, sshfs or FUSE mount
//! does not. It answers the kernel's `INIT` (so requests reach it) and then reads every request
//! and answers none: a `stat`, `canonicalize`, `open` or `readdir` anywhere below the mount
//! blocks until the filesystem goes away. Each request read is counted ([`HangFs::requests`]),
//! so a test knows that a call is blocked in it instead of sleeping and hoping.
//!
//! Mounted with mount(2) on `/dev/fuse` directly (no `fusermount3`, no FUSE library), inside
//! the test's own temp dir; so it needs root and `/dev/fuse`, and [`HangFs::mount`] says why
//! not otherwise (the test then skips with that reason). Dropping it detaches the mount and
//! closes the connection, which fails every call still blocked in it (ENOTCONN), so the threads
//! stuck there end. Drop it before the temp dir is removed (declare it after the `TestEnv`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::poll::{poll_until, INTERVAL};

const FUSE_INIT: u32 = 26;
/// Requests the kernel sends without wanting an answer; not counted.
const NO_ANSWER_EXPECTED: [u32; 3] = [
    2,  /* FORGET */
    36, /* INTERRUPT */
    42, /* BATCH_FORGET */
];
const FUSE_KERNEL_VERSION: u32 = 7;
/// Lookups in one directory are sent in parallel: without it the kernel holds a directory's
/// lock across a lookup, and a second call would wait for the lock, not in the filesystem.
const FUSE_PARALLEL_DIROPS: u32 = 1 << 18;
/// `fuse_in_header`: len, opcode, unique, nodeid, uid, gid, pid, extlen, padding.
const IN_HEADER: usize = 40;
/// `fuse_init_out` before protocol 7.23, and since.
const INIT_OUT_COMPAT: usize = 24;
const INIT_OUT: usize = 64;
/// The kernel refuses reads into smaller buffers than a request can fill.
const READ_BUFFER: usize = 1 << 20;

/// A mounted never-answering filesystem (see the module docs).
pub struct HangFs {
    mountpoint: PathBuf,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    server: Option<JoinHandle<()>>,
}

impl HangFs {
    /// Mounts it at `mountpoint` (created if missing). `Err` says why this machine cannot
    /// have one: the caller skips its test with that reason.
    pub fn mount(mountpoint: &Path) -> Result<Self, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("mounting a FUSE filesystem with mount(2) needs root".into());
        }
        let device = File::options()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(|e| format!("cannot open /dev/fuse: {e}"))?;
        std::fs::create_dir_all(mountpoint)
            .map_err(|e| format!("cannot create {}: {e}", mountpoint.display()))?;
        let options = format!(
            "fd={},rootmode=40000,user_id={},group_id={}",
            device.as_raw_fd(),
            nix::unistd::geteuid(),
            nix::unistd::getegid()
        );
        mount(
            Some("wsync-hang"),
            mountpoint,
            Some("fuse.wsync-hang"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|e| {
            format!(
                "cannot mount a FUSE filesystem at {}: {e}",
                mountpoint.display()
            )
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let server = {
            let (stop, requests) = (Arc::clone(&stop), Arc::clone(&requests));
            std::thread::Builder::new()
                .name("hang-fs".into())
                .spawn(move || serve(device, &stop, &requests))
        };
        let mut fs = Self {
            mountpoint: mountpoint.to_owned(),
            stop,
            requests,
            server: None,
        };
        // On a failed spawn the device was dropped with the closure: the mount is dead, and
        // dropping `fs` detaches it.
        fs.server = Some(server.map_err(|e| format!("cannot start the FUSE server thread: {e}"))?);
        Ok(fs)
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Requests read and left unanswered so far: each is a call blocked in the filesystem.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests are blocked in the filesystem.
    pub fn wait_for_requests(&self, n: u64, timeout: Duration) -> bool {
        poll_until(
            "a call to block in the hung filesystem",
            timeout,
            INTERVAL,
            || self.requests() >= n,
        )
        .is_ok()
    }
}

impl Drop for HangFs {
    fn drop(&mut self) {
        // Lazily: calls blocked in it keep it busy until the connection is closed below.
        if let Err(e) = umount2(&self.mountpoint, MntFlags::MNT_DETACH) {
            eprintln!("hang-fs: cannot detach {}: {e}", self.mountpoint.display());
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(server) = self.server.take() {
            // The server drops the device, the last handle on the connection: the kernel
            // aborts it and every blocked call returns ENOTCONN.
            let _ = server.join();
        }
    }
}

/// Answers `INIT`, then reads and counts every request without answering, until `stop`.
fn serve(mut device: File, stop: &AtomicBool, requests: &AtomicU64) {
    let mut buffer = vec![0u8; READ_BUFFER];
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(device.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(50u8)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("hang-fs: poll failed: {e}");
                return;
            }
        }
        let n = match device.read(&mut buffer) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // ENODEV: the mount is gone.
            Err(_) => return,
        };
        if n < IN_HEADER {
            continue;
        }
        let opcode = u32_at(&buffer, 4);
        let unique = u64_at(&buffer, 8);
        if opcode == FUSE_INIT {
            let kernel_minor = u32_at(&buffer, IN_HEADER + 4);
            let max_readahead = u32_at(&buffer, IN_HEADER + 8);
            let flags = u32_at(&buffer, IN_HEADER + 12) & FUSE_PARALLEL_DIROPS;
            let reply = init_reply(unique, kernel_minor, max_readahead, flags);
            // One write is one reply on the FUSE device.
            if let Err(e) = device.write_all(&reply) {
                eprintln!("hang-fs: cannot answer INIT: {e}");
                return;
            }
        } else if !NO_ANSWER_EXPECTED.contains(&opcode) {
            requests.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// `fuse_out_header` + `fuse_init_out`: protocol 7.(kernel's minor), no optional feature but
/// `flags`.
fn init_reply(unique: u64, minor: u32, max_readahead: u32, flags: u32) -> Vec<u8> {
    let body = if minor < 23 {
        INIT_OUT_COMPAT
    } else {
        INIT_OUT
    };
    let len = 16 + body;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&0i32.to_ne_bytes());
    out.extend_from_slice(&unique.to_ne_bytes());
    out.extend_from_slice(&FUSE_KERNEL_VERSION.to_ne_bytes());
    out.extend_from_slice(&minor.to_ne_bytes());
    out.extend_from_slice(&max_readahead.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&1u16.to_ne_bytes()); // max_background
    out.extend_from_slice(&1u16.to_ne_bytes()); // congestion_threshold
    out.extend_from_slice(&4096u32.to_ne_bytes()); // max_write
    out.resize(len, 0); // time_gran, max_pages, ... all zero
    out
}

fn u32_at(buffer: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buffer[at], buffer[at + 1], buffer[at + 2], buffer[at + 3]])
}

fn u64_at(buffer: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buffer[at..at + 8]);
    u64::from_ne_bytes(bytes)
}
