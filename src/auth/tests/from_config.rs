//! Building `Auth` from its config: rejected settings and TOML parsing (with secrets kept
//! out of `Debug`).

use super::*;

#[test]
fn from_config_rejects_bad_settings() {
    let err = |play: ActionAuth, timeout_ms: u64| {
        Auth::from_config(&AuthConfig {
            play,
            callback_timeout_ms: timeout_ms,
            ..AuthConfig::default()
        })
        .unwrap_err()
        .to_string()
    };
    let cb = |url: &str| ActionAuth {
        callback: Some(url.into()),
        ..ActionAuth::default()
    };
    let e = err(cb("https://auth.example/check"), 1000);
    assert!(
        e.contains("auth.play.callback") && e.contains("https is not supported"),
        "{e}"
    );
    assert!(err(cb("ftp://a/"), 1000).contains("only http://"));
    assert!(err(cb("http://"), 1000).contains("auth.play.callback"));
    assert!(err(cb("http://u:p@a/"), 1000).contains("user info"));
    assert!(err(cb("http://127.0.0.1:1/"), 0).contains("callback_timeout_ms"));
    let e = err(
        ActionAuth {
            tokens: vec![rule("live/*", "")],
            ..ActionAuth::default()
        },
        1000,
    );
    assert!(e.contains("auth.play.tokens") && e.contains("empty"), "{e}");
    let e = err(
        ActionAuth {
            tokens: vec![rule("", "t")],
            ..ActionAuth::default()
        },
        1000,
    );
    assert!(e.contains("pattern is empty"), "{e}");
    let e = err(
        ActionAuth {
            secret: Some(String::new()),
            ..ActionAuth::default()
        },
        1000,
    );
    assert_eq!(e, "auth.play.secret is empty");
    // A zero timeout is fine while no callback is set.
    assert!(Auth::from_config(&AuthConfig {
        callback_timeout_ms: 0,
        ..AuthConfig::default()
    })
    .is_ok());
}

#[test]
fn parses_from_toml_and_debug_hides_secrets() {
    let cfg: AuthConfig = toml::from_str(
        r#"
        callback_timeout_ms = 500
        [publish]
        secret = "topsecret"
        tokens = [{ match = "live/*", token = "tok-123" }, { token = "any" }]
        [play]
        callback = "http://127.0.0.1:9/cb"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.publish.tokens[1].pattern, "*");
    let auth = Auth::from_config(&cfg).unwrap();
    assert!(auth.has_callback(Action::Play) && !auth.has_callback(Action::Publish));
    assert!(!auth.is_open(Action::Play) && !auth.is_open(Action::Publish));
    let dbg = format!("{auth:?}");
    assert!(
        !dbg.contains("topsecret") && !dbg.contains("tok-123"),
        "{dbg}"
    );
}
