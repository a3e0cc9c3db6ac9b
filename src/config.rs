//! Configuration: command-line flags, their environment variables, and the config file.
//!
//! Flag names are part of the interface scripts rely on. Every flag can also be set in the
//! config file's `[server]` table (see [`crate::config_file`]). Precedence, highest first:
//! the command line, the flag's environment variable (`RTMP_EDGE_API_TOKEN`,
//! `RTMP_EDGE_CONFIG`), `[server]` in the file, the built-in default. [`load`] does all of
//! it; [`check`] is `--check-config`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::config_file::{ConfigFileError, FileConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordMode {
    All,
    None,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "rtmp-edge",
    version,
    about = "RTMP edge relay on a thread-per-core io_uring data plane"
)]
pub struct Config {
    /// Address to accept RTMP connections on (every shard binds it with SO_REUSEPORT).
    #[arg(long, default_value = "0.0.0.0:1935")]
    pub listen: SocketAddr,

    /// Data-plane shards (threads, one io_uring each); 0 = one per available core.
    #[arg(long, default_value_t = 0)]
    pub shards: usize,

    /// Outgoing chunk size announced to every client.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(128..=16_777_215))]
    pub chunk_size: u32,

    /// Log level filter (error, warn, info, debug, trace, or a tracing filter directive).
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Largest incoming message accepted, in bytes; a bigger header closes the connection.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_message_size: u32,

    /// Bytes a viewer may have queued before its frames are dropped (it resumes at a keyframe).
    #[arg(long, default_value_t = 4 << 20)]
    pub viewer_queue_bytes: usize,

    /// Milliseconds the oldest queued byte of a viewer may wait before its video is dropped.
    #[arg(long, default_value_t = 5000)]
    pub viewer_queue_ms: u64,

    /// Seconds a viewer may keep dropping frames before it is disconnected.
    #[arg(long, default_value_t = 10)]
    pub viewer_behind_secs: u64,

    /// Latency budget for batching writes to viewers: 0 writes as soon as a frame arrives;
    /// N flushes every viewer every N ms (fewer, larger writes: less CPU per byte).
    #[arg(long, default_value_t = 0)]
    pub write_coalesce_ms: u64,

    /// TCP_NODELAY on player sockets (true/false). Default: off at --write-coalesce-ms 0,
    /// where the kernel merging small writes (as with nginx-rtmp) is what keeps the cost
    /// per byte down; on when coalescing, where we batch ourselves and Nagle would only
    /// hold the last segment of each batch back.
    #[arg(long)]
    pub player_nodelay: Option<bool>,

    /// While coalescing, write a viewer early once this many bytes wait.
    #[arg(long, default_value_t = 64 << 10)]
    pub write_coalesce_bytes: usize,

    /// Control HTTP listener: /metrics, /healthz, /readyz ("off" to disable).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http: String,

    /// Bearer token required on the HTTP API (/api/v1/*).
    #[arg(long, env = "RTMP_EDGE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// How many streams (most viewers first) get per-stream series in /metrics (0 = none).
    #[arg(long, default_value_t = 20)]
    pub metrics_top_streams: usize,

    /// TOML config file: any flag in [server] (the command line wins), plus [auth],
    /// [[push]] and [record]; `${NAME}` in its strings is read from the environment.
    #[arg(long, env = "RTMP_EDGE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Check the flags and the config file, print a one-line summary and exit (status 2
    /// and the error on stderr if something is wrong).
    #[arg(long)]
    pub check_config: bool,

    /// Push every stream to this RTMP URL (repeatable); the stream's name is appended as
    /// the key unless the URL carries one.
    #[arg(long = "push")]
    pub push: Vec<String>,

    /// Seconds a push destination stays connected after its source publisher left, so a
    /// publisher that reconnects continues the same broadcast.
    #[arg(long, default_value_t = 10)]
    pub push_grace_secs: u64,

