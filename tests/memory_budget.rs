//! What an unauthenticated peer can make the server hold. The attack: after the RTMP
//! handshake and before `connect`, open 64 chunk streams and send each an almost complete
//! message of the largest allowed size. Per connection, what is buffered before
//! authorization is capped, so the attack costs the server little, closes the offender
//! with a log line and a counter, gives the memory back, and never disturbs a real stream.
//! Connections themselves are limited overall and per address, refused at accept.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::players::assert_decodes;
use common::publisher::Publisher;
use common::rtmp_client::*;
use common::watcher::Watcher;
use common::*;
use rtmp_edge::protocol::message as msg;

const MAX_MESSAGE: u32 = 8 << 20;

/// The tests measure RSS: one at a time, so neither's attack loads the other's server.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Chunk size the attacker sets: messages span many chunks, so 64 can be left open at once.
const CHUNK: usize = 64 * 1024;

/// One attacking connection: 64 csids, each an 8 MiB video message sent but for its last
/// chunk. Returns how many payload bytes the server took before it closed the connection.
fn attack(addr: SocketAddr) -> u64 {
    let Ok(mut c) = RtmpClient::handshake(addr) else {
        return 0;
    };
    let size = Bytes::copy_from_slice(&(CHUNK as u32).to_be_bytes());
    if c.send_message(2, msg::SET_CHUNK_SIZE, 0, 0, size).is_err() {
        return 0;
    }
    let len = MAX_MESSAGE - 1;
    let full_chunks = len as usize / CHUNK;
    let body = vec![0x17u8; CHUNK];
    let mut sent = 0u64;
    for csid in 3..3 + 64u8 {
        for i in 0..full_chunks {
            let mut chunk = if i == 0 {
                let mut h = vec![csid, 0, 0, 0];
                h.extend_from_slice(&len.to_be_bytes()[1..]);
                h.extend_from_slice(&[msg::VIDEO, 1, 0, 0, 0]);
                h
            } else {
                vec![0xC0 | csid]
            };
            chunk.extend_from_slice(&body);
            if c.send_raw(&chunk).is_err() {
                return sent;
            }
            sent += CHUNK as u64;
        }
    }
    sent
}

fn rss_mib(server: &Server) -> f64 {
    server.rss_kib() as f64 / 1024.0
}

/// Runs `conns` attackers at once while sampling the server's RSS; returns the peak.
fn attack_wave(server: &Server, conns: usize) -> (f64, Vec<u64>) {
    let addr = server.addr;
    let attackers: Vec<_> = (0..conns)
        .map(|_| thread::spawn(move || attack(addr)))
        .collect();
    let mut peak = 0f64;
    while attackers.iter().any(|a| !a.is_finished()) {
        peak = peak.max(rss_mib(server));
        thread::sleep(Duration::from_millis(20));
    }
    peak = peak.max(rss_mib(server));
    let sent = attackers.into_iter().map(|a| a.join().unwrap()).collect();
    (peak, sent)
}

