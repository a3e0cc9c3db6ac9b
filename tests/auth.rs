//! Publish and play authorization end to end, against the real binary started with a
//! `--config` file carrying an `[auth]` section: static tokens (in the stream name and in
//! the connect URL), signed play URLs, and an HTTP callback (allow, refuse, request body,
//! answer cache, a callback that never answers). Each case checks the exact onStatus code a
//! raw client sees and that a refused client is disconnected; real clients (ffmpeg,
//! ffprobe) use the same URLs. Finally, refused publishers must not disturb a stream that
//! is already playing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::players::ffprobe;
use common::publisher::Publisher;
use common::rtmp_client::*;
use common::watcher::Watcher;
use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PUBLISH_START: &str = "NetStream.Publish.Start";
const PUBLISH_UNAUTHORIZED: &str = "NetStream.Publish.Unauthorized";
const PLAY_START: &str = "NetStream.Play.Start";
const PLAY_FAILED: &str = "NetStream.Play.Failed";

/// A config file under the system temp dir, unique per process and call, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "rtmp-edge-auth-{name}-{}-{}.toml",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        ConfigFile(path)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The server with `text` as its config file (kept alive alongside it).
fn start(name: &str, text: &str) -> (Server, ConfigFile) {
    let cfg = ConfigFile::new(name, text);
    let server = Server::start(&["--config", cfg.0.to_str().unwrap()]);
    (server, cfg)
}

fn secs(n: u64) -> Instant {
    Instant::now() + Duration::from_secs(n)
}

/// Connects to `app` (which may carry a query), creates a stream and publishes `name`:
/// the client and the first onStatus code.
fn publish(addr: SocketAddr, app: &str, name: &str) -> (RtmpClient, String) {
    let mut c = RtmpClient::connect(addr, app).expect("connect");
    c.create_stream().expect("createStream");
    let (_, code) = c.publish(name).expect("publish status");
    (c, code)
}

/// Connects, creates a stream and plays `name`: the client and the first onStatus code
/// other than Play.Reset.
fn play(addr: SocketAddr, app: &str, name: &str) -> (RtmpClient, String) {
    let (mut c, _) = RtmpClient::player(addr, app, name).expect("play");
    let m = c
        .recv_until(secs(5), |m| {
            status(m).is_some_and(|(_, code)| code != "NetStream.Play.Reset")
        })
        .unwrap_or_else(|e| panic!("no play status for {name}: {e:?}"));
    let code = status(&m).map(|(_, c)| c).unwrap_or_default();
    (c, code)
}

/// Asserts the server closes a refused client's connection promptly.
fn assert_closed(c: &mut RtmpClient, what: &str) {
    assert!(c.wait_closed(secs(5)), "{what}: connection not closed");
}

