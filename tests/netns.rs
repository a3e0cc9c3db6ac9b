//! Real network faults between hosts: each test builds its own small network of Linux
//! network namespaces (origins, edges, push targets; see `common::netns`), runs rtmp-edge
//! and ffmpeg inside them, and delays, drops or cuts what crosses the links between them.
//! Players run inside the edge hosts on loopback, so what they see is what crossed the
//! faulty links. Skipped, with the reason, where namespaces cannot be made (not root).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::netns::{self, Net};
use common::publisher::{PublishSpec, Publisher};
use common::timeline::{assert_forward, Media, Player};
use common::*;

const PORT: u16 = 1935;
/// The test media's frame interval (30 fps), in RTMP milliseconds.
const FRAME_MS: f64 = 1000.0 / 30.0;

fn net_or_skip(hosts: &[&str]) -> Option<Net> {
    match Net::new(hosts) {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!(
                "SKIPPED: cannot build network namespaces here ({e}); needs root and iproute2"
            );
            None
        }
    }
}

fn listen() -> String {
    format!("0.0.0.0:{PORT}")
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], PORT))
}

fn rtmp(host: &netns::Host, app: &str) -> String {
    format!("rtmp://{}:{PORT}/{app}", host.ip)
}

/// An rtmp-edge in `host` with one shard.
fn server(host: &netns::Host, extra: &[&str]) -> Server {
    let mut args = vec!["--shards", "1"];
    args.extend_from_slice(extra);
    Server::start_in_netns(&host.ns, &listen(), &args)
}

/// ffmpeg in `host` publishing the test media to the rtmp-edge there, over loopback.
fn publish(server: &Server, host: &netns::Host, key: &str) -> Publisher {
    let url = format!("rtmp://127.0.0.1:{PORT}/{key}");
    let p = PublishSpec::new(&test_media_locked(), &url)
        .in_netns(&host.ns)
        .start();
    wait_published(server, key);
    p
}

/// A player in `host` on the rtmp-edge there, over loopback.
fn player(host: &netns::Host, name: &str) -> Player {
    netns::within(&host.ns, || Player::start(local(), "live", name))
}

/// Video frames (not sequence headers) in arrival order.
fn frames(media: &[Media]) -> Vec<Media> {
    media
        .iter()
        .filter(|m| m.video && m.head[1] == 1)
        .copied()
        .collect()
}

/// Frames received against frames the span of their timestamps holds at 30 fps.
fn kept(frames: &[Media]) -> (usize, usize) {
    let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
        return (0, 0);
    };
    let expected = ((last.ts - first.ts) as f64 / FRAME_MS).round() as usize + 1;
    (frames.len(), expected)
}

/// Longest time between two frames arriving, and when it started.
fn longest_gap(frames: &[Media]) -> (Duration, Option<Instant>) {
    frames
        .windows(2)
        .map(|w| (w[1].at - w[0].at, Some(w[0].at)))
        .max_by_key(|g| g.0)
        .unwrap_or((Duration::ZERO, None))
}

/// 100 ms one-way delay and 2 % loss on every link between an origin and two edges: the
/// players on both edges keep at least 95 % of the frames, with timestamps in order.
#[test]
fn edges_keep_frames_through_delay_and_loss() {
    let Some(net) = net_or_skip(&["origin", "edge1", "edge2"]) else {
        return;
    };
    for h in ["origin", "edge1", "edge2"] {
        net.shape(h, Duration::from_millis(100), 0.02);
    }
    let o = net.host("origin");
    let origin = server(o, &[]);
    let _publisher = publish(&origin, o, "live/lossy");
    let origin_url = rtmp(o, "live");
    let edges: Vec<Server> = ["edge1", "edge2"]
        .iter()
        .map(|e| server(net.host(e), &["--origin", &origin_url]))
        .collect();

    // The links really are slow: a TCP handshake from an edge to the origin takes a round
    // trip of 2 x 100 ms.
    let rtt = netns::within(&net.host("edge1").ns, || {
        let t = Instant::now();
        std::net::TcpStream::connect((o.ip.as_str(), PORT)).expect("connect to the origin");
        t.elapsed()
    });
    assert!(rtt >= Duration::from_millis(195), "connect took {rtt:?}");

    let mut players: Vec<(String, Player)> = Vec::new();
    for e in ["edge1", "edge2"] {
        for i in 0..2 {
            players.push((format!("{e}#{i}"), player(net.host(e), "lossy")));
        }
    }
    let run = Duration::from_secs(20);
    std::thread::sleep(run);

    for (name, p) in &mut players {
        p.stop();
        assert_eq!(p.closed_at(), None, "{name}: the edge closed the player");
        let all = p.media();
        assert_forward(&all, name);
        let f = frames(&all);
        let (got, expected) = kept(&f);
        let span = f.last().map_or(0, |l| l.ts - f[0].ts);
        let (gap, _) = longest_gap(&f);
        eprintln!(
            "{name}: {got}/{expected} frames ({:.1} %) over {span} ms of stream, longest gap {gap:?}",
            100.0 * got as f64 / expected.max(1) as f64
        );
        assert!(
            span as u64 >= run.as_millis() as u64 - 5_000,
            "{name}: only {span} ms of stream in {run:?}"
        );
        assert!(
            got * 100 >= expected * 95,
            "{name}: kept {got} of {expected} frames"
        );
    }
    let (delivered, lost) = net.counts();
    let loss = lost as f64 / (delivered + lost) as f64;
    eprintln!(
        "links: {delivered} packets delivered, {lost} dropped ({:.2} %); connect RTT {rtt:?}",
        100.0 * loss
    );
    assert!((0.01..0.03).contains(&loss), "emulated loss {loss}");
    for e in &edges {
        assert_eq!(
            e.count_log(&["origin pull failed"]),
            0,
            "{:#?}",
            e.log_lines()
        );
    }
}

