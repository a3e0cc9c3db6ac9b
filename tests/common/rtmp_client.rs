//! A small blocking RTMP client for tests, built from the crate's own sans-IO protocol
//! code over a plain `std::net::TcpStream`. It applies the server's Set Chunk Size and
//! answers nothing else (no acks, no pings), which is all a short test needs.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtmp_edge::protocol::amf::Amf0Value;
use rtmp_edge::protocol::chunk::{ChunkDecoder, ChunkEncoder, RawMessage};
use rtmp_edge::protocol::handshake::ClientHandshake;
use rtmp_edge::protocol::message::{self as msg, Command, UserControl};

/// Chunk stream ids the way ffmpeg uses them.
const CSID_COMMAND: u32 = 3;
const CSID_AUDIO: u32 = 4;
const CSID_VIDEO: u32 = 6;
const CSID_STREAM_COMMAND: u32 = 8;

/// How long setup steps (handshake, connect, createStream) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RtmpClient {
    pub stream: TcpStream,
    dec: ChunkDecoder,
    enc: ChunkEncoder,
    inbuf: BytesMut,
    next_txn: f64,
    /// The message stream id from createStream (0 before).
    pub stream_id: u32,
    /// Set when a receive ended in a read error (a reset) rather than an orderly EOF, for
    /// tests that care whether the server closed cleanly.
    pub close_error: Option<io::ErrorKind>,
}

/// What a receive returned instead of a message.
#[derive(Debug, PartialEq, Eq)]
pub enum RecvEnd {
    /// The deadline passed with the connection still open.
    Timeout,
    /// The server closed the connection (EOF or reset).
    Closed,
}

