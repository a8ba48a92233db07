//! `Authorization` header parsing: strict Basic decoding for the API routes
//! (RFC 7617, RFC 9110 §11.4/§11.6.2) and a lenient scan of every presented
//! credential for the web routes.
//!
//! [`decode`] owns the wire rules only: one `Authorization` header, scheme
//! `Basic` compared case-insensitively (RFC 9110 §11.1), one or more spaces,
//! canonical padded base64 (RFC 4648 §4), UTF-8 (RFC 7617 §2.1 `charset`),
//! split at the first colon (RFC 7617 §2: the user-id cannot contain one,
//! the password can). It decodes into a fixed stack buffer and never
//! allocates on the heap. It never checks a password and never logs; it tells
//! credentials without a password (a client asking for the challenge) from
//! malformed ones. Its `Debug` output redacts
//! the password and the buffer is zeroed on drop (best effort).
//!
//! [`any_presented_credential`] lets web routes refuse a request that
//! presents an app password anywhere in any `Authorization` header. It is
//! deliberately broader than [`decode`] and never fails.

use std::fmt;
use std::str;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};

/// Cap on the whole encoded `Authorization` header value, in bytes.
pub const MAX_HEADER_LEN: usize = 2048;

/// Decoded bytes of the largest accepted header: 3 per 4 base64 characters.
const BUF_LEN: usize = MAX_HEADER_LEN / 4 * 3;

/// Longest accepted user name, in characters.
const MAX_USER_CHARS: usize = 255;

/// Schemes of a single sign-on handshake (RFC 4559 SPNEGO, NTLM): they
/// carry no password that an app-password route could check.
const PROBE_SCHEMES: [&[u8]; 2] = [b"negotiate", b"ntlm"];

/// Accepts unpadded and URL-safe input too: for spotting credentials only.
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Why an `Authorization` header is not acceptable Basic credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BasicError {
    /// More than one `Authorization` header.
    #[error("more than one authorization header")]
    Multiple,
    /// A scheme other than Basic, or no scheme at all.
    #[error("authorization scheme is not basic")]
    NotBasic,
    /// The header value exceeds [`MAX_HEADER_LEN`].
    #[error("authorization header is too long")]
    TooLong,
    /// Missing, non-canonical or unpadded base64.
    #[error("basic credentials are not valid padded base64")]
    BadBase64,
    /// The decoded credentials are not UTF-8.
    #[error("basic credentials are not utf-8")]
    NotUtf8,
    /// Credentials that carry no password to check: `Basic` with nothing
    /// after it, a bare user name (no colon), an empty password, or a `Negotiate` or `NTLM`
    /// handshake. Clients send these to ask for the challenge (git, curl and
    /// IDEs with the user name in the URL; git-credential-manager and libcurl
    /// probing for single sign-on), so they are not guesses.
    #[error("credentials carry no password")]
    NoPassword,
    /// The user name is empty, over 255 characters, or holds a control character.
    #[error("basic user name is empty, too long or contains control characters")]
    BadUser,
}

/// Decoded Basic credentials, held in a fixed stack buffer.
///
/// Invariant (established only by [`decode`]): `buf[..len]` is UTF-8,
/// `buf[..user_len]` is the user name and `buf[pass_start..len]` the password.
pub struct BasicCredentials {
    buf: [u8; BUF_LEN],
    user_len: usize,
    pass_start: usize,
    len: usize,
    /// How much of `buf` the decoder may have written: wiped on drop.
    dirty: usize,
}

impl BasicCredentials {
    /// The user name: 1–255 characters, no control characters.
    pub fn user(&self) -> &str {
        utf8_or_empty(self.buf.get(..self.user_len))
    }

    /// The password: never empty, possibly containing colons.
    pub fn password(&self) -> &str {
        utf8_or_empty(self.buf.get(self.pass_start..self.len))
    }

    /// An empty buffer for [`decode`] to fill in place: at 1.5 KiB it is
    /// cheaper to fill where it lives than to move on every request.
    pub const fn new() -> BasicCredentials {
        BasicCredentials {
            buf: [0; BUF_LEN],
            user_len: 0,
            pass_start: 0,
            len: 0,
            dirty: 0,
        }
    }
}

impl Default for BasicCredentials {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("user", &self.user())
            .field("password", &format_args!("[redacted]"))
            .finish()
    }
}

impl BasicCredentials {
    /// Zeroes every byte the decoder may have written. A usual header decodes
    /// to ~70 bytes: those are wiped, not the whole 1.5 KiB, on every request.
    fn wipe(&mut self) {
        let dirty = self.dirty.min(BUF_LEN);
        wipe(self.buf.get_mut(..dirty).unwrap_or_default());
    }
}

