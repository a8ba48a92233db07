//! Route path patterns from the config file, and matching them against a
//! [`NormalPath`].
//!
//! A pattern is matched segment by segment (RFC 3986 §3.3 `segment`) against
//! the *decoded* segments of the normalised path, case-sensitively:
//!
//! - a literal segment matches itself;
//! - `{name}` or `*` matches exactly one non-empty segment; a capture may
//!   carry a literal prefix and/or suffix inside its segment (`{repo}.git`,
//!   `v{n}`), and then needs a non-empty capture (`{repo}.git` does not match
//!   `.git`);
//! - `**`, only as the whole last segment, matches zero or more segments
//!   (`/api/**` matches `/api`, `/api/` and `/api/x/y`).
//!
//! A trailing slash is significant: `/a/b` matches `/a/b` but not `/a/b/`,
//! `/a/b/` matches `/a/b/` but not `/a/b`, and the pattern `/` matches only
//! `/`. A pattern ending in `**` takes a trailing slash like any other path
//! below it (`/api/**/` is `/api/**`). Backends differ on whether `/a/` is
//! `/a`, so `Routes::find` matches a path ending in `/` twice, with and
//! without the slash (see `routes.rs`).
//!
//! Literal text must be something [`crate::path::normalise`] could produce
//! as a decoded segment: no `.`/`..`, no `%` (patterns are written decoded),
//! no `\` `;` `?` `#` or control characters, no trailing dot or space, no
//! compatibility character whose NFKC form holds ASCII (`ａ`).
//!
//! This module never decodes or normalises paths itself, never allocates
//! while matching, and never panics.

use std::fmt;

use crate::path::NormalPath;

/// Why a route path pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern does not start with `/`.
    #[error("route path must start with '/'")]
    NotAbsolute,
    /// Two slashes in a row (`/a//b`).
    #[error("empty segment ('//') in route path")]
    EmptySegment,
    /// `**` followed by more segments.
    #[error("'**' is only allowed as the last segment")]
    DoubleStarNotLast,
    /// `*` inside a segment with other text (`*.git`, `a**`).
    #[error("'*' must be a whole segment, found {segment:?}")]
    MisplacedStar { segment: String },
    /// A `{` without `}` or the other way round.
    #[error("unbalanced brace in segment {segment:?}")]
    UnbalancedBrace { segment: String },
    /// More than one `{name}` in a segment.
    #[error("more than one capture in segment {segment:?}")]
    MultipleCaptures { segment: String },
    /// A capture name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid capture name in segment {segment:?} (expected [A-Za-z_][A-Za-z0-9_]*)")]
    BadCaptureName { segment: String },
    /// The same capture name twice in one pattern.
    #[error("capture {{{name}}} appears more than once")]
    DuplicateCapture { name: String },
    /// A `.` or `..` segment.
    #[error("dot segment {segment:?} in route path")]
    DotSegment { segment: String },
    /// A segment ending in a dot or a space: no normalised path has one.
    #[error("segment {segment:?} ends in a dot or space")]
    TrailingDotOrSpace { segment: String },
    /// A `%`: patterns are matched against the decoded path.
    #[error(
        "'%' in segment {segment:?}: route paths match the decoded path, write characters unencoded"
    )]
    PercentSign { segment: String },
    /// A character no normalised path contains (`\` `;` `?` `#`, controls).
    #[error("character {character:?} not allowed in segment {segment:?}")]
    ForbiddenCharacter { segment: String, character: char },
}

/// One segment of a pattern, other than a final `**`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches exactly this decoded segment.
    Literal(String),
    /// Matches `prefix`, then at least one byte, then `suffix`. `*` is a
    /// capture without name, prefix or suffix.
    Capture {
        name: Option<String>,
        prefix: String,
        suffix: String,
    },
}

impl Segment {
    fn matches(&self, segment: &str) -> bool {
        match self {
            Segment::Literal(literal) => literal == segment,
            Segment::Capture { prefix, suffix, .. } => {
                segment.len() > prefix.len().saturating_add(suffix.len())
                    && segment.starts_with(prefix.as_str())
                    && segment.ends_with(suffix.as_str())
            }
        }
    }

