//! The `passgate app-password` CLI, with and without a running `serve`:
//! round trips, creation rules and exit codes, `$PASSGATE_CONFIG`, what the
//! store file holds, file modes, concurrent use of the admin socket, and the
//! admin socket / store lock when servers crash or collide.

// Test helpers outside #[test] fns, and polling/kill timing on plain threads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The app-password route of [`default_routes`] that needs `repository:read`.
pub(crate) const READ_ROUTE: &str = "/alice/repo.git/info/refs?service=git-upload-pack";

/// A config written into a fresh temp dir as `proxy.toml`, for the CLI
/// without a running server (same layout [`Passgate::start_in`] uses).
pub(crate) fn offline(builder: &ConfigBuilder) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, builder.render()).unwrap();
    (dir, config)
}

/// Runs the binary with `--config config`, never inheriting `$PASSGATE_CONFIG`.
pub(crate) fn run(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("PASSGATE_CONFIG")
        .output()
        .unwrap()
}

pub(crate) fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing both streams when it is wrong.
#[track_caller]
pub(crate) fn expect_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        out(o),
        err(o)
    );
}

/// Runs `cmd` to completion, killing it (and failing) after `limit`.
pub(crate) fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", out(o), err(o)))
}

/// `list --json` as (id → row).
fn listed(cli: &dyn Fn(&[&str]) -> Output, user: Option<&str>) -> Vec<serde_json::Value> {
    let mut args = vec!["app-password", "list", "--json"];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    let o = cli(&args);
    expect_code(&o, 0);
    json(&o).as_array().unwrap().clone()
}

fn row<'a>(rows: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed in {rows:?}"))
}

/// A token's id (`pgap_` + 12) and secret (the next 32 characters).
fn id_of(token: &str) -> &str {
    &token[5..17]
}
fn secret_of(token: &str) -> &str {
    &token[17..49]
}

