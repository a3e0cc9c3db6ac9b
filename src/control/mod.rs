//! The control plane, off the data-plane shards: `/metrics` (Prometheus), `/healthz`,
//! `/readyz` and the JSON API (`/api/v1`, see `api`) on one HTTP listener (`--http`),
//! served by its own thread and runtime. Shards hand their latency histograms over once a
//! second; live state (streams, clients) is asked from the shards over their inboxes.

pub mod api;
pub mod histograms;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

use crate::auth::Auth;
use crate::relay::push::PushRegistry;
use crate::shard::query::{Query, ShardStreams, StreamInfo};
use crate::shard::ShardMsg;
use histograms::{escape, LatencyExport};

/// How long the API waits for a shard's answer.
const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the shards report to the control plane, and how to reach them.
pub struct Control {
    shards: usize,
    ready: AtomicUsize,
    pub latency: LatencyExport,
    prometheus: Option<PrometheusHandle>,
    /// Thread CPU seconds per shard (a float counter; the `metrics` crate's are integers).
    shard_cpu: Mutex<BTreeMap<String, f64>>,
    senders: OnceLock<Vec<mpsc::Sender<ShardMsg>>>,
    push: OnceLock<Arc<PushRegistry>>,
    /// Bearer token the API requires (`--api-token`).
    pub api_token: Option<String>,
    /// Streams with per-stream series in /metrics (by viewers).
    pub top_streams: usize,
    /// Publish/play authorization; replaced whole on reload (SIGHUP).
    auth: RwLock<Arc<Auth>>,
    /// The last scrape's shard answers (see `scrape_streams`).
    scrape_cache: tokio::sync::Mutex<Option<(std::time::Instant, Vec<ShardStreams>)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("installing the metrics recorder: {0}")]
    Recorder(String),
    #[error("binding the HTTP listener {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Control {
    /// Without an HTTP listener or metrics recorder (tests, `--http off`).
    pub fn detached(shards: usize) -> Self {
        Self {
            shards,
            ready: AtomicUsize::new(0),
            latency: LatencyExport::default(),
            prometheus: None,
            shard_cpu: Mutex::default(),
            senders: OnceLock::new(),
            push: OnceLock::new(),
            api_token: None,
            top_streams: 20,
            auth: RwLock::new(Arc::new(Auth::disabled())),
            scrape_cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Installs the global metrics recorder; call once, before the shards start.
    pub fn with_prometheus(shards: usize) -> Result<Self, ControlError> {
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| ControlError::Recorder(e.to_string()))?;
        describe();
        Ok(Self {
            prometheus: Some(handle),
            ..Self::detached(shards)
        })
    }

    /// The shards' inboxes (set once when the data plane starts).
    pub fn attach_shards(&self, senders: Vec<mpsc::Sender<ShardMsg>>) {
        let _ = self.senders.set(senders);
    }

    /// The push destinations the API lists and changes.
    pub fn attach_push(&self, registry: Arc<PushRegistry>) {
        let _ = self.push.set(registry);
    }

    pub fn push_registry(&self) -> Option<&Arc<PushRegistry>> {
        self.push.get()
    }

    /// The authorization rules in force (cheap: an Arc clone per publish/play).
    pub fn auth(&self) -> Arc<Auth> {
        self.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_auth(&self, auth: Auth) {
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(auth);
    }

    /// `reconcile_sinks` for a thread outside any runtime (the signal thread).
    /// Sends from a short-lived thread: the signal thread must stay free for SIGTERM even
    /// if a shard's inbox is full.
    pub fn reconcile_sinks_blocking(&self) {
        let senders = self.senders.get().cloned().unwrap_or_default();
        let _ = std::thread::Builder::new()
            .name("reconcile".into())
            .spawn(move || {
                for tx in senders {
                    let _ = tx.blocking_send(ShardMsg::Query(Query::ReconcileSinks));
                }
            });
    }

    /// A shard's listener is accepting.
    pub fn shard_ready(&self) {
        self.ready.fetch_add(1, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) >= self.shards
    }

    pub fn set_shard_cpu(&self, shard: &str, seconds: f64) {
        self.shard_cpu
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(shard.to_string(), seconds);
    }

    /// Asks every shard; answers that do not come within the timeout are left out.
    pub async fn ask<T>(&self, make: impl Fn(oneshot::Sender<T>) -> Query) -> Vec<T> {
        let Some(senders) = self.senders.get() else {
            return Vec::new();
        };
        let mut pending = Vec::with_capacity(senders.len());
        for tx in senders {
            let (otx, orx) = oneshot::channel();
            let sent =
                tokio::time::timeout(SHARD_ANSWER_TIMEOUT, tx.send(ShardMsg::Query(make(otx))))
                    .await;
            if matches!(sent, Ok(Ok(()))) {
                pending.push(orx);
            }
        }
        let mut out = Vec::with_capacity(pending.len());
        for rx in pending {
            if let Ok(Ok(v)) = tokio::time::timeout(SHARD_ANSWER_TIMEOUT, rx).await {
                out.push(v);
            }
        }
        out
    }

    /// Tells every shard that push destinations changed.
    pub async fn reconcile_sinks(&self) {
        let Some(senders) = self.senders.get() else {
            return;
        };
        // No timeout: a busy shard must still learn about the change, and waiting here
        // only holds the control thread.
        for tx in senders {
            let _ = tx.send(ShardMsg::Query(Query::ReconcileSinks)).await;
        }
    }

    /// Every live stream, with viewers summed over the shards, sorted by key.
    pub async fn streams(&self) -> Vec<StreamInfo> {
        merge_streams(self.ask(Query::Streams).await)
    }

    /// The Prometheus text exposition: the registry, the shards' HDR histograms, and
    /// series computed at scrape time (per-stream, push sessions, process).
    pub async fn render(&self) -> String {
        let mut out = self
            .prometheus
            .as_ref()
            .map(PrometheusHandle::render)
            .unwrap_or_default();
        if let Some(reg) = self.push.get() {
            let ids: Vec<String> = reg.list().into_iter().map(|e| e.id).collect();
            self.latency
                .retain(histograms::PUSH, |label| ids.iter().any(|id| id == label));
        }
        self.latency.render(&mut out);
        self.render_cpu(&mut out);
        let answers = self.scrape_streams().await;
        let viewers = viewer_totals(&answers);
        let streams = merge_streams(answers);
        self.render_streams(&mut out, &streams, &viewers);
        self.render_push(&mut out, &streams);
        render_process(&mut out);
        out
    }

    /// The shards' stream answers for a scrape: one query at a time, reused for a second,
    /// so a flood of scrapes costs the shards at most one question per second.
    async fn scrape_streams(&self) -> Vec<ShardStreams> {
        let mut cached = self.scrape_cache.lock().await;
        if let Some((at, answers)) = &*cached {
            if at.elapsed() < Duration::from_secs(1) {
                return answers.clone();
            }
        }
        let answers = self.ask(Query::Streams).await;
        *cached = Some((std::time::Instant::now(), answers.clone()));
        answers
    }

    fn render_cpu(&self, out: &mut String) {
        let cpu = self.shard_cpu.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP rtmp_shard_cpu_seconds_total CPU time (user + system) used by a shard thread."
        );
        let _ = writeln!(out, "# TYPE rtmp_shard_cpu_seconds_total counter");
        for (shard, secs) in cpu.iter() {
            let _ = writeln!(
                out,
                "rtmp_shard_cpu_seconds_total{{shard=\"{shard}\"}} {secs}"
            );
        }
    }

    /// Viewers and ingest bitrate of the `top_streams` most watched streams only: one
    /// series per stream would let stream churn blow up the scrape.
    fn render_streams(
        &self,
        out: &mut String,
        streams: &[StreamInfo],
        viewers: &HashMap<String, usize>,
    ) {
        // Live streams only: players of names nobody publishes must not push real
        // streams out of the top N.
        let mut top: Vec<(&String, usize)> = streams
            .iter()
            .map(|s| (&s.key, viewers.get(&s.key).copied().unwrap_or(0)))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        top.truncate(self.top_streams);
        let _ = writeln!(
            out,
            "# HELP rtmp_stream_viewers Players of a stream (the --metrics-top-streams most watched)."
        );
        let _ = writeln!(out, "# TYPE rtmp_stream_viewers gauge");
        for (key, n) in &top {
            let _ = writeln!(out, "rtmp_stream_viewers{{stream=\"{}\"}} {n}", escape(key));
        }
        let _ = writeln!(
            out,
            "# HELP rtmp_stream_ingress_bytes_per_second Ingest rate of a stream (the same streams), smoothed over a few seconds."
        );
        let _ = writeln!(out, "# TYPE rtmp_stream_ingress_bytes_per_second gauge");
        for (key, _) in &top {
            if let Some(s) = streams.iter().find(|s| &&s.key == key) {
                let _ = writeln!(
                    out,
                    "rtmp_stream_ingress_bytes_per_second{{stream=\"{}\"}} {}",
                    escape(key),
                    (s.ingress_bitrate_bps / 8.0).round()
                );
            }
        }
    }

    /// Push sessions per destination and state, every state listed (0 included) so a
    /// dashboard sees a destination go from live to backing_off.
    fn render_push(&self, out: &mut String, streams: &[StreamInfo]) {
        let Some(reg) = self.push.get() else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP rtmp_push_sessions Streams being pushed to a destination, by session state."
        );
        let _ = writeln!(out, "# TYPE rtmp_push_sessions gauge");
        for e in reg.list() {
            for state in ["connecting", "live", "backing_off"] {
                let n = streams
                    .iter()
                    .flat_map(|s| &s.push)
                    .filter(|p| p.destination == e.id && p.state == state)
                    .count();
                let _ = writeln!(
                    out,
                    "rtmp_push_sessions{{destination=\"{}\",state=\"{state}\"}} {n}",
                    escape(&e.id)
                );
            }
        }
    }
}

