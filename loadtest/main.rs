//! rtmp-load: drives P publishers and V viewers of real RTMP at any server, ramps viewers
//! up, runs for a fixed time, stops by itself, and reports delivery, time to first frame
//! and end-to-end latency (publisher send -> viewer receipt, one process, one clock).

mod dial;
mod hls;
mod publisher;
mod report;
mod source;
mod stats;
mod viewer;

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use rtmp_edge::protocol::client::ClientConfig;
use rtmp_edge::protocol::url::RtmpUrl;
use rtmp_edge::tls::ClientTls;

use publisher::PublisherResult;
use source::Source;
use stats::{Live, SendTimes, ViewerResult};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "rtmp-load",
    about = "RTMP load generator: real publishers and viewers"
)]
struct Args {
    /// rtmp://host[:port]/app/key (or rtmps:// for TLS); with several publishers, keys get
    /// -1, -2, ... appended.
    #[arg(long)]
    url: String,
    /// Extra CA certificates (PEM) trusted for an rtmps:// URL, besides the public roots.
    #[arg(long)]
    tls_ca_file: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    #[arg(long, default_value_t = 100)]
    viewers: usize,
    /// Run time, e.g. 60s, 2m, 500ms.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Viewers started per second.
    #[arg(long, default_value_t = 500.0)]
    ramp: f64,
    /// FLV file to publish (looped, timestamps rebased); without it a synthetic stream.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Synthetic stream bitrate in kbit/s.
    #[arg(long, default_value_t = 1000)]
    bitrate_kbps: u32,
    /// Synthetic stream GOP in seconds.
    #[arg(long, default_value_t = 2.0)]
    gop_secs: f64,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Synthetic publishers' keyframes all at the same instants. Without it they are
    /// spread over the GOP, as independent encoders' are; in step, every stream's GOP is
    /// freed at once (the worst case for a server's memory churn).
    #[arg(long)]
    aligned_gops: bool,
    /// Viewers that stop reading once they get media (slow-viewer experiments).
    #[arg(long, default_value_t = 0)]
    paused_viewers: usize,
    /// Worker threads (each an io_uring runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds to wait after publishing starts before viewers connect (fills the GOP cache).
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// HLS viewers, besides the RTMP ones: they follow the stream over HTTP from the
    /// server's media listener (`--hls-url`).
    #[arg(long, default_value_t = 0)]
    hls_viewers: usize,
    /// HLS viewers follow the live edge part by part with blocking reloads (LL-HLS).
    #[arg(long)]
    hls_low_latency: bool,
    /// HTTP-FLV viewers (`GET /app/key.flv` on the media listener, `--hls-url`).
    #[arg(long, default_value_t = 0)]
    flv_viewers: usize,
    /// The media listener, e.g. http://127.0.0.1:8888 (default: the RTMP host, port 8888).
    #[arg(long)]
    hls_url: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write an HTML report here: the summary and plots of viewers and throughput over
    /// time, delivery and time to first frame per viewer, and the latency histogram.
    #[arg(long)]
    report_html: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

struct WorkerOut {
    viewers: Vec<ViewerResult>,
    publishers: Vec<PublisherResult>,
    latency: Histogram<u64>,
}

fn stream_key(base: &str, i: usize) -> String {
    if i == 0 {
        base.to_string()
    } else {
        format!("{base}-{i}")
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = RtmpUrl::parse(&args.url)?;
    let key = url.key.clone().context("the URL needs a stream key")?;
    let addr: SocketAddr = url
        .authority()
        .to_socket_addrs()?
        .next()
        .context("address did not resolve")?;
    let target = dial::Target {
        addr,
        tls: if url.tls {
            Some((
                ClientTls::new(args.tls_ca_file.as_deref())?,
                url.host.clone(),
            ))
        } else {
            None
        },
    };
    let threads = args.threads.max(1);
    let epoch = Instant::now();
    let live = Arc::new(Live::default());
    let times: Vec<Arc<SendTimes>> = (0..args.publishers.max(1))
        .map(|_| Arc::new(SendTimes::new(epoch)))
        .collect();
    let warmup = if args.publishers > 0 {
        Duration::from_secs_f64(args.warmup_secs)
    } else {
        Duration::ZERO
    };
    let viewers_start = epoch + warmup;
    let end = viewers_start + args.duration;
    let base_cfg = ClientConfig::new(&url.app, &url.tc_url());

    let mut handles = Vec::new();
    for t in 0..threads {
        let args = args.clone();
        let (live, times, key, base_cfg, target) = (
            live.clone(),
            times.clone(),
            key.clone(),
            base_cfg.clone(),
            target.clone(),
        );
        handles.push(std::thread::spawn(move || -> anyhow::Result<WorkerOut> {
            let sources: Vec<Source> = if t == 0 {
                let phases = if args.aligned_gops {
                    1
                } else {
                    args.publishers
                };
                (0..args.publishers)
                    .map(|i| match &args.input {
                        Some(p) => Source::from_flv(p),
                        None => Ok(Source::synthetic(
                            args.bitrate_kbps,
                            args.gop_secs,
                            args.fps,
                            i % phases,
                            phases,
                        )),
                    })
                    .collect::<anyhow::Result<_>>()?
            } else {
                Vec::new()
            };
            Ok(tokio_uring::start(worker(
                t,
                threads,
                args,
                target,
                key,
                base_cfg,
                sources,
                times,
                live,
                viewers_start,
                end,
            )))
        }));
    }

    let hls_handle = (args.hls_viewers + args.flv_viewers > 0)
        .then(|| {
            spawn_hls(
                &args,
                &url.host,
                &format!("{}/{key}", url.app),
                viewers_start,
                end,
            )
        })
        .transpose()?;

    let progress_every = Duration::from_secs(1);
    let mut last_bytes = 0;
    let mut last = Instant::now();
    // (seconds, viewers connected, Mbit/s received) once a second, for the HTML plots.
    let mut timeline: Vec<(f64, f64, f64)> = Vec::new();
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() >= progress_every {
            let bytes = live.bytes.load(Relaxed);
            let secs = last.elapsed().as_secs_f64();
            let t = epoch.elapsed().as_secs_f64();
            let connected = live.connected.load(Relaxed);
            let mbps = (bytes - last_bytes) as f64 * 8.0 / secs / 1e6;
            timeline.push((t, connected as f64, mbps));
            if !args.quiet {
                eprintln!(
                    "t={t:>5.1}s viewers {connected}/{} connected, {} failed, {} closed; rx {mbps:.1} Mbit/s",
                    args.viewers,
                    live.failed.load(Relaxed),
                    live.closed_early.load(Relaxed),
                );
            }
            last_bytes = bytes;
            last = Instant::now();
        }
    }
    let mut viewers = Vec::new();
    let mut pubs = Vec::new();
    let mut latency = stats::new_latency_histogram();
    for h in handles {
        let out = h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        viewers.extend(out.viewers);
        pubs.extend(out.publishers);
        latency.add(&out.latency)?;
    }
    let hls_results = match hls_handle {
        Some(h) => h
            .join()
            .map_err(|_| anyhow::anyhow!("HLS viewers panicked"))?,
        None => Vec::new(),
    };
    let (mut report, delivery, first_media) =
        build_report(&args, &viewers, &pubs, &latency, epoch.elapsed());
    let (flv_results, hls_results): (Vec<_>, Vec<_>) =
        hls_results.into_iter().partition(|(flv, _)| *flv);
    let strip = |v: Vec<(bool, hls::HlsResult)>| v.into_iter().map(|(_, r)| r).collect::<Vec<_>>();
    if args.hls_viewers > 0 {
        report["hls_viewers"] = hls_report(&args, args.hls_viewers, &strip(hls_results), &report);
    }
    if args.flv_viewers > 0 {
        report["flv_viewers"] = hls_report(&args, args.flv_viewers, &strip(flv_results), &report);
    }
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.report {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.report_html {
        let page = report::html(
            &report,
            &report::Plots {
                timeline: &timeline,
                delivery: &delivery,
                first_media_ms: &first_media,
                latency: &latency,
            },
        );
        std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    if !args.quiet {
        eprint!("{}", report::summary_table(&report));
    }
    println!("{text}");
    Ok(())
}

/// Starts the HLS and HTTP-FLV viewers on their own runtime; they ramp like the RTMP
/// viewers. Each result says whether it is an HTTP-FLV viewer.
fn spawn_hls(
    args: &Args,
    rtmp_host: &str,
    // `app/key`
    key: &str,
    start: Instant,
    end: Instant,
) -> anyhow::Result<std::thread::JoinHandle<Vec<(bool, hls::HlsResult)>>> {
    let base_url = args
        .hls_url
        .clone()
        .unwrap_or_else(|| format!("http://{rtmp_host}:8888"));
    let authority = base_url
        .strip_prefix("http://")
        .context("--hls-url must be http://host:port")?
        .trim_end_matches('/');
    let addr = authority
        .to_socket_addrs()?
        .next()
        .context("--hls-url did not resolve")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let flv_n = args.flv_viewers;
    let (n, ll, ramp, streams) = (
        args.hls_viewers + args.flv_viewers,
        args.hls_low_latency,
        args.ramp,
        args.publishers.max(1),
    );
    let key = key.to_string();
    Ok(std::thread::spawn(move || {
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for v in 0..n {
                let at = start + Duration::from_secs_f64(v as f64 / ramp.max(0.001));
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let stream = stream_key(&key, v % streams);
                // Spread evenly, so both kinds ramp together: exactly flv_n of the n.
                let flv = (v + 1) * flv_n / n != v * flv_n / n;
                let task = if flv {
                    tokio::spawn(hls::run_flv(addr, format!("/{stream}.flv"), end))
                } else {
                    tokio::spawn(hls::run(hls::HlsParams {
                        addr,
                        base: format!("/{stream}/"),
                        low_latency: ll,
                        end,
                    }))
                };
                tasks.push((flv, task));
            }
            let mut out = Vec::new();
            for (flv, t) in tasks {
                if let Ok(r) = t.await {
                    out.push((flv, r));
                }
            }
            out
        })
    }))
}

fn hls_report(
    args: &Args,
    requested: usize,
    rs: &[hls::HlsResult],
    rtmp: &serde_json::Value,
) -> serde_json::Value {
    let expected_bps = rtmp["expected_kbps"].as_f64().unwrap_or(0.0) * 1000.0 / 8.0;
    let rate = |r: &hls::HlsResult| r.bytes as f64 / r.active_secs.max(0.001);
    let below = rs
        .iter()
        .filter(|r| expected_bps > 0.0 && (r.active_secs <= 1.0 || rate(r) < 0.95 * expected_bps))
        .count();
    let mut ratios: Vec<f64> = rs
        .iter()
        .filter(|r| r.active_secs > 1.0 && expected_bps > 0.0)
        .map(|r| rate(r) / expected_bps)
        .collect();
    let mut first: Vec<f64> = rs.iter().filter_map(|r| r.first_media_ms).collect();
    let mut req: Vec<f64> = rs
        .iter()
        .flat_map(|r| r.request_ms.iter().copied())
        .collect();
    let mut edge: Vec<f64> = rs
        .iter()
        .flat_map(|r| r.edge_latency_ms.iter().copied())
        .collect();
    let errors: Vec<&str> = rs
        .iter()
        .filter_map(|r| r.error.as_deref())
        .take(5)
        .collect();
    serde_json::json!({
        "requested": requested,
        "low_latency": args.hls_low_latency,
        "connected": rs.iter().filter(|r| r.connected).count(),
        "failed": rs.iter().filter(|r| !r.connected || r.first_media_ms.is_none()).count(),
        "below_95pct_expected": below,
        "stalls": rs.iter().map(|r| r.stalls).sum::<u64>(),
        "requests": rs.iter().map(|r| r.requests).sum::<u64>(),
        "bytes_total": rs.iter().map(|r| r.bytes).sum::<u64>(),
        "sample_errors": errors,
        "time_to_first_media_ms": stats::summary(&mut first),
        "delivery_ratio": stats::summary(&mut ratios),
        "request_ms": stats::summary(&mut req),
        "live_edge_latency_ms": stats::summary(&mut edge),
    })
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    t: usize,
    threads: usize,
    args: Args,
    target: dial::Target,
    key: String,
    base_cfg: ClientConfig,
    sources: Vec<Source>,
    times: Vec<Arc<SendTimes>>,
    live: Arc<Live>,
    viewers_start: Instant,
    end: Instant,
) -> WorkerOut {
    let latency = Rc::new(RefCell::new(stats::new_latency_histogram()));
    let mut pub_tasks = Vec::new();
    for (i, src) in sources.into_iter().enumerate() {
        let mut cfg = base_cfg.clone();
        cfg.flash_ver = "FMLE/3.0 (compatible; rtmp-load)".into();
        cfg.seed = 0xB0B0 + i as u64;
        pub_tasks.push(tokio_uring::spawn(publisher::run(
            target.clone(),
            cfg,
            stream_key(&key, i),
            src,
            times[i].clone(),
            live.clone(),
            end,
        )));
    }
    let streams = args.publishers.max(1);
    let mut view_tasks = Vec::new();
    for v in (t..args.viewers).step_by(threads) {
        let at = viewers_start + Duration::from_secs_f64(v as f64 / args.ramp.max(0.001));
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let mut cfg = base_cfg.clone();
        cfg.seed = v as u64 + 1;
        let stream = v % streams;
        let params = viewer::ViewerParams {
            target: target.clone(),
            cfg,
            key: stream_key(&key, stream),
            end,
            paused: v < args.paused_viewers,
            send_times: (args.publishers > 0).then(|| times[stream].clone()),
            live: live.clone(),
            latency: latency.clone(),
        };
        view_tasks.push(tokio_uring::spawn(viewer::run(params)));
    }
    let mut viewers = Vec::new();
    for h in view_tasks {
        if let Ok(r) = h.await {
            viewers.push(r);
        }
    }
    let mut publishers = Vec::new();
    for h in pub_tasks {
        if let Ok(r) = h.await {
            publishers.push(r);
        }
    }
    let latency = latency.borrow().clone();
    WorkerOut {
        viewers,
        publishers,
        latency,
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills a zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn build_report(
    args: &Args,
    viewers: &[ViewerResult],
    pubs: &[PublisherResult],
    latency: &Histogram<u64>,
    wall: Duration,
) -> (serde_json::Value, Vec<f64>, Vec<f64>) {
    // One stream's rate (the publishers' mean): each viewer watches one of them.
    let expected_bps = {
        let (bytes, secs) = pubs.iter().fold((0u64, 0f64), |(b, s), p| {
            (b + p.payload_bytes, s + p.seconds)
        });
        if secs > 0.0 {
            bytes as f64 / secs
        } else {
            0.0
        }
    };
    let active: Vec<&ViewerResult> = viewers.iter().filter(|v| !v.paused).collect();
    let mut first_media: Vec<f64> = active.iter().filter_map(|v| v.first_media_ms).collect();
    let mut first_key: Vec<f64> = active.iter().filter_map(|v| v.first_keyframe_ms).collect();
    let mut ratios: Vec<f64> = active
        .iter()
        .filter(|v| v.active_secs > 1.0 && expected_bps > 0.0)
        .map(|v| v.bytes_after_key as f64 / v.active_secs / expected_bps)
        .collect();
    let below = active
        .iter()
        .filter(|v| {
            expected_bps > 0.0
                && (v.active_secs <= 1.0
                    || (v.bytes_after_key as f64 / v.active_secs) < 0.95 * expected_bps)
        })
        .count();
    let mut kbps: Vec<f64> = active
        .iter()
        .filter(|v| v.active_secs > 1.0)
        .map(|v| v.bytes_after_key as f64 * 8.0 / v.active_secs / 1000.0)
        .collect();
    let errors: Vec<&str> = viewers
        .iter()
        .filter_map(|v| v.error.as_deref())
        .take(5)
        .collect();
    let cpu = cpu_seconds();
    let (all_ratios, all_first) = (ratios.clone(), first_media.clone());
    let worst = ratios.iter().copied().reduce(f64::min);
    let report = serde_json::json!({
        "url": args.url,
        "duration_s": args.duration.as_secs_f64(),
        "wall_s": wall.as_secs_f64(),
        "viewers": {
            "requested": args.viewers,
            "connected": viewers.iter().filter(|v| v.connected).count(),
            "failed": viewers.iter().filter(|v| !v.connected).count(),
            "closed_by_server": viewers.iter().filter(|v| v.closed_by_server).count(),
            "paused": viewers.iter().filter(|v| v.paused).count(),
            "below_95pct_expected": below,
            "stalls": active.iter().map(|v| v.stalls).sum::<u64>(),
            "bytes_total": viewers.iter().map(|v| v.total_bytes).sum::<u64>(),
            "sample_errors": errors,
        },
        "time_to_first_media_ms": stats::summary(&mut first_media),
        "time_to_first_keyframe_ms": stats::summary(&mut first_key),
        "expected_kbps": expected_bps * 8.0 / 1000.0,
        "received_kbps": stats::summary(&mut kbps),
        "delivery_ratio": stats::summary(&mut ratios),
        "delivery_min": worst,
        "latency": stats::latency_json(latency),
        "publishers": pubs.iter().map(|p| serde_json::json!({
            "key": p.key, "error": p.error, "payload_bytes": p.payload_bytes, "seconds": p.seconds,
        })).collect::<Vec<_>>(),
        "loadgen": {
            "cpu_s": cpu,
            "cores": cpu / wall.as_secs_f64().max(0.001),
            "threads": args.threads,
        },
    });
    (report, all_ratios, all_first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3 weeks").is_err());
    }
}
