//! The short-lived cache of successful verifications.
//!
//! What is cached is only "this secret verified for this id": the key is the
//! public id, the entry holds a keyed BLAKE3 digest of the whole presented
//! secret (never the plaintext; the key is random per process) and the record's
//! facts needed on every request (user, granted scopes, expiry). The caller
//! still checks user, scopes and expiry on every request, cached or not, so no
//! route, user name or expiry can ride on an earlier success (the bug class of
//! CVE-2021-32701). A failure is never cached; revocation evicts at once.
//!
//! Revocation generations close the race between a verification already
//! running and a revocation (DESIGN invariant 2): a verifier reads the id's
//! generation ([`Cache::generation`]) *before* it reads the record, and the
//! entry it writes carries that generation; a revocation bumps the generation
//! before its store commit and again after it ([`Cache::invalidate`]). An
//! entry is answered only while its generation is the current one, so a
//! verification that read the record before the commit can write its entry
//! late, but never have it answered. Generations live in a fixed array of
//! atomic slots indexed by a hash of the id (ids sharing a slot only cost an
//! extra revalidation), so they take no lock and never grow.
//!
//! After `ttl` an entry is *stale*: it no longer proves anything by itself,
//! but it remembers which PHC hash the secret verified against. The caller
//! then re-reads the record (a cheap store read) and, if the record still
//! holds that very hash and is active, renews the entry without running
//! argon2 again: argon2 is deterministic, so the same secret against the same
//! PHC string gives the same answer. Stale entries are dropped after
//! `STALE_FOR` TTLs.
//!
//! A gateway that shares its store with others may have missed revocations
//! while its notification connection was down; [`Cache::resync`] then makes
//! every entry verified before that instant stale, whatever its age.
//!
//! A second, smaller map remembers what an `Authorization` header value
//! decoded to ([`Cache::presented`]): keyed by a keyed BLAKE3 digest of the
//! whole value (its own random key; the value itself is never kept), it
//! holds the user name, the id and the secret's keyed digest. Decoding is a
//! pure function of the value, so this map grants nothing by itself: a hit
//! is answered only when the id's entry above is fresh for that very secret
//! digest (compared in constant time) and generation, exactly as a
//! [`Cache::lookup`] would answer. Revocation, staleness and resync thus
//! stop a remembered header as fast as a decoded one. Only values that
//! decoded to a fresh verification are remembered, at most `capacity` of
//! them; [`Cache::prune`] drops those whose id's entry is gone.
//!
//! A connection remembers the last `Authorization` value it presented that
//! was answered from a fresh verification ([`Recent`]): its next request
//! with the very same bytes (compared in constant time: a proxy in front
//! may carry several users' requests on one connection) skips the value's
//! digest and both maps: the connection holds the id's entry that answered
//! the value, answered only while that entry is still the id's one in the
//! map and checked for freshness and generation exactly as
//! [`Cache::presented`] checks it. Keep-alive clients (git, CI scripts) send
//! the same header on every request of a connection; the value is kept in
//! the connection's memory only while the connection lives, and zeroed
//! when replaced or dropped.
//!
//! DashMap shards the map, so concurrent requests never take a global lock.
//! Its keys are public ids that only a successful verification inserts, so
//! a client cannot fill it with colliding keys: the map and the generation
//! slots hash with foldhash (seeded per process) rather than SipHash.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::HeaderValue;
use ipnet::IpNet;

use zeroize::{Zeroize, Zeroizing};

use crate::scopes::ScopeSet;

/// How many TTLs a stale entry is kept for revalidation.
const STALE_FOR: u32 = 10;
/// Revocation-generation slots (a power of two).
const GENERATIONS: usize = 4096;

/// What a successful verification established about an app password.
#[derive(Debug)]
pub struct Verified {
    pub id: Arc<str>,
    /// The PHC string the secret verified against (a hash, not a secret).
    pub hash: Box<str>,
    pub user: Arc<str>,
    pub granted: ScopeSet,
    /// When the password stops working: its expiry, or the end of a
    /// rotation's grace period, whichever comes first.
    pub expires_at: Option<u64>,
    /// `X-App-Password-Expires` for `expires_at` (RFC 3339 UTC), built once.
    pub expires_header: Option<HeaderValue>,
    /// Repositories the password is limited to (empty: any).
    pub repos: Box<[Box<str>]>,
    /// Client networks the password is limited to (empty: any).
    pub allow_from: Box<[IpNet]>,
    /// Identity header values, built once per verification, not per request.
    pub user_header: HeaderValue,
    pub scopes_header: HeaderValue,
    pub id_header: HeaderValue,
    /// The last use recorded for this verification (see `usage.rs`).
    pub last_use: crate::auth::usage::LastUse,
}

