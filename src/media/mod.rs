//! FLV tag model: what a media message is (codec, sequence header, keyframe), the shared
//! frame every subscriber receives, and the per-stream cache a late joiner starts from.
//! Pure, no I/O.

pub mod cache;
pub mod codec;
pub mod flv;
pub mod frame;
pub mod metadata;
pub mod tag;
