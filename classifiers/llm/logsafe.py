"""Log-safe fingerprints: logs never contain raw titles or URLs (hash + length only)."""

from __future__ import annotations

import hashlib

from pomocore.core.decision import ClassKey


def fingerprint(text: str) -> str:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()
    return f"{digest}/{len(text)}"


def key_fingerprint(key: ClassKey) -> str:
    app, url, title = key
    return f"app={fingerprint(app)} url={fingerprint(url)} title={fingerprint(title)}"
