//! Full config reload (DESIGN "Operations"): `passgate reload` and SIGHUP
//! re-read the whole file; a broken file changes nothing and says why;
//! restart-only keys are reported and keep their running values; requests in
//! flight finish under the config they started with.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::auth::GENEROUS;
use crate::support::*;

/// Routes that differ from [`default_routes`] in four ways: `admin` (a
/// deny) is gone, `blocked` (a deny) is new, `api` needs
/// `repository:write` instead of `repository:read`, and `public` is renamed.
fn changed_routes() -> String {
    default_routes()
        .replace(
            "[[routes]]\nname = \"admin\"\npath = \"/admin/**\"\naccess = \"deny\"\n",
            "[[routes]]\nname = \"blocked\"\npath = \"/blocked/**\"\naccess = \"deny\"\n",
        )
        .replace(
            "path = \"/api/**\"\naccess = \"app-password\"\nscopes = [\"repository:read\"]",
            "path = \"/api/**\"\naccess = \"app-password\"\nscopes = [\"repository:write\"]",
        )
}

fn status(pg: &Passgate, target: &str, auth: Option<(&str, &str)>) -> u16 {
    get(pg.addr, target, auth).status
}

fn write_config(pg: &Passgate, text: &str) {
    std::fs::write(&pg.config, text).unwrap();
}

