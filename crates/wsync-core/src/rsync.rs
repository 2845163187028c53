//! The one rsync command builder: the argv for a full sync, an incremental sync of a path list
//! (`--files-from=- --from0`), a pass for files still being written (appended or sent by
//! content, their lengths reported), and a dry-run verify; the NUL-separated path list; parsing
//! of `--stats`, of `--itemize-changes` ([`parse_itemized`]) and of the lengths a growing-files
//! pass sent ([`sent_lengths`]); and the classification of rsync's exit codes. The monitor,
//! the CLI's `verify` and the daemon's attach preview call these.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::remote::RemoteTarget;
use crate::ssh::SshEndpoint;

/// Files whose name starts with this, at the workspace root, are the monitor's flush cookies:
/// never queued, never sent, never deleted on a remote.
pub const COOKIE_PREFIX: &str = ".wsync-cookie-";
/// Proof-of-sync files in a workspace root: synced like any file (no exclude can match them),
/// then removed.
pub const PROOF_PREFIX: &str = ".wsync-proof-";

/// What the names of this process's proof files begin with: [`PROOF_PREFIX`], the pid and
/// `-`. Only these pass every exclude and protect rule: a user's own `.wsync-proof-notes` (or
/// one left by an earlier monitor) is an ordinary file, excluded and protected as its rules say.
pub fn proof_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| format!("{PROOF_PREFIX}{}-", std::process::id()))
}

/// True for the name of another process's proof file, `.wsync-proof-<pid>-<n>` (digits only):
/// one a monitor that was killed while its probe was out left in the workspace root.
pub fn is_foreign_proof_name(name: &[u8]) -> bool {
    let digits = |part: &[u8]| !part.is_empty() && part.iter().all(u8::is_ascii_digit);
    name.strip_prefix(PROOF_PREFIX.as_bytes())
        .and_then(|rest| {
            let at = rest.iter().position(|&b| b == b'-')?;
            Some((&rest[..at], &rest[at + 1..]))
        })
        .is_some_and(|(pid, n)| {
            digits(pid) && digits(n) && !name.starts_with(proof_prefix().as_bytes())
        })
}

/// With [`RsyncRequest::report_transfer_done`], rsync prints this (then the pid it waits for)
/// on stdout as soon as the transfer is complete, before it idles in its exit handshake
/// (rsync polls its children with 20 ms sleeps, which adds 20–40 ms to every run).
pub const TRANSFER_DONE_PREFIX: &str = "client_run waiting on ";

/// The deletion budget while a remote's tree size is not known yet (before its first full
/// sync), when the workspace sets no `max_delete`.
pub const DEFAULT_MAX_DELETE: u64 = 1000;

/// Printed on stderr by the remote side (see [`RsyncRequest::marker_id`]) when the target
/// directory is gone or holds no marker of this workspace; rsync then fails to connect.
pub const TARGET_NOT_OURS: &str = "wsync: target holds no marker of this workspace";
/// Printed on stderr by the remote side ([`ssh_target_checks`]) when the target resolves to
/// `/`, the remote user's home or a parent of it: what attach refuses, a hand-edited registry
/// included. Nothing runs there.
pub const TARGET_TOO_BROAD: &str = "wsync: target is /, the remote home or a parent of it";
/// Printed on stderr by the remote side ([`ssh_trash_check`]) when the target's trash is a
/// symlink or not a directory: rsync would follow it out of the target.
pub const TRASH_NOT_A_DIRECTORY: &str = "wsync: .wsync-trash on the target is not a directory";

/// The shell text (POSIX `sh`, builtins only: `cd -P` sets `$PWD` to the resolved directory)
/// that refuses an SSH target resolving to `/`, the login directory or `$HOME` (both resolved),
/// or a parent of one, printing [`TARGET_TOO_BROAD`] and exiting 97: the rule attach checks
/// ([`crate::target_path::remote_hazard`]), run before every command on the target. It reads
/// the target path from `$d` (relative to the login directory, the shell's directory, which it
/// leaves unchanged) and holds no single quote, so it fits in a `sh -c '...'`. A target that
/// cannot be entered passes: the marker check that follows refuses it.
pub fn ssh_target_checks() -> String {
    format!(
        "o=$PWD; l=; h=; r=; w=; cd -P . 2>/dev/null && l=$PWD; cd -P -- \"$HOME\" 2>/dev/null && h=$PWD; \
         cd -- \"$o\" 2>/dev/null && cd -P -- \"$d\" 2>/dev/null && r=$PWD; cd -- \"$o\" 2>/dev/null || exit 97; \
         case $r in /) w=1;; ?*) for x in \"$l\" \"$h\"; do case $x/ in \"$r\"/*) w=1;; esac; done;; esac; \
         [ -z \"$w\" ] || {{ echo \"{TARGET_TOO_BROAD}\" >&2; exit 97; }}; "
    )
}

/// The shell text that refuses a target (in `$d`) whose trash is a symlink or anything but a
/// directory, printing [`TRASH_NOT_A_DIRECTORY`] and exiting 97: rsync's `--backup-dir`, and
/// a prune's `--delete`, would follow it out of the target. No single quote, like
/// [`ssh_target_checks`].
pub fn ssh_trash_check() -> String {
    let trash = crate::trash::TRASH_DIR;
    format!(
        "! [ -h \"$d/{trash}\" ] && {{ ! [ -e \"$d/{trash}\" ] || [ -d \"$d/{trash}\" ]; }} || {{ echo \"{TRASH_NOT_A_DIRECTORY}\" >&2; exit 97; }}; "
    )
}

/// Printed on stderr by the remote side when the snapshot a batch keeps deletions in could
/// not be created, opened on [`crate::trash::CHILD_FD`] or proved to be ours beneath the
/// target ([`ssh_snapshot_by_fd`]).
pub const TRASH_SNAPSHOT_UNSAFE: &str =
    "wsync: the trash snapshot on the target is not ours or not where it belongs";

/// Printed on stdout by the version check of an SSH remote ([`remote_version_command`])
/// when the remote shows a process's descriptors in `/proc/<pid>/fd` (Linux): the remote
/// guard can then hold a batch's trash snapshot by descriptor ([`BackupDir::RemoteFd`]).
pub const PROC_FD_PROBE: &str = "wsync-proc-fd";

/// The shell text (after [`ssh_target_checks`], which sets `$o` and the resolved target `$r`,
/// and [`ssh_trash_check`]) that creates the batch's snapshot `$s` in the trash and holds it
/// on descriptor 9 for rsync's `--backup-dir=/proc/self/fd/9`, checked through
/// `/proc/$$/fd`, never by name:
/// - the trash is created if missing (mode 0700), opened on descriptor 8, and must be a
///   directory of the remote user whose resolved path is `$r/.wsync-trash`;
/// - the snapshot is created through that descriptor (`mkdir -m 700`; the passes of one
///   batch share it), opened on 9, and must again be a directory of ours, at
///   `$r/.wsync-trash/$s`. Created by us with mode 0700, nobody else can create anything in
///   it, nor move it out of the trash (a directory changes its parent only for a caller who
///   may write it); a trash renamed or swapped for a link afterwards redirects nothing.
///
/// Refusals print [`TRASH_SNAPSHOT_UNSAFE`] and exit 97. rsync then runs as the shell's
/// child ([`SSH_SNAPSHOT_AFTER`]) so that a snapshot it kept nothing in is removed (and an
/// empty trash), as for a local target. Two processes beside rsync per batch that keeps
/// deletions (`mkdir`, `rmdir`; one more `mkdir` the first time), none per file. No single
/// quote, like [`ssh_target_checks`].
pub fn ssh_snapshot_by_fd() -> String {
    let trash = crate::trash::TRASH_DIR;
    let fd = crate::trash::CHILD_FD;
    format!(
        "t=\"$d/{trash}\"; f=/proc/$$/fd; u() {{ echo \"{TRASH_SNAPSHOT_UNSAFE}\" >&2; exit 97; }}; \
         [ -n \"$r\" ] || u; [ -d \"$t\" ] || mkdir -m 700 -- \"$t\" 2>/dev/null || [ -d \"$t\" ] || u; \
         exec 8<\"$t\" || u; [ -d $f/8 ] && [ -O $f/8 ] && cd -P $f/8 2>/dev/null && [ \"$PWD\" = \"$r/{trash}\" ] && cd -- \"$o\" || u; \
         {{ [ -d \"$f/8/$s\" ] || mkdir -m 700 -- \"$f/8/$s\"; }} || u; exec {fd}<\"$f/8/$s\" || u; \
         [ -d $f/{fd} ] && [ -O $f/{fd} ] && cd -P $f/{fd} 2>/dev/null && [ \"$PWD\" = \"$r/{trash}/$s\" ] && cd -- \"$o\" || u; "
    )
}

/// The shell text that runs rsync after [`ssh_snapshot_by_fd`] and then removes the snapshot
/// if rsync kept nothing in it, and the trash if that left it empty: from inside the trash
/// held on descriptor 8 (its parent is the target: a directory of ours with mode 0700 cannot
/// be moved elsewhere by another user), never through a path that could lead out. Exits
/// with rsync's status.
pub const SSH_SNAPSHOT_AFTER: &str =
    "\"$rsync\" \"$@\"; e=$?; cd -P $f/8 2>/dev/null && rmdir -- \"$s\" ../.wsync-trash 2>/dev/null; exit $e";

/// What a refusal of the remote checks in `output` (rsync's or a remote command's stderr) means
/// for the user, naming the fix; `None` when they did not refuse.
pub fn guard_refusal(output: &str, target: &RemoteTarget) -> Option<String> {
    if output.contains(TARGET_TOO_BROAD) {
        Some(crate::target::too_broad_message(target))
    } else if output.contains(TRASH_NOT_A_DIRECTORY) {
        Some(crate::trash::not_a_directory_message(target))
    } else if output.contains(TRASH_SNAPSHOT_UNSAFE) {
        Some(crate::trash::snapshot_unsafe_message(target))
    } else if output.contains(TARGET_NOT_OURS) {
        Some(crate::target::not_ours_message(target))
    } else {
        None
    }
}

