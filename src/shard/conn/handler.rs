//! What a connection does with each session event: connect details kept for
//! authorization, publish and play started, refused or handed over, media ingested,
//! streams closed. The decisions are plain functions (`decide_*`), unit-tested below; the
//! methods apply them to the shard.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{ClientRole, ConnCtx, Exit, Role};
use crate::fanout::viewer::Viewer;
use crate::media::frame::MediaKind;
use crate::protocol::session::Event;
use crate::shard::hooks::{Action, AuthRequest};
use crate::shard::state::{PublishError, StreamKey};

/// Connect's query and tcUrl are kept for the connection's life: bounded. Longer queries
/// carry no credentials auth would read (it ignores them past 4 KiB).
const MAX_CONNECT_QUERY: usize = 4096;
const MAX_TC_URL: usize = 1024;
const MAX_AGENT_CHARS: usize = 128;

/// Every `rtmp_publish_rejects_total` / `rtmp_play_rejects_total` reason.
pub const REJECT_REASONS: [&str; 3] = ["unauthorized", "bad_name", "shutting_down"];

/// What to do with a `publish` command.
#[derive(Debug, PartialEq, Eq)]
enum PublishDecision {
    /// Bad name, or the connection plays a stream.
    Refuse,
    /// The connection already publishes (an encoder restarting its broadcast after
    /// FCUnpublish, on a new stream id): end that publish, then start this one.
    Republish,
    /// Another shard owns the stream: hand the connection over.
    Migrate {
        owner: usize,
    },
    Start,
}

fn decide_publish(role: &Role, name: &str, owner: usize, me: usize) -> PublishDecision {
    match role {
        _ if !valid_name(name) => PublishDecision::Refuse,
        Role::Player { .. } => PublishDecision::Refuse,
        Role::Publisher { released: true, .. } => PublishDecision::Republish,
        Role::Publisher { .. } => PublishDecision::Refuse,
        Role::None if owner != me => PublishDecision::Migrate { owner },
        Role::None => PublishDecision::Start,
    }
}

/// A `play` starts only on a fresh connection with a usable name.
fn may_play(role: &Role, name: &str) -> bool {
    valid_name(name) && matches!(role, Role::None)
}

/// Whether closeStream/deleteStream of `stream_id` ends what this connection does.
fn closes(role: &Role, stream_id: u32) -> bool {
    match role {
        Role::Publisher { stream_id: s, .. } => *s == stream_id,
        Role::Player { .. } => true,
        Role::None => false,
    }
}

/// Stream names become map keys and log fields: bound them and keep them printable.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 512 && !name.chars().any(char::is_control)
}

/// The query auth reads from connect: connect's own, else tcUrl's; None past the bound.
fn connect_query(query: Option<String>, tc_url: Option<&str>) -> Option<String> {
    query
        .or_else(|| {
            tc_url
                .and_then(|u| u.split_once('?'))
                .map(|(_, q)| q.to_string())
        })
        .filter(|q| q.len() <= MAX_CONNECT_QUERY)
}

impl ConnCtx {
    pub(super) fn flush(&mut self) {
        if let Some(b) = self.session.take_output() {
            self.queue.push(b);
        }
    }

    pub(super) fn drain_events(&mut self) -> Option<Exit> {
        self.flush();
        while !self.closing && self.pending.is_none() {
            let Some(ev) = self.session.poll_event() else {
                break;
            };
            if let Some(exit) = self.on_event(ev) {
                return Some(exit);
            }
        }
        self.flush();
        None
    }

    fn stream_key(&self, name: &str) -> StreamKey {
        Arc::from(format!("{}/{}", self.session.app(), name))
    }

