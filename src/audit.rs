//! Bounds on the audit lines an attacker can cause.
//!
//! Every refused credential, rate-limited request, app password on a web
//! route and missing scope is an audit line (target `passgate::audit`). A
//! client can cause those as fast as it can send requests, spending the
//! gateway's CPU on logging and filling the disk (figures in
//! docs/performance.md). [`admit`] lets through at most [`PER_PEER`] lines per second
//! for one client address (IPv6: its /64) and [`GLOBAL`] lines per second in
//! all; the rest are counted, and [`flush`] (called every second by `serve`)
//! writes one `event="suppressed"` line with the counts. So a fail2ban-style
//! watcher still sees every attacking address, every second, and nothing is
//! lost without a trace.
//!
//! Lock-free and allocation-free: one packed `(second, count)` word per
//! hashed address slot (addresses sharing a slot share a budget, which can
//! only suppress more, never write more) and one for the global budget.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::unix_now;

/// Lines per second for one client address.
pub const PER_PEER: u32 = 10;
/// Lines per second over all addresses.
pub const GLOBAL: u32 = 200;
const SLOTS: usize = 1024;

/// The attacker-triggerable audit events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    AuthFailed,
    RateLimited,
    WebRefused,
    ScopeDenied,
    ConnLimited,
}

/// How many kinds of [`Event`] there are.
const EVENTS: usize = 5;

impl Event {
    const ALL: [Event; EVENTS] = [
        Event::AuthFailed,
        Event::RateLimited,
        Event::WebRefused,
        Event::ScopeDenied,
        Event::ConnLimited,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Per-second budgets and the counts of what they held back.
#[derive(Debug)]
pub struct Gate {
    per_peer: u32,
    global: u32,
    slots: [AtomicU64; SLOTS],
    total: AtomicU64,
    suppressed: [AtomicU64; EVENTS],
}

/// What [`Gate::take_suppressed`] found since the last call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Suppressed {
    pub auth_failed: u64,
    pub rate_limited: u64,
    pub web_refused: u64,
    pub scope_denied: u64,
    pub conn_limited: u64,
}

impl Suppressed {
    pub fn total(&self) -> u64 {
        self.auth_failed
            + self.rate_limited
            + self.web_refused
            + self.scope_denied
            + self.conn_limited
    }
}

static GATE: Gate = Gate::new(PER_PEER, GLOBAL);

/// True when a line for `event` from `peer` may be written now; otherwise
/// the event is counted for the next `event="suppressed"` line.
pub fn admit(event: Event, peer: IpAddr) -> bool {
    GATE.admit(event, peer, unix_now())
}

/// Writes one `event="suppressed"` line if anything was held back since the
/// last call.
pub fn flush() {
    let s = GATE.take_suppressed();
    if s.total() > 0 {
        tracing::warn!(
            target: "passgate::audit",
            event = "suppressed",
            auth_failed = s.auth_failed,
            rate_limited = s.rate_limited,
            web_refused = s.web_refused,
            scope_denied = s.scope_denied,
            conn_limited = s.conn_limited,
            "audit lines over {PER_PEER}/s per address or {GLOBAL}/s in all were counted, not written"
        );
    }
}

impl Gate {
    pub const fn new(per_peer: u32, global: u32) -> Gate {
        Gate {
            per_peer,
            global,
            slots: [const { AtomicU64::new(0) }; SLOTS],
            total: AtomicU64::new(0),
            suppressed: [const { AtomicU64::new(0) }; EVENTS],
        }
    }

