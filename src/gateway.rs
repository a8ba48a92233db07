//! The shared state every request reads. A [`Gateway`] is one configuration
//! made ready — the config, the authenticator, the upstream clients of every
//! worker — and never changes; [`Live`] holds the current one and swaps in a
//! whole new one on a reload (`reload.rs`). A request loads the current
//! gateway once, when it starts, and keeps it to its end: requests in flight
//! finish under the config they started with.
//!
//! What outlives a reload is shared by `Arc` between the gateways: the store,
//! the connection counts, the verification cache and usage log (see
//! [`Authenticator::reconfigured`]), and the connection pools of unchanged
//! upstreams.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::conn::ConnLimits;
use crate::error::challenge;
use crate::store::Store;
use crate::tls::Tls;
use crate::upstream::{Upstream, UpstreamError};

#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    pub auth: Authenticator,
    pub store: Arc<Store>,
    /// `WWW-Authenticate` value, built once from the realm.
    pub challenge: HeaderValue,
    /// Open client connections, shared by every worker (and every reload).
    pub conn_limits: Arc<ConnLimits>,
    /// Unique to this gateway among every one the process builds: a
    /// connection's memo of the headers its requests get added is good only
    /// for the config it was built under (`headers::MemoKey`).
    pub generation: u64,
    /// Each worker's clients, indexed by worker, then by `Route::upstream`
    /// (in `config.upstreams` order). A worker uses only its own, so a pool
    /// is never shared between threads.
    upstreams: Box<[Box<[Upstream]>]>,
}

/// The next [`Gateway::generation`].
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("argon2 setup failed: {0}")]
    Hash(#[from] crate::auth::verify::HashError),
}

impl Gateway {
    /// The gateway at start-up, with clients for `config.server.workers` workers.
    pub fn new(config: Config, store: Arc<Store>) -> Result<Gateway, GatewayError> {
        let auth = Authenticator::new(store.clone(), config.scopes.clone(), &config.auth)?;
        let conn_limits = Arc::new(ConnLimits::new(
            config.server.max_connections,
            config.server.max_connections_per_addr,
        ));
        let upstreams = (0..config.server.workers.max(1))
            .map(|_| upstreams(&config).map(Vec::into_boxed_slice))
            .collect::<Result<_, _>>()?;
        Ok(Gateway {
            challenge: challenge(&config.auth.realm),
            config,
            auth,
            store,
            conn_limits,
            generation: next_generation(),
            upstreams,
        })
    }

    /// The gateway for a reloaded `config`, sharing this one's state: an
    /// upstream whose settings did not change keeps its clients (and their
    /// pooled connections); a new or changed one gets fresh clients.
    pub fn reloaded(&self, config: Config) -> Result<Gateway, GatewayError> {
        let auth =
            self.auth
                .reconfigured(config.scopes.clone(), &config.auth, &self.config.auth)?;
        let mut upstreams = Vec::with_capacity(self.upstreams.len());
        for own in self.upstreams.iter() {
            let mut fresh = Vec::with_capacity(config.upstreams.len());
            for wanted in &config.upstreams {
                let kept = own.iter().find(|u| u.config.same_connection(wanted));
                fresh.push(match kept {
                    Some(u) => u.clone(),
                    None => Upstream::new(wanted)?,
                });
            }
            upstreams.push(fresh.into_boxed_slice());
        }
        self.conn_limits.set_caps(
            config.server.max_connections,
            config.server.max_connections_per_addr,
        );
        Ok(Gateway {
            challenge: challenge(&config.auth.realm),
            config,
            auth,
            store: self.store.clone(),
            conn_limits: self.conn_limits.clone(),
            generation: next_generation(),
            upstreams: upstreams.into_boxed_slice(),
        })
    }

    /// Worker `index`'s upstream clients, indexed by `Route::upstream`.
    pub fn upstreams(&self, index: usize) -> &[Upstream] {
        self.upstreams.get(index).map_or(&[], |u| u)
    }
}

/// The gateway in force, swapped whole by a reload; and what a reload needs
/// beside it.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Gateway>,
    /// The listeners' certificate, reloaded with the config.
    pub tls: Option<Arc<Tls>>,
    /// One reload at a time: two at once would each build on the same old one.
    reloading: Mutex<()>,
}

impl Live {
    pub fn new(gw: Gateway, tls: Option<Arc<Tls>>) -> Live {
        Live {
            current: ArcSwap::from_pointee(gw),
            tls,
            reloading: Mutex::new(()),
        }
    }

    /// The gateway in force now: load once per request (or connection) and
    /// keep it for that request's whole life.
    pub fn load(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Puts `gw` in force; requests already running keep the old one.
    pub fn swap(&self, gw: Gateway) -> Arc<Gateway> {
        self.current.swap(Arc::new(gw))
    }

    /// Held for the whole of one reload.
    pub fn reload_lock(&self) -> MutexGuard<'_, ()> {
        match self.reloading.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// One server worker thread's handle on the gateway: it serves with the
/// current gateway's clients at its own index, never another thread's.
#[derive(Debug)]
pub struct Worker {
    pub live: Arc<Live>,
    pub index: usize,
}

/// Hands the store's notifications (revocations through other gateways,
/// a re-established listener) to the gateway's cache. Holds the gateway
/// weakly: the store's listener must not keep it alive.
#[derive(Debug)]
pub struct CacheEvictions(pub std::sync::Weak<Live>);

impl crate::store::Changes for CacheEvictions {
    fn revoked(&self, id: &str) {
        if let Some(live) = self.0.upgrade() {
            live.load().auth.revoked(id);
        }
    }

    fn resynced(&self) {
        if let Some(live) = self.0.upgrade() {
            live.load().auth.resynced();
        }
    }
}

/// Fresh clients, with their own connection pools, for every configured
/// upstream (also validates their CA files).
pub fn upstreams(config: &Config) -> Result<Vec<Upstream>, UpstreamError> {
    config.upstreams.iter().map(Upstream::new).collect()
}
