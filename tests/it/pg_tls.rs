//! TLS between passgate and PostgreSQL, against a private server started
//! for the test with `ssl = on` and a certificate from a CA made here
//! (rcgen): the server's `pg_hba.conf` accepts TCP connections only over
//! TLS (`hostssl`), so a connection that works is an encrypted one, and
//! `pg_stat_ssl` confirms it.
//!
//! What is checked is what docs/several-gateways.md promises for `sslmode`:
//! `verify-full` checks the chain and the host name, `verify-ca` only the
//! chain, `require` and `prefer` encrypt without checking, `disable` never
//! encrypts; a certificate from another CA (even one with the same name) is
//! refused with an error that says why.
//!
//! The server is `initdb` + `pg_ctl` from the PostgreSQL binaries
//! (`/usr/lib/postgresql/*/bin`, or `PASSGATE_PG_BIN`), run as the
//! `postgres` user when the test runs as root, on an ephemeral port and a
//! socket in its own temp dir. Without the binaries the tests print a notice
//! and pass, unless `PASSGATE_REQUIRE_PG=1`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::cli::{err, expect_code};
use crate::support::*;

/// The name in the server certificate; the tests reach it at 127.0.0.1
/// through libpq's `hostaddr`, so the name checked and the address dialled
/// can differ.
const SERVER_NAME: &str = "pg.test";

/// What passgate says of a certificate it does not accept.
const REFUSED: &str = "its TLS certificate was refused";

// ---------------------------------------------------------------- server --

/// A private PostgreSQL server with TLS on, stopped and deleted on drop.
struct TlsPg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The uid the server runs as (`None`: the test's own user).
    uid: Option<(u32, u32)>,
    /// The CA that signed the server certificate.
    ca: PathBuf,
    /// Another CA with the same name and a key of its own.
    other_ca: PathBuf,
}

impl TlsPg {
    /// `None` (with a notice) when the PostgreSQL binaries are missing,
    /// unless `PASSGATE_REQUIRE_PG=1`.
    fn start() -> Option<TlsPg> {
        let Some(bin) = pg_bin() else {
            if std::env::var_os("PASSGATE_REQUIRE_PG").is_some_and(|v| v == "1") {
                panic!("PostgreSQL binaries (initdb, pg_ctl) are required (PASSGATE_REQUIRE_PG=1)");
            }
            eprintln!("note: PostgreSQL TLS test skipped: no initdb/pg_ctl found");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let uid = server_user();
        let (ca, other_ca) = write_certs(dir.path());
        for f in ["server.crt", "server.key"] {
            own(&dir.path().join(f), uid);
        }
        own(dir.path(), uid);
        let mut pg = TlsPg {
            dir,
            bin,
            port: 0,
            uid,
            ca,
            other_ca,
        };
        let initdb = pg
            .command("initdb")
            .args(["-D", "data", "-U", "postgres", "-A", "trust", "--no-sync"])
            .args(["-E", "UTF8", "--locale=C"])
            .output()
            .unwrap();
        assert!(initdb.status.success(), "initdb: {}", err(&initdb));
        std::fs::write(
            pg.dir.path().join("data/pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        // The port is free when chosen; another process may take it before
        // the server binds it, so a failed start is tried again.
        for _ in 0..3 {
            pg.port = free_port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c ssl=on \
                 -c ssl_cert_file={} -c ssl_key_file={} -c fsync=off",
                pg.port,
                pg.dir.path().display(),
                pg.dir.path().join("server.crt").display(),
                pg.dir.path().join("server.key").display(),
            );
            let started = pg
                .command("pg_ctl")
                .args(["-D", "data", "-l", "server.log", "-w", "-t", "60", "-o"])
                .arg(&options)
                .arg("start")
                .output()
                .unwrap();
            if started.status.success() {
                return Some(pg);
            }
            eprintln!(
                "pg_ctl start failed: {}{}",
                err(&started),
                std::fs::read_to_string(pg.dir.path().join("server.log")).unwrap_or_default()
            );
        }
        panic!("the private PostgreSQL server did not start");
    }

    /// A binary of the server's, run as its user in its directory.
    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin.join(name));
        c.current_dir(self.dir.path()).stdin(Stdio::null());
        if let Some((uid, gid)) = self.uid {
            c.uid(uid).gid(gid);
        }
        c
    }

