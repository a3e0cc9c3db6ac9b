//! HLS and Low-Latency HLS from the media listener, read by ffmpeg/ffprobe and by a
//! playlist checker that holds every playlist served to the spec's MUSTs.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::hls::{get, status_only, MediaPlaylist};
use common::players::assert_decodes;
use common::publisher::{PublishSpec, Publisher};
use common::{media, wait_published, Server};

fn hls_server(extra: &[&str]) -> (Server, SocketAddr) {
    let mut args = vec!["--http-media", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let s = Server::start(&args);
    let addr = s.media_addr();
    (s, addr)
}

/// Fetches and parses `path` until it lists at least `segments` complete segments.
fn playlist_with(addr: SocketAddr, path: &str, segments: usize, within: Duration) -> MediaPlaylist {
    let end = Instant::now() + within;
    loop {
        let r = get(addr, path);
        if r.status == 200 {
            let p = MediaPlaylist::parse(&r.text()).unwrap();
            if p.segments.iter().filter(|s| s.uri.is_some()).count() >= segments {
                return p;
            }
        }
        assert!(
            Instant::now() < end,
            "{path}: no {segments} segments in time ({})",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ffprobe_file(bytes: &[u8], name: &str) -> String {
    let path = std::env::temp_dir().join(format!("rtmp-edge-hls-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height,sample_rate",
        ])
        .args(["-of", "compact"])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let _ = std::fs::remove_file(&path);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn ffmpeg_plays_hls_of_a_published_stream() {
    let (server, media_addr) = hls_server(&["--hls", "all"]);
    let _p = Publisher::live(&server, "live/h");
    let pl = playlist_with(media_addr, "/live/h/media.m3u8", 1, Duration::from_secs(15));

    // The init segment alone: H.264 at the published size, and AAC.
    let init = get(media_addr, &format!("/live/h/{}", pl.segments[0].map));
    assert_eq!(init.status, 200);
    assert_eq!(init.header("content-type"), Some("video/mp4"));
    let probe = ffprobe_file(&init.body, "init.mp4");
    assert!(
        probe.contains("codec_name=h264|width=640|height=360")
            && probe.contains("codec_name=aac|sample_rate=44100"),
        "{probe}"
    );
    // ffmpeg through the multivariant playlist: ≥100 frames of each, no error lines.
    let url = format!("http://{media_addr}/live/h/index.m3u8");
    let probe = assert_decodes(&url, 5, 100);
    assert!(probe.count("video") >= 100, "{probe:?}");
    let index = get(media_addr, "/live/h/index.m3u8").text();
    assert!(
        index.contains("CODECS=\"avc1.42c01e,mp4a.40.2\"") && index.contains("RESOLUTION=640x360"),
        "{index}"
    );
    // What operators graph: requests by kind and status, parts packaged, bytes out.
    let (_, scrape) = server.http_get("/metrics");
    let value = |series: &str| -> f64 {
        scrape
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
    };
    assert!(value("rtmp_http_requests_total{kind=\"multivariant\",status=\"200\"}") >= 1.0);
    assert!(value("rtmp_http_requests_total{kind=\"init\",status=\"200\"}") >= 1.0);
    assert!(value("rtmp_hls_parts_total") > 10.0);
    // Ingest to part: about a part's duration plus a frame.
    let count = scrape
        .lines()
        .filter(|l| l.starts_with("rtmp_hls_packaging_latency_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(count > 10.0, "{count} packaging latencies");
    assert!(value("rtmp_http_bytes_out_total{kind=\"hls\"}") > 100_000.0);
    common::assert_promtool_accepts(&scrape);
}

#[test]
fn playlists_meet_the_spec_and_reloads_block() {
    let (server, addr) = hls_server(&["--hls", "all", "--hls-window", "4"]);
    let _p = Publisher::live(&server, "live/ll");
    let path = "/live/ll/media.m3u8";
    let mut prev = playlist_with(addr, path, 1, Duration::from_secs(15));
    prev.check(None).unwrap();
    assert!(prev.can_block && prev.part_target == Some(0.22), "{prev:?}");

    // Follow the live edge for ~8 s with blocking reloads on the next part, as hls.js does
    // in low-latency mode; every playlist meets the MUSTs and answers once the part exists.
    let end = Instant::now() + Duration::from_secs(8);
    let mut reloads = 0;
    let mut checked_uris = 0;
    while Instant::now() < end {
        let last = prev.segments.last().unwrap();
        let (msn, part) = if last.uri.is_some() {
            (last.msn + 1, 0)
        } else {
            (last.msn, last.parts.len())
        };
        let r = get(addr, &format!("{path}?_HLS_msn={msn}&_HLS_part={part}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.elapsed < Duration::from_secs(2), "held {:?}", r.elapsed);
        assert_eq!(
            r.header("content-type"),
            Some("application/vnd.apple.mpegurl")
        );
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        let pl = MediaPlaylist::parse(&r.text()).unwrap();
        pl.check(Some(&prev)).unwrap();
        let has = pl
            .segments
            .iter()
            .any(|s| s.msn > msn || (s.msn == msn && (s.uri.is_some() || s.parts.len() > part)));
        assert!(
            has,
            "blocking reload for {msn}.{part} answered without it:\n{}",
            r.text()
        );
        if reloads % 10 == 0 {
            // Every URI the playlist lists answers 200.
            for uri in pl.uris() {
                let r = get(addr, &format!("/live/ll/{uri}"));
                assert_eq!(r.status, 200, "{uri}");
                assert!(!r.body.is_empty());
                assert!(r
                    .header("cache-control")
                    .unwrap_or("")
                    .contains("immutable"));
                checked_uris += 1;
            }
        }
        prev = pl;
        reloads += 1;
    }
    assert!(reloads >= 20, "only {reloads} blocking reloads in 8 s");
    assert!(checked_uris >= 20, "{checked_uris}");

    // The preload hint names the next part: a request for it is held until it exists.
    let hint = prev
        .preload_hint
        .clone()
        .expect("a preload hint while live");
    let r = get(addr, &format!("/live/ll/{hint}"));
    assert_eq!(r.status, 200);
    assert!(r.elapsed < Duration::from_secs(2));

    // Too far ahead, or a part without a segment number: 400 at once.
    let far = prev.segments.last().unwrap().msn + 3;
    let r = get(addr, &format!("{path}?_HLS_msn={far}"));
    assert_eq!(r.status, 400);
    assert!(r.elapsed < Duration::from_secs(1));
    assert_eq!(get(addr, &format!("{path}?_HLS_part=1")).status, 400);
    // Beyond the Advance Part Limit (3 s of parts ahead): 400 at once.
    let open = prev.segments.last().unwrap().msn;
    let r = get(addr, &format!("{path}?_HLS_msn={open}&_HLS_part=100"));
    assert_eq!(r.status, 400);
    assert!(r.elapsed < Duration::from_secs(1));

    // A delta update skips what is older than CAN-SKIP-UNTIL (12 s; the window is 4 × 2 s
    // here, so nothing may be skipped) and still passes.
    let d = MediaPlaylist::parse(&get(addr, &format!("{path}?_HLS_skip=YES")).text()).unwrap();
    assert_eq!(d.skipped, 0);
    d.check(None).unwrap();
    // The window holds 4 complete segments.
    let complete = d.segments.iter().filter(|s| s.uri.is_some()).count();
    assert!((3..=4).contains(&complete), "{d:?}");
    // A segment that left the window is still served for three target durations (a
    // client may have just read a playlist listing it), then gone.
    let first = prev.segments[0].msn;
    let uri = prev.segments[0].uri.clone().unwrap();
    let stem = uri
        .split('?')
        .next()
        .unwrap()
        .trim_end_matches(&format!("-{first}.m4s"))
        .to_string();
    if first >= 1 {
        assert_eq!(
            get(addr, &format!("/live/ll/{stem}-{}.m4s", first - 1)).status,
            200
        );
    }
    if first >= 6 {
        assert_eq!(
            get(addr, &format!("/live/ll/{stem}-{}.m4s", first - 6)).status,
            404
        );
    }
}

#[test]
fn a_gop_longer_than_the_target_keeps_the_target_duration() {
    // Keyframes at 0 and 2 s, then every 5 s: the first segment fixes a 2 s target, and
    // the long GOPs after it are cut inside (segments that do not start with a keyframe).
    let file = common::media_with(
        "gop2-5",
        "640x360",
        20,
        &["-g", "1000", "-force_key_frames", "0,2,7,12,17"],
    );
    let (server, addr) = hls_server(&["--hls", "all"]);
    let _p = PublishSpec::new(&file, &server.url("live/gop")).start();
    wait_published(&server, "live/gop");
    let path = "/live/gop/media.m3u8";
    let mut prev = playlist_with(addr, path, 1, Duration::from_secs(15));
    prev.check(None).unwrap();
    assert_eq!(prev.target, 2, "{prev:?}");
    let end = Instant::now() + Duration::from_secs(12);
    let mut dependent = 0;
    while Instant::now() < end {
        let next = prev.last_complete().map_or(0, |m| m + 1);
        let r = get(addr, &format!("{path}?_HLS_msn={next}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let pl = MediaPlaylist::parse(&r.text()).unwrap();
        pl.check(Some(&prev)).unwrap();
        if pl
            .segments
            .iter()
            .any(|s| s.parts.first().is_some_and(|p| !p.independent))
        {
            dependent += 1;
        }
        prev = pl;
    }
    assert!(dependent > 0, "no segment was cut inside a GOP: {prev:?}");
    // ffmpeg reads it from the live edge, whatever segment it starts at (the decoder skips
    // to the next keyframe, up to 5 s in, without an error line).
    let probe = assert_decodes(&format!("http://{addr}/live/gop/index.m3u8"), 10, 100);
    assert!(probe.count("video") >= 100, "{probe:?}");
}

#[test]
fn on_demand_packages_from_the_first_request() {
    let (server, addr) = hls_server(&[]);
    assert_eq!(
        get(addr, "/live/od/index.m3u8").status,
        404,
        "not published"
    );
    let _p = Publisher::live(&server, "live/od");
    // The stream has been live a while (its sequence headers long sent) when the first
    // viewer asks.
    std::thread::sleep(Duration::from_secs(4));
    let t = Instant::now();
    let r = get(addr, "/live/od/index.m3u8");
    assert_eq!(r.status, 200, "{}", r.text());
    // Packaging starts at the next keyframe (1 s GOP); the answer needs a whole segment.
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(r.text().contains("media.m3u8"));
    let pl = playlist_with(addr, "/live/od/media.m3u8", 1, Duration::from_secs(10));
    pl.check(None).unwrap();
    // A token in the query is carried into every URI.
    let r = get(addr, "/live/od/media.m3u8?token=abc");
    let text = r.text();
    for line in text
        .lines()
        .filter(|l| l.contains(".m4s") || l.contains(".mp4"))
    {
        assert!(line.contains("?token=abc"), "{line}");
    }
}

#[test]
fn resolution_change_and_republish_play_through_one_discontinuity() {
    let (server, addr) = hls_server(&["--hls", "all"]);
    let url = server.url("live/rc");
    let mut a = PublishSpec::new(&media("std360", "640x360", 30, 30), &url).start();
    wait_published(&server, "live/rc");
    let first = playlist_with(addr, "/live/rc/media.m3u8", 2, Duration::from_secs(15));
    a.kill();
    // Same codec settings again: the playlist goes on without a discontinuity.
    std::thread::sleep(Duration::from_millis(500));
    let mut b = PublishSpec::new(&media("std360", "640x360", 30, 30), &url).start();
    std::thread::sleep(Duration::from_secs(4));
    let same = MediaPlaylist::parse(&get(addr, "/live/rc/media.m3u8").text()).unwrap();
    same.check(Some(&first)).unwrap();
    assert!(same.segments.iter().all(|s| !s.discontinuity), "{same:?}");
    b.kill();
    std::thread::sleep(Duration::from_millis(500));
    let _c = PublishSpec::new(&media("hd720", "1280x720", 20, 30), &url).start();
    std::thread::sleep(Duration::from_secs(5));
    let pl = MediaPlaylist::parse(&get(addr, "/live/rc/media.m3u8").text()).unwrap();
    pl.check(Some(&same)).unwrap();
    let discs: Vec<&common::hls::Segment> =
        pl.segments.iter().filter(|s| s.discontinuity).collect();
    assert_eq!(discs.len(), 1, "{pl:?}");
    let before = pl.segments.iter().find(|s| !s.discontinuity).unwrap();
    assert_ne!(before.map, discs[0].map);
    let probe = ffprobe_file(
        &get(addr, &format!("/live/rc/{}", discs[0].map)).body,
        "720.mp4",
    );
    assert!(probe.contains("width=1280|height=720"), "{probe}");
    let index = get(addr, "/live/rc/index.m3u8").text();
    assert!(index.contains("RESOLUTION=1280x720"), "{index}");
}

#[test]
fn play_tokens_guard_every_hls_and_flv_request() {
    let cfg = std::env::temp_dir().join(format!("rtmp-edge-hls-auth-{}.toml", std::process::id()));
    std::fs::write(
        &cfg,
        "[auth.play]\ntokens = [{ match = \"live/*\", token = \"view-1\" }]\n",
    )
    .unwrap();
    let (server, addr) = hls_server(&["--hls", "all", "--config", cfg.to_str().unwrap()]);
    let _p = Publisher::live(&server, "live/sec");
    for q in ["", "?token=wrong"] {
        assert_eq!(get(addr, &format!("/live/sec/index.m3u8{q}")).status, 403);
        assert_eq!(get(addr, &format!("/live/sec/media.m3u8{q}")).status, 403);
        assert_eq!(status_only(addr, &format!("/live/sec.flv{q}")), 403);
    }
    // A refusal does not tell a live stream from a missing one.
    assert_eq!(get(addr, "/live/nothing/index.m3u8").status, 403);
    let index = get(addr, "/live/sec/index.m3u8?token=view-1");
    assert_eq!(index.status, 200);
    assert!(
        index.text().contains("media.m3u8?token=view-1"),
        "{}",
        index.text()
    );
    let pl = playlist_with(
        addr,
        "/live/sec/media.m3u8?token=view-1",
        1,
        Duration::from_secs(10),
    );
    let seg = pl.segments[0].uri.clone().unwrap();
    assert!(seg.ends_with("?token=view-1"), "{seg}");
    assert_eq!(get(addr, &format!("/live/sec/{seg}")).status, 200);
    let bare = seg.split('?').next().unwrap();
    assert_eq!(get(addr, &format!("/live/sec/{bare}")).status, 403);
    assert_eq!(status_only(addr, "/live/sec.flv?token=view-1"), 200);
    let (_, scrape) = server.http_get("/metrics");
    assert!(scrape.contains("rtmp_auth_denied_total{action=\"play\",reason=\"bad_token\"}"));
    let _ = std::fs::remove_file(cfg);
}
