//! What RTMP payloads say beyond their tag header: the decoder configuration records (AVC,
//! HEVC, AAC) with the facts a playlist, an init segment and a channel's compatibility
//! check need (RFC 6381 codec string, picture size, sample rate, channels), and each coded
//! frame as an fMP4 sample: the AVCC NAL units are already what `mdat` holds, so a sample
//! is a slice of the shared payload.

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

    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        (end <= self.data.len() * 8).then(|| self.pos = end)
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

/// HEVCDecoderConfigurationRecord: the codec string (ISO/IEC 14496-15 annex E) and the
/// picture size from its first SPS. The record is kept with array_completeness set on the
/// parameter-set arrays: an `hvc1` sample entry says they are all in it (14496-15 8.3.3),
/// which Apple's players require; sets a publisher repeats in-band change nothing.
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
    let (record, sps) = hevc_arrays(record);
    let (width, height) = sps.and_then(hevc_picture_size).unwrap_or((0, 0));
    Some(VideoConfig {
        codec: VideoCodec::Hevc,
        record,
        codecs,
        width,
        height,
    })
}

/// NAL unit types of the HEVC parameter sets: VPS, SPS, PPS.
const HEVC_VPS: u8 = 32;
const HEVC_SPS: u8 = 33;
const HEVC_PPS: u8 = 34;

/// Walks the record's NAL unit arrays: the record with array_completeness set on the
/// parameter-set arrays, and its first SPS. A malformed record comes back as it was.
fn hevc_arrays(record: Bytes) -> (Bytes, Option<Bytes>) {
    let mut flags = Vec::new(); // offsets of array headers lacking the completeness bit
    let mut sps = None;
    let mut at = 23;
    let count = record[22];
    for _ in 0..count {
        let (Some(&kind), Some(n)) = (record.get(at), record.get(at + 1..at + 3)) else {
            return (record, None);
        };
        let nal_type = kind & 0x3F;
        if matches!(nal_type, HEVC_VPS | HEVC_SPS | HEVC_PPS) && kind & 0x80 == 0 {
            flags.push(at);
        }
        at += 3;
        for _ in 0..u16::from_be_bytes([n[0], n[1]]) {
            let Some(len) = record.get(at..at + 2) else {
                return (record, None);
            };
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if record.len() < at + 2 + len {
                return (record, None);
            }
            if nal_type == HEVC_SPS && sps.is_none() {
                sps = Some(record.slice(at + 2..at + 2 + len));
            }
            at += 2 + len;
        }
    }
    if flags.is_empty() {
        return (record, sps);
    }
    let mut fixed = record.to_vec();
    for i in flags {
        fixed[i] |= 0x80;
    }
    (Bytes::from(fixed), sps)
}

/// Width and height an HEVC SPS describes (after the conformance window).
pub fn hevc_picture_size(sps_nal: Bytes) -> Option<(u32, u32)> {
    let data = rbsp(sps_nal.get(2..)?);
    let mut r = Bits::new(&data);
    r.skip(4)?; // sps_video_parameter_set_id
    let sub_layers = r.bits(3)? as usize; // sps_max_sub_layers_minus1
    r.skip(1)?; // sps_temporal_id_nesting_flag
                // profile_tier_level: general profile (88 bits) and level (8), then per sub-layer.
    r.skip(96)?;
    let mut present = [(0, 0); 8];
    for p in present.iter_mut().take(sub_layers) {
        *p = (r.bit()?, r.bit()?);
    }
    if sub_layers > 0 {
        r.skip(2 * (8 - sub_layers))?;
    }
    for &(profile, level) in present.iter().take(sub_layers) {
        r.skip(88 * profile as usize + 8 * level as usize)?;
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma = r.ue()?;
    let separate_planes = if chroma == 3 { r.bit()? } else { 0 };
    // u64 throughout: every field is attacker-chosen, up to 2^32 - 1.
    let width = u64::from(r.ue()?);
    let height = u64::from(r.ue()?);
    let (mut cl, mut cr, mut ct, mut cb) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? == 1 {
        cl = u64::from(r.ue()?);
        cr = u64::from(r.ue()?);
        ct = u64::from(r.ue()?);
        cb = u64::from(r.ue()?);
    }
    let (sub_w, sub_h): (u64, u64) = match if separate_planes == 1 { 0 } else { chroma } {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let width = width.checked_sub((cl + cr) * sub_w)?;
    let height = height.checked_sub((ct + cb) * sub_h)?;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
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
pub(crate) mod tests;