    fn on_event(&mut self, ev: Event) -> Option<Exit> {
        match ev {
            Event::Connected {
                app,
                tc_url,
                flash_ver,
                query,
            } => {
                clog!(debug, self.tag, %app, tc_url = tc_url.as_deref().unwrap_or("").split('?').next().unwrap_or(""), flash_ver = flash_ver.as_deref().unwrap_or(""), "connect");
                self.connect_query = connect_query(query, tc_url.as_deref());
                self.tc_url = tc_url.filter(|u| u.len() <= MAX_TC_URL);
                *self.tag.agent.borrow_mut() = flash_ver.map(|v| {
                    v.chars()
                        .take(MAX_AGENT_CHARS)
                        .collect::<String>()
                        .into_boxed_str()
                });
            }
            Event::Publish { .. } | Event::Play { .. } => {
                let action = match ev {
                    Event::Publish { .. } => Action::Publish,
                    _ => Action::Play,
                };
                if action == Action::Play && matches!(self.role, Role::None) {
                    // Time to first frame counts from the request, authorization included.
                    self.queue.mark_play(Instant::now());
                }
                if self.state.shared.hooks.auth.is_open(action) {
                    return self.on_authorized(ev);
                }
                self.pending = Some(Box::new(ev));
            }
            Event::Audio { timestamp, payload } => {
                self.ingest(MediaKind::Audio, timestamp, payload)
            }
            Event::Video { timestamp, payload } => {
                self.ingest(MediaKind::Video, timestamp, payload)
            }
            Event::Metadata { timestamp, payload } => {
                self.ingest(MediaKind::Metadata, timestamp, payload)
            }
            Event::Data { timestamp, payload } => self.ingest(MediaKind::Data, timestamp, payload),
            Event::FcUnpublish { name } => {
                if let Role::Publisher { key, released, .. } = &mut self.role {
                    if key.split_once('/').map(|(_, n)| n) == Some(name.as_str()) {
                        *released = true;
                    }
                }
            }
            Event::CloseStream { stream_id } => {
                if closes(&self.role, stream_id) {
                    self.leave_role("deleteStream");
                }
            }
            Event::ReceiveAudio(on) | Event::ReceiveVideo(on) => {
                if let Role::Player { key, slot } = &self.role {
                    let audio = matches!(ev, Event::ReceiveAudio(_));
                    self.state.with_viewer(key, *slot, |v| {
                        if audio {
                            v.receive_audio = on;
                        } else {
                            v.receive_video = on;
                        }
                    });
                }
            }
        }
        None
    }

    /// Runs the authorization of a publish or play, then acts on it or refuses it.
    pub(super) async fn authorize(&mut self, ev: Event) -> Option<Exit> {
        let (action, stream_id, name, query) = match &ev {
            Event::Publish {
                stream_id,
                name,
                query,
            } => (Action::Publish, *stream_id, name, query),
            Event::Play {
                stream_id,
                name,
                query,
                ..
            } => (Action::Play, *stream_id, name, query),
            _ => return self.on_event(ev),
        };
        let req = AuthRequest {
            action,
            app: self.session.app().to_string(),
            name: name.clone(),
            query: query.clone(),
            connect_query: self.connect_query.clone(),
            tc_url: self.tc_url.clone(),
            peer: self.tag.peer,
            conn_id: self.tag.id,
        };
        let key = self.stream_key(name);
        let reason = match self.state.shared.hooks.auth.check(req).await {
            Ok(()) => return self.on_authorized(ev),
            Err(denied) => denied.0,
        };
        // Only now: an allowed request sets the key when it starts (it may still be refused,
        // e.g. a second play on a connection that already plays another stream).
        *self.tag.key.borrow_mut() = Some(key);
        clog!(
            warn,
            self.tag,
            action = action.label(),
            reason,
            "{} refused: unauthorized",
            action.label()
        );
        metrics::counter!("rtmp_auth_denied_total", "action" => action.label(), "reason" => reason)
            .increment(1);
        match action {
            Action::Publish => {
                metrics::counter!("rtmp_publish_rejects_total", "reason" => "unauthorized")
                    .increment(1);
                self.session.reject_publish(
                    stream_id,
                    "NetStream.Publish.Unauthorized",
                    "Not authorized to publish this stream.",
                );
            }
            Action::Play => {
                metrics::counter!("rtmp_play_rejects_total", "reason" => "unauthorized")
                    .increment(1);
                self.session.reject_play(
                    stream_id,
                    "NetStream.Play.Failed",
                    "Not authorized to play this stream.",
                );
            }
        }
        self.flush();
        self.closing = true;
        None
    }

