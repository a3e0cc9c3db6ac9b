//! rtmp-load as a tool used against any server: its synthetic stream (no input file) is a
//! real H.264 + AAC stream that nginx-rtmp and rtmp-edge relay and ffprobe decodes without
//! an error line, and a run leaves a JSON report, an HTML report with plots and a summary
//! table.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::nginx::Nginx;
use common::players::assert_decodes;
use common::{run_with_timeout, Server};

/// Runs rtmp-load with a synthetic publisher and 3 viewers on `url` for 6 s while ffprobe
/// decodes the stream from the same server; returns the JSON report, the HTML page and
/// what rtmp-load printed on stderr.
fn load_and_decode(url: &str, name: &str) -> (serde_json::Value, String, String) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let json = dir.join(format!("loadgen-{}-{name}.json", std::process::id()));
    let html = dir.join(format!("loadgen-{}-{name}.html", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtmp-load"));
    cmd.args(["--url", url, "--viewers", "3", "--duration", "6s"])
        .args(["--bitrate-kbps", "800", "--gop-secs", "1"])
        .arg("--report")
        .arg(&json)
        .arg("--report-html")
        .arg(&html);
    let probe_url = url.to_string();
    let probe = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(2_500));
        assert_decodes(&probe_url, 3, 60)
    });
    let out = run_with_timeout(&mut cmd, Duration::from_secs(40));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rtmp-load failed: {stderr}");
    let probe = probe.join().expect("ffprobe thread");
    assert_eq!(probe.field("video", "width"), Some("64"), "{probe:?}");
    assert_eq!(probe.field("video", "height"), Some("64"), "{probe:?}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let page = std::fs::read_to_string(&html).unwrap();
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&html);
    (report, page, stderr)
}

fn assert_delivered(report: &serde_json::Value, stderr: &str, what: &str) {
    let v = &report["viewers"];
    assert_eq!(v["connected"], 3, "{what}: {report:#}");
    assert_eq!(v["below_95pct_expected"], 0, "{what}: {report:#}");
    let kbps = report["expected_kbps"].as_f64().unwrap();
    assert!(
        (700.0..=900.0).contains(&kbps),
        "{what}: stream rate {kbps} kbit/s"
    );
    assert!(
        report["publishers"][0]["error"].is_null(),
        "{what}: {report:#}"
    );
    // The summary table closes the progress output.
    let table = stderr.rsplit("t=").next().unwrap_or("");
    assert!(
        table.contains("| viewers connected") && table.contains("3 of 3"),
        "{what}: no summary table at the end: {stderr}"
    );
}

#[test]
fn the_synthetic_stream_is_relayed_by_nginx_rtmp_and_decodes() {
    let nginx = Nginx::start();
    let url = format!("{}/synthetic", nginx.live_url());
    let (report, page, stderr) = load_and_decode(&url, "nginx");
    assert_delivered(&report, &stderr, "nginx-rtmp");
    assert!(page.contains("<h1>rtmp-load</h1>"), "{page}");
}

#[test]
fn the_synthetic_stream_is_relayed_by_rtmp_edge_with_an_html_report() {
    let server = Server::start(&["--http-media", "127.0.0.1:0", "--hls", "all"]);
    // HLS packaging reads the decoder configurations: it names both codecs.
    let media = server.media_addr();
    let index = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(4));
        common::hls::get(media, "/live/synthetic/index.m3u8").text()
    });
    let (report, page, stderr) = load_and_decode(&server.url("live/synthetic"), "edge");
    let index = index.join().unwrap();
    assert!(
        index.contains("avc1.42c00a")
            && index.contains("mp4a.40.2")
            && index.contains("RESOLUTION=64x64"),
        "{index}"
    );
    assert_delivered(&report, &stderr, "rtmp-edge");
    // Five plots, each with data: viewers and throughput over time, delivery and first
    // frame per viewer, the latency histogram.
    assert_eq!(page.matches("<svg").count(), 5, "{page}");
    assert!(!page.contains("no data"), "{page}");
    assert!(page.matches("<polyline").count() >= 4, "{page}");
    assert!(report["latency"]["p50_ms"].as_f64().is_some(), "{report:#}");
}

/// SRS is not packaged for Debian: with `SRS_BIN` pointing at a built `objs/srs` (README,
/// "Load testing": the offline build recipe) the same stream goes through it; without, the
/// test says so and passes.
#[test]
fn the_synthetic_stream_is_relayed_by_srs_when_one_is_built() {
    let Some(bin) = std::env::var_os("SRS_BIN") else {
        eprintln!("SRS_BIN not set: SRS not tried");
        return;
    };
    let port = common::nginx::free_port();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let conf = dir.join(format!("srs-{}.conf", std::process::id()));
    std::fs::write(
        &conf,
        format!(
            "listen 127.0.0.1:{port};\ndaemon off;\nsrs_log_tank console;\n\
             pid {};\nhttp_api {{ enabled off; }}\nhttp_server {{ enabled off; }}\n\
             vhost __defaultVhost__ {{\n}}\n",
            dir.join(format!("srs-{}.pid", std::process::id()))
                .display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&conf);
    let _srs = common::Proc::spawn(&mut cmd);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        common::nginx::wait_port(addr, Duration::from_secs(10)),
        "SRS did not listen"
    );
    let url = format!("rtmp://127.0.0.1:{port}/live/synthetic");
    let (report, _, stderr) = load_and_decode(&url, "srs");
    assert_delivered(&report, &stderr, "SRS");
    let _ = std::fs::remove_file(&conf);
}
