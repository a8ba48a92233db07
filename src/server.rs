//! Listeners, the accept loop, TLS hand-off, per-connection timeouts and
//! graceful shutdown.
//!
//! [`spawn_workers`] runs one single-threaded runtime per core, all accepting
//! on the same listeners, each with its own upstream pools: a connection and
//! everything it proxies stay on one thread, with no cross-thread wake-ups or
//! shared pool locks (figures in docs/performance.md). [`run`] is one worker:
//! bound listeners and a shutdown future.
//!
//! Each connection is served by hyper's HTTP/1.1 or HTTP/2 connection driver:
//! over TLS the protocol is the one ALPN chose; in clear text the first bytes
//! are peeked for the HTTP/2 preface. Timeouts:
//! - TLS handshake and protocol sniffing must finish within `header_read_timeout`;
//! - an HTTP/1.1 request head must arrive within `header_read_timeout` of the
//!   connection's start or of the previous response's last byte (the
//!   connection's watch, `conn::Activity::idle`, keeps it: a slowloris head
//!   trickling in does not restart it);
//! - a connection with no request in flight and no bytes moving for
//!   `idle_timeout` is closed gracefully (HTTP/2 included);
//! - a connection whose client has read nothing of a response for
//!   `idle_timeout`, its writes blocked, is closed at once (slow-read attacks
//!   would otherwise hold it, and its upstream connection, for ever); on
//!   HTTP/2, where a client stops a response by granting no flow-control
//!   window, the same holds for any one response whose body has waited that
//!   long for the client to take its next frame (`conn::HandOver`);
//! - a connection asked to close (idle or shutdown) that then stays silent for
//!   another `idle_timeout` is closed at once: an HTTP/2 graceful close would
//!   otherwise wait for ever on a stream whose client grants no window.
//!
//! A connection over `max_connections` in all or `max_connections_per_addr`
//! from its address is closed as soon as it is accepted (`conn.rs`).
//!
//! On shutdown: stop accepting, ask every connection to finish its in-flight
//! requests, wait up to `shutdown_grace`, then return whether they all
//! finished ([`Drain`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::audit::{self, AuditEvent};
use crate::auth::cache::Recent;
use crate::conn::ConnLimits;
use crate::conn::{Activity, InFlight, Quiet, Tracked};
use crate::gateway::{Live, Worker};
use crate::headers;
use crate::proxy::{self, Conn};
use crate::tls::Tls;
use crate::upstream::Affinity;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Starts `workers` threads, each with its own single-threaded runtime and its
/// own upstream connection pools, all accepting on the same listeners (the
/// kernel hands each connection to one of them). A connection and the
/// upstream connections it uses then live on one thread: no work stealing, no
/// cross-thread wake-ups on the request path. Each worker drains and returns
/// once `stop` turns true.
pub fn spawn_workers(
    live: &Arc<Live>,
    listeners: &[std::net::TcpListener],
    tls: &Option<Arc<Tls>>,
    workers: usize,
    stop: &watch::Receiver<bool>,
) -> io::Result<Vec<std::thread::JoinHandle<Drain>>> {
    let mut handles = Vec::with_capacity(workers);
    for n in 0..workers.max(1) {
        let socks = listeners
            .iter()
            .map(std::net::TcpListener::try_clone)
            .collect::<io::Result<Vec<_>>>()?;
        let (live, tls, mut stop) = (live.clone(), tls.clone(), stop.clone());
        // Sized once: a reload keeps `auth.verify_threads` (it needs a restart).
        let verify_threads = live.load().config.auth.verify_threads;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("passgate-verify")
            .on_thread_start(lower_this_thread)
            .max_blocking_threads(verify_threads + STORE_READ_THREADS)
            .build()?;
        let thread_main = move || {
            runtime.block_on(async move {
                let listeners = match socks
                    .into_iter()
                    .map(TcpListener::from_std)
                    .collect::<io::Result<Vec<_>>>()
                {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "worker cannot use the listeners");
                        return Drain::Complete;
                    }
                };
                let worker = Arc::new(Worker { live, index: n });
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                run(worker, listeners, tls, shutdown).await
            })
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("passgate-worker-{n}"))
                .spawn(thread_main)?,
        );
    }
    Ok(handles)
}

/// How much lower than the workers the blocking threads run. Those threads
/// do argon2id verifications (tens of ms of CPU each) and the store reads
/// before them; at a lower priority a flood of first-time or made-up
/// credentials weighs less against the workers that proxy authenticated
/// traffic (docs/performance.md).
pub const VERIFY_NICE_INCREMENT: i32 = 10;

/// Blocking threads per worker beyond the verification threads, for the
/// store reads before a verification (microseconds each). Without a bound a
/// burst of made-up tokens starts a thread per request; beyond it, reads wait
/// their turn.
pub const STORE_READ_THREADS: usize = 8;

