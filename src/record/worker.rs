//! The recorder thread: the only code of a recording that touches the file system. It owns
//! every open file, takes commands from the shards' sinks through one bounded channel and
//! finalizes files on close, after a close that could not be queued (periodic sweep) and on
//! shutdown. An I/O error stops that one recording and is logged and counted.
//!
//! With a storage target, a finalized file is handed to the uploader with a marker beside
//! it (`name.flv.upload`) that the upload removes once stored; markers left by a restart
//! are handed over again when the recorder starts.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{error, info};

use super::name;
use super::writer::FlvWriter;
use crate::media::frame::SharedFrame;
use crate::shard::hooks::ObjectStore;
use crate::shard::state::StreamKey;

/// Marks a finished recording whose upload is not confirmed yet.
const MARKER: &str = "upload";

/// Where finished recordings go.
pub(super) struct Uploads {
    pub store: Arc<dyn ObjectStore>,
    pub delete_local: bool,
}

impl Uploads {
    /// Hands `path` to the uploader, its marker written first so a restart resumes it.
    fn upload(&self, order: &str, path: &Path) {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return;
        };
        let marker = marker_of(path);
        if let Err(e) = fs::write(&marker, name.as_bytes()) {
            error!(path = %marker.display(), error = %e, "cannot write the upload marker; uploading anyway");
        }
        let mut then_remove = vec![marker];
        if self.delete_local {
            then_remove.push(path.to_path_buf());
        }
        self.store
            .put_file(order, name, path.to_path_buf(), "video/x-flv", then_remove);
    }

    /// Uploads whose markers a previous run left in `dir`.
    fn resume(&self, dir: &Path) -> usize {
        let Ok(entries) = fs::read_dir(dir) else {
            return 0;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let marker = e.path();
            if marker.extension().is_none_or(|x| x != MARKER) {
                continue;
            }
            let flv = marker.with_extension("");
            if flv.exists() {
                self.upload("resumed", &flv);
                n += 1;
            } else {
                let _ = fs::remove_file(&marker);
            }
        }
        n
    }
}

fn marker_of(path: &Path) -> PathBuf {
    let mut m = path.as_os_str().to_owned();
    m.push(".");
    m.push(MARKER);
    PathBuf::from(m)
}

/// How often recordings whose sink ended without a queued `Close` are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Per-file write buffer: a few hundred ms of a typical stream per `write` syscall.
const FILE_BUFFER: usize = 128 << 10;
/// `_1` ... `_N` collision suffixes tried before giving up on a name.
const MAX_SUFFIX: u32 = 1000;

pub(super) enum Cmd {
    Open(Arc<Handle>),
    Frame(u64, SharedFrame),
    Close(u64),
    /// Finalize every open file, refuse new ones, report how many were finished.
    Shutdown(Sender<usize>),
}

/// What a sink (on a shard) and the recorder thread share about one recording.
pub(super) struct Handle {
    pub id: u64,
    pub key: StreamKey,
    pub started: SystemTime,
    /// Frames the sink queued. With `ended` it tells the recorder it has seen them all.
    pub sent: AtomicU64,
    /// The sink queues nothing more (unpublish, queue overflow, sink dropped). Stored with
    /// Release after the last `sent` increment, so an Acquire load sees the final count.
    pub ended: AtomicBool,
    /// The recorder gave up on the file (I/O error, shutdown): the sink stops queueing.
    pub failed: AtomicBool,
}

impl Handle {
    pub fn new(id: u64, key: StreamKey) -> Self {
        Self {
            id,
            key,
            started: SystemTime::now(),
            sent: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        }
    }
}

struct Recording {
    handle: Arc<Handle>,
    path: PathBuf,
    writer: FlvWriter<BufWriter<File>>,
    received: u64,
}

impl Recording {
    /// Every frame the sink queued has been written and no more will come.
    fn complete(&self) -> bool {
        self.handle.ended.load(Ordering::Acquire)
            && self.handle.sent.load(Ordering::Relaxed) == self.received
    }
}

struct Worker {
    dir: PathBuf,
    open: HashMap<u64, Recording>,
    shutting_down: bool,
    uploads: Option<Uploads>,
}

