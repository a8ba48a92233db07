//! Sign-in sessions and pre-login records (OIDC), kept in the store so every
//! gateway sharing it knows them and they survive a restart.
//!
//! An entry is a key (already a hash of the browser's cookie: the store never
//! holds a usable cookie), the caller's opaque bytes and an expiry. The store
//! only knows expiry: an expired entry is never returned and
//! [`Store::purge_sessions`] deletes them. Every write is durable like the
//! rest. Backends: `store/redb/sessions.rs`, `store/postgres/sessions.rs`.

use super::{Backend, Store, StoreError};

impl Store {
    /// Stores (or replaces) the entry `key`, valid until `expires` (unix seconds).
    pub fn put_session(&self, key: &str, data: &[u8], expires: u64) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.put_session(key, data, expires),
            Backend::Postgres(b) => b.put_session(key, data, expires),
        }
    }

    /// The entry `key` if it exists and has not expired at `now`.
    pub fn session(&self, key: &str, now: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.session(key, now),
            Backend::Postgres(b) => b.session(key, now),
        }
    }

    /// Removes the entry `key` and returns it if it had not expired at `now`:
    /// a one-time record (a pre-login) is used at most once, even by two
    /// callbacks racing.
    pub fn take_session(&self, key: &str, now: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.take_session(key, now),
            Backend::Postgres(b) => b.take_session(key, now),
        }
    }

    /// Deletes the entry `key`; true if it existed.
    pub fn delete_session(&self, key: &str) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.delete_session(key),
            Backend::Postgres(b) => b.delete_session(key),
        }
    }

    /// Deletes every entry expired at `now`; returns how many.
    pub fn purge_sessions(&self, now: u64) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.purge_sessions(now),
            Backend::Postgres(b) => b.purge_sessions(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_are_taken_once_and_purged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.session("k", 100).unwrap(), None);
        store.put_session("k", b"alice", 200).unwrap();
        store.put_session("old", b"bob", 150).unwrap();
        assert_eq!(
            store.session("k", 199).unwrap().as_deref(),
            Some(&b"alice"[..])
        );
        assert_eq!(store.session("k", 200).unwrap(), None);
        assert_eq!(store.purge_sessions(160).unwrap(), 1);
        drop(store);
        // Survives a reopen (a restart).
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.take_session("k", 100).unwrap().as_deref(),
            Some(&b"alice"[..])
        );
        assert_eq!(store.take_session("k", 100).unwrap(), None);
        store.put_session("x", b"", 50).unwrap();
        assert_eq!(store.take_session("x", 100).unwrap(), None);
        assert!(!store.delete_session("x").unwrap());
    }
}
