//! PEM certificate chain + key → rustls server config, and its reload with
//! the config (SIGHUP, `passgate reload`).
//!
//! TLS 1.2 and 1.3 only (rustls offers nothing older), ALPN `h2` then
//! `http/1.1`. [`Tls`] holds the current acceptor behind a lock that is read
//! once per *connection*, never per request; a reload reads the files first
//! ([`Loaded::read`]) and then swaps them in ([`Tls::install`]), so new
//! connections get the new certificate while open ones keep theirs. A reload
//! whose files fail (missing file, bad PEM, key not matching the certificate)
//! is refused and the old certificate stays in service.
//!
//! A plain-HTTP request sent to a TLS listener (`http://` where `https://`
//! was meant) gets a short 400 saying so, as nginx answers with 497, rather
//! than TLS bytes that git reports as "Received HTTP/0.9" ([`refuse_plain_http`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// The whole answer to plain HTTP on a TLS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
    Content-Type: text/plain; charset=utf-8\r\n\
    Content-Length: 56\r\n\
    Connection: close\r\n\r\n\
    this port speaks HTTPS: use https:// instead of http://\n";

/// Answers a connection whose first byte starts a plain-HTTP request line
/// (an upper-case method letter; a TLS ClientHello starts with 0x16) with a
/// 400 telling to use `https://`, then closes it. Returns whether it did;
/// `false` leaves the stream untouched for the TLS handshake.
pub async fn refuse_plain_http(stream: &mut TcpStream, deadline: Duration) -> io::Result<bool> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(deadline, stream.peek(&mut first))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    if peeked == 0 || !first[0].is_ascii_uppercase() {
        return Ok(false);
    }
    // Take in what the client sent so far, so that closing does not reset
    // the connection before it reads the answer.
    let mut head = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut head)).await;
    stream.write_all(PLAIN_HTTP_ANSWER).await?;
    let _ = stream.shutdown().await;
    tracing::debug!("plain HTTP on a TLS listener: answered 400");
    Ok(true)
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate {path}: {source}")]
    Cert {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS certificate file {path} holds no certificate")]
    NoCert { path: PathBuf },
    #[error("cannot read TLS private key {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS key {key} does not match certificate {cert}, or is unusable: {source}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The reloadable TLS acceptor of all listeners.
pub struct Tls {
    /// Read once per accepted connection; written only by [`Tls::install`].
    current: RwLock<Loaded>,
}

/// A certificate and key read from their files, ready to serve.
#[derive(Clone)]
pub struct Loaded {
    files: TlsFiles,
    acceptor: TlsAcceptor,
    /// The leaf certificate's `notAfter`, Unix seconds (for the expiry metric).
    not_after: Option<i64>,
}

impl Loaded {
    /// Reads `files`; nothing is put in service yet.
    pub fn read(files: &TlsFiles) -> Result<Loaded, TlsError> {
        Ok(Loaded {
            files: files.clone(),
            acceptor: acceptor(&files.cert, &files.key)?,
            not_after: not_after(&files.cert),
        })
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files())
            .finish_non_exhaustive()
    }
}

impl Tls {
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        Ok(Tls {
            current: RwLock::new(Loaded::read(files)?),
        })
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        match self.current.read() {
            Ok(guard) => guard.acceptor.clone(),
            Err(poisoned) => poisoned.into_inner().acceptor.clone(),
        }
    }

    /// The files in service.
    pub fn files(&self) -> TlsFiles {
        match self.current.read() {
            Ok(guard) => guard.files.clone(),
            Err(poisoned) => poisoned.into_inner().files.clone(),
        }
    }

    /// When the certificate in service expires, Unix seconds.
    pub fn not_after(&self) -> Option<i64> {
        match self.current.read() {
            Ok(guard) => guard.not_after,
            Err(poisoned) => poisoned.into_inner().not_after,
        }
    }

    /// Puts `loaded` in service: new connections get it, open ones keep theirs.
    pub fn install(&self, loaded: Loaded) {
        match self.current.write() {
            Ok(mut guard) => *guard = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
    }
}

/// Builds a server config from PEM files (used at start-up and on reload).
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|source| TlsError::Cert {
            path: cert.to_owned(),
            source,
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Cert {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: cert.to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mismatch = |source| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(mismatch)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(mismatch)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The `notAfter` of the first (leaf) certificate in `cert`, Unix seconds.
fn not_after(cert: &Path) -> Option<i64> {
    use x509_cert::der::Decode;
    let der = CertificateDer::pem_file_iter(cert).ok()?.next()?.ok()?;
    let parsed = x509_cert::Certificate::from_der(der.as_ref()).ok()?;
    let at = parsed.tbs_certificate.validity.not_after.to_unix_duration();
    i64::try_from(at.as_secs()).ok()
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(Arc::new(server_config(cert, key)?)))
}
