//! One channel's task on the shard that owns the channel's stream: it holds the stream's
//! publisher slot for the server's whole life, feeds the switcher with its sources' frames
//! and the clock, publishes what comes out, and reports switches (log, metrics, status).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::input::{Msg, Outlet};
use super::switcher::{Event, OnAir, Pin, Settings, Switcher};
use super::{Entry, SWITCH_FAMILY};
use crate::shard::state::{PublishError, ShardState, StreamKey};
use crate::util::histogram::{latency_histogram, record};

/// How often the switcher looks for stalls and returns without other reasons to wake.
const TICK: Duration = Duration::from_millis(50);
/// How often the status the API reads is refreshed, and histograms exported.
const REPORT_EVERY: Duration = Duration::from_millis(250);

pub(super) async fn run(state: Rc<ShardState>, entry: Arc<Entry>, mut inbox: Outlet) {
    let key: StreamKey = Arc::from(entry.config.name.as_str());
    let id = state.shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let settings = Settings {
        source_timeout: entry.source_timeout,
        switch_back_after: entry.config.switch_back_after(),
        strict: entry.config.strict,
    };
    let mut sw = Switcher::new(entry.config.sources.len(), entry.slate(), settings);
    let mut out = Vec::new();
    let mut warned = false;
    loop {
        match state.start_publish(&key, id) {
            Ok(()) => break,
            Err(PublishError::ShuttingDown) => return,
            Err(PublishError::BadName) => {
                if !std::mem::replace(&mut warned, true) {
                    error!(channel = &*key, "something else publishes the channel's own name; the channel waits for it to leave");
                }
                // The sources' state stays current meanwhile; nothing is published.
                let until = tokio::time::sleep(Duration::from_secs(1));
                tokio::pin!(until);
                loop {
                    tokio::select! {
                        _ = &mut until => break,
                        _ = state.tasks.stopped() => return,
                        msg = inbox.recv() => match msg {
                            Some(m) => handle(&entry, &mut sw, m, &mut out),
                            None => return,
                        },
                    }
                    out.clear();
                    sw.take_events();
                }
            }
        }
    }
    entry.running.store(true, Ordering::Relaxed);
    // Where the stream comes from, for the streams API (and no origin pull opens for it).
    state
        .upstreams
        .borrow_mut()
        .insert(key.clone(), "channel".into());
    info!(channel = &*key, sources = ?entry.config.sources, slate = ?entry.config.slate, "channel on air");
    let mut hist = latency_histogram();
    let mut reported = Instant::now();
    let mut slate_counted = Duration::ZERO;
    let label = entry.config.name.clone();
    let telemetry = state.shared.hooks.telemetry.clone();
    loop {
        let now = Instant::now();
        let wake = sw.next_wake(now).map_or(now + TICK, |w| w.min(now + TICK));
        tokio::select! {
            biased;
            _ = state.tasks.stopped() => break,
            msg = inbox.recv() => {
                let Some(msg) = msg else { break };
                handle(&entry, &mut sw, msg, &mut out);
                // Everything already waiting, before publishing: one batch per wake.
                while let Some(m) = inbox.try_recv() {
                    handle(&entry, &mut sw, m, &mut out);
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
        let now = Instant::now();
        sw.poll(now, &mut out);
        for e in out.drain(..) {
            state.publish_frame(&key, id, e.kind, e.timestamp, e.payload, Instant::now());
        }
        let events = sw.take_events();
        for ev in &events {
            report(&entry, ev, &mut hist);
        }
        if !events.is_empty() || now.duration_since(reported) >= REPORT_EVERY {
            reported = now;
            entry.publish_status(&sw, now);
            metrics::gauge!("rtmp_channel_on_slate", "channel" => label.clone()).set(
                if sw.on_air() == OnAir::Slate {
                    1.0
                } else {
                    0.0
                },
            );
            let delivering = (0..entry.config.sources.len())
                .filter(|&i| sw.source_state(i, now).1)
                .count();
            metrics::gauge!("rtmp_channel_sources_delivering", "channel" => label.clone())
                .set(delivering as f64);
            let on_slate = sw.slate_time(now);
            metrics::counter!("rtmp_channel_slate_seconds_total", "channel" => label.clone())
                .increment((on_slate - slate_counted).as_secs());
            slate_counted += Duration::from_secs((on_slate - slate_counted).as_secs());
            if !hist.is_empty() {
                telemetry.merge_latency(SWITCH_FAMILY, &label, &hist);
                hist.reset();
            }
        }
    }
    entry.running.store(false, Ordering::Relaxed);
    state.upstreams.borrow_mut().remove(&key);
    state.end_publish(&key, id);
    info!(channel = &*key, "channel off air");
}

fn handle(entry: &Entry, sw: &mut Switcher, msg: Msg, out: &mut Vec<super::switcher::Emit>) {
    let now = Instant::now();
    match msg {
        Msg::Published(i) => sw.on_publish(i),
        Msg::Frame(i, f) => sw.on_frame(i, &f, now, out),
        Msg::Unpublished(i) => sw.on_unpublish(i, now, out),
        Msg::Force(pin) => {
            info!(channel = %entry.config.name, to = %pin_name(entry, pin), "channel source forced");
            sw.force(pin, now, out);
        }
        Msg::Slate(slate) => {
            let path = slate.path.display().to_string();
            match sw.set_slate(slate, now, out) {
                Ok(()) => {
                    entry.set_slate_warning(None);
                    info!(channel = %entry.config.name, slate = %path, "slate reloaded");
                }
                Err(d) => {
                    let msg = format!("slate {path} refused (strict): {}", d.join("; "));
                    warn!(channel = %entry.config.name, "{msg}");
                    entry.set_slate_warning(Some(msg));
                }
            }
        }
    }
}

fn pin_name(entry: &Entry, pin: Option<Pin>) -> String {
    match pin {
        None => "auto".into(),
        Some(Pin::Slate) => "slate".into(),
        Some(Pin::Source(i)) => entry.config.sources[i].clone(),
    }
}

fn report(entry: &Entry, ev: &Event, hist: &mut hdrhistogram::Histogram<u64>) {
    let name = &entry.config.name;
    match ev {
        Event::Switched {
            from,
            to,
            reason,
            switch_time,
        } => {
            let ms = switch_time.map(|t| t.as_millis() as u64);
            info!(
                channel = %name,
                from = %entry.on_air_name(*from),
                to = %entry.on_air_name(*to),
                reason = reason.label(),
                switch_ms = ms,
                "channel switched"
            );
            // Going off air (no source, no slate) is not a switch; what comes next is.
            if *to != OnAir::Nothing {
                metrics::counter!("rtmp_channel_switches_total", "channel" => name.clone(), "reason" => reason.label())
                    .increment(1);
                if let Some(t) = switch_time {
                    record(hist, *t);
                }
            }
        }
        Event::Mismatch {
            source,
            differences,
            slate_refused,
        } => {
            let src = &entry.config.sources[*source];
            let mut msg = format!(
                "source {src} differs from the slate: {}",
                differences.join("; ")
            );
            if *slate_refused {
                msg.push_str("; slate refused (strict) while it is live");
            }
            warn!(channel = %name, "{msg}");
        }
    }
}
