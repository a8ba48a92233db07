//! "Last used" bookkeeping: recorded in memory per request, written to the
//! store in one batch every `usage_flush` and at shutdown, so a busy gateway
//! does not write the store once per request.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

use crate::store::Usage;

/// Pending "last used" facts, newest per id.
#[derive(Debug, Default)]
pub struct UsageLog {
    /// Keyed by the cached record's `Arc<str>` id: recording a use allocates
    /// nothing once the id is present.
    pending: DashMap<Arc<str>, (u64, IpAddr)>,
}

impl UsageLog {
    pub fn record(&self, id: &Arc<str>, at: u64, addr: IpAddr) {
        // Most requests repeat the last fact (same second, same address): a
        // shared read lock answers that without contending for the shard.
        if let Some(slot) = self.pending.get(&**id) {
            if *slot == (at, addr) {
                return;
            }
        }
        if let Some(mut slot) = self.pending.get_mut(&**id) {
            if slot.0 <= at {
                *slot = (at, addr);
            }
            return;
        }
        self.pending.insert(id.clone(), (at, addr));
    }

    /// Takes every pending fact, leaving the log empty.
    pub fn drain(&self) -> Vec<Usage> {
        let keys: Vec<Arc<str>> = self.pending.iter().map(|e| e.key().clone()).collect();
        keys.into_iter()
            .filter_map(|k| self.pending.remove(&*k))
            .map(|(id, (at, addr))| Usage {
                id: id.to_string(),
                at,
                addr: addr.to_string(),
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_use_wins_and_drain_empties() {
        let log = UsageLog::default();
        let id: Arc<str> = "abc".into();
        log.record(&id, 10, "127.0.0.1".parse().unwrap());
        log.record(&id, 12, "127.0.0.2".parse().unwrap());
        log.record(&id, 11, "127.0.0.3".parse().unwrap());
        let batch = log.drain();
        assert_eq!(batch.len(), 1);
        assert_eq!((batch[0].at, batch[0].addr.as_str()), (12, "127.0.0.2"));
        assert!(log.is_empty());
    }
}
