//! App-password authentication: the one entry point from credentials to a
//! [`Verified`] identity or a [`Reject`].
//!
//! The order of checks on an `app-password` route:
//! 1. `Authorization: Basic` decoded (`basic.rs`); none, or none with a
//!    password (a client asking for the challenge) → 401, uncounted; two → 400;
//! 2. token shape and checksum, no I/O (`token.rs`) → 401, counted as a
//!    failure (429 instead while the limits below are exceeded);
//! 3. a fresh cache hit (`cache.rs`) is answered at once, before the limits: a
//!    guess can never be one, and a shared address (NAT, an IPv6 /64) flooded
//!    by someone else's guesses must not lock out a valid cached password;
//! 4. brute-force limits for (user, address) and address (`throttle.rs`) → 429;
//!    a guess about to be verified takes its token first (given back if it
//!    was right), so concurrent guesses cannot outrun the limit;
//! 5. a stale cache entry is renewed by one store read when
//!    the record still holds the same hash; else store lookup + argon2id
//!    (`verify.rs`), once at a time per presented secret, where an unknown id
//!    is verified against a dummy hash so its timing matches a wrong secret;
//!    revoked and expired passwords also pay the full verification;
//! 6. on every request, cached or not: user match, revocation (evicted from the
//!    cache at once), expiry, the password's `--allow-from` networks → 403
//!    naming the address, scopes → 403 naming the missing scope, then its
//!    `--repo` list against the route's resource → 403 naming the limit. A
//!    cached success thus never carries one repository's answer to another.
//!
//! A password that `rotate` revoked, presented with its right secret, writes
//! `event="rotated_reuse"`; with `[auth] rotated_reuse = "revoke"` the
//! lineage's current password is revoked too.
//!
//! Unknown id, wrong user, wrong secret, revoked and expired all answer the same
//! 401 body. Audit events go to the tracing target `passgate::audit`, one line
//! per event, never with a secret (format documented in docs/logs.md).

pub mod basic;
pub mod cache;
pub mod throttle;
pub mod token;
pub mod usage;
pub mod verify;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::{HeaderMap, HeaderValue};

use crate::audit::{self, AuditEvent, User, Via};
use crate::clock::{reached, unix_now, unix_now_coarse};
use crate::config::{self, RotatedReuse, UsernameMode};
use crate::error::Reject;
use crate::limits;
use crate::path::NormalPath;
use crate::routes::resource::Resource;
use crate::scopes::{ScopeSet, Scopes};
use crate::store::{AppPassword, Status, Store};
use basic::BasicError;
use cache::{Cache, Decoded, Lookup, Recent, Verified};
use throttle::{Limit, Reservation, Throttle, ThrottleConfig};
use usage::UsageLog;
use verify::{Verifier, VerifyError};

/// The one 401 body for every credential failure, so none can be told apart.
pub const INVALID: &str = "invalid credentials: use your user name and an app password";
const MISSING: &str = "authentication required: use your user name and an app password";

/// What a route asks of a valid app password.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    /// Scopes it must hold.
    pub scopes: ScopeSet,
    /// The repository the request touches, for passwords limited to some.
    pub repo: Repo<'a>,
}

/// The repository side of a [`Demand`].
#[derive(Debug, Clone, Copy)]
pub enum Repo<'a> {
    /// No repository limit applies (introspection describes the password).
    Exempt,
    /// The route names no resource: a limited password is refused.
    Unnamed,
    /// The route's resource, rendered from the path only for a limited password.
    Named(&'a Resource, &'a NormalPath),
}

impl Demand<'_> {
    /// Scopes only, no repository limit (tests, introspection).
    pub fn scopes(scopes: ScopeSet) -> Demand<'static> {
        Demand {
            scopes,
            repo: Repo::Exempt,
        }
    }
}

/// Everything needed to authenticate app passwords in a running gateway.
#[derive(Debug)]
pub struct Authenticator {
    store: Arc<Store>,
    scopes: Scopes,
    username: UsernameMode,
    /// Shared with the authenticators of later config reloads (as are the
    /// throttle and verifier while their settings stay, the usage log and
    /// the gates): a reload keeps what was verified and what is counted.
    cache: Arc<Cache>,
    throttle: Arc<Throttle>,
    verifier: Arc<Verifier>,
    usage: Arc<UsageLog>,
    rotated_reuse: RotatedReuse,
    /// Single-flight gates for in-progress verifications, keyed by the keyed
    /// digest of the presented secret; entries live only while verifying.
    flights: Arc<Gates>,
    /// Set when a reload replaced the scope vocabulary: a verification this
    /// authenticator finishes afterwards must not stay cached, its granted
    /// set being in the old vocabulary's bits ([`Self::retire`]).
    retired: AtomicBool,
}