    /// Sound: true only if every segment `other` matches, `self` matches.
    fn covers(&self, other: &Segment) -> bool {
        match (self, other) {
            (Segment::Literal(a), Segment::Literal(b)) => a == b,
            (Segment::Literal(_), Segment::Capture { .. }) => false,
            (Segment::Capture { .. }, Segment::Literal(b)) => self.matches(b),
            (
                Segment::Capture { prefix, suffix, .. },
                Segment::Capture {
                    prefix: other_prefix,
                    suffix: other_suffix,
                    ..
                },
            ) => {
                // Every `p2 X s2` (X non-empty) is `p Y s` with Y non-empty.
                other_prefix.starts_with(prefix.as_str()) && other_suffix.ends_with(suffix.as_str())
            }
        }
    }
}

/// The place of one named capture in a [`Pattern`], to read its value out of
/// a path the pattern matched ([`CaptureAt::value`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureAt {
    index: usize,
    prefix: usize,
    suffix: usize,
}

impl CaptureAt {
    /// The captured text of `path`, which the pattern must have matched:
    /// the decoded segment without the capture's literal prefix and suffix.
    /// Never empty, never holds a `/`. Does not allocate.
    pub fn value<'p>(&self, path: &'p NormalPath) -> Option<&'p str> {
        let segment = path.segments().nth(self.index)?;
        let end = segment.len().checked_sub(self.suffix)?;
        segment.get(self.prefix..end).filter(|v| !v.is_empty())
    }
}

/// A parsed route path pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    segments: Vec<Segment>,
    /// Ends in `**`.
    rest: bool,
    /// Ends in `/` after at least one segment (and not in `**`): matches only
    /// paths that end in `/`.
    slash: bool,
}

impl Pattern {
    /// Parses a route path pattern from the config file.
    pub fn parse(source: &str) -> Result<Pattern, PatternError> {
        let body = source.strip_prefix('/').ok_or(PatternError::NotAbsolute)?;
        let mut pattern = Pattern {
            source: source.to_owned(),
            segments: Vec::new(),
            rest: false,
            slash: false,
        };
        if body.is_empty() {
            return Ok(pattern);
        }
        let (body, slash) = match body.strip_suffix('/') {
            Some(body) => (body, true),
            None => (body, false),
        };
        let mut names: Vec<&str> = Vec::new();
        let mut parts = body.split('/').peekable();
        while let Some(part) = parts.next() {
            if part.is_empty() {
                return Err(PatternError::EmptySegment);
            }
            if part == "**" {
                if parts.peek().is_some() {
                    return Err(PatternError::DoubleStarNotLast);
                }
                pattern.rest = true;
                return Ok(pattern);
            }
            let segment = parse_segment(part)?;
            if let Segment::Capture { name: Some(_), .. } = segment {
                let name = capture_name(part);
                if names.contains(&name) {
                    return Err(PatternError::DuplicateCapture {
                        name: name.to_owned(),
                    });
                }
                names.push(name);
            }
            pattern.segments.push(segment);
        }
        pattern.slash = slash;
        Ok(pattern)
    }

    /// Whether the normalised path, as it is, matches. Does not allocate.
    pub fn matches(&self, path: &NormalPath) -> bool {
        self.matches_slash(path, path.has_trailing_slash())
    }

    /// Whether the path's segments match, the path taken to end in `/` when
    /// `slash` is true (so a path ending in `/` can also be matched without
    /// it). Does not allocate.
    pub fn matches_slash(&self, path: &NormalPath, slash: bool) -> bool {
        let mut segments = path.segments();
        for wanted in &self.segments {
            match segments.next() {
                Some(segment) if wanted.matches(segment) => {}
                _ => return false,
            }
        }
        if self.rest {
            return true;
        }
        // `/` has no segment and no trailing slash.
        segments.next().is_none() && (slash && !self.segments.is_empty()) == self.slash
    }

