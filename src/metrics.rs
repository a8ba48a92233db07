//! Prometheus metrics and the health endpoints of `[metrics] listen`.
//!
//! Owns every counter the gateway exposes, their names and label values, and
//! the text a scrape returns (OpenMetrics, through `prometheus-client`). It
//! imports nothing of the request path: the request path calls in here
//! (`record_*`, [`RouteMetrics::record`]), and `serve` hands over, once the
//! gateway exists, a [`Source`] for what is read at scrape time (open
//! connections, the argon2 queue, app passwords by status, certificate expiry).
//!
//! Recording never takes a lock and never allocates: global counters are
//! atomics, and the per-route and per-upstream series are resolved when the
//! config is compiled ([`route`], [`upstream`]) and kept next to the route
//! they count, so a request only follows a pointer it already holds. A config
//! built again (a reload) gets the same series for the same names and new
//! ones for new names; the series of a name no config holds any more leave
//! the exposition. Label values come only from the config and from fixed
//! sets, never from a path, a user name or an address.
//!
//! Without `[metrics]` nothing is recorded: each `record_*` is one relaxed load.
//!
//! - [`series`]: per-route requests and durations, per-upstream failures;
//! - [`listener`]: the listener answering `/metrics`, `/healthz`, `/readyz`.

pub mod listener;
pub mod series;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

pub use series::{RouteMetrics, UpstreamFailure, UpstreamMetrics};

/// Set once `serve` has a metrics listener: recording is skipped before.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether anything is recorded (a `[metrics]` section is configured).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Turns recording on (`serve`, when `[metrics]` is configured).
pub fn enable() {
    ENABLED.store(true, Relaxed);
}

// ---- per-route and per-upstream series ----

/// Every route series a config still holds, by name, so a config built
/// again keeps counting into the same series. Weak: a route that a reload
/// removed leaves the exposition once the last config holding it is gone
/// (the requests that started under it have finished); if its name comes
/// back, its counters start from zero, which Prometheus reads as a reset.
/// Kept series of removed routes would grow with every rename and go on
/// exposing counters that nothing can increase any more.
static ROUTES: Mutex<Vec<Weak<RouteMetrics>>> = Mutex::new(Vec::new());
/// The same for upstreams.
static UPSTREAMS: Mutex<Vec<Weak<UpstreamMetrics>>> = Mutex::new(Vec::new());

/// The `route` label of requests that matched no route (400, 404, …).
pub const UNROUTED: &str = "(none)";
/// The `route` label of the self-service page.
pub const SELFSERVICE: &str = "(selfservice)";

/// The series of the route called `name` (config time, never per request).
pub fn route(name: &Arc<str>) -> Arc<RouteMetrics> {
    named(
        &ROUTES,
        name,
        |m| &m.name,
        || RouteMetrics::new(name.clone()),
    )
}

/// The series of the upstream called `name` (config time, never per request).
pub fn upstream(name: &str) -> Arc<UpstreamMetrics> {
    named(
        &UPSTREAMS,
        name,
        |m| &m.name,
        || UpstreamMetrics::new(Arc::from(name)),
    )
}

/// The live series called `name` in `all`, or a new one; drops the dead.
fn named<T>(
    all: &Mutex<Vec<Weak<T>>>,
    name: &str,
    name_of: impl Fn(&T) -> &Arc<str>,
    new: impl FnOnce() -> T,
) -> Arc<T> {
    let mut all = all
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    all.retain(|m| m.strong_count() > 0);
    if let Some(m) = all
        .iter()
        .filter_map(Weak::upgrade)
        .find(|m| &**name_of(m) == name)
    {
        return m;
    }
    let m = Arc::new(new());
    all.push(Arc::downgrade(&m));
    m
}

/// The series still held by a config, in the order they were made.
fn live<T>(all: &Mutex<Vec<Weak<T>>>) -> Vec<Arc<T>> {
    all.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .collect()
}

/// The series of requests that no route took.
pub fn unrouted() -> &'static RouteMetrics {
    static UNROUTED_SERIES: LazyLock<Arc<RouteMetrics>> =
        LazyLock::new(|| route(&Arc::from(UNROUTED)));
    &UNROUTED_SERIES
}

/// The series of the self-service page.
pub fn selfservice() -> &'static Arc<RouteMetrics> {
    static PAGE: LazyLock<Arc<RouteMetrics>> = LazyLock::new(|| route(&Arc::from(SELFSERVICE)));
    &PAGE
}

