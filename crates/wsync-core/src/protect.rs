//! Gitignore lines as rsync receiver-side filter rules: what keeps rsync's `--delete` from
//! deleting remote paths that the workspace's excludes cover. An exclusion becomes `P`
//! ("protect") rules, a `!` re-include `R` ("risk") rules. [`crate::excludes::Excludes`]
//! emits the lines of every ignore source in reverse, so rsync's first match is gitignore's
//! last match.
//!
//! The translation mirrors the `ignore` crate's parser (`GitignoreBuilder::add_line` and
//! globset with `literal_separator`): a pattern with a slash (other than a trailing one) is
//! anchored to its file's directory, one without matches at any depth below it; `dir/` matches
//! directories only; `**` as a whole component matches any number of directories, including
//! none (rsync's `/a/**/b` needs at least one, so both forms are emitted); `**` elsewhere is
//! `*`; `{a,b}` (a globset extension) is expanded; `\x` is a literal `x`, `\#` and `\!` at the
//! start too; trailing spaces are dropped unless escaped.
//!
//! Where the translation cannot be exact, it errs on keeping files: a `P` rule may only match
//! more than its line, an `R` rule only less (a line with more than [`MAX_VARIANTS`] forms is
//! widened to one `P` rule, or dropped as an `R` rule, which leaves the paths protected).

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The most rsync patterns one line may become (each `{a,b}` multiplies, each `**` component
/// that may match no directory doubles).
pub const MAX_VARIANTS: usize = 16;

/// One element of a parsed gitignore glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    Quest,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Sep,
    /// `**` as a whole component, with the `/` after it: any number of directories (none
    /// included); at the end of the glob, everything below.
    Recursive,
    Alt(Vec<Vec<Tok>>),
}

impl Tok {
    /// Whether it can match a `/`.
    fn deep(&self) -> bool {
        match self {
            Self::Sep | Self::Recursive => true,
            Self::Alt(branches) => branches.iter().flatten().any(Self::deep),
            _ => false,
        }
    }
}

/// The rsync pattern pieces, before escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(u8),
    Star,
    DoubleStar,
    Quest,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// The rsync filter rules (`P pattern` or `R pattern`, as bytes) for one line of an ignore
/// source whose patterns are relative to `dir` (relative to the workspace root; empty for the
/// root, the registry and `.wsyncignore`). Comments, blank lines and patterns that can match
/// nothing give no rule.
pub fn translate(dir: &Path, line: &str) -> Vec<Vec<u8>> {
    let Some(parsed) = Line::parse(line) else {
        return Vec::new();
    };
    let kind: &[u8] = if parsed.negated { b"R " } else { b"P " };
    parsed
        .patterns(dir.as_os_str().as_bytes())
        .into_iter()
        .map(|pattern| [kind, &pattern].concat())
        .collect()
}

/// One gitignore line, read as `ignore::gitignore::GitignoreBuilder::add_line` reads it.
struct Line {
    negated: bool,
    dir_only: bool,
    tokens: Vec<Tok>,
}

impl Line {
    fn parse(line: &str) -> Option<Self> {
        if line.starts_with('#') {
            return None;
        }
        let mut line = if line.ends_with("\\ ") {
            line
        } else {
            line.trim_end()
        };
        if line.is_empty() {
            return None;
        }
        let (mut negated, mut absolute) = (false, false);
        if line.starts_with("\\!") || line.starts_with("\\#") {
            line = &line[1..];
            absolute = line.starts_with('/');
        } else {
            if let Some(rest) = line.strip_prefix('!') {
                negated = true;
                line = rest;
            }
            if let Some(rest) = line.strip_prefix('/') {
                line = rest;
                absolute = true;
            }
        }
        let mut dir_only = false;
        if let Some(rest) = line.strip_suffix('/') {
            dir_only = true;
            line = rest.strip_suffix('\\').unwrap_or(rest);
        }
        let anchored = absolute || line.contains('/');
        let chars: Vec<char> = line.chars().collect();
        let mut tokens = Parser {
            chars: &chars,
            at: 0,
        }
        .sequence(false);
        if tokens.is_empty() {
            return None;
        }
        if !anchored && tokens.first() != Some(&Tok::Recursive) {
            tokens.insert(0, Tok::Recursive);
        }
        Some(Self {
            negated,
            dir_only,
            tokens,
        })
    }

