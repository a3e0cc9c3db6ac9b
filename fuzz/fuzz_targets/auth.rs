//! Static-token and signed-URL checks on what a peer controls: app, stream name, the
//! stream's and connect's query strings (percent-decoding, `*`/`?` pattern matching,
//! HMAC signatures). Input: byte 0 picks publish/play and the clock; then newline-
//! separated fields: token pattern (at most 64 bytes: it comes from the config), app,
//! name, stream query, connect query.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtmp_edge::auth::config::{ActionAuth, TokenRule};
use rtmp_edge::auth::{Action, Auth, AuthConfig, AuthRequest};

fuzz_target!(|data: &[u8]| {
    let Some((&b0, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut f = text.split('\n');
    let mut next = || f.next().map(str::to_string);
    let pattern: String = next().unwrap_or_default().chars().take(64).collect();
    let rules = ActionAuth {
        tokens: vec![
            TokenRule {
                pattern,
                token: "t0k".into(),
            },
            TokenRule {
                pattern: "live/cam*".into(),
                token: "c@m s".into(),
            },
        ],
        secret: Some("s3cret".into()),
        callback: None,
    };
    let cfg = AuthConfig {
        publish: rules.clone(),
        play: rules,
        ..AuthConfig::default()
    };
    let Ok(auth) = Auth::from_config(&cfg) else {
        return;
    };
    let req = AuthRequest {
        action: if b0 & 1 == 0 {
            Action::Publish
        } else {
            Action::Play
        },
        app: next().unwrap_or_default(),
        name: next().unwrap_or_default(),
        query: next(),
        connect_query: next(),
        tc_url: None,
        peer: "127.0.0.1:1".parse().unwrap(),
        conn_id: 1,
    };
    let now = if b0 & 2 == 0 {
        1_700_000_000
    } else {
        u64::MAX - u64::from(b0)
    };
    let _ = auth.check_credentials(&req, now);
});
