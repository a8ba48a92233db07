//! CSRF tokens and the same-origin check for the page's forms.
//!
//! A token is a keyed BLAKE3 hash of the signed-in user and their binding
//! (the session id, when there are sessions) under a key drawn at start-up:
//! another user's token, a token from before a restart or a made-up one all
//! fail, compared in constant time. Stateless, so nothing grows per visitor.
//!
//! The origin check (`Origin`, else `Referer`) follows OWASP's "verifying
//! origin with standard headers". The page sends `Referrer-Policy:
//! no-referrer`, under which browsers send `Origin: null` on form posts
//! (Fetch, "serializing a request origin"); such a post is accepted only when
//! the browser's own `Sec-Fetch-Site` says `same-origin`, a header no page can
//! set.

use http::request::Parts;
use http::{HeaderMap, Uri};
use subtle::ConstantTimeEq;

use super::identity::SignedIn;

/// The per-process key tokens are made with.
pub struct Csrf {
    key: [u8; 32],
}

impl std::fmt::Debug for Csrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Csrf(..)")
    }
}

impl Csrf {
    pub fn new() -> Csrf {
        Csrf {
            key: rand::random(),
        }
    }

    /// The token for this signed-in user's forms (64 hex characters).
    pub fn token(&self, who: &SignedIn) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(b"passgate csrf v1\0");
        h.update(&(who.user.len() as u64).to_le_bytes());
        h.update(who.user.as_bytes());
        h.update(who.binding.as_bytes());
        h.finalize().to_hex().to_string()
    }

    /// True when `presented` is this user's token.
    pub fn check(&self, who: &SignedIn, presented: Option<&str>) -> bool {
        let expected = self.token(who);
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.as_bytes())))
    }
}

impl Default for Csrf {
    fn default() -> Self {
        Csrf::new()
    }
}

/// `scheme://host[:port]` of the page as the browser addresses it, lower
/// case, without a default port. Behind a trusted proxy (which terminates TLS
/// and may change the host) its `X-Forwarded-Proto`/`-Host` are believed.
pub fn own_origin(req: &Parts, tls: bool, trusted: bool) -> Option<String> {
    let forwarded = |name: &str| trusted.then(|| first_item(&req.headers, name)).flatten();
    let scheme = forwarded("x-forwarded-proto").unwrap_or(if tls { "https" } else { "http" });
    let host = forwarded("x-forwarded-host")
        .or_else(|| req.headers.get(http::header::HOST)?.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))?;
    Some(normal_origin(scheme, host))
}

/// True when the POST comes from a page of `own` origin (see the module doc).
pub fn same_origin(headers: &HeaderMap, own: &str) -> bool {
    let origin = headers.get(http::header::ORIGIN).map(|v| v.to_str());
    match origin {
        Some(Ok(o)) if o != "null" => origin_of(o).is_some_and(|o| o == own),
        Some(Err(_)) => false,
        // `Origin: null` or none: only the browser's own word, or a Referer.
        Some(Ok(_)) | None => {
            let fetch_site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
            if fetch_site == Some(b"same-origin".as_slice()) {
                return true;
            }
            headers
                .get(http::header::REFERER)
                .and_then(|r| r.to_str().ok())
                .and_then(origin_of)
                .is_some_and(|o| o == own)
        }
    }
}

fn first_item<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let v = headers.get(name)?.to_str().ok()?;
    let first = v.split(',').next()?.trim();
    (!first.is_empty()).then_some(first)
}

/// The origin of an absolute URL, normalised like [`own_origin`].
fn origin_of(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?.as_str();
    if authority.contains('@') {
        return None;
    }
    Some(normal_origin(scheme, authority))
}

fn normal_origin(scheme: &str, host: &str) -> String {
    let scheme = scheme.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    let host = match (scheme.as_str(), host.rsplit_once(':')) {
        ("https", Some((h, "443"))) | ("http", Some((h, "80"))) if !h.ends_with(':') => h,
        _ => host.as_str(),
    };
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(user: &str) -> SignedIn {
        SignedIn {
            user: user.into(),
            binding: String::new(),
            can_sign_out: false,
            auth_time: None,
        }
    }

    #[test]
    fn tokens_are_per_user_and_per_key() {
        let c = Csrf::new();
        let t = c.token(&who("alice"));
        assert!(c.check(&who("alice"), Some(&t)));
        assert!(!c.check(&who("bob"), Some(&t)));
        assert!(!c.check(&who("alice"), None));
        assert!(!c.check(&who("alice"), Some("")));
        assert!(!Csrf::new().check(&who("alice"), Some(&t)));
    }

    #[test]
    fn origins() {
        assert_eq!(
            normal_origin("HTTPS", "Git.Example:443"),
            "https://git.example"
        );
        assert_eq!(normal_origin("http", "[::1]:80"), "http://[::1]");
        assert_eq!(normal_origin("http", "[::1]"), "http://[::1]");
        assert_eq!(normal_origin("http", "h:8080"), "http://h:8080");
        let mut h = HeaderMap::new();
        h.insert("origin", "https://git.example".parse().unwrap());
        assert!(same_origin(&h, "https://git.example"));
        h.insert("origin", "https://evil.example".parse().unwrap());
        assert!(!same_origin(&h, "https://git.example"));
        h.insert("origin", "null".parse().unwrap());
        assert!(!same_origin(&h, "https://git.example"));
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(same_origin(&h, "https://git.example"));
        let mut h = HeaderMap::new();
        h.insert("referer", "https://git.example/-/x?y".parse().unwrap());
        assert!(same_origin(&h, "https://git.example"));
        h.insert("referer", "https://git.example.evil/".parse().unwrap());
        assert!(!same_origin(&h, "https://git.example"));
        assert!(!same_origin(&HeaderMap::new(), "https://git.example"));
    }
}
