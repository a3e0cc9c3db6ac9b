//! Shared harness for the integration tests: the real binary on a loopback port, test media
//! made once with ffmpeg, and helpers to run real clients with time limits.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running rtmp-edge; killed on drop. Its log lines are collected for assertions.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        Self::start_on("127.0.0.1:0", extra)
    }

    /// Like `start`, with `env` set for the server (credentials a target reads).
    pub fn start_env(env: &[(&str, &str)], extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtmp-edge"));
        cmd.envs(env.iter().copied());
        Self::spawn(cmd, "127.0.0.1:0", extra)
    }

    pub fn url(&self, path: &str) -> String {
        format!("rtmp://{}/{}", self.addr, path)
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The last `n` log lines, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let lines = self.log_lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until a log line contains every one of `needles`; returns it.
    pub fn wait_log(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(l) = self
                .log_lines()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return Some(l);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether a line with all `needles` is logged within 5 s: the server may log a refusal
    /// just after its peer saw the connection close.
    pub fn logged(&self, needles: &[&str]) -> bool {
        self.wait_log(needles, Duration::from_secs(5)).is_some()
    }

    /// The newest log line with all `needles` (e.g. the latest `shard stats` summary).
    pub fn last_log(&self, needles: &[&str]) -> Option<String> {
        self.log_lines()
            .into_iter()
            .rev()
            .find(|l| needles.iter().all(|n| l.contains(n)))
    }

    pub fn count_log(&self, needles: &[&str]) -> usize {
        self.log_lines()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size of the server process, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal by name (`TERM`, `INT`) with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -s {sig} failed");
    }

    /// Waits up to `timeout` for the server to exit; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, timeout)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed on drop (players, rtmpdump, GStreamer).
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
        )
    }

    /// Waits for exit up to `timeout`; None if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.0, timeout)
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits up to `timeout` for `child` to exit; None if it is still running.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command to completion, killing it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: sending SIGKILL to a pid we spawned.
        unsafe {
            libc_kill(pid as i32, 9);
        }
    });
    let out = child.wait_with_output().expect("wait");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    out
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn media_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("media");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A pre-made H.264/AAC FLV (publishing it with `-c copy` costs no encoding). Made once
/// per target dir; concurrent makers write to a temp name and rename.
pub fn media(name: &str, size: &str, seconds: u32, gop: u32) -> PathBuf {
    media_with(name, size, seconds, &["-g", &gop.to_string()])
}

/// A test file like `media`, with `keys` as ffmpeg's x264 keyframe options.
pub fn media_with(name: &str, size: &str, seconds: u32, keys: &[&str]) -> PathBuf {
    media_from(name, "testsrc2", "sine=frequency=1000", size, seconds, keys)
}

/// A slate for channel tests: colour bars and a lower tone, otherwise encoded exactly like
/// `media` (so its decoder configuration matches the test stream's at the same size).
pub fn slate_media(name: &str, size: &str, seconds: u32) -> PathBuf {
    media_from(
        name,
        "smptebars",
        "sine=frequency=500",
        size,
        seconds,
        &["-g", "30"],
    )
}

fn media_from(
    name: &str,
    video: &str,
    audio: &str,
    size: &str,
    seconds: u32,
    keys: &[&str],
) -> PathBuf {
    let path = media_dir().join(format!("{name}.flv"));
    if path.exists() {
        return path;
    }
    // Unique per process and thread: test threads of one binary may race to make it.
    let tmp = media_dir().join(format!(
        "{name}.{}.{:?}.tmp.flv",
        std::process::id(),
        std::thread::current().id()
    ));
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("{video}=size={size}:rate=30"))
        .args(["-f", "lavfi", "-i", &format!("{audio}:sample_rate=44100")])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .args(keys)
        .args(["-sc_threshold", "0", "-pix_fmt", "yuv420p", "-b:v", "600k"])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv"])
        .arg(&tmp)
        .status()
        .expect("ffmpeg must be installed (run scripts/test.sh)");
    assert!(st.success(), "ffmpeg failed to make test media");
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// The standard test stream: 640x360, 30 fps, 1 s GOP, 30 s.
pub fn test_media() -> PathBuf {
    media("std360", "640x360", 30, 30)
}

/// Waits until the server logs that `key` is being published.
pub fn wait_published(server: &Server, key: &str) {
    server
        .wait_log(
            &["publish started", &format!("key=\"{key}\"")],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("{key} was never published"));
}

/// Whether the server closed `s` (EOF or reset) within `within`.
pub fn closed_by_server(s: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        // A timeout means still open; anything else (a reset) is a close.
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

pub mod rtmp_client;

/// `test_media()`, made at most once at a time per test binary: `media()` names its temp
/// file by process id only, so two test threads of one binary making it at once collide.
pub fn test_media_locked() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    test_media()
}

pub mod fakegcs;
pub mod hls;
pub mod manifests;
pub mod netns;
pub mod nginx;
pub mod players;
pub mod publisher;
pub mod recording;
pub mod seaweed;
pub mod timeline;
pub mod tls;
pub mod watcher;

