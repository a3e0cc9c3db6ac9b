//! Real players for the client tests: ffprobe reports parsed into fields (per stream, or
//! every frame), players whose stderr is kept, and where the server put a connection (its
//! log span).

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use super::{run_with_timeout, Proc, Server};

/// What ffprobe said about one input: exit status, stderr (empty at `-v error` when every
/// packet demuxed and decoded cleanly), one `key=value` map per stream and the format's.
#[derive(Debug)]
pub struct Probe {
    pub status: ExitStatus,
    pub stderr: String,
    pub streams: Vec<HashMap<String, String>>,
    pub format: HashMap<String, String>,
}

impl Probe {
    /// The first stream of a type ("video", "audio").
    pub fn stream(&self, codec_type: &str) -> Option<&HashMap<String, String>> {
        self.streams
            .iter()
            .find(|s| s.get("codec_type").map(String::as_str) == Some(codec_type))
    }

    pub fn field(&self, codec_type: &str, key: &str) -> Option<&str> {
        self.stream(codec_type)
            .and_then(|s| s.get(key))
            .map(String::as_str)
    }

    /// Frames (with decoding) or packets read from the first stream of a type; 0 if none.
    pub fn count(&self, codec_type: &str) -> u64 {
        ["nb_read_frames", "nb_read_packets"]
            .iter()
            .find_map(|k| self.field(codec_type, k)?.parse().ok())
            .unwrap_or(0)
    }

    /// The container's duration in seconds (files; a live stream has none).
    pub fn duration(&self) -> Option<f64> {
        self.format.get("duration")?.parse().ok()
    }

    /// Clean exit and nothing logged at `-v error`.
    pub fn clean(&self) -> bool {
        self.status.success() && self.stderr.trim().is_empty()
    }
}

/// Reads `input` (URL or file) with ffprobe: `seconds` of media from the first packet (0 =
/// all of it), decoding every frame when `decode`, else only counting packets. `extra` goes
/// before the input (e.g. `-rtmp_flashver` to tag the connection).
pub fn ffprobe(input: &str, seconds: u32, decode: bool, extra: &[&str]) -> Probe {
    let (count, field) = if decode {
        ("-count_frames", "nb_read_frames")
    } else {
        ("-count_packets", "nb_read_packets")
    };
    let entries =
        format!("stream=index,codec_type,codec_name,width,height,{field}:format=duration");
    let mut args = vec![count, "-show_entries", &entries];
    args.extend(extra);
    let (out, sections) = run_ffprobe(input, seconds, &args);
    let mut streams = Vec::new();
    let mut format = HashMap::new();
    for (section, fields) in sections {
        match section.as_str() {
            "stream" => streams.push(fields),
            "format" => format = fields,
            _ => {}
        }
    }
    Probe {
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        streams,
        format,
    }
}

/// Decodes `seconds` of `url`: clean, H.264 and AAC, at least `min_frames` frames of each.
pub fn assert_decodes(url: &str, seconds: u32, min_frames: u64) -> Probe {
    assert_decodes_args(url, seconds, min_frames, &[])
}

/// `assert_decodes` with `extra` ffprobe options before the input (e.g. TLS verification).
pub fn assert_decodes_args(url: &str, seconds: u32, min_frames: u64, extra: &[&str]) -> Probe {
    let probe = ffprobe(url, seconds, true, extra);
    eprintln!("ffprobe {url} {extra:?}: {probe:?}");
    assert!(probe.clean(), "ffprobe failed or logged errors: {probe:?}");
    assert_eq!(
        probe.field("video", "codec_name"),
        Some("h264"),
        "{probe:?}"
    );
    assert_eq!(probe.field("audio", "codec_name"), Some("aac"), "{probe:?}");
    assert!(
        probe.count("video") >= min_frames,
        "video frames: {probe:?}"
    );
    assert!(
        probe.count("audio") >= min_frames,
        "audio frames: {probe:?}"
    );
    probe
}

