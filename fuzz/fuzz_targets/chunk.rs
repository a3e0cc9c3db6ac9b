//! ChunkDecoder fed raw bytes (the chunk stream after the handshake) in fuzzer-chosen
//! slices, with Set Chunk Size and Abort applied the way the transport applies them.
//! Byte 0: max message size (2^(b % 26)) and payload limit; bytes 1-2: split seed.
//! Checks: no message longer than the limit, errors leave decoder and buffer unchanged,
//! byte accounting adds up, and what the decoder holds stays proportional to its input.
#![no_main]
use bytes::{Buf, BytesMut};
use fuzz_common::{mark, peak_since, split, Bytes};
use libfuzzer_sys::fuzz_target;
use rtmp_edge::protocol::chunk::{ChunkDecoder, MAX_PARTIAL_STREAMS};
use rtmp_edge::protocol::message::{parse_u32, ABORT, SET_CHUNK_SIZE};

fuzz_target!(|data: &[u8]| {
    let mut r = Bytes(data);
    let b0 = r.u8();
    let seed = r.u16();
    let input = r.0;
    let max = 1u32 << (b0 % 26);
    let limit = (b0 & 0x80 != 0).then_some(usize::from(b0 & 0x3F));
    let base = mark();
    let mut dec = ChunkDecoder::new(max);
    if let Some(l) = limit {
        dec.set_payload_limit(l);
    }
    let mut buf = BytesMut::new();
    let mut fed = 0u64;
    'outer: for piece in split(input, seed) {
        buf.extend_from_slice(piece);
        fed += piece.len() as u64;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => {
                    assert!(m.payload.len() <= max as usize, "message over the limit");
                    if let (Some(l), 8 | 9) = (limit, m.type_id) {
                        assert!(m.payload.len() <= l);
                    }
                    assert!(m.csid >= 2 && m.csid <= 65_599);
                    let ctl = match m.type_id {
                        SET_CHUNK_SIZE => parse_u32(1, &m.payload).map(|s| dec.set_chunk_size(s)),
                        ABORT => parse_u32(2, &m.payload).map(|c| Ok(dec.abort(c))),
                        _ => Ok(Ok(())),
                    };
                    if !matches!(ctl, Ok(Ok(()))) {
                        break 'outer; // the transport closes the connection here
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Fatal, and nothing of the bad header was consumed: trying again
                    // fails the same way and consumes nothing.
                    let at = (buf.len(), dec.bytes_consumed());
                    assert_eq!(dec.decode(&mut buf).unwrap_err(), e);
                    assert_eq!(at, (buf.len(), dec.bytes_consumed()));
                    break 'outer;
                }
            }
            assert_eq!(dec.bytes_consumed() + buf.len() as u64, fed);
        }
        assert_eq!(dec.bytes_consumed() + buf.len() as u64, fed);
    }
    // Memory a peer makes the decoder hold: a constant per partial stream (first chunk's
    // assembly buffer is at most 64 KiB) plus a small multiple of what it sent.
    let peak = peak_since(base);
    let bound = 64 * input.len() + MAX_PARTIAL_STREAMS * 64 * 1024 + (1 << 20);
    assert!(
        peak <= bound,
        "peak {peak} > {bound} for {} input bytes",
        input.len()
    );
    let _ = buf.remaining();
});