    /// A database URL for passgate: `host` is the name checked, the
    /// connection always goes to 127.0.0.1; `query` the URL's parameters.
    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/postgres?hostaddr=127.0.0.1&{query}",
            self.port
        )
    }

    /// Runs `sql` over the server's Unix socket; the first column of each row.
    fn query(&self, sql: &str) -> Vec<String> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.dir.path())
            .port(self.port)
            .user("postgres")
            .dbname("postgres");
        let sql = sql.to_owned();
        block_on(async move {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
            let driver = tokio::spawn(conn);
            let rows = client.simple_query(&sql).await.unwrap();
            drop(client);
            let _ = driver.await;
            rows.into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap_or("").to_owned())
                    }
                    _ => None,
                })
                .collect()
        })
    }
}

impl Drop for TlsPg {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", "data", "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The directory holding `initdb` and `pg_ctl`: `PASSGATE_PG_BIN`, else
/// the newest `/usr/lib/postgresql/*/bin`.
fn pg_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PASSGATE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// `initdb` refuses root: as root, the server runs as `postgres`.
fn server_user() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> u32 {
        let o = Command::new("id").args(args).output().unwrap();
        assert!(o.status.success(), "id {args:?}: {}", err(&o));
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    if id(&["-u"]) != 0 {
        return None;
    }
    Some((id(&["-u", "postgres"]), id(&["-g", "postgres"])))
}

fn own(path: &Path, uid: Option<(u32, u32)>) {
    if let Some((uid, gid)) = uid {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// Writes `server.crt` (for [`SERVER_NAME`] only), `server.key` (mode
/// 0600), `ca.pem` (its CA) and `other-ca.pem` (a CA with the same
/// distinguished name and another key); returns the two CA paths.
fn write_certs(dir: &Path) -> (PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use std::os::unix::fs::PermissionsExt;
    let ca_params = || {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "passgate pg_tls test CA");
        p
    };
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params().self_signed(&ca_key).unwrap();
    let other = ca_params()
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec![SERVER_NAME.to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, SERVER_NAME);
    let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("server.crt"), leaf.pem()).unwrap();
    let key = dir.join("server.key");
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ca_path, other_path) = (dir.join("ca.pem"), dir.join("other-ca.pem"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&other_path, other.pem()).unwrap();
    (ca_path, other_path)
}

// ---------------------------------------------------------------- passgate --

/// A `proxy.toml` whose store is `url`, in a fresh temp dir.
fn config(backend: &str, url: &str) -> (tempfile::TempDir, PathBuf) {
    let text = ConfigBuilder::new(backend).render();
    let path = "path = \"data/passgate.redb\"";
    assert!(text.contains(path));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, text.replacen(path, &format!("url = {url:?}"), 1)).unwrap();
    (dir, file)
}

/// `passgate app-password list` with no server running: the CLI opens the
/// store itself, so this is one connection made as `url` says.
fn list_offline(url: &str) -> Output {
    let (_dir, file) = config("http://127.0.0.1:9", url);
    Command::new(BIN)
        .args(["app-password", "list", "--json", "--config"])
        .arg(&file)
        .env_remove("PASSGATE_CONFIG")
        .output()
        .unwrap()
}

fn assert_connects(what: &str, url: &str) {
    let o = list_offline(url);
    assert!(
        o.status.success(),
        "{what}: should connect, got exit {:?}: {}",
        o.status.code(),
        err(&o)
    );
}

/// The CLI exits 1 naming the database and the TLS reason.
fn assert_refused(what: &str, url: &str, reason: &str) {
    let o = list_offline(url);
    expect_code(&o, 1);
    let e = err(&o);
    assert!(
        e.contains("postgres://postgres@") && e.contains(reason),
        "{what}: the error should name the database and say {reason:?}: {e}"
    );
    eprintln!("{what}: {}", e.trim());
}

// ---------------------------------------------------------------- tests --

