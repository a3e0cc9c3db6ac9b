//! The JSON API under `/api/v1` (documented in deploy/openapi.yaml): streams, clients,
//! kicks, push destinations changed at runtime, and channels (status, a pinned source). Reads ask the shards; changes go to
//! the push registry and then to the shards, which start or stop sessions of live streams.

use std::sync::Arc;

use axum::extract::{Path, Query as UrlQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use super::Control;
use crate::channel::ForceError;
use crate::relay::push::{Destination, PushEntry, RegistryError};
use crate::shard::query::{ClientInfo, Query, SinkInfo};
use crate::tls::ClientTls;

type Shared = State<Arc<Control>>;

pub fn routes(control: Arc<Control>) -> Router<Arc<Control>> {
    Router::new()
        .route("/streams", get(list_streams))
        .route("/streams/{*key}", get(get_stream).delete(kick_publisher))
        .route("/clients", get(list_clients))
        .route("/clients/{id}", get(get_client).delete(kick_client))
        .route("/push", get(list_push).post(add_push))
        .route(
            "/push/{id}",
            get(get_push).patch(patch_push).delete(remove_push),
        )
        .route("/channels", get(list_channels))
        .route("/channels/{*rest}", get(get_channel).post(force_channel))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such API endpoint") })
        .layer(middleware::from_fn_with_state(control, require_token))
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// With `--api-token`, every API call carries `Authorization: Bearer <token>`. Without
/// one, only loopback clients may use the API: it can disconnect publishers and send
/// streams elsewhere, and `--http` listens on every interface by default (for scrapes).
async fn require_token(State(c): Shared, req: Request, next: Next) -> Response {
    if c.api_token.is_none() {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|ci| ci.0.ip());
        // Canonical: a dual-stack listener sees 127.0.0.1 as ::ffff:127.0.0.1.
        if !peer.is_some_and(|ip| ip.to_canonical().is_loopback()) {
            return error(
                StatusCode::FORBIDDEN,
                "the API answers loopback clients only unless --api-token is set",
            );
        }
    }
    if let Some(token) = &c.api_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, t)| t.trim());
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    next.run(req).await
}

/// Compares digests, so neither the content nor the length of the token leaks by timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

// ---- streams ----

async fn list_streams(State(c): Shared) -> Response {
    Json(json!({ "streams": c.streams().await })).into_response()
}

async fn get_stream(State(c): Shared, Path(key): Path<String>) -> Response {
    match c.streams().await.into_iter().find(|s| s.key == key) {
        Some(s) => Json(s).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no stream {key}")),
    }
}

async fn kick_publisher(State(c): Shared, Path(key): Path<String>) -> Response {
    let k = key.clone();
    let kicked = c
        .ask(move |tx| Query::KickPublisher(k.clone(), tx))
        .await
        .into_iter()
        .any(|b| b);
    if kicked {
        info!(key = %key, "publisher kicked through the API");
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no publisher on {key}"))
    }
}

// ---- clients ----

#[derive(Deserialize)]
struct ClientFilter {
    role: Option<String>,
    stream: Option<String>,
}

async fn clients(c: &Control) -> Vec<ClientInfo> {
    let mut all: Vec<ClientInfo> = c.ask(Query::Clients).await.into_iter().flatten().collect();
    all.sort_by_key(|c| c.id);
    all
}

async fn list_clients(State(c): Shared, UrlQuery(f): UrlQuery<ClientFilter>) -> Response {
    let list: Vec<ClientInfo> = clients(&c)
        .await
        .into_iter()
        .filter(|x| f.role.as_deref().is_none_or(|r| r == x.role))
        .filter(|x| {
            f.stream
                .as_deref()
                .is_none_or(|s| x.stream.as_deref() == Some(s))
        })
        .collect();
    Json(json!({ "clients": list })).into_response()
}

async fn get_client(State(c): Shared, Path(id): Path<u64>) -> Response {
    match clients(&c).await.into_iter().find(|x| x.id == id) {
        Some(x) => Json(x).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no client {id}")),
    }
}

async fn kick_client(State(c): Shared, Path(id): Path<u64>) -> Response {
    let kicked = c
        .ask(move |tx| Query::KickClient(id, tx))
        .await
        .into_iter()
        .any(|b| b);
    if kicked {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no client {id}"))
    }
}

// ---- channels ----

async fn list_channels(State(c): Shared) -> Response {
    let list = c.channels().map(|ch| ch.list()).unwrap_or_default();
    Json(json!({ "channels": list })).into_response()
}

