//! CMAF fragmented MP4 (ISO/IEC 14496-12): the init segment (`ftyp` + `moov`) for up to one
//! video and one audio track, and fragments (`moof` + `mdat`) whose sample data are slices
//! of the shared frame payloads: a fragment is a small header buffer followed by those
//! slices, never a copy of the media.

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::codec::{AudioConfig, VideoCodec, VideoConfig};

pub const VIDEO_TRACK: u32 = 1;
pub const AUDIO_TRACK: u32 = 2;
/// Video runs at the MPEG 90 kHz clock; audio at its sample rate.
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// Writes boxes into a buffer, patching each size when the box is closed.
struct Writer {
    buf: BytesMut,
    open: Vec<usize>,
}

impl Writer {
    fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(1024),
            open: Vec::new(),
        }
    }

    fn begin(&mut self, kind: &[u8; 4]) {
        self.open.push(self.buf.len());
        self.buf.put_u32(0);
        self.buf.put_slice(kind);
    }

    fn begin_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) {
        self.begin(kind);
        self.buf.put_u32((u32::from(version) << 24) | flags);
    }

    fn end(&mut self) {
        let at = self.open.pop().expect("balanced boxes");
        let size = (self.buf.len() - at) as u32;
        self.buf[at..at + 4].copy_from_slice(&size.to_be_bytes());
    }

    fn zeros(&mut self, n: usize) {
        self.buf.put_bytes(0, n);
    }

    fn matrix(&mut self) {
        for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.buf.put_u32(v);
        }
    }
}

/// What an init segment describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracks {
    pub video: Option<VideoConfig>,
    pub audio: Option<AudioConfig>,
}

impl Tracks {
    pub fn timescale(&self, track: u32) -> u32 {
        match (track, &self.audio) {
            (AUDIO_TRACK, Some(a)) => a.sample_rate,
            _ => VIDEO_TIMESCALE,
        }
    }

    /// The CODECS attribute of a variant stream.
    pub fn codecs(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(v) = &self.video {
            parts.push(v.codecs.clone());
        }
        if let Some(a) = &self.audio {
            parts.push(a.codecs());
        }
        parts.join(",")
    }
}

/// `ftyp` + `moov` for the tracks.
pub fn init_segment(t: &Tracks) -> Bytes {
    let mut w = Writer::new();
    w.begin(b"ftyp");
    w.buf.put_slice(b"iso6");
    w.buf.put_u32(0);
    // No `cmfc`: a CMAF track holds one media type, and this file muxes audio and video.
    for brand in [b"iso6", b"mp41"] {
        w.buf.put_slice(brand);
    }
    w.end();

    w.begin(b"moov");
    w.begin_full(b"mvhd", 0, 0);
    w.zeros(8); // creation, modification
    w.buf.put_u32(1000);
    w.buf.put_u32(0); // duration: live
    w.buf.put_u32(0x0001_0000); // rate 1.0
    w.buf.put_u16(0x0100); // volume 1.0
    w.zeros(10);
    w.matrix();
    w.zeros(24);
    w.buf.put_u32(AUDIO_TRACK + 1); // next_track_ID
    w.end();
    if let Some(v) = &t.video {
        trak(&mut w, VIDEO_TRACK, VIDEO_TIMESCALE, Media::Video(v));
    }
    if let Some(a) = &t.audio {
        trak(&mut w, AUDIO_TRACK, a.sample_rate, Media::Audio(a));
    }
    w.begin(b"mvex");
    for (id, present) in [
        (VIDEO_TRACK, t.video.is_some()),
        (AUDIO_TRACK, t.audio.is_some()),
    ] {
        if present {
            w.begin_full(b"trex", 0, 0);
            w.buf.put_u32(id);
            w.buf.put_u32(1); // default_sample_description_index
            w.zeros(12); // default duration, size, flags
            w.end();
        }
    }
    w.end();
    w.end();
    w.buf.freeze()
}

