//! Route query constraints: every listed key must occur exactly once in the
//! query (RFC 3986 §3.4) with exactly the listed value; other keys are
//! ignored.
//!
//! The query is split on `&` and on `;` (old CGI stacks treat `;` as a
//! separator, so `service=a;service=b` is a repeat), empty pieces are
//! skipped, and each piece is split into key and value at its first `=`;
//! both are decoded as `application/x-www-form-urlencoded` (`+` is a space,
//! `%XX` a byte, RFC 3986 §2.1) and must be UTF-8. Keys compare exactly.
//!
//! Anything that could let a backend see a listed key where we see none, or
//! see it twice, is refused rather than guessed at: a repeated listed key, and
//! any key that does not decode cleanly (invalid percent-encoding, invalid
//! UTF-8, a control character such as NUL that C backends truncate at, or a
//! `%XX` left after decoding that a backend decoding twice would expand).
//!
//! This module never rewrites the query, never decodes the value of a key
//! that is not listed, never panics, and does no work for a rule with no
//! listed keys.

use std::borrow::Cow;

use crate::path::{has_percent_escape, hex_pair};

/// Longest key text quoted in an error, in characters.
const MAX_KEY_SHOWN: usize = 64;

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A listed key occurs more than once.
    #[error("query parameter {key:?} given more than once")]
    Repeated { key: String },
    /// A listed key whose value does not decode, or a key that does not
    /// decode cleanly (shown as received, shortened).
    #[error("invalid encoding in query parameter {key:?}")]
    BadEncoding { key: String },
}

/// The `query` constraints of one route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRule {
    pairs: Vec<(String, String)>,
}

impl QueryRule {
    /// A rule requiring each `(key, value)`; exact duplicates are dropped.
    /// Two values for one key make a rule that no query satisfies.
    pub fn new(pairs: Vec<(String, String)>) -> QueryRule {
        let mut unique: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            if !unique.contains(&pair) {
                unique.push(pair);
            }
        }
        QueryRule { pairs: unique }
    }

    /// Whether the rule lists no key (and so accepts every query).
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// `Ok(true)` if every listed key occurs exactly once with its listed
    /// value, `Ok(false)` if one is missing or has another value.
    ///
    /// Errors, which take precedence over `Ok(false)`: [`QueryError::Repeated`]
    /// when a listed key occurs more than once (even with the same value);
    /// [`QueryError::BadEncoding`] when a listed key's value does not decode,
    /// or when any key does not decode cleanly (see the module docs).
    pub fn check(&self, raw_query: Option<&str>) -> Result<bool, QueryError> {
        if self.pairs.is_empty() {
            return Ok(true);
        }
        let query = raw_query.unwrap_or("");
        let mut all = true;
        for (key, value) in &self.pairs {
            // No early return on a mismatch, so that errors always win.
            all &= check_pair(query, key, value)?;
        }
        Ok(all)
    }

    /// Whether every constraint of `self` is also one of `other`, so `self`
    /// accepts every query that `other` accepts.
    pub fn covers(&self, other: &QueryRule) -> bool {
        self.pairs.iter().all(|pair| other.pairs.contains(pair))
    }

    /// A query this rule accepts (`None` when it lists no key), each key and
    /// value percent-encoded.
    pub fn example(&self) -> Option<String> {
        let mut out = String::new();
        for (key, value) in &self.pairs {
            if !out.is_empty() {
                out.push('&');
            }
            super::pattern::percent_encode(key, &mut out);
            out.push('=');
            super::pattern::percent_encode(value, &mut out);
        }
        (!out.is_empty()).then_some(out)
    }

    /// The listed `(key, value)` constraints.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

/// One pass over the query for one listed pair.
fn check_pair(query: &str, key: &str, value: &str) -> Result<bool, QueryError> {
    let mut matched: Option<bool> = None;
    for piece in query.split(['&', ';']).filter(|piece| !piece.is_empty()) {
        let (raw_key, raw_value) = piece.split_once('=').unwrap_or((piece, ""));
        if decode_key(raw_key)? != key {
            continue;
        }
        if matched.is_some() {
            return Err(QueryError::Repeated {
                key: key.to_owned(),
            });
        }
        let decoded = decode(raw_value).ok_or_else(|| QueryError::BadEncoding {
            key: key.to_owned(),
        })?;
        matched = Some(decoded == value);
    }
    Ok(matched == Some(true))
}

