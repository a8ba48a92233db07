//! The gateway core through the real binary: bodies stream both ways, hop-by-hop
//! and spoofable headers never reach the backend, `X-Forwarded-*` are the
//! gateway's own, upstream failures map to 502/504, slow or idle clients are
//! cut off, upgrades tunnel, and a 1 GiB transfer does not grow memory.

// Helpers outside `#[test]` functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;

use crate::support::*;

// ------------------------------------------------------------ raw helpers --

/// A response read off a raw socket, split into status, head and body
/// (de-chunked when the head says `Transfer-Encoding: chunked`).
pub(crate) struct RawReply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawReply {
    pub(crate) fn parse(resp: &str) -> RawReply {
        let status = raw_status(resp);
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
        let head = head.to_ascii_lowercase();
        let body = if head.contains("transfer-encoding: chunked") {
            dechunk(body.as_bytes())
        } else {
            body.as_bytes().to_vec()
        };
        RawReply { status, head, body }
    }

    /// What the echo backend saw, when the response came from it.
    pub(crate) fn echo(&self) -> Option<Echo> {
        if !self.head.contains("x-backend: echo") {
            return None;
        }
        Some(serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("not an echo ({e}): {}", String::from_utf8_lossy(&self.body))
        }))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return out;
        };
        if size == 0 || b.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
}

/// Sends a raw request (bytes exactly as given) and parses the one response.
pub(crate) fn raw_reply(addr: SocketAddr, request: &str) -> RawReply {
    RawReply::parse(&raw(addr, request.as_bytes(), Duration::from_secs(10)))
}

/// Reads from `s` until the peer closes (EOF or reset); the time it took, or
/// `None` if the socket was still open after `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return Some(start.elapsed()),
        }
        if start.elapsed() > limit {
            return None;
        }
    }
}

/// Reads one response with a `Content-Length` off a kept-alive socket.
fn read_one_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before a whole response: {out:?}");
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .expect("response with content-length");
            if out.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

/// `[[routes]]` for the echo backend's streaming endpoints, on `public` access.
const STREAM_ROUTES: &str = r#"
[[routes]]
name = "bytes"
path = "/bytes"
access = "public"
upstream = "app"
"#;

fn gateway() -> (Backend, Passgate) {
    gateway_with_server("")
}

/// A gateway whose `[server]` section also holds `extra`.
fn gateway_with_server(extra: &str) -> (Backend, Passgate) {
    let backend = Backend::start();
    let mut b = ConfigBuilder::new(&backend.url());
    b.server_extra = extra.to_owned();
    let pg = Passgate::start(&b);
    (backend, pg)
}

// ----------------------------------------------------------------- bodies --

#[test]
fn fixed_length_and_chunked_request_bodies_reach_the_backend_whole() {
    let (_backend, pg) = gateway();

    let body = vec![b'a'; 100_000];
    let r = http1(pg.addr, "POST", "/public/upload", &[], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.echo();
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.body_len, 100_000);

    let chunked = "POST /public/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
                   Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n1000\r\n"
        .to_owned()
        + &"z".repeat(0x1000)
        + "\r\n0\r\n\r\n";
    let r = raw_reply(pg.addr, &chunked);
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.echo().expect("echo");
    assert_eq!(echo.body_len, 11 + 0x1000);
}

#[test]
fn chunked_response_and_one_mib_download_arrive_intact() {
    let (_backend, pg) = gateway();

    let r = get(pg.addr, "/chunked", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "alpha-beta-gamma");

    let n = 1024 * 1024;
    let r = get(pg.addr, &format!("/bytes?n={n}"), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), n);
    assert!(r.body.iter().all(|&b| b == b'x'));
    assert_eq!(
        r.headers.get("content-length").map(|v| v.to_str().unwrap()),
        Some("1048576")
    );
}

// ---------------------------------------------------------------- headers --

