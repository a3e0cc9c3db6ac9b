//! Tests of the whole policy (`Auth`): credentials through the public interface, config
//! validation, and the callback against a tiny HTTP server on loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::{ActionAuth, TokenRule as TokenRuleCfg};
use super::*;

const NOW: u64 = 1_700_000_000;

fn req(
    action: Action,
    name: &str,
    query: Option<&str>,
    connect_query: Option<&str>,
) -> AuthRequest {
    AuthRequest {
        action,
        app: "live".into(),
        name: name.into(),
        query: query.map(Into::into),
        connect_query: connect_query.map(Into::into),
        tc_url: Some("rtmp://127.0.0.1:1935/live".into()),
        peer: "10.1.2.3:50000".parse().unwrap(),
        conn_id: 7,
    }
}

fn rule(pattern: &str, token: &str) -> TokenRuleCfg {
    TokenRuleCfg {
        pattern: pattern.into(),
        token: token.into(),
    }
}

fn with_publish(publish: ActionAuth) -> Auth {
    Auth::from_config(&AuthConfig {
        publish,
        ..AuthConfig::default()
    })
    .unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn disabled_and_empty_config_allow_everything() {
    for auth in [
        Auth::disabled(),
        Auth::from_config(&AuthConfig::default()).unwrap(),
    ] {
        for action in [Action::Publish, Action::Play] {
            assert!(auth.is_open(action));
            assert!(!auth.has_callback(action));
            assert_eq!(
                auth.check_credentials(&req(action, "x", None, None), NOW),
                Ok(())
            );
        }
        let auth = Arc::new(auth);
        assert_eq!(
            block_on(auth.check(req(Action::Play, "x", None, None))),
            Ok(())
        );
    }
}

#[test]
fn labels() {
    assert_eq!(Action::Publish.label(), "publish");
    assert_eq!(Action::Play.label(), "play");
    let all = [
        (DenyReason::MissingCredentials, "missing_credentials"),
        (DenyReason::BadToken, "bad_token"),
        (DenyReason::BadSignature, "bad_signature"),
        (DenyReason::Expired, "expired"),
        (DenyReason::CallbackRefused, "callback_refused"),
        (DenyReason::CallbackFailed, "callback_failed"),
    ];
    for (r, l) in all {
        assert_eq!(r.label(), l);
    }
}

#[test]
fn static_tokens_allow_and_deny() {
    let auth = with_publish(ActionAuth {
        tokens: vec![rule("live/cam*", "camtoken"), rule("*", "master")],
        ..ActionAuth::default()
    });
    assert!(!auth.is_open(Action::Publish));
    assert!(auth.is_open(Action::Play), "play is configured separately");
    let pb = |name, q| auth.check_credentials(&req(Action::Publish, name, q, None), NOW);
    assert_eq!(pb("cam1", Some("token=camtoken")), Ok(()));
    assert_eq!(pb("cam1", Some("token=master")), Ok(()));
    assert_eq!(pb("other", Some("token=master")), Ok(()));
    assert_eq!(
        pb("other", Some("token=camtoken")),
        Err(DenyReason::BadToken),
        "a token only opens the streams its rule matches"
    );
    assert_eq!(pb("cam1", Some("token=wrong")), Err(DenyReason::BadToken));
    assert_eq!(pb("cam1", Some("token=")), Err(DenyReason::BadToken));
    assert_eq!(
        pb("cam1", Some("token=camtoken2")),
        Err(DenyReason::BadToken)
    );
    assert_eq!(pb("cam1", Some("token=camtoke")), Err(DenyReason::BadToken));
    assert_eq!(pb("cam1", None), Err(DenyReason::MissingCredentials));
    assert_eq!(
        pb("cam1", Some("foo=bar")),
        Err(DenyReason::MissingCredentials)
    );
    // Signature parameters without a secret are not credentials.
    assert_eq!(
        pb("cam1", Some("expires=1&sign=00")),
        Err(DenyReason::MissingCredentials)
    );
    assert_eq!(
        auth.check_credentials(&req(Action::Play, "cam1", None, None), NOW),
        Ok(())
    );
}

#[test]
fn token_rules_scope_by_pattern() {
    let auth = with_publish(ActionAuth {
        tokens: vec![rule("live/private-*", "p")],
        ..ActionAuth::default()
    });
    let pb = |name, q| auth.check_credentials(&req(Action::Publish, name, q, None), NOW);
    assert_eq!(pb("public", None), Ok(()), "no rule matches: open");
    assert_eq!(pb("public", Some("token=anything")), Ok(()));
    assert_eq!(pb("private-1", None), Err(DenyReason::MissingCredentials));
    assert_eq!(pb("private-1", Some("token=p")), Ok(()));

    // With a secret, streams no rule matches need a signature.
    let auth = with_publish(ActionAuth {
        tokens: vec![rule("live/private-*", "p")],
        secret: Some("k".into()),
        ..ActionAuth::default()
    });
    let pb = |name, q| auth.check_credentials(&req(Action::Publish, name, q, None), NOW);
    assert_eq!(pb("public", None), Err(DenyReason::MissingCredentials));
    assert_eq!(pb("public", Some("token=p")), Err(DenyReason::BadToken));
    let sig = Signer::new("k").unwrap().sign("live/public", NOW);
    let q = format!("expires={NOW}&sign={sig}");
    assert_eq!(pb("public", Some(&q)), Ok(()));
}

#[test]
fn connect_query_fallback_and_precedence() {
    let auth = with_publish(ActionAuth {
        tokens: vec![rule("*", "t")],
        ..ActionAuth::default()
    });
    let pb = |q, cq| auth.check_credentials(&req(Action::Publish, "cam", q, cq), NOW);
    assert_eq!(pb(None, Some("token=t")), Ok(()));
    assert_eq!(pb(Some("x=1"), Some("token=t")), Ok(()));
    assert_eq!(pb(None, Some("token=u")), Err(DenyReason::BadToken));
    // The stream-name query wins.
    assert_eq!(pb(Some("token=t"), Some("token=u")), Ok(()));
    assert_eq!(
        pb(Some("token=u"), Some("token=t")),
        Err(DenyReason::BadToken)
    );
}

#[test]
fn percent_decoded_tokens() {
    let auth = with_publish(ActionAuth {
        tokens: vec![rule("*", "a/b+c=")],
        ..ActionAuth::default()
    });
    let pb = |q| auth.check_credentials(&req(Action::Publish, "cam", Some(q), None), NOW);
    assert_eq!(pb("token=a%2Fb%2Bc%3D"), Ok(()));
    assert_eq!(pb("token=a/b+c="), Ok(()));
    assert_eq!(pb("token=a%2fb+c%3d"), Ok(()));
    assert_eq!(pb("token=a%2Fb%20c%3D"), Err(DenyReason::BadToken));
    // An over-long query is ignored as a whole.
    let long = format!("token=a/b+c=&pad={}", "x".repeat(5000));
    assert_eq!(pb(&long), Err(DenyReason::MissingCredentials));
}

#[test]
fn signed_urls() {
    let auth = Auth::from_config(&AuthConfig {
        play: ActionAuth {
            secret: Some("s3cret".into()),
            ..ActionAuth::default()
        },
        ..AuthConfig::default()
    })
    .unwrap();
    assert!(auth.is_open(Action::Publish));
    let pl = |name, q: &str| auth.check_credentials(&req(Action::Play, name, Some(q), None), NOW);
    // Vector from `printf '%s' "live/cam1:1700000000" | openssl dgst -sha256 -hmac s3cret`.
    let sig = "e127aab1b503e8c3b01f704a45db0fb7c8ffeb7835053cf77685ea88a7d06fc9";
    let good = format!("expires=1700000000&sign={sig}");
    assert_eq!(pl("cam1", &good), Ok(()));
    assert_eq!(
        auth.check_credentials(&req(Action::Play, "cam1", Some(&good), None), NOW + 1),
        Err(DenyReason::Expired)
    );
    assert_eq!(
        pl("cam2", &good),
        Err(DenyReason::BadSignature),
        "tampered stream"
    );
    let later = format!("expires=1700000099&sign={sig}");
    assert_eq!(
        pl("cam1", &later),
        Err(DenyReason::BadSignature),
        "tampered expiry"
    );
    let wrong = format!("expires=1700000000&sign={}", "ab".repeat(32));
    assert_eq!(pl("cam1", &wrong), Err(DenyReason::BadSignature));
    for q in [
        format!("expires=1700000000&sign={}", &sig[..63]),
        format!("expires=1700000000&sign=x{}", &sig[1..]),
        "expires=1700000000&sign=".to_string(),
        "expires=1700000000".to_string(),
        format!("sign={sig}"),
        format!("expires=soon&sign={sig}"),
    ] {
        assert_eq!(pl("cam1", &q), Err(DenyReason::BadSignature), "{q}");
    }
    assert_eq!(pl("cam1", "a=b"), Err(DenyReason::MissingCredentials));
    // In the connect query too, and a wrong token with a valid signature still passes.
    assert_eq!(
        auth.check_credentials(&req(Action::Play, "cam1", None, Some(&good)), NOW),
        Ok(())
    );
    assert_eq!(pl("cam1", &format!("token=nope&{good}")), Ok(()));
    assert_eq!(pl("cam1", "token=nope"), Err(DenyReason::BadToken));
}

#[test]
fn from_config_rejects_bad_settings() {
    let err = |play: ActionAuth, timeout_ms: u64| {
        Auth::from_config(&AuthConfig {
            play,
            callback_timeout_ms: timeout_ms,
            ..AuthConfig::default()
        })
        .unwrap_err()
        .to_string()
    };
    let cb = |url: &str| ActionAuth {
        callback: Some(url.into()),
        ..ActionAuth::default()
    };
    let e = err(cb("https://auth.example/check"), 1000);
    assert!(
        e.contains("auth.play.callback") && e.contains("https is not supported"),
        "{e}"
    );
    assert!(err(cb("ftp://a/"), 1000).contains("only http://"));
    assert!(err(cb("http://"), 1000).contains("auth.play.callback"));
    assert!(err(cb("http://u:p@a/"), 1000).contains("user info"));
    assert!(err(cb("http://127.0.0.1:1/"), 0).contains("callback_timeout_ms"));
    let e = err(
        ActionAuth {
            tokens: vec![rule("live/*", "")],
            ..ActionAuth::default()
        },
        1000,
    );
    assert!(e.contains("auth.play.tokens") && e.contains("empty"), "{e}");
    let e = err(
        ActionAuth {
            tokens: vec![rule("", "t")],
            ..ActionAuth::default()
        },
        1000,
    );
    assert!(e.contains("pattern is empty"), "{e}");
    let e = err(
        ActionAuth {
            secret: Some(String::new()),
            ..ActionAuth::default()
        },
        1000,
    );
    assert_eq!(e, "auth.play.secret is empty");
    // A zero timeout is fine while no callback is set.
    assert!(Auth::from_config(&AuthConfig {
        callback_timeout_ms: 0,
        ..AuthConfig::default()
    })
    .is_ok());
}

#[test]
fn parses_from_toml_and_debug_hides_secrets() {
    let cfg: AuthConfig = toml::from_str(
        r#"
        callback_timeout_ms = 500
        [publish]
        secret = "topsecret"
        tokens = [{ match = "live/*", token = "tok-123" }, { token = "any" }]
        [play]
        callback = "http://127.0.0.1:9/cb"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.publish.tokens[1].pattern, "*");
    let auth = Auth::from_config(&cfg).unwrap();
    assert!(auth.has_callback(Action::Play) && !auth.has_callback(Action::Publish));
    assert!(!auth.is_open(Action::Play) && !auth.is_open(Action::Publish));
    let dbg = format!("{auth:?}");
    assert!(
        !dbg.contains("topsecret") && !dbg.contains("tok-123"),
        "{dbg}"
    );
}

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

#[test]
fn logged_stream_names_are_escaped_and_capped() {
    let mut r = req(Action::Play, "a\nb\u{1b}[31m", None, None);
    assert_eq!(loggable_stream(&r), "live/a\\nb\\u{1b}[31m");
    r.name = "é".repeat(1000);
    let s = loggable_stream(&r);
    assert!(s.len() <= 256 + '…'.len_utf8() && s.ends_with('…'), "{s}");
}

/// Attacker-controlled queries: random bytes drawn from the characters that matter to the
/// parser (`%`, `=`, `&`, `?`, hex digits, multi-byte UTF-8) never panic and never pass.
#[test]
fn fuzzed_queries_never_panic_or_pass() {
    let auth = with_publish(ActionAuth {
        tokens: vec![rule("live/*", "the-token")],
        secret: Some("k3y".into()),
        callback: None,
    });
    let alphabet: Vec<char> = "%=&?+tokenexpiressign0123456789abcdefABCDEF-_.é\u{0}\u{7f}"
        .chars()
        .collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..20_000 {
        let len = (next() % 200) as usize + if i % 100 == 0 { 5000 } else { 0 };
        let q: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let (sq, cq) = if i % 2 == 0 {
            (Some(q.as_str()), None)
        } else {
            (None, Some(q.as_str()))
        };
        let r = auth.check_credentials(&req(Action::Publish, "cam", sq, cq), NOW);
        assert!(r.is_err(), "random query {q:?} passed");
    }
}
