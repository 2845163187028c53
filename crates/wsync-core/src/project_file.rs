//! `.wsync.toml`, the project file at a workspace's root: its schema, its parsing (unknown keys
//! are errors naming file:line), finding it by walking up from a directory, the starter text
//! `wsync init` writes, and the comparison of a file with the registry's entry. The registry
//! stays the daemon's source of truth: the CLI's `wsync up` applies a file through the daemon's
//! ordinary requests.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::monitor_proto::WatchMode;
use crate::registry::update::{RemoteChanges, WorkspaceChanges};
use crate::registry::{Remote, Transport, Workspace, WorkspaceTuning};

/// The project file's name at a workspace root.
pub const FILE_NAME: &str = ".wsync.toml";

/// A parsed `.wsync.toml`. Every key is optional; an absent one leaves the default (the
/// directory's base name, no remotes, no excludes, `.gitignore` respected, the built-in
/// deletion cap).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectFile {
    /// The workspace's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The remotes, one `[[remote]]` table each.
    #[serde(default, rename = "remote")]
    pub remotes: Vec<ProjectRemote>,
    /// gitignore-style patterns to leave out (`wsync add --exclude`).
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Whether `.gitignore` files exclude paths too.
    #[serde(default)]
    pub respect_gitignore: Option<bool>,
    /// Cap on deletions per full sync.
    #[serde(default)]
    pub max_delete: Option<u64>,
    /// The watch backend (`auto`, `inotify`, `notify`, `poll`; default: the config's
    /// `WatchMode`).
    #[serde(default)]
    pub watch_mode: Option<WatchMode>,
    /// The poll backend's interval in milliseconds (default: the config's).
    #[serde(default)]
    pub poll_interval_ms: Option<u64>,
    /// Quiet time before a batch is synced, milliseconds (default: the config's `SettleMs`).
    #[serde(default)]
    pub settle_ms: Option<u64>,
    /// Longest a change waits under continuous churn, milliseconds (default: `MaxLatencyMs`).
    #[serde(default)]
    pub max_latency_ms: Option<u64>,
}

/// One `[[remote]]` of a project file: what `wsync attach` takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectRemote {
    /// An absolute local path, `[user@]host:path` or `ssh://[user@]host[:port]/path`.
    pub spec: String,
    /// The remote's name (default: the directory name, or the host).
    #[serde(default)]
    pub name: Option<String>,
    /// SSH port.
    #[serde(default)]
    pub port: Option<u16>,
    /// SSH private key (`~/` is the home directory).
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// ssh `-o KEY=VALUE` options.
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// Days to keep deleted and overwritten files in the remote's `.wsync-trash` (0: none).
    #[serde(default)]
    pub keep_deleted_days: u32,
    /// How small changes reach the remote: `auto` (the default) or `rsync`.
    #[serde(default)]
    pub transport: Transport,
}

