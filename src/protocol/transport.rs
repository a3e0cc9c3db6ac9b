//! The connection layer both session ends share: the handshake phase, the input buffer and
//! chunk decoder, chunk-stream control, acknowledgements, and the chunked output. Sessions
//! own the command flow and their own decisions; `feed` runs a session's input through here.

use bytes::{Bytes, BytesMut};

use super::chunk::{ChunkDecoder, ChunkEncoder, RawMessage, DEFAULT_CHUNK_SIZE};
use super::handshake::{ClientHandshake, HandshakeError, ServerHandshake};
use super::message::{self as msg, AckWindow, UserControl};
use super::session::SessionError;

enum Handshake {
    Server(ServerHandshake),
    Client(ClientHandshake),
}

impl Handshake {
    /// Bytes of `input` used, and whether the handshake is done.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), HandshakeError> {
        Ok(match self {
            Self::Server(h) => (h.feed(input, out)?, h.is_done()),
            Self::Client(h) => (h.feed(input, out)?, h.is_done()),
        })
    }
}

enum Chunking {
    /// Header compression per chunk stream, as encoders and ffmpeg send.
    Compressed(ChunkEncoder),
    /// Every message self-contained (fmt0 + fmt3) at this chunk size: the fan-out writes
    /// shared self-contained messages into the same connection, which would leave a
    /// compressing encoder's per-stream state stale.
    Standalone(u32),
}

/// What a `feed` call's input amounted to, once past the handshake.
enum Input {
    /// This input finished the handshake; messages may follow it.
    HandshakeDone,
    Connected,
}

pub(super) struct Transport {
    /// Until done; boxed so the transport stays small once connected.
    handshake: Option<Box<Handshake>>,
    inbuf: BytesMut,
    decoder: ChunkDecoder,
    acks: AckWindow,
    chunking: Chunking,
    out: BytesMut,
    /// Servers hold many idle players, each of which would otherwise keep its
    /// handshake-sized input buffer forever.
    release_idle_input: bool,
}

impl Transport {
    /// The answering end; it writes self-contained messages (see `Chunking::Standalone`).
    pub(super) fn server(
        handshake: ServerHandshake,
        max_message_size: u32,
        ack_window: u32,
    ) -> Self {
        Self {
            handshake: Some(Box::new(Handshake::Server(handshake))),
            inbuf: BytesMut::new(),
            decoder: ChunkDecoder::new(max_message_size),
            acks: AckWindow::new(ack_window),
            chunking: Chunking::Standalone(DEFAULT_CHUNK_SIZE),
            out: BytesMut::new(),
            release_idle_input: true,
        }
    }

    /// The calling end; C0+C1 are in the output at once.
    pub(super) fn client(
        mut handshake: ClientHandshake,
        max_message_size: u32,
        ack_window: u32,
    ) -> Self {
        let mut c0c1 = Vec::new();
        handshake.start(&mut c0c1);
        Self {
            handshake: Some(Box::new(Handshake::Client(handshake))),
            inbuf: BytesMut::new(),
            decoder: ChunkDecoder::new(max_message_size),
            acks: AckWindow::new(ack_window),
            chunking: Chunking::Compressed(ChunkEncoder::new()),
            out: BytesMut::from(&c0c1[..]),
            release_idle_input: false,
        }
    }

    pub(super) fn is_handshake_done(&self) -> bool {
        self.handshake.is_none()
    }

    pub(super) fn bytes_received(&self) -> u64 {
        self.acks.received()
    }

    pub(super) fn set_payload_limit(&mut self, limit: usize) {
        self.decoder.set_payload_limit(limit);
    }

    /// Caps what partially assembled incoming messages may hold.
    pub(super) fn set_buffer_budget(&mut self, bytes: usize) {
        self.decoder.set_budget(bytes);
    }

    pub(super) fn buffer_budget(&self) -> usize {
        self.decoder.budget()
    }

    /// Bytes held by partially assembled incoming messages.
    pub(super) fn buffered(&self) -> usize {
        self.decoder.held()
    }

