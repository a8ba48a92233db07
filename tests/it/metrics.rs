//! `[metrics] listen`: exact counters after a known sequence of requests, an
//! exposition Prometheus can parse, no path, user, address or secret in any
//! label, `/healthz` and `/readyz` through start-up and shutdown, and
//! `check-config` refusing a metrics address the proxy already listens on.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::auth::unknown_token;
use crate::support::*;

/// Besides [`API_ROUTE`] and [`ADMIN_DENY_ROUTE`]: a push route, a slow
/// public one and one to an upstream that is down.
const MORE_ROUTES: &str = r#"
[[routes]]
name = "push"
methods = ["POST"]
path = "/git/**"
access = "app-password"
scopes = ["repository:write"]
upstream = "app"

[[routes]]
name = "slow"
path = "/slow"
access = "public"
upstream = "app"

[[routes]]
name = "down"
path = "/down/**"
access = "public"
upstream = "dead"
"#;

/// A port nothing listens on: bound, then closed.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// 3 failures per (user, address), 5 per address, per minute; one argon2
/// thread and no queue, so a burst of first verifications is refused.
fn gateway(backend: &Backend) -> Passgate {
    let mut b = ConfigBuilder::new(&backend.url());
    b.extra = format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n\n[upstreams.dead]\nurl = \"http://127.0.0.1:{}\"\n",
        dead_port()
    );
    b.auth_extra = "verify_threads = 1\nverify_queue = 0\n[auth.rate_limit]\nper_user_addr = { burst = 3, per = \"1m\" }\nper_addr = { burst = 5, per = \"1m\" }\n".to_owned();
    b.routes = [API_ROUTE, MORE_ROUTES, ADMIN_DENY_ROUTE].concat();
    Passgate::start(&b)
}

/// The metrics listener's address, from its start-up log line.
fn metrics_addr(pg: &Passgate) -> SocketAddr {
    assert!(
        pg.wait_log("metrics on http://", Duration::from_secs(10)),
        "{}",
        pg.log_text()
    );
    let text = pg.log_text();
    let rest = text.split("metrics on http://").nth(1).unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

fn scrape(addr: SocketAddr) -> String {
    let r = http1(addr, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        r.headers
    );
    r.text()
}

/// Every sample of a scrape by `name{labels}` (labels sorted), parsed by
/// `prometheus-parse`, which also proves the text is well formed.
fn samples(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("exposition parses");
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
    }
    out
}

/// The value of one sample; absent counts as 0 (a pair never seen).
fn value(s: &HashMap<String, f64>, key: &str) -> u64 {
    s.get(key).copied().unwrap_or(0.0) as u64
}

fn lo(c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, c, d))
}

