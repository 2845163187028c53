//! Workspace excludes in gitignore syntax: `.wsyncignore` at the root, the registry's
//! `excludes`, and the workspace's `.gitignore` files (when `respect_gitignore`), matched by the
//! `ignore` crate's gitignore matcher — never by hand. The monitor asks [`Excludes::decide`]
//! for every entry it walks or hears about (an excluded directory is neither watched nor
//! descended into) and turns the excluded entries into anchored rsync rules with
//! [`rsync_rule`], so the watcher and rsync can never disagree. [`Excludes::explain`] says which
//! pattern, file and line decided a path (for `wsync check-ignore`).
//!
//! Precedence: `.wsyncignore` first, then the registry's patterns, then `.gitignore` files from
//! the deepest directory up; within one source the last matching line wins, and a `!pattern`
//! match re-includes. As in git, nothing below an excluded directory can be re-included.
//! VCS directories (`.git`, `.hg`, `.jj`, `.svn`) are ordinary directories here: synced unless
//! a pattern excludes them.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;

/// The wsync-specific ignore file, read at the workspace root only.
pub const WSYNCIGNORE: &str = ".wsyncignore";
/// Read in every directory when the workspace respects `.gitignore` files.
pub const GITIGNORE: &str = ".gitignore";

/// Where a pattern came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExcludeSource {
    /// The workspace's `excludes` in the registry (`wsync add --exclude`).
    Registry,
    /// A `.wsyncignore` or `.gitignore` file (absolute path).
    File(PathBuf),
}

impl std::fmt::Display for ExcludeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Registry => f.write_str("registry excludes"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The pattern that decided a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExcludeMatch {
    /// The path the pattern matched: the one asked about, or an excluded ancestor directory.
    pub path: PathBuf,
    pub source: ExcludeSource,
    /// 1-based line in the file, or position in the registry's list.
    pub line: u64,
    /// The pattern as written.
    pub pattern: String,
    /// `true` for an exclusion, `false` for a `!pattern` that re-includes.
    pub excluded: bool,
}

/// One source of patterns.
struct Layer {
    matcher: Gitignore,
    source: ExcludeSource,
    /// (line number, pattern text as the matcher keeps it), for reporting.
    lines: Vec<(u64, String)>,
}

impl Layer {
    fn build(
        dir: &Path,
        source: ExcludeSource,
        lines: &[(u64, String)],
        warnings: &mut Vec<String>,
    ) -> Option<Self> {
        let mut builder = GitignoreBuilder::new(dir);
        let from = match &source {
            ExcludeSource::File(path) => Some(path.clone()),
            ExcludeSource::Registry => None,
        };
        let mut kept = Vec::new();
        for (number, line) in lines {
            match builder.add_line(from.clone(), line) {
                Ok(_) => kept.push((*number, trim_like_gitignore(line).to_owned())),
                Err(e) => warnings.push(format!("{source}:{number}: ignoring bad pattern: {e}")),
            }
        }
        match builder.build() {
            Ok(matcher) if !matcher.is_empty() => Some(Self {
                matcher,
                source,
                lines: kept,
            }),
            Ok(_) => None,
            Err(e) => {
                warnings.push(format!("{source}: cannot build the matcher: {e}"));
                None
            }
        }
    }

    fn read(dir: &Path, file: &Path, warnings: &mut Vec<String>) -> Option<Self> {
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warnings.push(format!("cannot read {}: {e}", file.display()));
                return None;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let lines: Vec<(u64, String)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.to_owned()))
            .collect();
        Self::build(
            dir,
            ExcludeSource::File(file.to_path_buf()),
            &lines,
            warnings,
        )
    }

    /// `Some(match)` when a pattern of this layer decides `rel` (relative to the layer's dir).
    fn decide(&self, rel: &Path, is_dir: bool) -> Option<(bool, String, u64)> {
        let (excluded, glob) = match self.matcher.matched(rel, is_dir) {
            Match::None => return None,
            Match::Ignore(glob) => (true, glob),
            Match::Whitelist(glob) => (false, glob),
        };
        let original = glob.original();
        let line = self
            .lines
            .iter()
            .rev()
            .find(|(_, text)| text == original)
            .map_or(0, |(n, _)| *n);
        Some((excluded, original.to_owned(), line))
    }
}

/// The gitignore parser drops trailing whitespace unless escaped; keep the same text.
fn trim_like_gitignore(line: &str) -> &str {
    if line.ends_with("\\ ") {
        line
    } else {
        line.trim_end()
    }
}