/// Create, list, revoke, revoke again, bad ids and revoke-all through `cli`.
fn round_trip(cli: &dyn Fn(&[&str]) -> Output) {
    // Plain create: the password alone on stdout, details on stderr.
    let o = cli(&create_args("alice", "laptop", &["repository:read"]));
    expect_code(&o, 0);
    let stdout = out(&o);
    let token = stdout.lines().next().unwrap().to_owned();
    assert_eq!(token.len(), 55, "{token:?}");
    assert!(token.starts_with("pgap_"), "{token:?}");
    assert_eq!(stdout, format!("{token}\n"), "only the password on stdout");
    let id1 = id_of(&token).to_owned();
    assert!(err(&o).contains(&id1), "details on stderr: {}", err(&o));
    assert!(!err(&o).contains(&token), "password repeated on stderr");

    // --json: one object with exactly the documented fields.
    let mut args = create_args("alice", "ci", &["repository:write", "account:read"]);
    args.extend(["--expires-in", "90d", "--json"]);
    let o = cli(&args);
    expect_code(&o, 0);
    let v = json(&o);
    let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = [
        "id",
        "password",
        "user",
        "name",
        "scopes",
        "created_at",
        "expires_at",
        "repos",
        "allow_from",
        "rotated_from",
    ]
    .into();
    assert_eq!(keys, want);
    let token2 = v["password"].as_str().unwrap().to_owned();
    let id2 = v["id"].as_str().unwrap().to_owned();
    assert_eq!(token2.len(), 55);
    assert_eq!(id_of(&token2), id2);
    assert_eq!(v["user"], "alice");
    assert_eq!(v["name"], "ci");
    assert_eq!(
        v["scopes"],
        serde_json::json!(["account:read", "repository:write"])
    );
    let created = humantime::parse_rfc3339(v["created_at"].as_str().unwrap()).unwrap();
    let expires = humantime::parse_rfc3339(v["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        expires.duration_since(created).unwrap(),
        Duration::from_secs(90 * 86_400)
    );

    let bob_a = cli(&create_args("bob", "one", &["repository:read"]));
    expect_code(&bob_a, 0);
    let bob_b = cli(&create_args("bob", "two", &["repository:read"]));
    expect_code(&bob_b, 0);
    let bob_ids: BTreeSet<String> = [&bob_a, &bob_b]
        .iter()
        .map(|o| id_of(out(o).trim()).to_owned())
        .collect();

    // list, table and JSON: every id, never a secret or a hash.
    let o = cli(&["app-password", "list"]);
    expect_code(&o, 0);
    let table = out(&o);
    for id in [&id1, &id2].into_iter().chain(&bob_ids) {
        assert!(table.contains(id.as_str()), "{id} not in\n{table}");
    }
    assert!(
        !table.contains("pgap_") && !table.contains("$argon2"),
        "{table}"
    );
    let o = cli(&["app-password", "list", "--json"]);
    expect_code(&o, 0);
    assert!(!out(&o).contains("pgap_") && !out(&o).contains("$argon2"));
    let rows = json(&o).as_array().unwrap().clone();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        let want: BTreeSet<&str> = [
            "id",
            "user",
            "name",
            "scopes",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "last_used_addr",
            "status",
            "repos",
            "allow_from",
            "last_used",
            "rotated_from",
            "rotated_to",
            "expiring_soon",
        ]
        .into();
        assert_eq!(keys, want, "{r}");
        assert_eq!(r["status"], "active");
    }
    assert_eq!(row(&rows, &id2)["name"], "ci");
    let bobs = listed(cli, Some("bob"));
    assert_eq!(bobs.len(), 2, "{bobs:?}");
    assert!(bobs.iter().all(|r| r["user"] == "bob"));

    // revoke, then revoke again.
    let o = cli(&["app-password", "revoke", &id1]);
    expect_code(&o, 0);
    assert!(err(&o).contains("revoked"), "{}", err(&o));
    let rows = listed(cli, None);
    assert_eq!(row(&rows, &id1)["status"], "revoked");
    assert!(row(&rows, &id1)["revoked_at"].is_string());
    assert_eq!(row(&rows, &id2)["status"], "active");
    let o = cli(&["app-password", "revoke", &id1]);
    expect_code(&o, 0);
    assert!(err(&o).contains("already revoked"), "{}", err(&o));

    // Unknown id: runtime failure; malformed id: usage error.
    let o = cli(&["app-password", "revoke", "AAAAAAAAAAAA"]);
    expect_code(&o, 1);
    assert!(
        err(&o).contains("no app password with id AAAAAAAAAAAA"),
        "{}",
        err(&o)
    );
    for bad in ["not-an-id!", "short", "AAAAAAAAAAAAA"] {
        let o = cli(&["app-password", "revoke", bad]);
        expect_code(&o, 2);
        assert!(err(&o).contains("is not an app password id"), "{}", err(&o));
        assert!(!err(&o).contains(bad), "argument echoed: {}", err(&o));
    }
    // Issue #20: a whole password where its id belongs is named as one and
    // never echoed (plain, or percent-encoded through the admin socket);
    // only its public id is shown. Nor does clap echo one it cannot place.
    let secret = secret_of(&token);
    for pasted in [token.clone(), token[5..].to_owned(), format!("{token}\n")] {
        let o = cli(&["app-password", "revoke", &pasted]);
        expect_code(&o, 2);
        assert!(!err(&o).contains(secret), "secret echoed: {}", err(&o));
        assert!(
            err(&o).contains("whole app password, not its id"),
            "{}",
            err(&o)
        );
        assert!(err(&o).contains(&format!("its id is {id1}")), "{}", err(&o));
    }
    for args in [
        vec!["app-password", "list", &token],
        vec!["app-password", "revoke", "--user", "alice", &token],
        vec!["app-password", "revoke", &id1, &token],
        vec![
            "app-password",
            "create",
            "--user",
            "alice",
            "--name",
            &token,
        ],
        vec![
            "app-password",
            "list",
            "--user",
            "alice",
            "--json",
            "--expires-in",
            &token,
        ],
    ] {
        let o = cli(&args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        assert!(!err(&o).contains(secret), "{args:?}: {}", err(&o));
        assert!(!out(&o).contains(secret), "{args:?}: {}", out(&o));
    }

    // revoke --user U --all: every active one of that user, ids on stdout.
    let o = cli(&["app-password", "revoke", "--user", "bob", "--all"]);
    expect_code(&o, 0);
    let got: BTreeSet<String> = out(&o).lines().map(str::to_owned).collect();
    assert_eq!(got, bob_ids);
    assert!(listed(cli, Some("bob"))
        .iter()
        .all(|r| r["status"] == "revoked"));
    assert_eq!(row(&listed(cli, None), &id2)["status"], "active");
    let o = cli(&["app-password", "revoke", "--user", "bob", "--all"]);
    expect_code(&o, 0);
    assert_eq!(out(&o), "");
    assert!(err(&o).contains("revoked 0"), "{}", err(&o));
}

/// Issue #20: `revoke` has two forms and clap's usage shows those two, never
/// a mix of them; every mix is refused with exit 2 and a message naming the
/// clash, before the config is even read.
#[test]
fn revoke_usage_shows_its_two_forms_and_refuses_every_mix() {
    let missing = Path::new("/nonexistent/proxy.toml");
    let cases: [(&[&str], &str); 6] = [
        (&[], "<ID>"),
        (&["--user", "bob"], "--all"),
        (&["--all"], "--user <USER>"),
        (&["AAAAAAAAAAAA", "--all"], "cannot be used with '--all'"),
        (
            &["AAAAAAAAAAAA", "--user", "bob"],
            "cannot be used with '--user <USER>'",
        ),
        (
            &["AAAAAAAAAAAA", "--user", "bob", "--all"],
            "cannot be used with",
        ),
    ];
    for (extra, says) in cases {
        let mut args = vec!["app-password", "revoke"];
        args.extend_from_slice(extra);
        let o = run(missing, &args);
        expect_code(&o, 2);
        let text = err(&o);
        assert!(text.contains(says), "{args:?}: {text}");
        assert!(
            text.contains("passgate app-password revoke [OPTIONS] <ID>\n")
                && text.contains("passgate app-password revoke [OPTIONS] --user <USER> --all\n"),
            "{args:?}: {text}"
        );
        assert!(
            !text.contains("--all <ID>") && !text.contains("--all [ID]"),
            "{text}"
        );
    }
    let help = run(missing, &["app-password", "revoke", "--help"]);
    expect_code(&help, 0);
    assert!(
        out(&help).contains("[OPTIONS] --user <USER> --all"),
        "{}",
        out(&help)
    );
}

#[test]
fn round_trip_without_a_running_server() {
    let (dir, config) = offline(&ConfigBuilder::new("http://127.0.0.1:9"));
    round_trip(&|args| run(&config, args));
    assert!(dir.path().join("data/passgate.redb").is_file());
    assert!(!dir.path().join("data/admin.sock").exists());
}

#[test]
fn round_trip_through_a_running_server() {
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    round_trip(&|args| pg.cli(args));
    // The server held the store all along, so the CLI went through the
    // socket: the server's audit log saw every change.
    for event in ["event=\"created\"", "event=\"revoked\""] {
        assert!(
            pg.wait_log(event, Duration::from_secs(5)),
            "{event} not logged:\n{}",
            pg.log_text()
        );
    }
    assert!(!pg.log_text().contains("pgap_"), "a token was logged");
}

#[test]
fn password_created_offline_works_once_serve_starts() {
    let backend = Backend::start();
    let builder = ConfigBuilder::new(&backend.url());
    let (dir, config) = offline(&builder);
    let o = run(
        &config,
        &create_args("alice", "laptop", &["repository:read"]),
    );
    expect_code(&o, 0);
    let token = out(&o).trim().to_owned();
    let pg = Passgate::start_in(dir, &builder);
    let r = get(pg.addr, READ_ROUTE, Some(("alice", &token)));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.echo().header("x-forwarded-app-password"),
        Some(id_of(&token))
    );
    let r = get(pg.addr, READ_ROUTE, Some(("bob", &token)));
    assert_eq!(r.status, 401, "another user's name");
}

