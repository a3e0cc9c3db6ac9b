//! Edge pull on loopback: an rtmp-edge started with `--origin` plays streams published only
//! on another rtmp-edge (the origin) over one upstream connection per stream, fails over
//! between origins, rides out an origin restart and closes the upstream once idle.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::players::*;
use common::publisher::Publisher;
use common::timeline::{assert_forward, Media, Player};
use common::*;

/// A loopback port nobody listens on: bound, noted, released.
fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr").port()
}

/// An origin (rtmp-edge with one shard) publishing the test media as `live/<name>`.
fn origin_with_stream(name: &str) -> (Server, Publisher) {
    let origin = Server::start(&["--shards", "1"]);
    let publisher = Publisher::live(&origin, &format!("live/{name}"));
    (origin, publisher)
}

fn key_field(name: &str) -> String {
    format!("key=\"live/{name}\"")
}

/// Index of the first log line at or after `from` containing every needle.
fn find_line(lines: &[String], from: usize, needles: &[&str]) -> Option<usize> {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, l)| needles.iter().all(|n| l.contains(n)))
        .map(|(i, _)| i)
}

/// 1: ffprobe on the edge decodes the origin's stream cleanly.
#[test]
fn edge_player_decodes_stream_published_on_origin() {
    let (origin, _publisher) = origin_with_stream("e2e");
    let edge = Server::start(&["--origin", &origin.url("live"), "--shards", "1"]);

    let probe = assert_decodes(&edge.url("live/e2e"), 4, 60);
    eprintln!(
        "edge ffprobe: {} video / {} audio frames decoded",
        probe.count("video"),
        probe.count("audio")
    );

    assert!(edge
        .wait_log(&["origin stream live", "live/e2e"], Duration::from_secs(1))
        .is_some());
    assert_eq!(edge.count_log(&["origin pull failed"]), 0);
    assert_eq!(origin.count_log(&["play started", &key_field("e2e")]), 1);
}

const FAN_VIEWERS: usize = 50;
/// Video messages every fan-out viewer must get (2 s at 30 fps).
const FAN_VIDEO: usize = 60;

/// 2: many edge viewers, one upstream connection to the origin.
fn fan_out(edge_shards: &str, name: &str) {
    let (origin, _publisher) = origin_with_stream(name);
    let edge = Server::start(&["--origin", &origin.url("live"), "--shards", edge_shards]);

    let started = Instant::now();
    let players: Vec<Player> = (0..FAN_VIEWERS)
        .map(|_| Player::start(edge.addr, "live", name))
        .collect();
    // A few real players among them.
    let probes: Vec<_> = (0..2)
        .map(|_| {
            let url = edge.url(&format!("live/{name}"));
            std::thread::spawn(move || ffprobe(&url, 2, false, &[]))
        })
        .collect();
    for (i, p) in players.iter().enumerate() {
        let left = Duration::from_secs(20).saturating_sub(started.elapsed());
        assert!(
            p.wait_video(FAN_VIDEO, left),
            "viewer {i}: {} video messages, closed {:?}",
            p.video_count(),
            p.closed_at()
        );
        let media = p.media();
        let first = media.iter().find(|m| m.video).expect("video");
        assert!(
            first.is_avc_config() || first.is_keyframe(),
            "viewer {i} started with {first:?}"
        );
        assert_forward(&media, &format!("viewer {i}"));
    }
    let all_video = started.elapsed();
    for p in probes {
        let probe = p.join().unwrap();
        assert!(probe.clean(), "{probe:?}");
        assert!(probe.count("video") >= 30, "{probe:?}");
    }
    let total: usize = players.iter().map(Player::video_count).sum();

    let shards: BTreeSet<usize> = edge
        .log_lines()
        .iter()
        .filter(|l| l.contains("play started") && l.contains(&key_field(name)))
        .filter_map(|l| span_field(l, "shard="))
        .collect();
    let plays = edge.count_log(&["play started", &key_field(name)]);
    let upstreams = origin.count_log(&["play started", &key_field(name)]);
    let pulls = edge.count_log(&["pulling from origin", &format!("live/{name}")]);
    eprintln!(
        "--shards {edge_shards}: {plays} edge plays on shards {shards:?}, all {FAN_VIEWERS} \
         had {FAN_VIDEO} video after {all_video:?} ({total} video messages in all); \
         {upstreams} upstream play(s) on the origin, {pulls} pull(s)"
    );
    assert_eq!(plays, FAN_VIEWERS + 2);
    let n: usize = edge_shards.parse().unwrap();
    assert_eq!(shards.len(), n, "viewers on shards {shards:?}");
    assert_eq!(upstreams, 1, "upstream connections to the origin");
    assert_eq!(pulls, 1, "pulls started on the edge");
    assert_eq!(edge.count_log(&["origin pull failed"]), 0);
}

