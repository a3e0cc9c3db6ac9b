//! The control plane, off the data-plane shards: `/metrics` (Prometheus), `/healthz` and
//! `/readyz` on one HTTP listener (`--http`), served by its own thread and runtime. Shards
//! hand their latency histograms over once a second; everything else is read from the
//! `metrics` registry.

pub mod histograms;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::{error, info};

use histograms::LatencyExport;

/// What the shards report to the control plane.
pub struct Control {
    shards: usize,
    ready: AtomicUsize,
    pub latency: LatencyExport,
    prometheus: Option<PrometheusHandle>,
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

    /// A shard's listener is accepting.
    pub fn shard_ready(&self) {
        self.ready.fetch_add(1, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) >= self.shards
    }

    /// The Prometheus text exposition: the registry plus the shards' HDR histograms.
    pub fn render(&self) -> String {
        let mut out = self
            .prometheus
            .as_ref()
            .map(PrometheusHandle::render)
            .unwrap_or_default();
        self.latency.render(&mut out);
        out
    }
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
                let app = router(control);
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
    let metrics = control.clone();
    let ready = control;
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let c = metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], c.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let c = ready.clone();
                async move {
                    if c.is_ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                    }
                }
            }),
        )
}
