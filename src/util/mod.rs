//! Small helpers every layer may use: glob matching of stream keys, reconnect backoff and
//! the HDR histogram shape the latency figures share. Nothing here knows about RTMP.

pub mod backoff;
pub mod glob;
pub mod histogram;

pub use backoff::backoff;
pub use glob::glob_match;
