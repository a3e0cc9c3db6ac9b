//! The preview page (`GET /`): the live streams, each playable in the page with hls.js
//! (or Safari's own HLS) and mpegts.js, from script URLs the operator chooses.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{Ctx, WebConfig};

const TEMPLATE: &str = include_str!("preview.html");

/// The page with the configured script URLs filled in.
pub fn render(cfg: &WebConfig) -> String {
    TEMPLATE
        .replace("{{HLS_JS}}", &attr_escape(&cfg.hls_js))
        .replace("{{MPEGTS_JS}}", &attr_escape(&cfg.mpegts_js))
}

fn attr_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub async fn index(State(ctx): State<Ctx>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        ctx.page.to_string(),
    )
}

/// The streams the page lists: `["live/a", ...]`.
pub async fn streams(State(ctx): State<Ctx>) -> impl IntoResponse {
    let keys: Vec<String> = ctx.flv.live_keys().iter().map(|k| k.to_string()).collect();
    (
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::Json(keys),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_urls_are_filled_in_and_escaped() {
        let page = render(&WebConfig {
            hls_js: "/js/hls.min.js".into(),
            mpegts_js: "https://x/m.js?a=1&b=\"2\"".into(),
        });
        assert!(page.contains(r#"<script src="/js/hls.min.js"></script>"#));
        assert!(page.contains(r#"<script src="https://x/m.js?a=1&amp;b=&quot;2&quot;"></script>"#));
        assert!(!page.contains("{{"));
    }
}
