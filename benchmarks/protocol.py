"""The parent ↔ consumer process protocol of a benchmark run.

The parent starts `python -m benchmarks.child SPEC` (SPEC: a `ChildSpec` as JSON) with
the repository root as its working directory. The child builds everything and prints
READY; the parent snapshots Redis `INFO cpu` and writes `GO <unix time>`; the child
consumes until the parent writes `STOP`, then writes its `ChildReport` (JSON) to
`spec.result_file` and, in a latency pass, its per-event latencies (doubles) beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# `python -m benchmarks` needs the repository root on sys.path: the children run there.
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunNames:
    """Every key, group and database of one run, under the session's unique prefix."""

    run: int
    group: str
    leaderboard_prefix: str
    dead_letter_stream: str
    session_score_stream: str
    celery_queue: str
    celery_done: str
    mongo_db: str
    uses_mongo: bool

    @classmethod
    def for_run(cls, prefix: str, session: str, run: int, uses_mongo: bool) -> RunNames:
        p = f"{prefix}r{run}:"
        return cls(
            run=run,
            group=f"{p}group",
            leaderboard_prefix=f"{p}leaderboard",
            dead_letter_stream=f"{p}dlq",
            session_score_stream=f"{p}sessions",
            celery_queue=f"{p}celery",
            celery_done=f"{p}celery:done",
            mongo_db=f"pomobench_{session}_r{run}",
            uses_mongo=uses_mongo,
        )


@dataclass(frozen=True)
class ChildSpec:
    """What one consumer process runs (serialised as JSON on its command line)."""

    variant: str
    redis_url: str
    mongo_uri: str
    stream: str | None  # None for Celery (e), which reads its own queue
    consumer: str
    batch_size: int
    latency: bool
    result_file: str
    profile: str  # "", "cprofile" or "py-spy"
    profile_file: str
    names: RunNames
    llm_url: str = ""  # h: the scripted LLM server ("" = the same consumer without an LLM)
    key_hash_tag: str = ""  # h, shards: every pomocore key of the run under {tag}
    redis_cluster: bool = False  # shards: redis_url is a Redis Cluster seed node
    shards: int = 1  # shards: POMOCORE_SHARDS (benchmarks/shards.py)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ChildSpec:
        data: dict[str, Any] = json.loads(text)
        names = RunNames(**data.pop("names"))
        return cls(names=names, **data)


@dataclass
class ChildReport:
    """What a consumer process measured, written to its result file when it stops."""

    acked: int
    last_ack: float
    first_start: float
    cpu_s: float
    redis_round_trips: int
    mongo_round_trips: int
    max_rss_kb: int
    cache_hits: int = 0
    cache_misses: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> ChildReport:
        return cls(**json.loads(path.read_text()))


def latency_file(result_file: Path, group: str = "") -> Path:
    return Path(str(result_file) + ".lat" + (f".{group}" if group else ""))


def write_latencies(
    result_file: Path, latencies: array[float], groups: dict[str, array[float]] | None = None
) -> None:
    latency_file(result_file).write_bytes(latencies.tobytes())
    for group, values in (groups or {}).items():
        latency_file(result_file, group).write_bytes(values.tobytes())


def read_latencies(result_file: Path, group: str = "") -> list[float]:
    """Per-event latencies in ms a child wrote (none outside a latency pass), all of them
    or those of one group (variant h)."""
    path = latency_file(result_file, group)
    if not path.exists():
        return []
    values = array("d")
    values.frombytes(path.read_bytes())
    return list(values)


# --- parent side ---


def spawn_child(spec: ChildSpec) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "benchmarks.child", spec.to_json()]
    if spec.profile == "py-spy":
        # py-spy is a program of the bench tools, next to this interpreter if not on PATH
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        cmd = [spy, "record", "-r", "500", "-f", "raw", "-o", spec.profile_file, "--", *cmd]
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT
    )


def expect(child: subprocess.Popen[str], word: str, timeout_s: float) -> None:
    """Wait until the child prints `word` on a line of its own; kill it after timeout_s."""
    assert child.stdout is not None
    stdout = child.stdout
    result: list[str] = []

    def read() -> None:
        for line in stdout:
            if line.strip() == word:
                result.append(line)
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout_s)
    if not result:
        child.kill()
        raise RuntimeError(f"consumer did not report {word} (exit {child.poll()})")


def tell(children: Sequence[subprocess.Popen[str]], line: str) -> None:
    for child in children:
        assert child.stdin is not None
        child.stdin.write(line + "\n")
        child.stdin.flush()


def go(children: Sequence[subprocess.Popen[str]], t_go: float) -> None:
    tell(children, f"GO {t_go!r}")


def stop(children: Sequence[subprocess.Popen[str]]) -> None:
    tell(children, "STOP")


# --- child side ---


def ready_and_wait_go() -> float:
    """Say READY, block until GO; returns the parent's GO time."""
    print("READY", flush=True)
    line = sys.stdin.readline()
    if not line.startswith("GO"):
        raise SystemExit("no GO from the parent")
    return float(line.split()[1])


def on_stop(callback: Callable[[], None]) -> threading.Thread:
    """Call `callback` (from a thread) when the parent says STOP or closes stdin."""

    def wait() -> None:
        for line in sys.stdin:
            if line.strip() == "STOP":
                break
        callback()

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    return t
