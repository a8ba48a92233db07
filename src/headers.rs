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
//!
//! [`prepare`] applies the request's rules; what they add is the same for
//! every request a connection makes with one password to one host, so a
//! connection keeps it ([`AddedMemo`]) for the next request to copy.

use std::net::IpAddr;

use std::sync::Arc;

use http::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::HeaderMap;
use ipnet::IpNet;

use crate::auth::cache::Verified;
use crate::config::Identity;

/// Hop-by-hop headers that never cross the gateway (besides those named in
/// `Connection`). At most 32: the header pass (`strip`) marks them in a bit set.
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

/// How the request's rules treat a header name, decided once per name by
/// [`classify`]. The names, by class:
/// - hop-by-hop ([`HOP_BY_HOP`]), matched ignoring case only: `Keep_Alive`
///   is not `Keep-Alive` to any server, and passes;
/// - forwarding, kept from a configured trusted proxy (under their canonical
///   spelling only), removed from any other peer: `forwarded`, `x-real-ip`,
///   `x-forwarded-for`, `-proto`, `-host`, `-port`, `-server`, `-ssl`;
/// - never forwarded, since they could make the backend act on a method,
///   URL, address or proxy the gateway never checked, removed from every
///   peer, trusted or not: `x-client-ip`, `true-client-ip`,
///   `x-http-method-override`, `x-http-method`, `x-method-override`,
///   `x-original-url`, `x-rewrite-url`, `x-forwarded-uri`,
///   `x-forwarded-prefix`, `x-original-uri`, `x-original-method`, `proxy`.
///
/// Forwarding and never-forwarded names match ignoring case with `-` and `_`
/// treated as equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Hop-by-hop: the index in [`HOP_BY_HOP`].
    Hop(u32),
    /// A forwarding header; `canonical` unless spelled with a `_`.
    Forwarding {
        canonical: bool,
    },
    NeverForwarded,
    /// Anything else (identity headers are configured, so checked apart).
    Other,
}

const CONNECTION_INDEX: u32 = 0;
const TRANSFER_ENCODING_INDEX: u32 = 7;
const UPGRADE_INDEX: u32 = 8;

/// The [`Class`] of a header name or `Connection` token, whatever its case.
///
/// Switches on the length first, so a name is compared with the few listed
/// names of its length (none, for most): the lists as `folded_eq` loops cost
/// about 200 instructions per header, on every request.
fn classify(name: &[u8]) -> Class {
    use Class::{Forwarding, Hop, NeverForwarded as Never};
    const FWD: Class = Forwarding { canonical: true };
    let candidates: &[(&[u8], Class)] = match name.len() {
        2 => &[(b"te", Hop(5))],
        5 => &[(b"proxy", Never)],
        7 => &[(b"trailer", Hop(6)), (b"upgrade", Hop(UPGRADE_INDEX))],
        9 => &[(b"forwarded", FWD), (b"x-real-ip", FWD)],
        10 => &[
            (b"connection", Hop(CONNECTION_INDEX)),
            (b"keep-alive", Hop(1)),
        ],
        11 => &[(b"x-client-ip", Never)],
        13 => &[(b"x-http-method", Never), (b"x-rewrite-url", Never)],
        14 => &[
            (b"true-client-ip", Never),
            (b"x-original-url", Never),
            (b"x-original-uri", Never),
        ],
        15 => &[
            (b"x-forwarded-for", FWD),
            (b"x-forwarded-ssl", FWD),
            (b"x-forwarded-uri", Never),
        ],
        16 => &[
            (b"proxy-connection", Hop(2)),
            (b"x-forwarded-host", FWD),
            (b"x-forwarded-port", FWD),
        ],
        17 => &[
            (b"transfer-encoding", Hop(TRANSFER_ENCODING_INDEX)),
            (b"x-forwarded-proto", FWD),
            (b"x-method-override", Never),
            (b"x-original-method", Never),
        ],
        18 => &[
            (b"proxy-authenticate", Hop(3)),
            (b"x-forwarded-server", FWD),
            (b"x-forwarded-prefix", Never),
        ],
        19 => &[(b"proxy-authorization", Hop(4))],
        22 => &[(b"x-http-method-override", Never)],
        _ => return Class::Other,
    };
    for &(listed, class) in candidates {
        // Listed names start with a letter, so `| 0x20` is its lower case;
        // most candidates differ there.
        if name.first().map(|c| c | 0x20) != listed.first().copied() {
            continue;
        }
        // A `HeaderName` is in lower case already: the usual match is exact.
        if name == listed {
            return class;
        }
        // `listed` is lower case, with `-` only: at most one matches.
        match folded_match(name, listed) {
            Some(false) => return class,
            Some(true) => {
                return match class {
                    Hop(_) => Class::Other,
                    Forwarding { .. } => Forwarding { canonical: false },
                    _ => class,
                }
            }
            None => {}
        }
    }
    Class::Other
}

