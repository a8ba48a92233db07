//! Pooled clients to the configured backends; bodies stream both ways.
//!
//! One hyper-util client per `[upstreams.NAME]`, each with its own connect
//! timeout and TLS roots (the system's Mozilla roots from webpki-roots, or the
//! configured `ca_file`). Keep-alive connections are pooled per upstream. A
//! request body is handed to hyper as it arrives and the response body is
//! returned unread, so a multi-GB push or clone never sits in memory.
//!
//! This module never decides who may call what; it only carries requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::Scheme;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::TrySendError;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::config;
use crate::conn::ResponseDeadline;
use crate::connector::{self, CaFileError};
use crate::error::Reject;

mod body;

use body::Expiry;
pub use body::{Progress, UpstreamBody};

/// One backend and its connection pool.
/// Clones share the connection pool (a reload keeps an unchanged upstream's).
#[derive(Debug, Clone)]
pub struct Upstream {
    pub config: config::Upstream,
    /// The config name, shared with access-log lines.
    pub name: std::sync::Arc<str>,
    client: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream \"{name}\": cannot read ca_file {path}: {source}")]
    CaFile {
        name: String,
        path: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("upstream \"{name}\": ca_file {path} holds no usable certificate")]
    NoCertificates { name: String, path: String },
}

impl UpstreamError {
    /// The `ca_file` error of upstream `name`.
    fn from_ca_file(name: &str, e: CaFileError) -> UpstreamError {
        let name = name.to_owned();
        match e {
            CaFileError::Read { path, source } => UpstreamError::CaFile { name, path, source },
            CaFileError::Empty { path } => UpstreamError::NoCertificates { name, path },
        }
    }
}