/// rsync's I/O timeout: a transfer with no data for this long fails (and is retried). It
/// counts inactivity only — a large file in flight keeps I/O going, and with `--timeout` set
/// rsync sends keep-alive messages while one side is busy (file lists, deletions) — so a slow
/// but live link is not cut. A hung remote is usually caught sooner by ssh's ServerAlive
/// probes (`crate::ssh`: 2 s × 3); this is the backstop.
pub const DEFAULT_TIMEOUT_SECS: u32 = 15;

/// What the rsync run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsyncMode {
    /// `rsync -a -H --delete root/ dest/`. The destination is never created: attach did that,
    /// with its marker.
    Full,
    /// Only the paths fed on stdin (NUL-separated, relative to the root; see [`files_from`]).
    /// Directories in the list are sent recursively with `--delete` inside them; paths missing
    /// from the source are deleted on the remote.
    Paths {
        /// `--ignore-times`: transfer listed files even when size and mtime match (a same-size
        /// rewrite within one timestamp tick). Costly on listed directories, whose unchanged
        /// contents would all be re-sent, so the caller sets it only for lists of files.
        ignore_times: bool,
    },
    /// A dry run of a full sync that itemizes every difference (for `wsync verify`).
    Verify,
    /// Files still being written, listed on stdin like [`RsyncMode::Paths`] (files only, no
    /// directories), each transferred file's length printed after [`SENT_LENGTH_PREFIX`] (see
    /// [`sent_lengths`]). With `append`, `--append-verify`: only the data past the remote
    /// copy's length is sent, then the whole file's checksum is verified and a file whose old
    /// content was not a prefix is sent again in full. rsync skips a file whose remote copy
    /// is as long or longer, so the caller appends only when it knows the remote copy is
    /// shorter. Without `append`, `--ignore-times`, like a list of files in `Paths`.
    Growing { append: bool },
    /// Deletions without `--delete-missing-args` (for a receiver where it is broken): the
    /// directories on stdin (listed like [`RsyncMode::Paths`], `.` for the root) are synced
    /// with `--delete`, and the rules file of [`deletion_rules`] lets nothing but the missing
    /// names in them be looked at, so only those are deleted.
    Deletions,
}

/// With [`RsyncMode::Growing`], rsync prints this, the file's length in bytes, a space and
/// its name (relative to the root, escaped as rsync does) for each file it transferred.
pub const SENT_LENGTH_PREFIX: &str = "wsync-sent-length ";

/// Everything one rsync invocation needs.
#[derive(Debug, Clone)]
pub struct RsyncRequest<'a> {
    pub source_root: &'a Path,
    pub target: &'a RemoteTarget,
    /// The ssh ControlPath for SSH targets (see [`SshEndpoint::control_path`]).
    pub control_path: Option<&'a Path>,
    pub mode: RsyncMode,
    pub timeout_secs: u32,
    /// Extra `--exclude` patterns (rsync filter syntax), after the cookie exclude.
    pub excludes: &'a [String],
    /// Receiver-side filter rules (`P pattern`, `R pattern`) deciding which remote paths a
    /// `--delete` keeps, from `wsync_core::excludes::Excludes::protect_rules`, after the rules
    /// file. Empty when the rules file carries them (the monitor's and verify's do).
    pub protect: &'a [Vec<u8>],
    /// `--max-delete`: the deletions this run may make (every mode).
    pub max_delete: Option<u64>,
    /// A file of rsync filter rules (`--filter=merge FILE`, NUL-separated; see
    /// `wsync_core::excludes::write_rules`), after the inline excludes.
    pub exclude_from: Option<&'a Path>,
    /// Print [`TRANSFER_DONE_PREFIX`] when the transfer is complete (`--debug=EXIT2`).
    pub report_transfer_done: bool,
    /// Print whole-transfer progress (`--info=progress2`): `\r`-terminated lines, one per
    /// file and about one a second within a large file. For full syncs only (it costs a line
    /// per file); ignored in the other modes.
    pub progress: bool,
    /// The workspace id whose `.wsync-target` marker the target must hold
    /// ([`crate::target`]). For SSH targets the remote command checks it before rsync starts
    /// (the `--rsync-path` guard, no extra round trip) and prints [`TARGET_NOT_OURS`]; local
    /// targets are checked by the caller. `None`: no check (attach's preview).
    pub marker_id: Option<&'a str>,
    /// Keep what this run deletes or overwrites on the target: `--backup --backup-dir=DIR`
    /// (a snapshot in its trash, see [`BackupDir`]). Ignored in [`RsyncMode::Verify`], which
    /// changes nothing.
    pub backup_dir: Option<BackupDir<'a>>,
    /// `--checksum`: compare files by content, not size and mtime (a checksum resync, the
    /// initial sync of a small tree, `wsync verify`). Both sides read every file: the cost
    /// grows with the bytes in the tree.
    pub checksum: bool,
    /// The program an SSH remote runs as rsync (the remote's `rsync_path`, validated by
    /// [`crate::remote::validate_rsync_path`]); `None`: `rsync` on its PATH.
    pub remote_rsync: Option<&'a str>,
    /// [`RsyncMode::Paths`] for a receiver whose `--delete-missing-args` is broken
    /// ([`crate::rsync_version`]): the list holds no missing path, and its deletions run
    /// separately ([`RsyncMode::Deletions`]). Also drops the option from
    /// [`RsyncMode::Growing`] (a file gone by then is reported, not deleted).
    pub no_delete_missing_args: bool,
    /// [`RsyncMode::Deletions`]: the rules file [`deletion_rules`] wrote, merged after every
    /// other rule.
    pub deletion_rules: Option<&'a Path>,
}

