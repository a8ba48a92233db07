//! Request-target normalisation through the running binary, over raw TCP
//! (hyper's client would normalise or refuse some of these spellings): an
//! ambiguous target is refused with 400, an accepted one reaches the backend
//! as exactly the normalised path that was matched, and no spelling lets a
//! read-only app password past a write-scoped route.

// Helpers outside `#[test]` functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use crate::proxy::{raw_reply, RawReply};
use crate::support::*;

/// (request target, expected status, path the backend must receive when forwarded).
const TABLE: &[(&str, u16, Option<&str>)] = &[
    // Accepted, forwarded in canonical form.
    ("/", 200, Some("/")),
    ("/repo/x", 200, Some("/repo/x")),
    ("/a/b/", 200, Some("/a/b/")),
    ("/a//b", 200, Some("/a/b")),
    ("///a/b", 200, Some("/a/b")),
    ("/caf%C3%A9", 200, Some("/caf%C3%A9")),
    ("/caf%c3%a9", 200, Some("/caf%C3%A9")),
    ("/%7Euser/x", 200, Some("/~user/x")),
    ("/a%20b", 200, Some("/a%20b")),
    ("/a%2Db", 200, Some("/a-b")),
    ("/100%25", 200, Some("/100%25")),
    ("/.well-known/x", 200, Some("/.well-known/x")),
    ("/..x/y", 200, Some("/..x/y")),
    ("/ADMIN/x", 200, Some("/ADMIN/x")),
    ("/Admin/x", 200, Some("/Admin/x")),
    ("/public//x", 200, Some("/public/x")),
    ("/repo/x?a=1&b=%2F", 200, Some("/repo/x")),
    // Spellings of the denied /admin/** that must still hit the deny route.
    ("/admin/x", 403, None),
    ("//admin/x", 403, None),
    ("/%61dmin/x", 403, None),
    ("/%61%64%6d%69%6e/x", 403, None),
    ("/admin", 403, None),
    ("/admin/", 403, None),
    // Encoded delimiters and separators.
    ("/a%2Fb", 400, None),
    ("/a%2fb", 400, None),
    ("/admin%2Fx", 400, None),
    ("/a%5Cb", 400, None),
    ("/a\\b", 400, None),
    ("/a%3Bb", 400, None),
    ("/admin;x/y", 400, None),
    ("/a;b", 400, None),
    ("/a%00b", 400, None),
    ("/a%0Ab", 400, None),
    ("/a%3Fb", 400, None),
    ("/a%23b", 400, None),
    // Dot segments, raw and encoded.
    ("/a/./b", 400, None),
    ("/a/../b", 400, None),
    ("/public/../admin/x", 400, None),
    ("/a/%2e%2e/b", 400, None),
    ("/a/.%2E/b", 400, None),
    ("/a/%2e/b", 400, None),
    ("/..", 400, None),
    // Double and invalid encodings.
    ("/a%252Fb", 400, None),
    ("/%2561dmin/x", 400, None),
    ("/a%zz", 400, None),
    ("/a%", 400, None),
    ("/a%C0%AF", 400, None),
    ("/a%FF", 400, None),
    // Segments that some backends silently trim.
    ("/admin./x", 400, None),
    ("/admin%2e/x", 400, None),
    ("/admin%20/x", 400, None),
    // Unicode compatibility characters a backend applying NFKC would read
    // as ASCII: `‥`, `．．`, `／` (dot segments, a slash), `ａ`, `ﬁ` (issue #16).
    ("/public/%E2%80%A5/admin/x", 400, None),
    ("/public/%EF%BC%8E%EF%BC%8E/admin/x", 400, None),
    ("/public/..%EF%BC%8Fadmin/x", 400, None),
    ("/public/%EF%BC%8E%EF%BC%8E%EF%BC%8Fadmin", 400, None),
    ("/%EF%BD%81dmin/x", 400, None),
    ("/%EF%AC%81le", 400, None),
    ("/public/\u{2025}/admin/x", 400, None),
    // Legitimate non-ASCII paths still pass.
    ("/alice/caf%C3%A9.git", 200, Some("/alice/caf%C3%A9.git")),
    ("/alice/cafe%CC%81", 200, Some("/alice/cafe%CC%81")),
    (
        "/%E6%97%A5%E6%9C%AC/%E8%AA%9E",
        200,
        Some("/%E6%97%A5%E6%9C%AC/%E8%AA%9E"),
    ),
    // Not a path at all.
    ("*", 400, None),
];

