//! The `[store] url` of a PostgreSQL store: parsed once at config load, its
//! password never printed (`Debug` and [`DbUrl::shown`] leave it out).
//!
//! Accepted: `postgres://` or `postgresql://` URLs as libpq reads them, with
//! `sslmode` one of `disable`, `prefer` (the default), `require`, `verify-ca`,
//! `verify-full`, and `sslrootcert=FILE` (PEM) for the two `verify-` modes
//! (without it, the Mozilla roots are used). As in libpq, `prefer` and
//! `require` encrypt but do not check the server's certificate; `verify-ca`
//! checks the chain, `verify-full` the chain and the host name.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// How the connection is protected, libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A parsed PostgreSQL connection URL.
#[derive(Clone)]
pub struct DbUrl {
    pub(crate) pg: Box<tokio_postgres::Config>,
    pub(crate) tls: TlsMode,
    pub(crate) root_cert: Option<PathBuf>,
    shown: String,
}

/// Why a `[store] url` was refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("not a PostgreSQL URL: it must start with postgres:// or postgresql://")]
    NotPostgres,
    #[error("unknown sslmode {0:?}: use disable, prefer, require, verify-ca or verify-full")]
    SslMode(String),
    #[error("sslrootcert needs sslmode=verify-ca or verify-full")]
    RootCertWithoutVerify,
    #[error("invalid PostgreSQL URL: {0}")]
    Invalid(#[source] tokio_postgres::Error),
    #[error("the URL names no database host")]
    NoHost,
}

impl DbUrl {
    /// Parses `text` (surrounding white space, e.g. a file's final newline, ignored).
    pub fn parse(text: &str) -> Result<DbUrl, UrlError> {
        let text = text.trim();
        let lower = text.get(..13).unwrap_or(text).to_ascii_lowercase();
        if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
            return Err(UrlError::NotPostgres);
        }
        let (base, query) = text.split_once('?').unwrap_or((text, ""));
        let mut tls = TlsMode::Prefer;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => {
                    tls = match value {
                        "disable" => TlsMode::Disable,
                        "prefer" | "allow" => TlsMode::Prefer,
                        "require" => TlsMode::Require,
                        "verify-ca" => TlsMode::VerifyCa,
                        "verify-full" => TlsMode::VerifyFull,
                        other => return Err(UrlError::SslMode(other.to_owned())),
                    }
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(value)),
                _ => kept.push(pair),
            }
        }
        if root_cert.is_some() && !matches!(tls, TlsMode::VerifyCa | TlsMode::VerifyFull) {
            return Err(UrlError::RootCertWithoutVerify);
        }
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut pg = tokio_postgres::Config::from_str(&rebuilt).map_err(UrlError::Invalid)?;
        if pg.get_hosts().is_empty() {
            return Err(UrlError::NoHost);
        }
        pg.ssl_mode(match tls {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        if pg.get_application_name().is_none() {
            pg.application_name("passgate");
        }
        let shown = shown(&pg);
        Ok(DbUrl {
            pg: Box::new(pg),
            tls,
            root_cert,
            shown,
        })
    }

    /// The URL without its password: `postgres://user@host:port/db`.
    #[must_use]
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DbUrl").field(&self.shown).finish()
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

fn shown(pg: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match pg.get_ports().get(i).or(pg.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let user = pg.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = pg.get_dbname().unwrap_or("");
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_shown() {
        let url = DbUrl::parse("postgres://gate:s3cr3t-pw@db.internal:5433/passgate\n").unwrap();
        assert_eq!(url.shown(), "postgres://gate@db.internal:5433/passgate");
        assert!(!format!("{url:?} {url}").contains("s3cr3t-pw"));
        assert_eq!(url.tls, TlsMode::Prefer);
    }

    #[test]
    fn sslmodes_and_root_cert() {
        let mode = |q: &str| DbUrl::parse(&format!("postgres://h/db?{q}")).map(|u| u.tls);
        assert_eq!(mode("sslmode=disable").unwrap(), TlsMode::Disable);
        assert_eq!(mode("sslmode=require").unwrap(), TlsMode::Require);
        assert_eq!(mode("sslmode=verify-ca").unwrap(), TlsMode::VerifyCa);
        let url = DbUrl::parse(
            "postgres://h/db?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(url.tls, TlsMode::VerifyFull);
        assert_eq!(
            url.root_cert.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert_eq!(
            url.pg.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        assert!(matches!(mode("sslmode=bogus"), Err(UrlError::SslMode(_))));
        assert!(matches!(
            mode("sslmode=require&sslrootcert=/ca.pem"),
            Err(UrlError::RootCertWithoutVerify)
        ));
    }

    #[test]
    fn refuses_what_is_not_a_postgres_url() {
        for bad in ["", "data/passgate.redb", "mysql://h/db", "postgres:/h/db"] {
            assert!(DbUrl::parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            DbUrl::parse("postgres:///db"),
            Err(UrlError::NoHost)
        ));
        assert!(DbUrl::parse("postgres://h:notaport/db").is_err());
    }
}
