//! The wall clock in the store's unit: whole seconds since the Unix epoch.
//!
//! One place reads it, so every module that stamps or compares a time
//! (creation, expiry, revocation, audit budgets) agrees on the unit and on
//! what a clock before 1970 means. Imports nothing of the crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
