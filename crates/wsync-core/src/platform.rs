//! What differs between Linux and macOS (and the BSDs), in one place: the rest of wsync calls
//! these and carries no `cfg(target_os)` of its own for them.
//!
//! | concern                           | Linux                          | elsewhere (macOS)                          |
//! |-----------------------------------|--------------------------------|--------------------------------------------|
//! | dying with the parent             | `PR_SET_PDEATHSIG`             | nothing here: stdin EOF and the parent-pid check ([`parent_is`]) |
//! | collecting orphaned descendants   | `PR_SET_CHILD_SUBREAPER`       | not available: only the process group is killed |
//! | observing an exit without reaping | `waitid(WEXITED\|WNOWAIT)`     | kqueue `EVFILT_PROC`/`NOTE_EXIT` (a zombie is refused with `ESRCH`) |
//! | a close-on-exec pipe              | `pipe2(O_CLOEXEC)`             | `pipe` + `fcntl(FD_CLOEXEC)`               |
//! | is a pid alive (zombies count as gone) | `/proc/<pid>/stat` state  | `kill(pid, 0)` (a zombie counts as alive)  |
//! | the children of a process         | `/proc/*/stat`                 | `ps -A -o pid= -o ppid=`                   |
//! | the running executable            | `/proc/self/exe` (survives a replaced binary) | `std::env::current_exe()`   |
//! | host name                         | `/proc/sys/kernel/hostname`    | `gethostname(3)`                           |
//! | unix socket paths                 | 108 bytes of `sun_path`        | 104                                        |
//! | runtime directory                 | `$XDG_RUNTIME_DIR`             | `$XDG_RUNTIME_DIR` when set (rarely), else the callers' fallbacks |
//!
//! The peer uid on the command socket needs nothing here: tokio's `UnixStream::peer_cred` is
//! `SO_PEERCRED` on Linux and `getpeereid` on macOS.
//!
//! Only the Linux side runs in CI; the other side is compile-checked for `x86_64-apple-darwin`
//! and `aarch64-apple-darwin` (`scripts/test.sh`), not run.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Bytes in `sockaddr_un.sun_path`, the terminating NUL included.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const SUN_PATH_LEN: usize = 108;
/// Bytes in `sockaddr_un.sun_path`, the terminating NUL included.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const SUN_PATH_LEN: usize = 104;

/// The longest path a unix socket can be bound or connected at.
pub const SOCKET_PATH_MAX: usize = SUN_PATH_LEN - 1;

/// A unix socket path longer than [`SOCKET_PATH_MAX`]: the kernel would refuse it with a bare
/// "path must be shorter than SUN_LEN" (or truncate it), so it is refused first, naming the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "socket path {} is {len} bytes long; unix socket paths may have at most {max} bytes here: set DaemonCommandSocketPath in the config to a shorter path (or use a shorter HOME or XDG_RUNTIME_DIR, under which the default lives)",
    .path.display()
)]
pub struct SocketPathTooLong {
    pub path: PathBuf,
    pub len: usize,
    pub max: usize,
}

/// Checks that `path` fits in `sockaddr_un.sun_path` (see [`SocketPathTooLong`]).
pub fn check_socket_path(path: &std::path::Path) -> Result<(), SocketPathTooLong> {
    use std::os::unix::ffi::OsStrExt;
    let len = path.as_os_str().as_bytes().len();
    if len > SOCKET_PATH_MAX {
        return Err(SocketPathTooLong {
            path: path.to_path_buf(),
            len,
            max: SOCKET_PATH_MAX,
        });
    }
    Ok(())
}

/// The open flag for a directory handle used only to resolve names beneath it: `O_PATH` on
/// Linux (no read permission needed, and `O_NOFOLLOW` then opens a symlink itself), plain
/// `O_RDONLY` elsewhere (the directory must be readable; a symlink fails with `ELOOP`).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const DIR_HANDLE: nix::fcntl::OFlag = nix::fcntl::OFlag::O_PATH;
/// The open flag for a directory handle used only to resolve names beneath it: `O_PATH` on
/// Linux (no read permission needed, and `O_NOFOLLOW` then opens a symlink itself), plain
/// `O_RDONLY` elsewhere (the directory must be readable; a symlink fails with `ELOOP`).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const DIR_HANDLE: nix::fcntl::OFlag = nix::fcntl::OFlag::O_RDONLY;

/// Permission bits as a [`nix::sys::stat::Mode`] (`mode_t` is 32 bits on Linux, 16 on macOS;
/// only the low 12 bits are permission bits).
pub fn mode(bits: u32) -> nix::sys::stat::Mode {
    nix::sys::stat::Mode::from_bits_truncate((bits & 0o7777) as nix::libc::mode_t)
}

/// The per-user runtime directory the session provides (`$XDG_RUNTIME_DIR`, when set and not
/// empty). macOS sessions rarely set it; callers fall back to their own directory.
pub fn runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// Asks the kernel to send `signal` to this process when its parent dies. True when it will;
/// false where the kernel cannot (macOS): callers rely on stdin EOF and [`parent_is`] there.
pub fn die_with_parent(signal: Signal) -> nix::Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        nix::sys::prctl::set_pdeathsig(signal)?;
        Ok(true)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = signal;
        Ok(false)
    }
}

