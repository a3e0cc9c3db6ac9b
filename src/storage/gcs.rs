//! Google Cloud Storage through its JSON API: an object is a multipart upload (metadata
//! with Cache-Control and Content-Type, then the bytes), a removal a DELETE. With a
//! service-account key the requests carry an OAuth token, got by signing a JWT (RS256,
//! ring) and kept until shortly before it expires; an emulator (STORAGE_EMULATOR_HOST, or
//! `?endpoint=` without `credentials`) gets none.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use hyper::{Method, Request};
use ring::signature::RsaKeyPair;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;

use super::http::{file_body, full, Body, HttpClient, Origin};
use super::target::GcsConfig;
use super::Content;
use super::StorageError;

const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
const BOUNDARY: &str = "rtmp-edge-object-boundary";

/// A service account's key: who it is, how it signs, where tokens come from.
struct Account {
    email: String,
    key: RsaKeyPair,
    token_origin: Origin,
    token_path: String,
}

pub struct Gcs {
    cfg: GcsConfig,
    origin: Origin,
    account: Option<Account>,
    token: Mutex<Option<(String, Instant)>>,
}

impl Gcs {
    pub fn new(cfg: GcsConfig) -> Result<Gcs, StorageError> {
        let origin = Origin::parse(&cfg.endpoint)?;
        let account = match &cfg.credentials_file {
            Some(path) => Some(read_account(path)?),
            None => None,
        };
        Ok(Gcs {
            cfg,
            origin,
            account,
            token: Mutex::new(None),
        })
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn put_request(
        &self,
        key: &str,
        content: Content,
        content_type: &str,
        cache_control: &str,
        token: Option<&str>,
    ) -> Result<Request<Body>, StorageError> {
        let uri = format!(
            "/upload/storage/v1/b/{}/o?uploadType=multipart",
            encode(&self.cfg.bucket)
        );
        let (head, tail) = multipart(key, content_type, cache_control);
        let framing = (head.len() + tail.len()) as u64;
        let (body, len) = match content {
            Content::Memory(b) => {
                let len = b.len() as u64;
                (full(Bytes::from([head, b, tail].concat())), len)
            }
            Content::File(f, len) => (file_body(head, f, len, tail), len),
        };
        self.request(
            Method::POST,
            &uri,
            &format!("multipart/related; boundary={BOUNDARY}"),
            body,
            len + framing,
            token,
        )
    }

    pub fn delete_request(
        &self,
        key: &str,
        token: Option<&str>,
    ) -> Result<Request<Body>, StorageError> {
        let uri = format!(
            "/storage/v1/b/{}/o/{}",
            encode(&self.cfg.bucket),
            encode(key)
        );
        self.request(Method::DELETE, &uri, "", full(Bytes::new()), 0, token)
    }

    fn request(
        &self,
        method: Method,
        uri: &str,
        content_type: &str,
        body: Body,
        len: u64,
        token: Option<&str>,
    ) -> Result<Request<Body>, StorageError> {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", self.origin.authority())
            .header("content-length", len.to_string());
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.body(body)
            .map_err(|e| StorageError::Request(e.to_string()))
    }

    /// Drops the cached token (the target refused it).
    pub fn forget_token(&self) {
        if let Ok(mut t) = self.token.lock() {
            *t = None;
        }
    }

    /// An access token for the service account (none for an emulator), fetched when the
    /// cached one is within a minute of expiring.
    pub async fn token(&self, http: &HttpClient) -> Result<Option<String>, StorageError> {
        let Some(acct) = &self.account else {
            return Ok(None);
        };
        if let Some((t, until)) = self.token.lock().ok().and_then(|t| t.clone()) {
            if Instant::now() < until {
                return Ok(Some(t));
            }
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aud = format!("{}{}", origin_url(&acct.token_origin), acct.token_path);
        let jwt = jwt(acct, &aud, now)?;
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}"
        );
        let req = Request::builder()
            .method(Method::POST)
            .uri(acct.token_path.as_str())
            .header("host", acct.token_origin.authority())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", form.len().to_string())
            .body(full(Bytes::from(form)))
            .map_err(|e| StorageError::Request(e.to_string()))?;
        let reply = http.send(&acct.token_origin, req).await?;
        if reply.status != 200 {
            return Err(StorageError::Status {
                status: reply.status,
                body: String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)])
                    .into_owned(),
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&reply.body)
            .map_err(|e| StorageError::Http(format!("token answer: {e}")))?;
        let token = v["access_token"]
            .as_str()
            .ok_or_else(|| StorageError::Http("token answer without access_token".into()))?
            .to_string();
        let life = v["expires_in"].as_u64().unwrap_or(3600).saturating_sub(60);
        if let Ok(mut t) = self.token.lock() {
            *t = Some((token.clone(), Instant::now() + Duration::from_secs(life)));
        }
        Ok(Some(token))
    }
}

/// What goes around an object's bytes in a multipart/related upload: its metadata
/// (JSON) before, the closing boundary after.
fn multipart(key: &str, content_type: &str, cache_control: &str) -> (Bytes, Bytes) {
    let meta = serde_json::json!({
        "name": key,
        "contentType": content_type,
        "cacheControl": cache_control,
    });
    let head = format!(
        "--{BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n\
         --{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n"
    );
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    (Bytes::from(head), Bytes::from(tail))
}

fn origin_url(o: &Origin) -> String {
    format!(
        "{}://{}",
        if o.https { "https" } else { "http" },
        o.authority()
    )
}

fn read_account(path: &std::path::Path) -> Result<Account, StorageError> {
    let bad = |why: String| StorageError::Url {
        url: format!("credentials {}", path.display()),
        why,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let field = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(format!("no \"{k}\" (a service-account key file)")))
    };
    let email = field("client_email")?;
    let pem = field("private_key")?;
    let token_uri = v["token_uri"]
        .as_str()
        .unwrap_or("https://oauth2.googleapis.com/token");
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| bad(format!("private_key: {e}")))?;
    let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
        .map_err(|e| bad(format!("private_key: {e}")))?;
    let (scheme_host, path) = match token_uri.find("://").map(|i| i + 3) {
        Some(start) => match token_uri[start..].find('/') {
            Some(p) => token_uri.split_at(start + p),
            None => (token_uri, "/"),
        },
        None => return Err(bad("token_uri is not a URL".into())),
    };
    Ok(Account {
        email,
        key,
        token_origin: Origin::parse(scheme_host)?,
        token_path: path.to_string(),
    })
}

/// The signed assertion a token request carries (RFC 7523).
fn jwt(acct: &Account, aud: &str, now: u64) -> Result<String, StorageError> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": acct.email,
        "scope": SCOPE,
        "aud": aud,
        "iat": now,
        "exp": now + 3600,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let mut sig = vec![0; acct.key.public().modulus_len()];
    acct.key
        .sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| StorageError::Request("signing the token request failed".into()))?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// An object name or bucket in a JSON API path: `/` escaped too.
fn encode(s: &str) -> String {
    super::uri_encode(s, true)
}

#[cfg(test)]
mod tests;
