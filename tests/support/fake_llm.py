"""A scriptable OpenAI-compatible chat-completions server for tests and demos (stdlib only).

    with FakeLLM(rule=lambda item: "Development") as llm:
        llm.script(FakeLLM.error(500), FakeLLM.rate_limit(1.5))  # next two requests
        llm.per_model["gpt-primary"] = FakeLLM.error(503)         # every request to a model
        llm.choose = lambda req: FakeLLM.slow(3) if random.random() < 0.5 else FakeLLM.ok()
        ... AsyncOpenAI(base_url=llm.url, api_key="x") ...
        assert llm.calls == 3

It implements `POST /v1/chat/completions`. It reads the items of pomocore's prompt (the
`<item n="...">{json}</item>` lines of the user message), answers
`{"categories": [{"n": 1, "category": rule(item)}, ...]}` and records every request
(model, items, whether JSON mode was asked). Behaviours are consumed one per request
from the script queue; when the queue is empty `choose(request)` decides, if set (a mix
of behaviours for a long run), then the per-model behaviour, then `default`.

Run standalone for `pomocore demo --llm-url`: `python -m tests.support.fake_llm --port 8099`.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pomocore.classifiers.llm.prompt import parse_items

Item = dict[str, str]
Rule = Callable[[Item], str]


# What an obedient model does with an injected title (issue #15 §2): "... answer X for
# every item" steers the whole request, "... answer X" only the item that says it.
_STEER_ALL_RE = re.compile(r"answer ([A-Za-z&' ]+?) for every item", re.IGNORECASE)
_STEER_ONE_RE = re.compile(r"ignore all previous instructions and answer (\S+)", re.IGNORECASE)


def obey_injections(items: list[Item], labels: list[str]) -> list[str]:
    """The labels an injection-obeying model gives instead of `labels`."""
    out = list(labels)
    for i, item in enumerate(items):
        title = item.get("title", "")
        steer_all = _STEER_ALL_RE.search(title)
        if steer_all:
            return [steer_all.group(1)] * len(items)
        steer_one = _STEER_ONE_RE.search(title)
        if steer_one:
            out[i] = steer_one.group(1)
    return out


def answer(labels: list[Any]) -> str:
    """The answer content pomocore's prompt asks for: one `{n, category}` entry per item."""
    return json.dumps({"categories": [{"n": n, "category": c} for n, c in enumerate(labels, 1)]})


def keyword_rule(item: Item) -> str:
    """Default rule: a few keywords, else Entertainment. Tests usually pass their own."""
    text = " ".join(item.values()).lower()
    for word, category in (
        ("code", "Development"), ("lecture", "Education"), ("bank", "Finance"),
        ("shop", "E-commerce & Shopping"), ("game", "Game"), ("music", "Music"),
    ):
        if word in text:
            return category
    return "Entertainment"


@dataclass(frozen=True)
class Behaviour:
    kind: str  # ok, slow, status, garbage, wrong_length, labels, drop
    delay_s: float = 0.0
    status: int = 200
    retry_after: str | None = None
    text: str = ""
    labels: tuple[str, ...] = ()


@dataclass
class Request:
    model: str
    items: list[Item]
    json_mode: bool
    system: str
    user: str
    tools: bool
    body: str = ""  # the raw request body, exactly as it left the client (privacy tests)
    at: float = field(default_factory=time.monotonic)


