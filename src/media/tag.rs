//! Inspection of RTMP audio/video payloads (FLV tag bodies), legacy and Enhanced RTMP.
//! Payloads stay opaque: we only read the few header bits the relay decides on.

/// What a relay needs to know about one audio or video message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TagInfo {
    /// Decoder configuration (AVC/HEVC/AV1 sequence start, AAC AudioSpecificConfig).
    pub sequence_header: bool,
    /// A video frame a decoder can start from.
    pub keyframe: bool,
    /// Codec: legacy FLV codec id, or the Enhanced RTMP FourCC as a big-endian u32.
    pub codec: u32,
    /// Enhanced RTMP track id (0 for legacy and single-track).
    pub track: u8,
    /// Enhanced RTMP video Metadata packet (colour info): cached like a sequence header.
    pub ext_metadata: bool,
}

pub const FOURCC_AVC: u32 = u32::from_be_bytes(*b"avc1");
pub const FOURCC_HEVC: u32 = u32::from_be_bytes(*b"hvc1");
pub const FOURCC_AV1: u32 = u32::from_be_bytes(*b"av01");
pub const FOURCC_VP9: u32 = u32::from_be_bytes(*b"vp09");

pub const VIDEO_CODEC_AVC: u8 = 7;
pub const VIDEO_CODEC_HEVC_LEGACY: u8 = 12;
pub const AUDIO_CODEC_AAC: u8 = 10;
pub const AUDIO_CODEC_EX: u8 = 9;

/// Enhanced RTMP packet types.
pub const PT_SEQUENCE_START: u8 = 0;
pub const PT_CODED_FRAMES: u8 = 1;
pub const PT_CODED_FRAMES_X: u8 = 3;
const PT_METADATA: u8 = 4;
const PT_MPEG2TS_SEQUENCE_START: u8 = 5;
const PT_MULTITRACK: u8 = 6;
const PT_MODEX: u8 = 7;

