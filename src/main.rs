//! The rtmp-edge binary: parse flags, set up logging, start the shards, wait.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use rtmp_edge::config::{Config, LogFormat};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
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
    let file = match &cfg.config {
        Some(path) => rtmp_edge::config_file::FileConfig::load(path)?,
        None => Default::default(),
    };
    let mut sinks: Vec<std::sync::Arc<dyn rtmp_edge::shard::state::SinkFactory>> = Vec::new();
    if let Some(push) = rtmp_edge::relay::push::factory(&cfg, &file)? {
        sinks.push(std::sync::Arc::new(push));
    }
    // Recording: one recorder thread owns every file; SIGTERM/SIGINT finalize them and exit.
    let recorder = rtmp_edge::record::Recorder::from_config(&cfg, &file)?;
    if let Some(r) = &recorder {
        sinks.push(r.clone());
    }
    spawn_signal_thread(recorder)?;
    // Control plane (metrics, health) on its own thread, installed before the shards run.
    let shards = cfg.shard_count();
    let control = match cfg.http_addr()? {
        Some(addr) => {
            let control =
                std::sync::Arc::new(rtmp_edge::control::Control::with_prometheus(shards)?);
            rtmp_edge::control::serve(control.clone(), addr)?;
            control
        }
        None => std::sync::Arc::new(rtmp_edge::control::Control::detached(shards)),
    };
    let server = rtmp_edge::shard::start_with(cfg, sinks, control)?;
    for t in server.threads {
        if t.join().is_err() {
            anyhow::bail!("a shard thread panicked");
        }
    }
    Ok(())
}

/// On the first SIGTERM or SIGINT: finalize open recordings (bounded), then exit 0 (1 if
/// they could not all be finalized in time). Until then the thread only waits, so the shards
/// run untouched.
fn spawn_signal_thread(
    recorder: Option<std::sync::Arc<rtmp_edge::record::Recorder>>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Some(sig) = signals.forever().next() else {
                return;
            };
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
        })?;
    Ok(())
}
