//! App-password token format: generation, offline validation and redaction.
//!
//! A token is `pgap_<id><secret><checksum>`:
//!
//! | part         | length | content                                                    |
//! |--------------|--------|------------------------------------------------------------|
//! | `pgap_`      | 5      | fixed prefix, lets secret scanners and web routes spot it  |
//! | `<id>`       | 12     | base62, random, public: names the app password             |
//! | `<secret>`   | 32     | base62 from the OS CSPRNG, unbiased (about 190 bits)       |
//! | `<checksum>` | 6      | base62 of CRC-32/IEEE over `pgap_<id><secret>`, `0`-padded |
//!
//! The base62 alphabet is `0-9A-Za-z` (digit 0 = `0`, 10 = `A`, 36 = `a`).
//! Only ASCII is ever produced, so a token is safe inside an RFC 7617
//! `user-pass` and an RFC 6750 `b64token`.
//!
//! This module owns the format only. It never does I/O, never stores,
//! hashes or compares secrets (the password store does that, in constant
//! time), and never prints a secret: [`TokenRef`], [`NewToken`] and
//! [`Secret`] redact it in `Debug`/`Display`. The checksum is public
//! information and only lets [`parse`] reject typos and random garbage
//! before any lookup; it is not an integrity or authenticity check.
//! [`parse`] works on bytes and never slices inside a multi-byte UTF-8
//! character, so no input can make it panic.

use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;

/// Fixed token prefix.
pub const PREFIX: &str = "pgap_";
/// Length of the public id part.
pub const ID_LEN: usize = 12;
/// Length of the secret part.
pub const SECRET_LEN: usize = 32;
/// Length of the checksum part.
pub const CHECKSUM_LEN: usize = 6;
/// Total token length in bytes (all ASCII).
pub const TOKEN_LEN: usize = 55;

const ID_START: usize = PREFIX.len();
const SECRET_START: usize = ID_START + ID_LEN;
const CHECKSUM_START: usize = SECRET_START + SECRET_LEN;

// The layout constants must agree with each other.
const _: () = assert!(CHECKSUM_START + CHECKSUM_LEN == TOKEN_LEN);
// Six base62 digits hold any u32 (62^6 > 2^32).
const _: () = assert!(62u64.pow(CHECKSUM_LEN as u32) > u32::MAX as u64);

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Largest multiple of 62 that fits in a byte: random bytes at or above it
/// are rejected so that `byte % 62` is uniform.
const REJECT_FROM: u8 = 248;

/// Why a candidate string is not a well-formed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The candidate does not start with `pgap_`.
    #[error("token does not start with the app password prefix")]
    Prefix,
    /// The candidate is not exactly [`TOKEN_LEN`] bytes long.
    #[error("token has the wrong length")]
    Length,
    /// The candidate holds a character outside `0-9A-Za-z` after the prefix.
    #[error("token contains a character outside the base62 alphabet")]
    Alphabet,
    /// The checksum does not match the id and secret.
    #[error("token checksum does not match")]
    Checksum,
}

/// A syntactically valid token borrowed from the request.
///
/// `Debug` shows the id and redacts the secret.
#[derive(Clone, Copy)]
pub struct TokenRef<'a> {
    id: &'a str,
    secret: &'a str,
}

impl<'a> TokenRef<'a> {
    /// The public id (12 base62 characters).
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// The secret part (32 base62 characters). Handle with care.
    pub fn secret(&self) -> &'a str {
        self.secret
    }
}

impl fmt::Debug for TokenRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRef")
            .field("id", &self.id)
            .field("secret", &Redacted)
            .finish()
    }
}

/// Checks prefix, length, alphabet and checksum, in that order, with no I/O.
///
/// Success says nothing about whether the token exists or is the right one;
/// the caller still looks the id up and verifies the secret.
pub fn parse(candidate: &str) -> Result<TokenRef<'_>, TokenError> {
    let bytes = candidate.as_bytes();
    if !bytes.starts_with(PREFIX.as_bytes()) {
        return Err(TokenError::Prefix);
    }
    if bytes.len() != TOKEN_LEN {
        return Err(TokenError::Length);
    }
    let body = bytes.get(ID_START..).ok_or(TokenError::Length)?;
    if !body.iter().all(|&b| digit_value(b).is_some()) {
        return Err(TokenError::Alphabet);
    }
    // Everything is ASCII from here on, so every split below is on a char
    // boundary; `get` keeps that a checked fact rather than an assumption.
    let signed = bytes.get(..CHECKSUM_START).ok_or(TokenError::Length)?;
    let given = bytes.get(CHECKSUM_START..).ok_or(TokenError::Length)?;
    if checksum(signed) != given {
        return Err(TokenError::Checksum);
    }
    let id = candidate
        .get(ID_START..SECRET_START)
        .ok_or(TokenError::Length)?;
    let secret = candidate
        .get(SECRET_START..CHECKSUM_START)
        .ok_or(TokenError::Length)?;
    Ok(TokenRef { id, secret })
}

