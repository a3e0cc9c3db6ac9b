//! RTMP message types: protocol control, user control and command/data bodies, parsed from
//! and built into message payloads. Chunking lives in `chunk`; this module only knows payloads.

use bytes::{BufMut, Bytes, BytesMut};

use super::amf::{self, Amf0Value};
use super::chunk;

pub const SET_CHUNK_SIZE: u8 = 1;
pub const ABORT: u8 = 2;
pub const ACK: u8 = 3;
pub const USER_CONTROL: u8 = 4;
pub const WINDOW_ACK_SIZE: u8 = 5;
pub const SET_PEER_BANDWIDTH: u8 = 6;
pub const AUDIO: u8 = 8;
pub const VIDEO: u8 = 9;
pub const DATA_AMF3: u8 = 15;
pub const COMMAND_AMF3: u8 = 17;
pub const DATA_AMF0: u8 = 18;
pub const COMMAND_AMF0: u8 = 20;
pub const AGGREGATE: u8 = 22;

/// Chunk stream ids we send on. Control must go on 2 and the connect reply on 3 (Larix).
pub const CSID_CONTROL: u32 = 2;
pub const CSID_COMMAND: u32 = 3;
pub const CSID_AUDIO: u32 = 4;
pub const CSID_STATUS: u32 = 5;
pub const CSID_VIDEO: u32 = 6;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MessageError {
    #[error("control message type {type_id} too short ({len} bytes)")]
    ShortControl { type_id: u8, len: usize },
    #[error("malformed AMF: {0}")]
    Amf(#[from] amf::AmfError),
    #[error("command message without a name")]
    NoCommandName,
}

/// User control event types (message type 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserControl {
    StreamBegin(u32),
    StreamEof(u32),
    StreamDry(u32),
    SetBufferLength { stream_id: u32, millis: u32 },
    StreamIsRecorded(u32),
    PingRequest(u32),
    PingResponse(u32),
    Other(u16),
}

impl UserControl {
    pub fn parse(p: &[u8]) -> Result<Self, MessageError> {
        let short = || MessageError::ShortControl {
            type_id: USER_CONTROL,
            len: p.len(),
        };
        let kind = u16::from_be_bytes(p.get(0..2).ok_or_else(short)?.try_into().unwrap_or([0; 2]));
        let arg = |at: usize| -> Result<u32, MessageError> {
            p.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(short)
        };
        Ok(match kind {
            0 => Self::StreamBegin(arg(2)?),
            1 => Self::StreamEof(arg(2)?),
            2 => Self::StreamDry(arg(2)?),
            3 => Self::SetBufferLength {
                stream_id: arg(2)?,
                millis: arg(6)?,
            },
            4 => Self::StreamIsRecorded(arg(2)?),
            6 => Self::PingRequest(arg(2)?),
            7 => Self::PingResponse(arg(2)?),
            other => Self::Other(other),
        })
    }

    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(10);
        let (kind, a, extra) = match *self {
            Self::StreamBegin(s) => (0, s, None),
            Self::StreamEof(s) => (1, s, None),
            Self::StreamDry(s) => (2, s, None),
            Self::SetBufferLength { stream_id, millis } => (3, stream_id, Some(millis)),
            Self::StreamIsRecorded(s) => (4, s, None),
            Self::PingRequest(t) => (6, t, None),
            Self::PingResponse(t) => (7, t, None),
            Self::Other(k) => (k, 0, None),
        };
        b.put_u16(kind);
        b.put_u32(a);
        if let Some(x) = extra {
            b.put_u32(x);
        }
        b.freeze()
    }
}

