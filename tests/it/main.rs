//! The one integration-test binary: each module drives the real `passgate`
//! binary on ephemeral loopback ports with real clients (see `support`).

// Test threads may block and helpers are crate-internal by nature.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    unreachable_pub
)]

mod support;

mod admin;
mod attacks;
mod audit;
mod auth;
mod backup;
mod browser;
mod cache;
mod cgi;
mod cli;
mod config;
mod durability;
mod git;
mod h2;
mod lfs;
mod lifecycle;
mod limits;
mod metrics;
mod metrics_state;
mod modules;
mod oidc;
mod paths;
mod pg_tls;
mod proxy;
mod readme;
mod reload;
mod replicas;
mod selfservice;
mod selfservice_browser;
mod smoke;
mod smuggling;
mod tls;
mod upstream_reuse;
mod upstream_tls;