#[test]
fn fifty_viewers_share_one_upstream() {
    fan_out("1", "fan1");
}

#[test]
fn fifty_viewers_on_two_shards_share_one_upstream() {
    fan_out("2", "fan2");
}

/// 3a: the first origin refuses connections; the edge fails over to the second.
#[test]
fn fails_over_from_dead_origin() {
    let dead = dead_port();
    let (origin2, _publisher) = origin_with_stream("fo");
    let dead_url = format!("rtmp://127.0.0.1:{dead}/live");
    let edge = Server::start(&[
        "--origin",
        &dead_url,
        "--origin",
        &origin2.url("live"),
        "--shards",
        "1",
    ]);

    let t0 = Instant::now();
    let p = Player::start(edge.addr, "live", "fo");
    assert!(
        p.wait_video(30, Duration::from_secs(10)),
        "no video via origin2"
    );
    let first = p.media().iter().find(|m| m.video).map(|m| m.at - t0);
    eprintln!("dead origin first: first video after {first:?}");

    let lines = edge.log_lines();
    let failed = find_line(&lines, 0, &["origin pull failed", &dead_url])
        .unwrap_or_else(|| panic!("no failed attempt on {dead_url}: {lines:#?}"));
    let live = find_line(&lines, failed, &["origin stream live", "live/fo"])
        .unwrap_or_else(|| panic!("no success after the failure: {lines:#?}"));
    let pulling2 = find_line(
        &lines,
        failed,
        &["pulling from origin", &origin2.url("live")],
    );
    assert!(pulling2.is_some_and(|i| i < live), "{lines:#?}");
    eprintln!("edge: {}\nedge: {}", lines[failed], lines[live]);
    assert_eq!(origin2.count_log(&["play started", &key_field("fo")]), 1);
}

/// 3b: the first origin is up but does not have the stream; after ~5 s without media the
/// edge fails over to the second, which has it.
#[test]
fn fails_over_from_origin_without_the_stream() {
    let empty = Server::start(&["--shards", "1"]);
    let (origin2, _publisher) = origin_with_stream("nf");
    let edge = Server::start(&[
        "--origin",
        &empty.url("live"),
        "--origin",
        &origin2.url("live"),
        "--shards",
        "1",
    ]);

    let t0 = Instant::now();
    let p = Player::start(edge.addr, "live", "nf");
    assert!(
        p.wait_video(30, Duration::from_secs(15)),
        "no video via origin2"
    );
    let first = p
        .media()
        .iter()
        .find(|m| m.video)
        .map(|m| m.at - t0)
        .expect("video");
    eprintln!("origin without the stream first: first video after {first:?}");
    assert!(
        first >= Duration::from_millis(4500) && first <= Duration::from_secs(9),
        "failover took {first:?}"
    );

    let lines = edge.log_lines();
    let failed = find_line(
        &lines,
        0,
        &["origin pull failed", &empty.url("live"), "no media"],
    )
    .unwrap_or_else(|| panic!("no 'no media' failure on the empty origin: {lines:#?}"));
    assert!(
        find_line(&lines, failed, &["origin stream live", "live/nf"]).is_some(),
        "{lines:#?}"
    );
    // The empty origin saw the edge's play and its hang-up.
    let play = empty
        .wait_log(&["play started", &key_field("nf")], Duration::from_secs(1))
        .expect("edge never played on the empty origin");
    let conn: u64 = span_field(&play, "conn=").expect("conn id");
    assert!(
        empty
            .wait_log(
                &[&format!("conn={conn} "), "closed"],
                Duration::from_secs(3)
            )
            .is_some(),
        "the empty origin never saw the edge hang up"
    );
    assert_eq!(origin2.count_log(&["play started", &key_field("nf")]), 1);
}

