//! The one shape of latency histogram: microseconds, 1 µs .. 60 s, 3 significant digits.
//! Shards and push sessions record into these; the control plane merges and exports them.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest value recorded, in microseconds (60 s).
pub const MAX_US: u64 = 60_000_000;

pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// Records a duration, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, MAX_US);
    let _ = h.record(us);
}
