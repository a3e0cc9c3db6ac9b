//! The TOML config file (`--config`, or the `RTMP_EDGE_CONFIG` environment variable).
//!
//! Tables:
//!
//! * `[server]`: any command-line flag by its long name, with dashes or underscores
//!   (`chunk_size = 8192` or `"chunk-size" = 8192`); a list for repeatable flags
//!   (`origin = ["rtmp://a/live", "rtmp://b/live"]`); `true`/`false` for booleans. Values may
//!   be strings, integers or booleans and are checked exactly like the flag's value (a wrong
//!   one is an error naming the key). Not allowed: `config` and `check_config` (command line
//!   only), and `push`, `record`, `record_dir`, which have their own tables below. A flag given
//!   on the command line, or through its environment variable (`RTMP_EDGE_API_TOKEN`), wins
//!   over `[server]`; for a repeatable flag, any occurrence on the command line replaces the
//!   file's whole list. See [`super::load_from`].
//! * `[auth]`: who may publish and play (`auth::AuthConfig`).
//! * `[record]`: recordings' directory and mode (the `--record-dir` / `--record` flags win)
//!   and per-stream overrides.
//! * `[[push]]`: push destinations, on top of any `--push` flags.
//! * `[[channel]]`: always-on channels (`channel::ChannelConfig`): `name`, `sources` in
//!   priority order, `slate`, `switch_back_after_secs`, `strict`.
//! * `[[tls_certificate]]`: certificates for `--listen-tls` chosen by SNI (`names`, with
//!   `*.example.com` wildcards), beside the default one of `--tls-cert`/`--tls-key`.
//!
//! Unknown keys anywhere are errors.
//!
//! Secrets from the environment: in every string value (not in keys or comments),
//! `${NAME}` is replaced by the environment variable `NAME` when the file is loaded. A
//! variable that is not set (or not UTF-8) is an error naming it, never an empty string.
//! `$${` stands for a literal `${`; a `$` not followed by `{` is kept as is. Names are
//! `[A-Za-z_][A-Za-z0-9_]*`. So `token = "${CAM1_TOKEN}"`, `key = "${YT_KEY}"` or
//! `api_token = "${API_TOKEN}"` keep secrets out of the file.
//!
//! [`FileConfig::load`] is also what a SIGHUP reload calls: it re-reads the whole file (and
//! the environment) and validates everything, so a broken file can be rejected as a whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::env::expand_value;
use crate::auth::AuthConfig;
use crate::channel::ChannelConfig;
use crate::record::RecordConfig;
use crate::relay::push::{self, PushDestination};
use crate::tls::CertConfig;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Command-line flags by long name; validated by [`FileConfig::server_args`].
    #[serde(default)]
    pub server: toml::Table,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub record: RecordConfig,
    #[serde(default)]
    pub hls: crate::hls::HlsConfig,
    #[serde(default)]
    pub push: Vec<PushDestination>,
    #[serde(default)]
    pub tls_certificate: Vec<CertConfig>,
    /// `[[channel]]`: always-on channels.
    #[serde(default)]
    pub channel: Vec<ChannelConfig>,
}

/// One `[server]` key as the command-line arguments it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerArg {
    /// The key as written in the file.
    pub key: String,
    /// The clap argument id (the `Config` field name).
    pub id: String,
    /// `--long=value` arguments (several for a repeatable flag, none for a `false` switch).
    pub args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid { path: PathBuf, source: FileError },
}

/// What is wrong with a config file's text.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("parsing: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("environment variable {name} is not set (referenced in {at})")]
    MissingEnv { name: String, at: String },
    #[error("environment variable {name} is not valid UTF-8 (referenced in {at})")]
    EnvNotUnicode { name: String, at: String },
    #[error("{at}: {message}")]
    BadReference { at: String, message: String },
    #[error("[server] {key}: {message}")]
    Server { key: String, message: String },
    #[error("[[push]] #{index}: {message}")]
    Push { index: usize, message: String },
    #[error("[[channel]] #{index}: {message}")]
    Channel { index: usize, message: String },
}

