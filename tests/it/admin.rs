//! The admin socket's own defences: its directory, a path that is not a
//! socket, a socket in use, the request body limit, and the audit lines of
//! management done with no server running.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Runs `passgate serve` on `dir`'s config and expects it to exit at once:
/// (exit code, stderr). A server that starts instead fails the test.
fn serve_refused(dir: &Path) -> (i32, String) {
    let (code, err) = serve_exits(&dir.join("proxy.toml"));
    (code.unwrap_or(-1), err)
}

fn config_in(dir: &Path) {
    let backend_url = "http://127.0.0.1:1";
    std::fs::write(
        dir.join("proxy.toml"),
        ConfigBuilder::new(backend_url).render(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::set_permissions(dir.join("data"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_socket_directory_others_can_write_is_refused() {
    // Issue #21 item 8: someone who can write there can swap the socket.
    for mode in [0o777, 0o775, 0o1777] {
        let dir = tempfile::tempdir().unwrap();
        config_in(dir.path());
        std::fs::set_permissions(
            dir.path().join("data"),
            std::fs::Permissions::from_mode(mode),
        )
        .unwrap();
        let (code, err) = serve_refused(dir.path());
        assert_ne!(code, 0, "{err}");
        assert!(err.contains("admin socket directory"), "{mode:o}: {err}");
        assert!(!dir.path().join("data/admin.sock").exists());
    }
}

#[test]
fn a_socket_directory_of_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    config_in(dir.path());
    let data = dir.path().join("data");
    let me = std::fs::metadata(dir.path()).unwrap().uid();
    if me != 0 {
        eprintln!("skipped: needs root to give the directory to another user");
        return;
    }
    // nobody:nogroup
    let ok = Command::new("chown")
        .arg("65534:65534")
        .arg(&data)
        .status()
        .unwrap();
    assert!(ok.success());
    let (code, err) = serve_refused(dir.path());
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
}

#[test]
fn a_regular_file_or_a_live_socket_at_the_path_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    config_in(dir.path());
    let sock = dir.path().join("data/admin.sock");
    std::fs::write(&sock, "precious").unwrap();
    let (code, err) = serve_refused(dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "precious");

    std::fs::remove_file(&sock).unwrap();
    let _live = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (code, err) = serve_refused(dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("in use"), "{err}");
    assert!(sock.exists(), "a live socket was removed");
}

#[test]
fn the_socket_is_private_from_birth_and_bodies_are_capped() {
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let meta = std::fs::metadata(pg.dir.path().join("data/admin.sock")).unwrap();
    assert_eq!(meta.mode() & 0o077, 0, "mode {:o}", meta.mode());
    let big = format!("{{\"user\":\"{}\"}}", "a".repeat(70 * 1024));
    let (status, body) = pg.admin("POST", "/v1/revoke-user", &big);
    assert_eq!(status, 413, "{body}");
    let (status, _) = pg.admin("GET", "/v1/nothing-here", "");
    assert_eq!(status, 404);
    // Still serving after both.
    assert_eq!(pg.argon2_runs(), 0);
}

#[test]
fn management_without_a_server_writes_audit_lines_too() {
    let dir = tempfile::tempdir().unwrap();
    config_in(dir.path());
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(dir.path().join("proxy.toml"))
            .env_remove("PASSGATE_CONFIG")
            .output()
            .unwrap()
    };
    let out = cli(&create_args("alice", "ci", &["repository:read"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("event=\"created\""))
        .unwrap_or_else(|| panic!("no audit line: {err}"));
    assert!(line.contains("peer=\"local\" reason=\"offline\""), "{line}");
    let password = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    assert!(!err.contains(&password[5..]), "the secret reached stderr");
    let id = &password[5..17];
    let out = cli(&["app-password", "revoke", id]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.contains("event=\"revoked\"") && l.contains(id)),
        "{err}"
    );
}

/// True when the tests run as root (else the uid tests skip with a notice).
fn root() -> bool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::metadata(dir.path()).unwrap().uid() == 0
}

/// `passgate ARGS --config CONFIG` run as uid (and gid) 65534, nobody.
fn cli_as_nobody(config: &Path, args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("PASSGATE_CONFIG")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap()
}

#[test]
fn a_peer_of_another_uid_is_refused_even_when_the_file_mode_lets_it_in() {
    // Issue #21: the socket's mode is the first fence, the peer-credential
    // check the second. Open the first (an operator's chmod) to test the
    // second: uid 65534 connects, and must get nothing.
    if !root() {
        eprintln!("skipped: needs root to run a client as another uid");
        return;
    }
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    pg.create("alice", "the-secret-name", &["repository:read"]);
    let socket = pg.dir.path().join("data/admin.sock");
    for (path, mode) in [
        (pg.dir.path().to_owned(), 0o755),
        (pg.dir.path().join("data"), 0o755),
        (pg.config.clone(), 0o644),
        (socket.clone(), 0o666),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let out = cli_as_nobody(&pg.config, &["app-password", "list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "uid 65534 was answered:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("the-secret-name"), "{stdout}");
    assert!(
        pg.wait_log("event=\"admin_refused\"", Duration::from_secs(10)),
        "no audit line:\n{}",
        pg.log_text()
    );
    assert!(pg.log_text().contains("uid=65534"), "{}", pg.log_text());
    // Root and the server's own uid are still served.
    assert_eq!(pg.argon2_runs(), 0);
}

#[test]
fn the_cli_refuses_a_server_running_as_another_uid() {
    // Issue #21: a socket planted by someone else could answer `revoke`
    // without revoking. Here the server runs as nobody; root's CLI must
    // refuse to talk to it (root trusts only itself), and say why.
    if !root() {
        eprintln!("skipped: needs root to run the server as another uid");
        return;
    }
    let backend = Backend::start();
    let pg = Passgate::start_as(&ConfigBuilder::new(&backend.url()), 65534);
    // Its own user is served...
    let out = cli_as_nobody(
        &pg.config,
        &create_args("alice", "ci", &["repository:read"]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let password = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let id = &password[5..17];
    // ...root is not: neither a revoke nor a list is sent.
    for args in [
        vec!["app-password", "revoke", id],
        vec!["app-password", "list"],
    ] {
        let out = pg.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("served by uid 65534"), "{stderr}");
    }
    // The password was not revoked.
    assert_eq!(
        get(
            pg.addr,
            "/alice/repo.git/info/refs?service=git-upload-pack",
            Some(("alice", &password))
        )
        .status,
        200
    );
}
