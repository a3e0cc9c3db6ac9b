//! Latency histograms from the shards' HDR histograms, exported as Prometheus histograms
//! (cumulative `le` buckets, so they aggregate across instances) plus a summary of recent
//! quantiles (last 10 s window). Shards merge a delta in once a second; nothing here is on the hot path.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Bucket bounds in seconds.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const WINDOW: Duration = Duration::from_secs(10);

pub use crate::channel::SWITCH_FAMILY as CHANNEL_SWITCH;
pub use crate::hls::LATENCY_FAMILY as HLS_PACKAGING;
pub use crate::relay::push::LATENCY_FAMILY as PUSH;
pub use crate::shard::hooks::latency::{CROSS_SHARD, FANOUT, FIRST_FRAME};
pub use crate::storage::uploader::LATENCY_FAMILY as STORAGE_UPLOAD;

/// Name, help and label of the exported latency families.
pub const FAMILIES: [(&str, &str, &str); 7] = [
    (
        CROSS_SHARD,
        "Owner shard ingest to another shard's receipt of a forwarded frame.",
        "shard",
    ),
    (
        FANOUT,
        "Ingest to a frame handed to a viewer's socket (oldest frame of each write).",
        "shard",
    ),
    (
        PUSH,
        "Ingest to a frame handed to a push destination's socket.",
        "destination",
    ),
    (
        HLS_PACKAGING,
        "Ingest of a part's earliest frame to the LL-HLS part being servable.",
        "shard",
    ),
    (
        STORAGE_UPLOAD,
        "An object queued for a storage target to the target confirming it.",
        "target",
    ),
    (
        CHANNEL_SWITCH,
        "A channel's source lost (its last frame, or its unpublish) to the first frame of what replaced it.",
        "channel",
    ),
    (
        FIRST_FRAME,
        "A player's play request to its first audio/video frame handed to its socket.",
        "shard",
    ),
];

struct Series {
    total: Histogram<u64>,
    window: Histogram<u64>,
    last_window: Histogram<u64>,
    window_start: Instant,
}

use crate::util::histogram::latency_histogram as new_hist;

#[derive(Default)]
pub struct LatencyExport {
    /// (family, label value) -> series; label is e.g. the shard number.
    series: Mutex<BTreeMap<(&'static str, String), Series>>,
}

impl LatencyExport {
    /// Adds a histogram (microseconds) recorded since the last merge for this family and
    /// label value (a shard number, a push destination id).
    pub fn merge(&self, family: &'static str, label: &str, delta: &Histogram<u64>) {
        if delta.is_empty() {
            return;
        }
        let mut map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let s = map
            .entry((family, label.to_string()))
            .or_insert_with(|| Series {
                total: new_hist(),
                window: new_hist(),
                last_window: new_hist(),
                window_start: Instant::now(),
            });
        let _ = s.total.add(delta);
        if s.window_start.elapsed() >= WINDOW {
            s.last_window = std::mem::replace(&mut s.window, new_hist());
            s.window_start = Instant::now();
        }
        let _ = s.window.add(delta);
    }

    /// Keeps only the series of `family` whose label passes `keep`: a removed push
    /// destination's series leaves the scrape with it.
    pub fn retain(&self, family: &'static str, keep: impl Fn(&str) -> bool) {
        let mut map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(f, label), _| *f != family || keep(label));
    }

    pub fn render(&self, out: &mut String) {
        let map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for (family, help, key) in FAMILIES {
            let _ = writeln!(out, "# HELP {family} {help}");
            let _ = writeln!(out, "# TYPE {family} histogram");
            for ((f, value), s) in map.iter() {
                if *f != family {
                    continue;
                }
                let label = format!("{key}=\"{}\"", escape(value));
                let h = &s.total;
                for le in BUCKETS {
                    let n = h.count_between(0, (le * 1e6) as u64);
                    let _ = writeln!(out, "{family}_bucket{{{label},le=\"{le}\"}} {n}");
                }
                let _ = writeln!(out, "{family}_bucket{{{label},le=\"+Inf\"}} {}", h.len());
                let sum = h.mean() * h.len() as f64 / 1e6;
                let _ = writeln!(out, "{family}_sum{{{label}}} {sum}");
                let _ = writeln!(out, "{family}_count{{{label}}} {}", h.len());
            }
            // Recent quantiles as a summary over the last 10 s window.
            let recent = format!("{}_recent_seconds", family.trim_end_matches("_seconds"));
            let _ = writeln!(out, "# HELP {recent} {help} Over the last 10 s window.");
            let _ = writeln!(out, "# TYPE {recent} summary");
            for ((f, value), s) in map.iter() {
                if *f != family {
                    continue;
                }
                let label = format!("{key}=\"{}\"", escape(value));
                let h = if s.last_window.is_empty() {
                    &s.window
                } else {
                    &s.last_window
                };
                for q in [0.5, 0.9, 0.99, 0.999] {
                    let v = h.value_at_quantile(q) as f64 / 1e6;
                    let _ = writeln!(out, "{recent}{{{label},quantile=\"{q}\"}} {v}");
                }
                let sum = h.mean() * h.len() as f64 / 1e6;
                let _ = writeln!(out, "{recent}_sum{{{label}}} {sum}");
                let _ = writeln!(out, "{recent}_count{{{label}}} {}", h.len());
            }
        }
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_counts_add_up() {
        let e = LatencyExport::default();
        let mut h = new_hist();
        for us in [50u64, 200, 3_000, 40_000, 2_000_000] {
            h.record(us).unwrap();
        }
        e.merge(FANOUT, "0", &h);
        e.merge(FANOUT, "0", &h);
        let mut out = String::new();
        e.render(&mut out);
        let bucket = |le: &str| -> u64 {
            let needle = format!("rtmp_fanout_latency_seconds_bucket{{shard=\"0\",le=\"{le}\"}} ");
            out.lines()
                .find_map(|l| l.strip_prefix(&needle))
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        assert_eq!(bucket("0.0001"), 2);
        assert_eq!(bucket("0.005"), 6);
        assert_eq!(bucket("0.05"), 8);
        assert_eq!(bucket("+Inf"), 10);
        assert!(out.contains("rtmp_fanout_latency_seconds_count{shard=\"0\"} 10"));
        assert!(out.contains("# TYPE rtmp_cross_shard_latency_seconds histogram"));
        assert!(out.contains("rtmp_fanout_latency_recent_seconds{shard=\"0\",quantile=\"0.5\"}"));
        assert!(out.contains("# TYPE rtmp_fanout_latency_recent_seconds summary"));
    }
}