impl Authenticator {
    pub fn new(
        store: Arc<Store>,
        scopes: Scopes,
        cfg: &config::Auth,
    ) -> Result<Authenticator, verify::HashError> {
        Ok(Authenticator {
            store,
            scopes,
            username: cfg.username,
            cache: Arc::new(Cache::new(cfg.cache_ttl, cfg.cache_capacity)),
            throttle: Arc::new(Throttle::new(throttle_config(cfg))),
            verifier: Arc::new(Verifier::new(
                cfg.verify_threads,
                cfg.verify_queue,
                &cfg.argon2,
            )?),
            usage: Arc::default(),
            rotated_reuse: cfg.rotated_reuse,
            flights: Arc::default(),
            retired: AtomicBool::new(false),
        })
    }

    /// The authenticator for a reloaded config (`cfg`, replacing `was`),
    /// sharing this one's state: the cache, the usage log and the gates
    /// always (`cache_ttl` and `cache_capacity` take a restart); the
    /// brute-force counters (under a changed `rate_limit`, each bucket keeps
    /// the failures it holds and refills at the new rate); the verifier unless its queue or the
    /// argon2 parameters changed. Call [`Self::retire`] on this one once
    /// the new one serves.
    pub fn reconfigured(
        &self,
        scopes: Scopes,
        cfg: &config::Auth,
        was: &config::Auth,
    ) -> Result<Authenticator, verify::HashError> {
        let throttle = if cfg.rate_limit == was.rate_limit {
            self.throttle.clone()
        } else {
            Arc::new(
                self.throttle
                    .reconfigured(throttle_config(cfg), Instant::now()),
            )
        };
        let verifier = if (cfg.verify_queue, cfg.argon2) == (was.verify_queue, was.argon2) {
            self.verifier.clone()
        } else {
            Arc::new(Verifier::new(
                cfg.verify_threads,
                cfg.verify_queue,
                &cfg.argon2,
            )?)
        };
        Ok(Authenticator {
            store: self.store.clone(),
            scopes,
            username: cfg.username,
            cache: self.cache.clone(),
            throttle,
            verifier,
            usage: self.usage.clone(),
            rotated_reuse: cfg.rotated_reuse,
            flights: self.flights.clone(),
            retired: AtomicBool::new(false),
        })
    }

    /// Called on the authenticator a reload replaced by `next`, once `next`
    /// serves. The cache holds what a password *is* (user, granted scopes,
    /// expiry), never a route's decision: every request checks its route's
    /// scopes and limits afresh, so a changed route needs no flush. A changed
    /// scope vocabulary does (granted sets are bits of the vocabulary): every
    /// entry cached until now is made stale, so its next use re-reads the
    /// record (no argon2 run) and grants it under the new vocabulary; and a
    /// verification still running under this authenticator does not stay cached.
    pub fn retire(&self, next: &Authenticator) {
        if next.scopes != self.scopes {
            self.retired.store(true, Ordering::SeqCst);
            self.cache.resync(Instant::now());
        }
    }

    /// Caches a verification (`read_at`: before its record was read).
    fn remember(&self, secret: &str, verified: &Arc<Verified>, read_at: Instant, generation: u64) {
        self.cache
            .insert(secret, verified.clone(), read_at, generation);
        // Checked after the insert: a reload that retires this authenticator
        // later than this check makes the entry stale by its resync.
        if self.retired.load(Ordering::SeqCst) {
            self.cache.evict(&verified.id);
        }
    }

