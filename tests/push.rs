//! Push destinations against real peers on loopback: a publisher (ffmpeg, or our own RTMP
//! client) feeds rtmp-edge A, which pushes to other rtmp-edge servers (B) or to nginx-rtmp,
//! and players (ffprobe, our RTMP client) watch at the destinations. The issue's "Done
//! when" items for pushes: two hops, nginx-rtmp as a target, three destinations with one
//! killed and restarted, and a publisher that reconnects within the grace period. Also a
//! destination that freezes instead of dying, and finished pushes giving their memory back.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::nginx::*;
use common::players::*;
use common::publisher::PublishSpec;
use common::rtmp_client::*;
use common::*;
use rtmp_edge::protocol::message as msg;

/// Video frames per GOP in the test media (and in the synthetic stream).
const GOP: usize = 30;

/// One video message as a player saw it.
#[derive(Debug, Clone, Copy)]
struct VideoRx {
    at: Instant,
    ts: u32,
    /// A keyframe with picture data (not a sequence header).
    key: bool,
    /// A sequence header.
    config: bool,
    /// FNV-1a of the payload: frames are compared across destinations.
    hash: u64,
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Our RTMP client playing `live/<name>` in a thread, recording every video message and
/// every onStatus code until stopped (or 60 s).
struct Player {
    video: Arc<Mutex<Vec<VideoRx>>>,
    codes: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Option<RecvEnd>>>,
}

impl Player {
    fn start(addr: SocketAddr, name: &str) -> Player {
        let (mut c, _) = RtmpClient::player(addr, "live", name).expect("player play");
        let video = Arc::new(Mutex::new(Vec::new()));
        let codes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (v, k, s) = (video.clone(), codes.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let limit = Instant::now() + Duration::from_secs(60);
            while !s.load(Ordering::Relaxed) && Instant::now() < limit {
                match c.recv(Instant::now() + Duration::from_millis(100)) {
                    Ok(m) if m.type_id == msg::VIDEO => v.lock().unwrap().push(VideoRx {
                        at: Instant::now(),
                        ts: m.timestamp,
                        key: is_avc_keyframe(&m),
                        config: is_avc_seq_header(&m),
                        hash: fnv(&m.payload),
                    }),
                    Ok(m) => {
                        if let Some((_, code)) = status(&m) {
                            k.lock().unwrap().push(code);
                        }
                    }
                    Err(RecvEnd::Timeout) => {}
                    Err(end) => return Some(end),
                }
            }
            None
        });
        Player {
            video,
            codes,
            stop,
            thread: Some(thread),
        }
    }

    fn video(&self) -> Vec<VideoRx> {
        self.video.lock().unwrap().clone()
    }

    fn codes(&self) -> Vec<String> {
        self.codes.lock().unwrap().clone()
    }

    /// Picture frames (not sequence headers) that arrived in `[from, to)`.
    fn frames_between(&self, from: Instant, to: Instant) -> usize {
        self.video()
            .iter()
            .filter(|f| !f.config && f.at >= from && f.at < to)
            .count()
    }

    /// When the first keyframe at or after `since` arrived, waiting up to `timeout`.
    fn wait_keyframe(&self, since: Instant, timeout: Duration) -> Option<Instant> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(f) = self.video().iter().find(|f| f.key && f.at >= since) {
                return Some(f.at);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Longest time without video in `[from, to]`, counting both ends.
    fn max_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut points: Vec<Instant> = vec![from];
        points.extend(
            self.video()
                .iter()
                .map(|f| f.at)
                .filter(|&t| t >= from && t <= to),
        );
        points.push(to);
        points
            .windows(2)
            .map(|p| p[1] - p[0])
            .max()
            .unwrap_or_default()
    }

