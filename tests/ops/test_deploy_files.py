"""Deployment files, checked by parsing them (no Docker or Kubernetes here): manifests
parse, hardening is in place, and the dashboard and alerts use only metrics that
shell/metrics.py defines (this fails if they drift)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from pomocore.core.settings import Settings, env_name
from pomocore.metrics import metric_names

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"\bpomocore_[a-z0-9_]+")


def load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def component(doc: dict[str, Any]) -> str:
    return str(doc.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component", ""))



def kustomize(folder: str) -> str:
    """`kubectl kustomize` of a folder of deploy/ (skips the test without kubectl)."""
    if shutil.which("kubectl") is None:
        pytest.skip(f"kubectl is not installed: {folder} was not built")
    return subprocess.run(
        ["kubectl", "kustomize", str(ROOT / folder)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip

def test_k8s_manifests() -> None:
    docs: dict[str, Any] = {}
    for path in sorted((ROOT / "deploy/k8s").glob("*.yaml")):
        for doc in load_all(path):
            if component(doc) != "leaderboard-api":  # its own test, below
                docs[doc["kind"]] = doc
    assert {"Deployment", "ConfigMap", "Secret", "PodDisruptionBudget", "ScaledObject",
            "TriggerAuthentication", "Service", "Kustomization"} <= set(docs)  # fmt: skip
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and pod["securityContext"]["runAsNonRoot"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] > int(
        docs["ConfigMap"]["data"]["POMOCORE_SHUTDOWN_TIMEOUT_S"]
    )
    env = {e["name"]: e for e in container["env"]}
    assert "POMOCORE_REDIS_URL_FILE" in env and "POMOCORE_REDIS_URL" not in env
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    trigger = docs["ScaledObject"]["spec"]["triggers"][0]
    assert trigger["type"] == "redis-streams"
    assert trigger["metadata"]["consumerGroup"] == Settings.from_env({}).group
    assert "lagCount" in trigger["metadata"]
    # every ConfigMap key is a real setting (or a documented extra)
    names = {f"POMOCORE_{f.upper()}" for f in Settings.__dataclass_fields__}
    assert set(docs["ConfigMap"]["data"]) <= names


def test_k8s_leaderboard_api() -> None:
    """`pomocore leaderboard serve` as a Deployment, Service and PDB, hardened like the
    consumer, reachable on the port it listens on, connecting as the `reader` ACL user,
    asking its clients for the Secret's bearer token (#14 §4), scraped on its own port."""
    path = ROOT / "deploy/k8s/leaderboard-api.yaml"
    docs = {d["kind"]: d for d in load_all(path)}
    assert set(docs) == {"Deployment", "Service", "PodDisruptionBudget"}
    assert all(component(d) == "leaderboard-api" for d in docs.values())
    kustomization = yaml.safe_load((ROOT / "deploy/k8s/kustomization.yaml").read_text())
    assert path.name in kustomization["resources"]
    deployment, service = docs["Deployment"], docs["Service"]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    (container,) = pod["containers"]
    args = container["args"]
    assert args[:2] == ["leaderboard", "serve"]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    (port,) = container["ports"]
    assert int(args[args.index("--port") + 1]) == port["containerPort"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and pod["securityContext"]["runAsNonRoot"]
    assert pod["automountServiceAccountToken"] is False
    env = {e["name"]: e["value"] for e in container["env"]}
    assert "POMOCORE_REDIS_URL" not in env and "POMOCORE_API_TOKEN" not in env
    secret_volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "secrets"]
    mounted = {f"{mount['mountPath']}/{i['path']}": i["key"]
               for i in secret_volume["secret"]["items"]}  # fmt: skip
    secret = yaml.safe_load((ROOT / "deploy/k8s/secret.template.yaml").read_text())["stringData"]
    assert set(mounted.values()) <= set(secret)
    assert "//reader:" in secret[mounted[env["POMOCORE_REDIS_URL_FILE"]]]
    assert mounted[env["POMOCORE_API_TOKEN_FILE"]] == "api_token"
    # Prometheus without the Operator: the annotations name the port /metrics is on
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"


