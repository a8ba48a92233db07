//! The series a request updates, resolved before any request arrives: one
//! [`RouteMetrics`] per route and one [`UpstreamMetrics`] per upstream, held
//! by the compiled config next to what they count.
//!
//! Recording is a handful of relaxed atomic additions: no lock, no allocation,
//! no label set built per request. The (method, status) pairs of a route are
//! not known in advance (a backend answers what it likes), so they live in a
//! small open-addressing table whose slots are claimed with one
//! compare-and-swap the first time a pair is seen; a route that sees more
//! distinct pairs than the table holds counts the rest as `code="other"`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http::Method;

/// Method label values; anything else is `"other"` (a label value never
/// comes from the request).
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];

/// Upper bounds of the request-duration histogram, in seconds: from half a
/// millisecond (a cached authentication answered by a local backend) to a
/// minute (a large clone). `+Inf` follows.
pub const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// [`BUCKETS`] in nanoseconds, compared without floating point.
const BUCKET_NANOS: [u64; 16] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// Distinct (method, status) pairs one route counts separately.
const SLOTS: usize = 64;

/// The index of `m` in [`METHODS`].
fn method_index(m: &Method) -> u32 {
    // Comparisons of the standard methods are enum comparisons.
    if *m == Method::GET {
        0
    } else if *m == Method::HEAD {
        1
    } else if *m == Method::POST {
        2
    } else if *m == Method::PUT {
        3
    } else if *m == Method::DELETE {
        4
    } else if *m == Method::PATCH {
        5
    } else if *m == Method::OPTIONS {
        6
    } else {
        7
    }
}

/// One route's requests by method and status, and their durations.
pub struct RouteMetrics {
    /// The `route` label: a config route name, or a fixed name for requests
    /// no route took (`(none)`, `(selfservice)`).
    pub name: Arc<str>,
    requests: Requests,
    duration: Histogram,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RouteMetrics {
    pub(super) fn new(name: Arc<str>) -> RouteMetrics {
        RouteMetrics {
            name,
            requests: Requests::default(),
            duration: Histogram::default(),
        }
    }

    /// Counts one finished request.
    pub fn record(&self, method: &Method, status: u16, took: Duration) {
        self.requests.add(method_index(method), status);
        self.duration.observe(took);
    }

    /// `(method, status, count)` for every pair seen; status 0 stands for
    /// the pairs that found no free slot.
    pub(super) fn requests(&self) -> Vec<(&'static str, u16, u64)> {
        self.requests.snapshot()
    }

    pub(super) fn duration(&self) -> HistogramSnapshot {
        self.duration.snapshot()
    }
}

/// The lock-free (method, status) → count table.
#[derive(Debug)]
struct Requests {
    slots: [Slot; SLOTS],
    /// Pairs seen after every slot was taken.
    overflow: AtomicU64,
}

#[derive(Debug, Default)]
struct Slot {
    /// `(method + 1) << 10 | status`; 0 while the slot is free.
    key: AtomicU32,
    count: AtomicU64,
}

impl Default for Requests {
    fn default() -> Self {
        Requests {
            slots: std::array::from_fn(|_| Slot::default()),
            overflow: AtomicU64::new(0),
        }
    }
}

impl Requests {
    fn add(&self, method: u32, status: u16) {
        let key = ((method + 1) << 10) | u32::from(status & 0x3ff);
        let start = (usize::from(status) ^ (method as usize * 17)) % SLOTS;
        for i in 0..SLOTS {
            let Some(slot) = self.slots.get((start + i) % SLOTS) else {
                break;
            };
            let mut seen = slot.key.load(Relaxed);
            if seen == 0 {
                seen = match slot.key.compare_exchange(0, key, Relaxed, Relaxed) {
                    Ok(_) => key,
                    Err(other) => other,
                };
            }
            if seen == key {
                slot.count.fetch_add(1, Relaxed);
                return;
            }
        }
        self.overflow.fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> Vec<(&'static str, u16, u64)> {
        let mut out: Vec<(u32, u64)> = self
            .slots
            .iter()
            .map(|s| (s.key.load(Relaxed), s.count.load(Relaxed)))
            .filter(|&(key, count)| key != 0 && count != 0)
            .collect();
        out.sort_unstable();
        let mut rows: Vec<(&'static str, u16, u64)> = out
            .into_iter()
            .map(|(key, count)| {
                let method = METHODS
                    .get(((key >> 10) as usize).saturating_sub(1))
                    .copied()
                    .unwrap_or("other");
                (method, (key & 0x3ff) as u16, count)
            })
            .collect();
        let overflow = self.overflow.load(Relaxed);
        if overflow > 0 {
            rows.push(("other", 0, overflow));
        }
        rows
    }
}

/// A histogram of durations whose buckets are plain atomics (the
/// `prometheus-client` histogram takes a mutex per observation).
#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket, not cumulative; the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// What a scrape reads of a histogram: per-bucket counts (the encoder
/// makes them cumulative).
#[derive(Debug)]
pub(super) struct HistogramSnapshot {
    pub(super) buckets: Vec<(f64, u64)>,
    pub(super) count: u64,
    pub(super) sum_seconds: f64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let i = BUCKET_NANOS
            .iter()
            .position(|&le| nanos <= le)
            .unwrap_or(BUCKET_NANOS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(le, n)| (le, n.load(Relaxed)))
            .collect();
        HistogramSnapshot {
            // The buckets, read one by one, are the consistent count.
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// Why a request to an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Refused, reset, unreachable or spoke garbage (502).
    Unavailable,
    /// No response head within `response_timeout` (504).
    Timeout,
}

impl UpstreamFailure {
    pub(super) const ALL: [UpstreamFailure; 2] =
        [UpstreamFailure::Unavailable, UpstreamFailure::Timeout];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Unavailable => "unavailable",
            UpstreamFailure::Timeout => "timeout",
        }
    }
}

/// One upstream's failures, by kind.
#[derive(Debug)]
pub struct UpstreamMetrics {
    /// The `upstream` label: the `[upstreams.NAME]` of the config.
    pub name: Arc<str>,
    errors: [AtomicU64; 2],
}

impl UpstreamMetrics {
    pub(super) fn new(name: Arc<str>) -> UpstreamMetrics {
        UpstreamMetrics {
            name,
            errors: Default::default(),
        }
    }

