//! Fan-out of shared frames to many subscribers: bounded per-connection output queues and
//! the per-viewer delivery policy (late-join preamble, keyframe gating, slow-viewer drops).

pub mod queue;
pub mod viewer;
