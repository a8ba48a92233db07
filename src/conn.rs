//! Connection bookkeeping: the caps on open connections ([`ConnLimits`]),
//! each connection's [`Activity`] (when bytes last moved, requests in
//! flight, a client that stopped reading), each request's [`InFlight`] guard
//! and, on HTTP/2, each response's [`HandOver`] clock.
//!
//! The server creates these for every connection and request, the response
//! body reports to them, and the server's watch reads them to close idle or
//! stalled connections. This module imports nothing of the request path:
//! `server`, `proxy` and `body` depend on it, never the reverse.

mod limits;

pub use limits::{ConnLimits, Over, Slot};

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Per-connection activity: last time bytes moved, requests in flight,
/// whether the last write to the client is still waiting for it to read,
/// and (HTTP/2) each response's [`HandOver`] clock.
///
/// It also holds the connection's place under the connection caps. The
/// socket's [`Tracked`] wrapper holds the activity, so the place is given
/// back only when the socket closes, also after an upgrade has taken the
/// socket out of hyper's hands.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    write_blocked: AtomicBool,
    /// HTTP/2 only: the hand-over clocks of the responses in flight (dead
    /// ones are pruned as new ones register and at every watch).
    hand_overs: Mutex<Vec<Weak<AtomicU64>>>,
    _slot: Slot,
}

/// One HTTP/2 response's hand-over clock: since when its body has waited
/// for the client to take the frame it produced last.
///
/// An HTTP/2 client can stop a response without ever blocking the socket:
/// it grants no flow-control window, and hyper simply stops polling the
/// body. Nothing moves and no write blocks, yet the stream holds its
/// upstream connection and a frame in memory. The body sets the clock when
/// it hands a frame over and clears it when polled again; the connection's
/// watch closes the connection once any clock has run for `idle_timeout`.
#[derive(Debug, Clone)]
pub struct HandOver {
    /// Milliseconds after the connection's epoch, plus one; 0: not waiting.
    since: Arc<AtomicU64>,
    epoch: Instant,
}

impl HandOver {
    /// The body handed a frame over: the client now has to take it.
    pub fn waiting(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.since.store(ms + 1, Ordering::Relaxed);
    }

    /// The body was polled again: the client took what it had.
    pub fn taken(&self) {
        self.since.store(0, Ordering::Relaxed);
    }
}

/// Why a connection's quiet watch ended.
pub enum Quiet {
    /// Nothing in flight and no bytes moved: close gracefully.
    Idle,
    /// A response is in flight but the client has read nothing of it for the
    /// whole timeout (a slow-read attack, or a client gone without a FIN):
    /// close at once, which also frees the upstream connection.
    WriteStalled,
}

