//! HLS packaging of whatever a publisher sends: an FLV body's tags become frames fed to the
//! packager, its parts to a timeline whose playlists are rendered; the raw input as a
//! video/audio payload and an SPS; and as a viewer's request (file name, query). Nothing
//! may panic; every part is as long as it says.
#![no_main]
use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rtmp_edge::media::codec;
use rtmp_edge::hls::packager::{Out, Packager, PackagerConfig};
use rtmp_edge::hls::playlist::{Timeline, TimelineConfig};
use rtmp_edge::media::flv::{read_tags, TAG_AUDIO, TAG_VIDEO};
use rtmp_edge::media::frame::{Frame, MediaKind};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (file, query) = text.split_once('?').unwrap_or((text, ""));
        let _ = rtmp_edge::web::parse_request(file, Some(query));
    }
    let raw = Bytes::copy_from_slice(data);
    let _ = codec::video(&raw);
    let _ = codec::audio(&raw);
    let _ = codec::avc_picture_size(data);
    let _ = codec::avc_config(raw.clone());
    let _ = codec::hevc_config(raw.clone());
    let _ = codec::aac_config(raw.clone());

    let Ok(tags) = read_tags(&raw) else {
        return;
    };
    let cfg = PackagerConfig { segment_ms: 1000, part_ms: 100 };
    let mut p = Packager::new(cfg);
    let mut t = Timeline::new(TimelineConfig { window: 3, segment_ms: 1000, part_ms: 100 }, 0);
    let mut out = Vec::new();
    for (i, tag) in tags.iter().enumerate() {
        let kind = match tag.tag_type {
            TAG_AUDIO => MediaKind::Audio,
            TAG_VIDEO => MediaKind::Video,
            _ => MediaKind::Data,
        };
        if i % 97 == 96 {
            p.on_unpublish(&mut out);
            p.on_publish();
        }
        p.push(&Arc::new(Frame::new(kind, tag.timestamp, tag.data.clone(), 4096)), &mut out);
        for o in out.drain(..) {
            if let Out::Part(part) = &o {
                let len: usize = part.data.iter().map(|b| b.len()).sum();
                assert_eq!(len, part.len);
            }
            t.apply(o, 1_000_000 + i as u64);
        }
    }
    let _ = t.media("?x=1", false, 0);
    let _ = t.media("", true, u64::MAX);
    let _ = t.multivariant("");
    let last = t.segments.back().map_or(0, |s| s.msn);
    let _ = t.ready(last + 1, Some(0));
    let _ = t.segment(last);
    let _ = t.part(last, 0);
});