impl Upstream {
    pub fn new(config: &config::Upstream) -> Result<Upstream, UpstreamError> {
        let roots = connector::roots(config.ca_file.as_deref())
            .map_err(|e| UpstreamError::from_ca_file(&config.name, e))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = connector::https_or_http(roots, http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(Upstream {
            name: config.name.as_str().into(),
            config: config.clone(),
            client,
        })
    }

    /// The URI on the backend for a normalised path and the raw query.
    /// Origin-form (path and query only): what a direct connection sends;
    /// [`Upstream::send`] adds scheme and authority for the shared pool.
    ///
    /// `None` when `received`, the request's own target, is already that
    /// URI: origin-form, its path the normal one, and no `base_path` to
    /// add. The usual case, forwarded without building and checking a copy.
    pub fn target(
        &self,
        received: &Uri,
        path: &str,
        query: Option<&str>,
    ) -> Result<Option<Uri>, Reject> {
        let base = &self.config.base_path;
        let as_received = base.is_empty()
            && received.scheme().is_none()
            && received.authority().is_none()
            && received.path() == path;
        if as_received {
            return Ok(None);
        }
        let mut pq =
            String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        pq.push_str(base);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        PathAndQuery::try_from(pq)
            .map(|pq| Some(Uri::from(pq)))
            .map_err(|_| Reject::BadTarget("request target cannot be forwarded"))
    }

    /// Through the shared pool, which needs the absolute URI to pick a host.
    async fn send_pooled(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, Reject> {
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(self.config.scheme.clone());
        parts.authority = Some(self.config.authority.clone());
        *req.uri_mut() = Uri::from_parts(parts)
            .map_err(|_| Reject::BadTarget("request target cannot be forwarded"))?;
        self.client.request(req).await.map_err(|e| self.failed(&e))
    }

    /// Sends the request; 502 when the backend cannot be reached, 504 when it
    /// does not answer with a response head within `response_timeout`.
    ///
    /// With an [`Affinity`] (a downstream HTTP/1.1 connection) a plain-HTTP,
    /// non-upgrade request goes over that connection's own upstream
    /// connection; otherwise through the shared pool.
    ///
    /// The usual case, a held connection that is open and ready, takes the
    /// request here and now, so the future returned carries no request and
    /// no nested `async fn` states: a few hundred bytes, where the `async`
    /// version it replaces sized (and was moved with) every request's
    /// future by 1.7 KiB. Everything else (a fresh connection, one not ready
    /// yet, the shared pool) is boxed.
    ///
    /// The timeout counts from the last [`Progress`] of a streamed request
    /// body (see `upstream/body.rs`): an upload may take as long as it keeps
    /// moving; a client that stops sending mid-body gets 408.
    ///
    /// `deadline`: on HTTP/1.1 the connection's watch keeps the timeout (see
    /// `conn.rs`); otherwise this request arms a timer of its own.
    ///
    /// `upgrade`: the request asks to switch protocols (it kept its
    /// `Upgrade` header); it goes through the pool, which hands over the
    /// upgraded connection.
    pub fn send<'a>(
        &'a self,
        req: Request<UpstreamBody>,
        upgrade: bool,
        affinity: Option<&'a Arc<Affinity>>,
        progress: Option<&'a Progress>,
        deadline: Option<ResponseDeadline<'a>>,
    ) -> Answer<
        'a,
        impl Future<Output = Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>>>,
    > {
        let direct = affinity.filter(|_| self.config.scheme == Scheme::HTTP && !upgrade);
        let timer = deadline
            .is_none()
            .then(|| Box::pin(tokio::time::sleep(self.config.response_timeout)));
        let mut answer = Answer {
            upstream: self,
            affinity: direct,
            sender: None,
            sent: None,
            slower: None,
            progress,
            deadline,
            timer,
        };
        match direct {
            None => answer.slower = Some(Box::pin(self.send_pooled(req))),
            Some(a) => match a.take(&self.name) {
                Some(mut sender) if sender.is_ready() => {
                    answer.sent = Some(sender.try_send_request(req));
                    answer.sender = Some(sender);
                }
                held => answer.slower = Some(Box::pin(self.send_direct(a, held, req))),
            },
        }
        answer
    }

    /// `response_timeout` ran out: wait until the returned instant if the
    /// request body moved meanwhile, else the answer (408 when the client
    /// owes the next bytes, 504 when the upstream does).
    fn timed_out(&self, progress: Option<&Progress>) -> Result<Instant, Reject> {
        let timeout = self.config.response_timeout;
        match progress.map(|p| p.expired(timeout, Instant::now())) {
            Some(Expiry::Extend(until)) => Ok(until),
            Some(Expiry::ClientStalled) => {
                tracing::debug!(upstream = %self.config.name, "request body stalled");
                Err(Reject::RequestTimeout)
            }
            Some(Expiry::UpstreamStalled) | None => {
                tracing::warn!(upstream = %self.config.name, "upstream response timed out");
                Err(Reject::UpstreamTimeout)
            }
        }
    }

    /// Over the downstream connection's own upstream connection, `held`
    /// (reused while it is open and was idle less than [`REUSE_IDLE`]) once
    /// it is ready; a request the old connection did not take (closed
    /// meanwhile), or with none held, goes on a fresh one.
    async fn send_direct(
        &self,
        affinity: &Arc<Affinity>,
        held: Option<SendRequest<UpstreamBody>>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, Reject> {
        if let Some(mut sender) = held {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        affinity.put(&self.name, sender);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(self.failed(&e.into_error())),
                    },
                }
            }
        }
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.failed(&e))?;
        affinity.put(&self.name, sender);
        Ok(resp)
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, Reject> {
        let addr = format!(
            "{}:{}",
            self.config.authority.host(),
            self.config.authority.port_u16().unwrap_or(80)
        );
        let stream = match tokio::time::timeout(
            self.config.connect_timeout,
            TcpStream::connect(&addr),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(self.failed(&e)),
            Err(_) => {
                tracing::warn!(upstream = %self.config.name, "upstream connect timed out");
                return Err(Reject::UpstreamUnavailable);
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.failed(&e))?;
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %name, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn failed(&self, e: &(dyn std::error::Error + 'static)) -> Reject {
        let cause = e.source().map(ToString::to_string).unwrap_or_default();
        if client_body_failed(e) {
            // Malformed chunked framing, or a client gone mid-upload: the
            // client's doing, so a 400 and no warning it could repeat at will.
            tracing::debug!(upstream = %self.config.name, error = %e, cause, "request body failed");
            return Reject::BadRequest("request body is malformed or was cut short");
        }
        tracing::warn!(upstream = %self.config.name, error = %e, cause, "upstream request failed");
        Reject::UpstreamUnavailable
    }
}

/// The slower roads of [`Upstream::send`], boxed.
type Slower<'a> = Pin<Box<dyn Future<Output = Result<Response<Incoming>, Reject>> + Send + 'a>>;

pin_project_lite::pin_project! {
    /// The answer to a request [`Upstream::send`] sent, within
    /// `response_timeout`.
    pub struct Answer<'a, F> {
        upstream: &'a Upstream,
        affinity: Option<&'a Arc<Affinity>>,
        // The held connection that took the request, put back once it answers.
        sender: Option<SendRequest<UpstreamBody>>,
        // Its answer.
        #[pin]
        sent: Option<F>,
        // Or the answer on a slower road.
        slower: Option<Slower<'a>>,
        progress: Option<&'a Progress>,
        deadline: Option<ResponseDeadline<'a>>,
        // Without a deadline kept by the connection's watch (HTTP/2): a
        // timer, boxed to keep it out of the usual case's size.
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> Future for Answer<'_, F>
where
    F: Future<Output = Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>>>,
{
    type Output = Result<Response<Incoming>, Reject>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(sent) = this.sent.as_mut().as_pin_mut() {
            if let Poll::Ready(result) = sent.poll(cx) {
                this.sent.set(None);
                match result {
                    Ok(resp) => {
                        if let (Some(affinity), Some(sender)) = (this.affinity, this.sender.take())
                        {
                            affinity.put(&this.upstream.name, sender);
                        }
                        return Poll::Ready(Ok(resp));
                    }
                    Err(mut e) => match (e.take_message(), *this.affinity) {
                        // Closed before it took the request: a fresh connection.
                        (Some(unsent), Some(affinity)) => {
                            *this.slower =
                                Some(Box::pin(this.upstream.send_direct(affinity, None, unsent)));
                        }
                        _ => return Poll::Ready(Err(this.upstream.failed(&e.into_error()))),
                    },
                }
            }
        }
        if let Some(slower) = this.slower.as_mut() {
            if let Poll::Ready(result) = slower.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
        }
        if let Some(deadline) = this.deadline.as_ref() {
            if !deadline.expired() {
                return Poll::Pending;
            }
            return match this.upstream.timed_out(*this.progress) {
                Ok(until) => {
                    deadline.extend(until);
                    Poll::Pending
                }
                Err(reject) => Poll::Ready(Err(reject)),
            };
        }
        while let Some(timer) = this.timer.as_mut() {
            if timer.as_mut().poll(cx).is_pending() {
                break;
            }
            match this.upstream.timed_out(*this.progress) {
                Ok(until) => timer.as_mut().reset(until.into()),
                Err(reject) => return Poll::Ready(Err(reject)),
            }
        }
        Poll::Pending
    }
}

/// True when sending failed because the request body, read from the client's
/// connection, failed: hyper reports that as a user error whose cause is the
/// hyper error of the client side.
fn client_body_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            let cause = std::error::Error::source(h);
            if h.is_user() && cause.is_some_and(|s| s.is::<hyper::Error>()) {
                return true;
            }
        }
        next = err.source();
    }
    false
}