/// 4: the origin dies mid-stream and comes back on the same port; the edge player stays
/// connected and continues with forward-moving timestamps.
#[test]
fn edge_player_survives_origin_restart() {
    origin_restart("rs", false, "2");
}

/// 4, variant: the origin's publisher leaves first (the edge hears UnpublishNotify and
/// passes it on), then the origin restarts and the stream is republished.
#[test]
fn edge_player_survives_unpublish_and_origin_restart() {
    origin_restart("rsu", true, "1");
}

/// `edge_shards`: 2 also has the ingest restart reach a mirror on the other shard when the
/// player lands there.
fn origin_restart(name: &str, publisher_leaves_first: bool, edge_shards: &str) {
    let key = format!("live/{name}");
    let (origin, mut publisher) = origin_with_stream(name);
    let listen = origin.addr.to_string();
    let edge = Server::start(&["--origin", &origin.url("live"), "--shards", edge_shards]);

    let p = Player::start(edge.addr, "live", name);
    assert!(
        p.wait_video(60, Duration::from_secs(10)),
        "no video before the restart"
    );

    let killed = if publisher_leaves_first {
        publisher.kill();
        assert!(
            origin
                .wait_log(&["publish ended", &key_field(name)], Duration::from_secs(3))
                .is_some(),
            "the origin never saw its publisher leave"
        );
        std::thread::sleep(Duration::from_millis(200));
        drop(origin);
        Instant::now()
    } else {
        // SIGKILL the origin while its publisher is live, so the edge gets no
        // UnpublishNotify: its upstream connection just ends mid-stream.
        drop(origin);
        let killed = Instant::now();
        publisher.kill();
        killed
    };
    std::thread::sleep(Duration::from_millis(500));
    let origin = Server::start_on(&listen, &["--shards", "1"]);
    let republish = Instant::now();
    // The same URL: the new origin listens where the old one did.
    publisher.restart();
    wait_published(&origin, &key);
    let published = Instant::now();

    let resumed = p.wait(Duration::from_secs(15), |m| {
        m.iter().filter(|m| m.video && m.at >= republish).count() >= 60
    });
    let all = p.media();
    let before: Vec<&Media> = all.iter().filter(|m| m.at < republish).collect();
    let after: Vec<&Media> = all.iter().filter(|m| m.at >= republish).collect();
    assert!(
        resumed,
        "{} video after the republish, closed {:?}; edge log: {:#?}",
        after.iter().filter(|m| m.video).count(),
        p.closed_at(),
        edge.log_lines()
    );
    assert_eq!(p.closed_at(), None, "the edge closed its player");

    let last_before = before.last().expect("media before").at;
    let first_after = after.first().expect("media after");
    let last_v = before.iter().rev().find(|m| m.video).expect("video before");
    let first_v = after.iter().find(|m| m.video).expect("video after");
    eprintln!(
        "origin restart ({name}): media gap {:?} (last media {:?} before the kill; republish \
         {:?} after the kill, publisher live {:?} later, edge media {:?} after that; \
         {} failed pull attempts); video ts {} -> {}, first video after {:?}",
        first_after.at - last_before,
        killed.saturating_duration_since(last_before),
        republish - killed,
        published - republish,
        first_after.at.saturating_duration_since(published),
        edge.count_log(&["origin pull failed"]),
        last_v.ts,
        first_v.ts,
        first_v.head,
    );
    assert_forward(&all, "edge player across the origin restart");
    assert!(first_v.ts > last_v.ts);
    assert!(
        first_v.is_avc_config() || first_v.is_keyframe(),
        "resumed with {first_v:?}"
    );
    assert!(
        edge.logged(&["origin pull failed"]),
        "the edge never noticed the drop"
    );
    assert!(edge.count_log(&["origin stream live", &key]) >= 2);
}

