//! Request-path normalisation: the single place that turns the path component
//! of a request target (RFC 3986 §3.3, `origin-form` of RFC 9112 §3.2.1) into
//! a [`NormalPath`].
//!
//! The normalised path is both what routes are matched against (its decoded
//! form) and what is forwarded upstream (its canonical percent-encoding), so
//! what is authorised is exactly what the backend sees.
//!
//! Anything ambiguous is refused rather than guessed at: invalid
//! percent-encoding (RFC 3986 §2.1), double encoding (`%25` + two hex digits,
//! for backends that decode twice), encoded `/` `\` `;` `?` `#`, control
//! characters, raw `\` and `;` (path separators or parameter delimiters for
//! some servers), dot segments (RFC 3986 §3.3, §5.2.4), segments ending in a
//! dot or a space (dropped by some servers), invalid UTF-8, and a non-ASCII
//! character whose compatibility form (NFKC, Unicode UAX #15) holds an ASCII
//! character (`‥` U+2025, `／` U+FF0F, `．` U+FF0E, `ａ`, `ﬁ`): a backend that
//! normalises Unicode would read `..`, `/` or `admin` where the gateway saw
//! none. Empty segments are collapsed.
//!
//! The canonical encoding keeps `unreserved` (RFC 3986 §2.3) and the
//! `sub-delims` / `:` / `@` allowed in `pchar` (RFC 3986 §3.3, except `;`)
//! literal and percent-encodes every other byte with uppercase hex (§2.1).
//!
//! This module never resolves dot segments, never decodes more than once,
//! never looks at the query, and never panics or allocates beyond the two
//! strings of the result. A pure-ASCII path skips the Unicode checks. A path
//! that is already normal (literal bytes and single `/` separators only, no
//! segment ending in a dot) decodes and encodes to itself: one scan finds
//! that, and its result holds one string.

use std::fmt;

use http::uri::{PathAndQuery, Uri};

use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// Longest accepted path, in bytes, as received.
pub const MAX_PATH_LEN: usize = 8192;

/// Why a request path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("path does not start with '/'")]
    NotOriginForm,
    /// The path is longer than [`MAX_PATH_LEN`] bytes.
    #[error("path longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in path")]
    BadPercentEncoding,
    /// A `%` followed by two hex digits once decoded (e.g. `%2541`).
    #[error("double percent-encoding in path")]
    DoubleEncoding,
    /// A percent-encoded `/`, `\`, `;`, `?` or `#`.
    #[error("encoded '{0}' in path")]
    EncodedDelimiter(char),
    /// A control character (C0, DEL or C1), raw or encoded.
    #[error("control character in path")]
    ControlCharacter,
    /// A raw `\`.
    #[error("backslash in path")]
    Backslash,
    /// A raw `;`.
    #[error("semicolon in path")]
    Semicolon,
    /// A raw `?` or `#` (the query and fragment must already be split off).
    #[error("unencoded '{0}' in path")]
    UnencodedDelimiter(char),
    /// A raw byte outside ASCII.
    #[error("unencoded non-ascii byte in path")]
    NonAscii,
    /// A `.` or `..` segment, raw or encoded.
    #[error("dot segment in path")]
    DotSegment,
    /// A segment whose last character is a dot or a space.
    #[error("path segment ends in a dot or space")]
    TrailingDotOrSpace,
    /// The decoded path is not valid UTF-8.
    #[error("path is not valid utf-8 once decoded")]
    InvalidUtf8,
    /// A non-ASCII character whose NFKC form holds an ASCII character.
    #[error("path holds a unicode compatibility character for {0:?}")]
    CompatibilityCharacter(char),
}

/// A path accepted by [`normalise`]: absolute, without dot segments, empty
/// segments or ambiguous encodings.
#[derive(Debug, Clone)]
pub struct NormalPath {
    decoded: Text,
    /// `None` when it equals `decoded`.
    encoded: Option<String>,
}

