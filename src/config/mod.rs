//! Configuration: command-line flags (`cli`), their environment variables, the TOML config
//! file (`file`, with `${VAR}` expansion in `env`), loading and precedence (`load`) and
//! `--check-config` (`check`). This module only parses and assembles: each domain owns its
//! config type (`ShardConfig`, `ControlConfig`, `PushPolicy`/`PushDestination`,
//! `RecordConfig`, `AuthConfig`, `OriginConfig`) and [`Settings`] is them, filled in.

mod check;
mod cli;
mod env;
mod file;
mod load;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use check::check;
pub use cli::{Config, LogFormat, RecordMode};
pub use env::expand_env;
pub use file::{ConfigFileError, FileConfig, FileError, ServerArg};
pub use load::{load, load_from, load_or_exit, ConfigError};

use crate::auth::AuthConfig;
use crate::control::ControlConfig;
use crate::fanout::admission::AdmissionPolicy;
use crate::fanout::viewer::ViewerPolicy;
use crate::hls::{HlsConfig, HlsMode, HlsPolicy};
use crate::record::RecordConfig;
use crate::relay::pull::OriginConfig;
use crate::relay::push::{PushDestination, PushPolicy};
use crate::shard::config::TlsListen;
use crate::shard::ShardConfig;
use crate::tls::{Acceptor, CertConfig, ClientTls};
use crate::web::WebConfig;

/// Every module's configuration, assembled from the flags and the config file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub log_level: String,
    pub log_format: LogFormat,
    pub shard: ShardConfig,
    pub control: ControlConfig,
    pub push_policy: PushPolicy,
    /// `--push` URLs.
    pub push_flags: Vec<String>,
    /// `[[push]]` entries.
    pub push_entries: Vec<PushDestination>,
    /// `[record]` with `--record` / `--record-dir` applied.
    pub record: RecordConfig,
    /// `[hls]` with the `--hls*` flags applied.
    pub hls: HlsPolicy,
    /// Where finished recordings are uploaded (`--record-store`, `[record] store`).
    pub record_store: Option<crate::storage::Target>,
    /// Where HLS is also written (`--hls-store`, `[hls] store`).
    pub hls_store: Option<crate::storage::Target>,
    /// `--http-media`; None when off.
    pub http_media: Option<std::net::SocketAddr>,
    pub web: WebConfig,
    pub auth: AuthConfig,
    /// Edge mode; None without a usable `--origin`.
    pub origin: Option<OriginConfig>,
    /// RTMPS certificates: `--tls-cert`/`--tls-key` first, then `[[tls_certificate]]`.
    pub tls_certs: Vec<CertConfig>,
    /// `--tls-ca-file`, for the `rtmps://` targets of `--push` and `--origin`.
    pub tls_ca_file: Option<PathBuf>,
    /// The config file, for SIGHUP reloads.
    pub config_path: Option<PathBuf>,
    /// `[[channel]]` with `--source-timeout-ms`.
    pub channels: crate::channel::ChannelPolicy,
}

impl Settings {
    pub fn assemble(cfg: &Config, file: &FileConfig) -> Result<Self, ConfigError> {
        let http = cfg
            .http_addr()
            .map_err(|e| ConfigError::Http(cfg.http.clone(), e))?;
        let http_media = cfg
            .http_media_addr()
            .map_err(|e| ConfigError::HttpMedia(cfg.http_media.clone(), e))?;
        let tls_certs = tls_certs(cfg, file)?;
        let mut shard = shard_config(cfg);
        shard.tls = tls_listen(cfg, &tls_certs)?;
        let flag_trust = ClientTls::new(cfg.tls_ca_file.as_deref())?;
        Ok(Self {
            log_level: cfg.log_level.clone(),
            log_format: cfg.log_format,
            shard,
            control: ControlConfig {
                http,
                api_token: cfg.api_token.clone(),
                top_streams: cfg.metrics_top_streams,
            },
            push_policy: PushPolicy {
                grace: Duration::from_secs(cfg.push_grace_secs),
                backoff_cap: Duration::from_secs(cfg.push_backoff_max_secs.max(1)),
                write_timeout: Duration::from_secs(cfg.write_timeout_secs.max(1)),
                stats_interval: Duration::from_secs(cfg.stats_interval_secs.max(1)),
                ..PushPolicy::default()
            },
            push_flags: cfg.push.clone(),
            push_entries: file.push.clone(),
            record: record_config(cfg, file),
            record_store: record_config(cfg, file)
                .store
                .as_deref()
                .map(crate::storage::Target::parse)
                .transpose()?,
            hls: HlsPolicy::from_config(&hls_config(cfg, file))?,
            hls_store: hls_config(cfg, file)
                .store
                .as_deref()
                .map(crate::storage::Target::parse)
                .transpose()?,
            http_media,
            web: WebConfig {
                hls_js: cfg.preview_hls_js.clone(),
                mpegts_js: cfg.preview_mpegts_js.clone(),
            },
            auth: file.auth.clone(),
            origin: OriginConfig::from_urls(
                &cfg.origin,
                Duration::from_secs(cfg.origin_idle_secs),
                flag_trust,
            )?,
            tls_certs,
            tls_ca_file: cfg.tls_ca_file.clone(),
            config_path: cfg.config.clone(),
            channels: crate::channel::ChannelPolicy {
                channels: file.channel.clone(),
                source_timeout: Duration::from_millis(cfg.source_timeout_ms.max(100)),
            },
        })
    }
}