#[derive(Debug)]
struct Entry {
    /// Compared in constant time (`blake3::Hash`'s `PartialEq`).
    digest: blake3::Hash,
    until: Instant,
    /// The id's revocation generation read before its record was.
    generation: u64,
    /// The id's generation slot, hashed once here rather than per lookup.
    slot: usize,
    /// Set once the entry left the map (evicted, replaced, pruned): a
    /// connection's [`Recent`] that still points at it no longer finds it.
    gone: AtomicBool,
    verified: Arc<Verified>,
}

/// What an `Authorization` value decoded to, under the value's keyed digest.
#[derive(Debug)]
struct Presented {
    /// The secret's keyed digest, as the id's [`Entry`] holds it.
    secret: blake3::Hash,
    id: Arc<str>,
    user: Arc<str>,
}

/// One connection's last answered `Authorization` value ([`Cache::recent`]).
#[derive(Debug, Default)]
pub struct Recent {
    last: std::sync::Mutex<Option<RecentValue>>,
}

#[derive(Debug)]
struct RecentValue {
    /// The whole header value as presented; zeroed when replaced or dropped.
    value: Zeroizing<Vec<u8>>,
    /// The id's entry the value answered from, for its secret digest: held
    /// rather than looked up again, and answered only while still in the map.
    entry: Arc<Entry>,
    user: Arc<str>,
}

