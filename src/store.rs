//! Persistent storage of app passwords: the one [`Store`] type every other
//! module uses, whatever engine sits behind it.
//!
//! # What this module owns
//!
//! - **The interface.** [`Store`] is the only store type outside this module;
//!   its methods are the whole contract (insert, get, list, count by
//!   status, revoke, revoke a user's, record usage, rotate, follow a
//!   rotation lineage), and both
//!   backends implement all of it with the same semantics (`store/tests.rs`
//!   runs one body per behaviour against each). Engine types never appear in
//!   a signature outside `store/`.
//! - **The backends**, one file each: `store/redb.rs` (the embedded default,
//!   one file, one process) and `store/postgres.rs` (one database shared by
//!   several gateways, with revocations pushed to all of them through
//!   [`Store::watch`]). Each keeps the same guarantees:
//!   - **Durability.** Every mutating method is committed durably before it
//!     returns `Ok`: a password reported created or revoked stays so across a
//!     crash. `record_usage` is batched by its caller but never weakened.
//!   - **Uniqueness.** Ids are unique; a name is unique among a user's active
//!     passwords (one rotated away, still in its grace, has handed its name on). Both are checked inside the inserting transaction, because
//!     only there is the check race-free.
//!   - **Schema versioning.** Opening a store creates or migrates its schema
//!     and refuses one written by a newer passgate ([`StoreError::UnknownSchema`]).
//! - **The record** ([`AppPassword`], `store/record.rs`) and the store's errors
//!   (`store/error.rs`).
//!
//! # What it never does
//!
//! - It never sees a plaintext secret: records carry only the argon2id PHC
//!   string of the secret, and `Debug` redacts even that.
//! - It never decides policy: name length, scope validity, expiry limits and who
//!   may revoke what are the caller's business (`manage.rs`).
//!
//! All methods block; async callers run them in `spawn_blocking`. [`Store`] is
//! `Send + Sync` and meant to be shared through an `Arc`.
//!
//! # Adding to the store
//!
//! A new record field: add it to [`AppPassword`] with `#[serde(default)]` (the
//! redb backend stores serde_json). A new operation: a method on [`Store`]
//! that matches on the backend and calls one method per backend file.

use std::path::Path;

mod error;
mod postgres;
mod record;
mod redb;
mod sessions;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use error::{BackendError, StoreError};
pub use postgres::tls::TlsError;
pub use postgres::url::{DbUrl, UrlError};
pub use record::{AppPassword, LastUse, Status, StatusCounts, LAST_USED_KEPT};

/// What a store shared with other gateways reports to this one
/// ([`Store::watch`]); implemented by whoever caches verifications.
pub trait Changes: Send + Sync + 'static {
    /// `id` was revoked, possibly through another gateway: forget it now.
    fn revoked(&self, id: &str);
    /// The notification connection is (again) established: revocations
    /// made before may have been missed, so nothing cached until now may be
    /// trusted without one store read.
    fn resynced(&self);
}

/// One observed successful use of an app password, for [`Store::record_usage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Public id of the password used.
    pub id: String,
    /// Time of use, unix seconds.
    pub at: u64,
    /// Client address.
    pub addr: String,
}

/// Outcome of [`Store::rotate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotated {
    /// The successor is stored; the old record as now stored (revoked at
    /// once, or from the end of the grace period on).
    Now(Box<AppPassword>),
    /// No password has this id.
    NotFound,
    /// The old password is revoked or expired: nothing to rotate.
    NotActive(Status),
    /// The old password was rotated before (to the id given).
    AlreadyRotated(String),
}

/// Outcome of [`Store::revoke`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked by this call; the record as now stored.
    Now(Box<AppPassword>),
    /// Was already revoked, at `revoked_at`; nothing changed.
    Already {
        /// When it was revoked, unix seconds.
        revoked_at: u64,
    },
    /// No password has this id.
    NotFound,
}

/// The app-password store. See the module documentation.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
}

/// The copy of a redb store taken before a schema migration (see
/// docs/operations.md, "Upgrading"); its `Display` is the line that reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationCopy {
    /// The schema version the store had.
    pub from: u64,
    /// Where the copy went.
    pub path: std::path::PathBuf,
}

impl std::fmt::Display for MigrationCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "store schema version {} is older than {}: copied the store to {} before migrating it",
            self.from,
            redb::SCHEMA_VERSION,
            self.path.display()
        )
    }
}

/// The engine behind a [`Store`].
#[derive(Debug)]
enum Backend {
    Redb(redb::Redb),
    Postgres(Box<postgres::Postgres>),
}

