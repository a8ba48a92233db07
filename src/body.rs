//! The response body handed to hyper: the upstream's body streamed through
//! unread (or a local rejection body), counting bytes for the access log.
//!
//! The access-log line is written once, when the body ends or is dropped (a
//! client that hangs up mid-download still gets its line, marked incomplete).
//! Only the normalised path is logged, never the query (it may carry tokens)
//! and never a header.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::conn::{HandOver, InFlight};
use crate::telemetry::access::AccessLine;

/// Fields of one access-log line, filled in as the request moves along.
#[derive(Debug)]
pub struct AccessLog {
    pub peer: SocketAddr,
    pub method: Method,
    pub start: Instant,
    pub path: Option<crate::path::NormalPath>,
    pub route: Option<std::sync::Arc<str>>,
    /// The route's counters (`None`: no route took the request).
    pub metrics: Option<std::sync::Arc<crate::metrics::RouteMetrics>>,
    pub upstream: Option<std::sync::Arc<str>>,
    pub user: Option<std::sync::Arc<str>>,
    /// Keeps the connection counted as busy until the response is done.
    pub in_flight: Option<InFlight>,
    pub status: u16,
    pub reject: Option<&'static str>,
}

impl AccessLog {
    /// Boxed from the start: it ends in the response's body (see
    /// [`ResponseBody`]), which moves several times on its way out.
    pub fn new(peer: SocketAddr, method: Method, start: Instant) -> Box<AccessLog> {
        Box::new(AccessLog {
            peer,
            method,
            start,
            path: None,
            route: None,
            metrics: None,
            upstream: None,
            user: None,
            in_flight: None,
            status: 0,
            reject: None,
        })
    }

    /// Ends the request: its connection place, its metrics and, when the
    /// access log is on, its line. Moved out of the box only for the line.
    fn emit(mut self: Box<Self>, bytes: u64, complete: bool) {
        drop(self.in_flight.take());
        crate::metrics::record_request(
            self.metrics.as_deref(),
            &self.method,
            self.status,
            self.start,
        );
        if !crate::telemetry::access::enabled() {
            return;
        }
        let AccessLog {
            peer,
            method,
            start,
            path,
            route,
            upstream,
            user,
            status,
            reject,
            ..
        } = *self;
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
    /// Boxed: inline, its 264 bytes were copied with the response each
    /// time it moved, from the request's future to hyper's connection.
    log: Option<Box<AccessLog>>,
    bytes: u64,
    stall: Option<Stall>,
    /// HTTP/2: tells the connection's watch when a frame waits for the client.
    hand_over: Option<HandOver>,
}

/// How long an upstream body may pause (`response_timeout`, like nginx's
/// `proxy_read_timeout`): a hung backend must not hold the client, and the
/// connections on both sides, for ever.
///
/// The timer is armed the first time the body has to wait and re-armed,
/// rather than reset, when it runs out after data moved meanwhile: no clock
/// read per frame, at the price of cutting off after one to two timeouts.
#[derive(Debug)]
struct Stall {
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    moved: bool,
}

/// The error that aborts a response whose upstream body stalled.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body stalled")]
struct Stalled;

impl Stall {
    /// Whether the upstream has now been silent for a whole timeout (after
    /// the inner body answered `Pending`).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        while timer.as_mut().poll(cx).is_ready() {
            if !std::mem::take(&mut self.moved) {
                return true;
            }
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + self.timeout);
        }
        false
    }
}

impl ResponseBody {
    /// `stall`: how long the upstream's body may pause (none for local bodies).
    pub fn new(
        inner: Either<Incoming, Full<Bytes>>,
        log: Box<AccessLog>,
        stall: Option<Duration>,
    ) -> ResponseBody {
        let hand_over = log.in_flight.as_ref().and_then(InFlight::hand_over);
        ResponseBody {
            inner,
            hand_over,
            log: Some(log),
            bytes: 0,
            stall: stall.map(|timeout| Stall {
                timeout,
                timer: None,
                moved: false,
            }),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(log) = self.log.take() {
            log.emit(self.bytes, complete);
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(h) = &this.hand_over {
            h.taken();
        }
        let polled = match &mut this.inner {
            Either::Left(incoming) => Pin::new(incoming).poll_frame(cx).map_err(BoxError::from),
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
                    if let Some(h) = &this.hand_over {
                        h.waiting();
                    }
                }
                if let Some(stall) = &mut this.stall {
                    stall.moved = true;
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {
                if this.stall.as_mut().is_some_and(|s| s.expired(cx)) {
                    tracing::warn!(
                        bytes = this.bytes,
                        "upstream response body stalled; aborting the response"
                    );
                    this.finish(false);
                    return Poll::Ready(Some(Err(Box::new(Stalled))));
                }
            }
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
