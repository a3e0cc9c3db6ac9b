//! Static checks of everything under deploy/: the compose topology, Prometheus and Grafana
//! provisioning, the Kubernetes manifests, the systemd unit, the Dockerfile and the OpenAPI
//! contract parse and agree with each other, and every command line they carry (compose
//! `command`, the Deployment's `args` with its ConfigMap's config.toml, the unit's
//! `ExecStart`, the image's default CMD) is accepted by the real binary's
//! `--check-config`. No container engine or cluster is needed; promtool, kubectl and
//! systemd-analyze are used when installed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::manifests::{
    check_config, deploy, flag_value, is_subset, port_of, read, repo, s, seq, string_map, strings,
    tmp_file, yaml, K8s,
};
use serde_yaml::Value;

// ------------------------------------------------------------------ docker compose

fn compose() -> Value {
    yaml(&deploy("docker-compose.yml"))
}

/// Compose services that run rtmp-edge (built from our Dockerfile): name -> service.
fn rtmp_services(c: &Value) -> BTreeMap<String, Value> {
    c["services"]
        .as_mapping()
        .expect("compose has services")
        .iter()
        .filter(|(_, svc)| !svc["build"].is_null())
        .map(|(k, v)| (s(k).to_string(), v.clone()))
        .collect()
}

/// The container port of a compose `ports` entry ("1935:1935", "127.0.0.1:8081:8080").
fn container_port(entry: &Value) -> u16 {
    let text = match entry {
        Value::String(t) => t.clone(),
        Value::Number(n) => n.to_string(),
        Value::Mapping(_) => return entry["target"].as_u64().expect("long port syntax") as u16,
        other => panic!("bad ports entry {other:?}"),
    };
    text.split('/')
        .next()
        .and_then(|t| t.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad ports entry {text:?}"))
}

/// A compose bind mount "./a/b:/target:ro" as (host path resolved from deploy/, target).
fn bind_mounts(svc: &Value) -> Vec<(PathBuf, String)> {
    seq(&svc["volumes"])
        .iter()
        .filter_map(|v| {
            let v = v.as_str()?;
            let mut parts = v.split(':');
            let (src, dst) = (parts.next()?, parts.next()?);
            (src.starts_with("./") || src.starts_with("../"))
                .then(|| (deploy(src.trim_start_matches("./")), dst.to_string()))
        })
        .collect()
}

#[test]
fn compose_services_builds_and_mounts() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    for name in ["origin", "edge1", "edge2", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "compose lacks service {name}");
    }
    let rtmp = rtmp_services(&c);
    assert_eq!(
        rtmp.keys().map(String::as_str).collect::<Vec<_>>(),
        ["edge1", "edge2", "origin"],
        "the rtmp-edge services are the ones with a build"
    );
    for (name, svc) in &rtmp {
        let ctx = s(&svc["build"]["context"]);
        assert_eq!(ctx, "..", "{name}: build context is the repo root");
        let dockerfile = s(&svc["build"]["dockerfile"]);
        assert_eq!(dockerfile, "deploy/docker/Dockerfile", "{name}");
        assert!(
            deploy(ctx).join(dockerfile).is_file(),
            "{name}: no {dockerfile}"
        );
        // The data plane needs io_uring, which Docker's default seccomp profile blocks.
        assert!(
            strings(&svc["security_opt"])
                .iter()
                .any(|o| o.starts_with("seccomp")),
            "{name}: needs a seccomp profile that allows io_uring"
        );
        let args = strings(&svc["command"]);
        let listen = flag_value(&args, "--listen").expect("--listen");
        let http = flag_value(&args, "--http").expect("--http");
        let published: Vec<u16> = seq(&svc["ports"]).iter().map(container_port).collect();
        assert!(
            published.contains(&port_of(listen)),
            "{name}: RTMP port {listen} not published: {published:?}"
        );
        // The healthcheck asks this service's own control port for /readyz.
        let health = strings(&svc["healthcheck"]["test"]).join(" ");
        assert!(
            health.contains(&format!("/dev/tcp/127.0.0.1/{}", port_of(http)))
                && health.contains("/readyz"),
            "{name}: healthcheck {health:?} does not probe /readyz on {http}"
        );
    }
    // Edges pull from the origin service on its RTMP port.
    let origin_listen =
        port_of(flag_value(&strings(&rtmp["origin"]["command"]), "--listen").unwrap());
    for edge in ["edge1", "edge2"] {
        let args = strings(&rtmp[edge]["command"]);
        let url = flag_value(&args, "--origin").unwrap_or_else(|| panic!("{edge}: no --origin"));
        assert_eq!(
            url,
            format!("rtmp://origin:{origin_listen}/live"),
            "{edge}: origin URL"
        );
        assert!(
            seq(&rtmp[edge]["depends_on"])
                .iter()
                .any(|d| s(d) == "origin")
                || !rtmp[edge]["depends_on"]["origin"].is_null(),
            "{edge} should start after origin"
        );
    }

    // Prometheus reads the mounted file at the path its --config.file names.
    let prom = &services[&Value::from("prometheus")];
    let mounts = bind_mounts(prom);
    let (src, dst) = mounts
        .iter()
        .find(|(src, _)| src.ends_with("prometheus/prometheus.yml"))
        .expect("prometheus.yml is mounted");
    assert!(src.is_file(), "{} missing", src.display());
    assert_eq!(src, &deploy("prometheus/prometheus.yml"));
    let config_file = strings(&prom["command"])
        .iter()
        .find_map(|a| a.strip_prefix("--config.file=").map(str::to_string))
        .unwrap_or_else(|| "/etc/prometheus/prometheus.yml".into());
    assert_eq!(dst, &config_file, "mount target vs --config.file");

    // Grafana: provisioning mounted where Grafana looks; every mount source exists.
    let grafana = &services[&Value::from("grafana")];
    let mounts = bind_mounts(grafana);
    for (src, dst) in &mounts {
        assert!(
            src.exists(),
            "grafana mount {} -> {dst} missing",
            src.display()
        );
    }
    assert!(
        mounts
            .iter()
            .any(|(src, dst)| src == &deploy("grafana/provisioning")
                && dst == "/etc/grafana/provisioning"),
        "grafana provisioning mount: {mounts:?}"
    );
}

