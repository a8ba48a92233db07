//! `proxy.toml` → [`Config`]: parse, don't validate.
//!
//! The file is read into `Raw*` serde structs (`deny_unknown_fields`, so a typo is
//! an error, not a silently ignored key), then converted once into a `Config` of
//! ready types: socket addresses, durations, compiled routes and scope sets.
//! Every error names the file, the line and the key. Relative paths in the file
//! are resolved against the directory that holds it, so `serve` and the CLI find
//! the same store whatever their working directory.
//!
//! This module never opens sockets, stores or certificates; it only describes them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Method, Uri};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::routes::pattern::Pattern;
use crate::routes::query::QueryRule;
use crate::routes::resource::Resource;
use crate::routes::{Access, Route, Routes};
use crate::scopes::Scopes;

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub server: Server,
    pub store: StoreConfig,
    pub admin_socket: PathBuf,
    pub auth: Auth,
    pub identity: Identity,
    pub upstreams: Vec<Upstream>,
    pub scopes: Scopes,
    pub routes: Routes,
    /// `[selfservice]`: the app-password page; `None` = no page.
    pub selfservice: Option<SelfService>,
    /// `[metrics]`: the Prometheus and health listener; `None` = none.
    pub metrics: Option<Metrics>,
}

/// `[metrics]`: where `/metrics`, `/healthz` and `/readyz` are served.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Its own plain-HTTP socket, never one of `server.listen`.
    pub listen: SocketAddr,
}

/// `[selfservice]`: where the page is mounted and how it learns who is signed in.
#[derive(Debug, Clone)]
pub struct SelfService {
    /// The mount, normalised, without a trailing slash (`/-/app-passwords`).
    pub path: String,
    pub identity: PageIdentity,
    /// Users who may list and revoke everyone's passwords.
    pub admins: Vec<String>,
    /// Preselected on the create form.
    pub default_expiry: PageExpiry,
    /// Line of the `[selfservice]` table, for `check-config`.
    pub line: usize,
}

/// How the page learns who is signed in (`identity = "header" | "oidc"`).
/// `"oidc"` (helper w13) adds its variant here, built from `[selfservice.oidc]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PageIdentity {
    /// The user is the value of this header, believed only from `server.trusted_proxies`.
    Header { user_header: HeaderName },
    /// `identity = "oidc"`: passgate signs users in at `[selfservice.oidc]`'s issuer.
    Oidc(Box<crate::oidc::OidcConfig>),
}

/// An expiry as chosen on the page: a duration or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageExpiry {
    After(Duration),
    Never,
}

impl PageExpiry {
    /// `"never"` or a duration such as `"30d"`.
    pub fn parse(s: &str) -> Option<PageExpiry> {
        match s {
            "never" => Some(PageExpiry::Never),
            d => parse_duration(d).ok().map(PageExpiry::After),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub tls: Option<TlsFiles>,
    pub trusted_proxies: Vec<IpNet>,
    pub shutdown_grace: Duration,
    /// A client must send a complete request head within this time (slowloris).
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this time.
    pub idle_timeout: Duration,
    pub log_format: LogFormat,
    /// Server worker threads, each with its own runtime (default: the cores).
    pub workers: usize,
    /// Open client connections, in all; more are closed at once.
    pub max_connections: usize,
    /// Open client connections from one address (IPv6: one /64).
    pub max_connections_per_addr: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where app passwords are kept: `[store] path` or `[store] url`/`url_file`.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded redb file (the default): one gateway.
    Redb { path: PathBuf },
    /// A PostgreSQL database shared by several gateways.
    Postgres { url: crate::store::DbUrl },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct Auth {
    pub realm: String,
    pub cache_ttl: Duration,
    pub cache_capacity: usize,
    pub username: UsernameMode,
    pub max_lifetime: Option<Duration>,
    pub argon2: Argon2Params,
    pub verify_threads: usize,
    pub verify_queue: usize,
    pub rate_limit: RateLimit,
    pub usage_flush: Duration,
    /// What to do when a password that rotation revoked is presented.
    pub rotated_reuse: RotatedReuse,
}

/// `[auth] rotated_reuse`: a password revoked by `rotate` was presented
/// (a leaked copy, or a client that missed the rotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RotatedReuse {
    /// Write the `rotated_reuse` audit line only.
    #[default]
    Log,
    /// Also revoke the lineage's current password.
    Revoke,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UsernameMode {
    MustMatch,
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Argon2Params {
    #[serde(default = "default_m")]
    pub memory_kib: u32,
    #[serde(default = "default_t")]
    pub iterations: u32,
    #[serde(default = "default_p")]
    pub parallelism: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_user_addr: Bucket,
    pub per_addr: Bucket,
    pub max_entries: usize,
}

/// `burst` failures allowed, refilled at `burst` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub burst: u32,
    #[serde(deserialize_with = "duration")]
    pub per: Duration,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub user: HeaderName,
    pub scopes: HeaderName,
    pub credential: HeaderName,
    /// The self-service page's `user_header` in header mode: stripped from
    /// every forwarded request like the identity headers above.
    pub page_user: Option<HeaderName>,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix of the upstream URL without its trailing slash ("" for none).
    pub base_path: String,
    pub ca_file: Option<PathBuf>,
    pub preserve_host: bool,
    /// Fixed `Authorization` sent upstream on `app-password` routes.
    pub credential: Option<HeaderValue>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Its failures, counted without a lookup (`metrics.rs`).
    pub metrics: std::sync::Arc<crate::metrics::UpstreamMetrics>,
}

impl Upstream {
    /// Whether `other` connects the same way (a reload then keeps this
    /// upstream's clients and pooled connections).
    pub fn same_connection(&self, other: &Upstream) -> bool {
        self.name == other.name
            && self.scheme == other.scheme
            && self.authority == other.authority
            && self.base_path == other.base_path
            && self.ca_file == other.ca_file
            && self.preserve_host == other.preserve_host
            && self.credential == other.credential
            && self.connect_timeout == other.connect_timeout
            && self.response_timeout == other.response_timeout
    }
}

/// Everything that can be wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read config: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Parse {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads and validates the config file at `file`.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Config::parse(file, &text)
    }

    /// Validates `text` as if read from `file` (used for relative paths and messages).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let start = e.span().map(|s| s.start);
            let message = e.message().trim();
            ConfigError::Parse {
                file: file.to_owned(),
                line: start.map_or(1, |s| line_of(text, s)),
                // toml's message names the key only when the key itself is
                // wrong; for a bad value, name the key from the file text.
                message: match start.and_then(|s| key_at(text, s)) {
                    Some(key) => format!("{key}: {message}"),
                    None => message.to_owned(),
                },
            }
        })?;
        Build { file, text }.config(raw)
    }
}

