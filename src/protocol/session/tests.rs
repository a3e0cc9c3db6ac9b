//! Drives `ServerSession` with a scripted client built from our own client handshake and
//! chunk codec, checking the replies real clients depend on.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::protocol::chunk::{ChunkDecoder, ChunkEncoder, RawMessage};
use crate::protocol::handshake::ClientHandshake;

struct Client {
    enc: ChunkEncoder,
    dec: ChunkDecoder,
    inbuf: BytesMut,
    server: ServerSession,
}

impl Client {
    fn new() -> Self {
        Self {
            enc: ChunkEncoder::new(),
            dec: ChunkDecoder::new(16 << 20),
            inbuf: BytesMut::new(),
            server: ServerSession::new(SessionConfig::default()),
        }
    }

    fn handshake(&mut self) {
        let mut hs = ClientHandshake::new(0, 7, true);
        let mut c0c1 = Vec::new();
        hs.start(&mut c0c1);
        self.server.feed(&c0c1).unwrap();
        let s = self.server.take_output().unwrap();
        assert_eq!(s.len(), 3073);
        let mut c2 = Vec::new();
        assert_eq!(hs.feed(&s, &mut c2).unwrap(), 3073);
        assert!(hs.is_done() && hs.server_verified());
        self.server.feed(&c2).unwrap();
        assert!(self.server.is_handshake_done());
    }

    fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: Bytes) {
        self.send_ts(csid, type_id, stream_id, 0, payload);
    }

    fn send_ts(&mut self, csid: u32, type_id: u8, stream_id: u32, timestamp: u32, payload: Bytes) {
        let mut out = BytesMut::new();
        self.enc
            .encode_parts(csid, timestamp, type_id, stream_id, &payload, &mut out);
        self.server.feed(&out).unwrap();
    }

    fn command(&mut self, stream_id: u32, name: &str, txn: f64, args: &[Amf0Value]) {
        self.send(
            3,
            msg::COMMAND_AMF0,
            stream_id,
            msg::command_body(name, txn, args),
        );
    }

    /// Everything the server sent since the last call, decoded.
    fn recv(&mut self) -> Vec<RawMessage> {
        if let Some(b) = self.server.take_output() {
            self.inbuf.extend_from_slice(&b);
        }
        let mut out = Vec::new();
        while let Some(m) = self.dec.decode(&mut self.inbuf).unwrap() {
            if m.type_id == msg::SET_CHUNK_SIZE {
                self.dec
                    .set_chunk_size(msg::parse_u32(1, &m.payload).unwrap())
                    .unwrap();
            }
            out.push(m);
        }
        assert!(self.inbuf.is_empty(), "partial message left over");
        out
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    fn connect(&mut self) {
        self.handshake();
        let obj = Amf0Value::Object(vec![
            ("app".into(), "live".into()),
            ("type".into(), "nonprivate".into()),
            ("flashVer".into(), "FMLE/3.0 (compatible; FMSc/1.0)".into()),
            ("tcUrl".into(), "rtmp://127.0.0.1:1935/live".into()),
        ]);
        self.command(0, "connect", 1.0, &[obj]);
        self.recv();
        self.events();
    }
}

fn amf(m: &RawMessage) -> Vec<Amf0Value> {
    crate::protocol::amf::decode_all(&m.payload).unwrap()
}

fn status_code(m: &RawMessage) -> String {
    let v = amf(m);
    assert_eq!(v[0], Amf0Value::from("onStatus"));
    v[3].get("code")
        .and_then(Amf0Value::as_str)
        .unwrap()
        .to_string()
}

