//! The redb backend: one embedded file, one process.
//!
//! # Layout
//!
//! One [redb] file holding four tables:
//! - `app_passwords`: public id (`&str`) → serde_json of an [`AppPassword`] (`&[u8]`);
//! - `user_index`: a multimap user (`&str`) → ids (`&str`), updated in the same
//!   write transaction as `app_passwords`, so the two are always consistent;
//! - `meta`: `"schema_version"` → `u64`;
//! - `sessions`: sign-in sessions and pre-login records (`redb/sessions.rs`).
//!
//! # Guarantees
//!
//! - **Schema versioning.** [`Redb::open`] writes [`SCHEMA_VERSION`] into a new
//!   store, runs the migration steps (see `MIGRATIONS`) on an older one, and
//!   refuses a newer one with [`StoreError::UnknownSchema`]. Before migrating,
//!   it copies the file next to itself (`redb/backup.rs`) and logs where.
//! - **Durability.** Every mutating method is one write transaction committed
//!   with redb's default `Durability::Immediate` (fsync) before it returns.
//! - **File safety.** A missing parent directory is created with mode 0700 and a
//!   missing store file with mode 0600, whole: written beside it, then linked
//!   into place (`create_whole`). redb holds an exclusive lock on the file,
//!   so a second process (or a second store in this one) gets
//!   [`StoreError::Locked`].
//! - **Crash recovery: redb's file format v3.** Every file is written in it
//!   ([`builder`]), and [`Redb::open`] moves a store still in format v2 to
//!   v3 once, after having redb repair it as after a crash. redb 2.6
//!   mishandles a v2 file after a `kill -9` at two moments of its own crash
//!   repair. Its header, marked clean, is written in one batch with the
//!   allocator state it vouches for, in no set order, so it can reach the
//!   file first: the next open trusts stale allocator state and hands out
//!   pages that are in use. Or it is written before the file is trimmed to
//!   the length it records: the next open panics (`assertion failed:
//!   !self.needs_recovery.load(..)`, redb `page_manager.rs:851`). Format v3
//!   never trusts allocator state found in the file (it rebuilds it, or
//!   loads the copy committed with the last transaction) and reconciles the
//!   length; redb 3 and later read v3 only.
//!
//! Every method blocks. redb types never leave this module (and `error.rs`).
//!
//! [redb]: https://docs.rs/redb

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ::redb::{
    MultimapTableDefinition, ReadableMultimapTable, ReadableTable, TableDefinition,
    WriteTransaction,
};

use super::error::{open_error, OrBackend};
use super::{
    AppPassword, MigrationCopy, Revoked, Rotated, Status, StatusCounts, StoreError, Usage,
};

mod backup;
mod sessions;

/// The schema version this build writes and understands.
pub(super) const SCHEMA_VERSION: u64 = 2;

pub(super) const RECORDS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("app_passwords");
pub(super) const USER_INDEX: MultimapTableDefinition<'static, &'static str, &'static str> =
    MultimapTableDefinition::new("user_index");
pub(super) const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");
pub(super) const SCHEMA_KEY: &str = "schema_version";

