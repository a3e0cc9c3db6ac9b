//! One FLV recording's bytes: the file header, our own onMetaData (the publisher's
//! properties merged with `duration` and `filesize` placeholders), tags with timestamps
//! rebased to start at 0, and, on finalize, the two placeholder doubles overwritten in
//! place, as ffmpeg's flvenc does. Generic over `Write + Seek` so tests run on memory.

use std::io::{self, Seek, SeekFrom, Write};

use crate::media::flv::{self, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use crate::media::frame::{Frame, MediaKind};
use crate::protocol::amf::{self, Amf0Value};

/// Where the script tag's body starts: FLV header (9) + PreviousTagSize0 (4) + tag header (11).
const META_BODY_AT: u64 = 13 + 11;

/// The placeholders our onMetaData carries, patched on finalize.
const DURATION: &str = "duration";
const FILESIZE: &str = "filesize";

/// Our onMetaData body and where the two doubles sit in it (offsets into the body).
#[derive(Debug, Clone, PartialEq)]
pub struct MetaBody {
    pub bytes: Vec<u8>,
    pub duration_at: usize,
    pub filesize_at: usize,
}

/// `onMetaData` + ECMA array: `duration` first, then the publisher's properties (minus its
/// own duration/filesize, which describe its source, not our file), then `filesize`.
pub fn meta_body(publisher: &[(String, Amf0Value)]) -> MetaBody {
    let mut b = Vec::with_capacity(256);
    Amf0Value::from("onMetaData").encode(&mut b);
    let kept: Vec<&(String, Amf0Value)> = publisher
        .iter()
        .filter(|(k, _)| k != DURATION && k != FILESIZE && k.len() <= usize::from(u16::MAX))
        .collect();
    b.push(0x08);
    b.extend_from_slice(&((kept.len() + 2) as u32).to_be_bytes());
    put_key(&mut b, DURATION);
    let duration_at = b.len() + 1;
    Amf0Value::Number(0.0).encode(&mut b);
    for (k, v) in kept {
        put_key(&mut b, k);
        v.encode(&mut b);
    }
    put_key(&mut b, FILESIZE);
    let filesize_at = b.len() + 1;
    Amf0Value::Number(0.0).encode(&mut b);
    b.extend_from_slice(&[0, 0, 0x09]);
    MetaBody {
        bytes: b,
        duration_at,
        filesize_at,
    }
}

fn put_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
}

/// The properties of a publisher's `onMetaData` body, if it is one we can read.
pub fn publisher_props(payload: &[u8]) -> Option<Vec<(String, Amf0Value)>> {
    let values = amf::decode_all(payload).ok()?;
    match values.as_slice() {
        [name, body, ..] if name.as_str() == Some("onMetaData") => {
            body.properties().map(<[_]>::to_vec)
        }
        _ => None,
    }
}

/// What finalize reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finished {
    pub bytes: u64,
    pub duration_secs: f64,
}

pub struct FlvWriter<W: Write + Seek> {
    out: W,
    /// Bytes written so far: the file size, without asking the file system.
    written: u64,
    /// Absolute file offsets of the two placeholder doubles, once the header is out.
    patch_at: Option<(u64, u64)>,
    /// Timestamp of the first audio/video tag written: the file's zero.
    base: Option<u32>,
    /// Inter frames before the first keyframe cannot be decoded; they are skipped.
    seen_keyframe: bool,
    /// Last written timestamp per [audio, video], to estimate the last frame's length.
    last: [Option<u32>; 2],
    /// End of the latest frame (its timestamp plus its estimated length), in ms.
    end_ms: u64,
}

