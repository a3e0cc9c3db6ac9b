//! Credentials checked locally: static tokens and their patterns, signed URLs, where the
//! query comes from and how it is decoded, labels, logged names, and fuzzed queries.

use super::*;

#[test]
fn disabled_and_empty_config_allow_everything() {
    for auth in [
        Auth::disabled(),
        Auth::from_config(&AuthConfig::default()).unwrap(),
    ] {
        for action in [Action::Publish, Action::Play] {
            assert!(auth.is_open(action));
            assert!(!auth.has_callback(action));
            assert_eq!(
                auth.check_credentials(&req(action, "x", None, None), NOW),
                Ok(())
            );
        }
        let auth = Arc::new(auth);
        assert_eq!(
            block_on(auth.check(req(Action::Play, "x", None, None))),
            Ok(())
        );
    }
}

#[test]
fn labels() {
    assert_eq!(Action::Publish.label(), "publish");
    assert_eq!(Action::Play.label(), "play");
    let all = [
        (DenyReason::MissingCredentials, "missing_credentials"),
        (DenyReason::BadToken, "bad_token"),
        (DenyReason::BadSignature, "bad_signature"),
        (DenyReason::Expired, "expired"),
        (DenyReason::CallbackRefused, "callback_refused"),
        (DenyReason::CallbackFailed, "callback_failed"),
    ];
    for (r, l) in all {
        assert_eq!(r.label(), l);
    }
}

#[test]
fn static_tokens_allow_and_deny() {
    let auth = with_publish(ActionAuth {
        tokens: vec![rule("live/cam*", "camtoken"), rule("*", "master")],
        ..ActionAuth::default()
    });
    assert!(!auth.is_open(Action::Publish));
    assert!(auth.is_open(Action::Play), "play is configured separately");
    let pb = |name, q| auth.check_credentials(&req(Action::Publish, name, q, None), NOW);
    assert_eq!(pb("cam1", Some("token=camtoken")), Ok(()));
    assert_eq!(pb("cam1", Some("token=master")), Ok(()));
    assert_eq!(pb("other", Some("token=master")), Ok(()));
    assert_eq!(
        pb("other", Some("token=camtoken")),
        Err(DenyReason::BadToken),
        "a token only opens the streams its rule matches"
    );
    assert_eq!(pb("cam1", Some("token=wrong")), Err(DenyReason::BadToken));
    assert_eq!(pb("cam1", Some("token=")), Err(DenyReason::BadToken));
    assert_eq!(
        pb("cam1", Some("token=camtoken2")),
        Err(DenyReason::BadToken)
    );
    assert_eq!(pb("cam1", Some("token=camtoke")), Err(DenyReason::BadToken));
    assert_eq!(pb("cam1", None), Err(DenyReason::MissingCredentials));
    assert_eq!(
        pb("cam1", Some("foo=bar")),
        Err(DenyReason::MissingCredentials)
    );
    // Signature parameters without a secret are not credentials.
    assert_eq!(
        pb("cam1", Some("expires=1&sign=00")),
        Err(DenyReason::MissingCredentials)
    );
    assert_eq!(
        auth.check_credentials(&req(Action::Play, "cam1", None, None), NOW),
        Ok(())
    );
}

#[test]
fn token_rules_scope_by_pattern() {
    let auth = with_publish(ActionAuth {
        tokens: vec![rule("live/private-*", "p")],
        ..ActionAuth::default()
    });
    let pb = |name, q| auth.check_credentials(&req(Action::Publish, name, q, None), NOW);
    assert_eq!(pb("public", None), Ok(()), "no rule matches: open");
    assert_eq!(pb("public", Some("token=anything")), Ok(()));
    assert_eq!(pb("private-1", None), Err(DenyReason::MissingCredentials));
    assert_eq!(pb("private-1", Some("token=p")), Ok(()));

    // With a secret, streams no rule matches need a signature.
    let auth = with_publish(ActionAuth {
        tokens: vec![rule("live/private-*", "p")],
        secret: Some("k".into()),
        ..ActionAuth::default()
    });
    let pb = |name, q| auth.check_credentials(&req(Action::Publish, name, q, None), NOW);
    assert_eq!(pb("public", None), Err(DenyReason::MissingCredentials));
    assert_eq!(pb("public", Some("token=p")), Err(DenyReason::BadToken));
    let sig = Signer::new("k").unwrap().sign("live/public", NOW);
    let q = format!("expires={NOW}&sign={sig}");
    assert_eq!(pb("public", Some(&q)), Ok(()));
}

#[test]
fn connect_query_fallback_and_precedence() {
    let auth = with_publish(ActionAuth {
        tokens: vec![rule("*", "t")],
        ..ActionAuth::default()
    });
    let pb = |q, cq| auth.check_credentials(&req(Action::Publish, "cam", q, cq), NOW);
    assert_eq!(pb(None, Some("token=t")), Ok(()));
    assert_eq!(pb(Some("x=1"), Some("token=t")), Ok(()));
    assert_eq!(pb(None, Some("token=u")), Err(DenyReason::BadToken));
    // The stream-name query wins.
    assert_eq!(pb(Some("token=t"), Some("token=u")), Ok(()));
    assert_eq!(
        pb(Some("token=u"), Some("token=t")),
        Err(DenyReason::BadToken)
    );
}

