//! The store's contract, one body per behaviour run against every backend
//! (`backend_tests!` below), then what only the redb file has (locking,
//! file modes, the raw file).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;

mod pg;

use super::redb::{file_format, META, MIGRATIONS, RECORDS, SCHEMA_KEY, SCHEMA_VERSION, USER_INDEX};
use super::*;

const NOW: u64 = 1_700_000_000;

fn rec(id: &str, user: &str, name: &str, created_at: u64) -> AppPassword {
    AppPassword {
        id: id.to_owned(),
        user: user.to_owned(),
        name: name.to_owned(),
        scopes: vec!["repo:read".to_owned(), "repo:write".to_owned()],
        hash: format!("$argon2id$v=19$m=19456,t=2,p=1$fakesalt{id}$fakehash{id}"),
        created_at,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        last_used_addr: None,
        last_used: Vec::new(),
        repos: Vec::new(),
        allow_from: Vec::new(),
        rotated_from: None,
        rotated_to: None,
    }
}

/// A store under test and what keeps it alive.
struct Fixture {
    store: Arc<Store>,
    place: Place,
}

/// Where a fixture's data lives, so that it can be opened again.
enum Place {
    Redb {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    Postgres(pg::TestDb),
}

impl Fixture {
    fn redb() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        Fixture {
            store: Arc::new(Store::open(&path).unwrap()),
            place: Place::Redb { path, _dir: dir },
        }
    }

    /// A store in a fresh database, or `None` (skipped, with a notice) when
    /// no PostgreSQL server answers and `PASSGATE_REQUIRE_PG` is not set.
    fn postgres() -> Option<Fixture> {
        let db = pg::TestDb::create()?;
        Some(Fixture {
            store: Arc::new(Store::connect(&db.url).unwrap()),
            place: Place::Postgres(db),
        })
    }

    /// Closes the store and opens the same data again.
    fn reopen(self) -> Fixture {
        let Fixture { store, place } = self;
        drop(Arc::into_inner(store).expect("the test holds no other handle"));
        let store = match &place {
            Place::Redb { path, .. } => Store::open(path).unwrap(),
            Place::Postgres(db) => Store::connect(&db.url).unwrap(),
        };
        Fixture {
            store: Arc::new(store),
            place,
        }
    }
}

/// Runs each named `fn(Fixture)` against every backend: `redb::name`, ….
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Fixture::redb());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(fx) = super::Fixture::postgres() {
                        super::$name(fx);
                    }
                }
            )*
        }
    };
}

backend_tests!(
    round_trip_insert_get_list,
    list_orders_by_user_created_at_id_and_filters_by_user,
    duplicate_id_refused,
    duplicate_active_name_refused_but_allowed_after_revoke_or_expiry,
    revoke_now_already_not_found,
    revoke_user_revokes_only_unrevoked_of_that_user,
    record_usage_batch_is_monotonic_and_skips_unknown,
    reopen_after_drop_keeps_everything,
    concurrent_inserts_with_distinct_ids_all_land,
    concurrent_inserts_with_same_name_exactly_one_wins,
    sessions_expire_are_taken_once_and_purged,
    last_used_keeps_five_distinct_addresses_newest_first,
    rotate_links_the_lineage_and_revokes_at_once_or_later,
    rotate_refuses_a_revoked_password_and_keeps_names_unique,
    a_password_in_its_grace_has_handed_its_name_on,
    limits_and_lineage_survive_a_reopen,
    record_usage_merges_as_record_use_does,
    count_by_status_agrees_with_each_record_status,
);

fn sessions_expire_are_taken_once_and_purged(fx: Fixture) {
    let store = &*fx.store;
    assert_eq!(store.session("k", 100).unwrap(), None);
    store.put_session("k", b"alice", 200).unwrap();
    store.put_session("old", b"bob", 150).unwrap();
    store.put_session("old", b"bob2", 150).unwrap(); // replaces
    assert_eq!(
        store.session("old", 100).unwrap().as_deref(),
        Some(&b"bob2"[..])
    );
    assert_eq!(
        store.session("k", 199).unwrap().as_deref(),
        Some(&b"alice"[..])
    );
    assert_eq!(store.session("k", 200).unwrap(), None);
    assert_eq!(store.purge_sessions(160).unwrap(), 1);
    let fx = fx.reopen();
    let store = &*fx.store;
    assert_eq!(
        store.take_session("k", 100).unwrap().as_deref(),
        Some(&b"alice"[..])
    );
    assert_eq!(store.take_session("k", 100).unwrap(), None);
    store.put_session("x", b"", 50).unwrap();
    assert_eq!(store.take_session("x", 100).unwrap(), None);
    assert!(!store.delete_session("x").unwrap());
    store.put_session("y", b"", 500).unwrap();
    assert!(store.delete_session("y").unwrap());
}

fn open_tmp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.redb")).unwrap();
    (dir, store)
}

fn ids(recs: &[AppPassword]) -> Vec<&str> {
    recs.iter().map(|r| r.id.as_str()).collect()
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<StoreError>();
}

#[test]
fn migrations_cover_every_version() {
    assert_eq!(MIGRATIONS.len() as u64, SCHEMA_VERSION - 1);
}

#[test]
fn status_and_display() {
    let mut r = rec("aaaaaaaaaaaa", "alice", "laptop", NOW);
    assert_eq!(r.status(NOW), Status::Active);
    r.expires_at = Some(NOW + 10);
    assert_eq!(r.status(NOW + 9), Status::Active);
    assert_eq!(r.status(NOW + 10), Status::Expired);
    r.revoked_at = Some(NOW + 1);
    assert_eq!(r.status(NOW + 10), Status::Revoked);
    assert_eq!(r.status(NOW + 1), Status::Revoked);
    // A revocation scheduled for later (a rotation's grace) is not one yet.
    assert_eq!(r.status(NOW), Status::Active);
    assert_eq!(r.stops_at(), Some(NOW + 1));
    assert_eq!(Status::Active.to_string(), "active");
    assert_eq!(Status::Expired.to_string(), "expired");
    assert_eq!(Status::Revoked.to_string(), "revoked");
}