fn shard_config(cfg: &Config) -> ShardConfig {
    let coalesce = Duration::from_millis(cfg.write_coalesce_ms);
    ShardConfig {
        listen: cfg.listen,
        shards: cfg.shard_count(),
        chunk_size: cfg.chunk_size,
        max_message_size: cfg.max_message_size,
        max_conns: cfg.max_conns,
        max_conns_per_ip: cfg.max_conns_per_ip,
        max_handshakes_per_ip: cfg.max_handshakes_per_ip,
        preauth_buffer: usize::try_from(cfg.max_preauth_buffer_bytes).unwrap_or(usize::MAX),
        max_buffered_total: usize::try_from(cfg.max_buffered_bytes_total).unwrap_or(usize::MAX),
        viewer: ViewerPolicy {
            admission: AdmissionPolicy {
                max_queue_bytes: cfg.viewer_queue_bytes,
                max_queue_age: Duration::from_millis(cfg.viewer_queue_ms),
                max_behind: Duration::from_secs(cfg.viewer_behind_secs),
                ..AdmissionPolicy::default()
            },
            coalesce: !coalesce.is_zero(),
            flush_bytes: cfg.write_coalesce_bytes,
        },
        write_coalesce: coalesce,
        read_coalesce: Duration::from_millis(cfg.read_coalesce_ms.min(1000)),
        read_coalesce_from: cfg.read_coalesce_from,
        player_nodelay: cfg.player_nodelay(),
        handshake_timeout: Duration::from_secs(cfg.handshake_timeout_secs),
        publisher_timeout: Duration::from_secs(cfg.publisher_timeout_secs),
        write_timeout: Duration::from_secs(cfg.write_timeout_secs),
        stats_interval_secs: cfg.stats_interval_secs,
        shutdown_grace: Duration::from_secs(cfg.shutdown_grace_secs),
        tls: None,
        release_memory: |_| {},
    }
}

/// The RTMPS certificates: the flags' pair (the default) first, then the file's.
pub fn tls_certs(cfg: &Config, file: &FileConfig) -> Result<Vec<CertConfig>, ConfigError> {
    let mut certs = Vec::new();
    match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => certs.push(CertConfig {
            names: Vec::new(),
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => {}
        _ => {
            return Err(ConfigError::TlsSettings(
                "--tls-cert and --tls-key go together",
            ))
        }
    }
    certs.extend(file.tls_certificate.iter().cloned());
    Ok(certs)
}

/// The RTMPS listener with its certificates loaded (and checked) now.
fn tls_listen(cfg: &Config, certs: &[CertConfig]) -> Result<Option<TlsListen>, ConfigError> {
    let Some(addr) = cfg.listen_tls else {
        if !certs.is_empty() {
            tracing::warn!("TLS certificates are configured but --listen-tls is not: no RTMPS");
        }
        return Ok(None);
    };
    // SO_REUSEPORT would let both bind and split connections between them at random.
    let overlaps = |a: std::net::SocketAddr, b: std::net::SocketAddr| {
        // Port 0 picks a free port for each: no overlap.
        a.port() != 0
            && a.port() == b.port()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
    };
    if overlaps(addr, cfg.listen) {
        return Err(ConfigError::TlsSettings(
            "--listen-tls must not overlap --listen (use another port, e.g. :443 or :1936)",
        ));
    }
    if certs.is_empty() {
        return Err(ConfigError::TlsSettings(
            "--listen-tls needs --tls-cert and --tls-key (or [[tls_certificate]] in the config file)",
        ));
    }
    Ok(Some(TlsListen {
        addr,
        acceptor: Acceptor::new(certs)?,
    }))
}

/// `[hls]` with the flags applied: `--hls` wins over the file's mode.
pub(crate) fn hls_config(cfg: &Config, file: &FileConfig) -> HlsConfig {
    HlsConfig {
        mode: match cfg.hls {
            Some(HlsMode::All) => Some("all".into()),
            Some(HlsMode::None) => Some("none".into()),
            Some(HlsMode::OnDemand) => Some("on-demand".into()),
            None => file.hls.mode.clone(),
        },
        segment_secs: Some(cfg.hls_segment_secs),
        part_ms: Some(cfg.hls_part_ms),
        window: Some(cfg.hls_window),
        store: cfg.hls_store.clone().or_else(|| file.hls.store.clone()),
        store_parts: Some(cfg.hls_store_parts || file.hls.store_parts.unwrap_or(false)),
        keep: cfg.hls_store_keep.clone().or_else(|| file.hls.keep.clone()),
        streams: file.hls.streams.clone(),
    }
}

/// `[record]` with the flags applied: `--record-dir` and `--record` win over the file's
/// `dir` and `mode`; the file's per-stream overrides apply on top of either.
pub(crate) fn record_config(cfg: &Config, file: &FileConfig) -> RecordConfig {
    RecordConfig {
        dir: cfg.record_dir.clone().or_else(|| file.record.dir.clone()),
        mode: match cfg.record {
            Some(RecordMode::All) => Some("all".into()),
            Some(RecordMode::None) => Some("none".into()),
            None => file.record.mode.clone(),
        },
        store: cfg
            .record_store
            .clone()
            .or_else(|| file.record.store.clone()),
        delete_local: Some(cfg.record_delete_local || file.record.delete_local.unwrap_or(false)),
        streams: file.record.streams.clone(),
    }
}
