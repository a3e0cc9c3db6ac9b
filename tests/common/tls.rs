//! TLS pieces for the RTMPS tests, all real tools: a test CA and server certificates made
//! with the openssl command, stunnel4 terminating TLS in front of a plain RTMP peer,
//! `openssl s_client` to see which certificate a listener serves, an ffmpeg publisher over
//! rtmps:// that verifies the server, and a reader for Prometheus counters.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::nginx::{free_port, wait_port};
use super::players::{spawn_quiet, stderr_of, Probe};
use super::{run_with_timeout, Proc};

/// Whether `tool` runs at all (`<tool> <arg>` spawns); for skip messages.
pub fn have_tool(tool: &str) -> bool {
    Command::new(tool)
        .arg("-version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs openssl with `args` (10 s limit); panics with its output if it fails.
pub fn openssl(args: &[&str]) -> String {
    let out = run_with_timeout(Command::new("openssl").args(args), Duration::from_secs(10));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl {args:?} failed: {text}");
    text
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// The private key's encoding in its PEM file: the three the server must read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// EC P-256, PKCS#8 (`BEGIN PRIVATE KEY`).
    EcPkcs8,
    /// EC P-256, SEC1 (`BEGIN EC PRIVATE KEY`).
    EcSec1,
    /// RSA 2048, PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    RsaPkcs1,
}

impl KeyKind {
    /// The PEM label this kind is written with.
    pub fn pem_label(self) -> &'static str {
        match self {
            KeyKind::EcPkcs8 => "-----BEGIN PRIVATE KEY-----",
            KeyKind::EcSec1 => "-----BEGIN EC PRIVATE KEY-----",
            KeyKind::RsaPkcs1 => "-----BEGIN RSA PRIVATE KEY-----",
        }
    }
}

/// Writes a new private key of `kind` to `key`.
fn gen_key(kind: KeyKind, key: &Path) {
    match kind {
        KeyKind::EcPkcs8 => {
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                p(key),
            ]);
        }
        KeyKind::EcSec1 => {
            openssl(&[
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-noout",
                "-out",
                p(key),
            ]);
        }
        KeyKind::RsaPkcs1 => {
            openssl(&["genrsa", "-traditional", "-out", p(key), "2048"]);
        }
    }
    let pem = std::fs::read_to_string(key).expect("read new key");
    assert!(
        pem.starts_with(kind.pem_label()),
        "{kind:?} key written as {:?}",
        pem.lines().next()
    );
}

