//! FLV recording of published streams (`--record`, `--record-dir`, `[record]` in the config
//! file): which streams are recorded, the sink each recorded stream gets on its owner shard,
//! and the handle `main` uses to finalize every file on SIGTERM/SIGINT.
//!
//! The shards are io_uring event loops, so a sink only `try_send`s shared frames into one
//! bounded channel; a single recorder thread (`worker`) owns every file. If that channel is
//! full the recording is stopped, not patched over: the frames already queued make a valid
//! FLV that ends early, whereas skipping frames would leave a file whose decoder references
//! and timestamps silently break mid-way. Either way the live relay never waits on a disk.

mod name;
mod worker;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::error;

use crate::media::frame::SharedFrame;
use crate::shard::hooks::{ObjectStore, SinkContext, SinkFactory, StreamSink};
use crate::shard::state::StreamKey;
use crate::util::glob_match;
pub use crate::util::time::Civil;
pub use name::{base_name, sanitize};
use worker::{Cmd, Handle};
pub use writer::{meta_body, publisher_props, Finished, FlvWriter, MetaBody};

/// Frames (and open/close commands) that may wait for the recorder thread: a few seconds
/// of a handful of streams, so a disk hiccup is absorbed before anything is stopped.
pub const QUEUE_CAPACITY: usize = 4096;

/// Every `rtmp_record_errors_total` reason: the queue, and the file stages of `worker`.
pub const ERROR_REASONS: [&str; 4] = ["queue_full", "open", "write", "finalize"];

/// The sink's id in a stream's sink list.
const SINK_ID: &str = "record";

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("[record] mode {0:?} in the config file must be \"all\" or \"none\"")]
    BadMode(String),
    #[error("recording is enabled but no directory is set (--record-dir or [record] dir)")]
    NoDir,
    #[error("starting the recorder thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the recorder did not finalize its files within {0:?}")]
    ShutdownTimeout(Duration),
    #[error("the recorder thread is gone")]
    Gone,
}

/// The `[record]` table of the config file; the `--record-dir` and `--record` flags are
/// applied on top of it (by `config`) before it is used.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// Directory for recordings.
    pub dir: Option<PathBuf>,
    /// "all" or "none".
    pub mode: Option<String>,
    /// A storage URL each finished recording is uploaded to (`config` checks it).
    pub store: Option<String>,
    /// Remove the local file once uploaded.
    pub delete_local: Option<bool>,
    /// Per-stream overrides, first match wins.
    #[serde(default)]
    pub streams: Vec<RecordOverride>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordOverride {
    /// `app/name`, exact or with `*` / `?` wildcards.
    #[serde(rename = "match")]
    pub pattern: String,
    pub record: bool,
}

/// Which streams are recorded, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordPolicy {
    pub dir: PathBuf,
    /// Streams no override matches are recorded when true.
    pub all: bool,
    /// First match wins.
    pub overrides: Vec<RecordOverride>,
    /// Remove a file once it is uploaded (when a store is given to the recorder).
    pub delete_local: bool,
}

impl RecordPolicy {
    /// The per-stream overrides apply on top of the mode. None when no stream could ever
    /// be recorded.
    pub fn from_config(c: &RecordConfig) -> Result<Option<Self>, RecordError> {
        let all = match c.mode.as_deref() {
            None | Some("none") => false,
            Some("all") => true,
            Some(other) => return Err(RecordError::BadMode(other.to_string())),
        };
        let overrides = c.streams.clone();
        if !all && !overrides.iter().any(|o| o.record) {
            return Ok(None);
        }
        let dir = c.dir.clone().ok_or(RecordError::NoDir)?;
        Ok(Some(Self {
            dir,
            all,
            overrides,
            delete_local: c.delete_local.unwrap_or(false),
        }))
    }

    pub fn records(&self, key: &str) -> bool {
        self.overrides
            .iter()
            .find(|o| glob_match(&o.pattern, key))
            .map_or(self.all, |o| o.record)
    }
}

