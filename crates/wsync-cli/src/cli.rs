//! The command line: clap derive definitions with help texts and examples for every command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::exit_codes;

/// Longest accepted --timeout (a week): larger values would overflow deadline arithmetic.
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

const LONG_ABOUT: &str = "\
Mirror local directories (\"workspaces\") to local or SSH remotes in real time, with rsync.

wsync talks to the daemon wsyncd over its command socket (DaemonCommandSocketPath in the config
file: $WSYNC_CONFIG_PATH, else ~/.wsync/wsync.config). The daemon is not started automatically:
run `wsync daemon start` (or use the systemd user service). WORKSPACE arguments are a workspace
name or a path (the workspace's directory or any path inside it).";

const MAIN_EXAMPLES: &str = "\
Examples:
  wsync daemon start
  wsync add ~/src/project --exclude target/
  wsync attach project /srv/mirror/project
  wsync attach project alice@build-box:src/project --identity-file ~/.ssh/id_ed25519
  wsync status
  wsync flush project --timeout 60
  wsync verify project

Environment:
  WSYNC_CONFIG_PATH  config file to use instead of ~/.wsync/wsync.config
  WSYNC_LOG          log filter (e.g. debug, or wsyncd=debug): for wsync's own diagnostics on
                     stderr, and, in wsyncd's environment, for the daemon's and monitors' logs
  NO_COLOR           disables colours (any non-empty value)

Files: the config file (keys in the README and config-examples/wsync.config, including
HookCommand, a program run when a remote enters error or halted), the registry, and the logs
in LogDirectory (`wsync logs`).";

fn main_after_help() -> String {
    format!("{MAIN_EXAMPLES}\n\n{}", exit_codes::help())
}

/// `wsync`: the command line client of wsyncd.
#[derive(Debug, Parser)]
#[command(
    name = "wsync",
    version = wsync_core::VERSION,
    about = "Mirror local directories to local or SSH remotes in real time, with rsync.",
    long_about = LONG_ABOUT,
    after_help = main_after_help(),
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register a directory as a workspace.
    #[command(after_help = "\
The name defaults to the directory's base name. PATH is resolved against the current directory.
A workspace must be an existing directory that neither contains nor sits inside another workspace.

Examples:
  wsync add .
  wsync add ~/src/project --name proj
  wsync add ~/src/site --exclude node_modules/ --exclude '*.log'")]
    Add(AddArgs),

    /// Unregister a workspace and stop mirroring it (nothing is deleted anywhere).
    #[command(after_help = "Examples:\n  wsync remove project\n  wsync remove ~/src/project")]
    Remove(WorkspaceArgs),

    /// Add a remote to a workspace.
    #[command(after_help = "\
REMOTE is an absolute local path (/srv/mirror), [user@]host:path or ssh://[user@]host[:port]/path;
hosts may be aliases from ~/.ssh/config. The remote becomes an exact mirror: files missing from
the workspace are deleted there. The name defaults to the directory name (local) or the host (SSH).
attach waits for the initial sync (with progress on a terminal) unless --no-wait; if that sync
fails, the remote stays attached and is retried, and attach exits non-zero with the error.

Examples:
  wsync attach project /srv/mirror/project
  wsync attach project build-box:src/project
  wsync attach project ssh://alice@10.0.0.5:2222/home/alice/project --name lab
  wsync attach project alice@host:project --identity-file ~/.ssh/id_ed25519 \\
      --ssh-option UserKnownHostsFile=~/.ssh/known_hosts_wsync")]
    Attach(AttachArgs),

    /// Remove a remote from a workspace (the remote's files stay).
    #[command(after_help = "Examples:\n  wsync detach project mirror\n  wsync detach . build-box")]
    Detach(DetachArgs),

    /// List workspaces and their remotes.
    #[command(after_help = "\
--json prints the registry's workspaces as a JSON array:
  [{\"name\": \"project\", \"path\": \"/home/me/src/project\", \"paused\": false,
    \"excludes\": [\"target/\"], \"respect_gitignore\": true,
    \"remotes\": [{\"name\": \"mirror\", \"target\": {\"kind\": \"local\", \"path\": \"/srv/mirror\"}},
                {\"name\": \"box\", \"target\": {\"kind\": \"ssh\", \"user\": \"alice\", \"host\": \"box\",
                 \"port\": 2222, \"path\": \"src/project\", \"identity_file\": \"/home/me/.ssh/id\",
                 \"ssh_options\": [{\"key\": \"UserKnownHostsFile\", \"value\": \"/x\"}]}}]}]
Optional SSH fields are left out when unset; a remote that keeps deleted files (attach
--keep-deleted) has \"keep_deleted_days\": N. New fields may be added; none are removed.

Examples:
  wsync list
  wsync list --json | jq -r '.[].name'")]
    List(ListArgs),

    /// Show the sync state of every workspace and remote (problems first).
    #[command(after_help = "\
Columns: workspace, remote, state, last successful sync, pending changes, monitor restarts,
monitor pid, watch (the workspace's watch mode, and the backend its monitor runs when that
differs: auto→poll is what auto chose for a network or FUSE filesystem), transport (how small changes reach the remote: agent, in-process, or rsync and
why), last error. States: in-sync, syncing, initial-sync, paused, idle (no remotes),
starting, and the problems error, halted, backoff, failed (see `wsync restart`), stopped.

--json prints an array with one object per workspace:
  [{\"workspace\": {...as in `wsync list --json`...},
    \"monitor\": {\"state\": \"running\", \"pid\": 4242, \"restarts\": 0, \"last_exit\": null,
                \"last_log_lines\": [], \"next_restart_unix_ms\": null},
    \"report\": null or {\"workspace\": \"project\", \"watch_backend\": \"inotify\",
                \"watches\": 12, \"overflows\": 0, \"rescans\": 1,
                \"watch_error\": null, \"halted\": null, \"paused\": false,
                \"remotes\": [{\"name\": \"mirror\", \"state\": \"in-sync\",
                              \"last_sync_unix_ms\": 1700000000000, \"files_sent\": 3,
                              \"bytes_sent\": 1024, \"pending\": 0, \"consecutive_failures\": 0,
                              \"last_error\": null, \"next_retry_unix_ms\": null,
                              \"transport\": {\"kind\": \"agent\", \"version\": \"0.1.0\",
                                            \"protocol\": 1}}]},
    \"watch_mode\": \"auto\"}]
watch_mode is the mode the monitor is started with (the workspace's own, else the config's
WatchMode); report.watch_backend is the backend it runs (inotify, notify or poll).
transport.kind is agent, in_process or rsync (with \"why\").
monitor.state is one of idle, paused, running, backing_off, failed, stopped; remote states are
initial-sync, in-sync, syncing, backoff, halted, error, paused. New fields may be added.

--watch follows the daemon's events (as `wsync events` does) and redraws on each change until
Ctrl-C, and every second on a terminal for the relative times; when stdout is not a terminal it
prints one snapshot (a table, or with --json one JSON array per line) each time something
changes.

Examples:
  wsync status
  wsync status project --json | jq '.[0].report.remotes'
  wsync status --watch")]
    Status(StatusArgs),

    /// Print the daemon's events as they happen (syncs, state changes, errors, halts).
    #[command(after_help = "\
One line per event: the time (UTC), the workspace (and remote), what happened. Events are
remote states (in-sync, syncing, error, halted...), pending changes, syncs (files, bytes,
latency), proofs of sync, errors, halts, monitor crashes and registry changes (added, attached,
paused...). --json prints each event as one compact JSON object per line, as the daemon sends
it (the fields are in docs/PROTOCOL.md; new kinds and fields may appear).

The stream ends when the daemon stops (exit 0) or when this command reads too slowly and the
daemon drops it (a `lagged` event, exit 1).

Examples:
  wsync events
  wsync events project --json | jq -c 'select(.kind == \"synced\")'")]
    Events(EventsArgs),

    /// Relay the daemon socket over stdin/stdout (for editors that cannot open a unix socket).
    #[command(after_help = "\
Connects to the socket of the configured daemon (DaemonCommandSocketPath; nothing is started)
and copies NDJSON both ways: each line on stdin goes to the daemon, each line from the daemon
to stdout, byte for byte. The client speaks the protocol itself, starting with hello
(docs/PROTOCOL.md). Exits 0 when the daemon closes the connection, 3 when no daemon runs.

Examples:
  wsync client    (from an editor: see editors/nvim)
  printf '%s\\n' '{\"type\":\"hello\",\"protocol\":2,\"version\":\"me\"}' '{\"type\":\"list\"}' | wsync client")]
    Client,

    /// Stop pushing changes for a workspace (persisted; changes are still collected).
    #[command(after_help = "Examples:\n  wsync pause project")]
    Pause(WorkspaceArgs),

    /// Resume pushing changes; also lifts a safety halt.
    #[command(after_help = "Examples:\n  wsync resume project")]
    Resume(WorkspaceArgs),

    /// Restart a workspace's monitor and clear a `failed` state.
    #[command(after_help = "Examples:\n  wsync restart project")]
    Restart(WorkspaceArgs),

    /// Wait until every remote holds every change made before this command.
    #[command(after_help = "\
Fails with exit code 6 naming the remotes still lagging when the timeout passes.

Examples:
  wsync flush project
  make && wsync flush . --timeout 120 && ssh build-box make -C src/project")]
    Flush(FlushArgs),

    /// Change a workspace's settings (excludes, watch mode, tunables, a remote's transport).
    #[command(after_help = "\
Each KEY=VALUE changes one setting; keys not given stay as they are; KEY= (or KEY=null)
resets it to its default. All are applied or none (the daemon checks them as `wsync add`
and `wsync attach` do), in one registry write; the monitor is restarted only when a setting it
reads at start changed, and only once. Setting a value a workspace already has changes nothing.

Keys:
  excludes=PAT,PAT...      gitignore-style patterns (replaces the list; default none)
  respect_gitignore=BOOL   whether .gitignore files exclude paths too (default true)
  max_delete=N             cap on deletions per full sync (default: the built-in cap)
  checksum_every_secs=N    seconds between checksum passes (default off)
  watch_mode=MODE          auto, inotify, notify or poll (default: the config's WatchMode)
  poll_interval_ms=MS      poll backend interval, 100 to 3600000 (default: the config's)
  settle_ms=MS             quiet time before a batch, 0 to 10000 (default: SettleMs)
  max_latency_ms=MS        longest wait under churn, 1 to 60000 (default: MaxLatencyMs)
  remote.NAME.transport=auto|rsync      how small changes reach remote NAME
  remote.NAME.keep_deleted_days=DAYS    days deleted files stay in its .wsync-trash

Examples:
  wsync set watch_mode=poll poll_interval_ms=500
  wsync set project excludes=target/,*.log
  wsync set ~/src/project remote.box.transport=rsync
  wsync set settle_ms=")]
    Set(SetArgs),

    /// Register the workspace of a `.wsync.toml` and attach its remotes (re-run to apply edits).
    #[command(after_help = "\
DIR is the workspace root holding .wsync.toml; without it, the nearest .wsync.toml in the
current directory or above. The first run registers the directory (as `wsync add`, with the
file's name and excludes); every run then makes the workspace's settings and remotes those of the file:
excludes, respect_gitignore, max_delete, watch_mode, poll_interval_ms, settle_ms,
max_latency_ms and each remote's keep_deleted_days and transport are applied in one `update`
(a key left out of the file goes back to its default; the monitor restarts once, when
something it reads at start changed); remotes no longer in the file (or with another target)
are detached and new ones attached, with the same checks as `wsync attach`. Running it again
without edits changes nothing, and says so. A changed name is reported, not applied (`wsync
down` then `wsync up` re-registers under it). The schema is in the README (\"Project files\").

Examples:
  wsync init && $EDITOR .wsync.toml && wsync up
  wsync up ~/src/project")]
    Up(UpArgs),

    /// Unregister the workspace of a `.wsync.toml` (nothing is deleted anywhere).
    #[command(after_help = "\
DIR as for `wsync up`. The file stays; `wsync up` registers the workspace again.

Examples:
  wsync down
  wsync down ~/src/project")]
    Down(ProjectDirArgs),

    /// Write a commented starter `.wsync.toml` into DIR (default: the current directory).
    #[command(after_help = "\
Refuses to overwrite an existing file. Edit it, then run `wsync up`.

Examples:
  wsync init
  wsync init ~/src/project")]
    Init(ProjectDirArgs),

    /// Print or follow the daemon's log, or a workspace monitor's.
    #[command(after_help = "\
Reads the newest daily log file in LogDirectory: wsyncd.log.<date> for the daemon,
monitor-<workspace>.log.<date> for a workspace's monitor. Works while the daemon is down.

Examples:
  wsync logs
  wsync logs project -f
  wsync logs project --lines 200")]
    Logs(LogsArgs),

    /// Compare a workspace with its remotes by content and list any drift (changes nothing).
    #[command(after_help = "\
Runs `rsync --checksum --dry-run --itemize-changes --delete` from the workspace to each remote
(or only REMOTE-NAME), with the workspace's excludes, and lists what differs:
  missing  in the workspace, not on the remote
  differs  on both, with different content (or symlink target)
  extra    on the remote only (rsync would delete it)
Files with the same content but other times or permissions are counted separately and listed
with --attributes; they are not drift. Nothing is changed anywhere, so changes still in flight
show up too: run `wsync flush` first for a settled answer.

--repair fixes what it finds, including drift that size and mtime cannot see (a same-size
rewrite that kept its mtime, a write through a shared mmap, which raises no inotify event):
the monitor runs a full sync with rsync --checksum, through the same protect rules, target
marker and deletion budget as every sync (past the budget the workspace halts, as always),
then verify compares again and reports what was fixed and what is left.

Exit code 0 when every remote matches (after --repair: matches now), 8 when any differs, 1
when a comparison failed (e.g. an unreachable SSH remote).

--json prints an array with one object per remote:
  [{\"remote\": \"mirror\", \"target\": \"/srv/mirror\", \"in_sync\": false,
    \"missing\": [\"new.txt\"], \"differs\": [], \"extra\": [\"old/\"], \"attributes\": [],
    \"error\": null}]

Examples:
  wsync verify project
  wsync flush project && wsync verify project mirror
  wsync verify project --repair
  wsync verify . --json | jq -r '.[] | select(.in_sync | not) | .remote'")]
    Verify(VerifyArgs),

    /// List or restore what remotes kept of deleted and overwritten files (`--keep-deleted`).
    #[command(subcommand)]
    Trash(TrashCommand),

    /// Say whether paths are excluded from syncing, and by which rule.
    #[command(after_help = "\
Uses the same rules the monitor uses: the workspace's .wsyncignore, its registry excludes
(`wsync add --exclude`) and, unless switched off, its .gitignore files. A path inside an
excluded directory is excluded through that directory.

Exit code 0 when at least one PATH is excluded, 9 when none is (like `git check-ignore`).

Examples:
  wsync check-ignore node_modules/left-pad/index.js
  wsync check-ignore --json target build/out.o src/main.rs")]
    CheckIgnore(CheckIgnoreArgs),

    /// Show the paths the config in effect resolves: config file, registry, socket, logs, ...
    #[command(after_help = "\
The config file is $WSYNC_CONFIG_PATH, else ~/.wsync/wsync.config (when that is missing, every
default applies). From it: the registry, the daemon's socket and pid file, the runtime directory
holding them, the log directory, and the monitor executable and hook command when they are set.

--json prints one object (unset paths are null):
  {\"config_file\": \"/home/me/.wsync/wsync.config\",
   \"registry\": \"/home/me/.wsync/wsync-ws-config.json\",
   \"socket\": \"/run/user/1000/wsync/wsyncd.sock\",
   \"pid_file\": \"/run/user/1000/wsync/wsyncd.sock.pid\",
   \"runtime_directory\": \"/run/user/1000/wsync\", \"log_directory\": \"/home/me/.wsync/log\",
   \"monitor_executable\": null, \"hook_command\": null}
New fields may be added. --path NAME prints one of them alone on a line (nothing when unset),
for scripts such as scripts/setup.sh.

Examples:
  wsync config --paths
  wsync config --paths --json | jq -r .registry
  wsync config --path log_directory")]
    Config(ConfigArgs),

    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  wsync completions bash > ~/.local/share/bash-completion/completions/wsync
  wsync completions zsh > ~/.zfunc/_wsync
  wsync completions fish > ~/.config/fish/completions/wsync.fish")]
    Completions(CompletionsArgs),

    /// Start, stop or inspect the daemon wsyncd.
    #[command(subcommand)]
    Daemon(DaemonCommand),

    /// Write the completion scripts and man pages into DIR/completions and DIR/man.
    #[command(
        hide = true,
        after_help = "\
Used by scripts/gen-docs.sh to refresh the committed files; a test fails when they are stale.

Examples:
  wsync generate-docs ."
    )]
    GenerateDocs(GenerateDocsArgs),
}

#[derive(Debug, Subcommand)]
pub enum TrashCommand {
    /// List the snapshots in each remote's .wsync-trash: name (UTC start time), files, bytes.
    #[command(after_help = "\
A remote attached with --keep-deleted DAYS keeps what a sync deletes or overwrites there in
.wsync-trash/<snapshot>/ at the top of its target, one snapshot per sync that deleted or
overwrote something, named by the sync's start time in UTC (2025-01-31T12-00-00.123Z).
Snapshots older than DAYS days are removed by the monitor (at start and hourly).

--json prints an array with one object per remote:
  [{\"remote\": \"mirror\", \"target\": \"/srv/mirror\", \"keep_deleted_days\": 7,
    \"snapshots\": [{\"name\": \"2025-01-31T12-00-00.123Z\", \"files\": 3, \"bytes\": 1024}],
    \"error\": null}]

Examples:
  wsync trash list project
  wsync trash list project --remote mirror --json | jq -r '.[0].snapshots[].name'")]
    List(TrashListArgs),
    /// Copy a snapshot, or some paths of it, back into the workspace (the remote gets them by sync).
    #[command(after_help = "\
PATHs are relative to the workspace root, as they are inside the snapshot; without PATH the
whole snapshot is restored. Nothing is deleted, and a path that exists in the workspace is left
as it is unless --force (then the snapshot's copy replaces it). The workspace's monitor then
syncs the restored files to every remote like any other change. A workspace with several
remotes needs --remote.

Examples:
  wsync trash restore project 2025-01-31T12-00-00.123Z src/main.rs
  wsync trash restore project 2025-01-31T12-00-00.123Z --remote mirror --force")]
    Restore(TrashRestoreArgs),
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start wsyncd in the background; returns once it answers on its socket.
    #[command(after_help = "\
wsyncd is looked up next to the wsync executable, then on PATH. Its stderr is appended to
wsyncd.stderr.log in LogDirectory. Starting a running daemon is not an error.

Examples:
  wsync daemon start")]
    Start(DaemonStartArgs),
    /// Stop wsyncd gracefully and wait until it is gone.
    #[command(
        after_help = "Stopping a daemon that is not running is not an error.\n\nExamples:\n  wsync daemon stop"
    )]
    Stop(DaemonStopArgs),
    /// Show whether wsyncd runs: pid, version, uptime, socket, registry (exit 3 if not).
    #[command(after_help = "Examples:\n  wsync daemon status")]
    Status,
}

/// The arguments of `wsync add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The directory to mirror.
    pub path: PathBuf,
    /// The workspace's name (letters, digits and . _ - + @).
    #[arg(long)]
    pub name: Option<String>,
    /// A gitignore-style pattern to leave out (repeatable).
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// How the monitor learns of changes: auto (inotify; poll on network and FUSE
    /// filesystems), inotify, notify or poll (default: the config's WatchMode).
    #[arg(long, value_name = "MODE", value_parser = watch_mode_parser())]
    pub watch_mode: Option<wsync_core::monitor_proto::WatchMode>,
    /// How often the poll backend walks the tree, in milliseconds (default: the config's).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(*wsync_core::registry::tuning::POLL_INTERVAL_MS_RANGE.start()..=*wsync_core::registry::tuning::POLL_INTERVAL_MS_RANGE.end()))]
    pub poll_interval_ms: Option<u64>,
}

/// `--watch-mode`: the config file's spellings, completed by the shell.
fn watch_mode_parser(
) -> impl clap::builder::TypedValueParser<Value = wsync_core::monitor_proto::WatchMode> {
    use clap::builder::TypedValueParser;
    use wsync_core::monitor_proto::WatchMode;
    clap::builder::PossibleValuesParser::new(WatchMode::NAMES)
        .map(|s| WatchMode::parse(&s).unwrap_or_default())
}

/// The arguments of `wsync set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// [WORKSPACE] then one or more KEY=VALUE. WORKSPACE (a name or path) is the workspace
    /// holding the current directory when left out; the first argument is a setting when it
    /// holds '=' (and no '/' before it).
    #[arg(required = true, value_name = "[WORKSPACE] KEY=VALUE")]
    pub args: Vec<String>,
}

/// The arguments of `wsync remove`, `pause`, `resume` and `restart` (a workspace and nothing else).
#[derive(Debug, Args)]
pub struct WorkspaceArgs {
    /// Workspace name or path (default: the workspace holding the current directory).
    pub workspace: Option<String>,
}

/// The arguments of `wsync up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The workspace root holding .wsync.toml (default: the nearest one at or above the
    /// current directory).
    pub dir: Option<PathBuf>,
    /// Attach non-empty targets holding no `.wsync-target` marker anyway (as `attach --overwrite`).
    #[arg(long)]
    pub overwrite: bool,
}

/// The arguments of `wsync down` and `wsync init`.
#[derive(Debug, Args)]
pub struct ProjectDirArgs {
    /// The workspace root (default: for down, the nearest .wsync.toml at or above the current
    /// directory; for init, the current directory).
    pub dir: Option<PathBuf>,
}

/// The arguments of `wsync attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Workspace name or path.
    pub workspace: String,
    /// Where to mirror to.
    pub remote: String,
    /// The remote's name within the workspace.
    #[arg(long)]
    pub name: Option<String>,
    /// SSH port.
    #[arg(long)]
    pub port: Option<u16>,
    /// SSH private key to use.
    #[arg(long, value_name = "FILE")]
    pub identity_file: Option<PathBuf>,
    /// An ssh `-o KEY=VALUE` option (repeatable).
    #[arg(long = "ssh-option", value_name = "KEY=VALUE")]
    pub ssh_options: Vec<String>,
    /// Return once the daemon accepted the remote, without waiting for the initial sync.
    #[arg(long)]
    pub no_wait: bool,
    /// Make a non-empty target that holds no `.wsync-target` marker the mirror anyway: what the
    /// workspace lacks is deleted there, what differs is overwritten (attach without it prints
    /// a preview first).
    #[arg(long)]
    pub overwrite: bool,
    /// Keep what syncs delete or overwrite on the remote for DAYS days, in `.wsync-trash` there
    /// (`wsync trash`); 0 keeps nothing (the default). On a target already attached, changes
    /// that remote's setting.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(0..=i64::from(wsync_core::trash::MAX_KEEP_DELETED_DAYS)))]
    pub keep_deleted: Option<u32>,
    /// How small changes reach the remote: `auto` (wsync's executor — in process for a local
    /// target, its agent over SSH, installed on first use — with rsync for the rest) or
    /// `rsync` (rsync for everything, the old path).
    #[arg(long, value_name = "auto|rsync", default_value = "auto")]
    pub transport: wsync_core::registry::Transport,
    /// For an SSH remote: the rsync it runs (an absolute path, e.g. /opt/homebrew/bin/rsync),
    /// instead of `rsync` on its PATH. wsync needs rsync 3.1.3 or later on both ends.
    #[arg(long, value_name = "PATH")]
    pub rsync_path: Option<String>,
    /// Seconds to wait for the initial sync.
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub timeout: u64,
}

/// The arguments of `wsync detach`.
#[derive(Debug, Args)]
pub struct DetachArgs {
    /// Workspace name or path.
    pub workspace: String,
    /// The remote's name (see `wsync list`).
    #[arg(value_name = "REMOTE-NAME")]
    pub remote: String,
}

/// The arguments of `wsync list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `wsync status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this workspace (name or path; default: the workspace holding the current
    /// directory, else every workspace).
    #[arg(conflicts_with = "all")]
    pub workspace: Option<String>,
    /// Every workspace, even inside one.
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Keep refreshing until interrupted.
    #[arg(long)]
    pub watch: bool,
}

/// The arguments of `wsync events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this workspace (name or path; default: the workspace holding the current
    /// directory, else every workspace).
    #[arg(conflicts_with = "all")]
    pub workspace: Option<String>,
    /// Every workspace, even inside one.
    #[arg(long)]
    pub all: bool,
    /// One JSON object per event and line.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `wsync flush`.
#[derive(Debug, Args)]
pub struct FlushArgs {
    /// Workspace name or path (default: the workspace holding the current directory).
    pub workspace: Option<String>,
    /// Seconds to wait.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub timeout: u64,
}

/// The arguments of `wsync logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Show this workspace's monitor log instead of the daemon's.
    pub workspace: Option<String>,
    /// Keep printing new lines (follows daily rotation) until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// How many of the last lines to print first.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 50)]
    pub lines: usize,
}

/// The arguments of `wsync verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Workspace name or path.
    pub workspace: String,
    /// Only this remote (see `wsync list`).
    #[arg(value_name = "REMOTE-NAME")]
    pub remote: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also list entries whose content matches but whose times or permissions differ.
    #[arg(long)]
    pub attributes: bool,
    /// Fix the drift found: the monitor runs a full sync comparing every file by checksum
    /// (through the same protect rules, target marker and deletion budget as every sync),
    /// then the comparison runs again and reports what was fixed.
    #[arg(long)]
    pub repair: bool,
    /// With --repair: seconds to wait for the checksum resync.
    #[arg(long, value_name = "SECS", default_value_t = 600, requires = "repair", value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub timeout: u64,
}

/// The arguments of `wsync trash list`.
#[derive(Debug, Args)]
pub struct TrashListArgs {
    /// Workspace name or path.
    pub workspace: String,
    /// Only this remote (see `wsync list`).
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `wsync trash restore`.
#[derive(Debug, Args)]
pub struct TrashRestoreArgs {
    /// Workspace name or path.
    pub workspace: String,
    /// The snapshot (see `wsync trash list`).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Paths to restore, relative to the workspace root (default: everything in the snapshot).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The remote whose trash to restore from (needed when the workspace has several).
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// Overwrite paths that exist in the workspace.
    #[arg(long)]
    pub force: bool,
}

/// The arguments of `wsync check-ignore`.
#[derive(Debug, Args)]
pub struct CheckIgnoreArgs {
    /// Paths inside a workspace (they need not exist).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `wsync config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// List every resolved path.
    #[arg(long, required_unless_present = "path")]
    pub paths: bool,
    /// Print only this path (nothing when it is unset).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["paths", "json"])]
    pub path: Option<PathName>,
    /// Print JSON instead of text (with --paths).
    #[arg(long, requires = "paths")]
    pub json: bool,
}

/// A path `wsync config` reports; its name is also its key in `--paths --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum PathName {
    /// The config file in use.
    ConfigFile,
    /// WorkspaceConfigFilePath: the registry of workspaces.
    Registry,
    /// DaemonCommandSocketPath: the daemon's command socket.
    Socket,
    /// The daemon's pid file (the socket path with .pid appended).
    PidFile,
    /// The directory holding the socket and pid file.
    RuntimeDirectory,
    /// LogDirectory: the daemon's and monitors' logs.
    LogDirectory,
    /// MonitorExecutablePath, when set.
    MonitorExecutable,
    /// HookCommand, when set.
    HookCommand,
}

impl PathName {
    /// The name on the command line and the key in JSON (`log_directory`).
    pub fn key(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}

/// The arguments of `wsync completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

/// The arguments of `wsync generate-docs`.
#[derive(Debug, Args)]
pub struct GenerateDocsArgs {
    /// The directory to write into (usually the repository root).
    pub dir: PathBuf,
}

/// The arguments of `wsync daemon start`.
#[derive(Debug, Args)]
pub struct DaemonStartArgs {
    /// Seconds to wait for the daemon to answer.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub timeout: u64,
}

/// The arguments of `wsync daemon stop`.
#[derive(Debug, Args)]
pub struct DaemonStopArgs {
    /// Seconds to wait for the daemon to exit.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub timeout: u64,
}

#[cfg(test)]
mod tests;