pub(super) fn run(dir: PathBuf, rx: Receiver<Cmd>, uploads: Option<Uploads>) {
    if let Some(u) = &uploads {
        let n = u.resume(&dir);
        if n > 0 {
            info!(files = n, dir = %dir.display(), "resuming recording uploads a previous run left");
        }
    }
    let mut w = Worker {
        dir,
        open: HashMap::new(),
        shutting_down: false,
        uploads,
    };
    let mut last_sweep = Instant::now();
    loop {
        match rx.recv_timeout(SWEEP_EVERY) {
            Ok(cmd) => w.handle(cmd),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                w.finish_all();
                return;
            }
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            w.sweep();
            last_sweep = Instant::now();
        }
    }
}

impl Worker {
    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Open(h) => self.open(h),
            Cmd::Frame(id, frame) => {
                let Some(r) = self.open.get_mut(&id) else {
                    return; // failed or finished: the sink stops on its next frame
                };
                r.received += 1;
                if let Err(e) = r.writer.write_frame(&frame) {
                    let r = self.open.remove(&id).expect("present above");
                    fail(&r.handle, &r.path, "write", &e);
                }
            }
            Cmd::Close(id) => {
                if self.open.get(&id).is_some_and(Recording::complete) {
                    let r = self.open.remove(&id).expect("present above");
                    self.finish(r);
                }
            }
            Cmd::Shutdown(reply) => {
                let n = self.finish_all();
                self.shutting_down = true;
                let _ = reply.send(n);
            }
        }
    }

    fn open(&mut self, h: Arc<Handle>) {
        if self.shutting_down {
            h.failed.store(true, Ordering::Relaxed);
            return;
        }
        match create_unique(&self.dir, &name::base_name(&h.key, h.started)) {
            Ok((path, file)) => {
                info!(stream = %h.key, path = %path.display(), "recording started");
                self.open.insert(
                    h.id,
                    Recording {
                        handle: h,
                        path,
                        writer: FlvWriter::new(BufWriter::with_capacity(FILE_BUFFER, file)),
                        received: 0,
                    },
                );
            }
            Err(e) => fail(&h, &self.dir, "open", &e),
        }
    }

    fn sweep(&mut self) {
        let done: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, r)| r.complete())
            .map(|(&id, _)| id)
            .collect();
        for id in done {
            if let Some(r) = self.open.remove(&id) {
                self.finish(r);
            }
        }
    }

    fn finish_all(&mut self) -> usize {
        let n = self.open.len();
        let open: Vec<Recording> = self.open.drain().map(|(_, r)| r).collect();
        for r in open {
            if !r.complete() {
                info!(stream = %r.handle.key, "shutting down: finalizing a live recording");
            }
            r.handle.failed.store(true, Ordering::Relaxed);
            self.finish(r);
        }
        n
    }
}

impl Worker {
    fn finish(&self, mut r: Recording) {
        match r.writer.finalize() {
            Ok(done) => {
                info!(
                    stream = %r.handle.key,
                    path = %r.path.display(),
                    bytes = done.bytes,
                    duration_secs = done.duration_secs,
                    "recording finished"
                );
                if let Some(u) = &self.uploads {
                    u.upload(&r.handle.key, &r.path);
                }
            }
            Err(e) => fail(&r.handle, &r.path, "finalize", &e),
        }
    }
}

/// `path` is the file, or the directory when no file could be created in it.
fn fail(h: &Handle, path: &Path, stage: &'static str, e: &io::Error) {
    h.failed.store(true, Ordering::Relaxed);
    metrics::counter!("rtmp_record_errors_total", "reason" => stage).increment(1);
    error!(
        stream = %h.key,
        path = %path.display(),
        stage,
        error = %e,
        "recording failed and stopped; the live stream is unaffected"
    );
}

/// Creates `dir/base.flv`, or `base_1.flv`, `base_2.flv`... if taken. `create_new` makes
/// the check and the creation one step, so two recordings never share a file.
fn create_unique(dir: &Path, base: &str) -> io::Result<(PathBuf, File)> {
    fs::create_dir_all(dir)?;
    for n in 0..=MAX_SUFFIX {
        let path = dir.join(name::candidate(base, n));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{base}.flv and {MAX_SUFFIX} suffixed names exist"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_names_get_a_suffix() {
        let dir = std::env::temp_dir().join(format!("rtmp-edge-rec-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let names: Vec<String> = (0..3)
            .map(|_| {
                let (p, _) = create_unique(&dir, "live_x_20240229_123456").unwrap();
                p.file_name().unwrap().to_string_lossy().into_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "live_x_20240229_123456.flv",
                "live_x_20240229_123456_1.flv",
                "live_x_20240229_123456_2.flv"
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
