//! `--check-config`: everything `main` would otherwise find wrong only while starting,
//! and a one-line summary of the effective configuration.

use super::cli::Config;
use super::file::FileConfig;
use super::load::ConfigError;

/// `--check-config`: validates what `main` would otherwise find wrong only while starting
/// (log filter, control address, push URLs, recording settings, auth rules, channel slates)
/// and returns a
/// one-line summary of the effective configuration.
pub fn check(cfg: &Config, file: &FileConfig) -> Result<String, ConfigError> {
    tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .map_err(|e| ConfigError::LogLevel(cfg.log_level.clone(), e.to_string()))?;
    let http = cfg
        .http_addr()
        .map_err(|e| ConfigError::Http(cfg.http.clone(), e))?;
    let flag_trust = crate::tls::ClientTls::new(cfg.tls_ca_file.as_deref())?;
    for url in &cfg.push {
        crate::relay::push::Destination::from_flag(url, flag_trust.clone())?;
    }
    // Reads and checks every certificate and key, as a start would.
    let settings = super::Settings::assemble(cfg, file)?;
    for d in &file.push {
        crate::relay::push::Destination::from_config(d)?;
    }
    crate::record::RecordPolicy::from_config(&super::record_config(cfg, file))?;
    let push = cfg.push.len() + file.push.iter().filter(|d| d.enabled).count();
    let disabled = file.push.iter().filter(|d| !d.enabled).count();
    let auth = crate::auth::Auth::from_config(&file.auth)?;
    // Reads every slate, as a start would.
    crate::channel::Channels::new(&settings.channels)?;
    let on = |a: crate::auth::Action| if auth.is_open(a) { "off" } else { "on" };
    let source = match &cfg.config {
        Some(p) => format!(" ({})", p.display()),
        None => String::new(),
    };
    Ok(format!(
        "config ok{source}: listen {}, http {}, shards {}{}, push destinations {push}{}, auth publish {} play {}, api token {}, media {} (hls {}), channels {}",
        cfg.listen,
        http.map_or("off".to_string(), |a| a.to_string()),
        cfg.shard_count(),
        if cfg.shards == 0 { " (auto)" } else { "" },
        if disabled > 0 { format!(" (+{disabled} disabled)") } else { String::new() },
        on(crate::auth::Action::Publish),
        on(crate::auth::Action::Play),
        if cfg.api_token.is_some() { "set" } else { "unset" },
        settings.http_media.map_or("off".to_string(), |a| a.to_string()),
        match settings.hls.mode {
            crate::hls::HlsMode::All => "all",
            crate::hls::HlsMode::None => "none",
            crate::hls::HlsMode::OnDemand => "on-demand",
        },
        settings.channels.channels.len(),
    ))
}