    /// The rsync patterns matching what this line matches below `dir`: exactly, or (too many
    /// forms) more broadly for an exclusion and not at all for a re-include.
    fn patterns(&self, dir: &[u8]) -> Vec<Vec<u8>> {
        let mut prefix = vec![Piece::Lit(b'/')];
        if !dir.is_empty() {
            prefix.extend(dir.iter().map(|&b| Piece::Lit(b)));
            prefix.push(Piece::Lit(b'/'));
        }
        let suffix: &[u8] = if self.dir_only { b"/" } else { b"" };
        // An unanchored name from a root-level source: rsync's own "any depth" match (a
        // pattern without a slash matches the last component), one rule instead of two.
        let mut tokens = &self.tokens[..];
        if dir.is_empty() && tokens.len() > 1 && tokens[0] == Tok::Recursive {
            let rest = &tokens[1..];
            if !rest.iter().any(Tok::deep) {
                prefix.clear();
                tokens = rest;
            }
        }
        let forms = expand_alternatives(tokens, MAX_VARIANTS).and_then(|forms| {
            let mut out = Vec::new();
            for form in forms {
                out.extend(recursive_forms(&form)?);
                if out.len() > MAX_VARIANTS {
                    return None;
                }
            }
            Some(out)
        });
        let forms = match forms {
            Some(forms) => forms,
            None if self.negated => return Vec::new(),
            None => vec![widened(tokens)],
        };
        let mut out: Vec<Vec<u8>> = Vec::new();
        for body in forms {
            let mut pattern = prefix.clone();
            pattern.extend(body);
            let mut rendered = render(&pattern);
            rendered.extend_from_slice(suffix);
            if !out.contains(&rendered) {
                out.push(rendered);
            }
        }
        out
    }
}

struct Parser<'a> {
    chars: &'a [char],
    at: usize,
}

impl Parser<'_> {
    /// Tokens up to the end, or (inside `{...}`) up to the next `,` or `}`.
    fn sequence(&mut self, in_alt: bool) -> Vec<Tok> {
        let mut out = Vec::new();
        while let Some(&c) = self.chars.get(self.at) {
            if in_alt && (c == ',' || c == '}') {
                break;
            }
            self.at += 1;
            match c {
                '\\' => out.push(Tok::Lit(self.chars.get(self.at).copied().map_or(
                    '\\',
                    |c| {
                        self.at += 1;
                        c
                    },
                ))),
                '*' => self.star(&mut out, in_alt),
                '?' => out.push(Tok::Quest),
                '/' => out.push(Tok::Sep),
                '[' => out.push(self.class()),
                '{' if !in_alt => out.push(self.alternatives()),
                c => out.push(Tok::Lit(c)),
            }
        }
        out
    }

    /// globset's rule: `**` is recursive only as a whole component; any other run of stars is
    /// one `*`.
    fn star(&mut self, out: &mut Vec<Tok>, in_alt: bool) {
        let start = self.at - 1;
        while self.chars.get(self.at) == Some(&'*') {
            self.at += 1;
        }
        let run = self.at - start;
        let prev = start.checked_sub(1).map(|i| self.chars[i]);
        let next = self.chars.get(self.at).copied();
        let boundary_before = match prev {
            None => true,
            Some('/') => true,
            Some(',' | '{') => in_alt,
            Some(_) => false,
        };
        let boundary_after = match next {
            None | Some('/') => true,
            Some(',' | '}') => in_alt,
            Some(_) => false,
        };
        if run == 2 && boundary_before && boundary_after {
            if next == Some('/') {
                self.at += 1;
            }
            if out.last() != Some(&Tok::Recursive) {
                out.push(Tok::Recursive);
            }
        } else if out.last() != Some(&Tok::Star) {
            out.push(Tok::Star);
        }
    }

    /// `[...]` as globset reads it (no escapes inside; `]` or `-` first is literal); an
    /// unclosed class is a literal `[`.
    fn class(&mut self) -> Tok {
        let saved = self.at;
        let negated = matches!(self.chars.get(self.at), Some('!' | '^'));
        if negated {
            self.at += 1;
        }
        let mut ranges: Vec<(char, char)> = Vec::new();
        let (mut first, mut in_range) = (true, false);
        loop {
            let Some(&c) = self.chars.get(self.at) else {
                self.at = saved;
                return Tok::Lit('[');
            };
            self.at += 1;
            match c {
                ']' if !first => break,
                '-' if !first && !in_range => in_range = true,
                c => {
                    match (in_range, ranges.last_mut()) {
                        (true, Some(last)) => last.1 = c,
                        _ => ranges.push((c, c)),
                    }
                    in_range = false;
                }
            }
            first = false;
        }
        if in_range {
            ranges.push(('-', '-'));
        }
        Tok::Class { negated, ranges }
    }

    /// `{a,b,...}`; unclosed, a literal `{`.
    fn alternatives(&mut self) -> Tok {
        let saved = self.at;
        let mut branches = Vec::new();
        loop {
            branches.push(self.sequence(true));
            match self.chars.get(self.at) {
                Some(',') => self.at += 1,
                Some('}') => {
                    self.at += 1;
                    return Tok::Alt(branches);
                }
                _ => {
                    self.at = saved;
                    return Tok::Lit('{');
                }
            }
        }
    }
}

