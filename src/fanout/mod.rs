//! Fan-out of shared frames to many subscribers: bounded per-connection output queues, the
//! one frame-admission policy (keyframe gating, slow-subscriber drops) and the per-viewer
//! delivery (late-join preamble, RTMP stream ids), and runs (a flush's frames, merged).

pub mod admission;
pub mod queue;
pub mod run;
pub mod viewer;
