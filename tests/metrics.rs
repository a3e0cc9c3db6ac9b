//! The control listener under load: /healthz, /readyz, and a /metrics scrape that promtool
//! accepts, whose latency histograms move while players watch.

mod common;

use std::time::Duration;

use common::publisher::Publisher;
use common::*;

fn metric_sum(scrape: &str, prefix: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn scrape_under_load_passes_promtool_and_histograms_move() {
    let server = Server::start(&["--shards", "2"]);
    assert_eq!(server.http_get("/healthz").0, 200);
    // Ready once every shard listens: 503 before that, then 200 within moments.
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let mut ready = 0;
    while std::time::Instant::now() < end {
        ready = server.http_get("/readyz").0;
        if ready == 200 {
            break;
        }
        assert_eq!(ready, 503, "unexpected /readyz status");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ready, 200, "all shards listening");

    let _publisher = Publisher::live(&server, "live/metrics");
    std::thread::sleep(Duration::from_millis(1500));
    let before = server.http_get("/metrics").1;
    let fanout_before = metric_sum(&before, "rtmp_fanout_latency_seconds_count");

    // Load: players on both shards for a few seconds.
    let players: Vec<_> = (0..6)
        .map(|_| {
            let url = server.url("live/metrics");
            std::thread::spawn(move || players::ffprobe(&url, 3, false, &[]))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    let (status, body) = server.http_get("/metrics");
    assert_eq!(status, 200);
    let scrape = body;
    for p in players {
        assert!(p.join().unwrap().count("video") > 0);
    }

    for name in [
        "rtmp_fanout_latency_seconds_bucket{shard=",
        "rtmp_fanout_latency_recent_seconds{shard=",
        "# TYPE rtmp_cross_shard_latency_seconds histogram",
        "rtmp_connections_accepted_total",
        "rtmp_publishes_total",
        "rtmp_plays_total",
        "rtmp_viewers{shard=",
        "rtmp_streams{shard=",
    ] {
        assert!(scrape.contains(name), "scrape lacks {name}:\n{scrape}");
    }
    let fanout_after = metric_sum(&scrape, "rtmp_fanout_latency_seconds_count");
    assert!(
        fanout_after > fanout_before,
        "fan-out histogram did not move: {fanout_before} -> {fanout_after}"
    );
    assert!(metric_sum(&scrape, "rtmp_viewers{") >= 1.0);
    // Every player's time to first frame was measured, and the egress counters moved
    // with the bytes they received.
    let ttff = metric_sum(&scrape, "rtmp_time_to_first_frame_seconds_count");
    assert!(ttff >= 6.0, "time-to-first-frame count {ttff}");
    let ttff_before = metric_sum(&before, "rtmp_time_to_first_frame_seconds_count");
    assert!(ttff > ttff_before);
    let egress = metric_sum(&scrape, "rtmp_egress_bytes_total{");
    let egress_before = metric_sum(&before, "rtmp_egress_bytes_total{");
    assert!(
        egress - egress_before > 100_000.0,
        "6 players for 2.5 s: {egress_before} -> {egress}"
    );
    let players_now: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("rtmp_connections{") && l.contains("role=\"player\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        players_now >= 6.0,
        "rtmp_connections by role: {players_now} players"
    );
    assert!(scrape.contains("rtmp_stream_viewers{stream=\"live/metrics\"}"));

    assert_promtool_accepts(&scrape);
}

/// Counters whose label values are known up front are in the very first scrape at 0, so
/// `rate()` alerts and dashboards work before the first event; and move when it happens.
#[test]
fn known_counters_start_at_zero_and_move() {
    let server = Server::start(&[]);
    let (status, first) = server.http_get("/metrics");
    assert_eq!(status, 200);
    for series in [
        "rtmp_protocol_errors_total{kind=\"chunk\"} 0",
        "rtmp_protocol_errors_total{kind=\"handshake\"} 0",
        "rtmp_protocol_errors_total{kind=\"message_too_large\"} 0",
        "rtmp_timeouts_total{kind=\"handshake/connect\"} 0",
        "rtmp_timeouts_total{kind=\"publisher idle\"} 0",
        "rtmp_publish_rejects_total{reason=\"bad_name\"} 0",
        "rtmp_play_rejects_total{reason=\"unauthorized\"} 0",
        "rtmp_auth_denied_total{action=\"publish\",reason=\"bad_token\"} 0",
        "rtmp_auth_denied_total{action=\"play\",reason=\"expired\"} 0",
        "rtmp_auth_callback_requests_total{action=\"play\",result=\"error\"} 0",
        "rtmp_record_errors_total{reason=\"queue_full\"} 0",
        "rtmp_record_errors_total{reason=\"finalize\"} 0",
        "rtmp_connections_accepted_total 0",
        "rtmp_publishes_total 0",
    ] {
        assert!(
            first.lines().any(|l| l == series),
            "first scrape lacks `{series}`:\n{first}"
        );
    }
    // A bad handshake version byte: the zero series counts it.
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    std::io::Write::write_all(&mut s, &[0x09; 1537]).unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let scrape = server.http_get("/metrics").1;
        if scrape
            .lines()
            .any(|l| l == "rtmp_protocol_errors_total{kind=\"handshake\"} 1")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "error not counted:\n{scrape}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_promtool_accepts(&first);
}
