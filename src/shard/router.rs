//! Delivery of cross-shard messages: to another shard over its lanes, to this shard in
//! place, and the one dispatcher that acts on what arrives.

use super::conn;
use super::state::ShardState;
use super::stats;
use super::transmission::{ControlMsg, Inbound, LaneFull, MediaMsg};
use tracing::warn;

impl ShardState {
    /// Sends a stream message to a mirror shard; to this shard it is handled in place.
    pub(super) fn route_media(&self, shard: usize, msg: MediaMsg) {
        if shard == self.id {
            return self.on_media(msg);
        }
        let key = match &msg {
            MediaMsg::Frame { key, .. } => Some(key.clone()),
            _ => None,
        };
        if let Err(LaneFull) = self.shared.links[shard].send_media(msg) {
            stats::bump(&self.stats.cross_shard_drops, 1);
            if let Some(key) = key {
                warn!(stream = %key, to_shard = shard, "cross-shard queue full, frame dropped");
            }
        }
    }

    /// Sends a control message to a shard; to this shard it is handled in place.
    pub(super) fn route_control(&self, shard: usize, msg: ControlMsg) {
        if shard == self.id {
            if let Some(me) = self.rc() {
                me.on_control(msg);
            }
        } else {
            self.shared.links[shard].send_control(msg);
        }
    }

    /// The dispatcher: everything that arrives on this shard's lanes.
    pub fn on_inbound(self: &std::rc::Rc<Self>, msg: Inbound) {
        match msg {
            Inbound::Media(m) => {
                if let MediaMsg::Frame { frame, .. } = &m {
                    stats::record(&self.stats.cross_shard, frame.ingest.elapsed());
                }
                self.on_media(m);
            }
            Inbound::Control(c) => self.on_control(c),
        }
    }

    fn on_media(&self, msg: MediaMsg) {
        match msg {
            MediaMsg::Snapshot {
                key,
                cache,
                live,
                epoch,
            } => self.mirror_snapshot(&key, cache, live, epoch),
            MediaMsg::Frame { key, frame } => self.mirror_frame(&key, &frame),
            MediaMsg::Published { key } => self.mirror_published(&key),
            MediaMsg::Unpublished { key } => self.mirror_unpublished(&key),
        }
    }

    fn on_control(self: &std::rc::Rc<Self>, msg: ControlMsg) {
        match msg {
            ControlMsg::Subscribe { key, shard, epoch } => self.subscribe(key, shard, epoch),
            ControlMsg::Unsubscribe { key, shard } => self.unsubscribe(&key, shard),
            ControlMsg::Adopt(h) => conn::adopt(self.clone(), *h),
            ControlMsg::Query(q) => self.answer(q),
            ControlMsg::Shutdown => self.begin_shutdown(),
        }
    }
}
