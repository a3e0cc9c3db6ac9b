//! The command line: every flag, its default and its environment variable. Flag names
//! are part of the interface scripts rely on; each can also be set in the config file's
//! `[server]` table (see `file`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordMode {
    All,
    None,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "rtmp-edge",
    version,
    about = "RTMP edge relay on a thread-per-core io_uring data plane"
)]
pub struct Config {
    /// Address to accept RTMP connections on (every shard binds it with SO_REUSEPORT).
    #[arg(long, default_value = "0.0.0.0:1935")]
    pub listen: SocketAddr,

    /// Data-plane shards (threads, one io_uring each); 0 = one per available core.
    #[arg(long, default_value_t = 0)]
    pub shards: usize,

    /// Outgoing chunk size announced to every client.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(128..=16_777_215))]
    pub chunk_size: u32,

    /// Log level filter (error, warn, info, debug, trace, or a tracing filter directive).
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Largest incoming message accepted, in bytes; a bigger header closes the connection.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_message_size: u32,

    /// Bytes a viewer may have queued before its frames are dropped (it resumes at a keyframe).
    #[arg(long, default_value_t = 4 << 20)]
    pub viewer_queue_bytes: usize,

    /// Milliseconds the oldest queued byte of a viewer may wait before its video is dropped.
    #[arg(long, default_value_t = 5000)]
    pub viewer_queue_ms: u64,

    /// Seconds a viewer may keep dropping frames before it is disconnected.
    #[arg(long, default_value_t = 10)]
    pub viewer_behind_secs: u64,

    /// Latency budget for batching writes to viewers: 0 writes as soon as a frame arrives;
    /// N flushes every viewer every N ms (fewer, larger writes: less CPU per byte).
    #[arg(long, default_value_t = 0)]
    pub write_coalesce_ms: u64,

    /// Publishers' reads on a busy shard: N reads each publisher at most every N ms
    /// (merged reads: fewer, larger reads, less than half the CPU per byte ingested, at up
    /// to N ms more latency); 0 reads each as soon as it arrives. See --read-coalesce-from.
    #[arg(long, default_value_t = 50)]
    pub read_coalesce_ms: u64,

    /// Merged reads start once a shard ingests this many streams, and stop when it falls
    /// below: a handful of encoders gets every read at once, an origin of cameras gets the
    /// CPU back (0: always merge).
    #[arg(long, default_value_t = 64)]
    pub read_coalesce_from: usize,

    /// TCP_NODELAY on player sockets (true/false). Default: off at --write-coalesce-ms 0,
    /// where the kernel merging small writes (as with nginx-rtmp) is what keeps the cost
    /// per byte down; on when coalescing, where we batch ourselves and Nagle would only
    /// hold the last segment of each batch back.
    #[arg(long)]
    pub player_nodelay: Option<bool>,

    /// While coalescing, write a viewer early once this many bytes wait.
    #[arg(long, default_value_t = 64 << 10)]
    pub write_coalesce_bytes: usize,

    /// Control HTTP listener: /metrics, /healthz, /readyz ("off" to disable).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http: String,

    /// Media HTTP listener for viewers: HLS / LL-HLS and the preview page ("off" to disable).
    #[arg(long, default_value = "0.0.0.0:8888")]
    pub http_media: String,

