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
    let server = rtmp_edge::shard::start_with(cfg, sinks)?;
    for t in server.threads {
        if t.join().is_err() {
            anyhow::bail!("a shard thread panicked");
        }
    }
    Ok(())
}