/// Where a run keeps what it deletes or overwrites (rsync's `--backup-dir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupDir<'a> {
    /// A directory rsync is given as is: a local snapshot the rsync child inherits
    /// ([`crate::trash::CHILD_BACKUP_DIR`]), or, for an SSH remote without `/proc` (not
    /// Linux), the snapshot's path relative to the target ([`crate::trash::backup_dir`]),
    /// whose trash the guard checks by name before rsync starts ([`ssh_trash_check`]).
    Path(&'a str),
    /// An SSH remote's snapshot of this name: the guard creates it, holds it on a descriptor
    /// and proves it ours ([`ssh_snapshot_by_fd`]); rsync backs up into
    /// [`crate::trash::CHILD_BACKUP_DIR`].
    RemoteFd(&'a str),
}

/// What the remote guard does about the trash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuardTrash<'a> {
    /// Nothing: the run neither writes nor reads it.
    Off,
    /// Refuses a trash that is a symlink or not a directory ([`ssh_trash_check`]).
    ByName,
    /// [`GuardTrash::ByName`], then the snapshot of this name held by descriptor.
    ByFd(&'a str),
    /// Prints [`PROC_FD_PROBE`] when the remote has `/proc/<pid>/fd` (the version check).
    Probe,
}

/// Builds the rsync argv, program first.
pub fn rsync_argv(req: &RsyncRequest<'_>) -> Vec<OsString> {
    // -H in every mode: names of one inode are one file on the remote too. A full sync finds
    // every link in the tree; an incremental batch links the names it lists, and the monitor
    // lists a changed file's other names with it (inotify reports only the name written to).
    let mut argv: Vec<OsString> = vec!["rsync".into(), "-a".into(), "-H".into()];
    if req.checksum {
        argv.push("--checksum".into());
    }
    match req.mode {
        RsyncMode::Full => argv.push("--delete".into()),
        RsyncMode::Paths { ignore_times } => {
            // --files-from turns recursion off even with -a; -r makes listed directories
            // recurse (implied parent directories are still not recursed or pruned).
            argv.push("-r".into());
            if ignore_times {
                argv.push("--ignore-times".into());
            }
            argv.push("--delete".into());
            if !req.no_delete_missing_args {
                argv.push("--delete-missing-args".into());
            }
            argv.push("--files-from=-".into());
            argv.push("--from0".into());
        }
        RsyncMode::Deletions => {
            for arg in ["-r", "--delete", "--files-from=-", "--from0"] {
                argv.push(arg.into());
            }
        }
        RsyncMode::Verify => {
            for arg in ["--delete", "--dry-run", "--itemize-changes"] {
                argv.push(arg.into());
            }
        }
        RsyncMode::Growing { append } => {
            argv.push(
                if append {
                    "--append-verify"
                } else {
                    "--ignore-times"
                }
                .into(),
            );
            argv.push(format!("--out-format={SENT_LENGTH_PREFIX}%l %n").into());
            if !req.no_delete_missing_args {
                argv.push("--delete-missing-args".into());
            }
            argv.push("--files-from=-".into());
            argv.push("--from0".into());
        }
    }
    // Every mode: the deletion budget bounds incremental batches as well as full syncs (rsync
    // counts `--delete-missing-args` deletions and those inside listed directories too).
    if let Some(max) = req.max_delete {
        argv.push(format!("--max-delete={max}").into());
    }
    // Compare mtimes to the nanosecond (rsync's default is whole seconds, which misses a
    // same-size rewrite within one second); needs a receiver of rsync 3.1.3 or later.
    argv.push("--modify-window=-1".into());
    argv.push(format!("--timeout={}", req.timeout_secs).into());
    argv.push("--stats".into());
    if req.report_transfer_done {
        argv.push("--debug=EXIT2".into());
    }
    if req.progress && matches!(req.mode, RsyncMode::Full) {
        argv.push("--info=progress2".into());
    }
    let backup = req
        .backup_dir
        .filter(|_| !matches!(req.mode, RsyncMode::Verify));
    if let Some(dir) = backup {
        let dir = match dir {
            BackupDir::Path(dir) => dir,
            BackupDir::RemoteFd(_) => crate::trash::CHILD_BACKUP_DIR,
        };
        argv.push("--backup".into());
        argv.push(format!("--backup-dir={dir}").into());
    }
    push_fixed_excludes(&mut argv);
    if let (RsyncMode::Deletions, Some(file)) = (req.mode, req.deletion_rules) {
        // Right after the fixed excludes: its `- /dir/*` rules must hide every other entry of
        // a listed directory from the receiver before a user's receiver-side `R` rule could
        // make one look extraneous. Its `+` rules name only paths the watcher did not exclude.
        // NUL-separated (any name can be a rule), so --from0 (given with the list) comes first.
        let mut arg = OsString::from("--filter=merge ");
        arg.push(file.as_os_str());
        argv.push(arg);
    }
    for pattern in req.excludes {
        argv.push(format!("--exclude={pattern}").into());
    }
    if let Some(file) = req.exclude_from {
        // The rules file is NUL-separated (any file name can be a rule); rsync reads it while
        // parsing the options, so --from0 must come first.
        if !matches!(
            req.mode,
            RsyncMode::Paths { .. } | RsyncMode::Growing { .. } | RsyncMode::Deletions
        ) {
            argv.push("--from0".into());
        }
        let mut arg = OsString::from("--filter=merge ");
        arg.push(file.as_os_str());
        argv.push(arg);
    }
    // After the rules file: its `- /path` rules for the excluded entries that exist come first.
    for rule in req.protect {
        let mut arg = b"--filter=".to_vec();
        arg.extend_from_slice(rule);
        argv.push(OsString::from_vec(arg));
    }
    let mut source = req.source_root.as_os_str().to_owned();
    if !source.as_bytes().ends_with(b"/") {
        source.push("/");
    }
    let trash = match backup {
        None => GuardTrash::Off,
        Some(BackupDir::Path(_)) => GuardTrash::ByName,
        Some(BackupDir::RemoteFd(snapshot)) => GuardTrash::ByFd(snapshot),
    };
    let (access, dest) = remote_access(
        req.target,
        req.control_path,
        req.marker_id,
        trash,
        req.remote_rsync,
    );
    argv.extend(access);
    argv.push("--".into());
    argv.push(source);
    argv.push(with_slash(dest));
    argv
}

/// `argv` (from [`rsync_argv`]) as a dry run that itemizes what it would change and delete
/// (`*deleting` lines, see [`parse_itemized`]): the deletion gate's count before a batch
/// deletes anything.
pub fn dry_run_argv(mut argv: Vec<OsString>) -> Vec<OsString> {
    argv.splice(1..1, ["--dry-run".into(), "--itemize-changes".into()]);
    argv
}

/// The entries at the top of every transfer that belong to wsync, not to the workspace: flush
/// cookies, the target's marker and its trash. Excluded at the root, they are never sent from
/// a source that has them and never deleted or overwritten on a target (a source's own
/// `.wsync-trash` cannot clobber the target's).
fn push_fixed_excludes(argv: &mut Vec<OsString>) {
    // First: rsync's first matching rule wins, so no exclude or protect rule can stop a proof.
    argv.push(format!("--include=/{}*", proof_prefix()).into());
    argv.push(format!("--exclude=/{COOKIE_PREFIX}*").into());
    // Never sent from a source that has one, never deleted on the target.
    argv.push(format!("--exclude=/{}", crate::target::MARKER_FILE).into());
    argv.push(format!("--exclude=/{}", crate::trash::TRASH_DIR).into());
}

/// How rsync reaches the target: the options (for SSH: `-e`, the guard in `--rsync-path` when
/// `marker_id` is set, `--protect-args`) and the target directory as rsync names it (`/path`
/// or `user@host:path`). The guard refuses a target that resolves to `/` or the remote home
/// ([`ssh_target_checks`]), that lacks the marker, or (`trash`: the run writes or reads the
/// trash) whose trash is not a real directory ([`ssh_trash_check`]), and holds a snapshot by
/// descriptor ([`ssh_snapshot_by_fd`]). The remote runs `remote_rsync`
/// ([`remote_rsync_program`]).
fn remote_access(
    target: &RemoteTarget,
    control_path: Option<&Path>,
    marker_id: Option<&str>,
    trash: GuardTrash<'_>,
    remote_rsync: Option<&str>,
) -> (Vec<OsString>, OsString) {
    let mut argv: Vec<OsString> = Vec::new();
    let (endpoint, path) = match target {
        RemoteTarget::Local { path } => return (argv, path.as_os_str().to_owned()),
        RemoteTarget::Ssh { path, .. } => match SshEndpoint::from_target(target) {
            Some(endpoint) => (endpoint, path),
            None => return (argv, path.into()),
        },
    };
    let control = control_path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("none"));
    argv.push("-e".into());
    argv.push(endpoint.rsync_rsh(&control));
    let program = remote_rsync_program(remote_rsync);
    if let Some(guard) = marker_id.map(|id| remote_guard(path, id, trash, program)) {
        let mut arg = OsString::from("--rsync-path=");
        arg.push(OsString::from_vec(guard));
        argv.push(arg);
    } else if remote_rsync.is_some() {
        let mut arg = OsString::from("--rsync-path=");
        arg.push(OsString::from_vec(crate::ssh::quote_posix_sh(
            program.as_bytes(),
        )));
        argv.push(arg);
    }
    // Remote paths with spaces must reach the remote rsync as one argument.
    argv.push("--protect-args".into());
    let dest = format!("{}:{}", endpoint.user_host(true), path);
    (argv, dest.into())
}

/// The program an SSH remote runs as rsync: its `rsync_path`, or `rsync` from its PATH.
pub fn remote_rsync_program(rsync_path: Option<&str>) -> &str {
    rsync_path.unwrap_or("rsync")
}

/// The remote command that runs the guard of every transfer to `target` (the checks of
/// [`remote_access`]) and then `PROGRAM --version` instead of a transfer: a monitor's check
/// of the remote's rsync before its first transfer, over the connection the transfers then
/// share; it also prints [`PROC_FD_PROBE`] first when the remote has `/proc/<pid>/fd`.
/// `None` for a local target.
pub fn remote_version_command(
    target: &RemoteTarget,
    marker_id: &str,
    remote_rsync: Option<&str>,
) -> Option<String> {
    let RemoteTarget::Ssh { path, .. } = target else {
        return None;
    };
    let mut guard = remote_guard(
        path,
        marker_id,
        GuardTrash::Probe,
        remote_rsync_program(remote_rsync),
    );
    guard.extend_from_slice(b" --version");
    Some(String::from_utf8_lossy(&guard).into_owned())
}

/// The `--rsync-path` guard: see [`remote_access`].
fn remote_guard(path: &str, id: &str, trash: GuardTrash<'_>, program: &str) -> Vec<u8> {
    // rsync appends its own `--server ...` arguments to this prefix. The check runs in
    // `sh` whatever the login shell is, with builtins only (no process besides rsync per
    // batch); a target that is itself a symlink is never followed (whoever controls the
    // link would choose what is emptied; attach refuses one too); only a regular file that
    // is not a symlink is read (a planted link to a FIFO or /dev/zero must not hang it);
    // the path, the id (hex), the rsync program and the snapshot's name are its arguments,
    // quoted by the one POSIX quoting function.
    let marker = crate::target::MARKER_FILE;
    let checks = ssh_target_checks();
    let (trash_check, snapshot) = match trash {
        GuardTrash::Off => (String::new(), None),
        GuardTrash::ByName => (ssh_trash_check(), None),
        GuardTrash::ByFd(snapshot) => (
            format!("{}{}", ssh_trash_check(), ssh_snapshot_by_fd()),
            Some(snapshot),
        ),
        GuardTrash::Probe => (
            format!("! [ -d /proc/$$/fd ] || echo {PROC_FD_PROBE}; "),
            None,
        ),
    };
    let run = if snapshot.is_some() {
        SSH_SNAPSHOT_AFTER
    } else {
        "exec \"$rsync\" \"$@\""
    };
    let args = if snapshot.is_some() {
        "d=$1; id=$2; rsync=$3; s=$4; shift 4; "
    } else {
        "d=$1; id=$2; rsync=$3; shift 3; "
    };
    let mut guard = format!(
        "sh -c '{args}{checks}m=; ! [ -h \"$d\" ] && [ -f \"$d/{marker}\" ] && ! [ -h \"$d/{marker}\" ] && IFS= read -r m 2>/dev/null < \"$d/{marker}\"; case \"$m\" in *\"$id\"*) ;; *) echo \"{TARGET_NOT_OURS}\" >&2; exit 97;; esac; {trash_check}{run}' wsync-guard "
    )
    .into_bytes();
    for arg in [path, id, program].into_iter().chain(snapshot) {
        guard.extend_from_slice(&crate::ssh::quote_posix_sh(arg.as_bytes()));
        guard.push(b' ');
    }
    guard.pop();
    guard
}

/// What a [`trash_argv`] run does with a target's trash ([`crate::trash`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrashOp<'a> {
    /// `--list-only` the trash: its snapshots and (with `files`) everything below them, for
    /// [`crate::trash::parse_list`]. A target without a trash lists nothing, without error.
    List { files: bool },
    /// Delete the snapshots named on stdin (one `+ /NAME/***` rule a line, see
    /// [`prune_rules`]) from the trash: an rsync `--delete` from an empty directory (`source`)
    /// that every other entry is excluded from.
    Prune,
    /// Copy a snapshot (or, with `paths`, the `./path`s on stdin, NUL-separated as
    /// [`files_from`] writes them) back into the workspace (`source` is the destination here).
    /// Never deletes; without `force` an existing workspace path is left as it is
    /// (`--ignore-existing`, reported as `PATH exists` lines on stdout). What is copied is
    /// itemized (see [`parse_itemized`]).
    Restore {
        snapshot: &'a str,
        paths: bool,
        force: bool,
        /// A local target's snapshot held open by the caller, as the rsync child reaches
        /// it (`/proc/self/fd/N`, see [`crate::trash::LocalTrash`]): read from there, never
        /// by its name below the target.
        held: Option<&'a str>,
    },
}

/// Everything a [`trash_argv`] run needs.
#[derive(Debug, Clone)]
pub struct TrashRequest<'a> {
    pub target: &'a RemoteTarget,
    pub control_path: Option<&'a Path>,
    /// The workspace id the target's marker must name (SSH: checked by the guard before rsync
    /// starts; local targets are checked by the caller).
    pub marker_id: Option<&'a str>,
    /// [`TrashOp::Prune`]: an empty directory; [`TrashOp::Restore`]: the workspace root;
    /// unused for [`TrashOp::List`].
    pub local: &'a Path,
    pub op: TrashOp<'a>,
    pub timeout_secs: u32,
    /// The program an SSH remote runs as rsync (see [`RsyncRequest::remote_rsync`]).
    pub remote_rsync: Option<&'a str>,
}