#[test]
fn compose_commands_pass_check_config() {
    let c = compose();
    for (name, svc) in rtmp_services(&c) {
        let args = strings(&svc["command"]);
        assert!(!args.is_empty(), "{name}: no command");
        check_config(&format!("compose service {name}"), &args);
    }
}

// ------------------------------------------------------------------ prometheus

fn prometheus() -> Value {
    yaml(&deploy("prometheus/prometheus.yml"))
}

#[test]
fn prometheus_scrapes_every_compose_rtmp_edge_on_its_http_port() {
    let c = compose();
    let rtmp = rtmp_services(&c);
    let p = prometheus();
    assert_eq!(s(&p["global"]["scrape_interval"]), "5s");
    let mut scraped = BTreeSet::new();
    // Labels the exporter puts on its own series: a target label of the same name would
    // rename them to exported_<name>.
    const SERIES_LABELS: [&str; 12] = [
        "shard",
        "role",
        "stream",
        "destination",
        "state",
        "reason",
        "kind",
        "action",
        "quantile",
        "le",
        "version",
        "instance",
    ];
    for job in seq(&p["scrape_configs"]) {
        let path = job["metrics_path"].as_str().unwrap_or("/metrics");
        for sc in seq(&job["static_configs"]) {
            for label in string_map(&sc["labels"]).keys() {
                assert!(
                    !SERIES_LABELS.contains(&label.as_str()),
                    "target label {label:?} collides with an rtmp-edge series label"
                );
            }
            for t in strings(&sc["targets"]) {
                let (host, port) = t.rsplit_once(':').expect("host:port target");
                let Some(svc) = rtmp.get(host) else { continue };
                let http = port_of(
                    flag_value(&strings(&svc["command"]), "--http")
                        .unwrap_or_else(|| panic!("{host}: no --http")),
                );
                assert_eq!(
                    port.parse::<u16>().unwrap(),
                    http,
                    "target {t} vs {host}'s --http port"
                );
                assert_eq!(path, "/metrics", "job {}", s(&job["job_name"]));
                scraped.insert(host.to_string());
            }
        }
    }
    assert_eq!(
        scraped,
        rtmp.keys().cloned().collect::<BTreeSet<_>>(),
        "every rtmp-edge service is scraped"
    );
}

