//! Every push destination, changeable at runtime (HTTP API, SIGHUP): the shards ask it for
//! a stream's push sinks when the stream starts publishing and when told to reconcile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use tracing::{info, warn};

use super::config::{valid_id, Destination, PushConfigError, PushDestination, PushPolicy};
use super::sink::PushSink;
use crate::shard::hooks::{SinkContext, SinkFactory, StreamSink};
use crate::shard::state::StreamKey;
use crate::tls::ClientTls;

/// Where a destination came from: reload replaces the config file's, keeps the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Config,
    Api,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Self::Flag => "flag",
            Self::Config => "config",
            Self::Api => "api",
        }
    }
}

/// A destination as the registry holds it.
#[derive(Debug, Clone)]
pub struct PushEntry {
    /// Stable name: API paths and metric labels.
    pub id: String,
    pub dest: Destination,
    pub enabled: bool,
    pub origin: Origin,
    /// Bumped whenever the entry changes, so running sessions of an old version stop and
    /// new ones start.
    generation: u64,
}

impl PushEntry {
    fn sink_id(&self) -> String {
        format!("push:{}#{}", self.id, self.generation)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("a push destination with id {0:?} exists")]
    Exists(String),
    #[error("bad push destination id {0:?}: 1-64 characters of A-Z a-z 0-9 _ . -")]
    BadId(String),
}

pub struct PushRegistry {
    entries: RwLock<Vec<PushEntry>>,
    policy: PushPolicy,
    generation: AtomicU64,
}

impl PushRegistry {
    pub fn new(policy: PushPolicy) -> Self {
        Self {
            entries: RwLock::default(),
            policy,
            generation: AtomicU64::new(1),
        }
    }

    /// The destinations from `--push` flags and the config file's `[[push]]` entries.
    /// `flag_trust`: the CA settings of `--tls-ca-file`, for the flags' `rtmps://` URLs.
    pub fn configured(
        policy: PushPolicy,
        flags: &[String],
        flag_trust: ClientTls,
        entries: &[PushDestination],
    ) -> Result<Self, PushConfigError> {
        let reg = Self::new(policy);
        for (i, url) in flags.iter().enumerate() {
            let dest = Destination::from_flag(url, flag_trust.clone())?;
            reg.insert(format!("flag-{}", i + 1), dest, true, Origin::Flag);
        }
        reg.replace_config(entries)?;
        Ok(reg)
    }