    /// A publish or play that passed authorization (or needed none).
    pub(super) fn on_authorized(&mut self, ev: Event) -> Option<Exit> {
        match ev {
            Event::Publish {
                stream_id,
                name,
                query,
            } => self.on_publish(stream_id, name, query),
            Event::Play {
                stream_id,
                name,
                reset,
                ..
            } => {
                self.on_play(stream_id, name, reset);
                None
            }
            other => self.on_event(other),
        }
    }

    fn on_publish(&mut self, stream_id: u32, name: String, query: Option<String>) -> Option<Exit> {
        let key = self.stream_key(&name);
        let owner = self.state.owner_of(&key);
        let mut decision = decide_publish(&self.role, &name, owner, self.state.id);
        if decision == PublishDecision::Republish {
            self.leave_role("republish");
            decision = decide_publish(&self.role, &name, owner, self.state.id);
        }
        match decision {
            PublishDecision::Refuse | PublishDecision::Republish => {
                clog!(
                    warn,
                    self.tag,
                    name_len = name.len(),
                    "publish refused: bad name or connection already in use"
                );
                metrics::counter!("rtmp_publish_rejects_total", "reason" => "bad_name")
                    .increment(1);
                self.session.reject_publish(
                    stream_id,
                    "NetStream.Publish.BadName",
                    "Bad stream name.",
                );
                // An encoder retrying its publish keeps the stream it already has;
                // anything else refused here closes.
                self.closing = !matches!(self.role, Role::Publisher { .. });
                return None;
            }
            PublishDecision::Migrate { owner } => {
                *self.tag.key.borrow_mut() = Some(key);
                return Some(Exit::Migrate {
                    owner,
                    stream_id,
                    name,
                    query,
                });
            }
            PublishDecision::Start => {}
        }
        *self.tag.key.borrow_mut() = Some(key.clone());
        match self.state.start_publish(&key, self.tag.id) {
            Ok(()) => {
                clog!(info, self.tag, "publish started");
                self.tag.role.set(ClientRole::Publisher);
                self.slot.settle();
                metrics::counter!("rtmp_publishes_total").increment(1);
                self.session.accept_publish(stream_id, &name);
                self.role = Role::Publisher {
                    key,
                    stream_id,
                    released: false,
                };
            }
            Err(PublishError::ShuttingDown) => {
                clog!(info, self.tag, "publish refused: shutting down");
                metrics::counter!("rtmp_publish_rejects_total", "reason" => "shutting_down")
                    .increment(1);
                self.session.reject_publish(
                    stream_id,
                    "NetStream.Publish.Failed",
                    "The server is shutting down.",
                );
                self.closing = true;
            }
            Err(PublishError::BadName) => {
                clog!(
                    warn,
                    self.tag,
                    "publish refused: stream already has a publisher"
                );
                metrics::counter!("rtmp_publish_rejects_total", "reason" => "bad_name")
                    .increment(1);
                self.session.reject_publish(
                    stream_id,
                    "NetStream.Publish.BadName",
                    &format!("{name} is already being published."),
                );
                self.closing = true;
            }
        }
        None
    }

    fn on_play(&mut self, stream_id: u32, name: String, reset: bool) {
        if !may_play(&self.role, &name) {
            clog!(
                warn,
                self.tag,
                name_len = name.len(),
                "play refused: bad name or connection already in use"
            );
            metrics::counter!("rtmp_play_rejects_total", "reason" => "bad_name").increment(1);
            self.session.reject_play(
                stream_id,
                "NetStream.Play.StreamNotFound",
                "No such stream.",
            );
            return;
        }
        let key = self.stream_key(&name);
        *self.tag.key.borrow_mut() = Some(key.clone());
        self.session.accept_play(stream_id, &name, reset);
        // The play preamble must be queued before the media the mirror pushes next.
        self.flush();
        let viewer = Viewer::new(
            self.queue.clone(),
            stream_id,
            name,
            self.session.out_chunk_size(),
            self.state.viewer_policy,
        );
        if !self.state.shared.cfg.player_nodelay {
            self.conn.set_nodelay(false);
        }
        let slot = self.state.add_viewer(&key, viewer);
        clog!(info, self.tag, "play started");
        self.tag.role.set(ClientRole::Player);
        self.slot.settle();
        metrics::counter!("rtmp_plays_total").increment(1);
        self.role = Role::Player { key, slot };
    }