#[test]
fn hop_by_hop_headers_are_removed_and_end_to_end_ones_pass_untouched() {
    let (_backend, pg) = gateway();
    let req = "GET /repo/hops HTTP/1.1\r\nHost: gw.example\r\n\
               Connection: keep-alive, X-Custom-Hop\r\n\
               X-Custom-Hop: 1\r\n\
               Keep-Alive: timeout=5, max=100\r\n\
               TE: trailers\r\n\
               Proxy-Connection: keep-alive\r\n\
               Upgrade: websocket\r\n\
               Git-Protocol: version=2\r\n\
               Content-Encoding: gzip\r\n\
               X-End-To-End: kept\r\n\r\n";
    let r = raw_reply(pg.addr, req);
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.echo().expect("echo");
    for h in [
        "x-custom-hop",
        "keep-alive",
        "te",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(!echo.has(h), "{h} reached the backend: {:?}", echo.headers);
    }
    // Whatever `Connection` the gateway's own client sends, it never names the client's hop header.
    for v in echo.headers.get("connection").into_iter().flatten() {
        assert!(!v.to_ascii_lowercase().contains("x-custom-hop"), "{v}");
    }
    assert_eq!(echo.headers["git-protocol"], ["version=2"]);
    assert_eq!(echo.headers["content-encoding"], ["gzip"]);
    assert_eq!(echo.header("x-end-to-end"), Some("kept"));
}

