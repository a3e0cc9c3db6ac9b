//! HLS and Low-Latency HLS for browsers (`--hls`, `[hls]` in the config file): each packaged
//! stream gets a sink on its owner shard that turns the shared frames into CMAF parts
//! (`packager`), kept in memory in a timeline (`playlist`) that the media HTTP listener
//! (`web`) reads. The shard never waits on a reader: a sink takes the timeline's lock
//! only to add a finished part, about five times a second.
//!
//! With `on-demand` (the default) a stream is packaged only while someone asked for it in
//! the last `IDLE_AFTER`; the first request starts packaging at the next keyframe.

pub mod fmp4;
pub mod packager;
pub mod playlist;
pub mod store;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use serde::Deserialize;
use tokio::sync::watch;

use crate::media::frame::SharedFrame;
use crate::shard::hooks::{SinkContext, SinkFactory, StreamSink, Telemetry};
use crate::shard::state::StreamKey;
use crate::util::glob_match;
use packager::{Out, Packager, PackagerConfig};
use playlist::{Timeline, TimelineConfig};

/// An on-demand stream stops being packaged this long after its last request.
pub const IDLE_AFTER: Duration = Duration::from_secs(30);

/// How often (in stream time) an idle sink looks whether it is wanted, besides at every
/// keyframe, where packaging can start: a clock read per frame would cost an origin with
/// thousands of unwatched streams more than all the rest of the sink.
const DEMAND_CHECK_MS: u32 = 100;
/// A timeline whose publisher left is forgotten after this long without a republish.
pub const KEEP_ENDED: Duration = Duration::from_secs(60);

const SINK_ID: &str = "hls";

