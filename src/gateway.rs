//! [`Gateway`]: the shared state every request reads — config, the
//! authenticator, the store — built once at start-up and shared by `Arc`.
//! Upstream clients are per worker thread: a [`Worker`] holds the gateway and
//! that thread's clients.

use std::sync::Arc;

use http::HeaderValue;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::conn::ConnLimits;
use crate::error::challenge;
use crate::store::Store;
use crate::upstream::{Upstream, UpstreamError};

#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    pub auth: Authenticator,
    pub store: Arc<Store>,
    /// `WWW-Authenticate` value, built once from the realm.
    pub challenge: HeaderValue,
    /// Open client connections, shared by every worker.
    pub conn_limits: Arc<ConnLimits>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("argon2 setup failed: {0}")]
    Hash(#[from] crate::auth::verify::HashError),
}

impl Gateway {
    pub fn new(config: Config, store: Arc<Store>) -> Result<Gateway, GatewayError> {
        // Validates every upstream (CA files) once, at start-up.
        upstreams(&config)?;
        let auth = Authenticator::new(store.clone(), config.scopes.clone(), &config.auth)?;
        let challenge = challenge(&config.auth.realm);
        let conn_limits = Arc::new(ConnLimits::new(
            config.server.max_connections,
            config.server.max_connections_per_addr,
        ));
        Ok(Gateway {
            config,
            auth,
            store,
            challenge,
            conn_limits,
        })
    }
}

/// One server worker thread's state: the shared [`Gateway`] and the
/// thread's own upstream clients, whose connection pools are never shared
/// between threads. Built once per worker; its connections hold it by `Arc`.
#[derive(Debug)]
pub struct Worker {
    pub gw: Arc<Gateway>,
    /// Indexed by `Route::upstream`, in `config.upstreams` order.
    pub upstreams: Box<[Upstream]>,
}

impl Worker {
    pub fn new(gw: Arc<Gateway>) -> Result<Worker, UpstreamError> {
        let upstreams = upstreams(&gw.config)?.into_boxed_slice();
        Ok(Worker { gw, upstreams })
    }
}

/// Hands the store's notifications (revocations through other gateways,
/// a re-established listener) to the gateway's cache. Holds the gateway
/// weakly: the store's listener must not keep it alive.
#[derive(Debug)]
pub struct CacheEvictions(pub std::sync::Weak<Gateway>);

impl crate::store::Changes for CacheEvictions {
    fn revoked(&self, id: &str) {
        if let Some(gw) = self.0.upgrade() {
            gw.auth.revoked(id);
        }
    }

    fn resynced(&self) {
        if let Some(gw) = self.0.upgrade() {
            gw.auth.resynced();
        }
    }
}

/// Fresh clients, with their own connection pools, for every configured
/// upstream: each server worker thread has its own (see `server.rs`).
pub fn upstreams(config: &Config) -> Result<Vec<Upstream>, UpstreamError> {
    config.upstreams.iter().map(Upstream::new).collect()
}
