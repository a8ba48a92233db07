//! "Last used" bookkeeping: recorded in memory per request, written to the
//! store in one batch every `usage_flush` and at shutdown, so a busy gateway
//! does not write the store once per request. Per password, the newest use
//! of up to [`LAST_USED_KEPT`] distinct addresses is kept between flushes
//! (in a fixed array: recording allocates nothing once the id is present).

use std::net::IpAddr;
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

impl UsageLog {
    pub fn record(&self, id: &Arc<str>, at: u64, addr: IpAddr) {
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
        log.record(&id, 10, "127.0.0.1".parse().unwrap());
        log.record(&id, 12, "127.0.0.2".parse().unwrap());
        log.record(&id, 11, "127.0.0.3".parse().unwrap());
        log.record(&id, 13, "127.0.0.2".parse().unwrap());
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
        for i in 0..10u8 {
            log.record(&id, u64::from(i), IpAddr::from([10, 0, 0, i]));
        }
        let batch = log.drain();
        assert_eq!(batch.len(), LAST_USED_KEPT);
        assert_eq!(batch.last().unwrap().addr, "10.0.0.9");
        assert_eq!(batch.first().unwrap().addr, "10.0.0.5");
    }
}
