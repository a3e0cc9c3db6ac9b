//! Chunk stream state model: `arbitrary` picks a sequence of operations (messages with
//! chunk headers of type 0-3 on several interleaved csids, some sent only in part and
//! continued later, extended timestamps, Set Chunk Size valid and invalid, Abort, messages
//! over the size limit). A reference encoder turns them into bytes and predicts every
//! message the decoder must return (csid, timestamp, type, stream id, payload) or that it
//! must fail. The bytes go to a ChunkDecoder in fuzzer-chosen slices, and, after a valid
//! handshake and a connect, to a ServerSession (which only must not panic).
#![no_main]
use std::collections::HashMap;

use arbitrary::Arbitrary;
use bytes::BytesMut;
use fuzz_common::{handshake_prefix, split};
use libfuzzer_sys::fuzz_target;
use rtmp_edge::protocol::amf::Amf0Value;
use rtmp_edge::protocol::chunk::{encode_message, ChunkDecoder, RawMessage};
use rtmp_edge::protocol::message::{command_body, parse_u32, ABORT, SET_CHUNK_SIZE};
use rtmp_edge::protocol::session::{Event, ServerSession, SessionConfig};

const CSIDS: [u32; 8] = [3, 4, 6, 63, 64, 319, 320, 65_599];
const TYPES: [u8; 8] = [8, 9, 18, 20, 15, 17, 22, 4];
const CONTROL_CSID: u32 = 2;
const MAX: u32 = 1 << 16;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Start a message on a csid (or continue the partial one there); send `chunks`
    /// chunks of it now (0: all).
    Msg {
        csid: u8,
        fmt: u8,
        ts: u32,
        big_ts: bool,
        type_sel: u8,
        stream_id: u32,
        len: u16,
        fill: u8,
        chunks: u8,
    },
    /// More chunks of the partial message on a csid.
    Continue {
        csid: u8,
        chunks: u8,
    },
    SetChunkSize {
        size: u32,
        short: bool,
    },
    Abort {
        csid: u8,
    },
    /// A message longer than the limit (the decoder must refuse it).
    TooLong {
        csid: u8,
        extra: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    split_seed: u16,
    session_split: u16,
    ops: Vec<Op>,
}

#[derive(Default, Clone)]
struct Stream {
    started: bool,
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    ext_value: u32,
    /// Payload of the partial message and how much of it was sent.
    partial: Option<(Vec<u8>, usize)>,
}

struct Writer {
    out: Vec<u8>,
    chunk_size: u32,
    streams: HashMap<u32, Stream>,
    expected: Vec<RawMessage>,
    fails: bool,
}

fn basic_header(out: &mut Vec<u8>, fmt: u8, csid: u32) {
    match csid {
        2..=63 => out.push(fmt << 6 | csid as u8),
        64..=319 => out.extend_from_slice(&[fmt << 6, (csid - 64) as u8]),
        _ => {
            let c = csid - 64;
            out.extend_from_slice(&[fmt << 6 | 1, c as u8, (c >> 8) as u8]);
        }
    }
}

fn be24(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes()[1..]);
}

impl Writer {
    /// Sends up to `chunks` chunks (0: all) of the partial message on `csid`; unless
    /// `header_written`, each starts with a fmt3 header.
    fn send_chunks(&mut self, csid: u32, chunks: u8, mut header_written: bool) {
        let cs = self.chunk_size as usize;
        let mut left = if chunks == 0 {
            usize::MAX
        } else {
            usize::from(chunks)
        };
        let st = self.streams.get_mut(&csid).unwrap();
        let Some((payload, sent)) = st.partial.as_mut() else {
            return;
        };
        loop {
            if !header_written {
                basic_header(&mut self.out, 3, csid);
                if st.extended {
                    self.out.extend_from_slice(&st.ext_value.to_be_bytes());
                }
            }
            header_written = false;
            let n = (payload.len() - *sent).min(cs);
            self.out.extend_from_slice(&payload[*sent..*sent + n]);
            *sent += n;
            if *sent == payload.len() {
                let p = std::mem::take(payload);
                self.expected.push(RawMessage {
                    csid,
                    timestamp: st.timestamp,
                    type_id: st.type_id,
                    stream_id: st.stream_id,
                    payload: p.into(),
                });
                st.partial = None;
                return;
            }
            left -= 1;
            if left == 0 {
                return;
            }
        }
    }