/// Ingest of a part's first frame to the part being servable, per shard.
pub const LATENCY_FAMILY: &str = "rtmp_hls_packaging_latency_seconds";
/// How often a sink hands its latency histogram to the control plane.
const EXPORT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum HlsError {
    #[error("[hls] mode {0:?} must be \"all\", \"none\" or \"on-demand\"")]
    BadMode(String),
    #[error("HLS part duration {part_ms} ms must be between 50 ms and the segment duration ({segment_ms} ms)")]
    BadPart { part_ms: u64, segment_ms: u64 },
    #[error("HLS segment duration must be between 0.5 and 60 s, not {0}")]
    BadSegment(f64),
    #[error("HLS window must be 3 to 1000 segments, not {0}")]
    BadWindow(usize),
    #[error("HLS keep {0:?} is not a duration like 90m, 24h or 7d")]
    BadKeep(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HlsMode {
    All,
    None,
    #[default]
    OnDemand,
}

/// The `[hls]` table (mode and per-stream overrides); `config` fills in the durations and
/// the window from the `--hls*` flags.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HlsConfig {
    /// "all", "none" or "on-demand".
    pub mode: Option<String>,
    #[serde(skip)]
    pub segment_secs: Option<f64>,
    #[serde(skip)]
    pub part_ms: Option<u64>,
    #[serde(skip)]
    pub window: Option<usize>,
    /// A storage URL HLS is also written to.
    pub store: Option<String>,
    /// Upload parts too.
    pub store_parts: Option<bool>,
    /// Keep stored segments this long after they leave the window (`24h`): a DVR archive
    /// with a VOD playlist written when the stream ends.
    pub keep: Option<String>,
    /// Per-stream overrides, first match wins.
    #[serde(default)]
    pub streams: Vec<HlsOverride>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HlsOverride {
    /// `app/name`, exact or with `*` / `?` wildcards.
    #[serde(rename = "match")]
    pub pattern: String,
    pub hls: bool,
}

/// Which streams are packaged, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct HlsPolicy {
    pub mode: HlsMode,
    pub overrides: Vec<HlsOverride>,
    pub segment_ms: u64,
    pub part_ms: u64,
    pub window: usize,
    /// The storage URL HLS is also written to (`main` opens it), and whether parts too.
    pub store: Option<String>,
    pub store_parts: bool,
    /// How long stored segments outlive the window (an archive); None deletes them.
    pub keep: Option<Duration>,
}

impl HlsPolicy {
    pub fn from_config(c: &HlsConfig) -> Result<Self, HlsError> {
        let mode = match c.mode.as_deref() {
            // A bucket a CDN serves from must be filled whether or not anyone asks here.
            None if c.store.is_some() => HlsMode::All,
            None | Some("on-demand") => HlsMode::OnDemand,
            Some("all") => HlsMode::All,
            Some("none") => HlsMode::None,
            Some(other) => return Err(HlsError::BadMode(other.to_string())),
        };
        let secs = c.segment_secs.unwrap_or(2.0);
        if !(0.5..=60.0).contains(&secs) {
            return Err(HlsError::BadSegment(secs));
        }
        let segment_ms = (secs * 1000.0).round() as u64;
        let part_ms = c.part_ms.unwrap_or(200);
        if !(50..=segment_ms).contains(&part_ms) {
            return Err(HlsError::BadPart {
                part_ms,
                segment_ms,
            });
        }
        let window = c.window.unwrap_or(10);
        if !(3..=1000).contains(&window) {
            return Err(HlsError::BadWindow(window));
        }
        Ok(Self {
            mode,
            overrides: c.streams.clone(),
            segment_ms,
            part_ms,
            window,
            store: c.store.clone(),
            store_parts: c.store_parts.unwrap_or(false),
            keep: match &c.keep {
                Some(k) => Some(
                    crate::util::duration::parse_duration(k)
                        .ok_or_else(|| HlsError::BadKeep(k.clone()))?,
                ),
                None => None,
            },
        })
    }

    /// The first per-stream override matching `key`, if any.
    fn override_for(&self, key: &str) -> Option<bool> {
        self.overrides
            .iter()
            .find(|o| glob_match(&o.pattern, key))
            .map(|o| o.hls)
    }

    /// Whether `key` may be packaged at all (on demand or always).
    pub fn packages(&self, key: &str) -> bool {
        self.override_for(key).unwrap_or(self.mode != HlsMode::None)
    }

    /// Whether `key` is packaged without waiting for a request.
    fn always(&self, key: &str) -> bool {
        self.override_for(key).unwrap_or(self.mode == HlsMode::All)
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One stream's HLS state, shared by its sink (owner shard) and the HTTP threads.
pub struct StreamHls {
    pub key: StreamKey,
    pub timeline: Mutex<Timeline>,
    /// Bumped on every change; blocking requests wait on it.
    pub changed: watch::Sender<u64>,
    /// Last request (ms since the epoch), for on-demand packaging.
    pub last_request_ms: AtomicU64,
    /// Packaged regardless of requests (`all` or an override).
    pub always: bool,
    /// The packager outlives a publisher, so a republish continues the same timeline.
    parked: Mutex<Option<Packager>>,
    /// A sink currently feeds it.
    attached: AtomicBool,
    /// What went to the storage target (`--hls-store`).
    store: Mutex<Option<store::StreamStore>>,
}

impl StreamHls {
    /// A request arrived: on-demand packaging starts (or goes on).
    pub fn touch(&self) {
        self.last_request_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn wanted(&self, now_ms: u64) -> bool {
        self.always || self.requested(now_ms)
    }

    /// A viewer asked within `IDLE_AFTER` (with `always`, packaging goes on without one).
    fn requested(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_request_ms.load(Ordering::Relaxed))
            < IDLE_AFTER.as_millis() as u64
    }

    pub fn is_attached(&self) -> bool {
        self.attached.load(Ordering::Relaxed)
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

/// Every packaged stream: a `SinkFactory` for the shards, the lookup for the HTTP side.
pub struct Hls {
    policy: HlsPolicy,
    store: Option<Arc<store::HlsStore>>,
    streams: Mutex<HashMap<StreamKey, Arc<StreamHls>>>,
}

impl Hls {
    pub fn new(policy: HlsPolicy, store: Option<Arc<store::HlsStore>>) -> Arc<Self> {
        Arc::new(Self {
            policy,
            store,
            streams: Mutex::default(),
        })
    }

    pub fn policy(&self) -> &HlsPolicy {
        &self.policy
    }

    pub fn get(&self, key: &str) -> Option<Arc<StreamHls>> {
        self.streams.lock().ok()?.get(key).cloned()
    }

    /// Forgets timelines whose publisher left more than `KEEP_ENDED` ago.
    pub fn sweep(&self) {
        let now = now_ms();
        if let Ok(mut map) = self.streams.lock() {
            map.retain(|_, s| {
                s.is_attached()
                    || s.timeline.lock().is_ok_and(|t| {
                        t.ended_at_ms
                            .is_none_or(|at| now.saturating_sub(at) < KEEP_ENDED.as_millis() as u64)
                    })
            });
        }
    }

    fn entry(&self, key: &StreamKey) -> Option<Arc<StreamHls>> {
        let mut map = self.streams.lock().ok()?;
        let always = self.policy.always(key);
        let cfg = TimelineConfig {
            window: self.policy.window,
            segment_ms: self.policy.segment_ms,
            part_ms: self.policy.part_ms,
        };
        Some(
            map.entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(StreamHls {
                        key: key.clone(),
                        timeline: Mutex::new(Timeline::new(cfg, now_ms())),
                        changed: watch::Sender::new(0),
                        last_request_ms: AtomicU64::new(0),
                        always,
                        parked: Mutex::new(None),
                        attached: AtomicBool::new(false),
                        store: Mutex::new(
                            self.store
                                .as_ref()
                                .map(|s| store::StreamStore::new(s.clone(), key)),
                        ),
                    })
                })
                .clone(),
        )
    }
}

impl SinkFactory for Hls {
    fn sinks_for(
        &self,
        ctx: &SinkContext,
        key: &StreamKey,
        existing: &[&str],
    ) -> Vec<Box<dyn StreamSink>> {
        if existing.contains(&SINK_ID) || !self.policy.packages(key) {
            return Vec::new();
        }
        let Some(stream) = self.entry(key) else {
            return Vec::new();
        };
        let cfg = PackagerConfig {
            segment_ms: self.policy.segment_ms,
            part_ms: self.policy.part_ms,
        };
        let packager = stream
            .parked
            .lock()
            .ok()
            .and_then(|mut p| p.take())
            .unwrap_or_else(|| Packager::new(cfg));
        stream.attached.store(true, Ordering::Relaxed);
        vec![Box::new(HlsSink {
            stream,
            packager: Some(packager),
            out: Vec::new(),
            active: false,
            demand_checked: None,
            telemetry: ctx.telemetry(),
            shard: ctx.shard_id().unwrap_or(0),
        })]
    }
}

/// One stream's packaging on its owner shard.
struct HlsSink {
    stream: Arc<StreamHls>,
    packager: Option<Packager>,
    out: Vec<Out>,
    /// Packaging now (on demand: someone asked recently).
    active: bool,
    /// The stream timestamp `active` was last decided at (None: at the next frame).
    demand_checked: Option<u32>,
    telemetry: Option<Arc<dyn Telemetry>>,
    shard: usize,
}

thread_local! {
    /// The shard's packaging latency, shared by all its sinks: a histogram is ~140 KiB, too
    /// much to keep per stream on an origin with thousands of them, most never packaged.
    static SHARD_LATENCY: RefCell<Option<Latency>> = const { RefCell::new(None) };
}

/// Packaging latency, recorded per part and handed to the control plane once a second.
struct Latency {
    telemetry: Option<Arc<dyn Telemetry>>,
    label: String,
    hist: Histogram<u64>,
    exported: Instant,
}

impl Latency {
    /// Records into the calling shard's histogram, made by the first part packaged there.
    fn record_on_shard(sink: &HlsSink, ingests: &[Instant], now: Instant) {
        SHARD_LATENCY.with_borrow_mut(|l| {
            let l = l.get_or_insert_with(|| Latency {
                telemetry: sink.telemetry.clone(),
                label: sink.shard.to_string(),
                hist: crate::util::histogram::latency_histogram(),
                exported: now,
            });
            for &i in ingests {
                l.record(i, now);
            }
        });
    }

    fn record(&mut self, ingest: Instant, now: Instant) {
        crate::util::histogram::record(&mut self.hist, now.saturating_duration_since(ingest));
        if now.saturating_duration_since(self.exported) >= EXPORT_EVERY {
            if let Some(t) = &self.telemetry {
                t.merge_latency(LATENCY_FAMILY, &self.label, &self.hist);
            }
            self.hist.reset();
            self.exported = now;
        }
    }
}

impl HlsSink {
    fn publish_out(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let now = now_ms();
        let mut parts = 0u64;
        let mut ingests = Vec::new();
        if let Ok(mut t) = self.stream.timeline.lock() {
            for o in self.out.drain(..) {
                match &o {
                    Out::Part(p) => {
                        parts += 1;
                        ingests.extend(p.first_ingest);
                        if p.starts_segment {
                            metrics::counter!("rtmp_hls_segments_total").increment(1);
                        }
                    }
                    Out::Init(_) | Out::End => {}
                }
                t.apply(o, now);
            }
            if let Ok(mut st) = self.stream.store.lock() {
                if let Some(st) = st.as_mut() {
                    st.sync(&t, false, Instant::now());
                }
            }
        }
        self.out.clear();
        self.stream.notify();
        metrics::counter!("rtmp_hls_parts_total").increment(parts);
        if !ingests.is_empty() {
            Latency::record_on_shard(self, &ingests, Instant::now());
        }
    }
}

impl StreamSink for HlsSink {
    fn id(&self) -> &str {
        SINK_ID
    }

    fn on_publish(&mut self) {
        self.demand_checked = None;
        if let Some(p) = &mut self.packager {
            p.on_publish();
        }
        if let Ok(mut t) = self.stream.timeline.lock() {
            t.on_publish();
        }
        self.stream.notify();
    }

    fn on_frame(&mut self, frame: &SharedFrame) {
        let ts = frame.timestamp;
        let due = frame.is_video_keyframe()
            || frame.is_config()
            || self
                .demand_checked
                .is_none_or(|at| ts.wrapping_sub(at) >= DEMAND_CHECK_MS);
        let wanted = if due {
            self.demand_checked = Some(ts);
            self.stream.wanted(now_ms())
        } else {
            self.active
        };
        if wanted != self.active {
            self.active = wanted;
            if let Some(p) = &mut self.packager {
                if wanted {
                    // Someone asked: the same timeline goes on from the next keyframe.
                    p.on_publish();
                    if let Ok(mut t) = self.stream.timeline.lock() {
                        t.on_publish();
                    }
                } else {
                    // Nobody asked for a while: end the segment and stop packaging.
                    p.on_unpublish(&mut self.out);
                }
            }
            self.publish_out();
        }
        // Decoder configurations come once, at publish: the packager keeps them even while
        // idle, so a first request can start at the next keyframe.
        if !self.active && !frame.is_config() {
            return;
        }
        if let Some(p) = &mut self.packager {
            p.push(frame, &mut self.out);
        }
        self.publish_out();
    }

    fn has_viewers(&self) -> bool {
        self.stream.requested(now_ms())
    }

    fn on_unpublish(&mut self) -> bool {
        if let Some(mut p) = self.packager.take() {
            p.on_unpublish(&mut self.out);
            self.publish_out();
            if let Ok(mut parked) = self.stream.parked.lock() {
                *parked = Some(p);
            }
        }
        if let Ok(mut t) = self.stream.timeline.lock() {
            t.apply(Out::End, now_ms());
            if let Ok(mut st) = self.stream.store.lock() {
                if let Some(st) = st.as_mut() {
                    st.sync(&t, true, Instant::now());
                }
            }
        }
        self.stream.attached.store(false, Ordering::Relaxed);
        self.stream.notify();
        false
    }

    fn stop(&mut self) {
        self.on_unpublish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_from_config() {
        let p = HlsPolicy::from_config(&HlsConfig::default()).unwrap();
        assert_eq!(
            (p.mode, p.segment_ms, p.part_ms, p.window),
            (HlsMode::OnDemand, 2000, 200, 10)
        );
        assert!(p.packages("live/x"));
        let c = HlsConfig {
            mode: Some("none".into()),
            streams: vec![HlsOverride {
                pattern: "live/web*".into(),
                hls: true,
            }],
            ..HlsConfig::default()
        };
        let p = HlsPolicy::from_config(&c).unwrap();
        assert!(p.packages("live/web1") && !p.packages("live/cam"));
        let stored = HlsConfig {
            store: Some("file:///srv/hls".into()),
            ..HlsConfig::default()
        };
        assert_eq!(HlsPolicy::from_config(&stored).unwrap().mode, HlsMode::All);
        let stored_on_demand = HlsConfig {
            mode: Some("on-demand".into()),
            ..stored
        };
        assert_eq!(
            HlsPolicy::from_config(&stored_on_demand).unwrap().mode,
            HlsMode::OnDemand
        );
        let bad = HlsConfig {
            part_ms: Some(3000),
            ..HlsConfig::default()
        };
        assert!(matches!(
            HlsPolicy::from_config(&bad),
            Err(HlsError::BadPart { .. })
        ));
        let bad = HlsConfig {
            mode: Some("sometimes".into()),
            ..HlsConfig::default()
        };
        assert!(HlsPolicy::from_config(&bad).is_err());
    }
}
