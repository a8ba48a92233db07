//! Brute-force limits on failed authentication: token buckets per
//! (user, client address) and per client address.
//!
//! Each bucket is a GCRA cell (the token bucket kept as one "theoretical
//! arrival time"): a [`Limit`] of `burst` per `per` allows `burst` failures
//! from a full bucket and refills one token every `per / burst`. A failure
//! takes a token from both buckets of the key; while either is empty,
//! [`Throttle::check`] refuses the key *before* any password check, with the
//! exact wait until a token is back (the caller sends 429 Too Many Requests,
//! RFC 6585 §4, with `Retry-After` in whole seconds, RFC 9110 §10.2.3).
//!
//! Addresses are keyed (`peer::AddrKey`) as: IPv4 by the full address; IPv4-mapped IPv6
//! (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) as that IPv4 address; other IPv6 by
//! the /64 prefix, since one host usually controls a whole /64 (RFC 4291
//! §2.5.4, RFC 8981). User names are stored only as a keyed 64-bit SipHash
//! with a random per-process key, ASCII case-folded, so the check path
//! allocates nothing and no user name is kept in memory.
//!
//! Memory is bounded by `max_entries` per map. When a map is full a prune
//! runs first (at most once a second); if it is still full: a new per-user
//! bucket is not created (that key is then limited by its per-address bucket
//! only) and a new address is charged to one shared overflow bucket that
//! every untracked address is checked against while it exists, so the
//! per-address limit keeps working, failing closed, under a flood of
//! addresses.
//!
//! A verification takes tens of milliseconds, so [`Throttle::check`] now and
//! [`Throttle::record_failure`] after it would let concurrent guesses all pass
//! the check before any failure is recorded. [`Throttle::reserve`] instead
//! takes the token before the verification (check and charge with no await
//! between them); its [`Reservation`] gives it back when the password proves
//! right (decided by the argon2id run itself, so also when the client has
//! hung up meanwhile), or when the attempt ends before that work began.
//! Only threads running at the same instant (at most one per worker) can
//! still race past a bucket's last token.
//!
//! This module never sleeps, reads the clock (time is passed in), checks
//! passwords, logs, or sees secrets.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::peer::AddrKey;

/// Longest refill window; a longer [`Limit::per`] is clamped to it.
pub const MAX_WINDOW: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Minimum time between prunes forced by a full map.
const FORCED_PRUNE_EVERY: Duration = Duration::from_secs(1);

/// `burst` failures allowed, refilling at `burst` tokens per `per`.
///
/// `burst == 0`, or a `per` so small that `per / burst` is zero, disables
/// the limit (config validation should reject that if unwanted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Failures allowed from a full bucket.
    pub burst: u32,
    /// Time to refill a whole empty bucket.
    pub per: Duration,
}

/// Both limits and the memory bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures per (user, address) pair.
    pub per_user_addr: Limit,
    /// Failures per address, whatever the user.
    pub per_addr: Limit,
    /// Most buckets kept in each of the two maps.
    pub max_entries: usize,
}

/// Concurrent failure limiter. `Send + Sync`; share it behind an `Arc`.
pub struct Throttle {
    per_user: Option<Rate>,
    per_addr: Option<Rate>,
    max_entries: usize,
    users: DashMap<UserKey, Instant>,
    addrs: DashMap<AddrKey, Instant>,
    user_hasher: RandomState,
    origin: Instant,
    /// Nanoseconds after `origin`, plus one, of the last forced prune; 0 = never.
    last_forced_prune: AtomicU64,
}

type UserKey = (AddrKey, u64);

/// GCRA parameters of an enabled [`Limit`].
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Time for one token to come back.
    interval: Duration,
    /// Time for the whole bucket to come back: `interval * burst`.
    window: Duration,
}

/// A token taken by [`Throttle::reserve`]: given back by
/// [`Reservation::release`] or when dropped unsettled, kept by
/// [`Reservation::keep`]. It owns what it needs, so the argon2id run itself
/// can settle it: a verification whose client left still decides, by its
/// outcome, whether the attempt costs a token.
#[derive(Debug)]
#[must_use = "dropping a reservation gives its token back at once"]
pub struct Reservation {
    throttle: Arc<Throttle>,
    user: Box<str>,
    addr: IpAddr,
    kept: bool,
}