/// The decoded path's text: the request target's own bytes when they were
/// normal already (shared with the request, not copied: a copy was an
/// allocation and a free on every request), else a string of its own.
#[derive(Debug, Clone)]
enum Text {
    Owned(String),
    /// The target's path (`PathAndQuery::path`).
    Shared(PathAndQuery),
}

impl Text {
    fn as_str(&self) -> &str {
        match self {
            Text::Owned(s) => s,
            Text::Shared(pq) => pq.path(),
        }
    }
}

impl PartialEq for NormalPath {
    fn eq(&self, other: &NormalPath) -> bool {
        self.decoded() == other.decoded() && self.encoded == other.encoded
    }
}

impl Eq for NormalPath {}

impl std::hash::Hash for NormalPath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.decoded().hash(state);
        self.encoded.hash(state);
    }
}

impl NormalPath {
    /// The canonical percent-encoded form: the path forwarded upstream.
    pub fn as_str(&self) -> &str {
        self.encoded.as_deref().unwrap_or(self.decoded())
    }

    /// The decoded form, used for matching. Starts with `/`.
    pub fn decoded(&self) -> &str {
        self.decoded.as_str()
    }

    /// The decoded segments after the leading `/`; a trailing slash is not a
    /// segment (`/` yields none, `/a/b/` yields `a`, `b`). Never empty strings.
    pub fn segments(&self) -> Segments<'_> {
        let decoded = self.decoded();
        let inner = decoded.strip_prefix('/').unwrap_or(decoded);
        let inner = inner.strip_suffix('/').unwrap_or(inner);
        Segments { rest: inner }
    }

    /// Whether the path ends in `/` after at least one segment (`/` → false).
    pub fn has_trailing_slash(&self) -> bool {
        let decoded = self.decoded();
        decoded.len() > 1 && decoded.ends_with('/')
    }
}

impl fmt::Display for NormalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Iterator over the decoded segments of a [`NormalPath`].
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        match self.rest.split_once('/') {
            Some((head, tail)) => {
                self.rest = tail;
                Some(head)
            }
            None => Some(std::mem::take(&mut self.rest)),
        }
    }
}

impl std::iter::FusedIterator for Segments<'_> {}

/// Normalises the path component of a request target, exactly as received
/// and without its query. See the module documentation for the rules.
pub fn normalise(raw_path: &str) -> Result<NormalPath, PathError> {
    normalise_text(raw_path, || Text::Owned(raw_path.to_owned()))
}

/// [`normalise`] of a request target's path: a path that is normal already
/// shares the target's bytes.
pub fn normalise_target(target: &Uri) -> Result<NormalPath, PathError> {
    match target.path_and_query() {
        Some(pq) => normalise_text(pq.path(), || Text::Shared(pq.clone())),
        None => normalise(target.path()),
    }
}

/// [`normalise`], keeping `raw_path` as `as_is` gives it when it is normal.
fn normalise_text(raw_path: &str, as_is: impl FnOnce() -> Text) -> Result<NormalPath, PathError> {
    let raw = raw_path.as_bytes();
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let Some((&b'/', rest)) = raw.split_first() else {
        return Err(PathError::NotOriginForm);
    };
    if already_normal(rest) {
        return Ok(NormalPath {
            decoded: as_is(),
            encoded: None,
        });
    }
    normalise_fully(raw, rest)
}

/// Whether a path (`rest`: after its leading `/`) is normal as received:
/// only literal bytes (see [`is_literal`]) and `/`, no empty segment but a
/// trailing slash, no segment ending in a dot (so no dot segment). Such a
/// path decodes and encodes to itself under the full rules.
fn already_normal(rest: &[u8]) -> bool {
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        match segment.last() {
            // `/` alone, or a trailing slash.
            None if segments.peek().is_none() => {}
            None | Some(b'.') => return false,
            Some(_) => {}
        }
        if !segment.iter().all(|&b| LITERAL[usize::from(b)]) {
            return false;
        }
    }
    true
}

