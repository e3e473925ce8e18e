"""A small read-only HTTP JSON endpoint over the leaderboards (`pomocore leaderboard serve`).

    GET /v1/leaderboard/top?category=work&period=weekly&date=2026-02-12&limit=10[&offset=0]
        → {"key": "...", "category": ..., "period": ..., "label": ..., "rows": [{rank,user,score}]}
    GET /v1/leaderboard/rank?user=u42&category=work&period=daily[&date=...]
        → {"key": ..., "row": {rank,user,score} | null}
    GET /healthz → {"status": "ok"}

Only GET and HEAD; every other method is 405. Bad parameters are 400 with a message.
Run it with the `reader` ACL user: it can do nothing but read leaderboard keys.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pomocore.reader import LeaderboardReader, QueryError

log = logging.getLogger("pomocore.http_api")


def _one(query: dict[str, list[str]], name: str, default: str | None = None) -> str:
    values = query.get(name)
    if not values:
        if default is None:
            raise QueryError(f"missing parameter {name!r}")
        return default
    return values[0]


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    raw = _one(query, name, str(default))
    try:
        return int(raw)
    except ValueError as exc:
        raise QueryError(f"{name} must be an integer") from exc


def handle(reader: LeaderboardReader, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
    """(status, JSON document) for one GET; no I/O but the reader's."""
    if path == "/healthz":
        return 200, {"status": "ok"}
    if path not in ("/v1/leaderboard/top", "/v1/leaderboard/rank"):
        return 404, {"error": "not found"}
    try:
        category = _one(query, "category")
        period = _one(query, "period")
        day = query.get("date", [None])[0] or None
        key = reader.key(category, period, day)
        base = {"key": key, "category": category, "period": period, "label": key.rsplit(":", 1)[-1]}
        if path.endswith("/top"):
            rows = reader.top(
                category, period, day, _int(query, "limit", 10), _int(query, "offset", 0)
            )
            return 200, {**base, "rows": [r.as_dict() for r in rows]}
        row = reader.rank(_one(query, "user"), category, period, day)
        return 200, {**base, "row": row.as_dict() if row else None}
    except QueryError as exc:
        return 400, {"error": str(exc)}


class LeaderboardHTTPServer:
    def __init__(self, reader: LeaderboardReader, port: int, host: str = "127.0.0.1") -> None:
        self.reader = reader
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None

    def start(self) -> LeaderboardHTTPServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="pomocore-leaderboard-http", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        log.info("leaderboard endpoint listening", extra={"port": self.port})
        self.httpd.serve_forever()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        reader = self.reader

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                try:
                    status, doc = handle(reader, url.path, parse_qs(url.query))
                except Exception as exc:  # Redis down: 503, and say why without secrets
                    log.warning("leaderboard query failed", extra={"error": type(exc).__name__})
                    status, doc = 503, {"error": "leaderboards unavailable"}
                self._reply(status, doc)

            def do_HEAD(self) -> None:
                self.do_GET()

            def _not_allowed(self) -> None:
                self._reply(405, {"error": "read-only endpoint"})

            do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

        return Handler