/// All exclude patterns of one workspace.
pub struct Excludes {
    root: PathBuf,
    respect_gitignore: bool,
    wsyncignore: Option<Layer>,
    registry: Option<Layer>,
    /// `.gitignore` matchers by the directory (relative to the root) that holds them.
    gitignores: BTreeMap<PathBuf, Layer>,
    warnings: Vec<String>,
}

impl Excludes {
    /// Reads `.wsyncignore` and the root's `.gitignore`; `.gitignore` files below the root are
    /// read with [`Excludes::load_dir`] as the walk reaches them. Bad patterns are skipped and
    /// reported in [`Excludes::warnings`].
    pub fn new(root: &Path, registry: &[String], respect_gitignore: bool) -> Self {
        let mut warnings = Vec::new();
        let lines: Vec<(u64, String)> = registry
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64 + 1, p.clone()))
            .collect();
        let registry = Layer::build(root, ExcludeSource::Registry, &lines, &mut warnings);
        let wsyncignore = Layer::read(root, &root.join(WSYNCIGNORE), &mut warnings);
        let mut excludes = Self {
            root: root.to_path_buf(),
            respect_gitignore,
            wsyncignore,
            registry,
            gitignores: BTreeMap::new(),
            warnings,
        };
        excludes.load_dir(Path::new(""));
        excludes
    }

    /// (Re)reads the `.gitignore` of directory `rel` (relative to the root), if respected.
    pub fn load_dir(&mut self, rel: &Path) {
        if !self.respect_gitignore {
            return;
        }
        let dir = self.root.join(rel);
        match Layer::read(&dir, &dir.join(GITIGNORE), &mut self.warnings) {
            Some(layer) => {
                self.gitignores.insert(rel.to_path_buf(), layer);
            }
            None => {
                self.gitignores.remove(rel);
            }
        }
    }

    /// Problems found while reading patterns (bad globs, unreadable files).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// True when no pattern could match anything (walks can skip matching).
    pub fn is_empty(&self) -> bool {
        self.wsyncignore.is_none() && self.registry.is_none() && self.gitignores.is_empty()
    }

    /// True when changing `rel` changes the patterns: `.wsyncignore` at the root, or any
    /// `.gitignore` when they are respected.
    pub fn is_pattern_file(&self, rel: &Path) -> bool {
        let name = rel.file_name().map(OsStrExt::as_bytes);
        (rel == Path::new(WSYNCIGNORE))
            || (self.respect_gitignore && name == Some(GITIGNORE.as_bytes()))
    }

    /// The pattern deciding `rel` itself (its parents are assumed included), if any.
    pub fn decide(&self, rel: &Path, is_dir: bool) -> Option<ExcludeMatch> {
        if self.is_empty() || rel.as_os_str().is_empty() {
            return None;
        }
        let found = |layer: &Layer, within: &Path| {
            layer
                .decide(within, is_dir)
                .map(|(excluded, pattern, line)| ExcludeMatch {
                    path: rel.to_path_buf(),
                    source: layer.source.clone(),
                    line,
                    pattern,
                    excluded,
                })
        };
        for layer in [&self.wsyncignore, &self.registry].into_iter().flatten() {
            if let Some(m) = found(layer, rel) {
                return Some(m);
            }
        }
        if !self.gitignores.is_empty() {
            for dir in rel.ancestors().skip(1) {
                if let Some(layer) = self.gitignores.get(dir) {
                    let within = rel.strip_prefix(dir).unwrap_or(rel);
                    if let Some(m) = found(layer, within) {
                        return Some(m);
                    }
                }
            }
        }
        None
    }

    /// Whether `rel` itself is excluded (its parents are assumed included).
    pub fn is_excluded(&self, rel: &Path, is_dir: bool) -> bool {
        self.decide(rel, is_dir).is_some_and(|m| m.excluded)
    }

    /// Explains `rel` the way a walk from the root decides it: the first excluded ancestor
    /// directory, else the pattern deciding `rel` itself (an exclusion or a re-inclusion), else
    /// `None` (not matched: synced). Reads the `.gitignore` files on the way.
    pub fn explain(&mut self, rel: &Path, is_dir: bool) -> Option<ExcludeMatch> {
        let parents: Vec<PathBuf> = rel
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .collect();
        for dir in parents.iter().rev() {
            if let Some(parent) = dir.parent() {
                self.load_dir(parent);
            }
            if let Some(m) = self.decide(dir, true).filter(|m| m.excluded) {
                return Some(m);
            }
        }
        if let Some(parent) = rel.parent() {
            self.load_dir(parent);
        }
        self.decide(rel, is_dir)
    }
}

