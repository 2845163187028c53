//! A FUSE filesystem that never answers, for the hang tests: `fusermount3` opens `/dev/fuse`,
//! mounts it and hands the descriptor back over a socket (`_FUSE_COMMFD`, the protocol libfuse
//! uses); then nobody ever reads a request from it. Every access to the mount blocks, as on a
//! hung NFS or sshfs mount, until the descriptor is closed (which aborts the connection: the
//! blocked calls fail with ENOTCONN) — [`HungMount::release`], or Drop, which also unmounts
//! lazily (`fusermount3 -u -z`), even when the test failed.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{
    recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

/// A mount point whose filesystem never replies.
pub struct HungMount {
    path: PathBuf,
    /// The FUSE connection: while open, requests wait for an answer that never comes.
    connection: Option<RawFd>,
}

impl HungMount {
    /// Mounts the silent filesystem on `path` (an existing directory, inside the test's temp
    /// dir). `Err` says why it cannot be done here (the test then skips, printing it).
    pub fn mount(path: &Path) -> Result<Self, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("/dev/fuse is not available".into());
        }
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("socketpair: {e}"))?;
        // Only fusermount3 inherits its end.
        fcntl(&theirs, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| format!("fcntl: {e}"))?;
        let output = Command::new("fusermount3")
            .arg("-o")
            .arg("fsname=wsync-hung,subtype=hung")
            .arg("--")
            .arg(path)
            .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run fusermount3 (install fuse3): {e}"))?;
        drop(theirs);
        if !output.status.success() {
            return Err(format!(
                "fusermount3 failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!(RawFd);
        let message = recvmsg::<()>(
            ours.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| format!("receiving the FUSE descriptor: {e}"))?;
        let mut received = None;
        for cmsg in message.cmsgs().map_err(|e| format!("cmsgs: {e}"))? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                received = fds.first().copied();
            }
        }
        let Some(fd) = received else {
            return Err("fusermount3 sent no descriptor".into());
        };
        Ok(Self {
            path: path.to_path_buf(),
            connection: Some(fd),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the mount answer again: closes the connection (every blocked call fails) and
    /// unmounts it lazily, uncovering the directory below.
    pub fn release(&mut self) {
        if let Some(fd) = self.connection.take() {
            let _ = nix::unistd::close(fd);
        }
        if let Ok(status) = Command::new("fusermount3")
            .args(["-u", "-z", "--"])
            .arg(&self.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            if !status.success() {
                eprintln!("fusermount3 -u -z {} failed: {status}", self.path.display());
            }
        }
    }
}

impl Drop for HungMount {
    fn drop(&mut self) {
        if self.connection.is_some() {
            self.release();
        }
    }
}
