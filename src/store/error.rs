//! The store's error type. Engine errors (redb's) are wrapped in the opaque
//! [`BackendError`] so that they stay out of the public API.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store file or its directory cannot be created or opened.
    #[error("cannot create or open the store at {}", path.display())]
    Open {
        /// The store file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another `Store` in this one) holds the file.
    #[error(
        "the store at {} is locked: another passgate process (probably `passgate serve`) holds it",
        path.display()
    )]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// The file exists but is not a redb database.
    #[error("{} is not a passgate store (not a redb database file)", path.display())]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// What the database engine reported.
        #[source]
        source: BackendError,
    },
    /// The store was written by a newer passgate (or is not a passgate store).
    #[error(
        "the store has schema version {found}, but this passgate supports version {supported}; \
         use the passgate release that wrote it or a newer one"
    )]
    UnknownSchema {
        /// Version found in the file.
        found: u64,
        /// The version this build supports (the newest it knows).
        supported: u64,
    },
    /// An app password with this id already exists.
    #[error("an app password with id {id} already exists")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// The user already has an active app password with this name.
    #[error("user {user} already has an active app password named {name:?}")]
    DuplicateName {
        /// The user.
        user: String,
        /// The name.
        name: String,
    },
    /// A stored record cannot be decoded.
    #[error("the stored record of app password {id} is corrupt")]
    Corrupt {
        /// Key of the record.
        id: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A record cannot be encoded (not expected to happen).
    #[error("cannot encode the record of app password {id}")]
    Encode {
        /// Id of the record.
        id: String,
        /// The encoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The user index names a record that does not exist.
    #[error(
        "the store's user index lists app password {id} for user {user}, but it does not exist"
    )]
    IndexMismatch {
        /// The user.
        user: String,
        /// The missing id.
        id: String,
    },
    /// The PostgreSQL database cannot be reached (refused, reset, timed out):
    /// requests that need the store get 503, the CLI exits 1.
    #[error("the database at {url} is unreachable")]
    Unreachable {
        /// The database URL, without its password.
        url: String,
        /// What the connection reported.
        #[source]
        source: BackendError,
    },
    /// The PostgreSQL database refused a statement.
    #[error("the database at {url} failed")]
    Database {
        /// The database URL, without its password.
        url: String,
        /// What the database reported.
        #[source]
        source: BackendError,
    },
    /// The TLS settings of the database URL cannot be used.
    #[error("cannot set up TLS for the database at {url}")]
    DatabaseTls {
        /// The database URL, without its password.
        url: String,
        /// Why.
        #[source]
        source: super::postgres::tls::TlsError,
    },
    /// The threads that drive database connections cannot start.
    #[error("cannot start the database runtime")]
    Runtime {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `store copy` into a database that already holds app passwords.
    #[error("the database at {url} already holds {count} app password(s); refusing to copy into it without --force")]
    NotEmpty {
        /// The database URL, without its password.
        url: String,
        /// How many it holds.
        count: u64,
    },
    /// `store backup` to a file that exists: a backup never overwrites.
    #[error("{} exists; refusing to overwrite it: choose a new file name", path.display())]
    BackupExists {
        /// The file asked for.
        path: PathBuf,
    },
    /// The backup file could not be written.
    #[error("cannot write the backup {}", path.display())]
    BackupWrite {
        /// The file asked for.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `store backup` of a PostgreSQL store: that is the database's tools' job.
    #[error("the store is the PostgreSQL database {url}: back it up with pg_dump (for example `pg_dump --format=custom --file=FILE DBNAME`) and restore with pg_restore; `passgate store backup` copies redb stores")]
    BackupPostgres {
        /// The database URL, without its password.
        url: String,
    },
    /// The database engine failed (I/O, corruption, …).
    #[error("the store at {} failed", path.display())]
    Backend {
        /// The store file.
        path: PathBuf,
        /// What the database engine reported.
        #[source]
        source: BackendError,
    },
}

impl StoreError {
    /// True when the database could not be reached (as opposed to refusing
    /// what was asked): worth a retry later, and a 503 meanwhile.
    #[must_use]
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::Unreachable { .. })
    }
}

/// An error of the underlying database engine, opaque so that the engine can
/// change; its `source()` chain leads to the engine's own error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BackendError(Box<Engine>);

impl BackendError {
    pub(super) fn new(engine: Engine) -> BackendError {
        BackendError(Box::new(engine))
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum Engine {
    #[error(transparent)]
    Postgres(tokio_postgres::Error),
    #[error("its TLS certificate was refused (see sslmode and sslrootcert in the URL)")]
    Certificate(#[source] tokio_postgres::Error),
    #[error(transparent)]
    Pool(deadpool_postgres::PoolError),
    #[error("cannot build the connection pool")]
    PoolBuild(#[source] deadpool_postgres::BuildError),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the database runtime stopped")]
    Stopped,
    #[error("cannot open the database")]
    Database(#[from] redb::DatabaseError),
    #[error("cannot begin a transaction")]
    Transaction(#[from] redb::TransactionError),
    #[error("cannot open a table")]
    Table(#[from] redb::TableError),
    #[error("storage error")]
    Storage(#[from] redb::StorageError),
    #[error("cannot commit")]
    Commit(#[from] redb::CommitError),
    #[error("cannot upgrade the file format")]
    Upgrade(#[from] redb::UpgradeError),
}

/// Turns an engine result into a [`StoreError::Backend`] naming the store.
pub(super) trait OrBackend<T> {
    fn backend(self, path: &Path) -> Result<T, StoreError>;
}

impl<T, E: Into<Engine>> OrBackend<T> for Result<T, E> {
    fn backend(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Backend {
            path: path.to_path_buf(),
            source: BackendError(Box::new(e.into())),
        })
    }
}

/// Maps an error of opening the redb file to the store's errors.
pub(super) fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_path_buf(),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == io::ErrorKind::InvalidData =>
        {
            StoreError::NotAStore {
                path: path.to_path_buf(),
                source: BackendError(Box::new(Engine::Storage(redb::StorageError::Io(io)))),
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => StoreError::Open {
            path: path.to_path_buf(),
            source: io,
        },
        other => StoreError::Backend {
            path: path.to_path_buf(),
            source: BackendError(Box::new(Engine::Database(other))),
        },
    }
}
