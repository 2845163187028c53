//! Workspace excludes in gitignore syntax: `.wsyncignore` at the root, the registry's
//! `excludes`, and the workspace's `.gitignore` files (when `respect_gitignore`), matched by the
//! `ignore` crate's gitignore matcher — never by hand. The monitor asks [`Excludes::decide`]
//! for every entry it walks or hears about (an excluded directory is neither watched nor
//! descended into) and turns the excluded entries into anchored rsync rules with
//! [`rsync_rule`], so the watcher and rsync can never disagree. What a `--delete` keeps on the
//! remote (remote-only paths the patterns exclude) comes from the same patterns:
//! [`Excludes::protect_rules`] translates every loaded source into rsync `P`/`R` rules
//! ([`crate::protect`]), written after the anchored rules by [`write_rules`].
//! [`Excludes::explain`] says which pattern, file and line decided a path (for
//! `wsync check-ignore`).
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

impl Layer {
    /// True when no pattern holds a `/` other than a trailing one: each matches an entry by its
    /// name alone, at any depth below the layer's directory.
    fn only_floating(&self) -> bool {
        self.lines.iter().all(|(_, line)| {
            if line.starts_with('#') {
                return true;
            }
            let line = line.strip_prefix('!').unwrap_or(line);
            !line.trim_end_matches('/').contains('/')
        })
    }