def test_compose_services_are_hardened() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "mongo", "pomocore", "prometheus", "grafana"}
    for name, svc in services.items():
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert svc["cap_drop"] == ["ALL"], name
        assert svc["profiles"] in (["core"], ["monitoring"]), name
    assert compose["networks"]["backend"]["internal"] is True
    pomo = services["pomocore"]
    assert pomo["deploy"]["replicas"] == 2 and pomo["read_only"] is True
    assert pomo["user"] == "10001:10001"
    assert "POMOCORE_REDIS_URL_FILE" in pomo["environment"]
    assert not any(k.endswith(("_URL", "_URI")) for k in pomo["environment"])
    assert "--appendonly" in services["redis"]["command"]
    for svc in ("redis", "mongo", "pomocore"):
        assert services[svc]["networks"] == ["backend"] and "ports" not in services[svc]
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./deploy/secrets/")
    mounts = " ".join(services["grafana"]["volumes"])
    assert "deploy/grafana/dashboards" in mounts and "deploy/grafana/provisioning" in mounts


INTERPOLATION = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(doc: Any, env: dict[str, str]) -> Any:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` in the parsed file's
    strings (an unset or empty VAR with `:?` fails, as `docker compose` does)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        if env.get(name):
            return env[name]
        if op == "?":
            raise ValueError(f"{name}: {arg}")
        return arg if op == "-" else ""

    if isinstance(doc, dict):
        return {k: interpolate(v, env) for k, v in doc.items()}
    if isinstance(doc, list):
        return [interpolate(v, env) for v in doc]
    return INTERPOLATION.sub(one, doc) if isinstance(doc, str) else doc


def test_compose_llm_file_wires_the_consumers_to_an_llm(tmp_path: Path) -> None:
    """#15 §8: settings, the API-key secret file, and a route out only with an LLM URL."""
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "egress" not in base["networks"]  # the main file alone: no route out
    raw = yaml.safe_load((ROOT / "docker-compose.llm.yml").read_text())
    with pytest.raises(ValueError, match="POMOCORE_LLM_BASE_URL"):
        interpolate(raw, {})  # no endpoint, no start
    url = "https://llm.example/v1"
    llm = interpolate(raw, {"POMOCORE_LLM_BASE_URL": url})
    assert set(llm["services"]) == {"pomocore"}
    pomo = llm["services"]["pomocore"]
    assert pomo["networks"] == ["backend", "egress"]
    assert llm["networks"]["egress"].get("internal") is not True
    secret = llm["secrets"]["pomocore_llm_api_key"]
    assert secret["file"].startswith("./deploy/secrets/") and pomo["secrets"] == [
        "pomocore_llm_api_key"
    ]
    env = {k: str(v) for k, v in pomo["environment"].items()}
    assert env["POMOCORE_LLM_API_KEY_FILE"] == "/run/secrets/pomocore_llm_api_key"
    assert "POMOCORE_LLM_API_KEY" not in env  # the key only ever as a file
    key_file = tmp_path / "key"
    key_file.write_text("sk-test\n")
    settings = Settings.from_env({**env, "POMOCORE_LLM_API_KEY_FILE": str(key_file)})
    assert settings.llm_enabled and settings.llm_base_url == url
    assert settings.llm_api_key == "sk-test"
    # every POMOCORE_LLM_* setting is passed, the API key as its _FILE secret only
    llm_settings = {env_name(f.name) for f in dataclasses.fields(Settings)
                    if f.name.startswith("llm_")}  # fmt: skip
    key = env_name("llm_api_key")
    wanted = llm_settings - {key} | {key + "_FILE"}
    assert set(env) == wanted, set(env) ^ wanted
    # ... each overridable from the shell, with the settings' own default
    defaults = Settings.from_env({})
    raw_env = raw["services"]["pomocore"]["environment"]
    for name in env:
        field = name.removeprefix("POMOCORE_").lower()
        if field in ("llm_base_url", "llm_api_key_file"):
            continue
        assert str(raw_env[name]).startswith(f"${{{name}:-"), name
        assert getattr(settings, field) == getattr(defaults, field), name


def used_metrics(text: str) -> set[str]:
    return set(METRIC.findall(text))


def test_dashboard_and_alerts_use_defined_metrics() -> None:
    defined = metric_names()
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/pomocore.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = used_metrics(exprs)
    assert used, "the dashboard queries no pomocore metric"
    assert used <= defined, used - defined
    alerts = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    yaml.safe_load(alerts)
    assert used_metrics(alerts) <= defined, used_metrics(alerts) - defined
    # the list of things to watch is on the dashboard
    for needed in (
        "pomocore_group_lag",
        "pomocore_group_pending",
        "pomocore_oldest_pending_age_seconds",
        "pomocore_dead_letter_length",
        "pomocore_end_to_end_latency_seconds_bucket",
        "pomocore_llm_circuit_state",
        "pomocore_op_duration_seconds_bucket",
        "pomocore_events_reclaimed_total",
    ):
        assert needed in used, needed  # fmt: skip


def alert_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def minutes(duration: str) -> float:
    number, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()  # type: ignore[union-attr]
    return int(number) * {"s": 1 / 60, "m": 1, "h": 60}[unit]


def test_llm_path_is_on_the_dashboard_and_alerted() -> None:
    """#15 §5: what the LLM path costs and how far behind it is, watched and alerted."""
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/pomocore.json").read_text())
    used = used_metrics(" ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"]))
    for needed in (
        "pomocore_llm_request_duration_seconds_bucket",
        "pomocore_llm_request_items_sum",
        "pomocore_llm_calls_total",
        "pomocore_llm_tokens_total",
        "pomocore_llm_fallback_used_total",
        "pomocore_llm_queue_depth",
        "pomocore_llm_queue_oldest_age_seconds",
        "pomocore_llm_reclassified_total",
        "pomocore_llm_learned_patterns_total",
        "pomocore_llm_throttled_items_total",
        "pomocore_llm_overflow_keys_total",
        "pomocore_llm_budget_remaining",
    ):
        assert needed in used, needed
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "two panels share an id"
    by_metric = {used_metrics(r["expr"]).pop(): r for r in alert_rules().values()
                 if len(used_metrics(r["expr"])) == 1}  # fmt: skip
    circuit = by_metric["pomocore_llm_circuit_state"]
    assert 'state="open"' in circuit["expr"] and minutes(circuit["for"]) >= 5  # for minutes
    age = by_metric["pomocore_llm_queue_oldest_age_seconds"]
    assert "deriv(" in age["expr"] and minutes(age["for"]) >= 5  # growing, not a blip


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM .*$", text, re.M)
    assert len(stages) >= 2
    final = text[text.rindex("\nFROM ") :]
    assert "build-essential" not in final and "gcc" not in final
    assert re.search(r"^USER 10001", final, re.M)
    assert "PROMETHEUS_MULTIPROC_DIR=/tmp/" in final
    assert "HEALTHCHECK" in final and '"check"' in final


def test_dockerfile_copies_every_package_folder() -> None:
    """The image installs from the folders it copies: a folder left out (or one that moved)
    breaks `pip install .` in the build stage."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    folders = set(config["tool"]["setuptools"]["package-dir"].values())
    copied = set(re.findall(r"^COPY (\S+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert folders <= copied, f"Dockerfile does not copy {sorted(folders - copied)}"
    assert all((ROOT / name).exists() for name in copied), "Dockerfile copies a missing folder"


# --- NetworkPolicy and secrets (issue #14 §4, §5) ----------------------------------------


def k8s_docs() -> list[Any]:
    return [d for p in sorted((ROOT / "deploy/k8s").glob("*.yaml")) for d in load_all(p)]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_docs() if d["kind"] == kind]


def consumer_deployment() -> dict[str, Any]:
    """The consumers' Deployment (deployment.yaml; the leaderboard API has one of its own)."""
    (deployment,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "pomocore"]
    return deployment


def consumer_container() -> dict[str, Any]:
    return dict(consumer_deployment()["spec"]["template"]["spec"]["containers"][0])


def secret_template() -> dict[str, Any]:
    (secret,) = by_kind("Secret")
    return secret


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


def test_network_policy_admits_only_monitoring_and_lets_out_only_the_dependencies() -> None:
    """The consumers accept only their metrics/probe port, from the monitoring namespace;
    they reach DNS, Redis, MongoDB and (a policy of its own) the LLM over HTTPS, no more."""
    kustomization = yaml.safe_load((ROOT / "deploy/k8s/kustomization.yaml").read_text())
    assert "networkpolicy.yaml" in kustomization["resources"]
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind("NetworkPolicy")}
    assert set(policies) == {"pomocore", "pomocore-llm-egress", "pomocore-leaderboard-api"}
    del policies["pomocore-leaderboard-api"]  # its own test, below
    deployment = consumer_deployment()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for spec in policies.values():
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    main = policies["pomocore"]
    assert set(main["policyTypes"]) == {"Ingress", "Egress"}
    # Ingress: one rule, the container's metrics port, from the monitoring namespace.
    (rule,) = main["ingress"]
    ports = {p["name"]: p["containerPort"] for p in consumer_container()["ports"]}
    assert rule["ports"] == [{"protocol": "TCP", "port": "metrics"}] and set(ports) == {"metrics"}
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    # Egress: DNS, and the ports of the Redis and MongoDB URLs of the secret template.
    allowed = {(p["protocol"], p["port"]) for r in main["egress"] for p in r["ports"]}
    data = secret_template()["stringData"]
    assert allowed == {
        ("UDP", 53), ("TCP", 53),
        ("TCP", port_of(data["redis_url"])), ("TCP", port_of(data["mongo_uri"])),
    }  # fmt: skip
    for spec in policies.values():
        for r in [*spec.get("ingress", []), *spec.get("egress", [])]:
            for peer in [*r.get("from", []), *r.get("to", [])]:
                # kustomization's commonLabels would add part-of: pomocore to a peer's
                # podSelector (tried: kubectl kustomize), matching no DNS or Redis pod.
                assert "podSelector" not in peer, peer
    # The LLM: HTTPS to public addresses; private ranges and cloud metadata stay closed.
    (llm,) = policies["pomocore-llm-egress"]["egress"]
    assert policies["pomocore-llm-egress"]["policyTypes"] == ["Egress"]
    assert llm["ports"] == [{"protocol": "TCP", "port": 443}]
    (block,) = llm["to"]
    closed = [ipaddress.ip_network(c) for c in block["ipBlock"]["except"]]
    for address in ("10.1.2.3", "172.20.0.1", "192.168.1.1", "169.254.169.254"):
        assert any(ipaddress.ip_address(address) in net for net in closed), address


def test_network_policy_of_the_leaderboard_api() -> None:
    """#14 §4: the API's pods accept their http port from labelled client pods and
    namespaces and from monitoring only, and reach DNS and Redis only."""
    (policy,) = [p for p in by_kind("NetworkPolicy")
                 if p["metadata"]["name"] == "pomocore-leaderboard-api"]  # fmt: skip
    spec = policy["spec"]
    (api,) = [d for d in by_kind("Deployment") if component(d) == "leaderboard-api"]
    pod = api["spec"]["template"]
    assert spec["podSelector"]["matchLabels"] == pod["metadata"]["labels"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    (container,) = pod["spec"]["containers"]
    assert {p["name"] for p in container["ports"]} == {"http"}
    client = {"pomocore.io/leaderboard-client": "true"}
    peers = []
    for rule in spec["ingress"]:
        assert rule["ports"] == [{"protocol": "TCP", "port": "http"}]
        peers += rule["from"]
    assert sorted(peers, key=json.dumps) == sorted([
        {"podSelector": {"matchLabels": client}},  # this namespace's labelled pods
        {"namespaceSelector": {"matchLabels": client}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ], key=json.dumps)  # fmt: skip
    allowed = {(p["protocol"], p["port"]) for r in spec["egress"] for p in r["ports"]}
    reader_url = secret_template()["stringData"]["redis_reader_url"]
    assert allowed == {("UDP", 53), ("TCP", 53), ("TCP", port_of(reader_url))}
    for rule in spec["egress"]:
        assert all(set(peer) == {"namespaceSelector"} for peer in rule["to"]), rule
    built = kustomize("deploy/k8s")
    (built_policy,) = [d for d in yaml.safe_load_all(built) if d and d["kind"] == "NetworkPolicy"
                       and d["metadata"]["name"] == "pomocore-leaderboard-api"]  # fmt: skip
    # the kustomization's labels stay off selectors: the client pod peer is as written
    assert built_policy["spec"]["ingress"] == spec["ingress"]
    assert built_policy["spec"]["podSelector"] == spec["podSelector"]


def test_every_secret_the_pod_needs_is_mounted_from_a_template_key() -> None:
    """Each *_FILE setting, and every file a setting or URI names (tlsCAFile=...), is a
    mounted item of a key that secret.template.yaml has; no secret reaches the pod's
    environment."""
    container = consumer_container()
    deployment = consumer_deployment()
    pod = deployment["spec"]["template"]["spec"]
    keys = set(secret_template()["stringData"])
    mounted: dict[str, str] = {}  # path in the container -> secret key
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        assert mount["readOnly"] is True and secret["secretName"] == "pomocore"
        for item in secret["items"]:
            assert item["key"] in keys, f"{item['key']} is not in secret.template.yaml"
            mounted[f"{mount['mountPath']}/{item['path']}"] = item["key"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    (configmap,) = by_kind("ConfigMap")
    settings_files = {**configmap["data"], **{k: v for k, v in env.items() if v}}
    files = {k: v for k, v in settings_files.items() if k.endswith("_FILE")}
    assert {"POMOCORE_REDIS_URL_FILE", "POMOCORE_MONGO_URI_FILE", "POMOCORE_LLM_API_KEY_FILE",
            "POMOCORE_REDIS_TLS_CA_FILE"} <= set(files)  # fmt: skip
    for name, path in files.items():
        assert path in mounted, f"{name}={path} is not mounted"
    uri_files = re.findall(r"tls\w*File=([^&]+)", secret_template()["stringData"]["mongo_uri"])
    assert uri_files and all(path in mounted for path in uri_files), uri_files
    assert mounted["/etc/pomocore/secrets/llm_api_key"] == "llm_api_key"
    assert mounted["/etc/pomocore/tls/ca.crt"] == "ca.crt"
    # Secrets: read by uid 10001 only (fsGroup turns 0400 into root:10001 0440).
    assert volumes["secrets"]["secret"]["defaultMode"] == 0o400
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 10001
    for secret_name in ("POMOCORE_REDIS_URL", "POMOCORE_MONGO_URI", "POMOCORE_LLM_API_KEY"):
        assert secret_name not in env and secret_name not in configmap["data"]
    # Every key of the template is used: mounted by the consumers or the leaderboard API,
    # or a parameter of KEDA's authentication.
    (auth,) = by_kind("TriggerAuthentication")
    refs = {r["key"]: r["parameter"] for r in auth["spec"]["secretTargetRef"]}
    api_keys = {
        item["key"]
        for d in by_kind("Deployment") if d["metadata"]["name"] != "pomocore"
        for v in d["spec"]["template"]["spec"]["volumes"] if "secret" in v
        for item in v["secret"]["items"]
    }  # fmt: skip
    assert keys == set(mounted.values()) | set(refs) | api_keys
    assert refs["ca.crt"] == "ca"  # KEDA verifies Redis with the consumers' CA
    (scaled,) = by_kind("ScaledObject")
    assert "enableTLS" not in scaled["spec"]["triggers"][0]["metadata"]  # KEDA: not both


COMPOSE_READERS = {
    # the uid that reads each service's secret files inside its container
    "pomocore": 10001,  # docker-compose.yml `user: 10001:10001`
    "grafana": 472,  # `user: 472:0`
    "redis": 999,  # valkey/valkey: the entrypoint drops to the valkey user, uid 999
    "mongo": 999,  # mongo: the entrypoint drops to the mongodb user, uid 999
}


def compose_block() -> str:
    text = (ROOT / "docs/operations.md").read_text(encoding="utf-8")
    section = text[text.index("### Docker Compose") : text.index("### Kubernetes")]
    return "\n".join(re.findall(r"```sh\n(.*?)```", section, re.S))


def test_compose_secrets_are_readable_by_their_reader_alone() -> None:
    """docs/operations.md creates every compose secret file 0600 (umask 077) and gives it
    0400 to the one uid that reads it: never a mode for group or others (the old
    `chmod 644 *` let anyone read the admin and root passwords)."""
    commands = compose_block()
    umask_at = commands.index("umask 077")
    assert umask_at < commands.index(">"), "files are created before the umask"
    modes = re.findall(r"\bchmod\s+([0-7]{3,4})\b", commands)
    assert modes and all(int(m, 8) & 0o077 == 0 for m in modes), modes
    assert not re.search(r"chmod\s+[ugoa]*[+=][rwx]", commands)
    owner: dict[str, int] = {}
    for uid, names in re.findall(r"chown\s+(\d+)(?::\d+)?\s+([^#&)\n]+)", commands):
        for name in names.split():
            owner[name] = int(uid)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    llm = yaml.safe_load((ROOT / "docker-compose.llm.yml").read_text())
    files = {k: Path(v["file"]).name for k, v in {**compose["secrets"], **llm["secrets"]}.items()}
    for name, svc in [*compose["services"].items(), *llm["services"].items()]:
        if not svc.get("secrets"):
            continue
        if "user" in compose["services"][name]:
            uid = int(str(compose["services"][name]["user"]).split(":")[0])
            assert uid == COMPOSE_READERS[name], name
        for secret in svc["secrets"]:
            assert owner.get(files[secret]) == COMPOSE_READERS[name], (name, files[secret])


def run_mongo_init(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str],
                                                                   Path]:  # fmt: skip
    """The init script as the mongo image's entrypoint runs it (sourced by bash, under
    `set -Eeuo pipefail`), with a `mongosh` that records its argv and stdin, and runs the
    script in node with a recording `db` when node is there."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mongosh").write_text(
        f"#!{sys.executable}\n"
        "import json, os, shutil, subprocess, sys\n"
        "out = os.environ['FAKE_OUT']\n"
        "script = sys.stdin.read()\n"
        "json.dump({'argv': sys.argv[1:], 'stdin': script}, open(out + '/call.json', 'w'))\n"
        "node = shutil.which('node')\n"
        "if node:\n"
        "    subprocess.run([node, out + '/harness.js', sys.argv[-1]], input=script,\n"
        "                   text=True, check=True)\n"
    )
    (fake / "mongosh").chmod(0o755)
    (tmp_path / "harness.js").write_text(MONGOSH_HARNESS)
    script = ROOT / "deploy/mongo/init/10-pomocore-user.sh"
    done = subprocess.run(
        ["bash", "-c", 'set -Eeuo pipefail; . "$0"', str(script)],
        env={"PATH": f"{fake}:/usr/bin:/bin", "FAKE_OUT": str(tmp_path), **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done, tmp_path


# mongosh's globals the init script uses (fs, process, db), recording db's calls.
MONGOSH_HARNESS = """
const fs = require('fs');
const calls = [];
const database = (name) => ({
  auth: (user, pwd) => { calls.push({op: 'auth', db: name, user, pwd}); return {ok: 1}; },
  createUser: (doc) => { calls.push({op: 'createUser', db: name, doc}); return {ok: 1}; },
  getSiblingDB: (other) => database(other),
});
globalThis.fs = fs;
globalThis.db = database(process.argv[2]);
require('vm').runInThisContext(fs.readFileSync(0, 'utf8'));
fs.writeFileSync(process.env.FAKE_OUT + '/db.json', JSON.stringify(calls));
"""


def test_mongo_init_script_passes_no_password_on_a_command_line(tmp_path: Path) -> None:
    """The app user is created with the passwords read inside mongosh (from the variable
    the entrypoint sets, and from MONGO_APP_PASSWORD_FILE): neither is in any argv, nor in
    the script text, where `ps` or the shell's expansion would show it."""
    root_password, app_password = "r00t-" + "x" * 20, "app-" + "y" * 20
    app_file = tmp_path / "mongo_app_password"
    app_file.write_text(app_password + "\n")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mongo_env = compose["services"]["mongo"]["environment"]
    assert mongo_env["MONGO_APP_PASSWORD_FILE"] == "/run/secrets/mongo_app_password"
    assert "mongo_app_password" in compose["services"]["mongo"]["secrets"]
    # What the entrypoint leaves for the scripts it sources: the root password read from
    # MONGO_INITDB_ROOT_PASSWORD_FILE into MONGO_INITDB_ROOT_PASSWORD, the _FILE unset.
    env = {
        "MONGO_INITDB_ROOT_USERNAME": "root",
        "MONGO_INITDB_ROOT_PASSWORD": root_password,
        "MONGO_APP_PASSWORD_FILE": str(app_file),
    }
    done, out = run_mongo_init(tmp_path, env)
    assert done.returncode == 0, done.stderr
    call = json.loads((out / "call.json").read_text())
    for secret in (root_password, app_password):
        assert not any(secret in arg for arg in call["argv"]), call["argv"]
        assert secret not in call["stdin"]
    assert call["argv"][-1] == "admin"
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the mongosh script itself was not run")
    calls = json.loads((out / "db.json").read_text())
    assert calls == [
        {"op": "auth", "db": "admin", "user": "root", "pwd": root_password},
        {"op": "createUser", "db": "pomocore", "doc": {
            "user": "pomocore", "pwd": app_password,
            "roles": [{"role": "readWrite", "db": "pomocore"}]}},
    ]  # fmt: skip


def test_keda_authenticates_as_the_read_only_monitor_user() -> None:
    """KEDA only reads the group (XINFO GROUPS, XPENDING, XLEN): it gets `monitor`, not the
    consumers' `worker` (which may write the leaderboards)."""
    docs = {d["kind"]: d for d in load_all(ROOT / "deploy/k8s/keda.yaml")}
    refs = {r["parameter"]: r for r in docs["TriggerAuthentication"]["spec"]["secretTargetRef"]}
    secret = load_all(ROOT / "deploy/k8s/secret.template.yaml")[0]["stringData"]
    assert secret[refs["username"]["key"]] == "monitor"
    assert secret["redis_url"].startswith("rediss://worker:")
    trigger = docs["ScaledObject"]["spec"]["triggers"][0]
    assert (
        trigger["type"] == "redis-streams"
        and trigger["authenticationRef"]["name"]
        == (docs["TriggerAuthentication"]["metadata"]["name"])
    )


def test_keda_for_shards_scales_on_the_lag_summed_over_the_shards_streams() -> None:
    """deploy/k8s-shards: the base with POMOCORE_SHARDS set and KEDA on the lag summed
    over the shards' streams (one series per stream, the same from every pod: one copy
    each, summed). Built with `kubectl kustomize` where kubectl is installed."""
    (patch,) = load_all(ROOT / "deploy/k8s-shards/keda.yaml")
    (trigger,) = patch["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    assert trigger["type"] == "prometheus"
    assert query.startswith("sum(max by (stream) (pomocore_group_lag{")
    assert 'group="pattern_match_group"' in query
    built = kustomize("deploy/k8s-shards")
    docs = {d["kind"]: d for d in yaml.safe_load_all(built) if d}
    assert docs["ConfigMap"]["data"]["POMOCORE_SHARDS"] == "6"
    assert docs["ScaledObject"]["spec"]["triggers"] == [trigger]
    assert docs["ScaledObject"]["spec"]["minReplicaCount"] == 2  # the rest of the base
