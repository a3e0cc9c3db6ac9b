//! What an RTMPS connection keeps on the heap once it is established and idle between
//! writes: the TLS session of a viewer is per connection, so it must stay small (the
//! frames themselves are shared by every viewer).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::IoSlice;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use rtmp_edge::tls::{Acceptor, CertConfig, ClientTls, TlsSession};

struct Live;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards to the system allocator, only counting bytes.
unsafe impl GlobalAlloc for Live {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Live = Live;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/tls/testdata")
        .join(name)
}

fn pump(client: &mut TlsSession, server: &mut TlsSession) {
    for _ in 0..10 {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        client.write_to(&mut a);
        server.write_to(&mut b);
        if a.is_empty() && b.is_empty() {
            return;
        }
        server.feed(&a).unwrap();
        client.feed(&b).unwrap();
    }
}

#[test]
fn an_idle_tls_viewer_holds_little() {
    let acceptor = Acceptor::new(&[CertConfig {
        names: vec![],
        cert: data("server.pem"),
        key: data("server.key"),
    }])
    .unwrap();
    let trust = ClientTls::new(Some(&data("ca.pem"))).unwrap();
    let frame = vec![1u8; 300_000];
    let n = 50;
    let mut sessions = Vec::new();
    let mut out = Vec::with_capacity(400_000);
    let mut sink = vec![0u8; 64 * 1024];
    let before = LIVE.load(Relaxed);
    for _ in 0..n {
        let mut server = acceptor.session().unwrap();
        let mut client = trust.session("localhost").unwrap();
        pump(&mut client, &mut server);
        // A join burst (a GOP) goes out, then the viewer acks.
        server.seal(&[IoSlice::new(&frame)]).unwrap();
        out.clear();
        server.write_to(&mut out);
        client.feed(&out).unwrap();
        while client.read_plain(&mut sink) > 0 {}
        client.seal(&[IoSlice::new(&[0u8; 16])]).unwrap();
        out.clear();
        client.write_to(&mut out);
        server.feed(&out).unwrap();
        while server.read_plain(&mut sink) > 0 {}
        drop(client);
        sessions.push(server);
    }
    let per = (LIVE.load(Relaxed) - before) / n;
    eprintln!("heap per established server session: {per} bytes");
    // ~8 KB measured: rustls' connection state with its keys and a 4 KiB receive buffer.
    // What must not stay is the burst: 300 KB of records went through each session.
    assert!(per < 12 * 1024, "{per} bytes per idle TLS session");
}