    /// A request path this pattern matches, percent-encoded: each capture is
    /// `x` between its prefix and suffix, `**` is nothing.
    pub fn example(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(literal) => percent_encode(literal, &mut out),
                Segment::Capture { prefix, suffix, .. } => {
                    percent_encode(prefix, &mut out);
                    out.push('x');
                    percent_encode(suffix, &mut out);
                }
            }
        }
        if out.is_empty() || self.slash {
            out.push('/');
        }
        out
    }

    /// Whether the pattern ends in `/` (and not in `**`).
    pub fn has_trailing_slash(&self) -> bool {
        self.slash
    }

    /// Sound, not complete: true only if every path `other` matches is
    /// matched by `self`; may answer false when unsure.
    pub fn covers(&self, other: &Pattern) -> bool {
        let lengths_fit = if self.rest {
            other.segments.len() >= self.segments.len()
        } else {
            !other.rest && other.segments.len() == self.segments.len() && other.slash == self.slash
        };
        lengths_fit
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| a.covers(b))
    }

    /// Where the capture `name` sits: its segment's index and the lengths of
    /// the literal prefix and suffix around it. `None` when the pattern has
    /// no such capture.
    pub fn capture(&self, name: &str) -> Option<CaptureAt> {
        self.segments
            .iter()
            .enumerate()
            .find_map(|(index, segment)| match segment {
                Segment::Capture {
                    name: Some(n),
                    prefix,
                    suffix,
                } if n == name => Some(CaptureAt {
                    index,
                    prefix: prefix.len(),
                    suffix: suffix.len(),
                }),
                _ => None,
            })
    }

    /// The pattern as written in the config file.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Appends `text` percent-encoded: everything but ASCII letters, digits and
/// `-._~` (RFC 3986 §2.3) as `%XX`.
pub(crate) fn percent_encode(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
}

/// Parses one non-empty segment other than `**`.
fn parse_segment(part: &str) -> Result<Segment, PatternError> {
    if part == "*" {
        return Ok(Segment::Capture {
            name: None,
            prefix: String::new(),
            suffix: String::new(),
        });
    }
    if part.contains('*') {
        return Err(PatternError::MisplacedStar {
            segment: part.to_owned(),
        });
    }
    let opens = part.matches('{').count();
    let closes = part.matches('}').count();
    if opens != closes {
        return Err(PatternError::UnbalancedBrace {
            segment: part.to_owned(),
        });
    }
    if opens > 1 {
        return Err(PatternError::MultipleCaptures {
            segment: part.to_owned(),
        });
    }
    let (Some(open), Some(close)) = (part.find('{'), part.find('}')) else {
        check_literal(part, part)?;
        return Ok(Segment::Literal(part.to_owned()));
    };
    let (Some(prefix), Some(name), Some(suffix)) = (
        part.get(..open),
        part.get(open + 1..close),
        part.get(close + 1..),
    ) else {
        // `}` before `{`.
        return Err(PatternError::UnbalancedBrace {
            segment: part.to_owned(),
        });
    };
    if !is_capture_name(name) {
        return Err(PatternError::BadCaptureName {
            segment: part.to_owned(),
        });
    }
    check_literal(prefix, part)?;
    check_literal(suffix, part)?;
    Ok(Segment::Capture {
        name: Some(name.to_owned()),
        prefix: prefix.to_owned(),
        suffix: suffix.to_owned(),
    })
}

/// The name between the braces of a segment already parsed as a capture.
fn capture_name(part: &str) -> &str {
    part.split_once('{')
        .and_then(|(_, after)| after.split_once('}'))
        .map_or("", |(name, _)| name)
}

