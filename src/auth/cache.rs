//! The callback answer cache: an allow or refuse is reused for `callback_cache_secs` when the
//! same client address asks for the same action, stream and queries again (players
//! reconnecting, ffprobe probing then playing). Failures are never cached, so a callback
//! that was down is asked again next time.
//!
//! Bounded at [`MAX_ENTRIES`]: when full, expired entries are dropped, and if that frees
//! nothing the whole cache is cleared. Clearing only costs extra callback requests, while
//! evicting one by one would need bookkeeping that a flood of unique queries could exploit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Action, AuthRequest};

pub const MAX_ENTRIES: usize = 10_000;

/// Who asked for what. The strings (attacker-controlled, as long as an RTMP command can
/// be) are kept only as a SHA-256 digest, so a full cache stays a few hundred KiB.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    action: Action,
    ip: IpAddr,
    digest: [u8; 32],
}

impl CacheKey {
    pub fn new(req: &AuthRequest) -> Self {
        let mut h = Sha256::new();
        // Length-prefixed (and absent distinct from empty), so fields cannot run together.
        let fields = [
            Some(req.app.as_str()),
            Some(req.name.as_str()),
            req.query.as_deref(),
            req.connect_query.as_deref(),
        ];
        for field in fields {
            match field {
                Some(s) => {
                    h.update([1]);
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
                None => h.update([0]),
            }
        }
        Self {
            action: req.action,
            ip: req.peer.ip(),
            digest: h.finalize().into(),
        }
    }
}

#[derive(Debug)]
pub struct AnswerCache {
    ttl: Duration,
    entries: Mutex<HashMap<CacheKey, (Instant, bool)>>,
}

impl AnswerCache {
    /// A zero `ttl` disables caching.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached answer (true = allowed) if it is still fresh at `now`.
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<bool> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) < self.ttl)
            .map(|&(_, allowed)| allowed)
    }

    pub fn insert(&self, key: CacheKey, allowed: bool, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES && !map.contains_key(&key) {
            map.retain(|_, (at, _)| now.saturating_duration_since(*at) < self.ttl);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (now, allowed));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str) -> AuthRequest {
        AuthRequest {
            action: Action::Play,
            app: "live".into(),
            name: name.into(),
            query: Some("token=x".into()),
            connect_query: None,
            tc_url: None,
            peer: "10.0.0.1:1000".parse().unwrap(),
            conn_id: 1,
        }
    }

    fn key(name: &str) -> CacheKey {
        CacheKey::new(&req(name))
    }

    #[test]
    fn keys_cover_every_field_but_port_and_connection() {
        let base = req("cam");
        let k = CacheKey::new(&base);
        let mut same = base.clone();
        same.peer = "10.0.0.1:2000".parse().unwrap();
        same.conn_id = 99;
        same.tc_url = Some("rtmp://x/live".into());
        assert_eq!(CacheKey::new(&same), k);
        let variants: [fn(&mut AuthRequest); 8] = [
            |r| r.action = Action::Publish,
            |r| r.peer = "10.0.0.2:1000".parse().unwrap(),
            |r| r.app = "live2".into(),
            |r| r.name = "cam2".into(),
            |r| r.query = None,
            |r| r.query = Some(String::new()),
            |r| r.connect_query = Some("token=x".into()),
            // Moving text between fields is a different key.
            |r| {
                r.app = "live/cam".into();
                r.name = String::new();
            },
        ];
        for change in variants {
            let mut r = base.clone();
            change(&mut r);
            assert_ne!(CacheKey::new(&r), k, "{r:?}");
        }
    }

    #[test]
    fn answers_expire_and_keys_are_distinct() {
        let c = AnswerCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        c.insert(key("a"), true, t0);
        c.insert(key("b"), false, t0);
        assert_eq!(c.get(&key("a"), t0 + Duration::from_secs(9)), Some(true));
        assert_eq!(c.get(&key("b"), t0), Some(false));
        assert_eq!(c.get(&key("a"), t0 + Duration::from_secs(10)), None);
        let mut other = req("a");
        other.peer = "10.0.0.2:1000".parse().unwrap();
        assert_eq!(c.get(&CacheKey::new(&other), t0), None);
    }

    #[test]
    fn zero_ttl_disables() {
        let c = AnswerCache::new(Duration::ZERO);
        let t0 = Instant::now();
        c.insert(key("a"), true, t0);
        assert_eq!(c.get(&key("a"), t0), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn stays_bounded() {
        let c = AnswerCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..MAX_ENTRIES {
            c.insert(key(&i.to_string()), true, t0);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        // Full of fresh entries: cleared, then the new one kept.
        c.insert(key("new"), true, t0);
        assert_eq!(c.len(), 1);
        for i in 0..MAX_ENTRIES - 1 {
            c.insert(key(&i.to_string()), true, t0);
        }
        // Full with every old entry expired: only those are dropped.
        let later = t0 + Duration::from_secs(11);
        c.insert(key("fresh"), true, later);
        c.insert(key("fresh2"), false, later);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&key("fresh2"), later), Some(false));
    }
}