/// Whether this process's parent is still `parent` (it changes to init or a subreaper when the
/// parent dies): the portable half of dying with the parent.
pub fn parent_is(parent: u32) -> bool {
    nix::unistd::getppid().as_raw() as u32 == parent
}

/// Makes this process the reaper of its orphaned descendants, so they stay its children after
/// their parents exit. True when it is; false where the kernel has no such thing (macOS): only
/// what stays in the process group can then be found.
pub fn become_subreaper() -> nix::Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        nix::sys::prctl::set_child_subreaper(true)?;
        Ok(true)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        Ok(false)
    }
}

/// A pipe whose both ends are close-on-exec: `(reader, writer)`.
pub fn pipe_cloexec() -> nix::Result<(OwnedFd, OwnedFd)> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        // Not atomic with the pipe's creation: a fork on another thread in between inherits
        // both ends until it execs. wsync only passes these to children it spawns itself.
        let (reader, writer) = nix::unistd::pipe()?;
        for fd in [&reader, &writer] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        }
        Ok((reader, writer))
    }
}

/// Stop signals (SIGTERM, SIGINT) held back from this thread and read when the caller is ready
/// to act on them, instead of ending the process: `signalfd` on Linux, kqueue `EVFILT_SIGNAL`
/// elsewhere. Spawned children start with an empty mask (std resets it).
pub struct HeldSignals {
    set: nix::sys::signal::SigSet,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fd: nix::sys::signalfd::SignalFd,
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    queue: nix::sys::event::Kqueue,
}

impl HeldSignals {
    /// Blocks `signals` on the calling thread and starts listening for them.
    pub fn hold(signals: &[Signal]) -> nix::Result<Self> {
        let mut set = nix::sys::signal::SigSet::empty();
        for &signal in signals {
            set.add(signal);
        }
        set.thread_block()?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use nix::sys::signalfd::{SfdFlags, SignalFd};
            let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
            Ok(Self { set, fd })
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            use nix::sys::event::{EvFlags, EventFilter, FilterFlag, KEvent, Kqueue};
            let queue = Kqueue::new()?;
            let changes: Vec<KEvent> = signals
                .iter()
                .map(|&signal| {
                    KEvent::new(
                        signal as usize,
                        EventFilter::EVFILT_SIGNAL,
                        EvFlags::EV_ADD,
                        FilterFlag::empty(),
                        0,
                        0,
                    )
                })
                .collect();
            queue.kevent(&changes, &mut [], None)?;
            Ok(Self { set, queue })
        }
    }

    /// Whether one of the signals arrived since the last look; it is consumed, so unblocking
    /// later does not deliver it. Never blocks.
    pub fn arrived(&self) -> bool {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            matches!(self.fd.read_signal(), Ok(Some(_)))
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            use nix::sys::event::{EvFlags, EventFilter, FilterFlag, KEvent};
            let now = nix::libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let blank = KEvent::new(
                0,
                EventFilter::EVFILT_SIGNAL,
                EvFlags::empty(),
                FilterFlag::empty(),
                0,
                0,
            );
            let mut events = [blank; 2];
            match self.queue.kevent(&[], &mut events, Some(now)) {
                Ok(n) if n > 0 => {
                    // kqueue only records the delivery attempt: the signal is still pending
                    // (blocked); sigwait takes it, at once since it is pending.
                    for _ in 0..n {
                        let _ = self.set.wait();
                    }
                    true
                }
                _ => false,
            }
        }
    }

    /// Unblocks the signals again.
    pub fn release(self) -> nix::Result<()> {
        self.set.thread_unblock()
    }
}

/// Whether `pid`, an unreaped child of ours, has exited, without reaping it (its zombie keeps
/// the pid, and so its process group id, from being reused). A pid that is not our child
/// counts as exited.
pub fn child_has_exited(pid: u32) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(as_pid(pid)), flags) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(_) => true,
            // ECHILD: not (or no longer) our child; nothing is left to wait for.
            Err(_) => true,
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        kqueue_has_exited(pid)
    }
}

