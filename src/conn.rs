//! Connection bookkeeping: the caps on open connections ([`ConnLimits`]),
//! each connection's [`Activity`] (when bytes last moved, requests in
//! flight, a client that stopped reading, the deadlines of an HTTP/1.1
//! connection), each request's [`InFlight`] guard and, on HTTP/2, each
//! response's [`HandOver`] clock.
//!
//! The server creates these for every connection and request, the response
//! body reports to them, and the server's watch reads them to close idle or
//! stalled connections.
//!
//! On HTTP/1.1 the watch is also the connection's only timer: the
//! request-head deadline (`header_read_timeout`) and the response-head
//! deadline of the request in flight (`response_timeout`, see
//! [`InFlight::response_deadline`]) are plain numbers it reads when it wakes,
//! not a timer armed and cancelled per request (issue 18: two timers cost
//! about 1,500 instructions per request). The request's future is polled by
//! hyper in the connection's own task, so the watch's wake-up reaches it.
//!
//! Bytes moving, a response ending and a deadline being set read the coarse
//! clock (`clock::coarse_ms`, up to a tick behind), several times a request;
//! the watch compares those times with the precise clock. A timeout thus
//! ends up to a tick (at most 10 ms) early, or a millisecond late (both
//! clocks in whole milliseconds), against one counted on the precise
//! clock: nothing a timeout in seconds notices. This module imports nothing of
//! the request path (only `clock`): `server`, `proxy` and `body` depend on
//! it, never the reverse.

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

use crate::clock::{coarse_ms, precise_ms};

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
    /// `epoch` on the millisecond clock of `clock::coarse_ms`.
    base_ms: u64,
    last_ms: AtomicU64,
    /// When bytes last went to the client (ms after `epoch`).
    last_write_ms: AtomicU64,
    in_flight: AtomicUsize,
    write_blocked: AtomicBool,
    /// Since when the connection has waited for a request head: ms after
    /// `epoch` plus one (0: not yet serving HTTP/1.1).
    head_since: AtomicU64,
    /// HTTP/1.1's `header_read_timeout` in ms (0: no head deadline).
    head_ms: AtomicU64,
    /// The response-head deadline of the HTTP/1.1 request in flight: ms
    /// after `epoch` plus one; 0: none.
    response_due: AtomicU64,
    /// Set by the watch once `response_due` passed, until the request has
    /// looked (and set a later deadline or given up).
    response_expired: AtomicBool,
    /// When the watch's timer fires next (ms after `epoch`).
    armed_ms: AtomicU64,
    /// A deadline earlier than `armed_ms` was set: the watch re-arms.
    rearm: AtomicBool,
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
    /// The connection's [`Activity::base_ms`].
    base_ms: u64,
}

impl HandOver {
    /// The body handed a frame over: the client now has to take it.
    pub fn waiting(&self) {
        let ms = coarse_ms().saturating_sub(self.base_ms);
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
    /// HTTP/1.1: no whole request head within `header_read_timeout` of the
    /// previous response (or of the connection's start): a slowloris, or a
    /// client that opened a connection and said nothing. Close at once.
    NoHead,
    /// A response is in flight but the client has read nothing of it for the
    /// whole timeout (a slow-read attack, or a client gone without a FIN):
    /// close at once, which also frees the upstream connection.
    WriteStalled,
}

impl Activity {
    pub fn new(slot: Slot) -> Activity {
        let epoch = Instant::now();
        Activity {
            epoch,
            base_ms: precise_ms(),
            last_ms: AtomicU64::new(0),
            last_write_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            write_blocked: AtomicBool::new(false),
            head_since: AtomicU64::new(0),
            head_ms: AtomicU64::new(0),
            response_due: AtomicU64::new(0),
            response_expired: AtomicBool::new(false),
            armed_ms: AtomicU64::new(u64::MAX),
            rearm: AtomicBool::new(false),
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
            base_ms: self.base_ms,
        }
    }