/// Every form of `tokens` without `{...}` groups; `None` past `limit` forms.
fn expand_alternatives(tokens: &[Tok], limit: usize) -> Option<Vec<Vec<Tok>>> {
    let mut forms: Vec<Vec<Tok>> = vec![Vec::new()];
    for tok in tokens {
        match tok {
            Tok::Alt(branches) => {
                let mut next = Vec::new();
                for form in &forms {
                    for branch in branches {
                        let mut f = form.clone();
                        f.extend(branch.iter().cloned());
                        next.push(f);
                    }
                }
                if next.len() > limit {
                    return None;
                }
                forms = next;
            }
            tok => forms.iter_mut().for_each(|f| f.push(tok.clone())),
        }
    }
    Some(forms)
}

/// The rsync forms of one `{}`-free glob: a `**/` that may match no directory is written both
/// without it and as rsync's `**/`; a trailing `**` is rsync's `**`.
fn recursive_forms(tokens: &[Tok]) -> Option<Vec<Vec<Piece>>> {
    let mut forms: Vec<Vec<Piece>> = vec![Vec::new()];
    for (i, tok) in tokens.iter().enumerate() {
        let last = i + 1 == tokens.len();
        match tok {
            Tok::Recursive if !last => {
                let mut next = forms.clone();
                for form in &mut forms {
                    form.push(Piece::DoubleStar);
                    form.push(Piece::Lit(b'/'));
                }
                next.append(&mut forms);
                if next.len() > MAX_VARIANTS {
                    return None;
                }
                forms = next;
            }
            tok => {
                let pieces = pieces(tok);
                forms
                    .iter_mut()
                    .for_each(|f| f.extend(pieces.iter().cloned()));
            }
        }
    }
    Some(forms)
}

/// One rsync pattern matching at least what `tokens` match (for an exclusion with too many
/// forms): every `**/` becomes `**` (`/a/**b` matches `a/b`, `a/x/b`, and also `a/xb`), every
/// `{...}` group `*`, or `**` if a branch holds a `/`.
fn widened(tokens: &[Tok]) -> Vec<Piece> {
    let mut out = Vec::new();
    for tok in tokens {
        match tok {
            Tok::Recursive => out.push(Piece::DoubleStar),
            Tok::Alt(branches) => {
                let deep = branches.iter().flatten().any(Tok::deep);
                out.push(if deep { Piece::DoubleStar } else { Piece::Star });
            }
            tok => out.extend(pieces(tok)),
        }
    }
    out
}

fn pieces(tok: &Tok) -> Vec<Piece> {
    match tok {
        Tok::Lit(c) => {
            let mut buf = [0u8; 4];
            c.encode_utf8(&mut buf).bytes().map(Piece::Lit).collect()
        }
        Tok::Star => vec![Piece::Star],
        Tok::Quest => vec![Piece::Quest],
        Tok::Class { negated, ranges } => vec![Piece::Class {
            negated: *negated,
            ranges: ranges.clone(),
        }],
        Tok::Sep => vec![Piece::Lit(b'/')],
        Tok::Recursive => vec![Piece::DoubleStar],
        Tok::Alt(_) => vec![Piece::DoubleStar],
    }
}

