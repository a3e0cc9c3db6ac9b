//! Sans-IO RTMP: handshake, chunk stream, AMF, messages, the transport both ends share,
//! and the server and client sessions.
//! Bytes in, events and bytes out; no sockets, clocks or threads in here.

pub mod amf;
pub mod chunk;
pub mod client;
mod csid_map;
pub mod handshake;
pub mod message;
pub mod session;
mod transport;
pub mod url;