/// The argv listing, pruning or restoring from a target's trash, program first.
pub fn trash_argv(req: &TrashRequest<'_>) -> Vec<OsString> {
    use crate::trash::TRASH_DIR;
    let mut argv: Vec<OsString> = vec!["rsync".into()];
    let (access, target_dir) = remote_access(
        req.target,
        req.control_path,
        req.marker_id,
        GuardTrash::ByName,
        req.remote_rsync,
    );
    let mut remote = with_slash(target_dir);
    let local = with_slash(req.local.as_os_str().to_owned());
    let (from, to) = match req.op {
        TrashOp::List { files } => {
            for arg in ["--list-only", "-r", "--no-human-readable"] {
                argv.push(arg.into());
            }
            argv.push(format!("--include=/{TRASH_DIR}/").into());
            argv.push(if files {
                format!("--include=/{TRASH_DIR}/***").into()
            } else {
                format!("--include=/{TRASH_DIR}/*/").into()
            });
            argv.push("--exclude=*".into());
            (remote, None)
        }
        TrashOp::Prune => {
            for arg in ["-r", "--delete", "--include-from=-", "--exclude=*"] {
                argv.push(arg.into());
            }
            remote.push(format!("{TRASH_DIR}/"));
            (local, Some(remote))
        }
        TrashOp::Restore {
            snapshot,
            paths,
            force,
            held,
        } => {
            for arg in ["-a", "-H", "--itemize-changes"] {
                argv.push(arg.into());
            }
            if paths {
                for arg in ["-r", "--files-from=-", "--from0"] {
                    argv.push(arg.into());
                }
            }
            if !force {
                argv.push("--ignore-existing".into());
                argv.push("--info=skip1".into());
            }
            push_fixed_excludes(&mut argv);
            match held {
                Some(held) => remote = with_slash(held.into()),
                None => remote.push(format!("{TRASH_DIR}/{snapshot}/")),
            }
            (remote, Some(local))
        }
    };
    argv.push(format!("--timeout={}", req.timeout_secs).into());
    argv.extend(access);
    argv.push("--".into());
    argv.push(from);
    argv.extend(to);
    argv
}

/// The stdin of a [`TrashOp::Prune`] run: a rule per snapshot to delete. Only names that are
/// snapshot names ([`crate::trash::snapshot_time`]) get one, so no name can be a pattern.
pub fn prune_rules(snapshots: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for name in snapshots
        .iter()
        .filter(|n| crate::trash::snapshot_time(n).is_some())
    {
        out.extend_from_slice(format!("+ /{name}/***\n").as_bytes());
    }
    out
}

fn with_slash(mut path: OsString) -> OsString {
    if !path.as_bytes().ends_with(b"/") {
        path.push("/");
    }
    path
}

/// The stdin for [`RsyncMode::Paths`]: each relative path as `./path` followed by a NUL.
///
/// rsync skips `--files-from` entries that begin with `#` or `;` as comments, even with
/// `--from0`, so an Emacs autosave `#file#` at the root would never be sent or deleted; the
/// `./` prefix makes every name a plain path (a leading `-` is harmless there, but gets the
/// same prefix). rsync drops the `./` when it builds its file list, so the names it prints
/// (vanished files, itemized changes, `*deleting`) are the plain relative paths, and a missing
/// `./name` is still deleted by `--delete-missing-args`. An empty path (the root itself) is
/// left out: rsync skipped it as a blank line before, while `./` would name the root.
pub fn files_from(paths: &[PathBuf]) -> Vec<u8> {
    let mut out = Vec::new();
    for path in paths {
        let bytes = path.as_os_str().as_bytes();
        if bytes.is_empty() {
            continue;
        }
        out.extend_from_slice(b"./");
        out.extend_from_slice(bytes);
        out.push(0);
    }
    out
}

/// What an [`RsyncMode::Deletions`] run needs to delete `entries` on the remote (relative
/// paths, none below another, each missing from the source while its parent is a directory
/// there): the directories to list on stdin (written by [`files_from`]; `.` for the root) and
/// the NUL-separated rules file for [`RsyncRequest::deletion_rules`]. The rules include each
/// entry, each listed directory and the directories on the way to it, and exclude every other
/// entry of those directories: rsync's `--delete` then looks at nothing but the entries (and
/// the ways to them), which the source lacks, so it deletes exactly them (the fallback for a
/// receiver whose `--delete-missing-args` is broken, see [`crate::rsync_version`]).
pub fn deletion_rules(entries: &[PathBuf]) -> (Vec<PathBuf>, Vec<u8>) {
    use crate::excludes::{rsync_children_rule, rsync_rule};
    use std::collections::BTreeSet;
    let mut listed: BTreeSet<PathBuf> = BTreeSet::new();
    let mut on_the_way: BTreeSet<PathBuf> = BTreeSet::new();
    for entry in entries {
        let parent = entry.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut up = parent.clone();
        while !up.as_os_str().is_empty() {
            on_the_way.insert(up.clone());
            up = up.parent().unwrap_or(Path::new("")).to_path_buf();
        }
        listed.insert(parent);
    }
    let mut rules = Vec::new();
    let mut push = |kind: &[u8], rule: Vec<u8>| {
        rules.extend_from_slice(kind);
        rules.extend_from_slice(&rule);
        rules.push(0);
    };
    for dir in &on_the_way {
        let mut rule = rsync_rule(dir);
        rule.push(b'/');
        push(b"+ ", rule);
    }
    for entry in entries {
        push(b"+ ", rsync_rule(entry));
    }
    push(b"- ", rsync_children_rule(Path::new("")));
    for dir in &on_the_way {
        push(b"- ", rsync_children_rule(dir));
    }
    let dirs = listed
        .into_iter()
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            }
        })
        .collect();
    (dirs, rules)
}

/// The number of deletions rsync skipped at its `--max-delete` cap, if it hit it.
pub fn max_delete_skipped(output: &str) -> Option<u64> {
    let rest = output
        .lines()
        .find_map(|l| l.split_once("Deletions stopped due to --max-delete limit ("))?
        .1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The files rsync reported as vanished during the transfer (exit 24), relative to
/// `source_root`; `None` when a report cannot be mapped back (the caller then retries all).
pub fn vanished_paths(output: &str, source_root: &Path) -> Option<Vec<PathBuf>> {
    let root = source_root.as_os_str().as_bytes();
    let root = root.strip_suffix(b"/").unwrap_or(root);
    let mut out = Vec::new();
    for line in output.lines() {
        let Some(quoted) = line.trim_end().strip_prefix("file has vanished: \"") else {
            continue;
        };
        let raw = unescape_rsync(quoted.strip_suffix('"')?.as_bytes());
        let mut rel = raw.strip_prefix(root)?.strip_prefix(b"/")?;
        // rsync prints the cleaned name, without the `./` of [`files_from`]; stay correct if
        // a version keeps it.
        while let Some(rest) = rel.strip_prefix(b"./") {
            rel = rest;
        }
        out.push(PathBuf::from(OsString::from_vec(rel.to_vec())));
    }
    Some(out)
}

/// The files an [`RsyncMode::Growing`] run transferred and the length rsync sent of each
/// (what the remote copy holds now), relative to the root.
pub fn sent_lengths(output: &str) -> Vec<(PathBuf, u64)> {
    output
        .lines()
        .filter_map(|line| {
            let (length, name) = line.strip_prefix(SENT_LENGTH_PREFIX)?.split_once(' ')?;
            let length = length.parse().ok()?;
            let mut name = unescape_rsync(name.as_bytes());
            // A directory rsync created on the way is no file of the list.
            if name.is_empty() || name.ends_with(b"/") {
                return None;
            }
            while let Some(rest) = name.strip_prefix(b"./") {
                name = rest.to_vec();
            }
            Some((PathBuf::from(OsString::from_vec(name)), length))
        })
        .collect()
}

/// One path rsync could not write (exit 23) and the message it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFailure {
    /// Relative to the workspace root.
    pub path: PathBuf,
    /// rsync's line, without its `rsync: [role] ` prefix.
    pub message: String,
}

/// The paths an exit 23 failed on, from rsync's error lines. `roots` are the absolute prefixes
/// rsync may print names under (the source root, the target path as given and resolved).
/// `None` when any error line is not understood or names a path outside every root (or a
/// root itself): the caller cannot tell what failed, and the whole batch must be retried.
pub fn failed_paths(output: &str, roots: &[&Path]) -> Option<Vec<PathFailure>> {
    let mut out: Vec<PathFailure> = Vec::new();
    for line in output.lines() {
        let line = line.trim_end();
        if line.starts_with("rsync error: ")
            || line == "*** Skipping any contents from this failed directory ***"
            || line.starts_with("file has vanished: ")
        {
            continue;
        }
        let Some(rest) = line.strip_prefix("rsync: ") else {
            continue;
        };
        let message = match rest.strip_prefix('[') {
            Some(r) => r.split_once("] ")?.1,
            None => rest,
        };
        let path = failed_path(message, roots)?;
        if !out.iter().any(|f| f.path == path) {
            out.push(PathFailure {
                path,
                message: message.to_owned(),
            });
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The workspace-relative path one error message names.
fn failed_path(message: &str, roots: &[&Path]) -> Option<PathBuf> {
    const QUOTED: [(&str, bool); 9] = [
        ("mkstemp \"", true),
        ("recv_generator: mkdir \"", false),
        ("mkdir \"", false),
        ("send_files failed to open \"", false),
        ("failed to set times on \"", false),
        ("failed to set permissions on \"", false),
        ("failed to open \"", false),
        ("chown \"", false),
        ("link_stat \"", false),
    ];
    for (prefix, temp) in QUOTED {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (quoted, _) = rest.split_once("\":").or_else(|| rest.split_once("\" "))?;
            let raw = unescape_rsync(quoted.as_bytes());
            let mut rel = relative_to(&raw, roots)?;
            if temp {
                rel = temp_to_final(&rel)?;
            }
            return Some(rel);
        }
    }
    // Deletions name the path relative to the target, unquoted.
    for prefix in ["delete_file: unlink(", "delete_file: rmdir("] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (name, _) = rest.rsplit_once(") failed")?;
            return clean_relative(&unescape_rsync(name.as_bytes()));
        }
    }
    None
}

