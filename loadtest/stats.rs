//! Shared measurements: live counters for the progress line, the publisher's send-time
//! ring that viewers look latencies up in (one process, one clock), and per-viewer results.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Live totals, updated with relaxed atomics (one add per read, not per message).
#[derive(Default)]
pub struct Live {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub closed_early: AtomicU64,
    pub bytes: AtomicU64,
    pub published_bytes: AtomicU64,
}

const RING: usize = 1 << 14;

/// When each timestamp of a stream was handed to the publisher's socket. Slots pack the
/// RTMP timestamp (high 32 bits) and microseconds since `epoch` (low 32 bits: 71 minutes).
pub struct SendTimes {
    pub epoch: Instant,
    slots: Vec<AtomicU64>,
}

impl SendTimes {
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            slots: (0..RING).map(|_| AtomicU64::new(u64::MAX)).collect(),
        }
    }

    pub fn record(&self, timestamp: u32, at: Instant) {
        let us = at.saturating_duration_since(self.epoch).as_micros() as u64 & 0xFFFF_FFFF;
        self.slots[timestamp as usize % RING].store(u64::from(timestamp) << 32 | us, Relaxed);
    }

    /// When `timestamp` was sent, if it is still in the ring.
    pub fn sent_at(&self, timestamp: u32) -> Option<Instant> {
        let v = self.slots[timestamp as usize % RING].load(Relaxed);
        (v != u64::MAX && (v >> 32) as u32 == timestamp)
            .then(|| self.epoch + Duration::from_micros(v & 0xFFFF_FFFF))
    }
}

/// What one viewer measured.
#[derive(Debug, Clone, Default)]
pub struct ViewerResult {
    pub connected: bool,
    pub paused: bool,
    pub error: Option<String>,
    pub first_media_ms: Option<f64>,
    pub first_keyframe_ms: Option<f64>,
    /// Bytes received from the first keyframe on, and over how long.
    pub bytes_after_key: u64,
    pub active_secs: f64,
    /// Gaps of more than a second between media messages.
    pub stalls: u64,
    pub closed_by_server: bool,
    /// Every byte read from the socket.
    pub total_bytes: u64,
}

pub fn new_latency_histogram() -> Histogram<u64> {
    // microseconds, up to 60 s, 3 significant digits
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// p50/p99/max of a list of milliseconds, for the report.
pub fn summary(values: &mut [f64]) -> serde_json::Value {
    if values.is_empty() {
        return serde_json::json!(null);
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    serde_json::json!({
        "count": values.len(),
        "p50": pick(0.5),
        "p99": pick(0.99),
        "max": values[values.len() - 1],
    })
}

pub fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    if h.is_empty() {
        return serde_json::json!(null);
    }
    let ms = |v: u64| v as f64 / 1000.0;
    serde_json::json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p90_ms": ms(h.value_at_quantile(0.9)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_times_round_trip_and_miss() {
        let epoch = Instant::now();
        let s = SendTimes::new(epoch);
        let at = epoch + Duration::from_millis(1500);
        s.record(40, at);
        assert_eq!(s.sent_at(40), Some(at));
        assert_eq!(s.sent_at(41), None);
        s.record(40 + RING as u32, at); // same slot, newer timestamp
        assert_eq!(s.sent_at(40), None);
    }

    #[test]
    fn summary_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summary(&mut v);
        assert_eq!(s["p50"], 51.0);
        assert_eq!(s["max"], 100.0);
    }
}
