//! Moving a publisher to the shard that owns its stream: the socket (a dup'd fd) and the
//! session state cross on the owner's control lane; the owner adopts it (`conn::adopt`).

use std::rc::Rc;

use super::ConnCtx;
use crate::shard::io::Conn;
use crate::shard::transmission::{ControlMsg, Handoff};

/// Called once the reader stopped and the writer drained: nothing is in flight on the
/// socket, so its fd can be duplicated and this shard's stream dropped.
pub(super) fn migrate(
    ctx: ConnCtx,
    owner: usize,
    stream_id: u32,
    name: String,
    query: Option<String>,
) {
    let ConnCtx {
        state,
        conn,
        session,
        tag,
        slot,
        ..
    } = ctx;
    let (fd, tls) = match Rc::try_unwrap(conn).map(Conn::into_parts) {
        Ok(Ok(parts)) => parts,
        _ => {
            clog!(warn, tag, "publisher hand-off failed: socket still in use");
            return;
        }
    };
    clog!(
        debug,
        tag,
        to_shard = owner,
        "handing publisher to owner shard"
    );
    let handoff = Box::new(Handoff {
        fd,
        tls,
        slot,
        session: Box::new(session),
        conn_id: tag.id,
        peer: tag.peer,
        since: tag.since,
        agent: tag.agent.borrow_mut().take(),
        stream_id,
        name,
        query,
    });
    if !state.shared.links[owner].send_control(ControlMsg::Adopt(handoff)) {
        clog!(warn, tag, "owner shard gone; publisher dropped");
    }
}