fn relative_to(raw: &[u8], roots: &[&Path]) -> Option<PathBuf> {
    if !raw.starts_with(b"/") {
        return clean_relative(raw);
    }
    roots.iter().find_map(|root| {
        let root = root.as_os_str().as_bytes();
        let root = root.strip_suffix(b"/").unwrap_or(root);
        clean_relative(raw.strip_prefix(root)?.strip_prefix(b"/")?)
    })
}

fn clean_relative(mut rel: &[u8]) -> Option<PathBuf> {
    while let Some(rest) = rel.strip_prefix(b"./") {
        rel = rest;
    }
    let rel = rel.strip_suffix(b"/").unwrap_or(rel);
    (!rel.is_empty() && rel != b".").then(|| PathBuf::from(OsString::from_vec(rel.to_vec())))
}

/// rsync's temporary file `dir/.name.XXXXXX` is `dir/name`.
fn temp_to_final(temp: &Path) -> Option<PathBuf> {
    let name = temp.file_name()?.as_bytes();
    let name = name.strip_prefix(b".")?;
    let (stem, suffix) = name.split_at(name.len().checked_sub(7)?);
    if stem.is_empty() || suffix.first() != Some(&b'.') {
        return None;
    }
    Some(temp.with_file_name(OsString::from_vec(stem.to_vec())))
}

/// Undoes rsync's `\#ooo` escaping of unprintable bytes in names it prints.
fn unescape_rsync(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'#') {
            let digits = &bytes[i + 2..(i + 5).min(bytes.len())];
            if digits.len() == 3 && digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 5;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// How one remote differs from its workspace. Paths are relative to the workspace root, as
/// rsync prints them (directories end with `/`, unusual bytes are escaped as `\#ooo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// In the workspace, not on the remote.
    pub missing: Vec<String>,
    /// On both, with different content (or a different symlink target or file type).
    pub differs: Vec<String>,
    /// On the remote only.
    pub extra: Vec<String>,
    /// Same content, different times, permissions or ownership (not counted as drift).
    pub attributes: Vec<String>,
}

impl Drift {
    /// True when no content differs (attribute-only differences do not count).
    pub fn in_sync(&self) -> bool {
        self.missing.is_empty() && self.differs.is_empty() && self.extra.is_empty()
    }

    /// How many paths differ in content.
    pub fn count(&self) -> usize {
        self.missing.len() + self.differs.len() + self.extra.len()
    }
}

/// Sorts rsync `--itemize-changes` lines (`YXcstpoguax path`, `*deleting   path`) into a
/// [`Drift`]; other output (`--stats`, "created directory", messages) is ignored.
pub fn parse_itemized(output: &str) -> Drift {
    let mut drift = Drift::default();
    for line in output.lines() {
        // The 11-character change summary, a space, the path.
        let (Some(summary), Some(path)) = (line.get(..11), line.get(12..)) else {
            continue;
        };
        if line.as_bytes()[11] != b' ' || path.is_empty() {
            continue;
        }
        let path = path.to_owned();
        if summary.trim_end() == "*deleting" {
            drift.extra.push(path);
            continue;
        }
        let mut chars = summary.chars();
        let (Some(update), Some(kind)) = (chars.next(), chars.next()) else {
            continue;
        };
        if !"<>ch.".contains(update) || !"fdLDS".contains(kind) {
            continue;
        }
        let flags = &summary[2..];
        if flags.chars().all(|c| c == '+') {
            drift.missing.push(path);
        } else if matches!(update, '<' | '>' | 'h') || (update == 'c' && kind != 'd') {
            // A transfer (contents differ by checksum), a hard link, or a changed symlink.
            drift.differs.push(path);
        } else if flags.chars().any(|c| c != '.' && c != ' ') {
            drift.attributes.push(path);
        }
    }
    drift
}

/// Counters from rsync's `--stats` output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RsyncStats {
    pub files_transferred: u64,
    pub files_deleted: u64,
    pub bytes_sent: u64,
    /// `Number of files`: the entries in the transfer (for a full sync, the whole source tree,
    /// directories included).
    pub files_total: u64,
}

/// Parses `--stats` output; unknown or missing lines leave zeros.
pub fn parse_stats(stdout: &str) -> RsyncStats {
    let mut stats = RsyncStats::default();
    for line in stdout.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let number = || -> u64 {
            let digits: String = value
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
                .filter(char::is_ascii_digit)
                .collect();
            digits.parse().unwrap_or(0)
        };
        match key.trim() {
            "Number of regular files transferred" => stats.files_transferred = number(),
            "Number of deleted files" => stats.files_deleted = number(),
            "Number of files" => stats.files_total = number(),
            "Total bytes sent" => stats.bytes_sent = number(),
            _ => {}
        }
    }
    stats
}

/// What an rsync exit status means for the sync engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    Success,
    /// 24: files vanished during the transfer; their deletion arrives as its own event.
    Vanished,
    /// 23: some files were not transferred; the batch stays dirty and is retried.
    Partial,
    /// Cannot reach or talk to the remote (5, 10, 12, 30, 35, 255): back off and retry.
    Connection,
    /// A misconfiguration or usage error (1, 2, 4): reported as an error, retried slowly.
    Fatal,
    /// 25: `--max-delete` stopped deletions.
    MaxDelete,
    /// Killed by a signal (our own abandon, or OOM).
    Killed,
    /// Anything else (I/O errors on either side): back off and retry.
    Other,
}

