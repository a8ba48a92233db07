//! The PostgreSQL schema: a versioned list of migrations, applied in one
//! transaction under an advisory lock, so that gateways starting together
//! migrate once (the others wait, then find the schema current).

use deadpool_postgres::Pool;

use super::Fail;
use crate::store::StoreError;

/// Key of the advisory lock held while migrating ("passgate").
const MIGRATION_LOCK: i64 = 0x7061_7373_6761_7465;

/// `MIGRATIONS[i]` brings the schema from version `i` to `i + 1`. Append
/// only: a released migration is never edited.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: app passwords.
    "CREATE TABLE app_passwords (
         id             text PRIMARY KEY,
         user_name      text NOT NULL,
         name           text NOT NULL,
         scopes         text[] NOT NULL,
         hash           text NOT NULL,
         created_at     bigint NOT NULL,
         expires_at     bigint,
         revoked_at     bigint,
         last_used_at   bigint,
         last_used_addr text,
         record         jsonb NOT NULL
     );
     CREATE INDEX app_passwords_by_user ON app_passwords (user_name, created_at, id);
     CREATE UNIQUE INDEX app_passwords_unique_open_name ON app_passwords (user_name, name)
         WHERE revoked_at IS NULL AND expires_at IS NULL;",
    // 2: sign-in sessions and pre-login records (OIDC), see store/sessions.rs.
    "CREATE TABLE sessions (
         key     text PRIMARY KEY,
         expires bigint NOT NULL,
         data    bytea NOT NULL
     );
     CREATE INDEX sessions_by_expiry ON sessions (expires);",
    // 3: rotation lineage as columns (the name check and the lineage walk
    // read them). Limits and the address list live in `record`; a record
    // copied in by `store copy` may already carry a lineage there.
    "ALTER TABLE app_passwords ADD COLUMN rotated_from text, ADD COLUMN rotated_to text;
     UPDATE app_passwords SET rotated_from = record->>'rotated_from',
                              rotated_to = record->>'rotated_to';",
];

/// Creates or migrates the schema; refuses one newer than this build knows.
pub(super) async fn migrate(pool: Pool) -> Result<(), Fail> {
    let mut client = pool.get().await?;
    let txn = client.transaction().await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS passgate_schema (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: Option<i32> = txn
        .query_one("SELECT max(version) FROM passgate_schema", &[])
        .await?
        .get(0);
    let found = u64::try_from(found.unwrap_or(0)).unwrap_or(0);
    let known = MIGRATIONS.len() as u64;
    if found > known {
        return Err(Fail::Store(StoreError::UnknownSchema {
            found,
            supported: known,
        }));
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        txn.batch_execute(sql).await?;
        txn.execute(
            "INSERT INTO passgate_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "database schema migrated");
    }
    txn.commit().await?;
    Ok(())
}
