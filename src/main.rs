//! The rtmp-edge binary: load the configuration, set up logging, build the features and
//! hand them to the shards as traits, start the control plane, and handle signals
//! (SIGTERM/SIGINT drain and exit 0, a second one exits at once; SIGHUP reloads).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use rtmp_edge::auth::{Auth, SharedAuth};
use rtmp_edge::channel::Channels;
use rtmp_edge::config::{LogFormat, Settings};
use rtmp_edge::control::Control;
use rtmp_edge::record::Recorder;
use rtmp_edge::relay::pull::OriginPull;
use rtmp_edge::relay::push::PushRegistry;
use rtmp_edge::shard::hooks::{Hooks, ObjectStore, ShardService, SinkFactory, UpstreamFactory};
use rtmp_edge::shard::transmission::ShardLink;
use rtmp_edge::shard::{self, Server};
use rtmp_edge::storage::{Store, UploadTarget, Uploader, UploaderConfig};
use rtmp_edge::tls::{Acceptor, CertConfig, ClientTls};

// `--features system-alloc` swaps in the C library's malloc, so heap profilers that hook
// malloc (heaptrack, valgrind) see every allocation, and allocator effects can be told
// from the program's own in a soak.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long finalizing recordings may take once the shards stopped.
const RECORDINGS_DEADLINE: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    no_transparent_huge_pages();
    let (cfg, file) = rtmp_edge::config::load_or_exit();
    let settings = Settings::assemble(&cfg, &file)?;
    init_logging(&settings)?;
    let auth = Arc::new(SharedAuth::new(Auth::from_config(&settings.auth)?));
    // Push destinations: always a registry, so the API can add some at runtime.
    let push = Arc::new(PushRegistry::configured(
        settings.push_policy,
        &settings.push_flags,
        ClientTls::new(settings.tls_ca_file.as_deref())?,
        &settings.push_entries,
    )?);
    let mut sinks: Vec<Arc<dyn SinkFactory>> = vec![push.clone()];
    // HTTP-FLV: every stream's cache and viewers, with the players' admission policy.
    let flv = rtmp_edge::httpflv::HttpFlv::new(settings.shard.viewer.admission);
    if settings.http_media.is_some() {
        sinks.push(flv.clone());
    }
    // Control plane (metrics, health, API) on its own thread, installed before the shards.
    let control = Control::new(settings.shard.shards, &settings.control)?;
    control.attach_push(push.clone());
    let control = Arc::new(control);
    // HLS: a packaging sink per stream, read by the media listener's own threads, and
    // written to a storage target by the uploader thread when one is set.
    // Storage targets share one uploader thread, started only when one is configured.
    let uploader = if settings.hls_store.is_some() || settings.record_store.is_some() {
        let telemetry: Arc<dyn rtmp_edge::shard::hooks::Telemetry> = control.clone();
        Some(Uploader::start(UploaderConfig::default(), Some(telemetry))?)
    } else {
        None
    };
    let target =
        |t: &Option<rtmp_edge::storage::Target>| -> anyhow::Result<Option<Arc<dyn ObjectStore>>> {
            Ok(match (t, &uploader) {
                (Some(t), Some(u)) => Some(Arc::new(UploadTarget {
                    uploader: u.clone(),
                    store: Store::new(t.clone())?,
                })),
                _ => None,
            })
        };
    // Recording: one recorder thread owns every file; the shutdown finalizes them.
    let recorder = Recorder::from_config(&settings.record, target(&settings.record_store)?)?;
    if let Some(r) = &recorder {
        sinks.push(r.clone());
    }
    let hls_store = target(&settings.hls_store)?.map(|objects| {
        Arc::new(rtmp_edge::hls::store::HlsStore {
            objects,
            parts: settings.hls.store_parts,
            keep: settings.hls.keep,
        })
    });
    let hls = rtmp_edge::hls::Hls::new(settings.hls.clone(), hls_store);
    if settings.hls.mode != rtmp_edge::hls::HlsMode::None || !settings.hls.overrides.is_empty() {
        sinks.push(hls.clone());
    }
    if let Some(addr) = settings.control.http {
        rtmp_edge::control::serve(control.clone(), addr)?;
    }
    // The media listener, once the metrics recorder is installed.
    if let Some(addr) = settings.http_media {
        // An edge pulls a stream an HTTP viewer asks for, as it does for an RTMP player.
        let fetch = settings.origin.is_some().then(|| {
            let c = control.clone();
            Arc::new(move |key: &str| c.fetch(key)) as rtmp_edge::web::Fetch
        });
        rtmp_edge::web::serve(hls.clone(), flv, auth.clone(), fetch, &settings.web, addr)?;
    }
    let origin_pull = settings
        .origin
        .clone()
        .map(|o| Arc::new(OriginPull::new(o)));
    let upstream = origin_pull.clone().map(|o| o as Arc<dyn UpstreamFactory>);
    // Always-on channels: their sources' sinks, and a task on each channel's owner shard.
    let channels = Channels::new(&settings.channels)?;
    let mut services: Vec<Arc<dyn ShardService>> = Vec::new();
    if !channels.is_empty() {
        sinks.push(channels.clone());
        services.push(channels.clone());
    }
    control.attach_channels(channels.clone());
    let hooks = Hooks {
        auth: auth.clone(),
        sinks,
        upstream,
        services,
        telemetry: control.clone(),
    };
    let mut shard_config = settings.shard.clone();
    shard_config.release_memory = release_memory;
    let server = shard::start(shard_config, hooks)?;
    control.attach_shards(server.links.clone());
    let stopping: Arc<OnceLock<Instant>> = Arc::default();
    spawn_signal_thread(
        server.links.clone(),
        stopping.clone(),
        Reloadable {
            auth,
            push,
            control,
            path: settings.config_path.clone(),
            tls: settings.shard.tls.as_ref().map(|t| t.acceptor.clone()),
            flag_certs: settings.tls_certs.clone(),
            flag_cert_count: usize::from(cfg.tls_cert.is_some()),
            origin: origin_pull.clone(),
            channels,
        },
    )?;
    wait_for_shards(
        &server,
        settings.shard.shards,
        &stopping,
        settings.shard.shutdown_grace,
    )?;
    if let Some(r) = recorder {
        let files = r.shutdown(RECORDINGS_DEADLINE)?;
        tracing::info!(files, "recordings finalized");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Opts this process out of transparent huge pages. mimalloc asks for them on its arenas
/// (MADV_HUGEPAGE; built with `no_thp` it does not), and the kernel then backs whole 2 MiB
/// ranges of a mostly idle heap: measured here, 14 MiB of the 22 MiB idle RSS, and an RSS
/// that climbed by steps under churn as khugepaged collapsed more ranges (a 20-minute
/// soak: 46 MiB with them, 22 MiB without). This covers hosts whose THP mode is `always`.
/// A relay's heap is small and its hot data sits in socket buffers, so the TLB savings do
/// not pay for that.
fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory map.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        eprintln!(
            "transparent huge pages stay on: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Gives the calling thread's free memory back to the OS (see `ShardConfig::release_memory`).
fn release_memory(force: bool) {
    #[cfg(not(feature = "system-alloc"))]
    // SAFETY: mi_collect only walks and trims the calling thread's heap; it is safe to call
    // at any time from any thread that uses mimalloc (the global allocator here).
    unsafe {
        libmimalloc_sys::mi_collect(force)
    };
    #[cfg(feature = "system-alloc")]
    if force {
        // SAFETY: malloc_trim only returns free memory of glibc's heap to the OS.
        unsafe { libc::malloc_trim(0) };
    }
}

fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&settings.log_level)
        .map_err(|e| anyhow::anyhow!("bad --log-level {:?}: {e}", settings.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

/// Until every shard thread ended. A shard that ends (panics) before any shutdown is an
/// error; after the shutdown began, shards get their grace period plus a margin.
fn wait_for_shards(
    server: &Server,
    shards: usize,
    stopping: &OnceLock<Instant>,
    grace: Duration,
) -> anyhow::Result<()> {
    let margin = Duration::from_secs(3);
    let mut ended = 0;
    while ended < shards {
        match server.exits.recv_timeout(Duration::from_millis(200)) {
            Ok(exit) => {
                if exit.panicked || stopping.get().is_none() {
                    anyhow::bail!("shard {} stopped unexpectedly", exit.shard);
                }
                ended += 1;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if stopping.get().is_some_and(|t| t.elapsed() > grace + margin) {
                    tracing::warn!(left = shards - ended, "shards did not stop in time");
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    Ok(())
}

/// What SIGHUP reloads: the config file, and every certificate and CA file.
struct Reloadable {
    auth: Arc<SharedAuth>,
    push: Arc<PushRegistry>,
    control: Arc<Control>,
    path: Option<std::path::PathBuf>,
    /// The RTMPS certificates in use, when serving RTMPS.
    tls: Option<Acceptor>,
    /// The certificates at start: the flags' pair first (`flag_cert_count` of them).
    flag_certs: Vec<CertConfig>,
    flag_cert_count: usize,
    /// Edge mode: the origin pulls, whose CA file a reload re-reads.
    origin: Option<Arc<OriginPull>>,
    /// Channels, whose slate files a reload re-reads.
    channels: Arc<Channels>,
}

/// SIGTERM or SIGINT: every shard drains (see `ShardState::begin_shutdown`) and `main`
/// finalizes recordings and exits 0; a second one exits at once. SIGHUP: reload auth and
/// push destinations from the config file; streams, players and unchanged push sessions
/// keep running. Until a signal comes the thread only waits, so the shards run untouched.
fn spawn_signal_thread(
    links: Vec<ShardLink>,
    stopping: Arc<OnceLock<Instant>>,
    reload: Reloadable,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    reload.run();
                    continue;
                }
                if stopping.get().is_some() {
                    tracing::warn!(signal = sig, "second signal, exiting now");
                    std::process::exit(1);
                }
                tracing::info!(signal = sig, "shutting down (again to exit at once)");
                let _ = stopping.set(Instant::now());
                reload.control.set_draining();
                Server::shutdown(&links);
            }
        })?;
    Ok(())
}

impl Reloadable {
    /// Re-reads the config file's `[auth]`, `[[push]]` and `[[tls_certificate]]`, every
    /// certificate, every CA file and every changed channel slate. Everything is loaded and checked first; if any part
    /// fails nothing changes (the running configuration stays and the error is logged).
    fn run(&self) {
        let fail = |e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "config reload failed, keeping the running configuration");
        };
        let file = match self.path.as_deref() {
            Some(path) => match rtmp_edge::config::FileConfig::load(path) {
                Ok(f) => Some(f),
                Err(e) => return fail(&e),
            },
            None => None,
        };
        // The flags' certificate pair, then the file's (as at start).
        let mut certs = self.flag_certs[..self.flag_cert_count].to_vec();
        match &file {
            Some(f) => certs.extend(f.tls_certificate.iter().cloned()),
            None => certs.extend(self.flag_certs[self.flag_cert_count..].iter().cloned()),
        }
        let prepared = match &self.tls {
            Some(_) => match Acceptor::prepare(&certs) {
                Ok(p) => Some(p),
                Err(e) => return fail(&e),
            },
            None => None,
        };
        let auth = match file
            .as_ref()
            .map(|f| Auth::from_config(&f.auth))
            .transpose()
        {
            Ok(a) => a,
            Err(e) => return fail(&e),
        };
        // Validates the whole list before applying any of it: the last fallible step.
        if let Some(f) = &file {
            if let Err(e) = self.push.replace_config(&f.push) {
                return fail(&e);
            }
        }
        // Commit.
        if let (Some(acceptor), Some(p)) = (&self.tls, prepared) {
            acceptor.install(p);
            tracing::info!(certificates = certs.len(), "TLS certificates reloaded");
        }
        for (id, e) in self.push.reload_ca_files() {
            tracing::warn!(id = %id, error = %e, "push destination's CA file did not reload; keeping the old one");
        }
        if let Some(origin) = &self.origin {
            if let Err(e) = origin.reload_trust() {
                tracing::warn!(error = %e, "origin CA file did not reload; keeping the old one");
            }
        }
        if let Some(a) = auth {
            self.auth.replace(a);
        }
        if let Some(f) = &file {
            for e in self.channels.reload(&f.channel) {
                tracing::warn!(error = %e, "slate did not reload; keeping the old one");
            }
        }
        self.control.reconcile_sinks();
        match &self.path {
            Some(path) => tracing::info!(path = %path.display(), "config reloaded"),
            None => tracing::info!("certificates reloaded (no --config file)"),
        }
    }
}
