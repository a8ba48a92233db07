//! Fuzz target for `path::normalise`, the request-target normalisation.
//!
//! Invariants, for any input:
//! - it never panics, on any bytes (non-UTF-8 input is skipped: hyper only
//!   hands the gateway a `&str`);
//! - an accepted path starts with `/` and holds no empty, `.` or `..`
//!   segment and no segment ending in a dot or a space;
//! - normalise is idempotent: the forwarded form normalises to itself;
//! - what is accepted re-encodes to what is forwarded: the forwarded form
//!   percent-decodes to exactly the decoded form that routes are matched
//!   against, and uses only `/`, uppercase `%XX` and the literal set;
//! - a backend applying NFKC reads no ASCII character the gateway did not
//!   see (issue #16): the ASCII of the NFKC form is a subsequence of the
//!   path's own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passgate::path::normalise;
use unicode_normalization::UnicodeNormalization;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = normalise(raw) else {
        return;
    };
    let decoded = path.decoded();
    let forwarded = path.as_str();
    assert!(decoded.starts_with('/'), "{decoded:?}");
    assert!(!decoded.contains("//"), "{decoded:?}");
    for segment in path.segments() {
        assert!(!segment.is_empty() && segment != "." && segment != "..");
        assert!(!segment.ends_with(['.', ' ']), "{segment:?}");
    }

    assert_eq!(normalise(forwarded).as_ref(), Ok(&path), "not idempotent");

    assert_eq!(percent_decode(forwarded).as_deref(), Some(decoded.as_bytes()));
    let bytes = forwarded.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let pair = bytes.get(i + 1..i + 3).expect("truncated escape");
            assert!(pair.iter().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')));
            i += 3;
        } else {
            assert!(b == b'/' || literal(b), "{forwarded:?}");
            i += 1;
        }
    }

    let mut own = decoded.chars().filter(char::is_ascii);
    for c in decoded.nfkc().filter(char::is_ascii) {
        assert!(own.any(|o| o == c), "NFKC of {decoded:?} gains {c:?}");
    }
});

/// Bytes the canonical form writes literally: RFC 3986 `unreserved`, the
/// `sub-delims` but `;`, `:` and `@`.
fn literal(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b)
}

/// Independent percent-decoder; `None` on a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Some(out)
}