/// Lowers the calling thread's CPU priority by [`VERIFY_NICE_INCREMENT`]
/// (Linux: `setpriority` on a thread id affects that thread only).
fn lower_this_thread() {
    let tid = rustix::thread::gettid();
    let lowered = rustix::process::getpriority_process(Some(tid)).and_then(|now| {
        rustix::process::setpriority_process(Some(tid), (now + VERIFY_NICE_INCREMENT).min(19))
    });
    if let Err(e) = lowered {
        tracing::debug!(error = %e, "cannot lower the verification thread's priority");
    }
}

/// How a worker's drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every connection finished within `shutdown_grace`.
    Complete,
    /// `shutdown_grace` ran out; the connections still open were closed.
    Cut,
}

/// Serves on `listeners` until `shutdown` resolves, then drains.
pub async fn run(
    worker: Arc<Worker>,
    listeners: Vec<TcpListener>,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
) -> Drain {
    let (stop_tx, stop_rx) = watch::channel(false);
    let tracker = TaskTracker::new();
    let mut accept_loops = Vec::new();
    for listener in listeners {
        let listener = Listener {
            listener,
            worker: worker.clone(),
            tls: tls.clone(),
            stop: stop_rx.clone(),
            tracker: tracker.clone(),
        };
        accept_loops.push(tokio::spawn(listener.run()));
    }
    shutdown.await;
    let grace = worker.live.load().config.server.shutdown_grace;
    let _ = stop_tx.send(true);
    for handle in accept_loops {
        let _ = handle.await;
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "shutdown grace elapsed; closing remaining connections"
        );
        return Drain::Cut;
    }
    Drain::Complete
}

/// One listening socket of one worker, and what its connections share.
struct Listener {
    listener: TcpListener,
    worker: Arc<Worker>,
    tls: Option<Arc<Tls>>,
    /// Turns true when the worker stops accepting.
    stop: watch::Receiver<bool>,
    /// The worker's connections, waited for on shutdown.
    tracker: TaskTracker,
}