#[test]
fn connect_reply_is_exact() {
    let mut c = Client::new();
    c.handshake();
    let obj = Amf0Value::Object(vec![
        ("app".into(), "live?token=abc".into()),
        ("tcUrl".into(), "rtmp://h/live".into()),
        ("objectEncoding".into(), 0.0.into()),
    ]);
    c.command(0, "connect", 1.0, &[obj]);
    let out = c.server.take_output().unwrap();
    // Window Ack Size 2500000 on csid 2, fmt0, stream 0: byte-exact.
    assert_eq!(
        &out[..16],
        &[0x02, 0, 0, 0, 0, 0, 4, 5, 0, 0, 0, 0, 0x00, 0x26, 0x25, 0xA0]
    );
    // Set Peer Bandwidth 2500000 dynamic.
    assert_eq!(
        &out[16..33],
        &[0x02, 0, 0, 0, 0, 0, 5, 6, 0, 0, 0, 0, 0x00, 0x26, 0x25, 0xA0, 2]
    );
    // Set Chunk Size 4096.
    assert_eq!(
        &out[33..49],
        &[0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0x10, 0]
    );
    c.inbuf.extend_from_slice(&out);
    let msgs = c.recv();
    assert_eq!(msgs.len(), 4);
    let result = &msgs[3];
    assert_eq!((result.csid, result.type_id, result.stream_id), (3, 20, 0));
    let expected = msg::command_body(
        "_result",
        1.0,
        &[
            Amf0Value::Object(vec![
                ("fmsVer".into(), "FMS/3,0,1,123".into()),
                ("capabilities".into(), 31.0.into()),
            ]),
            Amf0Value::Object(vec![
                ("level".into(), "status".into()),
                ("code".into(), "NetConnection.Connect.Success".into()),
                ("description".into(), "Connection succeeded.".into()),
                ("objectEncoding".into(), 0.0.into()),
            ]),
        ],
    );
    assert_eq!(result.payload, expected);
    assert_eq!(
        c.events(),
        vec![Event::Connected {
            app: "live".into(),
            tc_url: Some("rtmp://h/live".into()),
            flash_ver: None,
            query: Some("token=abc".into()),
        }]
    );
    assert_eq!(c.server.out_chunk_size(), 4096);
}

#[test]
fn publish_flow_like_ffmpeg() {
    let mut c = Client::new();
    c.connect();
    c.command(0, "releaseStream", 2.0, &[Amf0Value::Null, "test".into()]);
    c.command(0, "FCPublish", 3.0, &[Amf0Value::Null, "test".into()]);
    c.command(0, "createStream", 4.0, &[Amf0Value::Null]);
    let msgs = c.recv();
    let names: Vec<_> = msgs.iter().map(|m| amf(m)[0].clone()).collect();
    assert_eq!(
        names,
        vec!["_result".into(), "onFCPublish".into(), "_result".into()]
    );
    // createStream reply must be exactly [_result, txn, null, number].
    assert_eq!(
        amf(&msgs[2]),
        vec!["_result".into(), 4.0.into(), Amf0Value::Null, 1.0.into()]
    );
    c.command(
        1,
        "publish",
        5.0,
        &[Amf0Value::Null, "test?k=v".into(), "live".into()],
    );
    assert_eq!(
        c.events(),
        vec![Event::Publish {
            stream_id: 1,
            name: "test".into(),
            query: Some("k=v".into()),
        }]
    );
    c.server.accept_publish(1, "test");
    let msgs = c.recv();
    assert_eq!(msgs[0].type_id, msg::USER_CONTROL);
    assert_eq!(
        UserControl::parse(&msgs[0].payload).unwrap(),
        UserControl::StreamBegin(1)
    );
    assert_eq!((msgs[1].stream_id, msgs[1].type_id), (1, msg::COMMAND_AMF0));
    assert_eq!(status_code(&msgs[1]), "NetStream.Publish.Start");

    let meta = msg::data_body(
        "@setDataFrame",
        &[
            "onMetaData".into(),
            Amf0Value::EcmaArray(vec![("width".into(), 640.0.into())]),
        ],
    );
    c.send(4, msg::DATA_AMF0, 1, meta);
    c.send_ts(
        6,
        msg::VIDEO,
        1,
        0,
        Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]),
    );
    c.send_ts(4, msg::AUDIO, 1, 23, Bytes::from_static(&[0xAF, 1, 0x21]));
    let ev = c.events();
    match &ev[0] {
        Event::Metadata { payload, .. } => {
            assert_eq!(
                crate::protocol::amf::decode_all(payload).unwrap()[0],
                Amf0Value::from("onMetaData")
            )
        }
        other => panic!("expected metadata, got {other:?}"),
    }
    assert_eq!(
        ev[1],
        Event::Video {
            timestamp: 0,
            payload: Bytes::from_static(&[0x17, 0, 0, 0, 0, 1])
        }
    );
    assert_eq!(
        ev[2],
        Event::Audio {
            timestamp: 23,
            payload: Bytes::from_static(&[0xAF, 1, 0x21])
        }
    );
    c.command(0, "FCUnpublish", 6.0, &[Amf0Value::Null, "test".into()]);
    c.command(0, "deleteStream", 7.0, &[Amf0Value::Null, 1.0.into()]);
    assert_eq!(
        c.events(),
        vec![
            Event::FcUnpublish {
                name: "test".into()
            },
            Event::CloseStream { stream_id: 1 }
        ]
    );
}

