//! `GET /{app}/{name}.flv`: a live stream as FLV, either one chunked HTTP response or, when
//! the request asks to upgrade, WebSocket binary messages (what mpegts.js and flv.js open
//! as `ws://…/app/name.flv`). Both send the viewer's queued buffers as they are.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::Poll;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::body::FlvBody;
use super::{finish, status, Ctx};
use crate::httpflv::{Next, ViewerGuard};

pub(super) async fn stream(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((app, file)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Response {
    let Some(name) = file.strip_suffix(".flv") else {
        return finish("other", status(StatusCode::NOT_FOUND));
    };
    let websocket = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let kind = if websocket { "ws-flv" } else { "flv" };
    let key = format!("{app}/{name}");
    if let Err(r) = ctx
        .authorize(&key, raw.as_deref().unwrap_or(""), peer)
        .await
    {
        return finish(kind, r);
    }
    let Some(guard) = ctx.live_or_fetched(&key, || ctx.flv.subscribe(&key)).await else {
        return finish(kind, status(StatusCode::NOT_FOUND));
    };
    if websocket {
        let (mut parts, _) = request.into_parts();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &ctx).await {
            Ok(ws) => finish(kind, ws.on_upgrade(move |socket| pump(socket, guard))),
            Err(rejection) => finish(kind, rejection.into_response()),
        };
    }
    let mut r = Response::new(axum::body::Body::new(FlvBody { guard }));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("video/x-flv"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    finish(kind, r)
}

/// Sends the viewer's buffers as binary messages until the publisher leaves, the viewer is
/// kicked or the client goes; what the client sends is read only to notice that.
async fn pump(mut socket: WebSocket, guard: ViewerGuard) {
    loop {
        let next = poll_fn(|cx| match guard.viewer.next(cx.waker()) {
            Next::Data(b) => Poll::Ready(Some(b)),
            Next::Wait => Poll::Pending,
            Next::End => Poll::Ready(None),
        });
        tokio::select! {
            data = next => {
                let Some(b) = data else { break };
                let n = b.len() as u64;
                if socket.send(Message::Binary(b)).await.is_err() {
                    return;
                }
                metrics::counter!("rtmp_http_bytes_out_total", "kind" => "flv").increment(n);
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}
