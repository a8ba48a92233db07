//! The HTTP client the relying party talks to the issuer with: discovery, the
//! JWKS and the token endpoint. passgate's own hyper + rustls stack behind
//! the `openidconnect` crate's [`AsyncHttpClient`] trait (no reqwest).
//!
//! What it enforces, whatever URL a discovery document names:
//! - `https://` with the Mozilla roots (webpki-roots, as for upstreams) or the
//!   configured `ca_file`; `http://` only to a loopback host;
//! - redirects are never followed (a 3xx is handed back as is, and the
//!   `openidconnect` crate treats it as an error);
//! - every request has a deadline ([`REQUEST_TIMEOUT`]) and a response body
//!   larger than [`MAX_BODY`] is refused.

use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};

use crate::connector;
pub use crate::connector::CaFileError;

/// The whole exchange with the issuer, connect to last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Discovery documents, key sets and token responses are a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;

/// Why a request to the issuer failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}: only https:// is allowed (http:// only to a loopback address)")]
    Insecure(String),
    #[error("request to the issuer timed out after {REQUEST_TIMEOUT:?}")]
    Timeout,
    #[error("request to the issuer failed: {0}")]
    Send(#[source] hyper_util::client::legacy::Error),
    #[error("reading the issuer's response failed: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("bad request to the issuer: {0}")]
    Request(#[from] http::Error),
}

/// A cheap-to-clone client to one issuer.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client trusting `ca_file`'s certificates, or the Mozilla roots.
    pub fn new(ca_file: Option<&Path>) -> Result<HttpClient, CaFileError> {
        let roots = connector::roots(ca_file)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let connector = connector::https_or_http(roots, http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(HttpClient { client })
    }

    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        if !allowed_url(req.uri()) {
            return Err(HttpError::Insecure(req.uri().to_string()));
        }
        let (parts, body) = req.into_parts();
        let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let exchange = async {
            let resp = self.client.request(req).await.map_err(HttpError::Send)?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(HttpError::Body)?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| HttpError::Timeout)?
    }
}

impl<'c> AsyncHttpClient<'c> for HttpClient {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// `https://` anywhere; `http://` only to a loopback address or `localhost`.
pub fn allowed_url(uri: &http::Uri) -> bool {
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => uri.host().is_some_and(loopback_host),
        _ => false,
    }
}

/// `localhost`, `127.0.0.0/8` or `[::1]`.
pub fn loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        let ok = |s: &str| allowed_url(&s.parse().unwrap());
        assert!(ok("https://id.example.com/token"));
        assert!(ok("http://127.0.0.1:8080/token"));
        assert!(ok("http://[::1]:8080/token"));
        assert!(ok("http://localhost/token"));
        assert!(!ok("http://id.example.com/token"));
        assert!(!ok("http://10.0.0.1/token"));
        assert!(!ok("ftp://127.0.0.1/token"));
        assert!(!ok("/token"));
    }
}