    /// Authenticates the request's Basic credentials and checks `required` scopes.
    ///
    /// A cache hit is answered without an await, so the decoded credentials
    /// (a stack buffer) never live in the request's future; a miss or a stale
    /// entry takes the boxed slow path, which decodes the header again. A
    /// header value the cache remembers ([`Cache::presented`]) is not decoded
    /// at all: its secret is checked by digest against the same entry. The
    /// value the connection presented last (`recent`, [`Cache::recent`]) is
    /// not even digested.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
        demand: Demand<'_>,
        recent: Option<&Recent>,
    ) -> Result<Arc<Verified>, Reject> {
        let stale = {
            let now = Instant::now();
            // A header value that decoded to a fresh verification before is
            // not decoded again: the cache remembers what it decoded to.
            let value = basic::authorization(headers)
                .ok()
                .flatten()
                .filter(|v| v.len() <= basic::MAX_HEADER_LEN);
            if let Some(hit) = value.and_then(|v| self.remembered(v.as_bytes(), recent, now)) {
                crate::metrics::record_cache(true);
                let id = hit.verified.id.clone();
                return self.finish(hit.verified, &hit.user, &id, client, demand);
            }
            let mut creds = basic::BasicCredentials::new();
            self.credentials(headers, client, &mut creds)?;
            let user = creds.user();
            let token = self.parse(user, creds.password(), client, now)?;
            let digest = self.cache.keyed(token.secret());
            let lookup = self.cache.lookup_digest(token.id(), &digest, now);
            crate::metrics::record_cache(matches!(lookup, Lookup::Fresh(_)));
            let stale = match lookup {
                Lookup::Fresh(v) if !v.expires_at.is_some_and(reached) => {
                    if let Some(value) = value {
                        let decoded = Decoded {
                            verified: v.clone(),
                            user: Arc::from(user),
                            secret: digest,
                        };
                        let value = value.as_bytes();
                        self.cache.remember_presented(value, &decoded);
                        if let Some(recent) = recent {
                            self.cache.remember_recent(recent, value, &decoded);
                        }
                    }
                    return self.finish(v, user, token.id(), client, demand);
                }
                // Past its stop time: verified afresh, so the refusal says
                // why (expired, or revoked by a rotation: `rotated_reuse`).
                Lookup::Fresh(_) => {
                    self.cache.evict(token.id());
                    None
                }
                Lookup::Stale(v) => Some(v),
                Lookup::Miss => None,
            };
            self.throttled(user, client, now)?;
            stale
        };
        Box::pin(self.authenticate_slow(headers, client, demand, stale)).await
    }

    /// The fresh verification a remembered `Authorization` value answers
    /// for, unexpired: the connection's last value first, then the cache's
    /// remembered values (a hit there becomes the connection's last value).
    fn remembered(&self, value: &[u8], recent: Option<&Recent>, now: Instant) -> Option<Decoded> {
        let unexpired = |d: &Decoded| !d.verified.expires_at.is_some_and(reached);
        if let Some(hit) = recent.and_then(|r| self.cache.recent(r, value, now)) {
            if unexpired(&hit) {
                return Some(hit);
            }
        }
        let hit = self.cache.presented(value, now).filter(unexpired)?;
        if let Some(recent) = recent {
            self.cache.remember_recent(recent, value, &hit);
        }
        Some(hit)
    }

    /// A cache miss, or a stale entry: renewed by one store read when the
    /// record still holds the same hash, else verified with argon2id.
    async fn authenticate_slow(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
        demand: Demand<'_>,
        stale: Option<Arc<Verified>>,
    ) -> Result<Arc<Verified>, Reject> {
        // The same header as a moment ago: decoding and admission succeed again.
        let mut creds = basic::BasicCredentials::new();
        self.credentials(headers, client, &mut creds)?;
        let user = creds.user();
        let now = Instant::now();
        let token = self.parse(user, creds.password(), client, now)?;
        self.throttled(user, client, now)?;
        let renewed = match stale {
            Some(v) => self.revalidate(&v, token.secret()).await?,
            None => None,
        };
        let verified = match renewed {
            Some(v) => v,
            None => {
                self.verify_once(user, token.id(), token.secret(), client)
                    .await?
            }
        };
        self.finish(verified, user, token.id(), client, demand)
    }

    /// The request's Basic credentials: none → 401, two headers → 400,
    /// undecodable → 401 counted as a failure.
    ///
    /// Credentials without a password (`alice:`, a bare user, an empty
    /// `Basic`, a `Negotiate`/`NTLM` probe) are a client asking for the
    /// challenge, as git does with `http://alice@host/` before it asks its
    /// credential helper: 401 like no header at all, nothing counted, logged
    /// at debug level only. Nothing is checked, so nothing can be guessed.
    fn credentials(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
        creds: &mut basic::BasicCredentials,
    ) -> Result<(), Reject> {
        match basic::decode(headers, creds) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Reject::Unauthorized(MISSING)),
            Err(BasicError::NoPassword) => Err(challenge(client)),
            Err(BasicError::Multiple) => {
                audit_failure("multiple-authorization", User::None, "-", client);
                Err(Reject::BadRequest("more than one Authorization header"))
            }
            Err(e) => {
                self.throttle.record_failure("", client, Instant::now());
                audit_failure(basic_reason(&e), User::None, "-", client);
                Err(Reject::Unauthorized(INVALID))
            }
        }
    }

    /// The token's shape and checksum (no I/O): a malformed one is a
    /// counted failure, or 429 while the limits are exceeded.
    fn parse<'p>(
        &self,
        user: &str,
        password: &'p str,
        client: IpAddr,
        now: Instant,
    ) -> Result<token::TokenRef<'p>, Reject> {
        token::parse(password).map_err(|_| {
            // Not a token: the user field may hold an account password.
            let shown = User::Unchecked(user);
            if let Err(retry_after) = self.throttle.check(user, client, now) {
                return rate_limited(shown, client, retry_after);
            }
            self.throttle.record_failure(user, client, now);
            audit_failure("malformed-token", shown, "-", client);
            Reject::Unauthorized(INVALID)
        })
    }

    /// The brute-force limits for (user, address) and address → 429.
    fn throttled(&self, user: &str, client: IpAddr, now: Instant) -> Result<(), Reject> {
        self.throttle
            .check(user, client, now)
            .map_err(|retry_after| rate_limited(User::Name(user), client, retry_after))
    }

    /// The checks made on every request, cached or not: user, expiry,
    /// client address, scopes, then repository.
    fn finish(
        &self,
        verified: Arc<Verified>,
        user: &str,
        id: &str,
        client: IpAddr,
        demand: Demand<'_>,
    ) -> Result<Arc<Verified>, Reject> {
        let required = demand.scopes;
        // The second of this use: the coarse clock's (a tick late at most).
        let unix = unix_now_coarse();
        // A remembered value's name is the verification's own when equal
        // (see `cache.rs`): the pointers answer before the bytes.
        let same_user = || std::ptr::eq::<str>(&*verified.user, user) || *verified.user == *user;
        if self.username == UsernameMode::MustMatch && !same_user() {
            // Only reachable from the cache; `verify` refuses a wrong user
            // itself. Someone else's password under another name is a guess:
            // the limits apply, although the cache answered.
            self.throttled(user, client, Instant::now())?;
            return Err(self.fail("wrong-user", user, id, client));
        }
        // Exact: never answered past its expiry second (see `reached`).
        if verified.expires_at.is_some_and(reached) {
            self.cache.evict(id);
            return Err(self.fail("expired", user, id, client));
        }
        if !limits::addr_allowed(&verified.allow_from, client) {
            audit::emit(AuditEvent::LimitDenied {
                peer: client,
                reason: "address-not-allowed",
                user: &verified.user,
                id,
                resource: None,
            });
            return Err(Reject::AddressNotAllowed {
                addr: client.to_canonical(),
            });
        }
        self.usage
            .record(&verified.id, unix, client, &verified.last_use);
        if !verified.granted.contains_all(required) {
            let missing = self.scopes.join(required.missing_from(verified.granted));
            let accepted = self.scopes.join(required);
            audit::emit(AuditEvent::ScopeDenied {
                peer: client,
                user: &verified.user,
                id,
                missing: &missing,
            });
            return Err(Reject::MissingScope { missing, accepted });
        }
        check_repo(&verified, client, demand.repo)?;
        Ok(verified)
    }

    /// Call before committing the revocation of `id`: from now on no
    /// cached verification of it is answered, including one a verification
    /// already running writes later ([`cache`] explains the generations).
    pub fn revoking(&self, id: &str) {
        self.cache.invalidate(id);
    }

    /// Call once the revocation of `id` is committed (also for ids revoked
    /// elsewhere): forgets it at once, and makes a verification that read
    /// the record before the commit unable to cache it.
    pub fn revoked(&self, id: &str) {
        self.cache.invalidate(id);
    }

    /// argon2id verifications `(running, waiting, capacity)` (for metrics).
    pub fn verify_load(&self) -> (usize, usize, usize) {
        self.verifier.load()
    }

    /// How many argon2id runs this gateway has started (tests and metrics).
    pub fn argon2_runs(&self) -> u64 {
        self.verifier.runs()
    }

    /// The store's revocation notifications were re-established: every
    /// verification cached until now is revalidated before its next use.
    pub fn resynced(&self) {
        self.cache.resync(Instant::now());
    }

    /// Writes pending "last used" facts to the store (blocking; call from a blocking task).
    pub fn flush_usage(&self) {
        let batch = self.usage.drain();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_usage(&batch) {
            tracing::error!(error = %e, "could not record last-used times");
        }
    }

    /// Periodic housekeeping: expired cache entries and refilled buckets.
    pub fn prune(&self) {
        let now = Instant::now();
        self.cache.prune(now);
        self.throttle.prune(now);
    }

    /// A stale cache entry renewed by one store read: the record must still be
    /// active and hold the very PHC string the secret verified against.
    async fn revalidate(
        &self,
        stale: &Arc<Verified>,
        secret: &str,
    ) -> Result<Option<Arc<Verified>>, Reject> {
        let generation = self.cache.generation(&stale.id);
        // The entry's age counts from the read, not from its end: a resync
        // in between makes it stale (see `Cache::resync`).
        let read_at = Instant::now();
        let Some(record) = self.load(&stale.id).await? else {
            self.cache.evict(&stale.id);
            return Ok(None);
        };
        if *record.hash != *stale.hash || record.status(unix_now()) != Status::Active {
            self.cache.evict(&stale.id);
            return Ok(None);
        }
        let Ok(fresh) = self.verified(&record) else {
            return Ok(None);
        };
        self.remember(secret, &fresh, read_at, generation);
        Ok(Some(fresh))
    }

    /// [`Self::verify`], at most once at a time per presented secret: when
    /// many connections present the same uncached password at once (a CI
    /// fan-out, a cold start), one runs argon2 and the others reuse its result
    /// instead of each burning ~20 MiB and tens of milliseconds.
    async fn verify_once(
        &self,
        user: &str,
        id: &str,
        secret: &str,
        client: IpAddr,
    ) -> Result<Arc<Verified>, Reject> {
        let key = self.cache.digest(secret);
        let flight = Flight {
            gate: self.flights.entry(key).or_default().clone(),
            flights: &self.flights,
            key,
        };
        let result = {
            let _turn = flight.gate.lock().await;
            match self.cache.lookup(id, secret, Instant::now()) {
                Lookup::Fresh(v) => Ok(v),
                Lookup::Stale(_) | Lookup::Miss => {
                    // One token per verified guess, taken before the
                    // verification so concurrent guesses cannot all pass.
                    match self.throttle.reserve(user, client, Instant::now()) {
                        Err(retry_after) => {
                            Err(rate_limited(User::Name(user), client, retry_after))
                        }
                        // Settled by the argon2id run's outcome, even if the
                        // client hangs up meanwhile; given back if the
                        // attempt ends before the run (queued, 503, 500).
                        Ok(reservation) => self.verify(user, id, secret, client, reservation).await,
                    }
                }
            }
        };
        drop(flight);
        result
    }

    async fn load(&self, id: &str) -> Result<Option<AppPassword>, Reject> {
        let store = self.store.clone();
        let id = id.to_owned();
        match tokio::task::spawn_blocking(move || store.get(&id)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "store lookup failed");
                Err(Reject::StoreUnavailable)
            }
            Err(e) => {
                tracing::error!(error = %e, "store lookup task failed");
                Err(Reject::StoreUnavailable)
            }
        }
    }

    /// Store lookup and argon2id verification on a cache miss; the caller
    /// has already charged the attempt to the throttle ([`Throttle::reserve`]).
    async fn verify(
        &self,
        user: &str,
        id: &str,
        secret: &str,
        client: IpAddr,
        reservation: Reservation,
    ) -> Result<Arc<Verified>, Reject> {
        // Before the record: a revocation committed after this read bumps it.
        let generation = self.cache.generation(id);
        let read_at = Instant::now();
        let record = self.load(id).await?;
        let phc = record.as_ref().map(|r| r.hash.as_str());
        // Whether a matching secret makes this attempt a success (the token
        // comes back) or still a refusal below (wrong user, revoked, expired).
        let admissible = record.as_ref().is_some_and(|r| {
            (self.username != UsernameMode::MustMatch || r.user == user)
                && r.status(unix_now()) == Status::Active
        });
        let matched = match self
            .verifier
            .verify_and(secret, phc, move |matched| {
                reservation.settle(matched && admissible);
            })
            .await
        {
            Ok(m) => m,
            Err(VerifyError::Overloaded) => {
                return Err(Reject::Overloaded {
                    retry_after: Duration::from_secs(1),
                })
            }
            Err(e) => {
                tracing::error!(error = %e, id, "verification failed");
                return Err(Reject::StoreUnavailable);
            }
        };
        let Some(record) = record else {
            return Err(self.refused("unknown-id", user, id, client));
        };
        if !matched {
            return Err(self.refused("wrong-secret", user, id, client));
        }
        if self.username == UsernameMode::MustMatch && record.user != user {
            return Err(self.refused("wrong-user", user, id, client));
        }
        match record.status(unix_now()) {
            Status::Active => {}
            Status::Revoked if record.rotated_to.is_some() => {
                self.rotated_reuse(&record, client).await;
                return Err(self.refused("revoked", user, id, client));
            }
            Status::Revoked => return Err(self.refused("revoked", user, id, client)),
            Status::Expired => return Err(self.refused("expired", user, id, client)),
        }
        let verified = self.verified(&record).map_err(|()| {
            tracing::error!(id, "stored record has scopes or a user that cannot be used");
            Reject::StoreUnavailable
        })?;
        self.remember(secret, &verified, read_at, generation);
        Ok(verified)
    }

    /// A password revoked by a rotation was presented with its right secret:
    /// audited; in `revoke` mode the lineage's current password goes too.
    async fn rotated_reuse(&self, record: &AppPassword, client: IpAddr) {
        let (current, revoked) = match self.revoke_lineage(record).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "could not follow a rotated password's lineage");
                (None, false)
            }
        };
        let action = if revoked { "revoked-current" } else { "logged" };
        // Only a holder of the old secret gets here, yet it is still a
        // client-triggered line: bounded like a failure.
        audit::emit(AuditEvent::RotatedReuse {
            peer: client,
            user: &record.user,
            id: &record.id,
            current: current.as_deref(),
            action,
        });
        if let Some(current) = current.as_deref().filter(|_| revoked) {
            audit::emit(AuditEvent::Revoked {
                via: Via::RotatedReuse,
                id: current,
            });
        }
    }

    /// The lineage's current password (not `record` itself), revoked when
    /// `rotated_reuse = "revoke"` and still active: (its id, revoked now).
    async fn revoke_lineage(
        &self,
        record: &AppPassword,
    ) -> Result<(Option<String>, bool), Box<dyn std::error::Error + Send + Sync>> {
        let store = self.store.clone();
        let id = record.id.clone();
        let current = tokio::task::spawn_blocking(move || store.lineage_current(&id)).await??;
        let Some(current) = current.filter(|c| c.id != record.id) else {
            return Ok((None, false));
        };
        if self.rotated_reuse != RotatedReuse::Revoke || current.is_revoked(unix_now()) {
            return Ok((Some(current.id), false));
        }
        self.revoking(&current.id);
        let store = self.store.clone();
        let target = current.id.clone();
        let outcome =
            tokio::task::spawn_blocking(move || store.revoke(&target, unix_now())).await?;
        self.revoked(&current.id);
        outcome?;
        Ok((Some(current.id), true))
    }

    fn verified(&self, r: &AppPassword) -> Result<Arc<Verified>, ()> {
        // A scope removed from the vocabulary since creation grants nothing.
        let known: Vec<String> = r
            .scopes
            .iter()
            .filter(|s| self.scopes.all_names().contains(s))
            .cloned()
            .collect();
        let granted = self.scopes.granted(&known).map_err(|_| ())?;
        let header = |s: &str| HeaderValue::from_str(s).map_err(|_| ());
        Ok(Arc::new(Verified {
            id: r.id.as_str().into(),
            hash: r.hash.as_str().into(),
            user: r.user.as_str().into(),
            granted,
            expires_at: r.stops_at(),
            expires_header: r.stops_at().map(expires_header).transpose()?,
            repos: r.repos.iter().map(|s| Box::from(s.as_str())).collect(),
            allow_from: r.allow_from.clone().into_boxed_slice(),
            user_header: header(&r.user)?,
            scopes_header: header(&self.scopes.join(granted))?,
            id_header: header(&r.id)?,
            last_use: Default::default(),
        }))
    }

    /// A credential failure: charged to the throttle, audited, one 401 body.
    fn fail(&self, reason: &'static str, user: &str, id: &str, client: IpAddr) -> Reject {
        self.throttle.record_failure(user, client, Instant::now());
        self.refused(reason, user, id, client)
    }

    /// A credential failure whose attempt was already charged.
    fn refused(&self, reason: &'static str, user: &str, id: &str, client: IpAddr) -> Reject {
        audit_failure(reason, User::Name(user), id, client);
        Reject::Unauthorized(INVALID)
    }
}