    /// Writes a new message's header (the decoder's rules: a fresh csid may start with
    /// fmt1, fmt2/3 need a previous header) and its first chunks.
    #[allow(clippy::too_many_arguments)]
    fn message(
        &mut self,
        csid: u32,
        fmt: u8,
        ts: u32,
        type_id: u8,
        stream_id: u32,
        payload: Vec<u8>,
        chunks: u8,
    ) {
        let st = self.streams.entry(csid).or_default().clone();
        if st.partial.is_some() {
            return self.send_chunks(csid, chunks, false);
        }
        if !st.started && fmt >= 2 {
            basic_header(&mut self.out, fmt, csid);
            self.fails = true; // NoPreviousHeader
            return;
        }
        let mut n = st.clone();
        n.started = true;
        let field = ts.min(0xFF_FFFF);
        basic_header(&mut self.out, fmt, csid);
        if fmt < 3 {
            be24(&mut self.out, field);
        }
        if fmt < 2 {
            be24(&mut self.out, payload.len() as u32);
            self.out.push(type_id);
            n.length = payload.len() as u32;
            n.type_id = type_id;
        }
        if fmt == 0 {
            self.out.extend_from_slice(&stream_id.to_le_bytes());
            n.stream_id = stream_id;
        } else if fmt == 1 && !st.started {
            n.stream_id = 0;
        }
        if fmt < 3 {
            n.extended = field == 0xFF_FFFF;
            n.ext_value = ts;
            if n.extended {
                self.out.extend_from_slice(&ts.to_be_bytes());
            }
        } else if n.extended {
            self.out.extend_from_slice(&n.ext_value.to_be_bytes());
        }
        match fmt {
            0 => {
                n.timestamp = ts;
                n.delta = ts;
            }
            1 | 2 => {
                n.delta = ts;
                n.timestamp = st.timestamp.wrapping_add(ts);
            }
            _ => n.timestamp = st.timestamp.wrapping_add(st.delta),
        }
        let len = n.length as usize;
        // fmt2/3 keep the previous length: the payload is resized to it.
        let mut payload = payload;
        payload.resize(len, 0x5A);
        if len == 0 {
            self.expected.push(RawMessage {
                csid,
                timestamp: n.timestamp,
                type_id: n.type_id,
                stream_id: n.stream_id,
                payload: Default::default(),
            });
            self.streams.insert(csid, n);
            return;
        }
        n.partial = Some((payload, 0));
        self.streams.insert(csid, n);
        self.send_chunks(csid, chunks, true);
    }

    fn control(&mut self, type_id: u8, payload: &[u8]) {
        // Whole, fmt0 on csid 2 (never used for data here), at the current chunk size.
        let mut b = BytesMut::new();
        encode_message(
            CONTROL_CSID,
            0,
            type_id,
            0,
            payload,
            self.chunk_size,
            &mut b,
        );
        self.out.extend_from_slice(&b);
        self.streams.entry(CONTROL_CSID).or_default().started = true;
    }
}