/// `passgate reload`: (exit code, stderr).
fn reload(pg: &Passgate) -> (i32, String) {
    let out = pg.cli(&["reload"]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `check` until it holds or 10 s pass.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn routes_scopes_and_upstreams_change_on_reload_and_on_sighup() {
    let (a, b) = (Backend::start(), Backend::start());
    let mut builder = ConfigBuilder::new(&a.url());
    builder.auth_extra = GENEROUS.to_owned();
    let pg = Passgate::start(&builder);
    let (_, pw) = pg.create("alice", "laptop", &["repository:read"]);
    let alice = Some(("alice", pw.as_str()));
    // Twice: the second answer comes from the verification cache.
    assert_eq!(status(&pg, "/api/x", alice), 200);
    assert_eq!(status(&pg, "/api/x", alice), 200);
    let runs = pg.argon2_runs();
    assert_eq!(status(&pg, "/admin/x", None), 403);
    assert_eq!(status(&pg, "/blocked/x", None), 200);
    assert_eq!(get(pg.addr, "/public/x", None).echo().path, "/public/x");

    let original = builder.render();
    builder.routes = changed_routes();
    builder.upstream = format!("{}/b", b.url());
    write_config(&pg, &builder.render());
    let (code, err) = reload(&pg);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("config reloaded"), "{err}");
    assert!(!err.contains("needs a restart"), "{err}");

    // The cached verification of alice's password still proves who she
    // is, but no longer passes the narrowed route.
    let narrowed = get(pg.addr, "/api/x", alice);
    assert_eq!(narrowed.status, 403, "{}", narrowed.text());
    assert!(
        narrowed.text().contains("repository:write"),
        "{}",
        narrowed.text()
    );
    assert_eq!(
        pg.argon2_runs(),
        runs,
        "a route change must not flush the cache"
    );
    assert_eq!(status(&pg, "/admin/x", None), 200, "removed deny route");
    assert_eq!(status(&pg, "/blocked/x", None), 403, "added deny route");
    assert_eq!(
        get(pg.addr, "/public/x", None).echo().path,
        "/b/public/x",
        "the new upstream URL"
    );
    assert!(pg.wait_log("event=\"reloaded\"", Duration::from_secs(5)));
    assert!(pg.log_text().contains("reason=\"admin-socket\""));

    // Back to the original file, by SIGHUP this time.
    write_config(&pg, &original);
    pg.signal("HUP");
    eventually("SIGHUP restores the admin deny route", || {
        status(&pg, "/admin/x", None) == 403
    });
    assert_eq!(status(&pg, "/api/x", alice), 200);
    assert_eq!(status(&pg, "/blocked/x", None), 200);
    assert_eq!(get(pg.addr, "/public/x", None).echo().path, "/public/x");
    assert!(pg.wait_log("reason=\"signal\"", Duration::from_secs(5)));
}

#[test]
fn a_rate_limit_change_applies_to_new_requests() {
    let backend = Backend::start();
    let mut builder = ConfigBuilder::new(&backend.url());
    builder.auth_extra = GENEROUS.to_owned();
    let pg = Passgate::start(&builder);
    let wrong = Some(("alice", "not-an-app-password"));
    for _ in 0..4 {
        assert_eq!(status(&pg, "/api/x", wrong), 401);
    }
    builder.auth_extra = "[auth.rate_limit]\nper_user_addr = { burst = 2, per = \"1h\" }\nper_addr = { burst = 2, per = \"1h\" }\n".to_owned();
    write_config(&pg, &builder.render());
    pg.signal("HUP");
    assert!(pg.wait_log("event=\"reloaded\"", Duration::from_secs(10)));
    let answers: Vec<u16> = (0..4).map(|_| status(&pg, "/api/x", wrong)).collect();
    assert_eq!(answers[3], 429, "{answers:?}");

    // And back, through `passgate reload`: generous limits again.
    builder.auth_extra = GENEROUS.to_owned();
    write_config(&pg, &builder.render());
    let (code, err) = reload(&pg);
    assert_eq!(code, 0, "{err}");
    for _ in 0..4 {
        assert_eq!(status(&pg, "/api/x", wrong), 401);
    }
}

#[test]
fn a_broken_file_is_refused_and_the_old_config_keeps_serving() {
    let backend = Backend::start();
    let mut builder = ConfigBuilder::new(&backend.url());
    builder.auth_extra = GENEROUS.to_owned();
    builder
        .extra
        .push_str("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let pg = Passgate::start(&builder);
    let (_, pw) = pg.create("alice", "laptop", &["repository:read"]);
    let good = builder.render();
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let syntax = good.replace("name = \"admin\"", "name = \"admin");
    let unknown_scope = good.replace(
        "scopes = [\"repository:write\"]\nupstream = \"app\"\n\n[[routes]]\nname = \"git-receive\"",
        "scopes = [\"repository:wrte\"]\nupstream = \"app\"\n\n[[routes]]\nname = \"git-receive\"",
    );
    let missing_upstream = good.replace(
        "path = \"/public/**\"\naccess = \"public\"\nupstream = \"app\"",
        "path = \"/public/**\"\naccess = \"public\"\nupstream = \"nowhere\"",
    );
    for (what, text, needle) in [
        ("syntax error", &syntax, "name = \"admin"),
        ("unknown scope", &unknown_scope, "repository:wrte"),
        ("missing upstream", &missing_upstream, "\"nowhere\""),
    ] {
        assert_ne!(text, &good, "{what}: the test did not break the file");
        write_config(&pg, text);
        let (code, err) = reload(&pg);
        assert_eq!(code, 1, "{what}: {err}");
        let at = format!("proxy.toml:{}:", line_of(text, needle));
        assert!(err.contains(&at), "{what}: {at} missing in {err}");
        assert!(err.contains("stays in force"), "{what}: {err}");
        // The old config serves: its deny route, its scopes, its public route.
        assert_eq!(status(&pg, "/admin/x", None), 403, "{what}");
        assert_eq!(status(&pg, "/api/x", Some(("alice", &pw))), 200, "{what}");
        assert_eq!(status(&pg, "/public/x", None), 200, "{what}");
        // SIGHUP with the same file: refused too, and the log says why.
        pg.signal("HUP");
    }
    assert!(pg.wait_log("event=\"reload_refused\"", Duration::from_secs(5)));
    eventually("the SIGHUP refusals are logged", || {
        pg.log_text().matches("event=\"reload_refused\"").count() >= 6
    });
    assert!(pg.log_text().contains("unknown scope"));
    assert_eq!(status(&pg, "/admin/x", None), 403);
    // And the good file again: applied. Counted by outcome.
    write_config(&pg, &good);
    assert_eq!(reload(&pg).0, 0);
    let reloads = reload_counts(&pg);
    assert_eq!(reloads, (1, 6), "(applied, rejected)");
}

/// `passgate_config_reloads_total` by outcome from `/metrics`: (applied, rejected).
fn reload_counts(pg: &Passgate) -> (u64, u64) {
    assert!(pg.wait_log("metrics on http://", Duration::from_secs(10)));
    let text = pg.log_text();
    let rest = text.split("metrics on http://").nth(1).unwrap();
    let addr = rest.split('/').next().unwrap().parse().unwrap();
    let scraped = http1(addr, "GET", "/metrics", &[], b"").text();
    let count = |outcome: &str| {
        let series = format!("passgate_config_reloads_total{{outcome=\"{outcome}\"}} ");
        scraped
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no {series} in {scraped}"))
            .trim()
            .parse()
            .unwrap()
    };
    (count("applied"), count("rejected"))
}

#[test]
fn restart_only_keys_are_reported_and_keep_their_running_values() {
    let backend = Backend::start();
    let mut builder = ConfigBuilder::new(&backend.url());
    builder.auth_extra = GENEROUS.to_owned();
    let pg = Passgate::start(&builder);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = taken.local_addr().unwrap();
    builder.routes = changed_routes();
    let text = builder
        .render()
        .replace(
            "listen = [\"127.0.0.1:0\"]",
            &format!("listen = [\"{other}\"]"),
        )
        .replace(
            "socket = \"data/admin.sock\"",
            "socket = \"data/other.sock\"",
        );
    write_config(&pg, &text);
    // The CLI finds the server at the socket the new file names: the old one
    // is still in use, so talk to it by the old file.
    let old = pg.dir.path().join("old.toml");
    std::fs::write(&old, builder.render()).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["reload", "--config"])
        .arg(&old)
        .env_remove("PASSGATE_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("needs a restart: server.listen"), "{err}");
    assert!(err.contains("needs a restart: admin.socket"), "{err}");
    // The rest of the file applied; the old listener still serves.
    assert_eq!(status(&pg, "/blocked/x", None), 403);
    assert_eq!(status(&pg, "/admin/x", None), 200);
    assert!(pg.dir.path().join("data/admin.sock").exists());
    assert!(!pg.dir.path().join("data/other.sock").exists());
    assert!(pg.wait_log(
        "needs_restart=server.listen admin.socket",
        Duration::from_secs(5)
    ));
    drop(taken);
}

#[test]
fn a_download_started_before_a_reload_completes_intact() {
    let (a, b) = (Backend::start(), Backend::start());
    let mut builder = ConfigBuilder::new(&a.url());
    let pg = Passgate::start(&builder);
    const SIZE: usize = 64 * 1024 * 1024;
    let mut s = TcpStream::connect(pg.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /bytes?n={SIZE} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    while got.len() < 256 * 1024 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    // The route that serves it goes away and its upstream moves.
    builder.routes = default_routes().replace("path = \"/**\"", "path = \"/elsewhere/**\"");
    builder.upstream = format!("{}/b", b.url());
    std::fs::write(&pg.config, builder.render()).unwrap();
    let (code, err) = reload(&pg);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        status(&pg, "/bytes?n=1", None),
        404,
        "new requests: no route"
    );
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    let mut body = got.len() - head_end;
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&c| c == b'x'));
        body += n;
    }
    assert_eq!(body, SIZE, "the download was cut");
}