    /// Longest wait between reconnect attempts to a failing push destination.
    #[arg(long, default_value_t = 30)]
    pub push_backoff_max_secs: u64,

    /// Edge mode: origin to pull a stream from when a player asks for one that is not
    /// published here (repeatable; tried in order, failing over round-robin).
    #[arg(long = "origin")]
    pub origin: Vec<String>,

    /// Seconds an origin pull stays open after its last player left.
    #[arg(long, default_value_t = 10)]
    pub origin_idle_secs: u64,

    /// Directory for FLV recordings.
    #[arg(long)]
    pub record_dir: Option<PathBuf>,

    /// Which streams to record (per-stream overrides come from the config file).
    #[arg(long, value_enum)]
    pub record: Option<RecordMode>,

    /// Seconds between per-shard latency/drop summaries in the log (0 = never).
    #[arg(long, default_value_t = 10)]
    pub stats_interval_secs: u64,

    /// Seconds a connection may take from TCP accept to publish/play.
    #[arg(long, default_value_t = 15)]
    pub handshake_timeout_secs: u64,

    /// Seconds a publisher may stay silent before it is closed.
    #[arg(long, default_value_t = 30)]
    pub publisher_timeout_secs: u64,

    /// Seconds one socket write may stall (peer not reading) before the connection is closed.
    #[arg(long, default_value_t = 30)]
    pub write_timeout_secs: u64,
}

impl Config {
    /// The control listener's address, None when `--http off`.
    pub fn http_addr(&self) -> Result<Option<std::net::SocketAddr>, std::net::AddrParseError> {
        match self.http.as_str() {
            "off" | "" => Ok(None),
            a => a.parse().map(Some),
        }
    }

    pub fn player_nodelay(&self) -> bool {
        self.player_nodelay.unwrap_or(self.write_coalesce_ms > 0)
    }

    /// How every viewer on a shard is fed, from the flags.
    pub fn viewer_policy(&self) -> crate::fanout::viewer::ViewerPolicy {
        crate::fanout::viewer::ViewerPolicy {
            max_queue_bytes: self.viewer_queue_bytes,
            max_queue_age: std::time::Duration::from_millis(self.viewer_queue_ms),
            max_behind: std::time::Duration::from_secs(self.viewer_behind_secs),
            coalesce: self.write_coalesce_ms > 0,
            flush_bytes: self.write_coalesce_bytes,
        }
    }

