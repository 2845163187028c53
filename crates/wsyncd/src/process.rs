//! Process-group handling shared by everything the daemon starts (monitors, the hook) and by the
//! watchdog's last resort: observing an exit without reaping, terminating a group with a grace
//! period, and describing how a process ended.
//!
//! Signalling a process group by its leader's pid is only safe while the leader is an unreaped
//! child of ours: once reaped, its pid (and so the pgid) can be reused by an unrelated process.
//! So every wait here observes the exit and leaves the zombie in place
//! ([`platform::child_has_exited`]: `waitid(WNOWAIT)` on Linux, kqueue elsewhere); callers reap (`Child::wait`) only after their last signal to the group.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use wsync_core::platform;

/// How often a wait for an exit looks again.
const POLL: Duration = Duration::from_millis(20);

/// How a child process ended. Its `Display` is the text `wsync status` shows as `last_exit`
/// ("exit status 1", "signal 9 (SIGKILL)").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitDescription {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// Its status could not be read (the text says why).
    Unknown(String),
}

impl ExitDescription {
    /// Exit code 0.
    pub fn is_success(&self) -> bool {
        *self == ExitDescription::Code(0)
    }
}

impl From<ExitStatus> for ExitDescription {
    fn from(status: ExitStatus) -> Self {
        if let Some(code) = status.code() {
            return ExitDescription::Code(code);
        }
        match status.signal() {
            Some(signal) => ExitDescription::Signal(signal),
            // `wait` reports only exits and deaths by signal; keep whatever the OS said.
            None => ExitDescription::Unknown(status.to_string()),
        }
    }
}

impl From<std::io::Result<ExitStatus>> for ExitDescription {
    fn from(waited: std::io::Result<ExitStatus>) -> Self {
        match waited {
            Ok(status) => status.into(),
            Err(e) => ExitDescription::Unknown(format!("unknown ({e})")),
        }
    }
}

impl fmt::Display for ExitDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitDescription::Code(code) => write!(f, "exit status {code}"),
            ExitDescription::Signal(signal) => match Signal::try_from(*signal) {
                Ok(name) => write!(f, "signal {signal} ({name})"),
                Err(_) => write!(f, "signal {signal}"),
            },
            ExitDescription::Unknown(text) => f.write_str(text),
        }
    }
}

/// Whether process `pid` (an unreaped child of ours) has exited, without reaping it.
pub fn has_exited(pid: u32) -> bool {
    platform::child_has_exited(pid)
}

/// Waits until every one of `pids` has exited or `timeout` passes; looks at least once.
/// True when all exited. Never reaps.
pub fn wait_exit(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pids.iter().all(|&pid| has_exited(pid)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// SIGKILLs the process group led by `leader`, which must be an unreaped child of ours.
pub fn kill_group(leader: u32) {
    let _ = killpg(as_pid(leader), Signal::SIGKILL);
}

/// [`terminate_groups`] for one group.
pub fn terminate_group(leader: u32, grace: Duration) -> bool {
    terminate_groups(&[leader], grace)
}

/// SIGTERM to each process group led by `leaders` (unreaped children of ours), up to `grace`
/// for all the leaders to exit, then SIGKILL to every group — also to groups whose leader
/// exited, so nothing it started survives. True when every leader exited within the grace.
/// Does not reap: the caller does that after this returns.
pub fn terminate_groups(leaders: &[u32], grace: Duration) -> bool {
    for &leader in leaders {
        let _ = killpg(as_pid(leader), Signal::SIGTERM);
    }
    let exited = wait_exit(leaders, grace);
    for &leader in leaders {
        kill_group(leader);
    }
    exited
}

/// SIGKILLs and reaps every child of this process, again and again until none is left or
/// `deadline` passes (then it says so on stderr). In a child subreaper (Linux) that is every
/// descendant: the children of a killed child become ours. A pid listed as our child cannot be
/// reused before the signal, since only we reap our children.
pub fn kill_and_reap_children(deadline: Duration) {
    use nix::errno::Errno;
    use nix::sys::wait::waitpid;
    let me = std::process::id();
    let until = Instant::now() + deadline;
    loop {
        for child in platform::children_of(me) {
            let _ = nix::sys::signal::kill(as_pid(child), Signal::SIGKILL);
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return,
                Err(e) => {
                    eprintln!("cannot reap the hook's processes: {e}");
                    return;
                }
            }
        }
        if Instant::now() >= until {
            eprintln!("processes the hook started are still alive after {deadline:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn as_pid(pid: u32) -> Pid {
    Pid::from_raw(pid as i32)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    use super::*;

    #[test]
    fn exit_descriptions_read_as_before() {
        let code: ExitDescription = ExitStatus::from_raw(3 << 8).into();
        assert_eq!(code, ExitDescription::Code(3));
        assert_eq!(code.to_string(), "exit status 3");
        let signal: ExitDescription = ExitStatus::from_raw(9).into();
        assert_eq!(signal, ExitDescription::Signal(9));
        assert_eq!(signal.to_string(), "signal 9 (SIGKILL)");
        assert!(ExitDescription::Code(0).is_success());
        assert!(!ExitDescription::Signal(15).is_success());
    }

    #[test]
    fn terminating_a_group_reaches_its_children_and_leaves_the_leader_to_reap() {
        // The leader ignores SIGTERM, so only the SIGKILL after the grace ends it; its child
        // (same group) must go too.
        let mut leader = Command::new("/bin/sh")
            .args(["-c", "trap '' TERM; sleep 30 & echo ready; wait"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = leader.id();
        // Signalled before the trap is set, the shell would just die of SIGTERM.
        let mut ready = String::new();
        let stdout = leader.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut ready).unwrap();
        assert_eq!(ready, "ready\n");
        let started = Instant::now();
        assert!(!terminate_group(pid, Duration::from_millis(200)));
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(
            wait_exit(&[pid], Duration::from_secs(10)),
            "leader survived SIGKILL"
        );
        // Still a zombie until we reap it: the pgid was never free for reuse.
        assert_eq!(
            ExitDescription::from(leader.wait()),
            ExitDescription::Signal(9)
        );
        assert!(
            wait_until(|| live_members(pid).is_empty()),
            "members of the group survived: {:?}",
            live_members(pid)
        );
    }

    #[test]
    fn a_leader_that_honours_sigterm_ends_within_the_grace() {
        let mut leader = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        assert!(terminate_group(leader.id(), Duration::from_secs(10)));
        assert_eq!(
            ExitDescription::from(leader.wait()),
            ExitDescription::Signal(15)
        );
    }

    /// Processes of group `pgid` that are not zombies (an orphaned zombie waits for whoever
    /// reaps orphans here, which may be slow in a container).
    fn live_members(pgid: u32) -> Vec<u32> {
        let mut members = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
                members.push(pid);
            }
        }
        members
    }

    fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(POLL);
        }
        false
    }
}
