//! TLS termination and the server's lifecycle through the real binary: ALPN
//! h2 and http/1.1, clear-text h2c, certificate reload on SIGHUP (good and bad),
//! start-up errors naming the file, and graceful drain on SIGTERM.

// Helpers outside `#[test]` functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;

use crate::support::*;

/// A gateway with TLS; the certificate files live in the gateway's own temp dir.
fn tls_gateway(backend: &Backend, extra_server: &str) -> (Passgate, Certs) {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(dir.path(), "one");
    let mut b = ConfigBuilder::new(&backend.url());
    b.tls = Some((certs.cert_path.clone(), certs.key_path.clone()));
    b.server_extra = extra_server.to_owned();
    (Passgate::start_in(dir, &b), certs)
}

fn roots(certs: &Certs) -> rustls::RootCertStore {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(certs.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// A client trusting `certs`' CA, limited to the given TLS versions.
fn client_with_versions(
    certs: &Certs,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots(certs))
        .with_no_client_auth();
    Arc::new(cfg)
}

/// Connects and completes a TLS handshake for `localhost`.
async fn handshake(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, stream)
        .await
}

fn get_req(uri: &str, host: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::get(uri);
    if let Some(h) = host {
        b = b.header("host", h);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

#[test]
fn http1_and_http2_over_tls_reach_the_backend_as_http1_with_proto_https() {
    let backend = Backend::start();
    let (pg, certs) = tls_gateway(&backend, "");
    let host = format!("localhost:{}", pg.addr.port());

    let r = block_on(tls_request(
        pg.addr,
        &certs,
        &[b"http/1.1"],
        get_req("/repo/h1", Some(&host)),
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, Version::HTTP_11);
    let echo = r.echo();
    assert_eq!(echo.path, "/repo/h1");
    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echo.header("host"), Some(host.as_str()));

    let r = block_on(tls_request(
        pg.addr,
        &certs,
        &[b"h2", b"http/1.1"],
        get_req(&format!("https://{host}/repo/h2"), None),
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, Version::HTTP_2);
    let echo = r.echo();
    assert_eq!(echo.path, "/repo/h2");
    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echo.header("x-forwarded-host"), Some(host.as_str()));
}

#[test]
fn cleartext_http2_prior_knowledge_is_served() {
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let r = block_on(async {
        let stream = tokio::net::TcpStream::connect(pg.addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut out = Vec::new();
        // Several streams on one connection.
        for i in 0..3 {
            let req = get_req(&format!("http://{}/repo/h2c{i}", pg.addr), None);
            out.push(collect(send.send_request(req).await.unwrap()).await);
        }
        out
    });
    for (i, r) in r.iter().enumerate() {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.version, Version::HTTP_2);
        let echo = r.echo();
        assert_eq!(echo.path, format!("/repo/h2c{i}"));
        assert_eq!(echo.version, "HTTP/1.1");
        assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    }
}

#[test]
fn tls12_and_tls13_are_both_accepted() {
    let backend = Backend::start();
    let (pg, certs) = tls_gateway(&backend, "");
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let tls = block_on(handshake(pg.addr, client_with_versions(&certs, &[version])))
            .unwrap_or_else(|e| panic!("{want:?}: {e}"));
        assert_eq!(tls.get_ref().1.protocol_version(), Some(want));
    }
    // (A TLS 1.1-only client cannot be built with rustls; the server config
    // enables 1.2 and 1.3 only.)
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_and_keeps_old_ones() {
    let backend = Backend::start();
    let (pg, old) = tls_gateway(&backend, "");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let host = format!("localhost:{}", pg.addr.port());

    // A keep-alive HTTP/1.1 connection opened before the reload.
    let mut kept = rt.block_on(async {
        let tls = handshake(pg.addr, old.client_config(&[b"http/1.1"]))
            .await
            .unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        send
    });
    let send_kept = |kept: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
                     path: &str| {
        rt.block_on(async {
            kept.ready().await.unwrap();
            collect(kept.send_request(get_req(path, Some(&host))).await.unwrap()).await
        })
    };
    assert_eq!(send_kept(&mut kept, "/repo/before").status, 200);

    let other = tempfile::tempdir().unwrap();
    let new = Certs::generate(other.path(), "two");
    std::fs::copy(&new.cert_path, &old.cert_path).unwrap();
    std::fs::copy(&new.key_path, &old.key_path).unwrap();
    pg.signal("HUP");

    let verifies = |certs: &Certs| {
        rt.block_on(handshake(pg.addr, certs.client_config(&[b"http/1.1"])))
            .is_ok()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !verifies(&new) {
        assert!(
            Instant::now() < deadline,
            "new certificate not served; logs:\n{}",
            pg.log_text()
        );
        pause(Duration::from_millis(50));
    }
    assert!(!verifies(&old), "old CA still verifies a new connection");
    assert!(pg.wait_log("TLS certificate reloaded", Duration::from_secs(5)));

    // The connection opened before the reload still works.
    let r = send_kept(&mut kept, "/repo/after");
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().path, "/repo/after");

    // A broken file: the reload fails loudly and the previous certificate stays.
    std::fs::write(&old.cert_path, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    pg.signal("HUP");
    assert!(
        pg.wait_log("TLS reload failed", Duration::from_secs(10)),
        "{}",
        pg.log_text()
    );
    assert!(
        verifies(&new),
        "a failed reload dropped the valid certificate"
    );
    let r = rt.block_on(tls_request(
        pg.addr,
        &new,
        &[b"h2"],
        get_req(&format!("https://{host}/repo/still"), None),
    ));
    assert_eq!(r.status, 200);
    assert_eq!(send_kept(&mut kept, "/repo/last").status, 200);
}

#[test]
fn startup_and_check_config_fail_with_code_2_naming_a_bad_cert_or_key() {
    let backend = Backend::start();
    let dir = tempfile::tempdir().unwrap();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let certs_a = Certs::generate(a.path(), "a");
    let certs_b = Certs::generate(b.path(), "b");
    let config = dir.path().join("proxy.toml");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").unwrap();
    let check_config = || {
        let out = spawn_bin(&["check-config"], &config, Stdio::piped())
            .wait_with_output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };

    let missing = dir.path().join("no-such-cert.pem");
    let mut builder = ConfigBuilder::new(&backend.url());
    for (cert, key, named) in [
        // A missing certificate, a file holding none, a key of another pair,
        // a key file holding no key.
        (&missing, &certs_a.key_path, &missing),
        (&garbage, &certs_a.key_path, &garbage),
        (&certs_a.cert_path, &certs_b.key_path, &certs_b.key_path),
        (&certs_a.cert_path, &certs_a.cert_path, &certs_a.cert_path),
    ] {
        builder.tls = Some((cert.clone(), key.clone()));
        std::fs::write(&config, builder.render()).unwrap();
        let named = named.display().to_string();
        // check-config opens them as serve does: the same refusal, the same
        // exit code, before anything is printed as ok.
        let (code, stdout, stderr) = check_config();
        assert_eq!(code, Some(2), "check-config: a bad config: {stderr}");
        assert!(stderr.contains(&named), "{named}: {stderr}");
        assert!(stderr.contains("proxy.toml: server.tls: "), "{stderr}");
        assert!(!stdout.contains("ok"), "{stdout}");
        let (code, serve_err) = serve_exits(&config);
        assert_eq!(code, Some(2), "serve: a bad config: {serve_err}");
        assert!(serve_err.contains(&named), "{named}: {serve_err}");
        let said = |s: &str| s.lines().find(|l| l.contains(&named)).map(str::to_owned);
        assert_eq!(said(&stderr), said(&serve_err), "the same message");
        assert!(!stderr.contains("panicked") && !serve_err.contains("panicked"));
    }
    // The pair that fits passes.
    builder.tls = Some((certs_a.cert_path.clone(), certs_a.key_path.clone()));
    std::fs::write(&config, builder.render()).unwrap();
    let (code, stdout, stderr) = check_config();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(": ok,"), "{stdout}");
}

#[test]
fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_0() {
    // A hand-driven backend, so the test knows exactly when the request is in flight.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let (arrived_tx, arrived_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let backend = std::thread::spawn(move || {
        let (mut s, _) = upstream.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).unwrap() == 0 {
                return;
            }
            head.push(byte[0]);
        }
        arrived_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ndrained")
            .unwrap();
    });

    let mut pg = Passgate::start(&ConfigBuilder::new(&format!("http://{up_addr}")));
    let addr = pg.addr;
    let client = std::thread::spawn(move || get(addr, "/repo/long", None));
    arrived_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("request did not reach the backend");

    pg.signal("TERM");
    // The handler ran (a process killed by the signal would not log this).
    assert!(
        pg.wait_log("shutting down", Duration::from_secs(5)),
        "{}",
        pg.log_text()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        pause(Duration::from_millis(20));
    }
    assert_eq!(
        pg.wait_exit(Duration::from_millis(200)),
        None,
        "exited before draining"
    );

    release_tx.send(()).unwrap();
    let r = client.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "drained");
    backend.join().unwrap();
    assert_eq!(
        pg.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        pg.log_text()
    );
}

/// Polling interval for the plain (non-async) test threads; no reactor is blocked here.
#[allow(clippy::disallowed_methods)]
fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// Issue #20: `http://` to a TLS port gets a short plain-text 400 telling to
/// use `https://` (nginx answers 497), not TLS bytes git reads as HTTP/0.9;
/// the port keeps serving TLS.
#[test]
fn plain_http_on_the_tls_port_gets_400_saying_use_https() {
    let backend = Backend::start();
    let (pg, certs) = tls_gateway(&backend, "");
    for request in [
        &b"GET /alice/project.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let resp = raw(pg.addr, request, Duration::from_secs(5));
        assert_eq!(raw_status(&resp), 400, "{resp}");
        assert!(resp.contains("use https:// instead of http://"), "{resp}");
        assert!(
            !resp.to_ascii_lowercase().contains("x-backend"),
            "forwarded: {resp}"
        );
    }
    let r = block_on(tls_request(
        pg.addr,
        &certs,
        &[b"http/1.1"],
        get_req("/repo/after", Some("localhost")),
    ));
    assert_eq!(r.status, 200, "{}", r.text());
}
