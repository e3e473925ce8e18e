"""`pomocore config`: the settings in effect, validated, secrets redacted, and where each
value came from: `env` (its POMOCORE_* variable), `file` (the `_FILE` variable naming a
secret's file), `fallback` (the OpenAI SDK's OPENAI_API_KEY / OPENAI_BASE_URL) or
`default`. A bad setting exits 2 naming it, like every other command.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, TextIO

from pomocore.cli_format import add_json, write_json
from pomocore.core.settings import Settings, env_name, setting_sources


def config_rows(settings: Settings, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per setting: variable, value (secrets redacted), source, read_from."""
    values = settings.describe()
    sources = setting_sources(os.environ if env is None else env)
    rows = []
    for f in dataclasses.fields(Settings):
        source = sources[f.name]
        value = values[f.name]
        if f.name == "consumer_name" and source.kind == "default":
            value = "(host-pid of each process)"  # this process's own name would mislead
        rows.append(
            {
                "variable": env_name(f.name),
                "value": list(value) if isinstance(value, tuple) else value,
                "source": source.kind,
                "read_from": source.variable or None,
            }
        )
    return rows


def config_command(as_json: bool, out: TextIO = sys.stdout) -> int:
    settings = Settings.from_env()  # validates: a bad setting raises ConfigError (exit 2)
    rows = config_rows(settings)
    if as_json:
        write_json({"valid": True, "settings": rows}, out)
        return 0
    out.write(config_table(rows))
    out.write("valid: every setting passed validation\n")
    return 0


def config_table(rows: list[dict[str, Any]]) -> str:
    """setting, source, value: the value last, so a long one (a URL, a list of patterns)
    runs on to the end of its line instead of into another column; the setting and source
    columns are as wide as their longest entry."""
    sources = [_source(r) for r in rows]
    width = max(len(r["variable"]) for r in rows) + 2
    source_width = max(len("source"), *map(len, sources)) + 2
    lines = [f"{'setting':<{width}}{'source':<{source_width}}value"]
    for r, source in zip(rows, sources, strict=True):
        lines.append(f"{r['variable']:<{width}}{source:<{source_width}}{_shown(r['value'])}")
    return "\n".join(lines) + "\n"


def _source(row: dict[str, Any]) -> str:
    """`env`, `default`, or `file`/`fallback` with the variable read."""
    read_from = f" {row['read_from']}" if row["source"] in ("file", "fallback") else ""
    return str(row["source"]) + read_from


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    return "(empty)" if value == "" else str(value)


def cmd_config(args: argparse.Namespace) -> int:
    return config_command(args.json)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "config",
        help="the settings in effect, validated, secrets redacted, and where each came from",
        description="Every POMOCORE_* setting with the value in effect (secrets redacted) "
        "and its source: env, file (a secret's _FILE variable), fallback (OPENAI_API_KEY, "
        "OPENAI_BASE_URL) or default. Exit 2 naming the setting when one is invalid.",
    )
    add_json(p, "the settings")
    p.set_defaults(func=cmd_config)