/// Where the admin socket of a server started with `file` is, found even
/// in a file that no longer parses as a whole (`passgate reload` must reach
/// the server to hear why it refuses that file): `[admin] socket`, resolved
/// as every path in the file is, else the default.
pub fn admin_socket_of(file: &Path) -> Result<PathBuf, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_owned(),
        source,
    })?;
    let socket = match toml::from_str::<toml::Table>(&text) {
        Ok(table) => table
            .get("admin")
            .and_then(|a| a.get("socket"))
            .and_then(|s| s.as_str())
            .map(str::to_owned),
        Err(_) => scan_admin_socket(&text),
    };
    let socket = socket.unwrap_or_else(|| RawAdmin::default().socket);
    Ok(Build { file, text: &text }.path(&socket))
}

/// `socket = "…"` under `[admin]`, line by line, in a file toml refuses.
fn scan_admin_socket(text: &str) -> Option<String> {
    let mut in_admin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_admin = line.split('#').next().map(str::trim) == Some("[admin]");
            continue;
        }
        if in_admin && line.starts_with("socket") {
            let table = toml::from_str::<toml::Table>(line).ok()?;
            return table.get("socket")?.as_str().map(str::to_owned);
        }
    }
    None
}

/// What `check-config` warns about; `serve` logs the same at start (#20)
/// and on a reload.
#[derive(Debug, Default)]
pub struct Warnings {
    /// Routes an earlier route makes unreachable.
    pub shadowed: Vec<String>,
    /// Routes ending in `/` whose requests are refused with 400.
    pub slash: Vec<String>,
}

impl Config {
    /// The warnings about the routes, each naming file and line.
    pub fn warnings(&self) -> Warnings {
        let shadowed = self
            .routes
            .shadowed()
            .iter()
            .map(|s| {
                format!(
                    "{}:{}: route \"{}\" can never match: route \"{}\" (line {}) takes all its requests",
                    self.file.display(),
                    s.later.line,
                    s.later.name,
                    s.earlier.name,
                    s.earlier.line
                )
            })
            .collect();
        let slash = self
            .routes
            .slash_conflicts()
            .iter()
            .map(|c| {
                let bare = c.bare.map_or_else(
                    || "no route".to_owned(),
                    |b| format!("route \"{}\" (line {})", b.name, b.line),
                );
                format!(
                    "{}:{}: route \"{}\" ends in '/' but likely never applies: `{}` is refused with 400, because without the slash {} decides differently",
                    self.file.display(),
                    c.route.line,
                    c.route.name,
                    c.example,
                    bare
                )
            })
            .collect();
        Warnings { shadowed, slash }
    }
}