    fn ingest(&mut self, kind: MediaKind, timestamp: u32, payload: Bytes) {
        if let Role::Publisher { key, .. } = &self.role {
            self.state
                .publish_frame(key, self.tag.id, kind, timestamp, payload, self.last_read);
        }
    }

    /// Ends the publish or play; `why` is logged (deleteStream, republish, disconnect,
    /// shutdown) so an operator can tell a clean unpublish from a dropped connection.
    pub(super) fn leave_role(&mut self, why: &'static str) {
        self.tag.role.set(ClientRole::Handshake);
        match std::mem::replace(&mut self.role, Role::None) {
            Role::Publisher { key, .. } => {
                clog!(info, self.tag, reason = why, "publish ended");
                self.state.end_publish(&key, self.tag.id);
            }
            Role::Player { key, slot } => {
                clog!(debug, self.tag, reason = why, "play ended");
                self.state.remove_viewer(&key, slot);
            }
            Role::None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(stream_id: u32) -> Role {
        Role::Publisher {
            key: "live/a".into(),
            stream_id,
            released: false,
        }
    }

    fn released(stream_id: u32) -> Role {
        Role::Publisher {
            key: "live/a".into(),
            stream_id,
            released: true,
        }
    }

    fn player() -> Role {
        Role::Player {
            key: "live/a".into(),
            slot: 0,
        }
    }

    #[test]
    fn publish_starts_migrates_or_is_refused() {
        assert_eq!(
            decide_publish(&Role::None, "cam", 0, 0),
            PublishDecision::Start
        );
        assert_eq!(
            decide_publish(&Role::None, "cam", 1, 0),
            PublishDecision::Migrate { owner: 1 }
        );
        assert_eq!(
            decide_publish(&player(), "cam", 0, 0),
            PublishDecision::Refuse
        );
        for bad in ["", "a\nb", &"x".repeat(513)] {
            assert_eq!(
                decide_publish(&Role::None, bad, 0, 0),
                PublishDecision::Refuse
            );
        }
        assert!(valid_name(&"x".repeat(512)));
    }

    /// vMix/Wirecast restarting a broadcast: FCUnpublish (no deleteStream), createStream,
    /// publish on the new stream id, same connection. Without the FCUnpublish, a second
    /// publish is refused as before (a retrying encoder must not end its own stream).
    #[test]
    fn publish_after_fcunpublish_is_a_republish() {
        assert_eq!(
            decide_publish(&released(1), "cam", 0, 0),
            PublishDecision::Republish
        );
        assert_eq!(
            decide_publish(&released(1), "cam", 1, 0),
            PublishDecision::Republish,
            "ended first, then handed over"
        );
        assert_eq!(
            decide_publish(&released(1), "", 0, 0),
            PublishDecision::Refuse
        );
        assert_eq!(
            decide_publish(&publisher(1), "cam", 0, 0),
            PublishDecision::Refuse
        );
    }

    #[test]
    fn play_only_on_a_fresh_connection() {
        assert!(may_play(&Role::None, "cam"));
        assert!(!may_play(&player(), "cam"));
        assert!(!may_play(&publisher(1), "cam"));
        assert!(!may_play(&Role::None, ""));
    }

    #[test]
    fn close_stream_ends_only_its_own_stream() {
        assert!(closes(&publisher(1), 1));
        assert!(
            !closes(&publisher(1), 2),
            "deleteStream of an old stream id"
        );
        assert!(closes(&player(), 7));
        assert!(!closes(&Role::None, 1));
    }

    #[test]
    fn connect_query_from_connect_or_tc_url_and_bounded() {
        assert_eq!(
            connect_query(Some("token=a".into()), Some("rtmp://h/live?token=b")).as_deref(),
            Some("token=a")
        );
        assert_eq!(
            connect_query(None, Some("rtmp://h/live?token=b")).as_deref(),
            Some("token=b")
        );
        assert_eq!(connect_query(None, Some("rtmp://h/live")), None);
        let long = format!("t={}", "x".repeat(MAX_CONNECT_QUERY));
        assert_eq!(connect_query(Some(long), None), None);
    }
}
