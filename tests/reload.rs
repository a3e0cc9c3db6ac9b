//! SIGHUP reload against the real binary: server A runs with `--config a.toml`, pushes to
//! server B, and serves a long-lived player. Rewriting the file and sending SIGHUP swaps
//! the push destinations (the removed one stops, the new one starts on the live stream at
//! once) and the play auth rules (new players need a token), without dropping or stalling
//! the player that was already watching. A broken file is then rejected as a whole: the
//! running configuration stays.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::publisher::Publisher;
use common::rtmp_client::*;
use common::watcher::Watcher;
use common::*;
use rtmp_edge::protocol::message as msg;

/// A config file in the target's temp dir, unique per process, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str) -> ConfigFile {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        ConfigFile(
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("{name}-{}-{nanos}.toml", std::process::id())),
        )
    }

    /// Replaces the whole file at once (write a temp file, rename over).
    fn write(&self, text: &str) {
        let tmp = self.0.with_extension("toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A player on `addr` playing `name` that must be refused: `NetStream.Play.Failed`, then
/// the connection closed, and no media.
fn assert_play_refused(addr: SocketAddr, name: &str) {
    let (mut c, _) = RtmpClient::player(addr, "live", name).expect("play");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got_media = false;
    let failed = loop {
        match c.recv(deadline) {
            Ok(m) if is_av(&m) => got_media = true,
            Ok(m) => match status(&m) {
                Some((_, code)) if code == "NetStream.Play.Failed" => break true,
                Some((_, code)) => panic!("{name}: unexpected status {code} for a refused play"),
                None => {}
            },
            Err(e) => panic!("{name}: no NetStream.Play.Failed: {e:?}"),
        }
    };
    assert!(failed && !got_media, "{name}: got media before the refusal");
    assert!(
        c.wait_closed(Instant::now() + Duration::from_secs(5)),
        "{name}: connection not closed after NetStream.Play.Failed"
    );
}

/// A player on `addr` playing `name` that must be admitted: `NetStream.Play.Start` and then
/// audio and video. Returns how long the first media took.
fn assert_play_admitted(addr: SocketAddr, name: &str) -> Duration {
    let (mut c, sent) = RtmpClient::player(addr, "live", name).expect("play");
    let deadline = Instant::now() + Duration::from_secs(5);
    let level = c
        .wait_status("NetStream.Play.Start", deadline)
        .unwrap_or_else(|e| panic!("{name}: no NetStream.Play.Start: {e:?}"));
    assert_eq!(level, "status");
    let (mut audio, mut video) = (0, 0);
    let mut first = None;
    while audio < 5 || video < 5 {
        match c.recv(deadline) {
            Ok(m) if m.type_id == msg::AUDIO || m.type_id == msg::VIDEO => {
                first.get_or_insert_with(|| sent.elapsed());
                if m.type_id == msg::AUDIO {
                    audio += 1;
                } else {
                    video += 1;
                }
            }
            Ok(m) => {
                if let Some((_, code)) = status(&m) {
                    assert!(!code.contains("Failed"), "{name}: {code} after Play.Start");
                }
            }
            Err(e) => panic!("{name}: media stopped ({audio} audio, {video} video): {e:?}"),
        }
    }
    c.shutdown();
    first.unwrap()
}

/// `GET /api/v1/push` as JSON.
fn push_list(server: &Server) -> serde_json::Value {
    let (code, body) = server.http_get("/api/v1/push");
    assert_eq!(code, 200, "GET /api/v1/push: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad JSON {e}: {body}"))
}

/// (id, [(stream, state)]) of every destination.
/// (destination id, [(stream, state)]) per destination.
type DestSessions = (String, Vec<(String, String)>);
type PushSummary = Vec<DestSessions>;

fn push_summary(list: &serde_json::Value) -> PushSummary {
    list["destinations"]
        .as_array()
        .expect("destinations array")
        .iter()
        .map(|d| {
            let sessions = d["sessions"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .map(|x| {
                            (
                                x["stream"].as_str().unwrap_or("").to_string(),
                                x["state"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (d["id"].as_str().unwrap_or("").to_string(), sessions)
        })
        .collect()
}

/// Polls the push API until `pred` holds on the summary; returns the last summary.
fn wait_push(
    server: &Server,
    timeout: Duration,
    pred: impl Fn(&[DestSessions]) -> bool,
) -> (bool, PushSummary) {
    let end = Instant::now() + timeout;
    loop {
        let s = push_summary(&push_list(server));
        if pred(&s) {
            return (true, s);
        }
        if Instant::now() >= end {
            return (false, s);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Only `id`, with one session, on live/hup, live.
fn only_live(s: &[DestSessions], id: &str) -> bool {
    s.len() == 1 && s[0].0 == id && s[0].1 == [("live/hup".to_string(), "live".to_string())]
}

/// Seconds since midnight UTC of a log line's timestamp (`2026-01-02T09:30:14.474777Z ...`).
fn log_secs(line: &str) -> Option<f64> {
    let t = line
        .split_whitespace()
        .next()?
        .split('T')
        .nth(1)?
        .trim_end_matches('Z');
    let mut parts = t.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// Seconds since midnight UTC now, on the clock the servers' log timestamps use.
fn wall_secs() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_nanos()) / 1e9
}

/// Milliseconds from `since` (seconds of day) to a log line's timestamp.
fn ms_after(since: f64, line: &str) -> f64 {
    let d = log_secs(line).expect("log timestamp") - since;
    // Across midnight.
    (if d < -43_200.0 { d + 86_400.0 } else { d }) * 1000.0
}

#[test]
fn sighup_reload_changes_auth_and_push_without_dropping_a_viewer() {
    let started = Instant::now();
    let b = Server::start(&[]);
    let push_url = format!("rtmp://{}/live", b.addr);
    let cfg = ConfigFile::new("reload-a");
    cfg.write(&format!("[[push]]\nid = \"b1\"\nurl = \"{push_url}\"\n"));
    let a = Server::start(&["--config", cfg.path().to_str().unwrap()]);

    // 1. Publisher (looping, real time) and the long-lived player, admitted with no auth.
    let _publisher = Publisher::live(&a, "live/hup");
    let player = Watcher::start(a.addr, "live", "hup");
    assert!(
        player.wait_media(started, 20, Duration::from_secs(5)),
        "the first player got no media; codes {:?}",
        player.codes()
    );
    assert!(player.codes().iter().any(|c| c == "NetStream.Play.Start"));

    // 2. b1 pushes live/hup to B.
    wait_published(&b, "live/hup");
    let (ok, s) = wait_push(&a, Duration::from_secs(5), |s| only_live(s, "b1"));
    assert!(ok, "b1 not live before the reload: {s:?}");
    // A stretch of steady playback before the reload, so the gap window covers both sides.
    thread::sleep(Duration::from_secs(2));

    cfg.write(&format!(
        "[auth.play]\ntokens = [{{ match = \"live/*\", token = \"letmein\" }}]\n\n\
         [[push]]\nid = \"b2\"\nurl = \"{push_url}\"\nkey = \"hup2\"\n"
    ));
    let window_start = Instant::now();
    let hup = Instant::now();
    let hup_wall = wall_secs();
    a.signal("HUP");
    let reloaded_line = a
        .wait_log(&["config reloaded"], Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no `config reloaded`; A:\n{}", a.log_tail(30)));
    let reloaded_after = hup.elapsed();

    // 3. b1 stopped, b2 started, at B.
    let ended_line = b.wait_log(
        &["publish ended", "key=\"live/hup\""],
        Duration::from_secs(5),
    );
    let ended = ended_line.as_ref().map(|_| hup.elapsed());
    let b2_line = b.wait_log(
        &["publish started", "key=\"live/hup2\""],
        Duration::from_secs(5),
    );
    let b2_started = b2_line.as_ref().map(|_| hup.elapsed());
    assert!(
        ended.is_some(),
        "B never logged publish ended for live/hup (b1 not stopped); B:\n{}",
        b.log_tail(30)
    );
    assert!(
        b2_started.is_some(),
        "B never logged publish started for live/hup2 (b2 not started); A:\n{}\nB:\n{}",
        a.log_tail(30),
        b.log_tail(30)
    );
    let (ended, b2_started) = (ended.unwrap(), b2_started.unwrap());
    eprintln!(
        "SIGHUP -> (by log timestamps) A `config reloaded` {:.1} ms, B publish ended live/hup \
         {:.1} ms, B publish started live/hup2 {:.1} ms",
        ms_after(hup_wall, &reloaded_line),
        ms_after(hup_wall, ended_line.as_deref().unwrap()),
        ms_after(hup_wall, b2_line.as_deref().unwrap()),
    );
    eprintln!(
        "SIGHUP -> (seen by the test, 50 ms polling) `config reloaded` {reloaded_after:?}, \
         B publish ended live/hup {ended:?}, B publish started live/hup2 {b2_started:?}"
    );
    assert!(
        ended < Duration::from_secs(5) && b2_started < Duration::from_secs(5),
        "push change too slow"
    );
    let (ok, s) = wait_push(&a, Duration::from_secs(5), |s| only_live(s, "b2"));
    assert!(ok, "GET /api/v1/push after the reload: {s:?}");
    eprintln!("GET /api/v1/push after the reload: {s:?}");
    assert_eq!(
        b.count_log(&["publish started", "key=\"live/hup\""]),
        1,
        "b1 restarted at B"
    );
    // b2's stream at B is real media, not just a publish.
    let b_first = assert_play_admitted(b.addr, "hup2");
    eprintln!("player on B live/hup2: first media after {b_first:?}");

    // New players need the token now; the first player keeps its seat.
    assert_play_refused(a.addr, "hup");
    let first_media = assert_play_admitted(a.addr, "hup?token=letmein");
    eprintln!("player with ?token=letmein: first media after {first_media:?}");
    assert!(
        player.is_running(),
        "the first player was disconnected by the reload"
    );

    // 4. A broken file changes nothing.
    thread::sleep(Duration::from_secs(1));
    let failed_before = a.count_log(&["config reload failed"]);
    let reloaded_before = a.count_log(&["config reloaded"]);
    cfg.write(
        "[auth.play]\ntokens = [{ match = \"live/*\", token = \"other\" }]\n\n\
         [[push]]\nid = \"b3\"\nurl = \"not a url\"\n",
    );
    let hup2 = Instant::now();
    a.signal("HUP");
    let end = Instant::now() + Duration::from_secs(5);
    while a.count_log(&["config reload failed"]) == failed_before && Instant::now() < end {
        thread::sleep(Duration::from_millis(20));
    }
    let failed_line = a
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("config reload failed"))
        .nth(failed_before)
        .unwrap_or_else(|| panic!("no `config reload failed`; A:\n{}", a.log_tail(30)));
    eprintln!(
        "bad file rejected after {:?}: {failed_line}",
        hup2.elapsed()
    );
    // Give a wrongly applied config the time to show.
    thread::sleep(Duration::from_secs(2));
    assert_eq!(a.count_log(&["config reloaded"]), reloaded_before);
    let (ok, s) = wait_push(&a, Duration::from_secs(1), |s| only_live(s, "b2"));
    assert!(ok, "push changed by a rejected file: {s:?}");
    assert_eq!(b.count_log(&["publish ended", "key=\"live/hup2\""]), 0);
    assert_eq!(b.count_log(&["publish started", "key=\"live/hup2\""]), 1);
    assert_play_refused(a.addr, "hup");
    assert_play_refused(a.addr, "hup?token=other");
    assert_play_admitted(a.addr, "hup?token=letmein");

    // 5. The first player: never disconnected, never stalled across both reloads.
    thread::sleep(Duration::from_secs(1));
    let window_end = Instant::now();
    assert!(player.is_running(), "the first player was disconnected");
    let gap = player.max_gap(window_start, window_end);
    let first_at = player.media()[0];
    let whole_gap = player.max_gap(first_at, window_end);
    let received = player
        .media()
        .iter()
        .filter(|&&t| t >= window_start && t <= window_end)
        .count();
    let codes = player.codes();
    let (_, end) = player.finish();
    eprintln!(
        "first player over its whole playback ({:?}): worst gap {whole_gap:?}",
        window_end - first_at
    );
    eprintln!(
        "first player across the reloads ({:?}): {received} audio/video messages, worst gap \
         {gap:?}; codes {codes:?}",
        window_end - window_start
    );
    assert_eq!(end, None, "the first player's connection ended: {end:?}");
    assert!(
        gap < Duration::from_secs(1),
        "the first player stalled for {gap:?}"
    );
    assert_eq!(codes.iter().filter(|c| c.contains("Play.Start")).count(), 1);
    assert!(
        !codes
            .iter()
            .any(|c| c.contains("Failed") || c.contains("Stop")),
        "{codes:?}"
    );
    eprintln!("test took {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(60));
}