impl Recent {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<RecentValue>> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What an `Authorization` value decoded to, with the fresh verification
/// it answers for: what [`Cache::presented`] and [`Cache::recent`] find,
/// and what [`Cache::remember_presented`] and [`Cache::remember_recent`]
/// keep.
#[derive(Debug)]
pub struct Decoded {
    pub verified: Arc<Verified>,
    /// The user name the value carried.
    pub user: Arc<str>,
    /// The secret's keyed digest.
    pub secret: blake3::Hash,
}

/// The answer of [`Cache::lookup`].
#[derive(Debug)]
pub enum Lookup {
    /// Verified within the TTL.
    Fresh(Arc<Verified>),
    /// The same secret verified once, longer ago than the TTL: revalidate.
    Stale(Arc<Verified>),
    Miss,
}

/// id → last successful verification, for `ttl`.
#[derive(Debug)]
pub struct Cache {
    map: DashMap<Box<str>, Arc<Entry>, foldhash::fast::RandomState>,
    key: [u8; 32],
    /// `Authorization` value digest → what it decoded to ([`Cache::presented`]).
    presented: DashMap<blake3::Hash, Presented, foldhash::fast::RandomState>,
    /// Keys the digests of whole `Authorization` values.
    presented_key: [u8; 32],
    ttl: Duration,
    capacity: usize,
    /// Revocation generations by slot of the id: bumped around every revocation.
    generations: Box<[AtomicU64]>,
    slot_hasher: foldhash::fast::RandomState,
    /// Entries verified before `epoch` + this many nanoseconds are stale
    /// ([`Cache::resync`]); 0 until the first resync. An atomic, so a lookup
    /// reads it without a lock.
    stale_before: AtomicU64,
    epoch: Instant,
}

impl Cache {
    pub fn new(ttl: Duration, capacity: usize) -> Cache {
        Cache {
            map: DashMap::default(),
            key: rand::random(),
            presented: DashMap::default(),
            presented_key: rand::random(),
            ttl,
            capacity,
            generations: (0..GENERATIONS).map(|_| AtomicU64::new(0)).collect(),
            slot_hasher: foldhash::fast::RandomState::default(),
            stale_before: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Every entry verified before `now` is stale from now on.
    pub fn resync(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        self.stale_before.fetch_max(
            u64::try_from(nanos).unwrap_or(u64::MAX).max(1),
            Ordering::SeqCst,
        );
    }

    /// The revocation generation of `id`: read it before reading the record
    /// whose verification [`Cache::insert`] will remember.
    pub fn generation(&self, id: &str) -> u64 {
        self.generations[self.slot(id)].load(Ordering::Acquire)
    }

    /// Makes every entry of `id` written so far, or written later from a
    /// record read before now, unanswerable; called before a revocation's
    /// store commit and again after it.
    pub fn invalidate(&self, id: &str) {
        self.generations[self.slot(id)].fetch_add(1, Ordering::AcqRel);
        self.evict(id);
    }

    fn slot(&self, id: &str) -> usize {
        (self.slot_hasher.hash_one(id) as usize) & (GENERATIONS - 1)
    }

    /// The cached verification of `id` for exactly this `secret`.
    pub fn lookup(&self, id: &str, secret: &str, now: Instant) -> Lookup {
        self.lookup_digest(id, &self.keyed(secret), now)
    }

    /// [`Cache::lookup`] for a secret given by its keyed digest ([`Cache::keyed`]).
    pub fn lookup_digest(&self, id: &str, digest: &blake3::Hash, now: Instant) -> Lookup {
        let Some(entry) = self.map.get(id) else {
            return Lookup::Miss;
        };
        // `blake3::Hash` compares in constant time.
        if entry.digest != *digest {
            return Lookup::Miss;
        }
        self.answer(&entry, now)
    }

    /// What an entry found for the presented secret answers at `now`.
    fn answer(&self, entry: &Entry, now: Instant) -> Lookup {
        if entry.generation != self.generations[entry.slot].load(Ordering::Acquire) {
            return Lookup::Miss;
        }
        if now < entry.until && !self.resynced_since(entry.until) {
            Lookup::Fresh(entry.verified.clone())
        } else if now < entry.until + self.ttl * STALE_FOR {
            Lookup::Stale(entry.verified.clone())
        } else {
            Lookup::Miss
        }
    }

    /// Whether a resync happened after the verification of an entry valid
    /// until `until` (verified at `until - ttl`).
    fn resynced_since(&self, until: Instant) -> bool {
        let before = self.stale_before.load(Ordering::SeqCst);
        before != 0 && until <= self.epoch + Duration::from_nanos(before) + self.ttl
    }

    /// The keyed digest of a presented secret (also the single-flight key).
    pub fn digest(&self, secret: &str) -> [u8; 32] {
        *self.keyed(secret).as_bytes()
    }

    /// The keyed digest of a presented secret, as entries hold it.
    pub fn keyed(&self, secret: &str) -> blake3::Hash {
        blake3::keyed_hash(&self.key, secret.as_bytes())
    }

    /// The fresh verification, and the user name, of a whole `Authorization`
    /// value remembered by [`Cache::remember_presented`]: answered only when
    /// [`Cache::lookup`] would answer `Fresh` for the secret it decoded to.
    /// `None` (decode it) otherwise.
    pub fn presented(&self, value: &[u8], now: Instant) -> Option<Decoded> {
        let (secret, id, user) = {
            let p = self.presented.get(&self.keyed_value(value))?;
            (p.secret, p.id.clone(), p.user.clone())
        };
        match self.lookup_digest(&id, &secret, now) {
            Lookup::Fresh(verified) => Some(Decoded {
                verified,
                user,
                secret,
            }),
            Lookup::Stale(_) | Lookup::Miss => None,
        }
    }

    /// [`Cache::presented`] for the value this connection presented last:
    /// no digest of the value and no map lookup, only the id's entry.
    /// The entry is the one held since [`Cache::remember_recent`], as long
    /// as it is still the id's entry in the map.
    pub fn recent(&self, recent: &Recent, value: &[u8], now: Instant) -> Option<Decoded> {
        let last = recent.lock();
        let last = last.as_ref()?;
        if !same_bytes(&last.value, value) || last.entry.gone.load(Ordering::Acquire) {
            return None;
        }
        match self.answer(&last.entry, now) {
            Lookup::Fresh(verified) => Some(Decoded {
                verified,
                user: last.user.clone(),
                secret: last.entry.digest,
            }),
            Lookup::Stale(_) | Lookup::Miss => None,
        }
    }

    /// Remembers, for this connection, what `value` decoded to (its
    /// verification just answered `Fresh`).
    pub fn remember_recent(&self, recent: &Recent, value: &[u8], decoded: &Decoded) {
        if self.ttl.is_zero() {
            return;
        }
        // The entry that answered `decoded`; none (nothing remembered) if
        // it has been replaced or removed since.
        let Some(entry) = self
            .map
            .get(&*decoded.verified.id)
            .filter(|e| e.digest == decoded.secret && Arc::ptr_eq(&e.verified, &decoded.verified))
            .map(|e| Arc::clone(&e))
        else {
            return;
        };
        let user = same_user(decoded);
        let mut last = recent.lock();
        match &mut *last {
            Some(r) => {
                // Reuses the buffer: zeroed, then overwritten.
                r.value.zeroize();
                r.value.extend_from_slice(value);
                r.entry = entry;
                r.user = user.clone();
            }
            None => {
                *last = Some(RecentValue {
                    value: Zeroizing::new(value.to_vec()),
                    entry,
                    user: user.clone(),
                });
            }
        }
    }

    /// Remembers what the `Authorization` value `value` decoded to (its
    /// verification just answered `Fresh`). When full, every remembered value is
    /// forgotten: one holder of a valid password can spell its header in
    /// many ways, and a scan for dead values on each of those would cost
    /// every request the whole map; a clear costs each value one decoding.
    pub fn remember_presented(&self, value: &[u8], decoded: &Decoded) {
        if self.ttl.is_zero() {
            return;
        }
        if self.presented.len() >= self.capacity {
            self.presented.clear();
        }
        let presented = Presented {
            secret: decoded.secret,
            id: decoded.verified.id.clone(),
            user: same_user(decoded).clone(),
        };
        self.presented.insert(self.keyed_value(value), presented);
    }

    fn keyed_value(&self, value: &[u8]) -> blake3::Hash {
        blake3::keyed_hash(&self.presented_key, value)
    }

    /// Forgets remembered values whose id no longer has an entry for their secret.
    fn prune_presented(&self) {
        self.presented
            .retain(|_, p| self.map.get(&*p.id).is_some_and(|e| e.digest == p.secret));
    }

    /// Remembers a successful verification (skipped when the cache is full of
    /// live entries: correctness never depends on the cache). `generation`
    /// is [`Cache::generation`] as read before the record was.
    pub fn insert(&self, secret: &str, verified: Arc<Verified>, now: Instant, generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        if self.map.len() >= self.capacity {
            self.prune(now);
            if self.map.len() >= self.capacity {
                return;
            }
        }
        let entry = Entry {
            digest: self.keyed(secret),
            until: now + self.ttl,
            generation,
            slot: self.slot(&verified.id),
            gone: AtomicBool::new(false),
            verified: verified.clone(),
        };
        if let Some(old) = self.map.insert(Box::from(&*verified.id), Arc::new(entry)) {
            old.gone.store(true, Ordering::Release);
        }
    }

    /// Forgets `id` at once (revocation).
    pub fn evict(&self, id: &str) {
        if let Some((_, old)) = self.map.remove(id) {
            old.gone.store(true, Ordering::Release);
        }
    }

    /// Drops entries too old even to revalidate.
    pub fn prune(&self, now: Instant) {
        let keep = self.ttl * STALE_FOR;
        self.map.retain(|_, e| {
            let alive = now < e.until + keep;
            if !alive {
                e.gone.store(true, Ordering::Release);
            }
            alive
        });
        self.prune_presented();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The user name `decoded` carried, as the verification's own `Arc` when
/// they are equal (the usual case): the per-request check that they match
/// (`Authenticator::finish`) then finds them the same pointer before it
/// compares any byte.
fn same_user(decoded: &Decoded) -> &Arc<str> {
    if *decoded.user == *decoded.verified.user {
        &decoded.verified.user
    } else {
        &decoded.user
    }
}

/// Whether `a` and `b` hold the same bytes, in time that depends only on
/// their lengths: eight bytes at a time, differences OR-ed together, no
/// early exit. (`subtle`'s slice comparison reads each byte through an
/// optimisation barrier: about fifteen times the cost on a 70-byte header.)
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_tail) = a.as_chunks::<8>();
    let (b_words, b_tail) = b.as_chunks::<8>();
    let mut diff = 0u64;
    for (x, y) in a_words.iter().zip(b_words) {
        diff |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in a_tail.iter().zip(b_tail) {
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
impl Verified {
    /// A verification of `id` for `user`, no scopes, no limits: for tests.
    pub(crate) fn sample(id: &str, user: &str) -> Arc<Verified> {
        Arc::new(Verified {
            id: id.into(),
            hash: "$argon2id$test".into(),
            user: user.into(),
            granted: ScopeSet::EMPTY,
            expires_at: None,
            expires_header: None,
            repos: Box::new([]),
            allow_from: Box::new([]),
            user_header: HeaderValue::from_str(user).unwrap_or(HeaderValue::from_static("-")),
            scopes_header: HeaderValue::from_static(""),
            id_header: HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("-")),
            last_use: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(id: &str) -> Arc<Verified> {
        Verified::sample(id, "alice")
    }

    #[test]
    fn hit_only_with_the_same_secret() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        c.insert("secret-a", verified("id1"), now, 0);
        assert!(matches!(c.lookup("id1", "secret-a", now), Lookup::Fresh(_)));
        assert!(matches!(c.lookup("id1", "secret-b", now), Lookup::Miss));
        assert!(matches!(c.lookup("id2", "secret-a", now), Lookup::Miss));
    }

    #[test]
    fn entries_go_stale_after_ttl_then_away() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        c.insert("s", verified("id1"), now, 0);
        let at = |s: u64| now + Duration::from_secs(s);
        assert!(matches!(c.lookup("id1", "s", at(29)), Lookup::Fresh(_)));
        assert!(matches!(c.lookup("id1", "s", at(30)), Lookup::Stale(_)));
        assert!(
            matches!(c.lookup("id1", "x", at(30)), Lookup::Miss),
            "stale needs the same secret"
        );
        assert!(matches!(c.lookup("id1", "s", at(30 * 11)), Lookup::Miss));
        c.prune(at(30 * 11));
        assert!(c.is_empty());
    }

    #[test]
    fn eviction_is_immediate() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        c.insert("s", verified("id1"), now, 0);
        c.evict("id1");
        assert!(matches!(c.lookup("id1", "s", now), Lookup::Miss));
    }

    #[test]
    fn an_entry_written_after_an_invalidation_from_an_older_read_is_never_answered() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        let before = c.generation("id1");
        c.invalidate("id1"); // a revocation commits meanwhile
        c.insert("s", verified("id1"), now, before);
        assert!(matches!(c.lookup("id1", "s", now), Lookup::Miss));
        c.insert("s", verified("id1"), now, c.generation("id1"));
        assert!(matches!(c.lookup("id1", "s", now), Lookup::Fresh(_)));
    }

    #[test]
    fn capacity_is_a_bound() {
        let c = Cache::new(Duration::from_secs(30), 2);
        let now = Instant::now();
        for i in 0..5 {
            c.insert("s", verified(&format!("id{i}")), now, 0);
        }
        assert_eq!(c.len(), 2);
        // Entries too old to revalidate make room.
        let later = now + Duration::from_secs(30 * 11);
        c.insert("s", verified("late"), later, 0);
        assert!(matches!(c.lookup("late", "s", later), Lookup::Fresh(_)));
    }

    #[test]
    fn zero_ttl_disables_caching() {
        let c = Cache::new(Duration::ZERO, 10);
        c.insert("s", verified("id1"), Instant::now(), 0);
        assert!(c.is_empty());
    }

    #[test]
    fn resync_makes_earlier_entries_stale_and_later_ones_fresh() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        c.insert("s", verified("old"), now, 0);
        let later = now + Duration::from_secs(1);
        c.resync(later);
        assert!(matches!(c.lookup("old", "s", later), Lookup::Stale(_)));
        // Renewed (verified again) after the resync: fresh again.
        let renewed = later + Duration::from_millis(1);
        c.insert("s", verified("old"), renewed, 0);
        assert!(matches!(c.lookup("old", "s", renewed), Lookup::Fresh(_)));
        // A verification whose store read began before the resync is stale.
        c.insert("s", verified("racing"), now + Duration::from_millis(500), 0);
        assert!(matches!(c.lookup("racing", "s", renewed), Lookup::Stale(_)));
    }

    /// Inserts `id` for `secret`: what alice's value for it decodes to.
    fn fresh(c: &Cache, id: &str, secret: &str, now: Instant) -> Decoded {
        c.insert(secret, verified(id), now, c.generation(id));
        let Lookup::Fresh(verified) = c.lookup(id, secret, now) else {
            panic!("not fresh");
        };
        Decoded {
            verified,
            user: "alice".into(),
            secret: c.keyed(secret),
        }
    }

    /// Inserts `id` for `secret` and remembers `value` as decoding to it.
    fn remembered(c: &Cache, value: &str, id: &str, secret: &str, now: Instant) {
        c.remember_presented(value.as_bytes(), &fresh(c, id, secret, now));
    }

    #[test]
    fn a_remembered_value_answers_only_while_its_secret_is_fresh() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        remembered(&c, "Basic one", "id1", "s", now);
        let hit = c.presented(b"Basic one", now).expect("remembered");
        assert_eq!(&*hit.user, "alice");
        assert_eq!(hit.secret, c.keyed("s"));
        assert!(c.presented(b"Basic onE", now).is_none());
        assert!(c.presented(b"Basic one ", now).is_none());
        // Stale: decoded again, so the caller renews it.
        assert!(c
            .presented(b"Basic one", now + Duration::from_secs(30))
            .is_none());
        // Another secret verified for the id since: the old value is not it.
        c.insert("t", verified("id1"), now, c.generation("id1"));
        assert!(c.presented(b"Basic one", now).is_none());
    }

    #[test]
    fn a_remembered_value_stops_at_revocation_and_resync() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        remembered(&c, "Basic one", "id1", "s", now);
        let before = c.generation("id1");
        c.invalidate("id1");
        assert!(c.presented(b"Basic one", now).is_none());
        // A verification that read the record before the revocation.
        c.insert("s", verified("id1"), now, before);
        assert!(c.presented(b"Basic one", now).is_none());

        remembered(&c, "Basic two", "id2", "s", now);
        let later = now + Duration::from_secs(1);
        c.resync(later);
        assert!(c.presented(b"Basic two", later).is_none());
    }

