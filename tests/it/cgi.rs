//! A CGI runner serving `git http-backend` (the program shipped with git) over
//! HTTP/1.1 on 127.0.0.1:0: the real Git smart-HTTP server behind the gateway.
//!
//! Each request spawns `git http-backend` with the CGI environment; the request
//! body is streamed into its stdin and its stdout streamed back (CGI headers
//! parsed, the rest passed on as the body), both through small bounded channels,
//! so a 200 MB push never sits in memory. `REMOTE_USER` comes from the
//! `X-Forwarded-User` header, which is how the gateway hands over identity:
//! `git http-backend` refuses `receive-pack` without it (unless the repository
//! sets `http.receivepack`). Every request is recorded so tests can assert what
//! the backend saw.

// Test code: a panic with context is the failure report (clippy.toml's
// allow-unwrap-in-tests does not reach helpers outside `#[test]` fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type CgiBody = BoxBody<Bytes, Infallible>;

/// Chunk size for both directions; with [`CHANNEL_DEPTH`] it bounds what a
/// request holds in memory here.
const CHUNK: usize = 64 * 1024;
const CHANNEL_DEPTH: usize = 8;

/// One request as `git http-backend` received it.
#[derive(Debug, Clone)]
pub(crate) struct CgiRecord {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    /// Every `X-Forwarded-User` value the request carried, in order (the
    /// first became `REMOTE_USER`). More than one is a defect the tests must
    /// see, so [`CgiRecord::remote_user`] refuses it.
    pub(crate) forwarded_users: Vec<String>,
    /// What `HTTP_GIT_PROTOCOL` was set to (from `Git-Protocol`), if anything.
    pub(crate) git_protocol: Option<String>,
    /// The status `git http-backend` answered with (0 when it wrote no headers).
    pub(crate) status: u16,
}

impl CgiRecord {
    /// The one `X-Forwarded-User` value (`REMOTE_USER`), or None; a request
    /// that carried several fails the test.
    pub(crate) fn remote_user(&self) -> Option<&str> {
        assert!(
            self.forwarded_users.len() <= 1,
            "the backend got {} X-Forwarded-User values: {self:?}",
            self.forwarded_users.len()
        );
        self.forwarded_users.first().map(String::as_str)
    }
}

struct Shared {
    root: PathBuf,
    records: Mutex<Vec<CgiRecord>>,
    /// `git http-backend`'s stderr, for failure messages.
    stderr: Mutex<Vec<String>>,
}

