//! Real clients against the real binary: ffmpeg publishes, and ffmpeg, ffprobe, rtmpdump and
//! GStreamer (rtmp2src, rtmp2sink) play, record and publish. Issue requirements (a), (b),
//! (c) and (g), and the second-publisher refusal.

mod common;

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use common::players::*;
use common::publisher::{PublishSpec, Publisher};
use common::*;

/// How long players may take to leave after their publisher is killed.
const END_WITHIN: Duration = Duration::from_secs(10);

/// (a) ffprobe decodes ≥ 100 video and audio frames cleanly; (b) rtmpdump records a file
/// with H.264 and AAC; (g) when the publisher dies, an ffmpeg player and the rtmpdump
/// recorder that were playing all along exit by themselves within 10 s.
#[test]
fn ffmpeg_and_rtmpdump_play_record_and_end_with_the_publisher() {
    let server = Server::start(&[]);
    let url = server.url("live/main");
    let mut publisher = Publisher::live(&server, "live/main");

    let dump = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("rtmpdump-{}.flv", std::process::id()));
    let mut ffmpeg = spawn_quiet(Command::new("ffmpeg").args([
        "-v",
        "error",
        "-rw_timeout",
        "10000000",
        "-xerror",
        "-i",
        &url,
        "-f",
        "null",
        "-",
    ]));
    let mut rtmpdump = spawn_quiet(
        Command::new("rtmpdump")
            .args(["-q", "--live", "-r", &url, "-o"])
            .arg(&dump),
    );

    // (a) Meanwhile ffprobe decodes 5 s of the stream.
    assert_decodes(&url, 5, 100);

    // (g) The long-running players are still playing; the publisher dies.
    assert!(
        ffmpeg.0.try_wait().unwrap().is_none(),
        "ffmpeg player quit early"
    );
    assert!(
        rtmpdump.0.try_wait().unwrap().is_none(),
        "rtmpdump quit early"
    );
    publisher.kill();
    let ended = wait_all(&mut [&mut ffmpeg, &mut rtmpdump], END_WITHIN);
    for (name, end) in ["ffmpeg", "rtmpdump"].iter().zip(&ended) {
        eprintln!("{name} after publisher kill: {end:?}");
    }
    let (ff_status, ff_after) = ended[0].expect("ffmpeg player did not exit within 10 s");
    let (rd_status, rd_after) = ended[1].expect("rtmpdump did not exit within 10 s");
    let ff_err = stderr_of(&mut ffmpeg);
    assert!(
        ff_status.success() && ff_err.trim().is_empty(),
        "ffmpeg player: {ff_status} after {ff_after:?}, stderr: {ff_err}"
    );
    // 0 = complete; 2 = incomplete, which rtmpdump says of a live stream that stopped.
    assert!(
        matches!(rd_status.code(), Some(0 | 2)),
        "rtmpdump: {rd_status} after {rd_after:?}, stderr: {}",
        stderr_of(&mut rtmpdump)
    );
    assert!(
        server
            .wait_log(
                &["publish ended", "key=\"live/main\""],
                Duration::from_secs(2)
            )
            .is_some(),
        "server did not log the end of the publish"
    );

    // (b) The recording holds both tracks and more than a few seconds of them.
    let rec = ffprobe(dump.to_str().unwrap(), 0, false, &[]);
    let size = std::fs::metadata(&dump).map(|m| m.len()).unwrap_or(0);
    eprintln!("rtmpdump file: {size} bytes, {rec:?}");
    let _ = std::fs::remove_file(&dump);
    assert!(rec.status.success(), "ffprobe of the recording: {rec:?}");
    assert_eq!(rec.field("video", "codec_name"), Some("h264"), "{rec:?}");
    assert_eq!(rec.field("audio", "codec_name"), Some("aac"), "{rec:?}");
    // About 5 s were recorded; 90 packets is 3 s of either track.
    assert!(rec.count("video") >= 90, "video packets: {rec:?}");
    assert!(rec.count("audio") >= 90, "audio packets: {rec:?}");
}

/// A second publisher on a live key is refused quickly, and the first keeps streaming.
#[test]
fn second_publisher_is_refused_while_the_first_streams() {
    let media = test_media_locked();
    let server = Server::start(&[]);
    let url = server.url("live/dup");
    let mut first = Publisher::live(&server, "live/dup");

    let t = Instant::now();
    let second = run_with_timeout(
        &mut PublishSpec::new(&media, &url).once().command(),
        Duration::from_secs(15),
    );
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&second.stderr);
    eprintln!("second publisher: {} after {took:?}: {err}", second.status);
    assert!(!second.status.success(), "second publisher was accepted");
    assert!(took < Duration::from_secs(5), "refusal took {took:?}");
    assert!(
        err.contains("already being published"),
        "ffmpeg said: {err}"
    );
    assert!(server
        .wait_log(
            &["publish refused", "key=\"live/dup\""],
            Duration::from_secs(2)
        )
        .is_some());

    // A player that comes after the refusal still gets the first publisher's stream.
    let probe = ffprobe(&url, 3, true, &[]);
    eprintln!("player after refusal: {probe:?}");
    assert!(probe.clean(), "{probe:?}");
    assert!(probe.count("video") >= 60, "video frames: {probe:?}");
    assert!(probe.count("audio") > 0, "audio frames: {probe:?}");
    first.assert_running();
    assert_eq!(server.count_log(&["publish started", "live/dup"]), 1);
    assert_eq!(server.count_log(&["publish ended", "live/dup"]), 0);
}

