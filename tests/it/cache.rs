//! The verification cache under load: one argon2 run per cold password however
//! many connections present it at once, and TTL renewal by revalidation.

use std::time::Duration;

use crate::support::*;

#[test]
fn a_cold_password_presented_by_many_connections_is_verified_once() {
    // One verification worker and no queue: if every connection ran argon2
    // itself, most would be refused with 503.
    let (_backend, pg) = gateway_with_production_argon2("verify_threads = 1\nverify_queue = 0\n");
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

/// GET `/api/x` with this exact `Authorization` value.
fn with_header(pg: &Passgate, value: &str) -> Reply {
    http1(pg.addr, "GET", "/api/x", &[("authorization", value)], b"")
}

#[test]
fn a_remembered_header_value_stops_at_revocation_in_every_spelling() {
    // Issue #18: a header value seen before is not decoded again; what it
    // decoded to must not outlive the password.
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let (id, pw) = pg.create("alice", "laptop", &["repository:read"]);
    let canonical = basic("alice", &pw);
    let encoded = canonical.strip_prefix("Basic ").unwrap();
    let spellings = [
        canonical.clone(),
        format!("basic {encoded}"),
        format!("BASIC   {encoded}"),
    ];
    // Three times each: the first decodes (and verifies once), the second
    // is remembered, the third answered from what was remembered.
    for _ in 0..3 {
        for value in &spellings {
            let r = with_header(&pg, value);
            assert_eq!(r.status, 200, "{value}: {}", r.text());
            assert_eq!(r.echo().header("x-forwarded-user"), Some("alice"));
        }
    }
    assert_eq!(pg.argon2_runs(), 1, "one credential, one argon2 run");
    let out = pg.cli(&["app-password", "revoke", &id]);
    assert!(out.status.success());
    for value in &spellings {
        assert_eq!(with_header(&pg, value).status, 401, "{value}");
    }
}

#[test]
fn a_header_one_byte_off_a_remembered_one_is_never_answered_for_it() {
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let (_, pw) = pg.create("alice", "laptop", &["repository:read"]);
    let value = basic("alice", &pw);
    for _ in 0..3 {
        assert_eq!(with_header(&pg, &value).status, 200);
    }
    // Every base64 character that covers the token: one character off
    // changes the decoded token, which its checksum then refuses.
    let first = "Basic ".len() + "alice:".len() / 3 * 4;
    let last = value.len() - 1 - value.matches('=').count();
    for i in first..=last {
        let mut off = value.clone().into_bytes();
        off[i] = if off[i] == b'A' { b'B' } else { b'A' };
        let off = String::from_utf8(off).unwrap();
        let r = with_header(&pg, &off);
        assert!(matches!(r.status, 401 | 429), "byte {i}: {}", r.status);
    }
    // The guesses count against the address, not against a cached password.
    assert_eq!(with_header(&pg, &value).status, 200);
}

#[test]
fn a_remembered_header_with_someone_elses_name_stays_refused() {
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let (_, pw) = pg.create("alice", "laptop", &["repository:read"]);
    assert_eq!(get(pg.addr, "/api/x", Some(("alice", &pw))).status, 200);
    // Alice's password under Bob's name, again and again: the cache knows
    // the secret, the name is checked on every request.
    for _ in 0..4 {
        assert_eq!(get(pg.addr, "/api/x", Some(("bob", &pw))).status, 401);
    }
    assert_eq!(get(pg.addr, "/api/x", Some(("alice", &pw))).status, 200);
}

/// One keep-alive HTTP/1.1 connection to the gateway, for requests in turn.
struct OneConnection {
    send: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: String,
}

impl OneConnection {
    async fn open(pg: &Passgate) -> OneConnection {
        let stream = tokio::net::TcpStream::connect(pg.addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        OneConnection {
            send,
            host: pg.addr.to_string(),
        }
    }

    /// GET `/api/x` with this exact `Authorization` value: the status and
    /// the user the backend was told of.
    async fn get(&mut self, authorization: &str) -> (u16, Option<String>) {
        let host = self.host.clone();
        let reply = self.request("/api/x", &host, authorization).await;
        let user = (reply.status == 200)
            .then(|| reply.echo().header("x-forwarded-user").map(str::to_owned))
            .flatten();
        (reply.status, user)
    }

    /// GET `target` with this `Host` and `Authorization`.
    async fn request(&mut self, target: &str, host: &str, authorization: &str) -> Reply {
        self.send.ready().await.expect("the connection stays open");
        let req = http::Request::get(target)
            .header("host", host)
            .header("authorization", authorization)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        collect(self.send.send_request(req).await.unwrap()).await
    }
}

#[test]
fn a_connections_last_header_stops_at_revocation_on_that_connection() {
    // Issue #18: a connection remembers the header value it presented last;
    // a revocation must stop it on the very next request of that connection.
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let (id, pw) = pg.create("alice", "laptop", &["repository:read"]);
    let value = basic("alice", &pw);
    block_on(async {
        let mut conn = OneConnection::open(&pg).await;
        for _ in 0..4 {
            assert_eq!(conn.get(&value).await, (200, Some("alice".into())));
        }
        assert_eq!(pg.argon2_runs(), 1, "one credential, one argon2 run");
        assert!(pg.cli(&["app-password", "revoke", &id]).status.success());
        assert_eq!(conn.get(&value).await.0, 401);
        assert_eq!(conn.get(&value).await.0, 401);
    });
}

#[test]
fn several_users_on_one_connection_each_get_their_own_identity() {
    // A trusted proxy in front may carry several users' requests on one
    // connection: what the connection presented last answers only for the
    // very same bytes.
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let (_, alice_pw) = pg.create("alice", "laptop", &["repository:read"]);
    let (_, bob_pw) = pg.create("bob", "ci", &["repository:read"]);
    let alice = basic("alice", &alice_pw);
    let bob = basic("bob", &bob_pw);
    // Alice's secret under Bob's name, and Alice's header one byte off.
    let misnamed = basic("bob", &alice_pw);
    let mut off = alice.clone().into_bytes();
    let last = off.len() - 1 - alice.matches('=').count();
    off[last] = if off[last] == b'A' { b'B' } else { b'A' };
    let off = String::from_utf8(off).unwrap();
    block_on(async {
        let mut conn = OneConnection::open(&pg).await;
        for _ in 0..3 {
            assert_eq!(conn.get(&alice).await, (200, Some("alice".into())));
            assert_eq!(conn.get(&alice).await, (200, Some("alice".into())));
            assert_eq!(conn.get(&bob).await, (200, Some("bob".into())));
            assert_eq!(conn.get(&bob).await, (200, Some("bob".into())));
            assert_eq!(conn.get(&misnamed).await.0, 401);
            assert_eq!(conn.get(&alice).await, (200, Some("alice".into())));
            assert_eq!(conn.get(&off).await.0, 401);
        }
    });
}

#[test]
fn what_a_connection_gets_added_follows_its_host_route_password_and_config() {
    // Issue #18: a connection keeps the headers its last request got added
    // (`headers::prepare`) for the next to copy. A new host, a route that
    // adds no identity, another password or a reload must each be seen.
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let (alice_id, alice_pw) = pg.create("alice", "laptop", &["repository:read"]);
    let (bob_id, bob_pw) = pg.create("bob", "ci", &["repository:read"]);
    let (alice, bob) = (basic("alice", &alice_pw), basic("bob", &bob_pw));
    block_on(async {
        let mut conn = OneConnection::open(&pg).await;
        let (one, two) = ("one.example", "two.example:8443");
        for host in [one, one, two, one] {
            let reply = conn.request("/api/x", host, &alice).await;
            assert_eq!(reply.status, 200);
            let echo = reply.echo();
            assert_eq!(echo.header("host"), Some(host));
            assert_eq!(echo.header("x-forwarded-host"), Some(host));
            assert_eq!(echo.header("x-forwarded-user"), Some("alice"));
            assert_eq!(
                echo.header("x-forwarded-app-password"),
                Some(alice_id.as_str())
            );
            assert_eq!(echo.header("x-forwarded-scopes"), Some("repository:read"));
            assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
            assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
            assert_eq!(echo.header("authorization"), None);
        }
        // A public route adds no identity, and passes the client's
        // `Authorization` on untouched.
        let reply = conn.request("/public/x", one, &alice).await;
        assert_eq!(reply.status, 200);
        let echo = reply.echo();
        assert_eq!(echo.header("x-forwarded-user"), None);
        assert_eq!(echo.header("x-forwarded-app-password"), None);
        assert_eq!(echo.header("authorization"), Some(alice.as_str()));
        assert_eq!(echo.header("x-forwarded-host"), Some(one));
        let echo = conn.request("/api/x", one, &bob).await.echo();
        assert_eq!(echo.header("x-forwarded-user"), Some("bob"));
        assert_eq!(
            echo.header("x-forwarded-app-password"),
            Some(bob_id.as_str())
        );
        // A reload renames the user header: the same connection's next
        // request carries the new name only.
        let renamed = format!(
            "{}\n[identity]\nuser_header = \"X-Remote-User\"\n",
            std::fs::read_to_string(&pg.config).unwrap()
        );
        std::fs::write(&pg.config, renamed).unwrap();
        assert!(pg.cli(&["reload"]).status.success());
        let echo = conn.request("/api/x", one, &bob).await.echo();
        assert_eq!(echo.header("x-remote-user"), Some("bob"));
        assert_eq!(echo.header("x-forwarded-user"), None);
    });
}