/// A certificate (chain) and its private key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A per-test directory under the system temp dir for keys, certificates, configs;
/// removed on drop (unless `RTMP_EDGE_KEEP_TLS` is set, for debugging).
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "rtmp-edge-tls-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TestDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `text` to `name` in this dir; its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("RTMP_EDGE_KEEP_TLS").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A test certificate authority: a self-signed EC P-256 CA certificate and key.
pub struct Ca {
    /// The CA certificate (PEM): what clients trust.
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

impl Ca {
    /// A new CA named `name` (file names) with subject `CN=<cn>` in `dir`.
    pub fn new(dir: &TestDir, name: &str, cn: &str) -> Ca {
        let cert = dir.join(&format!("{name}.pem"));
        let key = dir.join(&format!("{name}.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            p(&key),
            "-out",
            p(&cert),
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        Ca {
            cert,
            key,
            dir: dir.path.clone(),
        }
    }

    /// A server certificate for `CN=<cn>` with `sans` (`IP:127.0.0.1`, `DNS:a.test`),
    /// signed by this CA, written as `<name>.pem` / `<name>.key` next to the CA.
    pub fn issue(&self, name: &str, cn: &str, sans: &[&str], kind: KeyKind) -> CertFiles {
        let files = CertFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        self.issue_to(&files, cn, sans, kind);
        files
    }

    /// Like `issue`, but to given paths (overwriting them: a certificate renewal).
    pub fn issue_to(&self, files: &CertFiles, cn: &str, sans: &[&str], kind: KeyKind) {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!("tmp{}", N.fetch_add(1, Ordering::Relaxed));
        // Made under temp names and renamed over the targets, so a reader never sees a
        // half-written file.
        let key = self.dir.join(format!("{tag}.key"));
        let csr = self.dir.join(format!("{tag}.csr"));
        let ext = self.dir.join(format!("{tag}.ext"));
        let cert = self.dir.join(format!("{tag}.pem"));
        gen_key(kind, &key);
        openssl(&[
            "req",
            "-new",
            "-key",
            p(&key),
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            p(&csr),
        ]);
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            p(&csr),
            "-CA",
            p(&self.cert),
            "-CAkey",
            p(&self.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            p(&ext),
            "-out",
            p(&cert),
        ]);
        std::fs::rename(&key, &files.key).unwrap();
        std::fs::rename(&cert, &files.cert).unwrap();
        let _ = std::fs::remove_file(&csr);
        let _ = std::fs::remove_file(&ext);
    }

    /// The usual loopback server certificate: `IP:127.0.0.1, DNS:localhost`.
    pub fn issue_loopback(&self, name: &str, cn: &str, kind: KeyKind) -> CertFiles {
        self.issue(name, cn, &["IP:127.0.0.1", "DNS:localhost"], kind)
    }
}

/// The subject line (`subject=CN = a.test`) of a certificate file.
pub fn cert_subject(cert: &Path) -> String {
    openssl(&["x509", "-in", p(cert), "-noout", "-subject"])
        .trim()
        .to_string()
}

/// What `openssl s_client` saw.
#[derive(Debug)]
pub struct SClient {
    /// `subject=CN = ...` of the peer certificate, if one came.
    pub subject: Option<String>,
    /// `Verify return code: 0 (ok)` against the CA given.
    pub verified: bool,
    /// The protocol line (`New, TLSv1.3, Cipher is ...`), if the handshake finished.
    pub session: Option<String>,
    pub output: String,
}

/// `openssl s_client -connect addr` with SNI `servername` (None: no SNI at all), verifying
/// against `ca`; stdin is empty, so it disconnects right after the handshake.
pub fn s_client(addr: SocketAddr, servername: Option<&str>, ca: &Path) -> SClient {
    s_client_with(addr, servername, ca, &[])
}

/// `s_client` with more options (`-tls1_2`).
pub fn s_client_with(
    addr: SocketAddr,
    servername: Option<&str>,
    ca: &Path,
    extra: &[&str],
) -> SClient {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-CAfile", p(ca)]);
    cmd.args(extra);
    match servername {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    let out = run_with_timeout(&mut cmd, Duration::from_secs(10));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| {
        output
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.trim().to_string())
    };
    SClient {
        subject: line("subject="),
        verified: output.contains("Verify return code: 0 (ok)"),
        session: line("New, TLS"),
        output,
    }
}

/// The ffmpeg/ffprobe options that make an rtmps:// input or output verify the server
/// against `ca` (they reach ffmpeg's tls protocol through the rtmps one).
pub fn tls_args(ca: &Path) -> Vec<String> {
    vec![
        "-tls_verify".into(),
        "1".into(),
        "-ca_file".into(),
        p(ca).to_string(),
    ]
}

/// Like `players::assert_decodes`, with `extra` options before the input (`tls_args`).
pub fn assert_decodes_with(url: &str, seconds: u32, min_frames: u64, extra: &[String]) -> Probe {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    super::players::assert_decodes_args(url, seconds, min_frames, &extra)
}

/// ffmpeg publishing `media` (looped, real time, stream copy, at most `limit_secs`) to an
/// rtmps:// URL while verifying the server against `ca`; killed on drop.
pub struct TlsPublisher {
    proc: Proc,
}

impl TlsPublisher {
    pub fn start(media: &Path, url: &str, ca: &Path, limit_secs: u32) -> TlsPublisher {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-v", "error", "-re", "-stream_loop", "-1", "-i"])
            .arg(media)
            .args(["-t", &limit_secs.to_string(), "-c", "copy", "-f", "flv"])
            .args(tls_args(ca))
            .arg(url);
        TlsPublisher {
            proc: spawn_quiet(&mut cmd),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.proc.0.try_wait(), Ok(None))
    }

    /// Panics, with what ffmpeg said, if it is no longer publishing.
    pub fn assert_running(&mut self) {
        if !self.is_running() {
            panic!("rtmps publisher quit: {}", stderr_of(&mut self.proc));
        }
    }

    /// Kills it; what it wrote to stderr (empty at -v error when all went well).
    pub fn finish(mut self) -> String {
        self.proc.kill();
        stderr_of(&mut self.proc)
    }
}

/// stunnel4 in server mode: TLS with `cert` on a free loopback port, each connection
/// forwarded in plain to `connect`. Killed and its files removed on drop.
pub struct Stunnel {
    pub addr: SocketAddr,
    child: Child,
    dir: TestDir,
}

impl Stunnel {
    /// The stunnel binary, if installed.
    pub fn binary() -> Option<&'static str> {
        ["/usr/bin/stunnel4", "/usr/bin/stunnel"]
            .into_iter()
            .find(|b| Path::new(b).exists())
    }

    pub fn start(cert: &CertFiles, connect: SocketAddr) -> Stunnel {
        let bin = Self::binary().expect("stunnel4 is not installed");
        let dir = TestDir::new("stunnel");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let conf = dir.write(
            "stunnel.conf",
            &format!(
                "foreground = yes\npid =\ndebug = 5\n\n[rtmps]\naccept = {addr}\n\
                 connect = {connect}\ncert = {}\nkey = {}\n",
                p(&cert.cert),
                p(&cert.key)
            ),
        );
        let log = File::create(dir.join("stunnel.log")).expect("stunnel log");
        let child = Command::new(bin)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let mut st = Stunnel { addr, child, dir };
        if !wait_port(addr, Duration::from_secs(5)) {
            let _ = st.child.kill();
            panic!("stunnel did not listen on {addr}: {}", st.log());
        }
        st
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stunnel.log")).unwrap_or_default()
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of the samples of counter `name` whose labels include every `label="value"`
/// of `labels`, in a Prometheus text scrape; None when no such series is there.
pub fn metric(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The exact name: followed by labels or the value, not a longer name.
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => ("", rest),
        };
        if !labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}