/// Counts one finished request on `route` (or on [`unrouted`]).
#[inline]
pub fn record_request(
    route: Option<&RouteMetrics>,
    method: &http::Method,
    status: u16,
    start: std::time::Instant,
) {
    if enabled() {
        route
            .unwrap_or_else(|| unrouted())
            .record(method, status, start.elapsed());
    }
}

// ---- global counters ----

/// How an authentication on an `app-password` or `introspect` route ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// A valid password holding what the route demands.
    Success,
    /// No credentials, or none with a password (a client asking for the challenge).
    Missing,
    /// Wrong, unknown, malformed, revoked or expired credentials (401).
    Invalid,
    /// Refused by the brute-force limits (429).
    RateLimited,
    /// Every verification slot busy (503).
    Overloaded,
    /// A valid password without the route's scope (403).
    MissingScope,
    /// A valid password used from outside its `--allow-from` networks (403).
    AddressNotAllowed,
    /// A valid password limited to other repositories (403).
    RepoNotAllowed,
    /// The store could not be read (503).
    StoreUnavailable,
    /// A malformed request (two `Authorization` headers: 400).
    BadRequest,
}

impl AuthOutcome {
    const ALL: [AuthOutcome; 10] = [
        AuthOutcome::Success,
        AuthOutcome::Missing,
        AuthOutcome::Invalid,
        AuthOutcome::RateLimited,
        AuthOutcome::Overloaded,
        AuthOutcome::MissingScope,
        AuthOutcome::AddressNotAllowed,
        AuthOutcome::RepoNotAllowed,
        AuthOutcome::StoreUnavailable,
        AuthOutcome::BadRequest,
    ];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthOutcome::Success => "success",
            AuthOutcome::Missing => "missing",
            AuthOutcome::Invalid => "invalid",
            AuthOutcome::RateLimited => "rate_limited",
            AuthOutcome::Overloaded => "overloaded",
            AuthOutcome::MissingScope => "missing_scope",
            AuthOutcome::AddressNotAllowed => "address_not_allowed",
            AuthOutcome::RepoNotAllowed => "repo_not_allowed",
            AuthOutcome::StoreUnavailable => "store_unavailable",
            AuthOutcome::BadRequest => "bad_request",
        }
    }
}

/// The outcome of a `SIGHUP` / `passgate reload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new config is in force.
    Applied,
    /// The file failed validation; the running config stays.
    Rejected,
}

impl ReloadOutcome {
    const ALL: [ReloadOutcome; 2] = [ReloadOutcome::Applied, ReloadOutcome::Rejected];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadOutcome::Applied => "applied",
            ReloadOutcome::Rejected => "rejected",
        }
    }
}

/// Which limit refused to start a sign-in on the self-service page (OIDC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInLimit {
    /// `sign_ins_per_address` spent for the client address (429).
    PerAddress,
    /// `max_sign_ins_in_progress` reached on this gateway (503).
    InProgress,
    /// A signed-in user's step-ups spent (429).
    PerUser,
}

impl SignInLimit {
    const ALL: [SignInLimit; 3] = [
        SignInLimit::PerAddress,
        SignInLimit::InProgress,
        SignInLimit::PerUser,
    ];

    /// The `limit` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SignInLimit::PerAddress => "per_address",
            SignInLimit::InProgress => "in_progress",
            SignInLimit::PerUser => "per_user",
        }
    }
}

static AUTH: [AtomicU64; AuthOutcome::ALL.len()] = [const { AtomicU64::new(0) }; 10];
static SIGN_INS_REFUSED: [AtomicU64; SignInLimit::ALL.len()] =
    [const { AtomicU64::new(0) }; SignInLimit::ALL.len()];
static RELOADS: [AtomicU64; ReloadOutcome::ALL.len()] = [const { AtomicU64::new(0) }; 2];
static CACHE_HITS: AtomicU64 = AtomicU64::new(0);
static CACHE_MISSES: AtomicU64 = AtomicU64::new(0);

/// Counts one authentication outcome; a 429 and a verifier 503 are also
/// what `passgate_rate_limited_requests_total` and
/// `passgate_verifier_refusals_total` count.
#[inline]
pub fn record_auth(outcome: AuthOutcome) {
    if enabled() {
        if let Some(c) = AUTH.get(outcome as usize) {
            c.fetch_add(1, Relaxed);
        }
    }
}

