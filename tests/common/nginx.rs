//! nginx-rtmp (Debian's nginx with libnginx-mod-rtmp) as a real peer: one process in the
//! foreground on a free loopback port. Shared by the push and TLS tests.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A port nobody listens on right now (bind to port 0, read it, close).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_port(addr: SocketAddr, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

pub const NGINX_RTMP: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// nginx-rtmp, one process in the foreground on a free loopback port, its files in a temp
/// dir; killed and cleaned up on drop. Application `live` (live on, wait_key on).
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Whether Debian's nginx-rtmp module is installed.
    pub fn available() -> bool {
        std::path::Path::new(NGINX_RTMP).exists()
    }

    pub fn start() -> Nginx {
        assert!(
            Self::available(),
            "nginx-rtmp is not installed (scripts/test.sh installs nginx and libnginx-mod-rtmp)"
        );
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("nginx dir");
        let d = dir.display();
        // wait_key: a player joining mid-GOP starts at a keyframe, so it decodes cleanly.
        let conf = format!(
            "load_module {NGINX_RTMP};\n\
             daemon off;\nmaster_process off;\nworker_processes 1;\n\
             error_log {d}/e.log info;\npid {d}/n.pid;\n\
             events {{}}\n\
             rtmp {{ server {{ listen {addr}; chunk_size 4096;\n\
             application live {{ live on; wait_key on; }} }} }}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        // Debian puts nginx in /usr/sbin, often not on a user's PATH.
        let sbin = std::path::Path::new("/usr/sbin/nginx");
        let bin = if sbin.exists() {
            sbin
        } else {
            "nginx".as_ref()
        };
        let child = Command::new(bin)
            // -e: the log before the config is read (else /var/log/nginx/error.log).
            .arg("-e")
            .arg(dir.join("e0.log"))
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx must be installed (scripts/test.sh installs it)");
        let nginx = Nginx { addr, child, dir };
        if !wait_port(addr, Duration::from_secs(5)) {
            panic!("nginx did not listen on {addr}: {}", nginx.error_log());
        }
        nginx
    }

    /// `rtmp://127.0.0.1:PORT/live`.
    pub fn live_url(&self) -> String {
        format!("rtmp://{}/live", self.addr)
    }

    /// How many publishes of `name` (in application `live`) nginx-rtmp accepted so far
    /// (its info-level "publish: name='…'" lines).
    pub fn publishes(&self, name: &str) -> usize {
        let needle = format!("publish: name='{name}'");
        self.error_log()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    pub fn error_log(&self) -> String {
        ["e0.log", "e.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
