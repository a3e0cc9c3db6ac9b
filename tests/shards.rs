//! Real players against more than one shard. Issue requirements (e): viewers of one stream
//! spread over both shards (SO_REUSEPORT hashes the 4-tuple) all get video; and (f): two
//! streams published at once never mix, on one shard and across two.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::players::*;
use common::publisher::Publisher;
use common::*;
use rtmp_edge::shard::state::owner_of;

/// Concurrent viewers per round; the chance that all land on one of two shards is 2^-(n-1).
const VIEWERS: usize = 10;

#[test]
fn viewers_on_both_shards_all_get_video() {
    let server = Server::start(&["--shards", "2"]);
    let url = server.url("live/spread");
    let _publisher = Publisher::live(&server, "live/spread");
    let owner: Option<usize> = server
        .wait_log(&["publish started", "live/spread"], Duration::from_secs(1))
        .and_then(|l| span_field(&l, "shard="));
    eprintln!("live/spread is owned by shard {owner:?}");

    let mut shards = BTreeSet::new();
    // Another round only in the unlikely case that every viewer hashed to one shard.
    for round in 0..3 {
        let players: Vec<_> = (0..VIEWERS)
            .map(|i| {
                let url = url.clone();
                let tag = format!("viewer-{round}-{i}");
                std::thread::spawn(move || {
                    let probe = ffprobe(&url, 3, false, &["-rtmp_flashver", &tag]);
                    (tag, probe)
                })
            })
            .collect();
        for p in players {
            let (tag, probe) = p.join().unwrap();
            let (shard, id) = conn_of(&server, &tag)
                .unwrap_or_else(|| panic!("{tag} never connected: {probe:?}"));
            let video = probe.count("video");
            eprintln!(
                "{tag}: shard {shard}, conn {id}, {video} video / {} audio packets",
                probe.count("audio")
            );
            let span = [&format!("conn={id} "), &format!("shard={shard}")];
            assert_eq!(
                server.count_log(&[span[0], span[1], "play started"]),
                1,
                "{tag}: no play started for conn {id} on shard {shard}"
            );
            assert!(probe.clean(), "{tag}: {probe:?}");
            assert_eq!(probe.field("video", "codec_name"), Some("h264"), "{tag}");
            assert!(video >= 60, "{tag}: {video} video packets: {probe:?}");
            shards.insert(shard);
        }
        if shards.len() == 2 {
            break;
        }
    }
    assert_eq!(shards.len(), 2, "all viewers landed on shard(s) {shards:?}");
}

#[test]
fn two_streams_do_not_mix() {
    // Made before the threads start, so each file is encoded once.
    let a = media("mix-a-320x240", "320x240", 10, 30);
    let b = media("mix-b-640x360", "640x360", 10, 30);
    let runs: Vec<_> = [1, 2]
        .into_iter()
        .map(|shards| {
            let (a, b) = (a.clone(), b.clone());
            std::thread::spawn(move || two_streams(shards, &a, &b))
        })
        .collect();
    for r in runs {
        r.join().unwrap();
    }
}

/// Publishes `a` and `b` to one server at once; two players of each must see only their own.
fn two_streams(shards: usize, a: &Path, b: &Path) {
    let server = Server::start(&["--shards", &shards.to_string()]);
    // On two shards, pick names whose streams different shards own, so that each shard
    // relays one stream it owns and mirrors the other.
    let name_a = "a".to_string();
    let name_b = (0..)
        .map(|i| format!("b{i}"))
        .find(|n| shards == 1 || owner_of(&format!("live/{n}"), 2) != owner_of("live/a", 2))
        .unwrap();
    let _pa = Publisher::start(a, &server.url(&format!("live/{name_a}")));
    let _pb = Publisher::start(b, &server.url(&format!("live/{name_b}")));
    wait_published(&server, &format!("live/{name_a}"));
    wait_published(&server, &format!("live/{name_b}"));

    let expect: [(&str, &str, &str); 2] = [(&name_a, "320", "240"), (&name_b, "640", "360")];
    let players: Vec<_> = expect
        .iter()
        .flat_map(|&(name, w, h)| {
            let url = server.url(&format!("live/{name}"));
            (0..2).map(move |i| {
                let (url, tag) = (url.clone(), format!("{name}-{i}"));
                let (w, h) = (w.to_string(), h.to_string());
                std::thread::spawn(move || {
                    let probe = ffprobe(&url, 3, true, &["-rtmp_flashver", &tag]);
                    (tag, w, h, probe)
                })
            })
        })
        .collect();
    for p in players {
        let (tag, w, h, probe) = p.join().unwrap();
        let shard = conn_of(&server, &tag).map(|(s, _)| s);
        let video = probe.count("video");
        eprintln!(
            "shards={shards} {tag} on shard {shard:?}: {}x{}, {video} video / {} audio frames",
            probe.field("video", "width").unwrap_or("?"),
            probe.field("video", "height").unwrap_or("?"),
            probe.count("audio"),
        );
        assert!(probe.clean(), "shards={shards} {tag}: {probe:?}");
        assert_eq!(probe.field("video", "width"), Some(&*w), "{tag}: {probe:?}");
        assert_eq!(
            probe.field("video", "height"),
            Some(&*h),
            "{tag}: {probe:?}"
        );
        assert!(probe.count("audio") > 0, "{tag}: {probe:?}");
        // 3 s at 30 fps is about 90; the other stream's frames mixed in would double it.
        assert!((60..=135).contains(&video), "{tag}: {video} frames");
    }
}