#[test]
fn play_flow_and_rejections() {
    let mut c = Client::new();
    c.connect();
    c.command(0, "createStream", 2.0, &[Amf0Value::Null]);
    c.command(0, "getStreamLength", 3.0, &[Amf0Value::Null, "cam".into()]);
    c.command(
        1,
        "play",
        4.0,
        &[Amf0Value::Null, "cam.flv?token=x".into(), (-2000.0).into()],
    );
    let msgs = c.recv();
    assert_eq!(
        amf(&msgs[1]),
        vec!["_result".into(), 3.0.into(), Amf0Value::Null, 0.0.into()]
    );
    assert_eq!(
        c.events(),
        vec![Event::Play {
            stream_id: 1,
            name: "cam".into(),
            query: Some("token=x".into()),
            start: -2000.0,
            reset: true,
        }]
    );
    c.server.accept_play(1, "cam", true);
    let msgs = c.recv();
    assert_eq!(
        UserControl::parse(&msgs[0].payload).unwrap(),
        UserControl::StreamBegin(1)
    );
    assert_eq!(status_code(&msgs[1]), "NetStream.Play.Reset");
    assert_eq!(status_code(&msgs[2]), "NetStream.Play.Start");
    assert_eq!(msgs[3].type_id, msg::DATA_AMF0);
    assert_eq!(amf(&msgs[3])[0], Amf0Value::from("|RtmpSampleAccess"));
    assert!(msgs.iter().all(|m| m.stream_id == 1 || m.csid == 2));

    c.server
        .reject_play(1, "NetStream.Play.StreamNotFound", "nope");
    let m = c.recv();
    assert_eq!(status_code(&m[0]), "NetStream.Play.StreamNotFound");
    assert_eq!(
        amf(&m[0])[3].get("level").and_then(Amf0Value::as_str),
        Some("error")
    );

    c.command(1, "receiveVideo", 0.0, &[Amf0Value::Null, false.into()]);
    c.command(1, "closeStream", 0.0, &[Amf0Value::Null]);
    assert_eq!(
        c.events(),
        vec![
            Event::ReceiveVideo(false),
            Event::CloseStream { stream_id: 1 }
        ]
    );
}

#[test]
fn notices_for_waiting_players() {
    let mut c = Client::new();
    c.inbuf.extend_from_slice(&unpublish_notice(128, 1, "cam"));
    c.inbuf.extend_from_slice(&publish_notice(128, 1, "cam"));
    let m = c.recv();
    assert_eq!(
        UserControl::parse(&m[0].payload).unwrap(),
        UserControl::StreamEof(1)
    );
    assert_eq!(status_code(&m[1]), "NetStream.Play.UnpublishNotify");
    assert_eq!(
        UserControl::parse(&m[2].payload).unwrap(),
        UserControl::StreamBegin(1)
    );
    assert_eq!(status_code(&m[3]), "NetStream.Play.PublishNotify");
}

#[test]
fn ping_and_acknowledgements() {
    let mut c = Client::new();
    c.connect();
    c.send(
        2,
        msg::USER_CONTROL,
        0,
        UserControl::PingRequest(77).encode(),
    );
    let m = c.recv();
    assert_eq!(
        UserControl::parse(&m[0].payload).unwrap(),
        UserControl::PingResponse(77)
    );

    // Announce a small window, then push enough bytes to need acks.
    c.send(
        2,
        msg::WINDOW_ACK_SIZE,
        0,
        Bytes::copy_from_slice(&5000u32.to_be_bytes()),
    );
    c.send(
        2,
        msg::SET_CHUNK_SIZE,
        0,
        Bytes::copy_from_slice(&4096u32.to_be_bytes()),
    );
    c.enc.set_chunk_size(4096);
    c.command(0, "createStream", 2.0, &[Amf0Value::Null]);
    c.command(1, "publish", 3.0, &[Amf0Value::Null, "x".into()]);
    c.server.accept_publish(1, "x");
    c.recv();
    for i in 0..10 {
        c.send_ts(6, msg::VIDEO, 1, i * 33, Bytes::from(vec![0x27u8; 1000]));
    }
    let acks: Vec<u32> = c
        .recv()
        .iter()
        .filter(|m| m.type_id == msg::ACK)
        .map(|m| msg::parse_u32(3, &m.payload).unwrap())
        .collect();
    assert!(!acks.is_empty());
    assert!(acks.windows(2).all(|w| w[1] > w[0]));
    assert!(u64::from(*acks.last().unwrap()) <= c.server.bytes_received());
    // The peer's chunk size now applies: a 1000-byte message arrived in one chunk.
    assert_eq!(c.events().len(), 11);
}

