//! Always-on channels: an output stream fed by a chain of published sources, failing over
//! to the next live one or to a looped slate, switching back when a better source is
//! stable, without the channel's players, recordings, HLS or pushes ever seeing it end.
//!
//! [`Channels`] is what `main` hands the shards: a sink factory (each source stream gets a
//! sink sending its frames to its channel) and a shard service (each channel's task runs
//! on the shard that owns the channel's name). The control plane reads the status and pins
//! sources through it.

pub mod config;
pub mod event;
pub mod format;
pub mod input;
mod output;
pub mod slate;
pub mod switcher;
mod task;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use config::{ChannelConfig, ChannelPolicy};
use input::{Inbox, Msg, Outlet, SourceSink};
use slate::{Slate, SlateError};
use switcher::{OnAir, Pin, Switcher};

use crate::shard::hooks::{ShardService, SinkContext, SinkFactory, StreamSink};
use crate::shard::state::{ShardState, StreamKey};

/// The switch-time histogram family (label: channel).
pub const SWITCH_FAMILY: &str = "rtmp_channel_switch_seconds";

/// What the API shows about a channel.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChannelStatus {
    pub name: String,
    /// The source on air, `"slate"`, or null.
    pub on_air: Option<String>,
    /// What an operator pinned (a source or `"slate"`), null for the priority order.
    pub pinned: Option<String>,
    pub sources: Vec<SourceStatus>,
    pub slate: Option<SlateStatus>,
    pub strict: bool,
    pub switches: u64,
    pub slate_seconds: f64,
    /// Format mismatches and refusals, current ones only.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SourceStatus {
    pub name: String,
    pub published: bool,
    /// Sent media within the source timeout.
    pub delivering: bool,
    pub format: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlateStatus {
    pub path: String,
    pub loop_seconds: f64,
    pub format: String,
    /// Strict mode holds it back: it differs from a live source.
    pub refused: bool,
}

/// One configured channel: what its sources' sinks send to, what its task reads.
pub struct Entry {
    pub config: ChannelConfig,
    source_timeout: Duration,
    inbox: Inbox,
    outlet: Mutex<Option<Outlet>>,
    slate: Mutex<Option<Arc<Slate>>>,
    status: Mutex<ChannelStatus>,
    /// A reloaded slate strict mode refused (cleared by the next good load).
    slate_warning: Mutex<Option<String>>,
    /// The task holds the channel's stream (pins are answered).
    running: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Entry {
    fn slate(&self) -> Option<Arc<Slate>> {
        lock(&self.slate).clone()
    }

    fn on_air_name(&self, a: OnAir) -> String {
        match a {
            OnAir::Nothing => "nothing".into(),
            OnAir::Slate => "slate".into(),
            OnAir::Source(i) => self.config.sources[i].clone(),
        }
    }

    fn set_slate_warning(&self, msg: Option<String>) {
        *lock(&self.slate_warning) = msg;
    }

    /// Refreshes what the API reads from the switcher's state.
    fn publish_status(&self, sw: &Switcher, now: Instant) {
        let sources = self
            .config
            .sources
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let (published, delivering, format) = sw.source_state(i, now);
                SourceStatus {
                    name: name.clone(),
                    published,
                    delivering,
                    format: format.is_known().then(|| format.to_string()),
                }
            })
            .collect();
        let slate = sw.slate().map(|s| SlateStatus {
            path: s.path.display().to_string(),
            loop_seconds: f64::from(s.loop_ms) / 1000.0,
            format: s.format.to_string(),
            refused: sw.slate_refused(),
        });
        let mut warnings: Vec<String> = lock(&self.slate_warning).iter().cloned().collect();
        for (i, name) in self.config.sources.iter().enumerate() {
            let d = sw.differences(i);
            if !d.is_empty() {
                let held = if sw.slate_refused() {
                    "; slate refused (strict)"
                } else {
                    ""
                };
                warnings.push(format!(
                    "source {name} differs from the slate: {}{held}",
                    d.join("; ")
                ));
            }
        }
        let on_air = match sw.on_air() {
            OnAir::Nothing => None,
            a => Some(self.on_air_name(a)),
        };
        *lock(&self.status) = ChannelStatus {
            name: self.config.name.clone(),
            on_air,
            pinned: sw.pin().map(|p| match p {
                Pin::Slate => "slate".into(),
                Pin::Source(i) => self.config.sources[i].clone(),
            }),
            sources,
            slate,
            strict: self.config.strict,
            switches: sw.switches(),
            slate_seconds: sw.slate_time(now).as_secs_f64(),
            warnings,
        };
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("[[channel]] #{0}: {1}")]
    Config(usize, config::ChannelConfigError),
    #[error("channel {0}: {1}")]
    Slate(String, SlateError),
}

/// Why an operator's pin was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForceError {
    #[error("no channel {0}")]
    NoChannel(String),
    #[error("{0} is not a source of this channel (nor \"slate\" or \"auto\")")]
    NoSource(String),
    #[error("this channel has no slate")]
    NoSlate,
    #[error("the channel is not running")]
    NotRunning,
}

/// Every channel; the shards' sink factory and service, and the API's handle.
pub struct Channels {
    entries: Vec<Arc<Entry>>,
}

