//! Client and server sessions talking to each other in memory, with the checked-in test
//! CA (testdata/: a P-256 CA and a leaf for localhost, a.test and 127.0.0.1).

use std::io::IoSlice;
use std::path::PathBuf;

use super::*;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/tls/testdata")
        .join(name)
}

fn acceptor() -> Acceptor {
    Acceptor::new(&[CertConfig {
        names: vec![],
        cert: data("server.pem"),
        key: data("server.key"),
    }])
    .unwrap()
}

/// Moves ciphertext both ways until neither side has any left; returns the first error.
fn pump(client: &mut TlsSession, server: &mut TlsSession) -> Result<(), (bool, TlsError)> {
    for _ in 0..20 {
        let mut c2s = Vec::new();
        client.write_to(&mut c2s);
        let mut s2c = Vec::new();
        server.write_to(&mut s2c);
        if c2s.is_empty() && s2c.is_empty() {
            return Ok(());
        }
        server.feed(&c2s).map_err(|e| (true, e))?;
        client.feed(&s2c).map_err(|e| (false, e))?;
    }
    Ok(())
}

fn read_all(s: &mut TlsSession) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 7]; // smaller than what arrives: reads come in pieces
    loop {
        let n = s.read_plain(&mut buf);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn handshake_and_data_both_ways() {
    let tls = ClientTls::new(Some(&data("ca.pem"))).unwrap();
    let mut client = tls.session("localhost").unwrap();
    let mut server = acceptor().session().unwrap();
    pump(&mut client, &mut server).unwrap();
    assert!(!client.is_handshaking() && !server.is_handshaking());
    let info = server.info().unwrap();
    assert_eq!(info.sni.as_deref(), Some("localhost"));
    assert_eq!(info.version, "TLSv1_3");
    assert!(info.cipher.starts_with("TLS13_"), "{info:?}");

    // Several buffers sealed at once arrive as one byte stream.
    let big = vec![7u8; 40_000];
    let parts = [
        IoSlice::new(b"hello "),
        IoSlice::new(&big),
        IoSlice::new(b" world"),
    ];
    server.seal(&parts).unwrap();
    let mut wire = Vec::new();
    server.write_to(&mut wire);
    // 40 KB in full-size records (3), not one record per buffer.
    assert!(
        wire.len() < 40_012 + 3 * 30,
        "{} bytes of ciphertext",
        wire.len()
    );
    // Fed in odd pieces, as a socket delivers it.
    for piece in wire.chunks(1000) {
        client.feed(piece).unwrap();
    }
    let got = read_all(&mut client);
    assert_eq!(got.len(), 40_012);
    assert!(got.starts_with(b"hello ") && got.ends_with(b" world"));

    client.seal(&[IoSlice::new(b"ack")]).unwrap();
    pump(&mut client, &mut server).unwrap();
    assert_eq!(read_all(&mut server), b"ack");

    client.close();
    pump(&mut client, &mut server).unwrap();
    assert!(server.peer_closed());
}

#[test]
fn untrusted_server_is_refused_with_a_reason() {
    let mut client = ClientTls::public().session("localhost").unwrap();
    let mut server = acceptor().session().unwrap();
    let (at_server, err) = pump(&mut client, &mut server).unwrap_err();
    assert!(!at_server);
    assert_eq!(err.reason(), "unknown_ca", "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[test]
fn wrong_name_is_refused() {
    let tls = ClientTls::new(Some(&data("ca.pem"))).unwrap();
    let mut client = tls.session("b.test").unwrap();
    let mut server = acceptor().session().unwrap();
    let (_, err) = pump(&mut client, &mut server).unwrap_err();
    assert_eq!(err.reason(), "cert_name_mismatch", "{err}");
}

#[test]
fn ip_address_targets_verify_ip_names() {
    let tls = ClientTls::new(Some(&data("ca.pem"))).unwrap();
    let mut client = tls.session("127.0.0.1").unwrap();
    let mut server = acceptor().session().unwrap();
    pump(&mut client, &mut server).unwrap();
    assert_eq!(server.info().unwrap().sni, None);
}

#[test]
fn plain_rtmp_on_a_tls_port_is_not_tls() {
    let mut server = acceptor().session().unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(0u8, 1536));
    let err = server.feed(&c0c1).unwrap_err();
    assert_eq!(err.reason(), "not_tls", "{err}");
    // It answers with an alert, which the caller may send before closing.
    assert!(server.wants_write());
}

#[test]
fn certificate_files_are_checked() {
    let bad = [CertConfig {
        names: vec![],
        cert: data("server.pem"),
        key: data("ca.pem"), // not a key
    }];
    let e = Acceptor::new(&bad).unwrap_err();
    assert!(e.to_string().contains("ca.pem"), "{e}");
    let missing = [CertConfig {
        names: vec![],
        cert: data("nope.pem"),
        key: data("server.key"),
    }];
    assert!(Acceptor::new(&missing)
        .unwrap_err()
        .to_string()
        .contains("nope.pem"));
    assert!(ClientTls::new(Some(&data("server.key"))).is_err());
    // A failed reload keeps the working certificates.
    let a = acceptor();
    assert!(a.reload(&missing).is_err());
    let tls = ClientTls::new(Some(&data("ca.pem"))).unwrap();
    let mut client = tls.session("localhost").unwrap();
    let mut server = a.session().unwrap();
    pump(&mut client, &mut server).unwrap();
}

#[test]
fn trust_settings_compare_by_ca_contents() {
    let a = ClientTls::new(Some(&data("ca.pem"))).unwrap();
    let b = ClientTls::new(Some(&data("ca.pem"))).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, ClientTls::public());
    assert_eq!(ClientTls::public(), ClientTls::public());
}

#[test]
fn plaintext_before_a_bad_record_is_delivered_then_the_failure() {
    let tls = ClientTls::new(Some(&data("ca.pem"))).unwrap();
    let mut client = tls.session("localhost").unwrap();
    let mut server = acceptor().session().unwrap();
    pump(&mut client, &mut server).unwrap();
    client.seal(&[IoSlice::new(b"deleteStream")]).unwrap();
    let mut wire = Vec::new();
    client.write_to(&mut wire);
    // A record that cannot decrypt right behind it, in the same read.
    wire.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x20]);
    wire.extend_from_slice(&[0xAB; 32]);
    server.feed(&wire).unwrap();
    assert_eq!(read_all(&mut server), b"deleteStream");
    let err = server.take_failure().expect("the bad record is reported");
    assert_eq!(err.reason(), "other", "{err}");
    // Alone, a bad record fails at once.
    let mut server = acceptor().session().unwrap();
    assert!(server.feed(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00]).is_err());
}
