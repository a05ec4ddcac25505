//! What cannot run here is checked here: the deployment files (Kubernetes
//! manifests, systemd units, the Dockerfile) against the real binaries'
//! `--help`, so a renamed flag or a moved port cannot rot them. Every flag
//! they pass must exist on the subcommand they run; ports must agree
//! between flags, container ports, probes, Services and scrape
//! annotations; every file a flag names must be mounted; every Secret,
//! volume and scale target they refer to must exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

use crate::kit::worker_binary;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary a deployment runs, by name.
fn binary(name: &str) -> PathBuf {
    match Path::new(name).file_name().and_then(|n| n.to_str()) {
        Some("chunk-worker") => worker_binary(),
        Some("coordinator") => PathBuf::from(env!("CARGO_BIN_EXE_coordinator")),
        _ => panic!("deployment runs an unknown binary `{name}`"),
    }
}

/// Every `--flag` `binary subcommand --help` lists.
fn flags_of(binary_name: &str, subcommand: &str) -> BTreeSet<String> {
    let o = Command::new(binary(binary_name))
        .args([subcommand, "--help"])
        .output()
        .expect("run --help");
    assert!(
        o.status.success(),
        "`{binary_name} {subcommand} --help` failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let help = String::from_utf8_lossy(&o.stdout);
    help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_owned)
        .collect()
}

/// A command line a deployment runs: binary, subcommand, then arguments.
#[derive(Debug)]
struct CommandLine {
    origin: String,
    binary: String,
    args: Vec<String>,
}

impl CommandLine {
    /// Checks every `--flag` exists on the subcommand.
    fn check_flags(&self) {
        let sub = self
            .args
            .first()
            .unwrap_or_else(|| panic!("{}: no subcommand", self.origin));
        let known = flags_of(&self.binary, sub);
        for arg in &self.args[1..] {
            if arg.starts_with("--") {
                let flag = arg.split('=').next().unwrap_or(arg);
                assert!(
                    known.contains(flag),
                    "{}: `{} {sub}` has no flag {flag} (it has {known:?})",
                    self.origin,
                    self.binary
                );
            }
        }
    }

    /// The value after `flag`.
    fn value(&self, flag: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == flag)?;
        self.args.get(i + 1).map(String::as_str)
    }

    /// The port of a `HOST:PORT` flag value.
    fn port(&self, flag: &str) -> Option<i64> {
        let v = self.value(flag)?;
        let port = v.rsplit_once(':').map(|(_, p)| p).unwrap_or(v);
        Some(
            port.parse()
                .unwrap_or_else(|_| panic!("{}: {flag} {v} has no numeric port", self.origin)),
        )
    }

    /// Absolute paths given as flag values.
    fn paths(&self) -> Vec<(&str, &str)> {
        self.args
            .windows(2)
            .filter(|w| w[0].starts_with("--") && w[1].starts_with('/'))
            .map(|w| (w[0].as_str(), w[1].as_str()))
            .collect()
    }
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .map(|s| match s {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    other => panic!("not a string: {other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {y:?}"))
}

/// Every document of every YAML file under deploy/kubernetes, with its
/// file name.
fn manifests() -> Vec<(String, Yaml)> {
    let dir = repo().join("deploy/kubernetes");
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read manifest");
        let name = f
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        for doc in
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"))
        {
            if !doc.is_null() {
                docs.push((name.clone(), doc));
            }
        }
    }
    docs
}

/// A port reference (number or name) resolved against a container's ports.
fn resolve_port(port: &Yaml, named: &BTreeMap<String, i64>, what: &str) -> i64 {
    match port {
        Yaml::Integer(n) => *n,
        Yaml::String(name) => *named
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no container port named `{name}` in {named:?}")),
        other => panic!("{what}: bad port {other:?}"),
    }
}

