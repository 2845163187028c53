//! The workspace registry (`WorkspaceConfigFilePath`): a versioned JSON document, loaded with
//! errors that name the file and position, written atomically, and validated on every change.
//!
//! Format (schema version 1):
//! `{"version":1,"workspaces":[{"name":..,"path":..,"remotes":[..],"paused":false,"excludes":[..]}]}`.
//! A bare JSON array of workspaces (schema 0, as early setups wrote `[]`) is read too.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::names::{reject_control_chars, validate_name, ControlCharError, NameError};
use crate::paths::{self, overlaps, SettingsFile};
use crate::remote::{
    parse_spec, validate_ssh_option, ParsedSpec, RemoteTarget, SpecError, SshOptionError,
};
use crate::target_path::{self, ResolveError, UntrustedPath};

pub mod tuning;
pub mod update;

pub use tuning::WorkspaceTuning;

/// The largest `max_delete` rsync accepts (`--max-delete` is a signed 32-bit number).
pub const MAX_DELETE_LIMIT: u64 = i32::MAX as u64;

/// The registry schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole registry file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub version: u32,
    pub workspaces: Vec<Workspace>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            version: SCHEMA_VERSION,
            workspaces: Vec::new(),
        }
    }
}

/// One mirrored directory and where it is mirrored to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    pub name: String,
    /// A stable random id (hex), generated at add; what a target's `.wsync-target` marker
    /// names (see [`crate::target`]). Registries written before it get one on the daemon's
    /// first load ([`Registry::backfill_ids`]).
    #[serde(default)]
    pub id: String,
    /// Absolute, canonical.
    pub path: PathBuf,
    #[serde(default)]
    pub remotes: Vec<Remote>,
    #[serde(default)]
    pub paused: bool,
    /// gitignore-syntax patterns, in addition to `.wsyncignore`.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Whether the workspace's `.gitignore` files exclude paths too.
    #[serde(default = "default_true")]
    pub respect_gitignore: bool,
    /// Cap on deletions per full sync; `None` means the built-in default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delete: Option<u64>,
    /// Seconds between periodic checksum passes (a full sync with `--checksum` to every
    /// remote once all are idle), which repair what size and mtime cannot see (a write through
    /// a shared mmap raises no inotify event). `None` or 0: off (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_every_secs: Option<u64>,
    /// This workspace's own monitor tunables (`watch_mode`, `poll_interval_ms`, `settle_ms`,
    /// `max_latency_ms` at the entry's top level, each omitted when it follows the config).
    #[serde(flatten)]
    pub tuning: WorkspaceTuning,
    /// The root directory's identity when it was added (or last confirmed with resume), so a
    /// root swapped while no monitor ran is caught at start. `None` in older registries until
    /// the daemon's load fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<RootIdentity>,
}

/// A directory's device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl RootIdentity {
    /// The identity of `path` when it is a directory (not followed if a symlink).
    pub fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| Self {
                dev: m.dev(),
                ino: m.ino(),
            })
    }
}

fn default_true() -> bool {
    true
}

/// One place a workspace is mirrored to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    pub name: String,
    pub target: RemoteTarget,
    /// Keep what syncs delete or overwrite on this remote in its `.wsync-trash` for this many
    /// days ([`crate::trash`]); 0 (the default, and what older registries mean) keeps nothing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep_deleted_days: u32,
    /// For an SSH remote: the program it runs as rsync (`wsync attach --rsync-path`), an
    /// absolute path checked by [`crate::remote::validate_rsync_path`]; `None`: `rsync` on
    /// the remote's PATH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync_path: Option<String>,
    /// How small changes reach this remote (`wsync attach --transport`); `auto` (the default,
    /// and what older registries mean) omitted.
    #[serde(default, skip_serializing_if = "Transport::is_auto")]
    pub transport: Transport,
}

/// How a remote's small changes are sent: `auto` by wsync's own executor (in process for a
/// local target, the agent over SSH) with rsync for the rest, or `rsync` for everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    #[default]
    Auto,
    Rsync,
}