fn round_trip_insert_get_list(fx: Fixture) {
    let store = &*fx.store;
    let mut r = rec("aaaaaaaaaaaa", "alice", "laptop", NOW);
    r.expires_at = Some(NOW + 3600);
    store.insert(&r, NOW).unwrap();
    assert_eq!(store.get("aaaaaaaaaaaa").unwrap(), Some(r.clone()));
    assert_eq!(store.get("bbbbbbbbbbbb").unwrap(), None);
    assert_eq!(store.list(None).unwrap(), vec![r.clone()]);
    assert_eq!(store.list(Some("alice")).unwrap(), vec![r]);
    assert!(store.list(Some("bob")).unwrap().is_empty());
}

fn list_orders_by_user_created_at_id_and_filters_by_user(fx: Fixture) {
    let store = &*fx.store;
    // Inserted out of order on purpose.
    for r in [
        rec("id-c", "bob", "b1", 20),
        rec("id-z", "alice", "a3", 10),
        rec("id-b", "alice", "a2", 30),
        rec("id-a", "alice", "a1", 10),
        rec("id-y", "bob", "b2", 5),
    ] {
        store.insert(&r, NOW).unwrap();
    }
    let all = store.list(None).unwrap();
    assert_eq!(ids(&all), ["id-a", "id-z", "id-b", "id-y", "id-c"]);
    let alice = store.list(Some("alice")).unwrap();
    assert_eq!(ids(&alice), ["id-a", "id-z", "id-b"]);
    let bob = store.list(Some("bob")).unwrap();
    assert_eq!(ids(&bob), ["id-y", "id-c"]);
}

fn duplicate_id_refused(fx: Fixture) {
    let store = &*fx.store;
    store
        .insert(&rec("aaaaaaaaaaaa", "alice", "laptop", NOW), NOW)
        .unwrap();
    let err = store
        .insert(&rec("aaaaaaaaaaaa", "bob", "desktop", NOW), NOW)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateId { id } if id == "aaaaaaaaaaaa"),
        "{err:?}"
    );
    assert_eq!(store.list(None).unwrap().len(), 1);
    assert!(store.list(Some("bob")).unwrap().is_empty());
}

fn duplicate_active_name_refused_but_allowed_after_revoke_or_expiry(fx: Fixture) {
    let store = &*fx.store;
    store
        .insert(&rec("id-1", "alice", "laptop", NOW), NOW)
        .unwrap();
    let err = store
        .insert(&rec("id-2", "alice", "laptop", NOW), NOW)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateName { user, name } if user == "alice" && name == "laptop"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "user alice already has an active app password named \"laptop\""
    );
    // Another user may use the same name.
    store
        .insert(&rec("id-3", "bob", "laptop", NOW), NOW)
        .unwrap();

    // Revoked: the name is free again.
    assert!(matches!(
        store.revoke("id-1", NOW + 1).unwrap(),
        Revoked::Now(_)
    ));
    store
        .insert(&rec("id-2", "alice", "laptop", NOW + 2), NOW + 2)
        .unwrap();

    // Expired: free again once `now` has reached the expiry.
    let mut expiring = rec("id-4", "alice", "ci", NOW);
    expiring.expires_at = Some(NOW + 100);
    store.insert(&expiring, NOW).unwrap();
    let err = store
        .insert(&rec("id-5", "alice", "ci", NOW + 99), NOW + 99)
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateName { .. }), "{err:?}");
    store
        .insert(&rec("id-5", "alice", "ci", NOW + 100), NOW + 100)
        .unwrap();
    assert_eq!(store.list(Some("alice")).unwrap().len(), 4);
}

fn revoke_now_already_not_found(fx: Fixture) {
    let store = &*fx.store;
    let r = rec("aaaaaaaaaaaa", "alice", "laptop", NOW);
    store.insert(&r, NOW).unwrap();
    let Revoked::Now(revoked) = store.revoke("aaaaaaaaaaaa", NOW + 5).unwrap() else {
        panic!("expected Revoked::Now");
    };
    assert_eq!(revoked.revoked_at, Some(NOW + 5));
    assert_eq!(revoked.status(NOW + 5), Status::Revoked);
    assert_eq!(store.get("aaaaaaaaaaaa").unwrap(), Some(*revoked));
    assert_eq!(
        store.revoke("aaaaaaaaaaaa", NOW + 9).unwrap(),
        Revoked::Already {
            revoked_at: NOW + 5
        }
    );
    assert_eq!(store.revoke("nope", NOW).unwrap(), Revoked::NotFound);
    assert_eq!(
        store.get("aaaaaaaaaaaa").unwrap().unwrap().revoked_at,
        Some(NOW + 5)
    );
}

fn revoke_user_revokes_only_unrevoked_of_that_user(fx: Fixture) {
    let store = &*fx.store;
    store.insert(&rec("id-b", "alice", "one", 20), NOW).unwrap();
    store.insert(&rec("id-a", "alice", "two", 10), NOW).unwrap();
    let mut expired = rec("id-c", "alice", "three", 5);
    expired.expires_at = Some(NOW - 1);
    store.insert(&expired, NOW).unwrap();
    store
        .insert(&rec("id-d", "alice", "four", 30), NOW)
        .unwrap();
    store.insert(&rec("id-e", "bob", "one", 10), NOW).unwrap();
    store.revoke("id-d", NOW).unwrap();

    assert_eq!(
        store.revoke_user("alice", NOW + 1).unwrap(),
        ["id-c", "id-a", "id-b"]
    );
    for r in store.list(Some("alice")).unwrap() {
        let expected = if r.id == "id-d" { NOW } else { NOW + 1 };
        assert_eq!(r.revoked_at, Some(expected), "{}", r.id);
    }
    assert_eq!(store.get("id-e").unwrap().unwrap().revoked_at, None);
    assert!(store.revoke_user("alice", NOW + 2).unwrap().is_empty());
    assert!(store.revoke_user("nobody", NOW + 2).unwrap().is_empty());
}

