//! FLV file container: reading tags out of a file body (the load generator's input) and
//! writing them (recordings). Tag bodies are the same bytes RTMP carries.

use bytes::Bytes;

pub const TAG_AUDIO: u8 = 8;
pub const TAG_VIDEO: u8 = 9;
pub const TAG_SCRIPT: u8 = 18;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    pub tag_type: u8,
    pub timestamp: u32,
    pub data: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("not an FLV file (bad signature)")]
    BadSignature,
    #[error("FLV data truncated at byte {0}")]
    Truncated(usize),
}

/// Parses every complete tag of an FLV file held in memory. A truncated last tag (a file
/// still being written) ends the list rather than failing it.
pub fn read_tags(file: &Bytes) -> Result<Vec<FlvTag>, FlvError> {
    if file.len() < 9 || &file[..3] != b"FLV" {
        return Err(FlvError::BadSignature);
    }
    let header_len = u32::from_be_bytes([file[5], file[6], file[7], file[8]]) as usize;
    // Skip the header and PreviousTagSize0.
    let mut at = header_len.max(9) + 4;
    if at > file.len() {
        return Err(FlvError::Truncated(file.len()));
    }
    let mut tags = Vec::new();
    while at + 11 <= file.len() {
        let h = &file[at..at + 11];
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let start = at + 11;
        let Some(end) = start.checked_add(size).filter(|&e| e <= file.len()) else {
            break;
        };
        tags.push(FlvTag {
            tag_type: h[0] & 0x1F,
            timestamp,
            data: file.slice(start..end),
        });
        at = end + 4;
    }
    Ok(tags)
}

/// The 9-byte FLV header plus PreviousTagSize0.
pub fn file_header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// The 11-byte header of a tag with a `size`-byte body (its PreviousTagSize is `size + 11`),
/// for writers that stream the body from a buffer they already hold.
pub fn tag_header(tag_type: u8, timestamp: u32, size: u32) -> [u8; 11] {
    let s = size.to_be_bytes();
    let t = timestamp.to_be_bytes();
    [tag_type, s[1], s[2], s[3], t[1], t[2], t[3], t[0], 0, 0, 0]
}

/// Appends one tag and its PreviousTagSize.
pub fn write_tag(out: &mut Vec<u8>, tag_type: u8, timestamp: u32, data: &[u8]) {
    let size = data.len() as u32;
    out.extend_from_slice(&tag_header(tag_type, timestamp, size));
    out.extend_from_slice(data);
    out.extend_from_slice(&(size + 11).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let mut f = file_header(true, true).to_vec();
        write_tag(&mut f, TAG_VIDEO, 0x0123_4567, &[0x17, 0, 1]);
        write_tag(&mut f, TAG_AUDIO, 40, &[0xAF, 1]);
        assert_eq!(&f[13..24], &[9, 0, 0, 3, 0x23, 0x45, 0x67, 0x01, 0, 0, 0]);
        let full = Bytes::from(f.clone());
        let tags = read_tags(&full).unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].timestamp, 0x0123_4567);
        assert_eq!(&tags[1].data[..], &[0xAF, 1]);
        // A truncated final tag is dropped, not an error.
        let cut = Bytes::from(f[..f.len() - 5].to_vec());
        assert_eq!(read_tags(&cut).unwrap().len(), 1);
        assert_eq!(
            read_tags(&Bytes::from_static(b"NOPE")),
            Err(FlvError::BadSignature)
        );
    }
}