impl Transport {
    pub fn is_auto(&self) -> bool {
        *self == Transport::Auto
    }
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Transport::Auto),
            "rsync" => Ok(Transport::Rsync),
            _ => Err(format!("transport {s:?}: use auto or rsync")),
        }
    }
}

impl Remote {
    /// A remote with every per-remote setting at its default.
    pub fn new(name: impl Into<String>, target: RemoteTarget) -> Self {
        Self {
            name: name.into(),
            target,
            keep_deleted_days: 0,
            transport: Transport::Auto,
            rsync_path: None,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Errors loading or saving the registry. Loading never modifies the file.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read registry {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry {path} is not valid: {message} at line {line}, column {column}; fix or move the file (wsync never overwrites it)")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("registry {path} has schema version {found}, newer than this wsync understands ({SCHEMA_VERSION}); upgrade wsync")]
    TooNew { path: PathBuf, found: u32 },
    #[error("registry {path} is a symbolic link; set WorkspaceConfigFilePath to the real file")]
    Symlink { path: PathBuf },
    #[error("registry {path} is not a regular file; set WorkspaceConfigFilePath to a JSON file")]
    NotAFile { path: PathBuf },
    /// Whoever owns the registry decides what is mirrored where.
    #[error("registry {path} is owned by uid {owner}, not by uid {me} that runs wsync (or root), so its owner decides what is mirrored where: `chown {me} {path}` if it is yours, or set WorkspaceConfigFilePath to a file of your own", me = crate::owned::my_uid())]
    NotOurs { path: PathBuf, owner: u32 },
    #[error("registry {path} is writable by other users (mode {mode:o}), who could decide what is mirrored where: `chmod 600 {path}`")]
    Writable { path: PathBuf, mode: u32 },
    #[error("registry {path}: {entry}; fix the entry by hand (wsync never overwrites the file)")]
    Invalid {
        path: PathBuf,
        entry: Box<InvalidEntry>,
    },
    #[error("cannot write registry {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A registry entry that breaks a rule [`Registry::validate`] re-applies on load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("workspace {workspace:?}{}: {problem}", remote.as_ref().map(|r| format!(", remote {r:?}")).unwrap_or_default())]
pub struct InvalidEntry {
    pub workspace: String,
    /// The remote at fault, when the problem is one of the workspace's remotes.
    pub remote: Option<String>,
    pub problem: EntryProblem,
}

/// What is wrong with a registry entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("the name appears twice")]
    DuplicateName,
    #[error(transparent)]
    ControlChar(#[from] ControlCharError),
    #[error("path {path:?} is not absolute")]
    RelativePath { path: String },
    #[error("id {id:?} is not 1 to 64 lowercase hex digits")]
    BadId { id: String },
    #[error("max_delete must be at most {MAX_DELETE_LIMIT} (rsync's --max-delete limit)")]
    MaxDeleteTooLarge,
    #[error(transparent)]
    Tuning(tuning::OutOfRange),
    #[error(
        "keep_deleted_days must be at most {}",
        crate::trash::MAX_KEEP_DELETED_DAYS
    )]
    KeepDeletedTooLong,
    /// A workspace path overlapping an earlier workspace.
    #[error("path overlaps workspace {other:?}")]
    OverlapsWorkspace { other: String },
    #[error(transparent)]
    Target(#[from] SpecError),
    /// A local remote inside, around or equal to a workspace.
    #[error("overlaps workspace {workspace:?}")]
    RemoteOverlapsWorkspace { workspace: String },
    /// A local remote sharing a directory with another local remote.
    #[error("overlaps remote {remote:?} of workspace {workspace:?}")]
    RemoteOverlapsRemote { remote: String, workspace: String },
}

/// Why [`Registry::check_new_workspace`] refused a workspace.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// In the path (`what` = "path") or an exclude pattern.
    #[error(transparent)]
    ControlChar(#[from] ControlCharError),
    #[error("path {path:?} begins with '-' and would be read as an option")]
    OptionLike { path: String },
    /// The path cannot be read (missing, permission denied, ...).
    #[error("{} cannot be used as a workspace", path.display())]
    Unusable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a directory; a workspace must be a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot resolve {}", path.display())]
    Unresolvable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path leads elsewhere through a symlink or directory another user controls.
    #[error(transparent)]
    Untrusted(UntrustedPath),
    #[error("workspace path {} is not valid UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
    /// `/` or the home directory.
    #[error("{} cannot be a workspace: pick a project directory", path.display())]
    TooBroad { path: PathBuf },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("a workspace named {name:?} already exists; pass --name to choose another")]
    NameTaken { name: String },
    /// The path equals, contains or sits inside another workspace.
    #[error("{} overlaps workspace {other:?} ({}); workspaces may not contain each other", path.display(), other_path.display())]
    OverlapsWorkspace {
        path: PathBuf,
        other: String,
        other_path: PathBuf,
    },
    /// The path equals, contains or sits inside another workspace's local remote.
    #[error("{} overlaps remote {remote:?} of workspace {workspace:?} ({})", path.display(), target.display())]
    OverlapsRemote {
        path: PathBuf,
        remote: String,
        workspace: String,
        target: PathBuf,
    },
    #[error("exclude pattern is empty")]
    EmptyExclude,
}

/// Why [`Registry::check_new_remote`] refused a remote.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The workspace index does not name a workspace.
    #[error("no workspace number {index} in the registry")]
    NoSuchWorkspace { index: usize },
    /// The spec itself breaks a rule.
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    SshOption(#[from] SshOptionError),
    #[error("port 0 is not a number from 1 to 65535")]
    PortZero,
    #[error("the port in the ssh:// URL and --port disagree")]
    PortMismatch,
    /// `--rsync-path` names the remote side's rsync; a local target runs this machine's.
    #[error("--rsync-path is for SSH remotes; a local target is written by this machine's rsync (the first on wsyncd's PATH)")]
    RsyncPathLocal,
    #[error("--port, --identity-file and --ssh-option only apply to SSH remotes")]
    SshOnlyOption,
    #[error("remote path {} contains a '..' segment", path.display())]
    ParentSegment { path: PathBuf },
    #[error("cannot resolve {}", path.display())]
    Unresolvable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path leads elsewhere through a symlink or directory another user controls.
    #[error(transparent)]
    Untrusted(UntrustedPath),
    /// `what` is "remote path" or "identity file".
    #[error("{what} {} is not valid UTF-8", path.display())]
    NotUtf8 { what: &'static str, path: PathBuf },
    /// `/`, the home directory or one of its ancestors: a sync would delete what they hold.
    #[error("{} cannot be a remote: mirroring deletes what the workspace lacks; pick a dedicated directory", path.display())]
    TooBroad { path: PathBuf },
    #[error("{} exists and is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    /// A local remote equal to, containing or inside a workspace.
    #[error("remote {} overlaps workspace {workspace:?} ({}); a local remote may not equal, contain or sit inside a workspace", path.display(), workspace_path.display())]
    OverlapsWorkspace {
        path: PathBuf,
        workspace: String,
        workspace_path: PathBuf,
    },
    /// A local remote sharing a directory with another local remote.
    #[error("remote {} overlaps remote {remote:?} of workspace {workspace:?}; each mirror needs a directory of its own, or one sync would delete the other's files", path.display())]
    OverlapsRemote {
        path: PathBuf,
        remote: String,
        workspace: String,
    },
    #[error("identity file {} does not exist", path.display())]
    NoIdentityFile { path: PathBuf },
    /// The identity file exists but cannot be resolved.
    #[error(transparent)]
    IdentityFile(std::io::Error),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("workspace {workspace:?} already has a remote named {name:?}; pass --name to choose another")]
    NameTaken { workspace: String, name: String },
    #[error(
        "--keep-deleted must be at most {} days",
        crate::trash::MAX_KEEP_DELETED_DAYS
    )]
    KeepDeletedTooLong,
    #[error("workspace {workspace:?} is already attached to {target}")]
    AlreadyAttached {
        workspace: String,
        target: Box<RemoteTarget>,
    },
}