/// The conversion from raw to ready types, carrying what errors need.
struct Build<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Build<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        msg: impl ToString,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            file: self.file.to_owned(),
            line: line_of(self.text, span.start),
            key: key.to_owned(),
            message: msg.to_string(),
        })
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_owned();
        }
        match self.file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
            _ => p.to_owned(),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let server = self.server(raw.server)?;
        let scopes = self.scopes(&raw.scopes)?;
        let upstreams = raw
            .upstreams
            .into_iter()
            .map(|(name, u)| self.upstream(name, u))
            .collect::<Result<Vec<_>, _>>()?;
        let routes = self.routes(raw.routes, &scopes, &upstreams)?;
        let auth = self.auth(raw.auth)?;
        let selfservice = match raw.selfservice {
            Some(s) => Some(self.selfservice(s, &server, &auth)?),
            None => None,
        };
        let mut identity = self.identity(raw.identity)?;
        identity.page_user = selfservice.as_ref().and_then(|s| match &s.identity {
            PageIdentity::Header { user_header } => Some(user_header.clone()),
            PageIdentity::Oidc(_) => None,
        });
        let metrics = match raw.metrics {
            Some(m) => Some(self.metrics(m, &server)?),
            None => None,
        };
        Ok(Config {
            file: self.file.to_owned(),
            metrics,
            server,
            store: self.store(raw.store)?,
            admin_socket: self.path(&raw.admin.socket),
            auth,
            identity,
            upstreams,
            scopes,
            routes,
            selfservice,
        })
    }

    fn store(&self, raw: RawStore) -> Result<StoreConfig, ConfigError> {
        let (text, key, span) = match (raw.path, raw.url, raw.url_file) {
            (None, None, None) => {
                return Ok(StoreConfig::Redb {
                    path: self.path("data/passgate.redb"),
                })
            }
            (Some(path), None, None) => {
                return Ok(StoreConfig::Redb {
                    path: self.path(path.get_ref()),
                })
            }
            (None, Some(url), None) => (url.get_ref().clone(), "store.url", url.span()),
            (None, None, Some(file)) => {
                let path = self.path(file.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(text) => (text, "store.url_file", file.span()),
                    Err(e) => {
                        return self.err(
                            file.span(),
                            "store.url_file",
                            format!("cannot read {}: {e}", path.display()),
                        )
                    }
                }
            }
            (path, url, file) => {
                let span = [path, url, file]
                    .into_iter()
                    .flatten()
                    .map(|s| s.span())
                    .max_by_key(|s| s.start)
                    .unwrap_or(0..0);
                return self.err(
                    span,
                    "store",
                    "give one of path (redb), url or url_file (PostgreSQL)",
                );
            }
        };
        match crate::store::DbUrl::parse(&text) {
            Ok(url) => Ok(StoreConfig::Postgres { url }),
            Err(e) => self.err(span, key, e),
        }
    }

    /// `server.listen`: IP addresses and ports. A host name is refused with
    /// an example rather than resolved: what a name resolves to can change
    /// under a running gateway, and `localhost` may or may not mean `::1`.
    fn listen(&self, raw: Vec<Spanned<String>>) -> Result<Vec<SocketAddr>, ConfigError> {
        raw.into_iter()
            .map(|a| {
                a.get_ref().parse().or_else(|_| {
                    self.err(
                        a.span(),
                        "server.listen",
                        format!(
                            "\"{}\" is not a socket address (an IP address and a port): \
                             write e.g. \"127.0.0.1:8080\", \"0.0.0.0:443\" or \"[::]:443\"; \
                             host names are not resolved",
                            a.get_ref()
                        ),
                    )
                })
            })
            .collect()
    }

    /// `[metrics] listen`: one address, not one the proxy listens on (nor
    /// the same port on a wildcard address that covers it).
    fn metrics(&self, raw: Spanned<RawMetrics>, server: &Server) -> Result<Metrics, ConfigError> {
        let raw = raw.into_inner();
        let span = raw.listen.span();
        let Some(listen) = self.listen(vec![raw.listen])?.into_iter().next() else {
            return self.err(span, "metrics.listen", "an address is required");
        };
        // Port 0 (tests) is a fresh port each time: it never clashes.
        let overlaps = |a: &SocketAddr| {
            listen.port() != 0
                && a.port() == listen.port()
                && (a.ip() == listen.ip()
                    || a.ip().is_unspecified()
                    || listen.ip().is_unspecified())
        };
        if let Some(clash) = server.listen.iter().find(|a| overlaps(a)) {
            return self.err(
                span,
                "metrics.listen",
                format!(
                    "{listen} is also served by server.listen ({clash}): the metrics listener needs its own port"
                ),
            );
        }
        Ok(Metrics { listen })
    }

    fn server(&self, raw: RawServer) -> Result<Server, ConfigError> {
        if raw.listen.get_ref().is_empty() {
            return self.err(
                raw.listen.span(),
                "server.listen",
                "at least one address is required",
            );
        }
        let tls = raw.tls.map(|t| TlsFiles {
            cert: self.path(&t.cert),
            key: self.path(&t.key),
        });
        Ok(Server {
            listen: self.listen(raw.listen.into_inner())?,
            tls,
            trusted_proxies: raw.trusted_proxies,
            shutdown_grace: raw.shutdown_grace,
            header_read_timeout: raw.header_read_timeout,
            idle_timeout: raw.idle_timeout,
            log_format: raw.log_format,
            workers: match raw.workers {
                Some(0) => return self.err(0..0, "server.workers", "must be at least 1"),
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(2, |n| n.get()),
            },
            max_connections: match raw.max_connections {
                0 => return self.err(0..0, "server.max_connections", "must be at least 1"),
                n => n,
            },
            max_connections_per_addr: match raw.max_connections_per_addr {
                0 => {
                    return self.err(
                        0..0,
                        "server.max_connections_per_addr",
                        "must be at least 1",
                    )
                }
                n => n,
            },
        })
    }

    fn auth(&self, raw: RawAuth) -> Result<Auth, ConfigError> {
        let realm = raw.realm.get_ref();
        if realm.is_empty()
            || realm
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return self.err(
                raw.realm.span(),
                "auth.realm",
                "must be non-empty, without quotes, backslashes or control characters",
            );
        }
        let a = raw.argon2;
        if argon2::Params::new(a.memory_kib, a.iterations, a.parallelism, None).is_err() {
            return self.err(0..0, "auth.argon2", "invalid argon2 parameters (memory_kib >= 8 * parallelism, iterations >= 1, parallelism 1..=16777215)");
        }
        Ok(Auth {
            realm: raw.realm.into_inner(),
            cache_ttl: raw.cache_ttl,
            cache_capacity: raw.cache_capacity,
            username: raw.username,
            max_lifetime: raw.max_lifetime,
            argon2: a,
            verify_threads: raw
                .verify_threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            verify_queue: raw.verify_queue,
            rate_limit: RateLimit {
                per_user_addr: raw.rate_limit.per_user_addr,
                per_addr: raw.rate_limit.per_addr,
                max_entries: raw.rate_limit.max_entries,
            },
            usage_flush: raw.usage_flush,
            rotated_reuse: raw.rotated_reuse,
        })
    }

    fn identity(&self, raw: RawIdentity) -> Result<Identity, ConfigError> {
        let name =
            |s: &Spanned<String>, key: &str| match HeaderName::from_bytes(s.get_ref().as_bytes()) {
                Ok(h) => Ok(h),
                Err(_) => self.err(
                    s.span(),
                    key,
                    format!("\"{}\" is not a valid header name", s.get_ref()),
                ),
            };
        Ok(Identity {
            user: name(&raw.user_header, "identity.user_header")?,
            scopes: name(&raw.scopes_header, "identity.scopes_header")?,
            credential: name(&raw.credential_header, "identity.credential_header")?,
            page_user: None,
        })
    }

    fn selfservice(
        &self,
        raw: Spanned<RawSelfService>,
        server: &Server,
        auth: &Auth,
    ) -> Result<SelfService, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let path = raw.path.get_ref();
        let normal = crate::path::normalise(path).ok();
        let clean = path.len() > 1
            && !path.ends_with('/')
            && normal.as_ref().is_some_and(|n| n.as_str() == path)
            && !path.contains(['{', '}', '*', '%', '?', '#']);
        if !clean {
            return self.err(
                raw.path.span(),
                "selfservice.path",
                format!("\"{path}\" must be a plain absolute path such as \"/-/app-passwords\" (not \"/\", no trailing slash, no wildcards, dot segments or escapes)"),
            );
        }
        let identity = match *raw.identity.get_ref() {
            RawPageIdentity::Header => {
                let Some(h) = &raw.user_header else {
                    return self.err(
                        raw.identity.span(),
                        "selfservice.user_header",
                        "required with identity = \"header\" (the header your SSO proxy sets, e.g. \"Remote-User\")",
                    );
                };
                let Ok(user_header) = HeaderName::from_bytes(h.get_ref().as_bytes()) else {
                    return self.err(
                        h.span(),
                        "selfservice.user_header",
                        format!("\"{}\" is not a valid header name", h.get_ref()),
                    );
                };
                if matches!(user_header.as_str(), "authorization" | "cookie" | "host") {
                    return self.err(
                        h.span(),
                        "selfservice.user_header",
                        "must be a header only your SSO proxy sets, such as \"Remote-User\"",
                    );
                }
                if server.trusted_proxies.is_empty() {
                    return self.err(
                        raw.identity.span(),
                        "selfservice.identity",
                        "identity = \"header\" needs server.trusted_proxies: the address of the SSO proxy that sets the header",
                    );
                }
                PageIdentity::Header { user_header }
            }
            RawPageIdentity::Oidc => self.page_oidc(&raw, server)?,
        };
        for a in &raw.admins {
            if !crate::user::is_valid(a) {
                return self.err(
                    span.clone(),
                    "selfservice.admins",
                    format!("{a:?} is not a valid user name"),
                );
            }
        }
        let d = raw.default_expiry.get_ref();
        let Some(default_expiry) = PageExpiry::parse(d) else {
            return self.err(
                raw.default_expiry.span(),
                "selfservice.default_expiry",
                format!("\"{d}\" is not \"never\" or a duration such as \"30d\""),
            );
        };
        let too_long = match (default_expiry, auth.max_lifetime) {
            (PageExpiry::Never, Some(_)) => true,
            (PageExpiry::After(d), Some(m)) => d > m,
            (_, None) => false,
        };
        if too_long {
            return self.err(
                raw.default_expiry.span(),
                "selfservice.default_expiry",
                "longer than [auth] max_lifetime",
            );
        }
        Ok(SelfService {
            path: path.clone(),
            identity,
            admins: raw.admins,
            default_expiry,
            line: line_of(self.text, span.start),
        })
    }

    /// `identity = "oidc"`: `[selfservice.oidc]` checked, and plain HTTP
    /// (cookies without `Secure`) only when every listener is loopback.
    fn page_oidc(
        &self,
        raw: &RawSelfService,
        server: &Server,
    ) -> Result<PageIdentity, ConfigError> {
        let Some(oidc) = &raw.oidc else {
            return self.err(
                raw.identity.span(),
                "selfservice.oidc",
                "identity = \"oidc\" needs a [selfservice.oidc] table (issuer, client_id, …)",
            );
        };
        if let Some(h) = &raw.user_header {
            return self.err(
                h.span(),
                "selfservice.user_header",
                "only for identity = \"header\"; with \"oidc\" the user comes from the ID token",
            );
        }
        if server.tls.is_none() && !server.listen.iter().all(|a| a.ip().is_loopback()) {
            return self.err(
                raw.identity.span(),
                "selfservice.identity",
                "identity = \"oidc\" on plain HTTP is allowed only when every server.listen address is loopback (a TLS proxy in front): session cookies would travel unencrypted",
            );
        }
        let base = self.path(".");
        let built = oidc
            .get_ref()
            .clone()
            .build(&base, |d| parse_duration(d).ok());
        match built {
            Ok(c) => Ok(PageIdentity::Oidc(Box::new(c))),
            Err(e) => self.err(oidc.span(), e.key, e.message),
        }
    }

    fn scopes(&self, raw: &Spanned<BTreeMap<String, RawScope>>) -> Result<Scopes, ConfigError> {
        let declared: BTreeMap<String, Vec<String>> = raw
            .get_ref()
            .iter()
            .map(|(k, v)| (k.clone(), v.implies.clone()))
            .collect();
        let descriptions: BTreeMap<String, String> = raw
            .get_ref()
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.description.clone()?)))
            .collect();
        Scopes::new(&declared)
            .map(|s| s.with_descriptions(descriptions))
            .or_else(|e| self.err(raw.span(), "scopes", e))
    }

    fn upstream(&self, name: String, raw: RawUpstream) -> Result<Upstream, ConfigError> {
        let key = format!("upstreams.{name}.url");
        let span = raw.url.span();
        let uri: Uri = match raw.url.get_ref().parse() {
            Ok(u) => u,
            Err(e) => return self.err(span, &key, format!("invalid URL: {e}")),
        };
        let scheme = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
            _ => return self.err(span, &key, "must start with http:// or https://"),
        };
        let Some(authority) = uri.authority().cloned() else {
            return self.err(span, &key, "missing host");
        };
        if authority.as_str().contains('@') {
            return self.err(
                span,
                &key,
                "user information in the URL is not supported; use `credential`",
            );
        }
        if uri.query().is_some() {
            return self.err(span, &key, "a query is not allowed in an upstream URL");
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let credential = match raw.credential {
            None => None,
            Some(c) => match HeaderValue::from_str(c.get_ref()) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    Some(v)
                }
                Err(_) => {
                    return self.err(
                        c.span(),
                        &format!("upstreams.{name}.credential"),
                        "not a valid header value",
                    )
                }
            },
        };
        if raw.ca_file.is_some() && scheme != Scheme::HTTPS {
            return self.err(
                span,
                &format!("upstreams.{name}.ca_file"),
                "only meaningful with an https:// URL",
            );
        }
        Ok(Upstream {
            metrics: crate::metrics::upstream(&name),
            name,
            scheme,
            authority,
            base_path,
            ca_file: raw.ca_file.map(|p| self.path(&p)),
            preserve_host: raw.preserve_host,
            credential,
            connect_timeout: raw.connect_timeout,
            response_timeout: raw.response_timeout,
        })
    }

    fn routes(
        &self,
        raw: Vec<Spanned<RawRoute>>,
        scopes: &Scopes,
        upstreams: &[Upstream],
    ) -> Result<Routes, ConfigError> {
        let mut out: Vec<Route> = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let span = r.span();
            let r = r.into_inner();
            // The number check-config prints (1-based) and the route's name.
            let key = |field: &str| format!("route {} (\"{}\") {field}", i + 1, r.name.get_ref());
            if r.name.get_ref().is_empty() {
                return self.err(r.name.span(), &key("name"), "must not be empty");
            }
            if let Some(prev) = out.iter().find(|p| *p.name == **r.name.get_ref()) {
                return self.err(
                    r.name.span(),
                    &key("name"),
                    format!("duplicate route name \"{}\"", prev.name),
                );
            }
            let methods = match r.methods {
                None => None,
                Some(m) => {
                    let mut list = Vec::new();
                    for name in m.get_ref() {
                        let ok = !name.is_empty()
                            && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'-');
                        match Method::from_bytes(name.as_bytes()) {
                            Ok(method) if ok => list.push(method),
                            _ => {
                                return self.err(
                                    m.span(),
                                    &key("methods"),
                                    format!("\"{name}\" is not an upper-case HTTP method name"),
                                )
                            }
                        }
                    }
                    if list.is_empty() {
                        return self.err(
                            m.span(),
                            &key("methods"),
                            "must list at least one method (omit it for any method)",
                        );
                    }
                    Some(list)
                }
            };
            let pattern = Pattern::parse(r.path.get_ref())
                .or_else(|e| self.err(r.path.span(), &key("path"), e))?;
            let query = QueryRule::new(r.query.unwrap_or_default().into_iter().collect());
            let access = *r.access.get_ref();
            let required = match (&r.scopes, access) {
                (Some(s), Access::AppPassword) => scopes
                    .required(s.get_ref())
                    .or_else(|e| self.err(s.span(), &key("scopes"), e))?,
                (Some(s), _) => {
                    return self.err(
                        s.span(),
                        &key("scopes"),
                        "only allowed with access = \"app-password\"",
                    )
                }
                (None, _) => crate::scopes::ScopeSet::EMPTY,
            };
            let upstream = match (&r.upstream, access) {
                (None, Access::Deny | Access::Introspect) => None,
                (Some(u), Access::Introspect) => {
                    return self.err(
                        u.span(),
                        &key("upstream"),
                        "not allowed with access = \"introspect\" (passgate answers it)",
                    )
                }
                (None, _) => {
                    return self.err(
                        span,
                        &key("upstream"),
                        "required unless access = \"deny\" or \"introspect\"",
                    )
                }
                (Some(u), _) => match upstreams.iter().position(|x| x.name == *u.get_ref()) {
                    Some(ix) => Some(ix),
                    None => {
                        let known: Vec<&str> = upstreams.iter().map(|x| x.name.as_str()).collect();
                        return self.err(
                            u.span(),
                            &key("upstream"),
                            format!(
                                "unknown upstream \"{}\" (defined: {})",
                                u.get_ref(),
                                known.join(", ")
                            ),
                        );
                    }
                },
            };
            let body = match (r.body_scopes, access) {
                (None, _) => None,
                (Some(b), Access::AppPassword) => {
                    let span = b.span();
                    let b = b.into_inner();
                    if b.values.is_empty()
                        || b.field.is_empty()
                        || b.max_bytes == 0
                        || b.max_bytes > 1 << 20
                    {
                        return self.err(span, &key("body_scopes"), "needs a field, at least one value, and max_bytes between 1 and 1048576");
                    }
                    let mut values = Vec::new();
                    for (v, names) in &b.values {
                        values.push((
                            v.clone(),
                            scopes.required(names).or_else(|e| {
                                self.err(span.clone(), &key("body_scopes.values"), e)
                            })?,
                        ));
                    }
                    Some(crate::routes::BodyScopes {
                        field: b.field,
                        max_bytes: b.max_bytes,
                        values,
                    })
                }
                (Some(b), _) => {
                    return self.err(
                        b.span(),
                        &key("body_scopes"),
                        "only allowed with access = \"app-password\"",
                    )
                }
            };
            let resource = match (r.resource, access) {
                (None, _) => None,
                (Some(t), Access::AppPassword) => Some(
                    Resource::parse(t.get_ref(), &pattern)
                        .or_else(|e| self.err(t.span(), &key("resource"), e))?,
                ),
                (Some(t), _) => {
                    return self.err(
                        t.span(),
                        &key("resource"),
                        "only allowed with access = \"app-password\"",
                    )
                }
            };
            let name: std::sync::Arc<str> = r.name.into_inner().into();
            out.push(Route {
                metrics: crate::metrics::route(&name),
                name,
                line: line_of(self.text, span.start),
                methods,
                pattern,
                query,
                access,
                required,
                upstream,
                body,
                resource,
            });
        }
        Ok(Routes::new(out))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The dotted key (`auth.cache_ttl`) whose value holds byte `offset`, read
