"""Progress of a long command (`leaderboard rebuild`, `dlq replay`, `demo`, the benchmarks).

On a terminal: a tqdm bar on stderr, redrawn in place. Anywhere else (a pipe, a CI log, a
file): a plain line every PLAIN_EVERY_S and one at the end, never a carriage return, so
logs stay readable. Always on stderr: stdout keeps the command's report (`--json`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")

# A plain line at most this often: a 10-minute replay writes ~60 lines, not thousands.
PLAIN_EVERY_S = 10.0


class Progress:
    """`with Progress("replay", total=n, unit="entries") as p: ... p.advance(k)`.

    `total` may be 0 (unknown); `note` is shown after the count (e.g. "published 3,000").
    `tty` forces the choice (tests); by default it is `stream.isatty()`. With `leave`
    False the bar is erased and no closing line written (the caller writes its own).
    """

    def __init__(
        self,
        label: str,
        total: int = 0,
        *,
        unit: str = "",
        stream: TextIO | None = None,
        tty: bool | None = None,
        quiet: bool = False,
        leave: bool = True,
        clock: Any = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self.note = ""
        self._stream = stream if stream is not None else sys.stderr
        self._quiet = quiet
        self._leave = leave  # False: the caller prints its own closing line
        self._clock = clock
        self._started = clock()
        self._last_line = self._started
        is_tty = isatty(self._stream) if tty is None else tty
        self._bar: Any = None
        if is_tty and not quiet:
            self._bar = tqdm(
                total=total or None,
                desc=label,
                unit=f" {unit}" if unit else "it",
                file=self._stream,
                mininterval=0.2,
                dynamic_ncols=True,
                leave=leave,
            )

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(final=kind is None)  # a command that failed says so itself

    def set_total(self, total: int) -> None:
        """The total, once known (e.g. after listing what a command is going to do)."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total or None
            self._bar.refresh()

    def each(self, items: Iterable[T]) -> Iterator[T]:
        """The items, counting each one as it is taken."""
        for item in items:
            yield item
            self.advance()

    def advance(self, n: int = 1, note: str | None = None) -> None:
        self.update(self.done + n, note)

    def update(self, done: int, note: str | None = None) -> None:
        """The count so far (absolute), and optionally a new note."""
        if note is not None:
            self.note = note
        step, self.done = done - self.done, done
        if self._bar is not None:
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(step)
        elif not self._quiet and self._clock() - self._last_line >= PLAIN_EVERY_S:
            self._last_line = self._clock()
            self._line()

    def close(self, final: bool = True) -> None:
        """Ends the bar; elsewhere writes the closing line (unless `final` is False)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif not self._quiet and self._leave and final:
            self._line(f" in {self._clock() - self._started:.1f} s")
        self._quiet = True  # a second close writes nothing

    def _line(self, tail: str = "") -> None:
        count = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "")
        unit = f" {self.unit}" if self.unit else ""
        note = f", {self.note}" if self.note else ""
        print(f"{self.label}: {count}{unit}{note}{tail}", file=self._stream, flush=True)


def isatty(stream: TextIO) -> bool:
    """A terminal that can show a bar: a pseudo-terminal of zero columns (some CI
    runners, `script` without a size) gets plain lines, as tqdm would draw nothing."""
    try:
        if not stream.isatty():
            return False
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, ValueError, OSError):  # closed, file-like or no size
        return False
