//! A throw-away PostgreSQL database per test: `passgate_test_<random>` on the
//! local server (`PASSGATE_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped afterwards.

use crate::store::DbUrl;

/// A database created for one test, dropped (connections and all) on drop.
pub(super) struct TestDb {
    pub(super) url: DbUrl,
    name: String,
}

fn admin_url() -> String {
    std::env::var("PASSGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Runs one statement on the admin database.
fn admin(sql: &str) -> Result<(), tokio_postgres::Error> {
    on(&admin_url(), |client| async move {
        client.batch_execute(sql).await
    })
}

/// Runs `f` with a client connected to `url`.
fn on<T, F: std::future::Future<Output = Result<T, tokio_postgres::Error>>>(
    url: &str,
    f: impl FnOnce(std::sync::Arc<tokio_postgres::Client>) -> F,
) -> Result<T, tokio_postgres::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(conn);
        let client = std::sync::Arc::new(client);
        let result = f(client.clone()).await;
        drop(client);
        let _ = driver.await;
        result
    })
}

impl TestDb {
    pub(super) fn create() -> Option<TestDb> {
        let name = format!("passgate_test_{:016x}", rand::random::<u64>());
        if let Err(e) = admin(&format!("CREATE DATABASE {name}")) {
            if std::env::var_os("PASSGATE_REQUIRE_PG").is_some_and(|v| v == "1") {
                panic!("PostgreSQL is required (PASSGATE_REQUIRE_PG=1) but: {e}");
            }
            eprintln!(
                "note: PostgreSQL test skipped: no server at {}: {e}",
                admin_url()
            );
            return None;
        }
        let base = admin_url();
        let (server, _) = base.rsplit_once('/').unwrap();
        let url = DbUrl::parse(&format!("{server}/{name}?sslmode=disable")).unwrap();
        Some(TestDb { url, name })
    }

    fn own_url(&self) -> String {
        let base = admin_url();
        let (server, _) = base.rsplit_once('/').unwrap();
        format!("{server}/{}", self.name)
    }

    /// Runs statements in this database.
    pub(super) fn execute(&self, sql: &str) {
        on(
            &self.own_url(),
            |c| async move { c.batch_execute(sql).await },
        )
        .unwrap();
    }

    /// The one `bigint` a query returns.
    pub(super) fn query_i64(&self, sql: &str) -> i64 {
        on(&self.own_url(), |c| async move {
            c.query_one(sql, &[]).await.map(|r| r.get::<_, i64>(0))
        })
        .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = admin(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}
