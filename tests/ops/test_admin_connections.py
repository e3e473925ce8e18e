"""Every operator command reaches Redis through the one connection builder
(core/connect.py), so `POMOCORE_REDIS_TLS_*` and `POMOCORE_REDIS_CLUSTER` apply to the
recovery tools too: `dlq`, `leaderboard top|rank|rebuild|refresh`, `patterns load`,
`patterns learned --approve`, `classify` with the LLM, `check` and `demo`, each run as an
operator runs it (`pomocore ...`, settings from the environment) against a TLS-only
server (mutual TLS) and a local 3-node Redis Cluster.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import pytest

from pomocore import cli
from pomocore.classifiers.llm.learning import REVIEW_COLLECTION
from pomocore.core.connect import sync_redis
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings, env_name
from pomocore.embedded import EmbeddedRedis
from tests.support.consumer import drain
from tests.support.fake_llm import FakeLLM
from tests.support.servers import (
    TLSRedis,
    cluster_settings,
    redis_cluster,
    tls_redis,
    tls_settings,
    tls_unavailable,
)
from tests.support.streams import connected_group_state, now_fields

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("shell", "core", "classifiers", "consumers", "sinks")


def test_only_core_connect_builds_redis_clients() -> None:
    """A client built anywhere else would ignore the TLS and Cluster settings."""
    builds = re.compile(r"\b(?:Redis|RedisCluster|StrictRedis)(?:\.from_url)?\(|from_url\(")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for d in PACKAGE_DIRS
        for path in sorted((ROOT / d).rglob("*.py"))
        if path.relative_to(ROOT).as_posix() != "core/connect.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if builds.search(line) and not line.lstrip().startswith("#")
    ]
    assert offenders == []


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSRedis]:
    reason = tls_unavailable()
    if reason:
        pytest.skip(reason)
    with tls_redis(tmp_path_factory.mktemp("tls")) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedRedis]]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


@dataclass
class Target:
    """Settings that reach one hardened setup, and the environment saying the same."""

    settings: Settings
    env: dict[str, str]


def environment(s: Settings) -> dict[str, str]:
    names = ("redis_url", "redis_cluster", "key_hash_tag", "redis_tls_ca_file",
             "redis_tls_cert_file", "redis_tls_key_file", "mongo_uri", "mongo_db")  # fmt: skip
    return {env_name(n): str(getattr(s, n)) for n in names if getattr(s, n) not in ("", 0)}


@pytest.fixture(params=["tls", "cluster"])
def target(request: pytest.FixtureRequest, settings: Settings) -> Target:
    if request.param == "tls":
        server: TLSRedis = request.getfixturevalue("tls_server")
        s = tls_settings(settings, server)
        client = sync_redis(s)
        client.flushall()  # our own server
        client.close()
    else:
        nodes: list[EmbeddedRedis] = request.getfixturevalue("cluster")
        # a tag of its own: the cluster is shared by the module's tests, never flushed
        s = cluster_settings(settings, nodes, f"adm-{uuid.uuid4().hex[:8]}")
    return Target(s, environment(s))


def pomocore(
    target: Target,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    *args: str,
    **extra_env: str,
) -> tuple[int, str]:
    """`pomocore ARGS` in this process with the target's environment: (exit code, output)."""
    with monkeypatch.context() as m:
        for name, value in {**target.env, **extra_env}.items():
            m.setenv(name, value)
        capfd.readouterr()
        code = cli.main(list(args))
        captured = capfd.readouterr()
    return code, captured.out + captured.err


def publish_and_drain(target: Target, events: list[dict[str, Any]]) -> None:
    s = target.settings
    client = sync_redis(s)
    pipe = client.pipeline(transaction=False)
    for fields in events:
        pipe.xadd(s.keys.stream_key, fields)
    pipe.execute()
    client.close()
    stats = asyncio.run(drain(s, timeout_s=60, state=connected_group_state))
    assert stats.committed >= len(events)


def today(s: Settings) -> str:
    return PeriodCalculator(s.timezone)(time.time() - 60).daily


