//! ServerSession fed a whole client byte stream in fuzzer-chosen slices, answered the way
//! the server's connection handler answers (publish and play accepted or refused by name,
//! output taken after every read), so the fuzzer reaches the post-connect states.
//! Byte 0: bit 0 prepend a valid C0C1C2 (the rest is the chunk stream), bit 1 refuse
//! publish/play, bits 2-3 max message size; bytes 1-2: split seed. Real captures start
//! with byte 0 = 0x00 (their own handshake). Checks that memory stays proportional to
//! what the peer sent.
#![no_main]
use fuzz_common::{assert_peak_bounded, mark, session_input, split};
use libfuzzer_sys::fuzz_target;
use rtmp_edge::protocol::session::{Event, ServerSession, SessionConfig};

/// The handler's name rule (src/shard/conn/handler.rs `valid_name`).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 512 && !name.chars().any(char::is_control)
}

fuzz_target!(|data: &[u8]| {
    let (mode, seed, stream) = session_input(data);
    let refuse = mode & 2 != 0;
    let max_message_size = [16 << 20, 1 << 20, 4096, 128][usize::from(mode >> 2 & 3)];
    let base = mark();
    let mut s = ServerSession::new(SessionConfig {
        max_message_size,
        ..SessionConfig::default()
    });
    let mut out_bytes = 0usize;
    for piece in split(&stream, seed) {
        let res = s.feed(piece);
        if let Err(e) = &res {
            let _ = e.kind();
            let _ = e.to_string();
        }
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::Publish {
                    stream_id, name, ..
                } => {
                    if refuse || !valid_name(&name) {
                        s.reject_publish(stream_id, "NetStream.Publish.BadName", "bad name");
                    } else {
                        s.accept_publish(stream_id, &name);
                    }
                }
                Event::Play {
                    stream_id,
                    name,
                    reset,
                    ..
                } => {
                    if refuse || !valid_name(&name) {
                        s.reject_play(stream_id, "NetStream.Play.StreamNotFound", "no");
                    } else {
                        s.accept_play(stream_id, &name, reset);
                    }
                }
                _ => {}
            }
        }
        if let Some(out) = s.take_output() {
            out_bytes += out.len();
        }
        if res.is_err() {
            break; // the connection is closed
        }
    }
    let _ = (
        s.app().len(),
        s.out_chunk_size(),
        s.bytes_received(),
        out_bytes,
    );
    drop(s);
    assert_peak_bounded(base, stream.len());
});