/// Reads the big-endian u32 that Set Chunk Size, Abort, Ack and Window Ack Size carry.
pub fn parse_u32(type_id: u8, p: &[u8]) -> Result<u32, MessageError> {
    p.get(0..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(MessageError::ShortControl {
            type_id,
            len: p.len(),
        })
}

/// Acknowledgement bookkeeping, the same on both ends: count bytes received and say when
/// an Ack is due for the window the peer announced (mod 2^32 on the wire).
#[derive(Debug, Clone)]
pub struct AckWindow {
    received: u64,
    last_ack: u64,
    window: u32,
}

impl AckWindow {
    pub fn new(window: u32) -> Self {
        Self {
            received: 0,
            last_ack: 0,
            window: window.max(1),
        }
    }

    pub fn on_received(&mut self, n: usize) {
        self.received += n as u64;
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// The peer's Window Acknowledgement Size; 0 would mean an ack per read, so it is ignored.
    pub fn set_window(&mut self, window: u32) {
        if window > 0 {
            self.window = window;
        }
    }

    /// The Ack payload to send now, if a window's worth arrived since the last one.
    pub fn due(&mut self) -> Option<Bytes> {
        (self.received - self.last_ack >= u64::from(self.window)).then(|| {
            self.last_ack = self.received;
            Bytes::copy_from_slice(&(self.received as u32).to_be_bytes())
        })
    }
}

/// A command (type 20/17) or data (type 18/15) message decoded to its AMF values.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub name: String,
    pub transaction_id: f64,
    /// Everything after the transaction id (command object first, usually).
    pub args: Vec<Amf0Value>,
}

impl Command {
    pub fn parse(type_id: u8, payload: &[u8]) -> Result<Self, MessageError> {
        let mut values = if type_id == COMMAND_AMF3 {
            amf::decode_amf3_envelope(payload)?
        } else {
            amf::decode_all(payload)?
        }
        .into_iter();
        let name = match values.next() {
            Some(Amf0Value::String(s)) => s,
            _ => return Err(MessageError::NoCommandName),
        };
        let transaction_id = values.next().and_then(|v| v.as_number()).unwrap_or(0.0);
        Ok(Self {
            name,
            transaction_id,
            args: values.collect(),
        })
    }

    pub fn arg(&self, i: usize) -> Option<&Amf0Value> {
        self.args.get(i)
    }
}

/// Encodes a command message body: name, transaction id, then the values.
pub fn command_body(name: &str, txn: f64, values: &[Amf0Value]) -> Bytes {
    let mut out = Vec::with_capacity(128);
    Amf0Value::from(name).encode(&mut out);
    Amf0Value::Number(txn).encode(&mut out);
    amf::encode_all(values, &mut out);
    Bytes::from(out)
}

/// Encodes a data message body (name followed by values, no transaction id).
pub fn data_body(name: &str, values: &[Amf0Value]) -> Bytes {
    let mut out = Vec::with_capacity(64);
    Amf0Value::from(name).encode(&mut out);
    amf::encode_all(values, &mut out);
    Bytes::from(out)
}

/// The onStatus info object that every client inspects for `code` and `level`.
pub fn status_object(level: &str, code: &str, description: &str) -> Amf0Value {
    Amf0Value::Object(vec![
        ("level".into(), level.into()),
        ("code".into(), code.into()),
        ("description".into(), description.into()),
    ])
}

/// Writes one whole message as self-contained chunks (fmt0 + fmt3) onto `out`.
pub fn write_message(
    out: &mut BytesMut,
    chunk_size: u32,
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
) {
    out.reserve(chunk::encoded_len(
        csid,
        timestamp,
        payload.len(),
        chunk_size,
    ));
    chunk::encode_message(
        csid, timestamp, type_id, stream_id, payload, chunk_size, out,
    );
}

/// If `payload` is `@setDataFrame(name, ...)`, returns the body without the wrapper, i.e. what
/// players expect to receive (`onMetaData`, ecma array).
pub fn strip_set_data_frame(payload: &Bytes) -> Option<Bytes> {
    // "@setDataFrame" encoded as AMF0 string: 0x02, 0x00, 0x0D, then 13 bytes.
    const PREFIX: &[u8] = b"\x02\x00\x0d@setDataFrame";
    payload
        .starts_with(PREFIX)
        .then(|| payload.slice(PREFIX.len()..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_control_round_trip() {
        for uc in [
            UserControl::StreamBegin(1),
            UserControl::StreamEof(7),
            UserControl::SetBufferLength {
                stream_id: 1,
                millis: 3000,
            },
            UserControl::PingRequest(0xDEADBEEF),
            UserControl::PingResponse(5),
        ] {
            assert_eq!(UserControl::parse(&uc.encode()).unwrap(), uc);
        }
        assert_eq!(
            &UserControl::SetBufferLength {
                stream_id: 1,
                millis: 3000
            }
            .encode()[..],
            &[0, 3, 0, 0, 0, 1, 0, 0, 0x0B, 0xB8]
        );
        assert!(UserControl::parse(&[0, 6, 1]).is_err());
        assert!(UserControl::parse(&[]).is_err());
    }

    #[test]
    fn command_round_trip() {
        let body = command_body("_result", 4.0, &[Amf0Value::Null, Amf0Value::Number(1.0)]);
        let cmd = Command::parse(COMMAND_AMF0, &body).unwrap();
        assert_eq!(cmd.name, "_result");
        assert_eq!(cmd.transaction_id, 4.0);
        assert_eq!(cmd.args, vec![Amf0Value::Null, Amf0Value::Number(1.0)]);
        // AMF3 envelope: a leading 0 byte, then AMF0.
        let mut amf3 = vec![0u8];
        amf3.extend_from_slice(&body);
        assert_eq!(Command::parse(COMMAND_AMF3, &amf3).unwrap(), cmd);
        assert_eq!(
            Command::parse(COMMAND_AMF0, &[0x05]),
            Err(MessageError::NoCommandName)
        );
    }

    #[test]
    fn set_data_frame_is_stripped() {
        let with = data_body(
            "@setDataFrame",
            &["onMetaData".into(), Amf0Value::EcmaArray(vec![])],
        );
        let without = data_body("onMetaData", &[Amf0Value::EcmaArray(vec![])]);
        assert_eq!(strip_set_data_frame(&with).unwrap(), without);
        assert!(strip_set_data_frame(&without).is_none());
    }
}
