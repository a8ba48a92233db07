//! The PostgreSQL backend: one database shared by several gateways.
//!
//! # Layout
//!
//! Table `app_passwords`, one row per password: a column per field that is
//! queried or changed (`id` primary key, `user_name`, `name`, `scopes`,
//! `hash`, `created_at`, `expires_at`, `revoked_at`, `last_used_at`,
//! `last_used_addr`, `rotated_from`, `rotated_to`; times are unix seconds) and
//! `record`, the whole record as serde_json, so fields without a column of
//! their own (the limits, the last addresses) survive a round trip. On read
//! the columns win; a write of a field without a column rewrites `record`. Table `sessions` holds sign-in sessions
//! (`postgres/sessions.rs`). Schema versions are rows of `passgate_schema`;
//! `schema.rs` holds the migrations.
//!
//! # Guarantees
//!
//! - **Durability.** Every mutation is one transaction committed with
//!   `synchronous_commit = on`, whatever the server's default.
//! - **Uniqueness.** Ids: the primary key. Names: "active" depends on the
//!   clock, which no index sees, so the inserting transaction takes a
//!   per-user advisory lock and checks; a partial unique index still
//!   refuses two unrevoked, never-expiring passwords with one name.
//! - **Revocation fan-out.** A revocation `NOTIFY`s [`CHANNEL`] with the id in
//!   its transaction (delivered on commit); `listen.rs` hears it on every
//!   gateway. So does a rotation, for the old password, also when its
//!   revocation is dated at the end of a grace period: each gateway then
//!   forgets what it cached and reads the record again, whose revocation
//!   time its cache honours from then on (no second notification is needed
//!   when the grace ends).
//! - **Future-dated revocations.** `revoked_at` may lie in the future (a
//!   rotation's grace): every query that asks "revoked?" compares it with
//!   the caller's `now`, exactly as [`AppPassword::is_revoked`] does.
//! - **Never an open door.** A database that cannot be reached within
//!   [`OP_TIMEOUT`] is [`StoreError::Unreachable`], which requests turn into 503.
//!
//! The store owns a small runtime (`passgate-db` threads) that drives the
//! connections, so its blocking methods work from any thread, async or not:
//! each sends its query there and waits for the answer.

mod listen;
mod schema;
mod sessions;
pub(super) mod tls;
pub(super) mod url;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Transaction};
use tokio_postgres::Row;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::{BackendError, Engine};
use super::{AppPassword, Changes, Revoked, Rotated, Status, StatusCounts, StoreError, Usage};
use url::DbUrl;

/// How many schema versions this build knows.
#[cfg(test)]
pub(super) const MIGRATION_COUNT: usize = schema::MIGRATIONS.len();

/// The notification channel of revocations; the payload is the id.
pub(super) const CHANNEL: &str = "passgate_revoked";

/// The longest a store call waits for the database, connecting included.
pub(super) const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool (the listener has its own).
const POOL_SIZE: usize = 16;

/// First key of the per-user advisory locks taken by inserts ("pgap").
const USER_LOCK: i32 = 0x7067_6170;

const COLUMNS: &str = "id, user_name, name, scopes, hash, created_at, expires_at, revoked_at, \
                       last_used_at, last_used_addr, rotated_from, rotated_to, record";

/// Rows that keep their name from being reused at `$now` (the redb
/// backend's `holds_name`): active, and not rotated away.
const HOLDS_NAME: &str = "(revoked_at IS NULL OR revoked_at > $3) \
                          AND (expires_at IS NULL OR expires_at > $3) AND rotated_to IS NULL";

/// Rows not revoked at `$2`: never, or only from a later time on.
const NOT_REVOKED: &str = "(revoked_at IS NULL OR revoked_at > $2)";

/// The PostgreSQL store. See the module documentation.
pub(super) struct Postgres {
    pool: Pool,
    url: DbUrl,
    connector: MakeRustlsConnect,
    /// Drives the connections; shut down without waiting on drop.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    health: Arc<Health>,
}

