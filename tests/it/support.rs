//! Test harness: a real backend on 127.0.0.1:0, the real `passgate` binary
//! started on a generated config with ephemeral ports, and real clients.
//!
//! - [`Backend`]: an in-process hyper server that echoes what it received
//!   (method, path, query, headers) as JSON, and serves the streaming, slow and
//!   upgrade endpoints the tests need.
//! - [`Passgate`]: the binary under test; its stderr is captured line by line
//!   (for the bound port and for log scraping); killed on drop.
//! - [`Certs`]: a CA and a server certificate for 127.0.0.1/localhost (rcgen).
//! - clients: [`http1`], [`get`], [`raw`], and TLS/HTTP-2 connectors.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub const BIN: &str = env!("CARGO_BIN_EXE_passgate");

/// Fast argon2 parameters so tests that create many passwords stay quick.
pub const FAST_ARGON2: &str = "[auth.argon2]\nmemory_kib = 256\niterations = 1\nparallelism = 1\n";

// ---------------------------------------------------------------- backend --

/// What the backend saw, as echoed back in JSON by its default handler.
#[derive(Debug, serde::Deserialize)]
pub struct Echo {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub version: String,
    /// Header name (lower case) → every value, in order.
    pub headers: BTreeMap<String, Vec<String>>,
    pub body_len: u64,
    /// Names of the request trailers the backend received.
    #[serde(default)]
    pub trailers: Vec<String>,
}

impl Echo {
    /// The one value of header `name`; a request that carried it twice
    /// fails the test (a second, forged copy must never hide behind the
    /// first). Read `headers` directly where several are expected.
    pub fn header(&self, name: &str) -> Option<&str> {
        let values = self.headers.get(&name.to_ascii_lowercase())?;
        assert!(
            values.len() == 1,
            "the backend got {} {name} headers: {values:?}",
            values.len()
        );
        values.first().map(String::as_str)
    }
    pub fn has(&self, name: &str) -> bool {
        self.headers.contains_key(&name.to_ascii_lowercase())
    }
}

/// A real HTTP/1.1 server on 127.0.0.1:0, run on its own runtime thread.
///
/// Endpoints: anything → JSON [`Echo`] (the request body is read and counted);
/// `/slow?ms=N` → waits N ms before answering; `/bytes?n=N` → streams N bytes
/// in 64 KiB chunks; `/chunked` → a chunked body of three parts; `/ws` →
/// answers `101` to an Upgrade and echoes the upgraded bytes.
pub struct Backend {
    pub addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Backend {
    pub fn start() -> Backend {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = service_fn(backend_handle);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend {
            addr,
            _runtime: runtime,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

type TestBody = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).boxed()
}

fn query_num(q: Option<&str>, key: &str) -> Option<u64> {
    q?.split('&').find_map(|kv| {
        kv.strip_prefix(&format!("{key}="))
            .and_then(|v| v.parse().ok())
    })
}

async fn backend_handle(mut req: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    if path == "/ws" && req.headers().contains_key("upgrade") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(full(""))
            .unwrap();
        return Ok(resp);
    }
    if path == "/slow" {
        let ms = query_num(query.as_deref(), "ms").unwrap_or(5000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path == "/bytes" {
        let n = query_num(query.as_deref(), "n").unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_util::stream::unfold(n, move |left| {
            let chunk = chunk.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let take = left.min(chunk.len() as u64);
                Some((
                    Ok::<_, Infallible>(Frame::data(chunk.slice(..take as usize))),
                    left - take,
                ))
            }
        });
        let resp = Response::builder()
            .header("content-length", n.to_string())
            .body(StreamBody::new(stream).boxed())
            .unwrap();
        return Ok(resp);
    }
    if path == "/chunked" {
        let parts = ["alpha-", "beta-", "gamma"];
        let stream = futures_util::stream::iter(
            parts.map(|p| Ok::<_, Infallible>(Frame::data(Bytes::from(p)))),
        );
        return Ok(Response::new(StreamBody::new(stream).boxed()));
    }
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let mut body = req.into_body();
    let mut body_len = 0u64;
    let mut trailers: Vec<String> = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                body_len += f.data_ref().map_or(0, |d| d.len() as u64);
                if let Some(t) = f.trailers_ref() {
                    trailers.extend(t.keys().map(|k| k.as_str().to_owned()));
                }
            }
            Err(_) => break,
        }
    }
    let echo = serde_json::json!({
        "method": method, "path": path, "query": query, "version": version,
        "headers": headers, "body_len": body_len, "trailers": trailers,
    });
    let resp = Response::builder()
        .header("content-type", "application/json")
        .header("x-backend", "echo")
        .body(full(echo.to_string()))
        .unwrap();
    Ok(resp)
}