impl FileConfig {
    /// Reads, expands `${VAR}`s in, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigFileError::Invalid {
            path: path.to_path_buf(),
            source,
        })
    }

    /// [`FileConfig::load`] on text.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        // Structure first, on the text as written, so errors carry line and column (the
        // expansion below only changes the contents of strings).
        toml::from_str::<FileConfig>(text)?;
        let mut table: toml::Table = text.parse()?;
        for (k, v) in table.iter_mut() {
            expand_value(v, k)?;
        }
        let c = FileConfig::deserialize(toml::Value::Table(table))?;
        c.server_args()?;
        c.validate_push()?;
        crate::channel::config::check(&c.channel).map_err(|(index, e)| FileError::Channel {
            index,
            message: e.to_string(),
        })?;
        Ok(c)
    }

    /// The `[server]` table as command-line arguments, one entry per key, each checked by
    /// the flag's own parser. Errors name the key.
    pub fn server_args(&self) -> Result<Vec<ServerArg>, FileError> {
        let cmd = {
            use clap::CommandFactory;
            // The file's values are checked on their own, without the environment.
            super::cli::Config::command().mut_args(|a| a.env(None::<&'static str>))
        };
        let err = |key: &str, message: String| FileError::Server {
            key: key.to_string(),
            message,
        };
        let mut seen: HashMap<String, &str> = HashMap::new();
        let mut out = Vec::new();
        for (key, value) in &self.server {
            let norm = key.replace('-', "_");
            match norm.as_str() {
                "config" | "check_config" => {
                    return Err(err(key, "only allowed on the command line".into()))
                }
                "push" => {
                    return Err(err(
                        key,
                        "push destinations go in [[push]] tables (url = \"rtmp://...\")".into(),
                    ))
                }
                "record" => return Err(err(key, "set the mode as [record] mode".into())),
                "record_dir" => return Err(err(key, "set the directory as [record] dir".into())),
                "hls" => return Err(err(key, "set the mode as [hls] mode".into())),
                "help" | "version" => return Err(err(key, "unknown key".into())),
                _ => {}
            }
            let Some(arg) = cmd.get_arguments().find(|a| {
                !a.is_positional()
                    && a.get_long().map(|l| l.replace('-', "_")) == Some(norm.clone())
            }) else {
                return Err(err(
                    key,
                    "unknown key (keys are the command-line flags' long names, see --help)".into(),
                ));
            };
            let id = arg.get_id().as_str().to_string();
            if let Some(other) = seen.insert(id.clone(), key) {
                return Err(err(key, format!("set twice (also as {other:?})")));
            }
            let long = arg.get_long().unwrap_or_default();
            let args = match arg.get_action() {
                clap::ArgAction::SetTrue | clap::ArgAction::SetFalse => match value {
                    toml::Value::Boolean(b) => {
                        let on = *b == matches!(arg.get_action(), clap::ArgAction::SetTrue);
                        if on {
                            vec![format!("--{long}")]
                        } else {
                            Vec::new()
                        }
                    }
                    other => {
                        return Err(err(
                            key,
                            format!("expected true or false, found {}", other.type_str()),
                        ))
                    }
                },
                clap::ArgAction::Append => {
                    let items: Vec<&toml::Value> = match value {
                        toml::Value::Array(a) => a.iter().collect(),
                        v => vec![v],
                    };
                    items
                        .into_iter()
                        .map(|v| scalar(v).map(|s| format!("--{long}={s}")))
                        .collect::<Result<_, _>>()
                        .map_err(|m| err(key, format!("{m} in the list")))?
                }
                clap::ArgAction::Set => {
                    if let toml::Value::Array(_) = value {
                        return Err(err(key, "takes one value, not a list".into()));
                    }
                    vec![format!(
                        "--{long}={}",
                        scalar(value).map_err(|m| err(key, m))?
                    )]
                }
                _ => return Err(err(key, "cannot be set in the config file".into())),
            };
            let argv = std::iter::once("rtmp-edge".to_string()).chain(args.iter().cloned());
            if let Err(e) = cmd.clone().try_get_matches_from(argv) {
                return Err(err(key, super::load::clap_message(&e)));
            }
            out.push(ServerArg {
                key: key.clone(),
                id,
                args,
            });
        }
        Ok(out)
    }

    fn validate_push(&self) -> Result<(), FileError> {
        push::config::check_ids(&self.push).map_err(|(index, e)| FileError::Push {
            index,
            message: e.to_string(),
        })
    }
}

/// A TOML scalar as a flag value.
fn scalar(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a string, number or boolean, found {}",
            other.type_str()
        )),
    }
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
    fn env_expansion_in_file_values() {
        std::env::set_var("RTMP_EDGE_TEST_CF_KEY", "yt-\"secret\\key");
        std::env::set_var("RTMP_EDGE_TEST_CF_PLAY", "hmac");
        let c = FileConfig::parse(
            r#"
            # a ${COMMENT_IS_NOT_EXPANDED}
            [server]
            api_token = "tok-${RTMP_EDGE_TEST_CF_PLAY}"
            [auth.play]
            secret = "${RTMP_EDGE_TEST_CF_PLAY}"
            [[auth.publish.tokens]]
            match = "live/$${literal}"
            token = '${RTMP_EDGE_TEST_CF_PLAY}'
            [[push]]
            url = "rtmp://a.example/live2"
            key = "${RTMP_EDGE_TEST_CF_KEY}"
            "#,
        )
        .unwrap();
        assert_eq!(c.push[0].key.as_deref(), Some("yt-\"secret\\key"));
        assert_eq!(c.auth.play.secret.as_deref(), Some("hmac"));
        assert_eq!(c.auth.publish.tokens[0].pattern, "live/${literal}");
        assert_eq!(c.auth.publish.tokens[0].token, "hmac");
        assert_eq!(c.server["api_token"].as_str(), Some("tok-hmac"));

        let e =
            FileConfig::parse("[[push]]\nurl = 'rtmp://x/a'\nkey = '${RTMP_EDGE_TEST_CF_UNSET}'")
                .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("RTMP_EDGE_TEST_CF_UNSET") && msg.contains("push[0].key"),
            "{msg}"
        );
    }

    #[test]
    fn structural_errors_keep_positions() {
        let e = FileConfig::parse("[record]\nmode = 'all'\nbogus = 1\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("bogus") && msg.contains("line 3"), "{msg}");
        let e = FileConfig::parse("[[push]]\nurl = 1\n").unwrap_err();
        assert!(e.to_string().contains("url"), "{e}");
        let e = FileConfig::parse("[auth.publish]\nbogus = 'x'\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(FileConfig::parse("[nope]\n")
            .unwrap_err()
            .to_string()
            .contains("nope"));
    }

    #[test]
    fn auth_section() {
        let c = FileConfig::parse(
            r#"
            [auth]
            callback_timeout_ms = 500
            [auth.publish]
            tokens = [{ match = "live/cam1", token = "t1" }]
            [auth.play]
            callback = "http://127.0.0.1:9/check"
            "#,
        )
        .unwrap();
        assert_eq!(c.auth.callback_timeout_ms, 500);
        assert_eq!(c.auth.publish.tokens[0].token, "t1");
        assert!(c.auth.play.callback.is_some());
        assert_eq!(FileConfig::parse("").unwrap(), FileConfig::default());
    }

    #[test]
    fn push_ids() {
        let ok = FileConfig::parse(
            "[[push]]\nid = 'yt.main-1_A'\nurl = 'rtmp://a/b'\n[[push]]\nurl = 'rtmp://c/d'\n[[push]]\nid = 'twitch'\nurl = 'rtmp://e/f'\n",
        )
        .unwrap();
        assert_eq!(ok.push[0].id.as_deref(), Some("yt.main-1_A"));
        assert_eq!(ok.push[1].id, None);
        let long = "x".repeat(64);
        assert!(
            FileConfig::parse(&format!("[[push]]\nid = '{long}'\nurl = 'rtmp://a/b'\n")).is_ok()
        );
        for fine in ["config", "config-x", "flag-", "configs-1", "my-flag-1"] {
            let t = format!("[[push]]\nid = '{fine}'\nurl = 'rtmp://a/b'\n");
            assert!(FileConfig::parse(&t).is_ok(), "{fine}");
        }
        for bad in [
            "",
            "has space",
            "slash/",
            "ünï",
            &"x".repeat(65),
            "config-1",
            "flag-12",
        ] {
            let e = FileConfig::parse(&format!("[[push]]\nid = '{bad}'\nurl = 'rtmp://a/b'\n"))
                .unwrap_err();
            assert!(matches!(e, FileError::Push { index: 1, .. }), "{bad}: {e}");
        }
        let e = FileConfig::parse(
            "[[push]]\nid = 'a'\nurl = 'rtmp://a/b'\n[[push]]\nurl = 'rtmp://a/c'\n[[push]]\nid = 'a'\nurl = 'rtmp://a/d'\nenabled = false\n",
        )
        .unwrap_err();
        assert!(matches!(e, FileError::Push { index: 3, .. }), "{e}");
        assert!(e.to_string().contains("\"a\""), "{e}");
    }

    fn server(toml: &str) -> Result<Vec<ServerArg>, FileError> {
        FileConfig::parse(&format!("[server]\n{toml}\n")).map(|c| c.server_args().unwrap())
    }

    fn server_err(toml: &str, key: &str) -> String {
        match server(toml) {
            Err(FileError::Server { key: k, message }) => {
                assert_eq!(k, key, "{message}");
                message
            }
            other => panic!("{toml}: expected an error on {key}, got {other:?}"),
        }
    }

    #[test]
    fn server_keys_become_flags() {
        let a = server(
            r#"
            listen = "127.0.0.1:1936"
            chunk-size = 8192
            shards = "3"
            player_nodelay = false
            origin = ["rtmp://o1/live", "rtmp://o2/live"]
            http = "off"
            log-format = "json"
            "#,
        )
        .unwrap();
        let find = |id: &str| a.iter().find(|s| s.id == id).unwrap().args.clone();
        assert_eq!(find("listen"), ["--listen=127.0.0.1:1936"]);
        assert_eq!(find("chunk_size"), ["--chunk-size=8192"]);
        assert_eq!(find("shards"), ["--shards=3"]);
        assert_eq!(find("player_nodelay"), ["--player-nodelay=false"]);
        assert_eq!(
            find("origin"),
            ["--origin=rtmp://o1/live", "--origin=rtmp://o2/live"]
        );
        assert_eq!(find("http"), ["--http=off"]);
        assert_eq!(find("log_format"), ["--log-format=json"]);
        // One value for a repeatable flag is a list of one; an empty list is none.
        assert_eq!(
            server("origin = 'rtmp://o/live'").unwrap()[0].args,
            ["--origin=rtmp://o/live"]
        );
        assert!(server("origin = []").unwrap()[0].args.is_empty());
        // Values starting with '-' are values, not flags.
        assert_eq!(
            server("log_level = '-x'").unwrap()[0].args,
            ["--log-level=-x"]
        );
    }

    #[test]
    fn server_errors_name_the_key() {
        let m = server_err("bogus_flag = 1", "bogus_flag");
        assert!(m.contains("unknown"), "{m}");
        server_err("Listen = '0.0.0.0:1'", "Listen");
        let m = server_err("shards = 'two'", "shards");
        assert!(m.contains("two"), "{m}");
        server_err("shards = true", "shards");
        server_err("shards = -1", "shards");
        server_err("listen = 1935", "listen");
        server_err("chunk_size = 10", "chunk_size");
        let m = server_err("log_format = 'xml'", "log_format");
        assert!(m.contains("possible values: text, json"), "{m}");
        server_err("player_nodelay = 'maybe'", "player_nodelay");
        server_err("listen = ['0.0.0.0:1935']", "listen");
        server_err("origin = [[1]]", "origin");
        server_err("origin = [['nested']]", "origin");
        server_err("http = { a = 1 }", "http");
        server_err("help = true", "help");
        server_err("version = true", "version");
        let m = server_err("'chunk-size' = 8192\nchunk_size = 8192", "chunk_size");
        assert!(m.contains("twice"), "{m}");
        assert!(server_err("config = 'x.toml'", "config").contains("command line"));
        server_err("check-config = true", "check-config");
        assert!(server_err("push = ['rtmp://a/b']", "push").contains("[[push]]"));
        assert!(server_err("record = 'all'", "record").contains("[record] mode"));
        assert!(server_err("record-dir = '/tmp'", "record-dir").contains("[record] dir"));
        // Through load: the path and the key.
        let dir = std::env::temp_dir().join(format!("rtmp-edge-cf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[server]\nshards = 'lots'\n").unwrap();
        let msg = FileConfig::load(&path).unwrap_err().to_string();
        assert!(
            msg.contains("bad.toml") && msg.contains("[server] shards"),
            "{msg}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