fn record_usage_batch_is_monotonic_and_skips_unknown(fx: Fixture) {
    let store = &*fx.store;
    store
        .insert(&rec("id-1", "alice", "one", NOW), NOW)
        .unwrap();
    store
        .insert(&rec("id-2", "alice", "two", NOW), NOW)
        .unwrap();
    let usage = |id: &str, at: u64, addr: &str| Usage {
        id: id.to_owned(),
        at,
        addr: addr.to_owned(),
    };
    store
        .record_usage(&[
            usage("id-1", NOW + 10, "10.0.0.1"),
            usage("unknown", NOW + 10, "10.0.0.9"),
            usage("id-1", NOW + 5, "10.0.0.2"), // older: ignored
            usage("id-2", NOW + 7, "192.0.2.7"),
        ])
        .unwrap();
    let one = store.get("id-1").unwrap().unwrap();
    assert_eq!(one.last_used_at, Some(NOW + 10));
    assert_eq!(one.last_used_addr.as_deref(), Some("10.0.0.1"));
    let two = store.get("id-2").unwrap().unwrap();
    assert_eq!(two.last_used_at, Some(NOW + 7));
    assert_eq!(two.last_used_addr.as_deref(), Some("192.0.2.7"));
    assert_eq!(store.get("unknown").unwrap(), None);

    // A later batch with an older time does not move it backwards.
    store
        .record_usage(&[usage("id-1", NOW + 1, "10.0.0.3")])
        .unwrap();
    let one = store.get("id-1").unwrap().unwrap();
    assert_eq!(one.last_used_at, Some(NOW + 10));
    assert_eq!(one.last_used_addr.as_deref(), Some("10.0.0.1"));
    store
        .record_usage(&[usage("id-1", NOW + 11, "10.0.0.4")])
        .unwrap();
    let one = store.get("id-1").unwrap().unwrap();
    assert_eq!(one.last_used_at, Some(NOW + 11));
    assert_eq!(one.last_used_addr.as_deref(), Some("10.0.0.4"));
    store.record_usage(&[]).unwrap();
}

fn reopen_after_drop_keeps_everything(fx: Fixture) {
    let store = &*fx.store;
    store.insert(&rec("id-1", "alice", "one", 1), NOW).unwrap();
    store.insert(&rec("id-2", "bob", "two", 2), NOW).unwrap();
    store.revoke("id-2", NOW).unwrap();
    store
        .record_usage(&[Usage {
            id: "id-1".to_owned(),
            at: NOW,
            addr: "::1".to_owned(),
        }])
        .unwrap();
    let before = store.list(None).unwrap();

    let fx = fx.reopen();
    let store = &*fx.store;
    assert_eq!(store.list(None).unwrap(), before);
    assert_eq!(ids(&store.list(Some("bob")).unwrap()), ["id-2"]);
    // Uniqueness survives the reopen too.
    let err = store
        .insert(&rec("id-3", "alice", "one", 3), NOW)
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateName { .. }), "{err:?}");
}

#[test]
fn schema_version_written_and_unknown_version_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(Store::open(&path).unwrap());
    {
        let db = ::redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        assert_eq!(
            meta.get(SCHEMA_KEY).unwrap().unwrap().value(),
            SCHEMA_VERSION
        );
    }
    {
        let db = ::redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_KEY, 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::UnknownSchema {
                found: 99,
                supported: SCHEMA_VERSION
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("schema version 99"), "{err}");
    // The refused open changed nothing.
    let db = ::redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    assert_eq!(meta.get(SCHEMA_KEY).unwrap().unwrap().value(), 99);
}

#[test]
fn creates_parent_dir_0700_and_file_0600() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("state").join("passgate");
    let path = parent.join("store.redb");
    drop(Store::open(&path).unwrap());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&parent), 0o700);
    assert_eq!(mode(&dir.path().join("state")), 0o700);
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn path_under_a_regular_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let path = file.join("sub").join("store.redb");
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::Open { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn a_file_that_is_not_redb_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    std::fs::write(&path, b"[server]\nlisten = \"127.0.0.1:8080\"\n").unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::NotAStore { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a passgate store"), "{err}");
    // Left untouched.
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"[server]\nlisten = \"127.0.0.1:8080\"\n"
    );
}

#[test]
fn second_open_is_locked() {
    let (dir, _store) = open_tmp();
    let path = dir.path().join("store.redb");
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::Locked { path: p } if *p == path),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("passgate serve") && msg.contains(&*path.to_string_lossy()),
        "{msg}"
    );
}

#[test]
fn debug_redacts_the_hash() {
    let r = rec("aaaaaaaaaaaa", "alice", "laptop", NOW);
    let debug = format!("{r:?}");
    assert!(!debug.contains(&r.hash), "{debug}");
    assert!(!debug.contains("argon2"), "{debug}");
    assert!(
        debug.contains("[redacted]") && debug.contains("laptop"),
        "{debug}"
    );
    let debug = format!("{:?}", Revoked::Now(Box::new(r.clone())));
    assert!(!debug.contains(&r.hash), "{debug}");
}

