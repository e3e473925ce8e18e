"""`pomocore classify --workers N` (#15 §7): a big file goes through the process pool and
gets exactly the inline answers; a small one stays inline; bad values are refused."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from pomocore.classify_cli import classify_command
from tests.support.processes import run_cli

APPS = ["WINWORD.EXE", "org.gnome.Nautilus", "libreoffice-calc", "카카오톡", "Slack", "Xcode"]


def _write_events(path: Path, n: int) -> None:
    """Distinct keys: tracker app names, browser tabs and unknown apps (undecided)."""
    lines = []
    for i in range(n):
        app = APPS[i % len(APPS)]
        if i % 3 == 1:
            event = {"app": "Google Chrome", "url": f"https://github.com/o/r/{i}", "title": "t"}
        elif i % 3 == 2:
            event = {"app": f"unknown-tool-{i}", "url": "", "title": f"window {i}"}
        else:
            event = {"app": app, "url": "", "title": f"doc {i}.txt"}
        lines.append(orjson.dumps(event).decode())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_big_file_goes_through_the_pool_with_the_inline_answers(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    _write_events(events, 3_000)
    inline_out, pooled_out, err = io.StringIO(), io.StringIO(), io.StringIO()
    assert classify_command(str(events), True, inline_out, err=io.StringIO()) == 0
    status = classify_command(
        str(events), True, pooled_out, err=err, workers=2, pool_threshold=1_000
    )
    assert status == 0
    assert "classified 3000 distinct keys in 2 processes" in err.getvalue()
    assert pooled_out.getvalue() == inline_out.getvalue()


def test_a_file_below_the_threshold_stays_inline(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    _write_events(events, 200)
    err = io.StringIO()
    assert classify_command(str(events), True, io.StringIO(), err=err, workers=2) == 0
    assert "processes" not in err.getvalue()


def test_the_cli_passes_workers_and_threshold(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    _write_events(events, 600)
    pooled = run_cli(
        "classify", "--no-llm", "--workers", "2", "--pool-threshold", "500", str(events), env={}
    )
    inline = run_cli("classify", "--no-llm", str(events), env={})
    assert pooled.returncode == inline.returncode == 0, pooled.stderr
    assert b"classified 600 distinct keys in 2 processes" in pooled.stderr
    assert pooled.stdout == inline.stdout


@pytest.mark.parametrize(
    ("flag", "value"), [("--workers", "65"), ("--workers", "-1"), ("--pool-threshold", "0")]
)
def test_out_of_range_values_are_refused(tmp_path: Path, flag: str, value: str) -> None:
    result = run_cli("classify", "--no-llm", flag, value, str(tmp_path / "none"), env={})
    assert result.returncode == 2
    assert b"must be between" in result.stderr
