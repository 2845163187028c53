//! Process figures from /proc: CPU time, resident set (current and peak), threads, open fds.

use anyhow::{Context, Result};

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
pub const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// cutime + cstime: CPU of children already waited for (a monitor's rsyncs).
    pub child_ticks: u64,
    pub rss_kib: u64,
    /// Peak resident set (VmHWM).
    pub hwm_kib: u64,
    /// Proportional set size: shared pages (the binary, libc) split among their users, so the
    /// sum over many monitors is what they really cost together.
    pub pss_kib: u64,
    pub threads: u64,
    pub fds: u64,
}

impl ProcStats {
    pub fn cpu_secs(&self) -> f64 {
        self.cpu_ticks as f64 / TICKS_PER_SEC
    }
}

/// Reads the figures of `pid`.
pub fn proc_stats(pid: u32) -> Result<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let status_kib = |key: &str| kib_field(&status, key);
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let pss_kib = kib_field(&rollup, "Pss:");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |rd| rd.count() as u64);
    Ok(ProcStats {
        cpu_ticks: field(11) + field(12),
        child_ticks: field(13) + field(14),
        rss_kib: status_kib("VmRSS:"),
        hwm_kib: status_kib("VmHWM:"),
        pss_kib,
        threads: status_kib("Threads:"),
        fds,
    })
}

/// The number after `key` on its line of a /proc key-value file (0 when absent).
fn kib_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads `utime+stime` (clock ticks) and VmRSS (KiB) of a process.
pub fn cpu_ticks_and_rss(pid: u32) -> Result<(u64, u64)> {
    let s = proc_stats(pid)?;
    Ok((s.cpu_ticks, s.rss_kib))
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// CPU (clock ticks) spent so far by every descendant of `root`, living or exited, `root`'s own
/// time excluded: each living descendant's utime+stime+cutime+cstime plus `root`'s cutime+cstime.
/// A difference of two readings is what the subtree used in between, exited processes included
/// (their time moves into the parent that reaps them). Only exact when `root` is a child
/// subreaper, so that daemonized grandchildren (an ssh ControlPersist master) stay below it.
pub fn subtree_cpu_ticks(root: u32) -> u64 {
    let ticks = |pid: u32| proc_stats(pid).map_or((0, 0), |s| (s.cpu_ticks, s.child_ticks));
    let mut total = ticks(root).1;
    let mut below = wsync_core::platform::children_of(root);
    while let Some(pid) = below.pop() {
        let (own, reaped) = ticks(pid);
        total += own + reaped;
        below.extend(wsync_core::platform::children_of(pid));
    }
    total
}
