//! The data plane's own settings (assembled from flags and the config file by `config`).

use std::net::SocketAddr;
use std::time::Duration;

use crate::fanout::viewer::ViewerPolicy;
use crate::tls::Acceptor;

#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Address every shard binds with SO_REUSEPORT.
    pub listen: SocketAddr,
    /// Number of shards (threads), at least 1.
    pub shards: usize,
    /// Outgoing chunk size announced to every client.
    pub chunk_size: u32,
    /// Largest incoming message accepted.
    pub max_message_size: u32,
    /// What one connection may buffer of partial messages before a publish or play is
    /// accepted.
    pub preauth_buffer: usize,
    /// Client connections open at once (0: no limit); more are closed at accept.
    pub max_conns: usize,
    /// Client connections open at once from one address (0: no limit).
    pub max_conns_per_ip: u32,
    /// Connections from one non-loopback address not yet publishing or playing (0: no
    /// limit); more are closed at accept.
    pub max_handshakes_per_ip: u32,
    /// What all connections together may buffer of partial messages; past it, a connection
    /// that adds to them is closed unless it is an accepted publisher.
    pub max_buffered_total: usize,
    /// How every viewer is fed (queue budget, coalescing).
    pub viewer: ViewerPolicy,
    /// Latency budget for batching viewer writes; zero writes at once.
    pub write_coalesce: Duration,
    /// A publisher reads at most this often (zero: as soon as bytes arrive)...
    pub read_coalesce: Duration,
    /// ...once its shard ingests at least this many streams.
    pub read_coalesce_from: usize,
    /// TCP_NODELAY on player sockets.
    pub player_nodelay: bool,
    /// TCP accept to publish/play.
    pub handshake_timeout: Duration,
    /// A silent publisher is closed after this.
    pub publisher_timeout: Duration,
    /// One socket write may stall this long.
    pub write_timeout: Duration,
    /// Seconds between per-shard summaries in the log (0 = never).
    pub stats_interval_secs: u64,
    /// How long a shutdown may drain connections and sinks.
    pub shutdown_grace: Duration,
    /// RTMPS: a second address, whose connections speak TLS first.
    pub tls: Option<TlsListen>,
    /// Called once a second on every shard thread to hand freed memory back to the OS
    /// (`true`: all of it now, after large buffers were released). The binary knows the
    /// allocator; the default does nothing.
    pub release_memory: fn(bool),
}

/// Where RTMPS is served and with which certificates.
#[derive(Debug, Clone)]
pub struct TlsListen {
    pub addr: SocketAddr,
    /// Shared with whoever reloads the certificates (SIGHUP).
    pub acceptor: Acceptor,
}