// ------------------------------------------------------------------ certs --

/// A CA and a leaf for 127.0.0.1 and localhost, written as PEM files.
pub struct Certs {
    pub ca_pem: String,
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Certs {
    /// Generates a fresh CA + leaf into `dir` (files `ca.pem`, `cert.pem`, `key.pem`).
    pub fn generate(dir: &Path, cn: &str) -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{cn} test CA"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf_params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        leaf_params.distinguished_name.push(DnType::CommonName, cn);
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        let certs = Certs {
            ca_pem: ca.pem(),
            ca_path: dir.join("ca.pem"),
            cert_path: dir.join("cert.pem"),
            key_path: dir.join("key.pem"),
        };
        std::fs::write(&certs.ca_path, ca.pem()).unwrap();
        std::fs::write(&certs.cert_path, leaf.pem() + &ca.pem()).unwrap();
        std::fs::write(&certs.key_path, leaf_key.serialize_pem()).unwrap();
        certs
    }

    /// A rustls client config trusting this CA, offering the given ALPN protocols.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

// --------------------------------------------------------------- passgate --

/// Builds a `proxy.toml` for a test: `listen` on port 0, paths in a tempdir.
pub struct ConfigBuilder {
    pub upstream: String,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Extra top-level TOML inserted into the relevant sections.
    pub server_extra: String,
    pub auth_extra: String,
    pub extra: String,
    /// `[[routes]]` TOML; when empty, [`default_routes`] is used.
    pub routes: String,
}

impl ConfigBuilder {
    pub fn new(upstream: &str) -> ConfigBuilder {
        ConfigBuilder {
            upstream: upstream.to_owned(),
            tls: None,
            server_extra: String::new(),
            auth_extra: String::new(),
            extra: FAST_ARGON2.to_owned(),
            routes: String::new(),
        }
    }

    pub fn render(&self) -> String {
        let tls = match &self.tls {
            Some((c, k)) => format!(
                "[server.tls]\ncert = {:?}\nkey = {:?}\n",
                c.display().to_string(),
                k.display().to_string()
            ),
            None => String::new(),
        };
        let routes = if self.routes.is_empty() {
            default_routes()
        } else {
            self.routes.clone()
        };
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n{}\n{tls}\n[store]\npath = \"data/passgate.redb\"\n\n[admin]\nsocket = \"data/admin.sock\"\n\n[auth]\nrealm = \"passgate-test\"\n{}\n{}\n[upstreams.app]\nurl = \"{}\"\n\n{routes}",
            self.server_extra, self.auth_extra, self.extra, self.upstream
        )
    }
}

/// The default routes plus a public `/slow` route to `backend` through an
/// upstream `slow` whose `response_timeout` is `timeout` (e.g. `"1s"`).
pub fn slow_upstream(backend: &Backend, timeout: &str) -> ConfigBuilder {
    let mut b = ConfigBuilder::new(&backend.url());
    b.extra = format!(
        "{FAST_ARGON2}\n[upstreams.slow]\nurl = \"{}\"\nresponse_timeout = \"{timeout}\"\n",
        backend.url()
    );
    b.routes = format!(
        "[[routes]]\nname = \"slow\"\npath = \"/slow\"\naccess = \"public\"\nupstream = \"slow\"\n{}",
        default_routes()
    );
    b
}

/// The routes most tests use: git-like app-password routes, a deny, a public
/// and a web catch-all, all to upstream `app`.
pub fn default_routes() -> String {
    [
        GIT_ROUTES,
        API_ROUTE,
        ADMIN_DENY_ROUTE,
        PUBLIC_ROUTE,
        WEB_ROUTE,
    ]
    .concat()
}

