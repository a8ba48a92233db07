//! Fuzz target for app-password token parsing (`auth::token::parse`).
//!
//! Invariants, for any string:
//! - `parse` never panics;
//! - a token that parses is exactly `pgap_` + 12 + 32 + 6 base62
//!   characters, its id and secret are those slices, and its checksum is
//!   the CRC-32 of the rest in base62 (computed independently below);
//! - a token that parses has the token shape web routes refuse, and changing
//!   any one character of its checksum makes it fail to parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passgate::auth::token::{has_token_shape, is_valid_id, parse, PREFIX, TOKEN_LEN};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fuzz_target!(|data: &[u8]| {
    let Ok(candidate) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token) = parse(candidate) else {
        return;
    };
    assert_eq!(candidate.len(), TOKEN_LEN);
    assert!(candidate.starts_with(PREFIX));
    assert!(candidate[PREFIX.len()..].bytes().all(|b| ALPHABET.contains(&b)));
    assert_eq!(token.id(), &candidate[5..17]);
    assert_eq!(token.secret(), &candidate[17..49]);
    assert!(is_valid_id(token.id()));
    assert_eq!(&candidate[49..], base62_checksum(&candidate.as_bytes()[..49]));
    assert!(has_token_shape(candidate));

    for i in 49..TOKEN_LEN {
        let mut changed = candidate.as_bytes().to_vec();
        changed[i] = if changed[i] == b'0' { b'1' } else { b'0' };
        let changed = String::from_utf8(changed).expect("ascii");
        assert!(parse(&changed).is_err(), "{changed:?} parses too");
    }
});

/// Six base62 digits of CRC-32/IEEE, most significant first, `0`-padded.
fn base62_checksum(signed: &[u8]) -> String {
    let mut v = crc32fast::hash(signed);
    let mut digits = [b'0'; 6];
    for d in digits.iter_mut().rev() {
        *d = ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    String::from_utf8(digits.to_vec()).expect("ascii")
}
