//! Issue requirement (d): a player joining 10 s into a stream gets metadata, sequence headers
//! and a keyframe as its first video within 300 ms of its play command (timed at the client),
//! on one shard and on two; plus a player that outlives its publisher and sees it return.

mod common;

use rtmp_edge::shard::state::owner_of;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::players::ffprobe_frames;
use common::publisher::Publisher;
use common::rtmp_client::*;
use common::*;
use rtmp_edge::protocol::chunk::RawMessage;
use rtmp_edge::protocol::message::{self as msg, UserControl};

/// How far into the stream the player joins.
const JOIN_AFTER: Duration = Duration::from_secs(10);
/// Play command to first keyframe, measured at the client.
const MAX_JOIN_LATENCY: Duration = Duration::from_millis(300);
/// How long to keep reading after the keyframe to check timestamp order.
const FOLLOW: Duration = Duration::from_millis(1500);

fn describe(m: &RawMessage) -> String {
    if let Some((_, code)) = status(m) {
        return code;
    }
    if let Some(uc) = user_control(m) {
        return format!("{uc:?}");
    }
    if let Some(name) = data_name(m) {
        return format!("data:{name}@{}", m.timestamp);
    }
    let head: Vec<String> = m
        .payload
        .iter()
        .take(2)
        .map(|b| format!("{b:02x}"))
        .collect();
    match m.type_id {
        msg::AUDIO => format!("audio[{}]@{}", head.join(" "), m.timestamp),
        msg::VIDEO => format!("video[{}]@{}", head.join(" "), m.timestamp),
        t => format!("type{t}"),
    }
}

/// Per-track timestamp order: every audio/video timestamp is >= the previous one of its
/// track. Returns the first violation.
fn check_monotonic(msgs: &[RawMessage]) -> Result<(), String> {
    let mut last = [None::<u32>; 2];
    for m in msgs.iter().filter(|m| is_av(m)) {
        let slot = &mut last[usize::from(m.type_id == msg::VIDEO)];
        if let Some(prev) = *slot {
            if m.timestamp < prev {
                return Err(format!("{} after {prev}", describe(m)));
            }
        }
        *slot = Some(m.timestamp);
    }
    Ok(())
}

/// Checks the start of what a player receives: from `from` on, configuration (both
/// sequence headers) before any other audio/video, and a keyframe as the first other video.
/// Returns the index of that keyframe.
fn check_config_then_keyframe(msgs: &[RawMessage], from: usize) -> Result<usize, String> {
    let (mut avc, mut aac) = (false, false);
    for (i, m) in msgs.iter().enumerate().skip(from) {
        avc |= is_avc_seq_header(m);
        aac |= is_aac_seq_header(m);
        if !is_av(m) || is_config(m) {
            continue;
        }
        if !(avc && aac) {
            return Err(format!(
                "{} before the sequence headers (avc {avc}, aac {aac})",
                describe(m)
            ));
        }
        if m.type_id == msg::VIDEO {
            return if is_avc_keyframe(m) {
                Ok(i)
            } else {
                Err(format!("first video {} is not a keyframe", describe(m)))
            };
        }
    }
    Err("no video frame received".into())
}

struct Joined {
    latency: Duration,
    keyframe_ts: u32,
}