/// 5: with `--origin-idle-secs 2` the upstream closes 2-4 s after the last player left, and
/// the origin sees it go; a new player starts a new pull.
#[test]
fn idle_upstream_closes_after_last_player_leaves() {
    let (origin, _publisher) = origin_with_stream("idle");
    let edge = Server::start(&[
        "--origin",
        &origin.url("live"),
        "--origin-idle-secs",
        "2",
        "--shards",
        "1",
    ]);

    let mut p = Player::start(edge.addr, "live", "idle");
    assert!(p.wait_video(30, Duration::from_secs(10)), "no video");
    let play = origin
        .wait_log(
            &["play started", &key_field("idle")],
            Duration::from_secs(1),
        )
        .expect("upstream play on the origin");
    let conn: u64 = span_field(&play, "conn=").expect("conn id");
    // Still open while a player watches (longer than the idle period).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(edge.count_log(&["origin pull closed"]), 0);

    p.stop();
    let left = Instant::now();
    assert!(
        edge.wait_log(&["origin pull closed", "live/idle"], Duration::from_secs(8))
            .is_some(),
        "the pull never closed"
    );
    let closed = left.elapsed();
    assert!(
        origin
            .wait_log(
                &[&format!("conn={conn} "), "closed"],
                Duration::from_secs(3)
            )
            .is_some(),
        "the origin never saw the upstream disconnect"
    );
    let origin_saw = left.elapsed();
    eprintln!("idle close: edge closed the pull {closed:?} after the last player left, origin saw it by {origin_saw:?}");
    assert!(
        closed >= Duration::from_millis(1500) && closed <= Duration::from_millis(4500),
        "pull closed {closed:?} after the last player left"
    );

    // The next player starts a fresh upstream.
    let p2 = Player::start(edge.addr, "live", "idle");
    assert!(
        p2.wait_video(30, Duration::from_secs(10)),
        "no video after reopen"
    );
    assert_eq!(origin.count_log(&["play started", &key_field("idle")]), 2);
    assert_eq!(edge.count_log(&["pulling from origin", "live/idle"]), 2);
}

/// An origin that requires a play token: the edge presents it from its `--origin` URL's
/// query (connect-level `?token=`), never logs it, and an edge without it is refused.
#[test]
fn edge_pulls_from_an_origin_that_requires_a_token() {
    let cfg = std::env::temp_dir().join(format!("edge-auth-{}.toml", std::process::id()));
    std::fs::write(
        &cfg,
        "[auth.play]\ntokens = [{ match = \"live/*\", token = \"edge-t0k\" }]\n",
    )
    .unwrap();
    let origin = Server::start(&["--config", cfg.to_str().unwrap()]);
    let _publisher = Publisher::live(&origin, "live/tok");

    let with = format!("{}?token=edge-t0k", origin.url("live"));
    let edge = Server::start(&["--origin", &with, "--shards", "1"]);
    let probe = ffprobe(&edge.url("live/tok"), 3, false, &[]);
    eprintln!("edge with token: {} video frames", probe.count("video"));
    assert!(probe.count("video") >= 30, "{probe:?}");
    assert!(
        edge.log_lines().iter().all(|l| !l.contains("edge-t0k")),
        "the token leaked into the edge's log"
    );

    let without = Server::start(&["--origin", &origin.url("live"), "--shards", "1"]);
    let refused = ffprobe(&without.url("live/tok"), 2, false, &[]);
    assert_eq!(refused.count("video"), 0, "{refused:?}");
    assert!(origin
        .wait_log(&["play refused: unauthorized"], Duration::from_secs(3))
        .is_some());
    let _ = std::fs::remove_file(&cfg);
}

