//! RTMPS against real peers on loopback: ffmpeg publishing and playing over TLS (verifying
//! the server against a test CA made with openssl), pushes to an RTMPS target (stunnel4
//! terminating TLS in front of nginx-rtmp) with a wrong and then a fixed CA, an edge pulling
//! from an rtmps:// origin, bad input on the TLS and plain ports, SNI certificates and their
//! reload on SIGHUP (seen by `openssl s_client`), and TLS details in /api/v1/clients.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::nginx::Nginx;
use common::players::*;
use common::publisher::Publisher;
use common::tls::*;
use common::*;
use serde_json::Value;

/// True when every tool is installed; otherwise prints why the test is skipped.
fn have(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| match *t {
            "stunnel4" => Stunnel::binary().is_none(),
            "nginx-rtmp" => !Nginx::available(),
            t => !have_tool(t),
        })
        .collect();
    if !missing.is_empty() {
        eprintln!("SKIP: not installed: {missing:?}");
    }
    missing.is_empty()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A CA, a loopback server certificate with a `kind` key, and a server with `--listen-tls`
/// on a free port using it (plus `extra` flags).
fn tls_server(tag: &str, kind: KeyKind, extra: &[&str]) -> (TestDir, Ca, Server) {
    let dir = TestDir::new(tag);
    let ca = Ca::new(&dir, "ca", "rtmp-edge test CA");
    let cert = ca.issue_loopback("server", "rtmp-edge test server", kind);
    let mut args = vec![
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        s(&cert.cert),
        "--tls-key",
        s(&cert.key),
    ];
    args.extend(extra);
    let server = Server::start(&args);
    let tls = server.tls_addr();
    eprintln!("{tag}: plain {} rtmps {tls}", server.addr);
    (dir, ca, server)
}