fn viewer_totals(answers: &[ShardStreams]) -> HashMap<String, usize> {
    let mut viewers: HashMap<String, usize> = HashMap::new();
    for a in answers {
        for (k, n) in &a.viewers {
            *viewers.entry(k.clone()).or_default() += n;
        }
    }
    viewers
}

fn merge_streams(answers: Vec<ShardStreams>) -> Vec<StreamInfo> {
    let viewers = viewer_totals(&answers);
    let mut streams: Vec<StreamInfo> = answers.into_iter().flat_map(|a| a.owned).collect();
    for s in &mut streams {
        s.viewers = viewers.get(&s.key).copied().unwrap_or(0);
    }
    streams.sort_by(|a, b| a.key.cmp(&b.key));
    streams
}

/// Resident memory and open descriptors, the two process figures operators watch most.
fn render_process(out: &mut String) {
    let page = 4096u64;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page);
    if let Some(rss) = rss {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes."
        );
        let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
        let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(out, "# HELP process_open_fds Open file descriptors.");
        let _ = writeln!(out, "# TYPE process_open_fds gauge");
        let _ = writeln!(out, "process_open_fds {}", dir.count());
    }
    let _ = writeln!(
        out,
        "# HELP rtmp_build_info Version of the running rtmp-edge."
    );
    let _ = writeln!(out, "# TYPE rtmp_build_info gauge");
    let _ = writeln!(
        out,
        "rtmp_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
}