/// Counts one lookup in the verification cache: `hit` when a fresh entry
/// answered without a store read or argon2id.
#[inline]
pub fn record_cache(hit: bool) {
    if enabled() {
        if hit { &CACHE_HITS } else { &CACHE_MISSES }.fetch_add(1, Relaxed);
    }
}

/// Counts one config reload (`SIGHUP` or `passgate reload`) by outcome.
pub fn record_reload(outcome: ReloadOutcome) {
    if let Some(c) = RELOADS.get(outcome as usize) {
        c.fetch_add(1, Relaxed);
    }
}

/// Counts one sign-in the self-service page refused to start (no
/// pre-login record written), by the limit that refused it.
pub fn record_sign_in_refused(limit: SignInLimit) {
    if enabled() {
        if let Some(c) = SIGN_INS_REFUSED.get(limit as usize) {
            c.fetch_add(1, Relaxed);
        }
    }
}

fn load(counters: &[AtomicU64], i: usize) -> u64 {
    counters.get(i).map_or(0, |c| c.load(Relaxed))
}

// ---- scrape-time state ----

/// What is read at scrape time rather than counted: handed over by `serve`
/// once the gateway exists.
pub trait Source: Send + Sync + 'static {
    /// Called on a blocking thread: may read the store.
    fn sample(&self) -> Sample;
    /// Whether the store answers (for `/readyz`).
    fn store_ready(&self) -> bool;
}

/// One scrape's readings.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    /// Open client connections (HTTP/2 requests in flight included).
    pub open_connections: u64,
    /// argon2id verifications running on a verification thread.
    pub verify_running: u64,
    /// Verifications admitted and waiting for a thread.
    pub verify_waiting: u64,
    /// Verifications that may run or wait at once (`verify_threads + verify_queue`).
    pub verify_capacity: u64,
    /// App passwords by status label (`active`, `expired`, `revoked`);
    /// empty when the store could not be read.
    pub app_passwords: Vec<(&'static str, u64)>,
    /// The serving certificate's `notAfter`, Unix seconds (TLS only).
    pub cert_not_after: Option<i64>,
}

static SOURCE: OnceLock<Box<dyn Source>> = OnceLock::new();
static READY: AtomicBool = AtomicBool::new(false);

/// Hands over what scrapes read (once; later calls are ignored).
pub fn set_source(source: Box<dyn Source>) {
    let _ = SOURCE.set(source);
}

/// `serve` says the store is open and every listener bound (true), or that
/// shutdown has begun (false).
pub fn set_ready(ready: bool) {
    READY.store(ready, Relaxed);
}

/// What `/readyz` answers: started, not stopping, and the store answers.
pub fn ready() -> bool {
    READY.load(Relaxed) && SOURCE.get().is_some_and(|s| s.store_ready())
}

/// The scrape-time readings (blocking: may read the store).
pub fn sample() -> Option<Sample> {
    SOURCE.get().map(|s| s.sample())
}

// ---- exposition ----

/// The whole exposition for one scrape, OpenMetrics text.
pub fn render(sample: Option<Sample>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { sample }));
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

/// Everything, read once per scrape.
#[derive(Debug)]
struct Scrape {
    sample: Option<Sample>,
}

type Fmt = Result<(), std::fmt::Error>;

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Fmt {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Fmt {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)
}

