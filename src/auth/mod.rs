//! Publish and play authorization: who may publish or play which stream.
//!
//! Owns the decision for one request ([`Auth::check`]); the connection code only says what
//! was asked ([`AuthRequest`]) and turns a [`DenyReason`] into an RTMP status
//! (`NetStream.Publish.Unauthorized`, `NetStream.Play.Failed`) and a closed connection.
//! Submodules: `config` (the `[auth]` schema), `params` (query-string parsing), `signed`
//! (HMAC signed URLs), `callback` (HTTP callback client), `cache` (callback answers).
//!
//! # Semantics
//!
//! Publish and play are configured separately (`[auth.publish]`, `[auth.play]`); an action
//! with nothing configured is open to everyone.
//!
//! **Credentials.** If the action has token rules or a secret, the client must present
//! either
//! - `token=<t>` where `<t>` equals the token of any rule whose `match` glob matches the
//!   stream `app/name` (`*` any run, `?` one character; the default `match` is `*`), or
//! - a signed URL: `expires=<unix seconds>&sign=<lowercase hex HMAC-SHA256(secret,
//!   "{app}/{name}:{expires}")>` with `expires` not yet past. `app/name` is the stream
//!   without any query. Shell signer:
//!   `printf '%s' "live/cam1:$exp" | openssl dgst -sha256 -hmac "$SECRET" | sed 's/^.* //'`.
//!
//! Rules scope by pattern: if token rules exist but none matches the stream and no secret is
//! set, the stream is open for that action. Each parameter is looked up in the stream-name
//! query first (`cam1?token=x`), then in the query of connect's app/tcUrl
//! (`rtmp://host/live?token=x`). Values are percent-decoded (`+` stays `+`); queries over
//! 4 KiB are ignored. Tokens are compared in constant time; tokens and signatures are never
//! logged. Denials: a wrong token is `bad_token`; a signature that is malformed or does not
//! match is `bad_signature` (checked before the expiry); a genuine but past expiry is
//! `expired`; nothing presented is `missing_credentials`. A correct token wins even if a
//! bad signature is also present; a wrong token with a signature is judged by the
//! signature.
//!
//! **Callback.** Then, if the action has a `callback` URL (http:// only), rtmp-edge POSTs
//! (`Content-Type: application/json`)
//! `{"action":"publish"|"play","app":..,"name":..,"stream":"app/name","query":<stream-name
//! query>|null,"params":{<all query parameters of both queries, the stream-name query
//! winning>},"tc_url":..|null,"client_ip":"1.2.3.4","client_port":n,"client_id":n}`.
//! Any 2xx answer allows; any other status refuses (`callback_refused`); a connection error
//! or no answer within `callback_timeout_ms` denies too (`callback_failed`: fail closed).
//! Allow and refuse answers (not failures) are cached for `callback_cache_secs` per client
//! IP, action, stream and both queries (at most 10,000 answers). Requests run on one
//! worker thread, at most 4096 at once process-wide (beyond that: `callback_failed`). Each
//! failure is logged at warn (`action`, `stream`, `error`). `expires` is decimal digits
//! only, and the signed text uses its canonical form (no leading zeros). Metrics:
//! `rtmp_auth_callback_requests_total{action, result="allow"|"refuse"|"error"|"cached"}`.

mod cache;
mod callback;
pub mod config;
mod params;
mod signed;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::shard::hooks::{AuthFuture, Authorize, Denied};

pub use callback::{CallbackError, UrlError};
pub use config::AuthConfig;

use cache::{AnswerCache, CacheKey};
use callback::Target;
use config::ActionAuth;
use params::RequestParams;
use signed::{SignError, Signer};

pub use crate::shard::hooks::{Action, AuthRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    MissingCredentials,
    BadToken,
    BadSignature,
    Expired,
    CallbackRefused,
    CallbackFailed,
}

