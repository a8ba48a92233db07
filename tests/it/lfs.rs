//! Git LFS batch: the scope comes from the JSON body's `operation`, and the
//! body reaches the backend byte for byte.

use crate::support::*;

fn lfs_config(backend: &Backend) -> ConfigBuilder {
    let mut b = ConfigBuilder::new(&backend.url());
    b.routes = r#"
[[routes]]
name = "lfs-batch"
methods = ["POST"]
path = "/{owner}/{repo}.git/info/lfs/objects/batch"
access = "app-password"
scopes = ["repository:read"]
upstream = "app"
body_scopes = { field = "operation", max_bytes = 1024, values = { download = ["repository:read"], upload = ["repository:write"] } }
"#
    .to_owned();
    b
}

fn batch(pg: &Passgate, pw: &str, body: &[u8]) -> Reply {
    let auth = basic("alice", pw);
    http1(
        pg.addr,
        "POST",
        "/alice/repo.git/info/lfs/objects/batch",
        &[
            ("authorization", &auth),
            ("content-type", "application/vnd.git-lfs+json"),
        ],
        body,
    )
}

#[test]
fn download_needs_read_and_upload_needs_write() {
    let backend = Backend::start();
    let pg = Passgate::start(&lfs_config(&backend));
    let (_, read) = pg.create("alice", "read", &["repository:read"]);
    let (_, write) = pg.create("alice", "write", &["repository:write"]);
    let download = br#"{"operation":"download","objects":[{"oid":"abc","size":1}]}"#;
    let upload = br#"{"operation":"upload","objects":[{"oid":"abc","size":1}]}"#;

    let r = batch(&pg, &read, download);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.echo().body_len,
        download.len() as u64,
        "body forwarded unchanged"
    );

    let r = batch(&pg, &read, upload);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("repository:write"), "{}", r.text());

    let r = batch(&pg, &write, upload);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echo().body_len, upload.len() as u64);
}

#[test]
fn unknown_operation_malformed_and_oversized_bodies_are_refused() {
    let backend = Backend::start();
    let pg = Passgate::start(&lfs_config(&backend));
    let (_, write) = pg.create("alice", "write", &["repository:write"]);
    assert_eq!(batch(&pg, &write, br#"{"operation":"delete"}"#).status, 400);
    assert_eq!(batch(&pg, &write, b"not json").status, 400);
    assert_eq!(batch(&pg, &write, br#"{"objects":[]}"#).status, 400);
    let big = format!(r#"{{"operation":"download","pad":"{}"}}"#, "x".repeat(2048));
    assert_eq!(batch(&pg, &write, big.as_bytes()).status, 413);
}

#[test]
fn body_is_not_read_before_authentication() {
    // Only the head is sent; the body is held back until the answer has
    // arrived. A gateway that read the body before checking the password
    // would wait for it and never answer (issue #21: the test used to send
    // the whole body up front, which proved nothing).
    use std::io::{Read, Write};
    let backend = Backend::start();
    let pg = Passgate::start(&lfs_config(&backend));
    let (id, read) = pg.create("alice", "read", &["repository:read"]);
    let body = br#"{"operation":"download","objects":[]}"#;
    for (what, auth) in [
        ("no credentials", None),
        (
            "a wrong secret",
            Some(basic("alice", &crate::auth::wrong_secret_token(&id))),
        ),
    ] {
        let mut s = std::net::TcpStream::connect(pg.addr).unwrap();
        let auth = auth.map_or(String::new(), |a| format!("authorization: {a}\r\n"));
        write!(
            s,
            "POST /alice/repo.git/info/lfs/objects/batch HTTP/1.1\r\nhost: x\r\n{auth}\
             content-type: application/vnd.git-lfs+json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                other => panic!(
                    "{what}: no answer before the body was sent ({other:?}); got {:?}",
                    String::from_utf8_lossy(&head)
                ),
            }
        }
        let head = String::from_utf8_lossy(&head);
        assert_eq!(raw_status(&head), 401, "{what}: {head}");
        // Sending the body now may fail (the gateway may have closed): fine.
        let _ = s.write_all(body);
    }
    // The same head with the body, and the right password, passes: the
    // route is not simply refusing everything.
    let r = batch(&pg, &read, body);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_repeated_or_case_variant_operation_is_refused() {
    // Issue #21 item 2: Go's encoding/json (Gitea, Forgejo) reads `Operation`
    // as `operation`; other backends keep the first of two copies.
    let backend = Backend::start();
    let pg = Passgate::start(&lfs_config(&backend));
    let (_, read) = pg.create("alice", "read", &["repository:read"]);
    for body in [
        &br#"{"operation":"download","Operation":"upload","objects":[]}"#[..],
        br#"{"operation":"upload","operation":"download","objects":[]}"#,
        br#"{"operation":"download","operation":"upload","objects":[]}"#,
        br#"{"OPERATION":"upload","operation":"download","objects":[]}"#,
    ] {
        let r = batch(&pg, &read, body);
        assert_eq!(
            r.status,
            400,
            "{}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
    }
    let ok = br#"{"operation":"download","objects":[{"oid":"operation","size":1}]}"#;
    assert_eq!(batch(&pg, &read, ok).status, 200);
}
