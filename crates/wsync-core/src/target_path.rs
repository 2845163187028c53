//! Path safety: which directories wsync may mirror from and to. The one home of the rules that
//! `add`, `attach` and the daemon's start-up check of the registry apply:
//!
//! - A local path is resolved component by component ([`walk`]); when it leads somewhere else
//!   than it says (a symlink on the way), every step of the way must be out of other users'
//!   reach, or it is refused ([`resolve_local`], the [`Hazard`]s). Otherwise another user who
//!   plants `ln -s /var/lib/private-data /tmp/backup` gets root's daemon to mirror into, and
//!   delete from, a directory of their choosing.
//! - A target may not be `/`, the home directory or a parent of it, and a workspace not `/` or
//!   the home ([`is_too_broad_target`], [`is_too_broad_workspace`]).
//! - An SSH target, resolved on the remote at attach (`cd -P` + `pwd -P`, see
//!   `crate::target::ssh_inspect_command`), may not be `/`, the remote user's home or a parent
//!   of it, and may not itself be a symlink ([`remote_hazard`]).
//! - Registry entries are checked with the same rules when the daemon starts
//!   ([`check_entry`]), so a registry edited by hand cannot skip them.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::paths::normalize_lexically;
use crate::registry::Workspace;
use crate::remote::RemoteTarget;

/// Symlinks followed before a path counts as a loop (the kernel's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;
const STICKY: u32 = 0o1000;
/// The group and world write bits.
const OTHERS_WRITE: u32 = 0o022;

/// A file's owner and mode, as `lstat` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub mode: u32,
}

impl Owner {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            uid: meta.uid(),
            mode: meta.mode(),
        }
    }
}

/// The users trusted not to redirect a path: root and the user the daemon runs as (like
/// OpenSSH's `StrictModes` and sudo's secure path checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trusted {
    euid: u32,
}

impl Trusted {
    /// Root and this process's effective user.
    pub fn current() -> Self {
        Self::with_user(nix::unistd::geteuid().as_raw())
    }

    /// Root and `euid`.
    pub fn with_user(euid: u32) -> Self {
        Self { euid }
    }

    fn trusts(self, uid: u32) -> bool {
        uid == 0 || uid == self.euid
    }
}

/// How another user could change where a path leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hazard {
    /// A symbolic link owned by another user: they choose where it points.
    ForeignLink { uid: u32 },
    /// A directory owned by another user: they can replace any entry in it.
    ForeignDirectory { uid: u32 },
    /// A directory with the group or world write bit and no sticky bit: every user who may
    /// write it can replace any entry in it.
    WritableDirectory { mode: u32 },
    /// An entry owned by another user in a shared directory with the sticky bit (like `/tmp`):
    /// the sticky bit keeps others from replacing only the entries of root and the daemon's user.
    ForeignEntry { uid: u32 },
}

impl fmt::Display for Hazard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hazard::ForeignLink { uid } => write!(f, "is a symbolic link owned by {}", who(*uid)),
            Hazard::ForeignDirectory { uid } => write!(f, "is a directory owned by {}", who(*uid)),
            Hazard::WritableDirectory { mode } => write!(
                f,
                "is a directory other users may write (mode {:04o}, no sticky bit)",
                mode & 0o7777
            ),
            Hazard::ForeignEntry { uid } => write!(
                f,
                "is owned by {} in a shared directory (the sticky bit does not protect it from its owner)",
                who(*uid)
            ),
        }
    }
}