/// Headers a client could use to make the backend believe in another method,
/// URL, address, proxy or user.
const SPOOFED: &[(&str, &str)] = &[
    ("Forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
    ("X-Real-IP", "6.6.6.6"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-HTTP-Method", "DELETE"),
    ("X-Method-Override", "DELETE"),
    ("X-Original-URL", "/admin/x"),
    ("X-Rewrite-URL", "/admin/x"),
    ("X-Forwarded-Uri", "/admin/x"),
    ("X-Forwarded-Prefix", "/admin"),
    ("Proxy", "http://evil.example:3128"),
    ("x-FORWARDED-user", "root"),
    ("X_Forwarded_User", "root"),
    ("X-Forwarded-Scopes", "repository:admin"),
    ("x_forwarded_app_password", "pgapid"),
];

#[test]
fn spoofable_headers_from_an_untrusted_client_never_reach_the_backend() {
    let (_backend, pg) = gateway();
    for target in ["/repo/page", "/public/x"] {
        let mut req = format!("GET {target} HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n");
        for (k, v) in SPOOFED {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let r = raw_reply(pg.addr, &req);
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        let echo = r.echo().expect("echo");
        assert_eq!(echo.method, "GET");
        assert_eq!(echo.path, target);
        for (k, _) in SPOOFED {
            assert!(!echo.has(k), "{target}: {k} reached the backend");
        }
        // Nothing the client sent survives under any spelling.
        for (k, vs) in &echo.headers {
            for v in vs {
                assert!(
                    !v.contains("6.6.6.6") && !v.contains("/admin") && !v.contains("root"),
                    "{target}: {k}: {v}"
                );
            }
        }
    }
}

#[test]
fn x_forwarded_headers_are_the_gateways_own_and_host_is_preserved() {
    let (_backend, pg) = gateway();
    let r = http1(
        pg.addr,
        "GET",
        "/repo/xff",
        &[
            ("host", "git.example.org"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.echo();
    assert_eq!(echo.headers["x-forwarded-for"], ["127.0.0.1"]);
    assert_eq!(echo.headers["x-forwarded-proto"], ["http"]);
    assert_eq!(echo.headers["x-forwarded-host"], ["git.example.org"]);
    assert_eq!(echo.headers["host"], ["git.example.org"]);
}

#[test]
fn a_trusted_proxy_keeps_its_forwarding_headers_and_the_peer_is_appended() {
    let (_backend, pg) = gateway_with_server("trusted_proxies = [\"127.0.0.0/8\"]\n");
    let r = http1(
        pg.addr,
        "GET",
        "/repo/xff",
        &[
            ("host", "git.example.org"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.echo();
    assert_eq!(echo.headers["x-forwarded-for"], ["6.6.6.6, 127.0.0.1"]);
    assert_eq!(echo.header("x-real-ip"), Some("6.6.6.6"));
    assert_eq!(echo.header("x-forwarded-host"), Some("git.example.org"));
    // Identity headers are stripped even from a trusted proxy.
    let r = http1(
        pg.addr,
        "GET",
        "/repo/xff",
        &[("x-forwarded-user", "root")],
        b"",
    );
    assert!(!r.echo().has("x-forwarded-user"));
}

#[test]
fn override_headers_never_reach_the_backend_even_from_a_trusted_proxy() {
    // Issue #21 item 3: nginx, HAProxy and cloud load balancers pass clients'
    // copies of these through by default.
    let (_backend, pg) = gateway_with_server("trusted_proxies = [\"127.0.0.0/8\"]\n");
    let overrides = [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-Forwarded-Uri", "/admin"),
        ("X-Forwarded-Prefix", "/admin"),
        ("Proxy", "http://evil.example"),
    ];
    for target in ["/repo/page", "/public/x"] {
        let mut headers = vec![("forwarded", "for=6.6.6.6"), ("x-real-ip", "6.6.6.6")];
        headers.extend(overrides);
        let r = http1(pg.addr, "GET", target, &headers, b"");
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        let echo = r.echo();
        assert_eq!(echo.method, "GET");
        for (k, _) in overrides {
            assert!(!echo.has(k), "{target}: {k} reached the backend");
        }
        assert_eq!(echo.header("forwarded"), Some("for=6.6.6.6"));
        assert_eq!(echo.header("x-real-ip"), Some("6.6.6.6"));
    }
}

// ----------------------------------------------------------------- routes --

#[test]
fn unmatched_path_is_404_deny_is_403_and_public_needs_no_credentials() {
    let backend = Backend::start();
    let mut b = ConfigBuilder::new(&backend.url());
    b.routes = [API_ROUTE, ADMIN_DENY_ROUTE, PUBLIC_ROUTE].concat();
    let pg = Passgate::start(&b);

    let r = get(pg.addr, "/elsewhere/x", None);
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(!r.headers.contains_key("x-backend"));
    assert_eq!(get(pg.addr, "/", None).status, 404);

    let r = get(pg.addr, "/admin/settings", None);
    assert_eq!(r.status, 403);
    assert!(!r.headers.contains_key("x-backend"));
    // Deny holds for everyone, credentials or not.
    let (_, pw) = pg.create("alice", "ci", &["repository:admin"]);
    assert_eq!(
        get(pg.addr, "/admin/settings", Some(("alice", &pw))).status,
        403
    );

    let r = get(pg.addr, "/public/readme", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echo().path, "/public/readme");

    assert_eq!(get(pg.addr, "/api/x", None).status, 401);
}

// --------------------------------------------------------------- upstream --

#[test]
fn dead_upstream_is_502_with_a_short_text_body() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pg = Passgate::start(&ConfigBuilder::new(&format!("http://127.0.0.1:{port}")));
    let start = Instant::now();
    let r = get(pg.addr, "/repo/x", None);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(start.elapsed() < Duration::from_secs(5));
    let ct = r.headers.get("content-type").unwrap().to_str().unwrap();
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(!r.body.is_empty() && r.body.len() < 200, "{:?}", r.text());
    // Internal causes stay in the log.
    assert!(!r.text().contains("127.0.0.1"), "{}", r.text());
}

#[test]
fn slow_upstream_is_504_while_other_requests_keep_flowing() {
    let backend = Backend::start();
    let b = slow_upstream(&backend, "2s");
    let pg = Passgate::start(&b);
    let addr = pg.addr;

    let start = Instant::now();
    let slow: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let r = get(addr, "/slow?ms=5000", None);
                (r.status, start.elapsed())
            })
        })
        .collect();
    for i in 0..10 {
        let t = Instant::now();
        let r = get(addr, &format!("/repo/fast{i}"), None);
        assert_eq!(r.status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "request {i} took {:?} while slow requests were pending",
            t.elapsed()
        );
    }
    assert!(
        slow.iter().all(|h| !h.is_finished()),
        "the fast requests did not overlap the slow ones"
    );
    for h in slow {
        let (status, took) = h.join().unwrap();
        assert_eq!(status, 504);
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }
}

/// An upload whose chunks arrive every `gap`, `chunks` of them, to `/public/upload`.
async fn trickle_upload(addr: SocketAddr, chunks: usize, gap: Duration) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let frames = futures_util::stream::unfold(0usize, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(gap).await;
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"0123456789"))),
            i + 1,
        ))
    });
    let req = Request::post("/public/upload")
        .header("host", addr.to_string())
        .body(StreamBody::new(frames))
        .unwrap();
    collect(send.send_request(req).await.unwrap()).await
}