/// The index in [`HOP_BY_HOP`] of a header name as a `HeaderName` holds it
/// (in lower case): [`classify`] for the response's pass, which needs no
/// other class and no folding. `classify` is not inlined (it is large) and
/// cost ~35 instructions a name there; this is.
#[inline]
fn hop_index(name: &[u8]) -> Option<u32> {
    let i = match (name.len(), name.first()) {
        (2, _) if name == b"te" => 5,
        (7, Some(b't')) if name == b"trailer" => 6,
        (7, Some(b'u')) if name == b"upgrade" => UPGRADE_INDEX,
        (10, Some(b'c')) if name == b"connection" => CONNECTION_INDEX,
        (10, Some(b'k')) if name == b"keep-alive" => 1,
        (16, _) if name == b"proxy-connection" => 2,
        (17, _) if name == b"transfer-encoding" => TRANSFER_ENCODING_INDEX,
        (18, _) if name == b"proxy-authenticate" => 3,
        (19, _) if name == b"proxy-authorization" => 4,
        _ => return None,
    };
    Some(i)
}

/// `name` against a listed name of the same length, ignoring case, and with
/// `_` for `-`: `Some(true)` if a `_` stood for a `-`, `None` if they differ.
fn folded_match(name: &[u8], listed: &[u8]) -> Option<bool> {
    let mut folded = false;
    for (&c, &l) in name.iter().zip(listed) {
        if c.to_ascii_lowercase() == l {
            continue;
        }
        if c == b'_' && l == b'-' {
            folded = true;
            continue;
        }
        return None;
    }
    Some(folded)
}

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

/// What the request's pass over its headers saw, for the rules after it.
#[derive(Debug)]
pub struct Stripped {
    /// The client's `Host` (its first value), as it arrived.
    pub host: Option<HeaderValue>,
    /// That `Host` is still in the map: no rule removed it (only a
    /// `Connection` listing `Host`, or an identity header named so, does).
    pub host_in_place: bool,
}

/// All the request's rules but the ones that add headers, in one pass over
/// the client's headers: hop-by-hop removal (with `keep_upgrade`, a
/// WebSocket-style `Upgrade` survives with `Connection: upgrade`), and
/// identity copies, never-forwarded names and (unless `trusted`) forwarding
/// headers removed. Finds the client's `Host` on the way.
///
/// One pass classifies each name once, and reads the `Connection` values as
/// it meets them; only what must go is looked up again, to be removed. Two
/// passes, each walking the names against ~24 listed ones, and two lookups
/// of `Host` cost ~600 instructions more per request, where the usual
/// request has nothing to remove.
pub fn strip_request(
    headers: &mut HeaderMap,
    identity: &Identity,
    trusted: bool,
    keep_upgrade: bool,
) -> Stripped {
    strip(headers, keep_upgrade, Some((identity, trusted)))
}