/// Help text for every metric the data plane records (scrapers and promtool want it).
fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "rtmp_connections_accepted_total",
        "TCP connections accepted."
    );
    describe_counter!("rtmp_publishes_total", "Publishes accepted.");
    describe_counter!(
        "rtmp_publish_rejects_total",
        "Publishes refused, by reason."
    );
    describe_counter!("rtmp_plays_total", "Plays started.");
    describe_counter!(
        "rtmp_protocol_errors_total",
        "Connections closed for bad input, by kind."
    );
    describe_counter!(
        "rtmp_timeouts_total",
        "Connections closed by a timeout, by kind."
    );
    describe_counter!(
        "rtmp_viewer_drops_total",
        "Frames not sent to a lagging viewer, by reason."
    );
    describe_counter!(
        "rtmp_viewer_disconnects_total",
        "Viewers disconnected for lagging, by reason."
    );
    describe_counter!(
        "rtmp_cross_shard_drops_total",
        "Frames dropped between shards."
    );
    describe_counter!(
        "rtmp_record_errors_total",
        "Recordings stopped by an I/O error."
    );
    describe_counter!(
        "rtmp_record_dropped_frames_total",
        "Frames a recording could not queue."
    );
    describe_counter!("rtmp_play_rejects_total", "Plays refused, by reason.");
    describe_counter!(
        "rtmp_auth_denied_total",
        "Publishes and plays refused by authorization, by action and reason."
    );
    describe_counter!(
        "rtmp_auth_callback_requests_total",
        "Authorization callback decisions, by action and result."
    );
    describe_counter!(
        "rtmp_ingress_bytes_total",
        "Bytes read from client sockets (publishers, players), per shard."
    );
    describe_counter!(
        "rtmp_egress_bytes_total",
        "Bytes written to client sockets (media to players, replies), per shard."
    );
    describe_counter!(
        "rtmp_ingest_messages_total",
        "Messages ingested from publishers, per shard and kind."
    );
    describe_counter!(
        "rtmp_relayed_messages_total",
        "Frames queued to players, per shard."
    );
    describe_counter!(
        "rtmp_push_bytes_total",
        "Media payload bytes sent to a push destination."
    );
    describe_counter!(
        "rtmp_push_reconnects_total",
        "Push sessions that failed and reconnect, per destination."
    );
    describe_counter!(
        "rtmp_push_dropped_frames_total",
        "Frames a push destination could not queue (too far behind)."
    );
    describe_gauge!(
        "rtmp_connections",
        "Open connections, per shard and role (handshake, publisher, player)."
    );
    describe_gauge!(
        "rtmp_shard_utilization_ratio",
        "Share of the last second a shard thread was busy on CPU (1 = saturated)."
    );
    describe_gauge!("rtmp_viewers", "Players connected, per shard.");
    describe_gauge!("rtmp_streams", "Streams with a publisher, per owner shard.");
}

/// Serves the control endpoints on their own thread; returns the bound address.
pub fn serve(control: Arc<Control>, addr: SocketAddr) -> Result<SocketAddr, ControlError> {
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|source| ControlError::Bind { addr, source })?;
    let local = std_listener
        .local_addr()
        .map_err(|source| ControlError::Bind { addr, source })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|source| ControlError::Bind { addr, source })?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "control runtime failed to start");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        error!(error = %e, "control listener failed");
                        return;
                    }
                };
                let app =
                    router(control).into_make_service_with_connect_info::<std::net::SocketAddr>();
                if let Err(e) = axum::serve(listener, app).await {
                    error!(error = %e, "control HTTP server stopped");
                }
            });
        })
        .map_err(|source| ControlError::Bind { addr, source })?;
    info!(addr = %local, "http listening");
    Ok(local)
}

fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(c): axum::extract::State<Arc<Control>>| async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        c.render().await,
                    )
                },
            ),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(
                |axum::extract::State(c): axum::extract::State<Arc<Control>>| async move {
                    if c.is_ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                    }
                },
            ),
        )
        .nest("/api/v1", api::routes(control.clone()))
        .with_state(control)
}