impl<W: Write + Seek> FlvWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            patch_at: None,
            base: None,
            seen_keyframe: false,
            last: [None; 2],
            end_ms: 0,
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Appends one frame of the stream (frames come in the stream's order).
    pub fn write_frame(&mut self, f: &Frame) -> io::Result<()> {
        if self.patch_at.is_none() {
            // The publisher's metadata normally comes first; then it becomes ours.
            if f.kind == MediaKind::Metadata {
                if let Some(props) = publisher_props(&f.payload) {
                    return self.start(&props);
                }
            }
            self.start(&[])?;
        }
        match f.kind {
            MediaKind::Metadata | MediaKind::Data => {
                let ts = self.rebased(f.timestamp);
                self.tag(TAG_SCRIPT, ts, &f.payload)
            }
            MediaKind::Audio | MediaKind::Video => {
                let video = f.kind == MediaKind::Video;
                if video && !f.is_config() {
                    if f.info.keyframe {
                        self.seen_keyframe = true;
                    } else if !self.seen_keyframe {
                        return Ok(());
                    }
                }
                self.base.get_or_insert(f.timestamp);
                let ts = self.rebased(f.timestamp);
                let slot = &mut self.last[usize::from(video)];
                let len = slot.map_or(0, |prev| ts.saturating_sub(prev));
                *slot = Some(ts);
                self.end_ms = self.end_ms.max(u64::from(ts) + u64::from(len));
                self.tag(if video { TAG_VIDEO } else { TAG_AUDIO }, ts, &f.payload)
            }
        }
    }

    /// Timestamp relative to the first audio/video tag; anything before it (metadata,
    /// audio a few ms ahead of the first keyframe) is pinned to 0.
    fn rebased(&self, ts: u32) -> u32 {
        match self.base {
            Some(base) => {
                let d = ts.wrapping_sub(base);
                // A wrap-around distance of more than half the range means "before base".
                if d > u32::MAX / 2 {
                    0
                } else {
                    d
                }
            }
            None => 0,
        }
    }

    fn start(&mut self, props: &[(String, Amf0Value)]) -> io::Result<()> {
        let meta = meta_body(props);
        let mut head = Vec::with_capacity(13 + 11 + meta.bytes.len() + 4);
        head.extend_from_slice(&flv::file_header(true, true));
        flv::write_tag(&mut head, TAG_SCRIPT, 0, &meta.bytes);
        self.put(&head)?;
        self.patch_at = Some((
            META_BODY_AT + meta.duration_at as u64,
            META_BODY_AT + meta.filesize_at as u64,
        ));
        Ok(())
    }

    fn tag(&mut self, tag_type: u8, ts: u32, body: &[u8]) -> io::Result<()> {
        let size = u32::try_from(body.len())
            .ok()
            .filter(|&s| s < 1 << 24)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "tag over 16 MiB"))?;
        self.put(&flv::tag_header(tag_type, ts, size))?;
        self.put(body)?;
        self.put(&(size + 11).to_be_bytes())
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    /// Writes duration and filesize into the onMetaData at the start and flushes. A
    /// recording that never got a frame still becomes a valid, empty FLV.
    pub fn finalize(&mut self) -> io::Result<Finished> {
        if self.patch_at.is_none() {
            self.start(&[])?;
        }
        let (duration_at, filesize_at) = self.patch_at.expect("header written above");
        let duration_secs = self.end_ms as f64 / 1000.0;
        let bytes = self.written;
        self.out.seek(SeekFrom::Start(duration_at))?;
        self.out.write_all(&duration_secs.to_be_bytes())?;
        self.out.seek(SeekFrom::Start(filesize_at))?;
        self.out.write_all(&(bytes as f64).to_be_bytes())?;
        self.out.seek(SeekFrom::Start(bytes))?;
        self.out.flush()?;
        Ok(Finished {
            bytes,
            duration_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::io::Cursor;

    fn frame(kind: MediaKind, ts: u32, payload: &[u8]) -> Frame {
        Frame::new(kind, ts, Bytes::copy_from_slice(payload), 4096)
    }

    fn publisher_meta() -> Vec<u8> {
        let mut p = Vec::new();
        amf::encode_all(
            &[
                "onMetaData".into(),
                Amf0Value::EcmaArray(vec![
                    ("duration".into(), 0.0.into()),
                    ("width".into(), 640.0.into()),
                    ("encoder".into(), "Lavf".into()),
                    ("filesize".into(), 0.0.into()),
                ]),
            ],
            &mut p,
        );
        p
    }

    #[test]
    fn meta_body_offsets_are_the_doubles() {
        let m = meta_body(&[("width".into(), 640.0.into())]);
        // "onMetaData" (13) + marker and count (5) + "duration" key (10) + number marker.
        assert_eq!(m.duration_at, 13 + 5 + 10 + 1);
        assert_eq!(m.bytes[m.duration_at - 1], 0x00);
        assert_eq!(&m.bytes[m.duration_at..m.duration_at + 8], &[0u8; 8]);
        // ... + double (8) + "width" (7) + number (9) + "filesize" key (10) + marker.
        assert_eq!(m.filesize_at, m.duration_at + 8 + 7 + 9 + 10 + 1);
        assert_eq!(
            &m.bytes[m.filesize_at - 11..m.filesize_at - 1],
            b"\x00\x08filesize"
        );
        let v = amf::decode_all(&m.bytes).unwrap();
        assert_eq!(v[0], Amf0Value::from("onMetaData"));
        let keys: Vec<&str> = v[1]
            .properties()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["duration", "width", "filesize"]);
    }

    #[test]
    fn finalize_patches_duration_and_filesize_in_place() {
        let mut w = FlvWriter::new(Cursor::new(Vec::new()));
        // Republished stream: timestamps arrive continuing from an earlier session.
        w.write_frame(&frame(MediaKind::Metadata, 5000, &publisher_meta()))
            .unwrap();
        w.write_frame(&frame(MediaKind::Video, 5000, &[0x17, 0, 0, 0, 0, 1]))
            .unwrap();
        w.write_frame(&frame(MediaKind::Audio, 5000, &[0xAF, 0, 0x12, 0x10]))
            .unwrap();
        w.write_frame(&frame(MediaKind::Video, 5000, &[0x17, 1, 0, 0, 0, 9]))
            .unwrap();
        w.write_frame(&frame(MediaKind::Audio, 5010, &[0xAF, 1, 7]))
            .unwrap();
        w.write_frame(&frame(MediaKind::Video, 5040, &[0x27, 1, 0, 0, 0, 8]))
            .unwrap();
        let before = w.get_ref().get_ref().clone();
        let done = w.finalize().unwrap();
        let file = w.get_ref().get_ref().clone();
        assert_eq!(done.bytes, file.len() as u64);
        // Last video at 40 ms, 40 ms after the previous one: the file lasts 80 ms.
        assert_eq!(done.duration_secs, 0.08);

        let meta = meta_body(&publisher_props(&publisher_meta()).unwrap());
        let d = META_BODY_AT as usize + meta.duration_at;
        let s = META_BODY_AT as usize + meta.filesize_at;
        assert_eq!(&file[d..d + 8], &0.08f64.to_be_bytes());
        assert_eq!(&file[s..s + 8], &(file.len() as f64).to_be_bytes());
        // Nothing else changed.
        let mut expect = before.clone();
        expect[d..d + 8].copy_from_slice(&0.08f64.to_be_bytes());
        expect[s..s + 8].copy_from_slice(&(file.len() as f64).to_be_bytes());
        assert_eq!(file, expect);

        let tags = flv::read_tags(&Bytes::from(file)).unwrap();
        let seen: Vec<(u8, u32)> = tags.iter().map(|t| (t.tag_type, t.timestamp)).collect();
        assert_eq!(
            seen,
            [(18, 0), (9, 0), (8, 0), (9, 0), (8, 10), (9, 40)],
            "one script tag (ours, merged), then media rebased to 0"
        );
        let v = amf::decode_all(&tags[0].data).unwrap();
        let p = &v[1];
        assert_eq!(p.get("width").and_then(Amf0Value::as_number), Some(640.0));
        assert_eq!(p.get("encoder").and_then(Amf0Value::as_str), Some("Lavf"));
        assert_eq!(p.get("duration").and_then(Amf0Value::as_number), Some(0.08));
        assert_eq!(
            p.get("filesize").and_then(Amf0Value::as_number),
            Some(done.bytes as f64)
        );
        assert_eq!(p.properties().unwrap().len(), 4, "no duplicate keys");
    }

    #[test]
    fn late_metadata_and_leading_inter_frames() {
        let mut w = FlvWriter::new(Cursor::new(Vec::new()));
        w.write_frame(&frame(MediaKind::Video, 100, &[0x27, 1, 0, 0, 0, 1]))
            .unwrap(); // inter frame before any keyframe: skipped
        w.write_frame(&frame(MediaKind::Audio, 120, &[0xAF, 1, 7]))
            .unwrap();
        w.write_frame(&frame(MediaKind::Video, 133, &[0x17, 1, 0, 0, 0, 9]))
            .unwrap();
        w.write_frame(&frame(MediaKind::Metadata, 140, &publisher_meta()))
            .unwrap();
        let done = w.finalize().unwrap();
        let file = w.get_ref().get_ref().clone();
        let tags = flv::read_tags(&Bytes::from(file.clone())).unwrap();
        let seen: Vec<(u8, u32)> = tags.iter().map(|t| (t.tag_type, t.timestamp)).collect();
        assert_eq!(seen, [(18, 0), (8, 0), (9, 13), (18, 20)]);
        // Ours has only the two fields, patched.
        let meta = meta_body(&[]);
        let d = META_BODY_AT as usize + meta.duration_at;
        let s = META_BODY_AT as usize + meta.filesize_at;
        assert_eq!(&file[d..d + 8], &0.013f64.to_be_bytes());
        assert_eq!(&file[s..s + 8], &(done.bytes as f64).to_be_bytes());
        assert_eq!(tags[0].data.len(), meta.bytes.len());
    }

    #[test]
    fn empty_recording_is_a_valid_file() {
        let mut w = FlvWriter::new(Cursor::new(Vec::new()));
        let done = w.finalize().unwrap();
        let file = w.get_ref().get_ref().clone();
        assert_eq!(done.bytes, file.len() as u64);
        assert_eq!(done.duration_secs, 0.0);
        let tags = flv::read_tags(&Bytes::from(file)).unwrap();
        assert_eq!(tags.len(), 1);
    }
}
