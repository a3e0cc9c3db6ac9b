//! HLS written to real storage: SeaweedFS's S3 API (signed uploads, anonymous reads) and a
//! local directory. ffmpeg plays the stream from the bucket; the window is kept there.

mod common;

use std::time::{Duration, Instant};

use common::fakegcs::FakeGcs;
use common::hls::MediaPlaylist;
use common::players::assert_decodes;
use common::publisher::Publisher;
use common::seaweed::{Seaweed, ACCESS_KEY, BUCKET, SECRET_KEY};
use common::watcher::Watcher;
use common::Server;

/// Waits (30 s at most) until `list` shows a stream's multivariant playlist and at least
/// three segments.
fn wait_for_live_stream(list: impl Fn() -> Vec<String>) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let keys = list();
        let segs = keys.iter().filter(|k| k.contains("/seg-")).count();
        if segs >= 3 && keys.iter().any(|k| k.ends_with("/index.m3u8")) {
            return;
        }
        assert!(Instant::now() < end, "bucket holds {keys:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A server signing its S3 requests with `secret` (the test identity's, or a wrong one).
fn signed_server(secret: &str, args: &[&str]) -> Server {
    Server::start_env(
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", secret),
        ],
        args,
    )
}

#[test]
fn hls_to_s3_plays_from_the_bucket_and_keeps_the_window() {
    let weed = Seaweed::start();
    let url = format!("s3://{BUCKET}/edge?endpoint={}", weed.endpoint());
    let secret = SECRET_KEY;
    let server = signed_server(
        secret,
        &["--hls", "all", "--hls-window", "3", "--hls-store", &url],
    );
    let _p = Publisher::live(&server, "live/s3");
    let prefix = "edge/live/s3/";
    // The playlists and at least three segments land in the bucket.
    wait_for_live_stream(|| weed.keys(prefix));
    let (status, media) = weed.get(&format!("/{BUCKET}/{prefix}media.m3u8"));
    assert_eq!(status, 200);
    let media = String::from_utf8_lossy(&media).to_string();
    assert!(
        !media.contains("PRELOAD-HINT") && !media.contains("CAN-BLOCK-RELOAD"),
        "a bucket's playlist promises no blocking: {media}"
    );
    // ffmpeg plays it from the bucket, with no error line.
    let probe = assert_decodes(
        &format!("{}/{BUCKET}/{prefix}index.m3u8", weed.endpoint()),
        5,
        100,
    );
    assert!(probe.count("video") >= 100);
    // 25 s on, the bucket holds the window (3) plus the segments retired less than three
    // target durations ago, not everything ever made.
    std::thread::sleep(Duration::from_secs(25));
    let segs: Vec<String> = weed
        .keys(prefix)
        .into_iter()
        .filter(|k| k.contains("/seg-"))
        .collect();
    assert!(
        (3..=8).contains(&segs.len()),
        "{} segments in the bucket: {segs:?}",
        segs.len()
    );
    assert!(!segs.iter().any(|k| k.ends_with("-0.m4s")), "{segs:?}");
    let (_, scrape) = server.http_get("/metrics");
    assert!(
        scrape.contains("rtmp_storage_uploads_total{target=\"s3://media/edge\",result=\"ok\"}"),
        "{scrape}"
    );
}

/// The highest segment number a media playlist lists.
fn last_segment(playlist: &str) -> Option<u64> {
    playlist
        .lines()
        .filter(|l| l.starts_with("seg-"))
        .filter_map(|l| l.split('-').nth(2)?.split('.').next()?.parse().ok())
        .max()
}