def test_dlq_list_replay_purge(
    target: Target, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    s = target.settings
    bad = [{"userId": f"b{i}", "app": "Code", "duration": "x", "timestamp": "1"} for i in range(3)]
    publish_and_drain(target, [*bad, now_fields("u0", "Code", 10.0)])
    code, out = pomocore(target, monkeypatch, capfd, "dlq", "list")
    assert code == 0, out
    listed = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [d["reason"] for d in listed] == ["invalid_number"] * 3
    code, out = pomocore(target, monkeypatch, capfd, "dlq", "replay", "--limit", "1")
    assert code == 0 and f"replayed 1 dead letters to {s.keys.stream_key}" in out, out
    code, out = pomocore(target, monkeypatch, capfd, "dlq", "purge", "--yes")
    assert code == 0 and "deleted 2 dead letters" in out, out
    client = sync_redis(s)
    assert client.xlen(s.keys.dead_letter_key) == 0
    client.close()


def test_leaderboard_read_rebuild_refresh(
    target: Target, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    s = target.settings
    publish_and_drain(target, [now_fields(f"u{i % 3}", "Code", 10.0) for i in range(9)])
    day = today(s)
    code, out = pomocore(target, monkeypatch, capfd, "leaderboard", "top", "--category",
                         "work", "--period", "daily", "--json")  # fmt: skip
    assert code == 0 and [json.loads(x)["score"] for x in out.splitlines()] == [30.0] * 3, out
    code, out = pomocore(target, monkeypatch, capfd, "leaderboard", "rank", "--user", "u1",
                         "--category", "work", "--period", "daily")  # fmt: skip
    assert code == 0 and "\tu1\t30.000" in out, out
    client = sync_redis(s)
    client.zincrby(s.keys.leaderboard("work", day), 500.0, "u1")  # drift to repair
    rebuild = ["leaderboard", "rebuild", "--from-mongo", "--start", day, "--end", day]
    code, out = pomocore(target, monkeypatch, capfd, *rebuild, "--check")
    assert code == 1 and "1 differ" in out, out
    code, out = pomocore(target, monkeypatch, capfd, *rebuild)
    assert code == 0 and "1 rewritten (1 written)" in out, out
    assert client.zscore(s.keys.leaderboard("work", day), "u1") == 30.0
    client.sadd(s.keys.derived_stale_key, s.keys.leaderboard("work", day))
    code, out = pomocore(target, monkeypatch, capfd, "leaderboard", "refresh")
    assert code == 0 and "rebuilt 2 weekly/monthly keys" in out, out
    client.close()


def test_patterns_load_and_learned_approve_announce(
    target: Target,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    s = target.settings
    client = sync_redis(s)
    code, out = pomocore(target, monkeypatch, capfd, "patterns", "export")
    assert code == 0, out
    (tmp_path / "patterns.json").write_text(out)
    code, out = pomocore(target, monkeypatch, capfd, "patterns", "load",
                         str(tmp_path / "patterns.json"))  # fmt: skip
    assert code == 0 and "counter 1" in out, out
    assert client.get(s.keys.patterns_version_key) == b"1"
    db = pymongo.MongoClient(s.mongo_uri)[s.mongo_db]
    db[REVIEW_COLLECTION].insert_one(
        {"_id": "app:acmeledger", "status": "pending", "category": "Finance", "kind": "app",
         "pattern": "AcmeLedger", "verdicts": 9, "users": 4}
    )  # fmt: skip
    code, out = pomocore(target, monkeypatch, capfd, "patterns", "learned", "--approve",
                         "AcmeLedger")  # fmt: skip
    assert code == 0 and "approved pattern 'AcmeLedger'" in out, out
    assert "could not announce" not in out
    assert client.get(s.keys.patterns_version_key) == b"2"  # announced through Redis
    client.close()


def test_classify_with_the_llm(
    target: Target,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    s = target.settings
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"app": "ZorblaxStudio", "title": "x", "url": ""}) + "\n")
    with FakeLLM(rule=lambda item: "Finance") as llm:
        code, out = pomocore(target, monkeypatch, capfd, "classify", str(events),
                             POMOCORE_LLM_BASE_URL=llm.url + "/v1",
                             POMOCORE_LLM_API_KEY="test")  # fmt: skip
        assert llm.calls == 1
    assert code == 0 and "Finance" in out, out
    client = sync_redis(s)
    # the shared LLM budget was taken in Redis (tagged keys on the cluster)
    budget = [k for k in _keys(client, s.keys.llm_rate_key_prefix + "*")]
    client.close()
    assert budget, "no LLM budget key in Redis"


def test_check_and_demo(
    target: Target, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    publish_and_drain(target, [now_fields("u0", "Code", 1.0)])
    code, out = pomocore(target, monkeypatch, capfd, "check")
    assert code == 0 and json.loads(out.splitlines()[-1])["ready"], out
    code, out = pomocore(target, monkeypatch, capfd, "demo", "--events", "300",
                         "--users", "20")  # fmt: skip
    assert code == 0 and "consumer exited with code 0" in out, out[-3000:]
    assert "events published   300" in out, out[-3000:]


def _keys(client: Any, pattern: str) -> list[bytes]:
    """Keys matching `pattern` on every node (standalone or Cluster)."""
    return list(client.scan_iter(match=pattern, count=1000))