impl Drop for BasicCredentials {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// Decodes the request's Basic credentials into `creds` (a fresh
/// [`BasicCredentials::new`]).
///
/// `Ok(false)` when there is no `Authorization` header at all; every other
/// deviation from the rules in the module documentation is an error, after
/// which `creds` reads as an empty user and password.
pub fn decode(headers: &HeaderMap, creds: &mut BasicCredentials) -> Result<bool, BasicError> {
    match authorization(headers)? {
        None => Ok(false),
        Some(value) => decode_value(value.as_bytes(), creds).map(|()| true),
    }
}

/// The request's one `Authorization` header, undecoded: `None` without
/// one, [`BasicError::Multiple`] with more.
pub fn authorization(headers: &HeaderMap) -> Result<Option<&HeaderValue>, BasicError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(BasicError::Multiple);
    }
    Ok(Some(value))
}

pub(crate) fn decode_value(value: &[u8], creds: &mut BasicCredentials) -> Result<(), BasicError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(BasicError::TooLong);
    }
    let (scheme, encoded) = split_scheme(value);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        if PROBE_SCHEMES.iter().any(|p| scheme.eq_ignore_ascii_case(p)) {
            return Err(BasicError::NoPassword);
        }
        return Err(BasicError::NotBasic);
    }
    if encoded.is_empty() {
        return Err(BasicError::NoPassword);
    }
    (creds.user_len, creds.pass_start, creds.len) = (0, 0, 0);
    // The decoder writes at most 3 bytes per 4 characters (rounded up); set
    // before decoding so that `Drop` wipes them on every error path too.
    creds.dirty = creds.dirty.max(encoded.len().div_ceil(4) * 3);
    let len = STANDARD
        .decode_slice(encoded, &mut creds.buf)
        .map_err(|_| BasicError::BadBase64)?;
    let decoded = creds.buf.get(..len).ok_or(BasicError::BadBase64)?;
    let text = str::from_utf8(decoded).map_err(|_| BasicError::NotUtf8)?;
    let (user, password) = text.split_once(':').ok_or(BasicError::NoPassword)?;
    if password.is_empty() {
        return Err(BasicError::NoPassword);
    }
    check_user(user)?;
    creds.user_len = user.len();
    creds.pass_start = user.len() + 1;
    creds.len = len;
    Ok(())
}

fn check_user(user: &str) -> Result<(), BasicError> {
    let mut chars = 0usize;
    for c in user.chars() {
        chars += 1;
        if c.is_control() || chars > MAX_USER_CHARS {
            return Err(BasicError::BadUser);
        }
    }
    if chars == 0 {
        return Err(BasicError::BadUser);
    }
    Ok(())
}

/// Calls `f` on every credential-looking string in all of the request's
/// `Authorization` headers, in order, until it returns `true`; returns
/// whether it did. Never allocates on the heap and never fails.
///
/// For each header value (surrounding whitespace trimmed):
/// - `Basic <b64>`: the raw text after the scheme; then, if it decodes as
///   lenient base64 (padding optional, standard or URL-safe alphabet), the
///   decoded user and password split at the first colon (the whole decoded
///   text if there is none).
/// - any other `<scheme> <credentials>`: the raw credentials, trimmed; then
///   each comma-separated item and, for `name=value` items, the value with
///   surrounding quotes removed (RFC 9110 §11.2 auth-params).
/// - a value with no space: the whole value (a bare token, no scheme).
///
/// Text that is not UTF-8 is passed up to its first invalid byte. A Basic
/// value whose credentials exceed the decode buffer (a header longer than
/// [`MAX_HEADER_LEN`]) is only seen raw: a caller that must refuse every
/// app password should also refuse over-long `Authorization` headers.
pub fn any_presented_credential(headers: &HeaderMap, mut f: impl FnMut(&str) -> bool) -> bool {
    headers
        .get_all(AUTHORIZATION)
        .iter()
        .any(|value| presented_in_value(value.as_bytes(), &mut f))
}

fn presented_in_value(value: &[u8], f: &mut impl FnMut(&str) -> bool) -> bool {
    let (scheme, credentials) = split_scheme(value);
    if credentials.is_empty() {
        return f(utf8_prefix(scheme));
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        return presented_in_basic(credentials, f);
    }
    if f(utf8_prefix(credentials)) {
        return true;
    }
    credentials.split(|&b| b == b',').any(|item| {
        let item = trim_ows(item);
        let value = item
            .iter()
            .position(|&b| b == b'=')
            .and_then(|eq| item.get(eq + 1..))
            .map(|v| trim_quotes(trim_ows(v)));
        f(utf8_prefix(item)) || value.is_some_and(|v| f(utf8_prefix(v)))
    })
}

