//! The one integration-test binary: each module drives the real `passgate`
//! binary on ephemeral loopback ports with real clients (see `support`).

mod support;

mod paths;
mod proxy;
mod smoke;
mod tls;
