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
