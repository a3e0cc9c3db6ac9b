//! rtmp-edge: an RTMP edge relay. Layers, bottom up (each imports only those below it;
//! tests/architecture.rs keeps it so, docs/ARCHITECTURE.md tells the whole picture):
//! `util` (small shared helpers) → `protocol` (sans-IO RTMP) → `media` (FLV tag model,
//! GOP cache, shared frames) → `fanout` (queues, admission, viewers) → `shard` (the
//! thread-per-core io_uring data plane; states the traits it needs) → features `auth`,
//! `record`, `relay` (implement them) → `control` (metrics, health, API) → `config`
//! (parses and assembles) → the binaries.

pub mod auth;
pub mod channel;
pub mod config;
pub mod control;
pub mod fanout;
pub mod hls;
pub mod httpflv;
pub mod media;
pub mod protocol;
pub mod record;
pub mod relay;
pub mod shard;
pub mod storage;
pub mod tls;
pub mod util;
pub mod web;