/// GET on the control API, parsed.
fn api(server: &Server, path: &str) -> Value {
    let (status, body) = server.http_get(path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn scrape(server: &Server) -> String {
    let (status, body) = server.http_get("/metrics");
    assert_eq!(status, 200, "GET /metrics");
    body
}

/// Polls `f` every 100 ms until it returns Some, up to `timeout`.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// rtmpdump reading `url` for `secs` seconds into `out`; (got media, its stderr). With
/// `tls12_only`, GnuTLS (under librtmp) is kept to TLS 1.2 by a system priority file in
/// `dir`: Debian's librtmp fails the RTMP handshake after a TLS 1.3 handshake (it reads
/// GnuTLS's post-handshake ticket as an error), the same against stunnel.
fn rtmpdump(url: &str, secs: u32, out: &Path, tls12_only: Option<&TestDir>) -> (bool, String) {
    let mut cmd = Command::new("rtmpdump");
    // Live (-v), killed after `secs`: -B counts stream time, which a loop keeps restarting.
    cmd.args(["-r", url, "-v", "-o"]).arg(out);
    if let Some(dir) = tls12_only {
        let prio = dir.write(
            "gnutls-no-tls13.conf",
            "[overrides]\ndisabled-version = tls1.3\n",
        );
        cmd.env("GNUTLS_SYSTEM_PRIORITY_FILE", prio);
    }
    let _ = std::fs::remove_file(out);
    let o = run_with_timeout(&mut cmd, Duration::from_secs(u64::from(secs)));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    (size > 20_000, err)
}

fn error_lines(err: &str) -> String {
    err.lines()
        .filter(|l| l.contains("ERROR"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// 1: ffmpeg publishes over RTMPS (verifying the server against the test CA); at the same
/// time one player decodes over RTMPS and one over plain RTMP, both ≥ 100 frames cleanly.
/// rtmpdump over rtmps:// too, when Debian's librtmp can do RTMPS at all (checked against
/// stunnel in front of the server's plain port, a reference TLS terminator).
#[test]
fn ffmpeg_publishes_and_plays_over_rtmps() {
    if !have(&["openssl", "ffmpeg", "ffprobe"]) {
        return;
    }
    let (dir, ca, server) = tls_server("pubplay", KeyKind::EcPkcs8, &[]);
    let mut publisher = TlsPublisher::start(
        &test_media_locked(),
        &server.tls_url("live/x"),
        &ca.cert,
        60,
    );
    wait_published(&server, "live/x");

    let plain_url = server.url("live/x");
    let plain = thread::spawn(move || assert_decodes(&plain_url, 5, 100));
    let tls = assert_decodes_with(&server.tls_url("live/x"), 5, 100, &tls_args(&ca.cert));
    let plain = plain.join().expect("plain player panicked");
    eprintln!(
        "over rtmps: {} video / {} audio; plain: {} video / {} audio",
        tls.count("video"),
        tls.count("audio"),
        plain.count("video"),
        plain.count("audio")
    );
    publisher.assert_running();
    let hs = metric(&scrape(&server), "rtmp_tls_handshakes_total", &[]).unwrap_or(0.0);
    assert!(
        hs >= 2.0,
        "{hs} TLS handshakes counted (publisher and player)"
    );

    // rtmpdump: Debian's librtmp (GnuTLS) speaks rtmps:// without verifying the server.
    if have(&["rtmpdump"]) {
        let out = dir.join("rtmpdump.flv");
        let url = server.tls_url("live/x");
        let (ok, err) = rtmpdump(&url, 6, &out, None);
        if !ok {
            eprintln!(
                "rtmpdump with TLS 1.3 offered fails (known librtmp/GnuTLS problem, same \
                 against stunnel): {}; again with TLS 1.2 only",
                error_lines(&err)
            );
            let (ok, err) = rtmpdump(&url, 6, &out, Some(&dir));
            assert!(
                ok,
                "rtmpdump over rtmps (TLS 1.2) failed: {err}\nserver: {:#?}",
                server.log_lines()
            );
        }
        let frames = ffprobe_frames(s(&out), 0, Some("v:0"));
        eprintln!("rtmpdump over rtmps: {} video frames", frames.len());
        assert!(frames.len() >= 100, "rtmpdump got {} frames", frames.len());
    } else {
        eprintln!("SKIP rtmpdump part: rtmpdump not installed");
    }
    publisher.assert_running();
    let err = publisher.finish();
    assert!(err.trim().is_empty(), "rtmps publisher stderr: {err}");
}

/// Push sessions in /api/v1/push of the destination whose URL has port `port`.
fn push_sessions(server: &Server, port: u16) -> Vec<Value> {
    let v = api(server, "/api/v1/push");
    let needle = format!(":{port}/");
    v["destinations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d["url"].as_str().is_some_and(|u| u.contains(&needle)))
        .flat_map(|d| d["sessions"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn wait_push_state(server: &Server, port: u16, state: &str, timeout: Duration) -> Option<Value> {
    poll(timeout, || {
        push_sessions(server, port)
            .into_iter()
            .find(|s| s["state"] == state)
    })
}

/// 2: pushes to an RTMPS target, stunnel4 (certificate from the test CA) in front of
/// nginx-rtmp, from a config file's `[[push]]` with `ca_file`; nginx's player decodes it.
/// Then a wrong CA: that push shows a certificate error and keeps backing off while a plain
/// destination stays live and decodable; the right CA written to the same file and SIGHUP
/// bring the TLS push live, and nginx's player decodes it.
#[test]
fn push_to_rtmps_target_with_ca_file_and_reload() {
    if !have(&["openssl", "ffmpeg", "ffprobe", "stunnel4", "nginx-rtmp"]) {
        return;
    }
    let dir = TestDir::new("push");
    let ca = Ca::new(&dir, "ca", "rtmp-edge test CA");
    let wrong = Ca::new(&dir, "wrong-ca", "some other CA");
    let cert = ca.issue_loopback("stunnel", "stunnel test target", KeyKind::EcPkcs8);
    let nginx = Nginx::start();
    let st = Stunnel::start(&cert, nginx.addr);
    // The reference: stunnel serves TLS that openssl verifies against the test CA.
    let sc = s_client(st.addr, None, &ca.cert);
    assert!(sc.verified && sc.session.is_some(), "stunnel: {sc:?}");
    let tls_target = format!("rtmps://{}/live", st.addr);

    // Part 1: the right CA.
    let cfg = dir.write(
        "push-ok.toml",
        &format!(
            "[[push]]\nid = \"tls\"\nurl = \"{tls_target}\"\nca_file = \"{}\"\n",
            s(&ca.cert)
        ),
    );
    {
        let a = Server::start(&["--config", s(&cfg), "--push-backoff-max-secs", "2"]);
        let mut publisher = Publisher::live(&a, "live/tp");
        let live = wait_push_state(&a, st.addr.port(), "live", Duration::from_secs(10));
        assert!(
            live.is_some(),
            "push to {tls_target} never went live: {:?}\nA: {:#?}\nstunnel: {}\nnginx: {}",
            push_sessions(&a, st.addr.port()),
            a.log_lines(),
            st.log(),
            nginx.error_log()
        );
        let probe = assert_decodes(&format!("{}/tp", nginx.live_url()), 4, 60);
        eprintln!(
            "via rtmps push to stunnel+nginx: {} video / {} audio",
            probe.count("video"),
            probe.count("audio")
        );
        publisher.assert_running();
    }
    // The same with flags: `--push rtmps://…` trusting `--tls-ca-file`.
    {
        let a = Server::start(&[
            "--push",
            &tls_target,
            "--tls-ca-file",
            s(&ca.cert),
            "--push-backoff-max-secs",
            "2",
        ]);
        let mut publisher = Publisher::live(&a, "live/tf");
        let live = wait_push_state(&a, st.addr.port(), "live", Duration::from_secs(10));
        assert!(
            live.is_some(),
            "--push {tls_target} never went live: {:?}\nA: {:#?}",
            push_sessions(&a, st.addr.port()),
            a.log_lines()
        );
        let probe = assert_decodes(&format!("{}/tf", nginx.live_url()), 4, 60);
        eprintln!(
            "--push rtmps:// with --tls-ca-file: {} video / {} audio at nginx",
            probe.count("video"),
            probe.count("audio")
        );
        publisher.assert_running();
    }

    // Part 2: a wrong CA in the TLS destination's ca_file, and a plain destination.
    let nginx2 = Nginx::start();
    let ca_file = dir.join("push-ca.pem");
    std::fs::copy(&wrong.cert, &ca_file).unwrap();
    let cfg = dir.write(
        "push-wrong.toml",
        &format!(
            "[[push]]\nid = \"tls\"\nurl = \"{tls_target}\"\nca_file = \"{}\"\n\n\
             [[push]]\nid = \"plain\"\nurl = \"{}\"\n",
            s(&ca_file),
            nginx2.live_url()
        ),
    );
    let a = Server::start(&["--config", s(&cfg), "--push-backoff-max-secs", "2"]);
    let mut publisher = Publisher::live(&a, "live/tq");
    let port = st.addr.port();
    let failed = poll(Duration::from_secs(10), || {
        push_sessions(&a, port).into_iter().find(|s| {
            s["last_error"]
                .as_str()
                .is_some_and(|e| e.to_lowercase().contains("certificate"))
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no certificate error on the TLS push: {:?}\nA: {:#?}",
            push_sessions(&a, port),
            a.log_lines()
        )
    });
    eprintln!("TLS push with the wrong CA: {failed}");
    // It keeps retrying (backoff capped at 2 s) and never goes live.
    let retried = poll(Duration::from_secs(12), || {
        push_sessions(&a, port)
            .into_iter()
            .find(|s| s["reconnects"].as_u64().unwrap_or(0) >= 2)
    })
    .unwrap_or_else(|| panic!("TLS push not retried: {:?}", push_sessions(&a, port)));
    eprintln!("TLS push retrying: {retried}");
    assert_ne!(retried["state"], "live", "{retried}");
    let plain = wait_push_state(&a, nginx2.addr.port(), "live", Duration::from_secs(5))
        .unwrap_or_else(|| {
            panic!(
                "plain push not live: {:?}",
                push_sessions(&a, nginx2.addr.port())
            )
        });
    eprintln!("plain push: {plain}");
    assert_decodes(&format!("{}/tq", nginx2.live_url()), 4, 60);
    let sessions = push_sessions(&a, port);
    assert!(
        sessions.iter().all(|s| s["state"] != "live"),
        "TLS push live with the wrong CA: {sessions:?}"
    );

    // The right CA in the same file, then SIGHUP: the TLS push goes live.
    std::fs::copy(&ca.cert, &ca_file).unwrap();
    let t_hup = Instant::now();
    a.signal("HUP");
    let live = wait_push_state(&a, port, "live", Duration::from_secs(15));
    assert!(
        live.is_some(),
        "TLS push not live after the CA fix and SIGHUP: {:?}\nA: {:#?}",
        push_sessions(&a, port),
        a.log_lines()
    );
    eprintln!("TLS push live {:?} after SIGHUP", t_hup.elapsed());
    let probe = assert_decodes(&format!("{}/tq", nginx.live_url()), 4, 60);
    eprintln!(
        "after the CA fix: {} video / {} audio at nginx behind stunnel",
        probe.count("video"),
        probe.count("audio")
    );
    // The plain destination never noticed.
    let plain = push_sessions(&a, nginx2.addr.port());
    assert!(
        plain
            .iter()
            .all(|s| s["state"] == "live" && s["reconnects"] == 0),
        "plain push disturbed: {plain:?}"
    );
    publisher.assert_running();
}

/// 3: an edge pulls from an origin's rtmps:// listener (the origin's key is RSA, PKCS#1),
/// verifying it with `--tls-ca-file`; a player on the edge decodes ≥ 100 frames.
#[test]
fn edge_pulls_from_rtmps_origin() {
    if !have(&["openssl", "ffmpeg", "ffprobe"]) {
        return;
    }
    let (_dir, ca, origin) = tls_server("origin", KeyKind::RsaPkcs1, &["--shards", "1"]);
    let mut publisher = Publisher::live(&origin, "live/e");
    let edge = Server::start(&[
        "--origin",
        &origin.tls_url("live"),
        "--tls-ca-file",
        s(&ca.cert),
        "--shards",
        "1",
    ]);
    let probe = assert_decodes(&edge.url("live/e"), 5, 100);
    eprintln!(
        "edge over an rtmps origin: {} video / {} audio",
        probe.count("video"),
        probe.count("audio")
    );
    assert_eq!(
        edge.count_log(&["origin pull failed"]),
        0,
        "{:#?}",
        edge.log_lines()
    );
    assert_eq!(
        origin.count_log(&["play started", "key=\"live/e\""]),
        1,
        "{:#?}",
        origin.log_lines()
    );
    // The origin saw the edge's pull as a TLS client.
    let clients = api(&origin, "/api/v1/clients?role=player");
    let pulls: Vec<&Value> = clients["clients"].as_array().unwrap().iter().collect();
    assert_eq!(pulls.len(), 1, "{clients}");
    eprintln!("the edge's pull as the origin sees it: {}", pulls[0]);
    assert!(pulls[0]["tls"]["version"].is_string(), "{clients}");
    publisher.assert_running();
}

/// Writes `bytes` to `addr` and waits (up to `timeout`) for the server to close the
/// connection; how long that took, or None if it stayed open.
fn closed_after(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut c = TcpStream::connect(addr).expect("connect");
    if !bytes.is_empty() {
        // A write error means the server already closed it.
        let _ = c.write_all(bytes);
    }
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < timeout {
        match c.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(t0.elapsed()),
        }
    }
    None
}

/// 4: garbage and a plain RTMP handshake on the TLS port, a silent client there, and a TLS
/// ClientHello on the plain port: each connection is closed, logged and counted, and a
/// publisher and players (plain and RTMPS) keep working. The server key is EC SEC1.
#[test]
fn bad_input_on_tls_and_plain_ports() {
    if !have(&["openssl", "ffmpeg", "ffprobe"]) {
        return;
    }
    let (_dir, ca, server) = tls_server("bad", KeyKind::EcSec1, &["--handshake-timeout-secs", "3"]);
    let tls = server.tls_addr();
    let mut publisher = Publisher::live(&server, "live/ok");

    let garbage: Vec<u8> = b"GARBAGE not a TLS record\r\n".repeat(80);
    let t = closed_after(tls, &garbage, Duration::from_secs(10))
        .expect("garbage on the TLS port: connection left open");
    eprintln!("garbage on the TLS port: closed after {t:?}");
    let mut rtmp_c0c1 = vec![0x03u8];
    rtmp_c0c1.extend((0..1536u32).map(|i| (i * 7) as u8));
    let t = closed_after(tls, &rtmp_c0c1, Duration::from_secs(10))
        .expect("plain RTMP handshake on the TLS port: connection left open");
    eprintln!("plain RTMP handshake on the TLS port: closed after {t:?}");
    let t = closed_after(tls, &[], Duration::from_secs(12))
        .expect("silent client on the TLS port: never closed");
    eprintln!("silent client on the TLS port: closed after {t:?} (handshake timeout 3 s)");
    assert!(
        t >= Duration::from_millis(2500) && t <= Duration::from_secs(8),
        "silent client closed after {t:?}"
    );

    let sc = s_client(server.addr, None, &ca.cert);
    assert!(
        sc.session.is_none(),
        "TLS handshake succeeded on the plain port: {sc:?}"
    );
    server
        .wait_log(
            &["TLS ClientHello on the plain RTMP port"],
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("no ClientHello log line: {:#?}", server.log_lines()));

    // Garbage, the plain handshake and the silent client: one line each.
    let failed = server.count_log(&["TLS handshake failed"]);
    assert!(
        failed >= 3,
        "{failed} `TLS handshake failed` lines: {:#?}",
        server.log_lines()
    );
    let m = poll(Duration::from_secs(5), || {
        let m = scrape(&server);
        let ok = metric(
            &m,
            "rtmp_tls_handshake_failures_total",
            &[("reason", "not_tls")],
        )
        .unwrap_or(0.0)
            >= 2.0
            && metric(
                &m,
                "rtmp_tls_handshake_failures_total",
                &[("reason", "timeout")],
            )
            .unwrap_or(0.0)
                >= 1.0
            && metric(
                &m,
                "rtmp_protocol_errors_total",
                &[("kind", "tls_on_plain_port")],
            )
            .unwrap_or(0.0)
                >= 1.0;
        ok.then_some(m)
    })
    .unwrap_or_else(|| {
        let m = scrape(&server);
        let tls_lines: Vec<&str> = m
            .lines()
            .filter(|l| l.contains("tls") && !l.starts_with('#'))
            .collect();
        panic!("counters missing or short: {tls_lines:#?}")
    });
    for l in m
        .lines()
        .filter(|l| l.contains("tls") && !l.starts_with('#'))
    {
        eprintln!("metric: {l}");
    }
    // Exactly these, nothing counted twice or under another reason.
    let failures = |labels: &[(&str, &str)]| {
        metric(&m, "rtmp_tls_handshake_failures_total", labels).unwrap_or(0.0)
    };
    assert_eq!(failures(&[("reason", "not_tls")]), 2.0);
    assert_eq!(failures(&[("reason", "timeout")]), 1.0);
    assert_eq!(failures(&[]), 3.0, "failures under other reasons");
    assert_eq!(
        metric(
            &m,
            "rtmp_protocol_errors_total",
            &[("kind", "tls_on_plain_port")]
        ),
        Some(1.0)
    );
    for l in server
        .log_lines()
        .iter()
        .filter(|l| l.contains("TLS handshake failed") || l.contains("ClientHello"))
    {
        eprintln!("log: {l}");
    }

    // Everybody else kept going.
    publisher.assert_running();
    let plain_url = server.url("live/ok");
    let plain = thread::spawn(move || assert_decodes(&plain_url, 3, 60));
    assert_decodes_with(&server.tls_url("live/ok"), 3, 60, &tls_args(&ca.cert));
    plain.join().expect("plain player");
    let mut p2 = TlsPublisher::start(
        &test_media_locked(),
        &server.tls_url("live/ok2"),
        &ca.cert,
        30,
    );
    wait_published(&server, "live/ok2");
    assert_decodes(&server.url("live/ok2"), 3, 60);
    p2.assert_running();
    publisher.assert_running();
}

/// The subject `openssl s_client` saw on `addr` with SNI `name`.
fn subject_for(addr: SocketAddr, name: Option<&str>, ca: &Path) -> String {
    let sc = s_client(addr, name, ca);
    assert!(sc.verified, "SNI {name:?}: not verified: {}", sc.output);
    sc.subject
        .unwrap_or_else(|| panic!("SNI {name:?}: no certificate: {}", sc.output))
}

/// 5: certificates by SNI from the config file (a.test, b.test and *.b.test, and the
/// default for everything else); the default's files overwritten with a new certificate
/// and SIGHUP: new handshakes get it while an RTMPS player connected before keeps going.
#[test]
fn sni_certificates_and_reload() {
    if !have(&["openssl", "ffmpeg", "ffprobe"]) {
        return;
    }
    let dir = TestDir::new("sni");
    let ca = Ca::new(&dir, "ca", "rtmp-edge test CA");
    let default = ca.issue_loopback("default", "default-one", KeyKind::EcPkcs8);
    let a = ca.issue("a", "a.test", &["DNS:a.test"], KeyKind::EcSec1);
    let b = ca.issue(
        "b",
        "b.test",
        &["DNS:b.test", "DNS:*.b.test"],
        KeyKind::RsaPkcs1,
    );
    let cfg = dir.write(
        "sni.toml",
        &format!(
            "[server]\nlisten_tls = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\n\
             [[tls_certificate]]\nnames = [\"a.test\"]\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [[tls_certificate]]\nnames = [\"b.test\", \"*.b.test\"]\ncert = \"{}\"\nkey = \"{}\"\n",
            s(&default.cert),
            s(&default.key),
            s(&a.cert),
            s(&a.key),
            s(&b.cert),
            s(&b.key)
        ),
    );
    let server = Server::start(&["--config", s(&cfg)]);
    let tls = server.tls_addr();
    for (name, want) in [
        (Some("a.test"), "CN = a.test"),
        (Some("b.test"), "CN = b.test"),
        (Some("x.b.test"), "CN = b.test"),
        (Some("unknown.test"), "CN = default-one"),
        (None, "CN = default-one"),
    ] {
        let got = subject_for(tls, name, &ca.cert);
        eprintln!("SNI {name:?}: {got}");
        assert!(got.ends_with(want), "SNI {name:?}: {got}, want {want}");
    }

    // An RTMPS player connected before the reload, copying the stream to a file.
    let mut publisher = Publisher::live(&server, "live/sni");
    let rec = dir.join("player.flv");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-rw_timeout", "10000000"])
        .args(tls_args(&ca.cert))
        .args(["-i", &server.tls_url("live/sni")])
        .args([
            "-t",
            "40",
            "-c",
            "copy",
            "-flush_packets",
            "1",
            "-f",
            "flv",
            "-y",
        ])
        .arg(&rec);
    let mut player = spawn_quiet(&mut cmd);
    let size = || std::fs::metadata(&rec).map(|m| m.len()).unwrap_or(0);
    poll(Duration::from_secs(10), || (size() > 100_000).then_some(()))
        .unwrap_or_else(|| panic!("RTMPS player got nothing: {}", stderr_of(&mut player)));
    thread::sleep(Duration::from_secs(1));

    // Renewal: new certificates and keys written over the default's and a.test's files
    // (a.test's now RSA), then SIGHUP.
    ca.issue_to(
        &default,
        "default-two",
        &["IP:127.0.0.1", "DNS:localhost"],
        KeyKind::EcPkcs8,
    );
    ca.issue_to(&a, "a.test two", &["DNS:a.test"], KeyKind::RsaPkcs1);
    assert!(cert_subject(&default.cert).ends_with("CN = default-two"));
    let t_hup = Instant::now();
    let at_hup = size();
    server.signal("HUP");
    let seen = poll(Duration::from_secs(10), || {
        let got = subject_for(tls, None, &ca.cert);
        got.ends_with("CN = default-two").then_some(got)
    })
    .unwrap_or_else(|| {
        panic!(
            "still the old certificate after SIGHUP: {}\n{:#?}",
            subject_for(tls, None, &ca.cert),
            server.log_lines()
        )
    });
    eprintln!("after SIGHUP ({:?}): {seen}", t_hup.elapsed());
    let renewed = subject_for(tls, Some("a.test"), &ca.cert);
    assert!(
        renewed.ends_with("CN = a.test two"),
        "a.test after SIGHUP: {renewed}"
    );
    assert!(subject_for(tls, Some("b.test"), &ca.cert).ends_with("CN = b.test"));

    // The player from before the reload keeps receiving.
    thread::sleep(Duration::from_secs(3));
    let after = size();
    assert!(
        player.wait_timeout(Duration::ZERO).is_none(),
        "RTMPS player quit across the reload: {}",
        stderr_of(&mut player)
    );
    eprintln!(
        "RTMPS player file: {at_hup} bytes at SIGHUP, {after} bytes {:?} later",
        t_hup.elapsed()
    );
    // ~80 KB/s of media: 3 s should bring well over 100 KB.
    assert!(
        after > at_hup + 100_000,
        "player stalled across the reload: {at_hup} -> {after}"
    );
    player.kill();
    let frames = ffprobe_frames(s(&rec), 0, Some("v:0"));
    let span = frames
        .frames
        .iter()
        .filter_map(|f| f.pts_time)
        .fold((f64::MAX, f64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    eprintln!(
        "RTMPS player: {} video frames over {:.1} s",
        frames.len(),
        span.1 - span.0
    );
    assert!(frames.len() >= 150, "{} frames", frames.len());
    publisher.assert_running();
}

/// A player (ffmpeg, stream copy to nowhere) tagged with flashVer `agent`; `extra` before
/// the input.
fn tagged_player(url: &str, agent: &str, extra: &[String]) -> Proc {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-rtmp_flashver", agent])
        .args(extra)
        .args(["-i", url, "-t", "30", "-c", "copy", "-f", "null", "-"]);
    spawn_quiet(&mut cmd)
}

/// 6: /api/v1/clients shows a TLS player's version, cipher and SNI (it connected to
/// `localhost`), and `"tls": null` for plain clients; the handshake is counted.
#[test]
fn api_clients_show_tls_details() {
    if !have(&["openssl", "ffmpeg", "ffprobe"]) {
        return;
    }
    let (_dir, ca, server) = tls_server("api", KeyKind::EcPkcs8, &[]);
    let mut publisher = Publisher::live(&server, "live/api");
    let tls_url = format!("rtmps://localhost:{}/live/api", server.tls_addr().port());
    let mut tls_player = tagged_player(&tls_url, "tls-player/1", &tls_args(&ca.cert));
    let mut plain_player = tagged_player(&server.url("live/api"), "plain-player/1", &[]);

    let by_agent = |list: &[Value], agent: &str| -> Option<Value> {
        list.iter().find(|c| c["agent"] == agent).cloned()
    };
    let clients = poll(Duration::from_secs(15), || {
        let v = api(&server, "/api/v1/clients");
        let list = v["clients"].as_array().cloned().unwrap_or_default();
        let both = by_agent(&list, "tls-player/1").is_some_and(|c| c["role"] == "player")
            && by_agent(&list, "plain-player/1").is_some_and(|c| c["role"] == "player");
        both.then_some(list)
    })
    .unwrap_or_else(|| {
        panic!(
            "players not listed: {}\ntls player: {}\nplain player: {}",
            api(&server, "/api/v1/clients"),
            stderr_of(&mut tls_player),
            stderr_of(&mut plain_player)
        )
    });
    let tls_c = by_agent(&clients, "tls-player/1").unwrap();
    let plain_c = by_agent(&clients, "plain-player/1").unwrap();
    eprintln!("TLS player: {tls_c}\nplain player: {plain_c}");
    let t = &tls_c["tls"];
    let version = t["version"].as_str().unwrap_or_else(|| panic!("{tls_c}"));
    assert!(
        version.contains("1_3") || version.contains("1.3"),
        "TLS version {version}"
    );
    assert!(
        t["cipher"].as_str().is_some_and(|c| !c.is_empty()),
        "{tls_c}"
    );
    assert_eq!(t["sni"], "localhost", "{tls_c}");
    assert!(
        plain_c.as_object().unwrap().contains_key("tls") && plain_c["tls"].is_null(),
        "plain player: {plain_c}"
    );
    let publ = clients
        .iter()
        .find(|c| c["role"] == "publisher")
        .expect("publisher listed");
    assert!(publ["tls"].is_null(), "plain publisher: {publ}");

    let m = scrape(&server);
    let n = metric(&m, "rtmp_tls_handshakes_total", &[("version", "TLSv1_3")]).unwrap_or(0.0);
    assert!(
        n >= 1.0,
        "rtmp_tls_handshakes_total: {:#?}",
        m.lines()
            .filter(|l| l.contains("rtmp_tls"))
            .collect::<Vec<_>>()
    );
    assert!(m
        .lines()
        .any(|l| l.starts_with("rtmp_tls_handshakes_total{") && l.contains("cipher=\"")));
    assert_eq!(
        metric(&m, "rtmp_tls_handshake_failures_total", &[]),
        Some(0.0),
        "handshake failures with well-behaved clients"
    );

    // A TLS 1.2 client is served too, and counted under its version.
    let sc = s_client_with(server.tls_addr(), None, &ca.cert, &["-tls1_2"]);
    assert!(
        sc.verified && sc.session.as_deref().is_some_and(|l| l.contains("TLSv1.2")),
        "TLS 1.2: {}",
        sc.output
    );
    eprintln!("s_client -tls1_2: {}", sc.session.unwrap_or_default());
    poll(Duration::from_secs(5), || {
        let m = scrape(&server);
        metric(&m, "rtmp_tls_handshakes_total", &[("version", "TLSv1_2")]).filter(|n| *n >= 1.0)
    })
    .unwrap_or_else(|| panic!("no TLSv1_2 handshake counted"));

    assert!(tls_player.wait_timeout(Duration::ZERO).is_none());
    assert!(plain_player.wait_timeout(Duration::ZERO).is_none());
    publisher.assert_running();
}

/// 0: the tools the other tests stand on, with no rtmp-edge at all: openssl makes a CA
/// and certificates with every key encoding the server must read; stunnel4 (RSA key) in
/// front of nginx-rtmp serves TLS that `s_client` verifies against the CA and not against
/// another; ffmpeg publishes over rtmps:// through it with `-tls_verify 1 -ca_file`, and
/// ffprobe decodes it back over rtmps:// (and refuses with the wrong CA). Also reports
/// whether Debian's rtmpdump can play rtmps:// (test 1 skips that part if not).
#[test]
fn reference_tls_stack_stunnel_nginx() {
    if !have(&["openssl", "ffmpeg", "ffprobe", "stunnel4", "nginx-rtmp"]) {
        return;
    }
    let dir = TestDir::new("ref");
    let ca = Ca::new(&dir, "ca", "rtmp-edge test CA");
    let wrong = Ca::new(&dir, "wrong", "some other CA");
    for (i, kind) in [KeyKind::EcPkcs8, KeyKind::EcSec1, KeyKind::RsaPkcs1]
        .into_iter()
        .enumerate()
    {
        let c = ca.issue_loopback(&format!("k{i}"), &format!("kind {kind:?}"), kind);
        let v = openssl(&["verify", "-CAfile", s(&ca.cert), s(&c.cert)]);
        assert!(v.contains(": OK"), "{kind:?}: {v}");
        let key = std::fs::read_to_string(&c.key).unwrap();
        assert!(key.starts_with(kind.pem_label()), "{kind:?}");
    }
    let cert = ca.issue_loopback("stunnel", "stunnel reference", KeyKind::RsaPkcs1);
    let nginx = Nginx::start();
    let st = Stunnel::start(&cert, nginx.addr);
    let sc = s_client(st.addr, None, &ca.cert);
    eprintln!("s_client: {:?} {:?}", sc.subject, sc.session);
    assert!(sc.verified, "{}", sc.output);
    assert_eq!(
        sc.subject.as_deref(),
        Some("subject=CN = stunnel reference")
    );
    let bad = s_client(st.addr, Some("localhost"), &wrong.cert);
    assert!(
        !bad.verified,
        "verified against the wrong CA: {}",
        bad.output
    );

    let url = format!("rtmps://{}/live/ref", st.addr);
    let mut publisher = TlsPublisher::start(&test_media_locked(), &url, &ca.cert, 60);
    let probe = assert_decodes_with(&url, 5, 100, &tls_args(&ca.cert));
    eprintln!(
        "ffmpeg -> stunnel -> nginx -> stunnel -> ffprobe: {} video / {} audio",
        probe.count("video"),
        probe.count("audio")
    );
    let refused = ffprobe(
        &url,
        2,
        true,
        &["-tls_verify", "1", "-ca_file", s(&wrong.cert)],
    );
    assert!(
        !refused.status.success() && refused.count("video") == 0,
        "ffprobe accepted the wrong CA: {refused:?}"
    );
    eprintln!("ffprobe with the wrong CA: {}", refused.stderr.trim());
    if have(&["rtmpdump"]) {
        let (ok13, err13) = rtmpdump(&url, 3, &dir.join("ref13.flv"), None);
        let (ok12, err12) = rtmpdump(&url, 3, &dir.join("ref12.flv"), Some(&dir));
        eprintln!(
            "rtmpdump over rtmps via stunnel: TLS 1.3 offered: {}; TLS 1.2 only: {}",
            if ok13 {
                "works".into()
            } else {
                format!("fails: {}", error_lines(&err13))
            },
            if ok12 {
                "works".into()
            } else {
                format!("fails: {}", error_lines(&err12))
            },
        );
        assert!(ok12, "rtmpdump over TLS 1.2 fails against stunnel: {err12}");
    }
    publisher.assert_running();
    let err = publisher.finish();
    assert!(err.trim().is_empty(), "publisher stderr: {err}");
}

/// 7: an RTMPS publisher accepted by a shard that does not own its stream is handed to the
/// owner with its socket and its TLS session (keys, sequence numbers, decrypted bytes not yet
/// read): the stream goes on and plays over RTMPS. Publishers are added until one was handed
/// over (the kernel spreads connections across the shards' listeners).
#[test]
fn rtmps_publisher_handed_to_owner_shard_keeps_streaming() {
    if !have(&["openssl", "ffmpeg", "ffprobe"]) {
        return;
    }
    let (_dir, ca, server) = tls_server("handoff", KeyKind::EcPkcs8, &["--shards", "2"]);
    let media = test_media_locked();
    let mut publishers = Vec::new();
    let mut moved = None;
    for i in 0..16 {
        let key = format!("live/h{i}");
        publishers.push(TlsPublisher::start(
            &media,
            &server.tls_url(&key),
            &ca.cert,
            60,
        ));
        wait_published(&server, &key);
        let quoted = format!("key=\"{key}\"");
        if server.count_log(&["handing publisher to owner shard", &quoted]) > 0 {
            moved = Some(key);
            break;
        }
    }
    let key = moved.expect("no RTMPS publisher of 16 was handed to another shard");
    // Give the owner a few seconds of the adopted connection before playing it.
    thread::sleep(Duration::from_secs(2));
    let probe = assert_decodes_with(&server.tls_url(&key), 4, 80, &tls_args(&ca.cert));
    eprintln!(
        "{key} after the hand-off: {} video / {} audio over rtmps",
        probe.count("video"),
        probe.count("audio")
    );
    assert!(probe.count("audio") > 0, "no audio after the hand-off");
    for p in &mut publishers {
        p.assert_running();
    }
    assert_eq!(
        server.count_log(&["TLS record error"]),
        0,
        "{:#?}",
        server.log_lines()
    );
}