impl Activity {
    pub fn new(slot: Slot) -> Activity {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            write_blocked: AtomicBool::new(false),
            hand_overs: Mutex::new(Vec::new()),
            _slot: slot,
        }
    }

    /// A new HTTP/2 response's hand-over clock, watched until it is dropped.
    fn hand_over(&self) -> HandOver {
        let since = Arc::new(AtomicU64::new(0));
        let mut clocks = self.clocks();
        if clocks.len() == clocks.capacity() {
            // Amortised: the list stays within twice the live responses.
            clocks.retain(|c| c.strong_count() > 0);
        }
        clocks.push(Arc::downgrade(&since));
        HandOver {
            since,
            epoch: self.epoch,
        }
    }

    fn clocks(&self) -> std::sync::MutexGuard<'_, Vec<Weak<AtomicU64>>> {
        // A panic while holding the lock cannot leave the list inconsistent.
        self.hand_overs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the longest-waiting HTTP/2 response began to wait, if any does.
    fn oldest_hand_over(&self) -> Option<Instant> {
        let mut clocks = self.clocks();
        let mut oldest = u64::MAX;
        clocks.retain(|c| match c.upgrade() {
            Some(since) => {
                let since = since.load(Ordering::Relaxed);
                if since != 0 {
                    oldest = oldest.min(since - 1);
                }
                true
            }
            None => false,
        });
        (oldest != u64::MAX).then(|| self.epoch + Duration::from_millis(oldest))
    }

    /// Records the outcome of a write to the client.
    fn wrote<T>(&self, res: &Poll<io::Result<T>>, moved: bool) {
        match res {
            Poll::Pending => self.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(_) => {
                if moved {
                    self.touch();
                }
                self.write_blocked.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Bytes moved, or the connection was asked to close: the idle clock restarts.
    pub fn touch(&self) {
        // Called on every read and write with bytes: whole seconds and
        // milliseconds apart, no 128-bit `as_millis` division.
        let since = self.epoch.elapsed();
        let ms = since.as_secs() * 1000 + u64::from(since.subsec_millis());
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no byte moved for `idle` and either nothing is in
    /// flight or the client stopped reading what is; or once an HTTP/2
    /// response has waited `idle` for the client to take its next frame.
    pub async fn idle(&self, idle: Duration) -> Quiet {
        loop {
            let now = Instant::now();
            let last = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let mut due = last + idle;
            if now >= due {
                if self.in_flight.load(Ordering::Relaxed) == 0 {
                    return Quiet::Idle;
                }
                if self.write_blocked.load(Ordering::Relaxed) {
                    return Quiet::WriteStalled;
                }
                due = now + idle;
            }
            if let Some(since) = self.oldest_hand_over() {
                if now >= since + idle {
                    return Quiet::WriteStalled;
                }
                due = due.min(since + idle);
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// Counts a request as in flight until dropped (with its response body);
/// on HTTP/2 it also carries the response's [`HandOver`] clock and its own
/// place under the connection caps.
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
    hand_over: Option<HandOver>,
    /// HTTP/2 only: the request's place, or which cap left it none.
    place: Option<Result<Slot, Over>>,
}

impl InFlight {
    /// `place`: none on HTTP/1.1, where the connection's place covers its
    /// one request in flight.
    pub fn enter(activity: Arc<Activity>, place: Option<Result<Slot, Over>>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let hand_over = place.is_some().then(|| activity.hand_over());
        InFlight {
            activity,
            hand_over,
            place,
        }
    }

    /// The cap an HTTP/2 request found full, if it found one.
    pub fn over_cap(&self) -> Option<Over> {
        match &self.place {
            Some(Err(over)) => Some(*over),
            _ => None,
        }
    }

    /// The response's hand-over clock (HTTP/2 only).
    pub fn hand_over(&self) -> Option<HandOver> {
        self.hand_over.clone()
    }

    /// For a connection upgraded to a tunnel, which hyper no longer watches:
    /// resolves once nothing has moved through it for `idle`.
    pub fn tunnel_idle(&self, idle: Duration) -> impl Future<Output = ()> + Send + 'static {
        let activity = self.activity.clone();
        async move {
            activity.idle(idle).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An I/O stream that records when bytes last moved.
pub struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Tracked<T> {
        Tracked { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        let moved = matches!(res, Poll::Ready(Ok(n)) if n > 0);
        self.activity.wrote(&res, moved);
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let moved = matches!(res, Poll::Ready(Ok(n)) if n > 0);
        self.activity.wrote(&res, moved);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // TLS flushes buffered records: that can wait on the client too.
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        self.activity.wrote(&res, false);
        res
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a plain test thread, no reactor
    fn hand_over_clocks_report_the_oldest_waiter_and_are_pruned_when_dropped() {
        let limits = Arc::new(ConnLimits::new(1, 1));
        let slot = limits.open("192.0.2.1".parse().unwrap(), false).unwrap();
        let activity = Activity::new(slot);
        let (a, b) = (activity.hand_over(), activity.hand_over());
        assert_eq!(activity.oldest_hand_over(), None, "nothing waits yet");
        a.waiting();
        let first = activity.oldest_hand_over().expect("a waits");
        std::thread::sleep(Duration::from_millis(5));
        b.waiting();
        assert_eq!(activity.oldest_hand_over(), Some(first), "a waits longest");
        a.taken();
        assert!(
            activity.oldest_hand_over() > Some(first),
            "now only b waits"
        );
        drop(b);
        assert_eq!(activity.oldest_hand_over(), None, "a dropped clock stops");

        // Many short-lived responses: the list stays near the live count.
        for _ in 0..10_000 {
            let h = activity.hand_over();
            h.waiting();
        }
        assert!(activity.clocks().len() <= 64, "{}", activity.clocks().len());
        drop(a);
        activity.oldest_hand_over();
        assert!(activity.clocks().is_empty());
    }
}
