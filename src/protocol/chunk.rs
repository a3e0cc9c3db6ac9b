//! RTMP chunk stream, sans-IO: [`ChunkDecoder`] turns peer bytes into whole messages,
//! [`encode_message`] / [`ChunkEncoder`] turn messages into chunks.
//!
//! Interop rules (see `notes/rtmp-interop.md` §2): a fresh csid may start with fmt1 (missing
//! fields are 0); a fmt3 that starts a new message adds the previous delta, where after a fmt0
//! the absolute timestamp counts as the delta (ffmpeg `ts_field`); extended timestamps on fmt3
//! chunks are read with the peek heuristic (GStreamer/SRS) and always written (spec/ffmpeg).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::csid_map::CsidMap;

/// Chunk size both directions start with.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Largest chunk size the protocol allows (31 bits).
pub const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
/// Smallest chunk stream id (0 and 1 select the 2- and 3-byte basic header forms).
pub const MIN_CSID: u32 = 2;
/// Largest chunk stream id (3-byte basic header form).
pub const MAX_CSID: u32 = 65_599;
/// Cap on chunk streams holding a partially assembled message at the same time.
pub const MAX_PARTIAL_STREAMS: usize = 64;
/// Cap on distinct chunk streams a decoder remembers headers for.
pub const MAX_CHUNK_STREAMS: usize = 1024;

const TS_EXTENDED: u32 = 0x00FF_FFFF;
const INITIAL_ASSEMBLY_CAP: usize = 64 * 1024;

/// One whole RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// Chunk stream id it arrived on / goes out on.
    pub csid: u32,
    /// Absolute timestamp, u32 wrapping.
    pub timestamp: u32,
    pub type_id: u8,
    /// Message stream id (little-endian on the wire).
    pub stream_id: u32,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("message length {len} exceeds the maximum {max}")]
    MessageTooLarge { len: u32, max: u32 },
    #[error("invalid chunk size {0}")]
    InvalidChunkSize(u32),
    #[error("chunk stream {csid}: header type needs a previous header")]
    NoPreviousHeader { csid: u32 },
    #[error("chunk stream {csid}: message length changed inside a partial message")]
    LengthMismatch { csid: u32 },
    #[error("too many chunk streams ({0})")]
    TooManyChunkStreams(usize),
    /// Partially assembled messages would hold more than the connection may buffer.
    #[error("buffer budget exceeded: partial messages would hold {held} bytes (limit {budget})")]
    BufferBudget { held: usize, budget: usize },
}

/// Per-csid state of the decoder: the last header's values and the message being assembled.
#[derive(Debug, Default)]
struct DecStream {
    /// Absolute timestamp of the last message started on this csid.
    timestamp: u32,
    /// Delta a new-message fmt3 adds (after fmt0: the absolute timestamp).
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The last fmt0/1/2 header used the extended timestamp field.
    extended: bool,
    /// The 32-bit value of that extended field.
    ext_value: u32,
    partial: Option<Vec<u8>>,
    /// Payload bytes of the partial message received so far (kept or skimmed).
    received: u32,
}

impl DecStream {
    fn message(&self, csid: u32, payload: Bytes) -> RawMessage {
        RawMessage {
            csid,
            timestamp: self.timestamp,
            type_id: self.type_id,
            stream_id: self.stream_id,
            payload,
        }
    }
}

/// A parsed, validated chunk header that is entirely present in the input buffer.
struct Header {
    fmt: u8,
    csid: u32,
    /// Header bytes to consume (basic + message header + extended timestamp if taken).
    len: usize,
    /// Full timestamp field value for fmt0/1/2 (extended value when the field was 0xFFFFFF).
    ts_value: u32,
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Input bytes present after the header.
    avail: usize,
}

/// Incremental chunk stream decoder (receive direction).
#[derive(Debug)]
pub struct ChunkDecoder {
    max_message_size: u32,
    chunk_size: u32,
    streams: CsidMap<DecStream>,
    partial_count: usize,
    /// (csid, payload bytes of the current chunk not yet received).
    in_chunk: Option<(u32, u32)>,
    consumed: u64,
    /// Keep at most this many bytes of each payload (the load generator only needs headers).
    payload_limit: usize,
    /// Bytes allocated for partially assembled messages (their capacity).
    held: usize,
    /// Most `held` may reach; past it decoding fails (the peer sent more than it may).
    budget: usize,
}

fn be24(b: &[u8]) -> u32 {
    b.iter()
        .take(3)
        .fold(0, |acc, &x| (acc << 8) | u32::from(x))
}

fn be32(b: &[u8]) -> u32 {
    b.iter()
        .take(4)
        .fold(0, |acc, &x| (acc << 8) | u32::from(x))
}

impl ChunkDecoder {
    /// `max_message_size` caps a single message's announced length; chunk size starts at 128.
    pub fn new(max_message_size: u32) -> Self {
        Self {
            max_message_size,
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: CsidMap::default(),
            partial_count: 0,
            in_chunk: None,
            consumed: 0,
            payload_limit: usize::MAX,
            held: 0,
            budget: usize::MAX,
        }
    }

    /// Caps the memory partially assembled messages may hold (all chunk streams together).
    /// Lowering it below what is held now fails at the next growth, not at once.
    pub fn set_budget(&mut self, bytes: usize) {
        self.budget = bytes;
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes held by partially assembled messages now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Apply the peer's Set Chunk Size (1..=0x7FFFFFFF); takes effect at the next chunk header.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(ChunkError::InvalidChunkSize(size));
        }
        self.chunk_size = size;
        Ok(())
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Keeps only the first `limit` bytes of each audio/video payload and skips the rest, for
    /// receivers that only look at media headers and count bytes (commands stay whole).
    /// Messages still complete at their announced length.
    pub fn set_payload_limit(&mut self, limit: usize) {
        self.payload_limit = limit;
    }

    pub fn max_message_size(&self) -> u32 {
        self.max_message_size
    }