#[test]
fn revocation_through_the_cli_beats_the_verification_cache() {
    let backend = Backend::start();
    let mut builder = ConfigBuilder::new(&backend.url());
    builder.auth_extra = "cache_ttl = \"1h\"\n".to_owned();
    let pg = Passgate::start(&builder);
    let (id, pw) = pg.create("alice", "laptop", &["repository:read"]);
    let (_, bob_pw) = pg.create("bob", "laptop", &["repository:read"]);
    for _ in 0..2 {
        assert_eq!(get(pg.addr, READ_ROUTE, Some(("alice", &pw))).status, 200);
        assert_eq!(get(pg.addr, READ_ROUTE, Some(("bob", &bob_pw))).status, 200);
    }
    expect_code(&pg.cli(&["app-password", "revoke", &id]), 0);
    let r = get(pg.addr, READ_ROUTE, Some(("alice", &pw)));
    assert_eq!(r.status, 401, "revoked password still served from cache");
    expect_code(
        &pg.cli(&["app-password", "revoke", "--user", "bob", "--all"]),
        0,
    );
    let r = get(pg.addr, READ_ROUTE, Some(("bob", &bob_pw)));
    assert_eq!(r.status, 401, "revoke --all left a cached password working");
}

/// Every creation rule: (args, exit code, stderr substrings).
fn creation_rules(cli: &dyn Fn(&[&str]) -> Output) {
    let long_name = "n".repeat(101);
    let max_name = "m".repeat(100);
    let long_user = "u".repeat(256);
    let max_user = "u".repeat(255);
    let cases: Vec<(Vec<&str>, i32, Vec<&str>)> = vec![
        (
            create_args("alice", "x", &["repository:fly"]),
            2,
            vec![
                "unknown scope \"repository:fly\"",
                "repository:read",
                "account:read",
            ],
        ),
        (
            create_args("alice", "x", &["repository:read", "nope"]),
            2,
            vec!["unknown scope \"nope\"", "known scopes"],
        ),
        (
            create_args("", "x", &["repository:read"]),
            2,
            vec!["invalid user name"],
        ),
        (
            create_args("al:ice", "x", &["repository:read"]),
            2,
            vec!["invalid user name", "':'"],
        ),
        (
            create_args("al\tice", "x", &["repository:read"]),
            2,
            vec!["invalid user name"],
        ),
        (
            create_args(&long_user, "x", &["repository:read"]),
            2,
            vec!["invalid user name", "1-255"],
        ),
        (create_args(&max_user, "x", &["repository:read"]), 0, vec![]),
        (
            create_args("alice", &long_name, &["repository:read"]),
            2,
            vec!["invalid name", "1-100"],
        ),
        (
            create_args("alice", "", &["repository:read"]),
            2,
            vec!["invalid name"],
        ),
        (
            create_args("alice", &max_name, &["repository:read"]),
            0,
            vec![],
        ),
        (
            create_args("alice", "x", &[]),
            2,
            vec!["required", "--scope <SCOPE>"],
        ),
        (
            [
                create_args("alice", "x", &["repository:read"]),
                vec!["--expires-in", "abc"],
            ]
            .concat(),
            2,
            vec!["--expires-in", "abc"],
        ),
        (
            [
                create_args("alice", "x", &["repository:read"]),
                vec!["--expires-in", "0s"],
            ]
            .concat(),
            2,
            vec!["--expires-in"],
        ),
        (
            vec![
                "app-password",
                "create",
                "--name",
                "x",
                "--scope",
                "repository:read",
            ],
            2,
            vec!["--user"],
        ),
    ];
    for (args, code, needles) in &cases {
        let o = cli(args);
        assert_eq!(
            o.status.code(),
            Some(*code),
            "{args:?}\nstdout: {}\nstderr: {}",
            out(&o),
            err(&o)
        );
        for n in needles {
            assert!(err(&o).contains(n), "{args:?}: {n:?} not in {}", err(&o));
        }
        if *code != 0 {
            assert!(!out(&o).contains("pgap_"), "{args:?} printed a password");
        }
    }

    // Names are unique among a user's ACTIVE passwords only.
    let o = cli(&create_args("carol", "laptop", &["repository:read"]));
    expect_code(&o, 0);
    let first = id_of(out(&o).trim()).to_owned();
    let o = cli(&create_args("carol", "laptop", &["repository:write"]));
    expect_code(&o, 1);
    assert!(
        err(&o).contains("already has an active app password named \"laptop\""),
        "{}",
        err(&o)
    );
    expect_code(
        &cli(&create_args("dave", "laptop", &["repository:read"])),
        0,
    );
    expect_code(&cli(&["app-password", "revoke", &first]), 0);
    expect_code(
        &cli(&create_args("carol", "laptop", &["repository:read"])),
        0,
    );
    let carol = listed(cli, Some("carol"));
    assert_eq!(carol.len(), 2);
    assert_eq!(carol.iter().filter(|r| r["status"] == "active").count(), 1);
}

