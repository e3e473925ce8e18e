"""A consumer process's memory against its documented bound (docs/operations.md,
"Memory")."""

from __future__ import annotations

from pathlib import Path

from pomocore.core.settings import Settings
from tests.support.streams import now_fields

MIB = 1 << 20
# A consumer at rest: interpreter, libraries, connections (measured peak of a consumer
# that only dead-letters: 58 MiB); the LLM client adds ~25 MiB when an LLM is configured.
BASE_BYTES = 80 * MIB
LLM_CLIENT_BYTES = 25 * MIB
# What one lane's batch may take, in batches' bytes: the reply, its objects, the decoded
# texts, MongoDB's documents and their BSON.
BATCH_COPIES = 4
# 8,192 Hangul syllables: app, url and title at POMOCORE_MAX_TEXT_CHARS, 24 KB each in
# UTF-8 and ~16 KB each as Python strings (a key: ~49 KB).
HANGUL = "".join(chr(0xAC00 + (i * 7919) % 11172) for i in range(8192))


def documented_bound_bytes(settings: Settings) -> int:
    """docs/operations.md, "Memory": the most a consumer process holds with `settings`.
    With an LLM: its client, its two memories (verdicts, keys answered invalidly) and the
    batches held while their events wait for it, each at most a read's bytes."""
    bound = BASE_BYTES + settings.lanes * BATCH_COPIES * settings.batch_max_bytes
    bound += settings.decision_cache_bytes
    if settings.llm_enabled:
        bound += LLM_CLIENT_BYTES + 2 * settings.llm_memory_bytes
        bound += settings.llm_waiting_batches * settings.batch_max_bytes
    return bound


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the most memory the process ever had resident (Linux)."""
    return _status_bytes(pid, "VmHWM")


def rss_bytes(pid: int) -> int:
    """VmRSS: what the process has resident now (Linux)."""
    return _status_bytes(pid, "VmRSS")


def _status_bytes(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {name} for {pid}")


def maximal_event(i: int) -> dict[str, str | bytes]:
    """Event `i` of a flood: distinct app, url and title (its number first), each of
    maximal length in Hangul; user u0..u96; 5 s."""
    tag = f"{i:08d}"
    return now_fields(
        f"u{i % 97}", tag + HANGUL[8:], 5.0, title=tag + HANGUL[8:],
        url="https://" + tag + HANGUL[16:],
    )  # fmt: skip