/// from the text: the nearest `key =` at or above the offset's line (for
/// multi-line values) under the nearest `[table]` header. `None` when the
/// offset is on a header or on a key itself.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[..line_start];
    let current = &text[line_start..offset];
    let mut lines = before.lines().rev();
    let is_header = |l: &str| l.trim_start().starts_with('[');
    let key = if current.contains('=') {
        current.split('=').next()?.trim().to_owned()
    } else {
        let whole_line = text[line_start..].lines().next().unwrap_or("");
        if whole_line.contains('=') || is_header(whole_line) {
            return None;
        }
        let l = lines.by_ref().find(|l| l.contains('=') || is_header(l))?;
        if is_header(l) {
            return None;
        }
        l.split('=').next()?.trim().to_owned()
    };
    let table = lines.find(|l| is_header(l)).map(|h| {
        h.trim()
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_owned()
    });
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key,
    })
}

/// Parses a duration string such as `"30s"`, `"15m"` or `"90d"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim_start().starts_with('-') {
        return Err(format!(
            "invalid duration \"{s}\": durations must be positive (use e.g. \"30s\", \"15m\", \"90d\")"
        ));
    }
    let d = humantime::parse_duration(s).map_err(|e| {
        format!("invalid duration \"{s}\": {e} (use e.g. \"30s\", \"15m\", \"90d\")")
    })?;
    if d.is_zero() {
        return Err(format!(
            "invalid duration \"{s}\": must be greater than zero"
        ));
    }
    Ok(d)
}

