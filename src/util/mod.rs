//! Small helpers every layer may use: glob matching of stream keys, reconnect backoff,
//! the HDR histogram shape the latency figures share, calendar dates and human durations. Nothing here knows about RTMP.

pub mod backoff;
pub mod duration;
pub mod glob;
pub mod histogram;
pub mod time;

pub use backoff::backoff;
pub use glob::glob_match;