impl Reservation {
    /// The attempt failed: the token stays taken.
    pub fn keep(mut self) {
        self.kept = true;
    }

    /// The attempt proved right or could not be judged: the token comes back.
    pub fn release(self) {}

    /// [`Self::release`] when `refund`, else [`Self::keep`].
    pub fn settle(self, refund: bool) {
        if !refund {
            self.keep();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.kept {
            self.throttle.refund(&self.user, self.addr);
        }
    }
}

impl Rate {
    fn new(limit: Limit) -> Option<Rate> {
        let per = limit.per.min(MAX_WINDOW);
        let interval = per.checked_div(limit.burst)?;
        if interval.is_zero() {
            return None;
        }
        let window = interval.checked_mul(limit.burst).unwrap_or(per);
        Some(Rate { interval, window })
    }

    /// The time to full under this rate of a bucket `debt` from full under
    /// `was`: the same tokens taken (the part-refilled one pro rata), at
    /// most an empty bucket.
    fn rescaled(self, debt: Duration, was: Rate) -> Duration {
        let nanos = debt.as_nanos().saturating_mul(self.interval.as_nanos())
            / was.interval.as_nanos().max(1);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(self.window)
    }

    /// `Err(wait)` if the bucket whose arrival time is `tat` is empty at `now`.
    fn check(self, tat: Instant, now: Instant) -> Result<(), Duration> {
        let used = tat
            .saturating_duration_since(now)
            .saturating_add(self.interval);
        match used.checked_sub(self.window) {
            Some(wait) if !wait.is_zero() => Err(wait),
            _ => Ok(()),
        }
    }

    /// The arrival time after taking one token; never below empty.
    fn charge(self, tat: Option<Instant>, now: Instant) -> Instant {
        let start = tat.map_or(now, |t| t.max(now));
        let next = start.checked_add(self.interval).unwrap_or(start);
        match now.checked_add(self.window) {
            Some(empty) => next.min(empty),
            None => next,
        }
    }
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// An empty throttle with a fresh random key for user-name hashing.
    pub fn new(cfg: ThrottleConfig) -> Throttle {
        Throttle {
            per_user: Rate::new(cfg.per_user_addr),
            per_addr: Rate::new(cfg.per_addr),
            max_entries: cfg.max_entries,
            users: DashMap::new(),
            addrs: DashMap::new(),
            user_hasher: RandomState::new(),
            origin: Instant::now(),
            last_forced_prune: AtomicU64::new(0),
        }
    }

    /// A throttle under new limits that keeps what this one has counted
    /// (a reload that changes `rate_limit`): an attacker must not get a
    /// fresh budget by waiting for an operator's reload. Each bucket keeps
    /// the failures it holds at `now`, counted in tokens, and refills from
    /// there at the new rate; a bucket holding more than the new `burst` is
    /// empty. The user-name hash key is kept, so the keys still match.
    /// Failures recorded here after the call are not carried over (the
    /// requests in flight during a reload).
    pub fn reconfigured(&self, cfg: ThrottleConfig, now: Instant) -> Throttle {
        let next = Throttle {
            per_user: Rate::new(cfg.per_user_addr),
            per_addr: Rate::new(cfg.per_addr),
            max_entries: cfg.max_entries,
            users: DashMap::new(),
            addrs: DashMap::new(),
            user_hasher: self.user_hasher.clone(),
            origin: self.origin,
            last_forced_prune: AtomicU64::new(0),
        };
        let (users, addrs) = (
            self.per_user.zip(next.per_user),
            self.per_addr.zip(next.per_addr),
        );
        carry_over(&self.users, &next.users, users, cfg.max_entries, now);
        carry_over(&self.addrs, &next.addrs, addrs, cfg.max_entries, now);
        next
    }

