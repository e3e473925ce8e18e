"""Alerts, dashboard and manifests linted against the exporter (issue #16 §5): every
metric an alert or a panel queries exists (`metric_types`, the registry the exporter
serves; tests/ops/test_metrics_health.py checks a live scrape against it), rate() and
increase() only ever see counters, every alert has a runbook_url that resolves to a
heading of docs/operations.md, the job label matches the scrape configurations, the
dashboard has its variables, and the Kubernetes files follow KEDA and kustomize."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pomocore.metrics import metric_types

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
SERIES = re.compile(r"\b((?:pomocore|process)_[a-z0-9_]+)")
# rate(x[5m]), increase(x{...}[5m]), irate, also inside sum(...) around them
OVER_RANGE = re.compile(
    r"\b(rate|irate|increase|deriv|delta)\(\s*((?:pomocore|process)_[a-z0-9_]+)\s*(?:\{[^}]*\})?\s*\["
)
COUNTER_FUNCTIONS = {"rate", "irate", "increase"}  # deriv/delta are the gauge ones
GAUGE_FUNCTIONS = {"deriv", "delta"}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    return [r for g in groups for r in g["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules() if "alert" in r}


def range_misuse(expr: str, types: dict[str, str]) -> list[str]:
    """The `function(series[...])` pairs of `expr` that apply a counter function to a
    gauge or a gauge function to a counter."""
    wrong = []
    for function, series in OVER_RANGE.findall(expr):
        kind = types.get(series)
        if function in COUNTER_FUNCTIONS and kind != "counter":
            wrong.append(f"{function}({series}) over a {kind}")
        if function in GAUGE_FUNCTIONS and kind != "gauge":
            wrong.append(f"{function}({series}) over a {kind}")
    return wrong


@pytest.mark.parametrize(
    ("expr", "wrong"),
    [
        ("increase(pomocore_dead_letter_length[15m]) > 0", True),  # the old dead-letter alert
        ("sum(increase(pomocore_events_rejected_total[15m])) > 0", False),
        ('rate(pomocore_llm_keys_total{outcome="queued"}[5m])', False),
        ("rate(pomocore_group_lag [5m])", True),
        ("deriv(pomocore_group_lag[10m])", False),
        ("deriv(pomocore_events_read_total[10m])", True),
        ("rate(pomocore_batch_size_bucket[5m])", False),
        ("rate(process_cpu_seconds_total[5m])", False),
    ],
)
def test_range_misuse_finds_functions_over_the_wrong_type(expr: str, wrong: bool) -> None:
    assert bool(range_misuse(expr, metric_types())) is wrong


def test_every_rule_uses_existing_metrics_and_the_right_functions() -> None:
    types = metric_types()
    for rule in rules():
        name = rule.get("alert") or rule["record"]
        used = set(SERIES.findall(rule["expr"]))
        assert used or name == "PomocoreDown", name
        assert used <= set(types), (name, used - set(types))
        assert not range_misuse(rule["expr"], types), (name, range_misuse(rule["expr"], types))


def github_anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_alert_has_a_runbook_heading() -> None:
    docs: dict[str, set[str]] = {}
    for name, rule in alerts().items():
        url = rule["annotations"].get("runbook_url")
        assert url, f"{name} has no runbook_url"
        assert "runbook" not in rule["annotations"], name  # one name for it: runbook_url
        path, _, anchor = url.partition("#")
        assert path == "docs/operations.md" and anchor, (name, url)
        if path not in docs:
            docs[path] = github_anchors((ROOT / path).read_text())
        assert anchor in docs[path], f"{name}: no heading for #{anchor} in {path}"
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), name


def test_no_gauge_alert_on_the_dead_letter_length() -> None:
    """The dead-letter alert counts rejections: a purge of the stream does not fire it."""
    expr = alerts()["PomocoreDeadLetters"]["expr"]
    assert "pomocore_events_rejected_total" in expr and "dead_letter_length" not in expr


def component(doc: dict[str, Any]) -> str:
    return str(doc.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component", ""))


def k8s_docs(api: bool = False) -> dict[str, dict[str, Any]]:
    """The consumers' manifest of each kind (of a kind the leaderboard API also has, such
    as Deployment, Service or ServiceMonitor, the consumers' one), or with `api` the
    leaderboard API's."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((ROOT / "deploy/k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            if doc["kind"] not in out or (component(doc) == "leaderboard-api") == api:
                out[doc["kind"]] = doc
    return out


API_JOB = "pomocore-leaderboard-api"  # the leaderboard API's own /metrics


