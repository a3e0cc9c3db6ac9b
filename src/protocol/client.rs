//! The client side of an RTMP connection as a sans-IO state machine, the mirror of
//! `session`: handshake, connect, createStream, then play or publish. Used by the load
//! generator's viewers and publishers and, later, by push destinations and origin pulls.

use std::collections::VecDeque;

use bytes::Bytes;

use super::amf::Amf0Value;
use super::chunk::RawMessage;
use super::handshake::ClientHandshake;
use super::message::{self as msg, Command, UserControl};
use super::session::SessionError;
use super::transport::{self, Endpoint, Transport};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub app: String,
    pub tc_url: String,
    pub flash_ver: String,
    /// Chunk size we announce and send with (0 keeps the default 128).
    pub chunk_size: u32,
    /// Send a digest (complex) C1 like ffmpeg.
    pub complex_handshake: bool,
    pub max_message_size: u32,
    pub seed: u64,
}

impl ClientConfig {
    pub fn new(app: &str, tc_url: &str) -> Self {
        Self {
            app: app.to_string(),
            tc_url: tc_url.to_string(),
            flash_ver: "LNX 9,0,124,2".to_string(),
            chunk_size: 4096,
            complex_handshake: true,
            max_message_size: 16 << 20,
            seed: 1,
        }
    }
}

/// What the caller asked the connection to do once connected.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Intent {
    None,
    Play(String),
    Publish(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    Connected,
    /// play: Play.Start arrived; publish: Publish.Start arrived.
    Started {
        stream_id: u32,
    },
    /// Any onStatus (including the one behind `Started`).
    Status {
        level: String,
        code: String,
    },
    /// `_error` for one of our calls, or an error-level onStatus.
    Failed {
        code: String,
    },
    Audio {
        timestamp: u32,
        payload: Bytes,
    },
    Video {
        timestamp: u32,
        payload: Bytes,
    },
    Data {
        timestamp: u32,
        payload: Bytes,
    },
    StreamBegin,
    StreamEof,
}

pub struct ClientSession {
    cfg: ClientConfig,
    link: Transport,
    connected: bool,
    events: VecDeque<ClientEvent>,
    intent: Intent,
    stream_id: Option<u32>,
    next_txn: f64,
    create_txn: f64,
}

impl ClientSession {
    /// Starts the handshake: C0+C1 are ready in `take_output` at once.
    pub fn new(cfg: ClientConfig) -> Self {
        let hs = ClientHandshake::new(0, cfg.seed, cfg.complex_handshake);
        Self {
            link: Transport::client(hs, cfg.max_message_size, 2_500_000),
            connected: false,
            events: VecDeque::new(),
            intent: Intent::None,
            stream_id: None,
            next_txn: 2.0,
            create_txn: 0.0,
            cfg,
        }
    }

    /// Plays `name` once connected.
    pub fn play(&mut self, name: &str) {
        self.intent = Intent::Play(name.to_string());
        self.maybe_create_stream();
    }

    /// Publishes `name` once connected.
    pub fn publish(&mut self, name: &str) {
        self.intent = Intent::Publish(name.to_string());
        self.maybe_create_stream();
    }

    /// Keep only the first `limit` bytes of each received audio/video payload (load viewers
    /// look at media headers and count bytes, and skip the copy of the rest).
    pub fn set_media_payload_limit(&mut self, limit: usize) {
        self.link.set_payload_limit(limit);
    }

    /// Ends a publish the way encoders do: FCUnpublish, then deleteStream.
    pub fn unpublish(&mut self, stream_id: u32) {
        if let Intent::Publish(name) = self.intent.clone() {
            self.call("FCUnpublish", 0, &[Amf0Value::Null, name.as_str().into()]);
        }
        self.call(
            "deleteStream",
            0,
            &[Amf0Value::Null, (stream_id as f64).into()],
        );
        self.intent = Intent::None;
    }

    pub fn stream_id(&self) -> Option<u32> {
        self.stream_id
    }