    /// `Err(retry_after)` when `user` at `addr` must be refused at `now`
    /// without checking the password; the longer wait if both buckets are
    /// empty. Read-only and allocation-free.
    pub fn check(&self, user: &str, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let addr_key = AddrKey::from(addr);
        let mut wait = Duration::ZERO;
        if let Some(rate) = self.per_addr {
            let tat = get(&self.addrs, &addr_key).or_else(|| get(&self.addrs, &AddrKey::Overflow));
            if let Some(Err(w)) = tat.map(|t| rate.check(t, now)) {
                wait = wait.max(w);
            }
        }
        if let Some(rate) = self.per_user {
            let tat = get(&self.users, &(addr_key, self.user_hash(user)));
            if let Some(Err(w)) = tat.map(|t| rate.check(t, now)) {
                wait = wait.max(w);
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Takes one token from the (user, address) and the address bucket.
    pub fn record_failure(&self, user: &str, addr: IpAddr, now: Instant) {
        let addr_key = AddrKey::from(addr);
        if let Some(rate) = self.per_addr {
            if !charge_existing(&self.addrs, &addr_key, rate, now) {
                let key = if self.has_room(&self.addrs, now) {
                    addr_key
                } else {
                    AddrKey::Overflow
                };
                charge(&self.addrs, key, rate, now);
            }
        }
        if let Some(rate) = self.per_user {
            let key = (addr_key, self.user_hash(user));
            if !charge_existing(&self.users, &key, rate, now) && self.has_room(&self.users, now) {
                charge(&self.users, key, rate, now);
            }
        }
    }

    /// [`Self::check`], then at once a token from both buckets as if the
    /// attempt had failed: for attempts about to be verified. The token comes
    /// back when the [`Reservation`] is released (the attempt proved right,
    /// or could not be judged) or dropped before it was committed (abandoned
    /// before any argon2id work).
    pub fn reserve(
        self: &Arc<Self>,
        user: &str,
        addr: IpAddr,
        now: Instant,
    ) -> Result<Reservation, Duration> {
        self.check(user, addr, now)?;
        self.record_failure(user, addr, now);
        Ok(Reservation {
            throttle: self.clone(),
            user: user.into(),
            addr,
            kept: false,
        })
    }

    /// Returns the token [`Self::reserve`] took from both buckets of the key.
    fn refund(&self, user: &str, addr: IpAddr) {
        let addr_key = AddrKey::from(addr);
        if let Some(rate) = self.per_addr {
            let refunded = refund_existing(&self.addrs, &addr_key, rate);
            if !refunded {
                refund_existing(&self.addrs, &AddrKey::Overflow, rate);
            }
        }
        if let Some(rate) = self.per_user {
            refund_existing(&self.users, &(addr_key, self.user_hash(user)), rate);
        }
    }

    /// Drops every bucket that has refilled completely by `now`.
    pub fn prune(&self, now: Instant) {
        self.addrs.retain(|_, tat| *tat > now);
        self.users.retain(|_, tat| *tat > now);
    }

    /// Number of buckets held, both maps together.
    pub fn len(&self) -> usize {
        self.addrs.len() + self.users.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty() && self.users.is_empty()
    }

    /// Whether `map` may take a new key, after a rate-limited prune if full.
    fn has_room<K: Eq + Hash>(&self, map: &DashMap<K, Instant>, now: Instant) -> bool {
        if map.len() < self.max_entries {
            return true;
        }
        self.forced_prune(now);
        map.len() < self.max_entries
    }

    fn forced_prune(&self, now: Instant) {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        let stamp = u64::try_from(since).unwrap_or(u64::MAX).saturating_add(1);
        let last = self.last_forced_prune.load(Ordering::Relaxed);
        let every = u64::try_from(FORCED_PRUNE_EVERY.as_nanos()).unwrap_or(u64::MAX);
        if last != 0 && stamp.saturating_sub(last) < every {
            return;
        }
        let won = self
            .last_forced_prune
            .compare_exchange(last, stamp, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if won {
            self.prune(now);
        }
    }

    /// Keyed hash of the ASCII-lowercased user name, without allocating.
    fn user_hash(&self, user: &str) -> u64 {
        let mut hasher = self.user_hasher.build_hasher();
        let mut lower = [0u8; 64];
        for part in user.as_bytes().chunks(lower.len()) {
            if let Some(out) = lower.get_mut(..part.len()) {
                out.copy_from_slice(part);
                out.make_ascii_lowercase();
                hasher.write(out);
            }
        }
        hasher.write_usize(user.len());
        hasher.finish()
    }
}

/// The stored arrival time, copied out so no shard lock outlives the call.
fn get<K: Eq + Hash>(map: &DashMap<K, Instant>, key: &K) -> Option<Instant> {
    map.get(key).map(|entry| *entry.value())
}

fn charge_existing<K: Eq + Hash>(
    map: &DashMap<K, Instant>,
    key: &K,
    rate: Rate,
    now: Instant,
) -> bool {
    match map.get_mut(key) {
        Some(mut tat) => {
            *tat = rate.charge(Some(*tat), now);
            true
        }
        None => false,
    }
}

fn refund_existing<K: Eq + Hash>(map: &DashMap<K, Instant>, key: &K, rate: Rate) -> bool {
    match map.get_mut(key) {
        Some(mut tat) => {
            *tat = tat.checked_sub(rate.interval).unwrap_or(*tat);
            true
        }
        None => false,
    }
}

fn charge<K: Eq + Hash>(map: &DashMap<K, Instant>, key: K, rate: Rate, now: Instant) {
    map.entry(key)
        .and_modify(|tat| *tat = rate.charge(Some(*tat), now))
        .or_insert_with(|| rate.charge(None, now));
}

/// Copies the non-full buckets of `from` into `to` with as many tokens
/// taken under the new rate as under the old one (`rates`: old, new; `None`
/// when either limit is off), at most `max_entries`, the emptiest first.
fn carry_over<K: Eq + Hash + Clone>(
    from: &DashMap<K, Instant>,
    to: &DashMap<K, Instant>,
    rates: Option<(Rate, Rate)>,
    max_entries: usize,
    now: Instant,
) {
    let Some((was, rate)) = rates else {
        return;
    };
    let mut held: Vec<(Duration, K)> = from
        .iter()
        .map(|e| (e.value().saturating_duration_since(now), e.key().clone()))
        .filter(|(debt, _)| !debt.is_zero())
        .collect();
    held.sort_unstable_by_key(|(debt, _)| std::cmp::Reverse(*debt));
    for (debt, key) in held.into_iter().take(max_entries) {
        if let Some(tat) = now.checked_add(rate.rescaled(debt, was)) {
            to.insert(key, tat);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SEC: Duration = Duration::from_secs(1);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn throttle(user_burst: u32, addr_burst: u32, max_entries: usize) -> Throttle {
        // One token back every 10 s in both buckets.
        Throttle::new(ThrottleConfig {
            per_user_addr: Limit {
                burst: user_burst,
                per: SEC * 10 * user_burst,
            },
            per_addr: Limit {
                burst: addr_burst,
                per: SEC * 10 * addr_burst,
            },
            max_entries,
        })
    }

    /// Records failures until refused; returns how many were allowed.
    fn exhaust(t: &Throttle, user: &str, addr: IpAddr, now: Instant) -> u32 {
        let mut allowed = 0;
        while t.check(user, addr, now).is_ok() {
            t.record_failure(user, addr, now);
            allowed += 1;
            assert!(allowed <= 10_000, "never limited");
        }
        allowed
    }

    #[test]
    fn reservations_take_tokens_up_front_and_refunds_give_them_back() {
        let t = Arc::new(throttle(2, 10, 100));
        let (a, now) = (ip("192.0.2.1"), Instant::now());
        // Right passwords (released) and attempts abandoned before any work
        // (dropped): taken and given back, any number of times.
        for _ in 0..10 {
            t.reserve("alice", a, now).unwrap().release();
            drop(t.reserve("alice", a, now).unwrap());
        }
        // Settled by outcome: right gives back, wrong keeps.
        t.reserve("alice", a, now).unwrap().settle(true);
        // Two guesses in flight at once use the whole burst; a third is refused
        // before its verification starts.
        let first = t.reserve("alice", a, now).unwrap();
        let second = t.reserve("alice", a, now).unwrap();
        assert!(t.reserve("alice", a, now).is_err());
        assert!(t.check("alice", a, now).is_err(), "reserved tokens count");
        // Both were wrong: both tokens stay taken.
        first.settle(false);
        second.keep();
        assert!(t.reserve("alice", a, now).is_err());
    }

    #[test]
    fn burst_exhaustion_then_refusal_even_for_correct_password() {
        let t = throttle(3, 10, 100);
        let now = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(exhaust(&t, "alice", a, now), 3);
        // The caller checks before the password, so even a correct one waits.
        assert_eq!(t.check("alice", a, now), Err(SEC * 10));
        assert_eq!(t.check("alice", a, now + SEC * 4), Err(SEC * 6));
        assert_eq!(t.check("ALICE", a, now), Err(SEC * 10), "case-folded");
    }

    #[test]
    fn refill_after_time() {
        let t = throttle(3, 10, 100);
        let now = Instant::now();
        let a = ip("192.0.2.1");
        exhaust(&t, "alice", a, now);
        let later = now + SEC * 10;
        assert_eq!(t.check("alice", a, later), Ok(()));
        assert_eq!(exhaust(&t, "alice", a, later), 1);
        let much_later = later + SEC * 3600;
        assert_eq!(
            exhaust(&t, "alice", a, much_later),
            3,
            "refills only to burst"
        );
    }

    #[test]
    fn other_address_unaffected() {
        let t = throttle(3, 10, 100);
        let now = Instant::now();
        exhaust(&t, "alice", ip("192.0.2.1"), now);
        assert_eq!(t.check("alice", ip("192.0.2.2"), now), Ok(()));
        assert_eq!(t.check("bob", ip("192.0.2.1"), now), Ok(()));
    }

    #[test]
    fn per_address_bucket_limits_other_users() {
        let t = throttle(3, 5, 100);
        let now = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(exhaust(&t, "alice", a, now), 3);
        assert_eq!(exhaust(&t, "bob", a, now), 2);
        assert_eq!(t.check("carol", a, now), Err(SEC * 10));
        assert_eq!(t.check("carol", ip("192.0.2.9"), now), Ok(()));
    }

    #[test]
    fn ipv6_keyed_by_64_prefix() {
        let t = throttle(3, 10, 100);
        let now = Instant::now();
        exhaust(&t, "alice", ip("2001:db8:1:2::1"), now);
        assert!(t
            .check("alice", ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), now)
            .is_err());
        assert!(t.check("alice", ip("2001:db8:1:3::1"), now).is_ok());
        assert!(t.check("alice", ip("2001:db9:1:2::1"), now).is_ok());
    }

    #[test]
    fn ipv4_mapped_is_ipv4() {
        let t = throttle(3, 10, 100);
        let now = Instant::now();
        exhaust(&t, "alice", ip("::ffff:192.0.2.1"), now);
        assert!(t.check("alice", ip("192.0.2.1"), now).is_err());
        assert!(t.check("alice", ip("192.0.2.2"), now).is_ok());
        // Not the same key as the /64 that `::ffff:0:0/96` lies in.
        assert_eq!(
            AddrKey::from(ip("::ffff:192.0.2.1")),
            AddrKey::V4(0xC000_0201)
        );
        assert_ne!(
            AddrKey::from(ip("::ffff:192.0.2.1")),
            AddrKey::from(ip("::1"))
        );
        assert_eq!(
            AddrKey::from(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            AddrKey::V4(0x7F00_0001)
        );
        assert_eq!(
            AddrKey::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            AddrKey::V6Net64(0)
        );
    }

    #[test]
    fn prune_removes_full_buckets() {
        let t = throttle(3, 10, 100);
        let now = Instant::now();
        t.record_failure("alice", ip("192.0.2.1"), now);
        t.record_failure("bob", ip("192.0.2.2"), now + SEC * 15);
        assert_eq!(t.len(), 4);
        t.prune(now + SEC * 5);
        assert_eq!(t.len(), 4, "partly refilled buckets stay");
        t.prune(now + SEC * 10);
        assert_eq!(t.len(), 2);
        t.prune(now + SEC * 25);
        assert!(t.is_empty());
        assert_eq!(t.check("alice", ip("192.0.2.1"), now + SEC * 25), Ok(()));
    }

    #[test]
    fn max_entries_bound_fails_closed_for_new_addresses() {
        let t = throttle(2, 3, 4);
        let now = Instant::now();
        for i in 0..4u8 {
            t.record_failure("alice", IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)), now);
        }
        assert_eq!((t.addrs.len(), t.users.len()), (4, 4));
        // Full, nothing to prune: new addresses share the overflow bucket.
        for i in 10..40u8 {
            t.record_failure("mallory", IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)), now);
            assert!(t.addrs.len() <= 5 && t.users.len() <= 4);
        }
        assert!(t.check("anyone", ip("198.51.100.7"), now).is_err());
        // Tracked keys keep their own buckets.
        assert_eq!(t.check("alice", ip("192.0.2.0"), now), Ok(()));
        t.record_failure("alice", ip("192.0.2.0"), now);
        assert!(t.check("alice", ip("192.0.2.0"), now).is_err());
        // Once the old buckets have refilled, a forced prune makes room.
        let later = now + SEC * 60;
        t.record_failure("bob", ip("203.0.113.5"), later);
        assert_eq!(t.len(), 2);
        assert_eq!(t.check("bob", ip("203.0.113.5"), later), Ok(()));
    }

    #[test]
    fn full_user_map_falls_back_to_address_limit() {
        let t = throttle(2, 4, 1);
        let now = Instant::now();
        let a = ip("192.0.2.1");
        t.record_failure("alice", a, now);
        // No room for bob's per-user bucket, but the address bucket counts.
        assert_eq!(exhaust(&t, "bob", a, now), 3);
        assert_eq!(t.users.len(), 1);
        assert!(t.check("carol", a, now).is_err());
    }

    #[test]
    fn disabled_and_extreme_limits_do_not_panic() {
        let off = Limit { burst: 0, per: SEC };
        let tiny = Limit {
            burst: u32::MAX,
            per: Duration::from_nanos(1),
        };
        let huge = Limit {
            burst: 2,
            per: Duration::MAX,
        };
        let two = Limit { burst: 2, per: SEC };
        let now = Instant::now();
        let a = ip("2001:db8::1");
        // (per-user, per-address, failures allowed)
        for (user, addr, want) in [
            (off, off, None),
            (tiny, tiny, None),
            (off, two, Some(2)),
            (two, tiny, Some(2)),
            (huge, off, Some(2)),
            (off, huge, Some(2)),
        ] {
            for max_entries in [0, 10] {
                let t = Throttle::new(ThrottleConfig {
                    per_user_addr: user,
                    per_addr: addr,
                    max_entries,
                });
                let allowed = (0..5)
                    .take_while(|_| {
                        let ok = t.check("u", a, now).is_ok();
                        t.record_failure("u", a, now);
                        ok
                    })
                    .count();
                // With no room, per-user buckets are not kept (documented).
                let addr_off = Rate::new(addr).is_none();
                let want = if max_entries == 0 && addr_off {
                    None
                } else {
                    want
                };
                assert_eq!(
                    allowed,
                    want.unwrap_or(5),
                    "{user:?} {addr:?} {max_entries}"
                );
                // Time going backwards is harmless.
                let _ = t.check("u", a, now - SEC * 3600);
                t.record_failure("u", a, now - SEC * 3600);
                t.prune(now);
            }
        }
        let wait = Rate::new(huge).map(|r| r.interval);
        assert_eq!(wait, Some(MAX_WINDOW / 2), "window clamped");
    }

    fn limits(user: (u32, u64), addr: (u32, u64), max_entries: usize) -> ThrottleConfig {
        let limit = |(burst, secs): (u32, u64)| Limit {
            burst,
            per: SEC * u32::try_from(secs).unwrap(),
        };
        ThrottleConfig {
            per_user_addr: limit(user),
            per_addr: limit(addr),
            max_entries,
        }
    }

    #[test]
    fn new_limits_keep_the_failures_counted_so_far() {
        let (a, now) = (ip("192.0.2.1"), Instant::now());
        // 3 per 30 s for a (user, address); the address limit out of the way.
        let t = Throttle::new(limits((3, 30), (1000, 1000), 100));
        assert_eq!(exhaust(&t, "mallory", a, now), 3);
        // A larger burst at the same refill rate: two more, not five.
        let looser = t.reconfigured(limits((5, 50), (1000, 1000), 100), now);
        assert_eq!(
            exhaust(&looser, "MALLORY", a, now),
            2,
            "same user, case-folded"
        );
        // The same burst refilling slower: still refused, for the new wait.
        let slower = t.reconfigured(limits((3, 180), (1000, 1000), 100), now);
        assert_eq!(slower.check("mallory", a, now), Err(SEC * 60));
        // A smaller burst than the failures held: empty, not overdrawn.
        let tighter = t.reconfigured(limits((2, 20), (1000, 1000), 100), now);
        assert_eq!(tighter.check("mallory", a, now), Err(SEC * 10));
        // Time spent before the reload counts as refill at the old rate.
        let later = t.reconfigured(limits((3, 30), (1000, 1000), 100), now + SEC * 15);
        assert_eq!(exhaust(&later, "mallory", a, now + SEC * 15), 1);
        assert_eq!(later.check("mallory", a, now + SEC * 15), Err(SEC * 5));
        // Others are untouched.
        assert_eq!(exhaust(&looser, "alice", a, now), 5);
    }

    #[test]
    fn new_limits_keep_address_buckets_and_bound_them() {
        let now = Instant::now();
        let t = throttle(1000, 5, 100);
        for i in 1..=4u8 {
            let addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, i));
            for _ in 0..i {
                t.record_failure("u", addr, now);
            }
        }
        // Two entries kept: the emptiest buckets (192.0.2.4 and .3).
        let kept = t.reconfigured(limits((1000, 1000), (2, 20), 2), now);
        assert_eq!(kept.addrs.len(), 2);
        assert!(kept.check("x", ip("192.0.2.4"), now).is_err());
        assert!(kept.check("x", ip("192.0.2.1"), now).is_ok());
        // A limit turned off keeps nothing; one turned on starts empty.
        let off = t.reconfigured(limits((1000, 1000), (0, 20), 100), now);
        assert!(off.addrs.is_empty());
        assert!(off.check("x", ip("192.0.2.4"), now).is_ok());
        let on = off.reconfigured(limits((1000, 1000), (2, 20), 100), now);
        assert!(on.check("x", ip("192.0.2.4"), now).is_ok());
    }