/// What `ready` reports: the last store call reached the database, and the
/// notification connection is up (see `listen.rs`).
#[derive(Debug)]
pub(super) struct Health {
    reachable: AtomicBool,
    listening: AtomicBool,
    /// No listener runs (a CLI): only `reachable` counts.
    watched: AtomicBool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A failure inside a store call, before it is named after the database.
enum Fail {
    Db(tokio_postgres::Error),
    Pool(PoolError),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<PoolError> for Fail {
    fn from(e: PoolError) -> Self {
        Fail::Pool(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Postgres {
    /// Connects, then creates or migrates the schema (once, however many
    /// gateways start at the same moment).
    pub(super) fn open(url: &DbUrl) -> Result<Postgres, StoreError> {
        // Everything that can fail comes before the runtime: a runtime
        // dropped on an early return panics when the caller is async (the
        // CLI), where a clear error was due.
        let connector = tls::connector(url).map_err(|source| StoreError::DatabaseTls {
            url: url.shown().to_owned(),
            source,
        })?;
        let mut pg = (*url.pg).clone();
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(OP_TIMEOUT);
        }
        let manager = Manager::from_config(
            pg,
            connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(OP_TIMEOUT))
            .create_timeout(Some(OP_TIMEOUT))
            .recycle_timeout(Some(OP_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Unreachable {
                url: url.shown().to_owned(),
                source: BackendError::new(Engine::PoolBuild(e)),
            })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("passgate-db")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Runtime { source })?;
        let store = Postgres {
            pool,
            url: url.clone(),
            connector,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            health: Arc::new(Health {
                reachable: AtomicBool::new(false),
                listening: AtomicBool::new(false),
                watched: AtomicBool::new(false),
            }),
        };
        store.run(schema::migrate)?;
        Ok(store)
    }

    pub(super) fn insert(&self, rec: &AppPassword, now: u64) -> Result<(), StoreError> {
        let rec = rec.clone();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = durable_txn(&mut client).await?;
            lock_user(&txn, &rec.user).await?;
            check_name(&txn, &rec, None, now).await?;
            let inserted = insert_row(&txn, &rec).await?;
            if inserted == 0 {
                return Err(Fail::Store(StoreError::DuplicateId { id: rec.id.clone() }));
            }
            txn.commit().await?;
            Ok(())
        })
    }

    /// `store copy`: every record as it is, in one transaction.
    pub(super) fn import(
        &self,
        recs: Vec<AppPassword>,
        replace: bool,
    ) -> Result<usize, StoreError> {
        let url = self.url.shown().to_owned();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = durable_txn(&mut client).await?;
            txn.batch_execute("LOCK TABLE app_passwords IN EXCLUSIVE MODE")
                .await?;
            let count: i64 = txn
                .query_one("SELECT count(*) FROM app_passwords", &[])
                .await?
                .get(0);
            if count > 0 {
                if !replace {
                    return Err(Fail::Store(StoreError::NotEmpty {
                        url,
                        count: unint(count),
                    }));
                }
                txn.execute("SELECT pg_notify($1, id) FROM app_passwords", &[&CHANNEL])
                    .await?;
                txn.execute("DELETE FROM app_passwords", &[]).await?;
            }
            for rec in &recs {
                if insert_row(&txn, rec).await? == 0 {
                    return Err(Fail::Store(StoreError::DuplicateId { id: rec.id.clone() }));
                }
            }
            txn.commit().await?;
            Ok(recs.len())
        })
    }