/// RSS back near `baseline` within `timeout`: the memory of closed connections returns.
fn settles(server: &Server, baseline: f64, timeout: Duration) -> f64 {
    let end = Instant::now() + timeout;
    loop {
        let now = rss_mib(server);
        if now <= baseline * 1.10 || Instant::now() >= end {
            return now;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn preauth_partial_messages_are_capped_and_returned() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&["--shards", "2"]);
    let mut publisher = Publisher::live(&server, "live/real");
    let watcher = Watcher::start(server.addr, "live", "real");
    // Warm up: the GOP cache, queues and histograms reach their steady size first, and
    // one small wave makes what the first closes create once (per-shard histogram series,
    // table capacities), so the baseline holds them and "after" shows only what an attack
    // kept.
    thread::sleep(Duration::from_secs(4));
    attack_wave(&server, 2);
    thread::sleep(Duration::from_secs(3));
    let t_attack = Instant::now();
    let baseline = rss_mib(&server);
    for conns in [3usize, 20] {
        let t = Instant::now();
        let (peak, sent) = attack_wave(&server, conns);
        let after = settles(&server, baseline, Duration::from_secs(10));
        eprintln!(
            "{conns} attackers: baseline {baseline:.1} MiB, peak {peak:.1} MiB, after {after:.1} MiB; \
             each sent {:?} KiB before the close ({:?})",
            sent.iter().map(|s| s >> 10).collect::<Vec<_>>(),
            t.elapsed()
        );
        assert!(
            peak <= baseline + 64.0,
            "{conns} attackers: RSS peaked at {peak:.1} MiB (baseline {baseline:.1} MiB)"
        );
        assert!(
            after <= baseline * 1.10,
            "{conns} attackers: RSS {after:.1} MiB after the attack (baseline {baseline:.1} MiB)"
        );
        assert!(
            // What the kernel's socket buffers took counts here too; without the cap it was
            // all of it (~500 MiB each).
            sent.iter().all(|&s| s < 32 << 20),
            "the server took {sent:?} bytes from unauthenticated peers"
        );
    }
    assert!(
        server.count_log(&["buffer budget"]) >= 23,
        "closes not logged: {:#?}",
        server.log_lines()
    );
    publisher.assert_running();
    let gap = watcher.max_gap(t_attack, Instant::now());
    let frames = watcher.video().iter().filter(|t| **t >= t_attack).count();
    let _ = watcher.finish();
    eprintln!("real stream during the attacks: {frames} video frames, longest gap {gap:?}");
    assert!(
        frames > 50,
        "the real stream stalled: {frames} video frames"
    );
    assert!(
        gap < Duration::from_secs(1),
        "the real stream paused {gap:?}"
    );
}

/// The server-wide budget: with a generous per-connection cap, the connections that push
/// the total past `--max-buffered-bytes-total` are the ones closed, and a publisher that
/// was already streaming goes on.
#[test]
fn server_wide_buffer_budget_closes_the_newest_offenders() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&[
        "--max-preauth-buffer-bytes",
        "8388608",
        "--max-buffered-bytes-total",
        "12582912",
    ]);
    let mut publisher = Publisher::live(&server, "live/real");
    let watcher = Watcher::start(server.addr, "live", "real");
    thread::sleep(Duration::from_secs(2));
    let t_attack = Instant::now();
    let (peak, sent) = attack_wave(&server, 6);
    eprintln!(
        "6 attackers under a 12 MiB server budget: peak {peak:.1} MiB, sent {:?} KiB",
        sent.iter().map(|s| s >> 10).collect::<Vec<_>>()
    );
    let closed = server.count_log(&["server-wide buffer budget exceeded"]);
    assert!(
        closed >= 1,
        "no connection closed by the server-wide budget"
    );
    let scrape = server.http_get("/metrics").1;
    assert!(
        scrape.lines().any(|l| l
            .starts_with("rtmp_protocol_errors_total{kind=\"buffer_budget_server\"}")
            && !l.ends_with(" 0")),
        "not counted"
    );
    publisher.assert_running();
    let gap = watcher.max_gap(t_attack, Instant::now());
    let _ = watcher.finish();
    assert!(
        gap < Duration::from_secs(1),
        "the real stream paused {gap:?}"
    );
}

/// Connection limits: past `--max-conns-per-ip` (and `--max-conns`) a new socket is closed
/// at accept and counted; a slot frees when its connection ends.
#[test]
fn connection_limits_refuse_at_accept() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&["--max-conns-per-ip", "4", "--max-conns", "6"]);
    let connect = || std::net::TcpStream::connect(server.addr).unwrap();
    let mut first: Vec<_> = (0..4).map(|_| connect()).collect();
    thread::sleep(Duration::from_millis(300));
    let mut fifth = connect();
    assert!(
        closed_by_server(&mut fifth, Duration::from_secs(2)),
        "a 5th connection from one address was kept"
    );
    for s in &mut first {
        assert!(
            !closed_by_server(s, Duration::from_millis(100)),
            "an allowed connection was closed"
        );
    }
    // One ends: its slot is free again.
    drop(first.pop());
    thread::sleep(Duration::from_millis(300));
    let mut again = connect();
    assert!(!closed_by_server(&mut again, Duration::from_millis(300)));
    let scrape = server.http_get("/metrics").1;
    let refused = |reason: &str| {
        scrape
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "rtmp_connections_refused_total{{reason=\"{reason}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(refused("max_conns_per_ip"), Some(1.0), "{scrape}");
    assert!(server.logged(&["connection refused: limit reached"]));
    // A publisher and a player still get in under both limits.
    drop(first);
    drop(again);
    thread::sleep(Duration::from_millis(300));
    let mut publisher = Publisher::live(&server, "live/lim");
    assert_decodes(&server.url("live/lim"), 3, 50);
    publisher.assert_running();
}
