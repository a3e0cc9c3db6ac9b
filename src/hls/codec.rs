//! What HLS packaging reads from RTMP payloads: the decoder configuration records (AVC,
//! HEVC, AAC) with the few facts a playlist and an init segment state (RFC 6381 codec
//! string, picture size, sample rate), and each coded frame as an fMP4 sample: the AVCC
//! NAL units are already what `mdat` holds, so a sample is a slice of the shared payload.

use bytes::Bytes;

use crate::media::tag::{
    AUDIO_CODEC_AAC as FLV_AAC, AUDIO_CODEC_EX as FLV_AUDIO_EX, FOURCC_AVC, FOURCC_HEVC,
    PT_CODED_FRAMES, PT_CODED_FRAMES_X, PT_SEQUENCE_START, VIDEO_CODEC_AVC as FLV_AVC,
    VIDEO_CODEC_HEVC_LEGACY as FLV_HEVC,
};

const FOURCC_MP4A: u32 = u32::from_be_bytes(*b"mp4a");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Avc,
    Hevc,
}

/// A video decoder configuration: the record as sent (`avcC` / `hvcC` body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    pub codec: VideoCodec,
    pub record: Bytes,
    /// RFC 6381 codec string (`avc1.64001f`, `hvc1.1.6.L93.B0`).
    pub codecs: String,
    pub width: u32,
    pub height: u32,
}

/// An AAC decoder configuration (AudioSpecificConfig).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    pub asc: Bytes,
    pub object_type: u8,
    pub sample_rate: u32,
    pub channels: u16,
}

impl AudioConfig {
    pub fn codecs(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

/// One coded frame, ready for a `trun` entry and the `mdat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coded {
    /// Composition time offset in milliseconds (B-frames), 0 for audio.
    pub cts_ms: i32,
    pub keyframe: bool,
    pub data: Bytes,
}

/// What one video message is to the packager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoPacket {
    Config(VideoConfig),
    Frame(Coded),
    /// Anything else (end of sequence, E-RTMP metadata, multitrack, codecs HLS here does
    /// not package): skipped.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioPacket {
    Config(AudioConfig),
    Frame(Bytes),
    Other,
}

fn si24(b: &[u8]) -> i32 {
    let v = (i32::from(b[0]) << 16) | (i32::from(b[1]) << 8) | i32::from(b[2]);
    (v << 8) >> 8
}

/// Reads one video message body (legacy FLV or Enhanced RTMP).
pub fn video(p: &Bytes) -> VideoPacket {
    let Some(&b0) = p.first() else {
        return VideoPacket::Other;
    };
    let (codec, pt, body_at, cts) = if b0 & 0x80 == 0 {
        let codec = match b0 & 0x0F {
            FLV_AVC => VideoCodec::Avc,
            FLV_HEVC => VideoCodec::Hevc,
            _ => return VideoPacket::Other,
        };
        if p.len() < 5 {
            return VideoPacket::Other;
        }
        (codec, p[1], 5, si24(&p[2..5]))
    } else {
        let pt = b0 & 0x0F;
        let Some(fourcc) = p.get(1..5) else {
            return VideoPacket::Other;
        };
        let codec = match u32::from_be_bytes([fourcc[0], fourcc[1], fourcc[2], fourcc[3]]) {
            FOURCC_AVC => VideoCodec::Avc,
            FOURCC_HEVC => VideoCodec::Hevc,
            _ => return VideoPacket::Other,
        };
        match pt {
            PT_SEQUENCE_START => (codec, 0, 5, 0),
            PT_CODED_FRAMES if p.len() >= 8 => (codec, 1, 8, si24(&p[5..8])),
            PT_CODED_FRAMES_X => (codec, 1, 5, 0),
            _ => return VideoPacket::Other,
        }
    };
    let keyframe = (b0 >> 4) & 0x07 == 1;
    let body = p.slice(body_at..);
    match pt {
        0 => match codec {
            VideoCodec::Avc => avc_config(body).map_or(VideoPacket::Other, VideoPacket::Config),
            VideoCodec::Hevc => hevc_config(body).map_or(VideoPacket::Other, VideoPacket::Config),
        },
        1 if !body.is_empty() => VideoPacket::Frame(Coded {
            cts_ms: cts,
            keyframe,
            data: body,
        }),
        _ => VideoPacket::Other,
    }
}