/// A schema migration step, run inside the opening write transaction.
type Migration = fn(&WriteTransaction, &Path) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` upgrades a store from version `i + 1` to `i + 2`, so its
/// length is always `SCHEMA_VERSION - 1`. To go to version 3: bump
/// [`SCHEMA_VERSION`] and push a `migrate_v2_to_v3`.
pub(super) const MIGRATIONS: &[Migration] = &[migrate_v1_to_v2];

/// The redb store. See the module documentation.
pub(super) struct Redb {
    pub(super) db: ::redb::Database,
    path: PathBuf,
    /// The copy taken before this open migrated an older schema.
    migrated: Option<MigrationCopy>,
}

impl std::fmt::Debug for Redb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redb")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Redb {
    /// Opens the store at `path`, creating it (and its parent directory) if
    /// missing, and brings its schema to [`SCHEMA_VERSION`].
    pub(super) fn open(path: &Path) -> Result<Redb, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // No-op when it exists; the mode applies only to directories created here.
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(open_err)?;
        }
        let mut store = Redb {
            db: open_file(path)?,
            path: path.to_path_buf(),
            migrated: None,
        };
        let found = store.stored_schema()?;
        if let Some(found) = found.filter(|&v| v == 0 || v > SCHEMA_VERSION) {
            // Refused before anything, the format upgrade included, writes.
            return Err(StoreError::UnknownSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if let Some(old) = found.filter(|&v| v < SCHEMA_VERSION) {
            // Closed for the copy, so the copy is the file as last committed.
            drop(store);
            let copy = MigrationCopy {
                from: old,
                path: backup::pre_migration_copy(path, old)?,
            };
            tracing::warn!(
                store = %path.display(),
                backup = %copy.path.display(),
                "{copy}"
            );
            store = Redb {
                db: open_file(path)?,
                path: path.to_path_buf(),
                migrated: Some(copy),
            };
        }
        store.upgrade_format()?;
        store.init_schema()?;
        Ok(store)
    }

    /// The schema version the store records, `None` for a new store.
    fn stored_schema(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().backend(&self.path)?;
        let meta = match txn.open_table(META) {
            Err(::redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            other => other.backend(&self.path)?,
        };
        let found = meta.get(SCHEMA_KEY).backend(&self.path)?.map(|v| v.value());
        Ok(found)
    }

    /// Moves a store in redb's file format v2 to v3 (see the module
    /// documentation); does nothing to a v3 store. [`open_file`] has had redb
    /// repair a v2 store, so the upgrade's commits allocate from allocator
    /// state rebuilt from the tables.
    fn upgrade_format(&mut self) -> Result<(), StoreError> {
        if file_format(&self.path)? != FILE_FORMAT_V2 {
            return Ok(());
        }
        self.db.upgrade().backend(&self.path)?;
        tracing::info!(store = %self.path.display(), "moved the store to redb file format v3");
        Ok(())
    }

    /// The path the store was opened at.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The copy taken before opening it migrated an older schema, if it did.
    pub(super) fn migrated(&self) -> Option<&MigrationCopy> {
        self.migrated.as_ref()
    }

    /// Stores a new app password.
    ///
    /// Fails with [`StoreError::DuplicateId`] if the id exists and with
    /// [`StoreError::DuplicateName`] if the user has a password with the same
    /// name that is active at `now` (and not rotated away); both checks run inside the inserting
    /// transaction. Durable when it returns `Ok`.
    pub(super) fn insert(&self, rec: &AppPassword, now: u64) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut records = txn.open_table(RECORDS).backend(&self.path)?;
            let mut index = txn.open_multimap_table(USER_INDEX).backend(&self.path)?;
            if records.get(rec.id.as_str()).backend(&self.path)?.is_some() {
                return Err(StoreError::DuplicateId { id: rec.id.clone() });
            }
            for other in self.user_records(&index, &records, &rec.user)? {
                if other.name == rec.name && holds_name(&other, now) {
                    return Err(StoreError::DuplicateName {
                        user: rec.user.clone(),
                        name: rec.name.clone(),
                    });
                }
            }
            records
                .insert(rec.id.as_str(), encode(rec)?.as_slice())
                .backend(&self.path)?;
            index
                .insert(rec.user.as_str(), rec.id.as_str())
                .backend(&self.path)?;
            Ok(())
        })
    }

    /// The app password with this id, if any.
    pub(super) fn get(&self, id: &str) -> Result<Option<AppPassword>, StoreError> {
        let txn = self.db.begin_read().backend(&self.path)?;
        let records = txn.open_table(RECORDS).backend(&self.path)?;
        load(&records, id, &self.path)
    }

    /// All app passwords, or those of `user` (looked up through the user
    /// index), ordered by user, then `created_at`, then id.
    pub(super) fn list(&self, user: Option<&str>) -> Result<Vec<AppPassword>, StoreError> {
        let txn = self.db.begin_read().backend(&self.path)?;
        let records = txn.open_table(RECORDS).backend(&self.path)?;
        let mut out = match user {
            Some(user) => {
                let index = txn.open_multimap_table(USER_INDEX).backend(&self.path)?;
                self.user_records(&index, &records, user)?
            }
            None => {
                let mut out = Vec::new();
                for entry in records.iter().backend(&self.path)? {
                    let (key, value) = entry.backend(&self.path)?;
                    out.push(decode(key.value(), value.value())?);
                }
                out
            }
        };
        out.sort_by(|a, b| (&a.user, a.created_at, &a.id).cmp(&(&b.user, b.created_at, &b.id)));
        Ok(out)
    }

    /// Counts by status at `now`, decoding only the two times of each
    /// record (serde skips the rest without building it).
    pub(super) fn count_by_status(&self, now: u64) -> Result<StatusCounts, StoreError> {
        #[derive(serde::Deserialize)]
        struct Times {
            revoked_at: Option<u64>,
            expires_at: Option<u64>,
        }
        let txn = self.db.begin_read().backend(&self.path)?;
        let records = txn.open_table(RECORDS).backend(&self.path)?;
        let mut counts = StatusCounts::default();
        for entry in records.iter().backend(&self.path)? {
            let (key, value) = entry.backend(&self.path)?;
            let t: Times =
                serde_json::from_slice(value.value()).map_err(|source| StoreError::Corrupt {
                    id: key.value().to_owned(),
                    source,
                })?;
            counts.add(Status::at(t.revoked_at, t.expires_at, now));
        }
        Ok(counts)
    }

    /// Revokes one app password at `now`. Revoking twice keeps the first time.
    pub(super) fn revoke(&self, id: &str, now: u64) -> Result<Revoked, StoreError> {
        self.write(|txn| {
            let mut records = txn.open_table(RECORDS).backend(&self.path)?;
            let Some(mut rec) = load(&records, id, &self.path)? else {
                return Ok(Revoked::NotFound);
            };
            if let Some(revoked_at) = rec.revoked_at.filter(|&at| at <= now) {
                return Ok(Revoked::Already { revoked_at });
            }
            // Not revoked, or only scheduled (a rotation's grace): revoked now.
            rec.revoked_at = Some(now);
            records
                .insert(id, encode(&rec)?.as_slice())
                .backend(&self.path)?;
            Ok(Revoked::Now(Box::new(rec)))
        })
    }

    /// Revokes, at `now`, every not-yet-revoked app password of `user`
    /// (expired ones and ones in a rotation's grace included) and returns
    /// the ids revoked by this call,
    /// ordered by `created_at`, then id.
    pub(super) fn revoke_user(&self, user: &str, now: u64) -> Result<Vec<String>, StoreError> {
        self.write(|txn| {
            let mut records = txn.open_table(RECORDS).backend(&self.path)?;
            let index = txn.open_multimap_table(USER_INDEX).backend(&self.path)?;
            let mut recs = self.user_records(&index, &records, user)?;
            recs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            let mut revoked = Vec::new();
            for mut rec in recs {
                if !rec.is_revoked(now) {
                    rec.revoked_at = Some(now);
                    records
                        .insert(rec.id.as_str(), encode(&rec)?.as_slice())
                        .backend(&self.path)?;
                    revoked.push(rec.id);
                }
            }
            Ok(revoked)
        })
    }

    /// Records a batch of uses in one durable transaction. Unknown ids are
    /// skipped; `last_used_at` never moves backwards (a use at the same second
    /// updates the address).
    pub(super) fn record_usage(&self, batch: &[Usage]) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut records = txn.open_table(RECORDS).backend(&self.path)?;
            for usage in batch {
                let Some(mut rec) = load(&records, &usage.id, &self.path)? else {
                    continue;
                };
                let before = rec.clone();
                rec.record_use(&usage.addr, usage.at);
                if rec == before {
                    continue;
                }
                records
                    .insert(usage.id.as_str(), encode(&rec)?.as_slice())
                    .backend(&self.path)?;
            }
            Ok(())
        })
    }

    /// Replaces the active password `old_id` by `successor` in one durable
    /// transaction: the successor is inserted (its `rotated_from` naming the
    /// old one), the old record gets `rotated_to` and `revoked_at =
    /// revoke_at` (`now` for at once, later for a grace period). The
    /// successor shares the old one's name, so the name check skips it.
    pub(super) fn rotate(
        &self,
        old_id: &str,
        successor: &AppPassword,
        now: u64,
        revoke_at: u64,
    ) -> Result<Rotated, StoreError> {
        self.write(|txn| {
            let mut records = txn.open_table(RECORDS).backend(&self.path)?;
            let mut index = txn.open_multimap_table(USER_INDEX).backend(&self.path)?;
            let Some(mut old) = load(&records, old_id, &self.path)? else {
                return Ok(Rotated::NotFound);
            };
            if let Some(next) = &old.rotated_to {
                return Ok(Rotated::AlreadyRotated(next.clone()));
            }
            match old.status(now) {
                Status::Active => {}
                other => return Ok(Rotated::NotActive(other)),
            }
            if records
                .get(successor.id.as_str())
                .backend(&self.path)?
                .is_some()
            {
                return Err(StoreError::DuplicateId {
                    id: successor.id.clone(),
                });
            }
            for other in self.user_records(&index, &records, &successor.user)? {
                if other.id != old.id && other.name == successor.name && holds_name(&other, now) {
                    return Err(StoreError::DuplicateName {
                        user: successor.user.clone(),
                        name: successor.name.clone(),
                    });
                }
            }
            old.rotated_to = Some(successor.id.clone());
            old.revoked_at = Some(revoke_at.max(now));
            records
                .insert(old.id.as_str(), encode(&old)?.as_slice())
                .backend(&self.path)?;
            records
                .insert(successor.id.as_str(), encode(successor)?.as_slice())
                .backend(&self.path)?;
            index
                .insert(successor.user.as_str(), successor.id.as_str())
                .backend(&self.path)?;
            Ok(Rotated::Now(Box::new(old)))
        })
    }

    /// The current password of the lineage `id` belongs to: the end of its
    /// `rotated_to` chain (`id` itself when it was never rotated). `None`
    /// when `id` does not exist.
    pub(super) fn lineage_current(&self, id: &str) -> Result<Option<AppPassword>, StoreError> {
        let txn = self.db.begin_read().backend(&self.path)?;
        let records = txn.open_table(RECORDS).backend(&self.path)?;
        let Some(mut rec) = load(&records, id, &self.path)? else {
            return Ok(None);
        };
        // Each rotation adds one link; the bound only guards against a
        // corrupt (cyclic) chain.
        for _ in 0..100_000 {
            let Some(next) = rec.rotated_to.clone() else {
                break;
            };
            match load(&records, &next, &self.path)? {
                Some(n) => rec = n,
                None => break,
            }
        }
        Ok(Some(rec))
    }

    /// Runs `f` in one write transaction: committed (durably) if `f` succeeds,
    /// aborted otherwise.
    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // redb's default durability is `Immediate`: commit returns after fsync.
        let txn = self.db.begin_write().backend(&self.path)?;
        match f(&txn) {
            Ok(value) => {
                txn.commit().backend(&self.path)?;
                Ok(value)
            }
            Err(e) => {
                // The error of `f` is the one to report; a failed abort leaves
                // nothing committed either.
                let _ = txn.abort();
                Err(e)
            }
        }
    }

    /// The records the user index lists for `user`, in index (id) order.
    fn user_records(
        &self,
        index: &impl ReadableMultimapTable<&'static str, &'static str>,
        records: &impl ReadableTable<&'static str, &'static [u8]>,
        user: &str,
    ) -> Result<Vec<AppPassword>, StoreError> {
        let mut out = Vec::new();
        for id in index.get(user).backend(&self.path)? {
            let id = id.backend(&self.path)?;
            let id = id.value();
            let rec = load(records, id, &self.path)?.ok_or_else(|| StoreError::IndexMismatch {
                user: user.to_owned(),
                id: id.to_owned(),
            })?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Creates the tables and brings the schema to [`SCHEMA_VERSION`].
    fn init_schema(&self) -> Result<(), StoreError> {
        self.write(|txn| {
            let found = {
                let meta = txn.open_table(META).backend(&self.path)?;
                let found = meta.get(SCHEMA_KEY).backend(&self.path)?;
                found.map(|v| v.value())
            };
            if let Some(found) = found {
                migrate(txn, found, &self.path)?;
            }
            txn.open_table(RECORDS).backend(&self.path)?;
            txn.open_multimap_table(USER_INDEX).backend(&self.path)?;
            if found != Some(SCHEMA_VERSION) {
                let mut meta = txn.open_table(META).backend(&self.path)?;
                meta.insert(SCHEMA_KEY, SCHEMA_VERSION)
                    .backend(&self.path)?;
            }
            Ok(())
        })
    }
}

/// The redb settings of every file this module writes: new files in file
/// format v3 (see the module documentation).
pub(super) fn builder() -> ::redb::Builder {
    let mut builder = ::redb::Builder::new();
    builder.create_with_file_format_v3(true);
    builder
}

/// redb's file format version 2, the one `redb::Builder` still creates by default.
const FILE_FORMAT_V2: u8 = 2;

/// What this module reads of a redb file's header, laid out as redb's
/// `docs/design.md` describes it (format v2 is frozen: redb 3 dropped it).
struct Header {
    /// Bit 0 names the primary of the two transaction slots, bit 1 is
    /// `recovery_required`.
    god_byte: u8,
    /// The file format version of the primary slot (its first byte).
    format: u8,
}

impl Header {
    const MAGIC: [u8; 9] = *b"redb\x1a\x0a\xa9\x0d\x0a";
    const GOD_BYTE: usize = 9;
    const RECOVERY_REQUIRED: u8 = 0b10;
    const SLOTS: usize = 64;
    const SLOT_LEN: usize = 128;

    /// The header of `file`; `None` for a file too short to hold one or
    /// without redb's magic number (a new file, or not redb: redb decides).
    fn read(file: &File) -> io::Result<Option<Header>> {
        let mut bytes = [0u8; Self::SLOTS + 2 * Self::SLOT_LEN];
        if file.metadata()?.len() < bytes.len() as u64 {
            return Ok(None);
        }
        file.read_exact_at(&mut bytes, 0)?;
        if bytes[..Self::MAGIC.len()] != Self::MAGIC {
            return Ok(None);
        }
        let god_byte = bytes[Self::GOD_BYTE];
        let primary = usize::from(god_byte & 1);
        Ok(Some(Header {
            god_byte,
            format: bytes[Self::SLOTS + primary * Self::SLOT_LEN],
        }))
    }
}

/// The redb file format of the store's last commit (0 for a file without a
/// redb header).
pub(super) fn file_format(path: &Path) -> Result<u8, StoreError> {
    File::open(path)
        .and_then(|f| Header::read(&f))
        .map(|h| h.map_or(0, |h| h.format))
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// Marks a format v2 store whose header says it was closed cleanly as
/// needing recovery, so that redb rebuilds its allocator state and layout
/// from the tables and the file's length instead of trusting them: after a
/// crash at the wrong moment of redb 2.6's own repair, a v2 header says
/// "clean" over stale allocator state or a wrong length (module
/// documentation), and redb repairs only on the flag. It sets the flag as
/// redb does itself when it opens a file for writing; the caller holds the
/// file's lock. Returns whether it marked the file.
fn mark_v2_for_repair(file: &File) -> io::Result<bool> {
    let Some(header) = Header::read(file)? else {
        return Ok(false);
    };
    if header.format != FILE_FORMAT_V2 || header.god_byte & Header::RECOVERY_REQUIRED != 0 {
        return Ok(false);
    }
    let god_byte = header.god_byte | Header::RECOVERY_REQUIRED;
    file.write_all_at(&[god_byte], Header::GOD_BYTE as u64)?;
    file.sync_data()?;
    Ok(true)
}

/// Opens (or creates, mode 0600, in file format v3, [`create_whole`]) the
/// redb file at `path`, locking it; a format v2 file is opened as after a
/// crash ([`mark_v2_for_repair`]).
fn open_file(path: &Path) -> Result<::redb::Database, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let open = || OpenOptions::new().read(true).write(true).open(path);
    let file = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_whole(path)?;
            open().map_err(open_err)?
        }
        other => other.map_err(open_err)?,
    };
    // The lock redb takes too (flock; on this same open file it is kept, not
    // contended), taken first so no other process is at work on the header.
    file.try_lock().map_err(|e| match e {
        TryLockError::WouldBlock => StoreError::Locked {
            path: path.to_path_buf(),
        },
        TryLockError::Error(source) => open_err(source),
    })?;
    if mark_v2_for_repair(&file).map_err(open_err)? {
        tracing::info!(store = %path.display(), "repairing a store in redb file format v2 before moving it to v3");
    }
    builder().create_file(file).map_err(|e| open_error(path, e))
}