#[test]
fn response_timeout_starts_when_the_upload_ends_and_a_stalled_upload_is_408() {
    // A `git push` of a big pack over a slow link: the backend answers only
    // after the whole body, long after `response_timeout` from the start.
    let backend = Backend::start();
    let mut b = ConfigBuilder::new(&backend.url());
    b.routes = format!("response_timeout = \"1s\"\n{}", default_routes());
    let pg = Passgate::start(&b);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let start = Instant::now();
    let r = rt.block_on(trickle_upload(pg.addr, 12, Duration::from_millis(250)));
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echo().body_len, 120);

    // A client that stops sending mid-body is cut off after the same time
    // without progress, and told it was its own doing.
    let start = Instant::now();
    let r = rt.block_on(trickle_upload(pg.addr, 2, Duration::from_millis(2500)));
    assert_eq!(r.status, 408, "{}", r.text());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn an_upstream_body_that_stops_is_cut_off_and_frees_the_client() {
    // A hung backend: the head and 3 of 10 bytes, then silence.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
                std::thread::sleep(Duration::from_secs(30));
            });
        }
    });
    let mut b = ConfigBuilder::new(&format!("http://{upstream}"));
    b.routes = format!("response_timeout = \"1s\"\n{}", default_routes());
    let pg = Passgate::start(&b);
    let mut s = TcpStream::connect(pg.addr).unwrap();
    s.write_all(b"GET /public/hang HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Closed after one to two timeouts of silence, the partial body delivered.
    let took = closed_within(&mut s, Duration::from_secs(5));
    let took = took.expect("the gateway kept the client waiting on a hung upstream");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(pg.wait_log("upstream response body stalled", Duration::from_secs(2)));
    assert!(pg.wait_log("complete=false", Duration::from_secs(2)));
}

// ---------------------------------------------------------------- clients --