fn request(addr: SocketAddr, target: &str) -> RawReply {
    raw_reply(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn request_targets_are_normalised_or_refused_as_the_table_says() {
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let mut failures = Vec::new();
    for &(target, status, path) in TABLE {
        let r = request(pg.addr, target);
        let echo = r.echo();
        let got_path = echo.as_ref().map(|e| e.path.as_str());
        if r.status != status || got_path != path {
            failures.push(format!(
                "{target:?}: want {status} {path:?}, got {} {got_path:?} ({})",
                r.status,
                r.text().trim()
            ));
        }
        // Only the echo backend answers 200 here; a refusal never reaches it.
        assert_eq!(echo.is_some(), status == 200, "{target:?}");
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn odd_request_lines_are_refused() {
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let addr = pg.addr;

    // Absolute form naming another host than Host.
    let r = raw_reply(
        addr,
        "GET http://evil.example/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // Absolute form naming the Host: forwarded as its origin-form path.
    let r = raw_reply(
        addr,
        &format!("GET http://{addr}/a//x HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echo().unwrap().path, "/a/x");
    // Absolute form with user information.
    let r = raw_reply(
        addr,
        &format!("GET http://u@{addr}/x HTTP/1.1\r\nHost: u@{addr}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 400, "{}", r.text());

    let r = raw_reply(
        addr,
        "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = raw_reply(
        addr,
        &format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert!(r.echo().is_none() && r.status >= 400, "{}", r.status);

    // A raw space is not HTTP at all.
    let r = raw_reply(addr, "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400);

    // A very long path.
    let long = format!("/{}", "a".repeat(9000));
    let r = request(addr, &long);
    assert_eq!(r.status, 414, "{}", r.text());
    let just_fits = format!("/{}", "a".repeat(8191));
    assert_eq!(request(addr, &just_fits).status, 200);

    // The gateway still serves after all of the above.
    assert_eq!(get(addr, "/repo/x", None).status, 200);
}

#[test]
fn a_repeated_service_key_is_refused_whatever_the_separator() {
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let (_, pw) = pg.create("alice", "rw", &["repository:write"]);
    let auth = basic("alice", &pw);
    for q in [
        "service=git-upload-pack&service=git-receive-pack",
        "service=git-receive-pack&service=git-upload-pack",
        "service=git-upload-pack;service=git-receive-pack",
        "service=git-upload-pack&service=git-upload-pack",
    ] {
        let target = format!("/alice/repo.git/info/refs?{q}");
        for creds in [None, Some(auth.as_str())] {
            let mut req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
            if let Some(a) = creds {
                req.push_str(&format!("Authorization: {a}\r\n"));
            }
            req.push_str("\r\n");
            let r = raw_reply(pg.addr, &req);
            assert_eq!(r.status, 400, "{q} creds={}: {}", creds.is_some(), r.text());
            assert!(r.echo().is_none());
        }
    }
}

#[test]
fn no_path_or_query_spelling_lets_a_read_only_password_reach_receive_pack() {
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let (_, pw) = pg.create("alice", "ro", &["repository:read"]);
    let auth = basic("alice", &pw);
    let send = |target: &str| {
        raw_reply(
            pg.addr,
            &format!(
                "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
            ),
        )
    };

    // The password works where its scope allows.
    let r = send("/alice/repo.git/info/refs?service=git-upload-pack");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echo().unwrap().path, "/alice/repo.git/info/refs");

    // The plain refusal is 403 (not 401: git would erase the saved password).
    let r = send("/alice/repo.git/info/refs?service=git-receive-pack");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("repository:write"), "{}", r.text());

    for target in [
        "/alice/repo.git/./info/refs?service=git-receive-pack",
        "/alice//repo.git/info/refs?service=git-receive-pack",
        "/alice/repo.git/info/refs/?service=git-receive-pack",
        "/alice/repo.git/info//refs?service=git-receive-pack",
        "/%61lice/repo.git/info/refs?service=git-receive-pack",
        "/alice/repo%2Egit/info/refs?service=git-receive-pack",
        "/alice/repo.git/info/%72efs?service=git-receive-pack",
        "/alice/repo.git/info/refs?service=git%2Dreceive-pack",
        "/alice/repo.git/info/refs?service=git-receive-pack&x=1",
        "/alice/repo.git/info/refs?x=1;service=git-receive-pack",
        "/alice/repo.git/info/refs?Service=git-receive-pack",
        "/alice/repo.git/info/refs?service=git-receive-pack%00",
        "/alice/repo.git/info/refs?service=git-upload-pack&service=git-receive-pack",
        "/alice/repo.git/info/refs?service=git-upload-pack;service=git-receive-pack",
        "/alice/repo.git/info/refs?service%3Dgit-receive-pack",
        "/alice/repo.git/info/refs?%73ervice=git-receive-pack",
        "/alice/repo.git/info/refs%3Fservice=git-receive-pack",
        "/alice/repo.git/info/refs.?service=git-receive-pack",
        "/alice/repo.git/info/refs%20?service=git-receive-pack",
        "/alice/repo.git/git-receive-pack",
        "/alice/repo.git//git-receive-pack",
        // Compatibility characters (issue #16): `．` U+FF0E, `﹣` U+FE63, `ｒ`.
        "/alice/repo%EF%BC%8Egit/info/refs?service=git-receive-pack",
        "/alice/repo.git/git%EF%B9%A3receive-pack",
        "/alice/repo.git/info/%EF%BD%92efs?service=git-receive-pack",
    ] {
        let r = send(target);
        assert!(
            (400..500).contains(&r.status),
            "{target}: {} {}",
            r.status,
            r.text()
        );
        assert!(r.echo().is_none(), "{target} reached the backend");
    }
}

/// Issue #16: a path ending in `/` is matched with and without the slash;
/// when the two disagree the request is refused, whoever sends it, because
/// the backend may read it either way.
#[test]
fn a_trailing_slash_that_changes_the_route_is_refused() {
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let (_, pw) = pg.create("alice", "ro", &["repository:read"]);
    let auth = basic("alice", &pw);
    let send = |target: &str, creds: Option<&str>| {
        let mut req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        if let Some(a) = creds {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        raw_reply(pg.addr, &req)
    };

    let r = send(
        "/alice/demo.git/info/refs?service=git-upload-pack",
        Some(&auth),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for target in [
        "/alice/demo.git/info/refs/?service=git-upload-pack",
        "/alice/demo.git/info/refs//?service=git-upload-pack",
        "/alice/demo.git/info/%72efs/?service=git-upload-pack",
    ] {
        for creds in [Some(auth.as_str()), None] {
            let r = send(target, creds);
            assert_eq!(r.status, 400, "{target}: {}", r.text());
            assert!(r.text().contains("'/'"), "{}", r.text());
            assert!(r.echo().is_none(), "{target} reached the backend");
        }
    }

    // Web either way: browsed, forwarded with its slash.
    let r = send("/owner/repo/", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echo().unwrap().path, "/owner/repo/");
    // Denied either way by `/admin/**`.
    assert_eq!(send("/admin/", None).status, 403);
}

#[test]
fn a_trailing_slash_cannot_step_around_a_deny_route() {
    let backend = Backend::start();
    let mut config = ConfigBuilder::new(&backend.url());
    config.routes = r#"
[[routes]]
name = "admin"
path = "/admin"
access = "deny"

[[routes]]
name = "web"
path = "/**"
access = "web"
upstream = "app"
"#
    .to_owned();
    let pg = Passgate::start(&config);
    for (target, status, path) in [
        ("/admin", 403, None),
        ("/admin/", 400, None),
        ("//admin//", 400, None),
        ("/%61dmin/", 400, None),
        ("/admin/x", 200, Some("/admin/x")),
        ("/admin/x/", 200, Some("/admin/x/")),
        ("/owner/repo/", 200, Some("/owner/repo/")),
    ] {
        let r = request(pg.addr, target);
        assert_eq!(r.status, status, "{target}: {}", r.text());
        assert_eq!(
            r.echo().map(|e| e.path),
            path.map(str::to_owned),
            "{target}"
        );
    }
}
