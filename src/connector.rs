//! The HTTPS-or-HTTP connector every outbound client uses (the upstreams'
//! pools, the OIDC issuer client): TLS roots from a `ca_file` or the
//! system's Mozilla roots (webpki-roots), rustls with the ring provider and
//! its safe default protocol versions, HTTP/1.1 over it.
//!
//! It owns only the connector; timeouts, keep-alive and pool settings stay
//! with each client, and it imports nothing of the crate.

use std::path::Path;
use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Why the TLS roots could not be loaded from a `ca_file`.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no usable certificate")]
    Empty { path: String },
}

/// The certificates of `ca_file`, or the Mozilla roots without one.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, CaFileError> {
    match ca_file {
        Some(path) => roots_from(path),
        None => Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
    }
}

/// `https://` (trusting `roots`) or `http://` over `http`, HTTP/1.1 only.
/// `http` must leave `enforce_http` off; its timeouts are the caller's.
pub fn https_or_http(roots: RootCertStore, http: HttpConnector) -> HttpsConnector<HttpConnector> {
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
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

fn roots_from(path: &Path) -> Result<RootCertStore, CaFileError> {
    let shown = || path.display().to_string();
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|source| CaFileError::Read {
        path: shown(),
        source,
    })?;
    for cert in certs {
        let cert = cert.map_err(|source| CaFileError::Read {
            path: shown(),
            source,
        })?;
        // A certificate rustls cannot use is skipped; none usable is an error.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(CaFileError::Empty { path: shown() });
    }
    Ok(roots)
}