impl Listener {
    /// Accepts until the worker stops; each connection gets a [`Handler`]
    /// in a task of its own.
    async fn run(mut self) {
        loop {
            let accepted = tokio::select! {
                _ = self.stop.changed() => return,
                a = self.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let gw = self.worker.live.load();
            let trusted = headers::is_trusted(peer.ip(), &gw.config.server.trusted_proxies);
            let slot = match gw.conn_limits.open(peer.ip(), trusted) {
                Ok(slot) => slot,
                Err(over) => {
                    // Closed before a byte is read: nothing to answer with.
                    audit::emit(AuditEvent::ConnLimited {
                        peer: peer.ip(),
                        limit: over.as_str(),
                        open: gw.conn_limits.open_now(),
                    });
                    drop(stream);
                    continue;
                }
            };
            let handler = Handler {
                worker: self.worker.clone(),
                limits: gw.conn_limits.clone(),
                settings: Settings::of(&gw),
                peer,
                trusted,
                activity: Arc::new(Activity::new(slot)),
                stop: self.stop.clone(),
            };
            let tls = self.tls.clone();
            self.tracker.spawn(async move {
                if let Err(e) = handler.run(stream, tls).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    }
}

/// The connection-wide settings, from the config in force when the
/// connection was accepted (a reload applies to the next connections).
#[derive(Clone, Copy)]
struct Settings {
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Settings {
    fn of(gw: &crate::gateway::Gateway) -> Settings {
        Settings {
            header_read_timeout: gw.config.server.header_read_timeout,
            idle_timeout: gw.config.server.idle_timeout,
        }
    }
}

/// One accepted connection, from its TLS handshake to its close.
struct Handler {
    worker: Arc<Worker>,
    /// The connection caps (shared by every gateway a reload makes).
    limits: Arc<ConnLimits>,
    settings: Settings,
    peer: SocketAddr,
    /// The peer is one of `server.trusted_proxies`.
    trusted: bool,
    /// Holds the connection's place under the connection caps.
    activity: Arc<Activity>,
    stop: watch::Receiver<bool>,
}

impl Handler {
    /// The TLS handshake (or, in clear text, the HTTP/2 sniff) within
    /// `header_read_timeout`, then [`Self::serve`].
    async fn run(self, stream: TcpStream, tls: Option<Arc<Tls>>) -> io::Result<()> {
        let _ = stream.set_nodelay(true);
        let deadline = self.settings.header_read_timeout;
        match tls {
            Some(tls) => {
                let mut stream = stream;
                if crate::tls::refuse_plain_http(&mut stream, deadline).await? {
                    return Ok(());
                }
                let accept = tls.acceptor().accept(stream);
                let stream = tokio::time::timeout(deadline, accept).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = TokioIo::new(Tracked::new(stream, self.activity.clone()));
                self.serve(io, true, h2).await
            }
            None => {
                let h2 = tokio::time::timeout(deadline, sniff_h2(&stream))
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no request within header_read_timeout",
                        )
                    })??;
                let io = TokioIo::new(Tracked::new(stream, self.activity.clone()));
                self.serve(io, false, h2).await
            }
        }
    }

    /// Drives the connection with hyper until it ends, shutdown asks it to
    /// stop, or it has been idle too long.
    async fn serve<I>(self, io: TokioIo<I>, tls: bool, h2: bool) -> io::Result<()>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Handler {
            worker,
            limits,
            settings,
            peer,
            trusted,
            activity,
            mut stop,
        } = self;
        let (header_timeout, idle) = (settings.header_read_timeout, settings.idle_timeout);
        // Reads whether shutdown was asked without registering anew (see
        // `stop_requested`).
        let probe = stop.clone();
        let conn = Arc::new(Conn {
            peer,
            peer_value: headers::peer_value(peer.ip()),
            tls,
            trusted,
            // HTTP/1.1 requests are sequential: the connection can own its upstream connection.
            affinity: (!h2).then(|| Arc::new(Affinity::default())),
            recent: Recent::default(),
            added: Default::default(),
        });
        let svc = {
            let (worker, activity, limits) = (worker.clone(), activity.clone(), limits.clone());
            service_fn(move |req| {
                // HTTP/2: each request in flight holds an upstream connection,
                // so it takes a place under the connection caps of its own.
                let place = h2.then(|| limits.open(conn.peer.ip(), conn.trusted));
                if let Some(Err(over)) = place {
                    audit::emit(AuditEvent::ConnLimited {
                        peer: conn.peer.ip(),
                        limit: over.as_str(),
                        open: limits.open_now(),
                    });
                }
                let guard = InFlight::enter(activity.clone(), place);
                // The request's future itself, not wrapped in another: a
                // wrapper would take it in with one more move (kilobytes).
                proxy::handle(worker.clone(), conn.clone(), req, guard)
            })
        };
        macro_rules! drive {
            ($conn:expr) => {{
                let conn = $conn;
                tokio::pin!(conn);
                let mut stopping = false;
                loop {
                    tokio::select! {
                        // The connection first, the watch last: a deadline
                        // set while hyper polled a request is seen at once.
                        biased;
                        res = conn.as_mut() => return res.map_err(io::Error::other),
                        () = stop_requested(&mut stop, &probe), if !stopping => {
                            stopping = true;
                            activity.touch();
                            conn.as_mut().graceful_shutdown();
                        }
                        quiet = activity.idle(idle, !h2) => match quiet {
                            Quiet::Idle if !stopping => {
                                // Closing starts the clock again: a client gets
                                // one more `idle_timeout` to take what is queued.
                                stopping = true;
                                activity.touch();
                                conn.as_mut().graceful_shutdown();
                            }
                            Quiet::Idle => {
                                // Still silent: an HTTP/2 stream whose last frame
                                // waits for window the client never grants would
                                // keep a graceful close waiting for ever.
                                return Err(io::Error::new(io::ErrorKind::TimedOut, "connection stayed silent while closing"));
                            }
                            Quiet::NoHead => {
                                return Err(io::Error::new(io::ErrorKind::TimedOut, "no request head within header_read_timeout"));
                            }
                            Quiet::WriteStalled => {
                                return Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading its response"));
                            }
                        },
                    }
                }
            }};
        }
        if h2 {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(20))
                .max_concurrent_streams(256);
            drive!(builder.serve_connection(io, svc))
        } else {
            // No hyper timer: the watch keeps `header_read_timeout` (see
            // conn.rs), without a timer armed and cancelled per request.
            activity.awaiting_head(header_timeout);
            let mut builder = http1::Builder::new();
            builder
                .header_read_timeout(None)
                .max_buf_size(64 * 1024)
                // A strict bound on the request head (and on trailers): without
                // it, max_buf_size only bounds a head still incomplete after a
                // read, and one that arrives whole in larger reads gets through.
                .max_header_size(64 * 1024);
            drive!(builder.serve_connection(io, svc).with_upgrades())
        }
    }
}

/// Resolves once shutdown is asked (or the server's sender is gone).
///
/// The connection's `select!` polls this on every wake-up of its task, twice
/// a request. `changed()` registers the task's waker on its first poll and
/// keeps it; later polls only read `probe`'s version (one atomic load)
/// instead of taking the channel's waiter lock each time.
async fn stop_requested(stop: &mut watch::Receiver<bool>, probe: &watch::Receiver<bool>) {
    let changed = stop.changed();
    tokio::pin!(changed);
    let mut registered = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut registered, true) && !probe.has_changed().unwrap_or(true) {
            return Poll::Pending;
        }
        changed.as_mut().poll(cx).map(|_| ())
    })
    .await;
}

/// Peeks at the first bytes: true for the HTTP/2 prior-knowledge preface.
async fn sniff_h2(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a request",
            ));
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A partial preface: wait for more bytes (bounded by the caller's timeout).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
