//! Hot-path micro benchmarks: chunk encoding of a large video message, AMF0 command
//! decoding, chunk-stream decode throughput, and fan-out of one frame to 1,000 viewers.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use rtmp_edge::fanout::queue::OutQueue;
use rtmp_edge::fanout::viewer::{Viewer, ViewerPolicy};
use rtmp_edge::media::cache::StreamCache;
use rtmp_edge::media::frame::{Frame, MediaKind};
use rtmp_edge::protocol::amf::{self, Amf0Value};
use rtmp_edge::protocol::chunk::{self, ChunkDecoder};
use rtmp_edge::protocol::message;

fn video_payload(len: usize) -> Bytes {
    let mut v = vec![0x27u8, 1, 0, 0, 0];
    v.resize(len, 0xAB);
    Bytes::from(v)
}

fn chunk_encode(c: &mut Criterion) {
    let payload = video_payload(100_000);
    let mut g = c.benchmark_group("chunk_encode_100k");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    for size in [128u32, 4096, 60000] {
        g.bench_function(format!("chunk_size_{size}"), |b| {
            b.iter(|| {
                let mut out =
                    BytesMut::with_capacity(chunk::encoded_len(6, 1000, payload.len(), size));
                chunk::encode_message(6, 1000, 9, 1, &payload, size, &mut out);
                out.freeze()
            })
        });
    }
    g.finish();
}

fn amf_decode(c: &mut Criterion) {
    let body = message::command_body(
        "connect",
        1.0,
        &[Amf0Value::Object(vec![
            ("app".into(), "live".into()),
            ("type".into(), "nonprivate".into()),
            ("flashVer".into(), "FMLE/3.0 (compatible; FMSc/1.0)".into()),
            ("tcUrl".into(), "rtmp://127.0.0.1:1935/live".into()),
        ])],
    );
    c.bench_function("amf0_decode_connect", |b| {
        b.iter(|| amf::decode_all(&body).unwrap())
    });
}

fn chunk_decode(c: &mut Criterion) {
    // One second of a ~1 Mbps stream at chunk size 4096: 30 video + 43 audio messages.
    let mut wire = BytesMut::new();
    let mut ts = 0;
    for i in 0..30 {
        chunk::encode_message(
            6,
            ts,
            9,
            1,
            &video_payload(if i == 0 { 30_000 } else { 3_500 }),
            4096,
            &mut wire,
        );
        for _ in 0..2 {
            chunk::encode_message(
                4,
                ts,
                8,
                1,
                &[0xAF, 1, 0x21, 0x22, 0x23].repeat(40),
                4096,
                &mut wire,
            );
        }
        ts += 33;
    }
    let wire = wire.freeze();
    let mut g = c.benchmark_group("chunk_decode");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("one_second_1mbps", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| {
                let mut dec = ChunkDecoder::new(16 << 20);
                dec.set_chunk_size(4096).unwrap();
                let mut n = 0;
                while let Some(m) = dec.decode(&mut buf).unwrap() {
                    n += m.payload.len();
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let cache = StreamCache::default();
    let mut viewers: Vec<Viewer> = (0..1000)
        .map(|_| {
            let mut v = Viewer::new(
                Rc::new(OutQueue::new()),
                1,
                "bench".into(),
                4096,
                ViewerPolicy::default(),
            );
            v.start(&cache);
            v
        })
        .collect();
    let key = Arc::new(Frame::new(
        MediaKind::Video,
        0,
        Bytes::from_static(&[0x17, 1, 0, 0, 0]),
        4096,
    ));
    let now = Instant::now();
    for v in &mut viewers {
        v.deliver(&key, now);
    }
    let frame = Arc::new(Frame::new(MediaKind::Video, 33, video_payload(4000), 4096));
    c.bench_function("fanout_enqueue_1000_viewers", |b| {
        b.iter(|| {
            let now = Instant::now();
            for v in &mut viewers {
                v.deliver(&frame, now);
            }
            for v in &viewers {
                v.queue.take_batch();
            }
        })
    });
}

criterion_group!(benches, chunk_encode, amf_decode, chunk_decode, fanout);
criterion_main!(benches);
