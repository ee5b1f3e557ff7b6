#!/usr/bin/env python3
"""Checks what the Kubernetes schemas cannot about deploy/kubernetes.

kubernetes-validate (run by .ci/run) checks each manifest against the API
schemas. This checks that the manifests fit together and fit Floe:

- kustomization.yaml lists every manifest (all but itself and
  secret.example.yaml), and each exists;
- each Deployment's selector matches its pods' labels, which carry
  app.kubernetes.io/name: floe and component; the Service selects the
  JobManager's pods, and its target ports are ports those pods declare;
- probes use declared ports; ConfigMaps and Secret keys referenced exist
  (the Secret's in secret.example.yaml); FLOE_CONF_DIR is where the
  ConfigMap is mounted;
- the ConfigMap's floe-conf.yaml uses only keys Floe knows (each appears
  quoted in crates/floe-core/src/config.rs, which holds KNOWN_KEYS: Floe's
  processes refuse any other key at start), and the fixed ports the pods
  declare are the ones it configures.

Needs PyYAML (kubernetes-validate's venv has it). Exits 1 on any problem.
"""

import pathlib
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
problems = []


def problem(msg):
    problems.append(msg)


def load(name):
    return [d for d in yaml.safe_load_all((HERE / name).read_text()) if d]


def flatten(prefix, value, out):
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


# The kustomization lists every manifest.
kustomization = load("kustomization.yaml")[0]
listed = list(kustomization.get("resources", []))
manifests = sorted(
    p.name
    for p in HERE.glob("*.yaml")
    if p.name not in ("kustomization.yaml", "secret.example.yaml")
)
for name in listed:
    if not (HERE / name).is_file():
        problem(f"kustomization.yaml lists {name}, which does not exist")
for name in manifests:
    if name not in listed:
        problem(f"kustomization.yaml does not list {name}")

docs = [d for name in manifests for d in load(name)]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
configmaps = by_kind.get("ConfigMap", {})
secret = load("secret.example.yaml")[0]
secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))

# floe-conf.yaml: known keys only.
known_source = (REPO / "crates/floe-core/src/config.rs").read_text()
conf = {}
for cm in configmaps.values():
    text = cm.get("data", {}).get("floe-conf.yaml")
    if text is None:
        continue
    flatten("", yaml.safe_load(text) or {}, conf)
    for key in conf:
        if f'"{key}"' not in known_source:
            problem(f"ConfigMap {cm['metadata']['name']}: floe-conf.yaml key {key!r} is not a key Floe knows")
if not conf:
    problem("no ConfigMap holds floe-conf.yaml")

# Which configured port each declared container port must be.
port_keys = {
    ("jobmanager", "rpc"): "jobmanager.rpc.port",
    ("taskmanager", "rpc"): "taskmanager.rpc.port",
    ("taskmanager", "data"): "taskmanager.data.port",
}

pods = {}
for name, dep in by_kind.get("Deployment", {}).items():
    spec = dep["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    for k, v in spec["selector"].get("matchLabels", {}).items():
        if labels.get(k) != v:
            problem(f"Deployment {name}: selector {k}={v} does not match its pods' labels")
    if labels.get("app.kubernetes.io/name") != "floe" or "component" not in labels:
        problem(f"Deployment {name}: pods lack app.kubernetes.io/name: floe or component")
    component = labels.get("component")
    pod = spec["template"]["spec"]
    pods[name] = (labels, pod)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for v in volumes.values():
        if "configMap" in v and v["configMap"]["name"] not in configmaps:
            problem(f"Deployment {name}: volume {v['name']} uses ConfigMap {v['configMap']['name']}, not defined")
    for c in pod["containers"]:
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            for kind in ("httpGet", "tcpSocket"):
                port = c.get(probe, {}).get(kind, {}).get("port")
                if isinstance(port, str) and port not in ports:
                    problem(f"Deployment {name}: {probe} uses port {port!r}, not declared")
        for (comp, pname), key in port_keys.items():
            if comp == component and pname in ports and str(conf.get(key)) != str(ports[pname]):
                problem(f"Deployment {name}: port {pname} is {ports[pname]} but floe-conf.yaml has {key}: {conf.get(key)}")
        env = {e["name"]: e for e in c.get("env", [])}
        for e in env.values():
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and (ref["name"] != secret["metadata"]["name"] or ref["key"] not in secret_keys):
                problem(f"Deployment {name}: {e['name']} reads secret {ref['name']} key {ref['key']}, not in secret.example.yaml")
        conf_dir = env.get("FLOE_CONF_DIR", {}).get("value")
        mounts = {
            m["mountPath"]
            for m in c.get("volumeMounts", [])
            if "configMap" in volumes.get(m["name"], {})
        }
        if conf_dir not in mounts:
            problem(f"Deployment {name}: FLOE_CONF_DIR={conf_dir} is not where the ConfigMap is mounted ({sorted(mounts)})")

# The Service selects the JobManager's pods and targets declared ports.
for name, svc in by_kind.get("Service", {}).items():
    selector = svc["spec"].get("selector", {})
    matched = [
        (dep, pod)
        for dep, (labels, pod) in pods.items()
        if all(labels.get(k) == v for k, v in selector.items())
    ]
    if [dep for dep, _ in matched] != ["floe-jobmanager"]:
        problem(f"Service {name}: selects {[dep for dep, _ in matched]}, not exactly floe-jobmanager")
    for dep, pod in matched:
        declared = {p.get("name") for c in pod["containers"] for p in c.get("ports", [])}
        declared |= {p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if p.get("targetPort", p["port"]) not in declared:
                problem(f"Service {name}: targetPort {p.get('targetPort')} is not a port of {dep}")

for p in problems:
    print(f"ERROR {p}")
if problems:
    sys.exit(1)
print(f"deploy/kubernetes: {len(manifests)} manifests consistent; floe-conf.yaml: {len(conf)} keys, all known")