/// kqueue's view of an exit: registering `EVFILT_PROC`/`NOTE_EXIT` for a process that has
/// already exited (a zombie) fails with `ESRCH`; one that exits later fires the event. Either
/// way nothing is reaped. A fresh queue per look keeps this stateless, like `waitid`.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn kqueue_has_exited(pid: u32) -> bool {
    use nix::errno::Errno;
    use nix::sys::event::{EvFlags, EventFilter, FilterFlag, KEvent, Kqueue};
    let Ok(queue) = Kqueue::new() else {
        // No queue (descriptor limit): say alive, so the group is not signalled as if gone;
        // the caller's deadline still ends its wait.
        return false;
    };
    let change = KEvent::new(
        pid as usize,
        EventFilter::EVFILT_PROC,
        EvFlags::EV_ADD | EvFlags::EV_ONESHOT | EvFlags::EV_RECEIPT,
        FilterFlag::NOTE_EXIT,
        0,
        0,
    );
    let mut events = [change];
    let now = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match queue.kevent(&[change], &mut events, Some(now)) {
        // EV_RECEIPT: the registration comes back with EV_ERROR set and `data` the errno
        // (0 = registered); a NOTE_EXIT that already fired comes back without EV_ERROR.
        Ok(0) => false,
        Ok(_) => {
            let event = &events[0];
            if !event.flags().contains(EvFlags::EV_ERROR) {
                return event.fflags().contains(FilterFlag::NOTE_EXIT);
            }
            match event.data() {
                0 => {
                    // Registered and alive at that instant: look once more for an exit that
                    // raced the registration.
                    let mut fired = [change];
                    matches!(queue.kevent(&[], &mut fired, Some(now)), Ok(n) if n > 0)
                }
                errno => Errno::from_raw(errno as i32) == Errno::ESRCH,
            }
        }
        Err(errno) => errno == Errno::ESRCH,
    }
}

/// Whether `pid` is a live process; a zombie counts as gone where that can be told apart
/// (Linux), as alive elsewhere.
pub fn pid_alive(pid: u32) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised command name, which may itself contain ") ".
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_none_or(|(_, rest)| !rest.starts_with('Z')),
            Err(_) => false,
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        use nix::errno::Errno;
        // EPERM: it exists but belongs to someone else.
        matches!(
            nix::sys::signal::kill(as_pid(pid), None),
            Ok(()) | Err(Errno::EPERM)
        )
    }
}

/// The pids whose parent is `parent`, zombies included.
pub fn children_of(parent: u32) -> Vec<u32> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut children = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split
            // after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) {
                children.push(pid);
            }
        }
        children
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let Ok(out) = std::process::Command::new("ps")
            .args(["-A", "-o", "pid=", "-o", "ppid="])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace().map(|f| f.parse::<u32>().ok());
                match (fields.next().flatten(), fields.next().flatten()) {
                    (Some(pid), Some(ppid)) if ppid == parent => Some(pid),
                    _ => None,
                }
            })
            .collect()
    }
}

/// The program of this process, for running helpers as itself. On Linux `/proc/self/exe`,
/// which still names the running binary after a package upgrade replaced the file.
pub fn current_exe() -> PathBuf {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        PathBuf::from("/proc/self/exe")
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        std::env::current_exe()
            .unwrap_or_else(|_| PathBuf::from(std::env::args_os().next().unwrap_or_default()))
    }
}

/// This machine's host name; empty when unknown.
pub fn hostname() -> String {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(std::ffi::OsString::from)
        .or_else(|_| nix::unistd::gethostname());
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let name = nix::unistd::gethostname();
    name.map(|s| s.to_string_lossy().trim().to_owned())
        .unwrap_or_default()
}

fn as_pid(pid: u32) -> Pid {
    Pid::from_raw(pid as i32)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_socket_path_past_the_limit_is_refused_naming_path_length_limit_and_fix() {
        let fits = std::path::PathBuf::from(format!("/{}", "s".repeat(SOCKET_PATH_MAX - 1)));
        assert_eq!(check_socket_path(&fits), Ok(()));
        let long = std::path::PathBuf::from(format!("/{}", "s".repeat(SOCKET_PATH_MAX)));
        let err = check_socket_path(&long).unwrap_err();
        assert_eq!((err.len, err.max), (SOCKET_PATH_MAX + 1, SOCKET_PATH_MAX));
        let text = err.to_string();
        for part in [
            long.to_str().unwrap(),
            &format!("is {} bytes long", SOCKET_PATH_MAX + 1),
            &format!("at most {SOCKET_PATH_MAX} bytes"),
            "set DaemonCommandSocketPath",
            "shorter HOME",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
    }
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn child_exit_is_seen_without_reaping() {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(
            !child_has_exited(pid),
            "a child blocked on stdin is running"
        );
        assert!(children_of(std::process::id()).contains(&pid));
        drop(child.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !child_has_exited(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "the exit was never seen"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Not reaped: the zombie is still ours to wait for, and counts as gone.
        assert!(children_of(std::process::id()).contains(&pid));
        #[cfg(target_os = "linux")]
        assert!(!pid_alive(pid), "a zombie counts as gone");
        assert!(child.wait().unwrap().success());
        assert!(!pid_alive(pid));
    }

    #[test]
    fn pipe_ends_are_close_on_exec() {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let (reader, writer) = pipe_cloexec().unwrap();
        for fd in [&reader, &writer] {
            let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
            assert!(flags.contains(FdFlag::FD_CLOEXEC));
        }
    }

    #[test]
    fn our_parent_is_our_parent() {
        assert!(parent_is(nix::unistd::getppid().as_raw() as u32));
        assert!(!parent_is(u32::MAX));
        assert!(pid_alive(std::process::id()));
        assert!(!hostname().is_empty());
    }
}
