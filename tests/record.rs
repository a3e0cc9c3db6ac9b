//! FLV recording with the real binary and ffmpeg/ffprobe on loopback: a finished 20 s
//! stream (name, codecs, duration, patched metadata), SIGTERM mid-stream (exit 0, file
//! finalized), an unwritable directory (error logged, live relay unaffected) and a
//! config-file override that keeps one stream out of the recordings.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::publisher::{PublishSpec, Publisher};
use common::recording::*;
use common::*;
use rtmp_edge::media::flv;
use rtmp_edge::record::Civil;

/// The test media: exactly 20 s, 1 s GOP.
fn media20() -> PathBuf {
    media("rec20", "640x360", 20, 30)
}

/// `{prefix}_{YYYYMMDD}_{HHMMSS}.flv` with a stamp from the last `within` seconds (UTC).
fn assert_name(path: &Path, prefix: &str, within: u64) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ok = (0..=within as i64)
        .any(|ago| name == format!("{prefix}_{}.flv", Civil::from_unix(now - ago).stamp()));
    assert!(
        ok,
        "{name} is not {prefix}_YYYYMMDD_HHMMSS.flv of the last {within} s"
    );
}

#[test]
fn finished_stream_is_recorded_with_patched_metadata() {
    let dir = fresh_dir("finished");
    let file = media20();
    let server = Server::start(&["--record", "all", "--record-dir", dir.to_str().unwrap()]);
    let started = Instant::now();
    let mut publisher = PublishSpec::new(&file, &server.url("live/rec1"))
        .once()
        .start();
    let st = publisher
        .wait_timeout(Duration::from_secs(40))
        .expect("publisher of a 20 s file did not end");
    assert!(st.success(), "publisher failed: {st:?}");
    let published_for = started.elapsed();
    server
        .wait_log(
            &["recording finished", "stream=live/rec1"],
            Duration::from_secs(10),
        )
        .expect("recording was not finalized after unpublish");

    let files = recordings(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_name(&files[0], "live_rec1", published_for.as_secs() + 30);

    let probe = probe_file(&files[0]);
    let format_duration = probe.duration;
    assert_h264_aac(&probe);
    assert!(probe.stderr.trim().is_empty(), "ffprobe: {}", probe.stderr);
    assert!(
        (format_duration - 20.0).abs() < 1.0,
        "format duration {format_duration}"
    );

    let (tags, duration, filesize, len) = read_recording(&files[0]);
    assert_eq!(
        filesize, len as f64,
        "metadata filesize is the file's length"
    );
    assert!(
        (duration - 20.0).abs() < 1.0,
        "metadata duration {duration}"
    );
    // Sequence headers, then a keyframe, from timestamp 0.
    let media: Vec<&flv::FlvTag> = tags.iter().filter(|t| t.tag_type != 18).collect();
    assert_eq!(media[0].timestamp, 0);
    let first_video = media.iter().find(|t| t.tag_type == flv::TAG_VIDEO).unwrap();
    let first_audio = media.iter().find(|t| t.tag_type == flv::TAG_AUDIO).unwrap();
    assert_eq!(
        &first_video.data[..2],
        &[0x17, 0],
        "AVC sequence header first"
    );
    assert_eq!(
        &first_audio.data[..2],
        &[0xAF, 0],
        "AAC sequence header first"
    );
    let first_frame = media
        .iter()
        .find(|t| t.tag_type == flv::TAG_VIDEO && t.data[1] == 1)
        .unwrap();
    assert_eq!(
        first_frame.data[0] >> 4,
        1,
        "first video frame is a keyframe"
    );

    // Every frame decodes.
    let decoded = players::ffprobe(files[0].to_str().unwrap(), 0, true, &[]);
    assert!(decoded.clean(), "decode: {}", decoded.stderr);
    let frames = decoded.count("video");
    assert!((590..=601).contains(&frames), "{frames} video frames");
    eprintln!(
        "finished: {} bytes, format duration {:.3} s, metadata duration {duration:.3} s, \
         {frames} video frames, published for {:.1} s",
        len,
        format_duration,
        published_for.as_secs_f64()
    );
}

#[test]
fn sigterm_finalizes_the_recording_and_exits_zero() {
    let dir = fresh_dir("sigterm");
    let file = media20();
    let mut server = Server::start(&["--record", "all", "--record-dir", dir.to_str().unwrap()]);
    let _publisher = PublishSpec::new(&file, &server.url("live/rec2"))
        .once()
        .start();
    server
        .wait_log(
            &["recording started", "stream=live/rec2"],
            Duration::from_secs(10),
        )
        .expect("recording never started");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let recorded = t0.elapsed();
    server.signal("TERM");
    let t_sig = Instant::now();
    let status = server
        .wait_exit(Duration::from_secs(8))
        .expect("server still running 8 s after SIGTERM");
    let exit_after = t_sig.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        exit_after < Duration::from_secs(5),
        "exit took {exit_after:?}"
    );

    let files = recordings(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_name(&files[0], "live_rec2", 30);
    let probe = probe_file(&files[0]);
    let format_duration = probe.duration;
    assert_h264_aac(&probe);
    let want = recorded.as_secs_f64();
    assert!(
        (format_duration - want).abs() < 1.0,
        "format duration {format_duration} vs {want:.3} s recorded"
    );
    let (_, duration, filesize, len) = read_recording(&files[0]);
    assert_eq!(filesize, len as f64);
    assert!(
        (duration - want).abs() < 1.0,
        "metadata duration {duration}"
    );
    eprintln!(
        "sigterm: recorded {want:.3} s, file duration {:.3} s (metadata {duration:.3}), \
         {len} bytes, exit {status:?} after {exit_after:?}",
        format_duration
    );
}

#[test]
fn unwritable_record_dir_logs_and_live_stream_still_plays() {
    let dir = fresh_dir("unwritable");
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, b"a regular file").unwrap();
    let record_dir = blocker.join("recordings");
    let server = Server::start(&[
        "--record",
        "all",
        "--record-dir",
        record_dir.to_str().unwrap(),
    ]);
    let _publisher = Publisher::start(&media20(), &server.url("live/rec3"));
    wait_published(&server, "live/rec3");
    let line = server
        .wait_log(
            &["recording failed", "stream=live/rec3"],
            Duration::from_secs(10),
        )
        .expect("no recording error logged");
    assert!(line.contains("ERROR"), "{line}");
    let probe = players::ffprobe(&server.url("live/rec3"), 3, true, &[]);
    assert_eq!(
        probe.field("video", "codec_name"),
        Some("h264"),
        "{probe:?}"
    );
    assert_eq!(probe.field("audio", "codec_name"), Some("aac"), "{probe:?}");
    assert!(probe.count("video") >= 60, "{probe:?}");
    assert!(!blocker.join("recordings").exists());
    eprintln!(
        "unwritable: {} video / {} audio frames decoded live; log: {line}",
        probe.count("video"),
        probe.count("audio")
    );
}