/// The anchored rsync exclude pattern for the excluded entry `rel` (relative to the root):
/// `/rel`, with rsync's wildcard characters escaped so the name matches only itself.
pub fn rsync_rule(rel: &Path) -> Vec<u8> {
    let bytes = rel.as_os_str().as_bytes();
    let wild = bytes.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
    let mut rule = Vec::with_capacity(bytes.len() + 2);
    rule.push(b'/');
    for &b in bytes {
        // A backslash is an escape only when the pattern has a wildcard (rsync's rule).
        if wild && matches!(b, b'*' | b'?' | b'[' | b'\\') {
            rule.push(b'\\');
        }
        rule.push(b);
    }
    rule
}

/// Patterns to protect from deletion on the receiver (rsync `--filter=P pattern`): the registry's
/// and the root `.wsyncignore`'s (and the root `.gitignore`'s, when respected) exclusions.
///
/// The anchored rules from [`write_rules`] only name excluded entries that exist in the
/// workspace; a remote-only path matching an exclusion (a `node_modules/` or `target/` built on
/// the remote) would otherwise be deleted by the next full sync. Protect rules only ever stop a
/// deletion, so where rsync's pattern syntax reads a gitignore pattern more broadly, the error
/// is on the side of keeping files. `!` re-inclusions and nested `.gitignore` files are not
/// translated: their paths are simply not protected beyond what the anchored rules cover.
pub fn protect_patterns(root: &Path, registry: &[String], respect_gitignore: bool) -> Vec<String> {
    let mut files = vec![root.join(WSYNCIGNORE)];
    if respect_gitignore {
        files.push(root.join(GITIGNORE));
    }
    let from_files = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>());
    registry
        .iter()
        .cloned()
        .chain(from_files)
        .filter_map(|line| {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                return None;
            }
            // gitignore escapes a leading '#' or '!' with a backslash; rsync needs no escape.
            let line = line
                .strip_prefix("\\#")
                .map(|rest| format!("#{rest}"))
                .or_else(|| line.strip_prefix("\\!").map(|rest| format!("!{rest}")))
                .unwrap_or_else(|| line.to_owned());
            Some(line)
        })
        .collect()
}

/// Walks the tree below `root` as the watcher does and returns the top-most excluded entries
/// (an excluded directory prunes its subtree), relative to the root and sorted. For one-shot
/// users such as `wsync verify`; the monitor keeps its own set, updated from events.
pub fn excluded_entries(root: &Path, excludes: &mut Excludes) -> std::io::Result<Vec<PathBuf>> {
    let mut excluded = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        excludes.load_dir(&rel);
        let entries = match std::fs::read_dir(root.join(&rel)) {
            Ok(entries) => entries,
            Err(e) if rel.as_os_str().is_empty() => return Err(e),
            Err(_) => continue, // vanished or unreadable below the root: rsync will say so
        };
        for entry in entries.flatten() {
            let child = rel.join(entry.file_name());
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if excludes.is_excluded(&child, is_dir) {
                excluded.push(child);
            } else if is_dir {
                dirs.push(child);
            }
        }
    }
    excluded.sort();
    Ok(excluded)
}