fn presented_in_basic(encoded: &[u8], f: &mut impl FnMut(&str) -> bool) -> bool {
    if f(utf8_prefix(encoded)) {
        return true;
    }
    let mut buf = Wiped([0; BUF_LEN]);
    let decoded = LENIENT_STANDARD
        .decode_slice(encoded, &mut buf.0)
        .or_else(|_| LENIENT_URL_SAFE.decode_slice(encoded, &mut buf.0))
        .ok()
        .and_then(|len| buf.0.get(..len));
    let Some(decoded) = decoded else {
        return false;
    };
    match decoded.iter().position(|&b| b == b':') {
        Some(colon) => {
            let (user, rest) = decoded.split_at(colon);
            let password = rest.get(1..).unwrap_or_default();
            f(utf8_prefix(user)) || f(utf8_prefix(password))
        }
        None => f(utf8_prefix(decoded)),
    }
}

/// Splits a trimmed header value at its first space into the scheme and the
/// credentials (whitespace-trimmed; empty when there are none).
fn split_scheme(value: &[u8]) -> (&[u8], &[u8]) {
    let value = trim_ows(value);
    match value.iter().position(|&b| b == b' ') {
        Some(space) => {
            let (scheme, rest) = value.split_at(space);
            (scheme, trim_ows(rest))
        }
        None => (value, &[]),
    }
}

/// Trims optional whitespace, SP and HTAB (RFC 9110 §5.6.3).
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn trim_quotes(s: &[u8]) -> &[u8] {
    match s {
        [b'"', inner @ .., b'"'] => inner,
        _ => s,
    }
}

/// The longest valid UTF-8 prefix of `bytes`.
fn utf8_prefix(bytes: &[u8]) -> &str {
    match str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => utf8_or_empty(bytes.get(..e.valid_up_to())),
    }
}

fn utf8_or_empty(bytes: Option<&[u8]>) -> &str {
    bytes
        .and_then(|b| str::from_utf8(b).ok())
        .unwrap_or_default()
}

/// A stack buffer that is zeroed when it goes out of scope.
struct Wiped([u8; BUF_LEN]);

