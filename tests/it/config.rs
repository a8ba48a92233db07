//! `passgate check-config`: every broken config is refused with exit 2 and a
//! message naming the file, the line and the key; the shipped `proxy.toml`
//! passes and is listed in match order; shadowed rules warn (or fail with
//! `--strict`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use crate::cli::{err, expect_code, out};
use crate::support::*;

/// A valid 18-line config; cases below edit it. Line numbers:
///  1 [server]         7 [auth]             13 [[routes]]
///  2 listen           8 realm              14 name
///  4 [store]         10 [upstreams.app]    15 path
///  5 path            11 url                16 access
///                                          17 scopes
///                                          18 upstream
const BASE: &str = r#"[server]
listen = ["127.0.0.1:0"]

[store]
path = "data/passgate.redb"

[auth]
realm = "t"

[upstreams.app]
url = "http://127.0.0.1:9"

[[routes]]
name = "api"
path = "/api/**"
access = "app-password"
scopes = ["repository:read"]
upstream = "app"
"#;

fn replace(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?}");
    BASE.replacen(from, to, 1)
}

fn append(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn check(dir: &Path, text: &str, extra_args: &[&str]) -> std::process::Output {
    let file = dir.join("proxy.toml");
    std::fs::write(&file, text).unwrap();
    Command::new(BIN)
        .arg("check-config")
        .args(extra_args)
        .arg("--config")
        .arg(&file)
        .env_remove("PASSGATE_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn base_fixture_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let o = check(dir.path(), BASE, &[]);
    expect_code(&o, 0);
    assert_eq!(BASE.lines().count(), 18);
    assert!(out(&o).contains("1 route(s)"), "{}", out(&o));
}

#[test]
fn broken_configs_name_file_line_and_key() {
    // (case, config text, line, substrings the message must hold besides file:line)
    let cases: Vec<(&str, String, usize, Vec<&str>)> = vec![
        (
            "unknown top-level key",
            append("\n[bogus]\nx = 1\n"),
            20,
            vec!["unknown field `bogus`"],
        ),
        (
            "unknown key in [server]",
            replace("listen = [\"127.0.0.1:0\"]\n", "listen = [\"127.0.0.1:0\"]\nfoo = 1\n"),
            3,
            vec!["unknown field `foo`"],
        ),
        (
            "bad duration",
            replace("realm = \"t\"\n", "realm = \"t\"\ncache_ttl = \"30x\"\n"),
            9,
            vec!["cache_ttl", "invalid duration \"30x\""],
        ),
        (
            "zero duration",
            replace("[server]\n", "[server]\nidle_timeout = \"0s\"\n"),
            2,
            vec!["idle_timeout", "must be greater than zero"],
        ),
        (
            "bad listen address",
            replace("\"127.0.0.1:0\"", "\"localhost:99999\""),
            2,
            vec!["listen", "socket address"],
        ),
        (
            "listen address on a later line of a multi-line array",
            replace(
                "listen = [\"127.0.0.1:0\"]",
                "listen = [\n  \"127.0.0.1:0\",\n  \"nope\",\n]",
            ),
            4,
            vec!["listen", "socket address"],
        ),
        (
            "empty listen",
            replace("[\"127.0.0.1:0\"]", "[]"),
            2,
            vec!["server.listen", "at least one"],
        ),
        (
            "unknown access kind",
            replace("\"app-password\"", "\"sometimes\""),
            16,
            vec!["access", "sometimes", "app-password"],
        ),
        (
            "route without upstream",
            replace("upstream = \"app\"\n", ""),
            13,
            vec!["upstream", "required"],
        ),
        (
            "scopes on a web route",
            replace("\"app-password\"", "\"web\""),
            17,
            vec!["scopes", "only allowed with access = \"app-password\""],
        ),
        (
            "unknown scope in a route",
            replace("[\"repository:read\"]", "[\"repository:fly\"]"),
            17,
            vec!["scopes", "unknown scope \"repository:fly\"", "repository:read"],
        ),
        (
            "unknown upstream name",
            replace("upstream = \"app\"", "upstream = \"gitea\""),
            18,
            vec!["upstream", "unknown upstream \"gitea\"", "app"],
        ),
        (
            "** not last in a path",
            replace("/api/**", "/a/**/b"),
            15,
            vec!["path", "**"],
        ),
        (
            "duplicate route name",
            append("\n[[routes]]\nname = \"api\"\npath = \"/x\"\naccess = \"deny\"\n"),
            21,
            vec!["name", "duplicate route name \"api\""],
        ),
        (
            "method in lower case",
            replace("path = \"/api/**\"\n", "path = \"/api/**\"\nmethods = [\"get\"]\n"),
            16,
            vec!["methods", "\"get\"", "upper-case"],
        ),
        (
            "ftp upstream URL",
            replace("http://127.0.0.1:9", "ftp://127.0.0.1:9"),
            11,
            vec!["upstreams.app.url", "http://"],
        ),
        (
            "bad header name in [identity]",
            append("\n[identity]\nuser_header = \"X Bad\"\n"),
            21,
            vec!["identity.user_header", "\"X Bad\""],
        ),
        (
            // The error points at the [scopes] table (20), where the bad entry lives.
            "scope implying an unknown scope",
            append("\n[scopes]\n\"a\" = { implies = [\"zzz\"] }\n"),
            20,
            vec!["scopes", "\"a\"", "\"zzz\""],
        ),
        (
            "TOML syntax error",
            replace("realm = \"t\"", "realm = \"t"),
            8,
            vec!["realm"],
        ),
        (
            "route without access",
            replace("access = \"app-password\"\n", ""),
            13,
            vec!["missing field `access`"],
        ),
        (
            "unknown key in a route",
            replace("upstream = \"app\"\n", "upstream = \"app\"\nupstreem = \"app\"\n"),
            19,
            vec!["unknown field `upstreem`"],
        ),
        (
            "bad duration in an inline table",
            replace(
                "realm = \"t\"\n",
                "realm = \"t\"\n[auth.rate_limit]\nper_addr = { burst = 5, per = \"1fortnight\" }\n",
            ),
            10,
            vec!["per_addr", "invalid duration"],
        ),
        // Issue #20: what a new user wrote, and the message they need.
        (
            "host name in listen",
            replace("\"127.0.0.1:0\"", "\"localhost:8080\""),
            2,
            vec![
                "server.listen",
                "\"localhost:8080\" is not a socket address",
                "e.g. \"127.0.0.1:8080\"",
            ],
        ),
        (
            "negative duration",
            replace("realm = \"t\"\n", "realm = \"t\"\ncache_ttl = \"-5s\"\n"),
            9,
            vec!["cache_ttl", "durations must be positive"],
        ),
        (
            "route error names the route as check-config numbers it",
            append("\n[[routes]]\nname = \"second\"\npath = \"/x\"\naccess = \"public\"\nupstream = \"nope\"\n"),
            24,
            vec!["route 2 (\"second\") upstream", "unknown upstream \"nope\""],
        ),
    ];
    assert!(cases.len() >= 15);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    for (case, text, line, needles) in &cases {
        let o = check(dir.path(), text, &[]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{case}: stdout {} stderr {}",
            out(&o),
            err(&o)
        );
        let e = err(&o);
        let at = format!("{}:{line}: ", file.display());
        assert!(e.contains(&at), "{case}: want {at:?} in {e}");
        for n in needles {
            assert!(e.contains(n), "{case}: want {n:?} in {e}");
        }
        assert!(!e.contains("panicked"), "{case}: {e}");
        assert_eq!(out(&o), "", "{case}: printed routes for a broken config");
    }
}

#[test]
fn shipped_config_is_valid_and_listed_in_file_order() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
    let text = std::fs::read_to_string(&shipped).unwrap();
    let mut names = Vec::new();
    let mut in_route = false;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            in_route = t == "[[routes]]";
        } else if in_route {
            if let Some(rest) = t.strip_prefix("name = \"") {
                names.push(rest.split('"').next().unwrap().to_owned());
            }
        }
    }
    assert!(names.len() > 10, "{names:?}");
    let o = Command::new(BIN)
        .args(["check-config", "--strict", "--config"])
        .arg(&shipped)
        .env_remove("PASSGATE_CONFIG")
        .output()
        .unwrap();
    expect_code(&o, 0);
    let stdout = out(&o);
    let mut lines = stdout.lines();
    let head = lines.next().unwrap();
    assert!(
        head.contains(&format!("{} route(s)", names.len())),
        "{head}"
    );
    let listed: Vec<&str> = lines
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(listed, names);
    assert!(!err(&o).contains("warning"), "{}", err(&o));
}