fn is_capture_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks literal `text` (a whole segment, or a capture's prefix or suffix)
/// and the whole `segment` it belongs to.
fn check_literal(text: &str, segment: &str) -> Result<(), PatternError> {
    if let Some(character) = text
        .chars()
        .find(|&c| matches!(c, '%' | '\\' | ';' | '?' | '#') || c.is_control())
    {
        return Err(if character == '%' {
            PatternError::PercentSign {
                segment: segment.to_owned(),
            }
        } else {
            PatternError::ForbiddenCharacter {
                segment: segment.to_owned(),
                character,
            }
        });
    }
    if let Some(character) = text
        .chars()
        .find(|&c| crate::path::compatibility_ascii(c.encode_utf8(&mut [0; 4])).is_some())
    {
        return Err(PatternError::ForbiddenCharacter {
            segment: segment.to_owned(),
            character,
        });
    }
    if segment == "." || segment == ".." {
        return Err(PatternError::DotSegment {
            segment: segment.to_owned(),
        });
    }
    if segment.ends_with(['.', ' ']) {
        return Err(PatternError::TrailingDotOrSpace {
            segment: segment.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::normalise;
    use proptest::prelude::*;

    fn path(raw: &str) -> NormalPath {
        normalise(raw).unwrap()
    }

    fn pat(source: &str) -> Pattern {
        Pattern::parse(source).unwrap()
    }

    const MATCHES: &[(&str, &str, bool)] = &[
        ("/", "/", true),
        ("/", "//", true),
        ("/", "/a", false),
        ("/**", "/", true),
        ("/**", "/a", true),
        ("/**", "/a/b/c/", true),
        ("/api/**", "/api", true),
        ("/api/**", "/api/", true),
        ("/api/**", "/api/x/y", true),
        ("/api/**", "/apix", false),
        ("/api/**", "/", false),
        ("/api/**/", "/api/x", true),
        ("/a/b", "/a/b", true),
        ("/a/b", "/a/b/", false),
        ("/a/b", "//a//b", true),
        ("/a/b", "/a/b/c", false),
        ("/a/b", "/a", false),
        ("/a/b", "/A/b", false),
        ("/a/b/", "/a/b", false),
        ("/a/b/", "/a/b/", true),
        ("/a/b/", "//a//b//", true),
        ("/a/**", "/a/b/", true),
        ("/a/*/**", "/a/b/", true),
        ("/{x}", "/foo", true),
        ("/{x}", "/foo/", false),
        ("/{x}/", "/foo/", true),
        ("/{x}/", "/", false),
        ("/{x}", "/", false),
        ("/{x}", "/foo/bar", false),
        ("/*", "/foo", true),
        ("/*", "/", false),
        ("/a/*/c", "/a/b/c", true),
        ("/a/*/c", "/a//c", false),
        ("/a/*/c", "/a/b/d", false),
        ("/{repo}.git/info/refs", "/foo.git/info/refs", true),
        ("/{repo}.git/info/refs", "/.git/info/refs", false),
        ("/{repo}.git/info/refs", "/foo.gi/info/refs", false),
        ("/{repo}.git/info/refs", "/foo.git.git/info/refs", true),
        ("/{p}.tar.gz", "/x.tar.gz", true),
        ("/{p}.tar.gz", "/.tar.gz", false),
        ("/v{n}", "/v1", true),
        ("/v{n}", "/v", false),
        ("/v{n}", "/w1", false),
        ("/x-{a}-y", "/x--y", false),
        ("/x-{a}-y", "/x-1-y", true),
        ("/{a}/{b}/**", "/1/2", true),
        ("/{a}/{b}/**", "/1", false),
        ("/caf\u{e9}", "/caf%C3%A9", true),
        ("/a b", "/a%20b", true),
        ("/.well-known/**", "/.well-known/acme", true),
        ("/a/{r}.git", "/a/%7Br%7D.git", true),
    ];

    #[test]
    fn match_table() {
        for &(pattern, raw, want) in MATCHES {
            assert_eq!(pat(pattern).matches(&path(raw)), want, "{pattern} vs {raw}");
        }
    }

    #[test]
    fn parse_errors() {
        use PatternError as E;
        let seg = |s: &str| s.to_owned();
        let table: Vec<(&str, PatternError)> = vec![
            ("", E::NotAbsolute),
            ("a", E::NotAbsolute),
            ("a/b", E::NotAbsolute),
            ("/a//b", E::EmptySegment),
            ("//", E::EmptySegment),
            ("/a//", E::EmptySegment),
            ("/**/a", E::DoubleStarNotLast),
            ("/**/**", E::DoubleStarNotLast),
            (
                "/a**",
                E::MisplacedStar {
                    segment: seg("a**"),
                },
            ),
            (
                "/*.git",
                E::MisplacedStar {
                    segment: seg("*.git"),
                },
            ),
            (
                "/{x}*",
                E::MisplacedStar {
                    segment: seg("{x}*"),
                },
            ),
            ("/{x", E::UnbalancedBrace { segment: seg("{x") }),
            ("/x}", E::UnbalancedBrace { segment: seg("x}") }),
            (
                "/}x{",
                E::UnbalancedBrace {
                    segment: seg("}x{"),
                },
            ),
            (
                "/{{x}",
                E::UnbalancedBrace {
                    segment: seg("{{x}"),
                },
            ),
            (
                "/{a}{b}",
                E::MultipleCaptures {
                    segment: seg("{a}{b}"),
                },
            ),
            (
                "/{a}-{b}",
                E::MultipleCaptures {
                    segment: seg("{a}-{b}"),
                },
            ),
            ("/{}", E::BadCaptureName { segment: seg("{}") }),
            (
                "/{1a}",
                E::BadCaptureName {
                    segment: seg("{1a}"),
                },
            ),
            (
                "/{a-b}",
                E::BadCaptureName {
                    segment: seg("{a-b}"),
                },
            ),
            ("/{a}/{a}", E::DuplicateCapture { name: seg("a") }),
            ("/.", E::DotSegment { segment: seg(".") }),
            ("/..", E::DotSegment { segment: seg("..") }),
            ("/a/../b", E::DotSegment { segment: seg("..") }),
            (
                "/admin.",
                E::TrailingDotOrSpace {
                    segment: seg("admin."),
                },
            ),
            (
                "/admin ",
                E::TrailingDotOrSpace {
                    segment: seg("admin "),
                },
            ),
            (
                "/{x}.",
                E::TrailingDotOrSpace {
                    segment: seg("{x}."),
                },
            ),
            (
                "/a%20b",
                E::PercentSign {
                    segment: seg("a%20b"),
                },
            ),
            (
                "/{x}%",
                E::PercentSign {
                    segment: seg("{x}%"),
                },
            ),
            (
                "/a\\b",
                E::ForbiddenCharacter {
                    segment: seg("a\\b"),
                    character: '\\',
                },
            ),
            (
                "/a;b",
                E::ForbiddenCharacter {
                    segment: seg("a;b"),
                    character: ';',
                },
            ),
            (
                "/a?b",
                E::ForbiddenCharacter {
                    segment: seg("a?b"),
                    character: '?',
                },
            ),
            (
                "/a#b",
                E::ForbiddenCharacter {
                    segment: seg("a#b"),
                    character: '#',
                },
            ),
            (
                "/\u{ff41}dmin",
                E::ForbiddenCharacter {
                    segment: seg("\u{ff41}dmin"),
                    character: '\u{ff41}',
                },
            ),
            (
                "/a\0b",
                E::ForbiddenCharacter {
                    segment: seg("a\0b"),
                    character: '\0',
                },
            ),
        ];
        for (source, want) in table {
            assert_eq!(Pattern::parse(source).unwrap_err(), want, "{source:?}");
        }
    }

    #[test]
    fn parse_accepts() {
        for source in [
            "/",
            "/**",
            "/a/",
            "/api/**/",
            "/{repo}.git",
            "/v{n}",
            "/.well-known/x",
            "/foo.git",
            "/{_x9}",
            "/a b",
            "/~u/:@",
            "/caf\u{e9}",
        ] {
            let p = pat(source);
            assert_eq!(p.as_str(), source);
            assert_eq!(p.to_string(), source);
        }
    }

    #[test]
    fn error_messages() {
        let err = Pattern::parse("/a/admin.").unwrap_err();
        assert_eq!(err.to_string(), "segment \"admin.\" ends in a dot or space");
        let err = Pattern::parse("/{a}/{a}").unwrap_err();
        assert_eq!(err.to_string(), "capture {a} appears more than once");
    }

    #[test]
    fn literal_segments_are_normalise_fixed_points() {
        for source in ["/a", "/foo.git", "/.well-known", "/x-y_z~", "/:@!$&'()+,="] {
            assert!(Pattern::parse(source).is_ok());
            assert_eq!(normalise(source).unwrap().decoded(), source);
        }
    }

    const COVERS: &[(&str, &str, bool)] = &[
        ("/**", "/", true),
        ("/**", "/a", true),
        ("/**", "/a/**", true),
        ("/**", "/{x}.git", true),
        ("/a/*", "/a/{x}", true),
        ("/a/*", "/a/lit", true),
        ("/a/*", "/a/v{n}", true),
        ("/a/*", "/a/**", false),
        ("/a/*", "/a", false),
        ("/a/*", "/a/b/c", false),
        ("/a/{r}.git", "/a/x.git", true),
        ("/a/{r}.git", "/a/{s}.git", true),
        ("/a/{r}.git", "/a/{s}.tar.git", true),
        ("/a/{r}.git", "/a/.git", false),
        ("/a/{r}.git", "/a/*", false),
        ("/a/{r}.git", "/a/{s}", false),
        ("/a", "/a/", false),
        ("/a/", "/a", false),
        ("/a/", "/a/", true),
        ("/**", "/a/", true),
        ("/a/**", "/a/b/", true),
        ("/{x}/", "/a/", true),
        ("/a", "/b", false),
        ("/a", "/{x}", false),
        ("/a/**", "/a/b/**", true),
        ("/a/**", "/a", true),
        ("/a/**", "/**", false),
        ("/a/**", "/b/c", false),
        ("/{x}", "/v{n}", true),
        ("/v{n}", "/{x}", false),
        ("/v{n}", "/v1", true),
        ("/v{n}", "/v", false),
        ("/{x}", "/", false),
        ("/", "/", true),
        ("/", "/**", false),
    ];

    #[test]
    fn covers_table() {
        for &(a, b, want) in COVERS {
            assert_eq!(pat(a).covers(&pat(b)), want, "{a} covers {b}");
        }
    }

    /// Every sequence of up to `max` items of `vocab`.
    fn sequences<'a>(vocab: &[&'a str], max: usize) -> Vec<Vec<&'a str>> {
        let mut all = vec![vec![]];
        let mut last = vec![vec![]];
        for _ in 0..max {
            last = last
                .iter()
                .flat_map(|seq: &Vec<&'a str>| {
                    vocab.iter().map(move |s| {
                        let mut next = seq.clone();
                        next.push(*s);
                        next
                    })
                })
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn covers_is_sound_exhaustive() {
        let mut patterns = Vec::new();
        for segs in sequences(&["a", "*", "{x}.git", "v{n}", "a.git", "{z}1"], 2) {
            let body: String = segs
                .iter()
                .enumerate()
                .map(|(i, s)| format!("/{}", s.replace('}', &format!("{i}}}"))))
                .collect();
            patterns.push(pat(if body.is_empty() { "/" } else { &body }));
            patterns.push(pat(&format!("{body}/")));
            patterns.push(pat(&format!("{body}/**")));
        }
        let paths: Vec<NormalPath> = sequences(&["a", "a.git", ".git", "v1", "v", "11", "b"], 3)
            .iter()
            .flat_map(|segs| {
                let p = format!("/{}", segs.join("/"));
                [path(&p), path(&format!("{p}/"))]
            })
            .collect();
        let matched: Vec<Vec<bool>> = patterns
            .iter()
            .map(|p| paths.iter().map(|q| p.matches(q)).collect())
            .collect();
        for (a, a_matches) in patterns.iter().zip(&matched) {
            for (b, b_matches) in patterns.iter().zip(&matched) {
                if a.covers(b) {
                    for ((q, &in_a), &in_b) in paths.iter().zip(a_matches).zip(b_matches) {
                        assert!(!in_b || in_a, "{a} covers {b} but not {q}");
                    }
                }
            }
        }
    }

    fn pattern_source() -> impl Strategy<Value = String> {
        let segment = prop::sample::select(vec![
            "a", "b", "*", "{x}", "{y}.git", "a.git", "v{n}", "v1", "{z}1", ".{w}",
        ]);
        (
            prop::collection::vec(segment, 0..4),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(segs, rest, slash)| {
                // Rename captures to keep names unique.
                let mut out = String::new();
                for (i, s) in segs.iter().enumerate() {
                    out.push('/');
                    out.push_str(&s.replace('}', &format!("{i}}}")));
                }
                if rest {
                    out.push_str("/**");
                } else if slash || out.is_empty() {
                    out.push('/');
                }
                out
            })
    }

    fn path_source() -> impl Strategy<Value = String> {
        let segment = prop::sample::select(vec![
            "a", "b", "a.git", "v1", "v", "x.git", ".git", "vv", "11", ".a",
        ]);
        (prop::collection::vec(segment, 0..5), any::<bool>()).prop_map(|(segs, slash)| {
            format!("/{}{}", segs.join("/"), if slash { "/" } else { "" })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn covers_is_sound(a in pattern_source(), b in pattern_source(), p in path_source()) {
            let (a, b, p) = (pat(&a), pat(&b), path(&p));
            if a.covers(&b) && b.matches(&p) {
                prop_assert!(a.matches(&p), "{a} covers {b} but not {p}");
            }
        }

        #[test]
        fn covers_is_reflexive(a in pattern_source()) {
            let a = pat(&a);
            prop_assert!(a.covers(&a));
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = Pattern::parse(&s);
            let _ = Pattern::parse(&format!("/{s}"));
        }
    }
}