    fn insert(&self, id: String, dest: Destination, enabled: bool, origin: Origin) -> PushEntry {
        info!(id = %id, dest = %dest.label(), streams = ?dest.streams, enabled, source = origin.label(), "push destination configured");
        let e = PushEntry {
            id,
            dest,
            enabled,
            origin,
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
        };
        self.write().push(e.clone());
        e
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<PushEntry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<PushEntry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the config file's destinations (startup, SIGHUP). One that did not change
    /// keeps its running sessions; the others stop or start.
    pub fn replace_config(&self, entries: &[PushDestination]) -> Result<(), PushConfigError> {
        let mut fresh = Vec::new();
        for (i, d) in entries.iter().enumerate() {
            let id = d.id.clone().unwrap_or_else(|| format!("config-{}", i + 1));
            let dest = Destination::from_config(d)
                .map_err(|e| PushConfigError::Entry(i + 1, id.clone(), Box::new(e)))?;
            fresh.push((id, dest, d.enabled));
        }
        let mut entries = self.write();
        let old: Vec<PushEntry> = entries
            .iter()
            .filter(|e| e.origin == Origin::Config)
            .cloned()
            .collect();
        entries.retain(|e| e.origin != Origin::Config);
        for (id, dest, enabled) in fresh {
            if entries.iter().any(|e| e.id == id) {
                warn!(id = %id, "push destination id also used by a flag or the API; config entry ignored");
                continue;
            }
            let same = old
                .iter()
                .find(|e| e.id == id && e.enabled == enabled && e.dest.same_as(&dest));
            let entry = match same {
                Some(e) => e.clone(),
                None => {
                    info!(id = %id, dest = %dest.label(), streams = ?dest.streams, enabled, "push destination configured");
                    PushEntry {
                        id,
                        dest,
                        enabled,
                        origin: Origin::Config,
                        generation: self.generation.fetch_add(1, Ordering::Relaxed),
                    }
                }
            };
            entries.push(entry);
        }
        Ok(())
    }

    /// Re-reads the CA files of the `rtmps://` destinations from flags and the API (the
    /// config file's are read with the file): one whose CA changed starts a new session with
    /// it. A file that does not load keeps the old settings; the errors are returned.
    pub fn reload_ca_files(&self) -> Vec<(String, crate::tls::TlsError)> {
        let mut errors = Vec::new();
        let mut entries = self.write();
        for e in entries
            .iter_mut()
            .filter(|e| e.origin != Origin::Config && e.dest.url.tls)
        {
            let Some(path) = e.dest.trust.ca_file() else {
                continue;
            };
            match ClientTls::new(Some(path)) {
                Ok(fresh) if fresh != e.dest.trust => {
                    e.dest.trust = fresh;
                    e.generation = self.generation.fetch_add(1, Ordering::Relaxed);
                    info!(id = %e.id, dest = %e.dest.label(), "push destination's CA file changed");
                }
                Ok(_) => {}
                Err(err) => errors.push((e.id.clone(), err)),
            }
        }
        errors
    }

    pub fn list(&self) -> Vec<PushEntry> {
        self.read().clone()
    }

    pub fn get(&self, id: &str) -> Option<PushEntry> {
        self.read().iter().find(|e| e.id == id).cloned()
    }

    /// Adds a destination (HTTP API); without an id one is made up.
    pub fn add(
        &self,
        id: Option<String>,
        dest: Destination,
        enabled: bool,
    ) -> Result<PushEntry, RegistryError> {
        let taken = |id: &str| self.read().iter().any(|e| e.id == id);
        let id = match id {
            Some(id) if !valid_id(&id) => return Err(RegistryError::BadId(id)),
            Some(id) if taken(&id) => return Err(RegistryError::Exists(id)),
            Some(id) => id,
            None => (1..)
                .map(|n| format!("api-{n}"))
                .find(|id| !taken(id))
                .expect("a free id"),
        };
        Ok(self.insert(id, dest, enabled, Origin::Api))
    }

    pub fn remove(&self, id: &str) -> bool {
        let mut entries = self.write();
        let before = entries.len();
        entries.retain(|e| e.id != id);
        let removed = entries.len() != before;
        if removed {
            info!(id, "push destination removed");
        }
        removed
    }

    pub fn set_enabled(&self, id: &str, enabled: bool) -> Option<PushEntry> {
        let mut entries = self.write();
        let e = entries.iter_mut().find(|e| e.id == id)?;
        if e.enabled != enabled {
            e.enabled = enabled;
            e.generation = self.generation.fetch_add(1, Ordering::Relaxed);
            info!(id, enabled, "push destination changed");
        }
        Some(e.clone())
    }
}

impl SinkFactory for PushRegistry {
    fn sinks_for(
        &self,
        ctx: &SinkContext,
        key: &StreamKey,
        existing: &[&str],
    ) -> Vec<Box<dyn StreamSink>> {
        let name = key.split_once('/').map_or(&**key, |(_, n)| n);
        self.read()
            .iter()
            .filter(|e| e.enabled && e.dest.matches(key))
            .filter_map(|e| {
                // An older session to the same destination (disabled and re-enabled, or
                // changed by a reload) is still unpublishing: start once it is gone, or
                // the destination would see the same key published twice.
                let prefix = format!("push:{}#", e.id);
                if existing.iter().any(|x| x.starts_with(&prefix)) {
                    return None;
                }
                let d = &e.dest;
                let dest_key = d
                    .key
                    .clone()
                    .or_else(|| d.url.key.clone())
                    .unwrap_or_else(|| name.to_string());
                let sink = PushSink::start(
                    ctx,
                    e.sink_id(),
                    e.id.clone(),
                    d.clone(),
                    dest_key,
                    key.clone(),
                    self.policy,
                );
                Some(Box::new(sink) as Box<dyn StreamSink>)
            })
            .collect()
    }

