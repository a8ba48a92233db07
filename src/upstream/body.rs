//! The request body on its way upstream, and how far it has got.
//!
//! `response_timeout` is the time the upstream may take to answer once it has
//! the whole request, not the time the client may take to upload it: a big
//! `git push` over a slow link can take many minutes. So a body that streams
//! from the client records each frame in a shared [`Progress`], and the timer
//! in [`super::Upstream::send`] counts from the last progress instead of from
//! the start. While the body waits for the client's next bytes, a stall is the
//! client's doing (408); while it waits for the upstream to read, or once it
//! is complete, a stall is the upstream's (504).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

type Inner = Either<Incoming, Full<Bytes>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body: streamed from the client (with its [`Progress`] when it
/// is not empty), or replayed after the gateway had to read it (LFS batch).
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Inner,
    progress: Option<Arc<Progress>>,
}

impl UpstreamBody {
    /// The client's body as it arrives; `None` progress when there is none
    /// to wait for (a bodiless request), which costs nothing to track.
    pub fn streamed(body: Incoming) -> (UpstreamBody, Option<Arc<Progress>>) {
        let progress = (!body.is_end_stream()).then(|| Arc::new(Progress::new()));
        let inner = Either::Left(body);
        (
            UpstreamBody {
                inner,
                progress: progress.clone(),
            },
            progress,
        )
    }

    /// A body the gateway has already read whole.
    pub fn replayed(bytes: Bytes) -> UpstreamBody {
        UpstreamBody {
            inner: Either::Right(Full::new(bytes)),
            progress: None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Some(p) = &self.progress {
            match &polled {
                Poll::Pending => p.waiting_on_client.store(true, Ordering::Relaxed),
                Poll::Ready(Some(Ok(_))) => p.moved(false),
                Poll::Ready(None | Some(Err(_))) => p.moved(true),
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

/// How far a streamed request body has got.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    /// Milliseconds after `started` of the last frame (or of the end).
    last_ms: AtomicU64,
    /// The body was last seen waiting for the client's bytes.
    waiting_on_client: AtomicBool,
    done: AtomicBool,
}

/// What a response timer that just ran out should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The body moved since: wait until this instant instead.
    Extend(Instant),
    /// Nothing moved for the whole timeout while the client owed bytes.
    ClientStalled,
    /// Nothing moved for the whole timeout while the upstream owed the next step.
    UpstreamStalled,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    fn moved(&self, done: bool) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
        self.waiting_on_client.store(false, Ordering::Relaxed);
        if done {
            self.done.store(true, Ordering::Relaxed);
        }
    }

    /// Called when a `timeout` timer runs out at `now`.
    pub fn expired(&self, timeout: Duration, now: Instant) -> Expiry {
        let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        if now < last + timeout {
            return Expiry::Extend(last + timeout);
        }
        let client_owes =
            !self.done.load(Ordering::Relaxed) && self.waiting_on_client.load(Ordering::Relaxed);
        if client_owes {
            Expiry::ClientStalled
        } else {
            Expiry::UpstreamStalled
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timer_counts_from_the_last_frame_and_blames_who_owes_the_next_step() {
        let p = Progress::new();
        let t = Duration::from_secs(10);
        let at = |s: u64| p.started + Duration::from_secs(s);
        // Nothing yet, and the body has not even been polled: the upstream's turn.
        assert_eq!(p.expired(t, at(10)), Expiry::UpstreamStalled);
        p.waiting_on_client.store(true, Ordering::Relaxed);
        assert_eq!(p.expired(t, at(10)), Expiry::ClientStalled);
        assert_eq!(p.expired(t, at(5)), Expiry::Extend(at(10)));
        // A frame arrived (now, about `started`): waiting for the upstream again.
        p.moved(false);
        assert_eq!(p.expired(t, at(11)), Expiry::UpstreamStalled);
        p.waiting_on_client.store(true, Ordering::Relaxed);
        assert_eq!(p.expired(t, at(11)), Expiry::ClientStalled);
        // Complete: any stall is the upstream's.
        p.moved(true);
        assert_eq!(p.expired(t, at(11)), Expiry::UpstreamStalled);
    }
}