    /// Stops the player; how its connection ended if the server closed it.
    fn finish(mut self) -> Option<RecvEnd> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).flatten()
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Lines of A's log about push destination `port` changing state, in order.
fn push_states(a: &Server, port: u16) -> Vec<String> {
    let dest = format!("127.0.0.1:{port}/live");
    a.log_lines()
        .into_iter()
        .filter(|l| l.contains("push destination state") && l.contains(&dest))
        .filter_map(|l| {
            Some(
                l.split("state=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .trim_matches('"')
                    .to_string(),
            )
        })
        .collect()
}

/// ffmpeg → A → B → ffprobe: B's player decodes ≥ 60 H.264 frames and AAC, cleanly.
#[test]
fn two_hops_through_a_push() {
    let b = Server::start(&[]);
    let a = Server::start(&["--push", &b.url("live")]);
    let mut publisher = PublishSpec::new(&test_media_locked(), &a.url("live/hop"))
        .limit_secs(60)
        .start();
    wait_published(&a, "live/hop");
    // The destination key is the source stream's name, in the push URL's app.
    wait_published(&b, "live/hop");
    let probe = assert_decodes(&b.url("live/hop"), 3, 60);
    eprintln!(
        "two hops: {} video, {} audio frames decoded at B",
        probe.count("video"),
        probe.count("audio")
    );
    publisher.assert_running();
}

/// ffmpeg → A → nginx-rtmp → ffprobe: nginx accepts our publish and serves it decodable.
#[test]
fn nginx_rtmp_as_push_target() {
    let nginx = Nginx::start();
    let target = format!("rtmp://{}/live", nginx.addr);
    let a = Server::start(&["--push", &target]);
    let mut publisher = PublishSpec::new(&test_media_locked(), &a.url("live/ngx"))
        .limit_secs(60)
        .start();
    wait_published(&a, "live/ngx");
    a.wait_log(
        &["push destination state", "state=\"live\""],
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| {
        panic!(
            "push to nginx never went live; A: {:#?}\nnginx: {}",
            a.log_lines(),
            nginx.error_log()
        )
    });
    // 4 s: nginx holds video back until a keyframe (wait_key), audio starts at once.
    let probe = assert_decodes(&format!("{target}/ngx"), 4, 60);
    eprintln!(
        "via nginx-rtmp: {} video, {} audio frames decoded",
        probe.count("video"),
        probe.count("audio")
    );
    publisher.assert_running();
    assert_eq!(
        a.count_log(&["push destination failed"]),
        0,
        "{:#?}",
        a.log_lines()
    );
}

/// Three destinations get the same frames; one is killed: the others and the publisher
/// do not notice, and it gets the stream back within the backoff cap once it returns on
/// its port. The destination key (a credential) never reaches A's log.
#[test]
fn three_destinations_one_killed_and_restarted() {
    const KEY: &str = "pushKEY-9c1f-s3cr3t";
    const CAP: Duration = Duration::from_secs(2);
    let bs: Vec<Server> = (0..3).map(|_| Server::start(&[])).collect();
    let ports: Vec<u16> = bs.iter().map(|b| b.addr.port()).collect();
    let cfg = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("push-three-{}.toml", std::process::id()));
    let toml: String = ports
        .iter()
        .map(|p| format!("[[push]]\nurl = \"rtmp://127.0.0.1:{p}/live\"\nkey = \"{KEY}\"\n\n"))
        .collect();
    std::fs::write(&cfg, toml).expect("write config");
    let a = Server::start(&[
        "--config",
        cfg.to_str().unwrap(),
        "--push-backoff-max-secs",
        "2",
    ]);
    let mut players: Vec<Option<Player>> = bs
        .iter()
        .map(|b| Some(Player::start(b.addr, KEY)))
        .collect();
    let mut publisher = PublishSpec::new(&test_media_locked(), &a.url("live/src"))
        .limit_secs(60)
        .start();
    let t_pub = Instant::now();
    wait_published(&a, "live/src");
    for b in &bs {
        wait_published(b, &format!("live/{KEY}"));
    }
    for (i, p) in players.iter().enumerate() {
        p.as_ref()
            .unwrap()
            .wait_keyframe(t_pub, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("destination {i} got no keyframe"));
    }

    // The same 4 s window on all three.
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(4));
    let t1 = Instant::now();
    let counts: Vec<usize> = players
        .iter()
        .map(|p| p.as_ref().unwrap().frames_between(t0, t1))
        .collect();
    eprintln!("video frames in the same 4 s window per destination: {counts:?}");
    let (lo, hi) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    assert!(lo >= 90, "a destination is short of frames: {counts:?}");
    assert!(
        hi - lo <= GOP,
        "counts differ by more than a GOP: {counts:?}"
    );
    // Identical streams: where their timestamps overlap, every frame is the same.
    let seqs: Vec<Vec<(u32, u64)>> = players
        .iter()
        .map(|p| {
            let v = p.as_ref().unwrap().video();
            let from = v.iter().position(|f| f.key).unwrap_or(0);
            v[from..]
                .iter()
                .filter(|f| !f.config)
                .map(|f| (f.ts, f.hash))
                .collect()
        })
        .collect();
    let first = seqs.iter().map(|s| s[0].0).max().unwrap();
    let last = seqs.iter().map(|s| s.last().unwrap().0).min().unwrap();
    let common: Vec<Vec<(u32, u64)>> = seqs
        .iter()
        .map(|s| {
            s.iter()
                .copied()
                .filter(|&(ts, _)| ts >= first && ts <= last)
                .collect()
        })
        .collect();
    eprintln!(
        "identical frames compared: {} (ts {first}..={last})",
        common[0].len()
    );
    assert!(
        common[0].len() >= 90,
        "overlap too short: {}",
        common[0].len()
    );
    assert!(
        common.iter().all(|c| *c == common[0]),
        "destinations received different frames"
    );

    // Kill destination 1.
    let addr1 = bs[1].addr;
    let mut bs: Vec<Option<Server>> = bs.into_iter().map(Some).collect();
    let t_kill = Instant::now();
    drop(bs[1].take());
    let ended = players[1].take().unwrap().finish();
    assert_eq!(ended, Some(RecvEnd::Closed), "player of the killed server");
    // A notices and backs off; it keeps retrying while the port is dead.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !push_states(&a, ports[1]).iter().any(|s| s == "backing_off") {
        assert!(
            Instant::now() < deadline,
            "A never backed off: {:#?}",
            a.log_lines()
        );
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_secs(3));

    // Back on the same port: A's next attempt (at most the 2 s cap away) resumes it.
    let t_restart = Instant::now();
    bs[1] = Some(Server::start_on(&addr1.to_string(), &[]));
    players[1] = Some(Player::start(addr1, KEY));
    let resumed_at = players[1]
        .as_ref()
        .unwrap()
        .wait_keyframe(t_restart, Duration::from_secs(10))
        .expect("restarted destination never got a keyframe");
    let resume = resumed_at - t_restart;
    let b1 = bs[1].as_ref().unwrap();
    wait_published(b1, &format!("live/{KEY}"));
    thread::sleep(Duration::from_secs(2));
    let t_end = Instant::now();
    let after = players[1]
        .as_ref()
        .unwrap()
        .frames_between(resumed_at, t_end);
    eprintln!(
        "restarted destination resumed {resume:?} after restart, then {after} frames in {:?}",
        t_end - resumed_at
    );
    assert!(
        resume <= CAP + Duration::from_millis(1000),
        "resumed {resume:?} after restart (cap {CAP:?})"
    );
    assert!(after >= 40, "only {after} frames after resuming");

    // The other two never noticed.
    for i in [0, 2] {
        let p = players[i].as_ref().unwrap();
        let gap = p.max_gap(t_kill, t_end);
        let n = p.frames_between(t_kill, t_end);
        eprintln!("destination {i} across kill and restart: {n} frames, longest gap {gap:?}");
        assert!(
            gap <= Duration::from_secs(1),
            "destination {i} stalled {gap:?}"
        );
        assert!(
            n as f64 >= (t_end - t_kill).as_secs_f64() * 25.0,
            "destination {i} got only {n} frames in {:?}",
            t_end - t_kill
        );
    }
    for (i, p) in players.iter_mut().enumerate() {
        let ended = p.take().unwrap().finish();
        assert_eq!(ended, None, "player {i} was disconnected");
    }

    // The publisher never saw any of it.
    publisher.assert_running();
    publisher.kill();
    let err = publisher.stderr();
    assert!(err.trim().is_empty(), "publisher stderr: {err}");

    let states = push_states(&a, ports[1]);
    eprintln!("destination 1 states in A's log: {states:?}");
    let backoff = states
        .iter()
        .position(|s| s == "backing_off")
        .expect("no backing_off");
    assert!(
        states[backoff..].iter().any(|s| s == "live"),
        "never live again after backing off: {states:?}"
    );
    for i in [0, 2] {
        let s = push_states(&a, ports[i]);
        assert!(
            !s.iter().any(|s| s == "backing_off"),
            "destination {i} backed off: {s:?}"
        );
    }
    let lines = a.log_lines();
    let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(KEY)).collect();
    assert!(leaks.is_empty(), "the push key is in A's log: {leaks:#?}");
    let _ = std::fs::remove_file(&cfg);
}