#[test]
fn file_holds_the_hash_never_the_secret() {
    // The caller hashes; the store gets only the PHC string.
    let secret = "pg_app_Sup3rS3cretValueNeverStored";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = Store::open(&path).unwrap();
    let mut r = rec("aaaaaaaaaaaa", "alice", "laptop", NOW);
    r.hash = "$argon2id$v=19$m=19456,t=2,p=1$ZmFrZXNhbHQ$ZmFrZWhhc2hmYWtlaGFzaA".to_owned();
    store.insert(&r, NOW).unwrap();
    drop(store);

    let bytes = std::fs::read(&path).unwrap();
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        contains(&r.hash),
        "the stored record should be visible in the raw file"
    );
    assert!(contains("laptop"));
    assert!(!contains(secret));
}

fn concurrent_inserts_with_distinct_ids_all_land(fx: Fixture) {
    let store = fx.store.clone();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for i in 0..50 {
                    let r = rec(
                        &format!("t{t}-{i:03}"),
                        &format!("user{t}"),
                        &format!("n{i}"),
                        i,
                    );
                    store.insert(&r, NOW).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(store.list(None).unwrap().len(), 400);
    for t in 0..8 {
        assert_eq!(store.list(Some(&format!("user{t}"))).unwrap().len(), 50);
    }
}

fn concurrent_inserts_with_same_name_exactly_one_wins(fx: Fixture) {
    let store = fx.store.clone();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                store.insert(&rec(&format!("id-{t}"), "alice", "laptop", NOW), NOW)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(r, StoreError::DuplicateName { .. }), "{r:?}");
    }
    assert_eq!(store.list(Some("alice")).unwrap().len(), 1);
}

/// Lengthens a closed redb file by `pages` pages of zeros, its header untouched.
fn lengthen(path: &Path, pages: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len + pages * 4096).unwrap();
}

/// A `kill -9` between redb's crash-repair commit, which writes the header
/// marked clean, and the trimming of the file to the length that header
/// records leaves a clean header on a longer file (found by killing
/// `passgate app-password create` at each write and sync in turn under
/// strace). redb 2.6 panicked opening that in file format v2
/// (`!self.needs_recovery` in `page_manager.rs`), failing the next command;
/// the store is v3 now, which reconciles the length and keeps everything.
#[test]
fn redb_store_longer_than_its_clean_header_opens_and_keeps_everything() {
    let (dir, store) = open_tmp();
    let path = dir.path().join("store.redb");
    for i in 0..3 {
        let name = format!("n{i}");
        store
            .insert(&rec(&format!("id-{i}"), "alice", &name, NOW), NOW)
            .unwrap();
    }
    let before = store.list(None).unwrap();
    drop(store);
    lengthen(&path, 64);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.list(None).unwrap(), before);
    store.insert(&rec("id-3", "alice", "n3", NOW), NOW).unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.list(None).unwrap().len(), 4);
}

/// A store redb wrote in file format v2 (every store before this fix) is
/// moved to v3 on open, keeping its records, and then survives the state
/// above too.
#[test]
fn redb_format_v2_store_moves_to_v3_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.redb");
    {
        let db = ::redb::Builder::new().create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_KEY, SCHEMA_VERSION)
            .unwrap();
        txn.commit().unwrap();
    }
    assert_eq!(file_format(&path).unwrap(), 2, "the fixture is format v2");
    let store = Store::open(&path).unwrap();
    store.insert(&rec("id-0", "alice", "a", NOW), NOW).unwrap();
    drop(store);
    assert_eq!(file_format(&path).unwrap(), 3);
    lengthen(&path, 64);
    let store = Store::open(&path).unwrap();
    assert_eq!(ids(&store.list(None).unwrap()), ["id-0"]);
    store.insert(&rec("id-1", "alice", "b", NOW), NOW).unwrap();
    drop(store);
    assert_eq!(Store::open(&path).unwrap().list(None).unwrap().len(), 2);
}

/// The same state in a format v2 store, as an earlier passgate (or this one
/// killed while redb repaired a v2 store it was about to move to v3) left
/// it: redb repairs it, and it moves to v3 with its records, where redb
/// 2.6 panicked at `page_manager.rs:851`.
#[test]
fn redb_format_v2_store_longer_than_its_clean_header_opens_and_moves_to_v3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.redb");
    {
        let db = ::redb::Builder::new().create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(SCHEMA_KEY, SCHEMA_VERSION).unwrap();
            let record = serde_json::to_vec(&rec("id-0", "alice", "a", NOW)).unwrap();
            let mut records = txn.open_table(RECORDS).unwrap();
            records.insert("id-0", record.as_slice()).unwrap();
            let mut index = txn.open_multimap_table(USER_INDEX).unwrap();
            index.insert("alice", "id-0").unwrap();
        }
        txn.commit().unwrap();
    }
    assert_eq!(file_format(&path).unwrap(), 2, "the fixture is format v2");
    lengthen(&path, 64);
    let store = Store::open(&path).unwrap();
    assert_eq!(ids(&store.list(Some("alice")).unwrap()), ["id-0"]);
    drop(store);
    assert_eq!(file_format(&path).unwrap(), 3);
}

/// A new store appears whole or not at all: redb sizes a new file, then
/// writes its header, and only last its magic number, so a `kill -9` in
/// between left a file every later command refused as "not a redb
/// database". Watched from a second thread while stores are created.
#[test]
fn redb_new_store_file_never_appears_half_written() {
    const MAGIC: &[u8] = b"redb\x1a\x0a\xa9\x0d\x0a";
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let done = std::sync::atomic::AtomicBool::new(false);
        let half_written = thread::scope(|s| {
            let watcher = s.spawn(|| {
                use std::io::Read;
                let mut head = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    head.clear();
                    if let Ok(f) = std::fs::File::open(&path) {
                        f.take(MAGIC.len() as u64).read_to_end(&mut head).unwrap();
                        if !head.is_empty() && head != MAGIC {
                            return true;
                        }
                    }
                }
                false
            });
            drop(Store::open(&path).unwrap());
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            watcher.join().unwrap()
        });
        assert!(
            !half_written,
            "{} was visible without redb's header",
            path.display()
        );
    }
}