    #[test]
    fn same_bytes_compares_every_byte() {
        let a: Vec<u8> = (0..70).collect();
        assert!(same_bytes(&a, &a.clone()));
        assert!(same_bytes(b"", b""));
        assert!(!same_bytes(&a, &a[..69]));
        for i in 0..a.len() {
            let mut b = a.clone();
            b[i] ^= 0x80;
            assert!(!same_bytes(&a, &b), "byte {i}");
        }
    }

    /// Remembers `value` on `recent` as decoding to `id`'s fresh `secret`.
    fn recently(c: &Cache, recent: &Recent, value: &str, id: &str, secret: &str, now: Instant) {
        c.remember_recent(recent, value.as_bytes(), &fresh(c, id, secret, now));
    }

    #[test]
    fn a_connections_recent_value_answers_only_the_same_bytes_while_fresh() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        let recent = Recent::default();
        assert!(c.recent(&recent, b"Basic one", now).is_none());
        recently(&c, &recent, "Basic one", "id1", "s", now);
        let hit = c.recent(&recent, b"Basic one", now).expect("recent");
        assert_eq!((&*hit.verified.id, &*hit.user), ("id1", "alice"));
        for other in [&b"Basic onE"[..], b"Basic one ", b"Basic on", b""] {
            assert!(c.recent(&recent, other, now).is_none(), "{other:?}");
        }
        // Another connection has not presented it.
        assert!(c.recent(&Recent::default(), b"Basic one", now).is_none());
        // Stale after the TTL: decoded and renewed by the caller.
        assert!(c
            .recent(&recent, b"Basic one", now + Duration::from_secs(30))
            .is_none());
        // Another secret verified for the id since: the old value is not it.
        c.insert("t", verified("id1"), now, c.generation("id1"));
        assert!(c.recent(&recent, b"Basic one", now).is_none());
        // A newer value replaces the old one, zeroed buffer reused.
        recently(&c, &recent, "Basic two", "id2", "u", now);
        assert!(c.recent(&recent, b"Basic one", now).is_none());
        assert!(c.recent(&recent, b"Basic two", now).is_some());
        let last = recent.lock();
        assert_eq!(last.as_ref().map(|r| &r.value[..]), Some(&b"Basic two"[..]));
    }

