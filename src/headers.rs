//! Header rules between client and upstream: hop-by-hop removal (RFC 9110
//! §7.6.1), `Content-Length` dropped beside `Transfer-Encoding` (RFC 9112
//! §6.3), spoof stripping, `X-Forwarded-*`, identity headers.
//!
//! The rule is that the backend must never see a method, address, URL or user
//! that the gateway did not check. So, on every route:
//! - headers named in `Connection` and the fixed hop-by-hop set are removed;
//! - client copies of the identity headers are removed, comparing names
//!   case-insensitively with `-` and `_` treated as equal (CGI and several
//!   servers fold both to `_`, so `X_Forwarded_User` would become `REMOTE_USER`);
//!   so is the self-service page's `user_header` (e.g. `Remote-User`), which
//!   only the page believes, and only from a trusted SSO proxy;
//! - method-override and URL-override headers and `Proxy` (httpoxy,
//!   CVE-2016-5385) are removed from every peer, trusted or not: load
//!   balancers pass clients' copies through by default;
//! - `Forwarded`, `X-Real-IP` and the `X-Forwarded-*` address headers are
//!   removed unless the peer is a configured trusted proxy;
//! - `X-Forwarded-For` is replaced by the peer address (appended to when the
//!   peer is trusted), `X-Forwarded-Proto` and `-Host` are set by the gateway.
//!
//! `Git-Protocol`, `Content-Encoding` and every other end-to-end header pass untouched.

use std::net::IpAddr;

use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::HeaderMap;
use ipnet::IpNet;

use crate::auth::cache::Verified;
use crate::config::Identity;

/// Hop-by-hop headers that never cross the gateway (besides those named in
/// `Connection`). At most 32: [`strip_hop_by_hop`] marks them in a bit set.
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    // Without `Trailer`, hyper sends no request trailers upstream: identity
    // headers cannot be smuggled in a trailer section.
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Forwarding headers: kept from a configured trusted proxy (under their
/// canonical spelling only), removed from any other peer.
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-ssl",
];

/// Headers that could make the backend act on a method, URL, address or
/// proxy the gateway never checked: removed from every peer, trusted or not.
const NEVER_FORWARDED: &[&str] = &[
    "x-client-ip",
    "true-client-ip",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-uri",
    "x-forwarded-prefix",
    "x-original-uri",
    "x-original-method",
    "proxy",
];

/// What the gateway knows about the hop it received the request on.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    pub peer: IpAddr,
    /// `peer` rendered for `X-Forwarded-For` (see [`peer_value`]).
    pub peer_value: &'a HeaderValue,
    pub trusted: bool,
    pub tls: bool,
    /// The host the client addressed (Host header or HTTP/2 `:authority`).
    pub host: Option<&'a HeaderValue>,
}

/// True when `peer` is inside one of the trusted proxy networks.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = canonical(peer);
    trusted.iter().any(|n| n.contains(&peer))
}

/// The client's address: the peer, or, behind trusted proxies, the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return canonical(peer);
    }
    let mut client = canonical(peer);
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for part in text.rsplit(',') {
            let Ok(ip) = part.trim().parse::<IpAddr>() else {
                return client;
            };
            client = canonical(ip);
            if !is_trusted(client, trusted) {
                return client;
            }
        }
    }
    client
}

/// Removes hop-by-hop headers, and every header named in `Connection`.
/// With `keep_upgrade`, a WebSocket-style `Upgrade` survives with `Connection: upgrade`.
///
/// One pass over the names marks the hop-by-hop ones present; only those
/// are removed. Keep-alive clients send none; most backends send
/// `Connection: keep-alive` on every response, so this runs per request.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    strip(headers, keep_upgrade, None);
}

/// [`strip_hop_by_hop`] for a response from upstream, which also loses
/// `own`, a header only passgate may set (the password's expiry), found in
/// the same pass over the names: looking it up on its own cost a custom
/// name's hash on every response, nearly always for nothing.
pub fn strip_response(headers: &mut HeaderMap, upgraded: bool, own: &HeaderName) {
    strip(headers, upgraded, Some(own));
}