#[test]
fn redb_user_list_goes_through_the_index() {
    let (_dir, store) = open_tmp();
    let Backend::Redb(redb) = &store.backend else {
        unreachable!("open_tmp opens redb");
    };
    // An index entry with no record is reported, not silently skipped.
    {
        let txn = redb.db.begin_write().unwrap();
        {
            let mut index = txn.open_multimap_table(USER_INDEX).unwrap();
            index.insert("carol", "ghost").unwrap();
        }
        txn.commit().unwrap();
    }
    let err = store.list(Some("carol")).unwrap_err();
    assert!(
        matches!(&err, StoreError::IndexMismatch { user, id } if user == "carol" && id == "ghost"),
        "{err:?}"
    );
}

#[test]
fn postgres_gateways_starting_together_migrate_once() {
    let Some(db) = pg::TestDb::create() else {
        return;
    };
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (url, barrier) = (db.url.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                Store::connect(&url).map(drop)
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let versions = db.query_i64("SELECT count(*) FROM passgate_schema");
    assert_eq!(versions, super::postgres::MIGRATION_COUNT as i64);
}

#[test]
fn postgres_refuses_a_newer_schema() {
    let Some(db) = pg::TestDb::create() else {
        return;
    };
    drop(Store::connect(&db.url).unwrap());
    db.execute("INSERT INTO passgate_schema (version) VALUES (99)");
    let err = Store::connect(&db.url).unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownSchema { found: 99, .. }),
        "{err:?}"
    );
}

/// A PostgreSQL fixture whose store is watched by a sink that reports each
/// change as a line ("revoked ID", "resynced"), a second store on the same
/// database to make changes through, and the lines, read past the first
/// "resynced". `None` (skipped) without a server, as [`Fixture::postgres`].
fn watched_postgres() -> Option<(Fixture, Store, std::sync::mpsc::Receiver<String>)> {
    use std::sync::mpsc;
    struct Sink(std::sync::Mutex<mpsc::Sender<String>>);
    impl Changes for Sink {
        fn revoked(&self, id: &str) {
            let _ = self.0.lock().unwrap().send(format!("revoked {id}"));
        }
        fn resynced(&self) {
            let _ = self.0.lock().unwrap().send("resynced".to_owned());
        }
    }
    let fx = Fixture::postgres()?;
    let Place::Postgres(db) = &fx.place else {
        unreachable!()
    };
    let other = Store::connect(&db.url).unwrap();
    let (tx, rx) = mpsc::channel();
    fx.store.watch(Arc::new(Sink(std::sync::Mutex::new(tx))));
    let wait = std::time::Duration::from_secs(10);
    assert_eq!(rx.recv_timeout(wait).unwrap(), "resynced");
    Some((fx, other, rx))
}

#[test]
fn postgres_revocations_reach_a_watching_store() {
    let Some((fx, other, rx)) = watched_postgres() else {
        return;
    };
    let wait = std::time::Duration::from_secs(10);
    assert!(fx.store.ready());
    other
        .insert(&rec("id-1", "alice", "one", NOW), NOW)
        .unwrap();
    other
        .insert(&rec("id-2", "alice", "two", NOW), NOW)
        .unwrap();
    other
        .insert(&rec("id-3", "alice", "three", NOW), NOW)
        .unwrap();
    other.revoke("id-1", NOW).unwrap();
    assert_eq!(rx.recv_timeout(wait).unwrap(), "revoked id-1");
    other.revoke_user("alice", NOW).unwrap();
    let mut rest = [
        rx.recv_timeout(wait).unwrap(),
        rx.recv_timeout(wait).unwrap(),
    ];
    rest.sort();
    assert_eq!(rest, ["revoked id-2", "revoked id-3"]);
    // Revoking again changes nothing and tells nobody.
    other.revoke("id-1", NOW + 1).unwrap();
    assert!(rx
        .recv_timeout(std::time::Duration::from_millis(300))
        .is_err());
}

fn last_used_keeps_five_distinct_addresses_newest_first(fx: Fixture) {
    let store = &*fx.store;
    store
        .insert(&rec("id-1", "alice", "one", NOW), NOW)
        .unwrap();
    let usage = |at: u64, addr: &str| Usage {
        id: "id-1".to_owned(),
        at,
        addr: addr.to_owned(),
    };
    let batch: Vec<Usage> = (0..7u64)
        .map(|i| usage(NOW + i, &format!("10.0.0.{i}")))
        .chain([usage(NOW + 20, "10.0.0.3"), usage(NOW + 1, "10.0.0.6")])
        .collect();
    store.record_usage(&batch).unwrap();
    let one = store.get("id-1").unwrap().unwrap();
    let got: Vec<(&str, u64)> = one
        .last_used
        .iter()
        .map(|u| (u.addr.as_str(), u.at))
        .collect();
    assert_eq!(
        got,
        [
            ("10.0.0.3", NOW + 20),
            ("10.0.0.6", NOW + 6),
            ("10.0.0.5", NOW + 5),
            ("10.0.0.4", NOW + 4),
            ("10.0.0.2", NOW + 2),
        ]
    );
    assert_eq!(one.last_used_at, Some(NOW + 20));
    assert_eq!(one.last_used_addr.as_deref(), Some("10.0.0.3"));
}

