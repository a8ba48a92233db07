//! Request and response smuggling: every message whose framing two HTTP
//! implementations could read differently is refused, or re-framed so that the
//! other side sees exactly one unambiguous message.
//!
//! The backend here is a raw socket that records the bytes it receives and
//! frames them itself, so the tests see what the gateway actually sends
//! upstream (a hyper backend would agree with the gateway's hyper and hide a
//! disagreement). The oracle: the backend never sees a request for
//! `/admin/…` (a `deny` route) or `/api/…` (needs an app password), which
//! only a request the gateway never checked could carry.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

/// One request as the raw backend framed it.
#[derive(Debug, Clone)]
struct Seen {
    /// The head, lower-cased, without the final blank line.
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    fn count(&self, header: &str) -> usize {
        self.head
            .lines()
            .filter(|l| l.starts_with(&format!("{header}:")))
            .count()
    }
}

/// A backend that frames requests itself (Content-Length or chunked, and
/// records a head carrying both as it is) and answers each with
/// `200 ok`, or with the raw response named by a `/respond/NAME` path.
struct RawBackend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Responses a hostile or broken backend could send.
fn canned(name: &str) -> &'static str {
    match name {
        "two-lengths" => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\nok",
        "length-and-chunked" => {
            "HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        }
        "folded" => "HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 2\r\n\r\nok",
        "refuse-upgrade" => "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 2\r\n\r\nno",
        "unasked-101" => {
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"
        }
        _ => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    }
}

