//! Fuzz target for route path patterns (`routes::pattern::Pattern`).
//!
//! The input is `pattern \n pattern \n path`. Invariants:
//! - parsing and matching never panic;
//! - an accepted pattern matches its own example path
//!   (`Pattern::example`, normalised as a request would be);
//! - `covers` is sound: if `a` covers `b` and `b` matches the path, `a`
//!   matches it too (what `check-config` reports as shadowed really is);
//! - a trailing slash is significant (issue #16): a pattern not ending in
//!   `**` never matches a path both with and without its trailing slash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passgate::path::normalise;
use passgate::routes::pattern::Pattern;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let (Some(a), b, path) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Ok(a) = Pattern::parse(a) else {
        return;
    };
    let example = normalise(&a.example()).expect("example normalises");
    assert!(a.matches(&example), "{a} does not match its example {example}");

    let Some(Ok(path)) = path.map(normalise) else {
        return;
    };
    let as_is = a.matches(&path);
    if path.has_trailing_slash() && as_is && a.matches_slash(&path, false) {
        assert!(a.as_str().ends_with("**") || a.as_str().ends_with("**/"), "{a} vs {path}");
    }
    if let Some(Ok(b)) = b.map(Pattern::parse) {
        if a.covers(&b) && b.matches(&path) {
            assert!(as_is, "{a} covers {b} but not {path}");
        }
    }
});