impl Registry {
    /// Loads the registry; a missing file is an empty registry.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let owned = || path.to_owned();
        match paths::read_settings_file(path) {
            Ok(SettingsFile::Text(text)) => Self::parse(path, &text),
            Ok(SettingsFile::Missing) => Ok(Self::default()),
            Ok(SettingsFile::Symlink) => Err(RegistryError::Symlink { path: owned() }),
            Ok(SettingsFile::NotAFile) => Err(RegistryError::NotAFile { path: owned() }),
            Ok(SettingsFile::NotOurs { owner }) => Err(RegistryError::NotOurs {
                path: owned(),
                owner,
            }),
            Ok(SettingsFile::Writable { mode }) => Err(RegistryError::Writable {
                path: owned(),
                mode,
            }),
            Err(source) => Err(RegistryError::Read {
                path: owned(),
                source,
            }),
        }
    }

    /// Parses registry text; `path` is for messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, RegistryError> {
        let parse_err = |e: serde_json::Error| RegistryError::Parse {
            path: path.into(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        };
        let registry = if text.trim_start().starts_with('[') {
            let workspaces: Vec<Workspace> = serde_json::from_str(text).map_err(parse_err)?;
            Registry {
                version: SCHEMA_VERSION,
                workspaces,
            }
        } else {
            let registry: Registry = serde_json::from_str(text).map_err(parse_err)?;
            if registry.version > SCHEMA_VERSION {
                return Err(RegistryError::TooNew {
                    path: path.into(),
                    found: registry.version,
                });
            }
            registry
        };
        registry
            .validate()
            .map_err(|entry| RegistryError::Invalid {
                path: path.into(),
                entry: Box::new(entry),
            })?;
        Ok(registry)
    }

    /// Re-applies the `add`/`attach` rules that do not need the filesystem to every entry, so a
    /// hand-edited registry can never smuggle in an option-like host or a command-running option.
    pub fn validate(&self) -> Result<(), InvalidEntry> {
        let mut names = std::collections::HashSet::new();
        for (i, ws) in self.workspaces.iter().enumerate() {
            let context = |problem: EntryProblem| InvalidEntry {
                workspace: ws.name.clone(),
                remote: None,
                problem,
            };
            validate_name("workspace", &ws.name).map_err(|e| context(e.into()))?;
            if !names.insert(&ws.name) {
                return Err(context(EntryProblem::DuplicateName));
            }
            let text = ws.path.to_string_lossy();
            reject_control_chars("path", &text).map_err(|e| context(e.into()))?;
            if !ws.path.is_absolute() {
                return Err(context(EntryProblem::RelativePath {
                    path: text.into_owned(),
                }));
            }
            if !ws.id.is_empty() && !valid_id(&ws.id) {
                return Err(context(EntryProblem::BadId { id: ws.id.clone() }));
            }
            if ws.max_delete.is_some_and(|n| n > MAX_DELETE_LIMIT) {
                return Err(context(EntryProblem::MaxDeleteTooLarge));
            }
            ws.tuning
                .validate()
                .map_err(|e| context(EntryProblem::Tuning(e)))?;
            if let Some(other) = self.workspaces[..i]
                .iter()
                .find(|o| overlaps(&o.path, &ws.path))
            {
                return Err(context(EntryProblem::OverlapsWorkspace {
                    other: other.name.clone(),
                }));
            }
            let mut remote_names = std::collections::HashSet::new();
            for remote in &ws.remotes {
                let context = |problem: EntryProblem| InvalidEntry {
                    workspace: ws.name.clone(),
                    remote: Some(remote.name.clone()),
                    problem,
                };
                validate_name("remote", &remote.name).map_err(|e| context(e.into()))?;
                if !remote_names.insert(&remote.name) {
                    return Err(context(EntryProblem::DuplicateName));
                }
                crate::remote::validate_target(&remote.target).map_err(|e| context(e.into()))?;
                if remote.keep_deleted_days > crate::trash::MAX_KEEP_DELETED_DAYS {
                    return Err(context(EntryProblem::KeepDeletedTooLong));
                }
                if let RemoteTarget::Local { path } = &remote.target {
                    if let Some(w) = self.workspaces.iter().find(|w| overlaps(&w.path, path)) {
                        return Err(context(EntryProblem::RemoteOverlapsWorkspace {
                            workspace: w.name.clone(),
                        }));
                    }
                    let others = self
                        .workspaces
                        .iter()
                        .flat_map(|w| local_remotes(w).map(move |r| (w, r)));
                    if let Some((w, (r, _))) = others
                        .filter(|(_, (r, _))| !std::ptr::eq(*r, remote))
                        .find(|(_, (_, p))| overlaps(p, path))
                    {
                        return Err(context(EntryProblem::RemoteOverlapsRemote {
                            remote: r.name.clone(),
                            workspace: w.name.clone(),
                        }));
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the registry atomically: temp file in the same directory, fsync, rename, fsync dir.
    pub fn save(&self, path: &Path) -> Result<(), RegistryError> {
        self.save_with(path, || Ok(()))
    }

    /// [`Registry::save`] with a hook run after the temp file is synced and before the rename,
    /// so tests can simulate a crash (or a full disk) at the worst moment.
    pub fn save_with(
        &self,
        path: &Path,
        before_rename: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<(), RegistryError> {
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| RegistryError::Write {
            path: path.into(),
            source: std::io::Error::other(e),
        })?;
        json.push(b'\n');
        crate::owned::write_atomic(path, ".wsync-registry-", &json, before_rename).map_err(
            |source| RegistryError::Write {
                path: path.into(),
                source,
            },
        )
    }

    /// Gives every workspace without an id (a registry from before ids) a new one, and records
    /// the root identity where none is; true when any changed, so the caller saves the
    /// registry (the id must not change again). Reads the filesystem (the roots).
    pub fn backfill_ids(&mut self) -> bool {
        let mut changed = false;
        for ws in self.workspaces.iter_mut().filter(|w| w.id.is_empty()) {
            ws.id = new_workspace_id();
            changed = true;
        }
        for ws in self.workspaces.iter_mut().filter(|w| w.root_id.is_none()) {
            // A root that is missing now stays unknown (and is caught as missing).
            ws.root_id = RootIdentity::of(&ws.path);
            changed |= ws.root_id.is_some();
        }
        changed
    }

    pub fn find(&self, name_or_path: &str) -> Option<&Workspace> {
        self.index_of(name_or_path).map(|i| &self.workspaces[i])
    }

    /// Finds a workspace by name, or by path (canonicalized when it exists).
    pub fn index_of(&self, name_or_path: &str) -> Option<usize> {
        if let Some(i) = self.index_of_name(name_or_path) {
            return Some(i);
        }
        let as_path = Path::new(name_or_path);
        let canonical = as_path
            .canonicalize()
            .unwrap_or_else(|_| as_path.to_owned());
        self.index_of_path(&canonical)
    }

    /// Finds a workspace by name; touches no file.
    pub fn index_of_name(&self, name: &str) -> Option<usize> {
        self.workspaces.iter().position(|w| w.name == name)
    }

    /// Finds a workspace by its canonical path; touches no file.
    pub fn index_of_path(&self, canonical: &Path) -> Option<usize> {
        self.workspaces.iter().position(|w| w.path == canonical)
    }
}

/// A new random workspace id: 16 bytes from the kernel's generator, in hex.
pub fn new_workspace_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // No /dev/urandom (a strange chroot): time and pid still make a collision unlikely.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes[..8].copy_from_slice(&now.as_nanos().to_le_bytes()[..8]);
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_id(id: &str) -> bool {
    id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The local remotes of a workspace, with their paths.
fn local_remotes(ws: &Workspace) -> impl Iterator<Item = (&Remote, &Path)> {
    ws.remotes.iter().filter_map(|r| match &r.target {
        RemoteTarget::Local { path } => Some((r, path.as_path())),
        RemoteTarget::Ssh { .. } => None,
    })
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// What the user asked `add` to create.
#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub path: PathBuf,
    pub name: Option<String>,
    pub excludes: Vec<String>,
}

/// What the user asked `attach` to create.
#[derive(Debug, Clone, Default)]
pub struct NewRemote {
    pub spec: String,
    pub name: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub ssh_options: Vec<String>,
    /// See [`Remote::keep_deleted_days`].
    pub keep_deleted_days: u32,
    /// See [`Remote::transport`].
    pub transport: Transport,
    /// See [`Remote::rsync_path`] (SSH remotes only).
    pub rsync_path: Option<String>,
}

impl Registry {
    /// Validates and builds a workspace without adding it.
    pub fn check_new_workspace(&self, new: &NewWorkspace) -> Result<Workspace, AddError> {
        let raw = new.path.to_string_lossy();
        reject_control_chars("path", &raw)?;
        if raw.starts_with('-') {
            return Err(AddError::OptionLike {
                path: raw.into_owned(),
            });
        }
        let meta = std::fs::metadata(&new.path).map_err(|source| AddError::Unusable {
            path: new.path.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(AddError::NotADirectory {
                path: new.path.clone(),
            });
        }
        let path = target_path::resolve_local(&new.path).map_err(|e| match e {
            ResolveError::Io { path, source } => AddError::Unresolvable { path, source },
            ResolveError::Untrusted(problem) => AddError::Untrusted(problem),
        })?;
        if path.to_str().is_none() {
            return Err(AddError::NotUtf8 { path });
        }
        if target_path::is_too_broad_workspace(&path, &target_path::local_homes()) {
            return Err(AddError::TooBroad { path });
        }
        let name = match &new.name {
            Some(n) => n.clone(),
            None => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        validate_name("workspace", &name)?;
        if self.workspaces.iter().any(|w| w.name == name) {
            return Err(AddError::NameTaken { name });
        }
        for other in &self.workspaces {
            if overlaps(&path, &other.path) {
                return Err(AddError::OverlapsWorkspace {
                    path,
                    other: other.name.clone(),
                    other_path: other.path.clone(),
                });
            }
            for (remote, target) in local_remotes(other) {
                if overlaps(&path, target) {
                    return Err(AddError::OverlapsRemote {
                        path,
                        remote: remote.name.clone(),
                        workspace: other.name.clone(),
                        target: target.to_owned(),
                    });
                }
            }
        }
        for pattern in &new.excludes {
            reject_control_chars("exclude pattern", pattern)?;
            if pattern.trim().is_empty() {
                return Err(AddError::EmptyExclude);
            }
        }
        let root_id = RootIdentity::of(&path);
        Ok(Workspace {
            name,
            id: new_workspace_id(),
            path,
            remotes: Vec::new(),
            paused: false,
            excludes: new.excludes.clone(),
            respect_gitignore: true,
            max_delete: None,
            checksum_every_secs: None,
            tuning: WorkspaceTuning::default(),
            root_id,
        })
    }

    /// Validates and builds a remote for workspace `ws_index` without attaching it.
    pub fn check_new_remote(
        &self,
        ws_index: usize,
        new: &NewRemote,
    ) -> Result<Remote, AttachError> {
        let workspace = self
            .workspaces
            .get(ws_index)
            .ok_or(AttachError::NoSuchWorkspace { index: ws_index })?;
        if new.port == Some(0) {
            return Err(AttachError::PortZero);
        }
        if new.keep_deleted_days > crate::trash::MAX_KEEP_DELETED_DAYS {
            return Err(AttachError::KeepDeletedTooLong);
        }
        let parsed = parse_spec(&new.spec)?;
        let (target, default_name) = match parsed {
            ParsedSpec::Local(raw) => {
                if new.port.is_some() || new.identity_file.is_some() || !new.ssh_options.is_empty()
                {
                    return Err(AttachError::SshOnlyOption);
                }
                if raw
                    .to_str()
                    .is_some_and(|s| s.split('/').any(|seg| seg == ".."))
                {
                    return Err(AttachError::ParentSegment { path: raw });
                }
                let path = target_path::resolve_local(&raw).map_err(|e| match e {
                    ResolveError::Io { path, source } => AttachError::Unresolvable { path, source },
                    ResolveError::Untrusted(problem) => AttachError::Untrusted(problem),
                })?;
                if path.to_str().is_none() {
                    return Err(AttachError::NotUtf8 {
                        what: "remote path",
                        path,
                    });
                }
                if target_path::is_too_broad_target(&path, &target_path::local_homes()) {
                    return Err(AttachError::TooBroad { path });
                }
                if path.exists() && !path.is_dir() {
                    return Err(AttachError::NotADirectory { path });
                }
                for ws in &self.workspaces {
                    if overlaps(&path, &ws.path) {
                        return Err(AttachError::OverlapsWorkspace {
                            path,
                            workspace: ws.name.clone(),
                            workspace_path: ws.path.clone(),
                        });
                    }
                    // The same directory attached to this workspace already is not an
                    // overlap but the remote itself (AlreadyAttached, below).
                    let itself = |p: &Path| std::ptr::eq(ws, workspace) && p == path;
                    if let Some((remote, _)) =
                        local_remotes(ws).find(|(_, p)| overlaps(&path, p) && !itself(p))
                    {
                        return Err(AttachError::OverlapsRemote {
                            path,
                            remote: remote.name.clone(),
                            workspace: ws.name.clone(),
                        });
                    }
                }
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (RemoteTarget::Local { path }, name)
            }
            ParsedSpec::Ssh {
                user,
                host,
                port,
                path,
            } => {
                if port.is_some() && new.port.is_some() && port != new.port {
                    return Err(AttachError::PortMismatch);
                }
                let identity_file = match &new.identity_file {
                    Some(file) => {
                        let file = paths::expand_home(&file.to_string_lossy());
                        if !file.is_file() {
                            return Err(AttachError::NoIdentityFile { path: file });
                        }
                        let file = file.canonicalize().map_err(AttachError::IdentityFile)?;
                        if file.to_str().is_none() {
                            return Err(AttachError::NotUtf8 {
                                what: "identity file",
                                path: file,
                            });
                        }
                        Some(file)
                    }
                    None => None,
                };
                let ssh_options = new
                    .ssh_options
                    .iter()
                    .map(|o| validate_ssh_option(o))
                    .collect::<Result<Vec<_>, _>>()?;
                let name = host.clone();
                (
                    RemoteTarget::Ssh {
                        user,
                        host,
                        port: port.or(new.port),
                        path,
                        identity_file,
                        ssh_options,
                    },
                    name,
                )
            }
        };
        let name = new.name.clone().unwrap_or(default_name);
        validate_name("remote", &name)?;
        // The same target first: `attach --keep-deleted` on it changes its setting.
        if workspace.remotes.iter().any(|r| r.target == target) {
            return Err(AttachError::AlreadyAttached {
                workspace: workspace.name.clone(),
                target: Box::new(target),
            });
        }
        if workspace.remotes.iter().any(|r| r.name == name) {
            return Err(AttachError::NameTaken {
                workspace: workspace.name.clone(),
                name,
            });
        }
        let rsync_path = match (&new.rsync_path, &target) {
            (None, _) => None,
            (Some(_), RemoteTarget::Local { .. }) => return Err(AttachError::RsyncPathLocal),
            (Some(path), RemoteTarget::Ssh { .. }) => {
                crate::remote::validate_rsync_path(path)?;
                Some(path.clone())
            }
        };
        Ok(Remote {
            name,
            target,
            keep_deleted_days: new.keep_deleted_days,
            transport: new.transport,
            rsync_path,
        })
    }
}

#[cfg(test)]
mod tests;