    /// Shard count after resolving 0 to the number of available cores.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A command-line (or environment variable) error, formatted by clap.
    #[error("{0}")]
    Args(#[from] clap::Error),
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// The file's `[server]` values did not combine with the command line.
    #[error("{path}: [server]: {message}")]
    Server { path: PathBuf, message: String },
    #[error("--api-token (or RTMP_EDGE_API_TOKEN, or [server] api_token) is empty")]
    EmptyApiToken,
    #[error("bad --log-level {0:?}: {1}")]
    LogLevel(String, String),
    #[error("bad --http {0:?} (an address:port, or \"off\"): {1}")]
    Http(String, std::net::AddrParseError),
    #[error(transparent)]
    Push(#[from] crate::relay::push::PushConfigError),
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

/// [`load_from`] on this process's arguments.
pub fn load() -> Result<(Config, FileConfig), ConfigError> {
    load_from(std::env::args_os())
}

/// Parses the command line (`args`, program name first) and the environment, loads the
/// config file it names (`--config` / `RTMP_EDGE_CONFIG`) and applies the file's
/// `[server]` values to every flag the command line and environment left unset. A
/// repeatable flag (`--origin`) given on the command line replaces the file's whole list.
///
/// `--help` and `--version` print and exit, as usual. Other command-line errors come back
/// as [`ConfigError::Args`]; `e.exit()` on the inner error prints them in clap's format.
pub fn load_from<I, T>(args: I) -> Result<(Config, FileConfig), ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let (matches, file) = merge(Config::command(), args)?;
    let cfg = Config::from_arg_matches(&matches)?;
    if cfg.api_token.as_deref() == Some("") {
        return Err(ConfigError::EmptyApiToken);
    }
    Ok((cfg, file))
}

/// For `main`: [`load`], then on `--check-config` print [`check`]'s summary and exit 0.
/// Any error is printed to stderr and exits with status 2 (clap's usual format and status
/// for command-line errors).
pub fn load_or_exit() -> (Config, FileConfig) {
    let (cfg, file) = match load() {
        Ok(loaded) => loaded,
        Err(ConfigError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if cfg.check_config {
        match check(&cfg, &file) {
            Ok(summary) => {
                println!("{summary}");
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
    }
    (cfg, file)
}

/// The command line and environment (parsed by `cmd`), merged with the config file.
fn merge<I, T>(cmd: clap::Command, args: I) -> Result<(ArgMatches, FileConfig), ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut argv: Vec<OsString> = args.into_iter().map(Into::into).collect();
    if argv.is_empty() {
        argv.push("rtmp-edge".into());
    }
    let matches = match cmd.clone().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => return Err(e.into()),
    };
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Ok((matches, FileConfig::default()));
    };
    let file = FileConfig::load(&path)?;
    let server = file
        .server_args()
        .map_err(|source| ConfigFileError::Invalid {
            path: path.clone(),
            source,
        })?;
    let from_file: Vec<OsString> = server
        .into_iter()
        .filter(|a| {
            !matches!(
                matches.value_source(&a.id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
        .flat_map(|a| a.args)
        .map(OsString::from)
        .collect();
    if from_file.is_empty() {
        return Ok((matches, file));
    }
    // The file's values go first, each a self-contained `--long=value`, so the command
    // line after them parses exactly as before; no flag appears in both.
    let merged = argv[..1]
        .iter()
        .cloned()
        .chain(from_file)
        .chain(argv[1..].iter().cloned());
    let matches = cmd
        .try_get_matches_from(merged)
        .map_err(|e| ConfigError::Server {
            path,
            message: clap_message(&e),
        })?;
    Ok((matches, file))
}

/// `--check-config`: validates what `main` would otherwise find wrong only while starting
/// (log filter, control address, push URLs, recording settings, auth rules) and returns a
/// one-line summary of the effective configuration.
pub fn check(cfg: &Config, file: &FileConfig) -> Result<String, ConfigError> {
    tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .map_err(|e| ConfigError::LogLevel(cfg.log_level.clone(), e.to_string()))?;
    let http = cfg
        .http_addr()
        .map_err(|e| ConfigError::Http(cfg.http.clone(), e))?;
    for url in &cfg.push {
        crate::relay::push::Destination::from_flag(url)?;
    }
    for d in &file.push {
        crate::relay::push::Destination::from_config(d)?;
    }
    crate::record::RecordPolicy::from_config(cfg, file)?;
    let push = cfg.push.len() + file.push.iter().filter(|d| d.enabled).count();
    let disabled = file.push.iter().filter(|d| !d.enabled).count();
    let auth = crate::auth::Auth::from_config(&file.auth)?;
    let on = |a: crate::auth::Action| if auth.is_open(a) { "off" } else { "on" };
    let source = match &cfg.config {
        Some(p) => format!(" ({})", p.display()),
        None => String::new(),
    };
    Ok(format!(
        "config ok{source}: listen {}, http {}, shards {}{}, push destinations {push}{}, auth publish {} play {}, api token {}",
        cfg.listen,
        http.map_or("off".to_string(), |a| a.to_string()),
        cfg.shard_count(),
        if cfg.shards == 0 { " (auto)" } else { "" },
        if disabled > 0 { format!(" (+{disabled} disabled)") } else { String::new() },
        on(crate::auth::Action::Publish),
        on(crate::auth::Action::Play),
        if cfg.api_token.is_some() { "set" } else { "unset" },
    ))
}

/// A clap error's message without clap's `error: ` prefix and `--help` hint.
pub(crate) fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .map(|l| l.trim_start_matches("error: "))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_names() {
        let c = Config::parse_from(["rtmp-edge"]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:1935");
        assert_eq!(c.chunk_size, 4096);
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.shard_count() >= 1);
        let c = Config::parse_from([
            "rtmp-edge",
            "--listen",
            "127.0.0.1:1940",
            "--shards",
            "2",
            "--chunk-size",
            "60000",
            "--log-level",
            "debug",
            "--log-format",
            "json",
        ]);
        assert_eq!(c.shard_count(), 2);
        assert_eq!(c.chunk_size, 60000);
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(Config::try_parse_from(["rtmp-edge", "--chunk-size", "10"]).is_err());
        // Nagle at budget 0, our own batching (and no Nagle) when coalescing.
        assert!(!Config::parse_from(["rtmp-edge"]).player_nodelay());
        assert!(Config::parse_from(["rtmp-edge", "--write-coalesce-ms", "100"]).player_nodelay());
        assert!(Config::parse_from(["rtmp-edge", "--player-nodelay", "true"]).player_nodelay());
    }

    /// A config file in a directory of its own; removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let dir = std::env::temp_dir()
                .join(format!("rtmp-edge-config-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("edge.toml");
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }

        fn arg(&self) -> String {
            self.0.to_str().unwrap().to_string()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    fn load_args(args: &[&str]) -> Result<(Config, FileConfig), ConfigError> {
        load_from(std::iter::once("rtmp-edge").chain(args.iter().copied()))
    }

    const SERVER: &str = r#"
        [server]
        listen = "127.0.0.1:1940"
        shards = 3
        chunk-size = 8192
        write_coalesce_ms = 20
        player_nodelay = false
        http = "off"
        origin = ["rtmp://o1/live", "rtmp://o2/live"]
        api_token = "from-file"
        metrics-top-streams = 5
        [[push]]
        id = "a"
        url = "rtmp://a.example/live"
    "#;

    #[test]
    fn file_values_apply_when_no_flag() {
        let f = TempFile::new("file_values", SERVER);
        let (c, file) = load_args(&["--config", &f.arg()]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:1940");
        assert_eq!(c.shards, 3);
        assert_eq!(c.chunk_size, 8192);
        assert_eq!(c.write_coalesce_ms, 20);
        assert_eq!(c.player_nodelay, Some(false));
        assert!(!c.player_nodelay());
        assert_eq!(c.http_addr().unwrap(), None);
        assert_eq!(c.origin, ["rtmp://o1/live", "rtmp://o2/live"]);
        assert_eq!(c.metrics_top_streams, 5);
        assert_eq!(c.config.as_deref(), Some(f.0.as_path()));
        // Untouched flags keep their defaults.
        assert_eq!(c.log_level, "info");
        assert_eq!(c.viewer_queue_ms, 5000);
        assert_eq!(file.push.len(), 1);
        // Without a file: the defaults.
        let (c, file) = load_args(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:1935");
        assert_eq!(c.metrics_top_streams, 20);
        assert_eq!(file, FileConfig::default());
    }

    #[test]
    fn flags_beat_the_file() {
        let f = TempFile::new("flags_beat", SERVER);
        let (c, _) = load_args(&[
            "--shards",
            "1",
            "--config",
            &f.arg(),
            "--chunk-size=60000",
            "--player-nodelay",
            "true",
            "--http",
            "127.0.0.1:0",
            "--api-token",
            "from-flag",
        ])
        .unwrap();
        assert_eq!(c.shards, 1);
        assert_eq!(c.chunk_size, 60000);
        assert_eq!(c.player_nodelay, Some(true));
        assert_eq!(c.http, "127.0.0.1:0");
        assert_eq!(c.api_token.as_deref(), Some("from-flag"));
        // The rest still comes from the file.
        assert_eq!(c.listen.to_string(), "127.0.0.1:1940");
        assert_eq!(c.write_coalesce_ms, 20);
        // A flag set to its default value still wins over the file.
        let (c, _) = load_args(&["--config", &f.arg(), "--metrics-top-streams", "20"]).unwrap();
        assert_eq!(c.metrics_top_streams, 20);
        // A bad flag is clap's error, not the file's.
        let e = load_args(&["--config", &f.arg(), "--shards", "x"]).unwrap_err();
        assert!(matches!(&e, ConfigError::Args(e) if e.kind() == ErrorKind::ValueValidation));
        let e = load_args(&["--bogus"]).unwrap_err();
        assert!(matches!(&e, ConfigError::Args(e) if e.kind() == ErrorKind::UnknownArgument));
    }

    #[test]
    fn repeatable_flags_take_the_file_list_only_without_flags() {
        let f = TempFile::new("repeatable", SERVER);
        let (c, _) = load_args(&["--config", &f.arg()]).unwrap();
        assert_eq!(c.origin, ["rtmp://o1/live", "rtmp://o2/live"]);
        let (c, _) = load_args(&["--origin", "rtmp://cli/live", "--config", &f.arg()]).unwrap();
        assert_eq!(c.origin, ["rtmp://cli/live"]);
        let (c, _) = load_args(&[
            "--origin=rtmp://c1/live",
            "--config",
            &f.arg(),
            "--origin",
            "rtmp://c2/live",
        ])
        .unwrap();
        assert_eq!(c.origin, ["rtmp://c1/live", "rtmp://c2/live"]);
    }

    /// The flags' environment variables beat the file; checked through the same merge with
    /// the variables renamed, so tests running in parallel never see each other's values.
    #[test]
    fn env_beats_the_file() {
        let f = TempFile::new("env_beats", SERVER);
        let cmd = || {
            Config::command()
                .mut_arg("api_token", |a| a.env("RTMP_EDGE_TEST_ENV_BEATS_TOKEN"))
                .mut_arg("config", |a| a.env("RTMP_EDGE_TEST_ENV_BEATS_CONFIG"))
        };
        let run = |args: &[&str]| {
            let (m, _) = merge(
                cmd(),
                std::iter::once("rtmp-edge").chain(args.iter().copied()),
            )
            .unwrap();
            Config::from_arg_matches(&m).unwrap()
        };
        std::env::remove_var("RTMP_EDGE_TEST_ENV_BEATS_TOKEN");
        std::env::set_var("RTMP_EDGE_TEST_ENV_BEATS_CONFIG", &f.0);
        // --config from its environment variable.
        let c = run(&[]);
        assert_eq!(c.config.as_deref(), Some(f.0.as_path()));
        assert_eq!(c.api_token.as_deref(), Some("from-file"));
        std::env::set_var("RTMP_EDGE_TEST_ENV_BEATS_TOKEN", "from-env");
        let c = run(&[]);
        assert_eq!(c.api_token.as_deref(), Some("from-env"));
        assert_eq!(c.shards, 3);
        // The command line beats the environment.
        let c = run(&["--api-token", "from-flag"]);
        assert_eq!(c.api_token.as_deref(), Some("from-flag"));
        std::env::remove_var("RTMP_EDGE_TEST_ENV_BEATS_CONFIG");
        std::env::remove_var("RTMP_EDGE_TEST_ENV_BEATS_TOKEN");
        assert_eq!(run(&[]).config, None);
        // And the real names are the documented ones.
        let c = Config::command();
        let env = |id: &str| {
            c.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_str().unwrap().to_string())
        };
        assert_eq!(env("api_token").as_deref(), Some("RTMP_EDGE_API_TOKEN"));
        assert_eq!(env("config").as_deref(), Some("RTMP_EDGE_CONFIG"));
    }

    #[test]
    fn secrets_from_the_environment() {
        std::env::set_var("RTMP_EDGE_TEST_SECRETS_API", "s3cret");
        let f = TempFile::new(
            "secrets",
            "[server]\napi_token = '${RTMP_EDGE_TEST_SECRETS_API}'\n",
        );
        let (c, _) = load_args(&["--config", &f.arg()]).unwrap();
        assert_eq!(c.api_token.as_deref(), Some("s3cret"));
        let f = TempFile::new(
            "secrets_missing",
            "[server]\napi_token = '${RTMP_EDGE_TEST_SECRETS_UNSET}'\n",
        );
        let e = load_args(&["--config", &f.arg()]).unwrap_err().to_string();
        assert!(
            e.contains("RTMP_EDGE_TEST_SECRETS_UNSET") && e.contains("edge.toml"),
            "{e}"
        );
        let f = TempFile::new("secrets_empty", "[server]\napi_token = ''\n");
        assert!(matches!(
            load_args(&["--config", &f.arg()]),
            Err(ConfigError::EmptyApiToken)
        ));
    }

    #[test]
    fn file_errors_name_file_and_key() {
        for (name, text, needle) in [
            (
                "unknown",
                "[server]\nlisten_addr = '0.0.0.0:1'\n",
                "[server] listen_addr",
            ),
            (
                "type",
                "[server]\nviewer_queue_ms = 'soon'\n",
                "[server] viewer_queue_ms",
            ),
            ("push", "[server]\npush = 'rtmp://a/b'\n", "[[push]]"),
            ("table", "[servr]\nlisten = '0.0.0.0:1'\n", "servr"),
        ] {
            let f = TempFile::new(&format!("errors_{name}"), text);
            let e = load_args(&["--config", &f.arg()]).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("edge.toml"), "{name}: {e}");
        }
        let e = load_args(&["--config", "/nonexistent/rtmp-edge.toml"]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/rtmp-edge.toml"), "{e}");
    }

    /// A plausible `[server]` value for a flag, from its value parser.
    fn plausible(arg: &clap::Arg) -> toml::Value {
        macro_rules! tid {
            ($t:ty) => {
                clap::builder::ValueParser::from(clap::value_parser!($t)).type_id()
            };
        }
        if matches!(
            arg.get_action(),
            clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
        ) {
            return toml::Value::Boolean(matches!(arg.get_action(), clap::ArgAction::SetTrue));
        }
        let t = arg.get_value_parser().type_id();
        let default = arg
            .get_default_values()
            .first()
            .map(|d| d.to_str().unwrap());
        let ints = [
            tid!(u8),
            tid!(u16),
            tid!(u32),
            tid!(u64),
            tid!(usize),
            tid!(i32),
            tid!(i64),
        ];
        let v = if t == tid!(bool) {
            toml::Value::Boolean(true)
        } else if ints.contains(&t) {
            // One more than the default, so it cannot be mistaken for it.
            toml::Value::Integer(default.map_or(1, |d| d.parse::<i64>().unwrap() + 1))
        } else if let Some(p) = arg.get_possible_values().last() {
            toml::Value::String(p.get_name().to_string())
        } else if t == tid!(SocketAddr) {
            toml::Value::String("127.0.0.1:1999".into())
        } else if t == tid!(String) || t == tid!(PathBuf) {
            toml::Value::String(default.unwrap_or("x").to_string())
        } else {
            panic!(
                "add a plausible [server] value for --{} to this test",
                arg.get_long().unwrap()
            )
        };
        match arg.get_action() {
            clap::ArgAction::Append => toml::Value::Array(vec![v]),
            _ => v,
        }
    }

    /// Every flag but the command-line-only ones and those with their own table can be
    /// set in `[server]`, so the file keeps covering flags added later.
    #[test]
    fn every_flag_is_accepted_in_server() {
        let cmd = Config::command();
        let mut server = toml::Table::new();
        let mut expected = Vec::new();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version" | "config" | "check_config") {
                continue;
            }
            let long = arg
                .get_long()
                .unwrap_or_else(|| panic!("{id} has no long name"));
            if matches!(id, "push" | "record" | "record_dir") {
                // Rejected in [server]: [[push]] and [record] cover them.
                let f = FileConfig {
                    server: toml::Table::from_iter([(long.to_string(), plausible(arg))]),
                    ..Default::default()
                };
                let e = f.server_args().unwrap_err().to_string();
                assert!(e.contains("[[push]]") || e.contains("[record]"), "{e}");
                continue;
            }
            let v = plausible(arg);
            // Alternate the spellings: dashes and underscores.
            let key = if expected.len() % 2 == 0 {
                long.to_string()
            } else {
                long.replace('-', "_")
            };
            let raw: Vec<String> = match &v {
                toml::Value::Array(a) => a.iter().map(scalar_text).collect(),
                v => vec![scalar_text(v)],
            };
            server.insert(key, v);
            expected.push((id.to_string(), arg.get_action().clone(), raw));
        }
        assert!(expected.len() >= 20, "only {} flags?", expected.len());
        let text = toml::to_string(&toml::Table::from_iter([(
            "server".to_string(),
            toml::Value::Table(server),
        )]))
        .unwrap();
        let f = TempFile::new("every_flag", &text);
        let (m, _) = merge(Config::command(), ["rtmp-edge", "--config", &f.arg()]).unwrap();
        for (id, action, raw) in expected {
            assert_eq!(
                m.value_source(&id),
                Some(ValueSource::CommandLine),
                "{id} not taken from the file:\n{text}"
            );
            if !matches!(action, clap::ArgAction::SetTrue | clap::ArgAction::SetFalse) {
                let got: Vec<String> = m
                    .get_raw(&id)
                    .unwrap()
                    .map(|v| v.to_str().unwrap().to_string())
                    .collect();
                assert_eq!(got, raw, "{id}");
            }
        }
        Config::from_arg_matches(&m).unwrap();
    }

    fn scalar_text(v: &toml::Value) -> String {
        match v {
            toml::Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }

    #[test]
    fn check_summarizes() {
        let f = TempFile::new(
            "check",
            r#"
            [server]
            listen = "127.0.0.1:1940"
            shards = 2
            http = "127.0.0.1:8081"
            [auth.play]
            secret = "k"
            [[push]]
            url = "rtmp://a.example/live"
            [[push]]
            url = "rtmp://b.example/live"
            enabled = false
            "#,
        );
        let (c, file) = load_args(&["--config", &f.arg(), "--push", "rtmp://c.example/x"]).unwrap();
        let s = check(&c, &file).unwrap();
        assert!(s.starts_with("config ok ("), "{s}");
        assert!(
            s.ends_with(": listen 127.0.0.1:1940, http 127.0.0.1:8081, shards 2, push destinations 2 (+1 disabled), auth publish off play on, api token unset"),
            "{s}"
        );
        let (c, file) = load_args(&["--http", "off", "--api-token", "t"]).unwrap();
        let s = check(&c, &file).unwrap();
        assert!(
            s.contains("http off") && s.contains("(auto)") && s.contains("api token set"),
            "{s}"
        );
        for bad in [
            &["--http", "nope"][..],
            &["--push", "http://not-rtmp/"],
            &["--record", "all"],
            &["--log-level", "info,=["],
        ] {
            let (c, file) = load_args(bad).unwrap();
            assert!(check(&c, &file).is_err(), "{bad:?}");
        }
        let f = TempFile::new("check_auth", "[auth.publish]\nsecret = ''\n");
        let (c, file) = load_args(&["--config", &f.arg()]).unwrap();
        assert!(matches!(check(&c, &file), Err(ConfigError::Auth(_))));
    }
}
