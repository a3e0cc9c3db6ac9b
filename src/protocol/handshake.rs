//! Sans-IO RTMP handshake (server and client side).
//!
//! Server: C0C1 in -> S0S1S2 out, then C2 in (never verified) -> done. If the
//! client's C1 carries a valid Flash Player digest (either schema), the reply
//! is the "complex" digest handshake (FMS key); otherwise the simple one with
//! S1[4..8] = 0 and S2 = byte-exact C1.
//!
//! Client: C0C1 out (optionally an ffmpeg-style digest C1), S0S1S2 in, C2 =
//! echo of S1 out.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Size of C1/C2/S1/S2.
pub const HANDSHAKE_SIZE: usize = 1536;
/// The only accepted C0/S0 version byte (plain RTMP).
pub const RTMP_VERSION: u8 = 3;

const DIGEST_LEN: usize = 32;
/// Digest offset base of schema 1 ("digest first"): offset bytes 8..12. ffmpeg's client uses it.
const BASE_DIGEST_FIRST: usize = 8;
/// Digest offset base of schema 0 ("key first"): offset bytes 772..776.
const BASE_KEY_FIRST: usize = 772;
/// Bytes of S2/C2 covered by the signature.
const SIG_DATA_LEN: usize = HANDSHAKE_SIZE - DIGEST_LEN;
/// First byte of a TLS handshake record (a ClientHello), where C0 belongs.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Version field we put in a complex S1 (must be >= 3 for ffmpeg to validate the digest).
const SERVER_VERSION: [u8; 4] = [0x04, 0x05, 0x00, 0x01];
/// Flash Player version ffmpeg announces: 9.0.124.2.
const CLIENT_VERSION: [u8; 4] = [0x09, 0x00, 0x7C, 0x02];

const KEY_TAIL: [u8; 32] = [
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
    0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
];
/// "Genuine Adobe Flash Player 001": the C1 digest key (the public 30-byte part).
const FP_KEY: &[u8; 30] = b"Genuine Adobe Flash Player 001";
/// "Genuine Adobe Flash Media Server 001": the S1 digest key (the public 36-byte part).
const FMS_KEY_OPEN: &[u8; 36] = b"Genuine Adobe Flash Media Server 001";

