//! The least a hyper reverse proxy built like passgate's HTTP/1.1 hot path
//! can execute per request: the floor under passgate's instruction count in
//! `bench/compare.sh` (docs/performance.md, "The floor hyper sets").
//!
//! The same architecture as `src/server.rs` and `src/upstream.rs`: one tokio
//! `current_thread` runtime (one worker), `hyper::server::conn::http1` on each
//! accepted connection, and per downstream connection one upstream
//! `hyper::client::conn::http1` connection (handshake on the first request,
//! its connection future spawned on the same runtime, reused while ready).
//! Each request goes upstream as received (method, origin-form target,
//! headers, body) and the response comes back as received, its body streamed
//! through. Nothing else: no authentication, header rules, logging, limits
//! or timers.
//!
//! With `--timers`, the two timers a production proxy cannot go without, as
//! passgate sets them: hyper's `header_read_timeout` (`TokioTimer`) on the
//! server and a `tokio::time::timeout` around each upstream send. That also
//! enables tokio's time driver, which the plain floor does not start.
//!
//! ```text
//! cargo build --release --example hyper_floor
//! target/release/examples/hyper_floor LISTEN_PORT UPSTREAM_PORT [--timers]
//! ```
//!
//! Both listen on and connect to 127.0.0.1. An upstream that cannot be
//! reached (or, with `--timers`, does not answer in time) gets a 502; an
//! accept error ends the process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

/// passgate's defaults for `server.header_read_timeout` and an upstream's
/// `response_timeout`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

type Body = Either<Incoming, Empty<Bytes>>;

/// The upstream connection owned by one downstream connection (HTTP/1.1
/// requests are sequential: the lock is never contended).
type Held = Arc<Mutex<Option<SendRequest<Incoming>>>>;

#[derive(Clone, Copy)]
struct Setup {
    upstream: SocketAddr,
    timers: bool,
}

fn bad_gateway() -> Response<Body> {
    let mut resp = Response::new(Either::Right(Empty::new()));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

async fn connect(upstream: SocketAddr) -> Option<SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(sender)
}

/// Over the held connection while it is ready, else over a fresh one.
async fn send(setup: Setup, held: Held, req: Request<Incoming>) -> Option<Response<Incoming>> {
    let taken = held.lock().unwrap_or_else(PoisonError::into_inner).take();
    let ready = match taken {
        Some(mut s) => s.ready().await.is_ok().then_some(s),
        None => None,
    };
    let mut sender = match ready {
        Some(s) => s,
        None => connect(setup.upstream).await?,
    };
    let resp = sender.send_request(req).await.ok()?;
    *held.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
    Some(resp)
}

async fn proxy(
    setup: Setup,
    held: Held,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let sent = if setup.timers {
        tokio::time::timeout(RESPONSE_TIMEOUT, send(setup, held, req))
            .await
            .ok()
            .flatten()
    } else {
        send(setup, held, req).await
    };
    Ok(sent.map_or_else(bad_gateway, |resp| resp.map(Either::Left)))
}

async fn serve(setup: Setup, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let held = Held::default();
    let svc = service_fn(move |req| proxy(setup, held.clone(), req));
    let mut builder = http1::Builder::new();
    if setup.timers {
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
    }
    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
}

fn usage() -> ! {
    eprintln!("usage: hyper_floor LISTEN_PORT UPSTREAM_PORT [--timers]");
    std::process::exit(2)
}

fn port(arg: Option<String>) -> u16 {
    arg.and_then(|p| p.parse().ok()).unwrap_or_else(|| usage())
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = port(args.next());
    let setup = Setup {
        upstream: SocketAddr::from(([127, 0, 0, 1], port(args.next()))),
        timers: match args.next().as_deref() {
            None => false,
            Some("--timers") => true,
            Some(_) => usage(),
        },
    };
    let mut rt = tokio::runtime::Builder::new_current_thread();
    rt.enable_io();
    if setup.timers {
        rt.enable_time();
    }
    rt.build()?.block_on(async move {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], listen))).await?;
        eprintln!(
            "hyper_floor{} listening on http://{}, upstream http://{}",
            if setup.timers { " --timers" } else { "" },
            listener.local_addr()?,
            setup.upstream
        );
        loop {
            // An accept error (out of descriptors) ends the benchmark run.
            let (stream, _) = listener.accept().await?;
            tokio::spawn(serve(setup, stream));
        }
    })
}
