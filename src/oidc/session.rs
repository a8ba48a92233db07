//! Sign-in sessions and pre-login records as the browser and the store see
//! them: random 256-bit ids in cookies, records in the store under a hash of
//! the id.
//!
//! - **Session**: cookie `__Host-passgate` (`Secure; HttpOnly;
//!   SameSite=Strict; Path=/`), or `passgate` without `Secure` on plain HTTP
//!   (which the config allows only on loopback). The record ([`Session`])
//!   holds the user and when they last authenticated; it expires after
//!   `session_ttl`.
//! - **Pre-login**: cookie `__Host-passgate-login` (`passgate-login` on plain
//!   HTTP), `SameSite=Lax` because the issuer's redirect back is a cross-site
//!   navigation that a `Strict` cookie would miss; the record is a
//!   [`Pending`], taken (read and deleted in one transaction) by the callback.
//!
//! - **Kept form**: after a step-up, the form the user had filled in
//!   ([`Resume`]), under the new session ([`resume_key`]) for
//!   `sign_in_timeout`, so that `{mount}/resume` shows it again on every
//!   reload until it is submitted.
//!
//! The store is keyed by `kind:blake3(id)`: someone reading the store cannot
//! turn an entry into a cookie.

use http::header::{HeaderMap, HeaderValue, COOKIE};
use serde::{Deserialize, Serialize};

use super::{Pending, Resume};

/// Session cookie on HTTPS (`__Host-` pins it to this host and path `/`).
pub const SESSION_COOKIE: &str = "__Host-passgate";
/// Session cookie on plain HTTP (loopback only).
pub const SESSION_COOKIE_PLAIN: &str = "passgate";
/// Pre-login cookie on HTTPS.
pub const LOGIN_COOKIE: &str = "__Host-passgate-login";
/// Pre-login cookie on plain HTTP.
pub const LOGIN_COOKIE_PLAIN: &str = "passgate-login";

/// A signed-in browser, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    /// Last authentication at the issuer, unix seconds.
    pub auth_time: u64,
    /// Unix seconds.
    pub created: u64,
}

/// A new random id: 256 bits, base64url.
pub fn new_id() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An id as cookies carry it: 43 base64url characters, nothing else.
pub fn well_formed(id: &str) -> bool {
    id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The store key of a session id.
pub fn session_key(id: &str) -> String {
    format!("session:{}", blake3::hash(id.as_bytes()).to_hex())
}

/// The store key of a pre-login id.
pub fn login_key(id: &str) -> String {
    format!("login:{}", blake3::hash(id.as_bytes()).to_hex())
}

/// The store key of the form a step-up kept for the session stored under
/// `session_key` (the session's own key, hashed again: one kept form per
/// session, unreachable without the session's cookie).
pub fn resume_key(session_key: &str) -> String {
    format!("resume:{}", blake3::hash(session_key.as_bytes()).to_hex())
}

/// The cookie names for a request over TLS or plain HTTP: (session, pre-login).
pub fn cookie_names(tls: bool) -> (&'static str, &'static str) {
    if tls {
        (SESSION_COOKIE, LOGIN_COOKIE)
    } else {
        (SESSION_COOKIE_PLAIN, LOGIN_COOKIE_PLAIN)
    }
}

/// `Set-Cookie` for the session (`max_age` seconds; 0 deletes it).
pub fn session_cookie(tls: bool, id: &str, max_age: u64) -> HeaderValue {
    set_cookie(cookie_names(tls).0, id, max_age, tls, "Strict")
}

/// `Set-Cookie` for the pre-login record (`max_age` seconds; 0 deletes it).
pub fn login_cookie(tls: bool, id: &str, max_age: u64) -> HeaderValue {
    set_cookie(cookie_names(tls).1, id, max_age, tls, "Lax")
}

fn set_cookie(name: &str, id: &str, max_age: u64, secure: bool, same_site: &str) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value =
        format!("{name}={id}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}");
    // Names are constants and ids base64url: always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The value of cookie `name` if the request carries exactly one well-formed
/// one (two copies, as a cookie-tossing attacker on a sibling domain could
/// plant, count as none).
pub fn read_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut found = None;
    for header in headers.get_all(COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if k == name {
                if found.is_some() {
                    return None;
                }
                found = Some(v);
            }
        }
    }
    found.filter(|v| well_formed(v))
}

/// A [`Pending`] as stored.
pub fn encode_pending(p: &Pending) -> Vec<u8> {
    serde_json::to_vec(p).unwrap_or_default()
}

pub fn decode_pending(bytes: &[u8]) -> Option<Pending> {
    serde_json::from_slice(bytes).ok()
}

/// A kept [`Resume`] as stored.
pub fn encode_resume(r: &Resume) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_default()
}

pub fn decode_resume(bytes: &[u8]) -> Option<Resume> {
    serde_json::from_slice(bytes).ok()
}

pub fn encode_session(s: &Session) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_default()
}

pub fn decode_session(bytes: &[u8]) -> Option<Session> {
    serde_json::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_256_bits_and_distinct() {
        let a = new_id();
        assert!(well_formed(&a), "{a}");
        assert_ne!(a, new_id());
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}=", &a[..42])));
    }

    #[test]
    fn cookie_flags() {
        let id = new_id();
        let c = session_cookie(true, &id, 60);
        assert_eq!(
            c.to_str().unwrap(),
            format!("__Host-passgate={id}; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure")
        );
        let c = session_cookie(false, &id, 60);
        assert_eq!(
            c.to_str().unwrap(),
            format!("passgate={id}; Path=/; Max-Age=60; HttpOnly; SameSite=Strict")
        );
    }

    #[test]
    fn duplicate_cookies_count_as_none() {
        let id = new_id();
        let mut h = HeaderMap::new();
        h.append(COOKIE, format!("a=b; passgate={id}").parse().unwrap());
        assert_eq!(read_cookie(&h, "passgate"), Some(id.as_str()));
        h.append(COOKIE, format!("passgate={}", new_id()).parse().unwrap());
        assert_eq!(read_cookie(&h, "passgate"), None);
    }
}