#[test]
fn promtool_accepts_prometheus_config() {
    let Ok(out) = Command::new("promtool")
        .args(["check", "config"])
        .arg(deploy("prometheus/prometheus.yml"))
        .output()
    else {
        eprintln!("note: promtool not installed; skipping `promtool check config`");
        return;
    };
    assert!(
        out.status.success(),
        "promtool check config failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------------------ grafana

fn dashboard() -> serde_json::Value {
    let path = deploy("grafana/dashboards/rtmp-edge.json");
    serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(d: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

#[test]
fn grafana_provisioning_matches_compose_and_dashboard() {
    let c = compose();
    let ds = yaml(&deploy("grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(ds["apiVersion"].as_u64(), Some(1));
    let sources = seq(&ds["datasources"]);
    let prom = sources
        .iter()
        .find(|d| s(&d["type"]) == "prometheus")
        .expect("a prometheus datasource");
    assert_eq!(s(&prom["uid"]), "prometheus");
    // Its URL names the compose prometheus service on Prometheus' port.
    let url = s(&prom["url"]);
    assert_eq!(url, "http://prometheus:9090", "datasource url");
    assert!(c["services"]["prometheus"].is_mapping());

    let prov = yaml(&deploy("grafana/provisioning/dashboards/rtmp-edge.yml"));
    assert_eq!(prov["apiVersion"].as_u64(), Some(1));
    let provider = &seq(&prov["providers"])[0];
    assert_eq!(s(&provider["type"]), "file");
    let path = s(&provider["options"]["path"]);
    // The compose grafana service mounts deploy/grafana/dashboards at that path.
    let mounts = bind_mounts(&c["services"]["grafana"]);
    assert!(
        mounts
            .iter()
            .any(|(src, dst)| src == &deploy("grafana/dashboards") && dst == path),
        "dashboard provider path {path} is not where compose mounts the dashboards: {mounts:?}"
    );

    // Every datasource reference in the dashboard is that datasource.
    let d = dashboard();
    for p in panels(&d) {
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "prometheus", "panel {}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "prometheus", "panel {}", p["title"]);
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        assert_eq!(
            v["datasource"]["uid"], "prometheus",
            "variable {}",
            v["name"]
        );
    }
}

#[test]
fn dashboard_structure() {
    let d = dashboard();
    assert_eq!(d["uid"], "rtmp-edge");
    assert_eq!(d["schemaVersion"], 39);
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let vars = d["templating"]["list"].as_array().expect("templating");
    let instance = vars
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an instance variable");
    assert_eq!(instance["type"], "query");
    let q = instance["query"]["query"]
        .as_str()
        .or(instance["query"].as_str())
        .unwrap_or("");
    assert_eq!(q, "label_values(rtmp_viewers, instance)");
    assert_eq!(instance["definition"], q);

    let all = panels(&d);
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [i64; 4])> = Vec::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or("?").to_string();
        assert!(
            ids.insert(p["id"].as_i64().expect("panel id")),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_i64().expect("gridPos"));
        assert!(
            x >= 0 && w > 0 && h > 0 && x + w <= 24,
            "{title}: gridPos {g}"
        );
        for (other, [ox, oy, ow, oh]) in &boxes {
            let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
            assert!(!overlap, "panels {title:?} and {other:?} overlap");
        }
        boxes.push((title.clone(), [x, y, w, h]));
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no queries");
        let mut refs = BTreeSet::new();
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(!expr.is_empty(), "{title}: empty expr");
            assert!(refs.insert(t["refId"].as_str().unwrap()), "{title}: refIds");
            assert!(
                expr.contains("$instance"),
                "{title}: {expr} ignores the instance variable"
            );
            if p["type"] == "heatmap" {
                assert_eq!(t["format"], "heatmap", "{title}");
                assert!(
                    expr.contains("_bucket") && expr.contains("by (le)"),
                    "{title}"
                );
            }
        }
    }
    // Every latency family has a heatmap and a p50/p99 panel.
    for fam in [
        "rtmp_cross_shard_latency_seconds",
        "rtmp_fanout_latency_seconds",
        "rtmp_push_latency_seconds",
        "rtmp_time_to_first_frame_seconds",
    ] {
        let uses = |kind: &str, needle: &str| {
            all.iter().any(|p| {
                p["type"] == kind
                    && p["targets"].as_array().into_iter().flatten().any(|t| {
                        let e = t["expr"].as_str().unwrap_or("");
                        e.contains(&format!("{fam}_bucket")) && e.contains(needle)
                    })
            })
        };
        assert!(uses("heatmap", "sum by (le)"), "{fam}: no heatmap");
        assert!(
            uses("timeseries", "histogram_quantile(0.5,"),
            "{fam}: no p50"
        );
        assert!(
            uses("timeseries", "histogram_quantile(0.99,"),
            "{fam}: no p99"
        );
    }
}

// ------------------------------------------------------------------ kubernetes

fn k8s() -> K8s {
    K8s::load(&deploy("k8s"))
}

#[test]
fn k8s_deployment() {
    let k = k8s();
    let dep = k.workload("Deployment", "rtmp-edge");
    assert_eq!(dep.spec()["replicas"].as_u64(), Some(2));
    dep.check_pod();
}

#[test]
fn k8s_args_and_configmap_pass_check_config() {
    let k = k8s();
    let summary = k
        .workload("Deployment", "rtmp-edge")
        .check_args_and_config();
    eprintln!("{summary}");
}

#[test]
fn k8s_services_monitor_and_kustomization() {
    let k = k8s();
    let dep = k.workload("Deployment", "rtmp-edge");
    let pod = dep.pod_labels();
    let services = k.of_kind("Service");
    assert!(!services.is_empty(), "no Service");
    let mut exposed = BTreeMap::new();
    for svc in &services {
        assert!(
            is_subset(&string_map(&svc["spec"]["selector"]), &pod),
            "Service {} does not select the rtmp-edge pods",
            s(&svc["metadata"]["name"])
        );
        exposed.extend(k.check_service(svc, &dep));
    }
    assert_eq!(exposed.get("rtmp"), Some(&1935), "rtmp port: {exposed:?}");
    assert_eq!(exposed.get("http"), Some(&8080), "http port: {exposed:?}");
    let only = BTreeSet::from(["rtmp-edge".to_string()]);
    assert_eq!(k.check_monitors(&[dep]), only, "scraped");
    assert_eq!(k.check_pdbs(&[dep]), only, "under a PodDisruptionBudget");
    k.check_kustomization(&[]);
}

#[test]
fn k8s_probe_paths_are_in_the_openapi_contract() {
    let k = k8s();
    let dep = k.workload("Deployment", "rtmp-edge");
    let api = openapi();
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = s(&dep.container()[probe]["httpGet"]["path"]);
        let op = &api["paths"][path]["get"];
        assert!(
            op.is_mapping(),
            "{probe} path {path} is not in openapi.yaml"
        );
        assert!(op["responses"]["200"].is_mapping(), "{path}: no 200");
    }
}

// ------------------------------------------------------------------ systemd

#[test]
fn systemd_unit() {
    let path = deploy("systemd/rtmp-edge.service");
    let text = read(&path);
    let mut section = String::new();
    let mut keys: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_string();
            continue;
        }
        let (k, v) = line.split_once('=').expect("key=value");
        keys.entry((section.clone(), k.trim().to_string()))
            .or_default()
            .push(v.trim().to_string());
    }
    let get = |k: &str| -> &str {
        keys.get(&("Service".to_string(), k.to_string()))
            .and_then(|v| v.last())
            .map(String::as_str)
            .unwrap_or_else(|| panic!("[Service] {k} missing"))
    };
    assert_eq!(get("StateDirectory"), "rtmp-edge");
    assert_eq!(get("ExecReload"), "/bin/kill -HUP $MAINPID");
    for hardening in [
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
    ] {
        assert!(
            !get(hardening).is_empty() && get(hardening) != "no",
            "{hardening}"
        );
    }
    let exec: Vec<String> = get("ExecStart")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(exec[0], "/usr/local/bin/rtmp-edge");
    let args = exec[1..].to_vec();
    if let Some(dir) = flag_value(&args, "--record-dir") {
        assert!(
            dir.starts_with("/var/lib/rtmp-edge"),
            "recordings belong in the StateDirectory, not {dir}"
        );
    }
    check_config("systemd ExecStart", &args);

    // systemd's own parser, with ExecStart pointed at the binary under test.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let unit = tmp_file(
            "rtmp-edge.service",
            &text.replace("/usr/local/bin/rtmp-edge", env!("CARGO_BIN_EXE_rtmp-edge")),
        );
        let out = common::run_with_timeout(
            Command::new("systemd-analyze").arg("verify").arg(&unit),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let _ = std::fs::remove_file(&unit);
        let ours: Vec<_> = stderr
            .lines()
            .filter(|l| l.contains("rtmp-edge.service"))
            .collect();
        assert!(
            out.status.success() && ours.is_empty(),
            "systemd-analyze verify: {stderr}"
        );
    } else {
        eprintln!("note: systemd-analyze not installed; skipping `systemd-analyze verify`");
    }
}

