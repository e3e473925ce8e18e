"""docs/migrating.md maps every variable of the Go service, names only real settings, and
the contract names it says stay the same are pomocore's defaults."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pomocore.core.settings import FALLBACK_ENV, Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "migrating.md").read_text(encoding="utf-8")
GO_VARIABLES = ("MONGO_URI", "MONGO_DATABASE", "REDIS_ADDR", "REDIS_PASSWORD", "OPENAI_API_KEY")
SETTINGS = {env_name(f.name) for f in dataclasses.fields(Settings)}


@pytest.mark.parametrize("variable", GO_VARIABLES)
def test_each_go_variable_has_a_row(variable: str) -> None:
    assert re.search(rf"^\| `{variable}` \| [^|]*`POMOCORE_", DOC, re.M), variable


def test_every_pomocore_variable_named_is_a_setting() -> None:
    named = set(re.findall(r"POMOCORE_[A-Z_]+[A-Z]", DOC))
    unknown = {n for n in named if n not in SETTINGS and n.removesuffix("_FILE") not in SETTINGS}
    assert not unknown, f"docs/migrating.md names settings that do not exist: {sorted(unknown)}"


def test_the_fallbacks_it_promises_are_the_ones_read() -> None:
    for setting, variable in FALLBACK_ENV.items():
        assert f"`{variable}`" in DOC and env_name(setting) in DOC


def test_names_that_stay_are_the_defaults() -> None:
    defaults = Settings()
    for name in (defaults.stream, defaults.group, defaults.session_score_stream,
                 defaults.dead_letter_stream):  # fmt: skip
        assert f"`{name}`" in DOC, name
