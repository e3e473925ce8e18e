"""`import pomocore` is the public API: these names, nothing more (everything else is
internal and may change between releases)."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from importlib.resources import files

import pomocore

PUBLIC = {
    "LeaderboardReader", "AsyncLeaderboardReader", "Row", "QueryError",  # reading
    "Settings", "KeySpace", "__version__",
    "PomocoreError", "ConfigError", "RejectedEvent", "ClassifierError",  # the errors
    "SinkError", "MongoWriteError", "Backpressure", "CommitError",
}  # fmt: skip


def test_the_exported_names_are_pinned() -> None:
    assert set(pomocore.__all__) == PUBLIC and len(pomocore.__all__) == len(PUBLIC)
    for name in PUBLIC:
        assert getattr(pomocore, name) is not None, name


def test_the_version_is_the_distribution_version() -> None:
    assert pomocore.__version__ == metadata.version("pomocore")
    out = subprocess.run(
        [sys.executable, "-m", "pomocore.cli", "--version"], capture_output=True, text=True
    )
    assert out.stdout.strip() == f"pomocore {pomocore.__version__}", out.stderr


def test_the_package_is_typed() -> None:
    assert files("pomocore").joinpath("py.typed").is_file()