def test_job_label_matches_every_scrape_configuration() -> None:
    jobs = set(re.findall(r'\bjob="([^"]+)"', (ROOT / "deploy/prometheus/alerts.yml").read_text()))
    assert jobs == {"pomocore"}
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    kept = {}
    for scrape in config["scrape_configs"]:
        relabelled = [
            r["replacement"]
            for r in scrape.get("relabel_configs", [])
            if r.get("target_label") == "job"
        ]
        job = relabelled[-1] if relabelled else scrape["job_name"]
        assert job in ("pomocore", API_JOB), scrape
        ports = {str(c.get("port")) for c in scrape.get("dns_sd_configs", [])}
        assert ports <= {"9464"}, ports
        # pod discovery keeps one component's pods: an API pod is never job="pomocore"
        for rule in scrape.get("relabel_configs", []):
            if rule.get("action") == "keep":
                kept[job] = rule["regex"]
    assert kept == {"pomocore": "pomocore;consumer;true", API_JOB: "pomocore;leaderboard-api;true"}
    docs = k8s_docs()
    monitor, service = docs["ServiceMonitor"]["spec"], docs["Service"]
    assert service["metadata"]["labels"][monitor["jobLabel"]] == "pomocore"
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= set(ports)
    pod = docs["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    metrics_port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    assert metrics_port == 9464 == ports["metrics"]["port"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port)
    assert docs["ConfigMap"]["data"]["POMOCORE_METRICS_PORT"] == str(metrics_port)
    # the Service selects the consumer pods
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


def test_the_leaderboard_api_is_scraped_as_its_own_job() -> None:
    """#16 §3: the API's /metrics (its request latency) is scraped on its http port, as
    job pomocore-leaderboard-api by the ServiceMonitor (no jobLabel: the Service's name)
    as by the pod annotations."""
    docs = k8s_docs(api=True)
    monitor, service = docs["ServiceMonitor"], docs["Service"]
    assert component(monitor) == component(service) == "leaderboard-api"
    assert "jobLabel" not in monitor["spec"] and service["metadata"]["name"] == API_JOB
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    pod = docs["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports[endpoint["port"]])
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_no_port_9100_anywhere_deployed() -> None:
    """9100 is node_exporter's: the image, compose file and manifests use 9464."""
    for path in [ROOT / "Dockerfile", ROOT / "docker-compose.yml",
                 *(ROOT / "deploy").rglob("*.y*ml")]:  # fmt: skip
        assert "9100" not in path.read_text(), path


def test_kubernetes_by_the_book() -> None:
    docs = k8s_docs()
    assert "replicas" not in docs["Deployment"]["spec"]  # KEDA owns the count
    scaled = docs["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    kustomization = docs["Kustomization"]
    assert "commonLabels" not in kustomization
    assert kustomization["labels"][0]["pairs"] == {"app.kubernetes.io/part-of": "pomocore"}
    assert "servicemonitor.yaml" in kustomization["resources"]
    for name in kustomization["resources"]:
        assert (ROOT / "deploy/k8s" / name).exists(), name
    assert docs["ServiceMonitor"]["apiVersion"] == "monitoring.coreos.com/v1"
    operations = (ROOT / "docs/operations.md").read_text()
    assert "#### Pin the image" in operations and "pomocore@sha256:<digest>" in operations
    assert "Pin the image" in (ROOT / "deploy/k8s/deployment.yaml").read_text()


def dashboard() -> dict[str, Any]:
    return json.loads((ROOT / "deploy/grafana/dashboards/pomocore.json").read_text())


def test_dashboard_variables_and_datasource() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "instance"):
        assert variables[name]["type"] == "query" and variables[name]["includeAll"]
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    for panel in board["panels"]:
        title = panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", title
        for target in panel["targets"]:
            expr = target["expr"]
            assert target["datasource"]["uid"] == "${datasource}", title
            # every range is Grafana's rate interval, or a deliberate window of hours
            for window in re.findall(r"\[([^\]]+)\]", expr):
                assert window in ("$__rate_interval", "1h"), (title, window)
            for selector in re.findall(r"\b(?:pomocore|process)_[a-z0-9_]+(\{[^}]*\})?", expr):
                assert 'namespace=~"$namespace"' in selector, (title, expr)
                assert 'instance=~"$instance"' in selector, (title, expr)


def test_dashboard_metrics_exist_and_functions_fit() -> None:
    types = metric_types()
    titles = set()
    for panel in dashboard()["panels"]:
        titles.add(panel["title"])
        for target in panel["targets"]:
            used = set(SERIES.findall(target["expr"]))
            assert used <= set(types), (panel["title"], used - set(types))
            assert not range_misuse(target["expr"], types), panel["title"]
    exprs = " ".join(t["expr"] for p in dashboard()["panels"] for t in p["targets"])
    assert "sum by (category) (rate(pomocore_events_categorized_total" in exprs
    per_pod = [p for p in dashboard()["panels"] if "by (instance" in json.dumps(p["targets"])]
    assert len(per_pod) >= 3  # throughput, latency, memory per pod
    assert "process_resident_memory_bytes" in exprs