impl Channels {
    /// Checks the configuration and reads every slate (an unreadable one is an error: the
    /// channel would have nothing to show when its sources drop).
    pub fn new(policy: &ChannelPolicy) -> Result<Arc<Self>, ChannelError> {
        config::check(&policy.channels).map_err(|(i, e)| ChannelError::Config(i, e))?;
        let mut entries = Vec::new();
        for c in &policy.channels {
            let slate = match &c.slate {
                Some(p) => Some(Arc::new(
                    Slate::load(p).map_err(|e| ChannelError::Slate(c.name.clone(), e))?,
                )),
                None => None,
            };
            // Every series exists from the start, so dashboards and alerts see 0, not nothing.
            for r in switcher::Reason::ALL {
                metrics::counter!("rtmp_channel_switches_total", "channel" => c.name.clone(), "reason" => r.label())
                    .increment(0);
            }
            for name in [
                "rtmp_channel_slate_seconds_total",
                "rtmp_channel_input_drops_total",
            ] {
                metrics::counter!(name, "channel" => c.name.clone()).increment(0);
            }
            let (inbox, outlet) = input::inbox();
            entries.push(Arc::new(Entry {
                config: c.clone(),
                source_timeout: policy.source_timeout,
                inbox,
                outlet: Mutex::new(Some(outlet)),
                slate: Mutex::new(slate),
                status: Mutex::new(ChannelStatus {
                    name: c.name.clone(),
                    strict: c.strict,
                    ..ChannelStatus::default()
                }),
                slate_warning: Mutex::default(),
                running: AtomicBool::new(false),
            }));
        }
        Ok(Arc::new(Self { entries }))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn list(&self) -> Vec<ChannelStatus> {
        self.entries
            .iter()
            .map(|e| lock(&e.status).clone())
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<ChannelStatus> {
        self.entry(name).map(|e| lock(&e.status).clone())
    }

    fn entry(&self, name: &str) -> Option<&Arc<Entry>> {
        self.entries.iter().find(|e| e.config.name == name)
    }

    /// Pins `name` to `source` (a source key or `"slate"`), or back to the priority order
    /// (`"auto"`). Takes effect at that source's next keyframe.
    pub fn force(&self, name: &str, source: &str) -> Result<(), ForceError> {
        let e = self
            .entry(name)
            .ok_or_else(|| ForceError::NoChannel(name.into()))?;
        let pin = match source {
            "auto" => None,
            "slate" if e.slate().is_some() => Some(Pin::Slate),
            "slate" => return Err(ForceError::NoSlate),
            s => match e.config.sources.iter().position(|x| x == s) {
                Some(i) => Some(Pin::Source(i)),
                None => return Err(ForceError::NoSource(s.into())),
            },
        };
        if e.running.load(Ordering::Relaxed) && e.inbox.send(Msg::Force(pin)) {
            Ok(())
        } else {
            Err(ForceError::NotRunning)
        }
    }

    /// SIGHUP: re-reads each channel's slate file when it changed (the channel list itself
    /// only changes with a restart). Returns the errors; a failed slate keeps the old one.
    pub fn reload(&self, configs: &[ChannelConfig]) -> Vec<ChannelError> {
        let mut errors = Vec::new();
        for e in &self.entries {
            let Some(c) = configs.iter().find(|c| c.name == e.config.name) else {
                continue;
            };
            let path = c.slate.clone().or_else(|| e.config.slate.clone());
            let Some(path) = path else {
                continue;
            };
            let current = e.slate();
            if current
                .as_ref()
                .is_some_and(|s| s.path == path && !s.changed())
            {
                continue;
            }
            match Slate::load(&path) {
                Ok(s) => {
                    let s = Arc::new(s);
                    *lock(&e.slate) = Some(s.clone());
                    e.inbox.send(Msg::Slate(s));
                }
                Err(err) => errors.push(ChannelError::Slate(e.config.name.clone(), err)),
            }
        }
        errors
    }
}

impl SinkFactory for Channels {
    /// A source stream gets one sink per channel it feeds.
    fn sinks_for(
        &self,
        _ctx: &SinkContext,
        key: &StreamKey,
        existing: &[&str],
    ) -> Vec<Box<dyn StreamSink>> {
        let mut out: Vec<Box<dyn StreamSink>> = Vec::new();
        for e in &self.entries {
            let Some(i) = e.config.sources.iter().position(|s| **s == **key) else {
                continue;
            };
            if existing.contains(&input::sink_id(&e.config.name).as_str()) {
                continue;
            }
            let name: Arc<str> = Arc::from(e.config.name.as_str());
            out.push(Box::new(SourceSink::new(name, i, e.inbox.clone())));
        }
        out
    }
}

impl ShardService for Channels {
    /// Starts the task of every channel this shard owns.
    fn start(&self, shard: &Rc<ShardState>) {
        for e in &self.entries {
            if shard.owner_of(&e.config.name) != shard.id {
                continue;
            }
            let Some(outlet) = lock(&e.outlet).take() else {
                continue;
            };
            shard
                .tasks
                .spawn(task::run(shard.clone(), e.clone(), outlet));
        }
    }
}