/// Decodes a key, refusing one that does not decode cleanly.
fn decode_key(raw: &str) -> Result<Cow<'_, str>, QueryError> {
    match decode(raw) {
        Some(key) if !key.chars().any(char::is_control) && !has_percent_escape(key.as_bytes()) => {
            Ok(key)
        }
        _ => Err(QueryError::BadEncoding { key: shown(raw) }),
    }
}

/// Form-decodes `raw`; `None` on invalid percent-encoding or invalid UTF-8.
/// Borrows when there is nothing to decode.
fn decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                out.push(bytes.get(i + 1..i + 3).and_then(hex_pair)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// A raw key as quoted in an error: at most [`MAX_KEY_SHOWN`] characters.
fn shown(raw: &str) -> String {
    match raw.char_indices().nth(MAX_KEY_SHOWN) {
        Some((end, _)) => format!("{}…", raw.get(..end).unwrap_or_default()),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(pairs: &[(&str, &str)]) -> QueryRule {
        QueryRule::new(
            pairs
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn repeated(key: &str) -> Result<bool, QueryError> {
        Err(QueryError::Repeated {
            key: key.to_owned(),
        })
    }

    fn bad(key: &str) -> Result<bool, QueryError> {
        Err(QueryError::BadEncoding {
            key: key.to_owned(),
        })
    }

    #[test]
    fn service_table() {
        let r = rule(&[("service", "git-upload-pack")]);
        let table: Vec<(Option<&str>, Result<bool, QueryError>)> = vec![
            (None, Ok(false)),
            (Some(""), Ok(false)),
            (Some("service=git-upload-pack"), Ok(true)),
            (Some("service=git-receive-pack"), Ok(false)),
            (Some("service=git-upload-pack&foo=bar"), Ok(true)),
            (Some("foo=bar&service=git-upload-pack&x"), Ok(true)),
            (Some("&&service=git-upload-pack&&;"), Ok(true)),
            (
                Some("service=git-upload-pack&service=git-upload-pack"),
                repeated("service"),
            ),
            (
                Some("service=git-upload-pack&service=git-receive-pack"),
                repeated("service"),
            ),
            (
                Some("service=git-upload-pack;service=git-receive-pack"),
                repeated("service"),
            ),
            (Some("service=x&service"), repeated("service")),
            (Some("%73ervice=git-upload-pack"), Ok(true)),
            (
                Some("service=git-upload-pack&%73ervice=x"),
                repeated("service"),
            ),
            (Some("servic%65=git%2Dupload%2dpack"), Ok(true)),
            (Some("service"), Ok(false)),
            (Some("service="), Ok(false)),
            (Some("Service=git-upload-pack"), Ok(false)),
            (Some("service=git-upload-pack=x"), Ok(false)),
            (Some("service =git-upload-pack"), Ok(false)),
            (Some("service+=git-upload-pack"), Ok(false)),
            (Some("service=git-upload-pack%"), bad("service")),
            (Some("service=%FF"), bad("service")),
            (Some("service=%zz&service=git-upload-pack"), bad("service")),
            (Some("foo=%zz&service=git-upload-pack"), Ok(true)),
            (Some("foo=%FF&service=git-upload-pack"), Ok(true)),
            (Some("fo%zz=1&service=git-upload-pack"), bad("fo%zz")),
            (Some("%FF=1&service=git-upload-pack"), bad("%FF")),
            (
                Some("service%00x=git-receive-pack&service=git-upload-pack"),
                bad("service%00x"),
            ),
            (
                Some("%2573ervice=x&service=git-upload-pack"),
                bad("%2573ervice"),
            ),
        ];
        for (query, want) in table {
            assert_eq!(r.check(query), want, "{query:?}");
        }
    }

    #[test]
    fn plus_and_empty_values() {
        assert_eq!(rule(&[("q", "a b")]).check(Some("q=a+b")), Ok(true));
        assert_eq!(rule(&[("q", "a b")]).check(Some("q=a%20b")), Ok(true));
        assert_eq!(rule(&[("q", "a+b")]).check(Some("q=a%2Bb")), Ok(true));
        assert_eq!(rule(&[("q", "a+b")]).check(Some("q=a+b")), Ok(false));
        assert_eq!(rule(&[("flag", "")]).check(Some("flag")), Ok(true));
        assert_eq!(rule(&[("flag", "")]).check(Some("flag=")), Ok(true));
        assert_eq!(rule(&[("a b", "1")]).check(Some("a+b=1")), Ok(true));
        assert_eq!(
            rule(&[("k", "caf\u{e9}")]).check(Some("k=caf%C3%A9")),
            Ok(true)
        );
    }

    #[test]
    fn several_keys() {
        let r = rule(&[("a", "1"), ("b", "2")]);
        assert_eq!(r.check(Some("b=2&a=1&c=3")), Ok(true));
        assert_eq!(r.check(Some("a=1")), Ok(false));
        assert_eq!(r.check(Some("a=0&b=2&b=2")), repeated("b"));
        // Contradictory rule: never satisfied.
        let r = rule(&[("a", "1"), ("a", "2")]);
        assert_eq!(r.check(Some("a=1")), Ok(false));
        // Exact duplicates are dropped.
        assert_eq!(rule(&[("a", "1"), ("a", "1")]).pairs().len(), 1);
    }

    #[test]
    fn empty_rule_accepts_everything() {
        let r = QueryRule::default();
        assert!(r.is_empty());
        for query in [None, Some(""), Some("%"), Some("a=1&a=2"), Some("%00=%FF")] {
            assert_eq!(r.check(query), Ok(true));
        }
    }

    #[test]
    fn covers() {
        let empty = QueryRule::default();
        let a = rule(&[("service", "git-upload-pack")]);
        let ab = rule(&[("service", "git-upload-pack"), ("x", "1")]);
        let other = rule(&[("service", "git-receive-pack")]);
        assert!(empty.covers(&a));
        assert!(empty.covers(&empty));
        assert!(a.covers(&a));
        assert!(a.covers(&ab));
        assert!(!ab.covers(&a));
        assert!(!a.covers(&empty));
        assert!(!a.covers(&other));
    }

    #[test]
    fn error_messages_and_shortening() {
        assert_eq!(
            QueryError::Repeated {
                key: "service".to_owned()
            }
            .to_string(),
            "query parameter \"service\" given more than once"
        );
        let long = format!("{}%", "k".repeat(100));
        let Err(QueryError::BadEncoding { key }) = rule(&[("a", "1")]).check(Some(&long)) else {
            panic!("expected BadEncoding");
        };
        assert_eq!(key.chars().count(), MAX_KEY_SHOWN + 1);
        assert!(matches!(decode("abc"), Some(Cow::Borrowed("abc"))));
    }

    fn encode_all(s: &str) -> String {
        s.bytes().map(|b| format!("%{b:02x}")).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn never_panics(q in any::<String>(), q2 in "[a-z%&;=+0-9A-F]{0,30}") {
            let r = rule(&[("a", "1"), ("service", "x")]);
            let _ = r.check(Some(&q));
            let _ = r.check(Some(&q2));
        }

        #[test]
        fn any_encoding_of_the_pair_matches(key in "[a-z]{1,8}", value in "\\PC{0,8}",
                                           noise in "[a-z]{0,5}") {
            let r = QueryRule::new(vec![(key.clone(), value.clone())]);
            let plain_noise = format!("n0{noise}=1");
            let query = format!("{plain_noise}&{}={}", encode_all(&key), encode_all(&value));
            prop_assert_eq!(r.check(Some(&query)), Ok(true));
            let twice = format!("{query};{key}={}", encode_all(&value));
            prop_assert_eq!(r.check(Some(&twice)), Err(QueryError::Repeated { key }));
        }
    }
}
