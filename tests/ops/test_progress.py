"""Progress on a terminal (a redrawn bar) and elsewhere (plain lines): shell/progress.py."""

from __future__ import annotations

import io

import pytest

from pomocore.progress import PLAIN_EVERY_S, Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_at_most_every_few_seconds_and_at_the_end() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress("dlq replay", 300, unit="entries", stream=out, clock=clock) as p:
        for _ in range(3):
            for _ in range(100):
                p.advance()
            clock.now += PLAIN_EVERY_S / 2
    assert out.getvalue().splitlines() == [
        "dlq replay: 201/300 entries",  # the first step once PLAIN_EVERY_S went by
        "dlq replay: 300/300 entries in 15.0 s",
    ]


def test_unknown_total_and_a_note() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress("demo: processed", stream=out, clock=clock) as p:
        p.update(40, "published 100")
    assert out.getvalue() == "demo: processed: 40, published 100 in 0.0 s\n"


def test_a_failed_task_writes_no_closing_line() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError), Progress("rebuild", 5, stream=out) as p:
        p.advance()
        raise RuntimeError("Redis went away")
    assert out.getvalue() == ""


def test_a_terminal_gets_a_bar_redrawn_in_place() -> None:
    out = io.StringIO()
    with Progress("rebuild: keys compared", 3, unit="keys", stream=out, tty=True) as p:
        for _ in p.each(range(3)):
            pass
    text = out.getvalue()
    assert "\r" in text and "rebuild: keys compared" in text and "3/3" in text


def test_quiet_and_not_left_write_nothing() -> None:
    out = io.StringIO()
    with Progress("x", 1, stream=out, quiet=True) as p:
        p.advance()
    with Progress("y", 1, stream=out, leave=False) as p:
        p.advance()
    assert out.getvalue() == ""


class SizelessTerminal(io.StringIO):
    """A stream that says it is a terminal but has no size (a pseudo-terminal that
    `script` or a CI runner opened without one): tqdm would draw an empty bar there."""

    def isatty(self) -> bool:
        return True


def test_a_terminal_without_a_size_gets_plain_lines() -> None:
    out = SizelessTerminal()
    with Progress("dlq replay", 2, unit="entries", stream=out) as p:
        p.advance(2)
    assert out.getvalue().startswith("dlq replay: 2/2 entries in ")
