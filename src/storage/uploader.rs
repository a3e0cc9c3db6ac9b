//! The uploader: one thread with its own current-thread runtime, a few lanes working in
//! parallel. A job's lane comes from its stream, so one stream's objects land in the order
//! they were made (a segment before the playlist listing it) while streams go on side by
//! side. A queued PUT of a key that a newer PUT replaces (a playlist) is dropped, and a
//! failing one is not retried once a newer one waits. Transient failures (target down,
//! timeouts, 5xx) are retried with backoff for as long as it takes; when a lane's queue is
//! full its oldest job is dropped and counted, so a dead target costs bounded memory and
//! the backlog drains when it returns. A refusal (403, no such bucket) is logged and
//! counted, never retried.

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::gcs::Gcs;
use super::http::{file_body, full, HttpClient};
use super::s3::S3;
use super::target::{Backend, Target};
use super::Content;
use super::StorageError;
use crate::shard::hooks::Telemetry;
use crate::tls::ClientTls;

/// The content type of playlists, the objects a full queue keeps longest.
pub const PLAYLIST: &str = "application/vnd.apple.mpegurl";

/// Upload latency (queued to stored), by target label.
pub const LATENCY_FAMILY: &str = "rtmp_storage_upload_latency_seconds";

const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(10);
/// A failing target is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct UploaderConfig {
    /// Jobs waiting, all lanes together, before the oldest are dropped.
    pub queue: usize,
    pub lanes: usize,
    /// One request's limit (connect, send, answer).
    pub timeout: Duration,
}

impl Default for UploaderConfig {
    fn default() -> Self {
        Self {
            queue: 4096,
            lanes: 4,
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Op {
    Put {
        /// The object's bytes, in pieces (a segment's parts) joined on the uploader.
        body: Vec<Bytes>,
        content_type: &'static str,
        cache_control: &'static str,
    },
    /// A local file, read as it is sent; the files in `then_remove` (a journal marker, the
    /// local copy) are removed once it is stored.
    PutFile {
        path: PathBuf,
        content_type: &'static str,
        cache_control: &'static str,
        then_remove: Vec<PathBuf>,
    },
    Delete,
}

impl Op {
    /// The bytes to send (opened now: a file is read again on every attempt) and their
    /// headers.
    fn content(&self) -> Result<(Content, &'static str, &'static str), StorageError> {
        match self {
            Op::Put {
                body,
                content_type,
                cache_control,
            } => Ok((Content::Memory(joined(body)), content_type, cache_control)),
            Op::PutFile {
                path,
                content_type,
                cache_control,
                ..
            } => {
                let err = |source| StorageError::File {
                    path: path.clone(),
                    source,
                };
                let f = std::fs::File::open(path).map_err(err)?;
                let len = f.metadata().map_err(err)?.len();
                Ok((Content::File(f, len), content_type, cache_control))
            }
            Op::Delete => Ok((Content::Memory(Bytes::new()), "", "")),
        }
    }
}

/// One object to write or remove.
#[derive(Debug, Clone)]
pub struct Job {
    pub store: Arc<Store>,
    /// The key under the target's prefix (`app/name/seg-….m4s`).
    pub name: String,
    pub op: Op,
    /// Jobs with the same order key (a stream) are done in order.
    pub order: String,
}

/// A target and the client that writes to it.
pub struct Store {
    pub target: Target,
    client: Client,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.target.label)
    }
}

enum Client {
    File(PathBuf),
    S3(S3),
    Gcs(Box<Gcs>),
}

impl Store {
    pub fn new(target: Target) -> Result<Arc<Store>, StorageError> {
        let client = match &target.backend {
            Backend::File(dir) => Client::File(dir.clone()),
            Backend::S3(cfg) => Client::S3(S3::new(cfg.clone())?),
            Backend::Gcs(cfg) => Client::Gcs(Box::new(Gcs::new(cfg.clone())?)),
        };
        Ok(Arc::new(Store { target, client }))
    }