/// `uid 1001 (alice)`, or `uid 1001` when the user database does not know it.
fn who(uid: u32) -> String {
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(user)) => format!("uid {uid} ({})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// What looking up an entry in directory `dir` risks: `entry` is the entry's `lstat`, `None`
/// when it does not exist. Only root and the trusted user may own `dir`; if others may write
/// it, only the sticky bit with an entry of root or the trusted user keeps it where it is.
pub fn lookup_hazard(dir: Owner, entry: Option<Owner>, trusted: Trusted) -> Option<Hazard> {
    if !trusted.trusts(dir.uid) {
        return Some(Hazard::ForeignDirectory { uid: dir.uid });
    }
    if dir.mode & OTHERS_WRITE == 0 {
        return None;
    }
    if dir.mode & STICKY == 0 {
        return Some(Hazard::WritableDirectory { mode: dir.mode });
    }
    match entry {
        Some(entry) if !trusted.trusts(entry.uid) => Some(Hazard::ForeignEntry { uid: entry.uid }),
        _ => None,
    }
}

/// What following symlink `link` risks: its owner decides where it points.
pub fn link_hazard(link: Owner, trusted: Trusted) -> Option<Hazard> {
    (!trusted.trusts(link.uid)).then_some(Hazard::ForeignLink { uid: link.uid })
}

/// Where a path leads, and the first step on the way another user could redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// Absolute and free of symlinks; a missing tail is appended as written.
    pub resolved: PathBuf,
    /// The first hazard met on the way, and the path it is at.
    pub hazard: Option<(PathBuf, Hazard)>,
}

/// Resolves absolute `path` one component at a time as the kernel would (symlinks followed,
/// `..` taken physically), judging every directory an entry is looked up in
/// ([`lookup_hazard`]) and every symlink followed ([`link_hazard`]). A missing tail is
/// appended lexically, like [`crate::paths::canonicalize_lenient`].
pub fn walk(path: &Path, trusted: Trusted) -> std::io::Result<Walk> {
    if !path.is_absolute() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an absolute path",
        ));
    }
    let mut pending: VecDeque<OsString> = components(path).collect();
    let mut resolved = PathBuf::from("/");
    let mut dir = Owner::of(&std::fs::symlink_metadata("/")?);
    let mut hazard: Option<(PathBuf, Hazard)> = None;
    let mut note = |at: &Path, found: Option<Hazard>| {
        if let (None, Some(found)) = (&hazard, found) {
            hazard = Some((at.to_owned(), found));
        }
    };
    let mut links = 0;
    let mut missing = false;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            if !missing {
                dir = Owner::of(&std::fs::symlink_metadata(&resolved)?);
            }
            continue;
        }
        let candidate = resolved.join(&name);
        if missing {
            resolved = candidate;
            continue;
        }
        let entry = match std::fs::symlink_metadata(&candidate) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let found = lookup_hazard(dir, entry.as_ref().map(Owner::of), trusted);
        let at = match found {
            Some(Hazard::ForeignEntry { .. }) => candidate.as_path(),
            _ => resolved.as_path(),
        };
        note(at, found);
        match entry {
            None => {
                missing = true;
                resolved = candidate;
            }
            Some(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(std::io::Error::from_raw_os_error(nix::libc::ELOOP));
                }
                note(&candidate, link_hazard(Owner::of(&meta), trusted));
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                    dir = Owner::of(&std::fs::symlink_metadata("/")?);
                }
                for part in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(part);
                }
            }
            Some(meta) => {
                resolved = candidate;
                dir = Owner::of(&meta);
            }
        }
    }
    Ok(Walk { resolved, hazard })
}

/// The names and `..`s of a path (the root and `.` dropped).
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_owned()),
        Component::ParentDir => Some("..".into()),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// A path that leads elsewhere through a step another user controls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} leads to {} through {}, which {hazard}: another user could point it anywhere, and wsync would mirror into or delete from wherever it points; if you trust {}, give that path directly", written.display(), resolved.display(), component.display(), resolved.display())]
pub struct UntrustedPath {
    /// As given (lexically normalized).
    pub written: PathBuf,
    pub resolved: PathBuf,
    /// The symlink or directory at fault.
    pub component: PathBuf,
    pub hazard: Hazard,
}

/// Why [`resolve_local`] refused a path.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Untrusted(#[from] UntrustedPath),
}

/// Resolves an absolute local path like [`crate::paths::canonicalize_lenient`], refusing it
/// when it leads somewhere else than written ([`UntrustedPath`]) through a step another user
/// controls (see [`walk`]); a path that resolves to itself is never refused here.
pub fn resolve_local(path: &Path) -> Result<PathBuf, ResolveError> {
    resolve_local_for(path, Trusted::current())
}

