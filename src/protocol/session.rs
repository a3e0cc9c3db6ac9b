//! The server side of one RTMP connection as a sans-IO state machine: the NetConnection/
//! NetStream command flow over the shared `transport` layer (handshake, chunk stream,
//! protocol control). Bytes go in through `feed`, application events come out of
//! `poll_event`, bytes to send come out of `take_output`. Decisions that need the rest of the
//! server (may this key be published? does this stream exist?) are left to the caller, who
//! answers with `accept_*`/`reject_*`.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::amf::Amf0Value;
use super::chunk::{ChunkError, RawMessage};
use super::handshake::{HandshakeError, ServerHandshake};
use super::message::{self as msg, Command, MessageError, UserControl};
use super::transport::{self, Endpoint, Transport};

/// Window we announce to clients; they ack every this many bytes (we never wait for it).
const OUR_WINDOW_ACK: u32 = 2_500_000;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Chunk size we announce and use for everything we send after connect.
    pub out_chunk_size: u32,
    /// Cap on one incoming message's length.
    pub max_message_size: u32,
    /// Handshake S1 time field and PRNG seed.
    pub epoch: u32,
    pub seed: u64,
    /// What partially assembled incoming messages may hold until a publish or play is
    /// accepted: an unauthenticated peer controls this memory.
    pub preauth_buffer: usize,
}

/// What a player's partial messages may hold: it only sends control messages.
pub const PLAYER_BUFFER: usize = 64 * 1024;
/// Beyond its message cap, what a publisher's other chunk streams may hold meanwhile
/// (audio and data interleaved with a large video frame).
pub const PUBLISHER_BUFFER_HEADROOM: usize = 256 * 1024;

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            out_chunk_size: 4096,
            max_message_size: 16 << 20,
            epoch: 0,
            seed: 0x5eed,
            preauth_buffer: 1 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("message: {0}")]
    Message(#[from] MessageError),
    #[error("protocol violation: {0}")]
    Violation(&'static str),
}

impl SessionError {
    /// Every `kind()` label, so counters can exist at 0 before the first error.
    pub const KINDS: [&'static str; 8] = [
        "handshake",
        "tls_on_plain_port",
        "message_too_large",
        "buffer_budget",
        "invalid_chunk_size",
        "chunk",
        "message",
        "violation",
    ];

    /// Short stable label for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Handshake(HandshakeError::TlsOnPlainPort) => "tls_on_plain_port",
            Self::Handshake(_) => "handshake",
            Self::Chunk(ChunkError::MessageTooLarge { .. }) => "message_too_large",
            Self::Chunk(ChunkError::InvalidChunkSize(_)) => "invalid_chunk_size",
            Self::Chunk(ChunkError::BufferBudget { .. }) => "buffer_budget",
            Self::Chunk(_) => "chunk",
            Self::Message(_) => "message",
            Self::Violation(_) => "violation",
        }
    }
}

/// What the application must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `connect` was answered with success.
    Connected {
        app: String,
        tc_url: Option<String>,
        flash_ver: Option<String>,
        /// Query string found in the app (`live?token=x`), for auth.
        query: Option<String>,
    },
    /// Answer with `accept_publish` or `reject_publish`.
    Publish {
        stream_id: u32,
        name: String,
        query: Option<String>,
    },
    /// Answer with `accept_play` or `reject_play`.
    Play {
        stream_id: u32,
        name: String,
        query: Option<String>,
        start: f64,
        reset: bool,
    },
    Audio {
        timestamp: u32,
        payload: Bytes,
    },
    Video {
        timestamp: u32,
        payload: Bytes,
    },
    /// Metadata as players want it (`onMetaData`, ecma array), `@setDataFrame` removed.
    Metadata {
        timestamp: u32,
        payload: Bytes,
    },
    /// Any other data message from a publisher (cue points, text), passed through.
    Data {
        timestamp: u32,
        payload: Bytes,
    },
    /// FCUnpublish: the encoder is about to stop publishing `name` (query removed). Most
    /// follow it with deleteStream; vMix and Wirecast restarting a broadcast follow it with
    /// createStream and a new publish on the same connection.
    FcUnpublish {
        name: String,
    },
    /// deleteStream or closeStream: the stream stops publishing or playing.
    CloseStream {
        stream_id: u32,
    },
    ReceiveAudio(bool),
    ReceiveVideo(bool),
}