    /// Where the preview page (`/` on the media listener) loads hls.js from.
    #[arg(
        long,
        default_value = "https://cdn.jsdelivr.net/npm/hls.js@1/dist/hls.min.js"
    )]
    pub preview_hls_js: String,

    /// Where the preview page loads mpegts.js (HTTP-FLV) from.
    #[arg(
        long,
        default_value = "https://cdn.jsdelivr.net/npm/mpegts.js@1/dist/mpegts.min.js"
    )]
    pub preview_mpegts_js: String,

    /// Which streams get HLS: every stream, none, or each while someone plays it
    /// (per-stream overrides come from the config file's [hls] table).
    #[arg(long, value_enum)]
    pub hls: Option<crate::hls::HlsMode>,

    /// HLS segment target duration in seconds (segments start at keyframes).
    #[arg(long, default_value_t = 2.0)]
    pub hls_segment_secs: f64,

    /// Low-Latency HLS part target duration in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub hls_part_ms: u64,

    /// Segments each HLS playlist keeps.
    #[arg(long, default_value_t = 10)]
    pub hls_window: usize,

    /// Also write HLS to a storage target (every stream is then packaged unless --hls says
    /// otherwise): file:///dir, s3://bucket/prefix (options
    /// ?endpoint=..&region=..&path_style=true; keys from AWS_ACCESS_KEY_ID /
    /// AWS_SECRET_ACCESS_KEY).
    #[arg(long, value_name = "URL")]
    pub hls_store: Option<String>,

    /// Upload LL-HLS parts too, not only whole segments.
    #[arg(long)]
    pub hls_store_parts: bool,

    /// Keep stored segments this long after they leave the window (e.g. 24h), as an
    /// archive with a VOD playlist (vod.m3u8) written when the stream ends.
    #[arg(long, value_name = "DURATION")]
    pub hls_store_keep: Option<String>,

    /// Bearer token required on the HTTP API (/api/v1/*).
    #[arg(long, env = "RTMP_EDGE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// How many streams (most viewers first) get per-stream series in /metrics (0 = none).
    #[arg(long, default_value_t = 20)]
    pub metrics_top_streams: usize,

    /// TOML config file: any flag in [server] (the command line wins), plus [auth],
    /// [[push]], [record] and [[tls_certificate]]; `${NAME}` in its strings is read from the environment.
    #[arg(long, env = "RTMP_EDGE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Check the flags and the config file, print a one-line summary and exit (status 2
    /// and the error on stderr if something is wrong).
    #[arg(long)]
    pub check_config: bool,

    /// Push every stream to this RTMP URL (repeatable); the stream's name is appended as
    /// the key unless the URL carries one.
    #[arg(long = "push")]
    pub push: Vec<String>,

    /// Seconds a push destination stays connected after its source publisher left, so a
    /// publisher that reconnects continues the same broadcast.
    #[arg(long, default_value_t = 10)]
    pub push_grace_secs: u64,

    /// Longest wait between reconnect attempts to a failing push destination.
    #[arg(long, default_value_t = 30)]
    pub push_backoff_max_secs: u64,

    /// Edge mode: origin to pull a stream from when a player asks for one that is not
    /// published here (repeatable; tried in order, failing over round-robin).
    #[arg(long = "origin")]
    pub origin: Vec<String>,

    /// Seconds an origin pull stays open after its last player left.
    #[arg(long, default_value_t = 10)]
    pub origin_idle_secs: u64,

    /// A channel's source that sends no media for this long counts as lost: the channel
    /// moves to its next live source or its slate (`[[channel]]` in the config file).
    #[arg(long, default_value_t = 1500)]
    pub source_timeout_ms: u64,

    /// Directory for FLV recordings.
    #[arg(long)]
    pub record_dir: Option<PathBuf>,

    /// Which streams to record (per-stream overrides come from the config file).
    #[arg(long, value_enum)]
    pub record: Option<RecordMode>,

    /// Upload each finished recording to a storage target (file:///dir, s3://bucket/prefix,
    /// gs://bucket/prefix); an upload cut short by a restart is retried at the next start.
    #[arg(long, value_name = "URL")]
    pub record_store: Option<String>,

    /// Remove a recording's local file once it is uploaded.
    #[arg(long)]
    pub record_delete_local: bool,

    /// Seconds between per-shard latency/drop summaries in the log (0 = never).
    #[arg(long, default_value_t = 10)]
    pub stats_interval_secs: u64,

    /// Seconds a connection may take from TCP accept to publish/play.
    #[arg(long, default_value_t = 15)]
    pub handshake_timeout_secs: u64,

    /// Seconds a publisher may stay silent before it is closed.
    #[arg(long, default_value_t = 30)]
    pub publisher_timeout_secs: u64,

    /// Seconds one socket write may stall (peer not reading) before the connection is closed.
    #[arg(long, default_value_t = 30)]
    pub write_timeout_secs: u64,

    /// Seconds SIGTERM/SIGINT may spend draining (players notified, pushes unpublished,
    /// recordings finalized) before the rest is closed; a second signal exits at once.
    #[arg(long, default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Client connections open at once (players, publishers, handshakes; 0 = no limit);
    /// more are closed right after accept, before they cost memory.
    #[arg(long, default_value_t = 100_000)]
    pub max_conns: usize,

    /// Client connections open at once from one IP address (0 = no limit): one host cannot
    /// take every slot.
    #[arg(long, default_value_t = 0)]
    pub max_conns_per_ip: u32,

    /// Connections from one IP address not yet publishing or playing (in their TLS or RTMP
    /// handshake, connect, or authorization) at once; more are closed at accept. Loopback
    /// addresses are exempt (local load generators and sidecars); 0 = no limit. Room for a
    /// load generator on another host ramping 500 viewers a second over a slow path.
    #[arg(long, default_value_t = 256)]
    pub max_handshakes_per_ip: u32,

    /// Bytes of partially received messages one connection may hold before its publish or
    /// play is accepted (an unauthenticated peer controls this memory); past it the
    /// connection is closed.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(4096..))]
    pub max_preauth_buffer_bytes: u64,

    /// Bytes of partially received messages all connections together may hold; past it a
    /// connection that adds to them is closed, unless it is an accepted publisher (held to
    /// one message of --max-message-size; players to 64 KiB).
    #[arg(long, default_value_t = 1 << 30, value_parser = clap::value_parser!(u64).range(1 << 20..))]
    pub max_buffered_bytes_total: u64,

    /// Address to accept RTMPS (RTMP over TLS) on, e.g. `0.0.0.0:443` or `:1936`; needs
    /// --tls-cert and --tls-key (or [[tls_certificate]] entries in the config file).
    #[arg(long, value_parser = parse_listen)]
    pub listen_tls: Option<SocketAddr>,

    /// PEM certificate chain served on --listen-tls (the default certificate: clients whose
    /// SNI names no [[tls_certificate]] get it). SIGHUP re-reads it.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, RSA or SEC1) of --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,

    /// Extra CA certificates (PEM) trusted for the `rtmps://` targets of --push and
    /// --origin, besides the public roots; for private relays and tests.
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
}

