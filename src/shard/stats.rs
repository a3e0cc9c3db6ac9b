//! Per-shard measurements kept on the shard itself: HDR latency histograms (a record is a
//! few ns, no locks) and drop/disconnect counts. Summarised in the log every interval;
//! the metrics exporter reads the same figures.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use hdrhistogram::Histogram;
use tracing::info;

use super::hooks::{latency, Telemetry};
use crate::util::histogram::latency_histogram as histogram;

pub struct ShardStats {
    /// Owner shard enqueue -> this shard's receipt of a forwarded frame (since the last
    /// export to the control plane).
    pub cross_shard: RefCell<Histogram<u64>>,
    /// Owner ingest -> frame handed to a viewer's socket (oldest frame of each write).
    pub fanout: RefCell<Histogram<u64>>,
    /// The same, over the current log interval.
    window_cross: RefCell<Histogram<u64>>,
    window_fanout: RefCell<Histogram<u64>>,
    pub drops_queue_bytes: Cell<u64>,
    pub drops_queue_age: Cell<u64>,
    pub kicked_behind: Cell<u64>,
    pub write_stalls: Cell<u64>,
    pub cross_shard_drops: Cell<u64>,
    /// Play request -> first audio/video handed to the player's socket.
    pub first_frame: RefCell<Histogram<u64>>,
    /// Bytes read from / written to every socket of the shard.
    pub ingress_bytes: Cell<u64>,
    pub egress_bytes: Cell<u64>,
    /// Messages ingested from publishers on this shard, by kind (audio, video, metadata, data).
    pub ingested: [Cell<u64>; 4],
    /// Frames queued to viewers of this shard.
    pub relayed: Cell<u64>,
    /// Thread CPU time and wall time at the last export, for utilisation.
    cpu_mark: Cell<Option<(Duration, std::time::Instant)>>,
}

impl Default for ShardStats {
    fn default() -> Self {
        Self {
            cross_shard: RefCell::new(histogram()),
            fanout: RefCell::new(histogram()),
            window_cross: RefCell::new(histogram()),
            window_fanout: RefCell::new(histogram()),
            drops_queue_bytes: Cell::default(),
            drops_queue_age: Cell::default(),
            kicked_behind: Cell::default(),
            write_stalls: Cell::default(),
            cross_shard_drops: Cell::default(),
            first_frame: RefCell::new(histogram()),
            ingress_bytes: Cell::default(),
            egress_bytes: Cell::default(),
            ingested: Default::default(),
            relayed: Cell::default(),
            cpu_mark: Cell::default(),
        }
    }
}

pub fn record(h: &RefCell<Histogram<u64>>, d: Duration) {
    crate::util::histogram::record(&mut h.borrow_mut(), d);
}

pub fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

fn quantiles(h: &Histogram<u64>) -> (u64, u64, u64, u64) {
    if h.is_empty() {
        return (0, 0, 0, 0);
    }
    (
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max(),
    )
}

impl ShardStats {
    /// Hands the histograms recorded since the last call to the control plane and to the
    /// log window, and starts over.
    pub fn export(&self, telemetry: &dyn Telemetry, shard: usize) {
        let s = shard.to_string();
        for (family, now, window) in [
            (
                latency::CROSS_SHARD,
                &self.cross_shard,
                Some(&self.window_cross),
            ),
            (latency::FANOUT, &self.fanout, Some(&self.window_fanout)),
            (latency::FIRST_FRAME, &self.first_frame, None),
        ] {
            let mut h = now.borrow_mut();
            if !h.is_empty() {
                telemetry.merge_latency(family, &s, &h);
            }
            if let Some(window) = window {
                let _ = window.borrow_mut().add(&*h);
            }
            h.reset();
        }
        for (name, c) in [
            ("rtmp_ingress_bytes_total", &self.ingress_bytes),
            ("rtmp_egress_bytes_total", &self.egress_bytes),
            ("rtmp_relayed_messages_total", &self.relayed),
        ] {
            metrics::counter!(name, "shard" => s.clone()).absolute(c.get());
        }
        for (kind, c) in ["audio", "video", "metadata", "data"]
            .into_iter()
            .zip(&self.ingested)
        {
            metrics::counter!("rtmp_ingest_messages_total", "shard" => s.clone(), "kind" => kind)
                .absolute(c.get());
        }
        self.export_cpu(telemetry, shard);
        for (name, reason, c) in [
            (
                "rtmp_viewer_drops_total",
                "queue_bytes",
                &self.drops_queue_bytes,
            ),
            (
                "rtmp_viewer_drops_total",
                "queue_age",
                &self.drops_queue_age,
            ),
            (
                "rtmp_viewer_disconnects_total",
                "behind",
                &self.kicked_behind,
            ),
            (
                "rtmp_viewer_disconnects_total",
                "write_stall",
                &self.write_stalls,
            ),
            (
                "rtmp_cross_shard_drops_total",
                "queue_full",
                &self.cross_shard_drops,
            ),
        ] {
            metrics::counter!(name, "reason" => reason, "shard" => s.clone()).absolute(c.get());
        }
    }