    pub(super) fn get(&self, id: &str) -> Result<Option<AppPassword>, StoreError> {
        let id = id.to_owned();
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let row = client
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM app_passwords WHERE id = $1"),
                    &[&id],
                )
                .await?;
            row.as_ref().map(record).transpose()
        })
    }

    pub(super) fn list(&self, user: Option<&str>) -> Result<Vec<AppPassword>, StoreError> {
        let user = user.map(str::to_owned);
        self.run(move |pool| async move {
            let client = pool.get().await?;
            // Byte order, as the redb backend sorts Rust strings.
            let rows = client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM app_passwords \
                         WHERE $1::text IS NULL OR user_name = $1 \
                         ORDER BY user_name COLLATE \"C\", created_at, id COLLATE \"C\""
                    ),
                    &[&user],
                )
                .await?;
            rows.iter().map(record).collect()
        })
    }

    /// Counted in the database: no row leaves it.
    pub(super) fn count_by_status(&self, now: u64) -> Result<StatusCounts, StoreError> {
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE revoked_at <= $1), \
                            count(*) FILTER (WHERE (revoked_at IS NULL OR revoked_at > $1) \
                                             AND expires_at <= $1), \
                            count(*) \
                     FROM app_passwords",
                    &[&int(now)],
                )
                .await?;
            let (revoked, expired, all) = (
                unint(row.try_get(0)?),
                unint(row.try_get(1)?),
                unint(row.try_get(2)?),
            );
            Ok(StatusCounts {
                active: all.saturating_sub(revoked + expired),
                expired,
                revoked,
            })
        })
    }

    pub(super) fn revoke(&self, id: &str, now: u64) -> Result<Revoked, StoreError> {
        let id = id.to_owned();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = durable_txn(&mut client).await?;
            let row = txn
                .query_opt(
                    &format!(
                        "UPDATE app_passwords SET revoked_at = $2 \
                         WHERE id = $1 AND {NOT_REVOKED} RETURNING {COLUMNS}"
                    ),
                    &[&id, &int(now)],
                )
                .await?;
            let outcome = match row {
                Some(row) => {
                    txn.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id])
                        .await?;
                    Revoked::Now(Box::new(record(&row)?))
                }
                None => {
                    let before = txn
                        .query_opt("SELECT revoked_at FROM app_passwords WHERE id = $1", &[&id])
                        .await?;
                    match before.map(|r| r.get::<_, Option<i64>>(0)) {
                        Some(Some(at)) => Revoked::Already {
                            revoked_at: unint(at),
                        },
                        // Unreachable: the update matched no row not yet revoked.
                        Some(None) | None => Revoked::NotFound,
                    }
                }
            };
            txn.commit().await?;
            Ok(outcome)
        })
    }

    pub(super) fn revoke_user(&self, user: &str, now: u64) -> Result<Vec<String>, StoreError> {
        let user = user.to_owned();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = durable_txn(&mut client).await?;
            let rows = txn
                .query(
                    &format!(
                        "UPDATE app_passwords SET revoked_at = $2 \
                         WHERE user_name = $1 AND {NOT_REVOKED} RETURNING id, created_at"
                    ),
                    &[&user, &int(now)],
                )
                .await?;
            let mut revoked: Vec<(i64, String)> =
                rows.iter().map(|r| (r.get(1), r.get(0))).collect();
            revoked.sort();
            let ids: Vec<String> = revoked.into_iter().map(|(_, id)| id).collect();
            if !ids.is_empty() {
                txn.execute(
                    "SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id",
                    &[&CHANNEL, &ids],
                )
                .await?;
            }
            txn.commit().await?;
            Ok(ids)
        })
    }

    /// One transaction per batch, whatever its size: the rows are read
    /// (locked, in id order, so that two gateways flushing at once cannot
    /// deadlock), merged in Rust exactly as the redb backend merges them
    /// ([`AppPassword::record_use`]), and written back in one statement.
    ///
    /// The merge can be one SQL statement (tried: the five newest distinct
    /// addresses from the stored list and the batch, in `record_use`'s
    /// order), but it then runs per row in the database, the one resource
    /// every gateway shares, and costs it several times what the read and
    /// the write do together (docs/performance.md, "PostgreSQL store"). The
    /// row locks are no extra: the update takes them anyway; reading first
    /// only fixes their order.
    pub(super) fn record_usage(&self, batch: &[Usage]) -> Result<(), StoreError> {
        let batch = batch.to_vec();
        self.run(move |pool| async move {
            let mut ids: Vec<&str> = batch.iter().map(|u| u.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let mut client = pool.get().await?;
            let txn = durable_txn(&mut client).await?;
            let rows = txn
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM app_passwords WHERE id = ANY($1) \
                         ORDER BY id FOR UPDATE"
                    ),
                    &[&ids],
                )
                .await?;
            let mut changed = Vec::new();
            for row in &rows {
                let mut rec = record(row)?;
                let before = rec.clone();
                let id = rec.id.clone();
                for u in batch.iter().filter(|u| u.id == id) {
                    rec.record_use(&u.addr, u.at);
                }
                if rec != before {
                    changed.push(rec);
                }
            }
            if !changed.is_empty() {
                let ids: Vec<&str> = changed.iter().map(|r| r.id.as_str()).collect();
                let ats: Vec<Option<i64>> =
                    changed.iter().map(|r| r.last_used_at.map(int)).collect();
                let addrs: Vec<Option<&str>> = changed
                    .iter()
                    .map(|r| r.last_used_addr.as_deref())
                    .collect();
                let lists = changed
                    .iter()
                    .map(|r| {
                        serde_json::to_value(&r.last_used).map_err(|source| StoreError::Encode {
                            id: r.id.clone(),
                            source,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                txn.execute(
                    "UPDATE app_passwords AS a SET last_used_at = u.at, last_used_addr = u.addr, \
                     record = jsonb_set(a.record, '{last_used}', u.list) \
                     FROM unnest($1::text[], $2::int8[], $3::text[], $4::jsonb[]) \
                          AS u(id, at, addr, list) \
                     WHERE a.id = u.id",
                    &[&ids, &ats, &addrs, &lists],
                )
                .await?;
            }
            txn.commit().await?;
            Ok(())
        })
    }

    /// The redb backend's `rotate`, in one transaction under the user's
    /// lock: the old row is locked and checked, gets `rotated_to` and its
    /// (possibly future) revocation time, the successor is inserted, and
    /// every gateway is told to forget what it cached of the old one.
    pub(super) fn rotate(
        &self,
        old_id: &str,
        successor: &AppPassword,
        now: u64,
        revoke_at: u64,
    ) -> Result<Rotated, StoreError> {
        let (old_id, next) = (old_id.to_owned(), successor.clone());
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = durable_txn(&mut client).await?;
            lock_user(&txn, &next.user).await?;
            let row = txn
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM app_passwords WHERE id = $1 FOR UPDATE"),
                    &[&old_id],
                )
                .await?;
            let Some(old) = row.as_ref().map(record).transpose()? else {
                return Ok(Rotated::NotFound);
            };
            if let Some(to) = old.rotated_to {
                return Ok(Rotated::AlreadyRotated(to));
            }
            match old.status(now) {
                Status::Active => {}
                other => return Ok(Rotated::NotActive(other)),
            }
            let exists = txn
                .query_opt("SELECT 1 FROM app_passwords WHERE id = $1", &[&next.id])
                .await?;
            if exists.is_some() {
                return Err(Fail::Store(StoreError::DuplicateId {
                    id: next.id.clone(),
                }));
            }
            check_name(&txn, &next, Some(&old_id), now).await?;
            // The old row first: until it is revoked it holds the name in
            // the unique index the successor enters.
            let row = txn
                .query_one(
                    &format!(
                        "UPDATE app_passwords SET rotated_to = $2, revoked_at = $3 \
                         WHERE id = $1 RETURNING {COLUMNS}"
                    ),
                    &[&old_id, &next.id, &int(revoke_at.max(now))],
                )
                .await?;
            if insert_row(&txn, &next).await? == 0 {
                return Err(Fail::Store(StoreError::DuplicateId {
                    id: next.id.clone(),
                }));
            }
            txn.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &old_id])
                .await?;
            let old = record(&row)?;
            txn.commit().await?;
            Ok(Rotated::Now(Box::new(old)))
        })
    }

    /// The end of the `rotated_to` chain from `id` (`id` itself when never
    /// rotated; the last existing record when a link is missing).
    pub(super) fn lineage_current(&self, id: &str) -> Result<Option<AppPassword>, StoreError> {
        let id = id.to_owned();
        self.run(move |pool| async move {
            let client = pool.get().await?;
            // The depth bound only guards against a corrupt (cyclic) chain.
            let row = client
                .query_opt(
                    &format!(
                        "WITH RECURSIVE chain(id, rotated_to, depth) AS ( \
                             SELECT id, rotated_to, 0 FROM app_passwords WHERE id = $1 \
                             UNION ALL \
                             SELECT a.id, a.rotated_to, c.depth + 1 \
                             FROM app_passwords a JOIN chain c ON a.id = c.rotated_to \
                             WHERE c.depth < 100000) \
                         SELECT {COLUMNS} FROM app_passwords \
                         WHERE id = (SELECT id FROM chain ORDER BY depth DESC LIMIT 1)"
                    ),
                    &[&id],
                )
                .await?;
            row.as_ref().map(record).transpose()
        })
    }

    /// Starts the notification listener (see `listen.rs`); once per store.
    pub(super) fn watch(&self, sink: Arc<dyn Changes>) {
        if self.health.watched.swap(true, Ordering::SeqCst) {
            return;
        }
        self.handle.spawn(listen::run(
            self.url.clone(),
            self.connector.clone(),
            sink,
            self.health.clone(),
        ));
    }

    pub(super) fn url(&self) -> &DbUrl {
        &self.url
    }

    pub(super) fn ready(&self) -> bool {
        let h = &self.health;
        h.reachable.load(Ordering::Relaxed)
            && (!h.watched.load(Ordering::Relaxed) || h.listening.load(Ordering::Relaxed))
    }

    /// Runs `op` on the store's runtime within [`OP_TIMEOUT`] and waits for it.
    fn run<T, F>(&self, op: impl FnOnce(Pool) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Fail>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let work = op(self.pool.clone());
        self.handle.spawn(async move {
            let _ = tx.send(tokio::time::timeout(OP_TIMEOUT, work).await);
        });
        let url = || self.url.shown().to_owned();
        let result = match rx.recv() {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(Fail::Store(e)))) => Err(e),
            Ok(Ok(Err(Fail::Db(e)))) => Err(database_error(url(), e)),
            Ok(Ok(Err(Fail::Pool(e)))) => Err(pool_error(url(), e)),
            Ok(Err(_elapsed)) => Err(StoreError::Unreachable {
                url: url(),
                source: BackendError::new(Engine::Timeout(OP_TIMEOUT)),
            }),
            Err(_) => Err(StoreError::Unreachable {
                url: url(),
                source: BackendError::new(Engine::Stopped),
            }),
        };
        let unreachable = matches!(result, Err(StoreError::Unreachable { .. }));
        self.health.reachable.store(!unreachable, Ordering::Relaxed);
        result
    }
}