/// Classifies an exit code (`None` when rsync was killed by a signal).
pub fn classify_exit(code: Option<i32>) -> ExitClass {
    match code {
        Some(0) => ExitClass::Success,
        Some(24) => ExitClass::Vanished,
        Some(23) => ExitClass::Partial,
        Some(5 | 10 | 12 | 30 | 35 | 255) => ExitClass::Connection,
        Some(1 | 2 | 4) => ExitClass::Fatal,
        Some(25) => ExitClass::MaxDelete,
        Some(20) | None => ExitClass::Killed,
        Some(_) => ExitClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::SshOption;

    fn words(argv: &[OsString]) -> Vec<String> {
        argv.iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect()
    }

    /// Lines from rsync 3.5.0 writing into a read-only bind mount (`/tmp/rsx/dst/ro`) and
    /// deleting there.
    const READ_ONLY: &str = r#"rsync: [generator] failed to set times on "/tmp/rsx/dst/ro": Read-only file system (30)
rsync: [generator] recv_generator: mkdir "/tmp/rsx/dst/ro/sub" failed: Read-only file system (30)
*** Skipping any contents from this failed directory ***
rsync: [receiver] mkstemp "/tmp/rsx/dst/ro/.f.G0vxfl" failed: Read-only file system (30)
rsync: [receiver] mkstemp "/tmp/rsx/dst/ro/.sp ace.2LWZ8j" failed: Read-only file system (30)
rsync: [generator] delete_file: unlink(ro/gone) failed: Read-only file system (30)
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]
"#;

    #[test]
    fn failed_paths_map_real_rsync_errors_to_workspace_paths() {
        let roots = [Path::new("/src"), Path::new("/tmp/rsx/dst/")];
        let failed = failed_paths(READ_ONLY, &roots).expect("all understood");
        let paths: Vec<&str> = failed.iter().map(|f| f.path.to_str().unwrap()).collect();
        assert_eq!(paths, ["ro", "ro/sub", "ro/f", "ro/sp ace", "ro/gone"]);
        assert!(failed[2].message.contains("Read-only file system"));
        let sender =
            "rsync: [sender] send_files failed to open \"/src/d/x\": Permission denied (13)\n";
        assert_eq!(
            failed_paths(sender, &roots).unwrap()[0].path,
            PathBuf::from("d/x")
        );
    }

    #[test]
    fn failed_paths_give_up_on_anything_not_understood() {
        let roots = [Path::new("/tmp/rsx/dst")];
        let odd = format!("{READ_ONLY}rsync: write failed on \"/tmp/rsx/dst/ro/f\": No space left on device (28)\n");
        assert_eq!(failed_paths(&odd, &roots), None);
        let elsewhere =
            "rsync: [receiver] mkstemp \"/other/.f.AbC123\" failed: Permission denied (13)\n";
        assert_eq!(failed_paths(elsewhere, &roots), None);
        let root_itself = "rsync: [generator] failed to set times on \"/tmp/rsx/dst/.\": Read-only file system (30)\n";
        assert_eq!(failed_paths(root_itself, &roots), None);
        assert_eq!(
            failed_paths("rsync error: some files (code 23)\n", &roots),
            None
        );
    }

    #[test]
    fn growing_files_are_appended_or_sent_by_content_and_their_lengths_reported() {
        let target = RemoteTarget::Local {
            path: "/srv/m".into(),
        };
        let argv = |append| {
            words(&rsync_argv(&RsyncRequest {
                source_root: Path::new("/ws"),
                target: &target,
                control_path: None,
                mode: RsyncMode::Growing { append },
                timeout_secs: 30,
                excludes: &[],
                protect: &[],
                max_delete: None,
                exclude_from: Some(Path::new("/run/rules")),
                report_transfer_done: false,
                progress: false,
                marker_id: None,
                backup_dir: None,
                checksum: false,
                remote_rsync: None,
                no_delete_missing_args: false,
                deletion_rules: None,
            }))
        };
        let appending = argv(true);
        assert_eq!(
            &appending[..8],
            [
                "rsync",
                "-a",
                "-H",
                "--append-verify",
                "--out-format=wsync-sent-length %l %n",
                "--delete-missing-args",
                "--files-from=-",
                "--from0",
            ]
        );
        assert_eq!(
            appending.iter().filter(|w| *w == "--from0").count(),
            1,
            "--from0 once, before the rules file"
        );
        let by_content = argv(false);
        assert_eq!(by_content[3], "--ignore-times");
        assert!(!by_content.contains(&"--append-verify".to_string()));
        // Lines from rsync 3.5.0: a directory it created, a name with a newline and one with a
        // literal `\#`, stats around them.
        let output = "wsync-sent-length 4096 logs/\nwsync-sent-length 104857600 logs/big.bin\nwsync-sent-length 1 d/a\\#012b\nwsync-sent-length 1 d/c\\#134#012\nNumber of files: 3\nsent 1,234 bytes\n";
        assert_eq!(
            sent_lengths(output),
            [
                (PathBuf::from("logs/big.bin"), 104_857_600),
                (PathBuf::from("d/a\nb"), 1),
                (PathBuf::from("d/c\\#012"), 1),
            ]
        );
    }

    #[test]
    fn only_other_processes_proof_names_are_foreign() {
        let own = format!("{}7", proof_prefix());
        for name in [".wsync-proof-1-2", ".wsync-proof-123456-99"] {
            assert!(is_foreign_proof_name(name.as_bytes()), "{name}");
        }
        for name in [
            own.as_str(),
            ".wsync-proof-notes",
            ".wsync-proof-1-2-notes",
            ".wsync-proof-1-",
            ".wsync-proof--2",
            ".wsync-proof-1",
            "x.wsync-proof-1-2",
        ] {
            assert!(!is_foreign_proof_name(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn full_sync_to_local_path() {
        let target = RemoteTarget::Local {
            path: "/srv/mirror dir".into(),
        };
        let argv = rsync_argv(&RsyncRequest {
            source_root: Path::new("/home/me/ws"),
            target: &target,
            control_path: None,
            mode: RsyncMode::Full,
            timeout_secs: 30,
            excludes: &[],
            protect: &[],
            max_delete: Some(100),
            exclude_from: None,
            report_transfer_done: false,
            progress: false,
            marker_id: None,
            backup_dir: None,
            checksum: false,
            remote_rsync: None,
            no_delete_missing_args: false,
            deletion_rules: None,
        });
        // Only this process's own proof files: `.wsync-proof-<pid>-*`.
        let proof = format!("--include=/.wsync-proof-{}-*", std::process::id());
        assert_eq!(
            words(&argv),
            [
                "rsync",
                "-a",
                "-H",
                "--delete",
                "--max-delete=100",
                "--modify-window=-1",
                "--timeout=30",
                "--stats",
                proof.as_str(),
                "--exclude=/.wsync-cookie-*",
                "--exclude=/.wsync-target",
                "--exclude=/.wsync-trash",
                "--",
                "/home/me/ws/",
                "/srv/mirror dir/"
            ]
        );
    }

    #[test]
    fn a_remote_keeping_deletions_backs_up_into_its_trash() {
        let target = RemoteTarget::Local { path: "/m".into() };
        let request = |mode| RsyncRequest {
            source_root: Path::new("/ws"),
            target: &target,
            control_path: None,
            mode,
            timeout_secs: 30,
            excludes: &[],
            protect: &[],
            max_delete: None,
            exclude_from: None,
            report_transfer_done: false,
            progress: false,
            marker_id: None,
            backup_dir: Some(BackupDir::Path(".wsync-trash/2025-01-31T12-00-00.123Z")),
            checksum: false,
            remote_rsync: None,
            no_delete_missing_args: false,
            deletion_rules: None,
        };
        for mode in [
            RsyncMode::Full,
            RsyncMode::Paths {
                ignore_times: false,
            },
        ] {
            let argv = words(&rsync_argv(&request(mode)));
            let at = argv.iter().position(|w| w == "--backup").unwrap();
            assert_eq!(
                argv[at + 1],
                "--backup-dir=.wsync-trash/2025-01-31T12-00-00.123Z"
            );
            // The trash itself is never sent, deleted or overwritten.
            assert!(argv.contains(&"--exclude=/.wsync-trash".to_owned()));
        }
        let verify = words(&rsync_argv(&request(RsyncMode::Verify)));
        assert!(!verify.iter().any(|w| w.starts_with("--backup")));
    }

    #[test]
    fn trash_runs_go_through_the_marker_guard_and_never_delete_outside_the_trash() {
        let target = RemoteTarget::Ssh {
            user: Some("me".into()),
            host: "box".into(),
            port: None,
            path: "/srv/m".into(),
            identity_file: None,
            ssh_options: vec![],
        };
        let request = |op| TrashRequest {
            target: &target,
            control_path: Some(Path::new("/run/cm")),
            marker_id: Some("00ff"),
            local: Path::new("/ws"),
            op,
            timeout_secs: 15,
            remote_rsync: None,
        };
        let list = words(&trash_argv(&request(TrashOp::List { files: true })));
        assert_eq!(
            &list[..7],
            [
                "rsync",
                "--list-only",
                "-r",
                "--no-human-readable",
                "--include=/.wsync-trash/",
                "--include=/.wsync-trash/***",
                "--exclude=*"
            ]
        );
        assert!(list.iter().any(|w| w.starts_with("--rsync-path=sh -c")));
        assert_eq!(&list[list.len() - 2..], ["--", "me@box:/srv/m/"]);
        let prune = words(&trash_argv(&request(TrashOp::Prune)));
        assert!(prune.contains(&"--delete".to_owned()));
        assert!(prune.iter().any(|w| w.starts_with("--rsync-path=sh -c")));
        assert_eq!(
            &prune[prune.len() - 2..],
            ["/ws/", "me@box:/srv/m/.wsync-trash/"]
        );
        let restore = words(&trash_argv(&request(TrashOp::Restore {
            snapshot: "2025-01-31T12-00-00.123Z",
            paths: true,
            force: false,
            held: None,
        })));
        assert!(!restore.iter().any(|w| w.starts_with("--delete")));
        assert!(restore.contains(&"--ignore-existing".to_owned()));
        assert!(restore.contains(&"--files-from=-".to_owned()));
        assert_eq!(
            &restore[restore.len() - 2..],
            [
                "me@box:/srv/m/.wsync-trash/2025-01-31T12-00-00.123Z/",
                "/ws/"
            ]
        );
        let forced = words(&trash_argv(&request(TrashOp::Restore {
            snapshot: "2025-01-31T12-00-00.123Z",
            paths: false,
            force: true,
            held: None,
        })));
        assert!(!forced.contains(&"--ignore-existing".to_owned()));
        // A local snapshot held by descriptor is read through it, not by name.
        let local = RemoteTarget::Local {
            path: "/srv/m".into(),
        };
        let held = words(&trash_argv(&TrashRequest {
            target: &local,
            control_path: None,
            marker_id: Some("00ff"),
            local: Path::new("/ws"),
            op: TrashOp::Restore {
                snapshot: "2025-01-31T12-00-00.123Z",
                paths: false,
                force: false,
                held: Some("/proc/self/fd/9"),
            },
            timeout_secs: 15,
            remote_rsync: None,
        }));
        assert_eq!(&held[held.len() - 2..], ["/proc/self/fd/9/", "/ws/"]);
        assert_eq!(
            prune_rules(&["2025-01-31T12-00-00.123Z", "*", "../x"]),
            b"+ /2025-01-31T12-00-00.123Z/***\n"
        );
    }

    #[test]
    fn incremental_sync_over_ssh() {
        let target = RemoteTarget::Ssh {
            user: Some("me".into()),
            host: "box".into(),
            port: Some(2222),
            path: "/srv/my mirror".into(),
            identity_file: Some("/k/id".into()),
            ssh_options: vec![SshOption {
                key: "StrictHostKeyChecking".into(),
                value: "no".into(),
            }],
        };
        let argv = words(&rsync_argv(&RsyncRequest {
            source_root: Path::new("/ws/"),
            target: &target,
            control_path: Some(Path::new("/run/wsync/cm-1")),
            mode: RsyncMode::Paths { ignore_times: true },
            timeout_secs: 30,
            excludes: &[],
            protect: &[b"P node_modules/".to_vec()],
            max_delete: Some(5),
            exclude_from: Some(Path::new("/run/x/excludes")),
            report_transfer_done: true,
            progress: true,
            marker_id: Some("00ff"),
            backup_dir: None,
            checksum: false,
            remote_rsync: None,
            no_delete_missing_args: false,
            deletion_rules: None,
        }));
        assert_eq!(
            &argv[..9],
            [
                "rsync",
                "-a",
                "-H",
                "-r",
                "--ignore-times",
                "--delete",
                "--delete-missing-args",
                "--files-from=-",
                "--from0"
            ]
        );
        assert!(argv.contains(&"--debug=EXIT2".to_owned()));
        // Progress is for full syncs only.
        assert!(!argv.iter().any(|w| w.starts_with("--info")));
        assert!(argv.contains(&"--filter=merge /run/x/excludes".to_owned()));
        assert!(argv.contains(&"--filter=P node_modules/".to_owned()));
        // The deletion budget bounds incremental batches too (issue 11).
        assert!(argv.contains(&"--max-delete=5".to_owned()));
        let e = argv.iter().position(|w| w == "-e").unwrap();
        // The remote's own options first: ssh keeps the first value of an option.
        assert!(argv[e + 1]
            .starts_with("ssh -p 2222 -i /k/id -o StrictHostKeyChecking=no -o BatchMode=yes"));
        assert!(argv[e + 1].ends_with("-o ControlPath=/run/wsync/cm-1"));
        assert_eq!(
            &argv[argv.len() - 3..],
            ["--", "/ws/", "me@box:/srv/my mirror/"]
        );
        assert!(argv.contains(&"--protect-args".to_owned()));
        assert!(argv.contains(
            &format!("--rsync-path=sh -c 'd=$1; id=$2; rsync=$3; shift 3; {}m=; ! [ -h \"$d\" ] && [ -f \"$d/.wsync-target\" ] && ! [ -h \"$d/.wsync-target\" ] && IFS= read -r m 2>/dev/null < \"$d/.wsync-target\"; case \"$m\" in *\"$id\"*) ;; *) echo \"wsync: target holds no marker of this workspace\" >&2; exit 97;; esac; exec \"$rsync\" \"$@\"' wsync-guard '/srv/my mirror' 00ff rsync", ssh_target_checks())
        ));
    }

    #[test]
    fn full_sync_with_progress() {
        let target = RemoteTarget::Local { path: "/m".into() };
        let argv = words(&rsync_argv(&RsyncRequest {
            source_root: Path::new("/ws"),
            target: &target,
            control_path: None,
            mode: RsyncMode::Full,
            timeout_secs: 30,
            excludes: &[],
            protect: &[],
            max_delete: None,
            exclude_from: None,
            report_transfer_done: true,
            progress: true,
            marker_id: Some("00ff"),
            backup_dir: None,
            checksum: false,
            remote_rsync: None,
            no_delete_missing_args: false,
            deletion_rules: None,
        }));
        let debug = argv.iter().position(|w| w == "--debug=EXIT2").unwrap();
        assert_eq!(argv[debug + 1], "--info=progress2");
    }

    #[test]
    fn files_from_is_nul_separated_raw_bytes() {
        use std::os::unix::ffi::OsStringExt;
        let odd = PathBuf::from(OsString::from_vec(b"a\nb\xff".to_vec()));
        let list = files_from(&["x y".into(), odd, "-dash".into()]);
        assert_eq!(list, b"./x y\0./a\nb\xff\0./-dash\0");
    }

    #[test]
    fn no_files_from_entry_reads_as_a_comment_or_an_option() {
        let names = [
            "#x", ";x", "-x", "#auto#", "d/#x", "d/;x", "d/-x", "--delete",
        ];
        let paths: Vec<PathBuf> = names.iter().map(PathBuf::from).collect();
        let list = files_from(&paths);
        let entries: Vec<&[u8]> = list.split(|&b| b == 0).filter(|e| !e.is_empty()).collect();
        assert_eq!(entries.len(), names.len());
        for (entry, name) in entries.iter().zip(names) {
            assert!(entry.starts_with(b"./"), "{name}");
            assert!(!matches!(entry[0], b'#' | b';' | b'-'), "{name}");
            assert_eq!(&entry[2..], name.as_bytes());
        }
        // The root itself is never listed (`./` alone would sync the whole root's entry).
        assert_eq!(files_from(&[PathBuf::new()]), b"");
    }

    #[test]
    fn parses_stats_with_thousands_separators() {
        let out = "Number of files: 12,345 (reg: 12,000, dir: 345)\n\
                   Number of regular files transferred: 1,234\n\
                   Number of deleted files: 7 (reg: 7)\n\
                   Total bytes sent: 52,430,001\n\
                   Total bytes received: 35\n";
        assert_eq!(
            parse_stats(out),
            RsyncStats {
                files_transferred: 1234,
                files_deleted: 7,
                bytes_sent: 52_430_001,
                files_total: 12_345,
            }
        );
        assert_eq!(parse_stats("garbage"), RsyncStats::default());
    }

    #[test]
    fn finds_the_max_delete_count() {
        let out = "Deletions stopped due to --max-delete limit (15 skipped)\nNumber of files: 1\n";
        assert_eq!(max_delete_skipped(out), Some(15));
        assert_eq!(max_delete_skipped("Number of files: 1\n"), None);
    }

    #[test]
    fn maps_vanished_files_back_to_relative_paths() {
        let out = "file has vanished: \"/ws/src/d/f 1\"\n\
                   file has vanished: \"/ws/src/ctl\\#001x\"\n\
                   Number of files: 3\n";
        assert_eq!(
            vanished_paths(out, Path::new("/ws/src/")),
            Some(vec![PathBuf::from("d/f 1"), PathBuf::from("ctl\u{1}x")])
        );
        assert_eq!(
            vanished_paths("file has vanished: \"/elsewhere/x\"", Path::new("/ws")),
            None
        );
        assert_eq!(vanished_paths("", Path::new("/ws")), Some(vec![]));
        // rsync 3.5 with `./#v` in --files-from: the name is printed without the `./`.
        let out = "file has vanished: \"/tmp/rt/s/#v\"\n";
        assert_eq!(
            vanished_paths(out, Path::new("/tmp/rt/s/")),
            Some(vec![PathBuf::from("#v")])
        );
    }

    #[test]
    fn classifies_exit_codes() {
        assert_eq!(classify_exit(Some(0)), ExitClass::Success);
        assert_eq!(classify_exit(Some(23)), ExitClass::Partial);
        assert_eq!(classify_exit(Some(24)), ExitClass::Vanished);
        for code in [5, 10, 12, 30, 35, 255] {
            assert_eq!(classify_exit(Some(code)), ExitClass::Connection, "{code}");
        }
        for code in [1, 2, 4] {
            assert_eq!(classify_exit(Some(code)), ExitClass::Fatal, "{code}");
        }
        assert_eq!(classify_exit(Some(25)), ExitClass::MaxDelete);
        assert_eq!(classify_exit(None), ExitClass::Killed);
        assert_eq!(classify_exit(Some(11)), ExitClass::Other);
    }

    /// The SSH guard run for real by `sh` (as the remote's shell would), with the marker
    /// planted as a link to `/dev/zero` or a FIFO by another user: refused, at once. A real
    /// marker lets it exec rsync (here `rsync --version`).
    #[test]
    fn the_ssh_guard_refuses_planted_marker_links_without_hanging() {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        std::fs::create_dir(&dir).unwrap();
        let target = RemoteTarget::Ssh {
            user: None,
            host: "h".into(),
            port: None,
            path: dir.to_str().unwrap().into(),
            identity_file: None,
            ssh_options: vec![],
        };
        let argv = rsync_argv(&RsyncRequest {
            source_root: Path::new("/ws"),
            target: &target,
            control_path: None,
            mode: RsyncMode::Full,
            timeout_secs: 30,
            excludes: &[],
            protect: &[],
            max_delete: None,
            exclude_from: None,
            report_transfer_done: false,
            progress: false,
            marker_id: Some("00ff"),
            backup_dir: None,
            checksum: false,
            remote_rsync: None,
            no_delete_missing_args: false,
            deletion_rules: None,
        });
        let guard = argv
            .iter()
            .find_map(|w| w.as_bytes().strip_prefix(b"--rsync-path="))
            .map(|g| String::from_utf8(g.to_vec()).unwrap())
            .unwrap();
        let run = || {
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{guard} --version"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status.code();
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        let marker = dir.join(crate::target::MARKER_FILE);
        std::fs::write(&marker, "{\"workspace_id\":\"00ff\"}\n").unwrap();
        assert_eq!(run(), Some(0), "our marker: rsync runs");
        std::fs::remove_file(&marker).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &marker).unwrap();
        assert_eq!(run(), Some(97), "a link to /dev/zero");
        std::fs::remove_file(&marker).unwrap();
        nix::unistd::mkfifo(&marker, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(run(), Some(97), "a FIFO");
        // The target itself swapped for a link to a directory holding our marker: not
        // followed (whoever controls the link would choose what rsync empties).
        std::fs::remove_file(&marker).unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(
            elsewhere.join(crate::target::MARKER_FILE),
            "{\"workspace_id\":\"00ff\"}\n",
        )
        .unwrap();
        std::fs::remove_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        assert_eq!(run(), Some(97), "a target that is a link");
    }

    /// The deletion fallback run by a real rsync: exactly the entries go (a directory with
    /// its contents, names with wildcards and backslashes), every other extra on the remote
    /// stays (the filter-list fallback must delete only what it was given).
    #[test]
    fn the_deletion_fallback_deletes_exactly_its_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        for dir in [&src, &dst] {
            std::fs::create_dir_all(dir.join("a/b")).unwrap();
            std::fs::write(dir.join("a/keep"), "k").unwrap();
            std::fs::write(dir.join("a/b/keep2"), "k").unwrap();
        }
        for gone in ["a/gone", "a/w*[x]\\y", "top", "a/b/dir/inner/f"] {
            let path = dst.join(gone);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        // Extras nobody asked to delete: a mirror keeps them until a full sync.
        for extra in ["a/extra", "a/b/extra2", "top-extra", "a/w*x"] {
            std::fs::write(dst.join(extra), "e").unwrap();
        }
        let entries: Vec<PathBuf> = ["a/gone", "a/w*[x]\\y", "top", "a/b/dir"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let (dirs, rules) = deletion_rules(&entries);
        assert_eq!(
            dirs,
            [PathBuf::from("."), PathBuf::from("a"), PathBuf::from("a/b")]
        );
        let rules_file = tmp.path().join("rules");
        std::fs::write(&rules_file, &rules).unwrap();
        let target = RemoteTarget::Local { path: dst.clone() };
        let argv = rsync_argv(&RsyncRequest {
            source_root: &src,
            target: &target,
            control_path: None,
            mode: RsyncMode::Deletions,
            timeout_secs: 30,
            excludes: &[],
            protect: &[],
            max_delete: Some(100),
            exclude_from: None,
            report_transfer_done: false,
            progress: false,
            marker_id: None,
            backup_dir: None,
            checksum: false,
            remote_rsync: None,
            no_delete_missing_args: false,
            deletion_rules: Some(&rules_file),
        });
        assert!(!argv.iter().any(|w| w == "--delete-missing-args"));
        let mut child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&files_from(&dirs))
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            parse_stats(&String::from_utf8_lossy(&out.stdout)).files_deleted,
            6
        );
        for gone in ["a/gone", "a/w*[x]\\y", "top", "a/b/dir"] {
            assert!(!dst.join(gone).exists(), "{gone} deleted");
        }
        for kept in [
            "a/extra",
            "a/b/extra2",
            "top-extra",
            "a/w*x",
            "a/keep",
            "a/b/keep2",
        ] {
            assert!(dst.join(kept).exists(), "{kept} kept");
        }
    }

    /// The `--rsync-path` guard of an SSH request for `path`, as the remote shell gets it.
    fn guard_for(path: &str, backup_dir: Option<BackupDir<'_>>) -> String {
        guard_running(path, backup_dir, None)
    }

    /// [`guard_for`], the guard running `program` instead of rsync.
    fn guard_running(
        path: &str,
        backup_dir: Option<BackupDir<'_>>,
        program: Option<&str>,
    ) -> String {
        let target = RemoteTarget::Ssh {
            user: None,
            host: "h".into(),
            port: None,
            path: path.into(),
            identity_file: None,
            ssh_options: vec![],
        };
        let argv = rsync_argv(&RsyncRequest {
            source_root: Path::new("/ws"),
            target: &target,
            control_path: None,
            mode: RsyncMode::Paths {
                ignore_times: false,
            },
            timeout_secs: 30,
            excludes: &[],
            protect: &[],
            max_delete: None,
            exclude_from: None,
            report_transfer_done: false,
            progress: false,
            marker_id: Some("00ff"),
            backup_dir,
            checksum: false,
            remote_rsync: program,
            no_delete_missing_args: false,
            deletion_rules: None,
        });
        argv.iter()
            .find_map(|w| w.as_bytes().strip_prefix(b"--rsync-path="))
            .map(|g| String::from_utf8(g.to_vec()).unwrap())
            .unwrap()
    }

    /// Runs `guard` (then `rsync --version`) with `sh` in `cwd` with `HOME=home`, as sshd would
    /// start it; its exit code and stderr.
    fn run_guard(guard: &str, cwd: &Path, home: &Path) -> (Option<i32>, String) {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{guard} --version"))
            .current_dir(cwd)
            .env("HOME", home)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn mark(dir: &Path) {
        std::fs::write(
            dir.join(crate::target::MARKER_FILE),
            "{\"workspace_id\":\"00ff\"}\n",
        )
        .unwrap();
    }

    /// A registry edited by hand skips attach's check: the guard itself refuses a target that
    /// resolves to `/`, the home (`$HOME` or the login directory) or a parent of it, even one
    /// holding our marker, however it is spelled; a directory below the home passes.
    #[test]
    fn the_ssh_guard_refuses_root_home_and_its_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let home = base.join("home/u");
        let mirror = home.join("mirror");
        std::fs::create_dir_all(&mirror).unwrap();
        std::os::unix::fs::symlink(&home, base.join("to-home")).unwrap();
        for dir in [&base.join("home"), &home, &mirror] {
            mark(dir);
        }
        let s = |p: &Path| p.to_str().unwrap().to_owned();
        for (path, cwd) in [
            (s(&home), &home),
            (format!("{}/", s(&home)), &home),
            (s(&base.join("home")), &home),
            (s(&base.join("home/u/../u")), &home),
            (".".to_owned(), &home),
            ("..".to_owned(), &home),
            ("/".to_owned(), &home),
            // The login directory counts as a home too, whatever `$HOME` says.
            (s(&home), &base),
        ] {
            let home_env = if cwd == &base { &mirror } else { &home };
            let (code, err) = run_guard(&guard_for(&path, None), cwd, home_env);
            assert_eq!(code, Some(97), "{path} from {}: {err}", cwd.display());
            assert!(err.contains(TARGET_TOO_BROAD), "{path}: {err}");
            assert_eq!(
                guard_refusal(
                    &err,
                    &RemoteTarget::Local {
                        path: path.clone().into()
                    }
                )
                .map(|m| m.contains("attach a directory of its own")),
                Some(true)
            );
        }
        for (path, cwd) in [(s(&mirror), &home), ("mirror".to_owned(), &home)] {
            let (code, err) = run_guard(&guard_for(&path, None), cwd, &home);
            assert_eq!(code, Some(0), "{path}: {err}");
        }
        // A link to the home is refused as too broad (and as a link by the marker check).
        let (code, err) = run_guard(&guard_for(&s(&base.join("to-home")), None), &base, &mirror);
        assert_eq!(code, Some(97), "{err}");
        // A missing target is refused by the marker check, as before.
        let (code, err) = run_guard(&guard_for(&s(&base.join("nope")), None), &home, &home);
        assert_eq!(code, Some(97));
        assert!(err.contains(TARGET_NOT_OURS), "{err}");
    }

    /// A `.wsync-trash` planted as a symlink (or a file) is refused before a run that keeps
    /// deletions or touches the trash: rsync would follow it out of the target. A run without
    /// a trash does not look at it (the entry is excluded from every transfer).
    #[test]
    fn the_ssh_guard_refuses_a_trash_that_is_not_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let t = base.join("t");
        let elsewhere = base.join("elsewhere");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        mark(&t);
        let trash = t.join(crate::trash::TRASH_DIR);
        let path = t.to_str().unwrap();
        let backup = crate::trash::backup_dir("2025-01-31T12-00-00.123Z");
        let with_trash = guard_for(path, Some(BackupDir::Path(&backup)));
        assert_eq!(
            run_guard(&with_trash, &base, &base).0,
            Some(0),
            "no trash yet"
        );
        std::fs::create_dir(&trash).unwrap();
        assert_eq!(
            run_guard(&with_trash, &base, &base).0,
            Some(0),
            "a real trash"
        );
        std::fs::remove_dir(&trash).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &trash).unwrap();
        let (code, err) = run_guard(&with_trash, &base, &base);
        assert_eq!(code, Some(97), "{err}");
        assert!(err.contains(TRASH_NOT_A_DIRECTORY), "{err}");
        // The trash commands check it too.
        let target = RemoteTarget::Ssh {
            user: None,
            host: "h".into(),
            port: None,
            path: path.into(),
            identity_file: None,
            ssh_options: vec![],
        };
        let prune = trash_argv(&TrashRequest {
            target: &target,
            control_path: None,
            marker_id: Some("00ff"),
            local: &base,
            op: TrashOp::Prune,
            timeout_secs: 30,
            remote_rsync: None,
        });
        let prune_guard = prune
            .iter()
            .find_map(|w| w.as_bytes().strip_prefix(b"--rsync-path="))
            .map(|g| String::from_utf8(g.to_vec()).unwrap())
            .unwrap();
        assert_eq!(run_guard(&prune_guard, &base, &base).0, Some(97));
        std::fs::remove_file(&trash).unwrap();
        std::fs::write(&trash, "").unwrap();
        assert_eq!(run_guard(&with_trash, &base, &base).0, Some(97), "a file");
        // Without a trash, the run does not care.
        assert_eq!(run_guard(&guard_for(path, None), &base, &base).0, Some(0));
        assert!(guard_refusal(&err, &target).is_some_and(|m| m.contains(".wsync-trash")));
    }

    /// With `/proc` on the remote, the guard creates the batch's snapshot and holds it on
    /// descriptor 9 for rsync's `--backup-dir=/proc/self/fd/9`, checked through the
    /// descriptor: the trash swapped for a link after the guard's checks (here by the
    /// program the guard runs, standing in for rsync, just before it writes a backup)
    /// redirects nothing. A snapshot already there, or a trash of another user, is refused.
    #[test]
    fn the_ssh_guard_holds_the_snapshot_by_descriptor() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let (t, elsewhere) = (base.join("t"), base.join("elsewhere"));
        std::fs::create_dir_all(&t).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        mark(&t);
        let trash = t.join(crate::trash::TRASH_DIR);
        let snapshot = "2025-01-31T12-00-00.123Z";
        // Stands in for rsync: the swap lands between the guard's checks and the backup.
        let program = base.join("fake-rsync");
        std::fs::write(
            &program,
            format!(
                "#!/bin/sh\nmv {trash} {moved} && ln -s {elsewhere} {trash} && echo kept > {dir}/kept\n",
                trash = trash.display(),
                moved = t.join("moved").display(),
                elsewhere = elsewhere.display(),
                dir = crate::trash::CHILD_BACKUP_DIR,
            ),
        )
        .unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let guard = guard_running(
            t.to_str().unwrap(),
            Some(BackupDir::RemoteFd(snapshot)),
            program.to_str(),
        );
        assert!(
            guard.contains("--backup-dir") || !guard.contains(".wsync-trash/2025"),
            "the snapshot's name is an argument, not shell text"
        );
        let (code, err) = run_guard(&guard, &base, &base);
        assert_eq!(code, Some(0), "{err}");
        let kept = t.join("moved").join(snapshot).join("kept");
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "kept\n");
        assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
        for dir in [t.join("moved"), t.join("moved").join(snapshot)] {
            let meta = std::fs::symlink_metadata(&dir).unwrap();
            assert_eq!(meta.mode() & 0o777, 0o700, "{}", dir.display());
        }
        // The link planted now is refused by name; a real trash holding the snapshot already
        // (the passes of one batch share it) is used.
        let plain = guard_for(t.to_str().unwrap(), Some(BackupDir::RemoteFd(snapshot)));
        let (code, err) = run_guard(&plain, &base, &base);
        assert_eq!(code, Some(97), "{err}");
        assert!(err.contains(TRASH_NOT_A_DIRECTORY), "{err}");
        std::fs::remove_file(&trash).unwrap();
        std::fs::rename(t.join("moved"), &trash).unwrap();
        let (code, err) = run_guard(&plain, &base, &base);
        assert_eq!(code, Some(0), "{err}");
        assert!(trash.join(snapshot).join("kept").exists());
        let next = guard_for(
            t.to_str().unwrap(),
            Some(BackupDir::RemoteFd("2025-01-31T12-00-01.000Z")),
        );
        assert_eq!(run_guard(&next, &base, &base).0, Some(0));
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::lchown(&trash, Some(65534), Some(65534)).unwrap();
            let other = guard_for(
                t.to_str().unwrap(),
                Some(BackupDir::RemoteFd("2025-01-31T12-00-02.000Z")),
            );
            let (code, err) = run_guard(&other, &base, &base);
            assert_eq!(code, Some(97), "{err}");
            assert!(err.contains(TRASH_SNAPSHOT_UNSAFE), "{err}");
            assert!(!trash.join("2025-01-31T12-00-02.000Z").exists());
        }
        // The version check tells whether /proc/<pid>/fd is there.
        let target = RemoteTarget::Ssh {
            user: None,
            host: "h".into(),
            port: None,
            path: t.to_str().unwrap().into(),
            identity_file: None,
            ssh_options: vec![],
        };
        let version = remote_version_command(&target, "00ff", None).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&version)
            .current_dir(&base)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.lines().next(), Some(PROC_FD_PROBE), "{out}");
    }
}