#[test]
fn shadowed_route_warns_and_fails_with_strict() {
    let text = replace(
        "[[routes]]\n",
        "[[routes]]\nname = \"everything\"\npath = \"/**\"\naccess = \"public\"\nupstream = \"app\"\n\n[[routes]]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let o = check(dir.path(), &text, &[]);
    expect_code(&o, 0);
    let e = err(&o);
    assert!(e.contains("warning"), "{e}");
    assert!(e.contains("\"api\"") && e.contains("\"everything\""), "{e}");
    // The shadowed route is on line 19 ([[routes]] of "api").
    assert!(e.contains("proxy.toml:19:"), "{e}");
    let s = out(&o);
    let everything = s.find("everything").unwrap();
    let api = s.find(" api ").unwrap();
    assert!(everything < api, "not in match order:\n{s}");

    let o = check(dir.path(), &text, &["--strict"]);
    expect_code(&o, 2);
    assert!(err(&o).contains("\"api\""), "{}", err(&o));
    assert!(err(&o).contains("shadowed"), "{}", err(&o));

    // A specific route before the catch-all is not shadowed.
    let fine = append("\n[[routes]]\nname = \"rest\"\npath = \"/**\"\naccess = \"deny\"\n");
    let o = check(dir.path(), &fine, &["--strict"]);
    expect_code(&o, 0);
    assert!(!err(&o).contains("warning"), "{}", err(&o));
}

/// Issue #16: every shipped route, asked for with a trailing slash added,
/// either gets the same decision as without it or is refused with 400; the
/// refused ones are exactly those whose slashed path belongs to a broader
/// route (a `deny`, the web UI) that decides otherwise.
#[test]
fn shipped_routes_under_the_trailing_slash_rule() {
    use passgate::routes::RouteError;

    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
    let config = passgate::config::Config::load(&shipped).unwrap();
    let routes = &config.routes;
    let mut refused = Vec::new();
    for route in routes.iter() {
        let (method, path, query) = route.example();
        if route.pattern.has_trailing_slash() || path == "/" {
            continue;
        }
        let bare = passgate::path::normalise(&path).unwrap();
        let slashed = passgate::path::normalise(&format!("{path}/")).unwrap();
        let Ok(owner) = routes.find(&method, &bare, query.as_deref()) else {
            panic!("{}: its own example {path} is not routed", route.name);
        };
        match routes.find(&method, &slashed, query.as_deref()) {
            Ok(r) => assert_eq!(r.decision(), owner.decision(), "{} {path}/", r.name),
            Err(RouteError::TrailingSlash) => refused.push(&*route.name),
            Err(e) => panic!("{method} {path}/: {e}"),
        }
    }
    assert_eq!(
        refused,
        [
            "git-refs-fetch",
            "git-refs-push",
            "git-upload-pack",
            "git-receive-pack",
            "lfs-batch",
            "lfs-object-download",
            "lfs-object-upload",
            "lfs-verify",
            "lfs-locks-list",
            "lfs-locks-verify",
            "lfs-locks-create",
            "lfs-locks-unlock",
            "api-user",
            "api-repository-delete",
            "api-repository-admin",
            // Its example `POST /api/2.0/repositories/x/x` is api-repository-admin's.
            "api-repositories-write",
            "health",
            "whoami",
        ]
    );
}

/// Issue #16: a route whose pattern ends in `/` while the path without the
/// slash is decided otherwise never applies (its requests get 400): warned.
#[test]
fn a_route_refused_for_its_trailing_slash_warns() {
    let text = append(
        "\n[[routes]]\nname = \"dir\"\npath = \"/dir/\"\naccess = \"public\"\nupstream = \"app\"\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let o = check(dir.path(), &text, &[]);
    expect_code(&o, 0);
    let e = err(&o);
    assert!(e.contains("proxy.toml:20: route \"dir\""), "{e}");
    assert!(e.contains("`GET /dir/`") && e.contains("no route"), "{e}");
    let o = check(dir.path(), &text, &["--strict"]);
    expect_code(&o, 2);

    // With the same decision for `/dir`, no warning.
    let text = format!(
        "{text}\n[[routes]]\nname = \"dir-bare\"\npath = \"/dir\"\naccess = \"public\"\nupstream = \"app\"\n"
    );
    let o = check(dir.path(), &text, &["--strict"]);
    expect_code(&o, 0);
    assert!(!err(&o).contains("warning"), "{}", err(&o));
}

/// Issue #20: `serve` warns about the same shadowed routes as `check-config`.
#[test]
fn serve_logs_the_shadowing_warnings_of_check_config() {
    let backend = Backend::start();
    let mut b = ConfigBuilder::new(&backend.url());
    b.routes = format!(
        "[[routes]]\nname = \"everything\"\npath = \"/**\"\naccess = \"public\"\nupstream = \"app\"\n\n{}",
        default_routes()
    );
    let pg = Passgate::start(&b);
    assert!(
        pg.wait_log(
            "can never match: route \"everything\"",
            std::time::Duration::from_secs(5)
        ),
        "{}",
        pg.log_text()
    );
}

/// Issue #20: the shipped config starts without an open-files warning where
/// the hard limit is 20,000 (and the soft one systemd's 1024).
#[test]
fn shipped_config_starts_quiet_under_common_open_files_limits() {
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml")).unwrap();
    let from = r#"listen = ["127.0.0.1:8080"]"#;
    assert!(shipped.contains(from));
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        shipped.replace(from, r#"listen = ["127.0.0.1:0"]"#),
    )
    .unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Hn 20000 && ulimit -Sn 1024 && exec \"$0\" serve --config \"$1\" 2> \"$2\"")
        .arg(BIN)
        .arg(&config)
        .arg(&log)
        .current_dir(dir.path())
        .env_remove("PASSGATE_CONFIG")
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("listening"), "{text}");
    assert!(!text.contains("open-files"), "{text}");
    assert!(!text.contains("WARN"), "{text}");
}
