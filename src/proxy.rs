//! The request path, one step per line: target → path → route → access →
//! headers → upstream. Each step returns early with a typed [`Reject`]; no step
//! knows about the next. The access log line is written when the response body
//! is finished (or abandoned), so it carries the real byte count.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, UPGRADE};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::access::{self, Grant};
use crate::audit::{self, AuditEvent};
use crate::auth::cache::{Recent, Verified};
use crate::body::{AccessLog, ResponseBody};
use crate::conn::InFlight;
use crate::error::Reject;
use crate::gateway::{Gateway, Worker};
use crate::headers::{self, AddedMemo, Hop, MemoKey, Outgoing};
use crate::path;
use crate::routes::{Access, BodyScopes, Route};
use crate::selfservice;
use crate::upstream::{Affinity, Upstream, UpstreamBody};

/// What the server knows about the connection a request arrived on, built
/// once per connection and shared by its requests.
pub struct Conn {
    pub peer: SocketAddr,
    /// The peer address as an `X-Forwarded-For` value, rendered once.
    pub peer_value: http::HeaderValue,
    pub tls: bool,
    /// The peer is one of `server.trusted_proxies`.
    pub trusted: bool,
    /// HTTP/1.1 only: its requests are sequential, so the connection can
    /// own its upstream connection while busy.
    pub affinity: Option<Arc<Affinity>>,
    /// The `Authorization` value this connection presented last, if it
    /// was answered from a fresh verification (see `auth/cache.rs`).
    pub recent: Recent,
    /// What this connection's last forwarded request got added (see
    /// `headers::prepare`).
    pub added: AddedMemo,
}