/// `d` as a user writes it: in the largest of days, hours, minutes or
/// seconds that holds it whole (`"365d"` stays `365d`, not `11months 30days…`).
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= n && secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

// ---- raw, as written in the file ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default = "default_scopes")]
    scopes: Spanned<BTreeMap<String, RawScope>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    selfservice: Option<Spanned<RawSelfService>>,
    metrics: Option<Spanned<RawMetrics>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelfService {
    #[serde(default = "default_page_path")]
    path: Spanned<String>,
    identity: Spanned<RawPageIdentity>,
    user_header: Option<Spanned<String>>,
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default = "default_page_expiry")]
    default_expiry: Spanned<String>,
    /// `[selfservice.oidc]`, for `identity = "oidc"`.
    oidc: Option<Spanned<crate::oidc::RawOidc>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawPageIdentity {
    Header,
    Oidc,
}

fn default_page_path() -> Spanned<String> {
    Spanned::new(0..0, "/-/app-passwords".to_owned())
}

fn default_page_expiry() -> Spanned<String> {
    Spanned::new(0..0, "30d".to_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Spanned<Vec<Spanned<String>>>,
    tls: Option<RawTls>,
    #[serde(default)]
    trusted_proxies: Vec<IpNet>,
    #[serde(default = "d30s", deserialize_with = "duration")]
    shutdown_grace: Duration,
    #[serde(default = "d10s", deserialize_with = "duration")]
    header_read_timeout: Duration,
    #[serde(default = "d60s", deserialize_with = "duration")]
    idle_timeout: Duration,
    #[serde(default = "default_log_format")]
    log_format: LogFormat,
    workers: Option<usize>,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_max_connections_per_addr")]
    max_connections_per_addr: usize,
}

fn default_max_connections() -> usize {
    10_000
}

fn default_max_connections_per_addr() -> usize {
    256
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    url_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    socket: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            socket: "data/admin.sock".to_owned(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default = "default_realm")]
    realm: Spanned<String>,
    #[serde(default = "d30s", deserialize_with = "duration")]
    cache_ttl: Duration,
    #[serde(default = "default_cache_capacity")]
    cache_capacity: usize,
    #[serde(default = "default_username")]
    username: UsernameMode,
    #[serde(default, deserialize_with = "opt_duration")]
    max_lifetime: Option<Duration>,
    #[serde(default)]
    argon2: Argon2Params,
    verify_threads: Option<usize>,
    #[serde(default = "default_verify_queue")]
    verify_queue: usize,
    #[serde(default)]
    rate_limit: RawRateLimit,
    #[serde(default = "d5s", deserialize_with = "duration")]
    usage_flush: Duration,
    #[serde(default)]
    rotated_reuse: RotatedReuse,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            realm: default_realm(),
            cache_ttl: d30s(),
            cache_capacity: default_cache_capacity(),
            username: default_username(),
            max_lifetime: None,
            argon2: Argon2Params::default(),
            verify_threads: None,
            verify_queue: default_verify_queue(),
            rate_limit: RawRateLimit::default(),
            usage_flush: d5s(),
            rotated_reuse: RotatedReuse::Log,
        }
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Argon2Params {
            memory_kib: default_m(),
            iterations: default_t(),
            parallelism: default_p(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default = "default_user_addr_bucket")]
    per_user_addr: Bucket,
    #[serde(default = "default_addr_bucket")]
    per_addr: Bucket,
    #[serde(default = "default_rate_entries")]
    max_entries: usize,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        RawRateLimit {
            per_user_addr: default_user_addr_bucket(),
            per_addr: default_addr_bucket(),
            max_entries: default_rate_entries(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    #[serde(default = "default_user_header")]
    user_header: Spanned<String>,
    #[serde(default = "default_scopes_header")]
    scopes_header: Spanned<String>,
    #[serde(default = "default_credential_header")]
    credential_header: Spanned<String>,
}

impl Default for RawIdentity {
    fn default() -> Self {
        RawIdentity {
            user_header: default_user_header(),
            scopes_header: default_scopes_header(),
            credential_header: default_credential_header(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Spanned<String>,
    ca_file: Option<String>,
    #[serde(default = "yes")]
    preserve_host: bool,
    credential: Option<Spanned<String>>,
    #[serde(default = "d5s", deserialize_with = "duration")]
    connect_timeout: Duration,
    #[serde(default = "d60s", deserialize_with = "duration")]
    response_timeout: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScope {
    #[serde(default)]
    implies: Vec<String>,
    /// Shown beside the scope's checkbox on the self-service page.
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    methods: Option<Spanned<Vec<String>>>,
    path: Spanned<String>,
    query: Option<BTreeMap<String, String>>,
    access: Spanned<Access>,
    scopes: Option<Spanned<Vec<String>>>,
    upstream: Option<Spanned<String>>,
    body_scopes: Option<Spanned<RawBodyScopes>>,
    resource: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBodyScopes {
    field: String,
    #[serde(default = "default_body_max")]
    max_bytes: usize,
    values: BTreeMap<String, Vec<String>>,
}

fn default_body_max() -> usize {
    64 * 1024
}

fn default_scopes() -> Spanned<BTreeMap<String, RawScope>> {
    // Bitbucket's vocabulary, used when the file declares no [scopes].
    let text = include_str!("scopes.default.toml");
    let parsed: Result<BTreeMap<String, RawScope>, _> = toml::from_str(text);
    Spanned::new(0..0, parsed.unwrap_or_default())
}

fn default_realm() -> Spanned<String> {
    Spanned::new(0..0, "passgate".to_owned())
}
fn default_user_header() -> Spanned<String> {
    Spanned::new(0..0, "X-Forwarded-User".to_owned())
}
fn default_scopes_header() -> Spanned<String> {
    Spanned::new(0..0, "X-Forwarded-Scopes".to_owned())
}
fn default_credential_header() -> Spanned<String> {
    Spanned::new(0..0, "X-Forwarded-App-Password".to_owned())
}
fn default_log_format() -> LogFormat {
    LogFormat::Human
}
fn default_username() -> UsernameMode {
    UsernameMode::MustMatch
}
fn default_cache_capacity() -> usize {
    100_000
}
fn default_verify_queue() -> usize {
    64
}
fn default_rate_entries() -> usize {
    100_000
}
fn default_user_addr_bucket() -> Bucket {
    Bucket {
        burst: 10,
        per: Duration::from_secs(60),
    }
}
fn default_addr_bucket() -> Bucket {
    Bucket {
        burst: 50,
        per: Duration::from_secs(60),
    }
}
fn default_m() -> u32 {
    19_456
}
fn default_t() -> u32 {
    2
}
fn default_p() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn d5s() -> Duration {
    Duration::from_secs(5)
}
fn d10s() -> Duration {
    Duration::from_secs(10)
}
fn d30s() -> Duration {
    Duration::from_secs(30)
}
fn d60s() -> Duration {
    Duration::from_secs(60)
}