    /// This layer's lines as rsync receiver rules, last line first (see [`crate::protect`]).
    fn push_protect_rules(&self, dir: &Path, rules: &mut Vec<Vec<u8>>) {
        for (_, line) in self.lines.iter().rev() {
            rules.extend(crate::protect::translate(dir, line));
        }
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
    /// Bumped whenever a layer is read or dropped (see [`Excludes::generation`]).
    generation: u64,
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
            generation: 0,
        };
        excludes.load_dir(Path::new(""));
        excludes
    }

    /// (Re)reads the `.gitignore` of directory `rel` (relative to the root), if respected.
    pub fn load_dir(&mut self, rel: &Path) {
        self.load_dir_listed(rel, true);
    }

    /// [`Excludes::load_dir`] for a walk that has just listed `rel`: when the listing had no
    /// `.gitignore` (`listed` false) none is opened. At 100,000 directories the failed opens
    /// were a sixth of the watch walk's system calls; a `.gitignore` created after the
    /// listing is an event of its own, which reads it.
    pub fn load_dir_listed(&mut self, rel: &Path, listed: bool) {
        if !self.respect_gitignore {
            return;
        }
        let dir = self.root.join(rel);
        let layer = if listed {
            Layer::read(&dir, &dir.join(GITIGNORE), &mut self.warnings)
        } else {
            None
        };
        match layer {
            Some(layer) => {
                self.gitignores.insert(rel.to_path_buf(), layer);
                self.generation += 1;
            }
            None => {
                if self.gitignores.remove(rel).is_some() {
                    self.generation += 1;
                }
            }
        }
    }

    /// Drops the `.gitignore` patterns read at or below directory `rel` (that subtree left the
    /// workspace; a walk that meets it again reads them again).
    pub fn forget_below(&mut self, rel: &Path) {
        // A subtree is one range of the component-wise order: cost follows what is dropped.
        let gone: Vec<PathBuf> = self
            .gitignores
            .range::<Path, _>((std::ops::Bound::Included(rel), std::ops::Bound::Unbounded))
            .map(|(dir, _)| dir)
            .take_while(|dir| dir.starts_with(rel))
            .cloned()
            .collect();
        for dir in &gone {
            self.gitignores.remove(dir);
        }
        if !gone.is_empty() {
            self.generation += 1;
        }
    }

    /// Changes whenever the set of patterns may have changed (a `.gitignore` read or dropped),
    /// so a caller can cache what it derives from them, such as [`Excludes::protect_rules`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The rsync receiver-side rules (`P pattern` to protect, `R pattern` to re-include; see
    /// [`crate::protect`]) that decide, as this matcher does, which remote paths a
    /// `--delete` must keep: excluded ones (a remote-only `node_modules/`, an `app/.env` under
    /// `app/.gitignore`) are kept, re-included ones (`!keep.log`) are not. Every source in the
    /// matcher's precedence (`.wsyncignore`, the registry, `.gitignore` files from the deepest
    /// directory up), each source's lines last first: rsync's first match is the matcher's
    /// decision. Covers the `.gitignore` files read so far (see [`Excludes::load_dir`]; the
    /// watcher's walk and [`excluded_entries`] read every one outside excluded directories).
    pub fn protect_rules(&self) -> Vec<Vec<u8>> {
        let mut rules = Vec::new();
        for layer in [&self.wsyncignore, &self.registry].into_iter().flatten() {
            layer.push_protect_rules(Path::new(""), &mut rules);
        }
        for (dir, layer) in self.gitignores.iter().rev() {
            layer.push_protect_rules(dir, &mut rules);
        }
        rules
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

    /// True when renaming directory `from` to `to` leaves every decision below it as it was, so
    /// the watcher can move what it knows by prefix instead of walking the subtree again: no
    /// `.gitignore` was read at or below `from` (it would move), every layer that applies on
    /// exactly one side is absent, and every layer applying on both sides holds only floating
    /// patterns (no `/` but a trailing one), which match by name whatever the directory above.
    pub fn move_keeps_decisions(&self, from: &Path, to: &Path) -> bool {
        let (from_parent, to_parent) = (
            from.parent().unwrap_or(Path::new("")),
            to.parent().unwrap_or(Path::new("")),
        );
        let root_layers = [&self.wsyncignore, &self.registry];
        if !root_layers.into_iter().flatten().all(Layer::only_floating) {
            return false;
        }
        self.gitignores.iter().all(|(dir, layer)| {
            if dir.starts_with(from) {
                return false;
            }
            match (from_parent.starts_with(dir), to_parent.starts_with(dir)) {
                (true, true) => layer.only_floating(),
                (false, false) => true,
                _ => false,
            }
        })
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
    escaped_rule(bytes, wild)
}

/// The anchored rsync pattern matching every entry directly inside the directory `rel`
/// (`/rel/*`; `/*` for the root), `rel` escaped so only its own name matches.
pub fn rsync_children_rule(rel: &Path) -> Vec<u8> {
    let bytes = rel.as_os_str().as_bytes();
    let mut rule = if bytes.is_empty() || bytes == b"." {
        Vec::new()
    } else {
        // The `*` makes the pattern wild: every special byte of the name is escaped.
        escaped_rule(bytes, true)
    };
    rule.extend_from_slice(b"/*");
    rule
}

fn escaped_rule(bytes: &[u8], wild: bool) -> Vec<u8> {
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

/// [`Excludes::protect_rules`] for the tree below `root`, reading every ignore file once (a
/// walk like [`excluded_entries`]). For one-shot callers; the monitor keeps its rules current
/// from the watcher's walk instead.
pub fn protect_rules_for_tree(
    root: &Path,
    registry: &[String],
    respect_gitignore: bool,
) -> Vec<Vec<u8>> {
    let mut excludes = Excludes::new(root, registry, respect_gitignore);
    let _ = excluded_entries(root, &mut excludes);
    excludes.protect_rules()
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

/// Writes the rsync filter rules file (read with `--filter=merge FILE` and `--from0`):
/// `- /rel` for each entry of `excluded` (neither sent nor deleted), then the `protect` rules
/// from [`Excludes::protect_rules`] (what else the receiver keeps). NUL-terminated, so any
/// name works, and atomically: a running rsync sees the old or the new rules, whole.
pub fn write_rules<'a>(
    file: &Path,
    excluded: impl IntoIterator<Item = &'a PathBuf>,
    protect: &[Vec<u8>],
) -> std::io::Result<()> {
    let mut out = Vec::new();
    for rel in excluded {
        out.extend_from_slice(b"- ");
        out.extend_from_slice(&rsync_rule(rel));
        out.push(0);
    }
    for rule in protect {
        out.extend_from_slice(rule);
        out.push(0);
    }
    crate::owned::write_atomic(file, ".wsync-rules-", &out, || Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_files_sharing_a_stem_never_share_a_temp_file() {
        // Workspaces `my.a` and `my.b` had one temp file, `my.tmp`: one rules file could get the
        // other's rules, or a rename could find its temp file already gone.
        let tmp = tempfile::tempdir().unwrap();
        let files = [tmp.path().join("my.a"), tmp.path().join("my.b")];
        std::thread::scope(|s| {
            for (i, file) in files.iter().enumerate() {
                s.spawn(move || {
                    let excluded: Vec<PathBuf> = (0..2000)
                        .map(|n| PathBuf::from(format!("{}-{n}", ["a", "b"][i])))
                        .collect();
                    for _ in 0..30 {
                        write_rules(file, &excluded, &[]).unwrap();
                        let read = std::fs::read(file).unwrap();
                        let first = read.split(|b| *b == 0).next().unwrap();
                        let want = format!("- /{}-0", ["a", "b"][i]);
                        assert_eq!(first, want.as_bytes(), "{} got other rules", file.display());
                        assert_eq!(read.split(|b| *b == 0).count(), 2001);
                    }
                });
            }
        });
        let left = std::fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(left, 2, "temp files left behind");
    }

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
    fn protect_rules_cover_every_source_last_line_first() {
        let dir = tree(&[
            (".wsyncignore", "# comment\n*.log\n!keep.log\n\n\\#hash\n"),
            (".gitignore", "target/  \n"),
            ("sub/.gitignore", "nested-only\n!sub-keep\n"),
            ("sub/deeper/.gitignore", "/x\n"),
        ]);
        let got: Vec<String> = protect_rules_for_tree(dir.path(), &["node_modules/".into()], true)
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect();
        let want = [
            "P #hash",
            "R keep.log",
            "P *.log",
            "P node_modules/",
            "P /sub/deeper/x",
            "R /sub/sub-keep",
            "R /sub/**/sub-keep",
            "P /sub/nested-only",
            "P /sub/**/nested-only",
            "P target/",
        ];
        assert_eq!(got, want);
        let got = protect_rules_for_tree(dir.path(), &[], false);
        assert_eq!(got.len(), 3, "no .gitignore when not respected");
    }

    #[test]
    fn a_move_keeps_decisions_only_where_no_pattern_depends_on_the_place() {
        let p = Path::new;
        // Floating patterns at the root (a comment may hold a slash): any move keeps them.
        let dir = tree(&[(".gitignore", "# build/output\n*.o\ntarget/\n!keep.o\n")]);
        let mut ex = Excludes::new(dir.path(), &["node_modules/".into()], true);
        assert!(ex.move_keeps_decisions(p("a/b"), p("c")));
        // A `.gitignore` on one side only: what it excluded below the old name is included now.
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/.gitignore"), "*.tmp\n").unwrap();
        ex.load_dir(p("a"));
        assert!(!ex.move_keeps_decisions(p("a/b"), p("c")));
        assert!(
            ex.move_keeps_decisions(p("a/b"), p("a/c")),
            "same side of a/.gitignore"
        );
        assert!(
            ex.move_keeps_decisions(p("x"), p("y")),
            "a/.gitignore applies to neither"
        );
        // A `.gitignore` inside the moved directory moves with it: walk again.
        assert!(!ex.move_keeps_decisions(p("a"), p("z")));
        // An anchored pattern depends on the place.
        let ex = Excludes::new(dir.path(), &["/a/b/*.log".into()], false);
        assert!(!ex.move_keeps_decisions(p("x"), p("y")));
    }

    /// Syncs `local` over a copy of `remote` with a real `rsync -a --delete` and the rules file
    /// the monitor writes; then, for every remote-only path, "kept" must equal "excluded by
    /// the matcher" (itself or an ancestor; a directory is also kept when something kept is
    /// inside it). Returns the mismatches.
    fn rsync_disagreements(
        local: &[(&str, &str)],
        registry: &[&str],
        remote: &[&str],
    ) -> Vec<String> {
        let src = tree(local);
        let dst = tempfile::tempdir().unwrap();
        for path in remote {
            let full = dst.path().join(path.trim_end_matches('/'));
            if path.ends_with('/') {
                std::fs::create_dir_all(&full).unwrap();
            } else {
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, "remote").unwrap();
            }
        }
        let registry: Vec<String> = registry.iter().map(|p| (*p).to_owned()).collect();
        let mut ex = Excludes::new(src.path(), &registry, true);
        assert!(ex.warnings().is_empty(), "{:?}", ex.warnings());
        let excluded = excluded_entries(src.path(), &mut ex).unwrap();
        let rules = ex.protect_rules();
        let file = src.path().join("..").join(format!(
            "rules-{}",
            src.path().file_name().unwrap().to_string_lossy()
        ));
        write_rules(&file, &excluded, &rules).unwrap();
        let out = std::process::Command::new("rsync")
            .arg("-a")
            .arg("--delete")
            .arg("--from0")
            .arg(format!("--filter=merge {}", file.display()))
            .arg(format!("{}/", src.path().display()))
            .arg(format!("{}/", dst.path().display()))
            .output()
            .expect("rsync runs");
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success() || out.status.code() == Some(23) && !out.stderr.is_empty(),
            "rsync: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let local_paths: Vec<&str> = local.iter().map(|(p, _)| *p).collect();
        let remote_only: Vec<&str> = remote
            .iter()
            .map(|p| p.trim_end_matches('/'))
            .filter(|p| !local_paths.iter().any(|l| Path::new(l).starts_with(p)))
            .collect();
        let excluded_by_matcher = |rel: &str, is_dir: bool, ex: &mut Excludes| {
            ex.explain(Path::new(rel), is_dir)
                .is_some_and(|m| m.excluded)
        };
        let mut want_kept: Vec<&str> = Vec::new();
        for rel in &remote_only {
            let is_dir = remote.contains(&format!("{rel}/").as_str());
            if excluded_by_matcher(rel, is_dir, &mut ex) {
                want_kept.push(rel);
            }
        }
        let mut wrong = Vec::new();
        for rel in &remote_only {
            let kept_inside = want_kept
                .iter()
                .any(|k| Path::new(k).starts_with(rel) && k != rel);
            let want = want_kept.contains(rel) || kept_inside;
            let got = dst.path().join(rel).symlink_metadata().is_ok();
            if want != got {
                wrong.push(format!(
                    "{rel}: matcher says {}, rsync {}",
                    if want { "keep" } else { "delete" },
                    if got { "kept it" } else { "deleted it" },
                ));
            }
        }
        if !wrong.is_empty() {
            let rules: Vec<String> = rules
                .iter()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect();
            wrong.push(format!("rules: {rules:?}"));
        }
        wrong
    }

    #[test]
    fn protect_rules_agree_with_the_matcher_under_real_rsync() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a [&'a str]);
        let cases: &[Case] = &[
            // Nested ignore file: names at any depth below it, nothing outside.
            (
                &[("app/.gitignore", ".env\n")],
                &[],
                &["app/.env", "app/x/.env", ".env", "other/.env", "app/keep"],
            ),
            // Negation, in the root ignore file and from a deeper file.
            (
                &[
                    (".wsyncignore", "*.log\n!keep.log\n"),
                    (".gitignore", "secret*\n"),
                    ("sub/.gitignore", "!secret-ok\n"),
                ],
                &[],
                &[
                    "a.log",
                    "keep.log",
                    "d/keep.log",
                    "d/b.log",
                    "sub/secret-ok",
                    "sub/secret-x",
                    "secret-ok",
                    "sub/keep.log",
                ],
            ),
            // Anchoring: a leading or inner slash anchors to the file's directory.
            (
                &[
                    (".gitignore", "/build\na/b\n"),
                    ("sub/.gitignore", "/x\ny/z\n"),
                ],
                &[],
                &[
                    "build",
                    "sub/build",
                    "a/b",
                    "q/a/b",
                    "sub/x",
                    "sub/q/x",
                    "sub/y/z",
                    "sub/q/y/z",
                    "y/z",
                ],
            ),
            // Directory-only patterns.
            (
                &[(".gitignore", "cache/\n"), ("n/.gitignore", "tmp/\n")],
                &[],
                &[
                    "cache/",
                    "cache/f",
                    "d/cache",
                    "e/cache/",
                    "n/tmp",
                    "n/m/tmp/",
                    "n/m/tmp/f",
                    "tmp/",
                ],
            ),
            // Escapes and trailing spaces.
            (
                &[(".gitignore", "\\#hash\n\\!bang\nsp\\ \ntrail   \nst\\*r\n")],
                &[],
                &[
                    "#hash", "!bang", "sp ", "sp", "trail", "trail   ", "st*r", "stXr",
                ],
            ),
            // `**` components, wildcards in directory names, classes, braces.
            (
                &[
                    (
                        ".gitignore",
                        "a/**/z\nlogs/**\n[ab].o\nx[!0-9]\n{p,q}.tmp\nm**n\n",
                    ),
                    ("w*/.gitignore", "a?\n**/deep\n"),
                    ("wx/keep", ""),
                ],
                &[],
                &[
                    "a/z",
                    "a/m/n/z",
                    "b/a/z",
                    "logs/x",
                    "logs/y/z",
                    "a.o",
                    "c.o",
                    "d/b.o",
                    "xa",
                    "x1",
                    "p.tmp",
                    "q.tmp",
                    "r.tmp",
                    "mxn",
                    "m/n",
                    "w*/ab",
                    "w*/d/ab",
                    "wx/ab",
                    "w*/deep",
                    "w*/k/deep",
                    "wx/deep",
                ],
            ),
            // Nothing below an excluded directory can be re-included; registry patterns.
            (
                &[(".gitignore", "build/\n!build/keep\n*.bin\n")],
                &["node_modules/", "!important.bin", "*.bin"],
                &[
                    "build/",
                    "build/keep",
                    "build/x",
                    "n/node_modules/",
                    "n/node_modules/f",
                    "a.bin",
                    "important.bin",
                    "d/important.bin",
                ],
            ),
        ];
        for (local, registry, remote) in cases {
            let wrong = rsync_disagreements(local, registry, remote);
            assert!(wrong.is_empty(), "{local:?}:\n{}", wrong.join("\n"));
        }
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
        assert_eq!(rsync_children_rule(Path::new("")), b"/*");
        assert_eq!(rsync_children_rule(Path::new("a/b")), b"/a/b/*");
        assert_eq!(
            rsync_children_rule(Path::new("back\\slash")),
            b"/back\\\\slash/*"
        );
        assert_eq!(rsync_children_rule(Path::new("x[1]")), b"/x\\[1]/*");
    }
}

/// The cost figures in the README's "Excludes" section: `cargo test --release -p wsync-core
/// -- --ignored protect_rules_cost --nocapture`.
#[cfg(test)]
mod cost {
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore = "a measurement, not a check"]
    fn protect_rules_cost() {
        for ignore_files in [20, 500] {
            measure(ignore_files);
        }
    }

    fn measure(ignore_files: usize) {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        // 50,000 files in 500 directories, `ignore_files` of them with a 5-line .gitignore.
        for d in 0..500 {
            let dir = src.path().join(format!("pkg{}/mod{}", d / 20, d % 20));
            std::fs::create_dir_all(&dir).unwrap();
            if d < ignore_files {
                std::fs::write(
                    dir.join(".gitignore"),
                    "*.o\n/build/\n.env\n!keep.o\ngen/**/tmp\n",
                )
                .unwrap();
            }
            for f in 0..100 {
                std::fs::write(dir.join(format!("f{f}.rs")), "x").unwrap();
            }
        }
        let t = Instant::now();
        let mut ex = Excludes::new(src.path(), &["node_modules/".into()], true);
        let excluded = excluded_entries(src.path(), &mut ex).unwrap();
        let walk = t.elapsed();
        let t = Instant::now();
        let rules = ex.protect_rules();
        let translate = t.elapsed();
        let file = dst.path().join("rules");
        let rsync = |with_rules: bool| {
            write_rules(&file, &excluded, if with_rules { &rules } else { &[] }).unwrap();
            let t = Instant::now();
            let out = std::process::Command::new("rsync")
                .args(["-a", "--delete", "--from0"])
                .arg(format!("--filter=merge {}", file.display()))
                .arg(format!("{}/", src.path().display()))
                .arg(format!("{}/", dst.path().join("m").display()))
                .output()
                .unwrap();
            assert!(out.status.success());
            t.elapsed()
        };
        rsync(false);
        let (without, with) = (rsync(false), rsync(true));
        println!(
            "50,000 files, {ignore_files} .gitignore: walk reading every ignore file {walk:?}; \
             translating to {} rules {translate:?}; no-change full rsync {without:?} without \
             them, {with:?} with them",
            rules.len()
        );
    }
}