/// rsync reads a backslash as an escape only in a pattern with a wildcard (`*`, `?`, `[`): then
/// every literal `*?[\` is escaped, otherwise the bytes go as they are.
fn render(pieces: &[Piece]) -> Vec<u8> {
    let wild = pieces
        .iter()
        .any(|p| !matches!(p, Piece::Lit(b) if !matches!(b, b'*' | b'?' | b'[')));
    // Adjacent stars would read as rsync's `**` (or `***`): one star is what they mean.
    let mut merged: Vec<&Piece> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match (merged.last(), piece) {
            (Some(Piece::Star | Piece::DoubleStar), Piece::Star) => continue,
            (Some(Piece::Star), Piece::DoubleStar) => {
                merged.pop();
            }
            _ => {}
        }
        merged.push(piece);
    }
    let mut out = Vec::new();
    for piece in merged {
        match piece {
            Piece::Lit(b) => {
                if wild && matches!(b, b'*' | b'?' | b'[' | b'\\') {
                    out.push(b'\\');
                }
                out.push(*b);
            }
            Piece::Star => out.push(b'*'),
            Piece::DoubleStar => out.extend_from_slice(b"**"),
            Piece::Quest => out.push(b'?'),
            Piece::Class { negated, ranges } => {
                out.push(b'[');
                if *negated {
                    out.push(b'!');
                }
                for &(lo, hi) in ranges {
                    push_class_char(&mut out, lo);
                    if hi != lo {
                        out.push(b'-');
                        push_class_char(&mut out, hi);
                    }
                }
                out.push(b']');
            }
        }
    }
    out
}

/// A character inside an rsync `[...]`, escaped so it is never `]`, a range, a negation or the
/// start of `[:class:]`.
fn push_class_char(out: &mut Vec<u8>, c: char) {
    if matches!(c, ']' | '[' | '\\' | '-' | '!' | '^') {
        out.push(b'\\');
    }
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(dir: &str, line: &str) -> Vec<String> {
        translate(Path::new(dir), line)
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect()
    }

    #[test]
    fn names_match_at_any_depth_below_their_file() {
        assert_eq!(rules("", "*.log"), ["P *.log"]);
        assert_eq!(rules("", "!keep.log"), ["R keep.log"]);
        assert_eq!(rules("app", ".env"), ["P /app/.env", "P /app/**/.env"]);
        assert_eq!(rules("a b", "*.o"), ["P /a b/*.o", "P /a b/**/*.o"]);
        assert_eq!(rules("", "**/x"), ["P x"]);
        assert_eq!(rules("", "target/"), ["P target/"]);
    }

    #[test]
    fn slashes_anchor_to_the_file_directory() {
        assert_eq!(rules("", "/build"), ["P /build"]);
        assert_eq!(rules("", "a/b"), ["P /a/b"]);
        assert_eq!(rules("sub", "/x/"), ["P /sub/x/"]);
        assert_eq!(rules("", "a/**/b"), ["P /a/b", "P /a/**/b"]);
        assert_eq!(rules("d", "a/**"), ["P /d/a/**"]);
        assert_eq!(rules("", "**"), ["P /**"]);
        assert_eq!(rules("", "a**b"), ["P a*b"], "** inside a name is *");
    }

    #[test]
    fn escapes_and_spaces() {
        assert_eq!(rules("", "\\#hash"), ["P #hash"]);
        assert_eq!(rules("", "\\!bang"), ["P !bang"]);
        assert_eq!(rules("", "# comment"), Vec::<String>::new());
        assert_eq!(rules("", "sp  "), ["P sp"]);
        assert_eq!(rules("", "sp\\ "), ["P sp "]);
        assert_eq!(rules("", "a\\*"), ["P a\\*"]);
        assert_eq!(rules("", "x\\y"), ["P xy"]);
        assert_eq!(rules("w*", "a?"), ["P /w\\*/a?", "P /w\\*/**/a?"]);
        assert_eq!(rules("", "[!a-c]x"), ["P [!a-c]x"]);
        assert_eq!(rules("", "[]!]"), ["P [\\]\\!]"]);
        assert_eq!(rules("", "[abc"), ["P \\[abc"], "unclosed class is literal");
        assert_eq!(rules("", "{a,b}.c"), ["P a.c", "P b.c"]);
        assert_eq!(rules("", "!"), Vec::<String>::new());
    }

    #[test]
    fn too_many_forms_widen_a_protect_and_drop_a_risk() {
        let line = "{a,b,c}{d,e,f}/{g,h}";
        assert_eq!(rules("", line), ["P /*/*"]);
        assert_eq!(rules("", &format!("!{line}")), Vec::<String>::new());
    }
}