enum Media<'a> {
    Video(&'a VideoConfig),
    Audio(&'a AudioConfig),
}

fn trak(w: &mut Writer, id: u32, timescale: u32, m: Media) {
    w.begin(b"trak");
    w.begin_full(b"tkhd", 0, 3); // enabled, in movie
    w.zeros(8);
    w.buf.put_u32(id);
    w.zeros(4);
    w.buf.put_u32(0); // duration
    w.zeros(8);
    w.buf.put_u16(0); // layer
    w.buf.put_u16(0); // alternate group
    w.buf.put_u16(if matches!(m, Media::Audio(_)) {
        0x0100
    } else {
        0
    });
    w.zeros(2);
    w.matrix();
    let (width, height) = match m {
        Media::Video(v) => (v.width, v.height),
        Media::Audio(_) => (0, 0),
    };
    w.buf.put_u32(width << 16);
    w.buf.put_u32(height << 16);
    w.end();

    w.begin(b"mdia");
    w.begin_full(b"mdhd", 0, 0);
    w.zeros(8);
    w.buf.put_u32(timescale);
    w.buf.put_u32(0);
    w.buf.put_u16(0x55C4); // "und"
    w.buf.put_u16(0);
    w.end();
    w.begin_full(b"hdlr", 0, 0);
    w.buf.put_u32(0);
    let (handler, name): (&[u8; 4], &[u8]) = match m {
        Media::Video(_) => (b"vide", b"VideoHandler\0"),
        Media::Audio(_) => (b"soun", b"SoundHandler\0"),
    };
    w.buf.put_slice(handler);
    w.zeros(12);
    w.buf.put_slice(name);
    w.end();
    w.begin(b"minf");
    match m {
        Media::Video(_) => {
            w.begin_full(b"vmhd", 0, 1);
            w.zeros(8);
            w.end();
        }
        Media::Audio(_) => {
            w.begin_full(b"smhd", 0, 0);
            w.zeros(4);
            w.end();
        }
    }
    w.begin(b"dinf");
    w.begin_full(b"dref", 0, 0);
    w.buf.put_u32(1);
    w.begin_full(b"url ", 0, 1); // media in this file
    w.end();
    w.end();
    w.end();
    w.begin(b"stbl");
    w.begin_full(b"stsd", 0, 0);
    w.buf.put_u32(1);
    match m {
        Media::Video(v) => video_entry(w, v),
        Media::Audio(a) => audio_entry(w, a),
    }
    w.end();
    for kind in [b"stts", b"stsc", b"stco"] {
        w.begin_full(kind, 0, 0);
        w.buf.put_u32(0);
        w.end();
    }
    w.begin_full(b"stsz", 0, 0);
    w.zeros(8);
    w.end();
    w.end(); // stbl
    w.end(); // minf
    w.end(); // mdia
    w.end(); // trak
}

fn video_entry(w: &mut Writer, v: &VideoConfig) {
    let (entry, config): (&[u8; 4], &[u8; 4]) = match v.codec {
        VideoCodec::Avc => (b"avc1", b"avcC"),
        VideoCodec::Hevc => (b"hvc1", b"hvcC"),
    };
    w.begin(entry);
    w.zeros(6);
    w.buf.put_u16(1); // data_reference_index
    w.zeros(16);
    w.buf.put_u16(v.width.min(0xFFFF) as u16);
    w.buf.put_u16(v.height.min(0xFFFF) as u16);
    w.buf.put_u32(0x0048_0000); // 72 dpi
    w.buf.put_u32(0x0048_0000);
    w.zeros(4);
    w.buf.put_u16(1); // frame_count
    w.zeros(32); // compressorname
    w.buf.put_u16(0x0018);
    w.buf.put_i16(-1);
    w.begin(config);
    w.buf.put_slice(&v.record);
    w.end();
    w.end();
}

fn descriptor(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    // Four-byte length form, as most muxers write it.
    let n = body.len() as u32;
    out.put_u8(0x80 | ((n >> 21) & 0x7F) as u8);
    out.put_u8(0x80 | ((n >> 14) & 0x7F) as u8);
    out.put_u8(0x80 | ((n >> 7) & 0x7F) as u8);
    out.put_u8((n & 0x7F) as u8);
    out.put_slice(body);
}

fn audio_entry(w: &mut Writer, a: &AudioConfig) {
    w.begin(b"mp4a");
    w.zeros(6);
    w.buf.put_u16(1);
    w.zeros(8);
    w.buf.put_u16(a.channels);
    w.buf.put_u16(16);
    w.zeros(4);
    w.buf.put_u32(a.sample_rate.min(0xFFFF) << 16);
    w.begin_full(b"esds", 0, 0);
    let mut dsi = BytesMut::new();
    descriptor(&mut dsi, 0x05, &a.asc);
    let mut dcd = BytesMut::new();
    dcd.put_u8(0x40); // MPEG-4 audio
    dcd.put_u8(0x15); // audio stream
    dcd.put_bytes(0, 3); // bufferSizeDB
    dcd.put_u32(0); // max bitrate
    dcd.put_u32(0); // avg bitrate
    dcd.put_slice(&dsi);
    let mut es = BytesMut::new();
    es.put_u16(0); // ES_ID
    es.put_u8(0);
    descriptor(&mut es, 0x04, &dcd);
    descriptor(&mut es, 0x06, &[0x02]);
    descriptor(&mut w.buf, 0x03, &es);
    w.end();
    w.end();
}

/// One sample of a fragment, times in its track's timescale.
#[derive(Debug, Clone)]
pub struct Sample {
    pub duration: u32,
    pub cts: i32,
    pub keyframe: bool,
    pub data: Bytes,
}

/// One track's run in a fragment.
pub struct Run<'a> {
    pub track: u32,
    /// Decode time of the first sample (`tfdt`).
    pub base: u64,
    pub samples: &'a [Sample],
    /// Audio and keyframes are sync samples; other video frames depend on earlier ones.
    pub is_video: bool,
}

