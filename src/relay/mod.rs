//! Moving streams between servers: pushing published streams to other RTMP servers
//! (platforms, other relays), and pulling streams from an origin as an edge.

pub mod pull;
pub mod push;
