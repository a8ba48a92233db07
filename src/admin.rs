//! The admin socket: HTTP/1.1 + JSON on a Unix socket (mode 0600) that the CLI
//! uses while `serve` runs, so management goes through the one process that
//! holds the store and a revocation evicts the cache at once.
//!
//! Endpoints (all JSON):
//! - `POST /v1/app-passwords` (`CreateRequest`) → 201 `Created`
//! - `GET  /v1/app-passwords[?user=U][&expiring=SECONDS]` → 200 `[Listed]`
//! - `GET  /v1/app-passwords/{id}` → 200 `Listed`
//! - `POST /v1/app-passwords/{id}/revoke` → 200 `Revocation`
//! - `POST /v1/app-passwords/{id}/rotate` (`RotateRequest`) → 201 `Created`
//! - `POST /v1/revoke-user` (`{"user": U}`) → 200 `{"revoked": [ids]}`
//! - `GET  /v1/stats` → 200 `{"argon2_runs": N}` (argon2id runs started)
//! - `POST /v1/reload` → 200 `reload::Applied`, or 422 with the reason the
//!   running config stays in force
//! - `POST /v1/backup` (`{"path": ABSOLUTE}`) → 201 `BackedUp`; 409 if the
//!   file exists, 422 for a PostgreSQL store
//!
//! Errors are `{"error": "..."}` with 400 (bad request), 404, 409 or 500.
//! The socket accepts no app password and no Basic auth at all: access is the
//! file mode plus a peer-credential check (same uid as the server, or root).
//! Never reachable from the network listeners.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};

use crate::audit::{self, AuditEvent, Via};
use crate::gateway::{Gateway, Live};
use crate::manage::{self, CreateRequest, ManageError, RotateRequest};
use crate::reload;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin socket {path} is in use by a running passgate; stop it first or use another [admin] socket")]
    InUse { path: PathBuf },
    #[error("admin socket path {path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("admin socket directory {dir} is {problem}; use a directory only this server's user can write (mode 0700 or 0755)")]
    UnsafeDir { dir: PathBuf, problem: String },
    #[error("cannot create admin socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds the admin socket, replacing a stale one left by a crashed server.
///
/// The directory must belong to this process's effective uid and be
/// writable by nobody else (else someone could swap the socket for theirs);
/// the socket is created under umask 077, never chmod'ed by path afterwards.
pub async fn bind(path: &Path) -> Result<UnixListener, AdminError> {
    let bind_err = |source| AdminError::Bind {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(bind_err)?;
    }
    check_dir(dir)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(AdminError::NotASocket {
                path: path.to_owned(),
            })
        }
        Ok(_) => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(AdminError::InUse {
                    path: path.to_owned(),
                });
            }
            std::fs::remove_file(path).map_err(bind_err)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    // Process-wide, but only for this one call at start-up; 0177 leaves the
    // socket 0600 (umask 077 and no execute bit).
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    bound.map_err(bind_err)
}