    #[test]
    fn throttle_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Throttle>();
    }

    proptest! {
        #[test]
        fn allows_exactly_the_smaller_burst(
            user_burst in 1u32..20,
            addr_burst in 1u32..20,
            per_ms in 1u64..1_000_000,
        ) {
            let t = Throttle::new(ThrottleConfig {
                per_user_addr: Limit { burst: user_burst, per: Duration::from_millis(per_ms) },
                per_addr: Limit { burst: addr_burst, per: Duration::from_millis(per_ms * 2) },
                max_entries: 16,
            });
            let now = Instant::now();
            let allowed = exhaust(&t, "u", ip("192.0.2.1"), now);
            let addr_interval = Duration::from_millis(per_ms * 2) / addr_burst;
            let user_interval = Duration::from_millis(per_ms) / user_burst;
            let addr_on = !addr_interval.is_zero();
            let user_on = !user_interval.is_zero();
            prop_assume!(addr_on && user_on);
            prop_assert_eq!(allowed, user_burst.min(addr_burst));
            let wait = t.check("u", ip("192.0.2.1"), now).unwrap_err();
            prop_assert!(wait <= addr_interval.max(user_interval));
            prop_assert!(t.check("u", ip("192.0.2.1"), now + wait).is_ok());
        }

        #[test]
        fn never_panics(
            ops in proptest::collection::vec(
                (any::<bool>(), 0u64..100_000, any::<u128>(), any::<bool>(), "\\PC{0,8}"),
                0..200,
            ),
            max_entries in 0usize..8,
        ) {
            let t = throttle(3, 5, max_entries);
            let start = Instant::now() + SEC * 1000;
            for (record, ms, raw, v6, user) in ops {
                let addr = if v6 {
                    IpAddr::V6(Ipv6Addr::from(raw))
                } else {
                    IpAddr::V4(Ipv4Addr::from(raw as u32))
                };
                let now = start + Duration::from_millis(ms) - SEC * 50;
                if record {
                    t.record_failure(&user, addr, now);
                } else if let Err(wait) = t.check(&user, addr, now) {
                    prop_assert!(wait > Duration::ZERO && wait <= SEC * 200);
                }
                prop_assert!(t.addrs.len() <= max_entries + 1);
                prop_assert!(t.users.len() <= max_entries);
            }
        }
    }
}
