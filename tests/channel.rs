//! Always-on channels against real peers on loopback: ffmpeg publishers for the sources,
//! nginx-rtmp as the platform the channel pushes to, ffprobe decoding the channel from
//! nginx and from us, our own RTMP player keeping every timestamp, and the channel's HLS.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::hls::{get, MediaPlaylist};
use common::nginx::Nginx;
use common::players::{ffprobe_frames, Frames};
use common::publisher::{PublishSpec, Publisher};
use common::timeline::{assert_forward, Player};
use common::{slate_media, test_media_locked, Server};

const CHANNEL: &str = "live/main";

fn write_config(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("channel-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A server with `config`, packaging every stream as HLS on a media listener of its own.
fn channel_server(config: &Path) -> Server {
    Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--http-media",
        "127.0.0.1:0",
        "--hls",
        "all",
    ])
}

/// The server's "channel switched" line to `to`, within `timeout`.
fn wait_switch(server: &Server, to: &str, since: usize, timeout: Duration) -> String {
    let end = Instant::now() + timeout;
    let needle = format!("to={to} reason");
    loop {
        let lines = server.log_lines();
        if let Some(l) = lines[since.min(lines.len())..]
            .iter()
            .find(|l| l.contains("channel switched") && l.contains(&needle))
        {
            return l.clone();
        }
        assert!(
            Instant::now() < end,
            "no switch to {to}: {:#?}",
            &lines[since.min(lines.len())..]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn publish(server: &Server, key: &str) -> Publisher {
    PublishSpec::new(&test_media_locked(), &server.url(key))
        .limit_secs(120)
        .start()
}

/// Each decoded track's presentation times go forward, by at most one frame + 100 ms.
fn assert_continuous(frames: &Frames, what: &str) {
    assert!(
        frames.stderr.trim().is_empty(),
        "{what}: decode errors: {}",
        frames.stderr
    );
    for (kind, frame) in [("video", 1.0 / 30.0), ("audio", 1024.0 / 44100.0)] {
        let ts: Vec<f64> = frames
            .frames
            .iter()
            .filter(|f| f.media_type == kind)
            .filter_map(|f| f.pts_time)
            .collect();
        assert!(ts.len() > 100, "{what}: only {} {kind} frames", ts.len());
        for w in ts.windows(2) {
            assert!(w[1] > w[0], "{what}: {kind} went back or repeated: {w:?}");
            assert!(
                w[1] - w[0] <= frame + 0.1 + 0.0015,
                "{what}: {kind} jumped by {:.3} s: {w:?}",
                w[1] - w[0]
            );
        }
    }
}

/// Segments by number: (init URI, discontinuity before it, bytes); and the inits by URI.
type Fetched = (
    BTreeMap<u64, (String, bool, Vec<u8>)>,
    BTreeMap<String, Vec<u8>>,
);

/// The channel's media playlist followed every 400 ms: every segment fetched once, its
/// init segment with it, and every playlist checked against the previous one.
struct HlsFollower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Fetched>>,
}

impl HlsFollower {
    fn start(addr: SocketAddr) -> HlsFollower {
        let stop: Arc<AtomicBool> = Arc::default();
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let base = format!("/{CHANNEL}/");
            let mut segments = BTreeMap::new();
            let mut inits: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            let mut prev: Option<MediaPlaylist> = None;
            while !st.load(Ordering::Relaxed) {
                let r = get(addr, &format!("{base}media.m3u8"));
                if r.status == 200 {
                    let p = MediaPlaylist::parse(&r.text()).unwrap();
                    p.check(prev.as_ref())
                        .unwrap_or_else(|e| panic!("{e}\n{}", r.text()));
                    for s in &p.segments {
                        let Some(uri) = &s.uri else { continue };
                        if segments.contains_key(&s.msn) {
                            continue;
                        }
                        if !inits.contains_key(&s.map) {
                            let i = get(addr, &format!("{base}{}", s.map));
                            assert_eq!(i.status, 200, "init {}", s.map);
                            inits.insert(s.map.clone(), i.body);
                        }
                        let seg = get(addr, &format!("{base}{uri}"));
                        assert_eq!(seg.status, 200, "segment {uri}");
                        segments.insert(s.msn, (s.map.clone(), s.discontinuity, seg.body));
                    }
                    prev = Some(p);
                }
                std::thread::sleep(Duration::from_millis(400));
            }
            (segments, inits)
        });
        HlsFollower {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; decodes each run of segments that share an init, and returns how many
    /// discontinuities the playlists announced.
    fn finish(mut self, dir: &Path) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let (segments, inits) = self.thread.take().unwrap().join().expect("HLS follower");
        assert!(segments.len() >= 15, "only {} segments", segments.len());
        let msns: Vec<u64> = segments.keys().copied().collect();
        assert!(
            msns.windows(2).all(|w| w[1] == w[0] + 1),
            "a segment was missed: {msns:?}"
        );
        let discontinuities = segments.values().filter(|s| s.1).count();
        let mut runs: Vec<(String, Vec<u8>)> = Vec::new();
        for (map, _, body) in segments.values() {
            match runs.last_mut() {
                Some((m, bytes)) if m == map => bytes.extend_from_slice(body),
                _ => {
                    let mut bytes = inits[map].clone();
                    bytes.extend_from_slice(body);
                    runs.push((map.clone(), bytes));
                }
            }
        }
        for (i, (_, bytes)) in runs.iter().enumerate() {
            let path = dir.join(format!("hls-run-{i}.mp4"));
            std::fs::write(&path, bytes).unwrap();
            let frames = ffprobe_frames(path.to_str().unwrap(), 0, None);
            assert_continuous(&frames, &format!("HLS run {i}"));
        }
        discontinuities
    }
}

/// The issue's whole story on one channel: the primary is killed, the slate plays 10 s, a
/// backup takes over, the primary returns and takes back over once stable, then freezes
/// and the backup's cached keyframe replaces it. nginx (the "platform") sees one publish,
/// and every reader decodes one continuous timeline.
#[test]
fn a_channel_stays_on_air_through_loss_slate_backup_and_return() {
    let nginx = Nginx::start();
    let slate = slate_media("slate360", "640x360", 4);
    let config = write_config(
        "story",
        &format!(
            r#"
[[channel]]
name = "{CHANNEL}"
sources = ["live/cam", "live/cam-backup"]
slate = "{}"
switch_back_after_secs = 5

[[push]]
id = "platform"
url = "rtmp://{}/live"
streams = ["{CHANNEL}"]
"#,
            slate.display(),
            nginx.addr
        ),
    );
    let server = channel_server(&config);
    let media_addr = server.media_addr();
    server
        .wait_log(
            &["push destination state", "state=\"live\""],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("push never went live: {:#?}", server.log_lines()));
    let mut primary = publish(&server, "live/cam");
    wait_switch(&server, "live/cam", 0, Duration::from_secs(10));

    // Readers: through nginx, straight from us (ffprobe and our own player), and HLS.
    let reading = 36;
    let via_nginx = {
        let url = format!("rtmp://{}/live/main", nginx.addr);
        std::thread::spawn(move || ffprobe_frames(&url, reading, None))
    };
    let direct = {
        let url = server.url(CHANNEL);
        std::thread::spawn(move || ffprobe_frames(&url, reading, None))
    };
    let mut player = Player::start(server.addr, "live", "main");
    let hls = HlsFollower::start(media_addr);
    std::thread::sleep(Duration::from_secs(4));

    let mark = server.log_lines().len();
    primary.kill();
    let line = wait_switch(&server, "slate", mark, Duration::from_secs(5));
    assert!(line.contains("reason=\"ended\""), "{line}");
    std::thread::sleep(Duration::from_secs(10));

    let mark = server.log_lines().len();
    let mut backup = publish(&server, "live/cam-backup");
    wait_switch(&server, "live/cam-backup", mark, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));

    let mark = server.log_lines().len();
    primary.restart();
    let back_at = Instant::now();
    let line = wait_switch(&server, "live/cam", mark, Duration::from_secs(15));
    let waited = back_at.elapsed();
    assert!(line.contains("reason=\"returned\""), "{line}");
    assert!(
        waited >= Duration::from_secs(5),
        "switched back after {waited:?}, before the primary was stable for 5 s"
    );
    std::thread::sleep(Duration::from_secs(3));

    // A frozen encoder keeps its connection: the source timeout finds it.
    let mark = server.log_lines().len();
    primary.freeze();
    let line = wait_switch(&server, "live/cam-backup", mark, Duration::from_secs(5));
    assert!(line.contains("reason=\"stalled\""), "{line}");
    let switch_ms: u64 = line
        .split("switch_ms=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no switch_ms in {line}"));
    assert!(
        (1500..2500).contains(&switch_ms),
        "stall to backup took {switch_ms} ms (timeout 1500 + one 1 s GOP)"
    );
    std::thread::sleep(Duration::from_secs(3));

    let nginx_frames = via_nginx.join().unwrap();
    let direct_frames = direct.join().unwrap();
    player.stop();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let discontinuities = hls.finish(&dir);
    // Before the publishers go: their end would be one more switch.
    let (_, scrape) = server.http_get("/metrics");
    let (_, stream) = server.http_get(&format!("/api/v1/streams/{CHANNEL}"));
    let stream: serde_json::Value = serde_json::from_str(&stream).unwrap();
    assert_eq!(stream["origin"], "channel", "{stream:#}");
    assert_eq!(
        stream["video"]["width"], 640,
        "the channel's own onMetaData: {stream:#}"
    );
    primary.kill();
    backup.kill();

    assert_continuous(&nginx_frames, "via nginx-rtmp");
    assert_continuous(&direct_frames, "from rtmp-edge");
    let media = player.media();
    assert_forward(&media, "our player");
    // It joined mid-stream: headers first, then a keyframe, as for any stream.
    let start: Vec<_> = media.iter().filter(|m| m.video).take(2).collect();
    assert!(
        start[0].is_avc_config() && start[1].is_keyframe(),
        "late joiner's start: {start:?}"
    );
    for video in [true, false] {
        let step = if video { 34 } else { 24 };
        let ts: Vec<u32> = media
            .iter()
            .filter(|m| m.video == video && m.head[1] == 1)
            .map(|m| m.ts)
            .collect();
        if let Some(w) = ts.windows(2).find(|w| w[1] - w[0] > step + 100) {
            panic!("our player: jump {w:?} (video {video})");
        }
    }
    // Same encoding for slate and sources: their headers are equal and sent once, and HLS
    // has no reason for a discontinuity.
    let headers = media.iter().filter(|m| m.is_avc_config()).count();
    assert_eq!(headers, 1, "video sequence headers re-sent");
    assert_eq!(discontinuities, 0);

    assert_eq!(
        nginx.publishes("main"),
        1,
        "nginx saw the channel unpublish: {}",
        nginx.error_log()
    );
    // Metrics: switches by reason, time on slate, the switch-time histogram.
    let value = |needle: &str| -> f64 {
        scrape
            .lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {needle} in the scrape"))
    };
    let ch = "channel=\"live/main\"";
    assert_eq!(
        value(&format!(
            "rtmp_channel_switches_total{{{ch},reason=\"ended\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "rtmp_channel_switches_total{{{ch},reason=\"stalled\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "rtmp_channel_switches_total{{{ch},reason=\"returned\"}}"
        )),
        3.0
    );
    let on_slate = value(&format!("rtmp_channel_slate_seconds_total{{{ch}}}"));
    assert!((9.0..=13.0).contains(&on_slate), "slate seconds {on_slate}");
    let count = value(&format!("rtmp_channel_switch_seconds_count{{{ch}}}"));
    let within = value(&format!(
        "rtmp_channel_switch_seconds_bucket{{{ch},le=\"2.5\"}}"
    ));
    assert_eq!(count, 2.0, "two losses measured");
    assert_eq!(within, count, "a switch took longer than timeout + one GOP");
}

fn channel_status(server: &Server, name: &str) -> serde_json::Value {
    let (code, body) = server.http_get(&format!("/api/v1/channels/{name}"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_status(
    server: &Server,
    name: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let s = channel_status(server, name);
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < end, "{name}: never {what}: {s:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A slate whose picture size differs from the source's: a warning (log, API) on a normal
/// channel; refused on a strict one, when the source publishes and again when a reload
/// brings a differing file, while a matching one loads. Operators pin through the API.
#[test]
fn a_differing_slate_is_reported_and_refused_in_strict_mode() {
    let small = slate_media("slate240", "320x240", 2);
    let same = slate_media("slate360", "640x360", 4);
    let text = |strict_slate: &Path| {
        format!(
            r#"
[[channel]]
name = "live/warn"
sources = ["live/w"]
slate = "{}"

[[channel]]
name = "live/strict"
sources = ["live/s"]
slate = "{}"
strict = true
"#,
            small.display(),
            strict_slate.display()
        )
    };
    let config = write_config("strict", &text(&small));
    let server = channel_server(&config);
    let s = wait_status(&server, "live/strict", "on slate", |s| {
        s["on_air"] == "slate"
    });
    wait_status(&server, "live/warn", "on slate", |s| s["on_air"] == "slate");
    let mut player = Player::start(server.addr, "live", "warn");
    assert_eq!(
        s["slate"]["format"], "H.264 320x240, AAC 44100 Hz 1 ch",
        "{s:#}"
    );
    let mut w = publish(&server, "live/w");
    let mut st = publish(&server, "live/s");

    let warn = wait_status(&server, "live/warn", "on its source", |s| {
        s["on_air"] == "live/w" && !s["warnings"].as_array().unwrap().is_empty()
    });
    let text_of = |s: &serde_json::Value| s["warnings"].to_string();
    assert!(
        text_of(&warn).contains("640x360 instead of H.264 320x240"),
        "{warn:#}"
    );
    assert!(
        !warn["slate"].is_null(),
        "a normal channel keeps its slate: {warn:#}"
    );
    assert!(server.logged(&["source live/w differs from the slate"]));

    let strict = wait_status(&server, "live/strict", "slate refused", |s| {
        s["slate"]["refused"] == true
    });
    assert_eq!(strict["on_air"], "live/s", "{strict:#}");
    assert!(
        text_of(&strict).contains("slate refused (strict)"),
        "{strict:#}"
    );
    assert!(server.logged(&["slate refused (strict)"]));

    // Reload: a matching slate loads; a differing one is refused and the old one stays.
    std::fs::write(&config, text(&same)).unwrap();
    server.signal("HUP");
    let strict = wait_status(&server, "live/strict", "slate reloaded", |s| {
        s["slate"]["refused"] == false
    });
    assert_eq!(
        strict["slate"]["format"],
        "H.264 640x360, AAC 44100 Hz 1 ch"
    );
    std::fs::write(&config, text(&small)).unwrap();
    let mark = server.log_lines().len();
    server.signal("HUP");
    let line = server
        .wait_log(
            &["slate", "refused (strict)", "320x240"],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("{:#?}", &server.log_lines()[mark..]));
    assert!(line.contains("live/strict"), "{line}");
    let strict = channel_status(&server, "live/strict");
    assert_eq!(
        strict["slate"]["format"], "H.264 640x360, AAC 44100 Hz 1 ch",
        "{strict:#}"
    );

    // Pins: to the slate and back; bad requests name what is wrong.
    let post = |name: &str, body: &str| {
        server.http(
            "POST",
            &format!("/api/v1/channels/{name}/source"),
            &[],
            Some(body),
        )
    };
    assert_eq!(post("live/warn", r#"{"source":"slate"}"#).0, 202);
    let s = wait_status(&server, "live/warn", "pinned to the slate", |s| {
        s["on_air"] == "slate"
    });
    assert_eq!(s["pinned"], "slate");
    assert_eq!(post("live/warn", r#"{"source":null}"#).0, 202);
    wait_status(&server, "live/warn", "back on its source", |s| {
        s["on_air"] == "live/w" && s["pinned"].is_null()
    });
    let (code, body) = post("live/warn", r#"{"source":"live/nope"}"#);
    assert_eq!(code, 400, "{body}");
    assert_eq!(post("live/none", r#"{"source":"slate"}"#).0, 404);
    assert_eq!(post("live/warn", "not json").0, 400);
    // Each format change (slate, source, slate, source) re-sent the headers once, and HLS
    // marked at most one discontinuity for each.
    player.stop();
    let media = player.media();
    let changes = media.iter().filter(|m| m.is_avc_config()).count() - 1;
    assert_eq!(changes, 3, "video headers: {media:?}");
    let pl =
        MediaPlaylist::parse(&get(server.media_addr(), "/live/warn/media.m3u8").text()).unwrap();
    let discontinuities =
        pl.discontinuity_sequence as usize + pl.segments.iter().filter(|s| s.discontinuity).count();
    assert!(
        (1..=changes).contains(&discontinuities),
        "{discontinuities} discontinuities for {changes} changes"
    );
    let (code, list) = server.http_get("/api/v1/channels");
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["channels"].as_array().unwrap().len(), 2, "{list:#}");
    w.assert_running();
    st.assert_running();
}