/// Serves one request; never fails (every failure is a response).
///
/// Written as a function returning an `async` block, as is `forward`: an
/// `async fn` copies each argument from its future's state into a local of
/// its own before it starts, and the request is 264 bytes.
#[allow(clippy::manual_async_fn)]
pub fn handle(
    worker: Arc<Worker>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
    in_flight: InFlight,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send {
    async move {
        // Once per request: the request keeps this config to its end, whatever
        // a reload swaps in meanwhile.
        let current = worker.live.load();
        let gw = &*current;
        let mut log = AccessLog::new(conn.peer, req.method().clone(), Instant::now());
        // An HTTP/2 request the connection caps left no place (the server wrote
        // its audit line when the place was refused).
        let refused = in_flight.over_cap().is_some();
        log.in_flight = Some(in_flight);
        // Even a refusal before the page is reached (a bad path) gets its headers.
        let on_page = gw
            .config
            .selfservice
            .as_ref()
            .is_some_and(|p| req.uri().path().starts_with(p.path.as_str()));
        let forwarded = if refused {
            Err(Reject::TooManyInFlight)
        } else {
            forward(gw, gw.upstreams(worker.index), &conn, req, &mut log).await
        };
        let (mut resp, stall) = match forwarded {
            Ok(Served::Upstream(resp, stall)) => (resp.map(Either::Left), Some(stall)),
            Ok(Served::Page(resp)) => (resp.map(Either::Right), None),
            Err(reject) => {
                log.reject = Some(reject.kind());
                (reject.into_response(&gw.challenge).map(Either::Right), None)
            }
        };
        if on_page {
            crate::selfservice::secure(resp.headers_mut());
        }
        log.status = resp.status().as_u16();
        Ok(resp.map(|body| ResponseBody::new(body, log, stall)))
    }
}

/// What answered a request that was not refused.
enum Served {
    /// The upstream, with how long its body may pause.
    Upstream(Response<Incoming>, Duration),
    /// A response passgate wrote itself: the self-service page, an introspection.
    Page(Response<Full<Bytes>>),
}

#[allow(clippy::manual_async_fn)]
fn forward<'a>(
    gw: &'a Gateway,
    upstreams: &'a [Upstream],
    conn: &'a Conn,
    mut req: Request<Incoming>,
    log: &'a mut AccessLog,
) -> impl Future<Output = Result<Served, Reject>> + Send + 'a {
    async move {
        let target = check_target(&req)?;
        // Moved into the log line, not copied: the path is borrowed from there.
        let path = &*log.path.insert(path::normalise_target(req.uri())?);
        if let Some(page) = &gw.config.selfservice {
            if selfservice::mounts(page, path.as_str()) {
                log.route = Some(Arc::from("selfservice"));
                log.metrics = Some(crate::metrics::selfservice().clone());
                let peer = selfservice::Peer {
                    addr: conn.peer.ip(),
                    tls: conn.tls,
                    trusted: conn.trusted,
                };
                // Boxed: the page's future is kilobytes, and unboxed it would
                // size (and be moved with) every proxied request's future too.
                return Ok(Served::Page(
                    Box::pin(selfservice::serve(gw, &peer, path.as_str(), req)).await,
                ));
            }
        }
        let query = req.uri().query();
        let route = gw
            .config
            .routes
            .find(req.method(), path, query)
            .map_err(route_reject)?;
        log.route = Some(route.name.clone());
        if crate::metrics::enabled() {
            log.metrics = Some(route.metrics.clone());
        }
        let client = headers::client_addr(
            conn.peer.ip(),
            req.headers(),
            &gw.config.server.trusted_proxies,
        );
        let grant =
            access::check(gw, route, path, req.headers(), query, client, &conn.recent).await?;
        if let Grant::Introspect(id) = &grant {
            log.user = Some(id.user.clone());
            return Ok(Served::Page(access::introspection(gw, id).await?));
        }
        let (index, upstream) = route
            .upstream
            .and_then(|i| Some((i, upstreams.get(i)?)))
            .ok_or(Reject::Denied)?;
        log.upstream = Some(upstream.name.clone());
        let uri = upstream.target(req.uri(), path.as_str(), query)?;
        let upgrade = wants_upgrade(&req, route).then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        prepare_upstream(
            gw,
            conn,
            &mut parts,
            &target,
            &grant,
            (index, upstream),
            upgrade.is_some(),
        );
        if let Some(uri) = uri {
            parts.uri = uri;
        }
        parts.version = Version::HTTP_11;
        if let Grant::AppPassword(id) = &grant {
            log.user = Some(id.user.clone());
        }
        let (body, progress) = match (&route.body, &grant) {
            (Some(rule), Grant::AppPassword(id)) => (
                Box::pin(inspected_body(gw, rule, id, body, client)).await?,
                None,
            ),
            _ => UpstreamBody::streamed(body),
        };
        let deadline = log
            .in_flight
            .as_ref()
            .and_then(|f| f.response_deadline(upstream.config.response_timeout));
        let mut resp = upstream
            .send(
                Request::from_parts(parts, body),
                upgrade.is_some(),
                conn.affinity.as_ref(),
                progress.as_deref(),
                deadline,
            )
            .await
            .inspect_err(|e| upstream_failed(upstream, e))?;
        let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if upgraded && upgrade.is_none() {
            // A switch nobody asked for: nothing may be tunnelled, and the
            // client must not think its connection changed protocol.
            tracing::warn!(upstream = %upstream.name, "upstream switched protocols unasked");
            return Err(Reject::UpstreamUnavailable);
        }
        // Only passgate says when a password expires; a backend's copy is dropped.
        headers::strip_response(resp.headers_mut(), upgraded, &access::EXPIRES_HEADER);
        if let Some(expires) = grant.expires_header() {
            resp.headers_mut()
                .insert(access::EXPIRES_HEADER, expires.clone());
        }
        if let (true, Some(client_side)) = (upgraded, upgrade) {
            let upstream_side = hyper::upgrade::on(&mut resp);
            let idle = log
                .in_flight
                .as_ref()
                .map(|f| f.tunnel_idle(gw.config.server.idle_timeout));
            tokio::spawn(tunnel(client_side, upstream_side, idle));
        }
        // The response body may pause for as long as the head could take.
        Ok(Served::Upstream(resp, upstream.config.response_timeout))
    }
}

/// The header rules of `headers.rs` for this request (see `headers::prepare`).
fn prepare_upstream(
    gw: &Gateway,
    conn: &Conn,
    parts: &mut http::request::Parts,
    target: &Target,
    grant: &Grant,
    (index, upstream): (usize, &Upstream),
    keep_upgrade: bool,
) {
    let out = Outgoing {
        hop: Hop {
            peer: conn.peer.ip(),
            peer_value: &conn.peer_value,
            trusted: conn.trusted,
            tls: conn.tls,
            host: target.host.as_ref(),
        },
        connection: target.connection,
        authority: parts.uri.authority(),
        identity: &gw.config.identity,
        verified: match grant {
            Grant::AppPassword(id) => Some(id),
            _ => None,
        },
        credential: upstream.config.credential.as_ref(),
        upstream_host: upstream.config.authority.as_str(),
        preserve_host: upstream.config.preserve_host,
        keep_upgrade,
    };
    let key = MemoKey {
        generation: gw.generation,
        upstream: index,
    };
    headers::prepare(&mut parts.headers, &out, &conn.added, key);
}