impl RtmpClient {
    /// TCP connect plus the RTMP handshake (ffmpeg-style digest C1); no `connect` command.
    pub fn handshake(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, SETUP_TIMEOUT)?;
        stream.set_nodelay(true)?;
        let mut c = Self {
            stream,
            dec: ChunkDecoder::new(16 << 20),
            enc: ChunkEncoder::new(),
            inbuf: BytesMut::new(),
            next_txn: 1.0,
            stream_id: 0,
            close_error: None,
        };
        let mut hs = ClientHandshake::new(0, 0x7e57, true);
        let mut out = Vec::new();
        hs.start(&mut out);
        c.stream.write_all(&out)?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        let mut buf = [0u8; 4096];
        while !hs.is_done() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            c.stream.set_read_timeout(Some(left))?;
            let n = c.stream.read(&mut buf)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            out.clear();
            let used = hs
                .feed(&buf[..n], &mut out)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            c.stream.write_all(&out)?;
            // Anything after S2 is already chunk stream.
            c.inbuf.extend_from_slice(&buf[used..n]);
        }
        Ok(c)
    }

    /// Handshake plus `connect(app)`; waits for `NetConnection.Connect.Success`.
    pub fn connect(addr: SocketAddr, app: &str) -> io::Result<Self> {
        let mut c = Self::handshake(addr)?;
        let tc_url = format!("rtmp://{addr}/{app}");
        let obj = Amf0Value::object([
            ("app", app.into()),
            ("type", "nonprivate".into()),
            ("flashVer", "LNX 9,0,124,2".into()),
            ("tcUrl", tc_url.into()),
        ]);
        let reply = c.call("connect", 0, &[obj])?;
        let code = reply
            .arg(1)
            .and_then(|o| o.get("code"))
            .and_then(Amf0Value::as_str);
        if reply.name != "_result" || code != Some("NetConnection.Connect.Success") {
            return Err(io::Error::other(format!("connect refused: {reply:?}")));
        }
        Ok(c)
    }

    /// `createStream`; remembers and returns the stream id.
    pub fn create_stream(&mut self) -> io::Result<u32> {
        let reply = self.call("createStream", 0, &[Amf0Value::Null])?;
        let id = reply.arg(1).and_then(Amf0Value::as_number);
        match (reply.name.as_str(), id) {
            ("_result", Some(id)) => self.stream_id = id as u32,
            _ => return Err(io::Error::other(format!("createStream failed: {reply:?}"))),
        }
        Ok(self.stream_id)
    }

    /// connect(app), createStream and play(name): a player, and the instant play was sent.
    pub fn player(addr: SocketAddr, app: &str, name: &str) -> io::Result<(Self, Instant)> {
        let mut c = Self::connect(addr, app)?;
        c.create_stream()?;
        let sent = c.play(name)?;
        Ok((c, sent))
    }

    /// Sends `play(name, -2000)` like ffmpeg; returns the instant just before the write.
    pub fn play(&mut self, name: &str) -> io::Result<Instant> {
        let body = msg::command_body(
            "play",
            0.0,
            &[Amf0Value::Null, name.into(), (-2000.0).into()],
        );
        let sent = Instant::now();
        self.send_message(
            CSID_STREAM_COMMAND,
            msg::COMMAND_AMF0,
            0,
            self.stream_id,
            body,
        )?;
        Ok(sent)
    }

    /// Sends `publish(name, "live")`; returns the first onStatus reply's (level, code).
    pub fn publish(&mut self, name: &str) -> io::Result<(String, String)> {
        let body = msg::command_body(
            "publish",
            0.0,
            &[Amf0Value::Null, name.into(), "live".into()],
        );
        self.send_message(
            CSID_STREAM_COMMAND,
            msg::COMMAND_AMF0,
            0,
            self.stream_id,
            body,
        )?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            match self.recv(deadline) {
                Ok(m) => {
                    if let Some(st) = status(&m) {
                        return Ok(st);
                    }
                }
                Err(end) => return Err(io::Error::other(format!("no publish status: {end:?}"))),
            }
        }
    }

    /// Sends one audio (8), video (9) or data (18) message on the created stream.
    pub fn send_media(&mut self, type_id: u8, timestamp: u32, payload: &[u8]) -> io::Result<()> {
        let csid = if type_id == msg::VIDEO {
            CSID_VIDEO
        } else {
            CSID_AUDIO
        };
        let payload = Bytes::copy_from_slice(payload);
        self.send_message(csid, type_id, timestamp, self.stream_id, payload)
    }

    /// Encodes and writes one message with header compression.
    pub fn send_message(
        &mut self,
        csid: u32,
        type_id: u8,
        timestamp: u32,
        stream_id: u32,
        payload: Bytes,
    ) -> io::Result<()> {
        let mut out = BytesMut::new();
        let m = RawMessage {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload,
        };
        self.enc.encode(&m, &mut out);
        self.stream.write_all(&out)
    }

    /// Writes bytes as they are (for malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next message from the server, waiting until `deadline`. Set Chunk Size is
    /// applied (and still returned).
    pub fn recv(&mut self, deadline: Instant) -> Result<RawMessage, RecvEnd> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.dec.decode(&mut self.inbuf) {
                Ok(Some(m)) => {
                    if m.type_id == msg::SET_CHUNK_SIZE {
                        let size = msg::parse_u32(m.type_id, &m.payload).unwrap_or(0);
                        self.dec
                            .set_chunk_size(size)
                            .expect("server sent an invalid chunk size");
                    }
                    return Ok(m);
                }
                Ok(None) => {}
                Err(e) => panic!("undecodable chunk stream from the server: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvEnd::Timeout);
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|_| RecvEnd::Closed)?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(RecvEnd::Closed),
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if is_timeout(&e) => return Err(RecvEnd::Timeout),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close_error = Some(e.kind());
                    return Err(RecvEnd::Closed);
                }
            }
        }
    }

    /// Receives until a message matches `pred` (returned) or `deadline`.
    pub fn recv_until(
        &mut self,
        deadline: Instant,
        mut pred: impl FnMut(&RawMessage) -> bool,
    ) -> Result<RawMessage, RecvEnd> {
        loop {
            let m = self.recv(deadline)?;
            if pred(&m) {
                return Ok(m);
            }
        }
    }

    /// Receives until an onStatus with `code` arrives; returns its level.
    pub fn wait_status(&mut self, code: &str, deadline: Instant) -> Result<String, RecvEnd> {
        let m = self.recv_until(deadline, |m| status(m).is_some_and(|(_, c)| c == code))?;
        Ok(status(&m).map(|(level, _)| level).unwrap_or_default())
    }

    /// Reads and discards until the server closes (true) or `deadline` (false).
    pub fn wait_closed(&mut self, deadline: Instant) -> bool {
        wait_closed(&mut self.stream, deadline)
    }

    /// Sends a command on stream 0 and waits for its `_result`/`_error` (other messages are
    /// skipped).
    fn call(&mut self, name: &str, stream_id: u32, args: &[Amf0Value]) -> io::Result<Command> {
        let txn = self.next_txn;
        self.next_txn += 1.0;
        let body = msg::command_body(name, txn, args);
        self.send_message(CSID_COMMAND, msg::COMMAND_AMF0, 0, stream_id, body)?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        loop {
            let m = self
                .recv(deadline)
                .map_err(|e| io::Error::other(format!("no reply to {name}: {e:?}")))?;
            if let Some(cmd) = command(&m) {
                if (cmd.name == "_result" || cmd.name == "_error") && cmd.transaction_id == txn {
                    return Ok(cmd);
                }
            }
        }
    }

    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads and discards until the peer closes (EOF or reset: true) or `deadline` (false).