    pub fn bytes_received(&self) -> u64 {
        self.link.bytes_received()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    pub fn take_output(&mut self) -> Option<Bytes> {
        self.link.take_output()
    }

    /// Sends one audio (8), video (9) or data (18) message on the published stream.
    pub fn send_media(&mut self, type_id: u8, timestamp: u32, payload: Bytes) {
        let csid = match type_id {
            msg::AUDIO => msg::CSID_AUDIO,
            msg::VIDEO => msg::CSID_VIDEO,
            _ => msg::CSID_STATUS,
        };
        let stream_id = self.stream_id.unwrap_or(1);
        self.link
            .send(csid, type_id, stream_id, timestamp, &payload);
    }

    /// Sends `@setDataFrame(onMetaData, ...)` given an `onMetaData` body from a publisher.
    pub fn send_metadata(&mut self, timestamp: u32, on_metadata_body: &[u8]) {
        let mut body = Vec::with_capacity(on_metadata_body.len() + 16);
        Amf0Value::from("@setDataFrame").encode(&mut body);
        body.extend_from_slice(on_metadata_body);
        self.send_media(msg::DATA_AMF0, timestamp, Bytes::from(body));
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<(), SessionError> {
        transport::feed(self, data)
    }

    fn call(&mut self, name: &str, stream_id: u32, args: &[Amf0Value]) -> f64 {
        let txn = self.next_txn;
        self.next_txn += 1.0;
        let body = msg::command_body(name, txn, args);
        let csid = if stream_id == 0 { msg::CSID_COMMAND } else { 8 };
        self.link.send(csid, msg::COMMAND_AMF0, stream_id, 0, &body);
        txn
    }

    fn send_connect(&mut self) {
        if self.cfg.chunk_size > 128 {
            self.link.set_send_chunk_size(self.cfg.chunk_size);
        }
        let obj = Amf0Value::Object(vec![
            ("app".into(), self.cfg.app.as_str().into()),
            ("type".into(), "nonprivate".into()),
            ("flashVer".into(), self.cfg.flash_ver.as_str().into()),
            ("tcUrl".into(), self.cfg.tc_url.as_str().into()),
        ]);
        let body = msg::command_body("connect", 1.0, &[obj]);
        self.link
            .send(msg::CSID_COMMAND, msg::COMMAND_AMF0, 0, 0, &body);
    }

    fn maybe_create_stream(&mut self) {
        if !self.connected || self.intent == Intent::None {
            return;
        }
        if let Intent::Publish(name) = self.intent.clone() {
            self.call("releaseStream", 0, &[Amf0Value::Null, name.as_str().into()]);
            self.call("FCPublish", 0, &[Amf0Value::Null, name.as_str().into()]);
        }
        self.create_txn = self.call("createStream", 0, &[Amf0Value::Null]);
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd.name.as_str() {
            "_result" if cmd.transaction_id == 1.0 => {
                self.connected = true;
                self.events.push_back(ClientEvent::Connected);
                self.maybe_create_stream();
            }
            "_result" if cmd.transaction_id == self.create_txn => {
                let id = cmd.arg(1).and_then(Amf0Value::as_number).unwrap_or(1.0) as u32;
                self.stream_id = Some(id);
                match self.intent.clone() {
                    Intent::Play(name) => {
                        self.call(
                            "play",
                            id,
                            &[Amf0Value::Null, name.as_str().into(), (-2000.0).into()],
                        );
                        self.link.user_control(UserControl::SetBufferLength {
                            stream_id: id,
                            millis: 3000,
                        });
                    }
                    Intent::Publish(name) => {
                        self.call(
                            "publish",
                            id,
                            &[Amf0Value::Null, name.as_str().into(), "live".into()],
                        );
                    }
                    Intent::None => {}
                }
            }
            "_error" => {
                let code = cmd
                    .arg(1)
                    .and_then(|o| o.get("code"))
                    .and_then(Amf0Value::as_str)
                    .unwrap_or("_error")
                    .to_string();
                // Errors for releaseStream/FCPublish are harmless (ffmpeg downgrades them too).
                if cmd.transaction_id == 1.0 || cmd.transaction_id == self.create_txn {
                    self.events.push_back(ClientEvent::Failed { code });
                }
            }
            "onStatus" => {
                let info = cmd.arg(1);
                let field = |k: &str| {
                    info.and_then(|o| o.get(k))
                        .and_then(Amf0Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let (level, code) = (field("level"), field("code"));
                let started = matches!(
                    code.as_str(),
                    "NetStream.Play.Start" | "NetStream.Publish.Start"
                );
                self.events.push_back(ClientEvent::Status {
                    level: level.clone(),
                    code: code.clone(),
                });
                if level == "error" {
                    self.events.push_back(ClientEvent::Failed { code });
                } else if started {
                    self.events.push_back(ClientEvent::Started {
                        stream_id: self.stream_id.unwrap_or(0),
                    });
                }
            }
            _ => {}
        }
    }
}

impl Endpoint for ClientSession {
    fn transport(&mut self) -> &mut Transport {
        &mut self.link
    }

    fn on_handshake_done(&mut self) {
        self.send_connect();
    }

    fn on_message(&mut self, m: RawMessage) -> Result<(), SessionError> {
        match m.type_id {
            msg::USER_CONTROL => match UserControl::parse(&m.payload)? {
                UserControl::PingRequest(t) => self.link.user_control(UserControl::PingResponse(t)),
                UserControl::StreamBegin(_) => self.events.push_back(ClientEvent::StreamBegin),
                UserControl::StreamEof(_) => self.events.push_back(ClientEvent::StreamEof),
                _ => {}
            },
            msg::AUDIO => self.events.push_back(ClientEvent::Audio {
                timestamp: m.timestamp,
                payload: m.payload,
            }),
            msg::VIDEO => self.events.push_back(ClientEvent::Video {
                timestamp: m.timestamp,
                payload: m.payload,
            }),
            msg::DATA_AMF0 => self.events.push_back(ClientEvent::Data {
                timestamp: m.timestamp,
                payload: m.payload,
            }),
            msg::COMMAND_AMF0 | msg::COMMAND_AMF3 => {
                let cmd = Command::parse(m.type_id, &m.payload)?;
                self.on_command(cmd);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::session::{Event, ServerSession, SessionConfig};

    /// Moves bytes both ways until neither side has anything to say.
    fn pump(c: &mut ClientSession, s: &mut ServerSession) {
        for _ in 0..20 {
            let mut moved = false;
            if let Some(b) = c.take_output() {
                s.feed(&b).unwrap();
                moved = true;
            }
            if let Some(b) = s.take_output() {
                c.feed(&b).unwrap();
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn server_events(s: &mut ServerSession) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn client_events(c: &mut ClientSession) -> Vec<ClientEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    #[test]
    fn publishes_to_our_server() {
        let mut s = ServerSession::new(SessionConfig::default());
        let mut c = ClientSession::new(ClientConfig::new("live", "rtmp://127.0.0.1/live"));
        c.publish("cam");
        pump(&mut c, &mut s);
        let ev = server_events(&mut s);
        assert!(matches!(ev[0], Event::Connected { .. }));
        let Event::Publish {
            stream_id,
            ref name,
            ..
        } = ev[1]
        else {
            panic!("expected publish, got {ev:?}");
        };
        assert_eq!((stream_id, name.as_str()), (1, "cam"));
        s.accept_publish(stream_id, name);
        pump(&mut c, &mut s);
        let cev = client_events(&mut c);
        assert!(cev.contains(&ClientEvent::Started { stream_id: 1 }));
        c.send_media(msg::VIDEO, 40, Bytes::from(vec![0x17u8; 10_000]));
        c.send_metadata(
            0,
            &msg::data_body("onMetaData", &[Amf0Value::EcmaArray(vec![])]),
        );
        pump(&mut c, &mut s);
        let ev = server_events(&mut s);
        assert!(
            matches!(&ev[0], Event::Video { timestamp: 40, payload } if payload.len() == 10_000)
        );
        assert!(matches!(&ev[1], Event::Metadata { .. }));
    }

    #[test]
    fn plays_and_sees_rejections() {
        let mut s = ServerSession::new(SessionConfig::default());
        let mut c = ClientSession::new(ClientConfig::new("live", "rtmp://127.0.0.1/live"));
        c.play("cam");
        pump(&mut c, &mut s);
        let ev = server_events(&mut s);
        assert!(matches!(&ev[1], Event::Play { name, .. } if name == "cam"));
        s.reject_play(1, "NetStream.Play.StreamNotFound", "no");
        pump(&mut c, &mut s);
        let cev = client_events(&mut c);
        assert!(cev.contains(&ClientEvent::Failed {
            code: "NetStream.Play.StreamNotFound".into()
        }));
        s.accept_play(1, "cam", true);
        pump(&mut c, &mut s);
        let cev = client_events(&mut c);
        assert!(cev.contains(&ClientEvent::StreamBegin));
        assert!(cev.contains(&ClientEvent::Started { stream_id: 1 }));
    }
}