/// The full rules, byte by byte (`rest`: `raw` after its leading `/`).
fn normalise_fully(raw: &[u8], rest: &[u8]) -> Result<NormalPath, PathError> {
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    for segment in rest.split(|&b| b == b'/') {
        if segment.is_empty() {
            continue;
        }
        decoded.push(b'/');
        let start = decoded.len();
        decode_segment(segment, &mut decoded)?;
        check_decoded_segment(decoded.get(start..).unwrap_or_default())?;
    }
    if decoded.is_empty() || (raw.len() > 1 && raw.ends_with(b"/")) {
        decoded.push(b'/');
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::InvalidUtf8)?;
    if !decoded.is_ascii() {
        check_unicode(&decoded)?;
    }
    let encoded = encode(&decoded);
    // The forwarded form may be up to three times the raw one (`^` → `%5E`):
    // cap it too, so that what is forwarded would itself be accepted.
    if encoded.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let encoded = (encoded != decoded).then_some(encoded);
    Ok(NormalPath {
        decoded: Text::Owned(decoded),
        encoded,
    })
}

/// Checks a decoded path that holds non-ASCII characters: C1 controls (ASCII
/// ones were refused byte by byte) and compatibility characters.
fn check_unicode(decoded: &str) -> Result<(), PathError> {
    if decoded.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    match compatibility_ascii(decoded) {
        Some(ascii) => Err(PathError::CompatibilityCharacter(ascii)),
        None => Ok(()),
    }
}

/// The first ASCII character that the NFKC form of a non-ASCII character of
/// `text` holds, if any (`‥` → `.`, `ａ` → `a`).
pub(crate) fn compatibility_ascii(text: &str) -> Option<char> {
    // Most non-ASCII text (CJK, precomposed accents) is already NFKC.
    if text.is_ascii() || is_nfkc_quick(text.chars()) == IsNormalized::Yes {
        return None;
    }
    // Character by character, as DESIGN words it: composition never yields
    // ASCII, so text passing this check has no ASCII in its NFKC form
    // beyond its own.
    text.chars()
        .filter(|c| !c.is_ascii())
        .find_map(|c| std::iter::once(c).nfkc().find(char::is_ascii))
}

/// Percent-decodes one raw segment (no `/` in it) onto `out`, refusing
/// anything ambiguous byte by byte.
fn decode_segment(segment: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    let mut i = 0;
    while let Some(&b) = segment.get(i) {
        if b == b'%' {
            let byte = segment
                .get(i + 1..i + 3)
                .and_then(hex_pair)
                .ok_or(PathError::BadPercentEncoding)?;
            check_encoded_byte(byte)?;
            out.push(byte);
            i += 3;
        } else {
            check_raw_byte(b)?;
            out.push(b);
            i += 1;
        }
    }
    Ok(())
}

fn check_raw_byte(b: u8) -> Result<(), PathError> {
    match b {
        b'\\' => Err(PathError::Backslash),
        b';' => Err(PathError::Semicolon),
        b'?' | b'#' => Err(PathError::UnencodedDelimiter(char::from(b))),
        0x00..=0x1F | 0x7F => Err(PathError::ControlCharacter),
        0x80..=0xFF => Err(PathError::NonAscii),
        _ => Ok(()),
    }
}

fn check_encoded_byte(b: u8) -> Result<(), PathError> {
    match b {
        b'/' | b'\\' | b';' | b'?' | b'#' => Err(PathError::EncodedDelimiter(char::from(b))),
        0x00..=0x1F | 0x7F => Err(PathError::ControlCharacter),
        _ => Ok(()),
    }
}

/// Checks one decoded, non-empty segment as a whole.
fn check_decoded_segment(segment: &[u8]) -> Result<(), PathError> {
    if segment == b"." || segment == b".." {
        return Err(PathError::DotSegment);
    }
    if matches!(segment.last(), Some(b'.' | b' ')) {
        return Err(PathError::TrailingDotOrSpace);
    }
    if has_percent_escape(segment) {
        return Err(PathError::DoubleEncoding);
    }
    Ok(())
}

