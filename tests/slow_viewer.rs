//! The slow-viewer policy with real sockets: a player that stops reading (our client that
//! never reads, and a SIGSTOP'd rtmpdump) is bounded, dropped and finally disconnected,
//! while a healthy player of the same stream keeps receiving without gaps.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::rtmp_client::{is_av, RecvEnd, RtmpClient};
use common::*;

#[test]
fn stuck_viewers_are_bounded_and_disconnected_others_unharmed() {
    stuck_viewers_with(&[]);
}

/// With a latency budget frames reach viewers as runs (one buffer per flush): a stuck
/// viewer's run is cut frame by frame by the same admission, and the others get theirs.
#[test]
fn stuck_viewers_are_bounded_and_disconnected_others_unharmed_with_a_write_budget() {
    stuck_viewers_with(&["--write-coalesce-ms", "100"]);
}

fn stuck_viewers_with(extra: &[&str]) {
    let server = Server::start(
        &[
            extra,
            &[
                "--shards",
                "1",
                "--viewer-queue-bytes",
                "262144",
                "--viewer-queue-ms",
                "1500",
                "--viewer-behind-secs",
                "3",
                "--stats-interval-secs",
                "1",
            ],
        ]
        .concat(),
    );
    let publisher = flood_publisher(server.addr, "slow", 16);
    wait_published(&server, "live/slow");

    let (mut good, _) = RtmpClient::player(server.addr, "live", "slow").unwrap();

    // Stuck viewer 1: our client plays and never reads again (a tiny SO_RCVBUF would be
    // more realistic but makes loopback TCP crawl on persist timers when draining later).
    let (mut stuck, _) = RtmpClient::player(server.addr, "live", "slow").unwrap();
    // Stuck viewer 2: rtmpdump, frozen with SIGSTOP once it plays.
    let mut dump = Proc::spawn(Command::new("rtmpdump").args([
        "-q",
        "--live",
        "-r",
        &server.url("live/slow"),
        "-o",
        "/dev/null",
    ]));
    std::thread::sleep(Duration::from_millis(800));
    let dump_pid = dump.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &dump_pid])
        .status()
        .unwrap()
        .success());
    let rss_before = server.rss_kib();

    // The healthy viewer reads for 12 s; no gap between media messages may exceed 1 s.
    let end = Instant::now() + Duration::from_secs(12);
    let (mut last, mut worst, mut frames) = (Instant::now(), Duration::ZERO, 0u32);
    let mut rss_peak = rss_before;
    loop {
        match good.recv(end) {
            Ok(m) if is_av(&m) => {
                worst = worst.max(last.elapsed());
                last = Instant::now();
                frames += 1;
                rss_peak = rss_peak.max(server.rss_kib());
            }
            Ok(_) => {}
            Err(RecvEnd::Timeout) => break,
            Err(RecvEnd::Closed) => panic!("the healthy viewer was disconnected"),
        }
    }
    eprintln!(
        "healthy viewer: {frames} frames, worst gap {worst:?}; server RSS {rss_before} -> peak {rss_peak} KiB"
    );
    assert!(
        frames > 300,
        "healthy viewer got only {frames} A/V messages in 12 s"
    );
    assert!(
        worst < Duration::from_secs(1),
        "healthy viewer stalled {worst:?}"
    );
    // Two stuck viewers at a 256 KiB budget each: memory must stay bounded (frames are
    // shared, so the queues hold references, not copies).
    assert!(
        rss_peak < rss_before + 32 * 1024,
        "server RSS grew from {rss_before} to {rss_peak} KiB"
    );

    // Both stuck viewers were dropped to, then disconnected (counters are cumulative, so
    // the newest summary line has them all).
    std::thread::sleep(Duration::from_millis(1200));
    let stats = server
        .last_log(&["shard stats"])
        .expect("no shard stats line");
    eprintln!("{stats}");
    let field = |name: &str| -> u64 {
        stats
            .split(&format!("{name}="))
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(field("drops_queue_bytes") + field("drops_queue_age") > 0);
    assert_eq!(
        field("kicked_behind"),
        2,
        "both stuck viewers disconnected: {stats}"
    );
    assert!(
        server.logged(&["viewers stayed behind too long"]),
        "no disconnect log line"
    );
    // Our stuck client sees the close once it reads again.
    assert!(stuck.wait_closed(Instant::now() + Duration::from_secs(10)));
    let _ = Command::new("kill").args(["-CONT", &dump_pid]).status();
    assert!(
        dump.wait_timeout(Duration::from_secs(10)).is_some(),
        "rtmpdump did not notice the disconnect"
    );
    publisher.join().unwrap();
}

/// A player whose socket stays full (it never reads) while its queue budget and patience
/// are far away: the write stalls, and at --write-timeout-secs the connection is closed
/// with a log line and a counter; another player of the stream keeps receiving.
#[test]
fn a_write_stalled_past_the_write_timeout_closes_the_player() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--viewer-queue-bytes",
        "67108864",
        "--viewer-queue-ms",
        "300000",
        "--viewer-behind-secs",
        "300",
        "--write-timeout-secs",
        "2",
        "--stats-interval-secs",
        "1",
    ]);
    let publisher = flood_publisher(server.addr, "stall", 25);
    wait_published(&server, "live/stall");
    let (mut good, _) = RtmpClient::player(server.addr, "live", "stall").unwrap();
    let (mut stuck, _) = RtmpClient::player(server.addr, "live", "stall").unwrap();
    let t_play = Instant::now();

    let end = t_play + Duration::from_secs(22);
    let (mut last, mut worst, mut frames) = (Instant::now(), Duration::ZERO, 0u32);
    let mut closed_after = None;
    let mut last_check = Instant::now();
    while Instant::now() < end {
        match good.recv(Instant::now() + Duration::from_millis(200)) {
            Ok(m) if is_av(&m) => {
                worst = worst.max(last.elapsed());
                last = Instant::now();
                frames += 1;
            }
            Ok(_) | Err(RecvEnd::Timeout) => {}
            Err(RecvEnd::Closed) => panic!(
                "the healthy viewer was disconnected after {:?}:\n{}",
                t_play.elapsed(),
                server.log_tail(30)
            ),
        }
        // Not per message: the healthy viewer must keep reading at the stream's rate.
        if closed_after.is_none() && last_check.elapsed() > Duration::from_millis(250) {
            last_check = Instant::now();
            if server.count_log(&["peer stopped reading"]) > 0 {
                closed_after = Some(t_play.elapsed());
            }
        }
    }
    let line = server
        .log_lines()
        .into_iter()
        .find(|l| l.contains("peer stopped reading"));
    eprintln!("stall close after {closed_after:?}: {line:?}; healthy viewer {frames} frames, worst gap {worst:?}");
    let line = line.expect("the stalled player was never closed");
    assert!(line.contains("stall_s=2"), "{line}");
    // The socket fills within seconds at 12 Mbit/s; the close follows 2-3 s later.
    assert!(
        closed_after.unwrap() < Duration::from_secs(18),
        "{closed_after:?}"
    );
    assert!(
        frames > 400,
        "healthy viewer got only {frames} A/V messages"
    );
    assert!(
        worst < Duration::from_secs(1),
        "healthy viewer stalled {worst:?}"
    );
    let stats = server
        .last_log(&["shard stats"])
        .expect("no shard stats line");
    assert!(stats.contains("write_stalls=1"), "{stats}");
    assert!(stats.contains("kicked_behind=0"), "{stats}");
    assert!(stuck.wait_closed(Instant::now() + Duration::from_secs(10)));
    publisher.join().unwrap();
}