fn run(ops: &[Op]) -> Writer {
    let mut w = Writer {
        out: Vec::new(),
        chunk_size: 128,
        streams: HashMap::new(),
        expected: Vec::new(),
        fails: false,
    };
    for op in ops {
        if w.fails || w.out.len() > 1 << 20 {
            break;
        }
        match *op {
            Op::Msg {
                csid,
                fmt,
                ts,
                big_ts,
                type_sel,
                stream_id,
                len,
                fill,
                chunks,
            } => {
                let ts = if big_ts { ts | 0xFF_0000 } else { ts & 0xFFFF };
                let payload = vec![fill; usize::from(len) % 4096 + usize::from(len >> 15) * 60_000];
                let type_id = TYPES[usize::from(type_sel) % TYPES.len()];
                let csid = CSIDS[usize::from(csid) % CSIDS.len()];
                w.message(csid, fmt % 4, ts, type_id, stream_id, payload, chunks);
            }
            Op::Continue { csid, chunks } => {
                let csid = CSIDS[usize::from(csid) % CSIDS.len()];
                if w.streams.get(&csid).is_some_and(|s| s.partial.is_some()) {
                    w.send_chunks(csid, chunks.max(1), false);
                }
            }
            Op::SetChunkSize { size, short } => {
                let bytes = size.to_be_bytes();
                if short {
                    w.control(SET_CHUNK_SIZE, &bytes[..2]);
                    w.fails = true;
                } else {
                    // Mostly sensible sizes; the high bit and 0 are invalid.
                    let size = match size >> 30 {
                        0 => size % 70_000,
                        1 => size % 300,
                        _ => size,
                    };
                    w.control(SET_CHUNK_SIZE, &size.to_be_bytes());
                    if size == 0 || size > 0x7FFF_FFFF {
                        w.fails = true;
                    } else {
                        w.chunk_size = size;
                    }
                }
            }
            Op::Abort { csid } => {
                let csid = CSIDS[usize::from(csid) % CSIDS.len()];
                w.control(ABORT, &csid.to_be_bytes());
                if let Some(st) = w.streams.get_mut(&csid) {
                    st.partial = None;
                }
            }
            Op::TooLong { csid, extra } => {
                let csid = CSIDS[usize::from(csid) % CSIDS.len()];
                if w.streams.get(&csid).is_some_and(|s| s.partial.is_some()) {
                    continue;
                }
                basic_header(&mut w.out, 0, csid);
                be24(&mut w.out, 0);
                be24(&mut w.out, MAX + 1 + u32::from(extra));
                w.out.extend_from_slice(&[9, 1, 0, 0, 0]);
                w.fails = true;
            }
        }
    }
    w
}

fuzz_target!(|input: Input| {
    let w = run(&input.ops);

    // The decoder, with control messages applied as the transport does.
    let mut dec = ChunkDecoder::new(MAX);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut failed = false;
    'feed: for piece in split(&w.out, input.split_seed) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) if m.csid == CONTROL_CSID => {
                    let v = parse_u32(m.type_id, &m.payload);
                    let ok = match (m.type_id, v) {
                        (SET_CHUNK_SIZE, Ok(s)) => dec.set_chunk_size(s).is_ok(),
                        (ABORT, Ok(c)) => {
                            dec.abort(c);
                            true
                        }
                        _ => false,
                    };
                    if !ok {
                        failed = true;
                        break 'feed;
                    }
                }
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(failed, w.fails, "decoder failure differs from the model");
    assert_eq!(
        got.len(),
        w.expected.len(),
        "message count differs from the model"
    );
    for (g, e) in got.iter().zip(&w.expected) {
        assert_eq!(g, e, "message differs from the model");
    }
    if !w.fails {
        // Everything not yet returned is a partial message, whose chunks were all consumed.
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
    }

    // The same stream into a server session after a handshake and a connect.
    let mut s = ServerSession::new(SessionConfig {
        max_message_size: MAX,
        ..SessionConfig::default()
    });
    let mut stream = handshake_prefix();
    let connect = command_body(
        "connect",
        1.0,
        &[Amf0Value::object([("app", "live".into())])],
    );
    let mut b = BytesMut::new();
    encode_message(3, 0, 20, 0, &connect, 128, &mut b);
    stream.extend_from_slice(&b);
    stream.extend_from_slice(&w.out);
    for piece in split(&stream, input.session_split) {
        if s.feed(piece).is_err() {
            break;
        }
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::Publish {
                    stream_id, name, ..
                } => s.accept_publish(stream_id, &name),
                Event::Play {
                    stream_id,
                    name,
                    reset,
                    ..
                } => s.accept_play(stream_id, &name, reset),
                _ => {}
            }
        }
        let _ = s.take_output();
    }
});
