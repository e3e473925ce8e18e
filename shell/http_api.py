"""A small read-only HTTP JSON endpoint over the leaderboards (`pomocore leaderboard serve`).

    GET /v1/leaderboard/top?category=work&period=weekly&date=2026-02-12&limit=10[&offset=0]
        → {"key": "...", "category": ..., "period": ..., "label": ..., "rows": [{rank,user,score}]}
    GET /v1/leaderboard/rank?user=u42&category=work&period=daily[&date=...]
        → {"key": ..., "row": {rank,user,score} | null}
    GET /v1/leaderboard/around?user=u42&...&n=5 → {..., "rows": [...]}
    GET /v1/leaderboard/ranks?user=u1&user=u2&... → {..., "ranks": {"u1": {...}, "u2": null}}
    GET /v1/leaderboard/count?category=work&period=daily → {..., "count": 123}
    GET /openapi.json (docs/openapi.json) · GET /healthz → {"status": "ok"}

The routes, their parameters and bounds, and the OpenAPI document are in
pomocore.http_routes; this module is the server.

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

from pomocore.http_routes import handle
from pomocore.reader import LeaderboardReader

log = logging.getLogger("pomocore.http_api")


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