#[test]
fn a_client_that_stops_reading_is_cut_off_after_idle_timeout() {
    // Slow-read denial of service: ask for a big body, never read it, and
    // hold the connection (and its upstream connection) for ever.
    let (_backend, pg) = gateway_with_server("idle_timeout = \"1s\"\n");
    let mut s = TcpStream::connect(pg.addr).unwrap();
    s.write_all(b"GET /bytes?n=500000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let start = Instant::now();
    assert!(
        pg.wait_log("complete=false", Duration::from_secs(6)),
        "a client reading nothing still held its download: {}",
        pg.log_text()
    );
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    // Once the buffered bytes are read, the connection turns out closed.
    assert!(closed_within(&mut s, Duration::from_secs(5)).is_some());
}

/// Opens an HTTP/2 connection whose client grants each stream `window`
/// bytes of flow-control window and never more (it never reads the body),
/// asks for `target`, and returns the response head and the connection's
/// driver: it ends when the gateway closes the connection.
async fn h2_withholding_window(
    addr: SocketAddr,
    window: u32,
    target: &str,
) -> (
    http::StatusCode,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
    Instant,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(window)
            .handshake(TokioIo::new(stream))
            .await
            .unwrap();
    let driver = tokio::spawn(conn);
    let req = Request::get(format!("http://{addr}{target}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    // Hold the body unread, and the sender, so the client stays open.
    std::mem::forget(resp);
    std::mem::forget(send);
    (status, driver, Instant::now())
}

/// A gateway with `idle_timeout = 1s`, and an HTTP/2 client that asks for
/// `target` granting `window` bytes of window and no more: asserts that
/// the gateway closes that connection after at least the idle timeout and
/// within `limit`, and that it still serves others. Returns the gateway.
fn withheld_window_is_cut_off(window: u32, target: &str, limit: Duration) -> Passgate {
    let (_backend, pg) = gateway_with_server("idle_timeout = \"1s\"\n");
    let addr = pg.addr;
    let target = target.to_owned();
    block_on(async move {
        let (status, driver, start) = h2_withholding_window(addr, window, &target).await;
        assert_eq!(status, 200);
        let ended = tokio::time::timeout(limit, driver).await;
        assert!(
            ended.is_ok(),
            "the connection was still open after {limit:?}"
        );
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(900), "{took:?}");
    });
    assert_eq!(get(addr, "/repo/after", None).status, 200);
    pg
}

#[test]
fn an_http2_client_that_grants_no_window_is_cut_off_after_idle_timeout() {
    // The HTTP/2 form of the slow read: the socket never blocks, the client
    // just grants no flow-control window, and the stream would hold its
    // upstream connection for ever.
    let pg = withheld_window_is_cut_off(0, "/bytes?n=500000000", Duration::from_secs(6));
    assert!(
        pg.wait_log("complete=false", Duration::from_secs(2)),
        "{}",
        pg.log_text()
    );
}

#[test]
fn an_http2_response_left_queued_in_the_window_does_not_hold_its_connection() {
    // One byte of window: the whole (small) body is handed to HTTP/2's send
    // queue and the request counts as done, but the client never takes it.
    // The connection goes quiet, is asked to close (GOAWAY), and is then
    // closed once it stays quiet: a graceful close must not wait for ever.
    withheld_window_is_cut_off(1, "/repo/queued", Duration::from_secs(8));
}

#[test]
fn slowloris_and_silent_clients_are_cut_off_after_header_read_timeout() {
    let (_backend, pg) = gateway_with_server("header_read_timeout = \"1s\"\n");
    let addr = pg.addr;

    let partial = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        closed_within(&mut s, Duration::from_secs(5))
    });
    let silent = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        closed_within(&mut s, Duration::from_secs(5))
    });
    // A normal client is served while the others hang on.
    let r = get(addr, "/repo/normal", None);
    assert_eq!(r.status, 200);

    let took = partial
        .join()
        .unwrap()
        .expect("partial headers: still open");
    assert!(took < Duration::from_secs(4), "{took:?}");
    let took = silent.join().unwrap().expect("silent client: still open");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(get(addr, "/repo/after", None).status, 200);
}

