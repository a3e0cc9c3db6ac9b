//! ClientSession (pushes, origin pulls, the load generator) fed a whole server byte
//! stream in fuzzer-chosen slices. Byte 0: bit 0 prepend a valid S0S1S2, bit 1 publish
//! (else play), bit 2 complex handshake, bit 3 send media once started, bit 4 a media
//! payload limit; bytes 1-2: split seed. Real captures start with 0x00.
#![no_main]
use bytes::Bytes as B;
use fuzz_common::{assert_peak_bounded, mark, session_input, split};
use libfuzzer_sys::fuzz_target;
use rtmp_edge::protocol::client::{ClientConfig, ClientEvent, ClientSession};

fuzz_target!(|data: &[u8]| {
    let (mode, seed, stream) = session_input(data);
    let base = mark();
    let mut cfg = ClientConfig::new("live", "rtmp://127.0.0.1/live");
    cfg.complex_handshake = mode & 4 != 0;
    cfg.max_message_size = 1 << 20;
    cfg.seed = u64::from(seed);
    let mut c = ClientSession::new(cfg);
    if mode & 16 != 0 {
        c.set_media_payload_limit(64);
    }
    if mode & 2 != 0 {
        c.publish("cam");
    } else {
        c.play("cam");
    }
    let _ = c.take_output();
    for piece in split(&stream, seed) {
        let res = c.feed(piece);
        while let Some(ev) = c.poll_event() {
            if let ClientEvent::Started { stream_id } = ev {
                if mode & 8 != 0 && mode & 2 != 0 {
                    c.send_metadata(0, b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09");
                    c.send_media(9, 0, B::from_static(b"\x17\x00\x00\x00\x00\x01\x64"));
                    c.unpublish(stream_id);
                }
            }
        }
        let _ = c.take_output();
        if res.is_err() {
            break;
        }
    }
    let _ = (c.stream_id(), c.bytes_received());
    drop(c);
    assert_peak_bounded(base, stream.len());
});