/// [`resolve_local`] trusting `trusted` (tests).
pub fn resolve_local_for(path: &Path, trusted: Trusted) -> Result<PathBuf, ResolveError> {
    let walked = walk(path, trusted).map_err(|source| ResolveError::Io {
        path: path.to_owned(),
        source,
    })?;
    judge(path, walked).map_err(ResolveError::Untrusted)
}

/// The decision on a walk: a hazard counts only when the path leads elsewhere than written.
fn judge(path: &Path, walked: Walk) -> Result<PathBuf, UntrustedPath> {
    let written = normalize_lexically(path);
    match walked.hazard {
        Some((component, hazard)) if walked.resolved != written => Err(UntrustedPath {
            written,
            resolved: walked.resolved,
            component,
            hazard,
        }),
        _ => Ok(walked.resolved),
    }
}

/// The home directory as configured and as resolved (they differ when it is reached through a
/// symlink); the broadness rules compare with both.
pub fn local_homes() -> Vec<PathBuf> {
    let home = crate::paths::home_dir();
    let mut homes = vec![home.clone()];
    if let Ok(real) = home.canonicalize() {
        if real != home {
            homes.push(real);
        }
    }
    homes
}

/// `/`, a home in `homes` or a directory containing one: a mirror there would delete what the
/// workspace lacks (the home's keys and dotfiles).
pub fn is_too_broad_target(path: &Path, homes: &[PathBuf]) -> bool {
    path == Path::new("/") || homes.iter().any(|home| home.starts_with(path))
}

/// `/` or a home in `homes` itself: not a project directory.
pub fn is_too_broad_workspace(path: &Path, homes: &[PathBuf]) -> bool {
    path == Path::new("/") || homes.iter().any(|home| home == path)
}

/// What the attach-time inspection of an SSH target found on the remote; every path is
/// physical (`pwd -P`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteResolution {
    /// The target directory resolved; `None` when it is missing or not a directory.
    pub resolved: Option<String>,
    /// The directory ssh sessions start in, which relative paths (rsync's too) are taken from.
    pub login_dir: String,
    /// `$HOME` resolved, when it is set and exists.
    pub home: Option<String>,
    /// The target path is itself a symbolic link.
    pub is_link: bool,
}

/// Why an SSH target is refused after looking at it on the remote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteHazard {
    #[error("it is {resolved} on the remote: the root, the remote user's home ({home}) or a parent of it; a mirror deletes what the workspace lacks, so name a dedicated directory inside the home (host:~/mirror)")]
    RootOrHome { resolved: String, home: String },
    #[error("it is a symbolic link on the remote (to {}); a mirror never follows a link at its target, because whoever controls the link chooses what is emptied: if you trust {0}, attach that path directly", resolved.as_deref().unwrap_or("nothing"))]
    Link { resolved: Option<String> },
}

/// Refuses an SSH target that resolves to `/`, the remote user's home (the login directory
/// or `$HOME`) or a parent of one, or that is itself a symlink.
pub fn remote_hazard(found: &RemoteResolution) -> Option<RemoteHazard> {
    if let Some(resolved) = &found.resolved {
        let mut homes = std::iter::once(&found.login_dir)
            .chain(found.home.as_ref())
            .filter(|h| !h.is_empty());
        let home = homes
            .clone()
            .find(|home| Path::new(home).starts_with(resolved));
        if resolved == "/" || home.is_some() {
            return Some(RemoteHazard::RootOrHome {
                resolved: resolved.clone(),
                home: home.or(homes.next()).cloned().unwrap_or_default(),
            });
        }
    }
    found.is_link.then(|| RemoteHazard::Link {
        resolved: found.resolved.clone(),
    })
}

