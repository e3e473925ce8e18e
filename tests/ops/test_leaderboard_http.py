"""The leaderboard HTTP API's routes (pomocore.http_routes) over a real server: each route
answers what the reader answers, in the shape its OpenAPI document says; parameters out
of their bounds are 400s naming the parameter; the committed docs/openapi.json is the
generated one and is served at /openapi.json."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import redis
from jsonschema import Draft202012Validator

from pomocore.core.keys import KeySpace
from pomocore.embedded import free_port
from pomocore.http_api import LeaderboardHTTPServer
from pomocore.http_routes import ROUTES, handle, openapi_document, openapi_text
from pomocore.metrics import metric_names
from pomocore.reader import MAX_AROUND, MAX_LIMIT, MAX_USERS, LeaderboardReader
from tests.support.http_client import http_get, metric_value, scrape_metrics

ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-02-12"
SCORES = {f"u{i:02d}": float(300 - 10 * i) for i in range(30)}
BOARD = {"category": "work", "period": "daily", "date": DAY}


@pytest.fixture
def reader(redis_url: str) -> Iterator[LeaderboardReader]:
    client = redis.Redis.from_url(redis_url)
    client.zadd(KeySpace().leaderboard("work", DAY), SCORES)
    with LeaderboardReader(client) as r:
        yield r


@pytest.fixture
def base_url(reader: LeaderboardReader) -> Iterator[str]:
    server = LeaderboardHTTPServer(reader, free_port()).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.close()


def test_committed_openapi_is_the_generated_one() -> None:
    committed = (ROOT / "docs/openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_text(), (
        "docs/openapi.json is stale: .venv/bin/python -m pomocore.http_routes > docs/openapi.json"
    )


def response_validator(path: str) -> Draft202012Validator:
    """The 200 response schema of `path`, with the document's components as its $defs."""
    doc = openapi_document()
    schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    text = json.dumps({**schema["schema"], "$defs": doc["components"]["schemas"]})
    return Draft202012Validator(json.loads(text.replace("#/components/schemas/", "#/$defs/")))


def get(base_url: str, path: str, query: dict[str, Any] | list[tuple[str, str]]) -> Any:
    status, body = http_get(f"{base_url}{path}?{urlencode(query, quote_via=quote)}")
    return status, json.loads(body)


def test_routes_answer_what_the_reader_answers(base_url: str, reader: LeaderboardReader) -> None:
    def rows(found: Any) -> list[dict[str, Any]]:
        return [r.as_dict() for r in found]

    cases = {
        "/v1/leaderboard/top": (
            {**BOARD, "limit": 3, "offset": 1},
            {"rows": rows(reader.top("work", "daily", DAY, 3, 1))},
        ),
        "/v1/leaderboard/rank": (
            {**BOARD, "user": "u04"},
            {"row": {"rank": 5, "user": "u04", "score": 260.0}},
        ),
        "/v1/leaderboard/around": (
            {**BOARD, "user": "u09", "n": 2},
            {"rows": rows(reader.around("u09", "work", "daily", DAY, n=2))},
        ),
        "/v1/leaderboard/ranks": (
            [*BOARD.items(), ("user", "u10"), ("user", "nobody"), ("user", "u00")],
            {"ranks": {"u10": {"rank": 11, "user": "u10", "score": 200.0}, "nobody": None,
                       "u00": {"rank": 1, "user": "u00", "score": 300.0}}},
        ),
        "/v1/leaderboard/count": (BOARD, {"count": 30}),
    }  # fmt: skip
    assert set(cases) == {r.path for r in ROUTES}
    board = {"key": "leaderboard:work:2026-02-12", "category": "work", "period": "daily",
             "label": DAY}  # fmt: skip
    for path, (query, answer) in cases.items():
        status, doc = get(base_url, path, query)
        assert status == 200, (path, doc)
        assert doc == {**board, **answer}, path
        response_validator(path).validate(doc)
    assert len(get(base_url, "/v1/leaderboard/around", {**BOARD, "user": "u15"})[1]["rows"]) == 11
    status, doc = get(base_url, "/v1/leaderboard/rank", {**BOARD, "user": "nobody"})
    assert (status, doc["row"]) == (200, None)
    response_validator("/v1/leaderboard/rank").validate(doc)
    top = response_validator("/v1/leaderboard/top")  # the schemas do check: the $refs resolve
    assert not top.is_valid(board)
    assert not top.is_valid({**board, "rows": [{"rank": 0, "user": "u", "score": 1.0}]})
    status, served = get(base_url, "/openapi.json", {})
    assert status == 200 and served == openapi_document()