#[test]
fn an_s3_outage_disturbs_no_viewer_and_the_bucket_catches_up() {
    let mut weed = Seaweed::start();
    let url = format!("s3://{BUCKET}/out?endpoint={}", weed.endpoint());
    let secret = SECRET_KEY;
    let server = signed_server(
        secret,
        &[
            "--hls",
            "all",
            "--hls-window",
            "4",
            "--hls-store",
            &url,
            "--http-media",
            "127.0.0.1:0",
        ],
    );
    let media = server.media_addr();
    let _p = Publisher::live(&server, "live/out");
    let rtmp = Watcher::start(server.addr, "live", "out");
    let bucket_playlist = |w: &Seaweed| {
        let (status, body) = w.get(&format!("/{BUCKET}/out/live/out/media.m3u8"));
        (status == 200).then(|| String::from_utf8_lossy(&body).to_string())
    };
    let end = Instant::now() + Duration::from_secs(30);
    while bucket_playlist(&weed)
        .and_then(|p| last_segment(&p))
        .is_none()
    {
        assert!(Instant::now() < end, "nothing reached the bucket");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The bucket goes away for 20 s.
    weed.stop();
    let down = Instant::now();
    let listener = |addr| {
        MediaPlaylist::parse(&common::hls::get(addr, "/live/out/media.m3u8").text()).unwrap()
    };
    let before = listener(media).last_complete().unwrap();
    std::thread::sleep(Duration::from_secs(20));
    let after = listener(media).last_complete().unwrap();
    // The server's own HLS and its RTMP player went on as if nothing happened.
    assert!(after >= before + 8, "HLS stalled: {before} -> {after}");
    assert!(
        rtmp.max_gap(down, Instant::now()) < Duration::from_secs(1),
        "the RTMP player saw a gap"
    );
    weed.restart();
    // The backlog drains: the bucket's playlist reaches the live one again.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let live = listener(media).last_complete().unwrap();
        let stored = bucket_playlist(&weed).and_then(|p| last_segment(&p));
        if stored.is_some_and(|s| s + 1 >= live) {
            break;
        }
        assert!(Instant::now() < end, "bucket at {stored:?}, live at {live}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, scrape) = server.http_get("/metrics");
    assert!(
        scrape.contains("rtmp_storage_uploads_total{target=\"s3://media/out\",result=\"retry\"}"),
        "{scrape}"
    );
    assert!(server.logged(&["storage upload failed; retrying", "s3://media/out"]));
    assert!(server.logged(&["storage target answers again", "s3://media/out"]));
}

#[test]
fn refused_credentials_are_an_error_line_and_a_counter() {
    let weed = Seaweed::start();
    let url = format!("s3://{BUCKET}/bad?endpoint={}", weed.endpoint());
    let secret = "wrong-secret";
    let server = signed_server(secret, &["--hls", "all", "--hls-store", &url]);
    let _p = Publisher::live(&server, "live/bad");
    assert!(
        server.logged(&["storage target refused an upload", "s3://media/bad"]),
        "{:#?}",
        server.log_lines()
    );
    assert!(server
        .log_lines()
        .iter()
        .all(|l| !l.contains("wrong-secret")));
    let (_, scrape) = server.http_get("/metrics");
    assert!(
        scrape.contains("rtmp_storage_uploads_total{target=\"s3://media/bad\",result=\"denied\"}"),
        "{scrape}"
    );
    assert!(weed.keys("bad/").is_empty());
}

#[test]
fn hls_to_google_cloud_storage_through_the_json_api() {
    let gcs = FakeGcs::start();
    let url = format!(
        "gs://{}/edge?endpoint={}",
        common::fakegcs::BUCKET,
        gcs.endpoint()
    );
    let server = Server::start(&["--hls", "all", "--hls-window", "3", "--hls-store", &url]);
    let _p = Publisher::live(&server, "live/g");
    let prefix = "edge/live/g/";
    wait_for_live_stream(|| gcs.names(prefix));
    let meta = gcs.metadata(&format!("{prefix}media.m3u8"));
    assert!(
        meta.contains("application/vnd.apple.mpegurl") && meta.contains("no-cache"),
        "{meta}"
    );
    // Played straight from the emulator's download path.
    let probe = assert_decodes(
        &format!(
            "{}/{}/{prefix}index.m3u8",
            gcs.endpoint(),
            common::fakegcs::BUCKET
        ),
        5,
        100,
    );
    assert!(probe.count("video") >= 100);
}

#[test]
fn finished_recordings_are_uploaded_and_a_restart_resumes_an_upload() {
    let weed = Seaweed::start();
    let dir = std::env::temp_dir().join(format!("rtmp-edge-rec-up-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A recording whose upload a previous run did not see confirmed.
    let old = dir.join("live_old_20261205_120000.flv");
    std::fs::copy(common::test_media(), &old).unwrap();
    std::fs::write(dir.join("live_old_20261205_120000.flv.upload"), "x").unwrap();
    let url = format!("s3://{BUCKET}/rec?endpoint={}", weed.endpoint());
    let secret = SECRET_KEY;
    let dir_arg = dir.display().to_string();
    let server = signed_server(
        secret,
        &[
            "--record",
            "all",
            "--record-dir",
            &dir_arg,
            "--record-store",
            &url,
            "--record-delete-local",
        ],
    );
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(
                Instant::now() < end,
                "{what}: bucket {:?}",
                weed.keys("rec/")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait_for("the resumed upload", &|| !old.exists());
    let (status, body) = weed.get(&format!("/{BUCKET}/rec/live_old_20261205_120000.flv"));
    assert_eq!(status, 200);
    assert_eq!(
        body,
        std::fs::read(common::test_media()).unwrap(),
        "uploaded whole"
    );
    assert!(!dir.join("live_old_20261205_120000.flv.upload").exists());
    // A new recording: uploaded when it is finished, then removed here.
    let mut p = Publisher::live(&server, "live/up");
    std::thread::sleep(Duration::from_secs(5));
    p.kill();
    wait_for("the new recording", &|| {
        weed.keys("rec/live_up_").len() == 1 && std::fs::read_dir(&dir).unwrap().next().is_none()
    });
    let key = weed.keys("rec/live_up_").remove(0);
    let probe = common::players::ffprobe(
        &format!("{}/{BUCKET}/{key}", weed.endpoint()),
        30,
        true,
        &[],
    );
    assert!(probe.clean(), "{probe:?}");
    assert!(probe.count("video") >= 90, "{probe:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_kept_archive_holds_every_segment_and_its_vod_playlist_plays_start_to_end() {
    let weed = Seaweed::start();
    let url = format!("s3://{BUCKET}/arch?endpoint={}", weed.endpoint());
    let secret = SECRET_KEY;
    let server = signed_server(
        secret,
        &[
            "--hls",
            "all",
            "--hls-window",
            "3",
            "--hls-store",
            &url,
            "--hls-store-keep",
            "1h",
        ],
    );
    let mut p = Publisher::live(&server, "live/arch");
    std::thread::sleep(Duration::from_secs(16));
    p.kill();
    let vod_path = format!("/{BUCKET}/arch/live/arch/vod.m3u8");
    let end = Instant::now() + Duration::from_secs(20);
    let vod = loop {
        let (status, body) = weed.get(&vod_path);
        if status == 200 {
            break String::from_utf8_lossy(&body).to_string();
        }
        assert!(
            Instant::now() < end,
            "no vod.m3u8: {:?}",
            weed.keys("arch/")
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.ends_with("#EXT-X-ENDLIST\n"),
        "{vod}"
    );
    let listed: Vec<&str> = vod.lines().filter(|l| l.starts_with("seg-")).collect();
    let seconds: f64 = vod
        .lines()
        .filter_map(|l| {
            l.strip_prefix("#EXTINF:")?
                .trim_end_matches(',')
                .parse::<f64>()
                .ok()
        })
        .sum();
    // Everything since the first segment is kept, not just the window of 3.
    assert!(listed.len() >= 6 && seconds >= 12.0, "{vod}");
    let stored = weed.keys("arch/live/arch/seg-");
    assert_eq!(stored.len(), listed.len(), "{stored:?}\n{vod}");
    let probe = common::players::ffprobe(&format!("{}{vod_path}", weed.endpoint()), 60, true, &[]);
    assert!(probe.clean(), "{probe:?}");
    let frames = probe.count("video") as f64;
    assert!(
        frames >= seconds * 30.0 * 0.95,
        "{frames} frames for {seconds} s: {probe:?}"
    );
}

#[test]
fn hls_to_a_directory() {
    let dir = std::env::temp_dir().join(format!("rtmp-edge-hls-dir-{}", std::process::id()));
    let url = format!("file://{}", dir.display());
    let server = Server::start(&["--hls", "all", "--hls-store", &url, "--hls-store-parts"]);
    let _p = Publisher::live(&server, "live/disk");
    let folder = dir.join("live/disk");
    let end = Instant::now() + Duration::from_secs(30);
    while !folder.join("index.m3u8").exists() {
        assert!(Instant::now() < end, "no playlist in {}", folder.display());
        std::thread::sleep(Duration::from_millis(300));
    }
    // ffmpeg reads the folder as a local HLS stream.
    let probe = assert_decodes(folder.join("index.m3u8").to_str().unwrap(), 3, 50);
    assert!(probe.count("video") >= 50);
    // With --hls-store-parts the parts are there too, and the playlist lists them (with
    // the PART-HOLD-BACK that requires) but promises nothing a folder cannot do.
    let media = std::fs::read_to_string(folder.join("media.m3u8")).unwrap();
    assert!(
        media.contains("#EXT-X-PART:") && media.contains("PART-HOLD-BACK="),
        "{media}"
    );
    assert!(!media.contains("PRELOAD-HINT") && !media.contains("CAN-BLOCK-RELOAD"));
    for uri in media
        .lines()
        .filter_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
    {
        assert!(folder.join(uri).exists(), "{uri} listed but not stored");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
