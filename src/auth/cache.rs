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
//! DashMap shards the map, so concurrent requests never take a global lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::HeaderValue;
use subtle::ConstantTimeEq;

use crate::scopes::ScopeSet;

/// What a successful verification established about an app password.
#[derive(Debug)]
pub struct Verified {
    pub id: Arc<str>,
    pub user: Arc<str>,
    pub granted: ScopeSet,
    pub expires_at: Option<u64>,
    /// Identity header values, built once per verification, not per request.
    pub user_header: HeaderValue,
    pub scopes_header: HeaderValue,
    pub id_header: HeaderValue,
}

#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    until: Instant,
    verified: Arc<Verified>,
}

/// id → last successful verification, for `ttl`.
#[derive(Debug)]
pub struct Cache {
    map: DashMap<Box<str>, Entry>,
    key: [u8; 32],
    ttl: Duration,
    capacity: usize,
}

impl Cache {
    pub fn new(ttl: Duration, capacity: usize) -> Cache {
        Cache {
            map: DashMap::new(),
            key: rand::random(),
            ttl,
            capacity,
        }
    }

    /// The cached verification of `id`, if `secret` is the one that verified
    /// and the entry is younger than the TTL.
    pub fn get(&self, id: &str, secret: &str, now: Instant) -> Option<Arc<Verified>> {
        let entry = self.map.get(id)?;
        if now >= entry.until {
            drop(entry);
            self.map.remove_if(id, |_, e| now >= e.until);
            return None;
        }
        let digest = self.digest(secret);
        bool::from(entry.digest.ct_eq(&digest)).then(|| entry.verified.clone())
    }

    /// Remembers a successful verification (skipped when the cache is full of
    /// live entries: correctness never depends on the cache).
    pub fn insert(&self, secret: &str, verified: Arc<Verified>, now: Instant) {
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
            digest: self.digest(secret),
            until: now + self.ttl,
            verified: verified.clone(),
        };
        self.map.insert(Box::from(&*verified.id), entry);
    }

    /// Forgets `id` at once (revocation).
    pub fn evict(&self, id: &str) {
        self.map.remove(id);
    }

    /// Drops expired entries.
    pub fn prune(&self, now: Instant) {
        self.map.retain(|_, e| now < e.until);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn digest(&self, secret: &str) -> [u8; 32] {
        *blake3::keyed_hash(&self.key, secret.as_bytes()).as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(id: &str) -> Arc<Verified> {
        Arc::new(Verified {
            id: id.into(),
            user: "alice".into(),
            granted: ScopeSet::EMPTY,
            expires_at: None,
            user_header: HeaderValue::from_static("alice"),
            scopes_header: HeaderValue::from_static(""),
            id_header: HeaderValue::from_static("x"),
        })
    }

    #[test]
    fn hit_only_with_the_same_secret() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        c.insert("secret-a", verified("id1"), now);
        assert!(c.get("id1", "secret-a", now).is_some());
        assert!(c.get("id1", "secret-b", now).is_none());
        assert!(c.get("id2", "secret-a", now).is_none());
    }

    #[test]
    fn entries_expire_after_ttl() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        c.insert("s", verified("id1"), now);
        assert!(c.get("id1", "s", now + Duration::from_secs(29)).is_some());
        assert!(c.get("id1", "s", now + Duration::from_secs(30)).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn eviction_is_immediate() {
        let c = Cache::new(Duration::from_secs(30), 10);
        let now = Instant::now();
        c.insert("s", verified("id1"), now);
        c.evict("id1");
        assert!(c.get("id1", "s", now).is_none());
    }

    #[test]
    fn capacity_is_a_bound() {
        let c = Cache::new(Duration::from_secs(30), 2);
        let now = Instant::now();
        for i in 0..5 {
            c.insert("s", verified(&format!("id{i}")), now);
        }
        assert_eq!(c.len(), 2);
        // Expired entries make room.
        c.insert("s", verified("late"), now + Duration::from_secs(31));
        assert!(c.get("late", "s", now + Duration::from_secs(31)).is_some());
    }

    #[test]
    fn zero_ttl_disables_caching() {
        let c = Cache::new(Duration::ZERO, 10);
        c.insert("s", verified("id1"), Instant::now());
        assert!(c.is_empty());
    }

    #[test]
    fn the_plaintext_is_not_kept() {
        let c = Cache::new(Duration::from_secs(30), 10);
        c.insert("very-secret-value", verified("id1"), Instant::now());
        assert!(!format!("{c:?}").contains("very-secret-value"));
    }
}