/// Why a project file could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ProjectFileError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `line` is 1-based; 0 when toml gave no position.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl ProjectFile {
    /// Parses `text`, the contents of `path` (named in errors, with the line of the problem).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ProjectFileError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map_or(0, |span| line_of(text, span.start.min(text.len())));
            ProjectFileError::Parse {
                path: path.to_owned(),
                line,
                // toml's message is one line (without the snippet `Display` adds).
                message: e.message().trim_end().to_owned(),
            }
        })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ProjectFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProjectFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Where the project file's settings disagree with the registry's entry `ws`, one short
    /// phrase each ("remote box not attached"); empty when they agree. `file_remotes` are the
    /// file's remotes as the registry would hold them (see [`Registry::check_new_remote`]),
    /// in file order; a remote that could not be resolved is `None` and reported as such.
    ///
    /// [`Registry::check_new_remote`]: crate::registry::Registry::check_new_remote
    pub fn differences(&self, ws: &Workspace, file_remotes: &[Option<Remote>]) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(name) = &self.name {
            if *name != ws.name {
                out.push(format!(
                    "name is {name:?} in the file, {:?} registered",
                    ws.name
                ));
            }
        }
        if self.excludes != ws.excludes {
            out.push("excludes differ".to_owned());
        }
        if self.respect_gitignore.unwrap_or(true) != ws.respect_gitignore {
            out.push("respect_gitignore differs".to_owned());
        }
        if self.max_delete != ws.max_delete {
            out.push("max_delete differs".to_owned());
        }
        let t = self.tuning();
        let tuned = [
            ("watch_mode", t.watch_mode != ws.tuning.watch_mode),
            (
                "poll_interval_ms",
                t.poll_interval_ms != ws.tuning.poll_interval_ms,
            ),
            ("settle_ms", t.settle_ms != ws.tuning.settle_ms),
            (
                "max_latency_ms",
                t.max_latency_ms != ws.tuning.max_latency_ms,
            ),
        ];
        for (key, differs) in tuned {
            if differs {
                out.push(format!("{key} differs"));
            }
        }
        let plan = RemotePlan::new(&ws.remotes, file_remotes);
        for (spec, wanted) in self.remotes.iter().zip(file_remotes) {
            if wanted.is_none() {
                out.push(format!("remote {:?} is not valid", spec.spec));
            }
        }
        for r in &plan.detach {
            out.push(format!("remote {} is not in the file", r.name));
        }
        for r in &plan.attach {
            out.push(format!("remote {} not attached", r.name));
        }
        for r in &plan.update {
            let Some(now) = ws.remotes.iter().find(|x| x.name == r.name) else {
                continue;
            };
            if now.keep_deleted_days != r.keep_deleted_days {
                out.push(format!("remote {} keep_deleted_days differs", r.name));
            }
            if now.transport != r.transport {
                out.push(format!("remote {} transport differs", r.name));
            }
        }
        out
    }

    /// The file's monitor tunables as the registry holds them.
    pub fn tuning(&self) -> WorkspaceTuning {
        WorkspaceTuning {
            watch_mode: self.watch_mode,
            poll_interval_ms: self.poll_interval_ms,
            settle_ms: self.settle_ms,
            max_latency_ms: self.max_latency_ms,
        }
    }

    /// The `update` that makes a registered workspace's settings the file's: every setting
    /// the file has a key for, a key left out meaning its default (`null`), and for each
    /// remote of `plan.update` its trash days and transport. The daemon changes only what
    /// differs, so applying it twice changes nothing the second time.
    pub fn changes(&self, plan: &RemotePlan) -> WorkspaceChanges {
        WorkspaceChanges {
            excludes: Some(Some(self.excludes.clone())),
            respect_gitignore: Some(self.respect_gitignore),
            max_delete: Some(self.max_delete),
            checksum_every_secs: None,
            watch_mode: Some(self.watch_mode),
            poll_interval_ms: Some(self.poll_interval_ms),
            settle_ms: Some(self.settle_ms),
            max_latency_ms: Some(self.max_latency_ms),
            remotes: plan
                .update
                .iter()
                .map(|r| {
                    let change = RemoteChanges {
                        keep_deleted_days: Some(Some(r.keep_deleted_days)),
                        transport: Some(Some(r.transport)),
                    };
                    (r.name.clone(), change)
                })
                .collect(),
        }
    }
}

/// What turns a workspace's registered remotes into the file's: detach first (removed, or
/// changed in anything but `keep_deleted_days` and `transport`), then attach, then update those
/// two settings.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RemotePlan {
    /// Registered remotes the file does not hold as they are.
    pub detach: Vec<Remote>,
    /// The file's remotes not registered as they are.
    pub attach: Vec<Remote>,
    /// Registered remotes that differ only in `keep_deleted_days` or `transport` (with the
    /// file's values).
    pub update: Vec<Remote>,
}

impl RemotePlan {
    /// Compares `registered` with `wanted` (the file's remotes as the registry would hold
    /// them; `None` entries, which could not be resolved, are left out).
    pub fn new(registered: &[Remote], wanted: &[Option<Remote>]) -> Self {
        let wanted: Vec<&Remote> = wanted.iter().flatten().collect();
        let same = |a: &Remote, b: &Remote| a.name == b.name && a.target == b.target;
        let mut plan = Self::default();
        for r in registered {
            if !wanted.iter().any(|w| same(w, r)) {
                plan.detach.push(r.clone());
            }
        }
        for w in wanted {
            match registered.iter().find(|r| same(w, r)) {
                None => plan.attach.push(w.clone()),
                Some(r)
                    if r.keep_deleted_days != w.keep_deleted_days || r.transport != w.transport =>
                {
                    plan.update.push(w.clone());
                }
                Some(_) => {}
            }
        }
        plan
    }