    #[test]
    fn a_connections_recent_value_stops_at_revocation_and_resync() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        let recent = Recent::default();
        recently(&c, &recent, "Basic one", "id1", "s", now);
        let before = c.generation("id1");
        c.invalidate("id1");
        assert!(c.recent(&recent, b"Basic one", now).is_none());
        // A verification that read the record before the revocation.
        c.insert("s", verified("id1"), now, before);
        assert!(c.recent(&recent, b"Basic one", now).is_none());

        recently(&c, &recent, "Basic two", "id2", "s", now);
        let later = now + Duration::from_secs(1);
        c.resync(later);
        assert!(c.recent(&recent, b"Basic two", later).is_none());
    }

    #[test]
    fn a_connections_recent_value_ends_with_its_entry_in_the_map() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        let recent = Recent::default();
        recently(&c, &recent, "Basic one", "id1", "s", now);
        let just_before = now + Duration::from_secs(30) - Duration::from_nanos(1);
        assert!(c.recent(&recent, b"Basic one", just_before).is_some());
        // Evicted without a revocation (an expired password, a retired
        // vocabulary): the held entry is no longer answered.
        c.evict("id1");
        assert!(c.recent(&recent, b"Basic one", now).is_none());
        // The same secret verified again: a new entry, which the value
        // reaches through the map until it is remembered anew.
        let again = fresh(&c, "id1", "s", now);
        assert!(c.recent(&recent, b"Basic one", now).is_none());
        c.remember_recent(&recent, b"Basic one", &again);
        assert!(c.recent(&recent, b"Basic one", now).is_some());
        // Pruned once too old even to revalidate.
        let much_later = now + Duration::from_secs(30 * u64::from(STALE_FOR + 1));
        c.prune(much_later);
        assert!(c.recent(&recent, b"Basic one", now).is_none());
        // A decoded value whose entry was replaced meanwhile is not remembered.
        let replaced = fresh(&c, "id2", "s", now);
        c.insert("s", verified("id2"), now, c.generation("id2"));
        let other = Recent::default();
        c.remember_recent(&other, b"Basic two", &replaced);
        assert!(other.lock().is_none());
    }

    #[test]
    fn a_remembered_name_is_the_verifications_own_only_when_equal() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        let recent = Recent::default();
        // `verified` is alice's; the value named alice.
        recently(&c, &recent, "Basic one", "id1", "s", now);
        let hit = c.recent(&recent, b"Basic one", now).expect("recent");
        assert!(Arc::ptr_eq(&hit.user, &hit.verified.user));
        // A value naming someone else keeps that name, to be refused.
        let mut other = fresh(&c, "id2", "s", now);
        other.user = "mallory".into();
        c.remember_recent(&recent, b"Basic two", &other);
        let hit = c.recent(&recent, b"Basic two", now).expect("recent");
        assert_eq!((&*hit.user, &*hit.verified.user), ("mallory", "alice"));
        c.remember_presented(b"Basic two", &other);
        let hit = c.presented(b"Basic two", now).expect("presented");
        assert_eq!(&*hit.user, "mallory");
    }

    #[test]
    fn no_recent_value_without_a_cache() {
        let c = Cache::new(Duration::ZERO, 10);
        let now = Instant::now();
        let recent = Recent::default();
        let decoded = Decoded {
            verified: verified("id1"),
            user: "alice".into(),
            secret: c.keyed("s"),
        };
        c.remember_recent(&recent, b"Basic one", &decoded);
        assert!(recent.lock().is_none());
        assert!(c.recent(&recent, b"Basic one", now).is_none());
    }

    #[test]
    fn remembered_values_are_bounded() {
        let c = Cache::new(Duration::from_secs(30), 3);
        let now = Instant::now();
        for i in 0..10 {
            remembered(&c, &format!("Basic {i}"), "id1", "s", now);
            assert!(c.presented.len() <= 3);
        }
        assert!(c.presented(b"Basic 9", now).is_some());
        // Pruning drops the values of an id that is gone.
        c.evict("id1");
        c.prune(now);
        assert!(c.presented.is_empty());
    }

    #[test]
    fn the_plaintext_is_not_kept() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        remembered(
            &c,
            "Basic very-secret-header",
            "id1",
            "very-secret-value",
            now,
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
    }
}
