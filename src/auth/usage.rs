//! "Last used" bookkeeping: recorded in memory per request, written to the
//! store in one batch every `usage_flush` and at shutdown, so a busy gateway
//! does not write the store once per request. Per password, the newest use
//! of up to [`LAST_USED_KEPT`] distinct addresses is kept between flushes
//! (in a fixed array: recording allocates nothing once the id is present).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::store::{Usage, LAST_USED_KEPT};

/// The newest use per distinct address, for one password (unordered).
type Recent = [Option<(u64, IpAddr)>; LAST_USED_KEPT];

/// Pending "last used" facts, per id the newest use of each recent address.
#[derive(Debug, Default)]
pub struct UsageLog {
    /// Keyed by the cached record's `Arc<str>` id: recording a use allocates
    /// nothing once the id is present. Only verified ids get here, so a
    /// fast hasher suffices (see `cache.rs`).
    pending: DashMap<Arc<str>, Recent, foldhash::fast::RandomState>,
}

/// The last use recorded through one cached verification, packed in one
/// atomic: the unix second in the high half, an IPv4 address in the low
/// half (0: none, or an IPv6 address, which takes the map every time).
///
/// A keep-alive client repeats the same fact (same second, same address)
/// on every request; this answers that without hashing the id and reading
/// the map. It is set only after the fact is in the log, so a match means
/// the fact was recorded (and perhaps flushed since): skipping it loses
/// nothing.
#[derive(Debug, Default)]
pub struct LastUse(AtomicU64);

impl LastUse {
    fn packed(at: u64, addr: IpAddr) -> Option<u64> {
        let IpAddr::V4(v4) = addr.to_canonical() else {
            return None;
        };
        let at = u32::try_from(at).ok()?;
        Some((u64::from(at) << 32) | u64::from(u32::from(v4)))
    }
}

impl UsageLog {
    /// Records that `id` was used at `at` (unix seconds) from `addr`;
    /// `last` is the verification's memo of what it recorded last.
    pub fn record(&self, id: &Arc<str>, at: u64, addr: IpAddr, last: &LastUse) {
        let packed = LastUse::packed(at, addr);
        if packed.is_some_and(|p| last.0.load(Ordering::Relaxed) == p) {
            return;
        }
        self.record_in_map(id, at, addr);
        if let Some(p) = packed {
            last.0.store(p, Ordering::Relaxed);
        }
    }

    fn record_in_map(&self, id: &Arc<str>, at: u64, addr: IpAddr) {
        // Most requests repeat a known fact (same second, same address): a
        // shared read lock answers that without contending for the shard.
        if let Some(slots) = self.pending.get(&**id) {
            if slots.contains(&Some((at, addr))) {
                return;
            }
        }
        if let Some(mut slots) = self.pending.get_mut(&**id) {
            merge(&mut slots, at, addr);
            return;
        }
        let mut slots: Recent = [None; LAST_USED_KEPT];
        slots[0] = Some((at, addr));
        self.pending.insert(id.clone(), slots);
    }

    /// Takes every pending fact, leaving the log empty.
    pub fn drain(&self) -> Vec<Usage> {
        let keys: Vec<Arc<str>> = self.pending.iter().map(|e| e.key().clone()).collect();
        let mut out = Vec::with_capacity(keys.len());
        for (id, slots) in keys.into_iter().filter_map(|k| self.pending.remove(&*k)) {
            let mut uses: Vec<(u64, IpAddr)> = slots.iter().flatten().copied().collect();
            // Oldest first, so the store ends with the newest in front.
            uses.sort_unstable();
            out.extend(uses.into_iter().map(|(at, addr)| Usage {
                id: id.to_string(),
                at,
                addr: addr.to_string(),
            }));
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The address's slot moves forward in time; a new address takes an empty
/// slot, or the oldest one's.
fn merge(slots: &mut Recent, at: u64, addr: IpAddr) {
    if let Some(slot) = slots.iter_mut().flatten().find(|(_, a)| *a == addr) {
        slot.0 = slot.0.max(at);
        return;
    }
    let target = match slots.iter().position(Option::is_none) {
        Some(free) => free,
        None => {
            let oldest = slots
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.map_or(0, |(t, _)| t))
                .map_or(0, |(i, _)| i);
            if slots[oldest].is_some_and(|(t, _)| t > at) {
                return;
            }
            oldest
        }
    };
    slots[target] = Some((at, addr));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_keeps_its_newest_use_and_drain_empties() {
        let log = UsageLog::default();
        let id: Arc<str> = "abc".into();
        let last = LastUse::default();
        log.record(&id, 10, "127.0.0.1".parse().unwrap(), &last);
        log.record(&id, 12, "127.0.0.2".parse().unwrap(), &last);
        log.record(&id, 11, "127.0.0.3".parse().unwrap(), &last);
        log.record(&id, 13, "127.0.0.2".parse().unwrap(), &last);
        let batch = log.drain();
        let got: Vec<(u64, &str)> = batch.iter().map(|u| (u.at, u.addr.as_str())).collect();
        assert_eq!(
            got,
            [(10, "127.0.0.1"), (11, "127.0.0.3"), (13, "127.0.0.2")]
        );
        assert!(log.is_empty());
    }

    #[test]
    fn at_most_the_kept_number_of_addresses_stay_pending() {
        let log = UsageLog::default();
        let id: Arc<str> = "abc".into();
        let last = LastUse::default();
        for i in 0..10u8 {
            log.record(&id, u64::from(i), IpAddr::from([10, 0, 0, i]), &last);
        }
        let batch = log.drain();
        assert_eq!(batch.len(), LAST_USED_KEPT);
        assert_eq!(batch.last().unwrap().addr, "10.0.0.9");
        assert_eq!(batch.first().unwrap().addr, "10.0.0.5");
    }

    #[test]
    fn a_repeated_fact_skips_the_map_and_a_new_one_does_not() {
        let log = UsageLog::default();
        let id: Arc<str> = "abc".into();
        let last = LastUse::default();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        log.record(&id, 100, v4, &last);
        assert_eq!(log.drain().len(), 1);
        // The same second from the same address: already recorded (and
        // flushed since), so nothing new is pending.
        log.record(&id, 100, v4, &last);
        assert!(log.is_empty());
        // A v4-mapped spelling of the same address is the same fact.
        log.record(&id, 100, "::ffff:192.0.2.7".parse().unwrap(), &last);
        assert!(log.is_empty());
        // A new second, another address, another verification's memo: recorded.
        log.record(&id, 101, v4, &last);
        log.record(&id, 101, "192.0.2.8".parse().unwrap(), &last);
        log.record(&id, 101, "192.0.2.8".parse().unwrap(), &LastUse::default());
        let got: Vec<(u64, String)> = log.drain().into_iter().map(|u| (u.at, u.addr)).collect();
        assert_eq!(
            got,
            [(101, "192.0.2.7".to_owned()), (101, "192.0.2.8".to_owned())]
        );
        // IPv6 has no memo: recorded every time.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        log.record(&id, 102, v6, &last);
        assert_eq!(log.drain().len(), 1);
        log.record(&id, 102, v6, &last);
        assert_eq!(log.drain().len(), 1);
    }
}