fn rotate_links_the_lineage_and_revokes_at_once_or_later(fx: Fixture) {
    let store = &*fx.store;
    let mut old = rec("old-id", "alice", "ci", NOW);
    old.repos = vec!["alice/a".into()];
    store.insert(&old, NOW).unwrap();
    let mut next = rec("next-id", "alice", "ci", NOW + 5);
    next.rotated_from = Some("old-id".into());
    let done = store.rotate("old-id", &next, NOW + 5, NOW + 65).unwrap();
    let Rotated::Now(after) = done else {
        panic!("{done:?}")
    };
    assert_eq!(after.rotated_to.as_deref(), Some("next-id"));
    assert_eq!(after.status(NOW + 64), Status::Active, "in its grace");
    assert_eq!(after.status(NOW + 65), Status::Revoked);
    assert_eq!(store.list(Some("alice")).unwrap().len(), 2);
    assert_eq!(
        store
            .rotate("old-id", &rec("x", "alice", "ci", NOW), NOW + 6, NOW + 6)
            .unwrap(),
        Rotated::AlreadyRotated("next-id".into())
    );
    // The successor rotates at once; the lineage's current one is the newest.
    let third = rec("third-id", "alice", "ci", NOW + 7);
    assert!(matches!(
        store.rotate("next-id", &third, NOW + 7, NOW + 7).unwrap(),
        Rotated::Now(_)
    ));
    assert_eq!(
        store.get("next-id").unwrap().unwrap().status(NOW + 7),
        Status::Revoked
    );
    for id in ["old-id", "next-id", "third-id"] {
        assert_eq!(store.lineage_current(id).unwrap().unwrap().id, "third-id");
    }
    assert_eq!(store.lineage_current("nope").unwrap(), None);
    assert_eq!(
        store
            .rotate("nope", &rec("y", "alice", "ci", NOW), NOW, NOW)
            .unwrap(),
        Rotated::NotFound
    );
    // Revoking a password in its grace revokes it now.
    let mut graced = rec("grace-id", "bob", "ci", NOW);
    graced.revoked_at = Some(NOW + 100);
    store.insert(&graced, NOW).unwrap();
    assert!(matches!(
        store.revoke("grace-id", NOW + 1).unwrap(),
        Revoked::Now(_)
    ));
    assert_eq!(
        store.get("grace-id").unwrap().unwrap().revoked_at,
        Some(NOW + 1)
    );
}

fn rotate_refuses_a_revoked_password_and_keeps_names_unique(fx: Fixture) {
    let store = &*fx.store;
    store
        .insert(&rec("old-id", "alice", "ci", NOW), NOW)
        .unwrap();
    store
        .insert(&rec("other-id", "alice", "other", NOW), NOW)
        .unwrap();
    let mut clash = rec("new-id", "alice", "other", NOW);
    clash.rotated_from = Some("old-id".into());
    assert!(matches!(
        store.rotate("old-id", &clash, NOW, NOW),
        Err(StoreError::DuplicateName { .. })
    ));
    assert_eq!(store.get("new-id").unwrap(), None, "nothing half-done");
    store.revoke("old-id", NOW).unwrap();
    assert_eq!(
        store
            .rotate("old-id", &rec("n2", "alice", "ci", NOW), NOW, NOW)
            .unwrap(),
        Rotated::NotActive(Status::Revoked)
    );
}

/// The name rule of a rotation's grace: the old password still works, but
/// its name belongs to the successor; revoking everything of the user
/// revokes the graced one now.
fn a_password_in_its_grace_has_handed_its_name_on(fx: Fixture) {
    let store = &*fx.store;
    store
        .insert(&rec("old-id", "alice", "ci", NOW), NOW)
        .unwrap();
    let mut next = rec("next-id", "alice", "ci", NOW);
    next.rotated_from = Some("old-id".into());
    assert!(matches!(
        store.rotate("old-id", &next, NOW, NOW + 3600).unwrap(),
        Rotated::Now(_)
    ));
    // The successor holds the name: a third "ci" is refused.
    assert!(matches!(
        store.insert(&rec("third", "alice", "ci", NOW + 1), NOW + 1),
        Err(StoreError::DuplicateName { .. })
    ));
    // Once the successor is revoked, the name is free although the old
    // one is still in its grace.
    store.revoke("next-id", NOW + 2).unwrap();
    assert_eq!(
        store.get("old-id").unwrap().unwrap().status(NOW + 2),
        Status::Active
    );
    store
        .insert(&rec("fourth", "alice", "ci", NOW + 3), NOW + 3)
        .unwrap();
    // Rotating a password in its grace again is refused: it was rotated.
    assert_eq!(
        store
            .rotate(
                "old-id",
                &rec("fifth", "alice", "ci", NOW + 4),
                NOW + 4,
                NOW + 4
            )
            .unwrap(),
        Rotated::AlreadyRotated("next-id".into())
    );
    // revoke_user revokes the graced one at once, and only what was not
    // yet revoked.
    let revoked = store.revoke_user("alice", NOW + 5).unwrap();
    assert_eq!(revoked, ["old-id", "fourth"]);
    assert_eq!(
        store.get("old-id").unwrap().unwrap().revoked_at,
        Some(NOW + 5)
    );
}

/// Everything #14 added to a record comes back after a reopen: limits, the
/// address list, the lineage both ways and a future revocation.
fn limits_and_lineage_survive_a_reopen(fx: Fixture) {
    let mut old = rec("old-id", "alice", "ci", NOW);
    old.repos = vec!["alice/a".into(), "bob/*".into()];
    old.allow_from = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    old.expires_at = Some(NOW + 86_400);
    fx.store.insert(&old, NOW).unwrap();
    fx.store
        .record_usage(&[Usage {
            id: "old-id".into(),
            at: NOW + 1,
            addr: "10.1.2.3".into(),
        }])
        .unwrap();
    let mut next = old.clone();
    next.id = "next-id".into();
    next.hash.push('2');
    next.rotated_from = Some("old-id".into());
    next.last_used.clear();
    next.last_used_at = None;
    next.last_used_addr = None;
    fx.store.rotate("old-id", &next, NOW + 2, NOW + 62).unwrap();
    let before = fx.store.list(None).unwrap();
    let fx = fx.reopen();
    let after = fx.store.list(None).unwrap();
    assert_eq!(before, after);
    let old = fx.store.get("old-id").unwrap().unwrap();
    assert_eq!(old.repos, ["alice/a", "bob/*"]);
    assert_eq!(old.allow_from.len(), 2);
    assert_eq!(old.last_used.len(), 1);
    assert_eq!(old.rotated_to.as_deref(), Some("next-id"));
    assert_eq!(old.revoked_at, Some(NOW + 62));
    let next = fx.store.get("next-id").unwrap().unwrap();
    assert_eq!(next.rotated_from.as_deref(), Some("old-id"));
    assert_eq!(next.repos, ["alice/a", "bob/*"]);
}

