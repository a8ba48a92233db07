//! Sign-in sessions on PostgreSQL (`store/sessions.rs` has the contract):
//! table `sessions (key, expires, data)`, so every gateway knows them.
//! Writes commit durably like every other (`durable_txn`): a
//! sign-out or a spent pre-login record must not come back after a crash
//! of the database.

use super::{durable_txn, int, Postgres};
use crate::store::StoreError;

impl Postgres {
    pub(in crate::store) fn put_session(
        &self,
        key: &str,
        data: &[u8],
        expires: u64,
    ) -> Result<(), StoreError> {
        let (key, data) = (key.to_owned(), data.to_vec());
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = durable_txn(&mut client).await?;
            txn.execute(
                "INSERT INTO sessions (key, expires, data) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO UPDATE SET expires = $2, data = $3",
                &[&key, &int(expires), &data],
            )
            .await?;
            txn.commit().await?;
            Ok(())
        })
    }

    pub(in crate::store) fn session(
        &self,
        key: &str,
        now: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT data FROM sessions WHERE key = $1 AND expires > $2",
                    &[&key, &int(now)],
                )
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    pub(in crate::store) fn take_session(
        &self,
        key: &str,
        now: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = durable_txn(&mut client).await?;
            // One statement: of two racing takes, one gets the row.
            let row = txn
                .query_opt(
                    "DELETE FROM sessions WHERE key = $1 RETURNING expires, data",
                    &[&key],
                )
                .await?;
            txn.commit().await?;
            Ok(row.and_then(|r| (r.get::<_, i64>(0) > int(now)).then(|| r.get(1))))
        })
    }

    pub(in crate::store) fn delete_session(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = durable_txn(&mut client).await?;
            let n = txn
                .execute("DELETE FROM sessions WHERE key = $1", &[&key])
                .await?;
            txn.commit().await?;
            Ok(n > 0)
        })
    }

    pub(in crate::store) fn purge_sessions(&self, now: u64) -> Result<usize, StoreError> {
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = durable_txn(&mut client).await?;
            let n = txn
                .execute("DELETE FROM sessions WHERE expires <= $1", &[&int(now)])
                .await?;
            txn.commit().await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}