/// Whether `s` looks like an app password, valid checksum or not.
///
/// Deliberately broader than [`parse`]: leading whitespace is skipped and the
/// prefix is matched ASCII case-insensitively (`PGAP_` counts), so web routes
/// that refuse app passwords refuse near-misses too.
pub fn has_token_shape(s: &str) -> bool {
    let prefix = PREFIX.as_bytes();
    s.trim_start()
        .as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Whether `s` is a well-formed public id: exactly 12 base62 characters.
pub fn is_valid_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| digit_value(b).is_some())
}

/// A freshly generated app password. Show [`NewToken::token`] to the user
/// once; store only the id and a slow hash of [`NewToken::secret`].
#[derive(Debug)]
pub struct NewToken {
    id: String,
    token: Secret,
}

impl NewToken {
    /// Draws a fresh id and secret from the OS CSPRNG and appends the checksum.
    ///
    /// # Panics
    ///
    /// Only if the operating system's random source fails, as
    /// [`rand::rngs::OsRng`] does; there is no safe fallback for a secret.
    pub fn generate() -> NewToken {
        let mut buf = [0u8; TOKEN_LEN];
        let (head, check) = buf.split_at_mut(CHECKSUM_START);
        let (prefix, random) = head.split_at_mut(ID_START);
        prefix.copy_from_slice(PREFIX.as_bytes());
        fill_base62(random);
        check.copy_from_slice(&checksum(head));
        let mut token = String::with_capacity(TOKEN_LEN);
        token.extend(buf.iter().map(|&b| char::from(b)));
        buf.fill(0);
        std::hint::black_box(&buf);
        let id = token
            .get(ID_START..SECRET_START)
            .unwrap_or_default()
            .to_owned();
        NewToken {
            id,
            token: Secret(token),
        }
    }

    /// The public id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The 32-character secret part (what the store hashes).
    pub fn secret(&self) -> &str {
        self.token
            .expose()
            .get(SECRET_START..CHECKSUM_START)
            .unwrap_or_default()
    }

    /// The whole token, as shown to the user once.
    pub fn token(&self) -> &Secret {
        &self.token
    }
}

/// Owned secret text. `Debug` and `Display` print `[redacted]`; the bytes
/// are overwritten with zeros on drop (best effort, without `unsafe`).
#[derive(Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps secret text.
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    /// The secret text. Every call site is a place the secret can leak.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret(text)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Redacted, f)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Redacted, f)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        // Keep the writes from being optimised away as dead stores.
        std::hint::black_box(&mut bytes);
    }
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Value of a base62 digit, or `None` outside the alphabet.
fn digit_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'Z' => Some(b - b'A' + 10),
        b'a'..=b'z' => Some(b - b'a' + 36),
        _ => None,
    }
}

/// CRC-32/IEEE of `signed`, as six big-endian base62 digits, `0`-padded.
fn checksum(signed: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut value = crc32fast::hash(signed);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = base62_char(value % 62);
        value /= 62;
    }
    out
}

fn base62_char(v: u32) -> u8 {
    ALPHABET.get(v as usize).copied().unwrap_or(b'0')
}