impl Health {
    pub(super) fn listening(&self, up: bool) {
        self.listening.store(up, Ordering::Relaxed);
    }
}

/// A transaction whose commit returns only once it is durable
/// (`synchronous_commit = on`, whatever the server's or role's default):
/// every mutation of the store runs in one.
async fn durable_txn(client: &mut deadpool_postgres::Client) -> Result<Transaction<'_>, Fail> {
    let txn = client.transaction().await?;
    txn.batch_execute("SET LOCAL synchronous_commit = on")
        .await?;
    Ok(txn)
}

/// Takes the per-user advisory lock that serialises the name checks of
/// `user`'s inserts and rotations (held until the transaction ends).
async fn lock_user(txn: &tokio_postgres::Transaction<'_>, user: &str) -> Result<(), Fail> {
    txn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&USER_LOCK, &user],
    )
    .await?;
    Ok(())
}

/// Refuses `rec`'s name when another of its user's passwords (other than
/// `except`, the one a rotation replaces) holds it at `now`.
async fn check_name(
    txn: &tokio_postgres::Transaction<'_>,
    rec: &AppPassword,
    except: Option<&str>,
    now: u64,
) -> Result<(), Fail> {
    let taken = txn
        .query_opt(
            &format!(
                "SELECT 1 FROM app_passwords WHERE user_name = $1 AND name = $2 \
                 AND {HOLDS_NAME} AND ($4::text IS NULL OR id <> $4) LIMIT 1"
            ),
            &[&rec.user, &rec.name, &int(now), &except],
        )
        .await?;
    match taken {
        Some(_) => Err(Fail::Store(StoreError::DuplicateName {
            user: rec.user.clone(),
            name: rec.name.clone(),
        })),
        None => Ok(()),
    }
}