    /// The shard thread's CPU time: total, and the share of wall time since the last
    /// export (how busy its event loop is; 1.0 = saturated).
    fn export_cpu(&self, telemetry: &dyn Telemetry, shard: usize) {
        let Some(cpu) = thread_cpu_time() else {
            return;
        };
        let now = std::time::Instant::now();
        if let Some((last_cpu, last_at)) = self.cpu_mark.get() {
            let wall = now.duration_since(last_at).as_secs_f64();
            if wall > 0.0 {
                let busy = cpu.saturating_sub(last_cpu).as_secs_f64() / wall;
                metrics::gauge!("rtmp_shard_utilization_ratio", "shard" => shard.to_string())
                    .set(busy.min(1.0));
            }
        }
        self.cpu_mark.set(Some((cpu, now)));
        telemetry.shard_cpu(shard, cpu.as_secs_f64());
    }

    /// Logs the interval's percentiles and counts, then starts a new interval.
    pub fn log_and_reset(&self, shard: usize) {
        let (fwd_n, fwd_p50, fwd_p99, fwd_max) = quantiles(&self.window_cross.borrow());
        let (out_n, out_p50, out_p99, out_max) = quantiles(&self.window_fanout.borrow());
        if fwd_n > 0 || out_n > 0 {
            info!(
                shard,
                fwd_n,
                fwd_p50_us = fwd_p50,
                fwd_p99_us = fwd_p99,
                fwd_max_us = fwd_max,
                fanout_n = out_n,
                fanout_p50_us = out_p50,
                fanout_p99_us = out_p99,
                fanout_max_us = out_max,
                drops_queue_bytes = self.drops_queue_bytes.get(),
                drops_queue_age = self.drops_queue_age.get(),
                kicked_behind = self.kicked_behind.get(),
                write_stalls = self.write_stalls.get(),
                cross_shard_drops = self.cross_shard_drops.get(),
                "shard stats"
            );
        }
        self.window_cross.borrow_mut().reset();
        self.window_fanout.borrow_mut().reset();
    }
}

/// CPU time (user + system) the calling thread has used.
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which histograms reached the telemetry, and their sample counts.
    #[derive(Default)]
    struct Seen(std::sync::Mutex<Vec<(&'static str, String, u64)>>);

    impl Telemetry for Seen {
        fn shard_ready(&self, _: usize) {}
        fn merge_latency(&self, family: &'static str, label: &str, delta: &Histogram<u64>) {
            let mut v = self.0.lock().unwrap();
            v.push((family, label.to_string(), delta.len()));
        }
        fn shard_cpu(&self, _: usize, _: f64) {}
    }

    #[test]
    fn records_clamp_and_reset() {
        let s = ShardStats::default();
        record(&s.fanout, Duration::from_millis(3));
        record(&s.fanout, Duration::ZERO);
        record(&s.fanout, Duration::from_secs(3600));
        let (n, _, _, max) = quantiles(&s.fanout.borrow());
        assert_eq!(n, 3);
        assert!(max >= 59_000_000);
        let seen = Seen::default();
        s.export(&seen, 0);
        assert!(s.fanout.borrow().is_empty());
        assert_eq!(quantiles(&s.window_fanout.borrow()).0, 3);
        assert_eq!(
            *seen.0.lock().unwrap(),
            [(latency::FANOUT, "0".to_string(), 3)],
            "only families with samples are handed over"
        );
        s.log_and_reset(0);
        assert!(s.window_fanout.borrow().is_empty());
    }
}