/// Fills `out` with uniformly random base62 characters from the OS CSPRNG,
/// by rejection sampling bytes at or above [`REJECT_FROM`].
fn fill_base62(out: &mut [u8]) {
    let mut pool = [0u8; 64];
    let mut filled = 0;
    while filled < out.len() {
        OsRng.fill_bytes(&mut pool);
        for &b in pool.iter().filter(|&&b| b < REJECT_FROM) {
            let Some(slot) = out.get_mut(filled) else {
                break;
            };
            *slot = base62_char(u32::from(b % 62));
            filled += 1;
        }
    }
    pool.fill(0);
    std::hint::black_box(&pool);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bitwise CRC-32/IEEE (reflected, poly 0xEDB88320), written out by hand
    /// so the checksum is not only checked against crc32fast itself.
    fn crc32_by_hand(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                let mask = (crc & 1).wrapping_neg();
                crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
            }
        }
        !crc
    }

    fn base62_by_hand(mut v: u32) -> String {
        let mut digits = Vec::new();
        for _ in 0..CHECKSUM_LEN {
            digits.push(ALPHABET[(v % 62) as usize] as char);
            v /= 62;
        }
        digits.iter().rev().collect()
    }

    const FIXED_BODY: &str = "pgap_abcdefghijkl0123456789ABCDEFGHIJKLMNOPQRSTUV";
    /// CRC-32 0x2CB742D3 of FIXED_BODY, in base62 (cross-checked with zlib).
    const FIXED_CHECKSUM: &str = "0olnIB";

    #[test]
    fn checksum_of_check_string_matches_literal() {
        // The CRC-32/IEEE check value of "123456789" is 0xCBF43926 =
        // 3421780262 = 3·62^5 + 45·62^4 + 35·62^3 + 27·62^2 + 22·62 + 14.
        assert_eq!(crc32_by_hand(b"123456789"), 0xCBF4_3926);
        assert_eq!(&checksum(b"123456789"), b"3jZRME");
        assert_eq!(base62_by_hand(0xCBF4_3926), "3jZRME");
    }

    #[test]
    fn checksum_of_fixed_token_matches_literal() {
        let crc = crc32_by_hand(FIXED_BODY.as_bytes());
        assert_eq!(crc, crc32fast::hash(FIXED_BODY.as_bytes()));
        let by_hand = base62_by_hand(crc);
        assert_eq!(checksum(FIXED_BODY.as_bytes()), by_hand.as_bytes());
        assert_eq!(by_hand, FIXED_CHECKSUM);
        let token = format!("{FIXED_BODY}{FIXED_CHECKSUM}");
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.id(), "abcdefghijkl");
        assert_eq!(parsed.secret(), "0123456789ABCDEFGHIJKLMNOPQRSTUV");
    }

    #[test]
    fn checksum_pads_small_values_with_zeros() {
        // crc32("") == 0.
        assert_eq!(&checksum(b""), b"000000");
        assert_eq!(base62_by_hand(61), "00000z");
        assert_eq!(base62_by_hand(62), "000010");
        assert_eq!(base62_by_hand(u32::MAX), "4gfFC3");
    }

    #[test]
    fn generated_token_has_the_documented_shape() {
        let t = NewToken::generate();
        let s = t.token().expose();
        assert_eq!(s.len(), TOKEN_LEN);
        assert!(s.starts_with(PREFIX));
        assert!(is_valid_id(t.id()));
        assert_eq!(t.secret().len(), SECRET_LEN);
        assert_eq!(&s[ID_START..SECRET_START], t.id());
        assert_eq!(&s[SECRET_START..CHECKSUM_START], t.secret());
        let parsed = parse(s).unwrap();
        assert_eq!(parsed.id(), t.id());
        assert_eq!(parsed.secret(), t.secret());
        assert_ne!(NewToken::generate().token().expose(), s);
    }

    #[test]
    fn rejection_table() {
        let good = format!("{FIXED_BODY}{FIXED_CHECKSUM}");
        let swap = |i: usize, c: &str| format!("{}{c}{}", &good[..i], &good[i + 1..]);
        let cases: Vec<(String, TokenError)> = vec![
            (String::new(), TokenError::Prefix),
            ("pgap".into(), TokenError::Prefix),
            (good.replacen("pgap_", "PGAP_", 1), TokenError::Prefix),
            (good.replacen("pgap_", "pgap-", 1), TokenError::Prefix),
            (good.replacen("pgap_", "xgap_", 1), TokenError::Prefix),
            (format!(" {good}"), TokenError::Prefix),
            ("pgap_".into(), TokenError::Length),
            (good[..TOKEN_LEN - 1].into(), TokenError::Length),
            (format!("{good}0"), TokenError::Length),
            (format!("{good}\n"), TokenError::Length),
            (swap(10, "-"), TokenError::Alphabet),
            (swap(10, "_"), TokenError::Alphabet),
            (swap(20, "+"), TokenError::Alphabet),
            (swap(30, "/"), TokenError::Alphabet),
            (swap(54, "="), TokenError::Alphabet),
            (swap(40, " "), TokenError::Alphabet),
            (swap(6, "\0"), TokenError::Alphabet),
            // 'é' is two bytes: same byte length only if we drop one more.
            (
                format!("{}é{}", &good[..20], &good[22..]),
                TokenError::Alphabet,
            ),
            (
                format!("{}é{}", &good[..20], &good[21..]),
                TokenError::Length,
            ),
            (format!("{}€", &good[..52]), TokenError::Alphabet),
            (swap(54, "1"), TokenError::Checksum),
            (swap(5, "b"), TokenError::Checksum),
            (swap(30, "x"), TokenError::Checksum),
        ];
        for (candidate, want) in cases {
            assert_eq!(parse(&candidate).map(|_| ()), Err(want), "{candidate:?}");
        }
    }

    #[test]
    fn every_single_base62_change_at_every_position_is_rejected() {
        let good = format!("{FIXED_BODY}{FIXED_CHECKSUM}");
        assert!(parse(&good).is_ok());
        for pos in 0..TOKEN_LEN {
            for &c in ALPHABET.iter().chain(b"_-+/=") {
                if good.as_bytes()[pos] == c {
                    continue;
                }
                let mut bytes = good.clone().into_bytes();
                bytes[pos] = c;
                let changed = String::from_utf8(bytes).unwrap();
                assert!(parse(&changed).is_err(), "{changed}");
            }
        }
    }

    #[test]
    fn shape_and_id_helpers() {
        assert!(has_token_shape("pgap_"));
        assert!(has_token_shape("pgap_anything-at-all"));
        assert!(has_token_shape("PGAP_x"));
        assert!(has_token_shape("  pgap_x"));
        assert!(!has_token_shape("pgap"));
        assert!(!has_token_shape("xpgap_"));
        assert!(!has_token_shape("é"));
        assert!(is_valid_id("abcdefghijkl"));
        assert!(is_valid_id("0123456789AZ"));
        assert!(!is_valid_id("abcdefghijk"));
        assert!(!is_valid_id("abcdefghijklm"));
        assert!(!is_valid_id("abcdefghijk-"));
        assert!(!is_valid_id("abcdefghijé"));
    }

    #[test]
    fn secrets_are_redacted() {
        let t = NewToken::generate();
        let secret = t.secret().to_owned();
        for shown in [
            format!("{t:?}"),
            format!("{:?}", t.token()),
            format!("{}", t.token()),
            format!("{:?}", parse(t.token().expose()).unwrap()),
        ] {
            assert!(!shown.contains(&secret), "{shown}");
        }
        assert!(format!("{t:?}").contains(t.id()));
        assert_eq!(Secret::new("hunter2".into()).to_string(), "[redacted]");
        assert_eq!(Secret::from("x".to_owned()).expose(), "x");
    }

    #[test]
    fn random_characters_are_roughly_uniform() {
        let mut counts = [0u32; 62];
        let mut buf = [0u8; 62 * 200];
        fill_base62(&mut buf);
        for b in buf {
            counts[digit_value(b).unwrap() as usize] += 1;
        }
        // Expected 200 each; a biased `% 62` without rejection would still
        // pass this, so it only guards against gross mistakes.
        assert!(
            counts.iter().all(|&c| (100..=320).contains(&c)),
            "{counts:?}"
        );
    }

    proptest! {
        #[test]
        fn generated_tokens_round_trip(_seed in 0u8..) {
            let t = NewToken::generate();
            let parsed = parse(t.token().expose()).unwrap();
            prop_assert_eq!(parsed.id(), t.id());
            prop_assert_eq!(parsed.secret(), t.secret());
        }

        #[test]
        fn any_single_substitution_is_rejected(
            pos in 0..TOKEN_LEN,
            replacement in any::<char>(),
        ) {
            let t = NewToken::generate();
            let s = t.token().expose();
            let original = s.as_bytes()[pos] as char;
            prop_assume!(replacement != original);
            let mut changed: String = s[..pos].to_owned();
            changed.push(replacement);
            changed.push_str(&s[pos + 1..]);
            prop_assert!(parse(&changed).is_err(), "{}", changed);
        }

        #[test]
        fn any_single_base62_substitution_is_rejected(
            pos in 0..TOKEN_LEN,
            digit in 0usize..62,
        ) {
            let t = NewToken::generate();
            let s = t.token().expose();
            let replacement = ALPHABET[digit] as char;
            prop_assume!(s.as_bytes()[pos] as char != replacement);
            let changed = format!("{}{replacement}{}", &s[..pos], &s[pos + 1..]);
            prop_assert!(parse(&changed).is_err());
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = parse(&s);
            let _ = has_token_shape(&s);
            let _ = is_valid_id(&s);
        }

        #[test]
        fn parse_never_panics_near_valid_lengths(
            s in proptest::collection::vec(any::<char>(), 40..56),
        ) {
            let s: String = s.into_iter().collect();
            let _ = parse(&s);
            let with_prefix = format!("{PREFIX}{s}");
            let _ = parse(&with_prefix);
        }
    }
}
