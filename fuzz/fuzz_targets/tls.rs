//! The RTMPS server side (rustls behind our TlsSession) fed arbitrary ciphertext in
//! fuzzer-chosen slices, replies drained and plaintext read as the shard's io layer does.
//! Bytes 0-1: split seed. Uses the checked-in test certificate.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use fuzz_common::{split, Bytes};
use libfuzzer_sys::fuzz_target;
use rtmp_edge::tls::{Acceptor, CertConfig};

fn acceptor() -> &'static Acceptor {
    static A: OnceLock<Acceptor> = OnceLock::new();
    A.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../src/tls/testdata");
        Acceptor::new(&[CertConfig {
            names: vec![],
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }])
        .expect("test certificate loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut r = Bytes(data);
    let seed = r.u16();
    let mut s = acceptor().session().expect("session");
    let mut out = Vec::new();
    let mut plain = [0u8; 4096];
    for piece in split(r.0, seed) {
        let res = s.feed(piece);
        if let Err(e) = &res {
            let _ = (e.reason(), e.to_string());
        }
        while s.wants_write() {
            out.clear();
            s.write_to(&mut out);
            if out.is_empty() {
                break;
            }
        }
        while s.read_plain(&mut plain) > 0 {}
        let _ = (s.is_handshaking(), s.peer_closed(), s.info());
        if res.is_err() {
            break;
        }
    }
});