/// The request body on a route whose scopes depend on it: read (bounded),
/// checked and replayed unchanged. Every other body streams untouched.
/// Boxed by the caller: its state would otherwise be carried, and moved, in
/// every request's future.
async fn inspected_body(
    gw: &Gateway,
    rule: &BodyScopes,
    id: &Verified,
    body: Incoming,
    client: IpAddr,
) -> Result<UpstreamBody, Reject> {
    let bytes = read_bounded(body, rule.max_bytes, gw.config.server.header_read_timeout).await?;
    let required = rule.required(&bytes).map_err(Reject::BadRequest)?;
    if !id.granted.contains_all(required) {
        let missing = gw.config.scopes.join(required.missing_from(id.granted));
        audit::emit(AuditEvent::ScopeDenied {
            peer: client,
            user: &id.user,
            id: &id.id,
            missing: &missing,
        });
        return Err(Reject::MissingScope {
            missing,
            accepted: gw.config.scopes.join(required),
        });
    }
    Ok(UpstreamBody::replayed(bytes))
}

/// Reads a body the gateway must inspect, up to `max` bytes and within `limit`.
async fn read_bounded(
    body: Incoming,
    max: usize,
    limit: std::time::Duration,
) -> Result<Bytes, Reject> {
    let collect = Limited::new(body, max).collect();
    match tokio::time::timeout(limit, collect).await {
        Err(_) => Err(Reject::BadRequest("request body not received in time")),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(Reject::BodyTooLarge),
        Ok(Err(_)) => Err(Reject::BadRequest("request body could not be read")),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// What [`check_target`] found of a request's headers.
struct Target {
    /// The client's `Host` (one at most).
    host: Option<HeaderValue>,
    /// It sent a `Connection`.
    connection: bool,
}

/// Refuses targets that name another host or are not origin-form paths, and
/// `Host` headers that are missing in HTTP/1.1, repeated or not a host[:port]
/// (RFC 9112 §3.2: the backend must see one host, the one the client named).
/// Answers what it found of the headers, for the header rules not to look
/// again.
fn check_target<B>(req: &Request<B>) -> Result<Target, Reject> {
    if req.method() == Method::CONNECT {
        return Err(Reject::BadTarget("CONNECT is not supported"));
    }
    // An HTTP/2 `:path` is not parsed as a request line is: `?x=/admin`
    // arrives as a query on an empty path, which the `http` crate reads as
    // `/`. Refuse it as HTTP/1.1 refuses that target (RFC 9113 §8.3.1).
    if let Some(pq) = req.uri().path_and_query() {
        let pq = pq.as_str();
        let asterisk = pq == "*" && req.method() == Method::OPTIONS;
        if !pq.starts_with('/') && !asterisk {
            return Err(Reject::BadTarget("request target is not an absolute path"));
        }
    }
    let glance = headers::glance(req.headers());
    let host = glance.host;
    if glance.hosts {
        return Err(Reject::BadTarget("more than one Host header"));
    }
    match host {
        None if req.version() == Version::HTTP_11 => {
            return Err(Reject::BadTarget("HTTP/1.1 request without a Host header"))
        }
        Some(h) if !valid_host(h.as_bytes()) => {
            return Err(Reject::BadTarget("Host header is not a host name and port"))
        }
        _ => {}
    }
    if let Some(authority) = req.uri().authority() {
        if authority.as_str().contains('@') {
            return Err(Reject::BadTarget("user information in the request target"));
        }
        let same = match host {
            // HTTP/2 without Host: `:authority` is the host.
            None => req.version() == Version::HTTP_2,
            Some(host) => host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()),
        };
        if !same {
            return Err(Reject::BadTarget(
                "absolute-form target names another host than Host",
            ));
        }
    }
    Ok(Target {
        host: host.cloned(),
        connection: glance.connection,
    })
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): an IP literal
/// in brackets or a reg-name, then at most five port digits; no user
/// information, path or whitespace. Checked in place: `http::uri::Authority`
/// would copy the value on every request.
pub(crate) fn valid_host(host: &[u8]) -> bool {
    let (name_ok, port) = match host.strip_prefix(b"[") {
        Some(rest) => match rest.iter().position(|&c| c == b']') {
            Some(end) => {
                let literal = rest.get(..end).unwrap_or_default();
                let ok = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.');
                (ok, rest.get(end + 1..).unwrap_or_default())
            }
            None => (false, &[][..]),
        },
        // One scan: `:` is no reg-name byte, so the name ends at the first
        // byte that is not one, and the rest must be the port.
        None => {
            let end = host
                .iter()
                .position(|&c| !reg_name_byte(c))
                .unwrap_or(host.len());
            let (name, port) = host.split_at(end);
            (!name.is_empty(), port)
        }
    };
    name_ok
        && match port {
            [] => true,
            [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

/// unreserved / pct-encoded / sub-delims (RFC 3986 §3.2.2 reg-name).
fn reg_name_byte(c: u8) -> bool {
    REG_NAME[usize::from(c)]
}

/// [`reg_name_byte`] as a table: one load per byte of every request's
/// `Host`, where searching the punctuation list cost a dozen compares.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric();
        c += 1;
    }
    let punct = b"-._~%!$&'()*+,;=";
    let mut i = 0;
    while i < punct.len() {
        table[punct[i] as usize] = true;
        i += 1;
    }
    table
};

/// Counts a failed upstream request under its upstream's name.
fn upstream_failed(upstream: &Upstream, e: &Reject) {
    let why = match e {
        Reject::UpstreamUnavailable => crate::metrics::UpstreamFailure::Unavailable,
        Reject::UpstreamTimeout => crate::metrics::UpstreamFailure::Timeout,
        _ => return,
    };
    upstream.config.metrics.failed(why);
}

fn route_reject(e: crate::routes::RouteError) -> Reject {
    match e {
        crate::routes::RouteError::NoMatch => Reject::NoRoute,
        crate::routes::RouteError::Query(q) => Reject::BadQuery(q),
        crate::routes::RouteError::TrailingSlash => Reject::TrailingSlash,
    }
}

/// An HTTP/1.1 WebSocket upgrade on a route that allows it.
///
/// Only `Upgrade: websocket`, alone: a tunnel is raw bytes that no route
/// checks, so any protocol in it must not carry HTTP requests. Passing on
/// `h2c` would let a backend that accepts it take HTTP/2 requests for any
/// path through the tunnel (h2c smuggling). Any other `Upgrade` is dropped
/// as hop-by-hop and the request served as a plain one.
fn wants_upgrade<B>(req: &Request<B>, route: &Route) -> bool {
    let websocket = || {
        let mut upgrades = req.headers().get_all(UPGRADE).iter();
        upgrades
            .next()
            .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"))
            && upgrades.next().is_none()
    };
    matches!(route.access, Access::Web | Access::Public)
        && req.version() == Version::HTTP_11
        && websocket()
        && req
            .headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Copies bytes both ways until either side closes, or until nothing has
/// moved for `idle_timeout` (`idle`): hyper no longer watches the connection.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    idle: Option<impl Future<Output = ()>>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let idle = async {
        match idle {
            Some(idle) => idle.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        res = copy => if let Err(e) = res {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        },
        () = idle => tracing::debug!("upgraded connection idle for idle_timeout; closed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reg_name_table_is_rfc_3986() {
        for c in 0..=255u8 {
            let rfc = c.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&c);
            assert_eq!(reg_name_byte(c), rfc, "byte {c:#04x}");
        }
    }

    #[test]
    fn host_values() {
        for ok in [
            "gw.example",
            "gw.example:8443",
            "GW.Example:",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::ffff:1.2.3.4]:443",
            "xn--bcher-kva.example",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "evil.example@gw.example",
            "gw.example/evil",
            "gw.example evil.example",
            "gw.example:80:80",
            "gw.example:123456",
            "gw.example:8o",
            "[::1",
            "[]:80",
            "[::1]x",
            "[::1]:80]",
            "gw\\example",
            "gw.example\t",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
    }
}