    /// `now_s`: the current second (any monotonic-enough second counter).
    pub fn admit(&self, event: Event, peer: IpAddr, now_s: u64) -> bool {
        let slot = &self.slots[slot_of(peer)];
        let ok = charge(slot, now_s, self.per_peer) && charge(&self.total, now_s, self.global);
        if !ok {
            self.suppressed[event.index()].fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    pub fn take_suppressed(&self) -> Suppressed {
        let [a, r, w, s, c] =
            Event::ALL.map(|e| self.suppressed[e.index()].swap(0, Ordering::Relaxed));
        Suppressed {
            auth_failed: a,
            rate_limited: r,
            web_refused: w,
            scope_denied: s,
            conn_limited: c,
        }
    }
}

/// Counts one line in the `(second << 32 | count)` word; true while the
/// second's count is within `limit`.
fn charge(word: &AtomicU64, now_s: u64, limit: u32) -> bool {
    let second = now_s & u64::from(u32::MAX);
    let count_in = |w: u64| {
        if w >> 32 == second {
            w & 0xffff_ffff
        } else {
            0
        }
    };
    let prev = word
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            Some(second << 32 | (count_in(w) + 1).min(u64::from(u32::MAX)))
        })
        .unwrap_or_else(|w| w);
    count_in(prev) < u64::from(limit)
}

/// Fibonacci hashing of the address (IPv6: its /64, IPv4-mapped as IPv4).
fn slot_of(peer: IpAddr) -> usize {
    let key: u64 = match peer {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u64::from(u32::from(v4)),
            None => (u128::from(v6) >> 64) as u64 ^ 0x9e37_79b9_0000_0000,
        },
    };
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_peer_budget_then_suppressed_count() {
        let g = Gate::new(3, 100);
        let a = ip("192.0.2.1");
        let admitted = (0..10)
            .filter(|_| g.admit(Event::AuthFailed, a, 1000))
            .count();
        assert_eq!(admitted, 3);
        assert_eq!(g.take_suppressed().auth_failed, 7);
        assert_eq!(g.take_suppressed(), Suppressed::default(), "counts reset");
    }

    #[test]
    fn next_second_refills() {
        let g = Gate::new(2, 100);
        let a = ip("192.0.2.1");
        assert!(g.admit(Event::RateLimited, a, 5));
        assert!(g.admit(Event::RateLimited, a, 5));
        assert!(!g.admit(Event::RateLimited, a, 5));
        assert!(g.admit(Event::RateLimited, a, 6));
        assert_eq!(g.take_suppressed().rate_limited, 1);
    }

    #[test]
    fn another_address_keeps_its_budget() {
        let g = Gate::new(2, 100);
        for _ in 0..50 {
            g.admit(Event::AuthFailed, ip("192.0.2.1"), 7);
        }
        assert!(g.admit(Event::AuthFailed, ip("198.51.100.7"), 7));
    }

    #[test]
    fn global_budget_bounds_many_addresses() {
        let g = Gate::new(10, 20);
        let admitted = (0..200u32)
            .filter(|i| {
                g.admit(
                    Event::WebRefused,
                    IpAddr::from((0x0a00_0000 + i).to_be_bytes()),
                    9,
                )
            })
            .count();
        assert_eq!(admitted, 20);
        assert_eq!(g.take_suppressed().web_refused, 180);
    }

    #[test]
    fn ipv6_64_shares_a_budget_and_mapped_v4_is_v4() {
        assert_eq!(slot_of(ip("2001:db8::1")), slot_of(ip("2001:db8::ffff:2")));
        assert_eq!(slot_of(ip("::ffff:192.0.2.1")), slot_of(ip("192.0.2.1")));
        let g = Gate::new(1, 100);
        assert!(g.admit(Event::ScopeDenied, ip("2001:db8::1"), 3));
        assert!(!g.admit(Event::ScopeDenied, ip("2001:db8::2"), 3));
    }

    #[test]
    fn slots_spread_neighbouring_addresses() {
        let distinct: std::collections::HashSet<usize> = (0..256u32)
            .map(|i| slot_of(IpAddr::from((0xc000_0200 + i).to_be_bytes())))
            .collect();
        assert!(
            distinct.len() > 200,
            "{} slots for 256 addresses",
            distinct.len()
        );
    }
}
