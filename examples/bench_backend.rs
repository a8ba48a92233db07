//! A fast loopback backend for `bench/run.sh`: hyper HTTP/1.1 with keep-alive on
//! a multi-thread tokio runtime, answering from static buffers so that the
//! backend costs as little as possible and the gateway in front is measured.
//!
//! ```text
//! cargo build --release --example bench_backend
//! target/release/examples/bench_backend PORT
//! ```
//!
//! - `GET /small`   ~100-byte body
//! - `GET /1m`      1 MiB body
//! - `GET /1g`      1 GiB, streamed in 64 KiB frames of one static buffer
//! - `POST /upload` (or PUT) reads and counts the body, answers the count
//! - anything else  the small body (so `git`-free paths still answer 200)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const SMALL: &[u8] =
    b"{\"ok\":true,\"from\":\"bench_backend\",\"padding\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123\"}\n";
const CHUNK: usize = 64 * 1024;
static MIB: [u8; 1 << 20] = [b'x'; 1 << 20];

/// `remaining` bytes, sent as frames of at most `chunk` bytes of `src`.
struct Repeat {
    src: Bytes,
    chunk: usize,
    remaining: u64,
}

impl Repeat {
    fn new(src: Bytes, chunk: usize, total: u64) -> Repeat {
        let chunk = chunk.min(src.len());
        Repeat {
            src,
            chunk,
            remaining: total,
        }
    }
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = (self.chunk as u64).min(self.remaining) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.src.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

fn reply(status: StatusCode, body: Repeat) -> Response<Repeat> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp
}

async fn handle(req: Request<Incoming>) -> Result<Response<Repeat>, Infallible> {
    let path = req.uri().path();
    let resp = match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/1m") => reply(
            StatusCode::OK,
            Repeat::new(Bytes::from_static(&MIB), MIB.len(), MIB.len() as u64),
        ),
        (&Method::GET | &Method::HEAD, "/1g") => reply(
            StatusCode::OK,
            Repeat::new(Bytes::from_static(&MIB), CHUNK, 1 << 30),
        ),
        (&Method::POST | &Method::PUT, "/upload") => {
            let mut body = req.into_body();
            let mut count: u64 = 0;
            let mut failed = false;
            while let Some(frame) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            count += d.len() as u64;
                        }
                    }
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            let text = Bytes::from(format!("{count}\n"));
            let status = if failed {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            let len = text.len();
            reply(status, Repeat::new(text, len, len as u64))
        }
        _ => reply(
            StatusCode::OK,
            Repeat::new(Bytes::from_static(SMALL), SMALL.len(), SMALL.len() as u64),
        ),
    };
    Ok(resp)
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("usage: bench_backend PORT");
            std::process::exit(2)
        });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        eprintln!(
            "bench_backend listening on http://{}",
            listener.local_addr()?
        );
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    })
}
