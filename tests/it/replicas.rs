//! Several `passgate serve` replicas sharing one PostgreSQL database: what is
//! created through one works on all, a revocation through one stops the
//! password on all within a second, a lost database gives 503 (never a
//! pass) and recovers without a restart, and a revocation missed while a
//! replica's notification connection was down is honoured once it is back.
//! Rotation on a shared database: the old password stops on every replica
//! (at once, or when its grace ends), the successor works on all, and
//! `rotated_reuse = "revoke"` on one replica stops the successor on the others.
//! `/readyz` is 503 while the store is still opening (a migration waiting for
//! its lock) and while the database is unreachable, 200 otherwise (#15).
//!
//! Each test creates its own database (`passgate_test_<random>`, dropped
//! afterwards) on the local server. Database outages are made with a TCP
//! relay between a replica and PostgreSQL ([`Relay`]), never by touching the
//! shared server. Without a server the tests print a notice and pass, unless
//! `PASSGATE_REQUIRE_PG=1`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::{err, expect_code};
use crate::support::*;

// ------------------------------------------------------------ database --

fn admin_url() -> String {
    std::env::var("PASSGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn server_url() -> String {
    admin_url().rsplit_once('/').unwrap().0.to_owned()
}

/// Runs `sql` in database `db` and returns the first column of each row as text.
fn sql(db: &str, sql: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    let url = format!("{}/{db}", server_url());
    block_on(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(conn);
        let rows = client.simple_query(sql).await;
        drop(client);
        let _ = driver.await;
        Ok(rows?
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some(r.get(0).unwrap_or("").to_owned())
                }
                _ => None,
            })
            .collect())
    })
}

