"""What every `pomocore` subcommand shares: help that states defaults, bounded number
arguments, `--json` output and the logging options."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, TextIO


class HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default; a description or epilog written on
    several lines is kept as written, a one-line one is wrapped.

    An option whose default comes from a setting (default None) says so in its own help
    ("default: $POMOCORE_…"); a flag's default is "off".
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.required or action.default in (None, argparse.SUPPRESS):
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text  # a required positional has no default
        if action.default is False:
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer within [lo, hi] (a usage error, exit 2, otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def bounded_float(lo: float, hi: float) -> Callable[[str], float]:
    """An argparse type: a number within [lo, hi]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo:g} and {hi:g}, got {value:g}")
        return value

    return parse


def add_json(p: argparse.ArgumentParser, what: str = "the report") -> None:
    p.add_argument(
        "--json", action="store_true", help=f"{what} as one JSON document (keys: docs/cli.md)"
    )


def add_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        choices=("json", "text"),
        help="log format (default: $POMOCORE_LOG_FORMAT, else json)",
    )
    p.add_argument(
        "--log-level",
        help="DEBUG, INFO, WARNING or ERROR (default: $POMOCORE_LOG_LEVEL, else INFO)",
    )


def logging_parent() -> argparse.ArgumentParser:
    """A parent parser holding `--log-format` and `--log-level`."""
    common = argparse.ArgumentParser(add_help=False)
    add_logging(common)
    return common


def write_json(doc: Any, out: TextIO) -> None:
    """One JSON document on one line (datetimes as ISO 8601)."""
    out.write(json.dumps(doc, ensure_ascii=False, default=_plain) + "\n")
    out.flush()


def _plain(value: Any) -> Any:
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else str(value)