/// The brute-force limits of `[auth] rate_limit`.
fn throttle_config(cfg: &config::Auth) -> ThrottleConfig {
    let limit = |b: config::Bucket| Limit {
        burst: b.burst,
        per: b.per,
    };
    ThrottleConfig {
        per_user_addr: limit(cfg.rate_limit.per_user_addr),
        per_addr: limit(cfg.rate_limit.per_addr),
        max_entries: cfg.rate_limit.max_entries,
    }
}

type Gates = DashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>;

/// A request's place at the single-flight gate of the secret it presents.
/// The last one out removes the gate, also when its request is abandoned
/// half-way (client gone): otherwise every abandoned guess left an entry.
struct Flight<'a> {
    gate: Arc<tokio::sync::Mutex<()>>,
    flights: &'a Gates,
    key: [u8; 32],
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        // The map holds one reference, this guard another.
        self.flights
            .remove_if(&self.key, |_, g| Arc::strong_count(g) <= 2);
    }
}

/// The `--repo` limit against the route's resource (no work for an
/// unlimited password: the resource is rendered only when needed).
fn check_repo(verified: &Verified, client: IpAddr, repo: Repo<'_>) -> Result<(), Reject> {
    if verified.repos.is_empty() {
        return Ok(());
    }
    let resource = match repo {
        Repo::Exempt => return Ok(()),
        Repo::Unnamed => None,
        Repo::Named(resource, path) => resource.render(path),
    };
    if resource
        .as_deref()
        .is_some_and(|r| limits::repo_allowed(&verified.repos, r))
    {
        return Ok(());
    }
    audit::emit(AuditEvent::LimitDenied {
        peer: client,
        reason: "repository-not-allowed",
        user: &verified.user,
        id: &verified.id,
        resource: resource.as_deref(),
    });
    Err(Reject::RepoNotAllowed {
        resource,
        allowed: verified.repos.join(", "),
    })
}