    /// Discard the partially assembled message on `csid` (Abort message). The header state is
    /// kept, so a following fmt3 still works. If called in the middle of a chunk of `csid`, the
    /// rest of that chunk is skipped.
    pub fn abort(&mut self, csid: u32) {
        if let Some(st) = self.streams.get_mut(csid) {
            if let Some(p) = st.partial.take() {
                self.partial_count -= 1;
                self.held -= p.capacity();
            }
        }
    }

    /// Total bytes consumed from the input so far.
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed
    }

    /// Consume chunks from the front of `buf` until one whole message is complete and return it.
    /// `Ok(None)`: need more bytes (chunk payload bytes already present were moved into the
    /// per-csid assembly buffer; an incomplete chunk header stays in `buf`).
    /// Errors are fatal for the connection (they are detected before anything of the offending
    /// chunk header is consumed, so the decoder and `buf` are left unchanged).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<RawMessage>, ChunkError> {
        let mut input: &[u8] = buf;
        let before = input.len();
        let r = self.decode_slice(&mut input);
        let used = before - input.len();
        buf.advance(used);
        r
    }

    /// [`decode`](Self::decode) reading from a borrowed slice, which is advanced past what
    /// was consumed: the input is decoded where it was read, and only an incomplete chunk
    /// header (under 20 bytes) is left for the caller to keep.
    pub fn decode_slice(&mut self, buf: &mut &[u8]) -> Result<Option<RawMessage>, ChunkError> {
        loop {
            if let Some((csid, remaining)) = self.in_chunk {
                let n = (remaining as usize).min(buf.len());
                if n == 0 {
                    return Ok(None);
                }
                let mut done = None;
                if let Some(st) = self.streams.get_mut(csid) {
                    if let Some(p) = st.partial.as_mut() {
                        let limit = if matches!(st.type_id, 8 | 9) {
                            self.payload_limit
                        } else {
                            usize::MAX
                        };
                        let keep = limit.saturating_sub(p.len()).min(n);
                        let total = (st.length as usize).min(limit);
                        let before = p.capacity();
                        let after = grown_capacity(p.len(), before, keep, total);
                        let held = self.held - before + after;
                        if held > self.budget {
                            return Err(ChunkError::BufferBudget {
                                held,
                                budget: self.budget,
                            });
                        }
                        append_bounded(p, buf.get(..keep).unwrap_or_default(), total);
                        self.held = self.held - before + p.capacity();
                        st.received += n as u32;
                        if st.received >= st.length {
                            done = st.partial.take().map(|p| {
                                self.held -= p.capacity();
                                st.message(csid, Bytes::from(p))
                            });
                        }
                    }
                }
                *buf = &buf[n..];
                self.consumed += n as u64;
                let left = remaining - n as u32;
                self.in_chunk = (left > 0).then_some((csid, left));
                if let Some(msg) = done {
                    self.partial_count -= 1;
                    return Ok(Some(msg));
                }
                continue;
            }
            let Some(h) = self.parse_header(buf)? else {
                return Ok(None);
            };
            *buf = &buf[h.len..];
            self.consumed += h.len as u64;
            if let Some(msg) = self.commit(&h) {
                return Ok(Some(msg));
            }
        }
    }

    /// Parse and validate the chunk header at the front of `b` without consuming anything.
    fn parse_header(&self, b: &[u8]) -> Result<Option<Header>, ChunkError> {
        let Some(&b0) = b.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut pos) = match b0 & 0x3F {
            0 => match b.get(1) {
                Some(&x) => (64 + u32::from(x), 2),
                None => return Ok(None),
            },
            1 => match b.get(1..3) {
                Some(x) => (64 + be24(&[0, x[1], x[0]]), 3),
                None => return Ok(None),
            },
            c => (u32::from(c), 1),
        };
        let prev = self.streams.get(csid);
        if prev.is_none() && fmt >= 2 {
            return Err(ChunkError::NoPreviousHeader { csid });
        }
        let mh_len = message_header_len(fmt);
        let Some(mh) = b.get(pos..pos + mh_len) else {
            return Ok(None);
        };
        pos += mh_len;
        let field = be24(mh);
        let (length, type_id, stream_id) = match (fmt, prev) {
            (0, _) => (
                be24(&mh[3..6]),
                mh[6],
                u32::from_le_bytes([mh[7], mh[8], mh[9], mh[10]]),
            ),
            (1, p) => (be24(&mh[3..6]), mh[6], p.map_or(0, |p| p.stream_id)),
            (_, Some(p)) => (p.length, p.type_id, p.stream_id),
            (_, None) => return Err(ChunkError::NoPreviousHeader { csid }),
        };
        if fmt <= 1 && length > self.max_message_size {
            return Err(ChunkError::MessageTooLarge {
                len: length,
                max: self.max_message_size,
            });
        }
        let partial = prev.is_some_and(|p| p.partial.is_some());
        if partial {
            if fmt <= 1 && prev.is_some_and(|p| p.length != length) {
                return Err(ChunkError::LengthMismatch { csid });
            }
        } else {
            if length > 0 && self.partial_count >= MAX_PARTIAL_STREAMS {
                return Err(ChunkError::TooManyChunkStreams(self.partial_count + 1));
            }
            if prev.is_none() && self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(ChunkError::TooManyChunkStreams(self.streams.len() + 1));
            }
        }
        let mut h = Header {
            fmt,
            csid,
            len: pos,
            ts_value: field,
            extended: false,
            length,
            type_id,
            stream_id,
            avail: 0,
        };
        if fmt < 3 {
            if field == TS_EXTENDED {
                let Some(ext) = b.get(pos..pos + 4) else {
                    return Ok(None);
                };
                h.ts_value = be32(ext);
                h.extended = true;
                h.len += 4;
            }
        } else if let Some(p) = prev.filter(|p| p.extended) {
            // Peek heuristic: the 4 bytes are an extended timestamp only if they repeat the
            // expected value (the header's extended field, or the message's absolute time).
            let Some(ext) = b.get(pos..pos + 4) else {
                return Ok(None);
            };
            let abs = if partial {
                p.timestamp
            } else {
                p.timestamp.wrapping_add(p.delta)
            };
            let v = be32(ext);
            if v == p.ext_value || v == abs {
                h.len += 4;
            }
        }
        h.avail = b.len() - h.len;
        if !partial && length > 0 {
            let held = self.held + self.assembly_capacity(length, type_id, h.avail);
            if held > self.budget {
                return Err(ChunkError::BufferBudget {
                    held,
                    budget: self.budget,
                });
            }
        }
        Ok(Some(h))
    }

    /// What a new partial message of `length` bytes starts with (see `commit`): its first
    /// chunk (up to a cap), or more when more input is already here, so a message that
    /// arrived whole is allocated once at its size. Never more than the peer has sent.
    fn assembly_capacity(&self, length: u32, type_id: u8, avail: usize) -> usize {
        let kept = if matches!(type_id, 8 | 9) {
            self.payload_limit.min(length as usize)
        } else {
            length as usize
        };
        let first = (length.min(self.chunk_size) as usize).min(INITIAL_ASSEMBLY_CAP);
        first.max(avail).min(kept)
    }

    /// Apply a parsed header; returns a message if it completes one (zero length).
    fn commit(&mut self, h: &Header) -> Option<RawMessage> {
        let cap = self.assembly_capacity(h.length, h.type_id, h.avail);
        let st = self.streams.get_or_insert_with(h.csid, DecStream::default);
        if h.fmt < 3 {
            st.extended = h.extended;
            st.ext_value = h.ts_value;
        }
        if st.partial.is_none() {
            match h.fmt {
                0 => {
                    st.timestamp = h.ts_value;
                    st.delta = h.ts_value;
                }
                1 | 2 => {
                    st.delta = h.ts_value;
                    st.timestamp = st.timestamp.wrapping_add(h.ts_value);
                }
                _ => st.timestamp = st.timestamp.wrapping_add(st.delta),
            }
            st.length = h.length;
            st.type_id = h.type_id;
            st.stream_id = h.stream_id;
            if h.length == 0 {
                return Some(st.message(h.csid, Bytes::new()));
            }
            let v = Vec::with_capacity(cap);
            self.held += v.capacity();
            st.partial = Some(v);
            st.received = 0;
            self.partial_count += 1;
        }
        let received = st.received;
        let chunk = st.length.saturating_sub(received).min(self.chunk_size);
        self.in_chunk = Some((h.csid, chunk));
        None
    }
}