/// The first origin is cut off for 15 s: the edge notices the silent upstream, fails over
/// to the second origin (which has the same stream) before the link comes back, and its
/// players stay connected and keep going forward.
#[test]
fn edge_fails_over_when_its_origin_is_partitioned() {
    let Some(net) = net_or_skip(&["origin1", "origin2", "edge"]) else {
        return;
    };
    let (o1, o2, e) = (net.host("origin1"), net.host("origin2"), net.host("edge"));
    let origin1 = server(o1, &[]);
    let origin2 = server(o2, &[]);
    let _p1 = publish(&origin1, o1, "live/part");
    let _p2 = publish(&origin2, o2, "live/part");
    let edge = server(
        e,
        &["--origin", &rtmp(o1, "live"), "--origin", &rtmp(o2, "live")],
    );
    let mut players = [player(e, "part"), player(e, "part")];
    for p in &players {
        assert!(
            p.wait_video(60, Duration::from_secs(10)),
            "no video before the cut"
        );
    }
    assert_eq!(origin1.count_log(&["play started", "live/part"]), 1);
    assert_eq!(origin2.count_log(&["play started", "live/part"]), 0);

    net.partition("origin1", true);
    let cut = Instant::now();
    std::thread::sleep(Duration::from_secs(15));
    net.partition("origin1", false);
    let healed = Instant::now();
    std::thread::sleep(Duration::from_secs(3));

    for (i, p) in players.iter_mut().enumerate() {
        p.stop();
        assert_eq!(p.closed_at(), None, "player {i}: the edge closed it");
        let all = p.media();
        assert_forward(&all, &format!("player {i}"));
        let f = frames(&all);
        let resumed = f
            .iter()
            .find(|m| m.at > cut && m.at - cut > Duration::from_secs(1))
            .map(|m| m.at - cut);
        let after = f.iter().filter(|m| m.at > cut).count();
        eprintln!(
            "player {i}: first frame {resumed:?} after the cut (healed at {:?}), {after} frames since",
            healed - cut
        );
        let resumed = resumed.expect("no video after the cut");
        assert!(
            resumed < healed - cut,
            "player {i}: video came back only after the partition healed ({resumed:?})"
        );
        assert!(after >= 150, "player {i}: {after} frames after the cut");
    }
    assert!(
        origin2.logged(&["play started", "live/part"]),
        "the edge never pulled from origin2: {:#?}",
        edge.log_lines()
    );
    let failed = edge
        .wait_log(&["origin pull failed", &o1.ip], Duration::from_secs(1))
        .expect("no failure logged for origin1");
    eprintln!("edge: {failed}");
}