/// A counter family with one label: a series per `(label value, count)`.
fn counters<'v>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    series: impl IntoIterator<Item = (&'v str, u64)>,
) -> Fmt {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in series {
        ConstCounter::new(n).encode(m.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Fmt {
        let info = Info::new([("version", env!("CARGO_PKG_VERSION"))]);
        info.encode(e.encode_descriptor(
            "passgate_build",
            "The running passgate version",
            None,
            info.metric_type(),
        )?)?;
        self.requests(&mut e)?;
        self.auth(&mut e)?;
        self.upstreams(&mut e)?;
        let reloads = RELOADS.each_ref();
        counters(
            &mut e,
            "passgate_config_reloads",
            "Config reloads (SIGHUP, passgate reload) by outcome",
            "outcome",
            ReloadOutcome::ALL
                .iter()
                .zip(reloads)
                .map(|(o, n)| (o.as_str(), n.load(Relaxed))),
        )?;
        counters(
            &mut e,
            "passgate_sign_ins_refused",
            "Self-service sign-ins not started (no pre-login record written), by the limit that refused them",
            "limit",
            SignInLimit::ALL.map(|l| (l.as_str(), load(&SIGN_INS_REFUSED, l as usize))),
        )?;
        if let Some(s) = &self.sample {
            self.sampled(&mut e, s)?;
        }
        Ok(())
    }
}

impl Scrape {
    fn requests(&self, e: &mut DescriptorEncoder<'_>) -> Fmt {
        let routes = live(&ROUTES);
        let mut m = e.encode_descriptor(
            "passgate_http_requests",
            "Finished requests by route, method and status code",
            None,
            MetricType::Counter,
        )?;
        for r in &routes {
            for (method, status, n) in r.requests() {
                let code = match status {
                    0 => "other".to_owned(),
                    s => s.to_string(),
                };
                let labels = [("route", &*r.name), ("method", method), ("code", &code)];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m = e.encode_descriptor(
            "passgate_http_request_duration",
            "Time from request head to the end of the response body, by route",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for r in &routes {
            let h = r.duration();
            if h.count == 0 {
                continue;
            }
            m.encode_family(&[("route", &*r.name)])?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    h.sum_seconds,
                    h.count,
                    &h.buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn auth(&self, e: &mut DescriptorEncoder<'_>) -> Fmt {
        counters(
            e,
            "passgate_auth_outcomes",
            "Authentications on app-password and introspect routes, by outcome",
            "outcome",
            AuthOutcome::ALL.map(|o| (o.as_str(), load(&AUTH, o as usize))),
        )?;
        counter(
            e,
            "passgate_rate_limited_requests",
            "Requests refused with 429 by the brute-force limits",
            load(&AUTH, AuthOutcome::RateLimited as usize),
        )?;
        counter(
            e,
            "passgate_verifier_refusals",
            "Requests refused with 503 because every argon2id verification slot was busy",
            load(&AUTH, AuthOutcome::Overloaded as usize),
        )?;
        counters(
            e,
            "passgate_verification_cache_lookups",
            "Verification cache lookups: hit (answered from the cache) or miss",
            "result",
            [
                ("hit", CACHE_HITS.load(Relaxed)),
                ("miss", CACHE_MISSES.load(Relaxed)),
            ],
        )
    }

    fn upstreams(&self, e: &mut DescriptorEncoder<'_>) -> Fmt {
        let all = live(&UPSTREAMS);
        let mut m = e.encode_descriptor(
            "passgate_upstream_errors",
            "Requests an upstream failed: unavailable (502) or timeout (504)",
            None,
            MetricType::Counter,
        )?;
        for u in &all {
            for why in UpstreamFailure::ALL {
                let labels = [("upstream", &*u.name), ("kind", why.as_str())];
                ConstCounter::new(u.errors(why)).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn sampled(&self, e: &mut DescriptorEncoder<'_>, s: &Sample) -> Fmt {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            e,
            "passgate_open_connections",
            "Open client connections (each HTTP/2 request in flight counts as one)",
            None,
            int(s.open_connections),
        )?;
        gauge(
            e,
            "passgate_verifier_running",
            "argon2id verifications running now",
            None,
            int(s.verify_running),
        )?;
        gauge(
            e,
            "passgate_verifier_queue_depth",
            "argon2id verifications admitted and waiting for a thread",
            None,
            int(s.verify_waiting),
        )?;
        gauge(
            e,
            "passgate_verifier_capacity",
            "argon2id verifications that may run or wait at once; beyond it, 503",
            None,
            int(s.verify_capacity),
        )?;
        if !s.app_passwords.is_empty() {
            let mut m = e.encode_descriptor(
                "passgate_app_passwords",
                "App passwords in the store, by status",
                None,
                MetricType::Gauge,
            )?;
            for (status, n) in &s.app_passwords {
                ConstGauge::new(int(*n)).encode(m.encode_family(&[("status", *status)])?)?;
            }
        }
        if let Some(at) = s.cert_not_after {
            gauge(
                e,
                "passgate_tls_certificate_expiry",
                "Seconds until the serving TLS certificate expires (negative once expired)",
                Some(&Unit::Seconds),
                at.saturating_sub(crate_clock_now()),
            )?;
        }
        Ok(())
    }
}

/// Unix seconds now (kept local: this module imports nothing of the crate).
fn crate_clock_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
