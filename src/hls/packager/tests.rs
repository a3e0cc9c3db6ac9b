use super::*;
use crate::media::codec::tests::AVCC_640X360;

fn frame(kind: MediaKind, ts: u32, payload: Vec<u8>) -> Frame {
    Frame::new(kind, ts, Bytes::from(payload), 4096)
}

fn video_seq() -> Frame {
    let mut p = vec![0x17, 0, 0, 0, 0];
    p.extend_from_slice(AVCC_640X360);
    frame(MediaKind::Video, 0, p)
}

fn video(ts: u32, key: bool) -> Frame {
    frame(
        MediaKind::Video,
        ts,
        vec![
            if key { 0x17 } else { 0x27 },
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            2,
            0x65,
            0,
        ],
    )
}

fn audio(ts: u32) -> Frame {
    frame(MediaKind::Audio, ts, vec![0xAF, 1, 0x21, 0x00])
}

fn parts(out: &[Out]) -> Vec<&Part> {
    out.iter()
        .filter_map(|o| match o {
            Out::Part(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// 25 fps video with a keyframe every `gop` frames and AAC at 44.1 kHz, for `secs`.
fn run(p: &mut Packager, start: u32, secs: u32, gop: u32, out: &mut Vec<Out>) {
    let mut frames = Vec::new();
    for i in 0..secs * 25 {
        frames.push(video(start + i * 40, i % gop == 0));
    }
    let mut a = 0u32;
    while a * 1024 * 1000 / 44100 < secs * 1000 {
        frames.push(audio(start + a * 1024 * 1000 / 44100));
        a += 1;
    }
    frames.sort_by_key(|f| f.timestamp);
    for f in &frames {
        p.push(f, out);
    }
}

fn packager() -> (Packager, Vec<Out>) {
    let mut p = Packager::new(PackagerConfig {
        segment_ms: 2000,
        part_ms: 200,
    });
    let mut out = Vec::new();
    p.push(&video_seq(), &mut out);
    p.push(
        &frame(MediaKind::Audio, 0, vec![0xAF, 0, 0x12, 0x10]),
        &mut out,
    );
    (p, out)
}

#[test]
fn segments_start_at_keyframes_and_parts_stay_within_target() {
    let (mut p, mut out) = packager();
    run(&mut p, 0, 10, 50, &mut out);
    assert!(
        matches!(out[0], Out::Init(_)),
        "an init segment comes first"
    );
    let ps = parts(&out);
    let seg_starts: Vec<u64> = ps
        .iter()
        .filter(|p| p.starts_segment)
        .map(|p| p.start_ms)
        .collect();
    assert_eq!(seg_starts, [0, 2000, 4000, 6000, 8000]);
    for part in &ps {
        assert!(part.duration_ms <= 200, "part of {} ms", part.duration_ms);
        assert_eq!(part.independent, part.start_ms % 2000 == 0);
        assert_eq!(part.len, part.data.iter().map(|b| b.len()).sum::<usize>());
    }
    // Parts tile the timeline without gaps.
    for w in ps.windows(2) {
        assert_eq!(w[0].start_ms + w[0].duration_ms, w[1].start_ms);
    }
}

#[test]
fn long_gop_makes_long_segments_but_keyframes_only_start_them() {
    let (mut p, mut out) = packager();
    run(&mut p, 0, 9, 75, &mut out); // keyframe every 3 s
    let starts: Vec<u64> = parts(&out)
        .iter()
        .filter(|p| p.starts_segment)
        .map(|p| p.start_ms)
        .collect();
    assert_eq!(starts, [0, 3000, 6000]);
    assert_eq!(
        p.target_secs(),
        3,
        "the first segment sets the target duration"
    );
}

#[test]
fn target_duration_is_fixed_by_the_first_segment_and_longer_gops_are_cut() {
    let (mut p, mut out) = packager();
    // 25 fps, keyframes at 0, 2, 7 and 12 s (a 2 s GOP, then 5 s ones), for 14 s.
    let keys = [0, 50, 175, 300];
    let mut frames: Vec<Frame> = (0..350u32)
        .map(|i| video(i * 40, keys.contains(&i)))
        .collect();
    frames.extend((0..603u32).map(|a| audio(a * 1024 * 1000 / 44100)));
    frames.sort_by_key(|f| f.timestamp);
    for f in &frames {
        p.push(f, &mut out);
    }
    p.on_unpublish(&mut out);
    let ps = parts(&out);
    let mut segments: Vec<(u64, u64, bool)> = Vec::new(); // (start, duration, independent)
    for part in &ps {
        if part.starts_segment {
            segments.push((part.start_ms, 0, part.independent));
        }
        if let Some(s) = segments.last_mut() {
            s.1 += part.duration_ms;
        }
    }
    assert_eq!(p.target_secs(), 2);
    assert!(ps.iter().skip(10).all(|p| p.target_secs == 2));
    for (start, dur, _) in &segments {
        assert!((dur + 500) / 1000 <= 2, "segment at {start} lasts {dur} ms");
    }
    // Keyframes still start segments once the target is reached, and only they make a
    // segment independent.
    for (start, _, independent) in &segments {
        let key = [0, 2000, 7000, 12000].contains(start);
        assert_eq!(*independent, key, "segment at {start}");
    }
    let starts: Vec<u64> = segments.iter().map(|s| s.0).collect();
    assert!(starts.starts_with(&[0, 2000]), "{starts:?}");
    assert!(
        starts.contains(&7000) && starts.contains(&12000),
        "{starts:?}"
    );
    assert!(
        starts.len() >= 7,
        "forced cuts inside the 5 s GOPs: {starts:?}"
    );
}

#[test]
fn new_sequence_header_makes_a_new_init_at_the_next_keyframe() {
    let (mut p, mut out) = packager();
    run(&mut p, 0, 3, 50, &mut out);
    let mut other = vec![0x17, 0, 0, 0, 0];
    other.extend_from_slice(crate::media::codec::tests::AVCC_BASELINE);
    out.clear();
    // Same record again: nothing new.
    p.push(&video_seq(), &mut out);
    run(&mut p, 3000, 1, 50, &mut out);
    assert!(!out.iter().any(|o| matches!(o, Out::Init(_))));
    p.push(&frame(MediaKind::Video, 4000, other), &mut out);
    run(&mut p, 4000, 2, 50, &mut out);
    let inits = out.iter().filter(|o| matches!(o, Out::Init(_))).count();
    assert_eq!(inits, 1);
    assert_eq!(p.init().unwrap().id, 1);
}

#[test]
fn audio_only_streams_are_packaged_after_a_second() {
    let mut p = Packager::new(PackagerConfig {
        segment_ms: 2000,
        part_ms: 200,
    });
    let mut out = Vec::new();
    p.push(
        &frame(MediaKind::Audio, 0, vec![0xAF, 0, 0x12, 0x10]),
        &mut out,
    );
    for i in 0..300u32 {
        p.push(&audio(i * 1024 * 1000 / 44100), &mut out);
    }
    let init = p.init().expect("audio-only init");
    assert!(init.tracks.video.is_none());
    let ps = parts(&out);
    assert!(ps.len() > 20);
    let target = part_target_ms(200);
    for (i, p) in ps.iter().enumerate() {
        let last_of_segment = ps.get(i + 1).is_none_or(|n| n.starts_segment);
        assert!(p.independent && p.duration_ms <= target, "{p:?}");
        assert!(
            last_of_segment || p.duration_ms * 100 >= target * 85,
            "{p:?}"
        );
    }
    assert!(ps.iter().filter(|p| p.starts_segment).count() >= 2);
}

#[test]
fn timestamps_unwrap_past_32_bits() {
    let (mut p, mut out) = packager();
    run(&mut p, u32::MAX - 999, 1, 25, &mut out);
    out.clear();
    for i in 0..50u32 {
        p.push(
            &video(i.wrapping_mul(40).wrapping_add(1), i % 25 == 0),
            &mut out,
        );
    }
    let last = parts(&out).last().unwrap().start_ms;
    assert!(last > u64::from(u32::MAX), "{last}");
}

#[test]
fn unpublish_ends_the_segment_and_republish_starts_a_new_one() {
    let (mut p, mut out) = packager();
    run(&mut p, 0, 3, 50, &mut out);
    out.clear();
    p.on_unpublish(&mut out);
    assert!(matches!(out.last(), Some(Out::End)));
    assert!(
        !parts(&out).is_empty(),
        "the pending frames make a last part"
    );
    out.clear();
    p.on_publish();
    run(&mut p, 3001, 1, 50, &mut out);
    assert!(parts(&out)[0].starts_segment);
    assert!(
        !out.iter().any(|o| matches!(o, Out::Init(_))),
        "same codecs, same init"
    );
}
