"""Deployment files, checked by parsing them (no Docker or Kubernetes here): manifests
parse, hardening is in place, and the dashboard and alerts use only metrics that
shell/metrics.py defines (this fails if they drift)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pomocore.core.settings import Settings
from pomocore.metrics import metric_names

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"\bpomocore_[a-z0-9_]+")


def load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_k8s_manifests() -> None:
    docs: dict[str, Any] = {}
    for path in sorted((ROOT / "deploy/k8s").glob("*.yaml")):
        for doc in load_all(path):
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
    # the defaults written in the file are the settings' own defaults
    defaults = Settings.from_env({})
    for name in env:
        field = name.removeprefix("POMOCORE_").lower()
        if field in ("llm_base_url", "llm_api_key_file"):
            continue
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
