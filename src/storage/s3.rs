//! S3 requests (PUT and DELETE of an object), signed with AWS Signature Version 4 from the
//! hmac/sha2 crates the project already has. The payload is sent as `UNSIGNED-PAYLOAD`:
//! segments are not hashed twice, and TLS protects them on the way.

use std::time::SystemTime;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use hyper::{Method, Request};
use sha2::{Digest, Sha256};

use super::http::{full, Body, Origin};
use super::target::S3Config;
use super::StorageError;

type HmacSha256 = Hmac<Sha256>;

pub struct S3 {
    cfg: S3Config,
    origin: Origin,
}

impl S3 {
    pub fn new(cfg: S3Config) -> Result<S3, StorageError> {
        let base = Origin::parse(&cfg.endpoint)?;
        let origin = if cfg.path_style {
            base
        } else {
            base.with_host(format!("{}.{}", cfg.bucket, base.host))
        };
        Ok(S3 { cfg, origin })
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    fn path(&self, key: &str) -> String {
        if self.cfg.path_style {
            format!(
                "/{}/{}",
                super::uri_encode(&self.cfg.bucket, false),
                super::uri_encode(key, false)
            )
        } else {
            format!("/{}", super::uri_encode(key, false))
        }
    }

    /// `PUT` of `key` with its body and headers, signed at `now`.
    pub fn put(
        &self,
        key: &str,
        body: Body,
        len: u64,
        content_type: &str,
        cache_control: &str,
        now: SystemTime,
    ) -> Result<Request<Body>, StorageError> {
        let headers = [
            ("cache-control", cache_control.to_string()),
            ("content-length", len.to_string()),
            ("content-type", content_type.to_string()),
        ];
        self.request(Method::PUT, key, &headers, body, now)
    }

    pub fn delete(&self, key: &str, now: SystemTime) -> Result<Request<Body>, StorageError> {
        self.request(Method::DELETE, key, &[], full(Bytes::new()), now)
    }

    fn request(
        &self,
        method: Method,
        key: &str,
        extra: &[(&str, String)],
        body: Body,
        now: SystemTime,
    ) -> Result<Request<Body>, StorageError> {
        let path = self.path(key);
        let mut headers: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        headers.push(("host".into(), self.origin.authority()));
        if let Some((id, secret, token)) = &self.cfg.credentials {
            let date = amz_date(now);
            headers.push(("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()));
            headers.push(("x-amz-date".into(), date.clone()));
            if let Some(t) = token {
                headers.push(("x-amz-security-token".into(), t.clone()));
            }
            let auth = authorization(&Signing {
                method: method.as_str(),
                path: &path,
                query: "",
                headers: &headers,
                payload_hash: "UNSIGNED-PAYLOAD",
                date: &date,
                region: &self.cfg.region,
                id,
                secret,
            });
            headers.push(("authorization".into(), auth));
        }
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req.body(body)
            .map_err(|e| StorageError::Request(e.to_string()))
    }
}

/// `20130524T000000Z`
fn amz_date(now: SystemTime) -> String {
    let c = crate::util::time::Civil::from_system(now);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// What a request's signature covers.
struct Signing<'a> {
    method: &'a str,
    /// Already URI-encoded.
    path: &'a str,
    /// Canonical query string (sorted, encoded), or empty.
    query: &'a str,
    /// Every header to sign, names lowercase.
    headers: &'a [(String, String)],
    payload_hash: &'a str,
    /// `x-amz-date`.
    date: &'a str,
    region: &'a str,
    id: &'a str,
    secret: &'a str,
}

/// The `Authorization` header of Signature Version 4 (service `s3`).
fn authorization(s: &Signing) -> String {
    let mut headers: Vec<(String, String)> = s
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
        s.method, s.path, s.query, s.payload_hash
    );
    let day = &s.date[..8];
    let scope = format!("{day}/{}/s3/aws4_request", s.region);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        s.date,
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{}", s.secret).as_bytes(), day.as_bytes());
    for part in [s.region, "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        s.id
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's own example ("Example: GET Object" in the Signature Version 4 docs for S3).
    #[test]
    fn signs_the_documented_example() {
        let headers = vec![
            (
                "host".to_string(),
                "examplebucket.s3.amazonaws.com".to_string(),
            ),
            ("range".to_string(), "bytes=0-9".to_string()),
            (
                "x-amz-content-sha256".to_string(),
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_string(),
            ),
            ("x-amz-date".to_string(), "20130524T000000Z".to_string()),
        ];
        let auth = authorization(&Signing {
            method: "GET",
            path: "/test.txt",
            query: "",
            headers: &headers,
            payload_hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            date: "20130524T000000Z",
            region: "us-east-1",
            id: "AKIAIOSFODNN7EXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        });
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn requests_by_addressing_style() {
        let mut cfg = S3Config {
            bucket: "media".into(),
            endpoint: "http://127.0.0.1:18333".into(),
            region: "us-east-1".into(),
            path_style: true,
            credentials: Some(("AK".into(), "SK".into(), None)),
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_485_565);
        let s3 = S3::new(cfg.clone()).unwrap();
        let r = s3
            .put(
                "live/a b/seg-1.m4s",
                full(Bytes::from_static(b"xy")),
                2,
                "video/iso.segment",
                "max-age=60",
                at,
            )
            .unwrap();
        assert_eq!(r.uri().path(), "/media/live/a%20b/seg-1.m4s");
        assert_eq!(r.headers()["host"], "127.0.0.1:18333");
        assert_eq!(r.headers()["x-amz-date"], "20261205T154605Z");
        assert_eq!(r.headers()["content-length"], "2");
        let auth = r.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.contains("Credential=AK/20261205/us-east-1/s3/aws4_request"),
            "{auth}"
        );
        assert!(
            auth.contains("cache-control;content-length;content-type;host;"),
            "{auth}"
        );
        cfg.path_style = false;
        cfg.credentials = None;
        let s3 = S3::new(cfg).unwrap();
        let r = s3.delete("k", at).unwrap();
        assert_eq!((r.uri().path(), r.method()), ("/k", &Method::DELETE));
        assert_eq!(r.headers()["host"], "media.127.0.0.1:18333");
        assert!(r.headers().get("authorization").is_none(), "anonymous");
    }
}
