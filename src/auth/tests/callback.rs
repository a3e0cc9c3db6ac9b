//! The HTTP callback against a tiny HTTP/1.1 server on loopback: answers, caching, timeouts,
//! refused and dropped connections, and its order relative to local credentials.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;

/// A tiny HTTP/1.1 server on loopback: answers each request with the status `answer`
/// returns for its body (`None`: never answers, holding the connection), counting
/// requests and keeping bodies. Stops accepting after 20 s.
struct HttpServer {
    url: String,
    requests: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    fn start(answer: fn(&str) -> Option<u16>) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/auth", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (count, keep) = (requests.clone(), bodies.clone());
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (count, keep) = (count.clone(), keep.clone());
                        std::thread::spawn(move || serve_one(s, answer, &count, &keep));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HttpServer {
            url,
            requests,
            bodies,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn last_body(&self) -> serde_json::Value {
        let bodies = self.bodies.lock().unwrap();
        serde_json::from_str(bodies.last().expect("no request")).unwrap()
    }
}

fn serve_one(
    mut s: TcpStream,
    answer: fn(&str) -> Option<u16>,
    count: &AtomicUsize,
    keep: &Mutex<Vec<String>>,
) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
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
    assert!(head.starts_with("post /auth http/1.1\r\n"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: application/json\r\n"),
        "{head}"
    );
    let host_ok = head.contains("\r\nhost: 127.0.0.1:") || head.contains("\r\nhost: localhost:");
    assert!(host_ok, "{head}");
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
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
    count.fetch_add(1, Ordering::SeqCst);
    let status = answer(&body);
    keep.lock().unwrap().push(body);
    match status {
        Some(code) => {
            let resp =
                format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            let _ = s.write_all(resp.as_bytes());
        }
        // Hold the connection open without answering.
        None => std::thread::sleep(Duration::from_secs(3)),
    }
}

fn callback_auth(url: &str, timeout_ms: u64, cache_secs: u64) -> Arc<Auth> {
    let cb = ActionAuth {
        callback: Some(url.into()),
        ..ActionAuth::default()
    };
    Arc::new(
        Auth::from_config(&AuthConfig {
            publish: cb.clone(),
            play: cb,
            callback_timeout_ms: timeout_ms,
            callback_cache_secs: cache_secs,
        })
        .unwrap(),
    )
}

fn allow_good(body: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(if v["name"] == "good" { 204 } else { 403 })
}

#[test]
fn callback_allows_on_2xx_and_refuses_otherwise() {
    let server = HttpServer::start(allow_good);
    let auth = callback_auth(&server.url, 2000, 0);
    assert!(!auth.is_open(Action::Play) && auth.has_callback(Action::Play));
    block_on(async {
        let r = req(
            Action::Publish,
            "good",
            Some("token=abc&x=%2F"),
            Some("token=conn&c=1"),
        );
        assert_eq!(auth.clone().check(r).await, Ok(()));
        let body = server.last_body();
        assert_eq!(
            body,
            serde_json::json!({
                "action": "publish",
                "app": "live",
                "name": "good",
                "stream": "live/good",
                "query": "token=abc&x=%2F",
                "params": {"token": "abc", "x": "/", "c": "1"},
                "tc_url": "rtmp://127.0.0.1:1935/live",
                "client_ip": "10.1.2.3",
                "client_port": 50000,
                "client_id": 7,
            })
        );
        assert_eq!(
            auth.clone()
                .check(req(Action::Play, "bad", None, None))
                .await,
            Err(DenyReason::CallbackRefused)
        );
        let body = server.last_body();
        assert_eq!(body["action"], "play");
        assert_eq!(body["query"], serde_json::Value::Null);
        assert_eq!(body["params"], serde_json::json!({}));
    });
    assert_eq!(server.requests(), 2);
}

#[test]
fn callback_answers_are_cached() {
    let server = HttpServer::start(allow_good);
    let auth = callback_auth(&server.url, 2000, 30);
    block_on(async {
        for _ in 0..3 {
            let r = req(Action::Play, "good", Some("token=1"), None);
            assert_eq!(auth.clone().check(r).await, Ok(()));
        }
        assert_eq!(server.requests(), 1, "cache hits ask nobody");
        for _ in 0..2 {
            let r = req(Action::Play, "bad", None, None);
            assert_eq!(
                auth.clone().check(r).await,
                Err(DenyReason::CallbackRefused)
            );
        }
        assert_eq!(server.requests(), 2, "refusals are cached too");
        // A different query, action or client address asks again.
        let r = req(Action::Play, "good", Some("token=2"), None);
        assert_eq!(auth.clone().check(r).await, Ok(()));
        let r = req(Action::Publish, "good", Some("token=1"), None);
        assert_eq!(auth.clone().check(r).await, Ok(()));
        let mut r = req(Action::Play, "good", Some("token=1"), None);
        r.peer = "10.9.9.9:1".parse().unwrap();
        assert_eq!(auth.clone().check(r).await, Ok(()));
        assert_eq!(server.requests(), 5);
    });
}

#[test]
fn callback_that_never_answers_fails_closed_in_time() {
    let server = HttpServer::start(|_| None);
    let auth = callback_auth(&server.url, 200, 30);
    block_on(async {
        for _ in 0..2 {
            let t0 = Instant::now();
            let r = req(Action::Publish, "good", None, None);
            assert_eq!(auth.clone().check(r).await, Err(DenyReason::CallbackFailed));
            let took = t0.elapsed();
            assert!(
                took >= Duration::from_millis(190) && took < Duration::from_millis(1000),
                "{took:?}"
            );
        }
    });
    assert_eq!(server.requests(), 2, "failures are not cached");
}

#[test]
fn callback_connection_refused_fails_closed() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let auth = callback_auth(&format!("http://127.0.0.1:{port}/auth"), 2000, 30);
    let r = req(Action::Play, "good", None, None);
    assert_eq!(block_on(auth.check(r)), Err(DenyReason::CallbackFailed));
}

