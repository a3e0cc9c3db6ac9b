//! The TOML config file (`--config`): push destinations and per-stream recording
//! overrides, on top of the command-line flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub record: RecordSection,
    #[serde(default)]
    pub push: Vec<PushDestination>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordSection {
    /// Directory for recordings (the `--record-dir` flag wins).
    pub dir: Option<PathBuf>,
    /// "all" or "none" (the `--record` flag wins).
    pub mode: Option<String>,
    /// Per-stream overrides, first match wins.
    #[serde(default)]
    pub streams: Vec<RecordOverride>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordOverride {
    /// `app/name`, exact or with `*` / `?` wildcards.
    #[serde(rename = "match")]
    pub pattern: String,
    pub record: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PushDestination {
    /// `rtmp://host[:port]/app[/key]`.
    pub url: String,
    /// Stream key at the destination; default: the URL's key, else the source stream's name.
    pub key: Option<String>,
    /// Source streams (`app/name`, exact or glob) pushed here; default all.
    #[serde(default)]
    pub streams: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigFileError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Shell-style match of `app/name` against a pattern with `*` (any run) and `?` (one char).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_destinations_and_overrides() {
        let c: FileConfig = toml::from_str(
            r#"
            [record]
            mode = "all"
            [[record.streams]]
            match = "live/private-*"
            record = false

            [[push]]
            url = "rtmp://a.example/live2"
            key = "secret"
            streams = ["live/main"]

            [[push]]
            url = "rtmp://b.example/app/fixedkey"
            enabled = false
            "#,
        )
        .unwrap();
        assert_eq!(c.record.mode.as_deref(), Some("all"));
        assert!(!c.record.streams[0].record);
        assert_eq!(c.push.len(), 2);
        assert_eq!(c.push[0].key.as_deref(), Some("secret"));
        assert!(c.push[0].enabled && !c.push[1].enabled);
        assert!(toml::from_str::<FileConfig>("[[push]]\nurl = 'x'\nbogus = 1").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("live/*", "live/a"));
        assert!(glob_match("live/a", "live/a"));
        assert!(!glob_match("live/a", "live/ab"));
        assert!(glob_match("*/cam?", "x/cam1"));
        assert!(!glob_match("*/cam?", "x/cam12"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }
}