/// One frame ffprobe decoded.
#[derive(Debug, Clone)]
pub struct Frame {
    /// "video" or "audio".
    pub media_type: String,
    pub stream_index: usize,
    pub key: bool,
    /// "I", "P", "B" for video; "?" for audio.
    pub pict_type: String,
    pub pts_time: Option<f64>,
}

/// Every frame ffprobe decoded from one input, in decoding order.
#[derive(Debug)]
pub struct Frames {
    pub status: ExitStatus,
    pub stderr: String,
    pub frames: Vec<Frame>,
}

impl Frames {
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// Decodes `seconds` of `input` (URL or file; 0 = all of it) with ffprobe and lists every
/// frame; `select` narrows it to some streams (`-select_streams v:0`).
pub fn ffprobe_frames(input: &str, seconds: u32, select: Option<&str>) -> Frames {
    let mut args = Vec::new();
    if let Some(s) = select {
        args.extend(["-select_streams", s]);
    }
    args.extend([
        "-show_frames",
        "-show_entries",
        "frame=media_type,stream_index,key_frame,pict_type,pts_time",
    ]);
    let (out, sections) = run_ffprobe(input, seconds, &args);
    let frames = sections
        .into_iter()
        .filter(|(section, _)| section == "frame")
        .map(|(_, f)| Frame {
            media_type: f.get("media_type").cloned().unwrap_or_default(),
            stream_index: f
                .get("stream_index")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            key: f.get("key_frame").map(String::as_str) == Some("1"),
            pict_type: f.get("pict_type").cloned().unwrap_or_default(),
            pts_time: f.get("pts_time").and_then(|v| v.parse().ok()),
        })
        .collect();
    Frames {
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        frames,
    }
}

/// One line of ffprobe's compact output: its section ("stream", "frame", "format") and fields.
type Section = (String, HashMap<String, String>);

/// Runs ffprobe on `input` with `args`, at most `seconds` of media (0 = all) and killed if it
/// outlives that by 20 s; its output as (section, `key=value` fields) in order.
fn run_ffprobe(input: &str, seconds: u32, args: &[&str]) -> (Output, Vec<Section>) {
    let mut cmd = Command::new("ffprobe");
    // -rw_timeout: a stalled RTMP read fails instead of hanging until the kill.
    cmd.args(["-v", "error", "-rw_timeout", "10000000"]);
    if seconds > 0 {
        cmd.args(["-read_intervals", &format!("%+{seconds}")]);
    }
    // compact with section names: "stream|index=0|codec_type=video|…".
    cmd.args(args).args(["-of", "compact"]).arg(input);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(u64::from(seconds) + 20));
    let sections = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (section, fields) = l.trim().split_once('|')?;
            let fields = fields
                .split('|')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Some((section.to_string(), fields))
        })
        .collect();
    (out, sections)
}

/// Starts a player whose stderr is kept for `stderr_of`; killed on drop like any `Proc`.
/// Only for quiet commands (`-v error`, `-q`): the pipe is read after exit.
pub fn spawn_quiet(cmd: &mut Command) -> Proc {
    Proc(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
    )
}

/// What an exited `spawn_quiet` player wrote to stderr.
pub fn stderr_of(p: &mut Proc) -> String {
    let mut s = String::new();
    if let Some(mut e) = p.0.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// The shard and connection id of the connection whose `connect` logged `flash_ver`.
pub fn conn_of(server: &Server, flash_ver: &str) -> Option<(usize, u64)> {
    let line = server.wait_log(
        &["connect ", "app=", &format!("flash_ver=\"{flash_ver}\"")],
        Duration::from_secs(1),
    )?;
    Some((span_field(&line, "shard=")?, span_field(&line, "conn=")?))
}

/// A number that follows `name` in a log line's connection fields (`conn=3 peer=… shard=1`).
pub fn span_field<T: std::str::FromStr>(line: &str, name: &str) -> Option<T> {
    let rest = &line[line.find(name)? + name.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
