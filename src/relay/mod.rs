//! Moving streams between servers: pushing published streams to other RTMP servers
//! (platforms, other relays).

pub mod push;
