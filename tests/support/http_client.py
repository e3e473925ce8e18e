"""GET over HTTP with the standard library: the status whatever it is, and the body."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET; an error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
