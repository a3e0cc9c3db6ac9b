//! Checks on FLV recordings written by the server: where they are, what ffprobe makes of
//! them, and whether the leading onMetaData was patched when the file was finalized.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rtmp_edge::media::flv;
use rtmp_edge::protocol::amf::{self, Amf0Value};

/// A fresh, empty directory for one test.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("record")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The files in `dir`, sorted.
pub fn recordings(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

pub struct FileProbe {
    pub codecs: Vec<String>,
    pub duration: f64,
    pub stderr: String,
}

/// ffprobe reading the whole file (counting packets, not decoding); it must succeed. The
/// duration is -1 when ffprobe has none.
pub fn probe_file(path: &Path) -> FileProbe {
    let probe = super::players::ffprobe(path.to_str().unwrap(), 0, false, &[]);
    assert!(probe.status.success(), "ffprobe {path:?} failed: {probe:?}");
    FileProbe {
        codecs: probe
            .streams
            .iter()
            .filter_map(|s| s.get("codec_name").cloned())
            .collect(),
        duration: probe.duration().unwrap_or(-1.0),
        stderr: probe.stderr.clone(),
    }
}

/// The recording's tags, and the duration and filesize of its leading onMetaData.
pub fn read_recording(path: &Path) -> (Vec<flv::FlvTag>, f64, f64, u64) {
    try_read_recording(path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// `read_recording` for tests that report every failed check at the end rather than
/// stopping at the first: what is wrong with the file instead of a panic.
pub fn try_read_recording(path: &Path) -> Result<(Vec<flv::FlvTag>, f64, f64, u64), String> {
    let bytes = Bytes::from(std::fs::read(path).map_err(|e| format!("read: {e}"))?);
    let len = bytes.len() as u64;
    let tags = flv::read_tags(&bytes).map_err(|e| format!("not FLV: {e:?}"))?;
    let first = tags.first().ok_or("no tags")?;
    if first.tag_type != flv::TAG_SCRIPT || first.timestamp != 0 {
        return Err(format!(
            "first tag is type {} at {} ms, not onMetaData at 0",
            first.tag_type, first.timestamp
        ));
    }
    let v = amf::decode_all(&first.data).map_err(|e| format!("bad onMetaData AMF: {e:?}"))?;
    if v.first() != Some(&Amf0Value::from("onMetaData")) {
        return Err(format!("first script tag is {:?}", v.first()));
    }
    let num = |k: &str| {
        v.get(1)
            .and_then(|o| o.get(k))
            .and_then(Amf0Value::as_number)
            .ok_or(format!("onMetaData has no {k}"))
    };
    let (duration, filesize) = (num("duration")?, num("filesize")?);
    Ok((tags, duration, filesize, len))
}

pub fn assert_h264_aac(p: &FileProbe) {
    assert!(
        p.codecs.iter().any(|c| c == "h264") && p.codecs.iter().any(|c| c == "aac"),
        "codecs {:?}",
        p.codecs
    );
}