    /// Whether the registry already matches.
    pub fn is_empty(&self) -> bool {
        self.detach.is_empty() && self.attach.is_empty() && self.update.is_empty()
    }
}

/// The nearest `.wsync.toml` in `start` or a directory above it.
pub fn find_upwards(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|file| file.is_file())
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The commented file `wsync init` writes for a workspace named `name`.
pub fn starter(name: &str) -> String {
    // A name that is not a bare TOML string would break the file: quote it as TOML does.
    let quoted = toml::Value::String(name.to_owned()).to_string();
    format!(
        r#"# wsync project file: `wsync up` registers this directory as a workspace and attaches the
# remotes below (re-run it after editing: remotes are added, removed and changed to match);
# `wsync down` unregisters it. Unknown keys are errors. Schema: README.md, "Project files".

# The workspace's name (default: the directory's name).
name = {quoted}

# gitignore-style patterns to leave out, in addition to .wsyncignore.
# excludes = ["target/", "*.log"]

# Whether .gitignore files exclude paths too (default: true).
# respect_gitignore = true

# Cap on deletions per full sync (default: the built-in cap).
# max_delete = 1000

# How the monitor learns of changes: "auto" (inotify; poll on network and FUSE filesystems),
# "inotify", "notify" or "poll" (default: the config's WatchMode).
# watch_mode = "auto"

# How often the poll backend walks the tree, in milliseconds (default: the config's).
# poll_interval_ms = 2000

# Quiet time after the last change before it is synced, and the longest a change waits under
# continuous churn, in milliseconds (default: the config's SettleMs and MaxLatencyMs).
# settle_ms = 5
# max_latency_ms = 100

# One [[remote]] per place to mirror to; the same fields as `wsync attach`.
# [[remote]]
# spec = "/srv/mirror/project"          # or "user@host:path", "ssh://user@host:2222/path"
# name = "mirror"                       # default: the directory name, or the host
# port = 2222                           # SSH only
# identity_file = "~/.ssh/id_ed25519"   # SSH only
# ssh_options = ["UserKnownHostsFile=~/.ssh/known_hosts_wsync"]   # SSH only
# keep_deleted_days = 7                 # keep deleted files in .wsync-trash (default 0)
# transport = "auto"                    # "auto" (wsync's executor or agent) or "rsync"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::RemoteTarget;

    fn parse(text: &str) -> Result<ProjectFile, ProjectFileError> {
        ProjectFile::parse(Path::new("/p/.wsync.toml"), text)
    }

    fn remote(name: &str, path: &str, days: u32) -> Remote {
        Remote {
            name: name.into(),
            target: RemoteTarget::Local { path: path.into() },
            keep_deleted_days: days,
            transport: Default::default(),
            rsync_path: None,
        }
    }

    #[test]
    fn a_full_file_parses() {
        let file = parse(
            r#"
name = "proj"
excludes = ["target/"]
respect_gitignore = false
max_delete = 50
watch_mode = "poll"
poll_interval_ms = 500
[[remote]]
spec = "/srv/m"
keep_deleted_days = 3
[[remote]]
spec = "alice@box:src"
name = "box"
port = 2222
identity_file = "~/.ssh/id"
ssh_options = ["BatchMode=yes"]
transport = "rsync"
"#,
        )
        .unwrap();
        assert_eq!(file.name.as_deref(), Some("proj"));
        assert_eq!(file.excludes, ["target/"]);
        assert_eq!(file.respect_gitignore, Some(false));
        assert_eq!(file.max_delete, Some(50));
        assert_eq!(file.remotes.len(), 2);
        assert_eq!(file.remotes[0].keep_deleted_days, 3);
        assert_eq!(file.remotes[1].port, Some(2222));
        assert_eq!(file.remotes[1].ssh_options, ["BatchMode=yes"]);
        assert_eq!(file.remotes[1].transport, Transport::Rsync);
        assert_eq!(file.remotes[0].transport, Transport::Auto);
        assert_eq!(file.watch_mode, Some(WatchMode::Poll));
        assert_eq!(file.poll_interval_ms, Some(500));
        let err = parse("watch_mode = \"fast\"\n").unwrap_err().to_string();
        assert!(
            err.starts_with("/p/.wsync.toml:1: ") && err.contains("fast"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_names_file_and_line() {
        let err = parse("name = \"p\"\n\n[[remote]]\nspec = \"/m\"\nprot = 22\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/p/.wsync.toml:5: "), "{text}");
        assert!(text.contains("prot"), "{text}");
        let err = parse("name = \"p\"\nexclude = []\n").unwrap_err();
        assert!(err.to_string().starts_with("/p/.wsync.toml:2: "), "{err}");
    }

    #[test]
    fn a_syntax_error_and_a_wrong_type_name_their_line() {
        let err = parse("name = \"p\"\nmax_delete = \"many\"\n").unwrap_err();
        assert!(err.to_string().starts_with("/p/.wsync.toml:2: "), "{err}");
        let err = parse("\n\nname = \n").unwrap_err();
        assert!(err.to_string().starts_with("/p/.wsync.toml:3: "), "{err}");
    }

    #[test]
    fn the_starter_parses_and_names_the_workspace() {
        let file = parse(&starter("my \"proj\"")).unwrap();
        assert_eq!(file.name.as_deref(), Some("my \"proj\""));
        assert!(file.remotes.is_empty());
    }

    #[test]
    fn the_plan_detaches_attaches_and_updates() {
        let registered = [
            remote("a", "/a", 0),
            remote("b", "/b", 0),
            remote("c", "/c", 1),
        ];
        // a stays, b moved to /b2 (detach + attach), c changed its trash days, d is new.
        let wanted = [
            Some(remote("a", "/a", 0)),
            Some(remote("b", "/b2", 0)),
            Some(remote("c", "/c", 7)),
            Some(remote("d", "/d", 0)),
            None,
        ];
        let plan = RemotePlan::new(&registered, &wanted);
        assert_eq!(plan.detach, [remote("b", "/b", 0)]);
        assert_eq!(plan.attach, [remote("b", "/b2", 0), remote("d", "/d", 0)]);
        assert_eq!(plan.update, [remote("c", "/c", 7)]);
        let same = RemotePlan::new(&registered, &registered.clone().map(Some));
        assert!(same.is_empty());
    }

    #[test]
    fn differences_name_what_disagrees() {
        let ws = Workspace {
            name: "p".into(),
            id: String::new(),
            path: "/p".into(),
            remotes: vec![remote("a", "/a", 0)],
            paused: false,
            excludes: vec![],
            respect_gitignore: true,
            max_delete: None,
            checksum_every_secs: None,
            tuning: Default::default(),
            root_id: None,
        };
        let file = parse("name = \"p\"\n[[remote]]\nspec = \"/a\"\n").unwrap();
        assert!(file
            .differences(&ws, &[Some(remote("a", "/a", 0))])
            .is_empty());
        let file = parse("watch_mode = \"poll\"\nsettle_ms = 9\n[[remote]]\nspec = \"/a\"\ntransport = \"rsync\"\n").unwrap();
        let mut wanted = remote("a", "/a", 0);
        wanted.transport = Transport::Rsync;
        assert_eq!(
            file.differences(&ws, &[Some(wanted.clone())]),
            [
                "watch_mode differs",
                "settle_ms differs",
                "remote a transport differs"
            ]
        );
        // The update that applies it: every key of the file, absent ones reset, the remote's
        // new transport.
        let plan = RemotePlan::new(&ws.remotes, &[Some(wanted)]);
        let changes = file.changes(&plan);
        assert_eq!(changes.watch_mode, Some(Some(WatchMode::Poll)));
        assert_eq!(changes.max_latency_ms, Some(None));
        assert_eq!(changes.excludes, Some(Some(vec![])));
        assert_eq!(changes.checksum_every_secs, None, "not a key of the file");
        assert_eq!(changes.remotes["a"].transport, Some(Some(Transport::Rsync)));
        let file = parse("excludes = [\"x\"]\n[[remote]]\nspec = \"/b\"\n").unwrap();
        assert_eq!(
            file.differences(&ws, &[Some(remote("b", "/b", 0))]),
            [
                "excludes differ",
                "remote a is not in the file",
                "remote b not attached"
            ]
        );
    }

    #[test]
    fn the_file_is_found_in_a_parent() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(find_upwards(&deep), None);
        std::fs::write(dir.path().join(FILE_NAME), "").unwrap();
        assert_eq!(find_upwards(&deep), Some(dir.path().join(FILE_NAME)));
    }
}