async fn get_channel(State(c): Shared, Path(name): Path<String>) -> Response {
    match c.channels().and_then(|ch| ch.get(&name)) {
        Some(s) => Json(s).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no channel {name}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceSource {
    /// A source key, `"slate"`, or `"auto"`/null for the priority order.
    source: Option<String>,
}

/// `POST /channels/{name}/source`: pins the channel to a source (from its next keyframe),
/// to the slate, or back to the priority order.
async fn force_channel(
    State(c): Shared,
    Path(rest): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(name) = rest.strip_suffix("/source") else {
        return error(StatusCode::NOT_FOUND, "no such API endpoint");
    };
    // No body at all means the priority order, like `{"source": null}`.
    let req: ForceSource = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) if body.iter().all(u8::is_ascii_whitespace) => ForceSource { source: None },
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    let source = req.source.unwrap_or_else(|| "auto".into());
    let Some(ch) = c.channels() else {
        return error(StatusCode::NOT_FOUND, format!("no channel {name}"));
    };
    match ch.force(name, &source) {
        Ok(()) => {
            info!(channel = %name, source = %source, "channel source pinned through the API");
            (
                StatusCode::ACCEPTED,
                Json(json!({ "channel": name, "pinned": source })),
            )
                .into_response()
        }
        Err(e @ ForceError::NoChannel(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ ForceError::NotRunning) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

// ---- push destinations ----

#[derive(Serialize)]
struct PushView {
    id: String,
    /// Keys are credentials: shown as `<key>`.
    url: String,
    streams: Vec<String>,
    enabled: bool,
    source: &'static str,
    sessions: Vec<SessionView>,
}

#[derive(Serialize)]
struct SessionView {
    stream: String,
    #[serde(flatten)]
    info: SinkInfo,
}

async fn push_view(c: &Control, entries: Vec<PushEntry>) -> Vec<PushView> {
    let streams = c.streams().await;
    entries
        .into_iter()
        .map(|e| PushView {
            sessions: streams
                .iter()
                .flat_map(|s| s.push.iter().map(move |p| (s, p)))
                .filter(|(_, p)| p.destination == e.id)
                .map(|(s, p)| SessionView {
                    stream: s.key.clone(),
                    info: p.clone(),
                })
                .collect(),
            url: e.dest.label(),
            streams: e.dest.streams.clone(),
            enabled: e.enabled,
            source: e.origin.label(),
            id: e.id,
        })
        .collect()
}

fn no_registry() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "push is not available")
}

async fn list_push(State(c): Shared) -> Response {
    let Some(reg) = c.push_registry() else {
        return no_registry();
    };
    let list = push_view(&c, reg.list()).await;
    Json(json!({ "destinations": list })).into_response()
}

async fn get_push(State(c): Shared, Path(id): Path<String>) -> Response {
    let Some(reg) = c.push_registry() else {
        return no_registry();
    };
    match reg.get(&id) {
        Some(e) => Json(push_view(&c, vec![e]).await.pop()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no push destination {id}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPush {
    id: Option<String>,
    url: String,
    key: Option<String>,
    #[serde(default)]
    streams: Vec<String>,
    #[serde(default = "yes")]
    enabled: bool,
    /// Extra CA certificates (PEM file on the server) for an `rtmps://` URL.
    ca_file: Option<std::path::PathBuf>,
}

fn yes() -> bool {
    true
}

async fn add_push(State(c): Shared, body: axum::body::Bytes) -> Response {
    let Some(reg) = c.push_registry().cloned() else {
        return no_registry();
    };
    let req: NewPush = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    let trust = match ClientTls::new(req.ca_file.as_deref()) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("ca_file: {e}")),
    };
    let mut dest = match Destination::from_flag(&req.url, trust) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    dest.key = req.key;
    dest.streams = req.streams;
    match reg.add(req.id, dest, req.enabled) {
        Ok(e) => {
            c.reconcile_sinks();
            let view = push_view(&c, vec![e]).await.pop();
            (StatusCode::CREATED, Json(view)).into_response()
        }
        Err(e @ RegistryError::Exists(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchPush {
    enabled: bool,
}

async fn patch_push(State(c): Shared, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let Some(reg) = c.push_registry().cloned() else {
        return no_registry();
    };
    let req: PatchPush = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    match reg.set_enabled(&id, req.enabled) {
        Some(e) => {
            c.reconcile_sinks();
            Json(push_view(&c, vec![e]).await.pop()).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no push destination {id}")),
    }
}

async fn remove_push(State(c): Shared, Path(id): Path<String>) -> Response {
    let Some(reg) = c.push_registry().cloned() else {
        return no_registry();
    };
    if reg.remove(&id) {
        c.reconcile_sinks();
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no push destination {id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use tower::ServiceExt;

    /// Status of GET /streams from `peer`, with an optional bearer token, on a control
    /// plane without shards (the list is empty, the guard is what is tested).
    fn status(api_token: Option<&str>, peer: &str, bearer: Option<&str>) -> StatusCode {
        let mut control = Control::detached(1);
        control.api_token = api_token.map(str::to_string);
        let control = Arc::new(control);
        let app = routes(control.clone()).with_state(control);
        let mut req = Request::builder().uri("/streams");
        if let Some(b) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {b}"));
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<std::net::SocketAddr>().unwrap()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(app.oneshot(req)).unwrap().status()
    }

    #[test]
    fn api_guard() {
        // No token: loopback only.
        assert_eq!(status(None, "127.0.0.1:5000", None), StatusCode::OK);
        assert_eq!(status(None, "[::1]:5000", None), StatusCode::OK);
        assert_eq!(status(None, "10.1.2.3:5000", None), StatusCode::FORBIDDEN);
        // Token: required from everywhere, enough from anywhere.
        assert_eq!(
            status(Some("t"), "127.0.0.1:5000", None),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(Some("t"), "10.1.2.3:5000", Some("x")),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(Some("t"), "10.1.2.3:5000", Some("t")),
            StatusCode::OK
        );
        assert_eq!(
            status(None, "[::ffff:127.0.0.1]:5000", None),
            StatusCode::OK
        );
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
