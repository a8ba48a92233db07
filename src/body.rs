//! The response body handed to hyper: the upstream's body streamed through
//! unread (or a local rejection body), counting bytes for the access log.
//!
//! The access-log line is written once, when the body ends or is dropped (a
//! client that hangs up mid-download still gets its line, marked incomplete).
//! Only the normalised path is logged, never the query (it may carry tokens)
//! and never a header.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::telemetry::access::AccessLine;

/// Fields of one access-log line, filled in as the request moves along.
#[derive(Debug)]
pub struct AccessLog {
    pub peer: SocketAddr,
    pub method: Method,
    pub start: Instant,
    pub path: Option<crate::path::NormalPath>,
    pub route: Option<std::sync::Arc<str>>,
    pub upstream: Option<std::sync::Arc<str>>,
    pub user: Option<std::sync::Arc<str>>,
    /// Keeps the connection counted as busy until the response is done.
    pub in_flight: Option<crate::server::InFlight>,
    pub status: u16,
    pub reject: Option<&'static str>,
}

impl AccessLog {
    pub fn new(peer: SocketAddr, method: Method, start: Instant) -> AccessLog {
        AccessLog {
            peer,
            method,
            start,
            path: None,
            route: None,
            upstream: None,
            user: None,
            in_flight: None,
            status: 0,
            reject: None,
        }
    }

    fn emit(self, bytes: u64, complete: bool) {
        let AccessLog {
            peer,
            method,
            start,
            path,
            route,
            upstream,
            user,
            in_flight,
            status,
            reject,
        } = self;
        drop(in_flight);
        if !crate::telemetry::access::enabled() {
            return;
        }
        crate::telemetry::access::write(AccessLine {
            at: std::time::SystemTime::now(),
            peer,
            method,
            path,
            route,
            upstream,
            user,
            status,
            reject,
            bytes,
            complete,
            duration: start.elapsed(),
        });
    }
}

/// The body of every response the gateway sends.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Either<Incoming, Full<Bytes>>,
    log: Option<AccessLog>,
    bytes: u64,
}

impl ResponseBody {
    pub fn new(inner: Either<Incoming, Full<Bytes>>, log: AccessLog) -> ResponseBody {
        ResponseBody {
            inner,
            log: Some(log),
            bytes: 0,
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(log) = self.log.take() {
            log.emit(self.bytes, complete);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Either::Left(incoming) => Pin::new(incoming).poll_frame(cx),
            Either::Right(full) => match Pin::new(full).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}