fn fourcc(p: &[u8], at: usize) -> Option<u32> {
    p.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Inspects a video message body.
pub fn inspect_video(p: &[u8]) -> TagInfo {
    let Some(&b0) = p.first() else {
        return TagInfo::default();
    };
    if b0 & 0x80 == 0 {
        let frame = b0 >> 4;
        let codec = b0 & 0x0F;
        let has_pkt_type = codec == VIDEO_CODEC_AVC || codec == VIDEO_CODEC_HEVC_LEGACY;
        let seq = has_pkt_type && p.get(1) == Some(&0);
        return TagInfo {
            sequence_header: seq,
            keyframe: frame == 1 && !seq,
            codec: u32::from(codec),
            track: 0,
            ext_metadata: false,
        };
    }
    let frame = (b0 >> 4) & 0x07;
    let mut pt = b0 & 0x0F;
    let mut at = 1;
    // ModEx wraps the real packet type after a size-prefixed blob; skip those, bounded.
    let mut guard = 0;
    while pt == PT_MODEX && guard < 8 {
        guard += 1;
        let Some(&size) = p.get(at) else {
            return TagInfo::default();
        };
        let mut len = usize::from(size) + 1;
        at += 1;
        if len == 256 {
            let Some(b) = p.get(at..at + 2) else {
                return TagInfo::default();
            };
            len = usize::from(u16::from_be_bytes([b[0], b[1]])) + 1;
            at += 2;
        }
        at += len;
        let Some(&next) = p.get(at) else {
            return TagInfo::default();
        };
        pt = next & 0x0F;
        at += 1;
    }
    let mut track = 0;
    if pt == PT_MULTITRACK {
        // byte: multitrack type << 4 | inner packet type, then FourCC (unless many-codec), track id.
        let Some(&mt) = p.get(at) else {
            return TagInfo::default();
        };
        pt = mt & 0x0F;
        let multitrack_type = mt >> 4;
        at += 1;
        let codec = if multitrack_type == 2 {
            None // ManyTracksManyCodecs: FourCC per track, after the track id
        } else {
            let c = fourcc(p, at);
            at += 4;
            c
        };
        track = p.get(at).copied().unwrap_or(0);
        let codec = codec.or_else(|| fourcc(p, at + 1)).unwrap_or(0);
        return ext_info(frame, pt, codec, track);
    }
    ext_info(frame, pt, fourcc(p, at).unwrap_or(0), track)
}

fn ext_info(frame: u8, pt: u8, codec: u32, track: u8) -> TagInfo {
    let seq = pt == PT_SEQUENCE_START || pt == PT_MPEG2TS_SEQUENCE_START;
    TagInfo {
        sequence_header: seq,
        keyframe: frame == 1 && (pt == PT_CODED_FRAMES || pt == PT_CODED_FRAMES_X),
        codec,
        track,
        ext_metadata: pt == PT_METADATA,
    }
}

/// Inspects an audio message body.
pub fn inspect_audio(p: &[u8]) -> TagInfo {
    let Some(&b0) = p.first() else {
        return TagInfo::default();
    };
    let format = b0 >> 4;
    if format == AUDIO_CODEC_EX {
        let pt = b0 & 0x0F;
        let (codec, track) = if pt == 5 {
            // Multitrack: type<<4|pt byte, FourCC, track id.
            (fourcc(p, 2).unwrap_or(0), p.get(6).copied().unwrap_or(0))
        } else {
            (fourcc(p, 1).unwrap_or(0), 0)
        };
        let inner_pt = if pt == 5 {
            p.get(1).map(|b| b & 0x0F).unwrap_or(1)
        } else {
            pt
        };
        return TagInfo {
            sequence_header: inner_pt == 0,
            keyframe: false,
            codec,
            track,
            ext_metadata: false,
        };
    }
    TagInfo {
        sequence_header: format == AUDIO_CODEC_AAC && p.get(1) == Some(&0),
        keyframe: false,
        codec: u32::from(format),
        track: 0,
        ext_metadata: false,
    }
}

/// Human-readable codec name for logs and the API.
pub fn video_codec_name(codec: u32) -> String {
    match codec {
        2 => "h263".into(),
        3 => "screen".into(),
        4 => "vp6".into(),
        5 => "vp6a".into(),
        7 => "h264".into(),
        12 => "hevc".into(),
        FOURCC_AVC => "h264".into(),
        FOURCC_HEVC => "hevc".into(),
        FOURCC_AV1 => "av1".into(),
        FOURCC_VP9 => "vp9".into(),
        c => String::from_utf8_lossy(&c.to_be_bytes()).into_owned(),
    }
}

/// Human-readable audio codec name for the API.
pub fn audio_codec_name(codec: u32) -> String {
    match codec {
        0 | 3 => "pcm".into(),
        1 => "adpcm".into(),
        2 | 14 => "mp3".into(),
        4..=6 => "nellymoser".into(),
        7 => "g711a".into(),
        8 => "g711u".into(),
        10 => "aac".into(),
        11 => "speex".into(),
        c if c > 0xFF => match &c.to_be_bytes() {
            b"mp4a" => "aac".into(),
            b"Opus" => "opus".into(),
            b"fLaC" => "flac".into(),
            b"ac-3" => "ac3".into(),
            b"ec-3" => "eac3".into(),
            b".mp3" => "mp3".into(),
            other => String::from_utf8_lossy(other).into_owned(),
        },
        c => format!("flv-{c}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_avc() {
        let seq = inspect_video(&[0x17, 0x00, 0, 0, 0, 1]);
        assert!(seq.sequence_header && !seq.keyframe);
        assert_eq!(seq.codec, 7);
        let key = inspect_video(&[0x17, 0x01, 0, 0, 0]);
        assert!(key.keyframe && !key.sequence_header);
        let inter = inspect_video(&[0x27, 0x01, 0, 0, 0]);
        assert!(!inter.keyframe && !inter.sequence_header);
        assert_eq!(inspect_video(&[]), TagInfo::default());
    }

    #[test]
    fn enhanced_hevc() {
        // 0x90 = ext | keyframe(1)<<4 | SequenceStart(0)
        let seq = inspect_video(b"\x90hvc1\x01\x02");
        assert!(seq.sequence_header && !seq.keyframe);
        assert_eq!(seq.codec, FOURCC_HEVC);
        let key = inspect_video(b"\x91hvc1\0\0\0");
        assert!(key.keyframe);
        let keyx = inspect_video(b"\x93av01");
        assert!(keyx.keyframe);
        assert_eq!(keyx.codec, FOURCC_AV1);
        let inter = inspect_video(b"\xa1hvc1\0\0\0");
        assert!(!inter.keyframe);
        // Metadata packet with keyframe bits is never a keyframe.
        let meta = inspect_video(b"\x94hvc1\x02\x00");
        assert!(!meta.keyframe && meta.ext_metadata);
        assert_eq!(video_codec_name(FOURCC_HEVC), "hevc");
    }

    #[test]
    fn enhanced_multitrack() {
        // ext|key|Multitrack(6), OneTrack(0)<<4 | CodedFrames(1), FourCC, track 2
        let p = b"\x96\x01av01\x02rest";
        let info = inspect_video(p);
        assert!(info.keyframe);
        assert_eq!(info.codec, FOURCC_AV1);
        assert_eq!(info.track, 2);
        // ManyTracksManyCodecs: FourCC after track id
        let p = b"\x96\x20\x01hvc1";
        let info = inspect_video(p);
        assert!(info.sequence_header);
        assert_eq!(info.track, 1);
        assert_eq!(info.codec, FOURCC_HEVC);
    }

    #[test]
    fn modex_is_unwrapped_and_bounded() {
        // ModEx(7) with 1-byte blob, then next byte's low nibble = CodedFrames
        let p = b"\x97\x00\xAA\x01hvc1";
        assert!(inspect_video(p).keyframe);
        // truncated or looping ModEx never panics
        let _ = inspect_video(b"\x97");
        let _ = inspect_video(&[0x97, 0, 0, 0x07, 0, 0, 0x07, 0, 0, 0x07]);
    }

    #[test]
    fn audio() {
        assert!(inspect_audio(&[0xAF, 0x00, 0x12, 0x10]).sequence_header);
        assert!(!inspect_audio(&[0xAF, 0x01, 0x21]).sequence_header);
        assert!(!inspect_audio(&[0x2F, 0x00]).sequence_header); // mp3 has no config
        let ex = inspect_audio(b"\x90Opus");
        assert!(ex.sequence_header);
        assert_eq!(ex.codec, u32::from_be_bytes(*b"Opus"));
        assert!(!inspect_audio(b"\x91Opus").sequence_header);
    }
}
