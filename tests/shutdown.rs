//! Graceful shutdown of the real binary on loopback. SIGTERM drains: no new connections,
//! every player told the stream ended (UnpublishNotify) and closed cleanly, every push
//! unpublished at its destination (FCUnpublish + deleteStream, not a dropped connection),
//! every recording finalized, exit 0 within `--shutdown-grace-secs`. A second signal
//! during a drain that cannot finish ends the process at once.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::players::span_field;
use common::recording::*;
use common::rtmp_client::RtmpClient;
use common::watcher::Watcher;
use common::*;
use rtmp_edge::media::flv;

const UNPUBLISH_NOTIFY: &str = "NetStream.Play.UnpublishNotify";

/// One test at a time: the drain test's timings mean little while the other floods a
/// server on the same two cores.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Collects every check's outcome, so one run reports all of the spec that fails rather
/// than only the first item.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        eprintln!("{} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            self.0.push(what);
        }
    }

    fn assert_all(self) {
        assert!(
            self.0.is_empty(),
            "{} check(s) failed:\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

/// The value of `name=` in a text log line. tracing quotes a string field
/// (`reason="deleteStream"`) but not a Display one (`reason=deleteStream`): both read the
/// same here.
fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=");
    let rest = &line[line.find(&pat)? + pat.len()..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split_whitespace().next(),
    }
}

/// What became of a fresh connection to the RTMP port.
// The payloads are only read through Debug, in failure messages.
#[allow(dead_code)]
#[derive(Debug)]
enum Admission {
    Refused,
    /// Accepted by the kernel, then closed (EOF or reset) without a byte of handshake.
    ClosedUnanswered,
    /// S0/S1 came back: the server still takes connections.
    Answered(usize),
    /// Neither an answer nor a close within the probe's wait.
    Hung,
    ConnectFailed(io::ErrorKind),
}

impl Admission {
    fn turned_away(&self) -> bool {
        matches!(self, Admission::Refused | Admission::ClosedUnanswered)
    }
}

/// Connects and sends C0+C1, then waits up to 500 ms for S0/S1 or a close.
fn try_admission(addr: SocketAddr) -> Admission {
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Admission::Refused,
        Err(e) => return Admission::ConnectFailed(e.kind()),
    };
    let mut c0c1 = vec![0u8; 1 + 1536];
    c0c1[0] = 3;
    if s.write_all(&c0c1).is_err() {
        return Admission::ClosedUnanswered;
    }
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => Admission::ClosedUnanswered,
        Ok(n) => Admission::Answered(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Admission::Hung
        }
        Err(_) => Admission::ClosedUnanswered,
    }
}

