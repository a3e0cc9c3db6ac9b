//! An encoder restarting its broadcast on the same connection, as vMix and Wirecast do:
//! FCUnpublish (no deleteStream), createStream, and publish of the same key on the new
//! stream id. nginx-rtmp and SRS accept it and their players carry on; so must we.

mod common;

use std::time::{Duration, Instant};

use common::rtmp_client::RtmpClient;
use common::watcher::Watcher;
use common::Server;
use rtmp_edge::protocol::amf::Amf0Value;
use rtmp_edge::protocol::message as msg;

/// AVC sequence header, a keyframe and AAC config + a frame: enough for a player to count
/// media, from `ts` on.
fn send_gop(c: &mut RtmpClient, ts: u32) {
    c.send_media(msg::VIDEO, ts, &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f])
        .unwrap();
    c.send_media(msg::AUDIO, ts, &[0xAF, 0, 0x12, 0x10])
        .unwrap();
    for i in 0..10u32 {
        let t = ts + i * 40;
        let video: &[u8] = if i == 0 {
            &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]
        } else {
            &[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]
        };
        c.send_media(msg::VIDEO, t, video).unwrap();
        c.send_media(msg::AUDIO, t, &[0xAF, 1, 0x21, 0x10]).unwrap();
    }
}

#[test]
fn fcunpublish_then_publish_on_a_new_stream_id_republishes() {
    for shards in ["1", "2"] {
        let server = Server::start(&["--shards", shards]);
        let mut enc = RtmpClient::connect(server.addr, "live").expect("encoder connect");
        let first_id = enc.create_stream().unwrap();
        let (_, code) = enc.publish("vmix").unwrap();
        assert_eq!(code, "NetStream.Publish.Start");
        let watcher = Watcher::start(server.addr, "live", "vmix");
        send_gop(&mut enc, 0);
        assert!(
            watcher.wait_media(watcher.started, 5, Duration::from_secs(5)),
            "player got the first broadcast ({shards} shards)"
        );

        // The restart: FCUnpublish only, then a new stream and the same key.
        let body = msg::command_body("FCUnpublish", 5.0, &[Amf0Value::Null, "vmix".into()]);
        enc.send_message(3, msg::COMMAND_AMF0, 0, 0, body).unwrap();
        let second_id = enc.create_stream().unwrap();
        assert_ne!(first_id, second_id);
        let (level, code) = enc.publish("vmix").unwrap();
        assert_eq!(
            (level.as_str(), code.as_str()),
            ("status", "NetStream.Publish.Start"),
            "republish on stream {second_id} ({shards} shards)"
        );
        let restarted = Instant::now();
        send_gop(&mut enc, 0);
        assert!(
            watcher.wait_media(restarted, 5, Duration::from_secs(5)),
            "player carries on after the republish ({shards} shards)"
        );
        let codes = watcher.codes_since(watcher.started);
        let unpub = codes
            .iter()
            .position(|c| c == "NetStream.Play.UnpublishNotify");
        let repub = codes
            .iter()
            .position(|c| c == "NetStream.Play.PublishNotify");
        assert!(
            matches!((unpub, repub), (Some(u), Some(p)) if u < p),
            "players hear the end and the restart, in order: {codes:?}"
        );
        assert!(watcher.is_running(), "player still connected");
        assert!(
            server
                .wait_log(&["publish ended", "republish"], Duration::from_secs(2))
                .is_some(),
            "the log says why the first publish ended"
        );
        assert_eq!(server.count_log(&["BadName"]), 0);
    }
}

/// Without FCUnpublish a second publish on a publishing connection is refused (BadName),
/// and the connection and its live stream go on: an encoder retrying `publish` must not
/// end its own stream.
#[test]
fn publish_again_without_fcunpublish_is_refused_and_the_stream_goes_on() {
    let server = Server::start(&[]);
    let mut enc = RtmpClient::connect(server.addr, "live").expect("encoder connect");
    enc.create_stream().unwrap();
    assert_eq!(enc.publish("retry").unwrap().1, "NetStream.Publish.Start");
    let watcher = Watcher::start(server.addr, "live", "retry");
    send_gop(&mut enc, 0);
    assert!(watcher.wait_media(watcher.started, 5, Duration::from_secs(5)));
    enc.create_stream().unwrap();
    let (level, code) = enc.publish("retry").unwrap();
    assert_eq!(
        (level.as_str(), code.as_str()),
        ("error", "NetStream.Publish.BadName")
    );
    // The first publish goes on: more media reaches the player, and it never hears of
    // an end.
    let refused = Instant::now();
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(100));
        send_gop(&mut enc, 1000 + i * 400);
    }
    assert!(
        watcher.wait_media(refused, 20, Duration::from_secs(5)),
        "media after the refused publish"
    );
    assert!(
        !watcher
            .codes_since(watcher.started)
            .iter()
            .any(|c| c == "NetStream.Play.UnpublishNotify"),
        "the live stream did not end"
    );
    assert!(watcher.is_running());
    assert_eq!(server.count_log(&["publish ended", "republish"]), 0);
}

/// An encoder whose network dropped reconnects while its old connection still looks open
/// to us: once the old publisher has been silent for 2 s, the new publish replaces it (the
/// old connection is closed, players hear of the change and carry on). A publisher that is
/// still sending keeps its stream.
#[test]
fn a_new_publish_replaces_a_silent_publisher() {
    let server = Server::start(&[]);
    let mut old = RtmpClient::connect(server.addr, "live").expect("encoder connect");
    old.create_stream().unwrap();
    assert_eq!(old.publish("stale").unwrap().1, "NetStream.Publish.Start");
    let watcher = Watcher::start(server.addr, "live", "stale");
    send_gop(&mut old, 0);
    assert!(watcher.wait_media(watcher.started, 5, Duration::from_secs(5)));

    let mut early = RtmpClient::connect(server.addr, "live").expect("second connect");
    early.create_stream().unwrap();
    assert_eq!(
        early.publish("stale").unwrap().1,
        "NetStream.Publish.BadName",
        "a publisher that just sent media must keep its stream"
    );

    // The old encoder goes silent without closing, as behind a dead link.
    std::thread::sleep(Duration::from_millis(3500));
    let mut new = RtmpClient::connect(server.addr, "live").expect("reconnect");
    new.create_stream().unwrap();
    assert_eq!(new.publish("stale").unwrap().1, "NetStream.Publish.Start");
    let replaced = Instant::now();
    assert!(
        old.wait_closed(Instant::now() + Duration::from_secs(3)),
        "the silent publisher's connection stayed open"
    );
    send_gop(&mut new, 0);
    assert!(
        watcher.wait_media(replaced, 5, Duration::from_secs(5)),
        "no media from the new publisher"
    );
    let codes = watcher.codes_since(watcher.started);
    let unpub = codes
        .iter()
        .position(|c| c == "NetStream.Play.UnpublishNotify");
    let publ = codes
        .iter()
        .position(|c| c == "NetStream.Play.PublishNotify");
    assert!(
        matches!((unpub, publ), (Some(u), Some(p)) if u < p),
        "player statuses: {codes:?}"
    );
    assert!(watcher.is_running());
    let line = server
        .wait_log(
            &["silent publisher replaced", "live/stale"],
            Duration::from_secs(1),
        )
        .expect("no log line for the replacement");
    assert!(line.contains("WARN"), "{line}");
}