/// Brute-force counters survive a reload that changes `rate_limit`: the
/// failures already counted still count under the new limits, so waiting
/// for an operator's reload gives an attacker no fresh budget.
#[test]
fn a_rate_limit_change_keeps_the_failures_already_counted() {
    let backend = Backend::start();
    let mut builder = ConfigBuilder::new(&backend.url());
    let limits = |burst: u32, per: &str| {
        format!(
            "[auth.rate_limit]\nper_user_addr = {{ burst = {burst}, per = \"{per}\" }}\n\
             per_addr = {{ burst = 10000, per = \"1m\" }}\n"
        )
    };
    builder.auth_extra = limits(3, "1m");
    let pg = Passgate::start(&builder);
    let wrong = Some(("mallory", "not-an-app-password"));
    let answers: Vec<u16> = (0..4).map(|_| status(&pg, "/api/x", wrong)).collect();
    assert_eq!(answers, [401, 401, 401, 429]);

    // The same burst refilling ten times slower: still refused, with the
    // new rate's wait (one token: 200 s).
    builder.auth_extra = limits(3, "10m");
    write_config(&pg, &builder.render());
    let (code, err) = reload(&pg);
    assert_eq!(code, 0, "{err}");
    let r = get(pg.addr, "/api/x", wrong);
    assert_eq!(r.status, 429, "a reload must not reset the counters");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((150..=200).contains(&wait), "Retry-After {wait}");

    // A larger burst (5 per 5 minutes): the 3 failures held leave 2.
    builder.auth_extra = limits(5, "5m");
    write_config(&pg, &builder.render());
    let (code, err) = reload(&pg);
    assert_eq!(code, 0, "{err}");
    let answers: Vec<u16> = (0..3).map(|_| status(&pg, "/api/x", wrong)).collect();
    assert_eq!(answers, [401, 401, 429]);
}