#[test]
fn counters_match_a_known_sequence_and_no_label_comes_from_a_request() {
    let backend = Backend::start();
    let pg = gateway(&backend);
    let m = metrics_addr(&pg);
    let nonce = format!("{:x}", std::process::id() as u64 * 7919 + 17);
    let secret_path = format!("/api/secret-path-{nonce}");
    let user = format!("alice{nonce}");
    let (_, pw) = pg.create(&user, "laptop", &["repository:read"]);
    let auth = basic(&user, &pw);
    let get_from = |ip: IpAddr, target: &str, auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        http1_from(ip, pg.addr, "GET", target, &headers, b"")
    };

    // Three successes: one verification, then two cache hits.
    for i in 0..3 {
        let r = get_from(lo(0, 1), &format!("{secret_path}/{i}"), Some(&auth));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let s = samples(&scrape(m));
    assert_eq!(
        value(
            &s,
            "passgate_http_requests_total{code=200,method=GET,route=api}"
        ),
        3
    );
    assert_eq!(
        value(&s, "passgate_auth_outcomes_total{outcome=success}"),
        3
    );
    assert_eq!(
        value(&s, "passgate_verification_cache_lookups_total{result=hit}"),
        2
    );
    assert_eq!(
        value(&s, "passgate_verification_cache_lookups_total{result=miss}"),
        1
    );
    assert_eq!(
        value(&s, "passgate_http_request_duration_seconds{route=api}"),
        3,
        "histogram count"
    );
    assert_eq!(value(&s, "passgate_app_passwords{status=active}"), 1);
    assert_eq!(value(&s, "passgate_build_info{version=0.1.0}"), 1);

    // 401 without credentials, 403 for a missing scope, 403 on a deny
    // route, 404 where no route matches, 502 from an upstream that is down.
    assert_eq!(get_from(lo(0, 1), &secret_path, None).status, 401);
    let push = http1_from(
        lo(0, 1),
        pg.addr,
        "POST",
        "/git/x",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(push.status, 403, "{}", push.text());
    assert_eq!(get_from(lo(0, 1), "/admin/x", None).status, 403);
    let nowhere = format!("/nowhere-{nonce}");
    assert_eq!(get_from(lo(0, 1), &nowhere, None).status, 404);
    assert_eq!(get_from(lo(0, 1), "/down/x", None).status, 502);

    // Wrong passwords from one address until the limits answer 429.
    let mallory = format!("mallory{nonce}");
    let (mut invalid, mut limited) = (0, 0);
    for _ in 0..6 {
        let bad = basic(&mallory, &unknown_token());
        match get_from(lo(0, 7), &secret_path, Some(&bad)).status {
            401 => invalid += 1,
            429 => limited += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert!(limited >= 1, "{invalid} failures, no 429");

    // A burst of first verifications from many addresses: some 503.
    let addr = pg.addr;
    let target = secret_path.clone();
    let burst = block_on(async move {
        let tasks = (0..20u8).map(|i| {
            let target = target.clone();
            async move {
                let auth = basic(&format!("burst{i}"), &unknown_token());
                let headers = [("authorization", auth.as_str())];
                http1_async_from(Some(lo(1, i + 1)), addr, "GET", &target, &headers, b"")
                    .await
                    .status
            }
        });
        futures_util::future::join_all(tasks).await
    });
    let busy = burst.iter().filter(|s| **s == 503).count() as u64;
    let burst_invalid = burst.iter().filter(|s| **s == 401).count() as u64;
    assert_eq!(busy + burst_invalid, 20, "{burst:?}");
    assert!(busy >= 1, "no 503 from 20 verifications on one thread");

    let text = scrape(m);
    let s = samples(&text);
    let count = |route: &str, method: &str, code: u16| {
        value(
            &s,
            &format!("passgate_http_requests_total{{code={code},method={method},route={route}}}"),
        )
    };
    assert_eq!(count("api", "GET", 200), 3);
    assert_eq!(count("api", "GET", 401), 1 + invalid + burst_invalid);
    assert_eq!(count("api", "GET", 429), limited);
    assert_eq!(count("api", "GET", 503), busy);
    assert_eq!(count("push", "POST", 403), 1);
    assert_eq!(count("admin", "GET", 403), 1);
    assert_eq!(count("(none)", "GET", 404), 1);
    assert_eq!(count("down", "GET", 502), 1);
    let outcome = |o: &str| value(&s, &format!("passgate_auth_outcomes_total{{outcome={o}}}"));
    assert_eq!(outcome("success"), 3);
    assert_eq!(outcome("missing"), 1);
    assert_eq!(outcome("missing_scope"), 1);
    assert_eq!(outcome("invalid"), invalid + burst_invalid);
    assert_eq!(outcome("rate_limited"), limited);
    assert_eq!(outcome("overloaded"), busy);
    assert_eq!(value(&s, "passgate_rate_limited_requests_total{}"), limited);
    assert_eq!(value(&s, "passgate_verifier_refusals_total{}"), busy);
    assert_eq!(
        value(
            &s,
            "passgate_upstream_errors_total{kind=unavailable,upstream=dead}"
        ),
        1
    );
    assert_eq!(
        value(
            &s,
            "passgate_upstream_errors_total{kind=unavailable,upstream=app}"
        ),
        0
    );
    // The scrape's own connection aside, nothing is open; the queue is empty.
    assert_eq!(value(&s, "passgate_verifier_queue_depth{}"), 0);
    assert_eq!(value(&s, "passgate_verifier_capacity{}"), 1);
    assert!(s.contains_key("passgate_open_connections{}"), "{text}");

    // Nothing a client sent is in any label: path, user, password, address.
    for needle in [
        nonce.as_str(),
        "secret-path",
        "nowhere",
        "mallory",
        "burst",
        &pw,
        "127.0.",
    ] {
        assert!(!text.contains(needle), "{needle:?} in the scrape:\n{text}");
    }
}

#[test]
fn health_ready_and_shutdown() {
    let backend = Backend::start();
    let pg = gateway(&backend);
    let m = metrics_addr(&pg);
    assert_eq!(http1(m, "GET", "/healthz", &[], b"").status, 200);
    // Ready once the store is open and every listener bound: soon after start.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http1(m, "GET", "/readyz", &[], b"");
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503);
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http1(m, "HEAD", "/readyz", &[], b"").status, 200);
    assert_eq!(http1(m, "GET", "/nope", &[], b"").status, 404);
    let post = http1(m, "POST", "/metrics", &[], b"");
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");

    // A slow request keeps the gateway draining after SIGTERM: not ready,
    // still alive.
    let addr = pg.addr;
    let slow = std::thread::spawn(move || get(addr, "/slow?ms=3000", None).status);
    let deadline = Instant::now() + Duration::from_secs(10);
    while value(&samples(&scrape(m)), "passgate_open_connections{}") < 1 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.signal("TERM");
    assert!(pg.wait_log("shutting down", Duration::from_secs(5)));
    assert_eq!(http1(m, "GET", "/readyz", &[], b"").status, 503);
    assert_eq!(http1(m, "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(slow.join().unwrap(), 200, "the in-flight request finished");
}

#[test]
fn check_config_refuses_a_metrics_address_the_proxy_listens_on() {
    let dir = tempfile::tempdir().unwrap();
    let check = |server: &str, metrics: &str| {
        let file = dir.path().join("proxy.toml");
        std::fs::write(
            &file,
            format!("[server]\nlisten = [\"{server}\"]\n\n[metrics]\nlisten = \"{metrics}\"\n"),
        )
        .unwrap();
        Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap()
    };
    for (server, metrics) in [
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("0.0.0.0:8080", "127.0.0.1:8080"),
        ("127.0.0.1:8080", "0.0.0.0:8080"),
    ] {
        let out = check(server, metrics);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{server} {metrics}: {err}");
        assert!(
            err.contains("metrics.listen") && err.contains("its own port"),
            "{err}"
        );
    }
    let out = check("127.0.0.1:8080", "127.0.0.1:9464");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[metrics]\nlisten = \"127.0.0.1:9464\"\npath = \"/m\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown field `path`"), "{err}");
}

/// A self-signed certificate for 127.0.0.1 valid until `year`-01-01, written
/// over `cert.pem` and `key.pem` in `dir`.
fn cert_until(dir: &std::path::Path, year: i32) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(year, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn certificate_expiry_follows_the_certificate_in_service() {
    const JAN_2030: i64 = 1_893_456_000;
    const JAN_2031: i64 = 1_924_992_000;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = cert_until(certs.path(), 2030);
    let backend = Backend::start();
    let mut b = ConfigBuilder::new(&backend.url());
    b.tls = Some((cert, key));
    b.extra.push_str("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let pg = Passgate::start(&b);
    let m = metrics_addr(&pg);
    let expiry = || {
        let s = samples(&scrape(m));
        *s.get("passgate_tls_certificate_expiry_seconds{}")
            .expect("an expiry gauge with TLS") as i64
    };
    assert!((expiry() - (JAN_2030 - unix_now())).abs() < 60);
    // Renewed and reloaded (SIGHUP): the gauge follows.
    cert_until(certs.path(), 2031);
    pg.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while (expiry() - (JAN_2031 - unix_now())).abs() >= 60 {
        assert!(Instant::now() < deadline, "expiry not updated after SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
}
