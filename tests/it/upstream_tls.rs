//! `https://` upstreams: verified against `ca_file`, refused (502) when the
//! certificate is not trusted.

use crate::support::*;

#[test]
fn https_upstream_with_its_ca_file_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(dir.path(), "backend");
    let backend = Backend::start_tls(&certs);
    let b = ConfigBuilder::new(&format!("https://localhost:{}", backend.addr.port()));
    // ca_file is a key of [upstreams.app]: render, then insert it there.
    let text = b.render().replace(
        &format!("url = \"https://localhost:{}\"", backend.addr.port()),
        &format!(
            "url = \"https://localhost:{}\"\nca_file = {:?}",
            backend.addr.port(),
            certs.ca_path.display().to_string()
        ),
    );
    let pg = Passgate::start_text(&text);
    let r = get(pg.addr, "/public/tls", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.echo();
    assert_eq!(echo.path, "/public/tls");
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
}

#[test]
fn https_upstream_with_an_untrusted_certificate_is_a_502() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(dir.path(), "backend");
    let backend = Backend::start_tls(&certs);
    // No ca_file: the Mozilla roots do not know the test CA.
    let pg = Passgate::start(&ConfigBuilder::new(&format!(
        "https://localhost:{}",
        backend.addr.port()
    )));
    let r = get(pg.addr, "/public/tls", None);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        !r.text().contains("localhost"),
        "the body must not reveal the upstream: {}",
        r.text()
    );
}

/// `serve` on a config whose `[upstreams.app]` names `ca_file`: the exit
/// code and stderr (it must not start).
fn serve_with_ca_file(dir: &std::path::Path, ca_file: &std::path::Path) -> (Option<i32>, String) {
    let b = ConfigBuilder::new("https://localhost:9");
    let text = b.render().replace(
        "url = \"https://localhost:9\"",
        &format!(
            "url = \"https://localhost:9\"\nca_file = {:?}",
            ca_file.display().to_string()
        ),
    );
    assert!(text.contains("ca_file"));
    let config = dir.join("proxy.toml");
    std::fs::write(&config, text).unwrap();
    serve_exits(&config)
}

#[test]
fn a_missing_or_unusable_ca_file_stops_serve_naming_the_file() {
    // Issue #21: a bad ca_file must be a clear start-up error, not a 502 on
    // every request later.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let garbage = dir.path().join("garbage-ca.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let key_only = dir.path().join("key-only.pem");
    let certs = Certs::generate(dir.path(), "backend");
    std::fs::copy(&certs.key_path, &key_only).unwrap();
    for (file, why) in [
        (&missing, "cannot read ca_file"),
        (&garbage, "holds no usable certificate"),
        (&key_only, "holds no usable certificate"),
    ] {
        let (code, stderr) = serve_with_ca_file(dir.path(), file);
        assert_eq!(code, Some(2), "a bad config: {}: {stderr}", file.display());
        assert!(
            stderr.contains(&file.display().to_string()),
            "the file is named: {stderr}"
        );
        assert!(stderr.contains(why), "{why}: {stderr}");
        assert!(stderr.contains("upstream \"app\""), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
