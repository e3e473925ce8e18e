"""`import pomocore` gives a small public API; this pins it, so a change is deliberate."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from importlib import resources

import pomocore

PUBLIC = sorted([
    "LeaderboardReader", "AsyncLeaderboardReader", "Row", "QueryError", "Period",  # reading
    "publish", "publish_many", "apublish", "apublish_many",  # producing
    "Settings", "KeySpace", "__version__",
    "PomocoreError", "ConfigError", "RejectedEvent", "ClassifierError",  # the errors
    "SinkError", "MongoWriteError", "Backpressure", "CommitError",
    "BackendError", "BackendUnavailable",
])  # fmt: skip


def test_exported_names_are_pinned() -> None:
    assert sorted(pomocore.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(pomocore, name) is not None


def test_errors_form_one_tree() -> None:
    errors = [getattr(pomocore, n) for n in PUBLIC if n.endswith(("Error", "Unavailable"))]
    assert all(issubclass(e, pomocore.PomocoreError) for e in errors)
    assert issubclass(pomocore.QueryError, ValueError)  # as before it joined the tree


def test_version_is_the_distribution_version() -> None:
    assert pomocore.__version__ == importlib.metadata.version("pomocore")


def test_package_is_typed() -> None:
    assert resources.files("pomocore").joinpath("py.typed").is_file()


def test_python_dash_m_pomocore_is_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pomocore", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pomocore {pomocore.__version__}"