#[test]
fn kubernetes_manifests_agree_with_the_binaries() {
    let docs = manifests();
    let of_kind = |kind: &str| -> Vec<&(String, Yaml)> {
        docs.iter()
            .filter(|(_, d)| d["kind"].as_str() == Some(kind))
            .collect()
    };
    let secrets: BTreeSet<&str> = of_kind("Secret")
        .iter()
        .map(|(_, d)| str_of(&d["metadata"]["name"], "Secret name"))
        .collect();
    let deployments = of_kind("Deployment");
    assert!(
        !deployments.is_empty(),
        "no Deployment in deploy/kubernetes"
    );
    let mut deployment_names = BTreeSet::new();
    let mut pod_port_names: Vec<(BTreeMap<String, String>, BTreeSet<String>)> = Vec::new();
    for (file, d) in &deployments {
        let name = str_of(&d["metadata"]["name"], "Deployment name");
        deployment_names.insert(name.to_owned());
        let pod = &d["spec"]["template"];
        let labels: BTreeMap<String, String> = pod["metadata"]["labels"]
            .as_hash()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (str_of(k, "label").to_owned(), str_of(v, "label").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        for (k, v) in d["spec"]["selector"]["matchLabels"]
            .as_hash()
            .expect("Deployment selector")
        {
            assert_eq!(
                labels.get(str_of(k, "selector")),
                Some(&str_of(v, "selector").to_owned()),
                "{file} {name}: the selector does not match the pod's labels"
            );
        }
        let volumes: BTreeMap<&str, &Yaml> = pod["spec"]["volumes"]
            .as_vec()
            .map(|v| {
                v.iter()
                    .map(|vol| (str_of(&vol["name"], "volume name"), vol))
                    .collect()
            })
            .unwrap_or_default();
        for vol in volumes.values() {
            if let Some(secret) = vol["secret"]["secretName"].as_str() {
                assert!(
                    secrets.contains(secret),
                    "{file} {name}: no Secret `{secret}`"
                );
            }
        }
        let mut port_names = BTreeSet::new();
        for c in pod["spec"]["containers"].as_vec().expect("containers") {
            let what = format!("{file} {name}/{}", str_of(&c["name"], "container name"));
            let command = strings(&c["command"]);
            let line = CommandLine {
                origin: what.clone(),
                binary: command.first().cloned().expect("container command"),
                args: command[1..]
                    .iter()
                    .cloned()
                    .chain(strings(&c["args"]))
                    .collect(),
            };
            line.check_flags();
            let named: BTreeMap<String, i64> = c["ports"]
                .as_vec()
                .map(|ports| {
                    ports
                        .iter()
                        .map(|p| {
                            (
                                str_of(&p["name"], "port name").to_owned(),
                                p["containerPort"].as_i64().expect("containerPort"),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            port_names.extend(named.keys().cloned());
            let declared: BTreeSet<i64> = named.values().copied().collect();
            let listen = line.port("--listen");
            let metrics = line.port("--metrics-listen");
            for (flag, port) in [("--listen", listen), ("--metrics-listen", metrics)] {
                if let Some(port) = port {
                    assert!(
                        declared.contains(&port),
                        "{what}: {flag} port {port} is not a container port ({declared:?})"
                    );
                }
            }
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                let p = &c[probe];
                if !p["grpc"].is_badvalue() {
                    let port = resolve_port(&p["grpc"]["port"], &named, &what);
                    assert_eq!(
                        Some(port),
                        listen,
                        "{what}: {probe} is not on --listen's port"
                    );
                }
                if !p["httpGet"].is_badvalue() {
                    let port = resolve_port(&p["httpGet"]["port"], &named, &what);
                    assert_eq!(
                        Some(port),
                        metrics,
                        "{what}: {probe} is not on --metrics-listen's port"
                    );
                }
            }
            if let Some(port) = pod["metadata"]["annotations"]["prometheus.io/port"].as_str() {
                assert_eq!(
                    Some(port.parse::<i64>().expect("prometheus.io/port")),
                    metrics,
                    "{what}: prometheus.io/port is not --metrics-listen's port"
                );
            }
            let mounts: Vec<(&str, &str)> = c["volumeMounts"]
                .as_vec()
                .map(|m| {
                    m.iter()
                        .map(|m| {
                            (
                                str_of(&m["name"], "mount name"),
                                str_of(&m["mountPath"], "mountPath"),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            for (vol, _) in &mounts {
                assert!(
                    volumes.contains_key(vol),
                    "{what}: mounts a volume `{vol}` the pod lacks"
                );
            }
            for (flag, path) in line.paths() {
                assert!(
                    mounts.iter().any(|(_, m)| Path::new(path).starts_with(m)),
                    "{what}: {flag} {path} is not on a mounted volume ({mounts:?})"
                );
            }
            for from in c["envFrom"].as_vec().into_iter().flatten() {
                if let Some(secret) = from["secretRef"]["name"].as_str() {
                    assert!(secrets.contains(secret), "{what}: no Secret `{secret}`");
                }
            }
        }
        pod_port_names.push((labels, port_names));
    }
    for (file, s) in of_kind("Service") {
        let name = str_of(&s["metadata"]["name"], "Service name");
        let selector: BTreeMap<String, String> = s["spec"]["selector"]
            .as_hash()
            .expect("Service selector")
            .iter()
            .map(|(k, v)| {
                (
                    str_of(k, "selector").to_owned(),
                    str_of(v, "selector").to_owned(),
                )
            })
            .collect();
        let (_, ports) = pod_port_names
            .iter()
            .find(|(labels, _)| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{file} Service {name} selects no Deployment's pods"));
        for p in s["spec"]["ports"].as_vec().expect("Service ports") {
            if let Some(target) = p["targetPort"].as_str() {
                assert!(
                    ports.contains(target),
                    "{file} Service {name}: targetPort `{target}` is no container port name"
                );
            }
        }
    }
    for (file, so) in of_kind("ScaledObject") {
        let target = str_of(&so["spec"]["scaleTargetRef"]["name"], "scaleTargetRef");
        assert!(
            deployment_names.contains(target),
            "{file} ScaledObject scales `{target}`, which is no Deployment"
        );
    }
}

#[test]
fn systemd_units_and_the_dockerfile_agree_with_the_binaries() {
    let dir = repo().join("deploy/systemd");
    let mut units = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/systemd") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read unit");
        let file = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        for exec in text.lines().filter_map(|l| l.strip_prefix("ExecStart=")) {
            let words: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
            CommandLine {
                origin: file.clone(),
                binary: words[0].clone(),
                args: words[1..].to_vec(),
            }
            .check_flags();
            units += 1;
        }
    }
    assert!(units > 0, "no ExecStart in {}", dir.display());

    let docker = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let json_list = |prefix: &str| -> Vec<String> {
        let line = docker
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("Dockerfile has no {prefix}"));
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("Dockerfile {prefix}: {e}"))
    };
    let entry = json_list("ENTRYPOINT ");
    let line = CommandLine {
        origin: "Dockerfile".into(),
        binary: entry[0].clone(),
        args: entry[1..]
            .iter()
            .cloned()
            .chain(json_list("CMD "))
            .collect(),
    };
    line.check_flags();
    let exposed: BTreeSet<i64> = docker
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| {
            l.split_whitespace()
                .map(|p| p.parse::<i64>().expect("EXPOSE port"))
        })
        .collect();
    for flag in ["--listen", "--metrics-listen"] {
        if let Some(port) = line.port(flag) {
            assert!(
                exposed.contains(&port),
                "Dockerfile: {flag} port {port} is not exposed"
            );
        }
    }
}