/// Hex HMAC-SHA256 over `{stream}:{expires}`, like the documented openssl one-liner.
fn sign(secret: &str, stream: &str, expires: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{stream}:{expires}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// No log line may carry a credential.
fn assert_not_logged(server: &Server, secrets: &[&str]) {
    for line in server.log_lines() {
        for s in secrets {
            assert!(!line.contains(s), "credential {s:?} logged: {line}");
        }
    }
}

#[test]
fn publish_with_static_token() {
    let (server, _cfg) = start(
        "token",
        r#"
        [auth.publish]
        tokens = [
            { match = "live/*", token = "pub-secret-1" },
            { match = "other/*", token = "other-token" },
        ]
        "#,
    );
    let addr = server.addr;

    // (a) The right token in the stream name.
    let (_ok, code) = publish(addr, "live", "cam?token=pub-secret-1");
    assert_eq!(code, PUBLISH_START);
    wait_published(&server, "live/cam");

    // ffmpeg with the token in the URL's stream name.
    let _ffmpeg = Publisher::start(
        &test_media_locked(),
        &server.url("live/ff?token=pub-secret-1"),
    );
    wait_published(&server, "live/ff");

    // (b) A wrong token, a token of a rule for other streams, no token: refused, closed.
    for name in [
        "cam2?token=wrong",
        "cam2?token=other-token",
        "cam2",
        "cam2?foo=bar",
    ] {
        let (mut c, code) = publish(addr, "live", name);
        assert_eq!(code, PUBLISH_UNAUTHORIZED, "publish {name}");
        assert_closed(&mut c, name);
    }
    assert!(
        server
            .wait_log(&["publish refused", "bad_token"], Duration::from_secs(2))
            .is_some(),
        "no refusal logged with its reason"
    );
    assert!(server.logged(&["missing_credentials"]));

    // Play is not configured: open.
    let (_p, code) = play(addr, "live", "cam");
    assert_eq!(code, PLAY_START);

    // (c) The token in the connect URL (app `live?token=…`, tcUrl with the same query).
    let (_c, code) = publish(addr, "live?token=pub-secret-1", "cam3");
    assert_eq!(code, PUBLISH_START);
    wait_published(&server, "live/cam3");
    let (mut c, code) = publish(addr, "live?token=nope", "cam4");
    assert_eq!(code, PUBLISH_UNAUTHORIZED);
    assert_closed(&mut c, "wrong token in the connect query");
    // The stream name's token wins over the connect query's.
    let (_c, code) = publish(addr, "live?token=nope", "cam5?token=pub-secret-1");
    assert_eq!(code, PUBLISH_START);

    assert_not_logged(&server, &["pub-secret-1", "other-token"]);
}

#[test]
fn play_with_signed_url() {
    let secret = "play-hmac-key";
    let (server, _cfg) = start(
        "signed",
        &format!(
            r#"
            [auth.play]
            secret = "{secret}"
            "#
        ),
    );
    let addr = server.addr;
    // Publishing is open.
    let _ffmpeg = Publisher::live(&server, "live/cam");

    // (d) A valid signed URL: Play.Start, then media.
    let exp = unix_now() + 3600;
    let sig = sign(secret, "live/cam", exp);
    let (mut c, code) = play(addr, "live", &format!("cam?expires={exp}&sign={sig}"));
    assert_eq!(code, PLAY_START);
    c.recv_until(secs(5), is_av)
        .expect("no media after Play.Start");

    // ffprobe on the signed URL decodes video.
    let url = server.url(&format!("live/cam?expires={exp}&sign={sig}"));
    let probe = ffprobe(&url, 2, true, &[]);
    assert!(
        probe.count("video") > 0,
        "ffprobe decoded no video from the signed URL: {probe:?}"
    );

    // The signature in the connect URL works too.
    let (_c, code) = play(addr, &format!("live?expires={exp}&sign={sig}"), "cam");
    assert_eq!(code, PLAY_START);

    // Expired (genuinely signed, one second past).
    let old = unix_now() - 1;
    let old_sig = sign(secret, "live/cam", old);
    let (mut c, code) = play(addr, "live", &format!("cam?expires={old}&sign={old_sig}"));
    assert_eq!(code, PLAY_FAILED, "expired");
    assert_closed(&mut c, "expired");
    assert!(server.logged(&["play refused", "expired"]));

    // Tampered: another stream, another expiry, a flipped digit, a malformed sign, none.
    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    let tampered = [
        format!("other?expires={exp}&sign={sig}"),
        format!("cam?expires={}&sign={sig}", exp + 1),
        format!("cam?expires={exp}&sign={flipped}"),
        format!("cam?expires={exp}&sign=xyz"),
        "cam".to_string(),
    ];
    for name in &tampered {
        let (mut c, code) = play(addr, "live", name);
        assert_eq!(code, PLAY_FAILED, "play {name}");
        assert_closed(&mut c, name);
    }
    assert!(server.logged(&["play refused", "bad_signature"]));
    assert!(server.logged(&["play refused", "missing_credentials"]));

    assert_not_logged(&server, &[&sig, &old_sig, secret]);
}

/// What the test callback server saw.
#[derive(Clone, Default)]
struct Seen {
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Seen {
    fn count(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }

    fn last(&self) -> serde_json::Value {
        self.bodies
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no callback request")
    }
}

/// A loopback HTTP server for callbacks: each POST's JSON body is recorded and answered with
/// `answer(body)` (`None`: never answer, holding the connection). Accepts for 60 s.
fn callback_server(answer: fn(&serde_json::Value) -> Option<u16>) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let seen = Seen::default();
    let keep = seen.clone();
    thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            match listener.accept() {
                Ok((s, _)) => {
                    let keep = keep.clone();
                    thread::spawn(move || answer_one(s, answer, &keep));
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (base, seen)
}

fn answer_one(mut s: TcpStream, answer: fn(&serde_json::Value) -> Option<u16>, seen: &Seen) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut body: serde_json::Value =
        serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or_default();
    // Keep what the request line and headers said next to the body, for assertions.
    body["_request_line"] = head.lines().next().unwrap_or("").into();
    body["_json"] = head.contains("content-type: application/json").into();
    let status = answer(&body);
    seen.bodies.lock().unwrap().push(body);
    match status {
        Some(code) => {
            let resp =
                format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = s.write_all(resp.as_bytes());
        }
        None => thread::sleep(Duration::from_secs(5)),
    }
}

fn allow_good(body: &serde_json::Value) -> Option<u16> {
    Some(if body["name"] == "good" { 204 } else { 403 })
}

#[test]
fn callback_allows_refuses_and_caches() {
    let (base, seen) = callback_server(allow_good);
    let (server, _cfg) = start(
        "callback",
        &format!(
            r#"
            [auth]
            callback_timeout_ms = 2000
            callback_cache_secs = 30
            [auth.publish]
            callback = "{base}/publish"
            [auth.play]
            callback = "{base}/play"
            "#
        ),
    );
    let addr = server.addr;

    // (e) Publish: allowed for "good", refused otherwise.
    let (good, code) = publish(addr, "live", "good?token=abc");
    assert_eq!(code, PUBLISH_START);
    let body = seen.last();
    assert_eq!(body["_request_line"], "post /publish http/1.1");
    assert_eq!(body["_json"], true);
    assert_eq!(body["action"], "publish");
    assert_eq!(body["app"], "live");
    assert_eq!(body["name"], "good");
    assert_eq!(body["stream"], "live/good");
    assert_eq!(body["query"], "token=abc");
    assert_eq!(body["params"]["token"], "abc");
    assert_eq!(body["client_ip"], "127.0.0.1");
    let port = good.stream.local_addr().unwrap().port();
    assert_eq!(body["client_port"], port);
    assert!(body["client_id"].is_u64(), "{body}");
    assert!(body["tc_url"]
        .as_str()
        .unwrap_or("")
        .starts_with("rtmp://127.0.0.1:"));

    let (mut c, code) = publish(addr, "live", "bad");
    assert_eq!(code, PUBLISH_UNAUTHORIZED);
    assert_closed(&mut c, "refused publish");
    assert_eq!(seen.last()["name"], "bad");
    assert!(server.logged(&["publish refused", "callback_refused"]));

    // Play: allowed and refused.
    let before = seen.count();
    let (_p, code) = play(addr, "live", "good");
    assert_eq!(code, PLAY_START);
    assert_eq!(seen.last()["action"], "play");
    assert_eq!(seen.last()["_request_line"], "post /play http/1.1");
    let (mut c, code) = play(addr, "live", "bad");
    assert_eq!(code, PLAY_FAILED);
    assert_closed(&mut c, "refused play");
    assert_eq!(seen.count(), before + 2);

    // The cache: the same URL from the same address within callback_cache_secs asks once,
    // for refusals too; another query asks again.
    let before = seen.count();
    for _ in 0..2 {
        let (_p, code) = play(addr, "live", "good?k=cached");
        assert_eq!(code, PLAY_START);
    }
    assert_eq!(
        seen.count(),
        before + 1,
        "second play should be a cache hit"
    );
    for _ in 0..2 {
        let (mut c, code) = play(addr, "live", "bad?k=cached");
        assert_eq!(code, PLAY_FAILED);
        assert_closed(&mut c, "cached refusal");
    }
    assert_eq!(seen.count(), before + 2, "refusals are cached too");
    let (_p, code) = play(addr, "live", "good?k=other");
    assert_eq!(code, PLAY_START);
    assert_eq!(seen.count(), before + 3);
}

#[test]
fn callback_that_never_answers_refuses_in_time() {
    let (base, seen) = callback_server(|_| None);
    let (server, _cfg) = start(
        "callback-slow",
        &format!(
            r#"
            [auth]
            callback_timeout_ms = 300
            [auth.publish]
            callback = "{base}/publish"
            "#
        ),
    );
    let mut c = RtmpClient::connect(server.addr, "live").expect("connect");
    c.create_stream().expect("createStream");
    let t0 = Instant::now();
    let (_, code) = c.publish("slow").expect("publish status");
    let took = t0.elapsed();
    assert_eq!(code, PUBLISH_UNAUTHORIZED);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(1),
        "refused after {took:?}"
    );
    assert_closed(&mut c, "callback timeout");
    assert_eq!(seen.count(), 1);
    assert!(
        server
            .wait_log(
                &["auth callback failed", "live/slow"],
                Duration::from_secs(2)
            )
            .is_some(),
        "callback failure not logged"
    );
    assert!(server.logged(&["publish refused", "callback_failed"]));

    // A callback URL where nothing listens fails closed as well (fast).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (server, _cfg) = start(
        "callback-down",
        &format!(
            r#"
            [auth.play]
            callback = "http://127.0.0.1:{port}/play"
            "#
        ),
    );
    let (mut c, code) = play(server.addr, "live", "x");
    assert_eq!(code, PLAY_FAILED);
    assert_closed(&mut c, "callback down");
}

