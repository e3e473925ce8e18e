"""Structured logs: one JSON object per line (or `--log-format text` for humans).

Fields passed with `extra={...}` become top-level keys. Never log raw titles or URLs:
use `fingerprint()` (hash + length) so logs stay free of what users were looking at.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from pomocore.core.decision import ClassKey

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}


# scheme://user:password@host → scheme://user:***@host, wherever it appears in a record.
_CREDENTIALS = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")


def scrub(text: str) -> str:
    """Remove passwords embedded in URIs (a driver error may quote its connection string)."""
    return _CREDENTIALS.sub(r"\1***@", text) if "://" in text else text


class Every:
    """At most once per `interval_s`: the gate of a warning about a condition that can hold
    on every batch (one line a minute, not one per batch). The first `due()` is True."""

    __slots__ = ("_clock", "_interval_s", "_last_s")

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last_s: float | None = None

    def due(self) -> bool:
        now_s = self._clock()
        if self._last_s is not None and now_s - self._last_s < self._interval_s:
            return False
        self._last_s = now_s
        return True


def fingerprint(text: str) -> str:
    """`sha256:<12 hex>/<length>`: identifies a title in logs without revealing it."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"sha256:{digest}/{len(text)}"


def key_fingerprint(key: ClassKey) -> str:
    """An (app, url, title) key as three fingerprints, comparable with every other log line."""
    app, url, title = key
    return f"app={fingerprint(app)} url={fingerprint(url)} title={fingerprint(title)}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = scrub(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = (
            f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()} {extras}".rstrip()
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


def setup_logging(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pymongo", "httpx", "httpcore", "openai", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
