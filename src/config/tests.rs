//! Loading tests: flags, environment and the config file together.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use super::check::check;
use super::cli::Config;
use super::file::FileConfig;
use super::load::{load_from, merge, ConfigError};

/// A config file in a directory of its own; removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let dir =
            std::env::temp_dir().join(format!("rtmp-edge-config-{}-{name}", std::process::id()));
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
    } else if t == tid!(f64) {
        toml::Value::Float(default.map_or(1.0, |d| d.parse::<f64>().unwrap() + 1.0))
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
        if matches!(id, "push" | "record" | "record_dir" | "hls") {
            // Rejected in [server]: [[push]] and [record] cover them.
            let f = FileConfig {
                server: toml::Table::from_iter([(long.to_string(), plausible(arg))]),
                ..Default::default()
            };
            let e = f.server_args().unwrap_err().to_string();
            assert!(
                e.contains("[[push]]") || e.contains("[record]") || e.contains("[hls]"),
                "{e}"
            );
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
        toml::Value::Float(f) => f.to_string(),
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
        s.ends_with(": listen 127.0.0.1:1940, http 127.0.0.1:8081, shards 2, push destinations 2 (+1 disabled), auth publish off play on, api token unset, media 0.0.0.0:8888 (hls on-demand), channels 0"),
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
        &["--origin", "rtmpx://origin/live"],
        &["--origin", "rtmp://o/live", "--origin", "rtmp://o:x/live"],
        &["--record", "all"],
        &["--log-level", "info,=["],
    ] {
        let (c, file) = load_args(bad).unwrap();
        assert!(check(&c, &file).is_err(), "{bad:?}");
    }
    // A bad URL's error names it without what may be a credential.
    for (flag, url) in [
        ("--origin", "rtmpx://o/live?token=s3cret"),
        ("--push", "rtmpx://a.example/app/s3cret"),
    ] {
        let (c, file) = load_args(&[flag, url]).unwrap();
        let e = check(&c, &file).unwrap_err().to_string();
        assert!(!e.contains("s3cret") && e.contains("rtmp"), "{e}");
    }
    let f = TempFile::new("check_auth", "[auth.publish]\nsecret = ''\n");
    let (c, file) = load_args(&["--config", &f.arg()]).unwrap();
    assert!(matches!(check(&c, &file), Err(ConfigError::Auth(_))));
}

fn record_policy(
    args: &[&str],
    toml: &str,
) -> Result<Option<crate::record::RecordPolicy>, crate::record::RecordError> {
    use clap::Parser;
    let cfg = Config::parse_from(std::iter::once("rtmp-edge").chain(args.iter().copied()));
    let file: FileConfig = toml::from_str(toml).unwrap();
    crate::record::RecordPolicy::from_config(&super::record_config(&cfg, &file))
}

#[test]
fn record_flags_win_and_overrides_apply_in_order() {
    use crate::record::RecordError;
    use std::path::Path;
    let policy = record_policy;
    assert_eq!(policy(&[], "").unwrap(), None, "default: record nothing");
    let p = policy(&["--record", "all", "--record-dir", "/r"], "")
        .unwrap()
        .unwrap();
    assert!(p.records("live/x") && p.dir == Path::new("/r"));

    let file = r#"
        [record]
        dir = "/from-file"
        mode = "all"
        [[record.streams]]
        match = "live/private-*"
        record = false
        [[record.streams]]
        match = "live/*"
        record = true
    "#;
    let p = policy(&[], file).unwrap().unwrap();
    assert_eq!(p.dir, Path::new("/from-file"));
    assert!(!p.records("live/private-1"), "first match wins");
    assert!(p.records("live/public") && p.records("other/x"));
    // --record none beats the file's mode, overrides still apply; --record-dir wins.
    let p = policy(&["--record", "none", "--record-dir", "/cli"], file)
        .unwrap()
        .unwrap();
    assert_eq!(p.dir, Path::new("/cli"));
    assert!(!p.records("other/x") && p.records("live/public"));
    assert!(!p.records("live/private-1"));

    assert!(matches!(
        policy(&["--record", "all"], ""),
        Err(RecordError::NoDir)
    ));
    assert!(matches!(
        policy(&[], "[record]\nmode = \"some\""),
        Err(RecordError::BadMode(_))
    ));
    // Only "don't record" overrides and no mode: nothing to record, no dir needed.
    assert_eq!(
        policy(&[], "[[record.streams]]\nmatch = \"*\"\nrecord = false").unwrap(),
        None
    );
}

#[test]
fn tls_settings_are_checked() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tls/testdata/");
    let cert = format!("{data}server.pem");
    let key = format!("{data}server.key");
    let assemble = |args: &[&str]| {
        let (cfg, file) = load_args(args).unwrap();
        super::Settings::assemble(&cfg, &file).map(|s| s.shard.tls.map(|t| t.addr))
    };
    let err = |args: &[&str]| assemble(args).unwrap_err().to_string();
    assert!(err(&["--listen-tls", ":1936"]).contains("needs --tls-cert"));
    assert!(err(&["--tls-cert", &cert]).contains("go together"));
    // The same port as --listen on an overlapping address would split connections.
    let same = [
        "--listen",
        "0.0.0.0:1935",
        "--listen-tls",
        "127.0.0.1:1935",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    assert!(err(&same).contains("must not overlap"));
    let ok = [
        "--listen-tls",
        ":1936",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    assert_eq!(
        assemble(&ok).unwrap().map(|a| a.to_string()).as_deref(),
        Some("0.0.0.0:1936")
    );
    // A key that does not exist is named.
    let bad = [
        "--listen-tls",
        ":1936",
        "--tls-cert",
        &cert,
        "--tls-key",
        "/nonexistent.key",
    ];
    assert!(err(&bad).contains("/nonexistent.key"));
}

#[test]
fn channels_are_checked_with_their_slates() {
    let f = TempFile::new(
        "channel",
        r#"
        [[channel]]
        name = "live/main"
        sources = ["live/cam", "live/cam-backup"]
        slate = "/nonexistent/offline.flv"
        "#,
    );
    let (c, file) = load_args(&["--config", &f.arg(), "--source-timeout-ms", "800"]).unwrap();
    let s = super::Settings::assemble(&c, &file).unwrap();
    assert_eq!(
        s.channels.channels[0].sources,
        ["live/cam", "live/cam-backup"]
    );
    assert_eq!(
        s.channels.source_timeout,
        std::time::Duration::from_millis(800)
    );
    let e = check(&c, &file).unwrap_err().to_string();
    assert!(
        e.contains("live/main") && e.contains("/nonexistent/offline.flv"),
        "{e}"
    );
    let e = FileConfig::parse("[[channel]]\nname = \"main\"\nsources = [\"live/a\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("[[channel]] #0:"), "{e}");
}