/// (c) GStreamer both ways: rtmp2src plays an ffmpeg-published stream (video and audio
/// buffers reach the sinks, then EOS), and rtmp2sink publishes a stream that ffprobe decodes.
#[test]
fn gstreamer_plays_and_publishes() {
    let media = test_media_locked();
    let server = Server::start(&[]);
    let ff_url = server.url("live/ff");
    let gst_url = server.url("live/gst");
    let _ffmpeg = Publisher::start(&media, &ff_url);
    // flvdemux ! flvmux re-muxes the file; rtmp2sink syncs to the clock, so it is real time.
    let mut gst_pub = spawn_quiet(
        Command::new("gst-launch-1.0")
            .arg("-q")
            .arg("filesrc")
            .arg(format!("location={}", media.display()))
            .args(["!", "flvdemux", "name=d"])
            .args(["flvmux", "name=m", "streamable=true", "!", "rtmp2sink"])
            .arg(format!("location={gst_url}"))
            .args(["d.video", "!", "queue", "!", "h264parse", "!", "m."])
            .args(["d.audio", "!", "queue", "!", "aacparse", "!", "m."]),
    );
    wait_published(&server, "live/ff");
    if server
        .wait_log(
            &["publish started", "key=\"live/gst\""],
            Duration::from_secs(10),
        )
        .is_none()
    {
        gst_pub.kill();
        panic!("rtmp2sink never published: {}", stderr_of(&mut gst_pub));
    }

    // ffprobe reads the GStreamer-published stream while rtmp2src reads ffmpeg's and writes
    // each track to a file; each branch ends after exactly BUFFERS frames.
    let reader = std::thread::spawn(move || ffprobe(&gst_url, 3, true, &[]));
    const BUFFERS: u64 = 90;
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let video = tmp.join(format!("rtmp2src-{}.h264", std::process::id()));
    let audio = tmp.join(format!("rtmp2src-{}.aac", std::process::id()));
    // identity posts EOS on the buffer after its last.
    let eos_after = format!("eos-after={}", BUFFERS + 1);
    let out = run_with_timeout(
        Command::new("gst-launch-1.0")
            .arg("rtmp2src")
            .arg(format!("location={ff_url}"))
            .args(["!", "flvdemux", "name=d"])
            .args(["d.video", "!", "queue", "!", "h264parse", "!"])
            .args(["video/x-h264,stream-format=byte-stream,alignment=au", "!"])
            .args(["identity", &eos_after, "!", "filesink"])
            .arg(format!("location={}", video.display()))
            .args(["d.audio", "!", "queue", "!", "aacparse", "!"])
            .args(["audio/mpeg,stream-format=adts", "!"])
            .args(["identity", &eos_after, "!", "filesink"])
            .arg(format!("location={}", audio.display())),
        Duration::from_secs(20),
    );
    let log = String::from_utf8_lossy(&out.stdout);
    let got_v = ffprobe(video.to_str().unwrap(), 0, true, &[]);
    let got_a = ffprobe(audio.to_str().unwrap(), 0, true, &[]);
    let _ = std::fs::remove_file(&video);
    let _ = std::fs::remove_file(&audio);
    eprintln!("rtmp2src: {}; wrote {got_v:?} and {got_a:?}", out.status);
    assert!(
        out.status.success() && log.contains("Got EOS"),
        "rtmp2src pipeline failed: {log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(got_v.clean() && got_a.clean(), "{got_v:?} {got_a:?}");
    assert_eq!(got_v.field("video", "codec_name"), Some("h264"));
    assert_eq!(got_v.field("video", "width"), Some("640"));
    assert_eq!(got_v.count("video"), BUFFERS, "{got_v:?}");
    assert_eq!(got_a.field("audio", "codec_name"), Some("aac"));
    assert_eq!(got_a.count("audio"), BUFFERS, "{got_a:?}");

    let probe = reader.join().unwrap();
    eprintln!("ffprobe of rtmp2sink stream: {probe:?}");
    assert!(probe.clean(), "{probe:?}");
    assert_eq!(probe.field("video", "codec_name"), Some("h264"));
    assert_eq!(probe.field("video", "width"), Some("640"));
    assert_eq!(probe.field("audio", "codec_name"), Some("aac"));
    assert!(probe.count("video") >= 60, "video frames: {probe:?}");
    assert!(probe.count("audio") > 0, "audio frames: {probe:?}");
    assert!(
        gst_pub.0.try_wait().unwrap().is_none(),
        "rtmp2sink stopped publishing"
    );
}

/// Waits for every process at once; each one's exit status and time taken, or None.
fn wait_all(procs: &mut [&mut Proc], limit: Duration) -> Vec<Option<(ExitStatus, Duration)>> {
    let start = Instant::now();
    let mut done = vec![None; procs.len()];
    while start.elapsed() < limit && done.iter().any(Option::is_none) {
        for (p, d) in procs.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                if let Ok(Some(st)) = p.0.try_wait() {
                    *d = Some((st, start.elapsed()));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done
}