pub struct ServerSession {
    cfg: SessionConfig,
    link: Transport,
    connected: bool,
    events: VecDeque<Event>,
    next_stream_id: u32,
    app: String,
    object_encoding: f64,
}

/// Splits `name?query` into its parts; an empty query is none.
pub fn split_query(s: &str) -> (String, Option<String>) {
    match s.split_once('?') {
        Some((n, q)) => (n.to_string(), (!q.is_empty()).then(|| q.to_string())),
        None => (s.to_string(), None),
    }
}

/// onStatus sent on a NetStream; shared by session replies and the fan-out's notices to many
/// viewers (which no longer have their session at hand).
pub fn status_message(
    out: &mut BytesMut,
    chunk_size: u32,
    stream_id: u32,
    level: &str,
    code: &str,
    description: &str,
    details: Option<&str>,
) {
    let body = status_body(level, code, description, details);
    msg::write_message(
        out,
        chunk_size,
        msg::CSID_STATUS,
        0,
        msg::COMMAND_AMF0,
        stream_id,
        &body,
    );
}

fn status_body(level: &str, code: &str, description: &str, details: Option<&str>) -> Bytes {
    let mut info = msg::status_object(level, code, description);
    if let (Some(d), Amf0Value::Object(props)) = (details, &mut info) {
        props.push(("details".into(), d.into()));
    }
    msg::command_body("onStatus", 0.0, &[Amf0Value::Null, info])
}

pub fn user_control_message(out: &mut BytesMut, chunk_size: u32, uc: UserControl) {
    msg::write_message(
        out,
        chunk_size,
        msg::CSID_CONTROL,
        0,
        msg::USER_CONTROL,
        0,
        &uc.encode(),
    );
}

/// What a player gets when its stream's publisher goes away: it may stay for a republish.
pub fn unpublish_notice(chunk_size: u32, stream_id: u32, name: &str) -> Bytes {
    let mut out = BytesMut::new();
    user_control_message(&mut out, chunk_size, UserControl::StreamEof(stream_id));
    status_message(
        &mut out,
        chunk_size,
        stream_id,
        "status",
        "NetStream.Play.UnpublishNotify",
        &format!("{name} is now unpublished."),
        Some(name),
    );
    out.freeze()
}

/// What a waiting player gets when a publisher (re)starts its stream.
pub fn publish_notice(chunk_size: u32, stream_id: u32, name: &str) -> Bytes {
    let mut out = BytesMut::new();
    user_control_message(&mut out, chunk_size, UserControl::StreamBegin(stream_id));
    status_message(
        &mut out,
        chunk_size,
        stream_id,
        "status",
        "NetStream.Play.PublishNotify",
        &format!("{name} is now published."),
        Some(name),
    );
    out.freeze()
}

impl ServerSession {
    pub fn new(cfg: SessionConfig) -> Self {
        let hs = ServerHandshake::new(cfg.epoch, cfg.seed);
        // Until the peer announces its window, ack at the one we announce (as nginx does):
        // encoders like FMLE stall when nobody acks.
        let mut link = Transport::server(hs, cfg.max_message_size, OUR_WINDOW_ACK);
        link.set_buffer_budget(cfg.preauth_buffer);
        Self {
            link,
            cfg,
            connected: false,
            events: VecDeque::new(),
            next_stream_id: 1,
            app: String::new(),
            object_encoding: 0.0,
        }
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    /// The chunk size everything after connect is encoded with.
    pub fn out_chunk_size(&self) -> u32 {
        self.link.send_chunk_size()
    }

    pub fn is_handshake_done(&self) -> bool {
        self.link.is_handshake_done()
    }

    pub fn bytes_received(&self) -> u64 {
        self.link.bytes_received()
    }

    /// Bytes partially assembled incoming messages hold now (for a server-wide budget).
    pub fn buffered(&self) -> usize {
        self.link.buffered()
    }

    /// Processes bytes from the peer. Events and output accumulate until taken.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), SessionError> {
        transport::feed(self, data)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write to the peer, if any.
    pub fn take_output(&mut self) -> Option<Bytes> {
        self.link.take_output()
    }

    /// Also lets the connection buffer what a publisher needs: one message of the largest
    /// size plus its other chunk streams.
    pub fn accept_publish(&mut self, stream_id: u32, name: &str) {
        let budget = self.cfg.max_message_size as usize + PUBLISHER_BUFFER_HEADROOM;
        self.link
            .set_buffer_budget(budget.max(self.link.buffer_budget()));
        self.link.user_control(UserControl::StreamBegin(stream_id));
        self.status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            &format!("{name} is now published."),
            Some(name),
        );
    }

