"""The routes of the leaderboard HTTP API (`pomocore leaderboard serve`) and the OpenAPI
document generated from them: one table of routes and parameters, which both parses
requests (with the bounds below; a violation is a 400 naming the parameter) and describes
them (docs/openapi.json, served at /openapi.json).

    GET /v1/leaderboard/top     ?category&period[&date][&limit=10][&offset=0]
    GET /v1/leaderboard/rank    ?user&category&period[&date]
    GET /v1/leaderboard/around  ?user&category&period[&date][&n=5]
    GET /v1/leaderboard/ranks   ?user=a&user=b...&category&period[&date]
    GET /v1/leaderboard/count   ?category&period[&date]
    GET /openapi.json, GET /healthz (and GET /metrics, answered by the server itself)

No I/O here but the reader's; the server (pomocore.http_api) owns sockets and threads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from pomocore.reader import (
    MAX_AROUND,
    MAX_CATEGORY_CHARS,
    MAX_LIMIT,
    MAX_OFFSET,
    MAX_SHARDED_DEPTH,
    MAX_USER_CHARS,
    MAX_USERS,
    PERIODS,
    LeaderboardReader,
    Period,
    QueryError,
)

OPENAPI_PATH: Final = "/openapi.json"
Query = dict[str, list[str]]
Doc = dict[str, Any]
_INTEGER: Final = re.compile(r"-?[0-9]{1,12}")  # longer is out of every bound: no int() of it


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    description: str
    kind: Literal["string", "integer", "date", "period", "users"] = "string"
    required: bool = False
    default: int | None = None
    minimum: int | None = None
    maximum: int | None = None  # integers: the largest value; strings: length; users: count

    def schema(self) -> Doc:
        if self.kind == "integer":
            return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum,
                    "default": self.default}  # fmt: skip
        if self.kind == "period":
            return {"type": "string", "enum": list(PERIODS)}
        if self.kind == "date":
            return {"type": "string", "format": "date"}
        if self.kind == "users":
            item = {"type": "string", "minLength": 1, "maxLength": MAX_USER_CHARS}
            return {"type": "array", "items": item, "minItems": 1, "maxItems": self.maximum}
        return {"type": "string", "minLength": 1, "maxLength": self.maximum}

    def openapi(self) -> Doc:
        doc: Doc = {"name": self.name, "in": "query", "required": self.required,
                    "description": self.description, "schema": self.schema()}  # fmt: skip
        if self.kind == "users":
            doc.update(style="form", explode=True)
        return doc


CATEGORY = Param("category", "a category of the taxonomy, or `work`", required=True,
                 maximum=MAX_CATEGORY_CHARS)  # fmt: skip
PERIOD = Param("period", "which board of the date: its day, ISO week or month", "period",
               required=True)  # fmt: skip
DATE = Param("date", "a local date (YYYY-MM-DD) in POMOCORE_TIMEZONE; default: today", "date")
USER = Param("user", "a user id", required=True, maximum=MAX_USER_CHARS)
USERS = Param("user", "user ids, the parameter repeated (`user=a&user=b`); duplicates count "
              "once", "users", required=True, maximum=MAX_USERS)  # fmt: skip
LIMIT = Param("limit", "rows", "integer", default=10, minimum=1, maximum=MAX_LIMIT)
OFFSET = Param("offset", "rows skipped from the top (with POMOCORE_SHARDS > 1, offset + "
               f"limit is at most {MAX_SHARDED_DEPTH})", "integer", default=0, minimum=0,
               maximum=MAX_OFFSET)  # fmt: skip
AROUND = Param("n", "rows above and below the user", "integer", default=5, minimum=0,
               maximum=MAX_AROUND)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Args:
    """The parsed parameters of one request (each route reads the ones it declares)."""

    category: str = ""
    period: Period = "daily"
    day: str | None = None
    user: str = ""
    users: tuple[str, ...] = ()
    limit: int = 10
    offset: int = 0
    n: int = 5


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    summary: str
    params: tuple[Param, ...]
    answer: Callable[[LeaderboardReader, Args], Doc]
    result: Doc  # the schema of the route's own fields, beside the board's


_ROW_REF: Final = {"$ref": "#/components/schemas/Row"}
_ROWS: Final = {"type": "array", "items": _ROW_REF}
_ROW_OR_NULL: Final = {"oneOf": [_ROW_REF, {"type": "null"}]}

ROUTES: Final = (
    Route("/v1/leaderboard/top", "The top rows of a board",
          (CATEGORY, PERIOD, DATE, LIMIT, OFFSET),
          lambda r, a: {"rows": _dicts(r.top(a.category, a.period, a.day, a.limit, a.offset))},
          {"rows": _ROWS}),
    Route("/v1/leaderboard/rank", "A user's rank and score (null: not on the board)",
          (USER, CATEGORY, PERIOD, DATE),
          lambda r, a: {"row": _dict(r.rank(a.user, a.category, a.period, a.day))},
          {"row": _ROW_OR_NULL}),
    Route("/v1/leaderboard/around", "A user's row with up to n rows above and n below "
          "(empty: not on the board)", (USER, CATEGORY, PERIOD, DATE, AROUND),
          lambda r, a: {"rows": _dicts(r.around(a.user, a.category, a.period, a.day, a.n))},
          {"rows": _ROWS}),
    Route("/v1/leaderboard/ranks", "The ranks of several users, in one round trip",
          (USERS, CATEGORY, PERIOD, DATE),
          lambda r, a: {"ranks": {u: _dict(row) for u, row in
                                  r.ranks(a.users, a.category, a.period, a.day).items()}},
          {"ranks": {"type": "object", "additionalProperties": _ROW_OR_NULL,
                     "description": "user id → row, or null when not on the board"}}),
    Route("/v1/leaderboard/count", "The number of users on a board",
          (CATEGORY, PERIOD, DATE),
          lambda r, a: {"count": r.count(a.category, a.period, a.day)},
          {"count": {"type": "integer", "minimum": 0}}),
)  # fmt: skip
_BY_PATH: Final = {route.path: route for route in ROUTES}


def _dict(row: Any) -> Doc | None:
    return None if row is None else cast(Doc, row.as_dict())


def _dicts(rows: list[Any]) -> list[Doc]:
    return [row.as_dict() for row in rows]


def handle(reader: LeaderboardReader, path: str, query: Query) -> tuple[int, Any]:
    """(status, JSON document) for one GET. Reader errors other than QueryError propagate
    (the server answers 503)."""
    if path == "/healthz":
        return 200, {"status": "ok"}
    if path == OPENAPI_PATH:
        return 200, openapi_document()
    route = _BY_PATH.get(path)
    if route is None:
        return 404, {"error": "not found"}
    try:
        args = parse(route.params, query)
        key = reader.key(args.category, args.period, args.day)
        board = {"key": key, "category": args.category, "period": args.period,
                 "label": key.rsplit(":", 1)[-1]}  # fmt: skip
        return 200, {**board, **route.answer(reader, args)}
    except QueryError as exc:
        return 400, {"error": str(exc)}


def parse(params: tuple[Param, ...], query: Query) -> Args:
    """The declared parameters of `query`, checked against their bounds (QueryError)."""
    values: dict[str, Any] = {}
    for p in params:
        given = query.get(p.name) or []
        if not given:
            if p.required:
                raise QueryError(f"missing parameter {p.name!r}")
            continue
        field = "users" if p.kind == "users" else "day" if p.kind == "date" else p.name
        values[field] = _value(p, given)
    return Args(**values)


def _value(p: Param, given: list[str]) -> Any:
    if p.kind == "users":
        if len(given) > MAX_USERS:  # before de-duplicating: bounds the work of a request
            raise QueryError(f"give 1 to {MAX_USERS} users, got {len(given)}")
        return tuple(given)
    raw = given[0]
    if p.kind == "integer":
        return _integer(p, raw)
    if p.kind == "period" and raw not in PERIODS:
        raise QueryError(f"period must be one of {', '.join(PERIODS)}, got {raw!r}")
    if p.kind == "string" and p.maximum is not None and len(raw) > p.maximum:
        raise QueryError(f"{p.name} must be 1-{p.maximum} characters")
    return raw


def _integer(p: Param, raw: str) -> int:
    if not _INTEGER.fullmatch(raw):
        raise QueryError(f"{p.name} must be an integer")
    value, lo, hi = int(raw), p.minimum or 0, p.maximum or 0
    if not lo <= value <= hi:
        raise QueryError(f"{p.name} must be between {lo} and {hi}, got {value}")
    return value


def openapi_document() -> Doc:
    """The OpenAPI 3.1 document of the API (docs/openapi.json)."""
    error = {"description": "", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}  # fmt: skip
    paths: Doc = {}
    for route in ROUTES:
        body = {"allOf": [{"$ref": "#/components/schemas/Board"},
                          {"type": "object", "properties": route.result,
                           "required": list(route.result)}]}  # fmt: skip
        paths[route.path] = {"get": {
            "summary": route.summary,
            "operationId": route.path.rsplit("/", 1)[-1],
            "parameters": [p.openapi() for p in route.params],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": body}}},
                "400": {**error, "description": "a parameter is missing or out of bounds"},
                "401": {"description": "the bearer token is missing or wrong (only when "
                        "POMOCORE_API_TOKEN or POMOCORE_API_TOKEN_FILE is set)"},
                "503": {**error, "description": "Redis is unavailable"},
            },
        }}  # fmt: skip
    paths["/healthz"] = {"get": {"summary": "Liveness", "operationId": "healthz", "security": [],
                                 "responses": {
        "200": {"description": "OK", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"status": {"const": "ok"}}}}}}}}}  # fmt: skip
    paths["/metrics"] = {"get": {
        "summary": "Prometheus metrics: request latency by route, process, build",
        "operationId": "metrics", "security": [], "responses": {
            "200": {"description": "OK", "content": {"text/plain": {"schema": {
                "type": "string"}}}}}}}  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pomocore leaderboards",
            "version": "1",
            "description": "Read-only leaderboards (`pomocore leaderboard serve`). Ranks are "
            "1-based, highest score first; scores are seconds. Generated from "
            "pomocore.http_routes by `python -m pomocore.http_routes`.",
        },
        "paths": paths,
        # A token is asked for only when the server has one (POMOCORE_API_TOKEN[_FILE]):
        # the bearer scheme, or none.
        "security": [{"bearerAuth": []}, {}],
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
                       "schemas": {
            "Row": {"type": "object", "required": ["rank", "user", "score"], "properties": {
                "rank": {"type": "integer", "minimum": 1}, "user": {"type": "string"},
                "score": {"type": "number"}}},
            "Board": {"type": "object", "required": ["key", "category", "period", "label"],
                      "properties": {
                "key": {"type": "string", "description": "the board's Redis key (with "
                        "POMOCORE_SHARDS > 1 its contract name: the shards' keys are read)"},
                "category": {"type": "string"},
                "period": {"type": "string", "enum": list(PERIODS)},
                "label": {"type": "string", "description": "2026-02-12, 2026-W7 or 2026-M2"}}},
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"}}},
        }},
    }  # fmt: skip


def openapi_text() -> str:
    """docs/openapi.json, byte for byte."""
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(openapi_text(), end="")
