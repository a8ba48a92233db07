//! Pooled clients to the configured backends; bodies stream both ways.
//!
//! One hyper-util client per `[upstreams.NAME]`, each with its own connect
//! timeout and TLS roots (the system's Mozilla roots from webpki-roots, or the
//! configured `ca_file`). Keep-alive connections are pooled per upstream. A
//! request body is handed to hyper as it arrives and the response body is
//! returned unread, so a multi-GB push or clone never sits in memory.
//!
//! This module never decides who may call what; it only carries requests.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config;
use crate::error::Reject;

/// A request body on its way upstream: streamed from the client, or replayed
/// after the gateway had to read it (LFS batch).
pub type UpstreamBody = Either<Incoming, Full<Bytes>>;

/// One backend and its connection pool.
#[derive(Debug)]
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

impl Upstream {
    pub fn new(config: &config::Upstream) -> Result<Upstream, UpstreamError> {
        let roots = match &config.ca_file {
            Some(path) => roots_from(&config.name, path)?,
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let tls = match tls {
            Ok(t) => t,
            // The ring provider always supports the default versions.
            Err(_) => rustls::ClientConfig::builder()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
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
    pub fn target(&self, path: &str, query: Option<&str>) -> Result<Uri, Reject> {
        let base = &self.config.base_path;
        let mut pq =
            String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        pq.push_str(base);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let pq = PathAndQuery::try_from(pq)
            .map_err(|_| Reject::BadTarget("request target cannot be forwarded"))?;
        Uri::builder()
            .scheme(self.config.scheme.clone())
            .authority(self.config.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| Reject::BadTarget("request target cannot be forwarded"))
    }

    /// Sends the request; 502 when the backend cannot be reached, 504 when it
    /// does not answer with a response head within `response_timeout`.
    pub async fn send(&self, req: Request<UpstreamBody>) -> Result<Response<Incoming>, Reject> {
        match tokio::time::timeout(self.config.response_timeout, self.client.request(req)).await {
            Err(_) => {
                tracing::warn!(upstream = %self.config.name, "upstream response timed out");
                Err(Reject::UpstreamTimeout)
            }
            Ok(Err(e)) => {
                let cause = std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                tracing::warn!(upstream = %self.config.name, error = %e, cause, "upstream request failed");
                Err(Reject::UpstreamUnavailable)
            }
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

fn roots_from(name: &str, path: &Path) -> Result<RootCertStore, UpstreamError> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|source| UpstreamError::CaFile {
        name: name.to_owned(),
        path: path.display().to_string(),
        source,
    })?;
    for cert in certs {
        let cert = cert.map_err(|source| UpstreamError::CaFile {
            name: name.to_owned(),
            path: path.display().to_string(),
            source,
        })?;
        // A certificate rustls cannot use is skipped; none usable is an error below.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(UpstreamError::NoCertificates {
            name: name.to_owned(),
            path: path.display().to_string(),
        });
    }
    Ok(roots)
}
