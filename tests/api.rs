//! The HTTP API against a running server with real clients: the bearer token, streams and
//! clients listed as they are, kicks that really disconnect, and push destinations added,
//! disabled, enabled and removed while a stream is live, without disturbing its players.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::publisher::PublishSpec;
use common::rtmp_client::*;
use common::watcher::Watcher;
use common::*;
use serde_json::Value;

const TOKEN: &str = "s3cret-api";

fn api(server: &Server, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let (status, text) = server.http(method, path, &[("Authorization", &auth)], body);
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json)
}

/// A player on `live/<name>`.
fn player(server: &Server, name: &str) -> Watcher {
    Watcher::start(server.addr, "live", name)
}

/// (audio/video messages, worst gap between two, whether the server closed it).
fn finish(w: Watcher) -> (usize, Duration, bool) {
    let media = w.media();
    let worst = match (media.first(), media.last()) {
        (Some(&a), Some(&b)) => w.max_gap(a, b),
        _ => Duration::ZERO,
    };
    let (_, end) = w.finish();
    (media.len(), worst, end == Some(RecvEnd::Closed))
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn streams_clients_and_kicks() {
    let server = Server::start(&["--shards", "2", "--api-token", TOKEN]);
    // The token guards the API, not health or metrics.
    assert_eq!(server.http_get("/api/v1/streams").0, 401);
    let wrong = server.http(
        "GET",
        "/api/v1/streams",
        &[("Authorization", "Bearer nope")],
        None,
    );
    assert_eq!(wrong.0, 401);
    assert!(wrong.1.contains("error"));
    assert_eq!(server.http_get("/healthz").0, 200);
    let (st, body) = api(&server, "GET", "/api/v1/streams", None);
    assert_eq!(st, 200);
    assert_eq!(body["streams"].as_array().map(Vec::len), Some(0));

    let _publisher = PublishSpec::new(&test_media_locked(), &server.url("live/api1"))
        .limit_secs(60)
        .start();
    wait_published(&server, "live/api1");
    let players: Vec<Watcher> = (0..3).map(|_| player(&server, "api1")).collect();

    // Streams: codecs, viewers across both shards, bitrate and uptime.
    let stream = wait_for("3 viewers and a bitrate", Duration::from_secs(8), || {
        let (_, body) = api(&server, "GET", "/api/v1/streams/live/api1", None);
        (body["viewers"] == 3 && body["ingress_bitrate_bps"].as_f64()? > 0.0).then_some(body)
    });
    eprintln!("stream: {stream}");
    assert_eq!(stream["key"], "live/api1");
    assert_eq!(stream["app"], "live");
    assert_eq!(stream["name"], "api1");
    assert_eq!(stream["video"]["codec"], "h264");
    // From onMetaData, as ffprobe sees the test media.
    let probe = players::ffprobe(&server.url("live/api1"), 1, false, &[]);
    for dim in ["width", "height"] {
        let want: u64 = probe.field("video", dim).unwrap().parse().unwrap();
        assert_eq!(stream["video"][dim].as_u64(), Some(want), "{dim}");
    }
    assert_eq!(stream["audio"]["codec"], "aac");
    assert!(stream["uptime_secs"].as_f64().unwrap() > 0.0);
    assert!(stream["shard"].as_u64().unwrap() < 2);
    let bitrate = stream["ingress_bitrate_bps"].as_f64().unwrap();
    assert!(
        (100_000.0..5_000_000.0).contains(&bitrate),
        "test media is a few hundred kbit/s: {bitrate}"
    );
    let publisher_id = stream["publisher"]["id"].as_u64().expect("publisher id");
    assert!(stream["publisher"]["peer"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let (_, list) = api(&server, "GET", "/api/v1/streams", None);
    assert_eq!(list["streams"].as_array().unwrap().len(), 1);
    assert_eq!(
        api(&server, "GET", "/api/v1/streams/live/nope", None).0,
        404
    );
    // Generated clients encode the slash in the key.
    let (st, encoded) = api(&server, "GET", "/api/v1/streams/live%2Fapi1", None);
    assert_eq!((st, &encoded["key"]), (200, &Value::from("live/api1")));

    // Clients: one publisher, three players, filterable.
    let (_, clients) = api(&server, "GET", "/api/v1/clients?stream=live/api1", None);
    let clients = clients["clients"].as_array().unwrap().clone();
    let roles: Vec<&str> = clients
        .iter()
        .map(|c| c["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "player").count(),
        3,
        "{clients:?}"
    );
    assert_eq!(roles.iter().filter(|r| **r == "publisher").count(), 1);
    let (_, only_players) = api(&server, "GET", "/api/v1/clients?role=player", None);
    assert_eq!(only_players["clients"].as_array().unwrap().len(), 3);
    let victim = clients.iter().find(|c| c["role"] == "player").unwrap()["id"]
        .as_u64()
        .unwrap();
    let (st, one) = api(&server, "GET", &format!("/api/v1/clients/{victim}"), None);
    assert_eq!(st, 200);
    assert_eq!(one["stream"], "live/api1");
    // ffmpeg's publisher says who it is.
    let publisher = clients.iter().find(|c| c["role"] == "publisher").unwrap();
    assert!(
        publisher["agent"].as_str().is_some_and(|a| !a.is_empty()),
        "{publisher}"
    );

    // Kick one player: it is disconnected, the others keep playing.
    let t0 = Instant::now();
    let (st, _) = api(
        &server,
        "DELETE",
        &format!("/api/v1/clients/{victim}"),
        None,
    );
    assert_eq!(st, 204);
    wait_for(
        "the kicked player to be gone",
        Duration::from_secs(3),
        || {
            let (st, _) = api(&server, "GET", &format!("/api/v1/clients/{victim}"), None);
            (st == 404).then_some(())
        },
    );
    eprintln!("player kicked and gone in {:?}", t0.elapsed());
    assert_eq!(
        api(&server, "DELETE", "/api/v1/clients/999999", None).0,
        404
    );
    thread::sleep(Duration::from_millis(500));
    let results: Vec<(usize, Duration, bool)> = players.into_iter().map(finish).collect();
    let closed = results.iter().filter(|r| r.2).count();
    assert_eq!(
        closed, 1,
        "exactly the kicked player was closed: {results:?}"
    );
    for r in results.iter().filter(|r| !r.2) {
        assert!(r.0 > 20, "remaining players got media: {results:?}");
    }

    // Kick the publisher: the stream ends.
    let (st, _) = api(&server, "DELETE", "/api/v1/streams/live/api1", None);
    assert_eq!(st, 204);
    assert!(server
        .wait_log(
            &["publish ended", &format!("conn={publisher_id} ")],
            Duration::from_secs(3)
        )
        .is_some());
    assert_eq!(
        api(&server, "DELETE", "/api/v1/streams/live/api1", None).0,
        404,
        "no publisher any more"
    );
}

#[test]
fn push_destinations_change_live() {
    let target = Server::start(&[]);
    let server = Server::start(&["--shards", "2", "--api-token", TOKEN]);
    let _publisher = PublishSpec::new(&test_media_locked(), &server.url("live/cam"))
        .limit_secs(60)
        .start();
    wait_published(&server, "live/cam");
    let watcher = player(&server, "cam");
    thread::sleep(Duration::from_millis(500));

    let (st, list) = api(&server, "GET", "/api/v1/push", None);
    assert_eq!(st, 200);
    assert_eq!(list["destinations"].as_array().unwrap().len(), 0);

    // Bad requests.
    let bad = api(
        &server,
        "POST",
        "/api/v1/push",
        Some(r#"{"url":"http://x/y"}"#),
    );
    assert_eq!(bad.0, 400, "{:?}", bad.1);
    let bad = api(
        &server,
        "POST",
        "/api/v1/push",
        Some(r#"{"id":"has space","url":"rtmp://h/app"}"#),
    );
    assert_eq!(bad.0, 400);
    assert_eq!(
        api(&server, "POST", "/api/v1/push", Some("{not json")).0,
        400
    );
    let bad = api(
        &server,
        "POST",
        "/api/v1/push",
        Some(r#"{"url":"rtmps://h/app","ca_file":"/nonexistent/ca.pem"}"#),
    );
    assert_eq!(bad.0, 400, "{:?}", bad.1);
    assert!(bad.1.to_string().contains("ca.pem"), "{:?}", bad.1);

    // Add: the live stream starts pushing at once, keyed as asked, key never shown.
    let body = format!(
        r#"{{"id":"b","url":"rtmp://{}/live","key":"pushed","streams":["live/*"]}}"#,
        target.addr
    );
    let t0 = Instant::now();
    let (st, created) = api(&server, "POST", "/api/v1/push", Some(&body));
    assert_eq!(st, 201, "{created}");
    assert_eq!(created["id"], "b");
    assert_eq!(created["source"], "api");
    assert!(!created["url"].as_str().unwrap().contains("pushed"));
    assert_eq!(api(&server, "POST", "/api/v1/push", Some(&body)).0, 409);
    assert!(target
        .wait_log(&["publish started", "live/pushed"], Duration::from_secs(5))
        .is_some());
    eprintln!(
        "destination added -> target publish started in {:?}",
        t0.elapsed()
    );
    let session = wait_for("a live session", Duration::from_secs(5), || {
        let (_, d) = api(&server, "GET", "/api/v1/push/b", None);
        let s = d["sessions"].as_array()?.first()?.clone();
        (s["state"] == "live" && s["bytes"].as_u64()? > 0).then_some(s)
    });
    assert_eq!(session["stream"], "live/cam");
    let probe = players::ffprobe(&target.url("live/pushed"), 2, false, &[]);
    assert!(
        probe.count("video") > 10,
        "pushed stream plays at the target: {probe:?}"
    );

    // Disable: the session ends at the target; enable: it comes back.
    let (st, d) = api(
        &server,
        "PATCH",
        "/api/v1/push/b",
        Some(r#"{"enabled":false}"#),
    );
    assert_eq!(st, 200);
    assert_eq!(d["enabled"], false);
    assert!(target
        .wait_log(&["publish ended", "live/pushed"], Duration::from_secs(5))
        .is_some());
    let (st, _) = api(
        &server,
        "PATCH",
        "/api/v1/push/b",
        Some(r#"{"enabled":true}"#),
    );
    assert_eq!(st, 200);
    wait_for(
        "a second publish at the target",
        Duration::from_secs(5),
        || (target.count_log(&["publish started", "live/pushed"]) >= 2).then_some(()),
    );

    // A quick off/on: the new session waits for the old one to unpublish, so the target
    // never sees the key published twice (it would refuse the second with BadName).
    let before = target.count_log(&["publish started", "live/pushed"]);
    api(
        &server,
        "PATCH",
        "/api/v1/push/b",
        Some(r#"{"enabled":false}"#),
    );
    api(
        &server,
        "PATCH",
        "/api/v1/push/b",
        Some(r#"{"enabled":true}"#),
    );
    wait_for(
        "the toggled session at the target",
        Duration::from_secs(5),
        || (target.count_log(&["publish started", "live/pushed"]) > before).then_some(()),
    );
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        target.count_log(&["publish refused"]),
        0,
        "overlapping sessions"
    );
    wait_for(
        "one live session after the toggle",
        Duration::from_secs(5),
        || {
            let (_, d) = api(&server, "GET", "/api/v1/push/b", None);
            let sessions = d["sessions"].as_array()?.clone();
            (sessions.len() == 1 && sessions[0]["state"] == "live").then_some(())
        },
    );

    // Its latency histogram is exported per destination...
    let series = "rtmp_push_latency_seconds_count{destination=\"b\"}";
    wait_for("the push latency series", Duration::from_secs(5), || {
        server.http_get("/metrics").1.contains(series).then_some(())
    });

    // Remove: gone from the list, the session ends, a second delete is a 404.
    let ended = target.count_log(&["publish ended", "live/pushed"]);
    assert_eq!(api(&server, "DELETE", "/api/v1/push/b", None).0, 204);
    // ...and leaves the scrape with the destination.
    assert!(!server.http_get("/metrics").1.contains(series));
    wait_for("the last publish to end", Duration::from_secs(5), || {
        (target.count_log(&["publish ended", "live/pushed"]) > ended).then_some(())
    });
    assert_eq!(api(&server, "DELETE", "/api/v1/push/b", None).0, 404);
    assert_eq!(api(&server, "GET", "/api/v1/push/b", None).0, 404);
    assert_eq!(
        api(
            &server,
            "PATCH",
            "/api/v1/push/b",
            Some(r#"{"enabled":true}"#)
        )
        .0,
        404
    );

    // The local player never noticed.
    let (n, worst, closed) = finish(watcher);
    eprintln!("local player: {n} messages, worst gap {worst:?}");
    assert!(!closed);
    assert!(worst < Duration::from_millis(700), "worst gap {worst:?}");
}