const SAMPLE_SYNC: u32 = 0x0200_0000;
const SAMPLE_NON_SYNC: u32 = 0x0101_0000;

/// `moof` + `mdat` for the runs (empty runs are left out): the header as one buffer, then
/// each sample's data as it is. Returns the buffers and their total length.
pub fn fragment(sequence: u32, runs: &[Run]) -> (Vec<Bytes>, usize) {
    let mut w = Writer::new();
    w.begin(b"moof");
    w.begin_full(b"mfhd", 0, 0);
    w.buf.put_u32(sequence);
    w.end();
    let mut offsets = Vec::new();
    for run in runs.iter().filter(|r| !r.samples.is_empty()) {
        w.begin(b"traf");
        w.begin_full(b"tfhd", 0, 0x02_0000); // default-base-is-moof
        w.buf.put_u32(run.track);
        w.end();
        w.begin_full(b"tfdt", 1, 0);
        w.buf.put_u64(run.base);
        w.end();
        // data offset, duration, size, flags, composition offset per sample
        w.begin_full(b"trun", 1, 0x00_0F01);
        w.buf.put_u32(run.samples.len() as u32);
        offsets.push(w.buf.len());
        w.buf.put_u32(0);
        for s in run.samples {
            w.buf.put_u32(s.duration);
            w.buf.put_u32(s.data.len() as u32);
            let sync = !run.is_video || s.keyframe;
            w.buf
                .put_u32(if sync { SAMPLE_SYNC } else { SAMPLE_NON_SYNC });
            w.buf.put_i32(s.cts);
        }
        w.end();
        w.end();
    }
    w.end(); // moof
    let moof_len = w.buf.len();
    let data_len: usize = runs
        .iter()
        .flat_map(|r| r.samples)
        .map(|s| s.data.len())
        .sum();
    // Each run's data starts where the previous one's ends, after the mdat header.
    let mut at = moof_len + 8;
    for (slot, run) in offsets
        .iter()
        .zip(runs.iter().filter(|r| !r.samples.is_empty()))
    {
        w.buf[*slot..*slot + 4].copy_from_slice(&(at as u32).to_be_bytes());
        at += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    w.buf.put_u32((8 + data_len) as u32);
    w.buf.put_slice(b"mdat");
    let head = w.buf.freeze();
    let total = head.len() + data_len;
    let mut out = Vec::with_capacity(1 + runs.iter().map(|r| r.samples.len()).sum::<usize>());
    out.push(head);
    for run in runs {
        out.extend(run.samples.iter().map(|s| s.data.clone()));
    }
    (out, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::{aac_config, avc_config};

    fn boxes(b: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 8 <= b.len() {
            let size = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            out.push((
                String::from_utf8_lossy(&b[at + 4..at + 8]).into_owned(),
                size,
            ));
            assert!(size >= 8 && at + size <= b.len(), "box size in bounds");
            at += size;
        }
        assert_eq!(at, b.len(), "boxes cover the buffer");
        out
    }

    #[test]
    fn init_segment_is_ftyp_then_moov_with_both_tracks() {
        let t = Tracks {
            video: avc_config(Bytes::from_static(crate::media::codec::tests::AVCC_640X360)),
            audio: aac_config(Bytes::from_static(&[0x12, 0x10])),
        };
        let init = init_segment(&t);
        let top = boxes(&init);
        assert_eq!(top[0], ("ftyp".to_string(), 24));
        assert_eq!(top[1].0, "moov");
        let s = &init[..];
        let find = |k: &[u8]| s.windows(4).position(|w| w == k);
        assert!(find(b"avcC").is_some() && find(b"esds").is_some());
        assert_eq!(s.windows(4).filter(|w| w == b"trex").count(), 2);
        // The ASC sits at the end of the DecoderSpecificInfo descriptor.
        let dsi = s
            .windows(5)
            .position(|w| w == [0x05, 0x80, 0x80, 0x80, 0x02])
            .unwrap();
        assert_eq!(&s[dsi + 5..dsi + 7], &[0x12, 0x10]);
        assert_eq!(t.codecs(), "avc1.64001e,mp4a.40.2");
    }

    #[test]
    fn fragment_offsets_point_at_each_runs_data() {
        let v = [
            Sample {
                duration: 3600,
                cts: 3600,
                keyframe: true,
                data: Bytes::from_static(b"KEYFRAME"),
            },
            Sample {
                duration: 3600,
                cts: 0,
                keyframe: false,
                data: Bytes::from_static(b"P1"),
            },
        ];
        let a = [Sample {
            duration: 1024,
            cts: 0,
            keyframe: false,
            data: Bytes::from_static(b"AAC"),
        }];
        let (parts, total) = fragment(
            7,
            &[
                Run {
                    track: VIDEO_TRACK,
                    base: 1 << 33,
                    samples: &v,
                    is_video: true,
                },
                Run {
                    track: AUDIO_TRACK,
                    base: 48_000,
                    samples: &a,
                    is_video: false,
                },
            ],
        );
        let whole: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(whole.len(), total);
        let top = boxes(&whole);
        assert_eq!(
            top.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
            ["moof", "mdat"]
        );
        // trun data offsets, relative to the moof start.
        let truns: Vec<usize> = whole
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"trun")
            .map(|(i, _)| i)
            .collect();
        let off = |t: usize| u32::from_be_bytes(whole[t + 12..t + 16].try_into().unwrap()) as usize;
        assert_eq!(&whole[off(truns[0])..off(truns[0]) + 8], b"KEYFRAME");
        assert_eq!(&whole[off(truns[1])..off(truns[1]) + 3], b"AAC");
        // tfdt version 1 carries 64-bit times.
        let tfdt = whole.windows(4).position(|w| w == b"tfdt").unwrap();
        assert_eq!(whole[tfdt + 4], 1);
        assert_eq!(
            u64::from_be_bytes(whole[tfdt + 8..tfdt + 16].try_into().unwrap()),
            1 << 33
        );
        // Sample data is shared, not copied.
        assert_eq!(parts[1].as_ptr(), v[0].data.as_ptr());
    }
}