// ------------------------------------------------------------------ Dockerfile

/// Dockerfile instructions as (INSTRUCTION, arguments), continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = read(&deploy("docker/Dockerfile"));
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if t.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (ins, rest) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
        out.push((ins.to_ascii_uppercase(), rest.trim().to_string()));
        cur.clear();
    }
    out
}

#[test]
fn dockerfile_is_multi_stage_and_ships_the_binary() {
    let ins = dockerfile();
    let all = |name: &str| -> Vec<&str> {
        ins.iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let froms = all("FROM");
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(
        froms[0].contains("rust:") && froms[0].contains("bookworm"),
        "{froms:?}"
    );
    assert!(
        froms.last().unwrap().starts_with("debian:bookworm-slim"),
        "{froms:?}"
    );
    let builder = froms[0]
        .split_whitespace()
        .skip_while(|w| !w.eq_ignore_ascii_case("AS"))
        .nth(1)
        .expect("the build stage is named");
    assert!(
        all("RUN").iter().any(|r| r.contains("cargo build")
            && r.contains("--release")
            && r.contains("--locked")
            && r.contains("--bin rtmp-edge")),
        "cargo build --release --locked --bin rtmp-edge"
    );
    assert!(
        all("COPY")
            .iter()
            .any(|c| c.contains(&format!("--from={builder}"))
                && c.contains("rtmp-edge")
                && c.ends_with("/usr/local/bin/rtmp-edge")),
        "the binary is copied from {builder}"
    );
    let ignore = read(&deploy("docker/Dockerfile.dockerignore"));
    for c in all("COPY").iter().filter(|c| !c.starts_with("--from")) {
        let parts: Vec<&str> = c
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        for src in &parts[..parts.len() - 1] {
            assert!(repo().join(src).exists(), "COPY source {src} missing");
            let src = src.trim_end_matches('/');
            assert!(
                ignore
                    .lines()
                    .any(|l| l.trim().trim_end_matches('/') == format!("!{src}")),
                "COPY source {src} is excluded by Dockerfile.dockerignore"
            );
        }
    }
    let user = all("USER");
    let user = user.last().expect("USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "runs as {user}"
    );
    let exposed: BTreeSet<&str> = all("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .collect();
    assert!(
        exposed.contains("1935") && exposed.contains("8080"),
        "{exposed:?}"
    );
    let entry: Vec<String> =
        serde_json::from_str(all("ENTRYPOINT").last().expect("ENTRYPOINT")).expect("exec form");
    assert_eq!(entry, ["/usr/local/bin/rtmp-edge"]);
    let cmd: Vec<String> =
        serde_json::from_str(all("CMD").last().expect("CMD")).expect("exec form");
    assert_eq!(flag_value(&cmd, "--listen"), Some("0.0.0.0:1935"));
    assert_eq!(flag_value(&cmd, "--http"), Some("0.0.0.0:8080"));
    check_config("Dockerfile CMD", &cmd);
}

// ------------------------------------------------------------------ OpenAPI

fn openapi() -> Value {
    yaml(&deploy("openapi.yaml"))
}

/// The target of a local `$ref` ("#/components/...").
fn lookup<'a>(api: &'a Value, r: &str) -> &'a Value {
    let mut cur = api;
    for part in r.trim_start_matches("#/").split('/') {
        cur = &cur[part];
    }
    assert!(!cur.is_null(), "dangling $ref {r}");
    cur
}

