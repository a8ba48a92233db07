//! Caps on open client connections: `server.max_connections` in all and
//! `server.max_connections_per_addr` per address (IPv6: per /64).
//!
//! Every open connection costs memory (tens of KiB once it has served a
//! request; docs/performance.md) and two file descriptors (its own and its upstream's). Without a
//! cap, one client holding tens of thousands of keep-alive connections could
//! exhaust either, and then nobody could connect. A connection over a cap is
//! closed as soon as it is accepted, before any byte is read.
//!
//! A configured trusted proxy (a load balancer in front of the gateway)
//! carries many clients' connections from one address: it counts towards the
//! total only.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::peer::AddrKey;

/// The open-connection counts, shared by every worker.
#[derive(Debug)]
pub struct ConnLimits {
    /// The caps: atomics, as a config reload changes them while serving.
    max_total: AtomicUsize,
    max_per_addr: AtomicUsize,
    total: AtomicUsize,
    per_addr: DashMap<AddrKey, usize>,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Total,
    PerAddr,
}

impl Over {
    pub fn as_str(self) -> &'static str {
        match self {
            Over::Total => "total",
            Over::PerAddr => "per-address",
        }
    }
}

/// One open connection's place under the caps; given back on drop.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnLimits>,
    /// None for a trusted proxy, which has no per-address count.
    key: Option<AddrKey>,
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_addr: usize) -> ConnLimits {
        ConnLimits {
            max_total: AtomicUsize::new(max_total),
            max_per_addr: AtomicUsize::new(max_per_addr),
            total: AtomicUsize::new(0),
            per_addr: DashMap::new(),
        }
    }

    /// New caps (a config reload): connections already open keep their
    /// place; new ones are held to the new caps.
    pub fn set_caps(&self, max_total: usize, max_per_addr: usize) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_addr.store(max_per_addr, Ordering::Relaxed);
    }

    /// A place for a new connection from `peer`, unless a cap is reached;
    /// a `trusted` peer (a configured proxy) is held to the total only.
    pub fn open(self: &Arc<Self>, peer: IpAddr, trusted: bool) -> Result<Slot, Over> {
        let max_total = self.max_total.load(Ordering::Relaxed);
        let taken = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_total).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Over::Total);
        }
        if trusted {
            return Ok(Slot {
                limits: self.clone(),
                key: None,
            });
        }
        let key = AddrKey::from(peer);
        let mut count = self.per_addr.entry(key).or_insert(0);
        if *count >= self.max_per_addr.load(Ordering::Relaxed) {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Over::PerAddr);
        }
        *count += 1;
        Ok(Slot {
            limits: self.clone(),
            key: Some(key),
        })
    }

    /// Open connections now, in all.
    pub fn open_now(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The entry goes with the address's last connection: the map holds
        // only addresses with connections open.
        if let Some(key) = &self.key {
            self.limits.per_addr.remove_if_mut(key, |_, count| {
                *count = count.saturating_sub(1);
                *count == 0
            });
        }
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn both_caps_hold_and_closing_gives_the_place_back() {
        let limits = Arc::new(ConnLimits::new(3, 2));
        let a1 = limits.open(ip("10.0.0.1"), false).unwrap();
        let _a2 = limits.open(ip("10.0.0.1"), false).unwrap();
        assert_eq!(
            limits.open(ip("10.0.0.1"), false).unwrap_err(),
            Over::PerAddr
        );
        let _b1 = limits.open(ip("10.0.0.2"), false).unwrap();
        assert_eq!(limits.open(ip("10.0.0.3"), false).unwrap_err(), Over::Total);
        assert_eq!(limits.open_now(), 3);
        drop(a1);
        assert_eq!(limits.open_now(), 2);
        let _c1 = limits.open(ip("10.0.0.3"), false).unwrap();
        assert_eq!(limits.open(ip("10.0.0.1"), false).unwrap_err(), Over::Total);
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_address_and_entries_do_not_linger() {
        let limits = Arc::new(ConnLimits::new(100, 2));
        let x = limits.open(ip("2001:db8::1"), false).unwrap();
        let y = limits.open(ip("2001:db8::ffff:2"), false).unwrap();
        assert_eq!(
            limits.open(ip("2001:db8::3"), false).unwrap_err(),
            Over::PerAddr
        );
        assert!(limits.open(ip("2001:db8:0:1::1"), false).is_ok());
        drop((x, y));
        assert!(limits.per_addr.is_empty(), "{:?}", limits.per_addr);
        assert_eq!(limits.open_now(), 0);
    }

    #[test]
    fn a_trusted_proxy_is_held_to_the_total_only() {
        let limits = Arc::new(ConnLimits::new(3, 1));
        let lb = ip("10.0.0.5");
        let held: Vec<Slot> = (0..3).map(|_| limits.open(lb, true).unwrap()).collect();
        assert!(limits.per_addr.is_empty());
        assert_eq!(limits.open(lb, true).unwrap_err(), Over::Total);
        drop(held);
        assert_eq!(limits.open_now(), 0);
    }
}