/// `X-App-Password-Expires` for a stop time: RFC 3339 UTC, seconds.
fn expires_header(unix: u64) -> Result<HeaderValue, ()> {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(unix);
    HeaderValue::from_str(&humantime::format_rfc3339_seconds(at).to_string()).map_err(|_| ())
}

fn rate_limited(user: User<'_>, client: IpAddr, retry_after: Duration) -> Reject {
    audit::emit(AuditEvent::RateLimited {
        peer: client,
        user,
        retry_after,
    });
    Reject::RateLimited { retry_after }
}

/// A request for the challenge: the 401 of a request without credentials.
fn challenge(client: IpAddr) -> Reject {
    tracing::debug!(peer = %client, "credentials without a password: challenge sent");
    Reject::Unauthorized(MISSING)
}

fn audit_failure(reason: &'static str, user: User<'_>, id: &str, client: IpAddr) {
    audit::emit(AuditEvent::AuthFailed {
        peer: client,
        reason,
        user,
        id,
    });
}

fn basic_reason(e: &BasicError) -> &'static str {
    match e {
        BasicError::Multiple => "multiple-authorization",
        BasicError::NotBasic => "not-basic",
        BasicError::TooLong => "authorization-too-long",
        BasicError::BadBase64 => "bad-base64",
        BasicError::NotUtf8 => "not-utf8",
        BasicError::NoPassword => "no-password",
        BasicError::BadUser => "bad-user",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_config(auth_extra: &str) -> config::Config {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[auth]\n{auth_extra}\n\
             [upstreams.app]\nurl = \"http://127.0.0.1:1\"\n\
             [[routes]]\nname = \"all\"\npath = \"/**\"\naccess = \"app-password\"\n\
             scopes = [\"repository:read\"]\nupstream = \"app\"\n"
        );
        config::Config::parse(std::path::Path::new("test.toml"), &text).unwrap()
    }

    fn authenticator(dir: &std::path::Path, auth_extra: &str) -> Authenticator {
        let config = test_config(auth_extra);
        let store = Arc::new(Store::open(&dir.join("store.redb")).unwrap());
        Authenticator::new(store, config.scopes.clone(), &config.auth).unwrap()
    }

    fn basic_header(user: &str, password: &str) -> HeaderMap {
        let value = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:{password}")
            )
        );
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    /// Basic credentials for `user` with a made-up, well-formed token.
    fn guess(user: &str) -> HeaderMap {
        basic_header(user, token::NewToken::generate().token().expose())
    }

    // The held lock stops the argon2id thread, never a reactor thread.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn an_abandoned_verification_leaves_no_gate_behind() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path(), "");
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        // No argon2id run can end meanwhile: every attempt is dropped mid-way.
        let held = auth.verifier.hold.lock().unwrap();
        for _ in 0..5 {
            let headers = guess("mallory");
            let attempt =
                auth.authenticate(&headers, client, Demand::scopes(ScopeSet::default()), None);
            let abandoned = tokio::time::timeout(Duration::from_millis(2), attempt).await;
            assert!(abandoned.is_err(), "a held verification finished");
        }
        assert!(auth.flights.is_empty(), "{} gates left", auth.flights.len());
        drop(held);
    }

    /// Polls `attempts` until `n` argon2id runs have started (none can end:
    /// the caller holds the verifier's lock), then drops them.
    async fn abandon_once_running<F: std::future::Future>(
        auth: &Authenticator,
        n: u64,
        attempts: Vec<F>,
    ) {
        let mut attempts: Vec<_> = attempts.into_iter().map(Box::pin).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while auth.argon2_runs() < n {
            assert!(Instant::now() < deadline, "no argon2 run started");
            for a in &mut attempts {
                let polled = tokio::time::timeout(Duration::from_millis(1), a.as_mut()).await;
                assert!(polled.is_err(), "a held verification finished");
            }
        }
    }

    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn an_abandoned_guess_pays_only_once_its_argon2_run_began() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(
            dir.path(),
            "verify_threads = 1\n[auth.rate_limit]\nper_user_addr = { burst = 3, per = \"1m\" }\n",
        );
        let client: IpAddr = "192.0.2.8".parse().unwrap();
        // Two guesses at once with one verification thread: one runs argon2id,
        // the other waits for the thread; both clients leave meanwhile.
        let (a, b) = (guess("mallory"), guess("mallory"));
        let held = auth.verifier.hold.lock().unwrap();
        abandon_once_running(
            &auth,
            1,
            vec![
                auth.authenticate(&a, client, Demand::scopes(ScopeSet::default()), None),
                auth.authenticate(&b, client, Demand::scopes(ScopeSet::default()), None),
            ],
        )
        .await;
        drop(held);
        // Exactly one token of three is gone: the started run's.
        let now = Instant::now();
        let first = auth.throttle.reserve("mallory", client, now).unwrap();
        let second = auth.throttle.reserve("mallory", client, now).unwrap();
        assert!(auth.throttle.reserve("mallory", client, now).is_err());
        drop((first, second));
    }

    fn create_alice(auth: &Authenticator, extra: &str) -> crate::manage::Created {
        let request = crate::manage::CreateRequest {
            user: "alice".into(),
            name: "ci".into(),
            scopes: vec!["repository:read".into()],
            expires_in: None,
            repos: Vec::new(),
            allow_from: Vec::new(),
        };
        crate::manage::create(&auth.store, &test_config(extra), &request).unwrap()
    }

    /// Waits (with a deadline) until `n` argon2id runs have started.
    async fn runs_started(auth: &Authenticator, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while auth.argon2_runs() < n {
            assert!(Instant::now() < deadline, "no argon2 run started");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    // The held lock stops the argon2id thread, never a reactor thread.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_verification_running_during_a_revocation_cannot_cache_it() {
        // Issue #21 item 1: the record is read, then the revocation commits
        // while argon2id runs, then the run ends and writes the cache.
        let dir = tempfile::tempdir().unwrap();
        let auth = Arc::new(authenticator(dir.path(), ""));
        let created = create_alice(&auth, "");
        let headers = basic_header("alice", &created.password);
        let client: IpAddr = "192.0.2.10".parse().unwrap();
        let hold = auth.verifier.hold.clone();
        let held = hold.lock().unwrap();
        let first = {
            let (auth, headers) = (auth.clone(), headers.clone());
            tokio::spawn(async move {
                auth.authenticate(&headers, client, Demand::scopes(ScopeSet::default()), None)
                    .await
                    .map(|_| ())
            })
        };
        runs_started(&auth, 1).await; // the record has been read
        auth.revoking(&created.id);
        crate::manage::revoke(&auth.store, &created.id).unwrap();
        auth.revoked(&created.id);
        drop(held);
        // In flight before the revocation returned: either answer is fine.
        let _ = first.await.unwrap();
        let after = auth
            .authenticate(&headers, client, Demand::scopes(ScopeSet::default()), None)
            .await;
        assert!(
            matches!(after, Err(Reject::Unauthorized(_))),
            "a revoked password still works: {after:?}"
        );
    }

    #[tokio::test]
    async fn every_argon2_run_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path(), "");
        let created = create_alice(&auth, "");
        let client: IpAddr = "192.0.2.11".parse().unwrap();
        let headers = basic_header("alice", &created.password);
        assert_eq!(auth.argon2_runs(), 0);
        for _ in 0..3 {
            auth.authenticate(&headers, client, Demand::scopes(ScopeSet::default()), None)
                .await
                .unwrap();
        }
        assert_eq!(auth.argon2_runs(), 1, "the cache answered the later two");
        let _ = auth
            .authenticate(
                &guess("alice"),
                client,
                Demand::scopes(ScopeSet::default()),
                None,
            )
            .await;
        assert_eq!(auth.argon2_runs(), 2);
    }

    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn a_right_password_abandoned_mid_verification_gets_its_token_back() {
        // A cancelled clone must not cost its user a try: the argon2id run
        // settles the token by its outcome, whether or not the client waits.
        let dir = tempfile::tempdir().unwrap();
        let extra =
            "verify_threads = 1\n[auth.rate_limit]\nper_user_addr = { burst = 1, per = \"1h\" }\n";
        let auth = authenticator(dir.path(), extra);
        let created = create_alice(&auth, extra);
        let client: IpAddr = "192.0.2.9".parse().unwrap();
        let headers = basic_header("alice", &created.password);
        let held = auth.verifier.hold.lock().unwrap();
        let attempt =
            auth.authenticate(&headers, client, Demand::scopes(ScopeSet::default()), None);
        abandon_once_running(&auth, 1, vec![attempt]).await;
        assert!(
            auth.throttle
                .check("alice", client, Instant::now())
                .is_err(),
            "no token taken"
        );
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(30);
        while auth
            .throttle
            .check("alice", client, Instant::now())
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the right password's token never came back"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