/// `v`, or what its `$ref` points at.
fn resolve<'a>(api: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => lookup(api, r),
        None => v,
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m {
                if s(k) == "$ref" {
                    out.push(s(val).to_string());
                }
                collect_refs(val, out);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}

#[test]
fn openapi_contract() {
    let api = openapi();
    assert!(s(&api["openapi"]).starts_with("3.0"), "OpenAPI 3.0");
    let mut refs = Vec::new();
    collect_refs(&api, &mut refs);
    assert!(!refs.is_empty());
    for r in &refs {
        assert!(r.starts_with("#/components/"), "non-local $ref {r}");
        lookup(&api, r);
    }

    // (path, method, statuses)
    let expected: &[(&str, &str, &[&str])] = &[
        ("/healthz", "get", &["200"]),
        ("/readyz", "get", &["200", "503"]),
        ("/metrics", "get", &["200"]),
        ("/api/v1/streams", "get", &["200", "401"]),
        ("/api/v1/streams/{key}", "get", &["200", "401", "404"]),
        ("/api/v1/streams/{key}", "delete", &["204", "401", "404"]),
        ("/api/v1/clients", "get", &["200", "401"]),
        ("/api/v1/clients/{id}", "get", &["200", "401", "404"]),
        ("/api/v1/clients/{id}", "delete", &["204", "401", "404"]),
        ("/api/v1/push", "get", &["200", "401"]),
        ("/api/v1/push", "post", &["201", "400", "401", "409"]),
        ("/api/v1/push/{id}", "get", &["200", "401", "404"]),
        ("/api/v1/push/{id}", "patch", &["200", "401", "404"]),
        ("/api/v1/push/{id}", "delete", &["204", "401", "404"]),
    ];
    let scheme = &api["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        (s(&scheme["type"]), s(&scheme["scheme"])),
        ("http", "bearer")
    );
    let global_security = !seq(&api["security"]).is_empty();
    for (path, method, statuses) in expected {
        let op = &api["paths"][*path][*method];
        assert!(op.is_mapping(), "{method} {path} missing");
        for st in *statuses {
            assert!(
                op["responses"][*st].is_mapping(),
                "{method} {path}: no {st} response"
            );
        }
        let secured = match op.get("security") {
            Some(v) => !seq(v).is_empty(),
            None => global_security,
        };
        if path.starts_with("/api/v1") {
            assert!(secured, "{method} {path} must require the bearer token");
            // Every error response is the JSON error object.
            for (st, resp) in op["responses"].as_mapping().unwrap() {
                if s(st).starts_with('4') || s(st).starts_with('5') {
                    let resp = resolve(&api, resp);
                    let schema = resolve(&api, &resp["content"]["application/json"]["schema"]);
                    assert!(
                        strings(&schema["required"]).contains(&"error".to_string()),
                        "{method} {path} {}: not the JSON error",
                        s(st)
                    );
                }
            }
        } else {
            assert!(
                !secured,
                "{method} {path} must not need a token (probes, Prometheus)"
            );
        }
    }
    // Path parameters are declared.
    for (path, item) in api["paths"].as_mapping().unwrap() {
        let path = s(path);
        for param in path.split('{').skip(1).filter_map(|p| p.split('}').next()) {
            let declared = seq(&item["parameters"])
                .iter()
                .map(|p| resolve(&api, p))
                .any(|p| s(&p["name"]) == param && s(&p["in"]) == "path");
            assert!(declared, "{path}: path parameter {param} not declared");
        }
    }

    let schemas = &api["components"]["schemas"];
    let required = |name: &str| -> BTreeSet<String> {
        strings(&schemas[name]["required"]).into_iter().collect()
    };
    let want =
        |fields: &[&str]| -> BTreeSet<String> { fields.iter().map(|f| f.to_string()).collect() };
    assert!(required("Stream").is_superset(&want(&[
        "key",
        "app",
        "name",
        "shard",
        "publisher",
        "video",
        "audio",
        "ingress_bitrate_bps",
        "viewers",
        "uptime_secs",
        "push"
    ])));
    assert!(schemas["Stream"]["properties"]["origin"].is_mapping());
    assert_eq!(
        required("PushSession"),
        want(&[
            "destination",
            "state",
            "bytes",
            "reconnects",
            "dropped_frames",
            "last_error"
        ])
    );
    assert_eq!(
        required("Client"),
        want(&[
            "id",
            "peer",
            "shard",
            "role",
            "stream",
            "connected_secs",
            "tls"
        ])
    );
    assert_eq!(
        required("Destination"),
        want(&["id", "url", "streams", "enabled", "source", "sessions"])
    );
    assert_eq!(required("NewDestination"), want(&["url"]));
    assert_eq!(required("Error"), want(&["error"]));
    let enum_of = |name: &str| strings(&schemas[name]["enum"]);
    assert_eq!(
        enum_of("PushState"),
        ["connecting", "live", "backing_off", "finished"]
    );
    assert_eq!(enum_of("ClientRole"), ["publisher", "player", "handshake"]);
    assert_eq!(enum_of("DestinationSource"), ["config", "flag", "api"]);
}