/// The full 68-byte FMS key (36 text bytes + 32 constant bytes).
fn fms_key_full() -> [u8; 68] {
    let mut k = [0u8; 68];
    k[..36].copy_from_slice(FMS_KEY_OPEN);
    k[36..].copy_from_slice(&KEY_TAIL);
    k
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum HandshakeError {
    /// C0/S0 was not 3 (6 and 8 are RTMPE, which we do not support).
    #[error("unsupported RTMP version byte {0:#04x}")]
    UnsupportedVersion(u8),
    /// C0 was 0x16, a TLS handshake record: an RTMPS client dialled the plain port.
    #[error("TLS ClientHello on the plain RTMP port (RTMPS clients use the TLS port)")]
    TlsOnPlainPort,
    /// `ClientHandshake::feed` was called before `ClientHandshake::start`.
    #[error("client handshake fed before start()")]
    NotStarted,
}

/// HMAC-SHA256 over the concatenation of `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Digest offset for a schema: (sum of the 4 bytes at `base`) % 728 + base + 4.
/// Always <= 772 + 4 + 727 = 1503, so the 32-byte digest fits in the packet.
fn digest_pos(p: &[u8; HANDSHAKE_SIZE], base: usize) -> usize {
    let sum: usize = p.iter().skip(base).take(4).map(|&b| usize::from(b)).sum();
    sum % 728 + base + 4
}

/// HMAC over `p` minus the 32 bytes at `gap`.
fn calc_digest(p: &[u8], gap: usize, key: &[u8]) -> [u8; DIGEST_LEN] {
    let (head, rest) = p.split_at(gap.min(p.len()));
    let tail = rest.get(DIGEST_LEN..).unwrap_or(&[]);
    hmac_sha256(key, &[head, tail])
}

fn digest_at(p: &[u8], pos: usize) -> Option<[u8; DIGEST_LEN]> {
    p.get(pos..pos + DIGEST_LEN)?.try_into().ok()
}

/// Look for a valid digest made with `key`, schema base 8 first (ffmpeg), then 772.
/// Returns (schema base, digest).
fn find_digest(p: &[u8; HANDSHAKE_SIZE], key: &[u8]) -> Option<(usize, [u8; DIGEST_LEN])> {
    [BASE_DIGEST_FIRST, BASE_KEY_FIRST]
        .into_iter()
        .find_map(|base| {
            let pos = digest_pos(p, base);
            let found = digest_at(p, pos)?;
            (calc_digest(p, pos, key) == found).then_some((base, found))
        })
}

/// Write a digest made with `key` at the schema `base` position; returns the digest.
fn imprint_digest(p: &mut [u8; HANDSHAKE_SIZE], base: usize, key: &[u8]) -> [u8; DIGEST_LEN] {
    let pos = digest_pos(p, base);
    let d = calc_digest(p, pos, key);
    if let Some(dst) = p.get_mut(pos..pos + DIGEST_LEN) {
        dst.copy_from_slice(&d);
    }
    d
}

/// S2 signature: HMAC(HMAC(68-byte FMS key, C1 digest), S2[..1504]).
fn s2_signature(c1_digest: &[u8; DIGEST_LEN], s2: &[u8]) -> [u8; DIGEST_LEN] {
    let key = hmac_sha256(&fms_key_full(), &[c1_digest]);
    hmac_sha256(&key, &[s2.get(..SIG_DATA_LEN).unwrap_or(s2)])
}

/// splitmix64; only used to fill the random parts of our packets.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Fixed-size accumulator for one 1536-byte packet.
struct Packet {
    buf: Box<[u8; HANDSHAKE_SIZE]>,
    len: usize,
}

impl Packet {
    fn new() -> Self {
        Packet {
            buf: Box::new([0; HANDSHAKE_SIZE]),
            len: 0,
        }
    }

    /// Copy as much of `input` as still fits; returns bytes taken.
    fn push(&mut self, input: &[u8]) -> usize {
        let take = (HANDSHAKE_SIZE - self.len).min(input.len());
        self.buf[self.len..self.len + take].copy_from_slice(&input[..take]);
        self.len += take;
        take
    }

    fn is_full(&self) -> bool {
        self.len == HANDSHAKE_SIZE
    }

    fn reset(&mut self) {
        self.len = 0;
    }
}

enum ServerPhase {
    C0,
    C1,
    C2 { got: usize },
    Done,
    Failed(HandshakeError),
}

/// Server side of the handshake.
pub struct ServerHandshake {
    epoch: u32,
    rng: Rng,
    phase: ServerPhase,
    c1: Packet,
    complex: bool,
}

impl ServerHandshake {
    /// `epoch` goes into S1's time field; `seed` seeds the PRNG for the random fill.
    pub fn new(epoch: u32, seed: u64) -> Self {
        ServerHandshake {
            epoch,
            rng: Rng(seed),
            phase: ServerPhase::C0,
            c1: Packet::new(),
            complex: false,
        }
    }

    /// Consume bytes of `input`; returns how many were consumed and appends
    /// S0S1S2 to `out` once C0C1 is complete. Never consumes past C2.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HandshakeError> {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or(&[]);
            match self.phase {
                ServerPhase::Failed(e) => return Err(e),
                ServerPhase::Done => return Ok(used),
                _ if rest.is_empty() => return Ok(used),
                ServerPhase::C0 => {
                    let v = rest[0];
                    if v != RTMP_VERSION {
                        let e = match v {
                            TLS_HANDSHAKE_RECORD => HandshakeError::TlsOnPlainPort,
                            v => HandshakeError::UnsupportedVersion(v),
                        };
                        self.phase = ServerPhase::Failed(e);
                        return Err(e);
                    }
                    used += 1;
                    self.phase = ServerPhase::C1;
                }
                ServerPhase::C1 => {
                    used += self.c1.push(rest);
                    if self.c1.is_full() {
                        self.respond(out);
                        self.phase = ServerPhase::C2 { got: 0 };
                    }
                }
                ServerPhase::C2 { got } => {
                    let take = (HANDSHAKE_SIZE - got).min(rest.len());
                    used += take;
                    self.phase = if got + take == HANDSHAKE_SIZE {
                        ServerPhase::Done
                    } else {
                        ServerPhase::C2 { got: got + take }
                    };
                }
            }
        }
    }

    fn respond(&mut self, out: &mut Vec<u8>) {
        let c1 = &*self.c1.buf;
        out.reserve(1 + 2 * HANDSHAKE_SIZE);
        out.push(RTMP_VERSION);
        let mut s1 = [0u8; HANDSHAKE_SIZE];
        s1[..4].copy_from_slice(&self.epoch.to_be_bytes());
        self.rng.fill(&mut s1[8..]);
        match find_digest(c1, FP_KEY) {
            Some((base, c1_digest)) => {
                self.complex = true;
                s1[4..8].copy_from_slice(&SERVER_VERSION);
                imprint_digest(&mut s1, base, FMS_KEY_OPEN);
                out.extend_from_slice(&s1);
                let mut s2 = [0u8; HANDSHAKE_SIZE];
                self.rng.fill(&mut s2[..SIG_DATA_LEN]);
                let sig = s2_signature(&c1_digest, &s2);
                s2[SIG_DATA_LEN..].copy_from_slice(&sig);
                out.extend_from_slice(&s2);
            }
            None => {
                out.extend_from_slice(&s1);
                out.extend_from_slice(c1);
            }
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, ServerPhase::Done)
    }

    /// Whether the client used the digest (complex) scheme, for logs.
    pub fn is_complex(&self) -> bool {
        self.complex
    }
}