/// `git http-backend` over HTTP/1.1 on its own runtime; repositories live in
/// a temp dir (`GIT_PROJECT_ROOT`).
pub(crate) struct GitServer {
    pub(crate) addr: SocketAddr,
    pub(crate) root: tempfile::TempDir,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

impl GitServer {
    pub(crate) fn start() -> GitServer {
        let root = tempfile::tempdir().unwrap();
        let shared = Arc::new(Shared {
            root: root.path().to_owned(),
            records: Mutex::new(Vec::new()),
            stderr: Mutex::new(Vec::new()),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let accept_shared = shared.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let shared = accept_shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, peer, shared.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        GitServer {
            addr,
            root,
            shared,
            _runtime: runtime,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `git init --bare <root>/<owner>/<repo>.git` (default branch `main`).
    pub(crate) fn bare_repo(&self, owner: &str, repo: &str) -> PathBuf {
        let path = self.root.path().join(owner).join(format!("{repo}.git"));
        let out = Command::new("git")
            .args(["init", "--quiet", "--bare", "--initial-branch=main"])
            .arg(&path)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.root.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        path
    }

    /// Every request so far, in arrival order.
    pub(crate) fn records(&self) -> Vec<CgiRecord> {
        self.shared.records.lock().unwrap().clone()
    }

    pub(crate) fn stderr_text(&self) -> String {
        self.shared.stderr.lock().unwrap().join("\n")
    }
}

fn header_str(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn plain(status: StatusCode, text: &str) -> Response<CgiBody> {
    let mut resp = Response::new(Full::new(Bytes::from(text.to_owned())).boxed());
    *resp.status_mut() = status;
    resp
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<Response<CgiBody>, Infallible> {
    let forwarded_users: Vec<String> = req
        .headers()
        .get_all("x-forwarded-user")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let git_protocol = header_str(&req, "git-protocol");
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();

    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &shared.root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", &query)
        .env("REMOTE_ADDR", peer.ip().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (header, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-length", "CONTENT_LENGTH"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
    ] {
        if let Some(v) = header_str(&req, header) {
            cmd.env(var, v);
        }
    }
    if let Some(user) = forwarded_users.first() {
        cmd.env("REMOTE_USER", user);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ok(plain(StatusCode::BAD_GATEWAY, &format!("spawn: {e}"))),
    };

    // Request body → stdin: an async pump into a bounded channel, drained by a
    // thread that blocks on the pipe. Dropping stdin at the end is the EOF.
    let mut stdin = child.stdin.take().unwrap();
    let (body_tx, mut body_rx) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    std::thread::spawn(move || {
        while let Some(chunk) = body_rx.blocking_recv() {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut body = req.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if body_tx.send(data).await.is_err() {
                    break;
                }
            }
        }
    });

    let stderr = child.stderr.take().unwrap();
    let err_shared = shared.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            err_shared.stderr.lock().unwrap().push(line);
        }
    });

    // stdout → response: a thread parses the CGI head, hands it over, then
    // streams the rest in bounded chunks.
    let stdout = child.stdout.take().unwrap();
    let (head_tx, head_rx) =
        tokio::sync::oneshot::channel::<Option<(u16, Vec<(String, String)>)>>();
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(CHUNK, stdout);
        let head = read_cgi_head(&mut reader);
        let ok = head.is_some();
        let _ = head_tx.send(head);
        if ok {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out_tx
                            .blocking_send(Bytes::copy_from_slice(&buf[..n]))
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        }
        drop(reader);
        let _ = child.wait();
    });

    let head = head_rx.await.ok().flatten();
    let status = head.as_ref().map_or(0, |(s, _)| *s);
    shared.records.lock().unwrap().push(CgiRecord {
        method,
        path,
        query,
        forwarded_users,
        git_protocol,
        status,
    });
    let Some((status, headers)) = head else {
        return Ok(plain(
            StatusCode::BAD_GATEWAY,
            "git http-backend wrote no CGI head",
        ));
    };
    let stream = futures_util::stream::unfold(out_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::builder().status(status);
    for (k, v) in &headers {
        resp = resp.header(k.as_str(), v.as_str());
    }
    Ok(resp.body(StreamBody::new(stream).boxed()).unwrap())
}

/// Reads CGI response headers up to the blank line: `Status: 404 Not Found`
/// sets the status (default 200), every other line is a response header.
fn read_cgi_head(reader: &mut impl BufRead) -> Option<(u16, Vec<(String, String)>)> {
    let mut status = 200;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Some((status, headers));
        }
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value.split_whitespace().next()?.parse().ok()?;
        } else {
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
}

// ------------------------------------------------------------------ tests --
// The runner itself, driven by the real git CLI with no gateway in front.

/// A git command with a clean environment (no system or user config, no prompt).
pub(crate) fn git_command(home: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com");
    cmd
}

fn run(home: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    git_command(home, dir).args(args).output().unwrap()
}

fn ok(home: &Path, dir: &Path, args: &[&str]) {
    let out = run(home, dir, args);
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn http_backend_refuses_push_without_remote_user_and_accepts_it_from_x_forwarded_user() {
    let server = GitServer::start();
    let bare = server.bare_repo("alice", "direct");
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let work = home.join("work");
    let url = format!("{}/alice/direct.git", server.url());
    ok(home, home, &["init", "--quiet", "-b", "main", "work"]);
    std::fs::write(work.join("README"), "hello\n").unwrap();
    ok(home, &work, &["add", "README"]);
    ok(home, &work, &["commit", "--quiet", "-m", "first"]);

    // No identity and no http.receivepack: git http-backend says no.
    let out = run(home, &work, &["push", &url, "main"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // X-Forwarded-User becomes REMOTE_USER, which enables receive-pack.
    ok(
        home,
        &work,
        &[
            "-c",
            "http.extraHeader=X-Forwarded-User: alice",
            "push",
            &url,
            "main",
        ],
    );
    let pushes: Vec<_> = server
        .records()
        .into_iter()
        .filter(|r| r.path.ends_with("/git-receive-pack"))
        .collect();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].remote_user(), Some("alice"));
    assert_eq!(pushes[0].status, 200);

    // http.receivepack=true allows anonymous pushes (what the gateway replaces).
    ok(home, &bare, &["config", "http.receivepack", "true"]);
    std::fs::write(work.join("README"), "hello again\n").unwrap();
    ok(home, &work, &["commit", "--quiet", "-am", "second"]);
    ok(home, &work, &["push", &url, "main"]);
    let out = run(home, &bare, &["log", "--format=%s", "main"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second\nfirst\n");
}
