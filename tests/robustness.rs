//! Bad network input closes only the offending connection, with a log line, while the
//! server keeps relaying a real stream to real players; and a second publisher on a live
//! key is refused without disturbing the first one's viewers.

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::players::ffprobe_frames;
use common::publisher::Publisher;
use common::rtmp_client::*;
use common::watcher::Watcher;
use common::*;
use rtmp_edge::protocol::message as msg;

/// The server's handshake timeout in these tests (seconds).
const HANDSHAKE_TIMEOUT: u64 = 2;
/// How long the server may take to close an abusive connection.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// One abusive connection after the abuse: the socket to watch and the log text its closing
/// must produce.
struct Abuse {
    stream: TcpStream,
    expect_log: &'static str,
    /// When the abuse finished (for the stalled handshake: when it started stalling).
    sent_at: Instant,
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("tcp connect");
    s.set_nodelay(true).unwrap();
    s
}

/// Writes, ignoring errors: the server may already have closed on an earlier byte.
fn write_lossy(s: &mut TcpStream, b: &[u8]) {
    let _ = s.write_all(b);
}

fn abuse(stream: TcpStream, expect_log: &'static str) -> Abuse {
    Abuse {
        stream,
        expect_log,
        sent_at: Instant::now(),
    }
}

/// (i) Random garbage instead of a handshake.
fn garbage(addr: SocketAddr) -> Abuse {
    let mut s = tcp(addr);
    let mut junk = XorShift(0x0BAD_F00D_DEAD_BEEF).bytes(4096);
    if junk[0] == 3 {
        junk[0] = 0xA5; // keep it garbage: 3 would be a valid version byte
    }
    write_lossy(&mut s, &junk);
    abuse(s, "unsupported RTMP version")
}

/// (ii) C0 and half of C1, then the client closes its side.
fn truncated_handshake_then_close(addr: SocketAddr) -> Abuse {
    let mut s = tcp(addr);
    let mut c0c1 = vec![3u8];
    c0c1.extend(XorShift(7).bytes(768));
    write_lossy(&mut s, &c0c1);
    let _ = s.shutdown(Shutdown::Write);
    abuse(s, "closed")
}

/// (ii) C0 and half of C1, then silence: the handshake timeout must end it.
fn truncated_handshake_stalled(addr: SocketAddr) -> Abuse {
    let mut s = tcp(addr);
    let mut c0c1 = vec![3u8];
    c0c1.extend(XorShift(8).bytes(768));
    write_lossy(&mut s, &c0c1);
    abuse(s, "timeout_s=2") // HANDSHAKE_TIMEOUT
}

fn connected(addr: SocketAddr) -> RtmpClient {
    RtmpClient::connect(addr, "live").expect("valid connect")
}

/// A fmt0 header on csid 3 announcing a 0xFFFFFF-byte video message, and a few payload bytes.
fn huge_header() -> Vec<u8> {
    let mut b = vec![0x03, 0, 0, 0, 0xFF, 0xFF, 0xFF, msg::VIDEO, 1, 0, 0, 0];
    b.extend([0x17; 64]);
    b
}

fn set_chunk_size(c: &mut RtmpClient, size: u32) {
    let payload = Bytes::copy_from_slice(&size.to_be_bytes());
    let _ = c.send_message(2, msg::SET_CHUNK_SIZE, 0, 0, payload);
}

/// (iii) Set Chunk Size 0x7FFFFFFF (legal), then a header announcing 0xFFFFFF bytes: refused
/// at the header by the message size cap, whatever the chunk size.
fn max_chunk_size_then_huge_header(addr: SocketAddr) -> Abuse {
    let mut c = connected(addr);
    set_chunk_size(&mut c, 0x7FFF_FFFF);
    let _ = c.send_raw(&huge_header());
    abuse(c.stream, "exceeds the maximum")
}

/// (iv) Set Chunk Size 0.
fn zero_chunk_size(addr: SocketAddr) -> Abuse {
    let mut c = connected(addr);
    set_chunk_size(&mut c, 0);
    abuse(c.stream, "invalid chunk size 0")
}

/// (v) "The 100 MB header": 0xFFFFFF bytes announced right after the handshake.
fn huge_header_after_handshake(addr: SocketAddr) -> Abuse {
    let mut c = RtmpClient::handshake(addr).expect("handshake");
    let _ = c.send_raw(&huge_header());
    abuse(c.stream, "exceeds the maximum")
}