/// A store as schema version 1 wrote it: records without limits, lineage
/// or an address list (the JSON layout of that release, written by hand).
#[test]
fn a_version_1_store_opens_and_its_records_mean_no_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.redb");
    {
        let db = ::redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(SCHEMA_KEY, 1).unwrap();
            let mut records = txn.open_table(RECORDS).unwrap();
            let v1 = r#"{"id":"aaaaaaaaaaaa","user":"alice","name":"laptop","scopes":["repository:read"],"hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA","created_at":1700000000,"expires_at":null,"revoked_at":null,"last_used_at":1700000100,"last_used_addr":"192.0.2.1"}"#;
            records.insert("aaaaaaaaaaaa", v1.as_bytes()).unwrap();
            let unused = r#"{"id":"bbbbbbbbbbbb","user":"alice","name":"other","scopes":["repository:read"],"hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA","created_at":1700000000,"expires_at":null,"revoked_at":null,"last_used_at":null,"last_used_addr":null}"#;
            records.insert("bbbbbbbbbbbb", unused.as_bytes()).unwrap();
            let mut index = txn.open_multimap_table(USER_INDEX).unwrap();
            index.insert("alice", "aaaaaaaaaaaa").unwrap();
            index.insert("alice", "bbbbbbbbbbbb").unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    let r = store.get("aaaaaaaaaaaa").unwrap().unwrap();
    assert!(r.repos.is_empty() && r.allow_from.is_empty());
    assert_eq!(r.rotated_from, None);
    assert_eq!(
        r.last_used,
        [LastUse {
            addr: "192.0.2.1".into(),
            at: 1_700_000_100
        }]
    );
    assert_eq!(r.status(NOW), Status::Active);
    assert!(store
        .get("bbbbbbbbbbbb")
        .unwrap()
        .unwrap()
        .last_used
        .is_empty());
    drop(store);
    let db = ::redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    assert_eq!(
        meta.get(SCHEMA_KEY).unwrap().unwrap().value(),
        SCHEMA_VERSION
    );
}

#[test]
fn postgres_rotations_reach_a_watching_store() {
    let Some((fx, other, rx)) = watched_postgres() else {
        return;
    };
    let wait = std::time::Duration::from_secs(10);
    other.insert(&rec("a1", "alice", "a", NOW), NOW).unwrap();
    other.insert(&rec("b1", "alice", "b", NOW), NOW).unwrap();
    // At once, and with a grace: both tell the other gateways, which then
    // read the (future) revocation time.
    other
        .rotate("a1", &rec("a2", "alice", "a", NOW), NOW, NOW)
        .unwrap();
    assert_eq!(rx.recv_timeout(wait).unwrap(), "revoked a1");
    other
        .rotate("b1", &rec("b2", "alice", "b", NOW), NOW, NOW + 60)
        .unwrap();
    assert_eq!(rx.recv_timeout(wait).unwrap(), "revoked b1");
    assert_eq!(
        fx.store.get("b1").unwrap().unwrap().revoked_at,
        Some(NOW + 60)
    );
    // A refused rotation tells nobody.
    assert!(matches!(
        other.rotate("a1", &rec("a3", "alice", "a", NOW), NOW, NOW),
        Ok(Rotated::AlreadyRotated(_))
    ));
    assert!(rx
        .recv_timeout(std::time::Duration::from_millis(300))
        .is_err());
}

/// A database at schema version 2 (before the lineage columns), holding a
/// record `store copy` brought in with a lineage in its JSON: the
/// migration fills the columns from it.
#[test]
fn postgres_version_2_database_migrates_its_lineage() {
    let Some(db) = pg::TestDb::create() else {
        return;
    };
    drop(Store::connect(&db.url).unwrap());
    db.execute(
        "ALTER TABLE app_passwords DROP COLUMN rotated_from, DROP COLUMN rotated_to;
         DELETE FROM passgate_schema WHERE version > 2;
         INSERT INTO app_passwords (id, user_name, name, scopes, hash, created_at, revoked_at, record)
         VALUES ('old-id', 'alice', 'ci', '{repo:read}', 'h', 1700000000, 1700000005,
                 '{\"id\":\"old-id\",\"user\":\"alice\",\"name\":\"ci\",\"scopes\":[],\"hash\":\"h\",\"created_at\":1700000000,\"expires_at\":null,\"revoked_at\":1700000005,\"last_used_at\":null,\"last_used_addr\":null,\"repos\":[\"alice/a\"],\"rotated_to\":\"new-id\"}'),
                ('new-id', 'alice', 'ci', '{repo:read}', 'h', 1700000005, NULL,
                 '{\"id\":\"new-id\",\"user\":\"alice\",\"name\":\"ci\",\"scopes\":[],\"hash\":\"h\",\"created_at\":1700000005,\"expires_at\":null,\"revoked_at\":null,\"last_used_at\":null,\"last_used_addr\":null,\"rotated_from\":\"old-id\"}');",
    );
    let store = Store::connect(&db.url).unwrap();
    assert_eq!(
        db.query_i64("SELECT max(version)::int8 FROM passgate_schema"),
        super::postgres::MIGRATION_COUNT as i64
    );
    let old = store.get("old-id").unwrap().unwrap();
    assert_eq!(old.rotated_to.as_deref(), Some("new-id"));
    assert_eq!(old.repos, ["alice/a"]);
    assert_eq!(
        store.lineage_current("old-id").unwrap().unwrap().id,
        "new-id"
    );
    assert_eq!(
        store
            .get("new-id")
            .unwrap()
            .unwrap()
            .rotated_from
            .as_deref(),
        Some("old-id")
    );
}

