//! The `[auth]` section of the config file: who may publish and play.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub publish: ActionAuth,
    #[serde(default)]
    pub play: ActionAuth,
    /// Milliseconds to wait for a callback's answer; no answer in time denies.
    #[serde(default = "default_callback_timeout_ms")]
    pub callback_timeout_ms: u64,
    /// Seconds a callback's answer is reused for the same client address, stream and
    /// query (0 = ask every time).
    #[serde(default = "default_callback_cache_secs")]
    pub callback_cache_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            publish: ActionAuth::default(),
            play: ActionAuth::default(),
            callback_timeout_ms: default_callback_timeout_ms(),
            callback_cache_secs: default_callback_cache_secs(),
        }
    }
}

/// How one action (publish or play) is authorized. Nothing set: everyone may.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActionAuth {
    /// Static tokens: a client passes with `?token=` equal to the token of a rule whose
    /// pattern matches the stream.
    #[serde(default)]
    pub tokens: Vec<TokenRule>,
    /// HMAC-SHA256 key for signed URLs (`?expires=<unix>&sign=<hex>`).
    pub secret: Option<String>,
    /// URL POSTed a JSON description of the request; a 2xx answer allows.
    pub callback: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenRule {
    /// `app/name`, exact or with `*` / `?` wildcards; default every stream.
    #[serde(rename = "match", default = "every_stream")]
    pub pattern: String,
    pub token: String,
}

fn default_callback_timeout_ms() -> u64 {
    2000
}

fn default_callback_cache_secs() -> u64 {
    10
}

fn every_stream() -> String {
    "*".into()
}
