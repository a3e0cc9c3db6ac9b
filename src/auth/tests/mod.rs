//! Tests of the whole policy (`Auth`) through its public interface. This module owns the
//! shared request and config helpers; the tests live in the submodules by concern:
//! credentials (static tokens, signed URLs, query handling), config validation, and the
//! callback against a tiny HTTP server on loopback.

mod callback;
mod credentials;
mod from_config;

use super::config::{ActionAuth, TokenRule as TokenRuleCfg};
use super::*;

const NOW: u64 = 1_700_000_000;

fn req(
    action: Action,
    name: &str,
    query: Option<&str>,
    connect_query: Option<&str>,
) -> AuthRequest {
    AuthRequest {
        action,
        app: "live".into(),
        name: name.into(),
        query: query.map(Into::into),
        connect_query: connect_query.map(Into::into),
        tc_url: Some("rtmp://127.0.0.1:1935/live".into()),
        peer: "10.1.2.3:50000".parse().unwrap(),
        conn_id: 7,
    }
}

fn rule(pattern: &str, token: &str) -> TokenRuleCfg {
    TokenRuleCfg {
        pattern: pattern.into(),
        token: token.into(),
    }
}

fn with_publish(publish: ActionAuth) -> Auth {
    Auth::from_config(&AuthConfig {
        publish,
        ..AuthConfig::default()
    })
    .unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