/// A late joiner: plays `name`, checks the order of everything up to the first keyframe and
/// the timestamps after it. Returns the play-to-keyframe latency. Also returns the local
/// port, to find the connection's log lines.
fn late_join(addr: SocketAddr, name: &str) -> (Joined, u16) {
    let (mut c, t0) = RtmpClient::player(addr, "live", name).expect("play");
    let port = c.stream.local_addr().expect("local addr").port();
    let mut msgs = Vec::new();
    let mut keyframe_at = None;
    let end = t0 + Duration::from_secs(5);
    while keyframe_at.is_none() {
        let m = c
            .recv(end)
            .unwrap_or_else(|e| panic!("{e:?} before a video frame; got {:?}", seq(&msgs)));
        if m.type_id == msg::VIDEO && !is_config(&m) {
            keyframe_at = Some(Instant::now());
        }
        msgs.push(m);
    }
    let latency = keyframe_at.unwrap() - t0;

    // Play.Reset (optional), then Play.Start, before any data or media.
    let codes: Vec<String> = msgs.iter().filter_map(status).map(|s| s.1).collect();
    assert!(
        codes == ["NetStream.Play.Start"]
            || codes == ["NetStream.Play.Reset", "NetStream.Play.Start"],
        "status sequence {codes:?}; messages {:?}",
        seq(&msgs)
    );
    let start = msgs
        .iter()
        .position(|m| status(m).is_some_and(|s| s.1 == "NetStream.Play.Start"))
        .unwrap();
    // onMetaData first of all data/media after Play.Start (|RtmpSampleAccess aside).
    let first = msgs[start + 1..]
        .iter()
        .find(|m| is_av(m) || data_name(m).is_some_and(|n| n != "|RtmpSampleAccess"))
        .map(describe)
        .unwrap_or_default();
    assert!(
        first.starts_with("data:onMetaData"),
        "first after Play.Start: {first}; messages {:?}",
        seq(&msgs)
    );
    let key = check_config_then_keyframe(&msgs, start)
        .unwrap_or_else(|e| panic!("{e}; messages {:?}", seq(&msgs)));
    let keyframe_ts = msgs[key].timestamp;
    // The GOP is the first thing after the configuration: nothing else came before it.
    let first_av = msgs.iter().position(|m| is_av(m) && !is_config(m)).unwrap();
    assert_eq!(first_av, key, "messages {:?}", seq(&msgs));
    // The decoder configuration is stamped with the GOP start, so clocks start there.
    for m in msgs.iter().filter(|m| is_config(m)) {
        assert_eq!(
            m.timestamp,
            keyframe_ts,
            "{} not at the GOP start",
            describe(m)
        );
    }
    assert!(
        keyframe_ts >= 5000,
        "joined 10 s in, yet the keyframe is at {keyframe_ts} ms"
    );

    // From the keyframe on, timestamps never go back within a track.
    let follow_end = Instant::now() + FOLLOW;
    let mut after = vec![msgs[key].clone()];
    while let Ok(m) = c.recv(follow_end) {
        after.push(m);
    }
    let video = after.iter().filter(|m| m.type_id == msg::VIDEO).count();
    assert!(video >= 20, "only {video} video messages in {FOLLOW:?}");
    if let Err(e) = check_monotonic(&after) {
        panic!("timestamps went back: {e}");
    }
    (
        Joined {
            latency,
            keyframe_ts,
        },
        port,
    )
}

fn seq(msgs: &[RawMessage]) -> Vec<String> {
    msgs.iter().map(describe).take(40).collect()
}

/// ffprobe joining the live stream must decode a keyframe (I picture) first.
fn ffprobe_first_frame_is_key(url: &str) {
    let probe = ffprobe_frames(url, 3, Some("v:0"));
    let frames = &probe.frames;
    assert!(
        frames.len() >= 30,
        "ffprobe saw {} frames: {}",
        frames.len(),
        probe.stderr
    );
    assert_eq!(
        (frames[0].key, frames[0].pict_type.as_str()),
        (true, "I"),
        "first frames: {:?}",
        &frames[..5]
    );
}

/// Sleeps until `JOIN_AFTER` past `since`.
fn sleep_until_join(since: Instant) {
    std::thread::sleep((since + JOIN_AFTER).saturating_duration_since(Instant::now()));
}

#[test]
fn late_joiner_gets_metadata_config_and_keyframe_within_300ms() {
    let server = Server::start(&["--shards", "1"]);
    let _publisher = Publisher::live(&server, "live/late");
    let since = Instant::now();
    sleep_until_join(since);

    let (j, _) = late_join(server.addr, "late");
    eprintln!(
        "late join (1 shard): keyframe at {} ms after {:?}",
        j.keyframe_ts, j.latency
    );
    assert!(
        j.latency < MAX_JOIN_LATENCY,
        "play to keyframe took {:?}",
        j.latency
    );
    ffprobe_first_frame_is_key(&server.url("live/late"));
}