/// Inserts `rec` unless its id exists; the number of rows inserted.
async fn insert_row(txn: &tokio_postgres::Transaction<'_>, rec: &AppPassword) -> Result<u64, Fail> {
    let json = serde_json::to_value(rec).map_err(|source| StoreError::Encode {
        id: rec.id.clone(),
        source,
    })?;
    let inserted = txn
        .execute(
            &format!(
                "INSERT INTO app_passwords ({COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (id) DO NOTHING"
            ),
            &[
                &rec.id,
                &rec.user,
                &rec.name,
                &rec.scopes,
                &rec.hash,
                &int(rec.created_at),
                &rec.expires_at.map(int),
                &rec.revoked_at.map(int),
                &rec.last_used_at.map(int),
                &rec.last_used_addr,
                &rec.rotated_from,
                &rec.rotated_to,
                &json,
            ],
        )
        .await?;
    Ok(inserted)
}

/// A database error: SQL errors are failures, anything else (connection
/// refused, reset, closed, a certificate refused) means the database is
/// unreachable; a refused certificate says so first, as a network fault
/// is what "unreachable" brings to mind.
fn database_error(url: String, e: tokio_postgres::Error) -> StoreError {
    if e.code().is_some() {
        StoreError::Database {
            url,
            source: BackendError::new(Engine::Postgres(e)),
        }
    } else if refused_certificate(&e) {
        StoreError::Unreachable {
            url,
            source: BackendError::new(Engine::Certificate(e)),
        }
    } else {
        StoreError::Unreachable {
            url,
            source: BackendError::new(Engine::Postgres(e)),
        }
    }
}

