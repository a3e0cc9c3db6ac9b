//! The preview page (`GET /`): the live streams, each playable in the page.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::Ctx;

pub async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("preview.html"),
    )
}

/// The streams the page lists: `["live/a", ...]`.
pub async fn streams(State(ctx): State<Ctx>) -> impl IntoResponse {
    let keys: Vec<String> = ctx.hls.live_keys().iter().map(|k| k.to_string()).collect();
    (
        [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        axum::Json(keys),
    )
}