/// `git-fetch`, `git-push-refs`, `git-receive`: git's smart HTTP on
/// `/{owner}/{repo}.git/…`, needing `repository:read` / `repository:write`.
pub const GIT_ROUTES: &str = r#"
[[routes]]
name = "git-fetch"
methods = ["GET"]
path = "/{owner}/{repo}.git/info/refs"
query = { service = "git-upload-pack" }
access = "app-password"
scopes = ["repository:read"]
upstream = "app"

[[routes]]
name = "git-push-refs"
methods = ["GET"]
path = "/{owner}/{repo}.git/info/refs"
query = { service = "git-receive-pack" }
access = "app-password"
scopes = ["repository:write"]
upstream = "app"

[[routes]]
name = "git-receive"
methods = ["POST"]
path = "/{owner}/{repo}.git/git-receive-pack"
access = "app-password"
scopes = ["repository:write"]
upstream = "app"
"#;

/// All of git's smart HTTP, what the real git CLI needs: [`GIT_ROUTES`] and
/// `git-upload`, the POST of a fetch or a clone (`repository:read`).
pub fn git_cli_routes() -> String {
    let upload = r#"
[[routes]]
name = "git-upload"
methods = ["POST"]
path = "/{owner}/{repo}.git/git-upload-pack"
access = "app-password"
scopes = ["repository:read"]
upstream = "app"
"#;
    [GIT_ROUTES, upload].concat()
}

/// `api`: `/api/**` with an app password holding `repository:read`.
pub const API_ROUTE: &str = r#"
[[routes]]
name = "api"
path = "/api/**"
access = "app-password"
scopes = ["repository:read"]
upstream = "app"
"#;

/// `admin`: `/admin/**` refused (403).
pub const ADMIN_DENY_ROUTE: &str = r#"
[[routes]]
name = "admin"
path = "/admin/**"
access = "deny"
"#;

/// `public`: `/public/**` with no credentials.
pub const PUBLIC_ROUTE: &str = r#"
[[routes]]
name = "public"
path = "/public/**"
access = "public"
upstream = "app"
"#;

/// `web`: everything else, for a browser session (never an app password).
pub const WEB_ROUTE: &str = r#"
[[routes]]
name = "web"
path = "/**"
access = "web"
upstream = "app"
"#;

/// A gateway in front of a fresh echo backend, the default routes, and
/// `auth_extra` in `[auth]` (limits, verifier settings).
pub fn gateway_with_auth(auth_extra: &str) -> (Backend, Passgate) {
    let backend = Backend::start();
    let mut b = ConfigBuilder::new(&backend.url());
    b.auth_extra = auth_extra.to_owned();
    let pg = Passgate::start(&b);
    (backend, pg)
}

/// As [`gateway_with_auth`], with the production argon2 parameters instead
/// of [`FAST_ARGON2`]: for what an attacker would time or load.
pub fn gateway_with_production_argon2(auth_extra: &str) -> (Backend, Passgate) {
    let backend = Backend::start();
    let mut b = ConfigBuilder::new(&backend.url());
    b.extra = String::new();
    b.auth_extra = auth_extra.to_owned();
    let pg = Passgate::start(&b);
    (backend, pg)
}

/// The real binary, serving a generated config from its own temp directory.
pub struct Passgate {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub addr: SocketAddr,
    pub tls: bool,
    child: Option<Child>,
    /// Every stderr line so far (logs).
    pub logs: Arc<Mutex<Vec<String>>>,
    /// A soft open-files limit to start the process under (`ulimit -Sn`).
    soft_nofile: Option<u64>,
    /// Turns true once the current process's stderr reached its end: every
    /// line it wrote is then in `logs`.
    stderr_closed: Arc<std::sync::atomic::AtomicBool>,
    /// The uid (and gid) to run the process as, when the test runs as root.
    run_as: Option<u32>,
}

impl Passgate {
    /// Writes the config into a fresh temp dir and starts `passgate serve`.
    pub fn start(builder: &ConfigBuilder) -> Passgate {
        let dir = tempfile::tempdir().unwrap();
        Passgate::start_in(dir, builder)
    }