/// Refuses a socket directory not owned by this process's uid, or writable
/// by its group or by others.
fn check_dir(dir: &Path) -> Result<(), AdminError> {
    let unsafe_dir = |problem: String| AdminError::UnsafeDir {
        dir: dir.to_owned(),
        problem,
    };
    let meta = std::fs::metadata(dir).map_err(|e| unsafe_dir(format!("unreadable ({e})")))?;
    let me = server_uid();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "owned by uid {}, not by this server's uid {me}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "writable by its group or others (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// This process's effective uid: who may use the admin socket (besides root).
fn server_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Serves admin requests until the listener is dropped with the task.
pub async fn serve(live: Arc<Live>, listener: UnixListener, _path: PathBuf) {
    let owner = server_uid();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let allowed = stream
            .peer_cred()
            .map(|c| c.uid() == owner || c.uid() == 0)
            .unwrap_or(false);
        if !allowed {
            audit::emit(AuditEvent::AdminRefused {
                uid: stream.peer_cred().ok().map(|c| c.uid()),
            });
            continue;
        }
        let live = live.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let live = live.clone();
                async move { Ok::<_, std::convert::Infallible>(route(live, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
    }
}

#[derive(Serialize, Deserialize)]
struct UserBody {
    user: String,
}

#[derive(Serialize, Deserialize)]
pub struct RevokedList {
    pub revoked: Vec<String>,
}

/// Counters for tests and operators.
#[derive(Serialize, Deserialize)]
pub struct Stats {
    pub argon2_runs: u64,
}

#[derive(Serialize, Deserialize)]
struct ErrorBody {
    error: String,
    usage: bool,
}

async fn route(live: Arc<Live>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    // The config in force when the request arrived serves all of it.
    let gw = live.load();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
                true,
            )
        }
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::POST, ["v1", "app-passwords"]) => {
            let Ok(req) = serde_json::from_slice::<CreateRequest>(&body) else {
                return error(StatusCode::BAD_REQUEST, "malformed create request", true);
            };
            let gw2 = gw.clone();
            let out = blocking(move || manage::create(&gw2.store, &gw2.config, &req)).await;
            match out {
                Ok(created) => {
                    audit::emit(AuditEvent::Created {
                        via: Via::AdminSocket,
                        id: &created.id,
                        user: &created.user,
                        name: &created.name,
                        scopes: &created.scopes.join(" "),
                    });
                    json(StatusCode::CREATED, &created)
                }
                Err(e) => manage_error(&e),
            }
        }
        (Method::GET, ["v1", "app-passwords"]) => {
            let user = query.as_deref().and_then(|q| param(q, "user"));
            let expiring = match query.as_deref().and_then(|q| param(q, "expiring")) {
                None => None,
                Some(v) => match v.parse::<u64>() {
                    Ok(secs) => Some(secs),
                    Err(_) => return error(StatusCode::BAD_REQUEST, "malformed expiring", true),
                },
            };
            let out = blocking(move || manage::list(&gw.store, user.as_deref(), expiring)).await;
            match out {
                Ok(rows) => json(StatusCode::OK, &rows),
                Err(e) => manage_error(&e),
            }
        }
        (Method::POST, ["v1", "app-passwords", id, "revoke"]) => {
            let id = (*id).to_owned();
            // Before the commit: no verification running now may cache it.
            gw.auth.revoking(&id);
            let gw2 = gw.clone();
            let out = blocking(move || manage::revoke(&gw2.store, &id)).await;
            match out {
                Ok(r) => {
                    gw.auth.revoked(&r.id);
                    if r.revoked_now {
                        audit::emit(AuditEvent::Revoked {
                            via: Via::AdminSocket,
                            id: &r.id,
                        });
                    }
                    json(StatusCode::OK, &r)
                }
                Err(e) => manage_error(&e),
            }
        }
        (Method::GET, ["v1", "app-passwords", id]) => {
            let id = (*id).to_owned();
            match blocking(move || manage::show(&gw.store, &id)).await {
                Ok(row) => json(StatusCode::OK, &row),
                Err(e) => manage_error(&e),
            }
        }
        (Method::POST, ["v1", "app-passwords", id, "rotate"]) => {
            rotate(gw, (*id).to_owned(), &body).await
        }
        (Method::POST, ["v1", "revoke-user"]) => {
            let Ok(UserBody { user }) = serde_json::from_slice(&body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "malformed revoke-user request",
                    true,
                );
            };
            let gw2 = gw.clone();
            let out = blocking(move || manage::revoke_user(&gw2.store, &user)).await;
            match out {
                Ok(ids) => {
                    for id in &ids {
                        gw.auth.revoked(id);
                        audit::emit(AuditEvent::Revoked {
                            via: Via::AdminSocket,
                            id,
                        });
                    }
                    json(StatusCode::OK, &RevokedList { revoked: ids })
                }
                Err(e) => manage_error(&e),
            }
        }
        (Method::POST, ["v1", "reload"]) => {
            match tokio::task::spawn_blocking(move || reload::reload(&live, Via::AdminSocket)).await
            {
                Ok(Ok(applied)) => json(StatusCode::OK, &applied),
                Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string(), false),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), false),
            }
        }
        (Method::POST, ["v1", "backup"]) => {
            let Ok(BackupRequest { path }) = serde_json::from_slice(&body) else {
                return error(StatusCode::BAD_REQUEST, "malformed backup request", true);
            };
            backup(gw, path).await
        }
        (Method::GET, ["v1", "stats"]) => json(
            StatusCode::OK,
            &Stats {
                argon2_runs: gw.auth.argon2_runs(),
            },
        ),
        _ => error(StatusCode::NOT_FOUND, "unknown admin endpoint", true),
    }
}

/// `store backup`'s request: where the copy goes (absolute; the server's
/// working directory is not the CLI's).
#[derive(Serialize, Deserialize)]
pub struct BackupRequest {
    pub path: PathBuf,
}

/// `store backup`'s answer.
#[derive(Serialize, Deserialize)]
pub struct BackedUp {
    pub path: PathBuf,
    pub app_passwords: usize,
}