    /// Counts one failed request to this upstream.
    pub fn failed(&self, why: UpstreamFailure) {
        if super::enabled() {
            if let Some(c) = self.errors.get(why as usize) {
                c.fetch_add(1, Relaxed);
            }
        }
    }

    pub(super) fn errors(&self, why: UpstreamFailure) -> u64 {
        self.errors.get(why as usize).map_or(0, |c| c.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_counted_apart_and_overflow_is_kept() {
        let r = Requests::default();
        r.add(0, 200);
        r.add(0, 200);
        r.add(2, 200);
        r.add(0, 404);
        assert_eq!(
            r.snapshot(),
            vec![("GET", 200, 2), ("GET", 404, 1), ("POST", 200, 1)]
        );
        let full = Requests::default();
        for status in 100..(100 + SLOTS as u16 + 3) {
            full.add(0, status);
        }
        let rows = full.snapshot();
        assert_eq!(rows.len(), SLOTS + 1);
        assert_eq!(rows.last(), Some(&("other", 0, 3)));
    }

    #[test]
    fn histogram_counts_each_duration_once() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(120));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets.first(), Some(&(0.0005, 1)));
        assert_eq!(s.buckets.get(3), Some(&(0.005, 1)));
        assert_eq!(s.buckets.get(15), Some(&(60.0, 0)));
        assert_eq!(s.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert!((s.sum_seconds - 120.0031).abs() < 1e-9);
    }

    #[test]
    fn methods_map_to_fixed_labels() {
        assert_eq!(method_index(&Method::GET), 0);
        assert_eq!(method_index(&Method::OPTIONS), 6);
        let odd = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(METHODS[method_index(&odd) as usize], "other");
    }
}