/// The capacity `append_bounded` leaves a buffer of `len` bytes in `cap` with after
/// appending `add` bytes.
fn grown_capacity(len: usize, cap: usize, add: usize, total: usize) -> usize {
    let need = len + add;
    if need > cap {
        need.max(cap.saturating_mul(2)).min(total.max(need))
    } else {
        cap
    }
}

/// Append `data`, growing geometrically but never beyond `total` (the announced length).
fn append_bounded(v: &mut Vec<u8>, data: &[u8], total: usize) {
    let need = v.len() + data.len();
    if need > v.capacity() {
        let target = need
            .max(v.capacity().saturating_mul(2))
            .min(total.max(need));
        v.reserve_exact(target - v.len());
    }
    v.extend_from_slice(data);
}

fn basic_header_len(csid: u32) -> usize {
    match csid {
        0..=63 => 1,
        64..=319 => 2,
        _ => 3,
    }
}

fn put_basic_header(out: &mut BytesMut, fmt: u8, csid: u32) {
    let f = fmt << 6;
    match csid {
        0..=63 => out.put_u8(f | csid as u8),
        64..=319 => {
            out.put_u8(f);
            out.put_u8((csid - 64) as u8);
        }
        _ => {
            let v = csid - 64;
            out.put_u8(f | 1);
            out.put_u8(v as u8);
            out.put_u8((v >> 8) as u8);
        }
    }
}

fn put_u24(out: &mut BytesMut, v: u32) {
    out.put_slice(&v.to_be_bytes()[1..]);
}

fn message_header_len(fmt: u8) -> usize {
    match fmt {
        0 => 11,
        1 => 7,
        2 => 3,
        _ => 0,
    }
}

fn chunks_len(csid: u32, fmt: u8, ts_value: u32, payload_len: usize, chunk_size: u32) -> usize {
    let cs = chunk_size.clamp(1, MAX_CHUNK_SIZE) as usize;
    let bh = basic_header_len(csid.clamp(MIN_CSID, MAX_CSID));
    let ext = if ts_value >= TS_EXTENDED { 4 } else { 0 };
    let continuations = payload_len.saturating_sub(1) / cs;
    bh + message_header_len(fmt) + ext + payload_len + continuations * (bh + ext)
}

/// Write one message as chunks: a `fmt` header carrying `ts_value` (absolute for fmt0, delta
/// otherwise; extended when >= 0xFFFFFF) followed by fmt3 continuations repeating the extended
/// field. `csid` is clamped to 2..=65599, `chunk_size` to 1..=0x7FFFFFFF; payloads longer than
/// 0xFFFFFF bytes cannot be represented (the length field is truncated to 24 bits).
#[allow(clippy::too_many_arguments)]
fn write_chunks(
    out: &mut BytesMut,
    fmt: u8,
    csid: u32,
    ts_value: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
    chunk_size: u32,
) {
    debug_assert!(payload.len() <= 0xFF_FFFF, "RTMP message payload too large");
    let csid = csid.clamp(MIN_CSID, MAX_CSID);
    let cs = chunk_size.clamp(1, MAX_CHUNK_SIZE) as usize;
    out.reserve(chunks_len(csid, fmt, ts_value, payload.len(), chunk_size));
    let ext = ts_value >= TS_EXTENDED;
    put_basic_header(out, fmt, csid);
    if fmt < 3 {
        put_u24(out, ts_value.min(TS_EXTENDED));
    }
    if fmt < 2 {
        put_u24(out, payload.len() as u32 & 0xFF_FFFF);
        out.put_u8(type_id);
    }
    if fmt == 0 {
        out.put_u32_le(stream_id);
    }
    if ext {
        out.put_u32(ts_value);
    }
    let first = payload.len().min(cs);
    out.put_slice(&payload[..first]);
    for chunk in payload[first..].chunks(cs) {
        put_basic_header(out, 3, csid);
        if ext {
            out.put_u32(ts_value);
        }
        out.put_slice(chunk);
    }
}