#[test]
fn header_read_timeout_counts_from_each_response_not_from_the_connection() {
    // Keep-alive: each head has the whole timeout after the previous
    // response, so three requests 0.7 s apart outlive a 1 s timeout.
    let (_backend, pg) = gateway_with_server("header_read_timeout = \"1s\"\n");
    let mut s = TcpStream::connect(pg.addr).unwrap();
    for i in 0..3 {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(700));
        }
        s.write_all(format!("GET /repo/k{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(raw_status(&read_one_response(&mut s)), 200, "request {i}");
    }
    // Then silence is cut off after one timeout.
    let took = closed_within(&mut s, Duration::from_secs(4)).expect("silent connection still open");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn a_slow_reader_gets_its_whole_response_despite_a_short_header_read_timeout() {
    // The head deadline of the next request starts once this response is
    // written, not while the client is still taking it.
    let (_backend, pg) = gateway_with_server("header_read_timeout = \"1s\"\n");
    let mut s = TcpStream::connect(pg.addr).unwrap();
    let n: usize = 12_000_000;
    s.write_all(format!("GET /bytes?n={n} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut body_start = None;
    loop {
        let k = s.read(&mut buf).unwrap();
        assert!(
            k > 0,
            "closed after {} bytes, {:?}",
            got.len(),
            start.elapsed()
        );
        got.extend_from_slice(&buf[..k]);
        if body_start.is_none() {
            body_start = got.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        }
        if body_start.is_some_and(|b| got.len() >= b + n) {
            break;
        }
        // About 3 MB/s: four seconds of reading.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        start.elapsed() > Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(raw_status(&String::from_utf8_lossy(&got[..100])), 200);
}

#[test]
fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let (_backend, pg) =
        gateway_with_server("idle_timeout = \"1s\"\nheader_read_timeout = \"10s\"\n");

    let mut s = TcpStream::connect(pg.addr).unwrap();
    s.write_all(b"GET /repo/one HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = read_one_response(&mut s);
    assert_eq!(raw_status(&first), 200);
    // Still open for a second request right away (keep-alive works).
    s.write_all(b"GET /repo/two HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(raw_status(&read_one_response(&mut s)), 200);

    let took = closed_within(&mut s, Duration::from_secs(6)).expect("idle connection still open");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn websocket_upgrade_tunnels_bytes_both_ways() {
    let (_backend, pg) = gateway();
    let (mut s, head) = open_tunnel(pg.addr).unwrap();
    assert!(head.contains("upgrade: websocket"), "{head}");

    for msg in [
        &b"ping-123"[..],
        &[0u8, 1, 2, 255, 254][..],
        &[b'w'; 3000][..],
    ] {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }
}

#[test]
fn only_websocket_upgrades_tunnel_so_h2c_cannot_smuggle_requests() {
    // h2c smuggling: a proxy that passes `Upgrade: h2c` on to a backend
    // that accepts it ends up tunnelling raw HTTP/2, whose requests (for
    // /admin/…, without an app password) no route of the gateway checks.
    // Only a plain `Upgrade: websocket` is tunnelled; any other Upgrade is
    // dropped as hop-by-hop and the request is served as a normal one.
    let (_backend, pg) = gateway();
    for upgrade in [
        "h2c",
        "websocket, h2c",
        "h2c, websocket",
        "websocket/13x",
        "WebSocket2",
    ] {
        let mut s = TcpStream::connect(pg.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
        )
        .unwrap();
        let reply = RawReply::parse(&read_one_response(&mut s));
        assert_eq!(reply.status, 200, "{upgrade}: {}", reply.head);
        let echo: Echo = serde_json::from_slice(&reply.body).unwrap();
        assert!(!echo.has("upgrade"), "{upgrade}: {:?}", echo.headers);
        assert!(!echo.has("http2-settings"), "{upgrade}: {:?}", echo.headers);
        // Still HTTP/1.1 through the gateway: the deny route still applies.
        s.write_all(b"GET /admin/x HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(raw_status(&read_one_response(&mut s)), 403, "{upgrade}");
    }
    // `websocket` in any case is still a WebSocket upgrade.
    let mut s = TcpStream::connect(pg.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: WebSocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
}

/// Opens a WebSocket tunnel through the gateway at `addr`: the socket after
/// the `101` head and that head (lower case), or what came instead.
fn open_tunnel(addr: SocketAddr) -> Result<(TcpStream, String), String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => {
                return Err(format!(
                    "{other:?} after {:?}",
                    String::from_utf8_lossy(&head)
                ))
            }
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if raw_status(&head) != 101 {
        return Err(head);
    }
    Ok((s, head))
}

#[test]
fn websocket_tunnels_count_under_the_connection_caps_and_idle_timeout() {
    // An upgraded connection leaves hyper: it must still hold its place under
    // the connection caps (or any client could open tunnels without limit,
    // two descriptors and an upstream connection each) and still be closed
    // when nothing moves for idle_timeout.
    let (_backend, pg) =
        gateway_with_server("idle_timeout = \"2s\"\nmax_connections_per_addr = 2\n");
    // Each tunnel's 101 means the gateway counted it: no wait needed.
    let (mut first, _) = open_tunnel(pg.addr).expect("first tunnel");
    let (mut second, _) = open_tunnel(pg.addr).expect("second tunnel");
    assert!(
        open_tunnel(pg.addr).is_err(),
        "a third tunnel got past max_connections_per_addr = 2"
    );
    // The first keeps working while bytes move (every 0.6 s, for 3 s: past
    // idle_timeout, with room for a slow round trip)...
    let moving = Instant::now();
    while moving.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(600));
        first.write_all(b"still here").unwrap();
        let mut got = [0u8; 10];
        first.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still here");
    }
    // ...and both are closed once silent, which frees their places.
    let took = closed_within(&mut first, Duration::from_secs(10)).expect("tunnel still open");
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    closed_within(&mut second, Duration::from_secs(10)).expect("second tunnel still open");
    // The places come back when the gateway has dropped both: poll for it
    // (a refused attempt is closed at once and holds no place).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut again, _) = loop {
        match open_tunnel(pg.addr) {
            Ok(t) => break t,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no tunnel after the others closed: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    again.write_all(b"x").unwrap();
    let mut got = [0u8; 1];
    again.read_exact(&mut got).unwrap();
}

// ------------------------------------------------------------ big streams --

const GIB: u64 = 1 << 30;
const CHUNK: usize = 64 * 1024;

async fn upload(addr: SocketAddr, chunks: usize) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let chunk = Bytes::from(vec![b'u'; CHUNK]);
    let frames = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
    );
    let req = Request::post("/public/upload")
        .header("host", addr.to_string())
        .body(StreamBody::new(frames))
        .unwrap();
    collect(send.send_request(req).await.unwrap()).await
}

/// GETs `/bytes?n=N` and counts the body without keeping it; (status, bytes).
async fn download(addr: SocketAddr, n: u64) -> (u16, u64) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("/bytes?n={n}"))
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        len += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    (status, len)
}

#[test]
fn one_gib_upload_and_download_stream_through_in_bounded_memory() {
    let backend = Backend::start();
    let mut b = ConfigBuilder::new(&backend.url());
    b.routes = format!("{STREAM_ROUTES}{}", default_routes());
    let pg = Passgate::start(&b);
    let (_, hwm_before) = pg.rss_kib();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let chunks = (GIB / CHUNK as u64) as usize;
    let (up, (down_status, down_len)) =
        rt.block_on(async { tokio::join!(upload(pg.addr, chunks), download(pg.addr, GIB)) });
    let took = start.elapsed();
    let (rss, hwm) = pg.rss_kib();
    eprintln!(
        "1 GiB up + 1 GiB down (concurrent) in {took:.1?}; gateway VmHWM {hwm} KiB \
         ({:.1} MiB; {hwm_before} KiB before), VmRSS {rss} KiB",
        hwm as f64 / 1024.0
    );

    assert_eq!(up.status, 200, "{}", up.text());
    assert_eq!(up.echo().body_len, GIB);
    assert_eq!(down_status, 200);
    assert_eq!(down_len, GIB);
    assert!(
        hwm < 64 * 1024,
        "gateway peak RSS {hwm} KiB is over 64 MiB for a streamed 1 GiB transfer"
    );
}
