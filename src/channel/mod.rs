//! Always-on channels: an output stream fed by a chain of published sources, failing over
//! to the next live one or to a looped slate, switching back when a better source is
//! stable, without the channel's players, recordings, HLS or pushes ever seeing it end.

pub mod config;
pub mod format;
pub mod slate;
pub mod switcher;