/// Stateless encoding of one whole message (fmt0 + fmt3 continuations, extended timestamp
/// repeated on every fmt3 when `timestamp >= 0xFFFFFF`). Depends on no earlier message, so the
/// bytes can be shared by many receivers. Appends to `out`. `csid` is clamped to 2..=65599 and
/// `chunk_size` to 1..=0x7FFFFFFF; `payload` must be at most 0xFFFFFF bytes.
pub fn encode_message(
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
    chunk_size: u32,
    out: &mut BytesMut,
) {
    write_chunks(
        out, 0, csid, timestamp, type_id, stream_id, payload, chunk_size,
    );
}

/// Exact number of bytes [`encode_message`] appends.
pub fn encoded_len(csid: u32, timestamp: u32, payload_len: usize, chunk_size: u32) -> usize {
    chunks_len(csid, 0, timestamp, payload_len, chunk_size)
}

#[derive(Debug)]
struct EncStream {
    timestamp: u32,
    /// Timestamp field value of the last header (absolute after fmt0).
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    last_fmt0: bool,
}

/// Stateful encoder with per-csid header compression (fmt1/2/3), for a client-side sender.
/// Uses fmt0 for the first message on a csid, a stream id change or a timestamp going
/// backwards (signed wrapping delta < 0); never a new-message fmt3 right after fmt0.
/// Do not mix it with [`encode_message`] on the same csid of one connection (its state would
/// be stale); call [`ChunkEncoder::reset`] after doing so.
#[derive(Debug)]
pub struct ChunkEncoder {
    chunk_size: u32,
    streams: CsidMap<EncStream>,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: CsidMap::default(),
        }
    }

    /// Use `size` (clamped to 1..=0x7FFFFFFF) for following messages. The caller sends the Set
    /// Chunk Size message itself (encoded before calling this).
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE);
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Forget all per-csid header state (the next message on each csid uses fmt0).
    pub fn reset(&mut self) {
        self.streams.clear();
    }

    pub fn encode(&mut self, msg: &RawMessage, out: &mut BytesMut) {
        self.encode_parts(
            msg.csid,
            msg.timestamp,
            msg.type_id,
            msg.stream_id,
            &msg.payload,
            out,
        );
    }

    /// [`ChunkEncoder::encode`] for a message that is not a [`RawMessage`] yet, so senders
    /// holding a borrowed payload need not copy it into `Bytes`. Arguments in the order of
    /// [`encode_message`].
    pub fn encode_parts(
        &mut self,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
        out: &mut BytesMut,
    ) {
        let csid = csid.clamp(MIN_CSID, MAX_CSID);
        let len = payload.len() as u32;
        let (fmt, value) = match self.streams.get(csid) {
            Some(p) if p.stream_id == stream_id => {
                let delta = timestamp.wrapping_sub(p.timestamp);
                if (delta as i32) < 0 {
                    (0, timestamp)
                } else if p.type_id != type_id || p.length != len {
                    (1, delta)
                } else if p.last_fmt0 || p.delta != delta {
                    (2, delta)
                } else {
                    (3, delta)
                }
            }
            _ => (0, timestamp),
        };
        write_chunks(
            out,
            fmt,
            csid,
            value,
            type_id,
            stream_id,
            payload,
            self.chunk_size,
        );
        self.streams.insert(
            csid,
            EncStream {
                timestamp,
                delta: value,
                length: len,
                type_id,
                stream_id,
                last_fmt0: fmt == 0,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 16 << 20;

    fn msg(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload: &[u8]) -> RawMessage {
        RawMessage {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    /// Caller-like driver: decode all, applying Set Chunk Size (1) and Abort (2) in between.
    fn drive(dec: &mut ChunkDecoder, buf: &mut BytesMut) -> Result<Vec<RawMessage>, ChunkError> {
        let mut out = Vec::new();
        while let Some(m) = dec.decode(buf)? {
            if m.type_id <= 2 && m.payload.len() >= 4 {
                let v = be32(&m.payload);
                if m.type_id == 1 {
                    dec.set_chunk_size(v & MAX_CHUNK_SIZE)?;
                } else {
                    dec.abort(v);
                }
            }
            out.push(m);
        }
        Ok(out)
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<RawMessage>, ChunkError> {
        drive(&mut ChunkDecoder::new(MAX), &mut BytesMut::from(bytes))
    }

    fn decode_bytewise(bytes: &[u8]) -> Result<Vec<RawMessage>, ChunkError> {
        let mut dec = ChunkDecoder::new(MAX);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in bytes {
            buf.put_u8(b);
            out.extend(drive(&mut dec, &mut buf)?);
        }
        assert!(buf.is_empty());
        assert_eq!(dec.bytes_consumed(), bytes.len() as u64);
        Ok(out)
    }

    #[test]
    fn each_fmt_from_hand_written_bytes() {
        let mut b = vec![0x04, 0, 0, 100, 0, 0, 2, 8, 1, 0, 0, 0, 0xAA, 0xBB]; // fmt0 ts 100
        b.extend([0x44, 0, 0, 16, 0, 0, 3, 9, 1, 2, 3]); // fmt1 +16, len 3, type 9
        b.extend([0x84, 0, 0, 5, 4, 5, 6]); // fmt2 +5
        b.extend([0xC4, 7, 8, 9]); // fmt3 +5
        let want = vec![
            msg(4, 100, 8, 1, &[0xAA, 0xBB]),
            msg(4, 116, 9, 1, &[1, 2, 3]),
            msg(4, 121, 9, 1, &[4, 5, 6]),
            msg(4, 126, 9, 1, &[7, 8, 9]),
        ];
        assert_eq!(decode_all(&b).unwrap(), want);
        assert_eq!(decode_bytewise(&b).unwrap(), want);
    }

    #[test]
    fn fmt3_after_fmt0_uses_ts_field_as_delta() {
        let mut b = vec![0x04, 0, 0, 100, 0, 0, 2, 8, 1, 0, 0, 0, 0xAA, 0xBB];
        b.extend([0xC4, 0xCC, 0xDD]);
        let got = decode_all(&b).unwrap();
        assert_eq!(got[1], msg(4, 200, 8, 1, &[0xCC, 0xDD]));
    }

    #[test]
    fn fresh_csid_fmt1_ok_fmt2_fmt3_rejected() {
        // librtmp-style ping: fmt1 on csid 2 never seen before
        let b = [0x42, 0, 0, 7, 0, 0, 6, 4, 0, 6, 0, 0, 0, 1];
        assert_eq!(
            decode_all(&b).unwrap(),
            vec![msg(2, 7, 4, 0, &[0, 6, 0, 0, 0, 1])]
        );
        let mut dec = ChunkDecoder::new(MAX);
        let e = dec.decode(&mut BytesMut::from(&[0x85u8][..])).unwrap_err();
        assert_eq!(e, ChunkError::NoPreviousHeader { csid: 5 });
        let e = decode_all(&[0xC0, 10]).unwrap_err();
        assert_eq!(e, ChunkError::NoPreviousHeader { csid: 74 });
    }

    #[test]
    fn basic_header_forms() {
        let cases: [(u32, &[u8], &[u8]); 5] = [
            (3, &[0x03], &[0xC3]),
            (64, &[0x00, 0x00], &[0xC0, 0x00]),
            (319, &[0x00, 0xFF], &[0xC0, 0xFF]),
            (320, &[0x01, 0x00, 0x01], &[0xC1, 0x00, 0x01]),
            (65599, &[0x01, 0xFF, 0xFF], &[0xC1, 0xFF, 0xFF]),
        ];
        let payload = pattern(130, 1);
        for (csid, first, cont) in cases {
            let mut out = BytesMut::new();
            encode_message(csid, 5, 9, 1, &payload, 128, &mut out);
            assert_eq!(out.len(), encoded_len(csid, 5, 130, 128));
            let h = first.len();
            assert_eq!(&out[..h], first, "csid {csid}");
            assert_eq!(&out[h..h + 11], &[0, 0, 5, 0, 0, 130, 9, 1, 0, 0, 0]);
            assert_eq!(&out[h + 11 + 128..h + 11 + 128 + h], cont, "csid {csid}");
            let got = decode_all(&out).unwrap();
            assert_eq!(got, vec![msg(csid, 5, 9, 1, &payload)]);
        }
    }

    #[test]
    fn three_hundred_bytes_at_128() {
        let p = pattern(300, 3);
        let mut want = vec![0x03, 0, 0, 0, 0, 0x01, 0x2C, 0x14, 0, 0, 0, 0];
        want.extend(&p[..128]);
        want.push(0xC3);
        want.extend(&p[128..256]);
        want.push(0xC3);
        want.extend(&p[256..]);
        let mut out = BytesMut::new();
        encode_message(3, 0, 0x14, 0, &p, 128, &mut out);
        assert_eq!(&out[..], &want[..]);
        assert_eq!(want.len(), 314);
        assert_eq!(encoded_len(3, 0, 300, 128), 314);
        assert_eq!(decode_all(&want).unwrap(), vec![msg(3, 0, 0x14, 0, &p)]);
        assert_eq!(
            decode_bytewise(&want).unwrap(),
            vec![msg(3, 0, 0x14, 0, &p)]
        );
    }

    #[test]
    fn extended_timestamp_with_and_without_fmt3_field() {
        let p = pattern(200, 9);
        let mut ff = vec![0x04, 0xFF, 0xFF, 0xFF, 0, 0, 200, 9, 1, 0, 0, 0, 1, 0, 0, 0];
        ff.extend(&p[..128]);
        let mut lr = ff.clone();
        ff.extend([0xC4, 1, 0, 0, 0]);
        lr.push(0xC4);
        ff.extend(&p[128..]);
        lr.extend(&p[128..]);
        let mut out = BytesMut::new();
        encode_message(4, 0x0100_0000, 9, 1, &p, 128, &mut out);
        assert_eq!(&out[..], &ff[..]);
        assert_eq!(encoded_len(4, 0x0100_0000, 200, 128), ff.len());
        let want = vec![msg(4, 0x0100_0000, 9, 1, &p)];
        for b in [&ff, &lr] {
            assert_eq!(decode_all(b).unwrap(), want);
            assert_eq!(decode_bytewise(b).unwrap(), want);
        }
        // fmt3 starting a new message after an extended fmt0: delta = 0x01000000.
        let mut ff2 = ff.clone();
        ff2.extend([0xC4, 1, 0, 0, 0]);
        ff2.extend(&p[..128]);
        ff2.extend([0xC4, 1, 0, 0, 0]);
        ff2.extend(&p[128..]);
        let mut lr2 = lr.clone();
        lr2.push(0xC4);
        lr2.extend(&p[..128]);
        lr2.push(0xC4);
        lr2.extend(&p[128..]);
        for b in [&ff2, &lr2] {
            let got = decode_bytewise(b).unwrap();
            assert_eq!(got[1], msg(4, 0x0200_0000, 9, 1, &p));
        }
    }

    #[test]
    fn zero_length_and_timestamp_wrap() {
        let mut b = vec![
            0x05, 0xFF, 0xFF, 0xFF, 0, 0, 0, 8, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xF0,
        ];
        b.extend([0x85, 0, 0, 0x20]); // +0x20 wraps
        let got = decode_bytewise(&b).unwrap();
        assert_eq!(
            got,
            vec![msg(5, 0xFFFF_FFF0, 8, 0, &[]), msg(5, 0x10, 8, 0, &[])]
        );
    }

    #[test]
    fn interleaved_csids() {
        let a = pattern(200, 1);
        let v = pattern(150, 2);
        let mut b = vec![0x04, 0, 0, 10, 0, 0, 200, 8, 1, 0, 0, 0];
        b.extend(&a[..128]);
        b.extend([0x06, 0, 0, 20, 0, 0, 150, 9, 1, 0, 0, 0]);
        b.extend(&v[..128]);
        b.push(0xC4);
        b.extend(&a[128..]);
        b.push(0xC6);
        b.extend(&v[128..]);
        let want = vec![msg(4, 10, 8, 1, &a), msg(6, 20, 9, 1, &v)];
        assert_eq!(decode_all(&b).unwrap(), want);
        assert_eq!(decode_bytewise(&b).unwrap(), want);
    }

    #[test]
    fn abort_discards_partial() {
        let a = pattern(200, 1);
        let mut b = vec![0x04, 0, 0, 10, 0, 0, 200, 8, 1, 0, 0, 0];
        b.extend(&a[..128]);
        // Abort(csid 4) on csid 2
        b.extend([0x02, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 0, 0, 0, 4]);
        b.extend([0xC4, 1, 2]); // fmt3: new message reusing len 200, delta 10
        let mut dec = ChunkDecoder::new(MAX);
        let mut buf = BytesMut::from(&b[..]);
        let got = drive(&mut dec, &mut buf).unwrap();
        assert_eq!(got, vec![msg(2, 0, 2, 0, &[0, 0, 0, 4])]);
        buf.extend_from_slice(&a[2..128]);
        buf.put_u8(0xC4);
        buf.extend_from_slice(&a[128..]);
        let mut want = a.clone();
        want[..2].copy_from_slice(&[1, 2]);
        assert_eq!(
            drive(&mut dec, &mut buf).unwrap(),
            vec![msg(4, 20, 8, 1, &want)]
        );
    }

    #[test]
    fn partial_messages_are_held_within_the_budget() {
        // Two 3000-byte messages interleaved in 128-byte chunks: both partial at once.
        let a = pattern(3000, 1);
        let b = pattern(3000, 2);
        let (mut ea, mut eb) = (BytesMut::new(), BytesMut::new());
        encode_message(4, 0, 9, 1, &a, 128, &mut ea);
        encode_message(5, 0, 8, 1, &b, 128, &mut eb);
        // First chunk of each (headers 12 bytes + 128).
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&ea[..140]);
        buf.extend_from_slice(&eb[..140]);
        let mut dec = ChunkDecoder::new(MAX);
        dec.set_budget(3000);
        assert_eq!(drive(&mut dec, &mut buf).unwrap(), vec![]);
        let held = dec.held();
        assert!((256..=3000).contains(&held), "{held}");
        // All of `a` (3000) beside the start of `b`: past the budget, refused before the
        // growth that would pass it.
        buf.extend_from_slice(&ea[140..]);
        let err = drive(&mut dec, &mut buf).unwrap_err();
        assert!(
            matches!(err, ChunkError::BufferBudget { budget: 3000, .. }),
            "{err}"
        );
        assert!(dec.held() <= 3000);

        // With room, completion and Abort give the bytes back.
        let mut dec = ChunkDecoder::new(MAX);
        dec.set_budget(16 * 1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&ea);
        buf.extend_from_slice(&eb[..140]);
        let got = drive(&mut dec, &mut buf).unwrap();
        assert_eq!(got, vec![msg(4, 0, 9, 1, &a)]);
        assert!(dec.held() > 0);
        dec.abort(5);
        assert_eq!(dec.held(), 0);
    }

    #[test]
    fn a_new_partial_message_past_the_budget_is_refused_at_its_header() {
        let mut dec = ChunkDecoder::new(MAX);
        dec.set_budget(1000);
        let mut buf = BytesMut::new();
        // Chunk size 4096, then a 10,000-byte message: its first chunk would need 4096.
        encode_message(2, 0, 1, 0, &4096u32.to_be_bytes(), 128, &mut buf);
        let mut m = BytesMut::new();
        encode_message(4, 0, 9, 1, &pattern(10_000, 3), 4096, &mut m);
        buf.extend_from_slice(&m[..20]);
        let err = drive(&mut dec, &mut buf).unwrap_err();
        assert_eq!(
            err,
            ChunkError::BufferBudget {
                held: 4096,
                budget: 1000
            }
        );
        assert_eq!(dec.held(), 0);
    }

    #[test]
    fn a_message_that_arrived_whole_is_allocated_once_and_never_beyond_the_input() {
        // 10,000 bytes in 128-byte chunks, all of it in the input: one allocation of the
        // message's size, seen while the last chunk is still missing.
        let p = pattern(10_000, 4);
        let mut m = BytesMut::new();
        encode_message(4, 0, 9, 1, &p, 128, &mut m);
        let mut dec = ChunkDecoder::new(MAX);
        let mut input: &[u8] = &m[..m.len() - 10];
        assert_eq!(dec.decode_slice(&mut input).unwrap(), None);
        assert_eq!((dec.held(), input.len()), (10_000, 0));
        let mut input: &[u8] = &m[m.len() - 10..];
        let got = dec.decode_slice(&mut input).unwrap().unwrap();
        assert_eq!((got.payload.len(), dec.held()), (10_000, 0));

        // A huge chunk size and a 1 MB message of which 1,000 bytes came: what is reserved
        // is the fixed first-chunk cap, not what was only announced.
        let mut b = BytesMut::new();
        encode_message(2, 0, 1, 0, &MAX_CHUNK_SIZE.to_be_bytes(), 128, &mut b);
        encode_message(4, 0, 9, 1, &pattern(1 << 20, 5), MAX_CHUNK_SIZE, &mut b);
        let mut dec = ChunkDecoder::new(MAX);
        let mut input: &[u8] = &b[..1000];
        let set = dec.decode_slice(&mut input).unwrap().unwrap();
        assert_eq!(set.type_id, 1);
        dec.set_chunk_size(MAX_CHUNK_SIZE).unwrap();
        assert_eq!(dec.decode_slice(&mut input).unwrap(), None);
        assert_eq!(dec.held(), INITIAL_ASSEMBLY_CAP);
        // A header split across reads is left in the input for the caller to keep.
        let mut input: &[u8] = &m[..5];
        let mut dec = ChunkDecoder::new(MAX);
        assert_eq!(dec.decode_slice(&mut input).unwrap(), None);
        assert_eq!((input.len(), dec.bytes_consumed()), (5, 0));
    }

    #[test]
    fn set_chunk_size_between_messages() {
        let p = pattern(300, 5);
        let mut b = BytesMut::new();
        encode_message(2, 0, 1, 0, &200u32.to_be_bytes(), 128, &mut b);
        encode_message(6, 40, 9, 1, &p, 200, &mut b);
        encode_message(2, 0, 1, 0, &MAX_CHUNK_SIZE.to_be_bytes(), 200, &mut b);
        encode_message(6, 80, 9, 1, &p, MAX_CHUNK_SIZE, &mut b);
        let got = decode_bytewise(&b).unwrap();
        assert_eq!(got[1], msg(6, 40, 9, 1, &p));
        assert_eq!(got[3], msg(6, 80, 9, 1, &p));
        assert_eq!(encoded_len(6, 80, 300, MAX_CHUNK_SIZE), 312);
        let mut dec = ChunkDecoder::new(MAX);
        assert_eq!(dec.set_chunk_size(0), Err(ChunkError::InvalidChunkSize(0)));
        let e = dec.set_chunk_size(0x8000_0000);
        assert_eq!(e, Err(ChunkError::InvalidChunkSize(0x8000_0000)));
        assert_eq!(dec.set_chunk_size(MAX_CHUNK_SIZE), Ok(()));
        assert_eq!(dec.chunk_size(), MAX_CHUNK_SIZE);
    }

    #[test]
    fn limits() {
        // 100_000_000 does not fit the 24-bit length field: use the 24-bit max over a 16e6 cap,
        // and 10_000_000 over a 1 MiB cap. Only the 12 header bytes are fed.
        let hdr = [0x03, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0];
        let mut dec = ChunkDecoder::new(16_000_000);
        let e = dec.decode(&mut BytesMut::from(&hdr[..])).unwrap_err();
        assert!(matches!(
            e,
            ChunkError::MessageTooLarge { len: 0xFF_FFFF, .. }
        ));
        let hdr = [0x03, 0, 0, 0, 0x98, 0x96, 0x80, 9, 1, 0, 0, 0]; // 10_000_000
        let mut dec = ChunkDecoder::new(1 << 20);
        let e = dec.decode(&mut BytesMut::from(&hdr[..])).unwrap_err();
        assert!(matches!(
            e,
            ChunkError::MessageTooLarge {
                len: 10_000_000,
                ..
            }
        ));
        // length change inside a partial message
        let mut b = vec![0x04, 0, 0, 0, 0, 0, 200, 8, 1, 0, 0, 0];
        b.extend(pattern(128, 0));
        b.extend([0x44, 0, 0, 0, 0, 0, 100, 8]);
        assert_eq!(
            decode_all(&b).unwrap_err(),
            ChunkError::LengthMismatch { csid: 4 }
        );
        // too many partial chunk streams
        let mut b = BytesMut::new();
        for csid in 3..3 + MAX_PARTIAL_STREAMS as u32 + 1 {
            let start = b.len();
            encode_message(csid, 0, 9, 1, &pattern(129, 0), 128, &mut b);
            b.truncate(start + encoded_len(csid, 0, 128, 128)); // drop the last chunk
        }
        let e = ChunkDecoder::new(MAX).decode(&mut b).unwrap_err();
        assert_eq!(e, ChunkError::TooManyChunkStreams(MAX_PARTIAL_STREAMS + 1));
    }

    #[test]
    fn stateful_encoder_compresses_and_round_trips() {
        let big = 0x0100_0000;
        let seq = vec![
            msg(4, 0, 8, 1, &[0xAF; 10]),                 // fmt0
            msg(4, 23, 8, 1, &[0xAF; 10]),                // fmt2 (never fmt3 after fmt0)
            msg(4, 46, 8, 1, &[0xAF; 10]),                // fmt3
            msg(6, 0, 9, 1, &pattern(300, 1)),            // fmt0 on another csid
            msg(6, 33, 9, 1, &pattern(50, 2)),            // fmt1 (length change)
            msg(4, 46, 8, 1, &[0xAF; 10]),                // fmt2 delta 0
            msg(4, 46, 8, 1, &[0xAF; 10]),                // fmt3 delta 0
            msg(4, 46, 18, 1, &[1; 10]),                  // fmt1 (type change)
            msg(4, 40, 8, 1, &[2; 10]),                   // fmt0 (backwards)
            msg(4, 50, 8, 2, &[3; 10]),                   // fmt0 (stream id change)
            msg(6, 33 + big, 9, 1, &pattern(200, 3)),     // fmt1, extended delta
            msg(6, 33 + 2 * big, 9, 1, &pattern(200, 4)), // fmt3, extended, new message
            msg(320, 7, 20, 0, &pattern(129, 5)),         // 3-byte basic header
        ];
        let fmts = [0, 2, 3, 0, 1, 2, 3, 1, 0, 0, 1, 3, 0];
        let mut enc = ChunkEncoder::new();
        let mut all = BytesMut::new();
        for (m, fmt) in seq.iter().zip(fmts) {
            let mut out = BytesMut::new();
            enc.encode(m, &mut out);
            assert_eq!(out[0] >> 6, fmt, "{m:?}");
            all.extend_from_slice(&out);
        }
        assert_eq!(decode_all(&all).unwrap(), seq);
        assert_eq!(decode_bytewise(&all).unwrap(), seq);
        // exact headers
        let mut enc = ChunkEncoder::new();
        let mut out = BytesMut::new();
        enc.encode(&seq[0], &mut out);
        out.clear();
        enc.encode(&seq[1], &mut out);
        assert_eq!(&out[..4], &[0x84, 0, 0, 23]);
        out.clear();
        enc.encode(&seq[2], &mut out);
        assert_eq!(out[0], 0xC4);
        assert_eq!(out.len(), 11);
        let mut enc = ChunkEncoder::new();
        enc.set_chunk_size(128);
        enc.encode(&msg(6, 1, 9, 1, &[]), &mut out);
        out.clear();
        enc.encode(&msg(6, 1 + big, 9, 1, &pattern(200, 0)), &mut out);
        assert_eq!(
            &out[..12],
            &[0x46, 0xFF, 0xFF, 0xFF, 0, 0, 200, 9, 1, 0, 0, 0]
        );
        assert_eq!(&out[12 + 128..12 + 128 + 5], &[0xC6, 1, 0, 0, 0]);
    }

    #[test]
    fn encoded_len_matches() {
        for csid in [2, 63, 64, 319, 320, 65599] {
            for ts in [0, 0xFF_FFFE, 0xFF_FFFF, u32::MAX] {
                for len in [0, 1, 127, 128, 129, 256, 1000] {
                    for cs in [1, 128, 4096] {
                        let mut out = BytesMut::new();
                        encode_message(csid, ts, 9, 1, &pattern(len, 0), cs, &mut out);
                        assert_eq!(out.len(), encoded_len(csid, ts, len, cs));
                        let m = msg(csid, ts, 9, 1, &pattern(len, 0));
                        let mut dec = ChunkDecoder::new(MAX);
                        dec.set_chunk_size(cs).unwrap();
                        assert_eq!(dec.decode(&mut out).unwrap(), Some(m));
                        assert!(out.is_empty());
                    }
                }
            }
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn random_stream(rng: &mut Rng) -> (Vec<u8>, Vec<RawMessage>) {
        let mut enc = ChunkEncoder::new();
        let mut out = BytesMut::new();
        let mut msgs = Vec::new();
        let mut ts = [0u32; 3];
        for _ in 0..rng.below(12) + 1 {
            let k = rng.below(3) as usize;
            let csid = [3, 4, 6, 70, 400][rng.below(5) as usize];
            ts[k] = match rng.below(5) {
                0 => ts[k],
                1 => ts[k].wrapping_add(0x0100_0000),
                2 => rng.next() as u32,
                _ => ts[k].wrapping_add(rng.below(100) as u32),
            };
            let m = if rng.below(8) == 0 {
                let size = [1u32, 60, 128, 4096][rng.below(4) as usize];
                msg(2, 0, 1, 0, &size.to_be_bytes())
            } else {
                let len = [0, 3, 10, 128, 300][rng.below(5) as usize];
                msg(csid, ts[k], 8 + k as u8, 1, &pattern(len, rng.next() as u8))
            };
            let cs = enc.chunk_size();
            if m.csid < 70 {
                enc.encode(&m, &mut out);
            } else {
                encode_message(
                    m.csid,
                    m.timestamp,
                    m.type_id,
                    m.stream_id,
                    &m.payload,
                    cs,
                    &mut out,
                );
            }
            if m.type_id == 1 {
                enc.set_chunk_size(be32(&m.payload));
            }
            msgs.push(m);
        }
        (out.to_vec(), msgs)
    }

    fn feed_split(rng: &mut Rng, bytes: &[u8]) -> Result<Vec<RawMessage>, ChunkError> {
        let mut dec = ChunkDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = (rng.below(40) as usize + 1).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            out.extend(drive(&mut dec, &mut buf)?);
        }
        Ok(out)
    }

    #[test]
    fn fuzz_random_and_mutated_streams() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for i in 0..4000 {
            let (mut bytes, msgs) = random_stream(&mut rng);
            if i % 4 == 0 {
                assert_eq!(feed_split(&mut rng, &bytes).unwrap(), msgs);
                continue;
            }
            if i % 4 == 1 {
                let n = rng.below(600) as usize;
                bytes = (0..n).map(|_| rng.next() as u8).collect();
            } else {
                for _ in 0..rng.below(6) + 1 {
                    let at = rng.below(bytes.len() as u64) as usize;
                    if let Some(b) = bytes.get_mut(at) {
                        *b = match rng.below(3) {
                            0 => rng.next() as u8,
                            1 => *b ^ 0xC0,
                            _ => 0xFF,
                        };
                    }
                }
            }
            let _ = feed_split(&mut rng, &bytes);
        }
    }

    #[test]
    fn payload_limit_skims_but_keeps_message_boundaries() {
        let mut wire = BytesMut::new();
        let big = vec![7u8; 10_000];
        encode_message(6, 1000, 9, 1, &big, 128, &mut wire);
        encode_message(4, 1010, 8, 1, &[1, 2, 3], 128, &mut wire);
        let mut dec = ChunkDecoder::new(1 << 20);
        dec.set_payload_limit(2);
        let total = wire.len() as u64;
        let a = dec.decode(&mut wire).unwrap().unwrap();
        assert_eq!(
            (a.timestamp, a.type_id, &a.payload[..]),
            (1000, 9, &[7u8, 7][..])
        );
        let b = dec.decode(&mut wire).unwrap().unwrap();
        assert_eq!(
            (b.timestamp, b.type_id, &b.payload[..]),
            (1010, 8, &[1u8, 2][..])
        );
        assert_eq!(dec.bytes_consumed(), total);
    }
}