/// Whether `bytes` contains `%` followed by two hex digits (also for query
/// keys, in `routes::query`).
pub(crate) fn has_percent_escape(bytes: &[u8]) -> bool {
    bytes
        .windows(3)
        .any(|w| w.first() == Some(&b'%') && w.get(1..3).and_then(hex_pair).is_some())
}

/// Decodes exactly two hex digits (either case).
pub(crate) fn hex_pair(pair: &[u8]) -> Option<u8> {
    match pair {
        &[hi, lo] => Some((hex_digit(hi)? << 4) | hex_digit(lo)?),
        _ => None,
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// [`is_literal`] for every byte.
static LITERAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = is_literal(b as u8);
        b += 1;
    }
    table
};

/// Bytes written literally in the canonical form: `unreserved`, the
/// `sub-delims` but `;`, `:` and `@` (RFC 3986 §2.3, §3.3).
const fn is_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

/// Canonical encoding of a decoded path; `/` stays the separator.
fn encode(decoded: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let len = decoded
        .bytes()
        .map(|b| if b == b'/' || is_literal(b) { 1 } else { 3 })
        .sum();
    let mut out = String::with_capacity(len);
    for b in decoded.bytes() {
        if b == b'/' || is_literal(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use PathError as E;

    /// (raw path, expected canonical form or error).
    const TABLE: &[(&str, Result<&str, PathError>)] = &[
        // Accepted.
        ("/", Ok("/")),
        ("//", Ok("/")),
        ("///", Ok("/")),
        ("/a", Ok("/a")),
        ("/a/b", Ok("/a/b")),
        ("/a/b/", Ok("/a/b/")),
        ("//a///b", Ok("/a/b")),
        ("/a//", Ok("/a/")),
        ("/%61dmin", Ok("/admin")),
        ("/%41%42", Ok("/AB")),
        ("/a%20b", Ok("/a%20b")),
        ("/a b", Ok("/a%20b")),
        ("/100%25", Ok("/100%25")),
        ("/%25%25", Ok("/%25%25")),
        ("/x%25y", Ok("/x%25y")),
        ("/%25a", Ok("/%25a")),
        ("/caf%C3%A9", Ok("/caf%C3%A9")),
        ("/caf%c3%a9", Ok("/caf%C3%A9")),
        (
            "/.well-known/acme-challenge/x",
            Ok("/.well-known/acme-challenge/x"),
        ),
        ("/org/foo.git/info/refs", Ok("/org/foo.git/info/refs")),
        ("/..x", Ok("/..x")),
        ("/a.b", Ok("/a.b")),
        ("/%7Euser", Ok("/~user")),
        ("/a%2Db%2e%5F", Ok("/a-b._")),
        ("/~!$&'()*+,=:@", Ok("/~!$&'()*+,=:@")),
        ("/%3A%40%2B%26%3D", Ok("/:@+&=")),
        ("/{x}", Ok("/%7Bx%7D")),
        ("/a|b^c`d", Ok("/a%7Cb%5Ec%60d")),
        ("/[v6]", Ok("/%5Bv6%5D")),
        ("/a%22%3C%3E", Ok("/a%22%3C%3E")),
        ("/a\"<>", Ok("/a%22%3C%3E")),
        ("/%e2%82%ac", Ok("/%E2%82%AC")),
        // Non-ASCII whose NFKC form holds no ASCII.
        ("/alice/caf%C3%A9.git", Ok("/alice/caf%C3%A9.git")),
        ("/alice/cafe%CC%81.git", Ok("/alice/cafe%CC%81.git")),
        (
            "/%E6%97%A5%E6%9C%AC/%E8%AA%9E",
            Ok("/%E6%97%A5%E6%9C%AC/%E8%AA%9E"),
        ),
        ("/%E2%89%A0", Ok("/%E2%89%A0")),
        // Halfwidth katakana: compatibility, but its NFKC form is not ASCII.
        ("/%EF%BD%B1", Ok("/%EF%BD%B1")),
        // Compatibility characters that NFKC turns into ASCII (issue #16).
        (
            "/public/%E2%80%A5/admin",
            Err(E::CompatibilityCharacter('.')),
        ),
        (
            "/public/..%EF%BC%8Fadmin",
            Err(E::CompatibilityCharacter('/')),
        ),
        (
            "/public/%EF%BC%8E%EF%BC%8E/admin",
            Err(E::CompatibilityCharacter('.')),
        ),
        ("/%EF%BD%81dmin", Err(E::CompatibilityCharacter('a'))),
        ("/%EF%AC%81le", Err(E::CompatibilityCharacter('f'))),
        ("/x%C2%A0y", Err(E::CompatibilityCharacter(' '))),
        ("/%E2%84%AA", Err(E::CompatibilityCharacter('K'))),
        ("/caf%C3%A9/%EF%BD%81", Err(E::CompatibilityCharacter('a'))),
        ("/%EF%BC%BC", Err(E::CompatibilityCharacter('\\'))),
        // Not origin-form / too long.
        ("", Err(E::NotOriginForm)),
        ("a/b", Err(E::NotOriginForm)),
        ("*", Err(E::NotOriginForm)),
        ("http://h/x", Err(E::NotOriginForm)),
        ("%2Fa", Err(E::NotOriginForm)),
        // Percent-encoding.
        ("/a%", Err(E::BadPercentEncoding)),
        ("/a%4", Err(E::BadPercentEncoding)),
        ("/a%zz", Err(E::BadPercentEncoding)),
        ("/a%%41", Err(E::BadPercentEncoding)),
        ("/a%4g", Err(E::BadPercentEncoding)),
        ("/%2541", Err(E::DoubleEncoding)),
        ("/%252e%252e/x", Err(E::DoubleEncoding)),
        ("/%252F", Err(E::DoubleEncoding)),
        ("/%25%34%31", Err(E::DoubleEncoding)),
        ("/%254%31", Err(E::DoubleEncoding)),
        // Delimiters and controls.
        ("/a%2Fb", Err(E::EncodedDelimiter('/'))),
        ("/a%2fb", Err(E::EncodedDelimiter('/'))),
        ("/a%5Cb", Err(E::EncodedDelimiter('\\'))),
        ("/a%5cb", Err(E::EncodedDelimiter('\\'))),
        ("/a%3Bb", Err(E::EncodedDelimiter(';'))),
        ("/a%3Fb", Err(E::EncodedDelimiter('?'))),
        ("/a%23b", Err(E::EncodedDelimiter('#'))),
        ("/a%00", Err(E::ControlCharacter)),
        ("/a%0A", Err(E::ControlCharacter)),
        ("/a%0d%0a", Err(E::ControlCharacter)),
        ("/a%1F", Err(E::ControlCharacter)),
        ("/a%7f", Err(E::ControlCharacter)),
        ("/a%C2%85", Err(E::ControlCharacter)),
        ("/a\tb", Err(E::ControlCharacter)),
        ("/a\0", Err(E::ControlCharacter)),
        ("/a\\b", Err(E::Backslash)),
        ("/admin;x/y", Err(E::Semicolon)),
        ("/a;", Err(E::Semicolon)),
        ("/a?b", Err(E::UnencodedDelimiter('?'))),
        ("/a#b", Err(E::UnencodedDelimiter('#'))),
        ("/caf\u{e9}", Err(E::NonAscii)),
        // Dot segments.
        ("/.", Err(E::DotSegment)),
        ("/..", Err(E::DotSegment)),
        ("/a/../b", Err(E::DotSegment)),
        ("/a/./b", Err(E::DotSegment)),
        ("/a/..", Err(E::DotSegment)),
        ("/a/../", Err(E::DotSegment)),
        ("/%2e", Err(E::DotSegment)),
        ("/%2e%2E", Err(E::DotSegment)),
        ("/.%2E/x", Err(E::DotSegment)),
        ("/%2E./x", Err(E::DotSegment)),
        // Trailing dot or space.
        ("/admin./x", Err(E::TrailingDotOrSpace)),
        ("/admin%20", Err(E::TrailingDotOrSpace)),
        ("/admin%2e", Err(E::TrailingDotOrSpace)),
        ("/x..", Err(E::TrailingDotOrSpace)),
        ("/.../x", Err(E::TrailingDotOrSpace)),
        ("/a /b", Err(E::TrailingDotOrSpace)),
        // UTF-8.
        ("/%FF", Err(E::InvalidUtf8)),
        ("/%C0%AF", Err(E::InvalidUtf8)),
        ("/%C3", Err(E::InvalidUtf8)),
        ("/%ED%A0%80", Err(E::InvalidUtf8)),
    ];

    #[test]
    fn table() {
        for (raw, want) in TABLE {
            let got = normalise(raw).map(|p| p.as_str().to_owned());
            assert_eq!(got.as_deref().map_err(Clone::clone), *want, "input {raw:?}");
        }
    }

    #[test]
    fn length_cap() {
        let ok = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert!(normalise(&ok).is_ok());
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(normalise(&long), Err(PathError::TooLong));
    }

    /// Found by the `path` fuzz target (fuzz/regressions/path): a raw path
    /// under the cap whose forwarded form is over it was accepted, so
    /// normalise was not idempotent and the backend got a longer path than
    /// the gateway accepts.
    #[test]
    fn forwarded_form_is_capped_too() {
        let raw = format!("/{}", "^".repeat(MAX_PATH_LEN / 3 + 1));
        assert_eq!(normalise(&raw), Err(PathError::TooLong));
        let fits = format!("/{}", "^".repeat((MAX_PATH_LEN - 1) / 3));
        let p = normalise(&fits).unwrap();
        assert_eq!(normalise(p.as_str()), Ok(p.clone()));
        let found = include_bytes!("../fuzz/regressions/path/forwarded-form-longer-than-cap");
        if let Ok(p) = normalise(std::str::from_utf8(found).unwrap()) {
            assert_eq!(normalise(p.as_str()), Ok(p.clone()));
        }
    }

    #[test]
    fn accessors() {
        let p = normalise("//a/%62//c%20d/").unwrap();
        assert_eq!(p.decoded(), "/a/b/c d/");
        assert_eq!(p.as_str(), "/a/b/c%20d/");
        assert_eq!(p.to_string(), "/a/b/c%20d/");
        assert_eq!(p.segments().collect::<Vec<_>>(), ["a", "b", "c d"]);
        assert!(p.has_trailing_slash());

        let root = normalise("/").unwrap();
        assert_eq!(root.segments().count(), 0);
        assert!(!root.has_trailing_slash());

        let plain = normalise("/a/b").unwrap();
        assert_eq!(plain.segments().collect::<Vec<_>>(), ["a", "b"]);
        assert!(!plain.has_trailing_slash());
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            PathError::EncodedDelimiter('/').to_string(),
            "encoded '/' in path"
        );
        assert_eq!(PathError::DotSegment.to_string(), "dot segment in path");
        assert_eq!(
            PathError::DoubleEncoding.to_string(),
            "double percent-encoding in path"
        );
        assert_eq!(
            PathError::TooLong.to_string(),
            "path longer than 8192 bytes"
        );
    }

    /// Reference decoder for the canonical form.
    fn percent_decode(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(hex_pair(&b[i + 1..i + 3]).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    fn tricky_path() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "/",
            "/",
            "a",
            "B",
            ".",
            "..",
            "%2e",
            "%2E",
            "%2F",
            "%25",
            "%41",
            "%61",
            "%20",
            " ",
            "%C3%A9",
            "%c3",
            "%FF",
            "%",
            "%4",
            "~",
            "{",
            ";",
            "\\",
            "%00",
            "%7f",
            "b.",
            "%3b",
            "+",
            ":",
            "@",
            "%7E",
            "x%2",
            "git",
            "%E2%80%A5",
            "%EF%BC%8F",
            "%EF%BC%8E",
            "%EF%BD%81",
            "%EF%AC%81",
            "e%CC%81",
            "%CC%81",
            "%E6%97%A5",
            "%E2%89%A0",
            "%C2%A0",
        ]);
        prop::collection::vec(pieces, 0..14).prop_map(|v| format!("/{}", v.concat()))
    }

    fn any_path() -> impl Strategy<Value = String> {
        prop_oneof![
            tricky_path(),
            "/[a-zA-Z0-9%./;?#~ {}|\\\\-]{0,40}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn never_panics(s in any_path()) {
            let _ = normalise(&s);
        }

        #[test]
        fn no_dot_or_empty_segment(s in any_path()) {
            if let Ok(p) = normalise(&s) {
                prop_assert!(p.decoded().starts_with('/'));
                prop_assert!(!p.decoded().contains("//"));
                for seg in p.segments() {
                    prop_assert!(!seg.is_empty());
                    prop_assert!(seg != "." && seg != "..");
                    prop_assert!(!seg.ends_with('.') && !seg.ends_with(' '));
                }
            }
        }

        #[test]
        fn idempotent(s in any_path()) {
            if let Ok(p) = normalise(&s) {
                prop_assert_eq!(normalise(p.as_str()), Ok(p.clone()));
                prop_assert_eq!(normalise(p.as_str()).map(|q| q.as_str().to_owned()),
                    Ok(p.as_str().to_owned()));
            }
        }

        /// A backend applying NFKC reads no ASCII character the gateway did
        /// not see: the NFKC form's ASCII is a subsequence of the path's.
        #[test]
        fn nfkc_adds_no_ascii(s in any_path()) {
            if let Ok(p) = normalise(&s) {
                let mut own = p.decoded().chars().filter(char::is_ascii);
                for c in p.decoded().nfkc().filter(char::is_ascii) {
                    prop_assert!(own.any(|o| o == c), "{:?} gains {:?}", p.decoded(), c);
                }
            }
        }

        /// A request target's path normalises as its text does, whether it
        /// was normal already (shared) or not (a string of its own), and the
        /// two forms of one path are equal and hash alike.
        #[test]
        fn a_targets_path_normalises_as_its_text(s in any_path(), query in any::<bool>()) {
            let target = if query { format!("{s}?a=/b") } else { s.clone() };
            if let Ok(uri) = target.parse::<Uri>() {
                let shared = normalise_target(&uri);
                prop_assert_eq!(&shared, &normalise(uri.path()));
                if let Ok(p) = shared {
                    let state = std::collections::hash_map::RandomState::new();
                    let hash = |p: &NormalPath| {
                        use std::hash::BuildHasher;
                        state.hash_one(p)
                    };
                    if p.encoded.is_none() {
                        let owned = normalise(p.decoded()).unwrap();
                        prop_assert_eq!(&owned, &p);
                        prop_assert_eq!(hash(&owned), hash(&p));
                    }
                }
            }
        }

        /// The one-scan path for normal paths answers as the full rules do.
        #[test]
        fn already_normal_paths_normalise_fully_to_themselves(s in any_path()) {
            if let Some((&b'/', rest)) = s.as_bytes().split_first() {
                if s.len() <= MAX_PATH_LEN && already_normal(rest) {
                    let full = normalise_fully(s.as_bytes(), rest);
                    prop_assert_eq!(full.as_ref().map(|p| (p.decoded(), p.as_str())),
                        Ok((s.as_str(), s.as_str())));
                    prop_assert_eq!(full, normalise(&s));
                }
            }
        }

        #[test]
        fn canonical_decodes_to_decoded(s in any_path()) {
            if let Ok(p) = normalise(&s) {
                prop_assert_eq!(percent_decode(p.as_str()), p.decoded().as_bytes());
                prop_assert!(p.as_str().bytes().all(|b| b == b'/' || b == b'%' || is_literal(b)
                    || b.is_ascii_hexdigit()));
            }
        }
    }
}