/// (vi) C0 = 6 (RTMPE), which we do not speak.
fn bad_version(addr: SocketAddr) -> Abuse {
    let mut s = tcp(addr);
    let mut c0c1 = vec![6u8];
    c0c1.extend(XorShift(9).bytes(1536));
    write_lossy(&mut s, &c0c1);
    abuse(s, "unsupported RTMP version byte 0x06")
}

/// (vii) Thousands of random chunk stream bytes after a valid handshake. Whatever they
/// decode to, the connection must end (a protocol error, or the connect timeout).
fn random_chunks(addr: SocketAddr) -> Abuse {
    random_chunks_from(addr, XorShift(0x5EED_0000_1234_5678).bytes(8000))
}

/// (vii) The same, but starting with a plausible fmt0 header (300 bytes, random type) so
/// the decoder gets past the first chunk before the randomness ends it.
fn random_chunks_fmt0(addr: SocketAddr) -> Abuse {
    let mut junk = XorShift(0xC0FF_EE00_0000_0001).bytes(8000);
    junk[0] = 0x04; // fmt0 on csid 4 ...
    junk[4..7].copy_from_slice(&[0, 1, 0x2C]); // ... announcing 300 bytes
    random_chunks_from(addr, junk)
}

fn random_chunks_from(addr: SocketAddr, junk: Vec<u8>) -> Abuse {
    let mut c = RtmpClient::handshake(addr).expect("handshake");
    for part in junk.chunks(1000) {
        let _ = c.send_raw(part);
    }
    // "closing": both the protocol error and the timeout line say it.
    abuse(c.stream, "closing")
}

/// The viewer kept receiving the whole time: video throughout, no gap over `max_gap`, and
/// never told that the stream was unpublished. Stops it.
fn assert_kept_receiving(w: Watcher, max_gap: Duration) {
    let arrivals = w.video();
    let (codes, ended) = w.finish();
    assert!(ended.is_none(), "viewer connection ended: {ended:?}");
    if let Some(code) = codes.iter().find(|c| c.contains("Unpublish")) {
        panic!("viewer got {code}");
    }
    assert!(arrivals.len() > 30, "viewer got {} frames", arrivals.len());
    let gap = arrivals
        .windows(2)
        .map(|p| p[1] - p[0])
        .max()
        .unwrap_or_default();
    assert!(gap < max_gap, "viewer stalled for {gap:?}");
}

