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

use super::Action;

pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub action: Action,
    pub ip: IpAddr,
    pub app: String,
    pub name: String,
    pub query: Option<String>,
    pub connect_query: Option<String>,
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

    fn key(name: &str) -> CacheKey {
        CacheKey {
            action: Action::Play,
            ip: "10.0.0.1".parse().unwrap(),
            app: "live".into(),
            name: name.into(),
            query: Some("token=x".into()),
            connect_query: None,
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
        let mut other_ip = key("a");
        other_ip.ip = "10.0.0.2".parse().unwrap();
        assert_eq!(c.get(&other_ip, t0), None);
        let mut other_action = key("a");
        other_action.action = Action::Publish;
        assert_eq!(c.get(&other_action, t0), None);
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