    pub(super) fn take_output(&mut self) -> Option<Bytes> {
        // Taken whole, not split: a split leaves the rest of the allocation behind, and the
        // handshake's 3 KB reply would then stay allocated for a player's whole life.
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out).freeze())
    }

    /// The chunk size of what we send.
    pub(super) fn send_chunk_size(&self) -> u32 {
        match &self.chunking {
            Chunking::Compressed(enc) => enc.chunk_size(),
            Chunking::Standalone(size) => *size,
        }
    }

    /// Announces `size` to the peer, then sends with it.
    pub(super) fn set_send_chunk_size(&mut self, size: u32) {
        self.send(
            msg::CSID_CONTROL,
            msg::SET_CHUNK_SIZE,
            0,
            0,
            &size.to_be_bytes(),
        );
        match &mut self.chunking {
            Chunking::Compressed(enc) => enc.set_chunk_size(size),
            Chunking::Standalone(chunk) => *chunk = size,
        }
    }

    pub(super) fn send(
        &mut self,
        csid: u32,
        type_id: u8,
        stream_id: u32,
        timestamp: u32,
        payload: &[u8],
    ) {
        match &mut self.chunking {
            Chunking::Compressed(enc) => {
                enc.encode_parts(csid, timestamp, type_id, stream_id, payload, &mut self.out)
            }
            Chunking::Standalone(chunk) => msg::write_message(
                &mut self.out,
                *chunk,
                csid,
                timestamp,
                type_id,
                stream_id,
                payload,
            ),
        }
    }

    pub(super) fn user_control(&mut self, uc: UserControl) {
        self.send(msg::CSID_CONTROL, msg::USER_CONTROL, 0, 0, &uc.encode());
    }

    /// Where `data`'s messages start (after the handshake), or None while handshaking.
    fn take_input(&mut self, data: &[u8]) -> Result<Option<(usize, Input)>, SessionError> {
        self.acks.on_received(data.len());
        let Some(hs) = &mut self.handshake else {
            return Ok(Some((0, Input::Connected)));
        };
        let mut reply = Vec::new();
        let (used, done) = hs.feed(data, &mut reply)?;
        self.out.extend_from_slice(&reply);
        if !done {
            return Ok(None);
        }
        self.handshake = None;
        Ok(Some((used, Input::HandshakeDone)))
    }

    /// The next whole message for the session, decoded from `input` in place (bytes kept
    /// from an earlier read go first). Chunk-stream control is applied here and not handed on.
    fn next_message(&mut self, input: &mut &[u8]) -> Result<Option<RawMessage>, SessionError> {
        loop {
            let m = if self.inbuf.is_empty() {
                self.decoder.decode_slice(input)?
            } else {
                // A chunk header split across reads: finish it (and go on) from the copy.
                self.inbuf.extend_from_slice(input);
                *input = &[];
                self.decoder.decode(&mut self.inbuf)?
            };
            let Some(m) = m else {
                return Ok(None);
            };
            match m.type_id {
                msg::SET_CHUNK_SIZE => {
                    let size = msg::parse_u32(m.type_id, &m.payload)?;
                    self.decoder.set_chunk_size(size)?;
                }
                msg::ABORT => self.decoder.abort(msg::parse_u32(m.type_id, &m.payload)?),
                msg::WINDOW_ACK_SIZE => {
                    self.acks.set_window(msg::parse_u32(m.type_id, &m.payload)?)
                }
                // We never wait for the peer's acks and do not pace by its bandwidth.
                msg::ACK | msg::SET_PEER_BANDWIDTH => {}
                _ => return Ok(Some(m)),
            }
        }
    }

    /// Keeps what the decoder could not use yet (an incomplete chunk header).
    fn finish_input(&mut self, rest: &[u8]) {
        self.inbuf.extend_from_slice(rest);
        if self.release_idle_input && self.inbuf.is_empty() && self.inbuf.capacity() > 1024 {
            self.inbuf = BytesMut::new();
        }
        if let Some(ack) = self.acks.due() {
            self.send(msg::CSID_CONTROL, msg::ACK, 0, 0, &ack);
        }
    }
}

/// A session as `feed` sees it: where its transport is and what it does with what arrives.
pub(super) trait Endpoint {
    fn transport(&mut self) -> &mut Transport;

    /// Runs once, in the `feed` that finishes the handshake, before the first message.
    fn on_handshake_done(&mut self) {}

    fn on_message(&mut self, m: RawMessage) -> Result<(), SessionError>;
}

/// Processes bytes from the peer: the handshake until it is done, then every whole message
/// in order, then an Ack if one is due.
pub(super) fn feed<E: Endpoint>(end: &mut E, data: &[u8]) -> Result<(), SessionError> {
    let Some((start, input)) = end.transport().take_input(data)? else {
        return Ok(());
    };
    if let Input::HandshakeDone = input {
        end.on_handshake_done();
    }
    let mut rest = &data[start..];
    while let Some(m) = end.transport().next_message(&mut rest)? {
        end.on_message(m)?;
    }
    end.transport().finish_input(rest);
    Ok(())
}
