//! What `/metrics` reports of state that changes while passgate runs: app
//! passwords by status after creations, revocations and expiry (counted
//! without reading the records), and the series of routes and upstreams a
//! reload removes (gone) or brings back (from zero).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cli::expect_code;
use crate::replicas::TestDb;
use crate::support::*;

const STORE: &str = "path = \"data/passgate.redb\"";
const METRICS: &str = "\n[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// `passgate serve` on `text` plus a metrics listener; its metrics address.
fn with_metrics(text: &str) -> (Passgate, SocketAddr) {
    let pg = Passgate::start_text(&format!("{text}{METRICS}"));
    assert!(pg.wait_log("metrics on http://", Duration::from_secs(10)));
    let log = pg.log_text();
    let rest = log.split("metrics on http://").nth(1).unwrap();
    let addr = rest.split('/').next().unwrap().parse().unwrap();
    (pg, addr)
}

fn scrape(addr: SocketAddr) -> String {
    let r = http1(addr, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// The value of the sample `series` (name and labels exactly as
/// exposed), if the scrape has it.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// `passgate_app_passwords` as (active, expired, revoked).
fn app_passwords(text: &str) -> Option<(u64, u64, u64)> {
    let n = |status: &str| {
        sample(
            text,
            &format!("passgate_app_passwords{{status=\"{status}\"}}"),
        )
        .map(|v| v as u64)
    };
    Some((n("active")?, n("expired")?, n("revoked")?))
}

/// Scrapes until the count is `want` (a count is reused for up to 2 s).
fn until_counted(addr: SocketAddr, want: (u64, u64, u64)) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(addr);
        if app_passwords(&text) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "app passwords never counted {want:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn app_password_counts_follow_creation_revocation_and_expiry() {
    let backend = Backend::start();
    let (pg, m) = with_metrics(&ConfigBuilder::new(&backend.url()).render());
    until_counted(m, (0, 0, 0));
    let (first, _) = pg.create("alice", "one", &["repository:read"]);
    pg.create("alice", "two", &["repository:read"]);
    pg.create_expiring("bob", "short", &["repository:read"], "10s");
    until_counted(m, (3, 0, 0));
    expect_code(&pg.cli(&["app-password", "revoke", &first]), 0);
    until_counted(m, (2, 0, 1));
    // Expiry needs no write: the count follows the clock.
    until_counted(m, (1, 1, 1));
    // However many scrapes, the count stays right.
    for _ in 0..20 {
        assert_eq!(app_passwords(&scrape(m)), Some((1, 1, 1)));
    }
}

/// On PostgreSQL the count is a query: a password another gateway
/// created is counted, and so is a record whose JSON no longer decodes
/// (a full read would fail on it and drop the gauge).
#[test]
fn app_password_counts_on_postgres_need_no_record_read() {
    let Some(db) = TestDb::create() else { return };
    let backend = Backend::start();
    let url = db.url(None);
    let text =
        ConfigBuilder::new(&backend.url())
            .render()
            .replacen(STORE, &format!("url = {url:?}"), 1);
    let other = Passgate::start_text(&text);
    let (pg, m) = with_metrics(&text);
    pg.create("alice", "one", &["repository:read"]);
    let (id, _) = other.create("alice", "two", &["repository:read"]);
    until_counted(m, (2, 0, 0));
    db.query(&format!(
        "UPDATE app_passwords SET record = '{{\"not\": \"a record\"}}', \
         revoked_at = created_at WHERE id = '{id}'"
    ));
    until_counted(m, (1, 0, 1));
}

const ROUTES: &str = r#"
[[routes]]
name = "api"
path = "/api/**"
access = "public"
upstream = "app"
"#;

const OLD_ROUTE: &str = r#"
[[routes]]
name = "old"
path = "/old/**"
access = "public"
upstream = "legacy"
"#;

/// A config with route `api`, and with route `old` and its upstream
/// `legacy` when `old`.
fn config_with(backend: &Backend, old: bool) -> String {
    let mut builder = ConfigBuilder::new(&backend.url());
    builder.routes = ROUTES.to_owned();
    if old {
        builder.routes.push_str(OLD_ROUTE);
        builder.extra = format!(
            "{}\n[upstreams.legacy]\nurl = \"{}\"\n",
            builder.extra,
            backend.url()
        );
    }
    builder.render()
}

fn reload_to(pg: &Passgate, text: &str) {
    std::fs::write(&pg.config, format!("{text}{METRICS}")).unwrap();
    let out = pg.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const API_OK: &str = "passgate_http_requests_total{route=\"api\",method=\"GET\",code=\"200\"}";
const OLD_OK: &str = "passgate_http_requests_total{route=\"old\",method=\"GET\",code=\"200\"}";

#[test]
fn series_of_a_route_removed_by_a_reload_leave_the_exposition() {
    let backend = Backend::start();
    let full = config_with(&backend, true);
    let (pg, m) = with_metrics(&full);
    for target in ["/api/x", "/api/y", "/old/x"] {
        assert_eq!(get(pg.addr, target, None).status, 200);
    }
    let text = scrape(m);
    assert_eq!(sample(&text, API_OK), Some(2.0), "{text}");
    assert_eq!(sample(&text, OLD_OK), Some(1.0), "{text}");
    assert!(text.contains("upstream=\"legacy\""), "{text}");

    // Route `old` and upstream `legacy` removed: their series go, the
    // others keep counting.
    reload_to(&pg, &config_with(&backend, false));
    assert_eq!(get(pg.addr, "/api/z", None).status, 200);
    let text = scrape(m);
    assert!(!text.contains("route=\"old\""), "{text}");
    assert!(!text.contains("upstream=\"legacy\""), "{text}");
    assert_eq!(sample(&text, API_OK), Some(3.0), "{text}");
    assert!(text.contains("upstream=\"app\""), "{text}");

    // Back again: from zero, as a new series.
    reload_to(&pg, &full);
    assert!(!scrape(m).contains("route=\"old\""));
    assert_eq!(get(pg.addr, "/old/x", None).status, 200);
    let text = scrape(m);
    assert_eq!(sample(&text, OLD_OK), Some(1.0), "{text}");
    assert_eq!(sample(&text, API_OK), Some(3.0), "{text}");
}
