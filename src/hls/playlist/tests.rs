use super::*;
use crate::hls::fmp4::Tracks;

fn init(id: u32) -> Arc<Init> {
    Arc::new(Init {
        id,
        data: Bytes::from_static(b"init"),
        tracks: Tracks {
            video: None,
            audio: None,
        },
    })
}

fn part(start_ms: u64, starts_segment: bool) -> Out {
    Out::Part(Part {
        data: vec![Bytes::from_static(b"moofmdat")],
        len: 8,
        duration_ms: 200,
        independent: starts_segment,
        starts_segment,
        target_secs: 2,
        start_ms,
        first_ingest: None,
    })
}

fn timeline(window: usize) -> Timeline {
    Timeline::new(
        TimelineConfig {
            window,
            segment_ms: 2000,
            part_ms: 200,
        },
        1_000_000,
    )
}

/// Feeds `secs` of 200 ms parts, a segment every 2 s.
fn feed(t: &mut Timeline, from_ms: u64, secs: u64) {
    for i in 0..secs * 5 {
        let at = from_ms + i * 200;
        t.apply(part(at, at.is_multiple_of(2000)), 2_000_000 + at);
    }
}

#[test]
fn window_slides_and_media_sequence_follows() {
    let mut t = timeline(3);
    t.apply(Out::Init(init(0)), 0);
    feed(&mut t, 0, 11);
    let p = t.media("", false, 0);
    // 5 complete (0..4) + open 5: window 3 keeps 2, 3, 4 and the open one.
    assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{p}");
    assert_eq!(p.matches("#EXTINF:2.000,").count(), 3);
    assert!(p.contains(&format!(
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-{}-5-5.m4s\"",
        t.epoch
    )));
    assert!(p.contains("#EXT-X-TARGETDURATION:2\n"));
    assert!(p.contains("#EXT-X-INDEPENDENT-SEGMENTS\n"));
    // Out of the playlist but still served for three target durations.
    assert!(matches!(t.segment(1), Resource::Body(_, 80)));
    assert!(matches!(t.part(1, 2), Resource::Body(_, 8)));
    assert!(matches!(t.segment(4), Resource::Body(_, 80)));
    assert!(matches!(t.part(5, 5), Resource::Soon));
    assert!(matches!(t.part(5, 6), Resource::Gone));
    feed(&mut t, 11_000, 10);
    assert!(matches!(t.segment(1), Resource::Gone));
}

#[test]
fn blocking_reload_answers() {
    let mut t = timeline(5);
    assert_eq!(t.ready(0, None), Ready::Wait);
    t.apply(Out::Init(init(0)), 0);
    feed(&mut t, 0, 1);
    assert_eq!(
        t.ready(0, Some(1)),
        Ready::Wait,
        "nothing is listed before a segment is complete"
    );
    feed(&mut t, 1000, 2); // segment 0 complete, segment 1 has 5 parts
    assert_eq!(t.ready(0, None), Ready::Yes);
    assert_eq!(t.ready(1, Some(4)), Ready::Yes);
    assert_eq!(t.ready(1, Some(5)), Ready::Wait);
    assert_eq!(t.ready(1, None), Ready::Wait);
    assert_eq!(t.ready(3, None), Ready::Wait);
    assert_eq!(t.ready(4, None), Ready::TooFar);
}

#[test]
fn new_init_is_a_discontinuity_with_its_own_map() {
    let mut t = timeline(10);
    t.apply(Out::Init(init(0)), 0);
    feed(&mut t, 0, 4);
    t.apply(Out::Init(init(1)), 0);
    feed(&mut t, 4000, 4);
    let p = t.media("?token=x", false, 0);
    assert_eq!(p.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    let e = &t.epoch;
    let map0 = p.find(&format!("init-{e}-0.mp4?token=x")).unwrap();
    let disc = p.find("#EXT-X-DISCONTINUITY\n").unwrap();
    let map1 = p.find(&format!("init-{e}-1.mp4?token=x")).unwrap();
    assert!(map0 < disc && disc < map1);
    // When the discontinuity leaves the window, the sequence counts it.
    feed(&mut t, 8000, 30);
    let p = t.media("", false, 0);
    assert!(p.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{p}");
    assert!(!p.contains("#EXT-X-DISCONTINUITY\n"));
}

#[test]
fn delta_update_skips_old_segments() {
    let mut t = timeline(10);
    t.apply(Out::Init(init(0)), 0);
    feed(&mut t, 0, 21);
    let full = t.media("", false, 0);
    let delta = t.media("", true, 0);
    // 10 complete segments of 2 s (20 s) + the open one; 12 s must stay listed.
    assert!(
        delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n"),
        "{delta}"
    );
    assert_eq!(
        full.matches("#EXTINF").count() - 4,
        delta.matches("#EXTINF").count()
    );
    assert!(delta.contains("#EXT-X-MAP"));
}

#[test]
fn end_drops_the_preload_hint_and_dates_are_rfc3339() {
    let mut t = timeline(5);
    t.apply(Out::Init(init(0)), 0);
    feed(&mut t, 0, 3);
    t.apply(Out::End, 9);
    let p = t.media("", false, 9);
    assert!(!p.contains("PRELOAD-HINT") && !p.contains("ENDLIST"));
    assert_eq!(t.ready(99, Some(0)), Ready::TooFar);
    assert_eq!(
        t.ready(2, Some(0)),
        Ready::Yes,
        "nothing is coming: answered at once"
    );
    assert!(t
        .media("", false, 9 + ENDLIST_AFTER_MS)
        .ends_with("#EXT-X-ENDLIST\n"));
    assert_eq!(p.matches("#EXTINF").count(), 2);
    assert_eq!(rfc3339_ms(1_796_485_565_123), "2026-12-05T15:46:05.123Z");
    assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
}

#[test]
fn a_segment_without_a_keyframe_withdraws_independent_segments() {
    let mut t = timeline(3);
    t.apply(Out::Init(init(0)), 0);
    feed(&mut t, 0, 3);
    let Out::Part(mut p) = part(3000, true) else {
        unreachable!()
    };
    p.independent = false; // a segment cut inside a long GOP
    t.apply(Out::Part(p), 0);
    assert!(!t.media("", false, 0).contains("INDEPENDENT-SEGMENTS"));
    feed(&mut t, 3200, 8); // it leaves the window
    assert!(t
        .media("", false, 0)
        .contains("#EXT-X-INDEPENDENT-SEGMENTS\n"));
}