pub fn wait_closed(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// A command or data message decoded (AMF0 or AMF3 envelope).
pub fn command(m: &RawMessage) -> Option<Command> {
    match m.type_id {
        msg::COMMAND_AMF0 | msg::COMMAND_AMF3 => Command::parse(m.type_id, &m.payload).ok(),
        _ => None,
    }
}

/// The name a data message (type 18) starts with, e.g. `onMetaData`.
pub fn data_name(m: &RawMessage) -> Option<String> {
    if m.type_id != msg::DATA_AMF0 {
        return None;
    }
    let mut p: &[u8] = &m.payload;
    match Amf0Value::decode(&mut p) {
        Ok(Amf0Value::String(s)) => Some(s),
        _ => None,
    }
}

/// (level, code) of an onStatus message.
pub fn status(m: &RawMessage) -> Option<(String, String)> {
    let cmd = command(m).filter(|c| c.name == "onStatus")?;
    let info = cmd.args.iter().find(|a| a.get("code").is_some())?;
    let field = |k| {
        info.get(k)
            .and_then(Amf0Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Some((field("level"), field("code")))
}

/// The user control event of a type-4 message.
pub fn user_control(m: &RawMessage) -> Option<UserControl> {
    (m.type_id == msg::USER_CONTROL)
        .then(|| UserControl::parse(&m.payload).ok())
        .flatten()
}

/// AVC sequence header: keyframe | AVC, packet type 0.
pub fn is_avc_seq_header(m: &RawMessage) -> bool {
    m.type_id == msg::VIDEO && m.payload.starts_with(&[0x17, 0x00])
}

/// AAC sequence header: AAC 44 kHz stereo 16-bit, packet type 0.
pub fn is_aac_seq_header(m: &RawMessage) -> bool {
    m.type_id == msg::AUDIO && m.payload.starts_with(&[0xAF, 0x00])
}

/// AVC keyframe NALUs: keyframe | AVC, packet type 1.
pub fn is_avc_keyframe(m: &RawMessage) -> bool {
    m.type_id == msg::VIDEO && m.payload.starts_with(&[0x17, 0x01])
}

pub fn is_av(m: &RawMessage) -> bool {
    m.type_id == msg::AUDIO || m.type_id == msg::VIDEO
}

pub fn is_config(m: &RawMessage) -> bool {
    is_avc_seq_header(m) || is_aac_seq_header(m)
}

/// Deterministic xorshift64 for reproducible junk.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