/// Our client publishing `live/<name>` on `addr`, with a sequence header sent.
fn synthetic_publisher(addr: SocketAddr, name: &str) -> RtmpClient {
    let mut c = RtmpClient::connect(addr, "live").expect("publisher connect");
    c.create_stream().expect("publisher createStream");
    let (level, code) = c.publish(name).expect("publish");
    assert_eq!(
        (level.as_str(), code.as_str()),
        ("status", "NetStream.Publish.Start")
    );
    let seq = [0x17, 0, 0, 0, 0, 1, 0x42, 0xc0, 0x1e, 0xff];
    c.send_media(msg::VIDEO, 0, &seq)
        .expect("send sequence header");
    c
}

/// Sends `frames` H.264-like frames from timestamp 0, 33 ms apart in real time: a keyframe
/// of `sizes.0` bytes every 30 frames, inter frames of `sizes.1`, each payload numbered
/// from `numbers_from`. Stops early when `stop` is set.
fn send_frames(
    c: &mut RtmpClient,
    frames: u32,
    numbers_from: u32,
    sizes: (usize, usize),
    stop: &AtomicBool,
) {
    let start = Instant::now();
    for i in 0..frames {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let ts = i * 33;
        let due = start + Duration::from_millis(u64::from(ts));
        thread::sleep(due.saturating_duration_since(Instant::now()));
        let (head, size) = if (i as usize).is_multiple_of(GOP) {
            (0x17, sizes.0)
        } else {
            (0x27, sizes.1)
        };
        let mut p = vec![head, 1, 0, 0, 0];
        p.extend_from_slice(&(numbers_from + i).to_be_bytes());
        p.resize(size, 0xab);
        c.send_media(msg::VIDEO, ts, &p).expect("send frame");
    }
}