/// One of two push targets is cut off for 15 s: only that push backs off and comes back;
/// the other target's player and the origin's own player see no gap.
#[test]
fn partitioned_push_target_backs_off_alone() {
    let Some(net) = net_or_skip(&["origin", "target1", "target2"]) else {
        return;
    };
    let (o, t1, t2) = (net.host("origin"), net.host("target1"), net.host("target2"));
    let target1 = server(t1, &[]);
    let target2 = server(t2, &[]);
    let origin = server(
        o,
        &["--push", &rtmp(t1, "live"), "--push", &rtmp(t2, "live")],
    );
    let _publisher = publish(&origin, o, "live/push");
    wait_published(&target1, "live/push");
    wait_published(&target2, "live/push");
    let mut at_origin = player(o, "push");
    let mut at_target2 = player(t2, "push");
    for p in [&at_origin, &at_target2] {
        assert!(
            p.wait_video(30, Duration::from_secs(10)),
            "no video before the cut"
        );
    }

    net.partition("target1", true);
    let cut = Instant::now();
    std::thread::sleep(Duration::from_secs(15));
    net.partition("target1", false);
    let healed = Instant::now();

    // Back within a connect timeout (10 s) plus a backoff step of the heal.
    let republished = {
        let end = healed + Duration::from_secs(15);
        while target1.count_log(&["publish started", "live/push"]) < 2 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
        }
        Instant::now()
    };
    std::thread::sleep(Duration::from_secs(2));
    for (name, p) in [("origin", &mut at_origin), ("target2", &mut at_target2)] {
        p.stop();
        assert_eq!(p.closed_at(), None, "{name}: player closed");
        let f = frames(&p.media());
        let (gap, when) = longest_gap(&f);
        eprintln!(
            "{name} player: longest gap {gap:?} ({:?} after the cut)",
            when.map(|w| w.saturating_duration_since(cut))
        );
        assert!(
            gap < Duration::from_secs(1),
            "{name}: {gap:?} without video"
        );
    }
    let lines = origin.log_lines();
    let failed: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("push destination failed"))
        .collect();
    eprintln!(
        "target1 publish again {:?} after the heal; origin: {failed:#?}",
        republished - healed
    );
    assert!(
        failed.iter().all(|l| l.contains(&t1.ip)),
        "another push failed too"
    );
    assert!(!failed.is_empty(), "the cut push never failed");
    // Noticed by the unacknowledged-data timeout, not by a write stall of many seconds.
    assert!(
        failed[0].contains("timed out"),
        "first failure: {}",
        failed[0]
    );
    assert!(
        target1.count_log(&["publish started", "live/push"]) >= 2,
        "the push to target1 never came back: {:#?}",
        target1.log_lines()
    );
    assert_eq!(target2.count_log(&["publish started", "live/push"]), 1);
}

/// `--max-handshakes-per-ip`: connections from one (non-loopback) address that are not yet
/// publishing or playing are capped; one that publishes or plays frees its place; loopback
/// is exempt.
#[test]
fn handshakes_in_flight_are_limited_per_address() {
    let Some(net) = net_or_skip(&["server", "client"]) else {
        return;
    };
    let (sh, ch) = (net.host("server"), net.host("client"));
    let server = server(sh, &["--max-handshakes-per-ip", "3"]);
    let remote: SocketAddr = format!("{}:{PORT}", sh.ip).parse().unwrap();
    let connect = || netns::within(&ch.ns, || std::net::TcpStream::connect(remote).unwrap());

    let mut idle: Vec<_> = (0..3).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = connect();
    assert!(
        closed_by_server(&mut fourth, Duration::from_secs(2)),
        "a 4th connection in its handshake from one address was kept"
    );
    for s in &mut idle {
        assert!(!closed_by_server(s, Duration::from_millis(100)));
    }
    // Loopback is exempt: local tools and sidecars are not limited.
    let mut local_ones: Vec<_> = netns::within(&sh.ns, || {
        (0..5)
            .map(|_| std::net::TcpStream::connect(local()).unwrap())
            .collect()
    });
    for s in &mut local_ones {
        assert!(!closed_by_server(s, Duration::from_millis(100)));
    }

    // One place frees: a real publisher from that address gets in, and once it publishes it
    // no longer counts, so a player gets in beside the two idle ones.
    drop(idle.pop());
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("rtmp://{remote}/live/lim");
    let _publisher = PublishSpec::new(&test_media_locked(), &url)
        .in_netns(&ch.ns)
        .start();
    wait_published(&server, "live/lim");
    let p = netns::within(&ch.ns, || Player::start(remote, "live", "lim"));
    assert!(
        p.wait_video(30, Duration::from_secs(10)),
        "the player beside two handshakes got no video"
    );
    // Two idle handshakes + this one make 3 again; a 4th is refused.
    let mut third = connect();
    assert!(!closed_by_server(&mut third, Duration::from_millis(300)));
    let mut one_more = connect();
    assert!(
        closed_by_server(&mut one_more, Duration::from_secs(2)),
        "the limit no longer held"
    );
    let scrape = netns::within(&sh.ns, || server.http_get("/metrics").1);
    let refused = scrape
        .lines()
        .find(|l| l.starts_with("rtmp_connections_refused_total{reason=\"max_handshakes_per_ip\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(refused, Some(2.0), "{scrape}");
}
