//! The one ffmpeg publisher for tests: a media file published in real time with stream copy
//! (looping unless told otherwise), its stderr kept, killed on drop and restartable.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{test_media_locked, wait_child, wait_published, Server};

/// What to publish and how; `start` runs it, `command` hands it to a caller that runs it
/// another way (to completion, with a time limit).
#[derive(Clone, Debug)]
pub struct PublishSpec {
    media: PathBuf,
    url: String,
    looping: bool,
    limit_secs: Option<u32>,
    netns: Option<String>,
}

impl PublishSpec {
    /// `media` to `url`, looping for ever.
    pub fn new(media: &Path, url: &str) -> PublishSpec {
        PublishSpec {
            media: media.to_path_buf(),
            url: url.to_string(),
            looping: true,
            limit_secs: None,
            netns: None,
        }
    }

    /// Publish the file once: ffmpeg ends (and unpublishes) at its end.
    pub fn once(mut self) -> PublishSpec {
        self.looping = false;
        self
    }

    /// Stop after `secs` of output (`-t`); also a bound on an ffmpeg that outlives a test
    /// run killed before it could drop its publisher.
    pub fn limit_secs(mut self, secs: u32) -> PublishSpec {
        self.limit_secs = Some(secs);
        self
    }

    /// Run ffmpeg inside the network namespace `ns` (see `netns`).
    pub fn in_netns(mut self, ns: &str) -> PublishSpec {
        self.netns = Some(ns.to_string());
        self
    }

    /// The ffmpeg command line, not yet run.
    pub fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => super::netns::exec_in(ns, Command::new("ffmpeg")),
            None => Command::new("ffmpeg"),
        };
        // -v error: stderr stays empty unless something went wrong, so tests can assert on it.
        cmd.args(["-v", "error", "-re"]);
        if self.looping {
            cmd.args(["-stream_loop", "-1"]);
        }
        cmd.arg("-i").arg(&self.media);
        if let Some(s) = self.limit_secs {
            cmd.args(["-t", &s.to_string()]);
        }
        cmd.args(["-c", "copy", "-f", "flv", &self.url]);
        cmd
    }

    pub fn start(self) -> Publisher {
        let (child, stderr, drain) = spawn(&self);
        Publisher {
            spec: self,
            child,
            stderr,
            drain: Some(drain),
        }
    }
}

/// A running ffmpeg publisher; killed on drop.
pub struct Publisher {
    spec: PublishSpec,
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    drain: Option<JoinHandle<()>>,
}

impl Publisher {
    /// `media` to `url`, looping until killed.
    pub fn start(media: &Path, url: &str) -> Publisher {
        PublishSpec::new(media, url).start()
    }

    /// The standard test media looping to `key` (`live/name`) on `server`, once the server
    /// has logged that the publish started.
    pub fn live(server: &Server, key: &str) -> Publisher {
        let p = Publisher::start(&test_media_locked(), &server.url(key));
        wait_published(server, key);
        p
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Panics, with what ffmpeg said, if it is no longer publishing.
    pub fn assert_running(&mut self) {
        if !self.is_running() {
            panic!("publisher quit: {}", self.stderr());
        }
    }

    /// Waits for exit up to `timeout`; None if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// SIGKILL, so the server sees the connection drop without an unpublish.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_drain();
    }

    /// SIGSTOP: the connection stays open and silent (a stalled encoder); `kill` still ends it.
    pub fn freeze(&mut self) {
        let st = std::process::Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success(), "SIGSTOP failed");
    }

    /// Kills this ffmpeg (if still running) and publishes the same way again.
    pub fn restart(&mut self) {
        self.kill();
        let (child, stderr, drain) = spawn(&self.spec);
        self.child = child;
        self.stderr = stderr;
        self.drain = Some(drain);
    }

    /// What ffmpeg wrote to stderr; all of it once it has exited.
    pub fn stderr(&mut self) -> String {
        if !self.is_running() {
            self.join_drain();
        }
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    fn join_drain(&mut self) {
        if let Some(t) = self.drain.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns the spec's ffmpeg with a thread draining its stderr: a pipe nobody reads would
/// block ffmpeg once it fills.
fn spawn(spec: &PublishSpec) -> (Child, Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let mut cmd = spec.command();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut pipe = child.stderr.take().unwrap();
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let sink = stderr.clone();
    let drain = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (child, stderr, drain)
}