impl Server {
    /// Like `start`, but listening on `listen` (e.g. a port a killed server used, to
    /// restart it in place). `extra` must not contain `--listen`.
    pub fn start_on(listen: &str, extra: &[&str]) -> Server {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_rtmp-edge")), listen, extra)
    }

    /// Like `start_on`, inside the network namespace `ns` (see `netns`).
    pub fn start_in_netns(ns: &str, listen: &str, extra: &[&str]) -> Server {
        let cmd = netns::exec_in(ns, Command::new(env!("CARGO_BIN_EXE_rtmp-edge")));
        Self::spawn(cmd, listen, extra)
    }

    fn spawn(mut cmd: Command, listen: &str, extra: &[&str]) -> Server {
        // The media listener's default port would clash between servers run in parallel.
        if !extra.contains(&"--http-media") {
            cmd.args(["--http-media", "off"]);
        }
        let mut child = cmd
            .args([
                "--listen",
                listen,
                "--log-level",
                "debug",
                "--http",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rtmp-edge");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let rtmp_line = !line.contains("http listening");
                if let Some(rest) = line.split("listening addr=").nth(1).filter(|_| rtmp_line) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                if std::env::var_os("RTMP_EDGE_TEST_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server on {listen} did not report its listen address: {:?}",
                    log.lock().unwrap()
                );
            }
        };
        Server { addr, child, log }
    }
}

impl Server {
    /// The media HTTP listener's address (a server started with `--http-media`).
    pub fn media_addr(&self) -> SocketAddr {
        let line = self
            .wait_log(&["media http listening", "addr="], Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no `media http listening` line: {:#?}", self.log_lines()));
        line.split("addr=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.trim_matches('"').parse().ok())
            .unwrap_or_else(|| panic!("unparsable media addr in {line:?}"))
    }

    /// The RTMPS listener's address (from the `rtmps listening tls_addr=` log line of a
    /// server started with `--listen-tls`), waiting up to 5 s for it.
    pub fn tls_addr(&self) -> SocketAddr {
        let line = self
            .wait_log(&["rtmps listening", "tls_addr="], Duration::from_secs(5))
            .unwrap_or_else(|| {
                panic!(
                    "no `rtmps listening tls_addr=` line: {:#?}",
                    self.log_lines()
                )
            });
        line.split("tls_addr=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(|a| a.trim_matches('"'))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unparsable tls_addr in {line:?}"))
    }

    /// `rtmps://IP:TLSPORT/<path>`.
    pub fn tls_url(&self, path: &str) -> String {
        format!("rtmps://{}/{}", self.tls_addr(), path)
    }
}

impl Server {
    /// The control listener's address (from its "http listening" log line).
    pub fn http_addr(&self) -> SocketAddr {
        let line = self
            .wait_log(&["http listening addr="], Duration::from_secs(5))
            .expect("no http listening line");
        line.split("http listening addr=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .expect("http address")
    }

    /// A plain HTTP/1.1 GET on the control listener: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.http("GET", path, &[], None)
    }

    /// Any HTTP/1.1 request on the control listener, with extra headers (`("Authorization",
    /// "Bearer x")`) and an optional JSON body: (status code, body).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        json: Option<&str>,
    ) -> (u16, String) {
        http_request(self.http_addr(), method, path, headers, json)
    }
}

/// One HTTP/1.1 request with `Connection: close`; a chunked body is decoded.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    json: Option<&str>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("connect to control listener");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    match json {
        Some(body) => req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )),
        None => req.push_str("\r\n"),
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

/// Decodes a chunked transfer-encoded body.
pub fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// `promtool check metrics` on a scrape: the exposition format and naming lints must pass.
/// scripts/test.sh installs promtool (Debian's prometheus package).
pub fn assert_promtool_accepts(scrape: &str) {
    use std::io::Write;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (scripts/test.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A plain publisher of synthetic H.264-shaped frames at ~12 Mbit/s for `secs`, enough to
/// fill a stuck player's socket buffers within a couple of seconds.
pub fn flood_publisher(
    addr: std::net::SocketAddr,
    name: &'static str,
    secs: u32,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut p) = rtmp_client::RtmpClient::connect(addr, "live") else {
            return;
        };
        if p.create_stream().is_err() || p.publish(name).is_err() {
            return;
        }
        let _ = p.send_media(9, 0, &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F]);
        let start = Instant::now();
        for i in 0u32..(secs * 30) {
            let ts = i * 33;
            let mut frame = vec![0u8; if i % 30 == 0 { 150_000 } else { 45_000 }];
            frame[..2].copy_from_slice(if i % 30 == 0 { &[0x17, 1] } else { &[0x27, 1] });
            if p.send_media(9, ts, &frame).is_err() {
                return;
            }
            let due = start + Duration::from_millis(u64::from(ts) + 33);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    })
}
