//! Real players for the client tests: ffprobe reports parsed into fields, players whose
//! stderr is kept, and where the server put a connection (its log span).

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{run_with_timeout, Proc, Server};

/// What ffprobe said about one input: exit status, stderr (empty at `-v error` when every
/// packet demuxed and decoded cleanly) and one `key=value` map per stream.
#[derive(Debug)]
pub struct Probe {
    pub status: ExitStatus,
    pub stderr: String,
    pub streams: Vec<HashMap<String, String>>,
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

    /// Clean exit and nothing logged at `-v error`.
    pub fn clean(&self) -> bool {
        self.status.success() && self.stderr.trim().is_empty()
    }
}

/// Reads `input` (URL or file) with ffprobe: `seconds` of media from the first packet (0 =
/// all of it), decoding every frame when `decode`, else only counting packets. `extra` goes
/// before the input (e.g. `-rtmp_flashver` to tag the connection).
pub fn ffprobe(input: &str, seconds: u32, decode: bool, extra: &[&str]) -> Probe {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-rw_timeout", "10000000"]);
    if seconds > 0 {
        cmd.args(["-read_intervals", &format!("%+{seconds}")]);
    }
    let (count, field) = if decode {
        ("-count_frames", "nb_read_frames")
    } else {
        ("-count_packets", "nb_read_packets")
    };
    cmd.arg(count)
        .arg("-show_entries")
        .arg(format!(
            "stream=index,codec_type,codec_name,width,height,{field}"
        ))
        .args(["-of", "compact=p=0"])
        .args(extra)
        .arg(input);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(seconds as u64 + 20));
    let streams = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split('|')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect();
    Probe {
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        streams,
    }
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
