"""A small read-only HTTP JSON endpoint over the leaderboards (`pomocore leaderboard serve`).

    GET /v1/leaderboard/top?category=work&period=weekly&date=2026-02-12&limit=10[&offset=0]
        → {"key": "...", "category": ..., "period": ..., "label": ..., "rows": [{rank,user,score}]}
    GET /v1/leaderboard/rank?user=u42&category=work&period=daily[&date=...]
        → {"key": ..., "row": {rank,user,score} | null}
    GET /v1/leaderboard/around?user=u42&...&n=5 → {..., "rows": [...]}
    GET /v1/leaderboard/ranks?user=u1&user=u2&... → {..., "ranks": {"u1": {...}, "u2": null}}
    GET /v1/leaderboard/count?category=work&period=daily → {..., "count": 123}
    GET /openapi.json (docs/openapi.json) · GET /healthz → {"status": "ok"}
    GET /metrics → Prometheus text: pomocore_http_request_duration_seconds{route}, ...

The routes, their parameters and bounds, and the OpenAPI document are in
pomocore.http_routes; this module is the server.

Only GET and HEAD; every other method is 405. Bad parameters are 400 with a message.
With `POMOCORE_API_TOKEN[_FILE]` set, every path but /healthz and /metrics needs
`Authorization: Bearer <token>` (else 401 with `WWW-Authenticate`). Those two carry no
leaderboard data and are asked for by the kubelet and Prometheus, which hold no client
token (the NetworkPolicy decides who reaches the port). Both are answered on the server's
loop thread: never queued behind slow queries. One access-log line per request (logger
`pomocore.http_api.access`). Served by a BoundedHTTPServer (shell/bounded.py): bounded
threads and connections, idle and slow clients closed after `POMOCORE_HTTP_REQUEST_TIMEOUT_S`.
Run it with the `reader` ACL user: it can do nothing but read leaderboard keys.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pomocore.bounded import BoundedHTTPServer, BufferedRequestHandler, HttpLimits
from pomocore.http_routes import OPENAPI_PATH, ROUTES, handle
from pomocore.metrics import RequestLatency, api_registry
from pomocore.reader import LeaderboardReader

log = logging.getLogger("pomocore.http_api")
access_log = logging.getLogger("pomocore.http_api.access")

# Threads answering queries (each one Redis round trip, bounded by the reader's socket
# timeout); the connections waiting for one hold no thread.
API_WORKERS = 8
API_LIMITS = HttpLimits(workers=API_WORKERS)  # the defaults, for servers built without settings
HEALTH_PATH = "/healthz"  # answered without a token: probes carry none
METRICS_PATH = "/metrics"  # without a token too: Prometheus carries none
# The `route` label values of the request latency (any other path counts as "other").
ROUTE_PATHS = (*(r.path for r in ROUTES), OPENAPI_PATH, HEALTH_PATH, METRICS_PATH)
REALM = "pomocore"


class BearerToken:
    """The token a request must present, compared in constant time."""

    def __init__(self, token: str) -> None:
        # Digests of equal length: compare_digest's time then says nothing about the
        # token's length either.
        self._digest = hashlib.sha256(token.encode()).digest()

    def check(self, authorization: str | None) -> str | None:
        """None when `authorization` carries the token, else the RFC 6750 error
        ("" when no credentials were given at all, "invalid_token" when they were wrong)."""
        if not authorization:
            return ""
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return "invalid_request"
        presented = hashlib.sha256(credentials.strip().encode()).digest()
        return None if hmac.compare_digest(presented, self._digest) else "invalid_token"


class LeaderboardHTTPServer:
    def __init__(
        self,
        reader: LeaderboardReader,
        port: int,
        host: str = "127.0.0.1",
        *,
        token: str = "",
        limits: HttpLimits = API_LIMITS,
    ) -> None:
        self.reader = reader
        self.token = BearerToken(token) if token else None
        self.latency = RequestLatency(ROUTE_PATHS)
        self.registry = api_registry(self.latency)
        if self.token is None and not _loopback(host):
            log.warning(
                "leaderboard endpoint serves without a bearer token on a non-loopback "
                "address; set POMOCORE_API_TOKEN_FILE",
                extra={"host": host},
            )
        self.httpd = BoundedHTTPServer(
            (host, port),
            self._handler(),
            limits,
            name="pomocore-leaderboard-http",
            inline_paths=(HEALTH_PATH, METRICS_PATH),
            access_log=access_log,
            on_answer=self.latency.observe,
        )
        self.port = self.httpd.port

    def start(self) -> LeaderboardHTTPServer:
        self.httpd.start()
        return self

    def serve_forever(self) -> None:
        log.info("leaderboard endpoint listening", extra={"port": self.port})
        self.httpd.serve_forever()

    def close(self) -> None:
        self.httpd.close()

    def _handler(self) -> type[BufferedRequestHandler]:
        reader, token, registry = self.reader, self.token, self.registry

        class Handler(BufferedRequestHandler):
            def _reply(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
                self._send(status, json.dumps(doc).encode(), "application/json", headers)

            def _send(
                self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _unauthorized(self) -> bool:
                """Replies 401 unless the request carries the token (when one is set)."""
                if token is None:
                    return False
                error = token.check(self.headers.get("Authorization"))
                if error is None:
                    return False
                challenge = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
                self._reply(401, {"error": "unauthorized"}, {"WWW-Authenticate": challenge})
                return True

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == METRICS_PATH:
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                    return
                if url.path != HEALTH_PATH and self._unauthorized():
                    return
                try:
                    status, doc = handle(reader, url.path, parse_qs(url.query))
                except Exception as exc:  # Redis down: 503, and say why without secrets
                    log.warning("leaderboard query failed", extra={"error": type(exc).__name__})
                    status, doc = 503, {"error": "leaderboards unavailable"}
                self._reply(status, doc)

            def do_HEAD(self) -> None:
                self.do_GET()

            def _not_allowed(self) -> None:
                self._reply(405, {"error": "read-only endpoint"}, {"Allow": "GET, HEAD"})

            do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

        return Handler


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