    fn keeps(&self, key: &StreamKey, sink_id: &str) -> Option<bool> {
        if !sink_id.starts_with("push:") {
            return None;
        }
        Some(
            self.read()
                .iter()
                .any(|e| e.enabled && e.sink_id() == sink_id && e.dest.matches(key)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(toml_text: &str) -> Vec<PushDestination> {
        #[derive(serde::Deserialize)]
        struct File {
            push: Vec<PushDestination>,
        }
        toml::from_str::<File>(toml_text).unwrap().push
    }

    #[test]
    fn registry_changes_and_reloads() {
        let reg = PushRegistry::new(PushPolicy::default());
        reg.replace_config(&file(
            r#"
            [[push]]
            id = "yt"
            url = "rtmp://a.example/live2"
            [[push]]
            url = "rtmp://b.example/app"
            streams = ["live/cam*"]
            "#,
        ))
        .unwrap();
        let ids: Vec<String> = reg.list().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["yt", "config-2"]);
        let yt = reg.get("yt").unwrap().sink_id();
        let key: StreamKey = "live/main".into();
        assert_eq!(reg.keeps(&key, &yt), Some(true));
        assert_eq!(reg.keeps(&key, "record"), None, "not a push sink");
        // config-2 only pushes live/cam*.
        let c2 = reg.get("config-2").unwrap().sink_id();
        assert_eq!(reg.keeps(&key, &c2), Some(false));
        assert_eq!(reg.keeps(&"live/cam1".into(), &c2), Some(true));

        // API: generated ids skip taken ones; duplicates and bad ids refused.
        let d = Destination::from_flag("rtmp://c.example/app", ClientTls::public()).unwrap();
        assert_eq!(
            reg.add(Some("api-1".into()), d.clone(), true).unwrap().id,
            "api-1"
        );
        assert_eq!(reg.add(None, d.clone(), true).unwrap().id, "api-2");
        assert_eq!(
            reg.add(Some("yt".into()), d.clone(), true).unwrap_err(),
            RegistryError::Exists("yt".into())
        );
        assert!(matches!(
            reg.add(Some("a b".into()), d, true),
            Err(RegistryError::BadId(_))
        ));

        // Disabling changes the sink id (running sessions stop); unknown ids are None.
        let e = reg.set_enabled("yt", false).unwrap();
        assert!(!e.enabled);
        assert_eq!(reg.keeps(&key, &yt), Some(false));
        assert!(reg.set_enabled("nope", true).is_none());
        reg.set_enabled("yt", true).unwrap();
        let yt2 = reg.get("yt").unwrap().sink_id();
        assert_ne!(yt, yt2);

        // Reload: unchanged entries keep their sessions, changed ones restart, removed
        // ones go; API entries stay.
        reg.replace_config(&file(
            r#"
            [[push]]
            id = "yt"
            url = "rtmp://a.example/live2"
            [[push]]
            url = "rtmp://b.example/other"
            "#,
        ))
        .unwrap();
        assert_eq!(reg.get("yt").unwrap().sink_id(), yt2);
        assert_ne!(reg.get("config-2").unwrap().sink_id(), c2);
        assert_eq!(reg.keeps(&"live/cam1".into(), &c2), Some(false));
        assert!(reg.get("api-1").is_some() && reg.get("api-2").is_some());
        assert!(reg.remove("api-1"));
        assert!(!reg.remove("api-1"));
        // A bad file changes nothing.
        let before: Vec<String> = reg.list().into_iter().map(|e| e.sink_id()).collect();
        assert!(reg
            .replace_config(&file("[[push]]\nurl = \"not a url\""))
            .is_err());
        let after: Vec<String> = reg.list().into_iter().map(|e| e.sink_id()).collect();
        assert_eq!(before, after);
    }
}
