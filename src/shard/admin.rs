//! Answers to the control plane (HTTP API): what streams and clients this shard has,
//! kicks, and push destinations changed at runtime.

use std::time::Instant;

use tracing::warn;

use super::query::{ClientInfo, CodecInfo, PublisherInfo, Query, ShardStreams, StreamInfo};
use super::state::ShardState;

impl ShardState {
    pub(super) fn answer(&self, q: Query) {
        match q {
            Query::Streams(tx) => {
                let _ = tx.send(self.streams());
            }
            Query::Clients(tx) => {
                let _ = tx.send(self.client_list());
            }
            Query::KickClient(id, tx) => {
                let t = self.clients.borrow().get(&id).cloned();
                if let Some(t) = &t {
                    warn!(conn = id, peer = %t.peer, shard = self.id, "disconnected by the API");
                    t.queue.kill();
                }
                let _ = tx.send(t.is_some());
            }
            Query::KickPublisher(key, tx) => {
                let publisher = self
                    .sources
                    .borrow()
                    .get(key.as_str())
                    .and_then(|s| s.publisher);
                let t = publisher.and_then(|id| self.clients.borrow().get(&id).cloned());
                if let Some(t) = &t {
                    warn!(conn = t.id, peer = %t.peer, shard = self.id, key = %key, "publisher disconnected by the API");
                    t.queue.kill();
                }
                let _ = tx.send(t.is_some());
            }
            Query::ReconcileSinks => self.reconcile_sinks(),
            Query::Fetch(key) => self.fetch(&key),
        }
    }

    fn streams(&self) -> ShardStreams {
        let clients = self.clients.borrow();
        let upstreams = self.upstreams.borrow();
        let now = Instant::now();
        let owned = self
            .sources
            .borrow()
            .iter()
            .filter(|(_, s)| s.publisher.is_some())
            .map(|(key, s)| {
                let (app, name) = key.split_once('/').unwrap_or(("", key));
                let publisher =
                    s.publisher
                        .and_then(|id| clients.get(&id))
                        .map(|t| PublisherInfo {
                            id: t.id,
                            peer: t.peer.to_string(),
                        });
                StreamInfo {
                    key: key.to_string(),
                    app: app.to_string(),
                    name: name.to_string(),
                    shard: self.id,
                    publisher,
                    origin: upstreams.get(key).cloned(),
                    video: s.video.clone().map(|codec| CodecInfo {
                        codec,
                        width: s.picture.width,
                        height: s.picture.height,
                        framerate: s.picture.framerate,
                    }),
                    audio: s.audio.clone().map(|codec| CodecInfo {
                        codec,
                        ..Default::default()
                    }),
                    ingress_bitrate_bps: s.bitrate_bps.round(),
                    viewers: 0,
                    uptime_secs: s.since.map_or(0.0, |t| now.duration_since(t).as_secs_f64()),
                    push: s.sinks.iter().filter_map(|k| k.info()).collect(),
                }
            })
            .collect();
        let viewers = self
            .mirrors
            .borrow()
            .iter()
            .map(|(k, m)| (k.to_string(), m.viewers.len()))
            .collect();
        ShardStreams { owned, viewers }
    }

    fn client_list(&self) -> Vec<ClientInfo> {
        let now = Instant::now();
        self.clients
            .borrow()
            .values()
            .map(|t| ClientInfo {
                id: t.id,
                peer: t.peer.to_string(),
                shard: self.id,
                role: t.role.get().label(),
                stream: t.key.borrow().as_deref().map(str::to_string),
                connected_secs: now.duration_since(t.since).as_secs_f64(),
                agent: t.agent.borrow().as_deref().map(str::to_string),
                tls: t.tls.borrow().as_deref().cloned(),
            })
            .collect()
    }
}