impl Drop for Wiped {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    // Keep the writes from being optimised away as dead stores.
    std::hint::black_box(buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    type Outcome = Result<(String, String), BasicError>;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    fn basic(user_pass: &[u8]) -> String {
        format!("Basic {}", STANDARD.encode(user_pass))
    }

    fn decode_one(value: &[u8]) -> Outcome {
        let mut creds = BasicCredentials::new();
        assert!(decode(&headers(&[value]), &mut creds)?, "header present");
        Ok((creds.user().to_owned(), creds.password().to_owned()))
    }

    fn ok(user: &str, pass: &str) -> Outcome {
        Ok((user.to_owned(), pass.to_owned()))
    }

    #[test]
    fn decode_table() {
        let long_user = "u".repeat(256);
        let max_user = "é".repeat(255);
        let over_cap = format!("Basic {}", "A".repeat(MAX_HEADER_LEN));
        let cases: Vec<(Vec<u8>, Outcome)> = vec![
            (basic(b"alice:s3cret").into(), ok("alice", "s3cret")),
            (b"Basic YWxpY2U6czNjcmV0".to_vec(), ok("alice", "s3cret")),
            (b"basic YWxpY2U6czNjcmV0".to_vec(), ok("alice", "s3cret")),
            (b"BASIC YWxpY2U6czNjcmV0".to_vec(), ok("alice", "s3cret")),
            (
                b"Basic    YWxpY2U6czNjcmV0  ".to_vec(),
                ok("alice", "s3cret"),
            ),
            (basic("jürgen✓:pä".as_bytes()).into(), ok("jürgen✓", "pä")),
            (basic(b"bob:a:b::c:").into(), ok("bob", "a:b::c:")),
            (basic(b"bob:").into(), Err(BasicError::NoPassword)),
            (basic(b":").into(), Err(BasicError::NoPassword)),
            (
                basic(max_user.as_bytes()).into(),
                Err(BasicError::NoPassword),
            ),
            (
                basic(format!("{max_user}:p").as_bytes()).into(),
                ok(&max_user, "p"),
            ),
            (b"Bearer pgap_x".to_vec(), Err(BasicError::NotBasic)),
            (
                b"Basicx YWxpY2U6czNjcmV0".to_vec(),
                Err(BasicError::NotBasic),
            ),
            (
                b"Basic\tYWxpY2U6czNjcmV0".to_vec(),
                Err(BasicError::NotBasic),
            ),
            (b"YWxpY2U6czNjcmV0".to_vec(), Err(BasicError::NotBasic)),
            (b"Basic".to_vec(), Err(BasicError::NoPassword)),
            (b"Basic   ".to_vec(), Err(BasicError::NoPassword)),
            (
                b"Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnag".to_vec(),
                Err(BasicError::NoPassword),
            ),
            (
                b"NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw==".to_vec(),
                Err(BasicError::NoPassword),
            ),
            (b"ntlm".to_vec(), Err(BasicError::NoPassword)),
            (
                b"Basic YWxpY2U6czNjcmV0!".to_vec(),
                Err(BasicError::BadBase64),
            ),
            (
                b"Basic YWxpY2U6czNjcmV".to_vec(),
                Err(BasicError::BadBase64),
            ),
            (b"Basic YWxpY2U6cw".to_vec(), Err(BasicError::BadBase64)),
            (
                b"Basic YWxp Y2U6czNjcmV0".to_vec(),
                Err(BasicError::BadBase64),
            ),
            (
                b"Basic YWxpY2U6czNjcmV0,Bearer x".to_vec(),
                Err(BasicError::BadBase64),
            ),
            (
                b"Basic YW_pY2U6czNjcmV0".to_vec(),
                Err(BasicError::BadBase64),
            ),
            (
                b"Basic YWxp\tY2U6czNjcmV0".to_vec(),
                Err(BasicError::BadBase64),
            ),
            (
                b"Basic YWxp\xc3\xa9Y2U6czNjcmV0".to_vec(),
                Err(BasicError::BadBase64),
            ),
            (b"Basic \x80\xff".to_vec(), Err(BasicError::BadBase64)),
            (basic(b"al\xffice:pw").into(), Err(BasicError::NotUtf8)),
            (basic(b"alice").into(), Err(BasicError::NoPassword)),
            (basic(b"").into(), Err(BasicError::NoPassword)),
            (basic(b":pw").into(), Err(BasicError::BadUser)),
            (
                basic(format!("{long_user}:pw").as_bytes()).into(),
                Err(BasicError::BadUser),
            ),
            (basic(b"al\tice:pw").into(), Err(BasicError::BadUser)),
            (basic(b"al\x7fice:pw").into(), Err(BasicError::BadUser)),
            (
                basic("al\u{85}ice:pw".as_bytes()).into(),
                Err(BasicError::BadUser),
            ),
            (over_cap.into(), Err(BasicError::TooLong)),
        ];
        for (value, want) in cases {
            assert_eq!(
                decode_one(&value),
                want,
                "{}",
                String::from_utf8_lossy(&value)
            );
        }
    }

    #[test]
    fn header_count() {
        assert!(!decode(&HeaderMap::new(), &mut BasicCredentials::new()).unwrap());
        let one = basic(b"a:b");
        let two = headers(&[one.as_bytes(), one.as_bytes()]);
        let mut creds = BasicCredentials::new();
        assert_eq!(decode(&two, &mut creds).unwrap_err(), BasicError::Multiple);
    }

    #[test]
    fn largest_header_under_cap_decodes() {
        // 6 + 2040 = 2046 bytes encode 1530 decoded bytes.
        let pass = "p".repeat(1530 - 2);
        let value = basic(format!("u:{pass}").as_bytes());
        assert!(value.len() <= MAX_HEADER_LEN);
        assert_eq!(decode_one(value.as_bytes()), ok("u", &pass));
    }

    #[test]
    fn debug_redacts_password() {
        let map = headers(&[basic(b"alice:hunter2").as_bytes()]);
        let mut creds = BasicCredentials::new();
        assert!(decode(&map, &mut creds).unwrap());
        let shown = format!("{creds:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!BasicError::BadUser.to_string().ends_with('.'));
    }

    fn presented(values: &[&[u8]]) -> Vec<String> {
        let mut seen = Vec::new();
        let found = any_presented_credential(&headers(values), |s| {
            seen.push(s.to_owned());
            false
        });
        assert!(!found);
        seen
    }

    fn refuses(values: &[&[u8]]) -> bool {
        any_presented_credential(&headers(values), crate::auth::token::has_token_shape)
    }

    #[test]
    fn presented_credentials_cover_every_scheme() {
        assert_eq!(presented(&[]), Vec::<String>::new());
        assert_eq!(
            presented(&[basic(b"alice:pw:x").as_bytes()]),
            ["YWxpY2U6cHc6eA==", "alice", "pw:x"]
        );
        assert_eq!(presented(&[b"basic bm9jb2xvbg"]), ["bm9jb2xvbg", "nocolon"]);
        assert_eq!(presented(&[b"Basic !!bad"]), ["!!bad"]);
        assert_eq!(presented(&[b"Bearer  tok  "]), ["tok", "tok"]);
        assert_eq!(presented(&[b"pgap_bare"]), ["pgap_bare"]);
        assert_eq!(
            presented(&[b"Digest username=\"u\", nonce=n"]),
            [
                "username=\"u\", nonce=n",
                "username=\"u\"",
                "u",
                "nonce=n",
                "n"
            ]
        );
        assert_eq!(presented(&[b"Bearer ab\xffcd"]), ["ab", "ab"]);
    }

    #[test]
    fn app_passwords_are_spotted_anywhere() {
        let unpadded = format!("Basic {}", LENIENT_STANDARD.encode(b"u:pgap_x"));
        let url_safe = format!("Basic {}", LENIENT_URL_SAFE.encode(b"u?>:pgap_x"));
        let refused: Vec<Vec<u8>> = vec![
            basic(b"pgap_user:pw").into(),
            basic(b"alice:pgap_abc").into(),
            basic(b"pgap_nocolon").into(),
            unpadded.into(),
            url_safe.into(),
            b"Basic pgap_raw".to_vec(),
            b"Bearer pgap_abc".to_vec(),
            b"bearer   PGAP_abc".to_vec(),
            b"Token pgap_abc".to_vec(),
            b"pgap_bare".to_vec(),
            b"Digest username=\"pgap_abc\", realm=r".to_vec(),
            b"Custom a=1,token=pgap_abc".to_vec(),
        ];
        for value in &refused {
            assert!(refuses(&[value]), "{}", String::from_utf8_lossy(value));
            // Also when it is the second of several headers.
            assert!(refuses(&[b"Bearer fine", value]));
        }
        for value in [&b"Basic YWxpY2U6czNjcmV0"[..], b"Bearer abc", b"Digest a=b"] {
            assert!(!refuses(&[value]));
        }
    }

    #[test]
    fn presented_stops_at_first_match() {
        let map = headers(&[b"Bearer a", b"Bearer b", b"Bearer c"]);
        let mut calls = 0;
        assert!(any_presented_credential(&map, |s| {
            calls += 1;
            s == "b"
        }));
        assert_eq!(calls, 3); // "a", "a" (item), "b"
    }

    fn user_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            any::<char>().prop_filter("no control, no colon", |c| !c.is_control() && *c != ':'),
            1..=MAX_USER_CHARS,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #[test]
        fn the_wipe_covers_every_byte_decoded(
            user in "[a-zA-Z0-9._@é✓-]{1,80}",
            pass in proptest::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 0..900),
        ) {
            let mut raw = user.into_bytes();
            raw.push(b':');
            raw.extend(pass);
            let value = format!("Basic {}", STANDARD.encode(&raw));
            let mut creds = BasicCredentials::new();
            match decode_value(value.as_bytes(), &mut creds) {
                Ok(()) => {
                    prop_assert!(creds.len <= creds.dirty);
                    prop_assert!(creds.buf[creds.dirty..].iter().all(|&b| b == 0), "decoder wrote past `dirty`");
                    creds.wipe();
                    prop_assert!(creds.buf.iter().all(|&b| b == 0), "wipe left decoded bytes");
                }
                Err(e) => prop_assert!(matches!(e, BasicError::NotUtf8 | BasicError::NoPassword), "{e:?}"),
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2200)) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let mut map = HeaderMap::new();
                map.insert(AUTHORIZATION, value);
                let _ = decode(&map, &mut BasicCredentials::new());
                let _ = any_presented_credential(&map, |_| false);
            }
        }

        #[test]
        fn decode_never_panics_on_basic_prefix(rest in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = b"Basic ".to_vec();
            bytes.extend_from_slice(&rest);
            let _ = decode_value(&bytes, &mut BasicCredentials::new());
            let _ = presented_in_value(&bytes, &mut |_| false);
        }

        #[test]
        fn encoded_credentials_round_trip(user in user_strategy(), pass in "\\PC{1,100}") {
            let value = basic(format!("{user}:{pass}").as_bytes());
            prop_assume!(value.len() <= MAX_HEADER_LEN);
            prop_assert_eq!(decode_one(value.as_bytes()), ok(&user, &pass));
            let encoded = value["Basic ".len()..].to_owned();
            prop_assert_eq!(presented(&[value.as_bytes()]), [encoded, user, pass]);
        }
    }
}