/// `store backup` while serving: the copy is written from one read
/// transaction, so writes going on meanwhile are either in it or not, whole.
async fn backup(gw: Arc<Gateway>, path: PathBuf) -> Response<Full<Bytes>> {
    if !path.is_absolute() {
        return error(
            StatusCode::BAD_REQUEST,
            "backup path must be absolute",
            true,
        );
    }
    let to = path.clone();
    let out = tokio::task::spawn_blocking(move || gw.store.backup(&to)).await;
    match out {
        Ok(Ok(app_passwords)) => {
            audit::emit(AuditEvent::BackedUp {
                via: Via::AdminSocket,
                path: &path.display().to_string(),
            });
            json(
                StatusCode::CREATED,
                &BackedUp {
                    path,
                    app_passwords,
                },
            )
        }
        Ok(Err(e @ StoreError::BackupExists { .. })) => {
            error(StatusCode::CONFLICT, &e.to_string(), false)
        }
        Ok(Err(e @ StoreError::BackupPostgres { .. })) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string(), false)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "backup failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, &chain(&e), false)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), false),
    }
}

/// An error and its causes, for the operator who asked.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        msg.push_str(&format!(": {c}"));
        cause = c.source();
    }
    msg
}

/// `rotate`: the successor is committed before it is answered; the old
/// password leaves the cache at once (revoked now, or from the end of its
/// grace, which the next verification reads).
async fn rotate(gw: Arc<Gateway>, id: String, body: &[u8]) -> Response<Full<Bytes>> {
    let req: RotateRequest = if body.is_empty() {
        RotateRequest::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(_) => return error(StatusCode::BAD_REQUEST, "malformed rotate request", true),
        }
    };
    let gw2 = gw.clone();
    let old = id.clone();
    gw.auth.revoking(&id);
    let out = blocking(move || manage::rotate(&gw2.store, &gw2.config, &old, &req)).await;
    gw.auth.revoked(&id);
    match out {
        Ok(created) => {
            audit::emit(AuditEvent::Rotated {
                via: Via::AdminSocket,
                id: &id,
                successor: &created.id,
                user: &created.user,
                name: &created.name,
            });
            json(StatusCode::CREATED, &created)
        }
        Err(e) => manage_error(&e),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ManageError> + Send + 'static,
) -> Result<T, ManageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(ManageError::Task(e)),
    }
}

fn param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

/// Minimal decoding for the CLI's own `?user=` (it encodes every non-alphanumeric byte).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes a query value the way `percent_decode` reads it.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn manage_error(e: &ManageError) -> Response<Full<Bytes>> {
    let status = match e {
        _ if e.is_usage() => StatusCode::BAD_REQUEST,
        ManageError::NotFound(_) => StatusCode::NOT_FOUND,
        ManageError::DuplicateName { .. } => StatusCode::CONFLICT,
        _ => {
            tracing::error!(error = %e, "admin operation failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error(status, &e.to_string(), e.is_usage())
}

fn error(status: StatusCode, msg: &str, usage: bool) -> Response<Full<Bytes>> {
    json(
        status,
        &ErrorBody {
            error: msg.to_owned(),
            usage,
        },
    )
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The CLI's side: one request over the socket, JSON in and out.
pub mod client {
    use super::*;

    /// An admin-socket answer: the status and the JSON body.
    #[derive(Debug)]
    pub struct Answer {
        pub status: StatusCode,
        pub body: Bytes,
    }

    impl Answer {
        /// The error message and whether it is a usage error, for non-2xx answers.
        pub fn error(&self) -> (String, bool) {
            match serde_json::from_slice::<ErrorBody>(&self.body) {
                Ok(e) => (e.error, e.usage),
                Err(_) => (format!("admin socket answered {}", self.status), false),
            }
        }
    }

    /// Connects; `Ok(None)` when no server listens there (use the store
    /// directly). The server must run as this user or as root: a socket
    /// planted by someone else could answer `revoke` without revoking.
    pub async fn connect(path: &Path) -> io::Result<Option<UnixStream>> {
        match UnixStream::connect(path).await {
            Ok(s) => {
                let uid = s.peer_cred()?.uid();
                let me = server_uid();
                if uid != me && uid != 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "admin socket {} is served by uid {uid}, not by this user ({me}) or root; refusing to talk to it",
                            path.display()
                        ),
                    ));
                }
                Ok(Some(s))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn call(
        stream: UnixStream,
        method: Method,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> io::Result<Answer> {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, "passgate-admin")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(io::Error::other)?;
        let resp = sender.send_request(req).await.map_err(io::Error::other)?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_bytes();
        Ok(Answer { status, body })
    }
}