/// Batches full of equal times and repeated addresses, merged by the store
/// and by [`AppPassword::record_use`] one use at a time: the same lists,
/// in the same order (the PostgreSQL backend merges in SQL).
fn record_usage_merges_as_record_use_does(fx: Fixture) {
    let store = &*fx.store;
    let ids = ["id-a", "id-b", "id-c"];
    let mut model: Vec<AppPassword> = ids.iter().map(|id| rec(id, "alice", id, NOW)).collect();
    for r in &model {
        store.insert(r, NOW).unwrap();
    }
    // xorshift: a fixed, varied sequence without a dependency.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    for round in 0..25 {
        let batch: Vec<Usage> = (0..1 + next(12))
            .map(|_| Usage {
                id: ["id-a", "id-b", "id-c", "unknown"][next(4) as usize].to_owned(),
                at: NOW + round + next(4),
                addr: format!("10.0.0.{}", next(8)),
            })
            .collect();
        store.record_usage(&batch).unwrap();
        for u in &batch {
            if let Some(r) = model.iter_mut().find(|r| r.id == u.id) {
                r.record_use(&u.addr, u.at);
            }
        }
        for want in &model {
            let got = store.get(&want.id).unwrap().unwrap();
            assert_eq!(got.last_used, want.last_used, "round {round}, {}", want.id);
            assert_eq!(got.last_used_at, want.last_used_at, "round {round}");
            assert_eq!(got.last_used_addr, want.last_used_addr, "round {round}");
        }
    }
}

/// Two gateways flushing overlapping batches at the same time, their ids
/// in opposite orders: no deadlock, and no use lost to the other's write.
#[test]
fn postgres_concurrent_usage_flushes_neither_deadlock_nor_lose_uses() {
    let Some(db) = pg::TestDb::create() else {
        return;
    };
    let first = Arc::new(Store::connect(&db.url).unwrap());
    let ids: Vec<String> = (0..8).map(|i| format!("id-{i}")).collect();
    for id in &ids {
        first.insert(&rec(id, "alice", id, NOW), NOW).unwrap();
    }
    let barrier = Arc::new(Barrier::new(2));
    let gateways: Vec<_> = (0..2u64)
        .map(|g| {
            let store = if g == 0 {
                first.clone()
            } else {
                Arc::new(Store::connect(&db.url).unwrap())
            };
            let (barrier, mut ids) = (barrier.clone(), ids.clone());
            if g == 1 {
                ids.reverse();
            }
            thread::spawn(move || {
                barrier.wait();
                for round in 0..40u64 {
                    // Gateway 0 at even seconds, gateway 1 at odd ones.
                    let at = NOW + 2 * round + g;
                    let batch: Vec<Usage> = ids
                        .iter()
                        .map(|id| Usage {
                            id: id.clone(),
                            at,
                            addr: format!("10.{g}.0.{round}"),
                        })
                        .collect();
                    store.record_usage(&batch).unwrap();
                }
            })
        })
        .collect();
    for g in gateways {
        g.join().unwrap();
    }
    let newest: Vec<LastUse> = (35..40u64)
        .rev()
        .flat_map(|round| {
            [1, 0].map(|g| LastUse {
                addr: format!("10.{g}.0.{round}"),
                at: NOW + 2 * round + g,
            })
        })
        .take(LAST_USED_KEPT)
        .collect();
    for id in &ids {
        let got = first.get(id).unwrap().unwrap();
        assert_eq!(got.last_used, newest, "{id}");
        assert_eq!(got.last_used_at, Some(NOW + 2 * 39 + 1));
    }
}

/// The count `/metrics` shows, against each record's own status, at times
/// around an expiry, a revocation, a future (grace) revocation and their
/// boundaries.
fn count_by_status_agrees_with_each_record_status(fx: Fixture) {
    let store = &*fx.store;
    assert_eq!(store.count_by_status(NOW).unwrap(), StatusCounts::default());
    let mut expiring = rec("id-2", "alice", "expiring", NOW);
    expiring.expires_at = Some(NOW + 10);
    let mut graced = rec("id-3", "alice", "graced", NOW);
    graced.revoked_at = Some(NOW + 100);
    let mut both = rec("id-4", "bob", "both", NOW);
    both.expires_at = Some(NOW + 5);
    for r in [rec("id-1", "alice", "plain", NOW), expiring, graced, both] {
        store.insert(&r, NOW).unwrap();
    }
    store
        .insert(&rec("id-5", "bob", "revoked", NOW), NOW)
        .unwrap();
    store.revoke("id-5", NOW + 1).unwrap();
    store.revoke("id-4", NOW + 50).unwrap();
    for t in [
        NOW,
        NOW + 1,
        NOW + 9,
        NOW + 10,
        NOW + 50,
        NOW + 99,
        NOW + 100,
        NOW + 1000,
    ] {
        let mut want = StatusCounts::default();
        for r in store.list(None).unwrap() {
            want.add(r.status(t));
        }
        assert_eq!(
            store.count_by_status(t).unwrap(),
            want,
            "at NOW + {}",
            t - NOW
        );
    }
    let at = |t| store.count_by_status(t).unwrap();
    assert_eq!(
        at(NOW + 10),
        StatusCounts {
            active: 2,
            expired: 2,
            revoked: 1
        }
    );
    assert_eq!(
        at(NOW + 100),
        StatusCounts {
            active: 1,
            expired: 1,
            revoked: 3
        }
    );
}
