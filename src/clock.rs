//! The clocks, read in one place.
//!
//! The wall clock in the store's unit: whole seconds since the Unix epoch.
//! Every module that stamps or compares a time (creation, expiry,
//! revocation, audit budgets) reads it here, so they agree on the unit and
//! on what a clock before 1970 means.
//!
//! The coarse clocks: the kernel's copy of the time as of its last tick (1
//! to 10 ms old), read without the hardware counter and with no `Duration`
//! arithmetic. For the request path's bookkeeping in seconds, read several
//! times a request (issue 18: `Instant::now` and an `elapsed` cost about 60
//! instructions, a coarse read about a third of that). A coarse reading is
//! never ahead of the precise one, only up to a tick behind it.
//!
//! Imports nothing of the crate.

use std::time::{SystemTime, UNIX_EPOCH};

use rustix::time::{clock_gettime, ClockId};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// [`unix_now`] as of the kernel's last tick: the second may turn up to a
/// tick late.
pub fn unix_now_coarse() -> u64 {
    u64::try_from(clock_gettime(ClockId::RealtimeCoarse).tv_sec).unwrap_or(0)
}

/// Whether the Unix second `at` has begun (an expiry reached). The coarse
/// clock answers unless it reads the second just before `at`: a coarse
/// reading trails the precise clock by a tick at most, so only there can
/// the two disagree, and there the precise clock answers. An expiry
/// checked this way is never answered past its second, and the usual
/// request, far from it, reads no precise clock.
pub fn reached(at: u64) -> bool {
    let coarse = unix_now_coarse();
    if coarse >= at {
        return true;
    }
    if coarse.saturating_add(1) < at {
        return false;
    }
    unix_now() >= at
}

/// The monotonic clock (`Instant`'s) in milliseconds, as of the kernel's
/// last tick.
pub fn coarse_ms() -> u64 {
    ms(clock_gettime(ClockId::MonotonicCoarse))
}

/// The monotonic clock in milliseconds, read precisely: the base against
/// which [`coarse_ms`] readings are compared with an `Instant` read at once.
pub fn precise_ms() -> u64 {
    ms(clock_gettime(ClockId::Monotonic))
}

fn ms(t: rustix::time::Timespec) -> u64 {
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs * 1000 + nanos / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_readings_trail_the_precise_ones_by_at_most_a_tick() {
        let mut closest = u64::MAX;
        for _ in 0..1000 {
            // The coarse one first: read after, it could see a later tick.
            let coarse = coarse_ms();
            let precise = precise_ms();
            assert!(coarse <= precise, "{coarse} ahead of {precise}");
            closest = closest.min(precise - coarse);
            let coarse = unix_now_coarse();
            let unix = unix_now();
            assert!(coarse <= unix && unix - coarse <= 1, "{coarse} {unix}");
        }
        // CONFIG_HZ is at least 100: a tick is at most 10 ms (a thread
        // preempted between two reads sees more, hence the closest pair).
        assert!(closest <= 10, "{closest} ms behind");
    }

    #[test]
    fn an_expiry_is_reached_exactly_when_the_precise_clock_reaches_it() {
        let now = unix_now();
        assert!(reached(0) && reached(now) && reached(now - 1));
        assert!(!reached(now + 2) && !reached(u64::MAX));
        // Across the next second's turn, where the coarse clock lags: once
        // the precise clock has reached `at`, so has `reached`, and never
        // before (spinning, to catch the tick the two disagree in).
        let at = now + 1;
        let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let before = unix_now();
            let said = reached(at);
            let after = unix_now();
            if before >= at {
                assert!(said, "the precise clock read {before}, past {at}");
                break;
            }
            if said {
                assert!(after >= at, "reached {at} at {after}");
            }
            assert!(std::time::Instant::now() < until, "the second never turned");
        }
    }
}