/// `host:port`, or `:port` for every IPv4 address.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = match s.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => s.to_string(),
    };
    full.parse()
        .map_err(|e| format!("{s:?} is not an address like 0.0.0.0:443 or :1936 ({e})"))
}

impl Config {
    /// The media listener's address, None when `--http-media off`.
    pub fn http_media_addr(
        &self,
    ) -> Result<Option<std::net::SocketAddr>, std::net::AddrParseError> {
        match self.http_media.as_str() {
            "off" | "" => Ok(None),
            a => a.parse().map(Some),
        }
    }

    /// The control listener's address, None when `--http off`.
    pub fn http_addr(&self) -> Result<Option<std::net::SocketAddr>, std::net::AddrParseError> {
        match self.http.as_str() {
            "off" | "" => Ok(None),
            a => a.parse().map(Some),
        }
    }

    pub fn player_nodelay(&self) -> bool {
        self.player_nodelay.unwrap_or(self.write_coalesce_ms > 0)
    }

    /// Shard count after resolving 0 to the number of available cores.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_names() {
        let c = Config::parse_from(["rtmp-edge"]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:1935");
        assert_eq!(c.chunk_size, 4096);
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.shard_count() >= 1);
        let c = Config::parse_from([
            "rtmp-edge",
            "--listen",
            "127.0.0.1:1940",
            "--shards",
            "2",
            "--chunk-size",
            "60000",
            "--log-level",
            "debug",
            "--log-format",
            "json",
        ]);
        assert_eq!(c.shard_count(), 2);
        assert_eq!(c.chunk_size, 60000);
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(Config::try_parse_from(["rtmp-edge", "--chunk-size", "10"]).is_err());
        // Nagle at budget 0, our own batching (and no Nagle) when coalescing.
        assert!(!Config::parse_from(["rtmp-edge"]).player_nodelay());
        assert!(Config::parse_from(["rtmp-edge", "--write-coalesce-ms", "100"]).player_nodelay());
        assert!(Config::parse_from(["rtmp-edge", "--player-nodelay", "true"]).player_nodelay());
    }
}