/// Why the daemon does not start a registry entry (see [`check_entry`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryRefusal {
    #[error("workspace path {} is / or the home directory, which `wsync add` refuses; remove the workspace (`wsync remove {workspace}`) and add a project directory", path.display())]
    WorkspaceTooBroad { workspace: String, path: PathBuf },
    #[error("workspace path: {problem}; remove the workspace (`wsync remove {workspace}`) and add the path you trust")]
    WorkspaceUntrusted {
        workspace: String,
        problem: Box<UntrustedPath>,
    },
    #[error("remote {remote:?} ({}) is /, the home directory or a parent of it, which `wsync attach` refuses (a mirror deletes what the workspace lacks); detach it (`wsync detach {workspace} {remote}`), then `wsync restart {workspace}`", path.display())]
    TargetTooBroad {
        workspace: String,
        remote: String,
        path: PathBuf,
    },
    #[error("remote {remote:?}: {problem}; detach it (`wsync detach {workspace} {remote}`), attach the path you trust, then `wsync restart {workspace}`")]
    TargetUntrusted {
        workspace: String,
        remote: String,
        problem: Box<UntrustedPath>,
    },
}

/// Applies the rules `add` and `attach` check on the filesystem to a registry entry: its
/// path and its local targets must not be too broad ([`is_too_broad_workspace`],
/// [`is_too_broad_target`]) nor lead elsewhere through another user's step
/// ([`resolve_local`]). A path that cannot be resolved now (missing, unreadable) is judged as
/// written: the monitor reports it. SSH targets were checked on the remote at attach; their
/// written form is re-checked on load (`crate::remote::validate_target`) and the target's
/// marker before every transfer.
pub fn check_entry(workspace: &Workspace, homes: &[PathBuf]) -> Result<(), EntryRefusal> {
    check_entry_for(workspace, homes, Trusted::current())
}

/// [`check_entry`] trusting `trusted` (tests).
pub fn check_entry_for(
    workspace: &Workspace,
    homes: &[PathBuf],
    trusted: Trusted,
) -> Result<(), EntryRefusal> {
    let name = || workspace.name.clone();
    let path = resolved_or_written(&workspace.path, trusted).map_err(|problem| {
        EntryRefusal::WorkspaceUntrusted {
            workspace: name(),
            problem: Box::new(problem),
        }
    })?;
    for candidate in [&workspace.path, &path] {
        if is_too_broad_workspace(candidate, homes) {
            return Err(EntryRefusal::WorkspaceTooBroad {
                workspace: name(),
                path: candidate.clone(),
            });
        }
    }
    for remote in &workspace.remotes {
        let RemoteTarget::Local { path: written } = &remote.target else {
            continue;
        };
        let target = resolved_or_written(written, trusted).map_err(|problem| {
            EntryRefusal::TargetUntrusted {
                workspace: name(),
                remote: remote.name.clone(),
                problem: Box::new(problem),
            }
        })?;
        for candidate in [written, &target] {
            if is_too_broad_target(candidate, homes) {
                return Err(EntryRefusal::TargetTooBroad {
                    workspace: name(),
                    remote: remote.name.clone(),
                    path: candidate.clone(),
                });
            }
        }
    }
    Ok(())
}