/// Creates a new, empty store at `path` whole: written and synced under a
/// name of this process beside it, then linked to `path`, so `path` never
/// names a half-written file. (redb sizes a new file, writes its header,
/// and writes its magic number last; a crash in between left a file every
/// later open refused as not a redb database.) When another process linked
/// its store first, that one is kept.
fn create_whole(path: &Path) -> Result<(), StoreError> {
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".new-{}-{}",
        std::process::id(),
        CREATED.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(name);
    // Named for this process: anything found there is left from a crash.
    let _ = std::fs::remove_file(&tmp);
    let linked = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(open_err)
        // redb syncs the new file before it returns, and on drop.
        .and_then(|file| builder().create_file(file).map_err(|e| open_error(path, e)))
        .map(drop)
        .and_then(|()| match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(open_err(e)),
            _ => Ok(()),
        })
        .and_then(|()| {
            // The new name itself survives a power cut too.
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            File::open(dir.unwrap_or(Path::new(".")))
                .and_then(|d| d.sync_all())
                .map_err(open_err)
        });
    let _ = std::fs::remove_file(&tmp);
    linked
}

/// Version 2 added limits, several last-used addresses and rotation
/// lineage to the record, all optional (an old record means: no limit, no
/// lineage). The one rewrite: a record's single last-used address becomes
/// the first entry of its `last_used` list.
fn migrate_v1_to_v2(txn: &WriteTransaction, path: &Path) -> Result<(), StoreError> {
    let mut records = txn.open_table(RECORDS).backend(path)?;
    let mut upgraded = Vec::new();
    for entry in records.iter().backend(path)? {
        let (key, value) = entry.backend(path)?;
        let mut rec = decode(key.value(), value.value())?;
        if let (Some(at), Some(addr), true) = (
            rec.last_used_at,
            rec.last_used_addr.clone(),
            rec.last_used.is_empty(),
        ) {
            rec.record_use(&addr, at);
            upgraded.push(rec);
        }
    }
    for rec in upgraded {
        records
            .insert(rec.id.as_str(), encode(&rec)?.as_slice())
            .backend(path)?;
    }
    Ok(())
}

