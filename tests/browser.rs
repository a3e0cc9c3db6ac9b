//! Browsers: Debian's headless Chromium, driven by playwright-core (tests/browser/play.mjs),
//! plays rtmp-edge's HLS and LL-HLS with hls.js, HTTP-FLV with mpegts.js, and the preview
//! page. scripts/test.sh installs chromium and the npm packages.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::players::assert_decodes;
use common::publisher::{PublishSpec, Publisher};
use common::{media, run_with_timeout, wait_published, Server};
use serde_json::Value;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Runs play.mjs: `mode` (hls, hls-ll, flv, page) on `url` for `secs`; its JSON report.
/// One browser at a time: on two cores, four Chromiums at once starve their own players.
fn play(mode: &str, url: &str, secs: u32, shot: Option<&str>) -> Value {
    static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium and the npm packages are missing: run scripts/test.sh (it installs them)"
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg("play.mjs")
        .args([mode, url, &secs.to_string()]);
    if let Some(s) = shot {
        cmd.arg(s);
    }
    let out = run_with_timeout(&mut cmd, Duration::from_secs(u64::from(secs) + 60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().last().unwrap_or("");
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("play.mjs {mode} {url}: {e}\nstdout: {stdout}\nstderr: {stderr}")
    });
    eprintln!("{mode} {url}: {v}");
    v
}

fn assert_played(v: &Value, min_secs: f64) {
    let fatal: Vec<&Value> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["fatal"] == Value::Bool(true))
        .collect();
    assert!(fatal.is_empty(), "fatal player errors: {v}");
    let advanced = v["advanced"].as_f64().unwrap();
    assert!(
        advanced >= min_secs,
        "currentTime advanced {advanced} s: {v}"
    );
}

fn media_server() -> (Server, String) {
    let s = Server::start(&["--http-media", "127.0.0.1:0", "--hls", "all"]);
    let base = format!("http://{}", s.media_addr());
    (s, base)
}

#[test]
fn hls_js_plays_standard_and_low_latency() {
    let (server, base) = media_server();
    let _p = Publisher::live(&server, "live/web");
    let url = format!("{base}/live/web/index.m3u8");
    let std = play("hls", &url, 12, None);
    assert_played(&std, 5.0);
    let lat = std["latencyMs"]
        .as_f64()
        .expect("PROGRAM-DATE-TIME latency");
    assert!(lat <= 7000.0, "standard HLS live-edge latency {lat} ms");
    let ll = play("hls-ll", &url, 12, None);
    assert_played(&ll, 5.0);
    let lat = ll["latencyMs"].as_f64().expect("PROGRAM-DATE-TIME latency");
    assert!(lat <= 1500.0, "LL-HLS live-edge latency {lat} ms");
}

#[test]
fn mpegts_js_and_ffmpeg_play_http_flv() {
    let (server, base) = media_server();
    let _p = Publisher::live(&server, "live/flv");
    let url = format!("{base}/live/flv.flv");
    let v = play("flv", &url, 10, None);
    assert_played(&v, 5.0);
    assert_decodes(&url, 5, 100);
    // The same path over a WebSocket (mpegts.js picks its WebSocket loader for ws://).
    let ws = url.replacen("http://", "ws://", 1);
    let v = play("flv", &ws, 10, None);
    assert_played(&v, 5.0);
    let (_, scrape) = server.http_get("/metrics");
    assert!(
        scrape.contains("rtmp_http_requests_total{kind=\"ws-flv\",status=\"101\"} 1"),
        "{scrape}"
    );
}

#[test]
fn hls_js_plays_through_a_resolution_change() {
    let (server, base) = media_server();
    let url = server.url("live/res");
    let hd = media("hd720", "1280x720", 20, 30);
    let mut a = PublishSpec::new(&media("std360", "640x360", 30, 30), &url).start();
    wait_published(&server, "live/res");
    std::thread::sleep(Duration::from_secs(3));
    let player = {
        let u = format!("{base}/live/res/index.m3u8");
        std::thread::spawn(move || play("hls", &u, 22, None))
    };
    std::thread::sleep(Duration::from_secs(8));
    a.kill();
    let _b = PublishSpec::new(&hd, &url).start();
    let v = player.join().unwrap();
    assert_played(&v, 12.0);
}

#[test]
fn preview_page_lists_and_plays_a_stream() {
    let (server, base) = media_server();
    let _p = Publisher::live(&server, "live/preview");
    let shot = std::env::temp_dir().join("rtmp-edge-preview.png");
    let v = play(
        "page",
        &format!("{base}/"),
        10,
        Some(shot.to_str().unwrap()),
    );
    assert_eq!(v["listed"], serde_json::json!(["live/preview"]), "{v}");
    assert_played(&v, 4.0);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("preview screenshot: {}", shot.display());
}