fn resolved_or_written(path: &Path, trusted: Trusted) -> Result<PathBuf, UntrustedPath> {
    match resolve_local_for(path, trusted) {
        Ok(resolved) => Ok(resolved),
        Err(ResolveError::Untrusted(problem)) => Err(problem),
        Err(ResolveError::Io { .. }) => Ok(normalize_lexically(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const ME: u32 = 1000;
    const OTHER: u32 = 1001;

    fn owner(uid: u32, mode: u32) -> Owner {
        Owner { uid, mode }
    }

    fn me() -> Trusted {
        Trusted::with_user(ME)
    }

    #[test]
    fn a_lookup_is_safe_only_in_a_directory_others_cannot_rewrite() {
        let t = me();
        // Root's and my own directories, not writable by others.
        assert_eq!(lookup_hazard(owner(0, 0o40755), None, t), None);
        assert_eq!(lookup_hazard(owner(ME, 0o40700), None, t), None);
        // Someone else's, whatever its mode.
        assert_eq!(
            lookup_hazard(owner(OTHER, 0o40755), None, t),
            Some(Hazard::ForeignDirectory { uid: OTHER })
        );
        // Group- or world-writable without the sticky bit.
        for mode in [0o40775, 0o40757, 0o40777] {
            assert_eq!(
                lookup_hazard(owner(0, mode), Some(owner(0, 0o40755)), t),
                Some(Hazard::WritableDirectory { mode }),
                "{mode:o}"
            );
        }
        // /tmp: sticky, so entries of root and mine stay put, others' do not.
        let tmp = owner(0, 0o41777);
        assert_eq!(lookup_hazard(tmp, Some(owner(0, 0o120777)), t), None);
        assert_eq!(lookup_hazard(tmp, Some(owner(ME, 0o40700)), t), None);
        assert_eq!(lookup_hazard(tmp, None, t), None);
        assert_eq!(
            lookup_hazard(tmp, Some(owner(OTHER, 0o120777)), t),
            Some(Hazard::ForeignEntry { uid: OTHER })
        );
    }

    #[test]
    fn only_links_of_root_and_the_daemons_user_are_trusted() {
        assert_eq!(link_hazard(owner(0, 0o120777), me()), None);
        assert_eq!(link_hazard(owner(ME, 0o120777), me()), None);
        assert_eq!(
            link_hazard(owner(OTHER, 0o120777), me()),
            Some(Hazard::ForeignLink { uid: OTHER })
        );
    }

    /// Run as any user: the test's own files are "mine", and another uid is one that trusts
    /// neither root nor me... except root, which every check trusts; so the foreign cases
    /// trust a uid that owns nothing here.
    #[test]
    fn a_link_through_a_writable_directory_is_refused_and_a_direct_path_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let data = root.join("data");
        std::fs::create_dir(&data).unwrap();
        let open = root.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink(&data, open.join("backup")).unwrap();
        std::os::unix::fs::symlink(&data, root.join("mine")).unwrap();
        let mine = Trusted::current();

        // My own link in my own directory: followed.
        assert_eq!(resolve_local_for(&root.join("mine"), mine).unwrap(), data);
        // A link in a world-writable directory: anyone could have put it there.
        let err = resolve_local_for(&open.join("backup/sub"), mine).unwrap_err();
        let ResolveError::Untrusted(problem) = err else {
            panic!("{err}")
        };
        assert_eq!(problem.resolved, data.join("sub"));
        assert_eq!(problem.component, open);
        assert!(matches!(
            problem.hazard,
            Hazard::WritableDirectory { mode } if mode & 0o777 == 0o777
        ));
        let text = problem.to_string();
        assert!(text.contains("mode 0777, no sticky bit"), "{text}");
        assert!(
            text.contains(&format!("if you trust {}", data.join("sub").display())),
            "{text}"
        );
        // A path without links resolves to itself: never refused, even in that directory.
        std::fs::create_dir(open.join("plain")).unwrap();
        assert_eq!(
            resolve_local_for(&open.join("plain"), mine).unwrap(),
            open.join("plain")
        );
        // `..` is taken physically, after the link.
        assert_eq!(
            resolve_local_for(&root.join("mine/../open/plain"), mine).unwrap(),
            open.join("plain")
        );
    }

    #[test]
    fn a_directory_owned_by_someone_untrusted_on_the_way_is_named() {
        // Trust a user that owns nothing here (and root): my directories count as another
        // user's, as an attacker's would for a root daemon (unless I am root).
        if nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("data")).unwrap();
        std::os::unix::fs::symlink(root.join("data"), root.join("link")).unwrap();
        let someone = Trusted::with_user(u32::MAX - 1);
        let err = resolve_local_for(&root.join("link"), someone).unwrap_err();
        let ResolveError::Untrusted(problem) = err else {
            panic!("{err}")
        };
        assert!(matches!(problem.hazard, Hazard::ForeignDirectory { .. }));
    }

    #[test]
    fn loops_and_relative_paths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(root.join("b"), root.join("a")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("b")).unwrap();
        assert!(matches!(
            resolve_local(&root.join("a")),
            Err(ResolveError::Io { .. })
        ));
        assert!(matches!(
            resolve_local(Path::new("rel")),
            Err(ResolveError::Io { .. })
        ));
    }

    #[test]
    fn broadness_rules() {
        let homes = vec![PathBuf::from("/home/u"), PathBuf::from("/data/home/u")];
        for path in ["/", "/home", "/home/u", "/data", "/data/home/u"] {
            assert!(is_too_broad_target(Path::new(path), &homes), "{path}");
        }
        for path in ["/home/u/m", "/home/other", "/srv"] {
            assert!(!is_too_broad_target(Path::new(path), &homes), "{path}");
        }
        assert!(is_too_broad_workspace(Path::new("/"), &homes));
        assert!(is_too_broad_workspace(Path::new("/home/u"), &homes));
        assert!(!is_too_broad_workspace(Path::new("/home"), &homes));
        assert!(!is_too_broad_workspace(Path::new("/home/u/p"), &homes));
    }

    fn remote(
        resolved: Option<&str>,
        login: &str,
        home: Option<&str>,
        link: bool,
    ) -> RemoteResolution {
        RemoteResolution {
            resolved: resolved.map(str::to_owned),
            login_dir: login.into(),
            home: home.map(str::to_owned),
            is_link: link,
        }
    }

    #[test]
    fn a_remote_target_may_not_be_the_root_a_home_its_parent_or_a_link() {
        let root_or_home = |r: &RemoteResolution| {
            matches!(remote_hazard(r), Some(RemoteHazard::RootOrHome { .. }))
        };
        for resolved in ["/", "/home", "/home/u", "/data"] {
            assert!(
                root_or_home(&remote(Some(resolved), "/home/u", Some("/data/u"), false)),
                "{resolved}"
            );
        }
        assert!(root_or_home(&remote(Some("/"), "", None, false)));
        assert_eq!(
            remote_hazard(&remote(
                Some("/home/u/m"),
                "/home/u",
                Some("/home/u"),
                false
            )),
            None
        );
        assert_eq!(remote_hazard(&remote(None, "/home/u", None, false)), None);
        // "/home/user" is not inside "/home/u".
        assert_eq!(
            remote_hazard(&remote(Some("/home/u"), "/home/user", None, false)),
            None
        );
        assert_eq!(
            remote_hazard(&remote(Some("/srv/m"), "/home/u", None, true)),
            Some(RemoteHazard::Link {
                resolved: Some("/srv/m".into())
            })
        );
        // A link to the home is named as the home.
        assert!(root_or_home(&remote(
            Some("/home/u"),
            "/home/u",
            None,
            true
        )));
    }

    fn entry(path: &Path, targets: &[&Path]) -> Workspace {
        let mut ws: Workspace =
            serde_json::from_str(r#"{"name":"w","id":"00ff","path":"/x"}"#).unwrap();
        ws.path = path.to_owned();
        ws.remotes = targets
            .iter()
            .enumerate()
            .map(|(i, p)| {
                crate::registry::Remote::new(
                    format!("r{i}"),
                    RemoteTarget::Local {
                        path: p.to_path_buf(),
                    },
                )
            })
            .collect();
        ws
    }

    #[test]
    fn registry_entries_get_the_attach_rules() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let home = root.join("home");
        std::fs::create_dir_all(home.join("src")).unwrap();
        let homes = vec![home.clone()];
        let t = Trusted::current();
        assert_eq!(
            check_entry_for(&entry(&home.join("src"), &[&root.join("m")]), &homes, t),
            Ok(())
        );
        for target in [home.as_path(), root.as_path(), Path::new("/")] {
            assert!(matches!(
                check_entry_for(&entry(&home.join("src"), &[target]), &homes, t),
                Err(EntryRefusal::TargetTooBroad { .. })
            ));
        }
        // Through a link: judged by where it leads.
        std::os::unix::fs::symlink(&home, root.join("to-home")).unwrap();
        let refusal = check_entry_for(
            &entry(&home.join("src"), &[&root.join("to-home")]),
            &homes,
            t,
        )
        .unwrap_err();
        assert!(
            refusal.to_string().contains("wsync detach w r0"),
            "{refusal}"
        );
        assert!(matches!(
            check_entry_for(&entry(&home, &[]), &homes, t),
            Err(EntryRefusal::WorkspaceTooBroad { .. })
        ));
        // A missing target is judged as written.
        assert_eq!(
            check_entry_for(
                &entry(&home.join("src"), &[&root.join("gone/m")]),
                &homes,
                t
            ),
            Ok(())
        );
    }
}