    /// Does `op`; the bytes stored.
    async fn run(&self, http: &HttpClient, name: &str, op: &Op) -> Result<u64, StorageError> {
        let result = self.send(http, name, op).await;
        if result.is_ok() {
            if let Op::PutFile { then_remove, .. } = op {
                for p in then_remove {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        result
    }

    async fn send(&self, http: &HttpClient, name: &str, op: &Op) -> Result<u64, StorageError> {
        let key = self.target.key(name);
        match &self.client {
            Client::File(dir) => {
                let path = dir.join(&key);
                let op = op.clone();
                tokio::task::spawn_blocking(move || file_op(&path, &op))
                    .await
                    .unwrap_or_else(|e| Err(StorageError::Connect(e.to_string())))?;
                Ok(std::fs::metadata(dir.join(&key)).map_or(0, |m| m.len()))
            }
            Client::S3(s3) => {
                let now = SystemTime::now();
                let mut sent = 0;
                let req = match op {
                    Op::Delete => s3.delete(&key, now)?,
                    _ => {
                        let (content, ct, cc) = op.content()?;
                        let (body, len) = match content {
                            Content::Memory(b) => {
                                let len = b.len() as u64;
                                (full(b), len)
                            }
                            Content::File(f, len) => {
                                (file_body(Bytes::new(), f, len, Bytes::new()), len)
                            }
                        };
                        sent = len;
                        s3.put(&key, body, len, ct, cc, now)?
                    }
                };
                let reply = http.send_within(s3.origin(), req, limit_for(sent)).await?;
                answered(op, reply).map(|()| sent)
            }
            Client::Gcs(gcs) => {
                let token = gcs.token(http).await?;
                let mut sent = 0;
                let req = match op {
                    Op::Delete => gcs.delete_request(&key, token.as_deref())?,
                    _ => {
                        let (content, ct, cc) = op.content()?;
                        sent = match &content {
                            Content::Memory(b) => b.len() as u64,
                            Content::File(_, len) => *len,
                        };
                        gcs.put_request(&key, content, ct, cc, token.as_deref())?
                    }
                };
                let reply = http.send_within(gcs.origin(), req, limit_for(sent)).await?;
                if reply.status == 401 {
                    // A token revoked or expired early: fetch a new one on the retry.
                    gcs.forget_token();
                    return Err(StorageError::Http("the access token was refused".into()));
                }
                answered(op, reply).map(|()| sent)
            }
        }
    }
}

/// How long sending `len` bytes may take: the request timeout, plus a second per MiB (a
/// recording of a few GB must not time out forever).
fn limit_for(len: u64) -> Duration {
    Duration::from_secs(len >> 20)
}

/// A 2xx answer, or a 404 to a delete (already gone), is success.
fn answered(op: &Op, reply: super::http::Reply) -> Result<(), StorageError> {
    let gone = matches!(op, Op::Delete) && reply.status == 404;
    if (200..300).contains(&reply.status) || gone {
        Ok(())
    } else {
        Err(StorageError::Status {
            status: reply.status,
            body: String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)]).into_owned(),
        })
    }
}

fn joined(body: &[Bytes]) -> Bytes {
    match body {
        [one] => one.clone(),
        many => Bytes::from(many.concat()),
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half an object.
fn file_op(path: &Path, op: &Op) -> Result<(), StorageError> {
    let err = |source| StorageError::File {
        path: path.to_path_buf(),
        source,
    };
    match op {
        Op::Put { .. } | Op::PutFile { .. } => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let tmp = path.with_extension("part-upload");
            match op {
                Op::PutFile { path: from, .. } => {
                    if std::fs::canonicalize(from).ok() == std::fs::canonicalize(path).ok()
                        && path.exists()
                    {
                        return Err(StorageError::Url {
                            url: format!("file://{}", path.display()),
                            why: "the target is the file itself".into(),
                        });
                    }
                    std::fs::copy(from, &tmp).map(|_| ())
                }
                Op::Put { body, .. } => std::fs::write(&tmp, joined(body)),
                Op::Delete => Ok(()),
            }
            .map_err(err)?;
            std::fs::rename(&tmp, path).map_err(err)
        }
        Op::Delete => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
            _ => Ok(()),
        },
    }
}

struct Queued {
    job: Job,
    at: Instant,
}

struct Lane {
    jobs: Mutex<VecDeque<Queued>>,
    notify: Notify,
}

pub struct Uploader {
    lanes: Vec<Lane>,
    per_lane: usize,
    depth: AtomicUsize,
}

impl Uploader {
    /// Starts the uploader thread.
    pub fn start(
        cfg: UploaderConfig,
        telemetry: Option<Arc<dyn Telemetry>>,
    ) -> Result<Arc<Uploader>, StorageError> {
        let lanes = cfg.lanes.max(1);
        let up = Arc::new(Uploader {
            lanes: (0..lanes)
                .map(|_| Lane {
                    jobs: Mutex::default(),
                    notify: Notify::new(),
                })
                .collect(),
            per_lane: (cfg.queue / lanes).max(1),
            depth: AtomicUsize::new(0),
        });
        let worker = up.clone();
        std::thread::Builder::new()
            .name("storage".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        error!(error = %e, "storage uploader runtime failed to start");
                        return;
                    }
                };
                let http = Arc::new(HttpClient::new(ClientTls::public(), cfg.timeout));
                rt.block_on(async move {
                    let mut tasks = Vec::new();
                    for i in 0..worker.lanes.len() {
                        let (w, h, t) = (worker.clone(), http.clone(), telemetry.clone());
                        tasks.push(tokio::spawn(async move { w.work(i, &h, t).await }));
                    }
                    worker.gauges().await;
                });
            })
            .map_err(StorageError::Thread)?;
        Ok(up)
    }

    /// Queues `job` without waiting. A queued PUT of the same key is replaced; a full lane
    /// drops its oldest job.
    pub fn submit(&self, job: Job) {
        // Files (recordings, slow to send) have the last lane to themselves, so a large one
        // never holds a stream's segments back.
        let n = self.lanes.len();
        let lane = if n > 1 && matches!(job.op, Op::PutFile { .. }) {
            &self.lanes[n - 1]
        } else {
            let mut h = DefaultHasher::new();
            job.order.hash(&mut h);
            &self.lanes[(h.finish() % n.saturating_sub(1).max(1) as u64) as usize]
        };
        let label = job.store.target.label.clone();
        {
            let Ok(mut q) = lane.jobs.lock() else {
                return;
            };
            let mut after = Vec::new();
            if matches!(job.op, Op::Put { .. }) {
                let same = |q: &Queued| {
                    Arc::ptr_eq(&q.job.store, &job.store)
                        && q.job.name == job.name
                        && matches!(q.job.op, Op::Put { .. })
                };
                if let Some(i) = q.iter().position(same) {
                    q.remove(i);
                    self.depth.fetch_sub(1, Ordering::Relaxed);
                    counter(&label, "replaced");
                    // Deletes queued behind the replaced playlist stay behind the new one:
                    // a segment goes only once no stored playlist lists it.
                    let mut k = i;
                    while k < q.len() {
                        let o = &q[k].job;
                        if matches!(o.op, Op::Delete) && o.order == job.order {
                            after.extend(q.remove(k));
                        } else {
                            k += 1;
                        }
                    }
                }
            }
            if q.len() >= self.per_lane {
                // The oldest media object goes first (a segment a newer window no longer
                // needs); playlists (one per stream, replaced), deletes and files are kept
                // while anything else can go.
                let media = |o: &Queued| matches!(o.job.op, Op::Put { content_type, .. } if content_type != PLAYLIST);
                let i = q
                    .iter()
                    .position(media)
                    .or_else(|| q.iter().position(|o| matches!(o.job.op, Op::Put { .. })))
                    .unwrap_or(0);
                if let Some(old) = q.remove(i) {
                    self.depth.fetch_sub(1, Ordering::Relaxed);
                    counter(&old.job.store.target.label, "dropped");
                }
            }
            q.push_back(Queued {
                job,
                at: Instant::now(),
            });
            q.extend(after);
            self.depth.fetch_add(1, Ordering::Relaxed);
        }
        lane.notify.notify_one();
    }

    /// Jobs waiting (not counting the ones being worked on).
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    async fn next(&self, lane: &Lane) -> Queued {
        loop {
            let notified = lane.notify.notified();
            if let Some(q) = lane.jobs.lock().ok().and_then(|mut q| q.pop_front()) {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return q;
            }
            notified.await;
        }
    }

    /// Whether a newer PUT of the same object waits in `lane`.
    fn superseded(lane: &Lane, job: &Job) -> bool {
        matches!(job.op, Op::Put { .. })
            && lane.jobs.lock().is_ok_and(|q| {
                q.iter()
                    .any(|o| Arc::ptr_eq(&o.job.store, &job.store) && o.job.name == job.name)
            })
    }

    async fn work(&self, i: usize, http: &HttpClient, telemetry: Option<Arc<dyn Telemetry>>) {
        let lane = &self.lanes[i];
        let mut hist = crate::util::histogram::latency_histogram();
        let mut exported = Instant::now();
        let mut last_log: Option<Instant> = None;
        let mut failing = false;
        loop {
            let Queued { job, at } = self.next(lane).await;
            let label = job.store.target.label.clone();
            let mut attempt = 0u32;
            loop {
                match job.store.run(http, &job.name, &job.op).await {
                    Ok(n) => {
                        counter(&label, "ok");
                        metrics::counter!("rtmp_storage_bytes_total", "target" => label.clone())
                            .increment(n);
                        crate::util::histogram::record(&mut hist, at.elapsed());
                        if failing {
                            info!(target = %label, "storage target answers again");
                            failing = false;
                        }
                        break;
                    }
                    Err(e) if e.is_permanent() => {
                        counter(&label, e.result());
                        if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                            error!(target = %label, object = %job.name, error = %e, "storage target refused an upload (not retried)");
                            last_log = Some(Instant::now());
                        }
                        break;
                    }
                    Err(e) => {
                        counter(&label, "retry");
                        failing = true;
                        if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                            warn!(target = %label, object = %job.name, error = %e, "storage upload failed; retrying");
                            last_log = Some(Instant::now());
                        }
                        if Self::superseded(lane, &job) {
                            counter(&label, "replaced");
                            break;
                        }
                        let seed = at.elapsed().as_nanos() as u64;
                        tokio::time::sleep(crate::util::backoff(
                            attempt, RETRY_BASE, RETRY_CAP, seed,
                        ))
                        .await;
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
            if exported.elapsed() >= Duration::from_secs(1) {
                if let Some(t) = &telemetry {
                    t.merge_latency(LATENCY_FAMILY, &label, &hist);
                }
                hist.reset();
                exported = Instant::now();
            }
        }
    }

    /// Queue depth and the oldest waiting job's age, once a second.
    async fn gauges(&self) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            metrics::gauge!("rtmp_storage_queue_depth").set(self.depth() as f64);
            let oldest = self
                .lanes
                .iter()
                .filter_map(|l| l.jobs.lock().ok()?.front().map(|q| q.at.elapsed()))
                .max()
                .unwrap_or_default();
            metrics::gauge!("rtmp_storage_oldest_pending_seconds").set(oldest.as_secs_f64());
        }
    }
}

fn counter(label: &str, result: &'static str) {
    metrics::counter!("rtmp_storage_uploads_total", "target" => label.to_string(), "result" => result)
        .increment(1);
}

#[cfg(test)]
mod tests;
