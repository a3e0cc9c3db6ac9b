//! Push destinations: every published stream that matches a destination gets its own
//! outbound RTMP publisher on the stream's owner shard, fed through a bounded queue. A dead,
//! slow or refusing destination only ever affects itself: it reconnects with capped,
//! jittered exponential backoff, re-sends metadata and sequence headers and resumes at a
//! keyframe. When the source publisher drops, the destination connection is held for a
//! grace period so a quick republish continues the same broadcast.
//!
//! `config` (what is configured), `registry` (the destinations, changeable at runtime; the
//! shard's `SinkFactory`), `sink` (a stream's push on its owner shard), `session` (the
//! outbound connection).

pub mod config;
pub mod registry;
mod session;
pub mod sink;

pub use config::{redact, valid_id, Destination, PushConfigError, PushDestination, PushPolicy};
pub use registry::{Origin, PushEntry, PushRegistry, RegistryError};
pub use sink::PushState;

/// The latency histogram family of push destinations (label: destination id).
pub const LATENCY_FAMILY: &str = "rtmp_push_latency_seconds";
