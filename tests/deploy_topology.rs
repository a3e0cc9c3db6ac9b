//! Static checks of the origin/edge topology in deploy/k8s/topology: the origin
//! StatefulSet, its headless Service and per-origin ingest LoadBalancers, the edge
//! Deployment whose origin list names those origins in failover order, the HPA with its
//! prometheus-adapter rule on a metric the binary really exports, the PodMonitor and the
//! PodDisruptionBudgets. Both tiers' args and config.toml go through the real binary's
//! `--check-config`, and the edge's origin list through the config loader the binary uses.
//! The pod-level checks are the ones tests/deploy.rs applies to deploy/k8s
//! (tests/common/manifests.rs). No cluster is needed; kubectl is used when installed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::manifests::{
    deploy, flag_value, is_subset, s, seq, string_map, strings, tmp_file, yaml_str, K8s, Workload,
};
use common::Server;
use serde_yaml::Value;

/// The label the StatefulSet controller puts on each pod: its name, `<statefulset>-<ordinal>`.
const POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
/// The adapter's rule lives in the adapter's config, not in this kustomization.
const ADAPTER_RULES: &str = "prometheus-adapter-rules.yaml";

fn topology() -> K8s {
    K8s::load(&deploy("k8s/topology"))
}

fn origin(k: &K8s) -> Workload<'_> {
    k.workload("StatefulSet", "rtmp-origin")
}

fn edge(k: &K8s) -> Workload<'_> {
    k.workload("Deployment", "rtmp-edge")
}

fn replicas(w: &Workload) -> u64 {
    w.spec()["replicas"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: replicas", w.name()))
}

/// The labels origin pod `ordinal` carries: its template's plus the controller's pod name.
fn origin_pod_labels(sts: &Workload, ordinal: u64) -> BTreeMap<String, String> {
    let mut labels = sts.pod_labels();
    labels.insert(POD_NAME.into(), format!("{}-{ordinal}", sts.name()));
    labels
}

/// The headless Service named by the StatefulSet's serviceName.
fn governing_service<'a>(k: &'a K8s, sts: &Workload) -> &'a Value {
    k.named("Service", s(&sts.spec()["serviceName"]))
}

/// The edge's origin URLs, as the binary assembles them from its args and config.toml:
/// the config loader and settings `main` uses, so the key, its format and the order are
/// the ones a running edge would pull with.
fn edge_origins(edge: &Workload) -> Vec<rtmp_edge::protocol::url::RtmpUrl> {
    let mut args = strings(&edge.container()["args"]);
    let (path, toml_text) = edge.config_toml();
    let tmp = tmp_file("edge-origins.toml", &toml_text);
    for a in args.iter_mut() {
        if *a == path {
            *a = tmp.display().to_string();
        }
    }
    let loaded = rtmp_edge::config::load_from(std::iter::once("rtmp-edge".to_string()).chain(args));
    let _ = std::fs::remove_file(&tmp);
    let (cfg, file) = loaded.unwrap_or_else(|e| panic!("edge config: {e}"));
    let listed = cfg.origin.len();
    let settings = rtmp_edge::config::Settings::assemble(&cfg, &file)
        .unwrap_or_else(|e| panic!("edge settings: {e}"));
    let origins = settings.origin.expect("the edge runs in edge mode").origins;
    // A URL the parser rejects is only logged and skipped when the server starts (and
    // --check-config does not look at them), so every listed one must parse here.
    assert_eq!(origins.len(), listed, "an origin URL does not parse");
    origins
}

#[test]
fn topology_documents_and_kustomization() {
    let k = topology();
    let kinds: BTreeSet<&str> = k.docs.iter().map(|(_, d)| s(&d["kind"])).collect();
    for kind in [
        "StatefulSet",
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PodMonitor",
    ] {
        assert!(kinds.contains(kind), "no {kind} in deploy/k8s/topology");
    }
    let mut names = BTreeSet::new();
    for (file, d) in k
        .docs
        .iter()
        .filter(|(_, d)| s(&d["kind"]) != "Kustomization")
    {
        let name = s(&d["metadata"]["name"]);
        assert!(!name.is_empty(), "{file}: a document without a name");
        assert!(
            names.insert((s(&d["kind"]), name)),
            "{file}: {} {name} twice",
            s(&d["kind"])
        );
    }
    k.check_kustomization(&[ADAPTER_RULES]);
}