impl RawBackend {
    fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || serve_raw(s, &log));
            }
        });
        RawBackend { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_raw(s: TcpStream, log: &Mutex<Vec<Seen>>) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        let mut seen = Seen {
            head,
            body: Vec::new(),
        };
        let chunked = seen
            .head
            .lines()
            .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
        let length = seen
            .head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        if chunked {
            read_chunked(&mut r, &mut seen.body, &mut String::new());
        } else if let Some(n) = length {
            seen.body = vec![0; n];
            if r.read_exact(&mut seen.body).is_err() {
                log.lock().unwrap().push(seen);
                return;
            }
        }
        let resp = canned(seen.path().strip_prefix("/public/respond/").unwrap_or(""));
        log.lock().unwrap().push(seen);
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn gateway() -> (RawBackend, Passgate) {
    let backend = RawBackend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    (backend, pg)
}

/// Sends `request` (which may carry a smuggled second request) on a fresh
/// connection and reads every response until the gateway closes it.
fn attempt(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Like [`attempt`] for a request too big to be read whole: the gateway may
/// answer and close before all of it is written.
fn attempt_oversized(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A plain request on a fresh connection still gets 200.
fn assert_still_serves(addr: SocketAddr) {
    let text = attempt(
        addr,
        "GET /public/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(statuses(&text), [200], "{text}");
}

/// Status codes of every response in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// A request the gateway must refuse, checked or forwarded: the backend
/// sees it at most as the gateway framed it, and never the smuggled one.
const SMUGGLED: &str = "GET /admin/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn ambiguous_request_framing_is_refused_before_the_backend() {
    let (backend, pg) = gateway();
    let cases: &[(&str, String)] = &[
        (
            "two different Content-Length values",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 41\r\n\r\nabcd{SMUGGLED}"),
        ),
        (
            "a Content-Length list",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 41\r\n\r\nabcd{SMUGGLED}"),
        ),
        (
            "a signed Content-Length",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd{SMUGGLED}"),
        ),
        (
            "a Transfer-Encoding that does not end in chunked",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "an unknown transfer coding",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "whitespace between the header name and the colon",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\nabcd{SMUGGLED}"),
        ),
        (
            "an obs-fold continuation line",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\nabcd{SMUGGLED}"),
        ),
        (
            "a chunk size that overflows",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000004\r\nabcd\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a malformed chunk after a good one",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n{SMUGGLED}"),
        ),
        (
            "a chunk size that is not hexadecimal",
            format!("POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x4\r\nabcd\r\n0\r\n\r\n{SMUGGLED}"),
        ),
    ];
    let mut failures = Vec::new();
    for (what, request) in cases {
        let before = backend.seen().len();
        let text = attempt(pg.addr, request);
        let got = statuses(&text);
        let reached: Vec<Seen> = backend.seen().split_off(before);
        if got.first().is_none_or(|s| *s != 400) {
            failures.push(format!("{what}: statuses {got:?}, want a 400 first"));
        }
        if got.len() > 1 {
            failures.push(format!(
                "{what}: {} responses: the connection was not closed",
                got.len()
            ));
        }
        if reached.iter().any(|s| s.path().starts_with("/admin")) {
            failures.push(format!("{what}: the smuggled request reached the backend"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_still_serves(pg.addr);
}

#[test]
fn length_and_chunked_together_reach_the_backend_framed_once() {
    let (backend, pg) = gateway();
    // RFC 9112 §6.1/§6.3: Transfer-Encoding overrides Content-Length, a proxy
    // must not forward both, and the connection is closed after the response,
    // so the bytes after the (empty) chunked body are never read as a request.
    let text = attempt(
        pg.addr,
        &format!("POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
    );
    assert_eq!(statuses(&text), [200], "{text}");
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path(), "/public/a");
    assert_eq!(seen[0].count("transfer-encoding"), 1, "{seen:?}");
    assert_eq!(seen[0].count("content-length"), 0, "{seen:?}");
    assert!(seen[0].body.is_empty(), "{seen:?}");

    // HTTP/1.0 has no transfer codings: refused outright.
    let text = attempt(
        pg.addr,
        &format!("POST /public/a HTTP/1.0\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
    );
    assert_eq!(statuses(&text), [400], "{text}");
    assert_eq!(backend.seen().len(), 1, "{:?}", backend.seen());
}

#[test]
fn ambiguous_responses_are_refused_or_framed_once_for_the_client() {
    let (_backend, pg) = gateway();
    // Two lengths, or a folded header line: the upstream's response cannot be
    // framed with certainty, so the client gets a 502 instead. So does a 101
    // to a request that asked for no upgrade: nothing may be tunnelled.
    for name in ["two-lengths", "folded", "unasked-101"] {
        let text = attempt(
            pg.addr,
            &format!("GET /public/respond/{name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(statuses(&text), [502], "{name}: {text}");
    }
    // Length and chunked: read as chunked, and the stale length is dropped.
    // Two requests on one keep-alive connection: had the client been told
    // "Content-Length: 40" for a 2-byte body, it would have read the second
    // response as the rest of the first.
    let get = |path: &str, close: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n{close}\r\n");
    let text = attempt(
        pg.addr,
        &(get("/public/respond/length-and-chunked", "")
            + &get("/public/ok", "Connection: close\r\n")),
    );
    assert_eq!(statuses(&text), [200, 200], "{text}");
    let first = text
        .split("HTTP/1.1 ")
        .nth(1)
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(!first.contains("content-length: 40"), "{text}");
    let bodies: Vec<&str> = text
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|r| r.split_once("\r\n\r\n").map_or("", |(_, b)| b))
        .collect();
    assert!(bodies[0].contains("ok") && bodies[1] == "ok", "{bodies:?}");
}

#[test]
fn the_backend_sees_exactly_the_one_host_the_client_named() {
    let (backend, pg) = gateway();
    let req = |version: &str, hosts: &[&str]| {
        let lines: String = hosts.iter().map(|h| format!("Host: {h}\r\n")).collect();
        format!("GET /public/h {version}\r\n{lines}Connection: close\r\n\r\n")
    };
    // RFC 9112 §3.2: none in HTTP/1.1, more than one, or not host[:port] → 400.
    for (what, request) in [
        ("no Host in HTTP/1.1", req("HTTP/1.1", &[])),
        (
            "two Hosts",
            req("HTTP/1.1", &["gw.example", "evil.example"]),
        ),
        (
            "the same Host twice",
            req("HTTP/1.1", &["gw.example", "gw.example"]),
        ),
        (
            "user information",
            req("HTTP/1.1", &["evil.example@gw.example"]),
        ),
        ("a path in Host", req("HTTP/1.1", &["gw.example/evil"])),
        (
            "a space in Host",
            req("HTTP/1.1", &["gw.example evil.example"]),
        ),
        ("an empty Host", req("HTTP/1.1", &[""])),
    ] {
        let text = attempt(pg.addr, &request);
        assert_eq!(statuses(&text), [400], "{what}: {text}");
    }
    assert!(backend.seen().is_empty(), "{:?}", backend.seen());

    for (request, want) in [
        (req("HTTP/1.1", &["gw.example:8443"]), "gw.example:8443"),
        (req("HTTP/1.1", &["[::1]:8080"]), "[::1]:8080"),
    ] {
        let text = attempt(pg.addr, &request);
        assert_eq!(statuses(&text), [200], "{want}: {text}");
        let seen = backend.seen().pop().unwrap();
        assert_eq!(seen.count("host"), 1, "{seen:?}");
        assert!(
            seen.head.contains(&format!("\r\nhost: {want}\r\n")),
            "{seen:?}"
        );
        assert!(
            seen.head.contains(&format!("x-forwarded-host: {want}\r\n")),
            "{seen:?}"
        );
    }
    // HTTP/1.0 may leave Host out; the upstream's own authority is sent.
    let text = attempt(pg.addr, &req("HTTP/1.0", &[]));
    assert_eq!(statuses(&text), [200], "{text}");
    let seen = backend.seen().pop().unwrap();
    assert_eq!(seen.count("host"), 1, "{seen:?}");
    assert_eq!(seen.count("x-forwarded-host"), 0, "{seen:?}");
}

#[test]
fn oversized_chunk_extensions_and_trailers_are_refused_unbuffered() {
    // Chunk extensions and trailers are read and dropped by the gateway's
    // parser: without a bound, a client could stream megabytes of them into
    // memory (hyper's chunk-extension and trailer limits), and a trailer
    // must never reach the backend as a header.
    let (backend, pg) = gateway();
    let (_, before) = pg.rss_kib();
    let ext = "a".repeat(16 << 20);
    let trailers = format!(
        "X-Forwarded-User: root\r\nX-Big: {}\r\n",
        "b".repeat(16 << 20)
    );
    let cases = [
        (
            "16 MiB of chunk extensions",
            format!(
                "POST /public/ext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 4;{ext}\r\nabcd\r\n0\r\n\r\n"
            ),
        ),
        (
            "16 MiB of trailers",
            format!(
                "POST /public/trailers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 4\r\nabcd\r\n0\r\n{trailers}\r\n"
            ),
        ),
    ];
    for (what, request) in &cases {
        let reply = attempt_oversized(pg.addr, request.as_bytes());
        let status = statuses(&reply).first().copied();
        assert!(
            status.is_none() || status.is_some_and(|s| (400..500).contains(&s)),
            "{what}: {reply:.200}"
        );
    }
    for seen in backend.seen() {
        // The head may have gone ahead of the body; the trailer never.
        assert_eq!(seen.count("x-forwarded-user"), 0, "{seen:?}");
        assert_eq!(seen.count("x-big"), 0, "{seen:?}");
    }
    let (_, after) = pg.rss_kib();
    assert!(
        after < before + 8 * 1024,
        "peak RSS grew {} KiB",
        after.saturating_sub(before)
    );
    // The gateway still serves.
    assert_still_serves(pg.addr);
}

#[test]
fn a_refused_websocket_upgrade_leaves_no_tunnel_to_smuggle_through() {
    // WebSocket smuggling: the backend refuses the upgrade (426, say, for a
    // bad Sec-WebSocket-Version) but a proxy that saw the client's Upgrade
    // tunnels anyway; the client's next "request" then reaches the backend
    // raw, past every route. Here the next request is still read by the
    // gateway: /admin is denied and never reaches the backend.
    let (backend, pg) = gateway();
    let text = attempt(
        pg.addr,
        &format!(
            "GET /public/respond/refuse-upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 1337\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n{SMUGGLED}\
             GET /public/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(statuses(&text), [426, 403, 200], "{text}");
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter().all(|s| !s.path().starts_with("/admin")),
        "{seen:?}"
    );
}

#[test]
fn oversized_request_heads_get_431_and_never_reach_the_backend() {
    let (backend, pg) = gateway();
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long = format!("X-Long: {}\r\n", "a".repeat(80 * 1024));
    for (what, extra) in [("150 headers", many), ("an 80 KiB header", long)] {
        let text = attempt_oversized(
            pg.addr,
            format!("GET /public/big HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes(),
        );
        assert_eq!(statuses(&text), [431], "{what}: {text:.300}");
    }
    assert!(backend.seen().is_empty(), "{:?}", backend.seen());
    assert_still_serves(pg.addr);
}
