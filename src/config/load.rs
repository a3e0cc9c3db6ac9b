//! Loading the configuration: the command line and the environment, merged with the
//! config file's `[server]` values. Precedence, highest first: the command line, the
//! flag's environment variable (`RTMP_EDGE_API_TOKEN`, `RTMP_EDGE_CONFIG`), `[server]` in
//! the file, the built-in default.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::check::check;
use super::cli::Config;
use super::file::{ConfigFileError, FileConfig};

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
    #[error("bad --http-media {0:?} (an address:port, or \"off\"): {1}")]
    HttpMedia(String, std::net::AddrParseError),
    #[error(transparent)]
    Hls(#[from] crate::hls::HlsError),
    #[error("storage target: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Push(#[from] crate::relay::push::PushConfigError),
    #[error(transparent)]
    Origin(#[from] crate::relay::pull::BadOrigin),
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Channel(#[from] crate::channel::ChannelError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    TlsSettings(&'static str),
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
pub(super) fn merge<I, T>(
    cmd: clap::Command,
    args: I,
) -> Result<(ArgMatches, FileConfig), ConfigError>
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

/// A clap error's message without clap's `error: ` prefix and `--help` hint.
pub(super) fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .map(|l| l.trim_start_matches("error: "))
        .collect::<Vec<_>>()
        .join(" ")
}