#[test]
fn config_override_keeps_one_stream_out() {
    let dir = fresh_dir("override");
    let rec_dir = dir.join("rec");
    let config = dir.join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[record]\ndir = {:?}\nmode = \"all\"\n\n[[record.streams]]\nmatch = \"live/private-*\"\nrecord = false\n",
            rec_dir.to_str().unwrap()
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let file = media20();
    let once_3s = |key: &str| {
        PublishSpec::new(&file, &server.url(key))
            .once()
            .limit_secs(3)
            .start()
    };
    let mut private = once_3s("live/private-cam");
    let mut public = once_3s("live/public-cam");
    for p in [&mut private, &mut public] {
        let st = p
            .wait_timeout(Duration::from_secs(15))
            .expect("publisher hung");
        assert!(st.success(), "publisher failed: {st:?}");
    }
    server
        .wait_log(
            &["recording finished", "stream=live/public-cam"],
            Duration::from_secs(10),
        )
        .expect("public stream not recorded");
    wait_published(&server, "live/private-cam");
    let files = recordings(&rec_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_name(&files[0], "live_public-cam", 60);
    assert_eq!(
        server.count_log(&["stream=live/private-cam", "recording"]),
        0
    );
    let probe = probe_file(&files[0]);
    let format_duration = probe.duration;
    assert_h264_aac(&probe);
    assert!((format_duration - 3.0).abs() < 1.0, "{format_duration}");
    eprintln!(
        "override: only {:?}, {format_duration:.3} s",
        files[0].file_name().unwrap()
    );
}
