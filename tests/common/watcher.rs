//! A long-lived player for tests: our RTMP client playing a stream in a thread, recording
//! when each audio/video message arrived (and which were video), every onStatus code and
//! how the server closed the connection, until stopped (or 60 s).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rtmp_edge::protocol::message as msg;

use super::rtmp_client::{is_av, status, RecvEnd, RtmpClient};

/// The server closed a watcher's connection: when, and the read error if it was not an
/// orderly EOF (a reset, which can lose bytes the server had queued).
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    pub at: Instant,
    pub error: Option<io::ErrorKind>,
}

pub struct Watcher {
    /// When the play was sent.
    pub started: Instant,
    media: Arc<Mutex<Vec<Instant>>>,
    video: Arc<Mutex<Vec<Instant>>>,
    codes: Arc<Mutex<Vec<(Instant, String)>>>,
    ended: Arc<Mutex<Option<Ended>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Option<RecvEnd>>>,
}

impl Watcher {
    /// Connects to `app` and plays `name` (which may carry a `?query`).
    pub fn start(addr: SocketAddr, app: &str, name: &str) -> Watcher {
        let mut c = RtmpClient::connect(addr, app).expect("player connect");
        c.create_stream().expect("player createStream");
        let started = c.play(name).expect("play");
        let media = Arc::new(Mutex::new(Vec::new()));
        let video = Arc::new(Mutex::new(Vec::new()));
        let codes = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, v, k, e, s) = (
            media.clone(),
            video.clone(),
            codes.clone(),
            ended.clone(),
            stop.clone(),
        );
        let thread = thread::spawn(move || {
            let limit = Instant::now() + Duration::from_secs(60);
            while !s.load(Ordering::Relaxed) && Instant::now() < limit {
                match c.recv(Instant::now() + Duration::from_millis(100)) {
                    Ok(x) if is_av(&x) => {
                        let now = Instant::now();
                        m.lock().unwrap().push(now);
                        if x.type_id == msg::VIDEO {
                            v.lock().unwrap().push(now);
                        }
                    }
                    Ok(x) => {
                        if let Some((_, code)) = status(&x) {
                            k.lock().unwrap().push((Instant::now(), code));
                        }
                    }
                    Err(RecvEnd::Timeout) => {}
                    Err(end) => {
                        *e.lock().unwrap() = Some(Ended {
                            at: Instant::now(),
                            error: c.close_error,
                        });
                        return Some(end);
                    }
                }
            }
            None
        });
        Watcher {
            started,
            media,
            video,
            codes,
            ended,
            stop,
            thread: Some(thread),
        }
    }

    /// Arrival times of audio/video messages so far.
    pub fn media(&self) -> Vec<Instant> {
        self.media.lock().unwrap().clone()
    }

    /// Arrival times of video messages so far.
    pub fn video(&self) -> Vec<Instant> {
        self.video.lock().unwrap().clone()
    }

    pub fn codes(&self) -> Vec<String> {
        self.codes_since(self.started)
    }

    /// The onStatus codes that arrived at or after `since`, in order.
    pub fn codes_since(&self, since: Instant) -> Vec<String> {
        self.codes
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Waits until `code` has arrived at or after `since`.
    pub fn wait_code(&self, code: &str, since: Instant, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.codes_since(since).iter().any(|c| c == code) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// How the server closed the connection, once it has.
    pub fn ended(&self) -> Option<Ended> {
        *self.ended.lock().unwrap()
    }

    /// Waits until the server has closed the connection (`finish` stops the reader, so a
    /// close that has not been read yet would go unseen).
    pub fn wait_ended(&self, timeout: Duration) -> Option<Ended> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(e) = self.ended() {
                return Some(e);
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.ended()
    }

    /// Whether the connection is still being read (not closed by the server).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Waits until at least `n` media messages arrived after `since`.
    pub fn wait_media(&self, since: Instant, n: usize, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.media().iter().filter(|&&t| t >= since).count() >= n {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Longest time without audio/video in `[from, to]`, counting both ends.
    pub fn max_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut points = vec![from];
        points.extend(self.media().into_iter().filter(|&t| t >= from && t <= to));
        points.push(to);
        points
            .windows(2)
            .map(|p| p[1] - p[0])
            .max()
            .unwrap_or_default()
    }

    /// Stops; the status codes seen and how the connection ended if the server closed it.
    pub fn finish(mut self) -> (Vec<String>, Option<RecvEnd>) {
        self.stop.store(true, Ordering::Relaxed);
        let end = self.thread.take().and_then(|t| t.join().ok()).flatten();
        (self.codes(), end)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