#[test]
fn creation_rules_and_exit_codes_without_a_server() {
    let (_dir, config) = offline(&ConfigBuilder::new("http://127.0.0.1:9"));
    creation_rules(&|args| run(&config, args));
}

#[test]
fn creation_rules_and_exit_codes_through_a_server() {
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    creation_rules(&|args| pg.cli(args));
}

fn max_lifetime_rules(cli: &dyn Fn(&[&str]) -> Output) {
    let base = create_args("alice", "x", &["repository:read"]);
    let o = cli(&base);
    expect_code(&o, 2);
    assert!(
        err(&o).contains("max_lifetime") && err(&o).contains("--expires-in"),
        "{}",
        err(&o)
    );
    let o = cli(&[base.clone(), vec!["--expires-in", "31d"]].concat());
    expect_code(&o, 2);
    assert!(
        err(&o).contains("exceeds") && err(&o).contains("max_lifetime"),
        "{}",
        err(&o)
    );
    let o = cli(&[base.clone(), vec!["--expires-in", "30d", "--json"]].concat());
    expect_code(&o, 0);
    let o = cli(&[base.clone(), vec!["--expires-in", "7d", "--json"]].concat());
    expect_code(&o, 1); // same name as the 30d one, which is active
    let o = cli(&[
        create_args("alice", "week", &["repository:read"]),
        vec!["--expires-in", "7d", "--json"],
    ]
    .concat());
    expect_code(&o, 0);
    let v = json(&o);
    let created = humantime::parse_rfc3339(v["created_at"].as_str().unwrap()).unwrap();
    let expires = humantime::parse_rfc3339(v["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        expires.duration_since(created).unwrap(),
        Duration::from_secs(7 * 86_400)
    );
}

#[test]
fn max_lifetime_requires_and_caps_expiry() {
    let backend = Backend::start();
    let mut builder = ConfigBuilder::new(&backend.url());
    builder.auth_extra = "max_lifetime = \"30d\"\n".to_owned();
    let (_dir, config) = offline(&builder);
    max_lifetime_rules(&|args| run(&config, args));
    let pg = Passgate::start(&builder);
    max_lifetime_rules(&|args| pg.cli(args));
}

#[test]
fn passgate_config_env_is_honoured_and_missing_config_is_exit_2() {
    let (dir, config) = offline(&ConfigBuilder::new("http://127.0.0.1:9"));
    let elsewhere = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(create_args("alice", "env", &["repository:read"]))
        .env("PASSGATE_CONFIG", &config)
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    expect_code(&o, 0);
    let id = id_of(out(&o).trim()).to_owned();
    let rows = listed(&|args| run(&config, args), None);
    row(&rows, &id);
    assert!(dir.path().join("data/passgate.redb").exists());
    assert!(
        !elsewhere.path().join("data").exists(),
        "store created relative to the working directory"
    );

    // --config wins over $PASSGATE_CONFIG.
    let missing = elsewhere.path().join("nope/proxy.toml");
    let o = Command::new(BIN)
        .args(["app-password", "list", "--config"])
        .arg(&missing)
        .env("PASSGATE_CONFIG", &config)
        .output()
        .unwrap();
    expect_code(&o, 2);
    assert!(
        err(&o).contains(&missing.display().to_string()),
        "{}",
        err(&o)
    );

    // A missing file named by the variable, for every subcommand.
    for args in [
        vec!["app-password", "list"],
        create_args("alice", "x", &["repository:read"]),
        vec!["app-password", "revoke", "AAAAAAAAAAAA"],
        vec!["check-config"],
        vec!["serve"],
    ] {
        let o = output_within(
            Command::new(BIN)
                .args(&args)
                .env("PASSGATE_CONFIG", &missing)
                .current_dir(elsewhere.path()),
            Duration::from_secs(10),
        );
        expect_code(&o, 2);
        assert!(
            err(&o).contains(&missing.display().to_string()),
            "{args:?}: {}",
            err(&o)
        );
    }

    // Neither: ./proxy.toml of the working directory.
    let o = Command::new(BIN)
        .args(["app-password", "list"])
        .env_remove("PASSGATE_CONFIG")
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    expect_code(&o, 2);
    assert!(err(&o).contains("proxy.toml"), "{}", err(&o));
    let o = Command::new(BIN)
        .args(["app-password", "list", "--json"])
        .env_remove("PASSGATE_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    expect_code(&o, 0);
    assert!(out(&o).contains(&id));
}

fn assert_no_secret(file: &Path, tokens: &[String]) {
    let bytes = std::fs::read(file).unwrap();
    assert!(bytes.len() > 1000, "store file suspiciously small");
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    for t in tokens {
        assert!(!contains(t), "full token stored in {}", file.display());
        assert!(
            !contains(secret_of(t)),
            "secret of {} stored in {}",
            id_of(t),
            file.display()
        );
        assert!(contains(id_of(t)), "id {} missing: wrong file?", id_of(t));
    }
    assert!(contains("$argon2id$"), "no argon2id hash in the store");
}

#[test]
fn store_file_never_holds_a_secret_or_a_token() {
    // Offline.
    let (dir, config) = offline(&ConfigBuilder::new("http://127.0.0.1:9"));
    let mut tokens = Vec::new();
    for name in ["a", "b", "c"] {
        let o = run(&config, &create_args("alice", name, &["repository:read"]));
        expect_code(&o, 0);
        tokens.push(out(&o).trim().to_owned());
    }
    expect_code(
        &run(&config, &["app-password", "revoke", id_of(&tokens[0])]),
        0,
    );
    assert_no_secret(&dir.path().join("data/passgate.redb"), &tokens);

    // Through a server that used them, then stopped: the usage is written by
    // the shutdown flush alone (the periodic one, every hour here, has not
    // come round; issue #21: a 1 s period satisfied this test by itself).
    let backend = Backend::start();
    let mut builder = ConfigBuilder::new(&backend.url());
    builder.auth_extra = "usage_flush = \"1h\"\n".to_owned();
    let mut pg = Passgate::start(&builder);
    let mut tokens = Vec::new();
    for name in ["a", "b", "c"] {
        tokens.push(pg.create("alice", name, &["repository:read"]).1);
    }
    for t in &tokens {
        assert_eq!(get(pg.addr, READ_ROUTE, Some(("alice", t))).status, 200);
    }
    let rows = listed(&|args| run(&pg.config, args), None);
    assert!(
        rows.iter().all(|r| r["last_used_at"].is_null()),
        "usage written before the shutdown: {rows:?}"
    );
    assert_eq!(pg.stop("TERM", Duration::from_secs(15)), 0);
    assert_no_secret(&pg.dir.path().join("data/passgate.redb"), &tokens);
    let rows = listed(&|args| run(&pg.config, args), None);
    assert!(
        rows.iter().all(|r| r["last_used_at"].is_string()),
        "usage not flushed on shutdown: {rows:?}"
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn store_file_and_admin_socket_are_private() {
    let (dir, config) = offline(&ConfigBuilder::new("http://127.0.0.1:9"));
    expect_code(
        &run(&config, &create_args("a", "b", &["repository:read"])),
        0,
    );
    assert_eq!(mode(&dir.path().join("data/passgate.redb")), 0o600);
    assert_eq!(mode(&dir.path().join("data")), 0o700);

    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let data = pg.dir.path().join("data");
    assert_eq!(mode(&data.join("passgate.redb")), 0o600);
    assert_eq!(mode(&data.join("admin.sock")), 0o600);
    assert_eq!(mode(&data), 0o700);
}

#[test]
fn parallel_creates_through_the_socket_all_succeed() {
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let config = pg.config.clone();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let config = config.clone();
            std::thread::spawn(move || {
                let name = format!("parallel-{i}");
                let mut args = create_args("alice", &name, &["repository:read"]);
                args.push("--json");
                let o = run(&config, &args);
                expect_code(&o, 0);
                let v = json(&o);
                (
                    v["id"].as_str().unwrap().to_owned(),
                    v["password"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    let created: Vec<(String, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ids: BTreeSet<&String> = created.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 8, "duplicate ids: {created:?}");
    let rows = listed(&|args| pg.cli(args), Some("alice"));
    assert_eq!(rows.len(), 8);
    for id in ids {
        row(&rows, id);
    }
    for (_, pw) in &created {
        assert_eq!(get(pg.addr, READ_ROUTE, Some(("alice", pw))).status, 200);
    }
}

#[test]
fn stale_admin_socket_of_a_killed_server_is_replaced() {
    let backend = Backend::start();
    let mut pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let (_, before) = pg.create("alice", "before", &["repository:read"]);
    pg.kill9();
    let sock = pg.dir.path().join("data/admin.sock");
    assert!(sock.exists(), "kill -9 should leave the socket file behind");
    // The CLI falls back to the store while nothing answers on the socket.
    let o = pg.cli(&["app-password", "list", "--json"]);
    expect_code(&o, 0);
    pg.spawn();
    let (_, after) = pg.create("alice", "after", &["repository:read"]);
    for pw in [&before, &after] {
        assert_eq!(get(pg.addr, READ_ROUTE, Some(("alice", pw))).status, 200);
    }
    assert_eq!(mode(&sock), 0o600);
}

#[test]
fn second_serve_on_the_same_config_fails_clearly() {
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let (code, e) = serve_exits(&pg.config);
    assert_eq!(code, Some(1), "{e}");
    assert!(
        e.contains("locked") || e.contains("in use"),
        "no clear reason: {e}"
    );
    assert!(
        e.contains("passgate.redb") || e.contains("admin.sock"),
        "{e}"
    );
    // The first one is unharmed.
    let (_, pw) = pg.create("alice", "still-fine", &["repository:read"]);
    assert_eq!(get(pg.addr, READ_ROUTE, Some(("alice", &pw))).status, 200);
}

#[test]
fn unwritable_store_path_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocker"), "a regular file").unwrap();
    let text = ConfigBuilder::new("http://127.0.0.1:9")
        .render()
        .replace("data/passgate.redb", "blocker/passgate.redb");
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, text).unwrap();
    let store = dir.path().join("blocker/passgate.redb");
    let store = store.display().to_string();

    let (code, e) = serve_exits(&config);
    assert_eq!(code, Some(1), "{e}");
    assert!(e.contains(&store), "{e}");
    for args in [
        create_args("alice", "x", &["repository:read"]),
        vec!["app-password", "list"],
    ] {
        let o = run(&config, &args);
        expect_code(&o, 1);
        assert!(err(&o).contains(&store), "{args:?}: {}", err(&o));
        assert!(!out(&o).contains("pgap_"));
    }
}

/// Issue #20: `create --help` describes every option and shows `--scope` as
/// required; durations must be positive and come back in the unit written;
/// `list --status` keeps only that status.
#[test]
fn create_help_durations_and_list_status_filter() {
    let mut b = ConfigBuilder::new("http://127.0.0.1:9");
    b.auth_extra = "max_lifetime = \"365d\"\n".to_owned();
    let (_dir, config) = offline(&b);
    let help = run(&config, &["app-password", "create", "-h"]);
    expect_code(&help, 0);
    let text = out(&help);
    assert!(
        text.contains("Usage: passgate app-password create [OPTIONS] --user <USER> --name <NAME> --scope <SCOPE>"),
        "{text}"
    );
    let options: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Options:"))
        .skip(1)
        .filter(|l| l.trim_start().starts_with('-'))
        .collect();
    assert!(options.len() >= 6, "{text}");
    for line in options {
        let spec_end = line
            .trim_start()
            .find("  ")
            .unwrap_or_else(|| panic!("undescribed: {line}"));
        assert!(
            line.trim_start()[spec_end..].trim().len() > 5,
            "undescribed: {line}"
        );
    }

    let mut create = create_args("alice", "x", &["repository:read"]);
    create.extend(["--expires-in", "-5s"]);
    let o = run(&config, &create);
    expect_code(&o, 2);
    assert!(
        err(&o).contains("durations must be positive"),
        "{}",
        err(&o)
    );
    let mut create = create_args("alice", "x", &["repository:read"]);
    create.extend(["--expires-in", "400d"]);
    let o = run(&config, &create);
    expect_code(&o, 2);
    assert!(
        err(&o).contains("expiry of 400d exceeds [auth] max_lifetime of 365d"),
        "{}",
        err(&o)
    );

    let mk = |name: &str, expires: &str| {
        let mut args = create_args("alice", name, &["repository:read"]);
        args.extend(["--expires-in", expires]);
        let o = run(&config, &args);
        expect_code(&o, 0);
        id_of(out(&o).trim()).to_owned()
    };
    let (active, revoked, expired) = (mk("a", "90d"), mk("r", "90d"), mk("e", "1s"));
    expect_code(&run(&config, &["app-password", "revoke", &revoked]), 0);
    std::thread::sleep(Duration::from_millis(2100));
    for (status, id) in [
        ("active", &active),
        ("revoked", &revoked),
        ("expired", &expired),
    ] {
        let o = run(
            &config,
            &["app-password", "list", "--status", status, "--json"],
        );
        expect_code(&o, 0);
        let ids: Vec<String> = json(&o)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, std::slice::from_ref(id), "{status}");
    }
    let o = run(&config, &["app-password", "list", "--status", "gone"]);
    expect_code(&o, 2);
}
