//! The one integration-test binary: each module drives the real `passgate`
//! binary on ephemeral loopback ports with real clients (see `support`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod lfs;
mod smoke;