    /// `code` is e.g. NetStream.Publish.BadName or NetStream.Publish.Unauthorized.
    pub fn reject_publish(&mut self, stream_id: u32, code: &str, description: &str) {
        self.status(stream_id, "error", code, description, None);
    }

    /// Sends the play preamble; the caller sends metadata, sequence headers and the GOP next.
    /// A player may buffer less from then on (a connection that also publishes keeps its
    /// publisher budget).
    pub fn accept_play(&mut self, stream_id: u32, name: &str, reset: bool) {
        if self.link.buffer_budget() <= self.cfg.preauth_buffer {
            self.link.set_buffer_budget(PLAYER_BUFFER);
        }
        self.link.user_control(UserControl::StreamBegin(stream_id));
        if reset {
            self.status(
                stream_id,
                "status",
                "NetStream.Play.Reset",
                &format!("Playing and resetting {name}."),
                Some(name),
            );
        }
        self.status(
            stream_id,
            "status",
            "NetStream.Play.Start",
            &format!("Started playing {name}."),
            Some(name),
        );
        let access = msg::data_body("|RtmpSampleAccess", &[true.into(), true.into()]);
        self.link
            .send(msg::CSID_STATUS, msg::DATA_AMF0, stream_id, 0, &access);
    }

    /// `code` is e.g. NetStream.Play.StreamNotFound or NetStream.Play.Failed.
    pub fn reject_play(&mut self, stream_id: u32, code: &str, description: &str) {
        self.status(stream_id, "error", code, description, None);
    }

    fn status(
        &mut self,
        stream_id: u32,
        level: &str,
        code: &str,
        description: &str,
        details: Option<&str>,
    ) {
        self.link.send(
            msg::CSID_STATUS,
            msg::COMMAND_AMF0,
            stream_id,
            0,
            &status_body(level, code, description, details),
        );
    }

    fn control(&mut self, type_id: u8, payload: &[u8]) {
        self.link.send(msg::CSID_CONTROL, type_id, 0, 0, payload);
    }

    fn command(&mut self, csid: u32, stream_id: u32, name: &str, txn: f64, values: &[Amf0Value]) {
        let body = msg::command_body(name, txn, values);
        self.link.send(csid, msg::COMMAND_AMF0, stream_id, 0, &body);
    }

    fn media_event(&mut self, ev: Event) -> Result<(), SessionError> {
        if !self.connected {
            return Err(SessionError::Violation("media before connect"));
        }
        self.events.push_back(ev);
        Ok(())
    }

    /// An aggregate message (FMS, Wowza and some encoders) carries FLV tags back to back;
    /// each becomes its own message, re-timed relative to the aggregate's timestamp.
    fn on_aggregate(&mut self, m: RawMessage) -> Result<(), SessionError> {
        let p = &m.payload;
        let mut at = 0usize;
        let mut base: Option<u32> = None;
        while at + 11 <= p.len() {
            let h = &p[at..at + 11];
            let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
            let start = at + 11;
            let end = start.checked_add(size).filter(|&e| e <= p.len()).ok_or(
                SessionError::Violation("aggregate sub-message overruns its body"),
            )?;
            let first = *base.get_or_insert(ts);
            let sub = RawMessage {
                csid: m.csid,
                timestamp: m.timestamp.wrapping_add(ts.wrapping_sub(first)),
                type_id: h[0] & 0x1F,
                stream_id: m.stream_id,
                payload: p.slice(start..end),
            };
            // Only media and data may be aggregated; anything else would let one message
            // smuggle commands or more aggregates.
            match sub.type_id {
                msg::AUDIO | msg::VIDEO | msg::DATA_AMF0 => self.on_message(sub)?,
                _ => {
                    return Err(SessionError::Violation(
                        "aggregate with a non-media message",
                    ))
                }
            }
            at = end + 4; // skip the back pointer
        }
        Ok(())
    }