    fn clocks(&self) -> std::sync::MutexGuard<'_, Vec<Weak<AtomicU64>>> {
        // A panic while holding the lock cannot leave the list inconsistent.
        self.hand_overs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the longest-waiting HTTP/2 response began to wait (ms after
    /// the epoch), if any does.
    fn oldest_hand_over(&self) -> Option<u64> {
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
        (oldest != u64::MAX).then_some(oldest)
    }

    /// Records the outcome of a write to the client.
    fn wrote<T>(&self, res: &Poll<io::Result<T>>, moved: bool) {
        match res {
            Poll::Pending => self.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(_) => {
                if moved {
                    let ms = self.touch();
                    self.last_write_ms.store(ms, Ordering::Relaxed);
                }
                self.write_blocked.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Milliseconds since the connection's epoch, on the coarse clock: for
    /// the times recorded as the connection goes (see the module's doc).
    fn now_ms(&self) -> u64 {
        coarse_ms().saturating_sub(self.base_ms)
    }

    /// Milliseconds since the connection's epoch, read precisely: for the
    /// watch, which compares the recorded times with it.
    fn precise_now_ms(&self) -> u64 {
        whole_ms(self.epoch.elapsed())
    }

    /// `at` as milliseconds since the connection's epoch (0 before it).
    fn ms_of(&self, at: Instant) -> u64 {
        whole_ms(at.saturating_duration_since(self.epoch))
    }

    /// Bytes moved, or the connection was asked to close: the idle clock
    /// restarts. Returns the time it read (ms after the epoch).
    pub fn touch(&self) -> u64 {
        let ms = self.now_ms();
        self.last_ms.store(ms, Ordering::Relaxed);
        ms
    }

    /// HTTP/1.1: the connection starts waiting for its first request head
    /// (after the TLS handshake, which has its own deadline); each head must
    /// arrive within `timeout` of the previous response.
    pub fn awaiting_head(&self, timeout: Duration) {
        let ms = self.touch();
        self.head_ms.store(millis(timeout), Ordering::Relaxed);
        self.head_since.store(ms + 1, Ordering::Relaxed);
    }

    /// A deadline at `ms` (after the epoch) was set: if the watch sleeps
    /// past it, it re-arms when next polled.
    fn deadline_set(&self, ms: u64) {
        if ms < self.armed_ms.load(Ordering::Relaxed) {
            self.rearm.store(true, Ordering::Relaxed);
        }
    }

    /// Resolves once no byte moved for `idle` and either nothing is in
    /// flight or the client stopped reading what is; or once an HTTP/2
    /// response has waited `idle` for the client to take its next frame; or,
    /// with `head`, once an HTTP/1.1 connection has waited
    /// `header_read_timeout` for a request head (see [`Self::awaiting_head`]).
    ///
    /// Also the timer of the HTTP/1.1 request in flight: when its
    /// [`ResponseDeadline`] passes, the watch marks it expired and wakes the
    /// connection's task, whose next poll of the request sees it.
    ///
    /// Poll it after the connection (the server's `select!` is `biased`), so
    /// that a deadline set while hyper polled the request is seen at once.
    pub async fn idle(&self, idle: Duration, head: bool) -> Quiet {
        let timer = tokio::time::sleep_until(self.epoch.into());
        tokio::pin!(timer);
        loop {
            let mut wake_request = false;
            let due = match self.check(self.precise_now_ms(), idle, head, &mut wake_request) {
                Ok(due) => due,
                Err(quiet) => return quiet,
            };
            self.armed_ms.store(due, Ordering::Relaxed);
            self.rearm.store(false, Ordering::Relaxed);
            timer
                .as_mut()
                .reset((self.epoch + Duration::from_millis(due)).into());
            // The connection's task polls this on every wake-up (twice a
            // request). The timer keeps the waker of its first poll after
            // arming until it fires (always the same task's), so later polls
            // only look whether it fired: polling it again cost a coop-budget
            // check and a waker comparison each time.
            let mut registered = false;
            std::future::poll_fn(|cx| {
                if std::mem::take(&mut wake_request) {
                    cx.waker().wake_by_ref();
                }
                if self.rearm.load(Ordering::Relaxed) {
                    return Poll::Ready(());
                }
                if std::mem::replace(&mut registered, true) && !timer.is_elapsed() {
                    return Poll::Pending;
                }
                timer.as_mut().poll(cx)
            })
            .await;
        }
    }

    /// What the watch finds at `now`: a reason to close, or when to look
    /// again (ms after the epoch). Sets `wake_request` when it marked the
    /// request's response deadline expired.
    fn check(
        &self,
        now: u64,
        idle: Duration,
        head: bool,
        wake_request: &mut bool,
    ) -> Result<u64, Quiet> {
        let idle_ms = millis(idle);
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let write_blocked = self.write_blocked.load(Ordering::Relaxed);
        let mut due = self.last_ms.load(Ordering::Relaxed) + idle_ms;
        if now >= due {
            if in_flight == 0 {
                return Err(Quiet::Idle);
            }
            if write_blocked {
                return Err(Quiet::WriteStalled);
            }
            due = now + idle_ms;
        }
        let since = self.head_since.load(Ordering::Relaxed);
        let head_ms = self.head_ms.load(Ordering::Relaxed);
        if head && head_ms != 0 && since != 0 && in_flight == 0 && !write_blocked {
            // From the later of the wait's start and the last byte of the
            // previous response: hyper reads the next head only once that
            // response is written.
            let from = (since - 1).max(self.last_write_ms.load(Ordering::Relaxed));
            let head_due = from + head_ms;
            if now >= head_due {
                return Err(Quiet::NoHead);
            }
            due = due.min(head_due);
        }
        let response = self.response_due.load(Ordering::Relaxed);
        if response != 0 && !self.response_expired.load(Ordering::Relaxed) {
            if now >= response - 1 {
                self.response_expired.store(true, Ordering::Relaxed);
                *wake_request = true;
            } else {
                due = due.min(response - 1);
            }
        }
        if let Some(since) = self.oldest_hand_over() {
            if now >= since + idle_ms {
                return Err(Quiet::WriteStalled);
            }
            due = due.min(since + idle_ms);
        }
        Ok(due)
    }
}

/// Whole seconds and milliseconds apart: no 128-bit `as_millis` division
/// on the per-I/O path.
fn whole_ms(d: Duration) -> u64 {
    d.as_secs() * 1000 + u64::from(d.subsec_millis())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

/// The response-head deadline of an HTTP/1.1 request, kept by its
/// connection's watch (see [`Activity::idle`]); cleared when dropped.
#[derive(Debug)]
pub struct ResponseDeadline<'a> {
    activity: &'a Activity,
}

impl ResponseDeadline<'_> {
    /// The watch found the deadline passed.
    pub fn expired(&self) -> bool {
        self.activity.response_expired.load(Ordering::Relaxed)
    }

    /// Moves the deadline to `at` (an upload that kept moving).
    pub fn extend(&self, at: Instant) {
        let ms = self.activity.ms_of(at);
        self.activity.response_due.store(ms + 1, Ordering::Relaxed);
        self.activity
            .response_expired
            .store(false, Ordering::Relaxed);
        self.activity.deadline_set(ms);
    }
}

impl Drop for ResponseDeadline<'_> {
    fn drop(&mut self) {
        self.activity.response_due.store(0, Ordering::Relaxed);
        self.activity
            .response_expired
            .store(false, Ordering::Relaxed);
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

    /// HTTP/1.1 only: a response-head deadline `timeout` from now, kept by
    /// the connection's watch instead of a timer of the request's own. On
    /// HTTP/2 each request's future runs in a task of its own, which the
    /// watch cannot wake: `None`, and the caller arms a timer.
    pub fn response_deadline(&self, timeout: Duration) -> Option<ResponseDeadline<'_>> {
        if self.place.is_some() {
            return None;
        }
        let a = &*self.activity;
        let ms = a.now_ms().saturating_add(millis(timeout));
        a.response_expired.store(false, Ordering::Relaxed);
        a.response_due.store(ms + 1, Ordering::Relaxed);
        a.deadline_set(ms);
        Some(ResponseDeadline { activity: a })
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
            activity.idle(idle, false).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &*self.activity;
        let ms = a.touch();
        if a.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            // The connection waits for its next request head from now on.
            a.head_since.store(ms + 1, Ordering::Relaxed);
            let head_ms = a.head_ms.load(Ordering::Relaxed);
            if head_ms != 0 {
                a.deadline_set(ms + head_ms);
            }
        }
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
    fn recorded_times_never_run_ahead_of_the_watchs_clock_by_more_than_a_millisecond() {
        let limits = Arc::new(ConnLimits::new(1, 1));
        let slot = limits.open("192.0.2.1".parse().unwrap(), false).unwrap();
        let activity = Activity::new(slot);
        for _ in 0..1000 {
            // Recorded first; whole milliseconds from bases read a moment
            // apart, hence the one of slack.
            let touched = activity.touch();
            let precise = activity.precise_now_ms();
            assert!(touched <= precise + 1, "{touched} {precise}");
        }
    }

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
        // Longer than a tick of the coarse clock the clocks read.
        std::thread::sleep(Duration::from_millis(25));
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
