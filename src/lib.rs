//! passgate: a reverse-proxy authentication gateway that brings scoped,
//! revocable **app passwords** to Git-over-HTTPS and HTTP API servers.
//!
//! # Codemap, in the order a request meets it
//!
//! - [`server`]: listeners, TLS hand-off ([`tls`]), HTTP/1.1 + HTTP/2, timeouts, graceful shutdown.
//! - [`proxy`]: the request path, one step per line:
//!   - [`path`]: request-target normalisation; anything ambiguous is refused;
//!   - [`routes`]: `[[routes]]` first match on method, path pattern and query;
//!   - [`access`]: one arm per access kind (`app-password`, `web`, `public`, `deny`);
//!   - [`auth`]: Basic decoding, token format, cache, argon2id, brute-force limits;
//!   - [`headers`]: hop-by-hop, spoof stripping, `X-Forwarded-*`, identity headers;
//!   - [`upstream`]: pooled clients to the backends, streaming both ways;
//!   - [`body`]: the streamed response body and the access-log line.
//! - [`selfservice`]: the app-password page under `[selfservice] path`,
//!   answered before route matching and never forwarded.
//! - [`limits`]: per-password repository and client-address limits (pure).
//! - [`audit`]: per-second bounds on the audit lines a client can cause.
//! - [`error`]: every rejection and its HTTP status, in one place.
//!
//! Around it: [`config`] (`proxy.toml`), [`scopes`] (vocabulary and implications),
//! [`store`] (one type over redb or PostgreSQL), [`manage`] (creation rules), [`oidc`] (OpenID Connect sign-in),
//! [`admin`] (the CLI's Unix socket), [`reload`] (SIGHUP and `passgate reload`),
//! [`cli`] (the command line), [`gateway`] (shared state), [`telemetry`] (logging).
//!
//! Beneath everything, importing nothing of the request path: [`metrics`]
//! (Prometheus counters and the `/metrics`, `/healthz`, `/readyz` listener),
//! [`connector`] (the rustls + hyper connector of the upstreams and the OIDC
//! issuer client), [`conn`]
//! (connection caps, activity and in-flight bookkeeping), [`peer`] (a client
//! address as the per-address limits count it), [`clock`] (Unix seconds).
//!
//! For the fuzz targets in `fuzz/` only: `fuzz_logic` (private parsers,
//! compiled under `--cfg fuzzing`).
//!
//! Imports point one way, down this list: `server → proxy → access → auth →
//! store`; `tests/it/modules.rs` fails on any import cycle.

pub mod access;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod connector;
pub mod error;
#[cfg(fuzzing)]
pub mod fuzz_logic;
pub mod gateway;
pub mod headers;
pub mod limits;
pub mod manage;
pub mod metrics;
pub mod oidc;
pub mod path;
pub mod peer;
pub mod proxy;
pub mod reload;
pub mod routes;
pub mod scopes;
pub mod selfservice;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod user;