/// Whether the TLS handshake failed on the server's certificate (rustls's
/// error sits inside an `io::Error`, whose `source` skips it).
fn refused_certificate(e: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(err) = cause {
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .map_or(err, |inner| inner as &(dyn std::error::Error + 'static));
        if let Some(rustls::Error::InvalidCertificate(_)) = inner.downcast_ref::<rustls::Error>() {
            return true;
        }
        cause = err.source();
    }
    false
}

fn pool_error(url: String, e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => database_error(url, e),
        other => StoreError::Unreachable {
            url,
            source: BackendError::new(Engine::Pool(other)),
        },
    }
}

/// A row of `COLUMNS` as a record: the stored JSON, overridden by the columns.
fn record(row: &Row) -> Result<AppPassword, Fail> {
    let id: String = row.try_get("id")?;
    let json: serde_json::Value = row.try_get("record")?;
    let mut rec: AppPassword =
        serde_json::from_value(json).map_err(|source| StoreError::Corrupt {
            id: id.clone(),
            source,
        })?;
    rec.id = id;
    rec.user = row.try_get("user_name")?;
    rec.name = row.try_get("name")?;
    rec.scopes = row.try_get("scopes")?;
    rec.hash = row.try_get("hash")?;
    rec.created_at = unint(row.try_get("created_at")?);
    rec.expires_at = row.try_get::<_, Option<i64>>("expires_at")?.map(unint);
    rec.revoked_at = row.try_get::<_, Option<i64>>("revoked_at")?.map(unint);
    rec.last_used_at = row.try_get::<_, Option<i64>>("last_used_at")?.map(unint);
    rec.last_used_addr = row.try_get("last_used_addr")?;
    rec.rotated_from = row.try_get("rotated_from")?;
    rec.rotated_to = row.try_get("rotated_to")?;
    Ok(rec)
}

/// Unix seconds as `bigint`; a time past year 292 billion is "never" anyway.
fn int(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn unint(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}
