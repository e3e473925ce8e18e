"""docs/slo.md and deploy/prometheus/alerts.yml agree (issue #16 §7)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pomocore.metrics import metric_names

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
LEVELS = {"end-to-end latency", "lag", "dead-letter rate", "LLM fallback rate", "reader latency"}


def slo_rows() -> list[list[str]]:
    text = (ROOT / "docs/slo.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]]


def test_slo_table_and_alerts_agree() -> None:
    groups = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    rows = slo_rows()
    assert {row[0] for row in rows} >= LEVELS
    for level, objective, metric, alert in rows:
        name = re.search(r"`(\w+)`", alert)
        if name is None:  # a level with no alert says why
            assert "no " in alert, level
            continue
        rule = alerts[name.group(1)]  # the alert exists
        metric_name = re.search(r"`(\w+)`", metric).group(1)  # type: ignore[union-attr]
        # a histogram by its family name: its series are _bucket, _sum, _count
        assert metric_name in metric_names() or f"{metric_name}_bucket" in metric_names(), level
        assert metric_name in rule["expr"], (level, rule["expr"])
        threshold = re.search(r"`([\d.]+)`", objective).group(1)  # type: ignore[union-attr]
        assert re.search(rf"> {re.escape(threshold)}\b", rule["expr"]), (level, threshold)
    readme = (ROOT / "README.md").read_text()
    assert "docs/slo.md" in readme
