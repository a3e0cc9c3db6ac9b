//! Helpers shared by the fuzz targets: a counting allocator (to check that what a peer
//! makes us hold stays proportional to what it sent), fuzzer-chosen split points, a
//! valid handshake prefix, and a tiny chunk-stream writer for the state-model target.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Counts live heap bytes and their peak, so targets can assert memory bounds.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            if new >= l.size() {
                let now = LIVE.fetch_add(new - l.size(), Relaxed) + (new - l.size());
                PEAK.fetch_max(now, Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Live heap bytes now.
pub fn live() -> usize {
    LIVE.load(Relaxed)
}

/// Starts a measurement: returns the baseline; `peak_since` gives the peak above it.
pub fn mark() -> usize {
    let now = LIVE.load(Relaxed);
    PEAK.store(now, Relaxed);
    now
}

pub fn peak_since(base: usize) -> usize {
    PEAK.load(Relaxed).saturating_sub(base)
}

/// A session fed `input_len` bytes may have allocated at most 256 bytes per input byte plus
/// 8 MiB (one message of the default cap) since `base`: memory proportional to input.
pub fn assert_peak_bounded(base: usize, input_len: usize) {
    let peak = peak_since(base);
    let bound = 256 * input_len + (8 << 20);
    assert!(
        peak <= bound,
        "peak {peak} > {bound} for {input_len} input bytes"
    );
}

/// Cuts `data` into pieces whose lengths come from `seed` (a tiny xorshift), so one input
/// is fed as a whole (seed 0) or in fuzzer-chosen slices, like socket reads.
pub fn split(data: &[u8], seed: u16) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![data];
    }
    let mut x = u32::from(seed) | 0x1_0000;
    // Pieces of 1 .. 2^(seed % 16) bytes, but at most ~256 of them (speed).
    let max = (1usize << ((seed & 0x0F) as usize).max(1)).max(data.len() / 128);
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x as usize % max + 1).min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// 3073 bytes that complete a plain handshake from either side: C0 + a zero C1 + C2 as a
/// client sends them, or S0 + S1 + S2 as our server answers a zero C1 (the same bytes).
pub fn handshake_prefix() -> Vec<u8> {
    let mut v = vec![0u8; 1 + 2 * 1536];
    v[0] = 3;
    v
}

/// The session targets' input layout: a mode byte, a split seed, then the peer's byte
/// stream, which mode bit 0 prefixes with a completed handshake.
pub fn session_input(data: &[u8]) -> (u8, u16, Vec<u8>) {
    let mut r = Bytes(data);
    let mode = r.u8();
    let seed = r.u16();
    let mut stream = Vec::new();
    if mode & 1 != 0 {
        stream = handshake_prefix();
    }
    stream.extend_from_slice(r.0);
    (mode, seed, stream)
}

/// Reads little pieces of the fuzz input in order, yielding zeros once it runs out.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
}