#[test]
fn bad_input_closes_only_that_connection() {
    let timeout = HANDSHAKE_TIMEOUT.to_string();
    let mut server = Server::start(&["--shards", "2", "--handshake-timeout-secs", &timeout]);
    let url = server.url("live/robust");
    let _publisher = Publisher::live(&server, "live/robust");

    // Two viewers during the abuse: ours (gap check) and ffprobe (decodes 6 s of stream).
    let viewer = Watcher::start(server.addr, "live", "robust");
    let probe_url = url.clone();
    let probe = thread::spawn(move || ffprobe_frames(&probe_url, 6, Some("v:0")));
    thread::sleep(Duration::from_millis(500));

    type Case = (&'static str, fn(SocketAddr) -> Abuse);
    let cases: [Case; 9] = [
        ("garbage", garbage),
        (
            "truncated handshake, closed",
            truncated_handshake_then_close,
        ),
        ("truncated handshake, stalled", truncated_handshake_stalled),
        (
            "chunk size 0x7FFFFFFF + huge header",
            max_chunk_size_then_huge_header,
        ),
        ("chunk size 0", zero_chunk_size),
        ("0xFFFFFF-byte header", huge_header_after_handshake),
        ("bad version byte", bad_version),
        ("random chunk bytes", random_chunks),
        ("random chunk bytes from fmt0", random_chunks_fmt0),
    ];
    // All at once: each waits for its own close, so the whole run takes about the
    // handshake timeout.
    let addr = server.addr;
    let runs: Vec<_> = cases
        .into_iter()
        .map(|(name, f)| {
            thread::spawn(move || {
                let mut a = f(addr);
                let port = a.stream.local_addr().unwrap().port();
                let closed = wait_closed(&mut a.stream, Instant::now() + CLOSE_WITHIN);
                (name, port, closed, a.sent_at.elapsed(), a.expect_log)
            })
        })
        .collect();
    for run in runs {
        let (name, port, closed, after, expect_log) = run.join().expect("abuse thread");
        assert!(
            closed,
            "{name}: server did not close within {CLOSE_WITHIN:?}"
        );
        let peer = format!("peer=127.0.0.1:{port} ");
        let line = server
            .wait_log(&[&peer, expect_log], Duration::from_secs(3))
            .unwrap_or_else(|| {
                let lines: Vec<_> = server
                    .log_lines()
                    .into_iter()
                    .filter(|l| l.contains(&peer))
                    .collect();
                panic!("{name}: no log line with {expect_log:?}: {lines:#?}")
            });
        let reason = line
            .split_once("Z ")
            .map_or(line.as_str(), |(_, r)| r)
            .to_string();
        eprintln!("{name}: closed after {after:?}: {reason}");
        if name.contains("stalled") {
            assert!(
                after >= Duration::from_millis(HANDSHAKE_TIMEOUT * 1000 - 500),
                "{name}: closed early ({after:?})"
            );
        } else if !matches!(expect_log, "closed" | "closing") {
            assert!(line.contains("protocol error"), "{name}: {line}");
        }
    }
    assert!(server.is_running(), "the server died");

    assert_kept_receiving(viewer, Duration::from_secs(1));
    let during = probe.join().expect("ffprobe thread");
    assert!(
        during.len() >= 150,
        "ffprobe during the abuse decoded {} frames",
        during.len()
    );

    // A player that starts after all of it still decodes, from a keyframe.
    let after = ffprobe_frames(&url, 2, Some("v:0")).frames;
    assert!(after.len() >= 30, "ffprobe after the abuse: {after:?}");
    assert_eq!((after[0].key, after[0].pict_type.as_str()), (true, "I"));
    assert!(server.is_running(), "the server died");
}

#[test]
fn second_publisher_gets_bad_name_and_viewers_continue() {
    let server = Server::start(&["--shards", "2"]);
    let _publisher = Publisher::live(&server, "live/taken");

    let viewer = Watcher::start(server.addr, "live", "taken");
    thread::sleep(Duration::from_millis(500));

    // Intruders land on either shard; one on the non-owner shard is handed to the owner
    // first. Keep trying (bounded) until both paths have been refused.
    let (mut direct, mut handed) = (0, 0);
    let mut attempts = 0;
    while attempts < 8 && (attempts < 3 || direct == 0 || handed == 0) {
        attempts += 1;
        let mut c = connected(server.addr);
        let port = c.stream.local_addr().unwrap().port();
        c.create_stream().expect("createStream");
        let (level, code) = c.publish("taken").expect("publish status");
        assert_eq!(
            (level.as_str(), code.as_str()),
            ("error", "NetStream.Publish.BadName"),
            "attempt {attempts}"
        );
        assert!(
            c.wait_closed(Instant::now() + Duration::from_secs(3)),
            "attempt {attempts}: the refused publisher was not disconnected"
        );
        // The client can see the refusal before the harness has read the server's line.
        let peer = format!("peer=127.0.0.1:{port} ");
        assert!(
            server
                .wait_log(&[&peer, "publish refused"], Duration::from_secs(3))
                .is_some(),
            "attempt {attempts}: no refusal logged for {peer}"
        );
        if server.count_log(&[&peer, "handing publisher to owner shard"]) > 0 {
            handed += 1;
        } else {
            direct += 1;
        }
    }
    eprintln!("BadName: {direct} refused on the owner shard, {handed} after a hand-off");
    assert_eq!(
        server.count_log(&["publish refused: stream already has a publisher"]),
        attempts
    );
    // Keep watching a little after the last attempt.
    thread::sleep(Duration::from_millis(1000));
    assert_kept_receiving(viewer, Duration::from_secs(1));
    assert_eq!(server.count_log(&["publish ended"]), 0);
}

/// A publisher that goes silent is closed after `--publisher-timeout-secs`; one that keeps
/// sending outlives the timeout many times over (the timer is armed once and re-armed only
/// when it fires early, not per read).
#[test]
fn a_silent_publisher_times_out_and_a_busy_one_does_not() {
    let server = Server::start(&["--publisher-timeout-secs", "2"]);
    let mut busy = Publisher::live(&server, "live/busy");
    let mut silent = RtmpClient::connect(server.addr, "live").unwrap();
    silent.create_stream().unwrap();
    silent.publish("quiet").unwrap();
    let start = Instant::now();
    assert!(
        silent.wait_closed(start + Duration::from_secs(6)),
        "the silent publisher is still connected"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1_900) && took < Duration::from_secs(5),
        "closed after {took:?} (timeout 2 s)"
    );
    assert!(server.logged(&["publisher idle timeout, closing"]));
    thread::sleep(Duration::from_secs(4));
    busy.assert_running();
    let (_, scrape) = server.http_get("/metrics");
    assert!(
        scrape.contains("rtmp_timeouts_total{kind=\"publisher idle\"} 1"),
        "{}",
        scrape
            .lines()
            .filter(|l| l.contains("timeouts"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn merged_reads_relay_whole_streams_late_by_at_most_a_tick_and_still_time_out_the_silent() {
    const TICK_MS: u64 = 100;
    let tick = TICK_MS.to_string();
    let server = Server::start(&[
        "--read-coalesce-ms",
        &tick,
        "--read-coalesce-from",
        "1",
        "--publisher-timeout-secs",
        "2",
    ]);
    let mut ffmpeg = Publisher::live(&server, "live/merged");
    common::players::assert_decodes(&server.url("live/merged"), 4, 40);

    // Our player keeps each video frame's arrival: against the publisher's real-time pace
    // (ffmpeg -re), a frame is never later than the tick plus scheduling slack.
    let (mut player, _) = RtmpClient::player(server.addr, "live", "merged").unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let mut lags = Vec::new();
    while Instant::now() < end {
        let Ok(m) = player.recv(end) else { break };
        if m.type_id == msg::VIDEO && !is_config(&m) {
            lags.push((Instant::now(), m.timestamp));
        }
    }
    let (t0, ts0) = lags[lags.len() / 2];
    let spread: Vec<i64> = lags
        .iter()
        .skip(lags.len() / 2)
        .map(|&(at, ts)| {
            let due = i64::from(ts.wrapping_sub(ts0));
            at.duration_since(t0).as_millis() as i64 - due
        })
        .collect();
    let (lo, hi) = (
        spread.iter().copied().min().unwrap(),
        spread.iter().copied().max().unwrap(),
    );
    eprintln!(
        "{} live frames, arrival against pace: {lo}..{hi} ms",
        spread.len()
    );
    assert!(spread.len() >= 50, "{} frames", spread.len());
    assert!(
        hi - lo <= TICK_MS as i64 + 200,
        "arrival spread {lo}..{hi} ms"
    );

    // A publisher that goes silent is still closed on time while reads wait for ticks.
    let mut silent = RtmpClient::connect(server.addr, "live").unwrap();
    silent.create_stream().unwrap();
    silent.publish("quiet").unwrap();
    let start = Instant::now();
    assert!(silent.wait_closed(start + Duration::from_secs(6)));
    assert!(
        start.elapsed() >= Duration::from_millis(1_900),
        "{:?}",
        start.elapsed()
    );
    assert!(server.logged(&["publisher idle timeout, closing"]));
    ffmpeg.assert_running();
    assert!(server.logged(&["busy: merging publishers' reads", "every_ms=100"]));
}

/// Merged reads are for busy shards: below `--read-coalesce-from` streams every read goes
/// at once; reaching it starts them, falling below ends them.
#[test]
fn merged_reads_start_and_stop_with_the_number_of_streams_a_shard_ingests() {
    let server = Server::start(&["--shards", "1", "--read-coalesce-from", "2"]);
    let publish = |name: &str| {
        let mut c = RtmpClient::connect(server.addr, "live").unwrap();
        c.create_stream().unwrap();
        c.publish(name).unwrap();
        c
    };
    let first = publish("one");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.count_log(&["merging publishers' reads"]),
        0,
        "one stream"
    );
    let second = publish("two");
    let line = server
        .wait_log(&["busy: merging publishers' reads"], Duration::from_secs(2))
        .expect("two streams on the shard: reads merge");
    assert!(
        line.contains("streams=2") && line.contains("every_ms=50"),
        "{line}"
    );
    drop(second);
    let line = server
        .wait_log(&["publishers' reads at once again"], Duration::from_secs(2))
        .expect("back to one stream: reads at once");
    assert!(line.contains("streams=1"), "{line}");
    drop(first);
}
