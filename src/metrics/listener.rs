//! The `[metrics] listen` socket: plain HTTP/1.1, three paths.
//!
//! - `GET /metrics`: the exposition ([`super::render`]), read on a blocking
//!   thread because app passwords by status come from the store;
//! - `GET /healthz`: 200 while the process serves;
//! - `GET /readyz`: 200 once the store is open and every listener is bound,
//!   503 before that and from the moment shutdown begins.
//!
//! `HEAD` is answered like `GET`; another method gets 405, another path 404.
//! The socket is meant for loopback or a private network: it has no
//! authentication, so it says nothing a path, user or address could be read
//! from. Connections are bounded in number and in how long a request head
//! may take.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once; more are closed as soon as accepted.
const MAX_CONNECTIONS: usize = 32;
/// A request head must arrive within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the metrics listener (before the store opens, so `/readyz` can
/// answer 503 meanwhile).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the listener until the task is dropped.
pub async fn serve(listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(answer));
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
            drop(slot);
        });
    }
}

type Body = http_body_util::Either<Full<Bytes>, Empty<Bytes>>;

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ));
    }
    let head = req.method() == Method::HEAD;
    if !head && req.method() != Method::GET {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(resp);
    }
    let resp = match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if super::ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => {
            let body = tokio::task::spawn_blocking(|| super::render(super::sample()))
                .await
                .unwrap_or_default();
            let mut resp = Response::new(Body::Left(Full::new(Bytes::from(body))));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
            resp
        }
    };
    Ok(if head { without_body(resp) } else { resp })
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::Left(Full::new(Bytes::from_static(body.as_bytes()))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn without_body(resp: Response<Body>) -> Response<Body> {
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, Body::Right(Empty::new()))
}
