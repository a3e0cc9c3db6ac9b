use super::*;

/// A throwaway RSA key (made for this test with `openssl genpkey`), in a service-account
/// file's shape.
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDqV7FJsOX+k0eO\n/A68ChTHk0AlMXBAB3imi7edNafZyW54a+oK8oApOss7KA5EJznQ60nABwqIJDA2\na8JuD7ZYpxV5QelMp3KYxtmfNhYCbWhjULnrfVPnO6UT0oND+ObZMuEyz0qsA2pJ\nh1Owip0wUgMLTkYyTyC13iFoC5NGXfbP2U7cnHBLtxGeJVY/mx0T+213u8DgAfH0\nvTnW7y+cpGVg23Ax4dpnWvE3CwusyiW1w7/pEyHNoV5+kR4XzFtDOYaXpsyEbjje\nVCRoPcvaSNtOEg0YdRq5javDorpv7fSDgjTfvMpYvNQ7AVKa8spUre9v5Ne3MN++\nW/RP+CIxAgMBAAECggEAA0Oe73rrgorMeEkzBFePt5din3yrVOeng7VBAS7xyMhl\nsGLia9GrvQ5kWD8uubBa9oDgDrDhhyVvAe4pRRDqkqq3k3A6dBowqOstQ8cZjsWZ\nFWKd8iAxzb42v3UhV1VmWuKlZ+GGWTejhCwtPvGG5ArUZqLxD96cdLlkjqyl71HD\nay6n0Ty15sh0UlM0bKLUVr0ZXOsclkGQnQbGwXGhUOI7SDTF70f2U1c/udsf9gId\nalGkf8mt2EIqPZDTibUWlEx3t802bDGHL+yOB+utDJqNCPmcIR6WukGgS+NNxkxF\nyatZ/y2dtheQJsOVl5opwCGIxK7yj2VIad6Ehv0pRQKBgQD6iTmTzg6rMSIqBYo2\nz2jHAhwc8Iqp9sTj+QbDcL23nBZXbiB22W/sBpNVnab+zres1dhvo7ck8Xrnvu/N\nZRc/0IpafLDxKmI7IQ2/aD/OTlvqhgMoIf0j3DeE0/9lSxc3GPPbnm1z6Fl4WXdJ\n3uCL4N2aEmEVsXO01J49Rz7etQKBgQDvdA6qwGHHxRDAJcR0zkw4qspK0Cy/v3Mj\nPVutd3bfyIg2WTrsPkLJsDFOVy3uNzzU8Fryg/Sx+jlwvXoaVqBeM0jY2V2KQQAh\nInPgfBz4uV4A4D6CG1LnYfo9Wf0uwgCyGyFEQMGfkx/SeffthtVgO5GTMfSMxo1e\nIMfQ/PxnDQKBgHZ6DlBnUWiDg7R7ijEBRHtX9BN7bReTKujkCt7BofYCSk5uNcv+\nZ38mXOZP93joKNQDDKc+tI0z5PtSv/RRqfzzkXnZHZPuhyWPLAEoO4REahMt7LA9\n4ofizB50YoJ0UDYuBqQE952ocycGp/K3A1kiraj+qAqqMB2DrpEr7/9BAoGBAKeG\nv/gwjnhwZA66nZ7G8ka3Hr6GtLgWXpxqAijzqsRYDQxRE0tTJ/DphyVzEtxV4wZr\nfoWrUlfuY59/wNyKfLpLEQ09zha68Tc9XmrRCoftUFo2iSUHrtHZF3Uy71J2QnxZ\nRMX2tEBLc3kTAiU5LzGbm3aq/Zg8FY2kS4foZ0JFAoGBAJMg7ZKDr8ru6f+2AmNa\nIx/quES3SF7pKM31CrqmL5wwyTLCl8jqXOMfi15K/blO1LhGq6JdzrbyEM7qB0qv\nXGQu85YbQMoMBl22EmFAKOgB4yGojfBm/nmQci57w4xHP3iaiV7BxtEuxTHtjGys\nTK2rxux5rE3QTLsnzKTNdAXQ\n-----END PRIVATE KEY-----";

fn account_file(token_uri: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("rtmp-edge-sa-{}.json", std::process::id()));
    let json = serde_json::json!({
        "type": "service_account",
        "client_email": "edge@project.iam.gserviceaccount.com",
        "private_key": TEST_KEY,
        "token_uri": token_uri,
    });
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

#[test]
fn the_token_request_is_a_jwt_the_key_signed() {
    let path = account_file("https://oauth2.googleapis.com/token");
    let acct = read_account(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(acct.token_path, "/token");
    assert_eq!(acct.token_origin.authority(), "oauth2.googleapis.com");
    let jwt = jwt(&acct, "https://oauth2.googleapis.com/token", 1_796_485_565).unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], "edge@project.iam.gserviceaccount.com");
    assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
    assert_eq!(claims["scope"], SCOPE);
    assert_eq!(claims["exp"], 1_796_485_565u64 + 3600);
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        acct.key.public().as_ref().to_vec(),
    );
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let input = format!("{}.{}", parts[0], parts[1]);
    public
        .verify(input.as_bytes(), &sig)
        .expect("a valid RS256 signature");
    assert!(public.verify(b"other", &sig).is_err());
}

#[test]
fn uploads_are_multipart_with_metadata() {
    let g = Gcs::new(GcsConfig {
        bucket: "media".into(),
        endpoint: "http://127.0.0.1:4443".into(),
        credentials_file: None,
    })
    .unwrap();
    let r = g
        .put_request(
            "edge/live/a b/seg-1.m4s",
            Content::Memory(Bytes::from_static(b"abcd")),
            "video/iso.segment",
            "max-age=60",
            None,
        )
        .unwrap();
    assert_eq!(
        r.uri().to_string(),
        "/upload/storage/v1/b/media/o?uploadType=multipart"
    );
    assert!(r.headers().get("authorization").is_none());
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("multipart/related; boundary="));
    let (head, tail) = multipart("edge/live/a b/seg-1.m4s", "video/iso.segment", "max-age=60");
    let body = format!(
        "{}abcd{}",
        String::from_utf8_lossy(&head),
        String::from_utf8_lossy(&tail)
    );
    let len: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(len, body.len());
    assert!(
        body.contains(r#""name":"edge/live/a b/seg-1.m4s""#),
        "{body}"
    );
    assert!(body.contains(r#""cacheControl":"max-age=60""#), "{body}");
    assert!(body.contains("\r\n\r\nabcd\r\n--"), "{body}");
    let d = g
        .delete_request("edge/live/x/seg-1.m4s", Some("tok"))
        .unwrap();
    assert_eq!(
        d.uri().path(),
        "/storage/v1/b/media/o/edge%2Flive%2Fx%2Fseg-1.m4s"
    );
    assert_eq!(d.headers()["authorization"], "Bearer tok");
}

#[test]
fn bad_key_files_say_why() {
    let path = std::env::temp_dir().join(format!("rtmp-edge-sa-bad-{}.json", std::process::id()));
    std::fs::write(&path, r#"{"client_email":"x"}"#).unwrap();
    let e = read_account(&path).err().unwrap().to_string();
    let _ = std::fs::remove_file(&path);
    assert!(e.contains("private_key"), "{e}");
}