#[test]
fn topology_pods_are_hardened_and_probed() {
    let k = topology();
    for w in [origin(&k), edge(&k)] {
        w.check_pod();
    }
    // The HPA owns the edges' replica count: a value here would reset it on every apply.
    assert!(
        edge(&k).spec()["replicas"].is_null(),
        "the edge Deployment must leave replicas to the HPA"
    );
}

#[test]
fn topology_args_and_configmaps_pass_check_config() {
    let k = topology();
    for w in [origin(&k), edge(&k)] {
        eprintln!("{}", w.check_args_and_config());
    }
}

#[test]
fn origin_statefulset_and_headless_service() {
    let k = topology();
    let sts = origin(&k);
    assert_eq!(replicas(&sts), 2, "a primary and a backup origin");
    let svc = governing_service(&k, &sts);
    assert_eq!(s(&svc["metadata"]["name"]), "rtmp-origin");
    assert_eq!(
        s(&svc["spec"]["clusterIP"]),
        "None",
        "the serviceName Service is headless: it names each pod"
    );
    assert_ne!(
        svc["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "a not-ready origin's name must not resolve, so edges skip it at once"
    );
    for ordinal in 0..replicas(&sts) {
        assert!(
            is_subset(
                &string_map(&svc["spec"]["selector"]),
                &origin_pod_labels(&sts, ordinal)
            ),
            "the headless Service does not select origin {ordinal}"
        );
    }
    let ports = k.check_service(svc, &sts);
    assert_eq!(ports.get("rtmp"), Some(&1935), "{ports:?}");
    // Recordings on a claim per ordinal: the template backs the mount of the record dir.
    let claims: BTreeSet<&str> = seq(&sts.spec()["volumeClaimTemplates"])
        .iter()
        .map(|c| s(&c["metadata"]["name"]))
        .collect();
    let dir = sts
        .config()
        .get("record")
        .and_then(|r| r.get("dir"))
        .and_then(|d| d.as_str())
        .expect("origins have a [record] dir")
        .to_string();
    let mount = seq(&sts.container()["volumeMounts"])
        .iter()
        .filter(|m| dir.starts_with(s(&m["mountPath"])))
        .max_by_key(|m| s(&m["mountPath"]).len())
        .expect("the record dir is mounted");
    assert!(
        claims.contains(s(&mount["name"])),
        "record dir {dir} is not on a volumeClaimTemplate: {claims:?}"
    );
    assert!(
        seq(&sts.pod()["volumes"])
            .iter()
            .all(|v| !claims.contains(s(&v["name"]))),
        "a pod volume shadows a claim template"
    );
}

#[test]
fn each_ingest_service_selects_one_existing_origin() {
    let k = topology();
    let sts = origin(&k);
    let n = replicas(&sts);
    let mut ingest = BTreeMap::new();
    for svc in k.of_kind("Service") {
        let name = s(&svc["metadata"]["name"]);
        let selector = string_map(&svc["spec"]["selector"]);
        if !selector.contains_key(POD_NAME) {
            continue;
        }
        let selected: Vec<u64> = (0..n)
            .filter(|&i| is_subset(&selector, &origin_pod_labels(&sts, i)))
            .collect();
        assert_eq!(
            selected.len(),
            1,
            "Service {name} must select exactly one existing origin (ordinals 0..{n}): {selector:?}"
        );
        assert_eq!(s(&svc["spec"]["type"]), "LoadBalancer", "Service {name}");
        let ports = k.check_service(svc, &sts);
        assert_eq!(ports.get("rtmp"), Some(&1935), "Service {name}: {ports:?}");
        assert_eq!(ports.len(), 1, "Service {name}: RTMP only");
        assert_eq!(name, format!("{}-{}-ingest", sts.name(), selected[0]));
        assert!(
            ingest.insert(selected[0], name).is_none(),
            "two ingest Services for origin {}",
            selected[0]
        );
    }
    assert_eq!(
        ingest.keys().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>(),
        "every origin gets a publisher ingest: {ingest:?}"
    );
}

#[test]
fn edge_origins_are_each_origin_in_order() {
    let k = topology();
    let sts = origin(&k);
    let headless = s(&governing_service(&k, &sts)["metadata"]["name"]);
    let rtmp_port = sts.container_port(&Value::from("rtmp")).unwrap();
    let e = edge(&k);
    assert!(
        flag_value(&strings(&e.container()["args"]), "--origin").is_none(),
        "an --origin arg would replace config.toml's whole list"
    );
    let origins = edge_origins(&e);
    let hosts: Vec<String> = origins.iter().map(|u| u.host.clone()).collect();
    let expected: Vec<String> = (0..replicas(&sts))
        .map(|i| format!("{}-{i}.{headless}", sts.name()))
        .collect();
    assert_eq!(
        hosts, expected,
        "the edge pulls from each origin by its stable name, primary (0) first"
    );
    for u in &origins {
        assert!(!u.tls, "{u:?}: the origins listen for plain RTMP");
        assert_eq!(u.port, rtmp_port, "{}: the origin's rtmp port", u.host);
        // The edge plays the player's stream name under this app: it must be the app
        // publishers use (`live`, as in compose), and the URL carries no stream key.
        assert_eq!(u.app, "live", "{}: app", u.host);
        assert_eq!(u.key, None, "{}: no stream key in an origin URL", u.host);
    }
    // The raw value is the `origin` key of [server], a list (a repeatable flag).
    let cfg = e.config();
    let raw = cfg.get("server").and_then(|s| s.get("origin"));
    assert_eq!(
        raw.and_then(|r| r.as_array()).map(Vec::len),
        Some(origins.len()),
        "[server] origin is a list"
    );
}

#[test]
fn services_select_their_tier() {
    let k = topology();
    let (sts, dep) = (origin(&k), edge(&k));
    let origin_pods: Vec<_> = (0..replicas(&sts))
        .map(|i| origin_pod_labels(&sts, i))
        .collect();
    let mut edge_ports = BTreeMap::new();
    for svc in k.of_kind("Service") {
        let name = s(&svc["metadata"]["name"]);
        let selector = string_map(&svc["spec"]["selector"]);
        let to_origin = origin_pods.iter().any(|p| is_subset(&selector, p));
        let to_edge = is_subset(&selector, &dep.pod_labels());
        assert!(
            to_origin != to_edge,
            "Service {name} must select one tier's pods: {selector:?}"
        );
        if to_edge {
            let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP");
            for (port_name, port) in k.check_service(svc, &dep) {
                edge_ports.insert((ty.to_string(), port_name), port);
            }
        } else {
            k.check_service(svc, &sts);
        }
    }
    // Players on a LoadBalancer; the control port on a ClusterIP only.
    assert_eq!(
        edge_ports.get(&("LoadBalancer".to_string(), "rtmp".to_string())),
        Some(&1935),
        "{edge_ports:?}"
    );
    assert_eq!(
        edge_ports.get(&("ClusterIP".to_string(), "http".to_string())),
        Some(&8080),
        "{edge_ports:?}"
    );
}

#[test]
fn monitors_and_disruption_budgets_cover_both_tiers() {
    let k = topology();
    let tiers = [origin(&k), edge(&k)];
    let both: BTreeSet<String> = tiers.iter().map(|w| w.name().to_string()).collect();
    assert_eq!(k.check_monitors(&tiers), both, "scraped");
    assert_eq!(k.check_pdbs(&tiers), both, "under a PodDisruptionBudget");
    // A drain may take the primary or the backup, never both.
    let sts = origin(&k);
    let pdb = k.named("PodDisruptionBudget", sts.name());
    let max_unavailable = pdb["spec"]["maxUnavailable"].as_u64();
    let min_available = pdb["spec"]["minAvailable"].as_u64();
    assert!(
        max_unavailable.is_some_and(|m| m >= 1 && m < replicas(&sts))
            || min_available.is_some_and(|m| m >= 1 && m < replicas(&sts)),
        "origin PodDisruptionBudget must keep one origin up and let one go"
    );
}

/// The `rules` entry of the adapter's config in prometheus-adapter-rules.yaml.
fn adapter_rule(k: &K8s) -> Value {
    let cm = k
        .docs
        .iter()
        .find(|(f, _)| f == ADAPTER_RULES)
        .map(|(_, d)| d)
        .expect("the adapter's ConfigMap");
    assert_eq!(s(&cm["kind"]), "ConfigMap");
    let config = yaml_str(s(&cm["data"]["config.yaml"]), "the adapter's config.yaml");
    let rules = seq(&config["rules"]);
    assert_eq!(rules.len(), 1, "one adapter rule");
    rules[0].clone()
}

/// Waits for `metric`'s series in a real server's scrape (gauges are exported once a
/// second) and returns them.
fn scraped_series(server: &Server, metric: &str) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.http_get("/metrics");
        assert_eq!(status, 200);
        let series: Vec<String> = body
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} "))
            })
            .map(String::from)
            .collect();
        if !series.is_empty() {
            return series;
        }
        assert!(Instant::now() < end, "no {metric} in the scrape:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn hpa_scales_the_edges_on_an_exported_metric() {
    let k = topology();
    let dep = edge(&k);
    let hpa = k.one("HorizontalPodAutoscaler");
    assert_eq!(s(&hpa["apiVersion"]), "autoscaling/v2");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(
        (
            s(&target["apiVersion"]),
            s(&target["kind"]),
            s(&target["name"])
        ),
        ("apps/v1", "Deployment", dep.name()),
        "the HPA scales the edge Deployment"
    );
    let min = hpa["spec"]["minReplicas"].as_u64().expect("minReplicas");
    let max = hpa["spec"]["maxReplicas"].as_u64().expect("maxReplicas");
    assert!(
        2 <= min && min < max,
        "minReplicas {min}, maxReplicas {max}"
    );
    let metrics = seq(&hpa["spec"]["metrics"]);
    assert_eq!(metrics.len(), 1, "one metric: viewers per pod");
    assert_eq!(s(&metrics[0]["type"]), "Pods");
    let pods = &metrics[0]["pods"];
    assert_eq!(s(&pods["target"]["type"]), "AverageValue");
    let per_pod: f64 = s(&pods["target"]["averageValue"])
        .parse()
        .expect("averageValue is a plain number of viewers");
    assert!(per_pod >= 100.0, "averageValue {per_pod}");
    // Viewers are long-lived connections: scaling down makes them reconnect, so it waits.
    let window = hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
        .as_u64()
        .expect("a scale-down stabilization window");
    assert!(window >= 600, "scale-down window {window} s would flap");

    // The metric is the adapter rule's, and the rule's series is one the binary exports.
    let rule = adapter_rule(&k);
    assert_eq!(
        s(&pods["metric"]["name"]),
        s(&rule["name"]["as"]),
        "HPA metric vs the adapter rule's `as`"
    );
    let series_query = s(&rule["seriesQuery"]);
    let (metric, matchers) = series_query
        .split_once('{')
        .expect("seriesQuery has label matchers");
    let matchers: BTreeSet<&str> = matchers.trim_end_matches('}').split(',').collect();
    for m in [r#"namespace!="""#, r#"pod!="""#] {
        assert!(
            matchers.contains(m),
            "seriesQuery lacks {m}: {series_query}"
        );
    }
    assert_eq!(
        s(&rule["name"]["matches"]),
        format!("^{metric}$"),
        "name.matches names the seriesQuery metric"
    );
    for label in ["namespace", "pod"] {
        assert_eq!(
            s(&rule["resources"]["overrides"][label]["resource"]),
            label,
            "resources.overrides.{label}"
        );
    }
    let query = s(&rule["metricsQuery"]);
    assert_eq!(
        query.split_whitespace().collect::<String>(),
        "sum(<<.Series>>{<<.LabelMatchers>>})by(<<.GroupBy>>)",
        "metricsQuery sums a pod's series"
    );
    let server = Server::start(&["--shards", "2"]);
    let series = scraped_series(&server, metric);
    // Per shard, hence the sum per pod.
    assert!(
        series.iter().all(|l| l.contains("shard=\"")),
        "{metric} is per shard: {series:?}"
    );
    assert_eq!(series.len(), 2, "one {metric} series per shard: {series:?}");
}