    fn on_data(&mut self, m: RawMessage) -> Result<(), SessionError> {
        let mut payload = m.payload;
        if m.type_id == msg::DATA_AMF3 && payload.first() == Some(&0) {
            payload = payload.slice(1..);
        }
        let payload = msg::strip_set_data_frame(&payload).unwrap_or(payload);
        let is_meta = payload.starts_with(b"\x02\x00\x0aonMetaData");
        self.media_event(if is_meta {
            Event::Metadata {
                timestamp: m.timestamp,
                payload,
            }
        } else {
            Event::Data {
                timestamp: m.timestamp,
                payload,
            }
        })
    }

    fn on_command(&mut self, cmd: Command, msg_stream: u32) -> Result<(), SessionError> {
        let txn = cmd.transaction_id;
        if cmd.name == "connect" {
            return self.on_connect(&cmd);
        }
        if !self.connected {
            return Err(SessionError::Violation("command before connect"));
        }
        // Stream names are the first argument after the command object (args[0] is null).
        let name_arg = || cmd.arg(1).and_then(Amf0Value::as_str).unwrap_or("");
        match cmd.name.as_str() {
            "releaseStream" => {
                self.command(
                    msg::CSID_COMMAND,
                    0,
                    "_result",
                    txn,
                    &[Amf0Value::Null, Amf0Value::Undefined],
                );
            }
            "FCPublish" => {
                let name = name_arg().to_string();
                let info = Amf0Value::Object(vec![
                    ("code".into(), "NetStream.Publish.Start".into()),
                    ("description".into(), name.into()),
                ]);
                self.command(
                    msg::CSID_COMMAND,
                    0,
                    "onFCPublish",
                    0.0,
                    &[Amf0Value::Null, info],
                );
            }
            "createStream" => {
                let id = self.next_stream_id;
                // Ids are never reused (vMix and Wirecast restart a broadcast with a new
                // stream and no deleteStream), and each costs nothing here: the cap only
                // stops a createStream loop.
                if id > 4096 {
                    return Err(SessionError::Violation("too many createStream"));
                }
                self.next_stream_id += 1;
                self.command(
                    msg::CSID_COMMAND,
                    0,
                    "_result",
                    txn,
                    &[Amf0Value::Null, Amf0Value::Number(id as f64)],
                );
            }
            "publish" => {
                let (name, query) = split_query(name_arg());
                self.events.push_back(Event::Publish {
                    stream_id: msg_stream,
                    name,
                    query,
                });
            }
            "play" => {
                let (mut name, query) = split_query(name_arg());
                // ffmpeg strips .flv from the URL; other clients may not.
                if let Some(stripped) = name.strip_suffix(".flv") {
                    name = stripped.to_string();
                }
                let start = cmd.arg(2).and_then(Amf0Value::as_number).unwrap_or(-2.0);
                let reset = match cmd.arg(4) {
                    Some(Amf0Value::Boolean(b)) => *b,
                    Some(Amf0Value::Number(n)) => *n != 0.0,
                    _ => true,
                };
                self.events.push_back(Event::Play {
                    stream_id: msg_stream,
                    name,
                    query,
                    start,
                    reset,
                });
            }
            "getStreamLength" | "getMovLen" => {
                self.command(
                    msg::CSID_COMMAND,
                    0,
                    "_result",
                    txn,
                    &[Amf0Value::Null, Amf0Value::Number(0.0)],
                );
            }
            "FCUnpublish" => {
                self.events.push_back(Event::FcUnpublish {
                    name: split_query(name_arg()).0,
                });
                let info = Amf0Value::Object(vec![
                    ("code".into(), "NetStream.Unpublish.Success".into()),
                    ("description".into(), name_arg().into()),
                ]);
                self.command(
                    msg::CSID_COMMAND,
                    0,
                    "onFCUnpublish",
                    0.0,
                    &[Amf0Value::Null, info],
                );
            }
            "deleteStream" => {
                let id = cmd.arg(1).and_then(Amf0Value::as_number).unwrap_or(0.0);
                self.events.push_back(Event::CloseStream {
                    stream_id: id as u32,
                });
            }
            "closeStream" => self.events.push_back(Event::CloseStream {
                stream_id: msg_stream,
            }),
            "receiveAudio" | "receiveVideo" => {
                let on = cmd.arg(1).and_then(Amf0Value::as_bool).unwrap_or(true);
                self.events.push_back(if cmd.name == "receiveAudio" {
                    Event::ReceiveAudio(on)
                } else {
                    Event::ReceiveVideo(on)
                });
            }
            _ => {} // unknown calls (e.g. _checkbw) get no answer, as with nginx
        }
        Ok(())
    }

