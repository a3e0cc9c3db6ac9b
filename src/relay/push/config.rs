//! Push configuration: the `[[push]]` entries of the config file, `--push` flags as
//! destinations, and the policy every push session follows (queue budget, backoff,
//! grace period, timeouts).

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use crate::protocol::url::{RtmpUrl, UrlError};
use crate::tls::{ClientTls, TlsError};
use crate::util::glob_match;

/// One `[[push]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PushDestination {
    /// Stable name for the HTTP API and metrics labels: 1-64 of `[A-Za-z0-9_.-]`, unique in
    /// the file; `config-N` and `flag-N` are reserved for destinations without one.
    #[serde(default)]
    pub id: Option<String>,
    /// `rtmp://host[:port]/app[/key]`, or `rtmps://` for TLS (port 443 by default).
    pub url: String,
    /// Stream key at the destination; default: the URL's key, else the source stream's name.
    pub key: Option<String>,
    /// Source streams (`app/name`, exact or glob) pushed here; default all.
    #[serde(default)]
    pub streams: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Extra CA certificates (PEM) an `rtmps://` destination's certificate may chain to,
    /// besides the public roots. Read at start and on every reload.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy)]
pub struct PushPolicy {
    /// Bytes a destination may have queued; past it, video drops until a keyframe.
    pub queue_bytes: usize,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// How long a destination stays connected after its source publisher left.
    pub grace: Duration,
    pub connect_timeout: Duration,
    /// How long one write may stall before the destination counts as dead.
    pub write_timeout: Duration,
    pub stats_interval: Duration,
}

impl Default for PushPolicy {
    fn default() -> Self {
        Self {
            queue_bytes: 8 << 20,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            stats_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushConfigError {
    #[error("push destination {0}: {1}")]
    Url(String, UrlError),
    #[error("[[push]] #{0} (id {1}): {2}")]
    Entry(usize, String, Box<PushConfigError>),
    #[error("id {0:?} must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'")]
    BadId(String),
    #[error("id {0:?} is reserved (config-N and flag-N name destinations without an id)")]
    ReservedId(String),
    #[error("id {0:?} is used by another destination")]
    DuplicateId(String),
    #[error("ca_file: {0}")]
    Tls(#[from] TlsError),
}

/// One configured destination.
#[derive(Debug, Clone)]
pub struct Destination {
    pub url: RtmpUrl,
    /// Key at the destination; None: the URL's key, else the source stream's name.
    pub key: Option<String>,
    /// Source streams (`app/name`, exact or glob); empty = all.
    pub streams: Vec<String>,
    /// Whom an `rtmps://` destination must prove to be.
    pub trust: ClientTls,
}

impl Destination {
    pub fn from_config(d: &PushDestination) -> Result<Self, PushConfigError> {
        Ok(Self {
            url: RtmpUrl::parse(&d.url).map_err(|e| PushConfigError::Url(redact(&d.url), e))?,
            key: d.key.clone(),
            streams: d.streams.clone(),
            trust: ClientTls::new(d.ca_file.as_deref())?,
        })
    }

    /// A `--push URL` flag (or an API request): every stream, keyed by its name unless the
    /// URL has a key; `rtmps://` trusts the public roots plus `trust`'s CA file.
    pub fn from_flag(url: &str, trust: ClientTls) -> Result<Self, PushConfigError> {
        Ok(Self {
            url: RtmpUrl::parse(url).map_err(|e| PushConfigError::Url(redact(url), e))?,
            key: None,
            streams: Vec::new(),
            trust,
        })
    }

    /// Same target and scope (a reload that left this destination alone).
    pub(super) fn same_as(&self, other: &Destination) -> bool {
        // Trust only matters to a TLS destination: a CA change leaves plain ones alone.
        self.url == other.url
            && self.key == other.key
            && self.streams == other.streams
            && (!self.url.tls || self.trust == other.trust)
    }

    pub(super) fn matches(&self, stream: &str) -> bool {
        self.streams.is_empty() || self.streams.iter().any(|p| glob_match(p, stream))
    }

    /// The URL for logs: stream keys are credentials, so never printed.
    pub fn label(&self) -> String {
        format!("{}/<key>", self.url.public())
    }
}

/// Stream keys are credentials: a URL for logs keeps scheme, host and app only.
pub fn redact(url: &str) -> String {
    match RtmpUrl::parse(url) {
        Ok(u) => format!("{}/<key>", u.public()),
        Err(_) => "<unparsable push url>".to_string(),
    }
}

/// A destination id: 1-64 characters of A-Z a-z 0-9 `_` `.` `-` (URL path and label safe).
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Checks the ids of a file's `[[push]]` entries: valid, not reserved, unique. On error,
/// the entry's 1-based index with what is wrong.
pub fn check_ids(entries: &[PushDestination]) -> Result<(), (usize, PushConfigError)> {
    let mut ids = HashSet::new();
    for (i, d) in entries.iter().enumerate() {
        let Some(id) = &d.id else { continue };
        let err = |e: PushConfigError| (i + 1, e);
        if !valid_id(id) {
            return Err(err(PushConfigError::BadId(id.clone())));
        }
        if let Some((prefix, n)) = id.split_once('-') {
            if matches!(prefix, "config" | "flag")
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(err(PushConfigError::ReservedId(id.clone())));
            }
        }
        if !ids.insert(id.as_str()) {
            return Err(err(PushConfigError::DuplicateId(id.clone())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_reach_labels() {
        let d = Destination::from_flag(
            "rtmp://a.example:1935/live2/sekr1t-key",
            ClientTls::public(),
        )
        .unwrap();
        assert!(!d.label().contains("sekr1t"));
        assert!(!redact("rtmp://x/app/abc?token=zz").contains("abc"));
        assert!(!redact("garbage sekr1t").contains("sekr1t"));
    }

    #[test]
    fn destination_matching_and_keys() {
        let mut d = Destination::from_flag("rtmp://h/app", ClientTls::public()).unwrap();
        assert!(d.matches("live/anything"));
        d.streams = vec!["live/cam*".into()];
        assert!(d.matches("live/cam1") && !d.matches("live/other"));
    }
}