/// Reads one audio message body: AAC, legacy or Enhanced RTMP.
pub fn audio(p: &Bytes) -> AudioPacket {
    let Some(&b0) = p.first() else {
        return AudioPacket::Other;
    };
    let (pt, body_at) = match b0 >> 4 {
        FLV_AAC if p.len() >= 2 => (p[1], 2),
        FLV_AUDIO_EX if p.len() >= 5 => {
            if u32::from_be_bytes([p[1], p[2], p[3], p[4]]) != FOURCC_MP4A {
                return AudioPacket::Other;
            }
            (b0 & 0x0F, 5)
        }
        _ => return AudioPacket::Other,
    };
    let body = p.slice(body_at..);
    match pt {
        0 => aac_config(body).map_or(AudioPacket::Other, AudioPacket::Config),
        1 if !body.is_empty() => AudioPacket::Frame(body),
        _ => AudioPacket::Other,
    }
}

/// Reads bits MSB first; an exhausted reader yields None.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// Exp-Golomb ue(v), bounded to 31 leading zeros.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some(((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)) as u32)
    }

    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        Some(if k % 2 == 1 {
            (k / 2 + 1) as i32
        } else {
            -((k / 2) as i32)
        })
    }
}

/// A NAL unit's payload without emulation-prevention bytes (00 00 03).
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// AVCDecoderConfigurationRecord: the codec string from its profile bytes, the picture
/// size from its first SPS.
pub fn avc_config(record: Bytes) -> Option<VideoConfig> {
    if record.len() < 7 || record[0] != 1 {
        return None;
    }
    let codecs = format!("avc1.{:02x}{:02x}{:02x}", record[1], record[2], record[3]);
    let sps_len = usize::from(u16::from_be_bytes([record[6], *record.get(7)?]));
    let sps = record.get(8..8 + sps_len)?;
    let (width, height) = avc_picture_size(sps).unwrap_or((0, 0));
    Some(VideoConfig {
        codec: VideoCodec::Avc,
        record,
        codecs,
        width,
        height,
    })
}

/// Width and height an H.264 SPS describes (after cropping).
pub fn avc_picture_size(sps_nal: &[u8]) -> Option<(u32, u32)> {
    let data = rbsp(sps_nal.get(1..)?);
    let mut r = Bits::new(&data);
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma = 1;
    let mut separate_planes = 0;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma = r.ue()?;
        if chroma == 3 {
            separate_planes = r.bit()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + i64::from(r.se()?)).rem_euclid(256);
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
              // u64 throughout: every field is attacker-chosen, up to 2^32 - 1.
    let w_mbs = u64::from(r.ue()?) + 1;
    let h_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.bit()?;
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut cl, mut cr, mut ct, mut cb) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? == 1 {
        cl = u64::from(r.ue()?);
        cr = u64::from(r.ue()?);
        ct = u64::from(r.ue()?);
        cb = u64::from(r.ue()?);
    }
    let array_type = if separate_planes == 1 { 0 } else { chroma };
    let (sub_w, sub_h): (u64, u64) = match array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let (unit_x, unit_y) = if array_type == 0 {
        (1, 2 - frame_mbs_only)
    } else {
        (sub_w, sub_h * (2 - frame_mbs_only))
    };
    let width = (w_mbs * 16).checked_sub((cl + cr) * unit_x)?;
    let height = ((2 - frame_mbs_only) * h_units * 16).checked_sub((ct + cb) * unit_y)?;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