/// A synthetic publish of `frames` small frames (about 2 s for 60), returned connected.
fn synthetic_publish(addr: SocketAddr, name: &str, frames: u32, numbers_from: u32) -> RtmpClient {
    let mut c = synthetic_publisher(addr, name);
    send_frames(
        &mut c,
        frames,
        numbers_from,
        (3000, 600),
        &AtomicBool::new(false),
    );
    c
}

/// A publisher that drops and comes back within the grace period continues the same
/// broadcast at the destination: one publish there, timestamps moving forward, media
/// resumes. One that does not come back ends it after the grace period.
#[test]
fn publisher_reconnect_within_grace_continues_the_destination_stream() {
    const GRACE: Duration = Duration::from_secs(5);
    let b = Server::start(&[]);
    let a = Server::start(&["--push", &b.url("live"), "--push-grace-secs", "5"]);
    let player = Player::start(b.addr, "re");

    let first = synthetic_publish(a.addr, "re", 60, 0);
    wait_published(&b, "live/re");
    let t_drop = Instant::now();
    first.shutdown();
    drop(first);
    a.wait_log(
        &["publish ended", "key=\"live/re\""],
        Duration::from_secs(5),
    )
    .expect("A never saw the publisher leave");
    thread::sleep(Duration::from_millis(1000));
    let t_back = Instant::now();
    let second = synthetic_publish(a.addr, "re", 60, 1000);
    let t_second_done = Instant::now();
    thread::sleep(Duration::from_millis(300));

    let v = player.video();
    let before = v.iter().filter(|f| !f.config && f.at < t_back).count();
    let after = v.iter().filter(|f| !f.config && f.at >= t_back).count();
    let last_before = v.iter().filter(|f| f.at < t_back).map(|f| f.ts).max();
    let first_after = v.iter().find(|f| f.at >= t_back).map(|f| f.ts);
    let gap = player.max_gap(t_drop, t_second_done);
    eprintln!(
        "reconnect within grace: {before} frames before, {after} after (of 60 each); \
         ts {last_before:?} -> {first_after:?}; longest gap {gap:?} (publisher away {:?})",
        t_back - t_drop
    );
    assert_eq!(
        b.count_log(&["publish started", "key=\"live/re\""]),
        1,
        "the destination saw a new publish: {:#?}",
        b.log_lines()
    );
    let back = v
        .windows(2)
        .find(|w| w[1].ts < w[0].ts)
        .map(|w| (w[0].ts, w[1].ts));
    assert_eq!(back, None, "player timestamps went back");
    assert!(before >= 50, "only {before} frames before the drop");
    assert!(after >= 55, "only {after} frames after the republish");
    let codes = player.codes();
    assert!(
        !codes.iter().any(|c| c.contains("Unpublish")),
        "the destination stream ended during the grace period: {codes:?}"
    );

    // Gone for good: the destination's publish ends once the grace period is over.
    let t_gone = Instant::now();
    second.shutdown();
    drop(second);
    b.wait_log(
        &["publish ended", "key=\"live/re\""],
        GRACE + Duration::from_secs(4),
    )
    .unwrap_or_else(|| panic!("destination publish never ended: {:#?}", a.log_lines()));
    let ended = t_gone.elapsed();
    eprintln!("destination publish ended {ended:?} after the publisher left (grace {GRACE:?})");
    assert!(
        ended >= GRACE - Duration::from_millis(500),
        "ended before the grace period: {ended:?}"
    );
    assert!(
        a.wait_log(
            &["push destination state", "state=\"finished\""],
            Duration::from_secs(2)
        )
        .is_some(),
        "A's push never finished"
    );
    drop(player);
}