    pub fn start_in(dir: tempfile::TempDir, builder: &ConfigBuilder) -> Passgate {
        Passgate::start_under(dir, builder, None)
    }

    /// Starts `passgate serve` as `uid` (gid the same) on a directory that
    /// user owns; the test must run as root.
    pub fn start_as(builder: &ConfigBuilder, uid: u32) -> Passgate {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("proxy.toml");
        std::fs::write(&config, builder.render()).unwrap();
        let owned = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{uid}"))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(owned.success(), "chown {uid} {}", dir.path().display());
        let mut pg = Passgate::unstarted(dir, config, builder.tls.is_some(), None, Some(uid));
        pg.spawn();
        pg
    }

    /// A process not yet started, on `config` in `dir`; [`Passgate::spawn`] starts it.
    fn unstarted(
        dir: tempfile::TempDir,
        config: PathBuf,
        tls: bool,
        soft_nofile: Option<u64>,
        run_as: Option<u32>,
    ) -> Passgate {
        Passgate {
            dir,
            config,
            addr: "127.0.0.1:0".parse().unwrap(),
            tls,
            child: None,
            logs: Arc::new(Mutex::new(Vec::new())),
            soft_nofile,
            stderr_closed: Arc::default(),
            run_as,
        }
    }

    /// Starts `passgate serve` under a soft open-files limit of `soft`.
    pub fn start_with_open_files(builder: &ConfigBuilder, soft: u64) -> Passgate {
        Passgate::start_under(tempfile::tempdir().unwrap(), builder, Some(soft))
    }

    fn start_under(
        dir: tempfile::TempDir,
        builder: &ConfigBuilder,
        soft_nofile: Option<u64>,
    ) -> Passgate {
        let config = dir.path().join("proxy.toml");
        std::fs::write(&config, builder.render()).unwrap();
        let mut pg = Passgate::unstarted(dir, config, builder.tls.is_some(), soft_nofile, None);
        pg.spawn();
        pg
    }