/// A database of its own for one test, dropped afterwards.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    /// `None` (with a notice) when no PostgreSQL answers, unless required.
    pub fn create() -> Option<TestDb> {
        let name = format!("passgate_test_{:016x}", rand::random::<u64>());
        let admin_db = admin_url().rsplit_once('/').unwrap().1.to_owned();
        if let Err(e) = sql(&admin_db, &format!("CREATE DATABASE {name}")) {
            if std::env::var_os("PASSGATE_REQUIRE_PG").is_some_and(|v| v == "1") {
                panic!("PostgreSQL is required (PASSGATE_REQUIRE_PG=1) but: {e}");
            }
            eprintln!(
                "note: PostgreSQL test skipped: no server at {}: {e}",
                admin_url()
            );
            return None;
        }
        Some(TestDb { name })
    }

    /// The URL passgate uses, directly or through `relay`.
    pub fn url(&self, relay: Option<&Relay>) -> String {
        match relay {
            Some(r) => format!(
                "postgres://postgres@{}/{}?sslmode=disable",
                r.addr, self.name
            ),
            None => format!("{}/{}?sslmode=disable", server_url(), self.name),
        }
    }

    pub fn query(&self, q: &str) -> Vec<String> {
        sql(&self.name, q).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_db = admin_url().rsplit_once('/').unwrap().1.to_owned();
        let _ = sql(
            &admin_db,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

// --------------------------------------------------------------- relay --

/// A TCP relay to PostgreSQL that can cut every connection through it and
/// refuse new ones ([`Relay::cut`]) until [`Relay::restore`].
pub struct Relay {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    pub fn start() -> Relay {
        let target: SocketAddr = {
            let host = server_url();
            let hostport = host.rsplit_once('@').map_or(host.as_str(), |(_, h)| h);
            let hostport = hostport.trim_start_matches("postgres://");
            std::net::ToSocketAddrs::to_socket_addrs(hostport)
                .unwrap()
                .next()
                .unwrap()
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (open2, live2) = (open.clone(), live.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !open2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                {
                    let mut live = live2.lock().unwrap();
                    live.push(client.try_clone().unwrap());
                    live.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay { addr, open, live }
    }

    /// Closes every connection through the relay and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

// ------------------------------------------------------------ replicas --

/// A replica: `passgate serve` on its own port, admin socket and temp dir,
/// with `[store] url` pointing at `url`.
pub fn replica(backend: &Backend, url: &str) -> Passgate {
    replica_with(backend, url, "")
}

/// A replica with extra `[auth]` settings.
fn replica_with(backend: &Backend, url: &str, auth_extra: &str) -> Passgate {
    Passgate::start_raw(
        tempfile::tempdir().unwrap(),
        &replica_config(backend, url, auth_extra),
    )
}

fn replica_config(backend: &Backend, url: &str, auth_extra: &str) -> String {
    let mut builder = with_resource(ConfigBuilder::new(&backend.url()));
    builder.auth_extra = auth_extra.to_owned();
    let text = builder.render();
    let path = "path = \"data/passgate.redb\"";
    assert!(text.contains(path));
    text.replacen(path, &format!("url = {url:?}"), 1)
}

/// The default routes, with the Git fetch route naming its repository
/// (for passwords limited to one).
fn with_resource(mut builder: ConfigBuilder) -> ConfigBuilder {
    let fetch = "query = { service = \"git-upload-pack\" }\n";
    builder.routes = default_routes().replacen(
        fetch,
        &format!("{fetch}resource = \"{{owner}}/{{repo}}\"\n"),
        1,
    );
    builder
}

const API: &str = "/api/x";

fn status(gw: &Passgate, user: &str, password: &str) -> u16 {
    get(gw.addr, API, Some((user, password))).status
}

/// Polls until `gw` answers `want` for the password; the time it took.
fn until_status(gw: &Passgate, password: &str, want: u16, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if status(gw, "alice", password) == want {
            return Some(start.elapsed());
        }
        thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Requests in a loop on `gw` until dropped: the load during a revocation.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<u64>>,
}

impl Load {
    fn start(gws: &[&Passgate], password: &str, per_gateway: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for gw in gws {
            for _ in 0..per_gateway {
                let (addr, stop, password) = (gw.addr, stop.clone(), password.to_owned());
                threads.push(thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let s = get(addr, API, Some(("alice", &password))).status;
                        assert_eq!(s, 200, "the load's own password must keep working");
                        n += 1;
                    }
                    n
                }));
            }
        }
        Load { stop, threads }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().unwrap()).sum()
    }
}

// --------------------------------------------------------------- tests --

#[test]
fn three_replicas_share_creation_and_revocation_within_a_second() {
    let Some(db) = TestDb::create() else { return };
    let backend = Backend::start();
    let url = db.url(None);
    let a = replica(&backend, &url);
    let b = replica(&backend, &url);
    let c = replica(&backend, &url);

    // The load runs on A and B with a password that stays valid.
    let (_, steady) = a.create("alice", "steady", &["repository:read"]);
    let load = Load::start(&[&a, &b], &steady, 2);

    // Propagation: from the revoking CLI's exit (the revocation is
    // committed before it answers) to the first 401 on another replica.
    let (mut samples, mut clis) = (Vec::new(), Vec::new());
    for round in 0..5 {
        // Created through A: works on B and C at once (no cache to warm).
        let (id, pw) = a.create("alice", &format!("round-{round}"), &["repository:read"]);
        for gw in [&a, &b, &c] {
            assert_eq!(status(gw, "alice", &pw), 200);
        }
        // Revoked through C: stops on A and B (both with the password cached),
        // watched from two threads at once.
        let start = Instant::now();
        expect_code(&c.cli(&["app-password", "revoke", &id]), 0);
        clis.push(start.elapsed());
        thread::scope(|s| {
            let watchers: Vec<_> = [&a, &b]
                .into_iter()
                .map(|gw| s.spawn(|| until_status(gw, &pw, 401, Duration::from_secs(5))))
                .collect();
            for w in watchers {
                let seen = w.join().unwrap();
                samples.push(
                    seen.unwrap_or_else(|| {
                        panic!("round {round}: revoked password still accepted")
                    }),
                );
            }
        });
        assert_eq!(status(&c, "alice", &pw), 401);
    }
    let requests = load.finish();
    samples.sort();
    clis.sort();
    let median = samples[samples.len() / 2];
    let worst = *samples.last().unwrap();
    eprintln!(
        "revocation propagation (revoking CLI's exit to 401 on another replica, {} samples, \
         {requests} load requests): median {median:?}, worst {worst:?}; the revoking CLI \
         itself took a median {:?}",
        samples.len(),
        clis[clis.len() / 2]
    );
    assert!(
        worst < Duration::from_secs(1),
        "slowest propagation {worst:?}"
    );
}

#[test]
fn killing_a_replica_loses_nothing_it_reported() {
    let Some(db) = TestDb::create() else { return };
    let backend = Backend::start();
    let url = db.url(None);
    let a = replica(&backend, &url);
    let mut b = replica(&backend, &url);
    let (_, kept) = b.create("alice", "kept", &["repository:read"]);
    let (gone_id, gone) = b.create("alice", "gone", &["repository:read"]);
    assert_eq!(status(&a, "alice", &gone), 200);
    expect_code(&b.cli(&["app-password", "revoke", &gone_id]), 0);
    b.kill9();
    assert_eq!(status(&a, "alice", &kept), 200);
    // A had it cached: the notification reaches it within the second.
    assert!(until_status(&a, &gone, 401, Duration::from_secs(1)).is_some());
    // And the CLI without any server reaches the database directly.
    drop(a);
    let o = b.cli(&["app-password", "list", "--json"]);
    expect_code(&o, 0);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let statuses: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.contains(&"active") && statuses.contains(&"revoked"));
}

#[test]
fn database_cut_gives_503_never_200_and_recovers_without_restart() {
    let Some(db) = TestDb::create() else { return };
    let backend = Backend::start();
    let relay = Relay::start();
    let a = replica(&backend, &db.url(Some(&relay)));
    let (_, cached) = a.create("alice", "cached", &["repository:read"]);
    let (_, cold) = a.create("alice", "cold", &["repository:read"]);
    assert_eq!(status(&a, "alice", &cached), 200);

    relay.cut();
    // Needs a store read: 503 with Retry-After, never a pass.
    for _ in 0..5 {
        let r = get(a.addr, API, Some(("alice", &cold)));
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.headers.contains_key("retry-after"));
    }
    // A wrong secret for a known id needs the store too: 503, not 200 or 401.
    let wrong = format!("{}{}", &cold[..cold.len() - 7], "AAAAAAA");
    assert_ne!(status(&a, "alice", &wrong), 200);
    // A fresh cached verification keeps serving until cache_ttl.
    assert_eq!(status(&a, "alice", &cached), 200);
    // Management through the running replica says the database is unreachable.
    let o = a.cli(&[
        "app-password",
        "create",
        "--user",
        "bob",
        "--name",
        "n",
        "--scope",
        "repository:read",
    ]);
    expect_code(&o, 1);
    assert!(err(&o).contains("unreachable"), "{}", err(&o));

    relay.restore();
    assert!(
        until_status(&a, &cold, 200, Duration::from_secs(15)).is_some(),
        "did not recover: {}",
        a.log_text()
    );
}

