//! A channel's settings: one `[[channel]]` table of the config file each, and the
//! `--source-timeout-ms` every channel shares.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// One always-on output stream fed by a chain of sources, with a slate for when none is live.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// What players, HLS, recordings and pushes see (`app/name`).
    pub name: String,
    /// Published streams in priority order (`app/name` each).
    #[serde(default)]
    pub sources: Vec<String>,
    /// FLV file looped while no source is live.
    #[serde(default)]
    pub slate: Option<PathBuf>,
    /// How long a returning higher-priority source must deliver before it takes over.
    #[serde(default = "default_switch_back")]
    pub switch_back_after_secs: u64,
    /// Refuse (rather than warn about) a slate whose codec, picture size or audio format
    /// differs from a live source's: the channel then never changes format at a switch.
    #[serde(default)]
    pub strict: bool,
}

fn default_switch_back() -> u64 {
    5
}

impl ChannelConfig {
    pub fn switch_back_after(&self) -> Duration {
        Duration::from_secs(self.switch_back_after_secs)
    }
}

/// Every channel, and how long a source may be silent before it counts as lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPolicy {
    pub channels: Vec<ChannelConfig>,
    pub source_timeout: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelConfigError {
    #[error("{0:?} is not a stream key (app/name)")]
    BadKey(String),
    #[error("channel {0} is defined twice")]
    Duplicate(String),
    #[error("channel {0} has neither sources nor a slate")]
    Empty(String),
    #[error("channel {0} lists source {1} twice")]
    RepeatedSource(String, String),
    #[error("{1} is a channel and cannot be a source of channel {0}")]
    ChannelAsSource(String, String),
}

fn is_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((app, name)) => {
            !app.is_empty()
                && !name.is_empty()
                && !s.contains(['?', ' ', '\t', '\n'])
                && !s.split('/').any(|p| p.is_empty() || p == "..")
        }
        None => false,
    }
}

/// Checks every `[[channel]]`; the error names the first bad one by its index.
pub fn check(channels: &[ChannelConfig]) -> Result<(), (usize, ChannelConfigError)> {
    let names: Vec<&str> = channels.iter().map(|c| c.name.as_str()).collect();
    for (i, c) in channels.iter().enumerate() {
        let fail = |e| Err((i, e));
        if !is_key(&c.name) {
            return fail(ChannelConfigError::BadKey(c.name.clone()));
        }
        if names[..i].contains(&c.name.as_str()) {
            return fail(ChannelConfigError::Duplicate(c.name.clone()));
        }
        if c.sources.is_empty() && c.slate.is_none() {
            return fail(ChannelConfigError::Empty(c.name.clone()));
        }
        for (j, s) in c.sources.iter().enumerate() {
            if !is_key(s) {
                return fail(ChannelConfigError::BadKey(s.clone()));
            }
            if c.sources[..j].contains(s) {
                return fail(ChannelConfigError::RepeatedSource(
                    c.name.clone(),
                    s.clone(),
                ));
            }
            // A channel fed by a channel could feed itself back; one level is what the
            // switching rules are written for.
            if names.contains(&s.as_str()) {
                return fail(ChannelConfigError::ChannelAsSource(
                    c.name.clone(),
                    s.clone(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(name: &str, sources: &[&str]) -> ChannelConfig {
        ChannelConfig {
            name: name.into(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            slate: None,
            switch_back_after_secs: 5,
            strict: false,
        }
    }

    #[test]
    fn parses_the_documented_keys() {
        let c: ChannelConfig = toml::from_str(
            r#"
            name = "live/main"
            sources = ["live/cam", "live/cam-backup"]
            slate = "/srv/offline.flv"
            switch_back_after_secs = 7
            strict = true
            "#,
        )
        .unwrap();
        assert_eq!(c.sources, ["live/cam", "live/cam-backup"]);
        assert_eq!(
            c.slate.as_deref(),
            Some(std::path::Path::new("/srv/offline.flv"))
        );
        assert_eq!(c.switch_back_after(), Duration::from_secs(7));
        assert!(c.strict);
        let d: ChannelConfig = toml::from_str("name = \"a/b\"\nsources = [\"a/c\"]").unwrap();
        assert_eq!(d.switch_back_after_secs, 5);
        assert!(!d.strict);
        assert!(toml::from_str::<ChannelConfig>("name = \"a/b\"\nsorces = []").is_err());
    }

    #[test]
    fn refuses_bad_chains() {
        assert!(check(&[ch("live/main", &["live/cam", "live/b"])]).is_ok());
        assert_eq!(
            check(&[ch("main", &["live/cam"])]).unwrap_err().1,
            ChannelConfigError::BadKey("main".into())
        );
        assert_eq!(
            check(&[ch("live/main", &["live/cam?x=1"])]).unwrap_err().1,
            ChannelConfigError::BadKey("live/cam?x=1".into())
        );
        assert!(matches!(
            check(&[ch("live/main", &[])]).unwrap_err().1,
            ChannelConfigError::Empty(_)
        ));
        assert!(matches!(
            check(&[ch("live/main", &["live/a", "live/a"])])
                .unwrap_err()
                .1,
            ChannelConfigError::RepeatedSource(..)
        ));
        assert_eq!(
            check(&[ch("live/a", &["live/x"]), ch("live/a", &["live/y"])]).unwrap_err(),
            (1, ChannelConfigError::Duplicate("live/a".into()))
        );
        assert!(matches!(
            check(&[ch("live/a", &["live/b"]), ch("live/b", &["live/c"])]).unwrap_err(),
            (0, ChannelConfigError::ChannelAsSource(..))
        ));
    }
}