    fn on_connect(&mut self, cmd: &Command) -> Result<(), SessionError> {
        if self.connected {
            return Err(SessionError::Violation("second connect"));
        }
        let obj = cmd.arg(0);
        let field = |k: &str| obj.and_then(|o| o.get(k)).and_then(Amf0Value::as_str);
        let (app, query) = split_query(field("app").unwrap_or(""));
        let tc_url = field("tcUrl").map(str::to_string);
        let flash_ver = field("flashVer").map(str::to_string);
        self.object_encoding = obj
            .and_then(|o| o.get("objectEncoding"))
            .and_then(Amf0Value::as_number)
            .unwrap_or(0.0);
        self.app = app.trim_end_matches('/').to_string();

        self.control(msg::WINDOW_ACK_SIZE, &OUR_WINDOW_ACK.to_be_bytes());
        let mut bw = OUR_WINDOW_ACK.to_be_bytes().to_vec();
        bw.push(2); // dynamic
        self.control(msg::SET_PEER_BANDWIDTH, &bw);
        self.link.set_send_chunk_size(self.cfg.out_chunk_size);
        let props = Amf0Value::Object(vec![
            ("fmsVer".into(), "FMS/3,0,1,123".into()),
            ("capabilities".into(), 31.0.into()),
        ]);
        let info = Amf0Value::Object(vec![
            ("level".into(), "status".into()),
            ("code".into(), "NetConnection.Connect.Success".into()),
            ("description".into(), "Connection succeeded.".into()),
            ("objectEncoding".into(), self.object_encoding.into()),
        ]);
        self.command(
            msg::CSID_COMMAND,
            0,
            "_result",
            cmd.transaction_id,
            &[props, info],
        );
        self.connected = true;
        self.events.push_back(Event::Connected {
            app: self.app.clone(),
            tc_url,
            flash_ver,
            query,
        });
        Ok(())
    }
}

impl Endpoint for ServerSession {
    fn transport(&mut self) -> &mut Transport {
        &mut self.link
    }

    fn on_message(&mut self, m: RawMessage) -> Result<(), SessionError> {
        match m.type_id {
            msg::USER_CONTROL => {
                if let UserControl::PingRequest(t) = UserControl::parse(&m.payload)? {
                    self.link.user_control(UserControl::PingResponse(t));
                }
            }
            msg::AUDIO => self.media_event(Event::Audio {
                timestamp: m.timestamp,
                payload: m.payload,
            })?,
            msg::VIDEO => self.media_event(Event::Video {
                timestamp: m.timestamp,
                payload: m.payload,
            })?,
            msg::DATA_AMF0 | msg::DATA_AMF3 => self.on_data(m)?,
            msg::COMMAND_AMF0 | msg::COMMAND_AMF3 => {
                let cmd = Command::parse(m.type_id, &m.payload)?;
                self.on_command(cmd, m.stream_id)?;
            }
            msg::AGGREGATE => self.on_aggregate(m)?,
            _ => {} // shared objects are not supported; ignoring them is what nginx does
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
