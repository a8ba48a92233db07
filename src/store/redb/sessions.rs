//! The redb side of sessions (see `store/sessions.rs`): one table
//! `sessions`, key (`&str`) → 8 bytes of expiry (unix seconds, big-endian)
//! followed by the caller's bytes.

use ::redb::{ReadableTableMetadata, TableDefinition};

use super::Redb;
use crate::store::error::OrBackend;
use crate::store::StoreError;

pub(super) const SESSIONS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("sessions");

impl Redb {
    pub(in crate::store) fn put_session(
        &self,
        key: &str,
        data: &[u8],
        expires: u64,
    ) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(8 + data.len());
        value.extend_from_slice(&expires.to_be_bytes());
        value.extend_from_slice(data);
        self.write(|txn| {
            let mut table = txn.open_table(SESSIONS).backend(&self.path)?;
            table.insert(key, value.as_slice()).backend(&self.path)?;
            Ok(())
        })
    }

    pub(in crate::store) fn session(
        &self,
        key: &str,
        now: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().backend(&self.path)?;
        let table = match txn.open_table(SESSIONS) {
            Err(::redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            other => other.backend(&self.path)?,
        };
        let value = table.get(key).backend(&self.path)?;
        Ok(value.and_then(|v| live(v.value(), now)))
    }

    pub(in crate::store) fn take_session(
        &self,
        key: &str,
        now: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(SESSIONS).backend(&self.path)?;
            let old = table.remove(key).backend(&self.path)?;
            Ok(old.and_then(|v| live(v.value(), now)))
        })
    }

    pub(in crate::store) fn delete_session(&self, key: &str) -> Result<bool, StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(SESSIONS).backend(&self.path)?;
            let old = table.remove(key).backend(&self.path)?;
            Ok(old.is_some())
        })
    }

    pub(in crate::store) fn purge_sessions(&self, now: u64) -> Result<usize, StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(SESSIONS).backend(&self.path)?;
            let before = table.len().backend(&self.path)?;
            table
                .retain(|_, v| live(v, now).is_some())
                .backend(&self.path)?;
            let after = table.len().backend(&self.path)?;
            Ok(usize::try_from(before - after).unwrap_or(usize::MAX))
        })
    }
}

/// The payload of a stored value if it has not expired at `now`.
fn live(value: &[u8], now: u64) -> Option<Vec<u8>> {
    let (expires, data) = value.split_first_chunk::<8>()?;
    (u64::from_be_bytes(*expires) > now).then(|| data.to_vec())
}
