//! A player that keeps every audio/video message it got: our RTMP client in a thread,
//! recording arrival time, timestamp and the first payload bytes, and when the server
//! closed the connection. For tests about timelines across origin and network faults.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtmp_edge::protocol::message as msg;

use super::rtmp_client::{RecvEnd, RtmpClient};

/// One audio or video message as an edge player received it.
#[derive(Debug, Clone, Copy)]
pub struct Media {
    pub at: Instant,
    pub video: bool,
    pub ts: u32,
    /// First two payload bytes (FLV frame type/codec and AVC/AAC packet type).
    pub head: [u8; 2],
}

impl Media {
    pub fn is_avc_config(&self) -> bool {
        self.video && self.head == [0x17, 0x00]
    }
    pub fn is_keyframe(&self) -> bool {
        self.video && self.head == [0x17, 0x01]
    }
}

/// An RTMP player (our own client) reading in a thread and recording every audio/video
/// message with its arrival time, and when the server closed the connection, if it did.
pub struct Player {
    media: Arc<Mutex<Vec<Media>>>,
    closed: Arc<Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Player {
    pub fn start(addr: SocketAddr, app: &str, name: &str) -> Player {
        let mut c = RtmpClient::connect(addr, app)
            .unwrap_or_else(|e| panic!("connect to {addr}/{app}: {e}"));
        c.create_stream().expect("createStream");
        c.play(name).expect("play");
        let media: Arc<Mutex<Vec<Media>>> = Arc::default();
        let closed: Arc<Mutex<Option<Instant>>> = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let (m, cl, st) = (media.clone(), closed.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match c.recv(Instant::now() + Duration::from_millis(100)) {
                    Ok(r) if r.type_id == msg::AUDIO || r.type_id == msg::VIDEO => {
                        let mut head = [0u8; 2];
                        for (h, b) in head.iter_mut().zip(r.payload.iter()) {
                            *h = *b;
                        }
                        m.lock().unwrap().push(Media {
                            at: Instant::now(),
                            video: r.type_id == msg::VIDEO,
                            ts: r.timestamp,
                            head,
                        });
                    }
                    Ok(_) | Err(RecvEnd::Timeout) => {}
                    Err(RecvEnd::Closed) => {
                        *cl.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                }
            }
            c.shutdown();
        });
        Player {
            media,
            closed,
            stop,
            thread: Some(thread),
        }
    }

    pub fn media(&self) -> Vec<Media> {
        self.media.lock().unwrap().clone()
    }

    pub fn video_count(&self) -> usize {
        self.media
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.video)
            .count()
    }

    pub fn closed_at(&self) -> Option<Instant> {
        *self.closed.lock().unwrap()
    }

    /// Waits until `pred` holds over what arrived so far; false on timeout or close.
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&[Media]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if pred(&self.media.lock().unwrap()) {
                return true;
            }
            if self.closed_at().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn wait_video(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |m| m.iter().filter(|m| m.video).count() >= n)
    }

    /// Disconnects (the reading thread shuts the socket down) and waits for the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("player thread panicked");
        }
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every audio and every video timestamp is >= the one before it of its kind.
pub fn assert_forward(media: &[Media], what: &str) {
    for video in [false, true] {
        let ts: Vec<u32> = media
            .iter()
            .filter(|m| m.video == video)
            .map(|m| m.ts)
            .collect();
        if let Some(w) = ts.windows(2).find(|w| w[1] < w[0]) {
            panic!(
                "{what}: {} timestamp went backwards: {} -> {}",
                if video { "video" } else { "audio" },
                w[0],
                w[1]
            );
        }
    }
}