/// Probes the RTMP port until a connection is turned away (Ok: how long after `since`)
/// or no probe started before `deadline` was (Err: what each probe got).
fn wait_turned_away(
    addr: SocketAddr,
    since: Instant,
    deadline: Instant,
) -> Result<Duration, Vec<Admission>> {
    let mut seen = Vec::new();
    loop {
        let a = try_admission(addr);
        if a.turned_away() {
            return Ok(since.elapsed());
        }
        seen.push(a);
        if Instant::now() >= deadline {
            return Err(seen);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The finalization checks of tests/record.rs, as soft checks: one file named after the
/// stream, onMetaData patched (filesize is the file's length, duration the last tag's
/// timestamp), its length close to `recorded`, and ffprobe reading H.264 and AAC.
fn check_recording(checks: &mut Checks, dir: &Path, prefix: &str, recorded: Duration) {
    let files = recordings(dir);
    let named: Vec<_> = files
        .iter()
        .filter(|f| {
            let n = f.file_name().unwrap().to_string_lossy();
            n.starts_with(&format!("{prefix}_")) && n.ends_with(".flv")
        })
        .collect();
    checks.check(
        files.len() == 1 && named.len() == 1,
        format!("one recording {prefix}_*.flv in the record dir: {files:?}"),
    );
    let Some(file) = named.first() else { return };
    match try_read_recording(file) {
        Err(e) => checks.check(false, format!("recording readable as FLV: {e}")),
        Ok((tags, duration, filesize, len)) => {
            checks.check(
                filesize == len as f64,
                format!("onMetaData filesize {filesize} is the file's length {len}"),
            );
            let last_ms = tags
                .iter()
                .filter(|t| t.tag_type != flv::TAG_SCRIPT)
                .map(|t| t.timestamp)
                .max()
                .unwrap_or(0);
            let last = f64::from(last_ms) / 1000.0;
            checks.check(
                (duration - last).abs() < 0.5,
                format!("onMetaData duration {duration:.3} s is the last tag's time {last:.3} s"),
            );
            let want = recorded.as_secs_f64();
            // The publisher may run on for part of the drain before it is closed.
            checks.check(
                last > want - 1.0 && last < want + 3.0,
                format!("recording spans {last:.3} s, about the {want:.3} s recorded"),
            );
            let probe = probe_file(file);
            let h264_aac =
                probe.codecs.iter().any(|c| c == "h264") && probe.codecs.iter().any(|c| c == "aac");
            checks.check(
                h264_aac,
                format!("ffprobe reads h264 + aac: {:?}", probe.codecs),
            );
            checks.check(
                (probe.duration - duration).abs() < 1.0,
                format!(
                    "ffprobe format duration {:.3} s matches the metadata",
                    probe.duration
                ),
            );
        }
    }
}

/// ffmpeg → A (recording, pushing to B) with a player on A and one on B; SIGTERM A.
/// A drains: its player gets UnpublishNotify and then a clean EOF, B sees the push end
/// with deleteStream (not a dropped connection) and keeps its own player told, the
/// recording is finalized, and A exits 0 within its 10 s grace period.
#[test]
fn sigterm_drains_players_pushes_and_recordings_then_exits_zero() {
    let _serial = serial();
    let dir = fresh_dir("shutdown-drain");
    let b = Server::start(&[]);
    let push_url = b.url("live");
    let mut a = Server::start(&[
        "--record",
        "all",
        "--record-dir",
        dir.to_str().unwrap(),
        "--push",
        &push_url,
        "--shutdown-grace-secs",
        "10",
    ]);
    let b_player = Watcher::start(b.addr, "live", "x");
    let _publisher = common::publisher::Publisher::start(&test_media_locked(), &a.url("live/x"));
    wait_published(&a, "live/x");
    let a_player = Watcher::start(a.addr, "live", "x");
    wait_published(&b, "live/x");
    assert!(
        a_player.wait_media(a_player.started, 30, Duration::from_secs(10)),
        "A's player got no media; codes {:?}",
        a_player.codes()
    );
    assert!(
        b_player.wait_media(b_player.started, 30, Duration::from_secs(10)),
        "B's player got no media through the push; codes {:?}",
        b_player.codes()
    );
    a.wait_log(
        &["recording started", "stream=live/x"],
        Duration::from_secs(5),
    )
    .expect("A never started recording live/x");
    let rec_started = Instant::now();
    // A few seconds of recording, so a duration left unpatched cannot look right.
    thread::sleep(Duration::from_secs(4));

    let sig = Instant::now();
    let recorded = sig - rec_started;
    a.signal("TERM");
    let status = a.wait_exit(Duration::from_secs(12));
    let exited_after = sig.elapsed();
    let mut checks = Checks::default();
    checks.check(
        status.is_some_and(|s| s.success()),
        format!("A exits with status 0 within 12 s of SIGTERM: {status:?} after {exited_after:?}"),
    );

    let ended = a_player.wait_ended(Duration::from_secs(3));
    let codes = a_player.codes_since(sig);
    checks.check(
        codes.iter().any(|c| c == UNPUBLISH_NOTIFY),
        format!("A's player got {UNPUBLISH_NOTIFY} after SIGTERM: {codes:?}"),
    );
    checks.check(
        ended.is_some_and(|e| e.error.is_none()),
        format!("A's player then saw the connection end with EOF, not a reset: {ended:?}"),
    );

    let b_ended = b.wait_log(&["publish ended", "key=\"live/x\""], Duration::from_secs(5));
    let reason = b_ended.as_deref().and_then(|l| log_field(l, "reason"));
    checks.check(
        reason == Some("deleteStream"),
        format!(
            "B logged `publish ended` for live/x with reason deleteStream (reason {reason:?}): \
             {b_ended:?}"
        ),
    );
    checks.check(
        b_player.wait_code(UNPUBLISH_NOTIFY, sig, Duration::from_secs(3)),
        format!(
            "B's player got {UNPUBLISH_NOTIFY}: {:?}",
            b_player.codes_since(sig)
        ),
    );
    checks.check(
        b_player.ended().is_none(),
        "B's player stays connected (only A shut down)",
    );

    check_recording(&mut checks, &dir, "live_x", recorded);
    if !checks.0.is_empty() {
        eprintln!("A's log, last lines:\n{}", a.log_tail(25));
        eprintln!("B's log, last lines:\n{}", b.log_tail(10));
    }
    checks.assert_all();
}

/// ffmpeg publishing looped media at 40x real time, for a player that never reads to
/// fall behind within seconds.
fn ffmpeg_flood(file: &Path, url: &str) -> Proc {
    Proc::spawn(
        Command::new("ffmpeg")
            .args(["-v", "error", "-readrate", "40", "-stream_loop", "-1", "-i"])
            .arg(file)
            .args(["-c", "copy", "-f", "flv", url]),
    )
}

/// Frames A has dropped for lagging viewers, from its latest per-shard stats lines.
fn viewer_drops(a: &Server) -> u64 {
    a.log_lines()
        .iter()
        .filter(|l| l.contains("shard stats"))
        .map(|l| {
            span_field::<u64>(l, "drops_queue_bytes=").unwrap_or(0)
                + span_field::<u64>(l, "drops_queue_age=").unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// A drain that cannot finish: a player that played and then never reads, its socket and
/// queue full, and a push destination that accepts TCP and never answers. After SIGTERM
/// A turns new connections away within a second and is still draining (30 s grace); a
/// second SIGTERM ends it within 2 s.
#[test]
fn second_sigterm_during_a_stuck_drain_exits_at_once() {
    let _serial = serial();
    // The kernel completes connections into the backlog; nobody ever accepts or reads.
    let black_hole = TcpListener::bind("127.0.0.1:0").expect("bind");
    let push_url = format!("rtmp://{}/live", black_hole.local_addr().unwrap());
    let mut a = Server::start(&[
        "--push",
        &push_url,
        "--shutdown-grace-secs",
        "30",
        // A smaller queue fills sooner; the stuck player must not be dropped by the
        // slow-viewer or write-stall policies before the test is done with it.
        "--viewer-queue-bytes",
        "1048576",
        "--viewer-behind-secs",
        "300",
        "--write-timeout-secs",
        "300",
        // Drop counters in the log every second show when the player's socket is full.
        "--stats-interval-secs",
        "1",
    ]);
    let _publisher = ffmpeg_flood(&test_media_locked(), &a.url("live/flood"));
    wait_published(&a, "live/flood");
    let (stuck, _) = RtmpClient::player(a.addr, "live", "flood").expect("stuck player play");
    let t_play = Instant::now();
    while viewer_drops(&a) == 0 {
        assert!(
            t_play.elapsed() < Duration::from_secs(20),
            "the stuck player never fell behind; A:\n{}",
            a.log_tail(20)
        );
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "stuck player behind {:?} after play ({} frames dropped)",
        t_play.elapsed(),
        viewer_drops(&a)
    );
    assert!(a.is_running(), "A exited before any signal");

    let first = Instant::now();
    a.signal("TERM");
    let mut checks = Checks::default();
    let admission = wait_turned_away(a.addr, first, first + Duration::from_secs(1));
    checks.check(
        admission.is_ok(),
        format!("a new connection is refused or closed unanswered within ~1 s: {admission:?}"),
    );
    thread::sleep((first + Duration::from_millis(1500)).saturating_duration_since(Instant::now()));
    let draining = a.is_running();
    checks.check(
        draining,
        format!(
            "A is still draining {:?} after SIGTERM (stuck player, 30 s grace)",
            first.elapsed()
        ),
    );

    if draining {
        let second = Instant::now();
        a.signal("TERM");
        let status = a.wait_exit(Duration::from_secs(2));
        checks.check(
            status.is_some(),
            format!(
                "A exits within 2 s of the second SIGTERM: {status:?} after {:?}",
                second.elapsed()
            ),
        );
    } else {
        checks.check(
            false,
            "a second SIGTERM during the drain (A had already exited)",
        );
    }
    if !checks.0.is_empty() {
        eprintln!("A's log, last lines:\n{}", a.log_tail(25));
    }
    drop(stuck);
    checks.assert_all();
}

/// Push destinations that are not live when SIGTERM comes (one handshaking with a peer that
/// never answers, one backing off from a closed port) end at once: no new session starts
/// during the drain, and A exits 0 well inside the grace period.
#[test]
fn sigterm_ends_pushes_that_are_not_live_without_starting_new_ones() {
    let _serial = serial();
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("rtmp://{}/live", silent.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        silent.set_nonblocking(true).unwrap();
        thread::spawn(move || {
            let mut held = Vec::new();
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                match silent.accept() {
                    Ok((s, _)) => {
                        accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        held.push(s);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_url = format!("rtmp://{}/live", closed.local_addr().unwrap());
    drop(closed);
    let mut a = Server::start(&[
        "--push",
        &silent_url,
        "--push",
        &closed_url,
        "--shutdown-grace-secs",
        "10",
    ]);
    let _publisher =
        common::publisher::Publisher::start(&test_media_locked(), &a.url("live/quiet"));
    wait_published(&a, "live/quiet");
    let end = Instant::now() + Duration::from_secs(10);
    while accepted.load(std::sync::atomic::Ordering::SeqCst) == 0
        || a.count_log(&["push destination failed"]) == 0
    {
        assert!(
            Instant::now() < end,
            "pushes never tried; A:\n{}",
            a.log_tail(20)
        );
        thread::sleep(Duration::from_millis(50));
    }
    let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
    let sent = Instant::now();
    a.signal("TERM");
    let status = a.wait_exit(Duration::from_secs(3));
    assert!(
        status.is_some_and(|s| s.success()),
        "A exits 0 within 3 s: {status:?} after {:?}; A:\n{}",
        sent.elapsed(),
        a.log_tail(25)
    );
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "no push connection was opened after SIGTERM"
    );
    let shutting = a
        .log_lines()
        .iter()
        .position(|l| l.contains("shutting down"))
        .expect("shutdown logged");
    let connecting_after = a.log_lines()[shutting..]
        .iter()
        .filter(|l| l.contains("push destination state") && l.contains("connecting"))
        .count();
    assert_eq!(
        connecting_after, 0,
        "no push session started during the drain"
    );
}