/// An edge pulling many streams merges its upstream reads like a busy origin merges its
/// publishers': with `--read-coalesce-from 1`, one pulled stream makes the shard busy, and
/// the edge's players get the origin's frames in bursts one tick apart, none lost.
#[test]
fn an_edge_merges_its_upstream_reads_on_a_busy_shard() {
    const TICK_MS: u128 = 400;
    let tick = TICK_MS.to_string();
    let (origin, _publisher) = origin_with_stream("merged");
    let edge = Server::start(&[
        "--origin",
        &origin.url("live"),
        "--shards",
        "1",
        "--read-coalesce-ms",
        &tick,
        "--read-coalesce-from",
        "1",
    ]);
    let (mut player, _) =
        common::rtmp_client::RtmpClient::player(edge.addr, "live", "merged").expect("play");
    let end = Instant::now() + Duration::from_secs(5);
    let mut arrivals = Vec::new();
    while Instant::now() < end {
        let Ok(m) = player.recv(end) else { break };
        if m.type_id == rtmp_edge::protocol::message::VIDEO {
            arrivals.push((Instant::now(), m.timestamp));
        }
    }
    // Past the cached GOP the player got at once: the live part.
    let live = &arrivals[arrivals.len() / 3..];
    let gaps: Vec<u128> = live
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].0).as_millis())
        .collect();
    let bursts = gaps.iter().filter(|&&g| g >= 100).count();
    let together = gaps.iter().filter(|&&g| g < 20).count();
    let span = live.last().unwrap().1.wrapping_sub(live[0].1);
    eprintln!(
        "{} live video frames over {span} ms of stream: {bursts} bursts, {together} gaps under 20 ms, longest {} ms",
        live.len(),
        gaps.iter().max().unwrap()
    );
    // 25-30 fps read at once would come ~35 ms apart; merged, most come together.
    assert!(live.len() >= 40, "{} live frames", live.len());
    assert!(
        together * 10 >= gaps.len() * 7,
        "{together} of {} gaps under 20 ms",
        gaps.len()
    );
    assert!(*gaps.iter().max().unwrap() <= TICK_MS + 250, "{gaps:?}");
    // Every frame of the stream: timestamps step by one frame interval, none skipped.
    assert!(
        live.windows(2).all(|w| w[1].1.wrapping_sub(w[0].1) <= 100),
        "{:?}",
        live.iter().map(|a| a.1).collect::<Vec<_>>()
    );
    assert!(edge.logged(&["busy: merging publishers' reads"]));
}

/// 11: HTTP viewers on an edge: an HTTP-FLV or HLS request for a stream only the origin has
/// starts the pull as an RTMP player does, the pull stays open while they watch (longer
/// than the idle period, no player on the edge), and closes once they are gone.
#[test]
fn http_viewers_on_an_edge_pull_from_the_origin() {
    let (origin, _flv_publisher) = origin_with_stream("web");
    let _hls_publisher = Publisher::live(&origin, "live/webhls");
    let edge = Server::start(&[
        "--origin",
        &origin.url("live"),
        "--origin-idle-secs",
        "1",
        "--shards",
        "2",
        "--http-media",
        "127.0.0.1:0",
        "--hls",
        "on-demand",
    ]);
    let media = edge.media_addr();

    // HTTP-FLV: 4 s decoded (four idle periods) over one upstream.
    let probe = assert_decodes(&format!("http://{media}/live/web.flv"), 4, 90);
    eprintln!("edge HTTP-FLV: {} video frames", probe.count("video"));
    assert_eq!(origin.count_log(&["play started", &key_field("web")]), 1);
    assert_eq!(edge.count_log(&["origin pull closed", "live/web"]), 0);
    // Gone with its viewer, after the idle period.
    let left = Instant::now();
    assert!(
        edge.wait_log(&["origin pull closed", "live/web"], Duration::from_secs(6))
            .is_some(),
        "the HTTP-FLV pull never closed"
    );
    eprintln!(
        "HTTP-FLV pull closed {:?} after its viewer left",
        left.elapsed()
    );

    // HLS: the first playlist request starts the pull; the stream plays.
    let probe = assert_decodes(&format!("http://{media}/live/webhls/index.m3u8"), 4, 60);
    eprintln!("edge HLS: {} video frames", probe.count("video"));
    // One upstream: HLS requests kept it open (an HLS viewer counts until 30 s after its
    // last request, as for on-demand packaging, so the close is not waited for here).
    assert_eq!(origin.count_log(&["play started", &key_field("webhls")]), 1);

    // A stream the origin does not have: a 404 once the pull gives up, not a hang.
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(media).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /live/nothing.flv HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("an answer");
    assert_eq!(&head, b"HTTP/1.1 404", "{:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}