/// Runs the migration steps from `found` up to [`SCHEMA_VERSION`].
fn migrate(txn: &WriteTransaction, found: u64, path: &Path) -> Result<(), StoreError> {
    let unknown = StoreError::UnknownSchema {
        found,
        supported: SCHEMA_VERSION,
    };
    if found == 0 || found > SCHEMA_VERSION {
        return Err(unknown);
    }
    for version in found..SCHEMA_VERSION {
        let step = usize::try_from(version - 1)
            .ok()
            .and_then(|i| MIGRATIONS.get(i));
        let Some(step) = step else {
            return Err(unknown);
        };
        step(txn, path)?;
    }
    Ok(())
}

/// Whether `rec` keeps its name from being reused at `now`: active, and
/// not rotated away (one in a rotation's grace has handed its name on).
fn holds_name(rec: &AppPassword, now: u64) -> bool {
    rec.status(now) == Status::Active && rec.rotated_to.is_none()
}

fn load(
    records: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
    path: &Path,
) -> Result<Option<AppPassword>, StoreError> {
    match records.get(id).backend(path)? {
        Some(bytes) => decode(id, bytes.value()).map(Some),
        None => Ok(None),
    }
}

fn decode(id: &str, bytes: &[u8]) -> Result<AppPassword, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        id: id.to_owned(),
        source,
    })
}

fn encode(rec: &AppPassword) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(rec).map_err(|source| StoreError::Encode {
        id: rec.id.clone(),
        source,
    })
}