#[test]
fn credentials_are_checked_before_the_callback() {
    let server = HttpServer::start(allow_good);
    let auth = Arc::new(
        Auth::from_config(&AuthConfig {
            publish: ActionAuth {
                tokens: vec![rule("*", "t")],
                callback: Some(server.url.clone()),
                ..ActionAuth::default()
            },
            ..AuthConfig::default()
        })
        .unwrap(),
    );
    block_on(async {
        let r = req(Action::Publish, "good", Some("token=bad"), None);
        assert_eq!(auth.clone().check(r).await, Err(DenyReason::BadToken));
        assert_eq!(server.requests(), 0);
        let r = req(Action::Publish, "bad", Some("token=t"), None);
        assert_eq!(
            auth.clone().check(r).await,
            Err(DenyReason::CallbackRefused)
        );
        let r = req(Action::Publish, "good", Some("token=t"), None);
        assert_eq!(auth.clone().check(r).await, Ok(()));
    });
    assert_eq!(server.requests(), 2);
}

#[test]
fn callbacks_from_many_threads_and_runtimes() {
    let server = HttpServer::start(allow_good);
    let auth = callback_auth(&server.url, 2000, 0);
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let auth = auth.clone();
            std::thread::spawn(move || {
                block_on(async move {
                    let name = if i % 2 == 0 { "good" } else { "bad" };
                    for _ in 0..5 {
                        let got = auth
                            .clone()
                            .check(req(Action::Play, name, None, None))
                            .await;
                        let want = if i % 2 == 0 {
                            Ok(())
                        } else {
                            Err(DenyReason::CallbackRefused)
                        };
                        assert_eq!(got, want);
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.requests(), 20);
}

#[test]
fn callback_by_host_name_and_closed_without_answer() {
    let server = HttpServer::start(allow_good);
    let port = server
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/auth");
    let auth = callback_auth(&format!("http://localhost:{port}/auth"), 2000, 0);
    let r = req(Action::Play, "good", None, None);
    assert_eq!(block_on(auth.check(r)), Ok(()));

    // A server that reads the request and hangs up without a status line.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/auth", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut [0u8; 4096]);
        }
    });
    let auth = callback_auth(&url, 2000, 30);
    let t0 = Instant::now();
    let r = req(Action::Play, "good", None, None);
    assert_eq!(block_on(auth.check(r)), Err(DenyReason::CallbackFailed));
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}