#[test]
fn percent_decoded_tokens() {
    let auth = with_publish(ActionAuth {
        tokens: vec![rule("*", "a/b+c=")],
        ..ActionAuth::default()
    });
    let pb = |q| auth.check_credentials(&req(Action::Publish, "cam", Some(q), None), NOW);
    assert_eq!(pb("token=a%2Fb%2Bc%3D"), Ok(()));
    assert_eq!(pb("token=a/b+c="), Ok(()));
    assert_eq!(pb("token=a%2fb+c%3d"), Ok(()));
    assert_eq!(pb("token=a%2Fb%20c%3D"), Err(DenyReason::BadToken));
    // An over-long query is ignored as a whole.
    let long = format!("token=a/b+c=&pad={}", "x".repeat(5000));
    assert_eq!(pb(&long), Err(DenyReason::MissingCredentials));
}

#[test]
fn signed_urls() {
    let auth = Auth::from_config(&AuthConfig {
        play: ActionAuth {
            secret: Some("s3cret".into()),
            ..ActionAuth::default()
        },
        ..AuthConfig::default()
    })
    .unwrap();
    assert!(auth.is_open(Action::Publish));
    let pl = |name, q: &str| auth.check_credentials(&req(Action::Play, name, Some(q), None), NOW);
    // Vector from `printf '%s' "live/cam1:1700000000" | openssl dgst -sha256 -hmac s3cret`.
    let sig = "e127aab1b503e8c3b01f704a45db0fb7c8ffeb7835053cf77685ea88a7d06fc9";
    let good = format!("expires=1700000000&sign={sig}");
    assert_eq!(pl("cam1", &good), Ok(()));
    assert_eq!(
        auth.check_credentials(&req(Action::Play, "cam1", Some(&good), None), NOW + 1),
        Err(DenyReason::Expired)
    );
    assert_eq!(
        pl("cam2", &good),
        Err(DenyReason::BadSignature),
        "tampered stream"
    );
    let later = format!("expires=1700000099&sign={sig}");
    assert_eq!(
        pl("cam1", &later),
        Err(DenyReason::BadSignature),
        "tampered expiry"
    );
    let wrong = format!("expires=1700000000&sign={}", "ab".repeat(32));
    assert_eq!(pl("cam1", &wrong), Err(DenyReason::BadSignature));
    for q in [
        format!("expires=1700000000&sign={}", &sig[..63]),
        format!("expires=1700000000&sign=x{}", &sig[1..]),
        "expires=1700000000&sign=".to_string(),
        "expires=1700000000".to_string(),
        format!("sign={sig}"),
        format!("expires=soon&sign={sig}"),
    ] {
        assert_eq!(pl("cam1", &q), Err(DenyReason::BadSignature), "{q}");
    }
    assert_eq!(pl("cam1", "a=b"), Err(DenyReason::MissingCredentials));
    // In the connect query too, and a wrong token with a valid signature still passes.
    assert_eq!(
        auth.check_credentials(&req(Action::Play, "cam1", None, Some(&good)), NOW),
        Ok(())
    );
    assert_eq!(pl("cam1", &format!("token=nope&{good}")), Ok(()));
    assert_eq!(pl("cam1", "token=nope"), Err(DenyReason::BadToken));
}

#[test]
fn logged_stream_names_are_escaped_and_capped() {
    let mut r = req(Action::Play, "a\nb\u{1b}[31m", None, None);
    assert_eq!(loggable_stream(&r), "live/a\\nb\\u{1b}[31m");
    r.name = "é".repeat(1000);
    let s = loggable_stream(&r);
    assert!(s.len() <= 256 + '…'.len_utf8() && s.ends_with('…'), "{s}");
}

/// Attacker-controlled queries: random bytes drawn from the characters that matter to the
/// parser (`%`, `=`, `&`, `?`, hex digits, multi-byte UTF-8) never panic and never pass.
#[test]
fn fuzzed_queries_never_panic_or_pass() {
    let auth = with_publish(ActionAuth {
        tokens: vec![rule("live/*", "the-token")],
        secret: Some("k3y".into()),
        callback: None,
    });
    let alphabet: Vec<char> = "%=&?+tokenexpiressign0123456789abcdefABCDEF-_.é\u{0}\u{7f}"
        .chars()
        .collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..20_000 {
        let len = (next() % 200) as usize + if i % 100 == 0 { 5000 } else { 0 };
        let q: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let (sq, cq) = if i % 2 == 0 {
            (Some(q.as_str()), None)
        } else {
            (None, Some(q.as_str()))
        };
        let r = auth.check_credentials(&req(Action::Publish, "cam", sq, cq), NOW);
        assert!(r.is_err(), "random query {q:?} passed");
    }
}