#[test]
fn gateway_serves_with_its_store_over_verified_tls() {
    let Some(pg) = TlsPg::start() else { return };
    let backend = Backend::start();
    let url = pg.url(
        SERVER_NAME,
        &format!("sslmode=verify-full&sslrootcert={}", pg.ca.display()),
    );
    let (_dir, file) = config(&backend.url(), &url);
    let gw = Passgate::start_text(&std::fs::read_to_string(&file).unwrap());
    let (id, password) = gw.create("alice", "ci", &["repository:read"]);
    assert_eq!(
        get(gw.addr, "/api/x", Some(("alice", &password))).status,
        200
    );
    expect_code(&gw.cli(&["app-password", "revoke", &id]), 0);
    assert_eq!(
        get(gw.addr, "/api/x", Some(("alice", &password))).status,
        401
    );

    // Every connection passgate holds (the pool's and the listener's) is encrypted.
    let ssl = pg.query(
        "SELECT s.ssl::text FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = 'passgate'",
    );
    assert!(!ssl.is_empty(), "no passgate connection seen");
    assert!(ssl.iter().all(|s| s == "true"), "{ssl:?}");
}

#[test]
fn a_certificate_from_another_ca_is_refused_at_start() {
    let Some(pg) = TlsPg::start() else { return };
    // The impostor CA has the trusted CA's name but not its key.
    let url = pg.url(
        SERVER_NAME,
        &format!("sslmode=verify-full&sslrootcert={}", pg.other_ca.display()),
    );
    let (_dir, file) = config("http://127.0.0.1:9", &url);
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .env_remove("PASSGATE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("serve kept running with an untrusted database certificate");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let o = child.wait_with_output().unwrap();
    let e = err(&o);
    assert_eq!(status.code(), Some(1), "{e}");
    assert!(e.contains(REFUSED), "the error should say why: {e}");
    assert_refused("verify-full, another CA", &url, "certificate");
}

#[test]
fn sslmodes_behave_as_documented() {
    let Some(pg) = TlsPg::start() else { return };
    let (ca, other) = (pg.ca.display(), pg.other_ca.display());
    let by_address = "127.0.0.1";

    // verify-full: the chain and the name.
    let full = format!("sslmode=verify-full&sslrootcert={ca}");
    assert_connects("verify-full", &pg.url(SERVER_NAME, &full));
    assert_refused(
        "verify-full, the name not in the certificate",
        &pg.url(by_address, &full),
        REFUSED,
    );
    assert_refused(
        "verify-full, another CA",
        &pg.url(
            SERVER_NAME,
            &format!("sslmode=verify-full&sslrootcert={other}"),
        ),
        REFUSED,
    );
    // Without sslrootcert the Mozilla roots are used: a private CA is unknown.
    assert_refused(
        "verify-full, the public roots",
        &pg.url(SERVER_NAME, "sslmode=verify-full"),
        REFUSED,
    );

    // verify-ca: the chain only.
    let ca_only = format!("sslmode=verify-ca&sslrootcert={ca}");
    assert_connects("verify-ca, by address", &pg.url(by_address, &ca_only));
    assert_refused(
        "verify-ca, another CA",
        &pg.url(
            by_address,
            &format!("sslmode=verify-ca&sslrootcert={other}"),
        ),
        REFUSED,
    );

    // require and prefer encrypt without checking (libpq's meaning); the
    // server takes nothing else over TCP, so connecting proves encryption.
    assert_connects("require", &pg.url(by_address, "sslmode=require"));
    assert_connects("prefer", &pg.url(by_address, "sslmode=prefer"));
    assert_connects("no sslmode (prefer)", &pg.url(by_address, ""));

    // disable never encrypts: this server refuses it.
    assert_refused(
        "disable",
        &pg.url(by_address, "sslmode=disable"),
        "no encryption",
    );

    // A root file without a certificate is named.
    let empty = pg.dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let o = list_offline(&pg.url(
        SERVER_NAME,
        &format!("sslmode=verify-full&sslrootcert={}", empty.display()),
    ));
    expect_code(&o, 1);
    assert!(err(&o).contains("empty.pem"), "{}", err(&o));
}