/// Writes the rules for `excluded` to `file`, NUL-terminated (rsync reads it with `--from0`,
/// so any name works), atomically: a running rsync sees the old or the new list, whole.
pub fn write_rules<'a>(
    file: &Path,
    excluded: impl IntoIterator<Item = &'a PathBuf>,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    for rel in excluded {
        out.extend_from_slice(&rsync_rule(rel));
        out.push(0);
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, &out)?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn protect_patterns_come_from_the_registry_and_the_root_ignore_files() {
        let dir = tree(&[
            (".wsyncignore", "# comment\n*.log\n!keep.log\n\n\\#hash\n"),
            (".gitignore", "target/  \n"),
            ("sub/.gitignore", "nested-only\n"),
        ]);
        let got = protect_patterns(dir.path(), &["node_modules/".into()], true);
        assert_eq!(got, ["node_modules/", "*.log", "#hash", "target/"]);
        let got = protect_patterns(dir.path(), &[], false);
        assert_eq!(got, ["*.log", "#hash"]);
    }

    #[test]
    fn excluded_entries_prunes_excluded_directories() {
        let dir = tree(&[
            (".wsyncignore", "target/\n*.log\n"),
            ("target/debug/x", ""),
            ("src/a.rs", ""),
            ("src/b.log", ""),
            ("sub/.gitignore", "local.tmp\n"),
            ("sub/local.tmp", ""),
            ("sub/keep", ""),
        ]);
        let mut ex = Excludes::new(dir.path(), &[], true);
        let got = excluded_entries(dir.path(), &mut ex).unwrap();
        let want: Vec<PathBuf> = ["src/b.log", "sub/local.tmp", "target"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn sources_and_precedence() {
        let dir = tree(&[
            (".wsyncignore", "# comment\n*.log\n!keep.log\n"),
            (".gitignore", "target/\n/build\nsecret*\n"),
            ("sub/.gitignore", "!secret-ok\nlocal.tmp\n"),
        ]);
        let mut ex = Excludes::new(dir.path(), &["node_modules/".into(), "*.bak".into()], true);
        ex.load_dir(Path::new("sub"));
        assert!(ex.is_excluded(Path::new("a/b.log"), false));
        assert!(!ex.is_excluded(Path::new("keep.log"), false));
        assert!(ex.is_excluded(Path::new("x/node_modules"), true));
        assert!(
            !ex.is_excluded(Path::new("x/node_modules"), false),
            "dir-only pattern"
        );
        assert!(ex.is_excluded(Path::new("deep/target"), true));
        assert!(ex.is_excluded(Path::new("build"), true));
        assert!(
            !ex.is_excluded(Path::new("sub/build"), true),
            "anchored to the root"
        );
        assert!(ex.is_excluded(Path::new("sub/local.tmp"), false));
        assert!(
            !ex.is_excluded(Path::new("local.tmp"), false),
            "sub's rules stay in sub"
        );
        assert!(ex.is_excluded(Path::new("secret-x"), false));
        assert!(
            !ex.is_excluded(Path::new("sub/secret-ok"), false),
            "deeper file re-includes"
        );
        assert!(
            !ex.is_excluded(Path::new(".git"), true),
            "VCS dirs are synced"
        );
        let m = ex.decide(Path::new("sub/x.bak"), false).unwrap();
        assert_eq!(
            (m.source, m.line, m.pattern.as_str()),
            (ExcludeSource::Registry, 2, "*.bak")
        );
        let m = ex.decide(Path::new("keep.log"), false).unwrap();
        assert_eq!(m.source, ExcludeSource::File(dir.path().join(WSYNCIGNORE)));
        assert_eq!(
            (m.line, m.pattern.as_str(), m.excluded),
            (3, "!keep.log", false)
        );
        assert!(ex.is_pattern_file(Path::new(".wsyncignore")));
        assert!(ex.is_pattern_file(Path::new("sub/.gitignore")));
        assert!(!ex.is_pattern_file(Path::new("sub/.wsyncignore")));
    }

    #[test]
    fn gitignore_can_be_switched_off() {
        let dir = tree(&[(".gitignore", "*.o\n")]);
        let ex = Excludes::new(dir.path(), &[], false);
        assert!(ex.is_empty());
        assert!(!ex.is_excluded(Path::new("a.o"), false));
        assert!(!ex.is_pattern_file(Path::new(".gitignore")));
    }

    #[test]
    fn explain_reports_an_excluded_ancestor_with_file_and_line() {
        let dir = tree(&[("a/.gitignore", "\n\ngen/\n"), ("a/gen/x/y.txt", "")]);
        let mut ex = Excludes::new(dir.path(), &[], true);
        let m = ex.explain(Path::new("a/gen/x/y.txt"), false).unwrap();
        assert_eq!(m.path, Path::new("a/gen"));
        assert_eq!(
            m.source,
            ExcludeSource::File(dir.path().join("a/.gitignore"))
        );
        assert_eq!((m.line, m.pattern.as_str(), m.excluded), (3, "gen/", true));
        assert_eq!(ex.explain(Path::new("a/other"), false), None);
    }

    #[test]
    fn bad_patterns_are_reported_not_fatal() {
        let dir = tree(&[(".wsyncignore", "ok\n{a,b\n")]);
        let ex = Excludes::new(dir.path(), &[], false);
        assert!(ex.is_excluded(Path::new("ok"), false));
        assert_eq!(ex.warnings().len(), 1, "{:?}", ex.warnings());
    }

    #[test]
    fn rsync_rules_are_anchored_and_escaped() {
        assert_eq!(rsync_rule(Path::new("a/node_modules")), b"/a/node_modules");
        assert_eq!(rsync_rule(Path::new("x/*[1]?")), b"/x/\\*\\[1]\\?");
        assert_eq!(rsync_rule(Path::new("back\\slash")), b"/back\\slash");
        assert_eq!(rsync_rule(Path::new("w*\\")), b"/w\\*\\\\");
    }
}
