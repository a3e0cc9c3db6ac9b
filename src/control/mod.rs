//! The control plane, off the data-plane shards: `/metrics` (Prometheus), `/healthz`,
//! `/readyz` and the JSON API (`/api/v1`, see `api`) on one HTTP listener (`--http`),
//! served by its own thread and runtime. Shards hand their latency histograms over once a
//! second; live state (streams, clients) is asked from the shards over their inboxes.

pub mod api;
mod catalog;
pub mod histograms;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use hdrhistogram::Histogram;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::oneshot;
use tracing::{error, info};

use crate::channel::Channels;
use crate::relay::push::PushRegistry;
use crate::shard::hooks::Telemetry;
use crate::shard::query::{Query, ShardStreams, StreamInfo};
use crate::shard::state::owner_of;
use crate::shard::transmission::{ControlMsg, ShardLink};
use histograms::{escape, LatencyExport};

/// How long the API waits for a shard's answer.
const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The control plane's settings.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where `/metrics`, health and the API listen; None: nowhere (`--http off`).
    pub http: Option<SocketAddr>,
    /// Bearer token the API requires (`--api-token`).
    pub api_token: Option<String>,
    /// Streams with per-stream series in /metrics (by viewers).
    pub top_streams: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            http: None,
            api_token: None,
            top_streams: 20,
        }
    }
}

/// What the shards report to the control plane, and how to reach them.
pub struct Control {
    shards: usize,
    ready: AtomicUsize,
    draining: std::sync::atomic::AtomicBool,
    pub latency: LatencyExport,
    prometheus: Option<PrometheusHandle>,
    /// Thread CPU seconds per shard (a float counter; the `metrics` crate's are integers).
    shard_cpu: Mutex<BTreeMap<String, f64>>,
    links: OnceLock<Vec<ShardLink>>,
    push: OnceLock<Arc<PushRegistry>>,
    channels: OnceLock<Arc<Channels>>,
    /// Bearer token the API requires (`--api-token`).
    pub api_token: Option<String>,
    /// Streams with per-stream series in /metrics (by viewers).
    pub top_streams: usize,
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
            draining: Default::default(),
            latency: LatencyExport::default(),
            prometheus: None,
            shard_cpu: Mutex::default(),
            links: OnceLock::new(),
            push: OnceLock::new(),
            channels: OnceLock::new(),
            api_token: None,
            top_streams: 20,
            scrape_cache: tokio::sync::Mutex::new(None),
        }
    }

    /// With `cfg.http` set, installs the global metrics recorder (call once, before the
    /// shards start) and registers every metric's help text and known label values.
    pub fn new(shards: usize, cfg: &ControlConfig) -> Result<Self, ControlError> {
        let mut c = Self::detached(shards);
        c.api_token = cfg.api_token.clone();
        c.top_streams = cfg.top_streams;
        if cfg.http.is_some() {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| ControlError::Recorder(e.to_string()))?;
            catalog::describe();
            c.prometheus = Some(handle);
        }
        Ok(c)
    }

    /// The shards' lanes (set once when the data plane starts).
    pub fn attach_shards(&self, links: Vec<ShardLink>) {
        let _ = self.links.set(links);
    }

    /// The push destinations the API lists and changes.
    pub fn attach_push(&self, registry: Arc<PushRegistry>) {
        let _ = self.push.set(registry);
    }

    pub fn push_registry(&self) -> Option<&Arc<PushRegistry>> {
        self.push.get()
    }

    /// The channels the API lists and pins.
    pub fn attach_channels(&self, channels: Arc<Channels>) {
        let _ = self.channels.set(channels);
    }

    pub fn channels(&self) -> Option<&Arc<Channels>> {
        self.channels.get()
    }

    /// Tells every shard that push destinations changed. The control lane never blocks:
    /// callable from any thread, the signal thread included.
    pub fn reconcile_sinks(&self) {
        for l in self.links.get().into_iter().flatten() {
            l.send_control(ControlMsg::Query(Query::ReconcileSinks));
        }
    }

    /// An HTTP viewer asked for `key` and it is not live: its owner shard pulls it when
    /// this is an edge (nothing happens otherwise). Never blocks.
    pub fn fetch(&self, key: &str) {
        let Some(links) = self.links.get() else {
            return;
        };
        if let Some(l) = links.get(owner_of(key, links.len())) {
            l.send_control(ControlMsg::Query(Query::Fetch(key.to_string())));
        }
    }

    /// Shutting down: /readyz says so, so load balancers stop sending new connections.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && self.ready.load(Ordering::Relaxed) >= self.shards
    }

    /// Asks every shard; answers that do not come within the timeout are left out.
    pub async fn ask<T>(&self, make: impl Fn(oneshot::Sender<T>) -> Query) -> Vec<T> {
        let Some(links) = self.links.get() else {
            return Vec::new();
        };
        let mut pending = Vec::with_capacity(links.len());
        for l in links {
            let (otx, orx) = oneshot::channel();
            l.send_control(ControlMsg::Query(make(otx)));
            pending.push(orx);
        }
        let mut out = Vec::with_capacity(pending.len());
        for rx in pending {
            if let Ok(Ok(v)) = tokio::time::timeout(SHARD_ANSWER_TIMEOUT, rx).await {
                out.push(v);
            }
        }
        out
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

impl Telemetry for Control {
    fn shard_ready(&self, _shard: usize) {
        self.ready.fetch_add(1, Ordering::Relaxed);
    }

    fn merge_latency(&self, family: &'static str, label: &str, delta: &Histogram<u64>) {
        self.latency.merge(family, label, delta);
    }

    fn shard_cpu(&self, shard: usize, seconds: f64) {
        self.shard_cpu
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(shard.to_string(), seconds);
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
                    } else if c.draining.load(Ordering::Relaxed) {
                        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                    }
                },
            ),
        )
        .nest("/api/v1", api::routes(control.clone()))
        .with_state(control)
}
