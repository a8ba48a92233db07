//! A downstream HTTP/1.1 connection reuses its own upstream connection, and
//! survives the upstream closing that connection while idle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A raw backend: answers each request on a connection with a keep-alive
/// response naming the connection's number, and closes every connection
/// `close_after` after its first answer (an upstream idle timeout).
/// Returns (address, connections accepted, connections still open, runtime).
fn closing_backend(
    close_after: Option<Duration>,
) -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    tokio::runtime::Runtime,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (counter, open_counter) = (conns.clone(), open.clone());
    rt.spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let open = open_counter.clone();
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _closed = Decrement(open);
                let mut buf = vec![0u8; 16384];
                let mut pending = Vec::new();
                loop {
                    let read = s.read(&mut buf).await.unwrap_or(0);
                    if read == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..read]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        let body = format!("conn {n}");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                        if let Some(d) = close_after {
                            tokio::time::sleep(d).await;
                            return; // drops the socket: closed while idle
                        }
                    }
                }
            });
        }
    });
    (addr, conns, open, rt)
}

struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sends `n` requests on ONE downstream keep-alive connection, `gap` apart.
fn sequential(pg: &Passgate, n: usize, gap: Duration) -> Vec<(u16, String)> {
    block_on(async {
        let stream = tokio::net::TcpStream::connect(pg.addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut out = Vec::new();
        for _ in 0..n {
            send.ready().await.unwrap();
            out.push(get_public(&mut send).await);
            tokio::time::sleep(gap).await;
        }
        out
    })
}

#[test]
fn one_downstream_connection_keeps_one_upstream_connection() {
    let (addr, conns, _open, _rt) = closing_backend(None);
    let pg = Passgate::start(&ConfigBuilder::new(&format!("http://{addr}")));
    let replies = sequential(&pg, 5, Duration::from_millis(10));
    assert!(
        replies.iter().all(|(s, b)| *s == 200 && b == "conn 1"),
        "{replies:?}"
    );
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}

#[test]
fn an_upstream_closing_the_idle_connection_costs_no_request() {
    let (addr, conns, _open, _rt) = closing_backend(Some(Duration::from_millis(50)));
    let pg = Passgate::start(&ConfigBuilder::new(&format!("http://{addr}")));
    let replies = sequential(&pg, 4, Duration::from_millis(300));
    assert!(replies.iter().all(|(s, _)| *s == 200), "{replies:?}");
    assert_eq!(
        conns.load(Ordering::SeqCst),
        4,
        "a fresh upstream connection per request: {replies:?}"
    );
}

#[test]
fn an_idle_client_does_not_pin_an_upstream_connection() {
    let (addr, _conns, open, _rt) = closing_backend(None);
    let pg = Passgate::start(&ConfigBuilder::new(&format!("http://{addr}")));
    block_on(async {
        let stream = tokio::net::TcpStream::connect(pg.addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        assert_eq!(get_public(&mut send).await.0, 200);
        assert_eq!(open.load(Ordering::SeqCst), 1);
        // The downstream connection stays open (idle_timeout 60 s); the
        // upstream one is released after REUSE_IDLE (4 s).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while open.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            open.load(Ordering::SeqCst),
            0,
            "upstream connection still held"
        );
        assert!(
            !send.is_closed(),
            "the client connection itself must stay open"
        );
        send.ready().await.unwrap();
        assert_eq!(get_public(&mut send).await.0, 200);
    });
}

/// `GET /public/x` on an open downstream connection: (status, body).
async fn get_public(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) -> (u16, String) {
    let req = Request::get("/public/x")
        .header("host", "gw")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = collect(send.send_request(req).await.unwrap()).await;
    (r.status, r.text())
}
