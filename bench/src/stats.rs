//! Latency histograms and medians.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use hdrhistogram::Histogram;

/// A latency histogram in microseconds (1 µs to 100 s, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Records `us`, saturating at the histogram's upper bound.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.max(1));
}

/// How many shards a [`SharedHistogram`] has (more than the tool's worker threads).
const SHARDS: usize = 16;

/// A latency histogram that many client tasks record into: one shard per thread, so that a
/// record touches one of a few histograms that stay in the CPU's caches (a histogram per
/// client, 1000s of them of ~140 KiB each, made every record a cache miss), without
/// contention. [`SharedHistogram::merge`] adds the shards up: the same histogram as one
/// per client merged at the end.
pub struct SharedHistogram {
    shards: Box<[Mutex<Histogram<u64>>]>,
}

impl Default for SharedHistogram {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(latency_histogram()))
                .collect(),
        }
    }
}

impl SharedHistogram {
    /// The calling thread's shard, locked (uncontended but for a thread switch).
    pub fn local(&self) -> MutexGuard<'_, Histogram<u64>> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        let i = SLOT.with(|s| *s) % self.shards.len();
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The sum of the shards.
    pub fn merge(self) -> Histogram<u64> {
        let mut out = latency_histogram();
        for s in self.shards {
            let h = s.into_inner().unwrap_or_else(PoisonError::into_inner);
            out.add(h).expect("histograms with the same bounds");
        }
        out
    }
}

/// Value at quantile `q` (0..=1) in milliseconds, or NaN when empty.
pub fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Median of the finite values, or NaN when there are none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn medians() {
        assert!((super::median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((super::median(&[4.0, 1.0, 2.0, f64::NAN, 3.0]) - 2.5).abs() < 1e-9);
        assert!(super::median(&[]).is_nan());
    }
}
