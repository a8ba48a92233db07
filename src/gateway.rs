//! [`Gateway`]: the shared state every request reads — config, upstream
//! clients, the authenticator — built once at start-up and shared by `Arc`.

use std::sync::Arc;

use http::HeaderValue;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::error::challenge;
use crate::store::Store;
use crate::upstream::{Upstream, UpstreamError};

#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    pub upstreams: Vec<Upstream>,
    pub auth: Authenticator,
    pub store: Arc<Store>,
    /// `WWW-Authenticate` value, built once from the realm.
    pub challenge: HeaderValue,
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
        let upstreams = config
            .upstreams
            .iter()
            .map(Upstream::new)
            .collect::<Result<Vec<_>, _>>()?;
        let auth = Authenticator::new(store.clone(), config.scopes.clone(), &config.auth)?;
        let challenge = challenge(&config.auth.realm);
        Ok(Gateway {
            config,
            upstreams,
            auth,
            store,
            challenge,
        })
    }
}
