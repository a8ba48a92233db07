//! `https://` upstreams: verified against `ca_file`, refused (502) when the
//! certificate is not trusted.

use std::process::Stdio;

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

/// `command` (`serve`, `check-config`) on a config whose `[upstreams.app]`
/// names `ca_file`: the exit code and stderr (`serve` must not start).
fn run_with_ca_file(
    command: &str,
    dir: &std::path::Path,
    ca_file: &std::path::Path,
) -> (Option<i32>, String) {
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
    if command == "serve" {
        return serve_exits(&config);
    }
    let out = spawn_bin(&[command], &config, Stdio::piped())
        .wait_with_output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_or_unusable_ca_file_stops_serve_and_check_config_naming_the_file() {
    // Issue #21: a bad ca_file must be a clear start-up error, not a 502 on
    // every request later; check-config reads it with the same code, so a
    // deployment's check catches it before the restart.
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
        for command in ["check-config", "serve"] {
            let (code, stderr) = run_with_ca_file(command, dir.path(), file);
            let shown = file.display().to_string();
            assert_eq!(code, Some(2), "{command}: a bad config: {shown}: {stderr}");
            assert!(stderr.contains(&shown), "{command}: the file: {stderr}");
            assert!(stderr.contains(why), "{command}: {why}: {stderr}");
            assert!(stderr.contains("upstream \"app\""), "{stderr}");
            assert!(stderr.contains("proxy.toml: "), "the config: {stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
    // A usable one passes check-config, which prints the routes.
    let (code, stderr) = run_with_ca_file("check-config", dir.path(), &certs.ca_path);
    assert_eq!(code, Some(0), "{stderr}");
}