/// The recorder: a `SinkFactory` for the shards and the shutdown handle for `main`.
pub struct Recorder {
    policy: RecordPolicy,
    tx: SyncSender<Cmd>,
    ids: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts the recorder thread; finished files go to `uploads` when given.
    pub fn start(
        policy: RecordPolicy,
        uploads: Option<Arc<dyn ObjectStore>>,
    ) -> Result<Arc<Self>, RecordError> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let dir = policy.dir.clone();
        let uploads = uploads.map(|store| worker::Uploads {
            store,
            delete_local: policy.delete_local,
        });
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || worker::run(dir, rx, uploads))
            .map_err(RecordError::Spawn)?;
        Ok(Arc::new(Self {
            policy,
            tx,
            ids: Arc::new(AtomicU64::new(1)),
        }))
    }

    /// The recorder the configuration asks for, if any stream may be recorded.
    pub fn from_config(
        c: &RecordConfig,
        uploads: Option<Arc<dyn ObjectStore>>,
    ) -> Result<Option<Arc<Self>>, RecordError> {
        RecordPolicy::from_config(c)?
            .map(|p| Self::start(p, uploads))
            .transpose()
    }

    pub fn policy(&self) -> &RecordPolicy {
        &self.policy
    }

    /// Finalizes every open recording (frames queued before this call are written first)
    /// and refuses new ones. Returns how many files were finalized. Never blocks longer
    /// than `timeout`, even on a stuck disk.
    pub fn shutdown(&self, timeout: Duration) -> Result<usize, RecordError> {
        let deadline = Instant::now() + timeout;
        let (reply, done) = mpsc::channel();
        let mut cmd = Cmd::Shutdown(reply);
        // A full queue is not a reason to skip finalizing: wait for room, bounded.
        loop {
            match self.tx.try_send(cmd) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return Err(RecordError::Gone),
                Err(TrySendError::Full(c)) => {
                    if Instant::now() >= deadline {
                        return Err(RecordError::ShutdownTimeout(timeout));
                    }
                    cmd = c;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        done.recv_timeout(left).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => RecordError::ShutdownTimeout(timeout),
            mpsc::RecvTimeoutError::Disconnected => RecordError::Gone,
        })
    }
}

impl SinkFactory for Recorder {
    fn sinks_for(
        &self,
        _ctx: &SinkContext,
        key: &StreamKey,
        existing: &[&str],
    ) -> Vec<Box<dyn StreamSink>> {
        if existing.contains(&SINK_ID) || !self.policy.records(key) {
            return Vec::new();
        }
        vec![Box::new(RecordSink {
            key: key.clone(),
            tx: self.tx.clone(),
            ids: self.ids.clone(),
            current: None,
        })]
    }
}

/// One stream's recording, on its owner shard: never blocks, never touches a file.
struct RecordSink {
    key: StreamKey,
    tx: SyncSender<Cmd>,
    ids: Arc<AtomicU64>,
    current: Option<Arc<Handle>>,
}

impl RecordSink {
    fn end(&mut self) {
        if let Some(h) = self.current.take() {
            h.ended.store(true, Ordering::Release);
            // If the queue is full, the recorder's sweep finds the ended handle instead.
            let _ = self.tx.try_send(Cmd::Close(h.id));
        }
    }
}

impl StreamSink for RecordSink {
    fn id(&self) -> &str {
        SINK_ID
    }

