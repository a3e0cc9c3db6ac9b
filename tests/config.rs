//! The real binary's configuration: `--check-config` on flags, environment variables and a
//! config file with `[server]`, `${VAR}` secrets, `[auth]`, `[[push]]` and `[record]`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The binary with a clean environment for the variables it reads. `--listen`/`--http` keep
/// a binary that does not know `--check-config` off the default ports.
fn edge() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rtmp-edge"));
    c.env_remove("RTMP_EDGE_CONFIG")
        .env_remove("RTMP_EDGE_API_TOKEN");
    c
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out: Output = run_with_timeout(cmd, Duration::from_secs(20));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const FULL: &str = r#"
[server]
listen = "127.0.0.1:19350"
shards = 2
http = "127.0.0.1:18080"
chunk-size = 8192
origin = ["rtmp://origin1:1935/live"]
api_token = "${RTMP_EDGE_IT_API_TOKEN}"

[auth.publish]
tokens = [{ match = "live/cam1", token = "${RTMP_EDGE_IT_CAM1}" }]

[[push]]
id = "youtube"
url = "rtmp://a.rtmp.youtube.com/live2"
key = "${RTMP_EDGE_IT_YT_KEY}"

[[push]]
id = "spare"
url = "rtmp://spare.example/live"
enabled = false

[record]
dir = "/tmp/rtmp-edge-it-rec"
mode = "none"
"#;

fn full_env(c: &mut Command) -> &mut Command {
    c.env("RTMP_EDGE_IT_API_TOKEN", "api-secret")
        .env("RTMP_EDGE_IT_CAM1", "cam1-secret")
        .env("RTMP_EDGE_IT_YT_KEY", "yt-secret")
}

#[test]
fn check_config_summarizes_the_file() {
    let path = write_config("full", FULL);
    let (code, out, err) = run(full_env(&mut edge())
        .arg("--config")
        .arg(&path)
        .arg("--check-config"));
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let line = out.trim();
    assert!(line.starts_with("config ok ("), "{line}");
    assert!(
        line.ends_with(
            "listen 127.0.0.1:19350, http 127.0.0.1:18080, shards 2, push destinations 1 (+1 disabled), auth publish on play off, api token set, media 0.0.0.0:8888 (hls on-demand), channels 0"
        ),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "{line}");
    // Secrets never appear.
    for secret in ["api-secret", "cam1-secret", "yt-secret"] {
        assert!(!out.contains(secret) && !err.contains(secret), "{out}{err}");
    }
}

#[test]
fn flags_and_env_beat_the_file() {
    let path = write_config("precedence", FULL);
    // RTMP_EDGE_CONFIG names the file; flags win over [server].
    let (code, out, err) = run(full_env(&mut edge()).env("RTMP_EDGE_CONFIG", &path).args([
        "--check-config",
        "--listen",
        "127.0.0.1:19351",
        "--http",
        "off",
    ]));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("listen 127.0.0.1:19351, http off, shards 2"),
        "{out}"
    );
    // An empty RTMP_EDGE_API_TOKEN overrides the file's token and is refused.
    let (code, _, err) = run(full_env(&mut edge())
        .env("RTMP_EDGE_API_TOKEN", "")
        .arg("--config")
        .arg(&path)
        .arg("--check-config"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("api-token"), "{err}");
    // Without the file, no token.
    let (code, out, err) = run(edge().args(["--check-config", "--shards", "1"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("shards 1, push destinations 0, auth publish off play off, api token unset"),
        "{out}"
    );
    let (code, out, _) = run(edge()
        .env("RTMP_EDGE_API_TOKEN", "x")
        .args(["--check-config"]));
    assert_eq!(code, Some(0));
    assert!(out.contains("api token set"), "{out}");
}

#[test]
fn check_config_errors_exit_2_naming_the_problem() {
    let path = write_config("full-missing-env", FULL);
    // A secret's variable is missing: named, never silently empty.
    let (code, out, err) = run(edge()
        .env("RTMP_EDGE_IT_API_TOKEN", "a")
        .env("RTMP_EDGE_IT_YT_KEY", "y")
        .arg("--config")
        .arg(&path)
        .arg("--check-config"));
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("RTMP_EDGE_IT_CAM1") && err.contains("full-missing-env.toml"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");

    for (name, text, needle) in [
        (
            "unknown-key",
            "[server]\nlisten_address = '0.0.0.0:1'\n",
            "[server] listen_address",
        ),
        (
            "wrong-type",
            "[server]\nshards = 'many'\n",
            "[server] shards",
        ),
        (
            "push-in-server",
            "[server]\npush = ['rtmp://a/b']\n",
            "[[push]]",
        ),
        (
            "dup-push-id",
            "[[push]]\nid = 'a'\nurl = 'rtmp://a/b'\n[[push]]\nid = 'a'\nurl = 'rtmp://c/d'\n",
            "\"a\"",
        ),
        (
            "bad-push-url",
            "[[push]]\nurl = 'http://a/b'\n",
            "push destination",
        ),
        ("bad-http", "[server]\nhttp = 'nowhere'\n", "--http"),
    ] {
        let path = write_config(name, text);
        let (code, out, err) = run(edge().arg("--config").arg(&path).arg("--check-config"));
        assert_eq!(code, Some(2), "{name}: {out}{err}");
        assert!(err.contains(needle), "{name}: {err}");
    }
    // Command-line errors keep clap's format and status.
    let (code, _, err) = run(edge().args(["--check-config", "--shards", "x"]));
    assert_eq!(code, Some(2));
    assert!(err.contains("--shards"), "{err}");
    let (code, _, err) = run(edge().args(["--config", "/nonexistent/edge.toml", "--check-config"]));
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent/edge.toml"), "{err}");
}

#[test]
fn help_still_prints() {
    let (code, out, _) = run(edge()
        .env("RTMP_EDGE_API_TOKEN", "do-not-show")
        .arg("--help"));
    assert_eq!(code, Some(0));
    assert!(
        out.contains("--check-config") && out.contains("RTMP_EDGE_API_TOKEN"),
        "{out}"
    );
    assert!(!out.contains("do-not-show"), "{out}");
    let (code, out, _) = run(edge().arg("--version"));
    assert_eq!(code, Some(0));
    assert!(out.starts_with("rtmp-edge "), "{out}");
}