/// A response from upstream loses its hop-by-hop headers and every header
/// named in `Connection` (with `upgraded`, a switch's `Upgrade` survives
/// with `Connection: upgrade`), and `own`, a header only passgate may set
/// (the password's expiry), found in the same pass over the names: looking
/// it up on its own cost a custom name's hash on every response, nearly
/// always for nothing.
///
/// One pass over the names (a slice: no values are needed to look) marks
/// the hop-by-hop ones present; only those are removed. Most backends send
/// `Connection: keep-alive` on every response, so this runs per request:
/// `Connection` is read as it is removed, in one lookup. The request's
/// pass (`strip`), which walks names and values for its spoof rules too,
/// cost 978 instructions on nginx's usual five headers; this, 806 (both
/// measured alone under callgrind).
pub fn strip_response(headers: &mut HeaderMap, upgraded: bool, own: &HeaderName) {
    let mut present = 0u32;
    let mut own_found = false;
    for name in headers.keys() {
        match hop_index(name.as_str().as_bytes()) {
            Some(i) => present |= 1 << i,
            None => own_found |= name == own,
        }
    }
    if own_found {
        headers.remove(own);
    }
    if present == 0 {
        return;
    }
    let mut listed: Vec<HeaderName> = Vec::new();
    if present & (1 << CONNECTION_INDEX) != 0 {
        if let http::header::Entry::Occupied(entry) = headers.entry(CONNECTION) {
            for value in entry.remove_entry_mult().1 {
                listed.extend(connection_listed(&value));
            }
        }
    }
    let upgrade = (upgraded && present & (1 << UPGRADE_INDEX) != 0)
        .then(|| headers.get(UPGRADE).cloned())
        .flatten();
    // RFC 9112 §6.3, as in `strip`.
    if present & (1 << TRANSFER_ENCODING_INDEX) != 0 {
        headers.remove(CONTENT_LENGTH);
    }
    for name in listed {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if i as u32 != CONNECTION_INDEX && present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if let Some(up) = upgrade {
        headers.insert(UPGRADE, up);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The one pass of [`strip_request`]: `spoof` is the identity and whether
/// the peer is trusted, for the request's spoof rules (`None`: the
/// hop-by-hop rules alone, the reference [`strip_response`]'s own pass is
/// tested against). Removes what must go, by name, after the pass.
fn strip(
    headers: &mut HeaderMap,
    keep_upgrade: bool,
    spoof: Option<(&Identity, bool)>,
) -> Stripped {
    let mut present = 0u32;
    let mut host = None;
    let mut upgrade = None;
    // Identity copies, never-forwarded and untrusted forwarding names, and
    // the names `Connection` lists that are not hop-by-hop already (those
    // go by `present`): `keep-alive` alone, the usual value, adds none.
    let mut doomed: Vec<HeaderName> = Vec::new();
    // `iter` yields a name once per value, its values in a row: the name is
    // classified at its first.
    let mut last: *const HeaderName = std::ptr::null();
    let mut class = Class::Other;
    for (name, value) in headers.iter() {
        if !std::ptr::eq(name, last) {
            last = name;
            let text = name.as_str();
            class = classify(text.as_bytes());
            if let Class::Hop(i) = class {
                present |= 1 << i;
            }
            if let Some((identity, trusted)) = spoof {
                let doom = match class {
                    // Removed below, whatever else they are.
                    Class::Hop(_) => false,
                    Class::NeverForwarded => true,
                    // A trusted proxy may send forwarding headers, but only
                    // under their canonical spelling.
                    Class::Forwarding { canonical } if !(trusted && canonical) => true,
                    Class::Forwarding { .. } | Class::Other => identity_copy(text, identity),
                };
                if doom {
                    doomed.push(name.clone());
                }
            }
        }
        match class {
            Class::Hop(CONNECTION_INDEX) => doomed.extend(connection_listed(value)),
            Class::Hop(UPGRADE_INDEX) if keep_upgrade && upgrade.is_none() => {
                upgrade = Some(value.clone());
            }
            _ if host.is_none() && name == HOST => host = Some(value.clone()),
            _ => {}
        }
    }
    let mut host_in_place = host.is_some();
    if present == 0 && doomed.is_empty() {
        return Stripped {
            host,
            host_in_place,
        };
    }
    // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and an
    // intermediary must drop the latter. hyper read the body by its transfer
    // coding; a length that came with it would mis-frame the next hop.
    if present & (1 << TRANSFER_ENCODING_INDEX) != 0 {
        headers.remove(CONTENT_LENGTH);
    }
    for name in doomed {
        host_in_place &= name != HOST;
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if let Some(up) = upgrade {
        // Unless an identity header is configured under either name: then
        // the client's copy goes like any other.
        let copy =
            |name: &HeaderName| spoof.is_some_and(|(id, _)| identity_copy(name.as_str(), id));
        if !copy(&UPGRADE) {
            headers.insert(UPGRADE, up);
        }
        if !copy(&CONNECTION) {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
    Stripped {
        host,
        host_in_place,
    }
}

/// The header names a `Connection` value lists besides the hop-by-hop ones
/// (which go by name anyway): `keep-alive` alone, the usual value, lists
/// none. Tokens that are no header name are skipped.
fn connection_listed(value: &HeaderValue) -> impl Iterator<Item = HeaderName> + '_ {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !matches!(classify(token), Class::Hop(_)))
        .filter_map(|token| HeaderName::from_bytes(token).ok())
}

/// `name` is one of the identity headers, in any spelling.
fn identity_copy(name: &str, identity: &Identity) -> bool {
    // Not a chained iterator: that cost ~65 instructions per header.
    let copy = |h: &HeaderName| folded_eq(name, h.as_str());
    copy(&identity.user)
        || copy(&identity.scopes)
        || copy(&identity.credential)
        || identity.page_user.as_ref().is_some_and(copy)
}
/// What one look over a request's headers finds, for the checks and the
/// rules after it: the `Host` values and whether `Connection` is there.
/// One walk over the entries; two lookups (each hashing its name) cost
/// ~200 instructions, where the usual request has two or three headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Glance<'a> {
    /// The first `Host` value.
    pub host: Option<&'a HeaderValue>,
    /// More than one `Host` value.
    pub hosts: bool,
    pub connection: bool,
}

/// See [`Glance`].
pub fn glance(headers: &HeaderMap) -> Glance<'_> {
    let mut seen = Glance::default();
    for (name, value) in headers {
        if *name == HOST {
            seen.hosts |= seen.host.is_some();
            seen.host.get_or_insert(value);
        } else if *name == CONNECTION {
            seen.connection = true;
        }
    }
    seen
}

/// Everything the request's header rules need besides the headers: the hop
/// it came on, what the gateway adds, and which upstream it goes to.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The hop the request came on. Its `host` is the client's `Host`, as
    /// `headers` carry it (at most one: see `proxy::check_target`), found
    /// there already and not looked up again; the rules add the target's
    /// authority in its stead when there is none (`Outgoing::hop`).
    pub hop: Hop<'a>,
    /// `headers` has a `Connection` ([`Glance::connection`]): without one,
    /// none is looked up.
    pub connection: bool,
    /// The target's authority (HTTP/2 `:authority`, or an absolute-form
    /// target's host): the client's host when it sent no `Host`.
    pub authority: Option<&'a http::uri::Authority>,
    pub identity: &'a Identity,
    /// The app password the request was granted to: its identity headers
    /// are set, and the client's `Authorization` goes.
    pub verified: Option<&'a Arc<Verified>>,
    /// The upstream's own `Authorization`, sent in the client's stead.
    pub credential: Option<&'a HeaderValue>,
    /// The upstream's authority, the `Host` it gets unless `preserve_host`.
    pub upstream_host: &'a str,
    pub preserve_host: bool,
    /// A WebSocket-style upgrade is being passed on (see [`strip_request`]).
    pub keep_upgrade: bool,
}

impl<'a> Outgoing<'a> {
    /// The hop, for the client's `host` (see [`add_forwarded`]).
    fn hop(&self, host: Option<&'a HeaderValue>) -> Hop<'a> {
        Hop { host, ..self.hop }
    }
}

/// Applies every request rule of this module to `headers`, in order: the
/// one pass of [`strip_request`], then [`add_forwarded`], the
/// `Authorization` swap, [`set_identity`] and [`set_host`].
///
/// The usual request takes a quicker road to the same headers. What the
/// gateway adds (`Host`, `X-Forwarded-*`, the identity headers and the
/// upstream credential) is the same on every request of a connection that
/// presents one password for one host, so `memo` keeps it, built once,
/// and each request starts from a copy of it and appends the client's
/// headers that survive the rules. Inserting six custom names one by one
/// hashed each name and probed the map every time: about 2,000
/// instructions per request, where the copy costs about 900.
/// The road is taken only where it gives the same headers as the rules
/// applied one by one (proven by the `quick_road_agrees` property test):
/// not for an upgrade, nor a `Connection` that lists another header, nor
/// an identity header configured under a name some rule treats specially.
/// The added headers come first, then the client's, in the client's order.
pub fn prepare(headers: &mut HeaderMap, out: &Outgoing<'_>, memo: &AddedMemo, key: MemoKey) {
    if out.keep_upgrade || !quick_road(headers, out, memo, key) {
        prepare_by_rules(headers, out);
    }
}

/// [`prepare`], one rule at a time: the reference its quicker road must
/// agree with, and the road for requests it does not take.
fn prepare_by_rules(h: &mut HeaderMap, out: &Outgoing<'_>) {
    let stripped = strip_request(h, out.identity, out.hop.trusted, out.keep_upgrade);
    let client_host = stripped.host.or_else(|| authority_value(out.authority));
    add_forwarded(h, &out.hop(client_host.as_ref()));
    if let Some(id) = out.verified {
        h.remove(AUTHORIZATION);
        if let Some(cred) = out.credential {
            h.insert(AUTHORIZATION, cred.clone());
        }
        set_identity(h, out.identity, id);
    }
    set_host(
        h,
        client_host,
        stripped.host_in_place,
        out.upstream_host,
        out.preserve_host,
    );
}

fn authority_value(authority: Option<&http::uri::Authority>) -> Option<HeaderValue> {
    authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}

/// Which connection, config and upstream a memo of added headers is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoKey {
    /// The gateway's generation (a reload makes a new one): the identity
    /// header names, the upstreams' credentials and `preserve_host`.
    pub generation: u64,
    /// The upstream's index in that gateway.
    pub upstream: usize,
}

/// The headers a connection's last forwarded request got added (see
/// [`prepare`]), for its next request to copy.
#[derive(Debug, Default)]
pub struct AddedMemo {
    last: std::sync::Mutex<Option<Added>>,
}

#[derive(Debug)]
struct Added {
    key: MemoKey,
    /// Held, so that no other verification can take its address.
    verified: Option<Arc<Verified>>,
    /// The client's host, as `Host` and `X-Forwarded-Host` carry it.
    host: Option<HeaderValue>,
    headers: HeaderMap,
}

impl Added {
    fn answers(
        &self,
        key: MemoKey,
        verified: Option<&Arc<Verified>>,
        host: Option<&HeaderValue>,
    ) -> bool {
        self.key == key
            && match (&self.verified, verified) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
            && self.host.as_ref() == host
    }
}

/// The quicker road of [`prepare`]; false, leaving `headers` untouched,
/// where it is not taken.
fn quick_road(headers: &mut HeaderMap, out: &Outgoing<'_>, memo: &AddedMemo, key: MemoKey) -> bool {
    // A `Connection` listing a header that is not hop-by-hop already
    // removes a name no class knows: the rules handle it.
    let listed = out.connection.then(|| headers.get_all(CONNECTION));
    if listed
        .iter()
        .flatten()
        .any(|value| connection_listed(value).next().is_some())
    {
        return false;
    }
    // Borrowed: only a memo that is built keeps a copy.
    let from_authority;
    let host = match out.hop.host {
        Some(h) => Some(h),
        None => {
            from_authority = authority_value(out.authority);
            from_authority.as_ref()
        }
    };
    // Another stream of an HTTP/2 connection holding it: no memo this time.
    let mut last = memo.last.try_lock().ok();
    let copied = last
        .as_deref()
        .and_then(Option::as_ref)
        .filter(|a| a.answers(key, out.verified, host))
        .map(|a| a.headers.clone());
    let added = match copied {
        Some(added) => added,
        None => {
            if !quick_identity(out.identity) {
                return false;
            }
            let built = added_headers(out, host);
            if let Some(last) = last.as_deref_mut() {
                *last = Some(Added {
                    key,
                    verified: out.verified.cloned(),
                    host: host.cloned(),
                    headers: built.clone(),
                });
            }
            built
        }
    };
    drop(last);
    let client = std::mem::replace(headers, added);
    let mut transfer_coded = false;
    // The client's headers that survive the rules, each name's values in
    // order: `into_iter` gives a name with its first value only.
    let mut slot: Option<http::header::OccupiedEntry<'_, HeaderValue>> = None;
    for (name, value) in client {
        let Some(name) = name else {
            if let Some(entry) = &mut slot {
                entry.append(value);
            }
            continue;
        };
        slot = None;
        let keep = match classify(name.as_str().as_bytes()) {
            Class::Hop(i) => {
                transfer_coded |= i == TRANSFER_ENCODING_INDEX;
                false
            }
            Class::NeverForwarded => false,
            Class::Forwarding { canonical } => {
                out.hop.trusted && canonical && !identity_copy(name.as_str(), out.identity)
            }
            Class::Other => {
                name != HOST
                    && !(out.verified.is_some() && name == AUTHORIZATION)
                    && !identity_copy(name.as_str(), out.identity)
            }
        };
        if keep {
            slot = Some(match headers.entry(name) {
                http::header::Entry::Occupied(mut entry) => {
                    entry.append(value);
                    entry
                }
                http::header::Entry::Vacant(entry) => entry.insert_entry(value),
            });
        }
    }
    if out.hop.trusted {
        add_forwarded(headers, &out.hop(host));
    }
    // RFC 9112 §6.3, as in `strip`: the added headers never carry a length.
    if transfer_coded {
        headers.remove(CONTENT_LENGTH);
    }
    true
}

/// The identity header names the quicker road of [`prepare`] can add: none
/// that the rules remove or set on their own account (a hop-by-hop,
/// forwarding or never-forwarded name, `Host`, `Authorization` or
/// `Content-Length`), whose order among the rules would then matter.
fn quick_identity(identity: &Identity) -> bool {
    [&identity.user, &identity.scopes, &identity.credential]
        .into_iter()
        .all(|name| {
            classify(name.as_str().as_bytes()) == Class::Other
                && *name != HOST
                && *name != AUTHORIZATION
                && *name != CONTENT_LENGTH
        })
}

/// What the gateway adds to a request from `out` for `host`, in the rules'
/// order but for `Host`, which goes first as clients send it: for an
/// untrusted peer `X-Forwarded-*` (a trusted one's are merged with its own
/// after its headers are in), the upstream credential, the identity headers.
fn added_headers<'a>(out: &Outgoing<'a>, host: Option<&'a HeaderValue>) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(8);
    set_host(
        &mut h,
        host.cloned(),
        false,
        out.upstream_host,
        out.preserve_host,
    );
    if !out.hop.trusted {
        add_forwarded(&mut h, &out.hop(host));
    }
    if let Some(id) = out.verified {
        if let Some(cred) = out.credential {
            h.insert(AUTHORIZATION, cred.clone());
        }
        set_identity(&mut h, out.identity, id);
    }
    h
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
/// `in_place`: `client_host` is the client's `Host`, still in the map
/// ([`Stripped::host_in_place`]).
pub fn set_host(
    headers: &mut HeaderMap,
    client_host: Option<HeaderValue>,
    in_place: bool,
    upstream: &str,
    preserve: bool,
) {
    let value = match client_host {
        // Usually the client's own `Host`, still in place: nothing to do,
        // not even a lookup (an insert re-hashed and replaced it on every
        // request, and a lookup to compare cost another hash).
        Some(_) if preserve && in_place => return,
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

    /// The hop-by-hop rules alone, as a request's pass applies them.
    fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
        strip(headers, keep_upgrade, None);
    }

    fn identity() -> Identity {
        Identity {
            user: HeaderName::from_static("x-forwarded-user"),
            scopes: HeaderName::from_static("x-forwarded-scopes"),
            credential: HeaderName::from_static("x-forwarded-app-password"),
            page_user: Some(HeaderName::from_static("remote-user")),
        }
    }

    fn verified(user: &'static str) -> Arc<Verified> {
        Verified::sample(&format!("{user}-id"), user)
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
        for (name, header) in spec::HOP_BY_HOP_NAMES.iter().zip(&HOP_BY_HOP) {
            assert_eq!(*name, header.as_str());
        }
        assert_eq!(HOP_BY_HOP.len(), spec::HOP_BY_HOP_NAMES.len());
        assert_eq!(classify(b"Keep-Alive"), Class::Hop(1));
        assert_eq!(classify(b"keep-alive2"), Class::Other);
    }

    #[test]
    fn a_glance_finds_the_hosts_and_a_connection() {
        let seen = |pairs: &[(&str, &str)]| {
            let h = map(pairs);
            let g = glance(&h);
            (
                g.host.map(|v| v.to_str().unwrap().to_owned()),
                g.hosts,
                g.connection,
            )
        };
        assert_eq!(seen(&[]), (None, false, false));
        assert_eq!(
            seen(&[("accept", "*/*"), ("host", "a")]),
            (Some("a".into()), false, false)
        );
        assert_eq!(
            seen(&[("host", "a"), ("connection", "close"), ("host", "b")]),
            (Some("a".into()), true, true)
        );
        assert_eq!(seen(&[("Connection", "keep-alive")]), (None, false, true));
    }

    #[test]
    fn hop_index_is_classify_on_lower_case_names() {
        for name in
            listed_names()
                .into_iter()
                .chain(["x-forwarded-fox", "keep-alive2", "tf", "trailers"])
        {
            let expected = match classify(name.as_bytes()) {
                Class::Hop(i) => Some(i),
                _ => None,
            };
            assert_eq!(hop_index(name.as_bytes()), expected, "{name}");
        }
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(name.as_str().as_bytes()), Some(i as u32));
        }
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
        strip_request(&mut h, &identity(), true, false);
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
        strip_request(&mut h, &identity(), true, false);
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
        strip_request(&mut h, &identity(), false, false);
        assert_eq!(h.len(), 1);
        let mut h = map(&raw);
        strip_request(&mut h, &identity(), true, false);
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
        strip_request(&mut h, &identity(), false, false);
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

    /// The rules as they were written before the one-pass classifier
    /// (`strip` then `strip_spoofed`, each comparing names with the lists):
    /// the reference the classifier and [`strip_request`] are held to.
    mod spec {
        use super::super::folded_eq;
        use super::*;

        pub(super) const HOP_BY_HOP_NAMES: [&str; 9] = [
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

        pub(super) const FORWARDING: &[&str] = &[
            "forwarded",
            "x-real-ip",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-port",
            "x-forwarded-server",
            "x-forwarded-ssl",
        ];

        pub(super) const NEVER_FORWARDED: &[&str] = &[
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

        pub(super) fn hop_by_hop_index(name: &[u8]) -> Option<usize> {
            HOP_BY_HOP_NAMES
                .iter()
                .position(|h| h.len() == name.len() && h.as_bytes().eq_ignore_ascii_case(name))
        }

        /// The class the lists give `name` (any case, `_` for `-`).
        pub(super) fn class(name: &str) -> Class {
            if let Some(i) = hop_by_hop_index(name.as_bytes()) {
                return Class::Hop(i as u32);
            }
            if NEVER_FORWARDED.iter().any(|s| folded_eq(name, s)) {
                return Class::NeverForwarded;
            }
            if FORWARDING.iter().any(|s| folded_eq(name, s)) {
                let lower = name.to_ascii_lowercase();
                return Class::Forwarding {
                    canonical: FORWARDING.contains(&lower.as_str()),
                };
            }
            Class::Other
        }

        pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
            let mut present = 0u32;
            for name in headers.keys() {
                if let Some(i) = hop_by_hop_index(name.as_str().as_bytes()) {
                    present |= 1 << i;
                }
            }
            if present == 0 {
                return;
            }
            if headers.contains_key(TRANSFER_ENCODING) {
                headers.remove(CONTENT_LENGTH);
            }
            let upgrade = if keep_upgrade {
                headers.get(UPGRADE).cloned()
            } else {
                None
            };
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

        pub(super) fn strip_spoofed(headers: &mut HeaderMap, identity: &Identity, trusted: bool) {
            let mut doomed: Vec<HeaderName> = Vec::new();
            for name in headers.keys() {
                let n = name.as_str();
                let identity_copy = [&identity.user, &identity.scopes, &identity.credential]
                    .into_iter()
                    .chain(identity.page_user.as_ref())
                    .any(|h| folded_eq(n, h.as_str()));
                let never = NEVER_FORWARDED.iter().any(|s| folded_eq(n, s));
                let forwarding = FORWARDING.iter().any(|s| folded_eq(n, s));
                let keep_for_trusted = trusted && FORWARDING.contains(&n);
                if identity_copy || never || (forwarding && !keep_for_trusted) {
                    doomed.push(name.clone());
                }
            }
            for name in doomed {
                headers.remove(name);
            }
        }
    }

    /// Every listed name, and every spelling of it the rules name, against
    /// the lists; the variants differ from their name in one place.
    fn spellings(name: &str) -> Vec<String> {
        let mut out = vec![
            name.to_owned(),
            name.to_ascii_uppercase(),
            name.replace('-', "_"),
            name.replace('-', "_").to_ascii_uppercase(),
        ];
        // One dash folded (of several), and the first letter capitalised.
        out.push(name.replacen('-', "_", 1));
        let mut cap = name.to_owned();
        cap[..1].make_ascii_uppercase();
        out.push(cap);
        out
    }

    fn listed_names() -> Vec<&'static str> {
        spec::HOP_BY_HOP_NAMES
            .iter()
            .chain(spec::FORWARDING)
            .chain(spec::NEVER_FORWARDED)
            .copied()
            .collect()
    }

    #[test]
    fn every_listed_name_classifies_as_its_list_says_in_every_spelling() {
        use Class::*;
        for (i, name) in spec::HOP_BY_HOP_NAMES.iter().enumerate() {
            assert_eq!(classify(name.as_bytes()), Hop(i as u32), "{name}");
            assert_eq!(
                classify(name.to_ascii_uppercase().as_bytes()),
                Hop(i as u32)
            );
            if name.contains('-') {
                // Hop-by-hop names fold case only: `Keep_Alive` passes.
                assert_eq!(classify(name.replace('-', "_").as_bytes()), Other, "{name}");
            }
        }
        for name in spec::NEVER_FORWARDED {
            for s in spellings(name) {
                assert_eq!(classify(s.as_bytes()), NeverForwarded, "{s}");
            }
        }
        for name in spec::FORWARDING {
            for s in spellings(name) {
                let canonical = !s.contains('_');
                assert_eq!(classify(s.as_bytes()), Forwarding { canonical }, "{s}");
            }
        }
        for name in listed_names() {
            for s in spellings(name) {
                assert_eq!(classify(s.as_bytes()), spec::class(&s), "{s}");
            }
        }
    }

    #[test]
    fn a_name_of_a_listed_length_that_is_not_listed_passes() {
        for name in listed_names() {
            // Every byte in turn replaced, the length kept.
            for i in 0..name.len() {
                for c in [b'a', b'z', b'0', b'-', b'_', b'x'] {
                    let mut other = name.as_bytes().to_vec();
                    other[i] = c;
                    let other = String::from_utf8(other).unwrap();
                    assert_eq!(classify(other.as_bytes()), spec::class(&other), "{other}");
                }
            }
            assert_eq!(classify(format!("{name}s").as_bytes()), Class::Other);
            assert_eq!(classify(&name.as_bytes()[1..]), spec::class(&name[1..]));
        }
        for other in [
            "x-forwarded-user",
            "git-protocol",
            "content-length",
            "host",
            "",
        ] {
            assert_eq!(classify(other.as_bytes()), Class::Other, "{other}");
        }
    }

    #[test]
    fn one_pass_finds_the_host_and_whether_a_rule_removed_it() {
        let mut h = map(&[("host", "gw.example"), ("authorization", "Basic x")]);
        let s = strip_request(&mut h, &identity(), false, false);
        assert_eq!(s.host.as_ref().unwrap(), "gw.example");
        assert!(s.host_in_place);
        assert_eq!(h.len(), 2);

        let mut h = map(&[("host", "gw.example"), ("connection", "close, Host")]);
        let s = strip_request(&mut h, &identity(), false, false);
        assert_eq!(s.host.as_ref().unwrap(), "gw.example");
        assert!(!s.host_in_place);
        assert!(h.is_empty());

        let mut id = identity();
        id.scopes = HOST;
        let mut h = map(&[("host", "gw.example"), ("accept", "*/*")]);
        let s = strip_request(&mut h, &id, true, false);
        assert!(!s.host_in_place);
        assert_eq!(h.len(), 1);

        let mut h = map(&[("accept", "*/*")]);
        let s = strip_request(&mut h, &identity(), false, false);
        assert!(s.host.is_none() && !s.host_in_place);
    }

    #[test]
    fn set_host_keeps_a_host_in_place_and_restores_a_removed_one() {
        let client = HeaderValue::from_static("gw.example");
        let mut h = map(&[("host", "gw.example")]);
        set_host(&mut h, Some(client.clone()), true, "backend:8080", true);
        assert_eq!(h["host"], "gw.example");
        let mut h = map(&[]);
        set_host(&mut h, Some(client.clone()), false, "backend:8080", true);
        assert_eq!(h["host"], "gw.example");
        let mut h = map(&[("host", "gw.example")]);
        set_host(&mut h, Some(client), true, "backend:8080", false);
        assert_eq!(h["host"], "backend:8080");
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn a_response_pass_reads_every_connection_value() {
        let own = HeaderName::from_static("x-app-password-expires");
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("connection", "X-Hop-One ,x-hop-two"),
            ("x-hop-one", "1"),
            ("x-hop-two", "2"),
            ("transfer-encoding", "chunked"),
            ("content-length", "9"),
            ("etag", "\"1\""),
        ]);
        strip_response(&mut h, false, &own);
        let kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(kept, ["etag"]);
    }

    fn name_pool() -> Vec<String> {
        let mut pool: Vec<String> = listed_names().iter().flat_map(|n| spellings(n)).collect();
        pool.extend(
            [
                "host",
                "content-length",
                "accept",
                "git-protocol",
                "x-secret-hop",
                "x-forwarded-user",
                "X_Forwarded_User",
                "x-forwarded-scopes",
                "x-forwarded-app-password",
                "remote-user",
                "remote_user",
                "x-forwarded-user-agent",
                "keep-alive2",
                "x-forwarded-fox",
            ]
            .map(String::from),
        );
        pool
    }

    fn identities() -> Vec<Identity> {
        let mut odd = identity();
        odd.user = HOST;
        odd.scopes = UPGRADE;
        odd.credential = HeaderName::from_static("x-forwarded-for");
        odd.page_user = None;
        let mut odd2 = identity();
        odd2.user = CONNECTION;
        odd2.page_user = Some(HeaderName::from_static("content-length"));
        vec![identity(), odd, odd2]
    }

    use proptest::prelude::*;

    /// What [`generated`] builds a header map from: up to 12 headers, each
    /// a name, up to 4 names a `Connection` value lists, and a value seed.
    type Draw = (prop::sample::Index, Vec<prop::sample::Index>, u8);

    fn drawn_pairs() -> impl Strategy<Value = Vec<Draw>> {
        proptest::collection::vec(
            (
                any::<prop::sample::Index>(),
                proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
                0u8..4,
            ),
            0..12,
        )
    }

    /// A header map from the property tests' draws: names from `pool`;
    /// `Connection` values list names from the pool, spaced oddly; a
    /// `Host` is one of two hosts, an `X-Forwarded-For` an address.
    fn generated(pool: &[String], pairs: &[Draw]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (i, (name, tokens, v)) in pairs.iter().enumerate() {
            let name = name.get(pool);
            let value = if name.eq_ignore_ascii_case("connection") {
                tokens
                    .iter()
                    .map(|t| t.get(pool).as_str())
                    .collect::<Vec<_>>()
                    .join(" , ")
            } else if name.eq_ignore_ascii_case("host") {
                format!("h{}.example", v % 2)
            } else if name.eq_ignore_ascii_case("x-forwarded-for") {
                format!("192.0.2.{v}")
            } else {
                format!("v{i}-{v}")
            };
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(&value).unwrap(),
            );
        }
        h
    }

    proptest! {
        /// The one pass removes what `strip_hop_by_hop` then `strip_spoofed`
        /// removed, keeps what they kept (each name's values in order), and
        /// says the `Host` is in place exactly when they left it there.
        #[test]
        fn one_pass_does_what_the_two_did(
            pairs in drawn_pairs(),
            who in 0usize..3,
            trusted in any::<bool>(),
            keep_upgrade in any::<bool>(),
        ) {
            let pool = name_pool();
            let mut h = generated(&pool, &pairs);
            let identity = &identities()[who];
            let host = h.get(HOST).cloned();
            let mut old = h.clone();
            spec::strip_hop_by_hop(&mut old, keep_upgrade);
            spec::strip_spoofed(&mut old, identity, trusted);
            let stripped = strip_request(&mut h, identity, trusted, keep_upgrade);
            prop_assert_eq!(&h, &old);
            prop_assert_eq!(&stripped.host, &host);
            prop_assert_eq!(stripped.host_in_place, host.is_some() && old.get(HOST) == host.as_ref());

            let mut old = h.clone();
            let mut new = h.clone();
            spec::strip_hop_by_hop(&mut old, keep_upgrade);
            strip_hop_by_hop(&mut new, keep_upgrade);
            prop_assert_eq!(&new, &old);
        }

        /// `prepare`'s quicker road, with and without a memo from an
        /// earlier request (of the same or another password and host),
        /// gives the very headers its rules give one by one.
        #[test]
        fn quick_road_agrees(
            pairs in drawn_pairs(),
            who in 0usize..4,
            trusted in any::<bool>(),
            tls in any::<bool>(),
            app in any::<bool>(),
            credential in any::<bool>(),
            preserve_host in any::<bool>(),
            keep_upgrade in any::<bool>(),
            authority in any::<bool>(),
            earlier in 0u8..4,
        ) {
            let mut pool = name_pool();
            pool.extend(["authorization", "x-custom-user", "x-forwarded-for", "content-length"].map(String::from));
            let mut h = generated(&pool, &pairs);
            // `check_target` lets one `Host` at most through.
            if h.get_all(HOST).iter().count() > 1 {
                let first = h.get(HOST).cloned().unwrap();
                h.insert(HOST, first);
            }
            let client_host = h.get(HOST).cloned();
            let mut identities = identities();
            let mut custom = identity();
            custom.user = HeaderName::from_static("x-custom-user");
            identities.push(custom);
            let identity = &identities[who];
            let (alice, bob) = (verified("alice"), verified("bob"));
            let peer_value = peer_value("2001:db8::1".parse().unwrap());
            let cred = HeaderValue::from_static("Basic dXBzdHJlYW06cHc=");
            let target: http::uri::Authority = "h1.example".parse().unwrap();
            let out = Outgoing {
                hop: Hop {
                    peer: "2001:db8::1".parse().unwrap(),
                    peer_value: &peer_value,
                    trusted,
                    tls,
                    host: client_host.as_ref(),
                },
                connection: h.contains_key(CONNECTION),
                authority: authority.then_some(&target),
                identity,
                verified: app.then_some(&alice),
                credential: credential.then_some(&cred),
                upstream_host: "backend.internal:8080",
                preserve_host,
                keep_upgrade,
            };
            let key = MemoKey { generation: 7, upstream: 1 };
            let memo = AddedMemo::default();
            // An earlier request on the connection: none, the same password
            // from another host, another password, or the same one.
            if earlier > 0 {
                let mut host = HeaderMap::new();
                host.insert(HOST, HeaderValue::from_static(if earlier == 1 { "h9.example" } else { "h1.example" }));
                let earlier_host = host.get(HOST).cloned();
                let other = Outgoing {
                    verified: (earlier != 2).then_some(&alice).or(Some(&bob)),
                    hop: Hop { host: earlier_host.as_ref(), ..out.hop },
                    ..out
                };
                prepare(&mut host, &other, &memo, key);
            }
            let mut expected = h.clone();
            prepare_by_rules(&mut expected, &out);
            // A fresh memo (no earlier request), then the connection's twice.
            let fresh = AddedMemo::default();
            for memo in [&fresh, &memo, &memo] {
                let mut got = h.clone();
                prepare(&mut got, &out, memo, key);
                prop_assert_eq!(&got, &expected);
            }
        }

        /// `strip_response`'s own pass removes what the request's pass, with
        /// the hop-by-hop rules alone, removes from a response, and the
        /// gateway's own header.
        #[test]
        fn the_response_pass_agrees_with_the_shared_one(
            pairs in drawn_pairs(),
            upgraded in any::<bool>(),
        ) {
            let mut pool = name_pool();
            pool.push("x-app-password-expires".to_owned());
            let own = HeaderName::from_static("x-app-password-expires");
            let mut h = generated(&pool, &pairs);
            let mut expected = h.clone();
            expected.remove(&own);
            strip(&mut expected, upgraded, None);
            strip_response(&mut h, upgraded, &own);
            prop_assert_eq!(&h, &expected);
        }

        #[test]
        fn classify_agrees_with_the_lists(name in "[a-zA-Z_-]{0,23}") {
            prop_assert_eq!(classify(name.as_bytes()), spec::class(&name));
        }
    }
}