fn strip(headers: &mut HeaderMap, keep_upgrade: bool, own: Option<&HeaderName>) {
    let mut present = 0u32;
    let mut own_found = None;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name.as_str().as_bytes()) {
            present |= 1 << i;
        } else if own.is_some_and(|own| own == name) {
            own_found = own;
        }
    }
    if let Some(own) = own_found {
        headers.remove(own);
    }
    if present == 0 {
        return;
    }
    // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and an
    // intermediary must drop the latter. hyper read the body by its transfer
    // coding; a length that came with it would mis-frame the next hop.
    if headers.contains_key(TRANSFER_ENCODING) {
        headers.remove(CONTENT_LENGTH);
    }
    let upgrade = if keep_upgrade {
        headers.get(UPGRADE).cloned()
    } else {
        None
    };
    // Names listed in `Connection` that are not hop-by-hop already (those
    // go below): `keep-alive` alone, the usual value, is neither parsed
    // nor collected.
    let mut listed: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if hop_by_hop_index(token).is_some() {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                listed.push(name);
            }
        }
    }
    for name in listed {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if let Some(up) = upgrade {
        headers.insert(UPGRADE, up);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The index in [`HOP_BY_HOP`] of a header name, compared ignoring ASCII
/// case. Against string literals, not the `HeaderName`s: `as_str` on a
/// standard `HeaderName` goes through a large match on every call (see
/// docs/performance.md for the measurement).
fn hop_by_hop_index(name: &[u8]) -> Option<usize> {
    HOP_BY_HOP_NAMES
        .iter()
        .position(|h| h.len() == name.len() && h.as_bytes().eq_ignore_ascii_case(name))
}

/// [`HOP_BY_HOP`] spelled out, in the same order.
const HOP_BY_HOP_NAMES: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes identity-header copies and override headers (always) and
/// forwarding headers (unless the peer is trusted).
pub fn strip_spoofed(headers: &mut HeaderMap, identity: &Identity, trusted: bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        let identity_copy = [&identity.user, &identity.scopes, &identity.credential]
            .into_iter()
            .chain(identity.page_user.as_ref())
            .any(|h| folded_eq(n, h.as_str()));
        let never = NEVER_FORWARDED.iter().any(|s| folded_eq(n, s));
        let forwarding = FORWARDING.iter().any(|s| folded_eq(n, s));
        // A trusted proxy may send forwarding headers, but only under their
        // canonical spelling; folded variants are always dropped.
        let keep_for_trusted = trusted && FORWARDING.contains(&n);
        if identity_copy || never || (forwarding && !keep_for_trusted) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// Sets `X-Forwarded-For/Proto/Host` for the upstream.
pub fn add_forwarded(headers: &mut HeaderMap, hop: &Hop<'_>) {
    // Only a trusted proxy's list is kept: looked up for no one else.
    match hop
        .trusted
        .then(|| joined(headers, &X_FORWARDED_FOR))
        .flatten()
    {
        Some(prev) => {
            let peer = canonical(hop.peer);
            if let Ok(v) = HeaderValue::from_str(&format!("{prev}, {peer}")) {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
        None => {
            headers.insert(X_FORWARDED_FOR, hop.peer_value.clone());
        }
    }
    if !(hop.trusted && headers.contains_key(X_FORWARDED_PROTO)) {
        let proto = if hop.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(hop.trusted && headers.contains_key(X_FORWARDED_HOST)) {
        if let Some(host) = hop.host {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
    }
}

/// The peer address as an `X-Forwarded-For` value, built once per connection.
pub fn peer_value(peer: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&canonical(peer).to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Sets the identity headers of an authenticated app password.
pub fn set_identity(headers: &mut HeaderMap, identity: &Identity, verified: &Verified) {
    headers.insert(identity.user.clone(), verified.user_header.clone());
    headers.insert(identity.scopes.clone(), verified.scopes_header.clone());
    headers.insert(identity.credential.clone(), verified.id_header.clone());
}

/// The `Host` to send upstream: the client's (default) or the upstream's own.
pub fn set_host(
    headers: &mut HeaderMap,
    client_host: Option<HeaderValue>,
    upstream: &str,
    preserve: bool,
) {
    let value = match client_host {
        // Usually the client's own `Host`, still in place: a lookup, not an
        // insert (which re-hashed and replaced it on every request).
        Some(h) if preserve && headers.get(HOST) == Some(&h) => return,
        Some(h) if preserve => h,
        _ => match HeaderValue::from_str(upstream) {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    headers.insert(HOST, value);
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let s = v.to_str().ok()?;
        match &mut out {
            Some(o) => {
                o.push_str(", ");
                o.push_str(s);
            }
            None => out = Some(s.to_owned()),
        }
    }
    out
}

/// ASCII case-insensitive comparison with `-` and `_` treated as equal.
fn folded_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let f = |c: u8| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            };
            f(x) == f(y)
        })
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            user: HeaderName::from_static("x-forwarded-user"),
            scopes: HeaderName::from_static("x-forwarded-scopes"),
            credential: HeaderName::from_static("x-forwarded-app-password"),
            page_user: Some(HeaderName::from_static("remote-user")),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_names_match_their_header_names() {
        for (name, header) in HOP_BY_HOP_NAMES.iter().zip(&HOP_BY_HOP) {
            assert_eq!(*name, header.as_str());
        }
        assert_eq!(hop_by_hop_index(b"Keep-Alive"), Some(1));
        assert_eq!(hop_by_hop_index(b"keep-alive2"), None);
    }

    #[test]
    fn a_response_loses_the_gateways_own_header_with_the_hop_by_hop_ones() {
        let own = HeaderName::from_static("x-app-password-expires");
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("X-App-Password-Expires", "2999-01-01T00:00:00Z"),
            ("content-type", "text/plain"),
        ]);
        strip_response(&mut h, false, &own);
        assert!(h.get(&own).is_none());
        assert!(h.get("connection").is_none());
        assert_eq!(h["content-type"], "text/plain");
        // Without any hop-by-hop header too.
        let mut h = map(&[("x-app-password-expires", "soon"), ("etag", "\"1\"")]);
        strip_response(&mut h, false, &own);
        assert!(h.get(&own).is_none());
        assert_eq!(h.len(), 1);
        // A request's pass leaves it alone (the request side has its own rules).
        let mut h = map(&[("x-app-password-expires", "soon")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn connection_listed_and_fixed_hop_headers_go() {
        let mut h = map(&[
            ("connection", "close, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("git-protocol", "version=2"),
            ("content-encoding", "gzip"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2);
        assert_eq!(h["git-protocol"], "version=2");
        assert_eq!(h["content-encoding"], "gzip");
    }

    #[test]
    fn a_length_beside_a_transfer_coding_goes_with_it() {
        let mut h = map(&[("transfer-encoding", "chunked"), ("content-length", "40")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
        let mut h = map(&[("content-length", "40")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["content-length"], "40");
    }

    #[test]
    fn upgrade_kept_when_asked() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn identity_copies_go_in_every_spelling_even_from_trusted_peers() {
        let mut h = map(&[
            ("X-Forwarded-User", "admin"),
            ("x_forwarded_user", "admin"),
            ("X-FORWARDED-SCOPES", "repository:admin"),
            ("x-forwarded-app-password", "abc"),
            ("x-forwarded-user-agent", "kept"),
        ]);
        strip_spoofed(&mut h, &identity(), true);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-forwarded-user-agent"));
    }

    #[test]
    fn overrides_go_even_from_trusted_peers() {
        // Issue #21 item 3: load balancers pass clients' copies through.
        let raw = [
            ("x-http-method-override", "DELETE"),
            ("X-HTTP-Method", "DELETE"),
            ("x-method-override", "DELETE"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-forwarded-uri", "/admin"),
            ("x-forwarded-prefix", "/admin"),
            ("proxy", "http://evil"),
            ("true-client-ip", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ];
        let mut h = map(&raw);
        strip_spoofed(&mut h, &identity(), true);
        let mut kept: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["forwarded", "x-forwarded-proto", "x-real-ip"]);
    }

    #[test]
    fn overrides_go_unless_trusted() {
        let raw = [
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-http-method-override", "DELETE"),
            ("x_http_method", "DELETE"),
            ("x-original-url", "/admin"),
            ("proxy", "http://evil"),
            ("accept", "*/*"),
        ];
        let mut h = map(&raw);
        strip_spoofed(&mut h, &identity(), false);
        assert_eq!(h.len(), 1);
        let mut h = map(&raw);
        strip_spoofed(&mut h, &identity(), true);
        assert!(h.contains_key("forwarded") && h.contains_key("x-real-ip"));
        assert!(
            !h.contains_key("x_http_method"),
            "folded spelling never trusted"
        );
    }

    #[test]
    fn forwarded_for_replaced_unless_trusted() {
        let host = HeaderValue::from_static("git.example");
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let mut h = map(&[("x-forwarded-for", "6.6.6.6")]);
        strip_spoofed(&mut h, &identity(), false);
        add_forwarded(
            &mut h,
            &Hop {
                peer,
                peer_value: &peer_value(peer),
                trusted: false,
                tls: true,
                host: Some(&host),
            },
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "git.example");

        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarded(
            &mut h,
            &Hop {
                peer,
                peer_value: &peer_value(peer),
                trusted: true,
                tls: false,
                host: Some(&host),
            },
        );
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn client_addr_walks_trusted_chain() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = map(&[("x-forwarded-for", "6.6.6.6, 7.7.7.7, 10.1.1.1")]);
        assert_eq!(
            client_addr("10.0.0.1".parse().unwrap(), &h, &trusted),
            "7.7.7.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_addr("8.8.8.8".parse().unwrap(), &h, &trusted),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(is_trusted(mapped, &trusted));
    }
}