impl DenyReason {
    /// Every reason, for counters exported at 0 before the first denial.
    pub const ALL: [DenyReason; 6] = [
        DenyReason::MissingCredentials,
        DenyReason::BadToken,
        DenyReason::BadSignature,
        DenyReason::Expired,
        DenyReason::CallbackRefused,
        DenyReason::CallbackFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DenyReason::MissingCredentials => "missing_credentials",
            DenyReason::BadToken => "bad_token",
            DenyReason::BadSignature => "bad_signature",
            DenyReason::Expired => "expired",
            DenyReason::CallbackRefused => "callback_refused",
            DenyReason::CallbackFailed => "callback_failed",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// An unusable `[auth]` section.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth.{action}.tokens: the token for match {pattern:?} is empty")]
    EmptyToken {
        action: &'static str,
        pattern: String,
    },
    #[error("auth.{action}.tokens: a match pattern is empty")]
    EmptyPattern { action: &'static str },
    #[error("auth.{action}.secret is empty")]
    EmptySecret { action: &'static str },
    #[error("auth.{action}.secret is not usable as an HMAC key")]
    UnusableSecret { action: &'static str },
    #[error("auth.{action}.callback {url:?}: {source}")]
    CallbackUrl {
        action: &'static str,
        url: String,
        source: UrlError,
    },
    #[error("auth.callback_timeout_ms must be greater than 0 when a callback is set")]
    ZeroTimeout,
}

/// A static token rule, the token kept as its SHA-256 so comparisons take the same time
/// whatever the presented token's length or content.
struct TokenRule {
    pattern: String,
    token_hash: [u8; 32],
}

#[derive(Default)]
struct ActionRules {
    tokens: Vec<TokenRule>,
    signer: Option<Signer>,
    callback: Option<Target>,
}

impl ActionRules {
    fn from_config(action: Action, cfg: &ActionAuth) -> Result<Self, AuthError> {
        let label = action.label();
        let mut tokens = Vec::with_capacity(cfg.tokens.len());
        for rule in &cfg.tokens {
            if rule.pattern.is_empty() {
                return Err(AuthError::EmptyPattern { action: label });
            }
            if rule.token.is_empty() {
                return Err(AuthError::EmptyToken {
                    action: label,
                    pattern: rule.pattern.clone(),
                });
            }
            tokens.push(TokenRule {
                pattern: rule.pattern.clone(),
                token_hash: sha256(rule.token.as_bytes()),
            });
        }
        let signer = match cfg.secret.as_deref() {
            Some("") => return Err(AuthError::EmptySecret { action: label }),
            Some(s) => Some(Signer::new(s).ok_or(AuthError::UnusableSecret { action: label })?),
            None => None,
        };
        let callback = match cfg.callback.as_deref() {
            Some(url) => Some(Target::parse(url).map_err(|source| AuthError::CallbackUrl {
                action: label,
                url: url.to_string(),
                source,
            })?),
            None => None,
        };
        Ok(Self {
            tokens,
            signer,
            callback,
        })
    }

    fn checks_credentials(&self) -> bool {
        !self.tokens.is_empty() || self.signer.is_some()
    }

    fn is_open(&self) -> bool {
        !self.checks_credentials() && self.callback.is_none()
    }
}

/// The authorization policy, built once from the config and shared by every shard.
pub struct Auth {
    publish: ActionRules,
    play: ActionRules,
    callback_timeout: Duration,
    cache: AnswerCache,
}

impl std::fmt::Debug for Auth {
    // Summarizes without tokens or secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let summary = |r: &ActionRules| {
            format!(
                "tokens={} signed={} callback={:?}",
                r.tokens.len(),
                r.signer.is_some(),
                r.callback.as_ref().map(Target::url)
            )
        };
        f.debug_struct("Auth")
            .field("publish", &summary(&self.publish))
            .field("play", &summary(&self.play))
            .field("callback_timeout", &self.callback_timeout)
            .finish()
    }
}

impl Auth {
    /// Allows everything.
    pub fn disabled() -> Self {
        Self {
            publish: ActionRules::default(),
            play: ActionRules::default(),
            callback_timeout: Duration::from_secs(2),
            cache: AnswerCache::new(Duration::ZERO),
        }
    }

    pub fn from_config(cfg: &AuthConfig) -> Result<Self, AuthError> {
        let publish = ActionRules::from_config(Action::Publish, &cfg.publish)?;
        let play = ActionRules::from_config(Action::Play, &cfg.play)?;
        let any_callback = publish.callback.is_some() || play.callback.is_some();
        if any_callback && cfg.callback_timeout_ms == 0 {
            return Err(AuthError::ZeroTimeout);
        }
        Ok(Self {
            publish,
            play,
            callback_timeout: Duration::from_millis(cfg.callback_timeout_ms),
            cache: AnswerCache::new(Duration::from_secs(cfg.callback_cache_secs)),
        })
    }

    fn rules(&self, action: Action) -> &ActionRules {
        match action {
            Action::Publish => &self.publish,
            Action::Play => &self.play,
        }
    }

    /// Nothing is configured for `action`: the caller may skip authorization entirely.
    pub fn is_open(&self, action: Action) -> bool {
        self.rules(action).is_open()
    }

    pub fn has_callback(&self, action: Action) -> bool {
        self.rules(action).callback.is_some()
    }

    /// Static tokens and signed URLs; synchronous, no I/O.
    pub fn check_credentials(&self, req: &AuthRequest, now_unix: u64) -> Result<(), DenyReason> {
        let rules = self.rules(req.action);
        if !rules.checks_credentials() {
            return Ok(());
        }
        let stream = req.stream();
        let matching: Vec<&TokenRule> = rules
            .tokens
            .iter()
            .filter(|r| crate::util::glob_match(&r.pattern, &stream))
            .collect();
        if matching.is_empty() && rules.signer.is_none() {
            return Ok(());
        }
        let params = RequestParams::parse(req.query.as_deref(), req.connect_query.as_deref());
        let token = params.get("token");
        if let Some(token) = token {
            let presented = sha256(token.as_bytes());
            // Every rule is compared (no early exit) so timing says nothing about which.
            let ok = matching
                .iter()
                .fold(false, |ok, r| ok | ct_eq(&r.token_hash, &presented));
            if ok {
                return Ok(());
            }
        }
        let (expires, sign) = (params.get("expires"), params.get("sign"));
        if let Some(signer) = &rules.signer {
            if expires.is_some() || sign.is_some() {
                return signer
                    .verify(&stream, expires, sign, now_unix)
                    .map_err(|e| match e {
                        SignError::Expired => DenyReason::Expired,
                        SignError::BadExpires | SignError::BadHex | SignError::Mismatch => {
                            DenyReason::BadSignature
                        }
                    });
            }
        }
        match token {
            Some(_) => Err(DenyReason::BadToken),
            None => Err(DenyReason::MissingCredentials),
        }
    }

    /// The whole decision: credentials, then the callback if one is configured.
    ///
    /// Safe to await on any runtime with a tokio timer (the shards' tokio-uring runtimes,
    /// a plain tokio runtime): the callback's I/O runs on its own worker thread.
    pub async fn check(self: Arc<Self>, req: AuthRequest) -> Result<(), DenyReason> {
        self.check_credentials(&req, unix_now())?;
        match &self.rules(req.action).callback {
            Some(target) => self.ask_callback(target, &req).await,
            None => Ok(()),
        }
    }

    async fn ask_callback(&self, target: &Target, req: &AuthRequest) -> Result<(), DenyReason> {
        let action = req.action.label();
        let key = CacheKey::new(req);
        if let Some(allowed) = self.cache.get(&key, Instant::now()) {
            count(action, "cached");
            return verdict(allowed);
        }
        let params = RequestParams::parse(req.query.as_deref(), req.connect_query.as_deref());
        let body = callback::request_body(req, &params);
        match callback::post(target, body, self.callback_timeout).await {
            Ok(status) => {
                let allowed = (200..300).contains(&status);
                count(action, if allowed { "allow" } else { "refuse" });
                if !allowed {
                    tracing::debug!(
                        action,
                        stream = %loggable_stream(req),
                        status,
                        "auth callback refused"
                    );
                }
                self.cache.insert(key, allowed, Instant::now());
                verdict(allowed)
            }
            Err(e) => {
                count(action, "error");
                tracing::warn!(
                    action,
                    stream = %loggable_stream(req),
                    error = %e,
                    "auth callback failed"
                );
                Err(DenyReason::CallbackFailed)
            }
        }
    }
}

/// Every `rtmp_auth_callback_requests_total` result.
pub const CALLBACK_RESULTS: [&str; 4] = ["allow", "refuse", "error", "cached"];

/// The rules in force, replaced whole on reload (SIGHUP); what the shards ask.
pub struct SharedAuth(RwLock<Arc<Auth>>);

impl SharedAuth {
    pub fn new(auth: Auth) -> Self {
        Self(RwLock::new(Arc::new(auth)))
    }

    /// The rules in force (cheap: an Arc clone per publish/play).
    pub fn current(&self) -> Arc<Auth> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, auth: Auth) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(auth);
    }
}

impl Authorize for SharedAuth {
    fn is_open(&self, action: Action) -> bool {
        self.current().is_open(action)
    }

    fn check(&self, req: AuthRequest) -> AuthFuture {
        let auth = self.current();
        Box::pin(async move { auth.check(req).await.map_err(|r| Denied(r.label())) })
    }
}

/// `app/name` for a log line: names are attacker-controlled and only checked after
/// authorization, so control characters are escaped and the length is capped.
fn loggable_stream(req: &AuthRequest) -> String {
    const MAX: usize = 256;
    let mut s: String = req.stream().escape_debug().collect();
    if s.len() > MAX {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

fn verdict(allowed: bool) -> Result<(), DenyReason> {
    if allowed {
        Ok(())
    } else {
        Err(DenyReason::CallbackRefused)
    }
}

fn count(action: &'static str, result: &'static str) {
    metrics::counter!("rtmp_auth_callback_requests_total", "action" => action, "result" => result)
        .increment(1);
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Equality of two digests without an early exit.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests;