    /// (Re)starts the process on the same config and store.
    pub fn spawn(&mut self) {
        let mut command = match self.soft_nofile {
            // The shell execs passgate: same process, the lowered limit.
            Some(soft) => {
                let mut c = Command::new("sh");
                c.args([
                    "-c",
                    &format!("ulimit -Sn {soft} && exec \"$0\" \"$@\""),
                    BIN,
                ]);
                c
            }
            None => Command::new(BIN),
        };
        if let Some(uid) = self.run_as {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        let mut child = command
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env_remove("PASSGATE_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = self.logs.clone();
        self.stderr_closed = Arc::default();
        let closed = self.stderr_closed.clone();
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        // Human lines end the address with a space, JSON lines with a quote.
                        let addr: String = rest
                            .split("://")
                            .nth(1)
                            .unwrap_or("")
                            .chars()
                            .take_while(|c| {
                                c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']')
                            })
                            .collect();
                        if let Ok(a) = addr.parse() {
                            let _ = tx.send(a);
                            sent = true;
                        }
                    }
                }
                logs.lock().unwrap().push(line);
            }
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => self.addr = addr,
            Err(_) => {
                let _ = child.kill();
                panic!("passgate did not start; logs:\n{}", self.log_text());
            }
        }
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Runs the CLI against this instance's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("PASSGATE_CONFIG")
            .output()
            .unwrap()
    }

    /// Creates an app password through the CLI; returns (id, password).
    pub fn create(&self, user: &str, name: &str, scopes: &[&str]) -> (String, String) {
        id_and_password(&self.create_json(user, name, scopes, &[]))
    }

    /// Like [`Passgate::create`], expiring after `expires_in` (e.g. "2s").
    pub fn create_expiring(
        &self,
        user: &str,
        name: &str,
        scopes: &[&str],
        expires_in: &str,
    ) -> (String, String) {
        id_and_password(&self.create_json(user, name, scopes, &["--expires-in", expires_in]))
    }

    /// `app-password create --json` with `extra` flags (`--repo`,
    /// `--expires-in`, …): the whole answer ([`id_and_password`] takes the
    /// two that matter most).
    pub fn create_json(
        &self,
        user: &str,
        name: &str,
        scopes: &[&str],
        extra: &[&str],
    ) -> serde_json::Value {
        let mut args = create_args(user, name, scopes);
        args.push("--json");
        args.extend_from_slice(extra);
        self.cli_json(&args)
    }

    /// `app-password rotate ID --json` with `extra` flags: the successor's JSON.
    pub fn rotate_json(&self, id: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["app-password", "rotate", id, "--json"];
        args.extend_from_slice(extra);
        self.cli_json(&args)
    }

    /// Runs a CLI command that must succeed and print JSON; the JSON.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        output_json(&self.cli(args), args)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code (None when it
    /// is still running after `limit`; a death by signal fails the test).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                let code = status.code();
                assert!(code.is_some(), "passgate died: {status}");
                return code;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends `sig` (`TERM` or `INT`), then waits up to `limit` for the
    /// process to exit and for the last line of its stderr: afterwards
    /// [`Passgate::log_text`] holds every line it wrote, shutdown flush
    /// included. Returns the exit code; fails the test when it did not exit.
    pub fn stop(&mut self, sig: &str, limit: Duration) -> i32 {
        self.signal(sig);
        self.wait_stopped(limit)
    }

    /// [`Passgate::stop`] without sending anything: for a process already
    /// told to stop.
    pub fn wait_stopped(&mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        let code = self.wait_exit(limit).unwrap_or_else(|| {
            panic!(
                "passgate did not exit within {limit:?}; logs:\n{}",
                self.log_text()
            )
        });
        while !self.stderr_closed.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                start.elapsed() < limit,
                "passgate exited but its stderr stayed open"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        code
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Resident set size now (`VmRSS`) and at its peak (`VmHWM`), in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/PID/status:\n{status}"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// One HTTP/1.1 request over the admin socket: (status, body).
    pub fn admin(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let socket = self.dir.path().join("data/admin.sock");
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("admin socket answer");
        let status = raw_status(&out);
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        (status, body)
    }

    /// argon2id runs the server has started (admin `GET /v1/stats`).
    pub fn argon2_runs(&self) -> u64 {
        let (status, body) = self.admin("GET", "/v1/stats", "");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["argon2_runs"].as_u64().unwrap()
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle` (logs are written asynchronously).
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.logs.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Passgate {
    fn drop(&mut self) {
        self.kill9();
    }
}

// -------------------------------------------------------------------- cli --

/// `app-password create --user USER --name NAME --scope S…`.
pub fn create_args<'a>(user: &'a str, name: &'a str, scopes: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["app-password", "create", "--user", user, "--name", name];
    for s in scopes {
        args.push("--scope");
        args.push(s);
    }
    args
}

/// The JSON a CLI run printed; a run that failed (exit code not 0) fails the
/// test, naming `args` and showing its stderr.
pub fn output_json(out: &Output, args: &[&str]) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The id and password of a `create --json` or `rotate --json` answer.
pub fn id_and_password(v: &serde_json::Value) -> (String, String) {
    (
        v["id"].as_str().unwrap().to_owned(),
        v["password"].as_str().unwrap().to_owned(),
    )
}

/// Starts the binary with `args` and `--config config` (never inheriting
/// `$PASSGATE_CONFIG`); stderr piped, stdout as given.
pub fn spawn_bin(args: &[&str], config: &Path, stdout: Stdio) -> Child {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("PASSGATE_CONFIG")
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `passgate serve` on `config` and expects it to exit by itself
/// within 30 s (running longer fails the test): (exit code, stderr).
pub fn serve_exits(config: &Path) -> (Option<i32>, String) {
    let mut child = spawn_bin(&["serve"], config, Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("passgate serve kept running on {}", config.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    (status.code(), stderr)
}

// ------------------------------------------------------------------ store --

/// Writes a redb store as schema 1 (the release before repository and
/// address limits) wrote it, holding one `repository:read` password of
/// alice's named "old laptop", last used at `last_used` (Unix seconds,
/// address) if given. Returns (id, password).
pub fn schema_1_store(file: &Path, last_used: Option<(u64, &str)>) -> (String, String) {
    use passgate::auth::token::NewToken;
    let token = NewToken::generate();
    let argon2 = passgate::config::Argon2Params {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };
    let hash = passgate::auth::verify::hash_secret(token.secret(), &argon2).unwrap();
    let record = serde_json::json!({
        "id": token.id(), "user": "alice", "name": "old laptop",
        "scopes": ["repository:read"], "hash": hash, "created_at": 1_700_000_000u64,
        "expires_at": null, "revoked_at": null,
        "last_used_at": last_used.map(|(at, _)| at),
        "last_used_addr": last_used.map(|(_, addr)| addr),
    })
    .to_string();
    let db = redb::Database::create(file).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let meta: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta)
            .unwrap()
            .insert("schema_version", 1)
            .unwrap();
        let records: redb::TableDefinition<'_, &str, &[u8]> =
            redb::TableDefinition::new("app_passwords");
        txn.open_table(records)
            .unwrap()
            .insert(token.id(), record.as_bytes())
            .unwrap();
        let index: redb::MultimapTableDefinition<'_, &str, &str> =
            redb::MultimapTableDefinition::new("user_index");
        txn.open_multimap_table(index)
            .unwrap()
            .insert("alice", token.id())
            .unwrap();
    }
    txn.commit().unwrap();
    (token.id().to_owned(), token.token().expose().to_owned())
}

/// A loopback port free a moment ago, for a program that must be told its
/// port (a browser driver, a database server, a recipe's config) rather
/// than binding port 0 itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------- clients --

/// Basic credentials header value.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub version: http::Version,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn echo(&self) -> Echo {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {} {}", self.status, self.text()))
    }
}

/// One HTTP/1.1 request over plain TCP with hyper; `headers` are sent as given.
pub fn http1(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    block_on(http1_async_from(None, addr, method, target, headers, body))
}

/// GET `target` over HTTP/1.1 with optional Basic credentials.
pub fn get(addr: SocketAddr, target: &str, auth: Option<(&str, &str)>) -> Reply {
    match auth {
        Some((u, p)) => {
            let v = basic(u, p);
            http1(addr, "GET", target, &[("authorization", &v)], b"")
        }
        None => http1(addr, "GET", target, &[], b""),
    }
}

/// Reads a response whole; a body that breaks off fails the test (a
/// truncated body is never mistaken for an empty one).
pub async fn collect(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes().to_vec(),
        Err(e) => panic!(
            "the body of a {} response broke off: {e} (headers {:?})",
            parts.status, parts.headers
        ),
    };
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        version: parts.version,
    }
}

/// Writes raw bytes and reads until the server closes (or resets) the
/// connection or one whole response has arrived. For requests hyper's client
/// would refuse to send (bad targets, smuggling). Neither within `limit` fails
/// the test, showing what did arrive: a hung server is never read as a
/// closed one.
pub fn raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timed_out = || {
            panic!(
                "no whole response and no close within {limit:?}; got {:?}",
                String::from_utf8_lossy(&out)
            )
        };
        if left.is_zero() {
            timed_out();
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // One response is enough when the server keeps the connection open.
                if response_complete(&out) {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                timed_out()
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A reset is the server closing the connection.
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn response_complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some(head_end) = text.find("\r\n\r\n") else {
        return false;
    };
    let head = text[..head_end].to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match len {
        Some(n) => buf.len() >= head_end + 4 + n,
        // A response that has no body by its status.
        None if matches!(raw_status(&text), 204 | 304) => true,
        None => head.contains("transfer-encoding: chunked") && text.ends_with("\r\n0\r\n\r\n"),
    }
}

/// The status code of a raw HTTP/1.1 response text (0 when there is none).
pub fn raw_status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A hyper client over TLS with the given ALPN (e.g. `&[b"h2"]`), one request.
pub async fn tls_request(
    addr: SocketAddr,
    certs: &Certs,
    alpn: &[&[u8]],
    req: Request<Full<Bytes>>,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(certs.client_config(alpn));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, stream).await.unwrap();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        collect(send.send_request(req).await.unwrap()).await
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        collect(send.send_request(req).await.unwrap()).await
    }
}

/// Runs an async block on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

// ------------------------------------------------- auth/attack helpers --

impl Passgate {
    /// Starts `passgate serve` on a config file given verbatim (e.g. the
    /// shipped `proxy.toml` with its listen address rewritten to port 0);
    /// relative paths in it resolve inside the fresh temp dir.
    pub fn start_text(config_text: &str) -> Passgate {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("proxy.toml");
        std::fs::write(&config, config_text).unwrap();
        let mut pg = Passgate::unstarted(dir, config, false, None, None);
        pg.spawn();
        pg
    }
}

/// One HTTP/1.1 request whose client socket is bound to `local` first (any
/// 127.0.0.0/8 address works on Linux loopback), so tests can act as several
/// client addresses; `None` lets the OS choose.
pub async fn http1_async_from(
    local: Option<std::net::IpAddr>,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4().unwrap(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6().unwrap(),
    };
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
    }
    let stream = socket.connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(target);
    let mut has_host = false;
    for (k, v) in headers {
        has_host |= k.eq_ignore_ascii_case("host");
        req = req.header(*k, *v);
    }
    if !has_host {
        req = req.header("host", addr.to_string());
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let resp = send.send_request(req).await.unwrap();
    collect(resp).await
}

/// One GET of `target` per `Authorization` value, all at once (a thread and
/// a connection each, from `local`); the statuses in the same order.
pub fn concurrent_gets(
    local: std::net::IpAddr,
    addr: SocketAddr,
    target: &str,
    authorizations: Vec<String>,
) -> Vec<u16> {
    let threads: Vec<_> = authorizations
        .into_iter()
        .map(|auth| {
            let target = target.to_owned();
            std::thread::spawn(move || {
                http1_from(
                    local,
                    addr,
                    "GET",
                    &target,
                    &[("authorization", &auth)],
                    b"",
                )
                .status
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// [`http1`] from a chosen local address (see [`http1_async_from`]).
pub fn http1_from(
    local: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    block_on(http1_async_from(
        Some(local),
        addr,
        method,
        target,
        headers,
        body,
    ))
}

// ------------------------------------------------------ git helpers --

impl Passgate {
    /// Starts `passgate serve` on a config given whole (e.g. the shipped
    /// `proxy.toml`, adapted), written as `proxy.toml` into `dir`, so relative
    /// paths in it resolve there. TLS is on when it has a `[server.tls]` table.
    #[allow(clippy::unwrap_used)]
    pub(crate) fn start_raw(dir: tempfile::TempDir, toml: &str) -> Passgate {
        let config = dir.path().join("proxy.toml");
        std::fs::write(&config, toml).unwrap();
        let tls = toml
            .lines()
            .any(|l| l.trim_start().starts_with("[server.tls]"));
        let mut pg = Passgate::unstarted(dir, config, tls, None, None);
        pg.spawn();
        pg
    }
}

// ------------------------------------------------------ TLS backend --

impl Backend {
    /// The echo backend behind TLS (certificate from `certs`, HTTP/1.1 only).
    pub fn start_tls(certs: &Certs) -> Backend {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = passgate::tls::server_config(&certs.cert_path, &certs.key_path).unwrap();
        let mut config = config;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(backend_handle);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Backend {
            addr,
            _runtime: runtime,
        }
    }
}

// ------------------------------------------------------- raw backends --

/// One line, CRLF kept; `None` at end of stream or on a read error.
pub fn read_line(r: &mut impl BufRead) -> Option<String> {
    let mut line = Vec::new();
    match r.read_until(b'\n', &mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(String::from_utf8_lossy(&line).into_owned()),
    }
}

/// Reads a chunked body onto `body` and its trailer lines onto `trailers`;
/// false when the connection ended first.
pub fn read_chunked(r: &mut impl BufRead, body: &mut Vec<u8>, trailers: &mut String) -> bool {
    loop {
        let Some(size) = read_line(r) else {
            return false;
        };
        let hex = size.trim().split(';').next().unwrap_or("");
        let Ok(n) = usize::from_str_radix(hex, 16) else {
            return false;
        };
        if n == 0 {
            loop {
                match read_line(r) {
                    None => return false,
                    Some(line) if line == "\r\n" => return true,
                    Some(line) => trailers.push_str(&line),
                }
            }
        }
        let mut chunk = vec![0; n + 2];
        if r.read_exact(&mut chunk).is_err() {
            return false;
        }
        chunk.truncate(n);
        body.extend(chunk);
    }
}
