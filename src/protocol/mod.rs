//! Sans-IO RTMP: handshake, chunk stream, AMF, messages and the server session.
//! Bytes in, events and bytes out; no sockets, clocks or threads in here.

pub mod amf;
pub mod chunk;
pub mod client;
pub mod handshake;
pub mod message;
pub mod session;
pub mod url;