    fn on_publish(&mut self) {
        self.end();
        let h = Arc::new(Handle::new(
            self.ids.fetch_add(1, Ordering::Relaxed),
            self.key.clone(),
        ));
        match self.tx.try_send(Cmd::Open(h.clone())) {
            Ok(()) => self.current = Some(h),
            Err(TrySendError::Full(_)) => {
                metrics::counter!("rtmp_record_errors_total", "reason" => "queue_full")
                    .increment(1);
                error!(stream = %self.key, "recorder queue full; this publish is not recorded");
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn on_frame(&mut self, frame: &SharedFrame) {
        let Some(h) = &self.current else {
            return;
        };
        if h.failed.load(Ordering::Relaxed) {
            self.end();
            return;
        }
        match self.tx.try_send(Cmd::Frame(h.id, frame.clone())) {
            Ok(()) => {
                h.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                metrics::counter!("rtmp_record_dropped_frames_total").increment(1);
                metrics::counter!("rtmp_record_errors_total", "reason" => "queue_full")
                    .increment(1);
                error!(
                    stream = %self.key,
                    queue = QUEUE_CAPACITY,
                    "recorder queue full (disk too slow); recording stopped at the last queued \
                     frame, the live stream is unaffected"
                );
                self.end();
            }
            Err(TrySendError::Disconnected(_)) => self.current = None,
        }
    }

    fn on_unpublish(&mut self) -> bool {
        self.end();
        false
    }

    /// Shutdown: the file ends here (finalized by the recorder).
    fn stop(&mut self) {
        self.end();
    }
}

impl Drop for RecordSink {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv;
    use crate::media::frame::{Frame, MediaKind};
    use crate::protocol::amf::{self, Amf0Value};
    use bytes::Bytes;
    use std::path::Path;

    fn frame(kind: MediaKind, ts: u32, payload: &'static [u8]) -> SharedFrame {
        Arc::new(Frame::new(kind, ts, Bytes::from_static(payload), 4096))
    }

    #[test]
    fn full_queue_stops_the_recording_at_a_clean_end() {
        let dir = std::env::temp_dir().join(format!("rtmp-edge-recq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Room for Open and one frame; the recorder is not running yet, so the next
        // frame finds the queue full, and so does the Close after it.
        let (tx, rx) = mpsc::sync_channel(2);
        let keep = tx.clone();
        let mut sink = RecordSink {
            key: "live/q".into(),
            tx,
            ids: Arc::new(AtomicU64::new(1)),
            current: None,
        };
        sink.on_publish();
        let h = sink.current.clone().unwrap();
        sink.on_frame(&frame(MediaKind::Video, 0, &[0x17, 0, 0, 0, 0, 1]));
        sink.on_frame(&frame(MediaKind::Video, 0, &[0x17, 1, 0, 0, 0, 5]));
        assert!(sink.current.is_none(), "overflow ends the recording");
        assert!(h.ended.load(Ordering::Acquire));
        assert_eq!(h.sent.load(Ordering::Relaxed), 1);
        sink.on_frame(&frame(MediaKind::Video, 40, &[0x27, 1, 0, 0, 0, 6]));
        assert!(sink.current.is_none(), "nothing more is queued");

        // The lost Close is made up for by the sweep, with the sender still alive.
        let d = dir.clone();
        let worker = std::thread::spawn(move || worker::run(d, rx, None));
        let path = loop {
            let done = std::fs::read_dir(&dir)
                .ok()
                .and_then(|mut r| r.next())
                .map(|e| e.unwrap().path())
                .filter(|p| std::fs::metadata(p).map(|m| m.len() > 13).unwrap_or(false));
            if let Some(p) = done {
                break p;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Finalized: filesize patched to the length, one script tag, one video tag.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (tags, len) = loop {
            let bytes = Bytes::from(std::fs::read(&path).unwrap());
            let tags = flv::read_tags(&bytes).unwrap();
            let v = amf::decode_all(&tags[0].data).unwrap();
            let size = v[1].get("filesize").and_then(Amf0Value::as_number);
            if size == Some(bytes.len() as f64) {
                break (tags, bytes.len());
            }
            assert!(Instant::now() < deadline, "never finalized");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(len > 13);
        let kinds: Vec<u8> = tags.iter().map(|t| t.tag_type).collect();
        assert_eq!(kinds, [flv::TAG_SCRIPT, flv::TAG_VIDEO]);
        drop(sink);
        drop(keep);
        worker.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn policy(toml: &str) -> Result<Option<RecordPolicy>, RecordError> {
        let c: RecordConfig = toml::from_str(toml).unwrap();
        RecordPolicy::from_config(&c)
    }

    #[test]
    fn overrides_apply_in_order() {
        assert_eq!(policy("").unwrap(), None, "default: record nothing");
        let file = r#"
            dir = "/from-file"
            mode = "all"
            [[streams]]
            match = "live/private-*"
            record = false
            [[streams]]
            match = "live/*"
            record = true
        "#;
        let p = policy(file).unwrap().unwrap();
        assert_eq!(p.dir, Path::new("/from-file"));
        assert!(!p.records("live/private-1"), "first match wins");
        assert!(p.records("live/public") && p.records("other/x"));
        assert!(matches!(policy("mode = \"all\""), Err(RecordError::NoDir)));
        assert!(matches!(
            policy("mode = \"some\""),
            Err(RecordError::BadMode(_))
        ));
        // Only "don't record" overrides and no mode: nothing to record, no dir needed.
        assert_eq!(
            policy("[[streams]]\nmatch = \"*\"\nrecord = false").unwrap(),
            None
        );
    }
}