@pytest.mark.parametrize(
    ("path", "query", "names"),
    [
        ("top", {**BOARD, "limit": 0}, "limit"),
        ("top", {**BOARD, "limit": MAX_LIMIT + 1}, "limit"),
        ("top", {**BOARD, "limit": "ten"}, "limit"),
        ("top", {**BOARD, "limit": "1e3"}, "limit"),
        ("top", {**BOARD, "limit": "9" * 40}, "limit"),
        ("top", {**BOARD, "offset": -1}, "offset"),
        ("top", {**BOARD, "offset": 10**10}, "offset"),
        ("top", {**BOARD, "period": "hourly"}, "period"),
        ("top", {**BOARD, "date": "12/02/2026"}, "date"),
        ("top", {**BOARD, "category": "x" * 65}, "category"),
        ("top", {"period": "daily"}, "category"),
        ("rank", BOARD, "user"),
        ("rank", {**BOARD, "user": "x" * 129}, "user"),
        ("around", {**BOARD, "user": "u01", "n": MAX_AROUND + 1}, "n"),
        ("around", {**BOARD, "user": "u01", "n": -1}, "n"),
        ("ranks", BOARD, "user"),
        ("ranks", [*BOARD.items(), *[("user", f"u{i}") for i in range(MAX_USERS + 1)]], "user"),
        ("ranks", [*BOARD.items(), ("user", "u1"), ("user", "x" * 129)], "user"),
        ("count", {"category": "work"}, "period"),
    ],
)
def test_parameters_out_of_bounds_are_400(
    reader: LeaderboardReader, path: str, query: dict[str, Any] | list[tuple[str, str]], names: str
) -> None:
    items = query.items() if isinstance(query, dict) else query
    parsed: dict[str, list[str]] = {}
    for name, value in items:
        parsed.setdefault(name, []).append(str(value))
    status, doc = handle(reader, f"/v1/leaderboard/{path}", parsed)
    assert status == 400, doc
    assert names in doc["error"]


def test_the_document_states_the_bounds_the_routes_enforce() -> None:
    params = {
        (path, p["name"]): p["schema"]
        for path, item in openapi_document()["paths"].items()
        for p in item["get"].get("parameters", [])
    }
    assert params["/v1/leaderboard/top", "limit"]["maximum"] == MAX_LIMIT
    assert params["/v1/leaderboard/around", "n"]["maximum"] == MAX_AROUND
    assert params["/v1/leaderboard/ranks", "user"]["maxItems"] == MAX_USERS
    assert params["/v1/leaderboard/top", "period"]["enum"] == ["daily", "weekly", "monthly"]


def test_unknown_paths_are_404(reader: LeaderboardReader) -> None:
    assert handle(reader, "/v1/leaderboard/nope", {})[0] == 404
    assert handle(reader, "/healthz", {}) == (200, {"status": "ok"})


def test_openapi_declares_the_optional_bearer_token() -> None:
    """Clients generated from the document send the token (POMOCORE_API_TOKEN[_FILE]);
    probes of /healthz need none."""
    doc = openapi_document()
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {"type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearerAuth": []}, {}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert doc["paths"]["/metrics"]["get"]["security"] == []  # Prometheus holds no token
    for route in ROUTES:
        assert "401" in doc["paths"][route.path]["get"]["responses"]


def test_request_latency_is_counted_per_route_and_scraped_without_the_token(
    reader: LeaderboardReader,
) -> None:
    """#16 §3: /metrics (open, like /healthz: Prometheus holds no client token) carries
    pomocore_http_request_duration_seconds with one `route` per route, whatever path a
    client asks for (an unknown one counts as `other`), each request counted once."""
    token = "t" * 32
    server = LeaderboardHTTPServer(reader, free_port(), token=token).start()
    base = f"http://127.0.0.1:{server.port}"

    def get_with_token(path: str, query: dict[str, Any]) -> int:
        url = f"{base}{path}?{urlencode(query)}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    try:
        assert get_with_token("/v1/leaderboard/top", BOARD) == 200
        assert get_with_token("/v1/leaderboard/rank", {**BOARD, "user": "u01"}) == 200
        for user in ("u01", "u02"):
            assert get_with_token("/v1/leaderboard/around", {**BOARD, "user": user}) == 200
        assert get_with_token("/v1/leaderboard/top", {**BOARD, "limit": 0}) == 400
        assert http_get(f"{base}/v1/leaderboard/count?category=work")[0] == 401  # no token
        for path in ("/wp-admin/a1", "/v1/leaderboard/nope", "/x?y=1"):
            assert get_with_token(path, {}) == 404
        assert http_get(f"{base}/healthz")[0] == 200
        samples = scrape_metrics(server.port)  # no token
    finally:
        server.close()
    name = "pomocore_http_request_duration_seconds"
    counts = {dict(ls)["route"]: v for (n, ls), v in samples.items() if n == f"{name}_count"}
    assert set(counts) == {*(r.path for r in ROUTES), "/openapi.json", "/healthz", "/metrics",
                           "other"}  # fmt: skip
    assert counts == {**dict.fromkeys(counts, 0.0), "/v1/leaderboard/top": 2,
                      "/v1/leaderboard/rank": 1, "/v1/leaderboard/around": 2,
                      "/v1/leaderboard/count": 1, "other": 3, "/healthz": 1}  # fmt: skip
    for route, count in counts.items():
        assert metric_value(samples, f"{name}_bucket", route=route, le="+Inf") == count
    assert 0 < metric_value(samples, f"{name}_sum", route="/v1/leaderboard/around") < 10
    assert metric_value(samples, "pomocore_build_info") == 1
    assert metric_value(samples, "process_resident_memory_bytes") > 0
    exposed = {n for n, _ in samples if n.startswith(("pomocore_", "process_"))}
    assert exposed <= metric_names(), exposed - metric_names()