#[test]
fn amf3_connect_is_understood() {
    let mut c = Client::new();
    c.handshake();
    let obj = Amf0Value::Object(vec![("app".into(), "live".into())]);
    let mut body = vec![0u8];
    body.extend_from_slice(&msg::command_body("connect", 1.0, &[obj]));
    c.send(3, msg::COMMAND_AMF3, 0, Bytes::from(body));
    let msgs = c.recv();
    assert_eq!(amf(msgs.last().unwrap())[0], Amf0Value::from("_result"));
}

#[test]
fn violations_are_errors() {
    let mut s = ServerSession::new(SessionConfig::default());
    assert!(matches!(s.feed(&[0x06]), Err(SessionError::Handshake(_))));

    let mut c = Client::new();
    c.handshake();
    let mut out = BytesMut::new();
    c.enc.encode(
        &RawMessage {
            csid: 3,
            timestamp: 0,
            type_id: msg::COMMAND_AMF0,
            stream_id: 0,
            payload: msg::command_body("play", 1.0, &[Amf0Value::Null, "x".into()]),
        },
        &mut out,
    );
    assert!(matches!(
        c.server.feed(&out),
        Err(SessionError::Violation(_))
    ));

    // A header announcing a message over the cap is refused from the header alone.
    let mut c = Client::new();
    c.server = ServerSession::new(SessionConfig {
        max_message_size: 1 << 20,
        ..SessionConfig::default()
    });
    c.handshake();
    let hdr = [0x03, 0, 0, 0, 0xFF, 0xFF, 0xFF, 20, 0, 0, 0, 0];
    let err = c.server.feed(&hdr).unwrap_err();
    assert_eq!(err.kind(), "message_too_large");

    let mut c = Client::new();
    c.connect();
    let mut out = BytesMut::new();
    c.enc.encode(
        &RawMessage {
            csid: 2,
            timestamp: 0,
            type_id: msg::SET_CHUNK_SIZE,
            stream_id: 0,
            payload: Bytes::from_static(&[0, 0, 0, 0]),
        },
        &mut out,
    );
    assert_eq!(
        c.server.feed(&out).unwrap_err().kind(),
        "invalid_chunk_size"
    );
}

/// Whole-stack fuzz: a valid handshake and connect, then mutated and random chunk streams.
/// The session must return errors, never panic, and never hold more than its caps.
#[test]
fn random_input_never_panics() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // A valid publish session to mutate.
    let mut enc = ChunkEncoder::new();
    let mut valid = BytesMut::new();
    for (i, (t, body)) in [
        (
            msg::COMMAND_AMF0,
            msg::command_body("createStream", 2.0, &[Amf0Value::Null]),
        ),
        (
            msg::COMMAND_AMF0,
            msg::command_body(
                "publish",
                3.0,
                &[Amf0Value::Null, "k".into(), "live".into()],
            ),
        ),
        (msg::SET_CHUNK_SIZE, Bytes::from_static(&[0, 0, 0x10, 0])),
        (msg::VIDEO, Bytes::from(vec![0x17u8; 700])),
        (msg::AUDIO, Bytes::from_static(&[0xAF, 1, 2, 3])),
        (msg::USER_CONTROL, UserControl::PingRequest(1).encode()),
        (msg::ABORT, Bytes::from_static(&[0, 0, 0, 6])),
        (
            msg::DATA_AMF0,
            msg::data_body("@setDataFrame", &["onMetaData".into()]),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        enc.encode(
            &RawMessage {
                csid: if t == msg::SET_CHUNK_SIZE {
                    2
                } else {
                    3 + i as u32 % 5
                },
                timestamp: i as u32 * 40,
                type_id: t,
                stream_id: 1,
                payload: body,
            },
            &mut valid,
        );
    }
    for round in 0..3000 {
        let mut c = Client::new();
        c.connect();
        let mut input = valid.to_vec();
        match round % 3 {
            0 => {
                for _ in 0..1 + rand() % 8 {
                    let at = (rand() as usize) % input.len();
                    input[at] = rand() as u8;
                }
            }
            1 => input.truncate((rand() as usize) % input.len()),
            _ => input = (0..(rand() % 2000)).map(|_| rand() as u8).collect(),
        }
        let mut at = 0;
        while at < input.len() {
            let n = 1 + (rand() as usize % 300).min(input.len() - at - 1);
            if c.server.feed(&input[at..at + n]).is_err() {
                break;
            }
            at += n;
            let _ = c.server.take_output();
            while c.server.poll_event().is_some() {}
        }
    }
}

