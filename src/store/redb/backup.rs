//! Copies of a redb store.
//!
//! - [`Redb::backup`] (`passgate store backup FILE`): every table as one read
//!   transaction sees it, written into a new redb file, so the copy is
//!   consistent while writers go on (redb readers never block writers). It is
//!   written under a temporary name beside `FILE`, synced, then linked to
//!   `FILE`, which fails if `FILE` exists: a backup never overwrites, and
//!   `FILE` never names a half-written copy.
//! - [`pre_migration_copy`]: before a schema migration, the store file itself
//!   (closed, so nothing is in flight) copied next to it, named with its old
//!   schema version and the time, so a failed or unwanted upgrade can be undone
//!   by putting the copy back.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ::redb::{ReadTransaction, ReadableMultimapTable, ReadableTable, TableError, WriteTransaction};

use super::sessions::SESSIONS;
use super::{Redb, META, RECORDS, USER_INDEX};
use crate::store::error::{open_error, OrBackend};
use crate::store::StoreError;

impl Redb {
    /// Writes a consistent copy of the store to `to` (which must not exist);
    /// returns how many app passwords it holds.
    pub(in crate::store) fn backup(&self, to: &Path) -> Result<usize, StoreError> {
        if to.symlink_metadata().is_ok() {
            return Err(StoreError::BackupExists { path: to.into() });
        }
        // One snapshot for every table, taken now.
        let snapshot = self.db.begin_read().backend(&self.path)?;
        let tmp = temp_name(to);
        let written = write_copy(&snapshot, &self.path, &tmp).and_then(|n| {
            publish(&tmp, to)?;
            Ok(n)
        });
        let _ = std::fs::remove_file(&tmp);
        written
    }
}

/// `FILE.partial-PID`, beside `FILE`.
fn temp_name(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    to.with_file_name(name)
}

/// Copies every table of `snapshot` into a new store at `tmp`, synced.
fn write_copy(snapshot: &ReadTransaction, from: &Path, tmp: &Path) -> Result<usize, StoreError> {
    let write_err = |source| StoreError::BackupWrite {
        path: tmp.into(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(write_err)?;
    let copy = super::builder()
        .create_file(file)
        .map_err(|e| open_error(tmp, e))?;
    let txn = copy.begin_write().backend(tmp)?;
    let count = copy_tables(snapshot, from, &txn, tmp)?;
    // Durability::Immediate (the default): the commit is fsynced.
    txn.commit().backend(tmp)?;
    drop(copy);
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(write_err)?;
    Ok(count)
}

fn copy_tables(
    snapshot: &ReadTransaction,
    from: &Path,
    txn: &WriteTransaction,
    to: &Path,
) -> Result<usize, StoreError> {
    let mut count = 0;
    if let Some(records) = existing(snapshot.open_table(RECORDS), from)? {
        let mut out = txn.open_table(RECORDS).backend(to)?;
        for entry in records.iter().backend(from)? {
            let (k, v) = entry.backend(from)?;
            out.insert(k.value(), v.value()).backend(to)?;
            count += 1;
        }
    }
    if let Some(index) = existing(snapshot.open_multimap_table(USER_INDEX), from)? {
        let mut out = txn.open_multimap_table(USER_INDEX).backend(to)?;
        for entry in index.iter().backend(from)? {
            let (user, ids) = entry.backend(from)?;
            for id in ids {
                let id = id.backend(from)?;
                out.insert(user.value(), id.value()).backend(to)?;
            }
        }
    }
    if let Some(meta) = existing(snapshot.open_table(META), from)? {
        let mut out = txn.open_table(META).backend(to)?;
        for entry in meta.iter().backend(from)? {
            let (k, v) = entry.backend(from)?;
            out.insert(k.value(), v.value()).backend(to)?;
        }
    }
    if let Some(sessions) = existing(snapshot.open_table(SESSIONS), from)? {
        let mut out = txn.open_table(SESSIONS).backend(to)?;
        for entry in sessions.iter().backend(from)? {
            let (k, v) = entry.backend(from)?;
            out.insert(k.value(), v.value()).backend(to)?;
        }
    }
    Ok(count)
}

/// A table that was never created is an empty one.
fn existing<T>(opened: Result<T, TableError>, path: &Path) -> Result<Option<T>, StoreError> {
    match opened {
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        other => other.backend(path).map(Some),
    }
}

/// Links the finished copy to `to`: fails, leaving `to` alone, if it exists.
fn publish(tmp: &Path, to: &Path) -> Result<(), StoreError> {
    match std::fs::hard_link(tmp, to) {
        Ok(()) => {
            sync_dir(to);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(StoreError::BackupExists { path: to.into() })
        }
        Err(source) => Err(StoreError::BackupWrite {
            path: to.into(),
            source,
        }),
    }
}

/// Makes a new directory entry durable (best effort: the data is synced).
fn sync_dir(file: &Path) {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Copies the (closed) store file at `path`, whose schema version is
/// `version`, to `FILE.vVERSION-YYYYMMDDTHHMMSSZ.bak` beside it; returns the
/// copy's path.
pub(super) fn pre_migration_copy(path: &Path, version: u64) -> Result<PathBuf, StoreError> {
    let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".v{version}-{stamp}.bak"));
    let to = path.with_file_name(name);
    let write_err = |source| StoreError::BackupWrite {
        path: to.clone(),
        source,
    };
    let mut src = File::open(path).map_err(write_err)?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&to)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                StoreError::BackupExists { path: to.clone() }
            } else {
                write_err(e)
            }
        })?;
    io::copy(&mut src, &mut dst)
        .and_then(|_| dst.sync_all())
        .map_err(write_err)?;
    sync_dir(&to);
    Ok(to)
}
