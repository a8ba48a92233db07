//! `passgate store backup FILE` (DESIGN CLI and "Operations"): a consistent
//! copy of the redb store while serving (through the admin socket) or not;
//! the copy opens as a store and its passwords verify; an existing FILE is
//! never overwritten; a migration is preceded by an automatic copy.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::GENEROUS;
use crate::support::*;

fn builder(backend: &Backend) -> ConfigBuilder {
    let mut b = ConfigBuilder::new(&backend.url());
    b.auth_extra = GENEROUS.to_owned();
    b
}

/// `store backup FILE`: (exit code, stderr).
fn backup(pg: &Passgate, file: &Path) -> (i32, String) {
    let out = pg.cli(&["store", "backup", file.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A second gateway serving the copy at `store` with the same rules.
fn serve_copy(b: &ConfigBuilder, store: &Path) -> Passgate {
    let text = b.render().replace(
        "path = \"data/passgate.redb\"",
        &format!("path = {:?}", store.display().to_string()),
    );
    assert!(text.contains(&store.display().to_string()));
    Passgate::start_text(&text)
}

#[test]
fn a_backup_while_serving_under_load_verifies_every_password_created_before_it() {
    let backend = Backend::start();
    let b = builder(&backend);
    let pg = Arc::new(Passgate::start(&b));
    let before: Vec<(String, String)> = (0..6)
        .map(|i| pg.create(&format!("user{i}"), "laptop", &["repository:read"]))
        .collect();
    // Load during the backup: authenticated requests, and creations.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for (i, (_, pw)) in before.iter().enumerate().take(3) {
        let (pg, stop, served, pw) = (pg.clone(), stop.clone(), served.clone(), pw.clone());
        load.push(std::thread::spawn(move || {
            let user = format!("user{i}");
            while !stop.load(Ordering::Relaxed) {
                let r = get(pg.addr, "/api/x", Some((&user, &pw)));
                assert_eq!(r.status, 200, "{}", r.text());
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let creator = {
        let (pg, stop) = (pg.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                pg.create("busy", &format!("during-{n}"), &["repository:read"]);
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let copy = pg.dir.path().join("backups/copy.redb");
    std::fs::create_dir(copy.parent().unwrap()).unwrap();
    let (code, err) = backup(&pg, &copy);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("backed up"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let created_during = creator.join().unwrap();
    assert!(served.load(Ordering::Relaxed) > 0);
    assert!(created_during > 0, "no creation ran during the backup");
    assert!(pg.wait_log("event=\"backed_up\"", Duration::from_secs(5)));
    // The original keeps serving, and takes new passwords.
    assert_eq!(
        get(pg.addr, "/api/x", Some(("user5", &before[5].1))).status,
        200
    );
    pg.create("after", "laptop", &["repository:read"]);
    // No half-written copy left beside it.
    let names: Vec<_> = std::fs::read_dir(copy.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("copy.redb")]);

    // The copy is a store: a gateway serves it and every password verifies.
    let restored = serve_copy(&b, &copy);
    for (i, (_, pw)) in before.iter().enumerate() {
        let user = format!("user{i}");
        let r = get(restored.addr, "/api/x", Some((&user, pw)));
        assert_eq!(r.status, 200, "{user}: {}", r.text());
    }
    let listed = restored.cli(&["app-password", "list", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(rows.len() >= before.len(), "{rows:?}");
    assert!(
        rows.iter().all(|r| r["user"] != "after"),
        "a password created after the backup is in it"
    );
}

#[test]
fn a_backup_never_overwrites_a_file() {
    let backend = Backend::start();
    let pg = Passgate::start(&builder(&backend));
    pg.create("alice", "laptop", &["repository:read"]);
    let taken = pg.dir.path().join("taken.redb");
    std::fs::write(&taken, b"precious").unwrap();
    let (code, err) = backup(&pg, &taken);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exists; refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(&taken).unwrap(), b"precious");
    // A dangling symlink counts as existing too: nothing is written through it.
    let link = pg.dir.path().join("link.redb");
    std::os::unix::fs::symlink(pg.dir.path().join("target.redb"), &link).unwrap();
    let (code, err) = backup(&pg, &link);
    assert_eq!(code, 1, "{err}");
    assert!(!pg.dir.path().join("target.redb").exists());
}

#[test]
fn an_offline_backup_opens_and_verifies() {
    let backend = Backend::start();
    let b = builder(&backend);
    let mut pg = Passgate::start(&b);
    let (_, pw) = pg.create("alice", "laptop", &["repository:read"]);
    pg.signal("TERM");
    assert_eq!(pg.wait_exit(Duration::from_secs(20)), Some(0));
    let copy = pg.dir.path().join("offline.redb");
    let (code, err) = backup(&pg, &copy);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("backed up 1 app password(s)"), "{err}");
    assert!(err.contains("event=\"backed_up\""), "{err}");
    let (code, err) = backup(&pg, &copy);
    assert_eq!(code, 1, "second backup to the same file: {err}");
    let restored = serve_copy(&b, &copy);
    assert_eq!(
        get(restored.addr, "/api/x", Some(("alice", &pw))).status,
        200
    );
}

#[test]
fn a_postgres_store_is_pointed_to_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let text = ConfigBuilder::new("http://127.0.0.1:9").render().replace(
        "path = \"data/passgate.redb\"",
        "url = \"postgres://postgres@127.0.0.1:5432/passgate_backup_test\"",
    );
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["store", "backup"])
        .arg(dir.path().join("copy"))
        .arg("--config")
        .arg(&config)
        .env_remove("PASSGATE_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!dir.path().join("copy").exists());
}

const META: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");

fn schema_of(file: &Path) -> u64 {
    let db = redb::Database::open(file).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let v = meta.get("schema_version").unwrap().unwrap().value();
    v
}

#[test]
fn a_migration_is_preceded_by_an_automatic_backup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let store = dir.path().join("data/passgate.redb");
    let (_, password) = schema_1_store(&store, None);
    let backend = Backend::start();
    let b = builder(&backend);
    let mut pg = Passgate::start_in(dir, &b);
    assert!(pg.wait_log("before migrating it", Duration::from_secs(5)));
    let copies: Vec<PathBuf> = std::fs::read_dir(pg.dir.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bak"))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = &copies[0];
    let name = copy.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("passgate.redb.v1-20"), "{name}");
    assert!(pg.log_text().contains(&copy.display().to_string()));
    assert_eq!(
        get(pg.addr, "/api/x", Some(("alice", &password))).status,
        200
    );
    pg.signal("TERM");
    assert_eq!(pg.wait_exit(Duration::from_secs(20)), Some(0));
    // The copy is the old store, untouched; the store itself was migrated.
    assert_eq!(schema_of(copy), 1);
    assert_eq!(schema_of(&pg.dir.path().join("data/passgate.redb")), 2);
    // A restart on a current store takes no copy.
    pg.spawn();
    let baks = std::fs::read_dir(pg.dir.path().join("data"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".bak")
        })
        .count();
    assert_eq!(baks, 1);
}

/// With no server, the CLI migrates an old store itself; it has no logger, so
/// it says on stderr where the copy taken before went (issue: "no
/// pre-migration log line when the CLI opens an old store").
#[test]
fn the_cli_says_where_the_copy_before_a_migration_went() {
    let (dir, config) = crate::cli::offline(&ConfigBuilder::new("http://127.0.0.1:9"));
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let store = dir.path().join("data/passgate.redb");
    let (id, _) = schema_1_store(&store, None);
    let out = crate::cli::run(&config, &["app-password", "list", "--json"]);
    crate::cli::expect_code(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    let copies: Vec<PathBuf> = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bak"))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [format!(
            "passgate: note: store schema version 1 is older than 2: copied the store to {} before migrating it",
            copies[0].display()
        )],
        "one line, naming the copy"
    );
    assert_eq!(schema_of(&copies[0]), 1);
    assert_eq!(schema_of(&store), 2);
    // The store is current now: nothing to copy, nothing said.
    let out = crate::cli::run(&config, &["app-password", "list", "--json"]);
    crate::cli::expect_code(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