#[test]
fn revocation_missed_while_the_listener_was_down_is_honoured_after_reconnect() {
    let Some(db) = TestDb::create() else { return };
    let backend = Backend::start();
    let relay = Relay::start();
    let a = replica(&backend, &db.url(Some(&relay)));
    let b = replica(&backend, &db.url(None));
    assert!(a.wait_log("revocation listener connected", Duration::from_secs(10)));
    let (id, pw) = b.create("alice", "laptop", &["repository:read"]);
    assert_eq!(status(&a, "alice", &pw), 200); // cached on A

    relay.cut();
    assert!(a.wait_log(
        "revocation listener: connection lost",
        Duration::from_secs(10)
    ));
    expect_code(&b.cli(&["app-password", "revoke", &id]), 0);
    assert_eq!(status(&b, "alice", &pw), 401);

    relay.restore();
    let start = Instant::now();
    let reconnected = || {
        a.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("revocation listener connected"))
            .count()
            >= 2
    };
    while !reconnected() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{}",
            a.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Well within cache_ttl (30 s): only the resync can have made it stale.
    assert_eq!(status(&a, "alice", &pw), 401);
}

#[test]
fn two_replicas_starting_at_once_on_an_empty_database_migrate_once() {
    let Some(db) = TestDb::create() else { return };
    let backend = Backend::start();
    let url = db.url(None);
    let configs = [
        replica_config(&backend, &url, ""),
        replica_config(&backend, &url, ""),
    ];
    let started: Vec<Passgate> = thread::scope(|s| {
        let handles: Vec<_> = configs
            .iter()
            .map(|c| s.spawn(move || Passgate::start_raw(tempfile::tempdir().unwrap(), c)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        db.query("SELECT count(*) FROM passgate_schema WHERE version = 1"),
        ["1"]
    );
    let migrated = started
        .iter()
        .filter(|gw| gw.log_text().contains("database schema migrated"))
        .count();
    assert_eq!(migrated, 1, "exactly one replica migrates");
    let (_, pw) = started[0].create("alice", "x", &["repository:read"]);
    assert_eq!(status(&started[1], "alice", &pw), 200);
}

#[test]
fn cli_without_a_server_says_the_database_is_unreachable() {
    let Some(db) = TestDb::create() else { return };
    let relay = Relay::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let backend = Backend::start();
    std::fs::write(&config, replica_config(&backend, &db.url(Some(&relay)), "")).unwrap();
    relay.cut();
    let o = std::process::Command::new(BIN)
        .args(["app-password", "list", "--config"])
        .arg(&config)
        .env_remove("PASSGATE_CONFIG")
        .output()
        .unwrap();
    expect_code(&o, 1);
    let e = err(&o);
    assert!(e.contains("database") && e.contains("unreachable"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn store_url_settings_are_checked_and_the_password_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let backend_url = "http://127.0.0.1:9";
    let base = ConfigBuilder::new(backend_url).render();
    let path = "path = \"data/passgate.redb\"";
    let cases = [
        (
            "path = \"x.redb\"\nurl = \"postgres://u:hunter22@h/db\"".to_owned(),
            "store",
        ),
        ("url = \"mysql://u:hunter22@h/db\"".to_owned(), "store.url"),
        (
            "url = \"postgres://u:hunter22@h/db?sslmode=sometimes\"".to_owned(),
            "store.url",
        ),
        (
            "url_file = \"missing-url-file\"".to_owned(),
            "store.url_file",
        ),
    ];
    for (store, key) in cases {
        let file = dir.path().join("proxy.toml");
        std::fs::write(&file, base.replacen(path, &store, 1)).unwrap();
        let o = std::process::Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&file)
            .env_remove("PASSGATE_CONFIG")
            .output()
            .unwrap();
        expect_code(&o, 2);
        let e = err(&o);
        assert!(e.contains(&format!(": {key}: ")), "{store}: {e}");
        assert!(!e.contains("hunter22"), "{store}: {e}");
    }
    // url_file: read relative to the config, trailing newline ignored.
    std::fs::write(dir.path().join("db-url"), "postgres://u:hunter22@h/db\n").unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, base.replacen(path, "url_file = \"db-url\"", 1)).unwrap();
    let o = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&file)
        .env_remove("PASSGATE_CONFIG")
        .output()
        .unwrap();
    expect_code(&o, 0);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("hunter22"));
}

#[test]
fn store_copy_moves_a_redb_store_into_postgres_and_refuses_a_full_one() {
    let Some(db) = TestDb::create() else { return };
    let backend = Backend::start();
    // A redb store, offline (no server): active, expired, revoked, used.
    let (dir, config) = crate::cli::offline(&ConfigBuilder::new(&backend.url()));
    let create = |name: &str, extra: &[&str]| {
        let mut args = create_args("alice", name, &["repository:read"]);
        args.push("--json");
        args.extend_from_slice(extra);
        id_and_password(&output_json(&crate::cli::run(&config, &args), &args))
    };
    let (_, active) = create("active", &[]);
    let (_, expired) = create("expired", &["--expires-in", "1s"]);
    let (revoked_id, revoked) = create("revoked", &[]);
    expect_code(
        &crate::cli::run(&config, &["app-password", "revoke", &revoked_id]),
        0,
    );
    thread::sleep(Duration::from_millis(2100));
    let list = |config: &std::path::Path| {
        let o = crate::cli::run(config, &["app-password", "list", "--json"]);
        expect_code(&o, 0);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let before = list(&config);

    let url = db.url(None);
    let o = crate::cli::run(&config, &["store", "copy", "--to", &url]);
    expect_code(&o, 0);
    assert!(err(&o).contains("copied 3 app password(s)"), "{}", err(&o));
    // Not twice: the database is no longer empty.
    let o = crate::cli::run(&config, &["store", "copy", "--to", &url]);
    expect_code(&o, 1);
    assert!(err(&o).contains("--force"), "{}", err(&o));
    expect_code(
        &crate::cli::run(&config, &["store", "copy", "--to", &url, "--force"]),
        0,
    );
    // A URL that is not one is a usage error.
    expect_code(
        &crate::cli::run(&config, &["store", "copy", "--to", "mysql://x/y"]),
        2,
    );
    drop(dir);

    // A replica on the database: same rows, same behaviour.
    let gw = replica(&backend, &url);
    assert_eq!(list(&gw.config), before);
    assert_eq!(status(&gw, "alice", &active), 200);
    assert_eq!(status(&gw, "alice", &expired), 401);
    assert_eq!(status(&gw, "alice", &revoked), 401);
}

/// `rotate --json` through `gw`'s CLI: the successor's id and password.
fn rotate(gw: &Passgate, id: &str, extra: &[&str]) -> (String, String) {
    let v = gw.rotate_json(id, extra);
    assert_eq!(v["rotated_from"], id);
    id_and_password(&v)
}

#[test]
fn a_rotation_through_one_replica_stops_the_old_password_on_the_other() {
    let Some(db) = TestDb::create() else { return };
    let backend = Backend::start();
    let url = db.url(None);
    let a = replica_with(&backend, &url, "rotated_reuse = \"revoke\"\n");
    let b = replica(&backend, &url);

    // At once: B has the old password cached when A rotates it.
    let (id, old) = a.create("alice", "deploy", &["repository:read"]);
    assert_eq!(status(&b, "alice", &old), 200);
    let (new_id, new) = rotate(&a, &id, &[]);
    let took = until_status(&b, &old, 401, Duration::from_secs(5))
        .expect("the rotated-away password still works on B");
    assert!(took < Duration::from_secs(1), "B stopped it after {took:?}");
    assert_eq!(status(&b, "alice", &new), 200);
    assert_eq!(status(&a, "alice", &new), 200);
    assert!(
        b.wait_log("rotated_reuse", Duration::from_secs(5)),
        "{}",
        b.log_text()
    );
    assert_eq!(
        status(&b, "alice", &new),
        200,
        "B is in log mode: the successor stays"
    );

    // With a grace: B, which cached the old password before, learns its
    // stop time and stops it then, without a second notification.
    let (gid, gold) = a.create("alice", "build", &["repository:read"]);
    assert_eq!(status(&b, "alice", &gold), 200);
    assert!(get(b.addr, API, Some(("alice", &gold)))
        .headers
        .get("x-app-password-expires")
        .is_none());
    let (_, gnew) = rotate(&a, &gid, &["--grace", "2s"]);
    let deadline = Instant::now() + Duration::from_secs(1);
    let shown = b.cli(&["app-password", "show", &gid, "--json"]);
    expect_code(&shown, 0);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let stop = shown["revoked_at"].as_str().unwrap().to_owned();
    loop {
        let r = get(b.addr, API, Some(("alice", &gold)));
        if r.headers
            .get("x-app-password-expires")
            .is_some_and(|v| v == stop.as_str())
        {
            assert_eq!(r.status, 200, "within its grace on B");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never announced the stop time {stop}: {:?}",
            r.headers.get("x-app-password-expires")
        );
        thread::sleep(Duration::from_millis(5));
    }
    until_status(&b, &gold, 401, Duration::from_secs(5)).expect("the grace never ended on B");
    let late = std::time::SystemTime::now()
        .duration_since(humantime::parse_rfc3339(&stop).unwrap())
        .expect("B stopped the password before its grace ended");
    assert!(
        late < Duration::from_secs(1),
        "B stopped it {late:?} after the grace"
    );
    assert_eq!(status(&b, "alice", &gnew), 200);

    // Revoke mode on A: the first lineage's old secret presented there
    // revokes its current password, which then stops on B too.
    assert_eq!(status(&b, "alice", &new), 200);
    assert_eq!(status(&a, "alice", &old), 401);
    let took = until_status(&b, &new, 401, Duration::from_secs(5))
        .expect("the lineage's current password still works on B");
    assert!(took < Duration::from_secs(1), "B stopped it after {took:?}");
    let shown = a.cli(&["app-password", "show", &new_id, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["status"], "revoked");
    assert_eq!(
        status(&b, "alice", &gnew),
        200,
        "other lineages are untouched"
    );
}

#[test]
fn store_copy_keeps_limits_usage_and_rotation_lineage() {
    let Some(db) = TestDb::create() else { return };
    let backend = Backend::start();
    let mut src = Passgate::start(&with_resource(ConfigBuilder::new(&backend.url())));
    let create = |name: &str, extra: &[&str]| {
        id_and_password(&src.create_json("alice", name, &["repository:read"], extra))
    };
    // Limited to a repository and a network, used, then rotated at once.
    let (lid, lold) = create(
        "limited",
        &[
            "--repo",
            "alice/repo",
            "--allow-from",
            "127.0.0.0/8",
            "--expires-in",
            "30d",
        ],
    );
    assert_eq!(
        get(src.addr, crate::cli::READ_ROUTE, Some(("alice", &lold))).status,
        200
    );
    // Unlimited, used, then rotated with a grace that outlives the copy.
    let (gid, gold) = create("graced", &[]);
    assert_eq!(status(&src, "alice", &gold), 200);
    let (_, lnew) = rotate(&src, &lid, &[]);
    let (gnew_id, gnew) = rotate(&src, &gid, &["--grace", "1h"]);
    // A clean stop writes the pending last-used facts.
    src.signal("TERM");
    assert_eq!(src.wait_exit(Duration::from_secs(10)), Some(0));
    let list = |o: std::process::Output| {
        expect_code(&o, 0);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let before = list(src.cli(&["app-password", "list", "--json"]));
    let old = before
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == lid.as_str())
        .unwrap();
    assert_eq!(old["repos"], serde_json::json!(["alice/repo"]));
    assert_eq!(old["allow_from"], serde_json::json!(["127.0.0.0/8"]));
    assert_eq!(old["last_used"][0]["addr"], "127.0.0.1", "{old}");

    let o = src.cli(&["store", "copy", "--to", &url_of(&db)]);
    expect_code(&o, 0);
    assert!(err(&o).contains("copied 4 app password(s)"), "{}", err(&o));

    let gw = replica(&backend, &url_of(&db));
    assert_eq!(list(gw.cli(&["app-password", "list", "--json"])), before);
    // Same behaviour: the limits came along, the graced one still works,
    // the rotated-at-once one does not.
    let refs = |pw: &str, path: &str| get(gw.addr, path, Some(("alice", pw))).status;
    assert_eq!(refs(&lnew, crate::cli::READ_ROUTE), 200);
    assert_eq!(
        refs(&lnew, "/alice/other.git/info/refs?service=git-upload-pack"),
        403
    );
    assert_eq!(refs(&lold, crate::cli::READ_ROUTE), 401);
    assert_eq!(status(&gw, "alice", &gold), 200);
    assert_eq!(status(&gw, "alice", &gnew), 200);
    // And the lineage goes on in PostgreSQL.
    let (_, third) = rotate(&gw, &gnew_id, &[]);
    assert_eq!(status(&gw, "alice", &third), 200);
    assert_eq!(status(&gw, "alice", &gnew), 401);
    assert_eq!(status(&gw, "alice", &gold), 200, "still in its own grace");
}

fn url_of(db: &TestDb) -> String {
    db.url(None)
}

// ----------------------------------------------------------- readiness --

/// Key of the advisory lock `passgate serve` takes while migrating the
/// schema (`store/postgres/schema.rs`): holding it keeps a starting gateway
/// in the middle of opening its store.
const MIGRATION_LOCK: i64 = 0x7061_7373_6761_7465;

/// Holds the migration lock on its own session until the returned sender
/// is dropped; returns once the lock is held.
fn hold_migration_lock(db: &TestDb) -> std::sync::mpsc::Sender<()> {
    let url = format!("{}/{}", server_url(), db.name);
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    thread::spawn(move || {
        block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(conn);
            client
                .simple_query(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .await
                .unwrap();
            held_tx.send(()).unwrap();
            // Until the sender is dropped; then the session (and its lock) ends.
            let _ = tokio::task::spawn_blocking(move || release_rx.recv()).await;
            drop(client);
            let _ = driver.await;
        });
    });
    held_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("could not take the migration lock");
    release_tx
}

/// `/readyz` status, polled until it is `want` (or the deadline).
fn until_ready_is(m: SocketAddr, want: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if http1(m, "GET", "/readyz", &[], b"").status == want {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readyz_is_503_while_the_store_opens_and_while_the_database_is_unreachable() {
    let Some(db) = TestDb::create() else { return };
    let backend = Backend::start();
    let relay = Relay::start();
    // The metrics listener binds before the store opens, so its address must
    // be known before `serve` reports the proxy listening: a port that was
    // free a moment ago.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let text = format!(
        "{}\n[metrics]\nlisten = \"{m}\"\n",
        replica_config(&backend, &db.url(Some(&relay)), "")
    );
    let lock = hold_migration_lock(&db);
    let starting = thread::spawn(move || Passgate::start_raw(tempfile::tempdir().unwrap(), &text));

    // Alive but not ready while the migration waits for the lock.
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(m).is_err() {
        assert!(
            Instant::now() < deadline,
            "the metrics listener never came up"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http1(m, "GET", "/healthz", &[], b"").status, 200);
    for _ in 0..5 {
        assert_eq!(http1(m, "GET", "/readyz", &[], b"").status, 503);
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !starting.is_finished(),
        "serve came up while the store could not open"
    );

    drop(lock);
    let gw = starting.join().unwrap();
    assert!(
        until_ready_is(m, 200, Duration::from_secs(15)),
        "never ready: {}",
        gw.log_text()
    );
    let (_, pw) = gw.create("alice", "ci", &["repository:read"]);
    assert_eq!(status(&gw, "alice", &pw), 200);

    // The database goes away: not ready (a load balancer sends traffic
    // elsewhere), still alive; back when it returns.
    relay.cut();
    assert!(
        until_ready_is(m, 503, Duration::from_secs(15)),
        "still ready with the database cut: {}",
        gw.log_text()
    );
    assert_eq!(http1(m, "GET", "/healthz", &[], b"").status, 200);
    relay.restore();
    assert!(
        until_ready_is(m, 200, Duration::from_secs(20)),
        "not ready again after the database came back: {}",
        gw.log_text()
    );
}