#[test]
fn acks_without_announced_window() {
    let mut c = Client::new();
    c.connect();
    c.command(0, "createStream", 2.0, &[Amf0Value::Null]);
    c.command(1, "publish", 3.0, &[Amf0Value::Null, "x".into()]);
    c.server.accept_publish(1, "x");
    c.recv();
    for i in 0..30 {
        c.send_ts(6, msg::VIDEO, 1, i * 33, Bytes::from(vec![0x27u8; 100_000]));
    }
    let acks = c.recv().iter().filter(|m| m.type_id == msg::ACK).count();
    assert_eq!(acks, 1, "one ack per 2.5 MB received");
}

/// One sub-message of an Aggregate message, written from the RTMP spec (7.1.6): type,
/// 24-bit size, 24-bit timestamp + extension byte, 24-bit stream id, body, back pointer.
fn aggregate_part(out: &mut Vec<u8>, type_id: u8, timestamp: u32, body: &[u8]) {
    let size = body.len() as u32;
    out.push(type_id);
    out.extend_from_slice(&size.to_be_bytes()[1..]);
    out.extend_from_slice(&timestamp.to_be_bytes()[1..]);
    out.push((timestamp >> 24) as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(body);
    out.extend_from_slice(&(size + 11).to_be_bytes());
}

#[test]
fn aggregate_messages_are_split_and_retimed() {
    let mut c = Client::new();
    c.connect();
    c.command(0, "createStream", 2.0, &[Amf0Value::Null]);
    c.command(1, "publish", 3.0, &[Amf0Value::Null, "agg".into()]);
    c.server.accept_publish(1, "agg");
    c.recv();
    c.events();
    let mut body = Vec::new();
    aggregate_part(&mut body, 9, 5000, &[0x17, 1, 0, 0, 0]);
    aggregate_part(&mut body, 8, 5023, &[0xAF, 1, 7]);
    c.send_ts(4, msg::AGGREGATE, 1, 100, Bytes::from(body));
    assert_eq!(
        c.events(),
        vec![
            Event::Video {
                timestamp: 100,
                payload: Bytes::from_static(&[0x17, 1, 0, 0, 0])
            },
            Event::Audio {
                timestamp: 123,
                payload: Bytes::from_static(&[0xAF, 1, 7])
            },
        ]
    );
    // A sub-message claiming more bytes than the aggregate holds closes the session.
    let mut bad = Vec::new();
    aggregate_part(&mut bad, 9, 0, &[0x17, 1, 0, 0, 0]);
    bad[3] = 0xFF;
    let mut out = BytesMut::new();
    c.enc.encode(
        &RawMessage {
            csid: 4,
            timestamp: 0,
            type_id: msg::AGGREGATE,
            stream_id: 1,
            payload: Bytes::from(bad),
        },
        &mut out,
    );
    assert!(c.server.feed(&out).is_err());
}

#[test]
fn buffer_budget_follows_the_role() {
    let big = Bytes::from(vec![0x17u8; 2 << 20]);
    let partial = |c: &mut Client, len: usize| {
        let mut out = BytesMut::new();
        c.enc
            .encode_parts(4, 0, msg::VIDEO, 1, &big[..len], &mut out);
        out.truncate(out.len() - 10); // never completes
        c.server.feed(&out)
    };
    // Before a publish or play is accepted: 1 MiB (the default).
    let mut c = Client::new();
    c.connect();
    let err = partial(&mut c, 2 << 20).unwrap_err();
    assert_eq!(err.kind(), "buffer_budget", "{err}");

    // A publisher: a message of the maximum size (16 MiB by default) and then some.
    let mut c = Client::new();
    c.connect();
    c.command(0, "createStream", 2.0, &[Amf0Value::Null]);
    c.command(1, "publish", 3.0, &[Amf0Value::Null, "t".into()]);
    let _ = c.events();
    c.server.accept_publish(1, "t");
    partial(&mut c, 2 << 20).unwrap();
    assert!(c.server.buffered() >= 2 << 20);

    // A player: control messages only (64 KiB).
    let mut c = Client::new();
    c.connect();
    c.command(0, "createStream", 2.0, &[Amf0Value::Null]);
    c.command(1, "play", 3.0, &[Amf0Value::Null, "t".into()]);
    let _ = c.events();
    c.server.accept_play(1, "t", false);
    let err = partial(&mut c, 200_000).unwrap_err();
    assert_eq!(err.kind(), "buffer_budget", "{err}");
}