impl Store {
    /// Opens the redb store at `path`, creating it (and its parent directory)
    /// if missing, and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Redb(redb::Redb::open(path)?),
        })
    }

    /// Connects to the PostgreSQL database at `url` and creates or migrates
    /// its schema. Fails with [`StoreError::Unreachable`] when it cannot be
    /// reached within a few seconds.
    pub fn connect(url: &DbUrl) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Postgres(Box::new(postgres::Postgres::open(url)?)),
        })
    }

    /// The copy of the redb file taken before this open migrated it from an
    /// older schema; `None` when nothing was migrated (and for PostgreSQL,
    /// which is backed up with its own tools).
    #[must_use]
    pub fn migrated(&self) -> Option<&MigrationCopy> {
        match &self.backend {
            Backend::Redb(b) => b.migrated(),
            Backend::Postgres(_) => None,
        }
    }

    /// Where the store is, for messages: the file, or the URL without password.
    #[must_use]
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Redb(b) => b.path().display().to_string(),
            Backend::Postgres(b) => b.url().to_string(),
        }
    }

    /// Tells `sink` about revocations made through other gateways, as they
    /// happen. A no-op for redb (one process, which evicts as it revokes).
    pub fn watch(&self, sink: Arc<dyn Changes>) {
        match &self.backend {
            Backend::Redb(_) => {}
            Backend::Postgres(b) => b.watch(sink),
        }
    }

    /// Whether the store answers: false while the database is unreachable or
    /// the revocation listener is down (for `/readyz`). Always true for redb.
    #[must_use]
    pub fn ready(&self) -> bool {
        match &self.backend {
            Backend::Redb(_) => true,
            Backend::Postgres(b) => b.ready(),
        }
    }

    /// Copies every app password of this store (ids, hashes, times,
    /// revocations, last use) into the PostgreSQL database at `to`, creating
    /// its schema; returns how many. A database that already holds app
    /// passwords is refused with [`StoreError::NotEmpty`] unless `replace`,
    /// which removes those first (telling their gateways to forget them).
    pub fn copy_to(&self, to: &DbUrl, replace: bool) -> Result<usize, StoreError> {
        let records = self.list(None)?;
        postgres::Postgres::open(to)?.import(records, replace)
    }

    /// Writes a consistent copy of a redb store to `to`, a file that must
    /// not exist (while serving too: the copy is one read transaction's
    /// view); returns how many app passwords it holds. A PostgreSQL store is
    /// refused with [`StoreError::BackupPostgres`] (pg_dump's job).
    pub fn backup(&self, to: &Path) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.backup(to),
            Backend::Postgres(b) => Err(StoreError::BackupPostgres {
                url: b.url().to_string(),
            }),
        }
    }

    /// Stores a new app password.
    ///
    /// Fails with [`StoreError::DuplicateId`] if the id exists and with
    /// [`StoreError::DuplicateName`] if the user has a password with the same
    /// name that is active at `now`; both checks run inside the inserting
    /// transaction. Durable when it returns `Ok`.
    pub fn insert(&self, rec: &AppPassword, now: u64) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.insert(rec, now),
            Backend::Postgres(b) => b.insert(rec, now),
        }
    }

    /// The app password with this id, if any.
    pub fn get(&self, id: &str) -> Result<Option<AppPassword>, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.get(id),
            Backend::Postgres(b) => b.get(id),
        }
    }

    /// How many app passwords are active, expired and revoked at `now`,
    /// without reading the records (for `/metrics`): a count query on
    /// PostgreSQL, a scan of two fields per record on redb.
    pub fn count_by_status(&self, now: u64) -> Result<StatusCounts, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.count_by_status(now),
            Backend::Postgres(b) => b.count_by_status(now),
        }
    }

    /// All app passwords, or those of `user`, ordered by user, then
    /// `created_at`, then id.
    pub fn list(&self, user: Option<&str>) -> Result<Vec<AppPassword>, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.list(user),
            Backend::Postgres(b) => b.list(user),
        }
    }

    /// Revokes one app password at `now`. Revoking twice keeps the first
    /// time; a revocation only scheduled (a rotation's grace) becomes `now`.
    pub fn revoke(&self, id: &str, now: u64) -> Result<Revoked, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.revoke(id, now),
            Backend::Postgres(b) => b.revoke(id, now),
        }
    }

    /// Revokes, at `now`, every not-yet-revoked app password of `user`
    /// (expired ones and ones in a rotation's grace included) and returns the ids revoked by this call,
    /// ordered by `created_at`, then id.
    pub fn revoke_user(&self, user: &str, now: u64) -> Result<Vec<String>, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.revoke_user(user, now),
            Backend::Postgres(b) => b.revoke_user(user, now),
        }
    }

    /// Records a batch of uses in one durable transaction. Unknown ids are
    /// skipped; each use is merged into the record's last distinct addresses
    /// ([`AppPassword::record_use`]: at most [`LAST_USED_KEPT`], newest
    /// first); `last_used_at` never moves backwards (a use at the same
    /// second updates the address).
    pub fn record_usage(&self, batch: &[Usage]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Redb(b) => b.record_usage(batch),
            Backend::Postgres(b) => b.record_usage(batch),
        }
    }

    /// Replaces the active password `old_id` by `successor` in one durable
    /// transaction: the successor is inserted (its `rotated_from` naming the
    /// old one, its name the same), and the old record gets `rotated_to` and
    /// `revoked_at = revoke_at` (`now`: at once; later: a grace period).
    /// Refuses an old password that is not active or was rotated before.
    pub fn rotate(
        &self,
        old_id: &str,
        successor: &AppPassword,
        now: u64,
        revoke_at: u64,
    ) -> Result<Rotated, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.rotate(old_id, successor, now, revoke_at),
            Backend::Postgres(b) => b.rotate(old_id, successor, now, revoke_at),
        }
    }

    /// The current password of the lineage `id` belongs to: the end of its
    /// `rotated_to` chain (`id` itself when never rotated); `None` when `id`
    /// does not exist.
    pub fn lineage_current(&self, id: &str) -> Result<Option<AppPassword>, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.lineage_current(id),
            Backend::Postgres(b) => b.lineage_current(id),
        }
    }
}