/// Sends `sig` (SIGSTOP, SIGCONT) to a server we started.
fn signal(server: &Server, sig: i32) {
    // SAFETY: kill(2) on the pid of a child process we spawned and still own.
    let rc = unsafe { libc::kill(server.pid() as i32, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", server.pid());
}

/// A destination that stops reading (frozen with SIGSTOP: its kernel still holds the
/// connection, so no error ever comes back) is treated like a dead one: once a write to
/// it stalls past --write-timeout-secs, A drops it and retries with backoff, while the
/// other destination keeps receiving. Thawed, it gets the stream back.
#[test]
fn frozen_destination_is_dropped_and_retried() {
    let frozen = Server::start(&[]);
    let ok = Server::start(&[]);
    let a = Server::start(&[
        "--push",
        &frozen.url("live"),
        "--push",
        &ok.url("live"),
        "--write-timeout-secs",
        "2",
        "--push-backoff-max-secs",
        "2",
    ]);
    let player = Player::start(ok.addr, "big");
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (addr, stop) = (a.addr, stop.clone());
        // About 2 MB/s, so the socket buffers in front of the frozen server fill in seconds.
        thread::spawn(move || {
            let mut c = synthetic_publisher(addr, "big");
            send_frames(&mut c, 40 * 30, 0, (64_000, 64_000), &stop);
        })
    };
    wait_published(&frozen, "live/big");
    wait_published(&ok, "live/big");
    player
        .wait_keyframe(
            Instant::now() - Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .expect("no keyframe at the healthy destination");

    let port = frozen.addr.port();
    // Freeze only once A has heard Publish.Start back (B logs its publish before replying).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !push_states(&a, port).iter().any(|s| s == "live") {
        assert!(Instant::now() < deadline, "push to {port} never went live");
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    let t_freeze = Instant::now();
    signal(&frozen, libc::SIGSTOP);
    let deadline = t_freeze + Duration::from_secs(20);
    while !push_states(&a, port).iter().any(|s| s == "backing_off") {
        if Instant::now() > deadline {
            signal(&frozen, libc::SIGCONT);
            panic!(
                "A never gave up on the frozen destination: {:#?}",
                a.log_lines()
                    .iter()
                    .filter(|l| l.contains("push"))
                    .collect::<Vec<_>>()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    let detected = t_freeze.elapsed();
    let t_thaw = Instant::now();
    signal(&frozen, libc::SIGCONT);
    let deadline = t_thaw + Duration::from_secs(15);
    loop {
        let states = push_states(&a, port);
        let off = states.iter().position(|s| s == "backing_off").unwrap_or(0);
        if states[off..].iter().any(|s| s == "live") {
            break;
        }
        assert!(Instant::now() < deadline, "never live again: {states:?}");
        thread::sleep(Duration::from_millis(50));
    }
    let back = t_thaw.elapsed();
    let t_end = Instant::now();
    let gap = player.max_gap(t_freeze, t_end);
    let n = player.frames_between(t_freeze, t_end);
    eprintln!(
        "frozen destination dropped {detected:?} after the freeze, live again {back:?} after \
         the thaw; healthy one meanwhile: {n} frames, longest gap {gap:?}"
    );
    assert!(
        a.logged(&["push destination failed", "write stalled"]),
        "no write stall logged: {:#?}",
        a.log_lines()
            .iter()
            .filter(|l| l.contains("push"))
            .collect::<Vec<_>>()
    );
    assert!(
        gap <= Duration::from_secs(1),
        "healthy destination stalled {gap:?}"
    );
    stop.store(true, Ordering::Relaxed);
    publisher.join().expect("publisher thread");
    assert_eq!(
        player.finish(),
        None,
        "healthy destination's player disconnected"
    );
}

/// A push that finished (grace period over, no republish) leaves the stream table: many
/// short broadcasts on distinct keys do not grow the server. Each finished push used to
/// stay attached until its key was published again, ~170 KiB apiece.
#[test]
fn finished_pushes_release_their_memory() {
    let b = Server::start(&[]);
    let a = Server::start(&["--push", &b.url("live"), "--push-grace-secs", "0"]);
    let broadcasts = |from: usize, n: usize| {
        for i in from..from + n {
            let mut c = synthetic_publisher(a.addr, &format!("short{i}"));
            let key = [0x17, 1, 0, 0, 0, 1, 2, 3];
            c.send_media(msg::VIDEO, 0, &key).expect("send keyframe");
            thread::sleep(Duration::from_millis(10));
            c.shutdown();
        }
        // Every push connected, then finished once its publisher left (grace 0).
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.count_log(&["push destination state", "state=\"finished\""]) < from + n {
            assert!(Instant::now() < deadline, "pushes did not finish");
            thread::sleep(Duration::from_millis(50));
        }
    };
    broadcasts(0, 50); // warm-up: allocator pools, log buffers, shard tables
    let before = a.rss_kib();
    broadcasts(50, 200);
    let after = a.rss_kib();
    let per_key = (after.saturating_sub(before)) / 200;
    eprintln!("RSS {before} -> {after} KiB over 200 finished pushes ({per_key} KiB each)");
    assert!(per_key < 40, "{per_key} KiB kept per finished push");
}
