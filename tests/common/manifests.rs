//! Reading the files under deploy/: YAML documents and value accessors, the real binary's
//! `--check-config`, and the Kubernetes manifests of a kustomization directory with the
//! checks every rtmp-edge pod spec, Service and monitor must pass (tests/deploy.rs for
//! deploy/k8s, tests/deploy_topology.rs for deploy/k8s/topology).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// One YAML document, with `<<` merge keys applied (compose's x- anchors).
pub fn yaml(path: &Path) -> Value {
    let mut v = yaml_str(&read(path), &path.display().to_string());
    v.apply_merge()
        .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
    v
}

/// One YAML document from text; `what` names it in the message.
pub fn yaml_str(text: &str, what: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{what} is not valid YAML: {e}"))
}

/// Every non-empty document of a (possibly multi-document) YAML file.
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

pub fn strings(v: &Value) -> Vec<String> {
    seq(v)
        .iter()
        .map(|x| match x {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => panic!("expected a scalar, found {other:?}"),
        })
        .collect()
}

/// A mapping of string keys to string values (labels, selectors).
pub fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (s(k).to_string(), s(v).to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A non-empty selector all of whose labels `big` has.
pub fn is_subset(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    !small.is_empty() && small.iter().all(|(k, v)| big.get(k) == Some(v))
}

/// The value of `--flag value` or `--flag=value` in an argument list.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&eq)
        }
    })
}

pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// Runs the real binary with `args` plus `--check-config`; panics with its output unless it
/// exits 0. `what` names the source of the arguments in the message.
pub fn check_config(what: &str, args: &[String]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtmp-edge"));
    cmd.args(args)
        .arg("--check-config")
        .env_remove("RTMP_EDGE_API_TOKEN")
        .env_remove("RTMP_EDGE_CONFIG");
    let out = super::run_with_timeout(&mut cmd, Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: `rtmp-edge {} --check-config` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A file in the target's temp dir, unique to this process and `name`.
pub fn tmp_file(name: &str, contents: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("deploy-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

/// The Kubernetes manifests of one directory (not its subdirectories).
pub struct K8s {
    pub dir: PathBuf,
    /// (file name, document)
    pub docs: Vec<(String, Value)>,
}

impl K8s {
    /// Every document of every .yaml/.yml file in `dir`; each must have apiVersion and kind.
    pub fn load(dir: &Path) -> K8s {
        let mut docs = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            for d in yaml_docs(&f) {
                assert!(
                    d["apiVersion"].is_string() && d["kind"].is_string(),
                    "{name}: a document without apiVersion/kind"
                );
                docs.push((name.clone(), d));
            }
        }
        K8s {
            dir: dir.to_path_buf(),
            docs,
        }
    }

    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs
            .iter()
            .filter(|(_, d)| s(&d["kind"]) == kind)
            .map(|(_, d)| d)
            .collect()
    }

    pub fn one(&self, kind: &str) -> &Value {
        let all = self.of_kind(kind);
        assert_eq!(all.len(), 1, "expected one {kind}");
        all[0]
    }

    pub fn named(&self, kind: &str, name: &str) -> &Value {
        self.of_kind(kind)
            .into_iter()
            .find(|d| s(&d["metadata"]["name"]) == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    /// The Deployment or StatefulSet `name`.
    pub fn workload(&self, kind: &str, name: &str) -> Workload<'_> {
        assert!(["Deployment", "StatefulSet"].contains(&kind), "{kind}");
        Workload {
            k8s: self,
            doc: self.named(kind, name),
        }
    }

    /// The kustomization.yaml lists exactly the other files, except `not_resources` (which
    /// must exist); `kubectl kustomize` builds it when kubectl is installed.
    pub fn check_kustomization(&self, not_resources: &[&str]) {
        let kz = self.dir.join("kustomization.yaml");
        let listed: BTreeSet<String> = strings(&yaml(&kz)["resources"]).into_iter().collect();
        let files: BTreeSet<String> = self.docs.iter().map(|(f, _)| f.clone()).collect();
        for f in not_resources {
            assert!(files.contains(*f), "{f} is not in {}", self.dir.display());
        }
        let expected: BTreeSet<String> = files
            .into_iter()
            .filter(|f| f != "kustomization.yaml" && !not_resources.contains(&f.as_str()))
            .collect();
        assert_eq!(
            listed,
            expected,
            "kustomization resources vs files in {}",
            self.dir.display()
        );
        match Command::new("kubectl")
            .arg("version")
            .arg("--client")
            .output()
        {
            Ok(o) if o.status.success() => {
                let out = super::run_with_timeout(
                    Command::new("kubectl").arg("kustomize").arg(&self.dir),
                    Duration::from_secs(30),
                );
                assert!(
                    out.status.success(),
                    "kubectl kustomize {} failed: {}",
                    self.dir.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            _ => eprintln!("note: kubectl not installed; skipping `kubectl kustomize`"),
        }
    }

    /// Checks `svc`'s ports against the workload it selects (every target is a container
    /// port; the control port stays off load balancers; a LoadBalancer or NodePort chooses
    /// its externalTrafficPolicy) and returns them by name.
    pub fn check_service(&self, svc: &Value, w: &Workload) -> BTreeMap<String, u16> {
        let name = s(&svc["metadata"]["name"]);
        let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP");
        if ty == "LoadBalancer" || ty == "NodePort" {
            assert!(
                svc["spec"]["externalTrafficPolicy"].is_string(),
                "Service {name}: choose externalTrafficPolicy explicitly"
            );
        }
        let mut exposed = BTreeMap::new();
        for p in seq(&svc["spec"]["ports"]) {
            let target = if p["targetPort"].is_null() {
                &p["port"]
            } else {
                &p["targetPort"]
            };
            let port = w.container_port(target).unwrap_or_else(|| {
                panic!(
                    "Service {name}: targetPort {target:?} is no container port of {}",
                    w.name()
                )
            });
            // The control port (metrics and the API) stays off public load balancers.
            assert!(
                !(port == 8080 && ty == "LoadBalancer"),
                "Service {name} exposes the control port on a LoadBalancer"
            );
            exposed.insert(s(&p["name"]).to_string(), port);
        }
        exposed
    }

    /// Checks every ServiceMonitor and PodMonitor: each scrapes /metrics on the control
    /// port (8080) of the workloads it reaches. Returns the names of the workloads scraped.
    pub fn check_monitors(&self, workloads: &[Workload]) -> BTreeSet<String> {
        let monitors: Vec<_> = self
            .of_kind("ServiceMonitor")
            .into_iter()
            .chain(self.of_kind("PodMonitor"))
            .collect();
        assert!(!monitors.is_empty(), "no ServiceMonitor or PodMonitor");
        let services = self.of_kind("Service");
        let mut scraped = BTreeSet::new();
        for m in monitors {
            let mname = s(&m["metadata"]["name"]);
            assert_eq!(s(&m["apiVersion"]), "monitoring.coreos.com/v1");
            let selector = string_map(&m["spec"]["selector"]["matchLabels"]);
            if s(&m["kind"]) == "PodMonitor" {
                let selected: Vec<_> = workloads
                    .iter()
                    .filter(|w| is_subset(&selector, &w.pod_labels()))
                    .collect();
                assert!(!selected.is_empty(), "PodMonitor {mname} selects no pod");
                let endpoints = seq(&m["spec"]["podMetricsEndpoints"]);
                assert!(!endpoints.is_empty(), "PodMonitor {mname}: no endpoints");
                for w in selected {
                    for e in endpoints {
                        assert_eq!(w.container_port(&e["port"]), Some(8080), "{mname}");
                        assert_eq!(e["path"].as_str().unwrap_or("/metrics"), "/metrics");
                    }
                    scraped.insert(w.name().to_string());
                }
                continue;
            }
            let matched: Vec<_> = services
                .iter()
                .filter(|svc| is_subset(&selector, &string_map(&svc["metadata"]["labels"])))
                .collect();
            assert!(
                !matched.is_empty(),
                "ServiceMonitor {mname} selects no Service: {selector:?}"
            );
            let endpoints = seq(&m["spec"]["endpoints"]);
            assert!(
                !endpoints.is_empty(),
                "ServiceMonitor {mname}: no endpoints"
            );
            for svc in matched {
                let sname = s(&svc["metadata"]["name"]);
                let w = workloads
                    .iter()
                    .find(|w| is_subset(&string_map(&svc["spec"]["selector"]), &w.pod_labels()))
                    .unwrap_or_else(|| panic!("Service {sname} selects no workload"));
                for e in endpoints {
                    assert_eq!(e["path"].as_str().unwrap_or("/metrics"), "/metrics");
                    let port = s(&e["port"]);
                    let p = seq(&svc["spec"]["ports"])
                        .iter()
                        .find(|p| s(&p["name"]) == port)
                        .unwrap_or_else(|| panic!("Service {sname} has no port named {port}"));
                    let target = if p["targetPort"].is_null() {
                        &p["port"]
                    } else {
                        &p["targetPort"]
                    };
                    assert_eq!(w.container_port(target), Some(8080), "scraped port");
                }
                scraped.insert(w.name().to_string());
            }
        }
        scraped
    }

    /// Every PodDisruptionBudget selects the pods of one of `workloads`; returns their names.
    pub fn check_pdbs(&self, workloads: &[Workload]) -> BTreeSet<String> {
        let mut covered = BTreeSet::new();
        for pdb in self.of_kind("PodDisruptionBudget") {
            let selector = string_map(&pdb["spec"]["selector"]["matchLabels"]);
            let w = workloads
                .iter()
                .find(|w| is_subset(&selector, &w.pod_labels()))
                .unwrap_or_else(|| {
                    panic!(
                        "PodDisruptionBudget {} selects no pods",
                        s(&pdb["metadata"]["name"])
                    )
                });
            covered.insert(w.name().to_string());
        }
        covered
    }
}

/// A Deployment or StatefulSet running rtmp-edge.
#[derive(Clone, Copy)]
pub struct Workload<'a> {
    pub k8s: &'a K8s,
    pub doc: &'a Value,
}

impl<'a> Workload<'a> {
    pub fn name(&self) -> &'a str {
        s(&self.doc["metadata"]["name"])
    }

    pub fn spec(&self) -> &'a Value {
        &self.doc["spec"]
    }

    pub fn pod(&self) -> &'a Value {
        &self.doc["spec"]["template"]["spec"]
    }

    pub fn pod_labels(&self) -> BTreeMap<String, String> {
        string_map(&self.doc["spec"]["template"]["metadata"]["labels"])
    }

    pub fn container(&self) -> &'a Value {
        seq(&self.pod()["containers"])
            .iter()
            .find(|c| s(&c["name"]) == "rtmp-edge")
            .unwrap_or_else(|| panic!("{}: no container named rtmp-edge", self.name()))
    }

    /// Container port by name or number -> number.
    pub fn container_port(&self, port: &Value) -> Option<u16> {
        seq(&self.container()["ports"])
            .iter()
            .find(|p| match port {
                Value::String(name) => s(&p["name"]) == name,
                Value::Number(n) => p["containerPort"].as_u64() == n.as_u64(),
                _ => false,
            })
            .and_then(|p| p["containerPort"].as_u64())
            .map(|p| p as u16)
    }

    /// Volume names: the pod's volumes and, for a StatefulSet, its claim templates.
    fn volumes(&self) -> BTreeSet<&'a str> {
        seq(&self.pod()["volumes"])
            .iter()
            .chain(seq(&self.spec()["volumeClaimTemplates"]))
            .map(|v| {
                if v["metadata"].is_mapping() {
                    s(&v["metadata"]["name"])
                } else {
                    s(&v["name"])
                }
            })
            .collect()
    }

    /// The --config path from the container args, and the ConfigMap file mounted there.
    pub fn config_toml(&self) -> (String, String) {
        let c = self.container();
        let args = strings(&c["args"]);
        let path = flag_value(&args, "--config")
            .expect("container args carry --config")
            .to_string();
        let (dir, file) = path.rsplit_once('/').unwrap();
        let mount = seq(&c["volumeMounts"])
            .iter()
            .find(|m| {
                let p = s(&m["mountPath"]);
                p == dir || (p == path && m["subPath"].is_string())
            })
            .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
        let vol = seq(&self.pod()["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume exists");
        let cm_name = s(&vol["configMap"]["name"]);
        assert!(!cm_name.is_empty(), "{dir} is not a ConfigMap volume");
        // The key that lands as `file` (items remap keys to paths).
        let key = match mount["subPath"].as_str() {
            Some(sub) => sub.to_string(),
            None => seq(&vol["configMap"]["items"])
                .iter()
                .find(|i| s(&i["path"]) == file)
                .map(|i| s(&i["key"]).to_string())
                .unwrap_or_else(|| file.to_string()),
        };
        let cm = self.k8s.named("ConfigMap", cm_name);
        let toml = s(&cm["data"][key.as_str()]).to_string();
        assert!(!toml.is_empty(), "ConfigMap {cm_name} has no key {key}");
        (path, toml)
    }

    /// The mounted config.toml, parsed.
    pub fn config(&self) -> toml::Value {
        toml::from_str(&self.config_toml().1)
            .unwrap_or_else(|e| panic!("{}: config.toml is not TOML: {e}", self.name()))
    }

    /// The pod spec every rtmp-edge workload needs: its selector matches its pods; no host
    /// namespaces; a grace period the drain fits in; rtmp and http ports that the config
    /// binds; /healthz and /readyz probes on http; resources; a hardened, non-root,
    /// read-only container; the API token from a Secret; mounts of existing volumes and
    /// recordings on a writable one.
    pub fn check_pod(&self) {
        let name = self.name();
        assert!(
            is_subset(
                &string_map(&self.spec()["selector"]["matchLabels"]),
                &self.pod_labels()
            ),
            "{name}: selector does not match its pod labels"
        );
        let pod = self.pod();
        for host in ["hostNetwork", "hostPID", "hostIPC"] {
            assert_ne!(pod[host].as_bool(), Some(true), "{name}: {host}");
        }
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: terminationGracePeriodSeconds"));
        // preStop sleep + up to 5 s of finalizing recordings must fit.
        assert!(
            grace >= 15,
            "{name}: terminationGracePeriodSeconds {grace} too short"
        );
        let c = self.container();
        assert!(
            !strings(&c["lifecycle"]["preStop"]["exec"]["command"]).is_empty(),
            "{name}: a preStop wait lets the pod leave the endpoints before it drains"
        );

        assert_eq!(
            self.container_port(&Value::from("rtmp")),
            Some(1935),
            "{name}"
        );
        assert_eq!(
            self.container_port(&Value::from("http")),
            Some(8080),
            "{name}"
        );
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &c[probe]["httpGet"];
            assert_eq!(s(&get["path"]), path, "{name}: {probe}");
            assert_eq!(
                self.container_port(&get["port"]),
                Some(8080),
                "{name}: {probe} port"
            );
        }
        for kind in ["requests", "limits"] {
            for res in ["cpu", "memory"] {
                assert!(
                    !c["resources"][kind][res].is_null(),
                    "{name}: resources.{kind}.{res} missing"
                );
            }
        }
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}");
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        assert_ne!(sc["privileged"].as_bool(), Some(true), "{name}");
        assert!(
            sc["runAsNonRoot"].as_bool() == Some(true)
                || pod["securityContext"]["runAsNonRoot"].as_bool() == Some(true),
            "{name}: runAsNonRoot"
        );
        assert!(
            strings(&sc["capabilities"]["drop"]).contains(&"ALL".to_string()),
            "{name}: drop ALL capabilities"
        );
        // The API token comes from a Secret, never a literal.
        let token = seq(&c["env"])
            .iter()
            .find(|e| s(&e["name"]) == "RTMP_EDGE_API_TOKEN")
            .unwrap_or_else(|| panic!("{name}: RTMP_EDGE_API_TOKEN env"));
        assert!(
            token["value"].is_null(),
            "{name}: API token as a literal value"
        );
        let secret = &token["valueFrom"]["secretKeyRef"];
        assert!(!s(&secret["name"]).is_empty() && !s(&secret["key"]).is_empty());
        // Every mount names a volume; the read-only root leaves the state dir writable.
        let volumes = self.volumes();
        let mounts = seq(&c["volumeMounts"]);
        for m in mounts {
            assert!(
                volumes.contains(s(&m["name"])),
                "{name}: mount of unknown volume {m:?}"
            );
        }
        let cfg = self.config();
        if let Some(dir) = cfg
            .get("record")
            .and_then(|r| r.get("dir"))
            .and_then(|d| d.as_str())
        {
            assert!(
                mounts.iter().any(|m| dir.starts_with(s(&m["mountPath"]))
                    && m["readOnly"].as_bool() != Some(true)),
                "{name}: record dir {dir} is not on a writable volume"
            );
        }
        // The ports the config file binds are the container's ports.
        let server = cfg
            .get("server")
            .unwrap_or_else(|| panic!("{name}: config.toml has no [server] table"));
        let listen = server
            .get("listen")
            .and_then(|v| v.as_str())
            .unwrap_or("0.0.0.0:1935");
        let http = server
            .get("http")
            .and_then(|v| v.as_str())
            .unwrap_or("0.0.0.0:8080");
        assert_eq!(
            port_of(listen),
            1935,
            "{name}: [server] listen vs containerPort rtmp"
        );
        assert_eq!(
            port_of(http),
            8080,
            "{name}: [server] http vs containerPort http"
        );
        assert!(
            http.starts_with("0.0.0.0:") || http.starts_with("[::]:"),
            "{name}: probes and Prometheus reach the pod IP: [server] http must not be loopback"
        );
    }

    /// The container args with the mounted ConfigMap config.toml pass the real binary's
    /// `--check-config`; returns its summary.
    pub fn check_args_and_config(&self) -> String {
        let mut args = strings(&self.container()["args"]);
        let (path, toml_text) = self.config_toml();
        let tmp = tmp_file(&format!("{}-config.toml", self.name()), &toml_text);
        for a in args.iter_mut() {
            if *a == path {
                *a = tmp.display().to_string();
            }
        }
        let what = format!(
            "{} {} args + ConfigMap config.toml",
            s(&self.doc["kind"]),
            self.name()
        );
        let summary = check_config(&what, &args);
        let _ = std::fs::remove_file(tmp);
        summary
    }
}