/// How long an idle per-connection upstream connection is trusted to still
/// be open (below the keep-alive timeouts of common servers: Apache 5 s).
pub const REUSE_IDLE: Duration = Duration::from_secs(4);

/// How often the reaper looks at a held connection: one it finds unused
/// since its previous look has been idle a whole tick, and is closed. A
/// held connection is thus never idle longer than two ticks, `REUSE_IDLE`.
const REAP_TICK: Duration = Duration::from_secs(2);

/// The upstream connection owned by one downstream HTTP/1.1 connection.
///
/// HTTP/1.1 requests on a connection are strictly sequential, so the proxy
/// can keep one upstream connection per downstream connection and skip the
/// shared pool's bookkeeping on every request. The lock is never contended:
/// only the one request in flight on that connection touches it.
///
/// No clock is read per request: the reaper drops a connection left unused
/// for a whole `REAP_TICK`, so whatever is held has been idle less than
/// `REUSE_IDLE` (issue 18: with a clock read in `put` and an `elapsed` in
/// `take`, the two cost 247 instructions a request; without, 134).
#[derive(Default)]
pub struct Affinity {
    held: std::sync::Mutex<Option<Held>>,
    /// A reaper task is pending: it closes the held connection once it has
    /// been idle for a tick, so idle clients do not pin upstream
    /// connections (10,000 idle keep-alive clients would otherwise hold
    /// 10,000 upstream connections).
    reaper: std::sync::atomic::AtomicBool,
}