/// HEVCDecoderConfigurationRecord: the codec string (ISO/IEC 14496-15 annex E); the
/// picture size is left to onMetaData (0 here).
pub fn hevc_config(record: Bytes) -> Option<VideoConfig> {
    if record.len() < 23 || record[0] != 1 {
        return None;
    }
    let space = record[1] >> 6;
    let tier = if record[1] & 0x20 != 0 { 'H' } else { 'L' };
    let profile = record[1] & 0x1F;
    let compat = u32::from_be_bytes([record[2], record[3], record[4], record[5]]).reverse_bits();
    let level = record[12];
    let mut codecs = format!(
        "hvc1.{}{}.{:X}.{}{}",
        ["", "A", "B", "C"][usize::from(space)],
        profile,
        compat,
        tier,
        level
    );
    // Constraint bytes, trailing zero bytes omitted.
    let constraints = &record[6..12];
    let used = constraints
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1);
    for b in &constraints[..used] {
        codecs.push_str(&format!(".{b:X}"));
    }
    Some(VideoConfig {
        codec: VideoCodec::Hevc,
        record,
        codecs,
        width: 0,
        height: 0,
    })
}

const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// AudioSpecificConfig: object type, sample rate and channels.
pub fn aac_config(asc: Bytes) -> Option<AudioConfig> {
    let mut r = Bits::new(&asc);
    let mut object_type = r.bits(5)?;
    if object_type == 31 {
        object_type = 32 + r.bits(6)?;
    }
    let index = r.bits(4)?;
    let sample_rate = if index == 15 {
        r.bits(24)?
    } else {
        *AAC_RATES.get(index as usize)?
    };
    let channel_config = r.bits(4)?;
    let channels = match channel_config {
        0 => 2, // program config element: not parsed, stereo is the usual answer
        7 => 8,
        c @ 1..=6 => c as u16,
        _ => return None,
    };
    if sample_rate == 0 || object_type > 255 {
        return None;
    }
    Some(AudioConfig {
        asc,
        object_type: object_type as u8,
        sample_rate,
        channels,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The AVCDecoderConfigurationRecord x264 writes for 640x360 High profile.
    pub(crate) const AVCC_640X360: &[u8] = &[
        0x01, 0x64, 0x00, 0x1e, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40,
        0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32,
        0x0f, 0x16, 0x2d, 0x96, 0x01, 0x00, 0x04, 0x68, 0xef, 0x8f, 0xcb, 0xfd, 0xf8, 0xf8, 0x00,
    ];
    /// x264 ultrafast (Constrained Baseline), same size.
    pub(crate) const AVCC_BASELINE: &[u8] = &[
        0x01, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80,
        0xbf, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c,
        0x58, 0xba, 0x80, 0x01, 0x00, 0x04, 0x68, 0xce, 0x0f, 0xc8,
    ];

    #[test]
    fn avc_record_gives_codec_string_and_cropped_size() {
        let c = avc_config(Bytes::from_static(AVCC_640X360)).unwrap();
        assert_eq!(c.codecs, "avc1.64001e");
        assert_eq!((c.width, c.height), (640, 360));
        let b = avc_config(Bytes::from_static(AVCC_BASELINE)).unwrap();
        assert_eq!(
            (b.codecs.as_str(), b.width, b.height),
            ("avc1.42c01e", 640, 360)
        );
    }

    #[test]
    fn aac_lc_44100_stereo() {
        let c = aac_config(Bytes::from_static(&[0x12, 0x10])).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels), (2, 44100, 2));
        assert_eq!(c.codecs(), "mp4a.40.2");
        let he = aac_config(Bytes::from_static(&[0x2b, 0x92, 0x08, 0x00])).unwrap();
        assert_eq!((he.object_type, he.sample_rate, he.channels), (5, 22050, 2));
        assert!(aac_config(Bytes::from_static(&[0x12])).is_none());
    }

    #[test]
    fn flv_video_packets() {
        let mut seq = vec![0x17, 0, 0, 0, 0];
        seq.extend_from_slice(AVCC_640X360);
        assert!(matches!(video(&Bytes::from(seq)), VideoPacket::Config(_)));
        let frame = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xd8, 0, 0, 0, 1, 0x41]);
        let VideoPacket::Frame(c) = video(&frame) else {
            panic!("a coded frame");
        };
        assert_eq!(
            (c.cts_ms, c.keyframe, &c.data[..]),
            (-40, false, &[0, 0, 0, 1, 0x41][..])
        );
        // Enhanced RTMP CodedFramesX, HEVC keyframe: no composition time field.
        let ex = Bytes::from_static(&[0x93, b'h', b'v', b'c', b'1', 0, 0, 0, 1, 0x26]);
        let VideoPacket::Frame(c) = video(&ex) else {
            panic!("a coded frame");
        };
        assert_eq!((c.cts_ms, c.keyframe, c.data.len()), (0, true, 5));
        assert_eq!(
            video(&Bytes::from_static(&[0x17, 2, 0, 0, 0])),
            VideoPacket::Other
        );
        assert_eq!(video(&Bytes::from_static(&[0x12, 0])), VideoPacket::Other);
    }

    #[test]
    fn hevc_codec_string() {
        // Main profile, compat flags 0x60000000, level 93, constraint byte 0xB0.
        let mut r = vec![1, 0x01, 0x60, 0, 0, 0, 0xB0, 0, 0, 0, 0, 0, 93];
        r.resize(23, 0);
        assert_eq!(
            hevc_config(Bytes::from(r)).unwrap().codecs,
            "hvc1.1.6.L93.B0"
        );
    }

    #[test]
    fn hostile_sps_does_not_panic() {
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = avc_picture_size(&junk);
            let _ = aac_config(Bytes::from(junk.clone()));
            let _ = hevc_config(Bytes::from(junk));
        }
        assert_eq!(avc_picture_size(&[0x67, 0xff, 0xff, 0xff, 0xff]), None);
        // Baseline SPS whose width field is the largest ue(v): no overflow, no size.
        let mut bits = String::from("01000010"); // profile 66
        bits.push_str("0000000000011110"); // constraints, level 30
        bits.push('1'); // sps id 0
        bits.push('1'); // log2_max_frame_num - 4 = 0
        bits.push_str("011"); // pic_order_cnt_type 2
        bits.push('1'); // max_num_ref_frames 0
        bits.push('0'); // gaps
        bits.push_str(&"0".repeat(31));
        bits.push_str(&"1".repeat(32)); // width in MBs - 1 = 2^32 - 2
        bits.push('1'); // height in map units - 1 = 0
        bits.push_str("11"); // frame_mbs_only, direct_8x8
        bits.push('1'); // cropping, then four big offsets
        for _ in 0..4 {
            bits.push_str(&"0".repeat(31));
            bits.push_str(&"1".repeat(32));
        }
        while bits.len() % 8 != 0 {
            bits.push('1');
        }
        let mut nal = vec![0x67];
        nal.extend(
            bits.as_bytes()
                .chunks(8)
                .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap()),
        );
        let _ = avc_picture_size(&nal);
        // What the fuzzer found (its multiply overflowed before u64).
        let found: &[u8] = &[
            0x6d, 0x65, 0x64, 0x1e, 0x2a, 0x12, 0x00, 0x00, 0xc1, 0x00, 0x00, 0x00, 0x00, 0x00,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x53, 0x5f, 0x6d, 0x73, 0x6e, 0x3d, 0x34, 0x26, 0x1c, 0x48, 0x4c,
            0x53, 0x2b, 0x73, 0x6b, 0x69, 0x70, 0x3d, 0x59, 0x45, 0x53,
        ];
        assert_eq!(avc_picture_size(found), None);
    }
}