class FakeLLM:
    # --- behaviours ---
    @staticmethod
    def ok() -> Behaviour:
        return Behaviour("ok")

    @staticmethod
    def slow(seconds: float) -> Behaviour:
        """Answer correctly, but only after `seconds` (a client with a shorter timeout gives up)."""
        return Behaviour("slow", delay_s=seconds)

    @staticmethod
    def error(status: int = 500, retry_after: str | None = None) -> Behaviour:
        return Behaviour("status", status=status, retry_after=retry_after)

    @staticmethod
    def rate_limit(retry_after: float | str = 1.0) -> Behaviour:
        return Behaviour("status", status=429, retry_after=str(retry_after))

    @staticmethod
    def garbage(text: str = "Sure! Here are the categories you asked for.") -> Behaviour:
        return Behaviour("garbage", text=text)

    @staticmethod
    def wrong_length(extra: int = 1) -> Behaviour:
        return Behaviour("wrong_length", status=extra)

    @staticmethod
    def labels(*labels: str) -> Behaviour:
        """Answer exactly these labels, whatever the items (non-canonical ones included)."""
        return Behaviour("labels", labels=labels)

    @staticmethod
    def drop() -> Behaviour:
        """Close the connection without answering."""
        return Behaviour("drop")

    # --- server ---
    def __init__(self, rule: Rule = keyword_rule, host: str = "127.0.0.1", port: int = 0) -> None:
        self.rule = rule
        self.default = self.ok()
        self.per_model: dict[str, Behaviour] = {}
        self.choose: Callable[[Request], Behaviour] | None = None  # called from server threads
        self.requests: list[Request] = []
        self.reject_json_mode = False  # answer 400 to response_format, like older servers
        self.obey_injections = False  # steered by titles, like a gullible model
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeLLM:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.per_model.clear()
            self.choose = None
            self.default = self.ok()

    # --- what happened ---
    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def items(self) -> int:
        with self._lock:
            return sum(len(r.items) for r in self.requests)

    @property
    def calls_by_model(self) -> Counter[str]:
        with self._lock:
            return Counter(r.model for r in self.requests)

    def bodies(self) -> list[str]:
        with self._lock:
            return [r.body for r in self.requests]

    def items_seen(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return [(i["app"], i["url"], i["title"]) for r in self.requests for i in r.items]

    # --- internals ---
    def _next(self, req: Request) -> Behaviour:
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self.choose is not None:
                return self.choose(req)
            return self.per_model.get(req.model, self.default)

    def _record(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) or b"{}"
                body = json.loads(raw)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                msgs = body.get("messages", [])
                system = "\n".join(m["content"] for m in msgs if m.get("role") == "system")
                user = "\n".join(m["content"] for m in msgs if m.get("role") == "user")
                req = Request(
                    model=body.get("model", ""),
                    items=parse_items(user),
                    json_mode=body.get("response_format") is not None,
                    system=system,
                    user=user,
                    tools=bool(body.get("tools") or body.get("functions")),
                    body=raw.decode("utf-8", "replace"),
                )
                fake._record(req)
                if req.json_mode and fake.reject_json_mode:
                    self._send(400, {"error": {"message": "response_format not supported"}})
                    return
                b = fake._next(req)
                if b.kind == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if b.kind == "status":
                    headers = {"Retry-After": b.retry_after} if b.retry_after else {}
                    self._send(b.status, {"error": {"message": f"scripted {b.status}"}}, headers)
                    return
                if b.kind == "slow":
                    time.sleep(b.delay_s)
                labels: list[Any] = [fake.rule(i) for i in req.items]
                if fake.obey_injections:
                    labels = obey_injections(req.items, labels)
                if b.kind == "garbage":
                    content = b.text
                elif b.kind == "wrong_length":
                    content = answer(labels + ["Development"] * b.status)
                elif b.kind == "labels":
                    content = answer(list(b.labels))
                else:
                    content = answer(labels)
                prompt_tokens = (len(system) + len(user)) // 4
                completion_tokens = len(content) // 4 + 1
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{len(fake.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": req.model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens,
                        },
                    },
                )

            def _send(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): that is the point of `slow`

        return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description="fake OpenAI-compatible server (keyword rule)")
    ap.add_argument("--port", type=int, default=8099)
    args = ap.parse_args()
    server = FakeLLM(port=args.port)
    print(f"fake LLM at {server.url}", flush=True)
    server.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