/// The shard a connection landed on, from its "play started" log line.
fn shard_of(server: &Server, port: u16) -> usize {
    let peer = format!("peer=127.0.0.1:{port} ");
    let line = server
        .wait_log(&["play started", &peer], Duration::from_secs(2))
        .expect("play log line");
    line.split("shard=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .expect("shard in the log line")
}

#[test]
fn late_joiners_on_both_shards() {
    late_joiners_on_both_shards_with(&[]);
}

/// With a latency budget, live frames reach viewers as runs (one merged buffer per flush):
/// a joiner still starts from the cache at once, with nothing twice and nothing missing.
#[test]
fn late_joiners_on_both_shards_with_a_write_budget() {
    late_joiners_on_both_shards_with(&["--write-coalesce-ms", "100"]);
}

fn late_joiners_on_both_shards_with(extra: &[&str]) {
    let server = Server::start(&[&["--shards", "2"], extra].concat());
    // One stream owned by each shard: wherever the kernel puts a joiner, joining both
    // streams covers the owner shard and a mirror shard.
    let names: Vec<String> = (0..2)
        .map(|want| {
            (0..)
                .map(|i| format!("late2-{i}"))
                .find(|n| owner_of(&format!("live/{n}"), 2) == want)
                .unwrap()
        })
        .collect();
    let media = test_media_locked();
    let _publishers: Vec<_> = names
        .iter()
        .map(|n| Publisher::start(&media, &server.url(&format!("live/{n}"))))
        .collect();
    for n in &names {
        wait_published(&server, &format!("live/{n}"));
    }
    sleep_until_join(Instant::now());

    let (mut owner_side, mut mirror_side) = (0, 0);
    let mut latencies = Vec::new();
    // The kernel hashes each connection to a shard, so a side is missed with probability
    // 1/2 per round: 16 rounds make a miss of either side a 1-in-30,000 event, and the loop
    // ends as soon as both are covered (three rounds on average).
    for round in 0..16 {
        let name = &names[round % 2];
        let (j, port) = late_join(server.addr, name);
        let shard = shard_of(&server, port);
        let owner = owner_of(&format!("live/{name}"), 2);
        if shard == owner {
            owner_side += 1;
        } else {
            mirror_side += 1;
        }
        latencies.push((shard, owner, j.latency));
        assert!(
            j.latency < MAX_JOIN_LATENCY,
            "shard {shard} (owner {owner}): play to keyframe took {:?}",
            j.latency
        );
        if owner_side > 0 && mirror_side > 0 && latencies.len() >= 2 {
            break;
        }
    }
    eprintln!("late joins (2 shards), (shard, owner, latency): {latencies:?}");
    assert!(
        owner_side > 0 && mirror_side > 0,
        "joins covered owner {owner_side} / mirror {mirror_side} times"
    );
    ffprobe_first_frame_is_key(&server.url(&format!("live/{}", names[1])));
}

#[test]
fn player_survives_unpublish_and_resumes_forward_on_republish() {
    survives_unpublish_with(&[]);
}

#[test]
fn player_survives_unpublish_and_resumes_forward_on_republish_with_a_write_budget() {
    survives_unpublish_with(&["--write-coalesce-ms", "350"]);
}

fn survives_unpublish_with(extra: &[&str]) {
    let server = Server::start(&[&["--shards", "2"], extra].concat());
    let mut publisher = Publisher::live(&server, "live/again");
    std::thread::sleep(Duration::from_millis(1500));

    let (mut c, _) = RtmpClient::player(server.addr, "live", "again").expect("play");
    c.wait_status(
        "NetStream.Play.Start",
        Instant::now() + Duration::from_secs(5),
    )
    .expect("Play.Start");
    // Watch the first publisher for a while.
    let mut last_ts = 0;
    let mut frames = 0;
    let end = Instant::now() + Duration::from_millis(1500);
    while let Ok(m) = c.recv(end) {
        if is_av(&m) {
            last_ts = last_ts.max(m.timestamp);
            frames += 1;
        }
    }
    assert!(frames > 20, "only {frames} frames from the first publisher");

    // The publisher vanishes: the player is told, and stays connected.
    publisher.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got_eof = false;
    let mut tail = Vec::new();
    loop {
        let m = c
            .recv(deadline)
            .unwrap_or_else(|e| panic!("{e:?} waiting for UnpublishNotify; got {:?}", seq(&tail)));
        if let Some(UserControl::StreamEof(id)) = user_control(&m) {
            assert_eq!(id, c.stream_id);
            got_eof = true;
        }
        if status(&m).is_some_and(|s| s.1 == "NetStream.Play.UnpublishNotify") {
            break;
        }
        if is_av(&m) {
            last_ts = last_ts.max(m.timestamp);
        }
        tail.push(m);
    }
    assert!(got_eof, "no StreamEOF before UnpublishNotify");
    assert_eq!(
        c.recv(Instant::now() + Duration::from_millis(500)).err(),
        Some(RecvEnd::Timeout),
        "player must stay connected and idle while unpublished"
    );

    // A new publisher on the same key: PublishNotify, then config and a keyframe first,
    // with timestamps continuing after the old ones instead of restarting at 0.
    publisher.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    c.wait_status("NetStream.Play.PublishNotify", deadline)
        .expect("PublishNotify");
    let mut msgs = Vec::new();
    let end = Instant::now() + Duration::from_secs(3);
    while let Ok(m) = c.recv(end) {
        msgs.push(m);
    }
    let key = check_config_then_keyframe(&msgs, 0)
        .unwrap_or_else(|e| panic!("after republish: {e}; messages {:?}", seq(&msgs)));
    let first_av = msgs.iter().position(|m| is_av(m) && !is_config(m));
    eprintln!(
        "republish: last ts before {last_ts}; then {:?} (first A/V at {first_av:?})",
        &seq(&msgs)[..8]
    );
    for m in msgs.iter().filter(|m| is_av(m)) {
        assert!(
            m.timestamp > last_ts,
            "{} after republish is not past {last_ts}",
            describe(m)
        );
    }
    if let Err(e) = check_monotonic(&msgs[key..]) {
        panic!("timestamps went back after republish: {e}");
    }
    let video = msgs.iter().filter(|m| m.type_id == msg::VIDEO).count();
    assert!(video >= 30, "only {video} video messages after republish");
}

/// A stalled encoder (or a 1 fps camera) sends nothing for a while: a joiner still starts at
/// once from the cached GOP, over RTMP and over HTTP-FLV alike (an HTTP-FLV joiner rings the
/// owner shard instead of waiting for the stream's next frame), on either shard.
#[test]
fn joiners_of_a_paused_stream_start_at_once_over_rtmp_and_http_flv() {
    let server = Server::start(&["--shards", "2", "--http-media", "127.0.0.1:0"]);
    let mut publisher = Publisher::live(&server, "live/paused");
    std::thread::sleep(Duration::from_millis(1500));
    publisher.freeze();
    std::thread::sleep(Duration::from_millis(300));
    let http = format!("http://{}/live/paused.flv", server.media_addr());
    let rtmp = server.url("live/paused");
    // Several of each: RTMP joiners land on either shard (owner or mirror), and each
    // HTTP-FLV joiner rings the owner shard anew.
    for url in [&http, &http, &rtmp, &rtmp, &http] {
        let started = Instant::now();
        let out = run_with_timeout(
            std::process::Command::new("ffmpeg").args([
                "-v",
                "error",
                "-probesize",
                "32",
                "-analyzeduration",
                "0",
                "-i",
                url,
                "-map",
                "0:v:0",
                "-frames:v",
                "1",
                "-f",
                "framecrc",
                "-",
            ]),
            Duration::from_secs(8),
        );
        let took = started.elapsed();
        let frames = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("0,"))
            .count();
        eprintln!("{url}: a frame decoded after {took:?} with the publisher paused");
        assert!(
            out.status.success() && frames == 1,
            "{url}: {frames} frames, {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            took < Duration::from_secs(3),
            "{url}: first frame after {took:?}"
        );
    }
    publisher.kill();
}
