//! ServerHandshake / ClientHandshake fed arbitrary bytes in fuzzer-chosen slices.
//! Byte 0: bit 0 client side, bit 1 complex (digest) C1 for the client; bytes 1-2: split
//! seed; the rest is what the peer sends.
#![no_main]
use fuzz_common::{split, Bytes};
use libfuzzer_sys::fuzz_target;
use rtmp_edge::protocol::handshake::{ClientHandshake, ServerHandshake, HANDSHAKE_SIZE};

const C0C1C2: usize = 1 + 2 * HANDSHAKE_SIZE;

fuzz_target!(|data: &[u8]| {
    let mut r = Bytes(data);
    let mode = r.u8();
    let seed = r.u16();
    let input = r.0;
    if mode & 1 == 0 {
        let mut hs = ServerHandshake::new(0x0102_0304, u64::from(seed));
        let mut out = Vec::new();
        let mut used_total = 0;
        for piece in split(input, seed) {
            match hs.feed(piece, &mut out) {
                Ok(used) => {
                    assert!(used <= piece.len());
                    used_total += used;
                    // Only a finished handshake leaves input for the chunk stream.
                    assert!(used == piece.len() || hs.is_done());
                }
                Err(e) => {
                    // Failure is sticky and happens on C0 only.
                    assert_eq!(hs.feed(piece, &mut out).unwrap_err(), e);
                    assert_eq!(used_total, 0);
                    break;
                }
            }
        }
        assert!(used_total <= C0C1C2);
        assert_eq!(hs.is_done(), used_total == C0C1C2);
        // S0S1S2 exactly once, when C1 is complete.
        assert_eq!(
            out.len(),
            if used_total > HANDSHAKE_SIZE {
                C0C1C2
            } else {
                0
            }
        );
        if !out.is_empty() && !hs.is_complex() {
            assert_eq!(&out[1 + HANDSHAKE_SIZE..], &input[1..1 + HANDSHAKE_SIZE]);
        }
    } else {
        let mut hs = ClientHandshake::new(7, u64::from(seed), mode & 2 != 0);
        let mut out = Vec::new();
        assert!(hs.feed(input, &mut out).is_err() || input.is_empty());
        out.clear();
        hs.start(&mut out);
        assert_eq!(out.len(), 1 + HANDSHAKE_SIZE);
        let mut used_total = 0;
        for piece in split(input, seed) {
            match hs.feed(piece, &mut out) {
                Ok(used) => {
                    assert!(used <= piece.len());
                    used_total += used;
                    assert!(used == piece.len() || hs.is_done());
                }
                Err(_) => {
                    assert!(hs.feed(piece, &mut out).is_err());
                    break;
                }
            }
        }
        assert!(used_total <= C0C1C2);
        assert_eq!(hs.is_done(), used_total == C0C1C2);
        let c2 = if used_total > HANDSHAKE_SIZE {
            HANDSHAKE_SIZE
        } else {
            0
        };
        assert_eq!(out.len(), 1 + HANDSHAKE_SIZE + c2);
        if c2 > 0 {
            // C2 echoes S1.
            assert_eq!(&out[1 + HANDSHAKE_SIZE..], &input[1..1 + HANDSHAKE_SIZE]);
        }
        if hs.server_verified() {
            assert!(mode & 2 != 0 && hs.is_done());
        }
    }
});