#[test]
fn refused_publishers_do_not_disturb_a_running_stream() {
    let (server, _cfg) = start(
        "no-disturb",
        r#"
        [auth.publish]
        tokens = [{ token = "good-token" }]
        "#,
    );
    let addr = server.addr;
    let _ffmpeg = Publisher::start(
        &test_media_locked(),
        &server.url("live/cam?token=good-token"),
    );
    wait_published(&server, "live/cam");
    let player = Watcher::start(addr, "live", "cam");
    assert!(
        player.wait_media(player.started, 30, Duration::from_secs(10)),
        "player got no media"
    );

    // (f) 20 refused publishers, most of them on the very stream being played.
    let from = Instant::now();
    for i in 0..20 {
        let name = match i % 4 {
            0 => "cam".to_string(),
            1 => "cam?token=bad".to_string(),
            2 => format!("cam?token=good-token{i}"),
            _ => format!("other{i}?token=x"),
        };
        let (mut c, code) = publish(addr, "live", &name);
        assert_eq!(code, PUBLISH_UNAUTHORIZED, "publish {name}");
        assert_closed(&mut c, &name);
    }
    // Keep watching a little after the last refusal.
    thread::sleep(Duration::from_millis(1500));
    let to = Instant::now();

    let gap = player.max_gap(from, to);
    assert!(
        gap < Duration::from_millis(1000),
        "player stalled for {gap:?}"
    );
    let n = player.media().iter().filter(|&&t| t >= from).count();
    assert!(
        n >= 30,
        "only {n} media messages while publishers were refused"
    );
    assert_eq!(
        server.count_log(&["publish started"]),
        1,
        "only the real publisher ever started"
    );
    let (codes, end) = player.finish();
    assert_eq!(end, None, "the player's connection ended");
    assert!(
        codes
            .iter()
            .all(|c| c == PLAY_START || c == "NetStream.Play.Reset"),
        "player saw {codes:?}"
    );
    assert!(server.count_log(&["publish refused", "unauthorized"]) >= 20);
}