struct Held {
    upstream: Arc<str>,
    sender: SendRequest<UpstreamBody>,
    /// Put back since the reaper last looked.
    used: bool,
}

impl std::fmt::Debug for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Affinity").finish_non_exhaustive()
    }
}

impl Affinity {
    fn take(&self, upstream: &Arc<str>) -> Option<SendRequest<UpstreamBody>> {
        let h = self.lock().take()?;
        let fresh = Arc::ptr_eq(&h.upstream, upstream) && !h.sender.is_closed();
        fresh.then_some(h.sender)
    }

    fn put(self: &Arc<Self>, upstream: &Arc<str>, sender: SendRequest<UpstreamBody>) {
        *self.lock() = Some(Held {
            upstream: upstream.clone(),
            sender,
            used: true,
        });
        if !self.reaper.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The reaper's look: whether a connection is still held, used since
    /// the previous look. One that was not is closed.
    fn reap_tick(&self) -> bool {
        let mut held = self.lock();
        if let Some(h) = held.as_mut() {
            if std::mem::replace(&mut h.used, false) {
                return true;
            }
        }
        *held = None;
        self.reaper
            .store(false, std::sync::atomic::Ordering::Relaxed);
        false
    }
}

/// Closes the held upstream connection once unused for a whole
/// [`REAP_TICK`]; ends then, or with the downstream connection.
async fn reap(affinity: std::sync::Weak<Affinity>) {
    loop {
        tokio::time::sleep(REAP_TICK).await;
        let Some(a) = affinity.upgrade() else {
            return;
        };
        if !a.reap_tick() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender on a fresh connection to a listener that holds it open.
    async fn sender() -> SendRequest<UpstreamBody> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (_held, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    }

    #[tokio::test]
    async fn a_held_connection_unused_for_a_whole_tick_is_closed() {
        let affinity = Arc::new(Affinity::default());
        let name: Arc<str> = Arc::from("backend");
        affinity.put(&name, sender().await);
        // Used since the last look: kept, and reused.
        assert!(affinity.reap_tick());
        let reused = affinity.take(&name).expect("held");
        affinity.put(&name, reused);
        assert!(affinity.reap_tick());
        // Not used since: closed, and the reaper ends.
        assert!(!affinity.reap_tick());
        assert!(affinity.take(&name).is_none());
        assert!(!affinity.reaper.load(std::sync::atomic::Ordering::Relaxed));
        // Another upstream's connection is not reused.
        affinity.put(&name, sender().await);
        assert!(affinity.take(&Arc::from("backend")).is_none());
    }
}
