//! Fuzz target for route query rules (`routes::query::QueryRule::check`).
//!
//! The input is `key \n value \n query`. Invariants:
//! - `check` never panics;
//! - `Ok(true)` only when the gateway and a backend that splits on `&` and
//!   `;` and form-decodes once agree: every key decodes cleanly (no invalid
//!   escape, no control character, no `%XX` left for a second decoding),
//!   exactly one piece has the listed key, and its value is the listed value
//!   (checked with the independent decoder below);
//! - the rule accepts its own example query (`QueryRule::example`) when the
//!   key is one a clean query can carry, and refuses that query given twice
//!   as a repeat.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passgate::routes::query::{QueryError, QueryRule};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let (Some(key), Some(value), query) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let rule = QueryRule::new(vec![(key.to_owned(), value.to_owned())]);
    let result = rule.check(query);

    if result == Ok(true) {
        let pieces: Vec<&str> = query
            .unwrap_or("")
            .split(['&', ';'])
            .filter(|p| !p.is_empty())
            .collect();
        let mut found = 0;
        for piece in pieces {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            let k = form_decode(k).expect("accepted a key that does not decode");
            assert!(clean(&k), "accepted an unclean key {k:?}");
            if k == key {
                found += 1;
                assert_eq!(form_decode(v).as_deref(), Some(value));
            }
        }
        assert_eq!(found, 1, "listed key seen {found} times");
    }

    if clean(key) {
        let example = rule.example().expect("a rule with a key has an example");
        assert_eq!(rule.check(Some(&example)), Ok(true), "{example:?}");
        let twice = format!("{example};{example}");
        assert!(
            matches!(rule.check(Some(&twice)), Err(QueryError::Repeated { .. })),
            "{twice:?}"
        );
    }
});

/// A key the gateway and a backend decoding twice read alike.
fn clean(key: &str) -> bool {
    !key.chars().any(char::is_control)
        && !key
            .as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a
/// byte; `None` on a malformed escape or invalid UTF-8.
fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let pair = b.get(i + 1..i + 3)?;
                if !pair.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