enum ClientPhase {
    Created,
    S0,
    S1,
    S2,
    Done,
    Failed(HandshakeError),
}

/// Client side of the handshake.
pub struct ClientHandshake {
    epoch: u32,
    rng: Rng,
    complex: bool,
    phase: ClientPhase,
    buf: Packet,
    c1_digest: Option<[u8; DIGEST_LEN]>,
    s1_valid: bool,
    verified: bool,
}

impl ClientHandshake {
    /// `complex`: send an ffmpeg-style digest C1 (version 9.0.124.2, Flash
    /// Player key, schema base 8); else a plain C1 with zero version.
    pub fn new(epoch: u32, seed: u64, complex: bool) -> Self {
        ClientHandshake {
            epoch,
            rng: Rng(seed),
            complex,
            phase: ClientPhase::Created,
            buf: Packet::new(),
            c1_digest: None,
            s1_valid: false,
            verified: false,
        }
    }

    /// Append C0+C1 (1537 bytes) to `out`. Only the first call does anything.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if !matches!(self.phase, ClientPhase::Created) {
            return;
        }
        let mut c1 = [0u8; HANDSHAKE_SIZE];
        c1[..4].copy_from_slice(&self.epoch.to_be_bytes());
        self.rng.fill(&mut c1[8..]);
        if self.complex {
            c1[4..8].copy_from_slice(&CLIENT_VERSION);
            self.c1_digest = Some(imprint_digest(&mut c1, BASE_DIGEST_FIRST, FP_KEY));
        }
        out.reserve(1 + HANDSHAKE_SIZE);
        out.push(RTMP_VERSION);
        out.extend_from_slice(&c1);
        self.phase = ClientPhase::S0;
    }

    /// Consume S0S1S2; appends C2 (echo of S1) to `out` once S1 is in.
    /// Never consumes past S2.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HandshakeError> {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or(&[]);
            match self.phase {
                ClientPhase::Failed(e) => return Err(e),
                ClientPhase::Created => return Err(HandshakeError::NotStarted),
                ClientPhase::Done => return Ok(used),
                _ if rest.is_empty() => return Ok(used),
                ClientPhase::S0 => {
                    let v = rest[0];
                    if v != RTMP_VERSION {
                        self.phase = ClientPhase::Failed(HandshakeError::UnsupportedVersion(v));
                        return Err(HandshakeError::UnsupportedVersion(v));
                    }
                    used += 1;
                    self.phase = ClientPhase::S1;
                }
                ClientPhase::S1 => {
                    used += self.buf.push(rest);
                    if self.buf.is_full() {
                        out.extend_from_slice(&*self.buf.buf);
                        self.s1_valid =
                            self.complex && find_digest(&self.buf.buf, FMS_KEY_OPEN).is_some();
                        self.buf.reset();
                        self.phase = ClientPhase::S2;
                    }
                }
                ClientPhase::S2 => {
                    used += self.buf.push(rest);
                    if self.buf.is_full() {
                        if let (true, Some(d)) = (self.s1_valid, self.c1_digest) {
                            let s2 = &*self.buf.buf;
                            self.verified =
                                s2.get(SIG_DATA_LEN..) == Some(&s2_signature(&d, s2)[..]);
                        }
                        self.phase = ClientPhase::Done;
                    }
                }
            }
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, ClientPhase::Done)
    }

    /// True once done if we sent a digest C1 and the server answered with a
    /// valid S1 digest (FMS key) and a valid S2 signature.
    pub fn server_verified(&self) -> bool {
        self.verified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c0c1(version: [u8; 4], seed: u64) -> Vec<u8> {
        let mut v = vec![3u8; 1 + HANDSHAKE_SIZE];
        Rng(seed).fill(&mut v[1..]);
        v[5..9].copy_from_slice(&version);
        v
    }

    fn feed_all(s: &mut ServerHandshake, input: &[u8], step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < input.len() {
            let end = (off + step).min(input.len());
            let n = s.feed(&input[off..end], &mut out).unwrap();
            assert_eq!(n, end - off);
            off = end;
        }
        out
    }

    // Independent re-implementation of ffmpeg's helpers (rtmpproto.c / rtmpdigest.c).
    fn ff_calc_digest_pos(buf: &[u8], off: usize, mod_val: usize, add_val: usize) -> usize {
        (0..4).map(|i| buf[off + i] as usize).sum::<usize>() % mod_val + add_val
    }
    fn ff_hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
    fn ff_calc_digest(buf: &[u8], gap: usize, key: &[u8]) -> [u8; 32] {
        ff_hmac(key, &[&buf[..gap], &buf[gap + 32..]].concat())
    }
    /// rtmp_validate_digest(buf, off) with the 36-byte server key; 0 = not found.
    fn ff_validate_digest(buf: &[u8], off: usize) -> usize {
        let pos = ff_calc_digest_pos(buf, off, 728, off + 4);
        let d = ff_calc_digest(buf, pos, &fms_key_full()[..36]);
        usize::from(d[..] == buf[pos..pos + 32]) * pos
    }
    /// ffmpeg's client C0C1: 9.0.124.2 + digest at base 8 with the player key.
    fn ff_c0c1(seed: u64, base: usize) -> (Vec<u8>, usize) {
        let mut v = c0c1(CLIENT_VERSION, seed);
        let c1 = &mut v[1..];
        let pos = ff_calc_digest_pos(c1, base, 728, base + 4);
        let d = ff_calc_digest(c1, pos, FP_KEY);
        c1[pos..pos + 32].copy_from_slice(&d);
        (v, pos)
    }

    #[test]
    fn hmac_rfc4231_case2() {
        let d = hmac_sha256(b"Jefe", &[b"what do ya ", b"want for nothing?"]);
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let k = fms_key_full();
        assert_eq!((&k[..36], k[36], k[67]), (&FMS_KEY_OPEN[..], 0xF0, 0xAE));
    }

    #[test]
    fn digest_pos_always_in_range() {
        for base in [BASE_DIGEST_FIRST, BASE_KEY_FIRST] {
            for sum in 0..=4 * 255usize {
                let mut p = [0u8; HANDSHAKE_SIZE];
                let mut left = sum;
                for b in p.iter_mut().skip(base).take(4) {
                    *b = left.min(255) as u8;
                    left -= usize::from(*b);
                }
                let pos = digest_pos(&p, base);
                assert_eq!(pos, sum % 728 + base + 4);
                // Digest never overlaps its offset bytes and always fits.
                assert!(pos >= base + 4 && pos + DIGEST_LEN <= HANDSHAKE_SIZE);
            }
        }
        let p = [0xFFu8; HANDSHAKE_SIZE];
        assert_eq!(digest_pos(&p, BASE_KEY_FIRST), 1020 % 728 + 776);
    }

    #[test]
    fn simple_reply_is_byte_exact() {
        let input = c0c1([0; 4], 7);
        let mut s = ServerHandshake::new(0x0102_0304, 42);
        let out = feed_all(&mut s, &input, input.len());
        assert_eq!(out.len(), 3073);
        assert_eq!(out[0], 3);
        assert_eq!(&out[1..5], &[1, 2, 3, 4]);
        assert_eq!(&out[5..9], &[0, 0, 0, 0]);
        assert_eq!(&out[1 + HANDSHAKE_SIZE..], &input[1..]);
        assert!(!s.is_complex());
        assert!(!s.is_done());
        // C2 content is never checked.
        let mut out2 = Vec::new();
        let c2 = [0xAB; HANDSHAKE_SIZE];
        assert_eq!(s.feed(&c2, &mut out2), Ok(HANDSHAKE_SIZE));
        assert!(s.is_done() && out2.is_empty());

        // One byte at a time gives the same bytes for the same seed.
        let mut s2 = ServerHandshake::new(0x0102_0304, 42);
        assert_eq!(feed_all(&mut s2, &input, 1), out);
        let mut s3 = ServerHandshake::new(0x0102_0304, 43);
        assert_ne!(feed_all(&mut s3, &input, 1), out);
    }

    #[test]
    fn complex_ffmpeg_c1_validates_like_ffmpeg_player() {
        for seed in 0..20u64 {
            let (input, client_pos) = ff_c0c1(seed, 8);
            let mut s = ServerHandshake::new(1234, seed ^ 0x55);
            let step = 1 + (seed as usize * 97) % 700;
            let out = feed_all(&mut s, &input, step);
            assert!(s.is_complex());
            assert_eq!(out.len(), 3073);
            assert_eq!(out[0], 3);
            let serverdata = &out[..1 + HANDSHAKE_SIZE];
            let clientdata = &out[1 + HANDSHAKE_SIZE..];
            // ffmpeg (is_input && serverdata[5] >= 3): digest at 772, else at 8.
            assert!(serverdata[5] >= 3);
            let s1 = &serverdata[1..];
            // We answer at the client's schema (8), so 772 does not validate.
            assert_eq!(ff_validate_digest(s1, 772), 0);
            let server_pos = ff_validate_digest(s1, 8);
            assert_ne!(server_pos, 0, "Server response validating failed");
            let digest = ff_hmac(&fms_key_full(), &input[1 + client_pos..1 + client_pos + 32]);
            let signature = ff_hmac(&digest, &clientdata[..HANDSHAKE_SIZE - 32]);
            assert_eq!(signature[..], clientdata[HANDSHAKE_SIZE - 32..]);
        }
    }

    #[test]
    fn complex_c1_at_base_772_detected() {
        let (input, client_pos) = ff_c0c1(99, 772);
        assert!(client_pos >= 776);
        let mut s = ServerHandshake::new(0, 5);
        let out = feed_all(&mut s, &input, 100);
        assert!(s.is_complex());
        let s1 = &out[1..1 + HANDSHAKE_SIZE];
        assert_eq!(&s1[4..8], &SERVER_VERSION);
        assert_ne!(ff_validate_digest(s1, 772), 0);
        let digest = ff_hmac(&fms_key_full(), &input[1 + client_pos..1 + client_pos + 32]);
        let s2 = &out[1 + HANDSHAKE_SIZE..];
        assert_eq!(ff_hmac(&digest, &s2[..1504])[..], s2[1504..]);
    }

    #[test]
    fn bad_version_fails_on_first_byte() {
        for v in [0x00u8, 0x06, 0x08, 0xFF] {
            let err = Err(HandshakeError::UnsupportedVersion(v));
            let mut s = ServerHandshake::new(0, 1);
            let mut out = Vec::new();
            assert_eq!(s.feed(&[v], &mut out), err);
            assert!(out.is_empty());
            assert_eq!(s.feed(&[3], &mut out), err, "stays failed");
            let mut c = ClientHandshake::new(0, 1, false);
            c.start(&mut out);
            assert_eq!(c.feed(&[v], &mut out), err);
        }
        assert_eq!(
            HandshakeError::UnsupportedVersion(6).to_string(),
            "unsupported RTMP version byte 0x06"
        );
    }

    #[test]
    fn bytes_after_c2_not_consumed() {
        let mut input = c0c1([0; 4], 3);
        input.extend_from_slice(&[0u8; HANDSHAKE_SIZE]);
        input.extend_from_slice(b"chunk stream data");
        let mut s = ServerHandshake::new(0, 1);
        let mut out = Vec::new();
        assert_eq!(s.feed(&input, &mut out), Ok(1 + 2 * HANDSHAKE_SIZE));
        assert!(s.is_done());
        assert_eq!(out.len(), 3073);
        assert_eq!(s.feed(b"more", &mut out), Ok(0));
        assert_eq!(out.len(), 3073);
    }

    #[test]
    fn client_not_started_and_no_overconsume() {
        let mut c = ClientHandshake::new(0, 1, false);
        let mut out = Vec::new();
        assert_eq!(c.feed(&[3], &mut out), Err(HandshakeError::NotStarted));
        c.start(&mut out);
        assert_eq!(out.len(), 1 + HANDSHAKE_SIZE);
        c.start(&mut out);
        assert_eq!(out.len(), 1 + HANDSHAKE_SIZE);
        out.clear();
        let mut s0s1s2 = c0c1([0; 4], 9);
        s0s1s2.extend_from_slice(&[7u8; HANDSHAKE_SIZE + 10]);
        assert_eq!(c.feed(&s0s1s2, &mut out), Ok(1 + 2 * HANDSHAKE_SIZE));
        assert!(c.is_done() && !c.server_verified());
        assert_eq!(&out[..], &s0s1s2[1..1 + HANDSHAKE_SIZE], "C2 echoes S1");
    }

    fn run_pair(complex: bool, seed: u64) {
        let mut rng = Rng(seed);
        let mut c = ClientHandshake::new(10, seed, complex);
        let mut s = ServerHandshake::new(20, seed + 1);
        let mut to_server = Vec::new();
        let mut to_client = Vec::new();
        c.start(&mut to_server);
        assert_eq!(to_server.len(), 1537);
        if complex {
            assert_eq!(&to_server[5..9], &CLIENT_VERSION);
            let found = find_digest(to_server[1..].try_into().unwrap(), FP_KEY);
            assert_eq!(found.map(|f| f.0), Some(8));
        } else {
            assert_eq!(&to_server[5..9], &[0; 4]);
        }
        for _ in 0..10_000 {
            if c.is_done() && s.is_done() {
                break;
            }
            let n = (rng.next_u64() % 600) as usize + 1;
            let n = n.min(to_server.len());
            let used = s.feed(&to_server[..n], &mut to_client).unwrap();
            assert_eq!(used, n);
            to_server.drain(..n);
            let n = ((rng.next_u64() % 600) as usize + 1).min(to_client.len());
            let used = c.feed(&to_client[..n], &mut to_server).unwrap();
            assert_eq!(used, n);
            to_client.drain(..n);
        }
        assert!(c.is_done() && s.is_done());
        assert!(to_server.is_empty() && to_client.is_empty());
        assert_eq!(s.is_complex(), complex);
        assert_eq!(c.server_verified(), complex);
    }

    #[test]
    fn client_server_pair_both_modes() {
        for seed in 0..6 {
            run_pair(seed % 2 == 1, seed);
        }
    }

    #[test]
    fn fuzz_random_input_never_panics() {
        let mut rng = Rng(0xF00D);
        let mut complex_seen = false;
        for round in 0..400 {
            let len = (rng.next_u64() % 5000) as usize;
            let mut data = vec![0u8; len];
            rng.fill(&mut data);
            if round % 2 == 0 && !data.is_empty() {
                data[0] = 3;
            }
            if round % 5 == 0 {
                // Valid digest C0C1 followed by garbage: exercises the complex path.
                data.splice(0..0, ff_c0c1(round, 8).0);
            }
            let mut s = ServerHandshake::new(rng.next_u64() as u32, rng.next_u64());
            let mut c = ClientHandshake::new(0, rng.next_u64(), round % 3 == 0);
            let mut out = Vec::new();
            c.start(&mut out);
            let (mut so, mut co, mut off) = (0, 0, 0);
            while off < data.len() {
                let end = (off + 1 + (rng.next_u64() % 300) as usize).min(data.len());
                // After an error both keep returning it; consumption must stay bounded.
                so += s.feed(&data[off..end], &mut out).unwrap_or(0);
                co += c.feed(&data[off..end], &mut out).unwrap_or(0);
                off = end;
            }
            assert!(so <= 1 + 2 * HANDSHAKE_SIZE && co <= 1 + 2 * HANDSHAKE_SIZE);
            assert!(out.len() <= 1 + HANDSHAKE_SIZE + 3073 + HANDSHAKE_SIZE);
            complex_seen |= s.is_complex();
        }
        assert!(complex_seen);
    }
}
