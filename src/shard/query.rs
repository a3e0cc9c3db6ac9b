//! What the control plane asks a shard and tells it to do (the HTTP API), answered over
//! oneshot channels. Answers are plain owned data: they cross to the control thread.

use serde::Serialize;

use crate::tls::TlsInfo;
use tokio::sync::oneshot;

pub enum Query {
    /// Streams this shard owns, and how many viewers each stream has here.
    Streams(oneshot::Sender<ShardStreams>),
    Clients(oneshot::Sender<Vec<ClientInfo>>),
    /// Disconnects a connection by id; answers whether this shard had it.
    KickClient(u64, oneshot::Sender<bool>),
    /// Disconnects a stream's publisher; answers whether this shard owns a publisher for it.
    KickPublisher(String, oneshot::Sender<bool>),
    /// Push destinations changed: start and stop sinks of live streams to match.
    ReconcileSinks,
    /// An HTTP viewer asked for a stream that is not live here (sent to its owner shard;
    /// another ignores it): an edge pulls it from its origin, as for an RTMP player.
    Fetch(String),
}

#[derive(Debug, Default, Clone)]
pub struct ShardStreams {
    pub owned: Vec<StreamInfo>,
    /// (stream key, players on this shard)
    pub viewers: Vec<(String, usize)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    pub key: String,
    pub app: String,
    pub name: String,
    pub shard: usize,
    pub publisher: Option<PublisherInfo>,
    /// The origin an edge pulls this stream from (no publisher connection then).
    pub origin: Option<String>,
    pub video: Option<CodecInfo>,
    pub audio: Option<CodecInfo>,
    pub ingress_bitrate_bps: f64,
    pub viewers: usize,
    pub uptime_secs: f64,
    pub push: Vec<SinkInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublisherInfo {
    pub id: u64,
    pub peer: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CodecInfo {
    pub codec: String,
    /// From the publisher's onMetaData, when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framerate: Option<f64>,
}

/// One push session (a stream at a destination).
#[derive(Debug, Clone, Serialize)]
pub struct SinkInfo {
    pub destination: String,
    pub state: &'static str,
    pub bytes: u64,
    pub reconnects: u64,
    pub dropped_frames: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    pub id: u64,
    pub peer: String,
    pub shard: usize,
    pub role: &'static str,
    pub stream: Option<String>,
    pub connected_secs: f64,
    /// flashVer from connect: which encoder or player this is.
    pub agent: Option<String>,
    /// RTMPS: TLS version, cipher suite and SNI; null on plain RTMP.
    pub tls: Option<TlsInfo>,
}
