//! The rtmp-edge binary: load the configuration, set up logging, start the control plane
//! and the shards, and handle signals (SIGTERM/SIGINT finalize and exit, SIGHUP reloads).

use std::sync::Arc;

use tracing_subscriber::EnvFilter;

use rtmp_edge::auth::Auth;
use rtmp_edge::config::LogFormat;
use rtmp_edge::control::Control;
use rtmp_edge::relay::push::PushRegistry;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let (cfg, file) = rtmp_edge::config::load_or_exit();
    let filter = EnvFilter::try_new(&cfg.log_level)
        .map_err(|e| anyhow::anyhow!("bad --log-level {:?}: {e}", cfg.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    let auth = Auth::from_config(&file.auth)?;
    // Push destinations: always a registry, so the API can add some at runtime.
    let push = Arc::new(PushRegistry::from_config(&cfg, &file)?);
    let mut sinks: Vec<Arc<dyn rtmp_edge::shard::state::SinkFactory>> = vec![push.clone()];
    // Recording: one recorder thread owns every file; SIGTERM/SIGINT finalize them and exit.
    let recorder = rtmp_edge::record::Recorder::from_config(&cfg, &file)?;
    if let Some(r) = &recorder {
        sinks.push(r.clone());
    }
    // Control plane (metrics, health, API) on its own thread, installed before the shards.
    let shards = cfg.shard_count();
    let http = cfg.http_addr()?;
    let mut control = match http {
        Some(_) => Control::with_prometheus(shards)?,
        None => Control::detached(shards),
    };
    control.api_token = cfg.api_token.clone();
    control.top_streams = cfg.metrics_top_streams;
    control.set_auth(auth);
    control.attach_push(push);
    let control = Arc::new(control);
    if let Some(addr) = http {
        rtmp_edge::control::serve(control.clone(), addr)?;
    }
    spawn_signal_thread(recorder, control.clone(), cfg.config.clone())?;
    let server = rtmp_edge::shard::start_with(cfg, sinks, control)?;
    for t in server.threads {
        if t.join().is_err() {
            anyhow::bail!("a shard thread panicked");
        }
    }
    Ok(())
}

/// SIGTERM or SIGINT: finalize open recordings (bounded), then exit 0 (1 if they could not
/// all be finalized in time). SIGHUP: reload auth and push destinations from the config
/// file; streams, players and unchanged push sessions keep running. Until a signal comes
/// the thread only waits, so the shards run untouched.
fn spawn_signal_thread(
    recorder: Option<Arc<rtmp_edge::record::Recorder>>,
    control: Arc<Control>,
    config: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    reload(&control, config.as_deref());
                    continue;
                }
                tracing::info!(signal = sig, "shutting down");
                let code = match recorder.map(|r| r.shutdown(std::time::Duration::from_secs(5))) {
                    None => 0,
                    Some(Ok(files)) => {
                        tracing::info!(files, "recordings finalized");
                        0
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "recordings not finalized");
                        1
                    }
                };
                std::process::exit(code);
            }
        })?;
    Ok(())
}

/// Re-reads the config file's `[auth]` and `[[push]]`. A file that does not load or
/// validate changes nothing: the running configuration stays and the error is logged.
fn reload(control: &Control, path: Option<&std::path::Path>) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: no --config file to reload");
        return;
    };
    let file = match rtmp_edge::config_file::FileConfig::load(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "config reload failed, keeping the running configuration");
            return;
        }
    };
    let auth = match Auth::from_config(&file.auth) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "config reload failed, keeping the running configuration");
            return;
        }
    };
    if let Some(push) = control.push_registry() {
        if let Err(e) = push.replace_config(&file) {
            tracing::error!(error = %e, "config reload failed, keeping the running configuration");
            return;
        }
    }
    control.set_auth(auth);
    control.reconcile_sinks_blocking();
    tracing::info!(path = %path.display(), "config reloaded");
}
