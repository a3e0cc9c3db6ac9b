//! rtmp-edge: an RTMP edge relay.
//!
//! Layers, top to bottom: `protocol` (sans-IO RTMP), `media` (FLV tag model, GOP cache),
//! `fanout` (shared encoded frames and bounded viewer queues), `shard` (thread-per-core
//! io_uring data plane), `config` (CLI).

pub mod auth;
pub mod config;
pub mod config_file;
pub mod control;
pub mod fanout;
pub mod media;
pub mod protocol;
pub mod record;
pub mod relay;
pub mod shard;
