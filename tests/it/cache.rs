//! The verification cache under load: one argon2 run per cold password however
//! many connections present it at once, and TTL renewal by revalidation.

use std::time::Duration;

use crate::support::*;

#[test]
fn a_cold_password_presented_by_many_connections_is_verified_once() {
    // One verification worker and no queue: if every connection ran argon2
    // itself, most would be refused with 503.
    let backend = Backend::start();
    let mut b = ConfigBuilder::new(&backend.url());
    b.extra = String::new(); // production argon2 parameters
    b.auth_extra = "verify_threads = 1\nverify_queue = 0\n".to_owned();
    let pg = Passgate::start(&b);
    let (_, pw) = pg.create("alice", "ci", &["repository:read"]);
    let auth = basic("alice", &pw);
    let statuses: Vec<u16> = block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..24 {
            let auth = auth.clone();
            let addr = pg.addr;
            tasks.push(tokio::spawn(async move {
                http1_async_from(
                    None,
                    addr,
                    "GET",
                    "/api/x",
                    &[("authorization", &auth)],
                    b"",
                )
                .await
                .status
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(pg.argon2_runs(), 1, "24 connections, one argon2 run");
}

#[test]
fn an_expired_cache_entry_is_renewed_but_never_for_a_revoked_password() {
    let backend = Backend::start();
    let mut b = ConfigBuilder::new(&backend.url());
    b.auth_extra = "cache_ttl = \"1s\"\n".to_owned();
    let pg = Passgate::start(&b);
    let (id, pw) = pg.create("alice", "laptop", &["repository:read"]);
    assert_eq!(get(pg.addr, "/api/x", Some(("alice", &pw))).status, 200);
    assert_eq!(pg.argon2_runs(), 1);
    std::thread::sleep(Duration::from_millis(1300));
    // Stale: renewed from the store without argon2, still the same answers.
    assert_eq!(get(pg.addr, "/api/x", Some(("alice", &pw))).status, 200);
    assert_eq!(
        pg.argon2_runs(),
        1,
        "a stale entry is renewed by a store read"
    );
    assert_eq!(get(pg.addr, "/api/x", Some(("bob", &pw))).status, 401);
    let wrong = format!(
        "{}{}",
        &pw[..pw.len() - 1],
        if pw.ends_with('0') { '1' } else { '0' }
    );
    assert_eq!(get(pg.addr, "/api/x", Some(("alice", &wrong))).status, 401);
    let out = pg.cli(&["app-password", "revoke", &id]);
    assert!(out.status.success());
    assert_eq!(get(pg.addr, "/api/x", Some(("alice", &pw))).status, 401);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(get(pg.addr, "/api/x", Some(("alice", &pw))).status, 401);
}
