"""The wheel as a user installs it: one `pomocore` import name, its data files inside,
no benchmark code, and nothing importable under the old top-level names.

The wheel is built from this checkout and installed into a fresh virtual environment
(without dependencies: they are lent from the test environment through a path file, so
the test needs no network). Every check runs in that environment with an empty working
directory, so nothing of the checkout can be imported by accident.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OLD_TOP_LEVEL = ("pipeline", "classifiers", "consumers", "sinks", "core", "shell", "benchmarks")

pytestmark = pytest.mark.slow


def copy_of_checkout(target: Path) -> Path:
    """The files git knows (tracked, and new ones not ignored), as a clean clone has them:
    setuptools reuses a source tree's build/ folder, where files of earlier builds linger."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = copy_of_checkout(tmp_path_factory.mktemp("source"))
    subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
            "--no-build-isolation", "--wheel-dir", str(out), str(source),
        ],
        check=True,
        cwd=source,
        env={"PATH": "/usr/bin:/bin", "PIP_NO_INPUT": "1", "TMPDIR": str(source)},
    )  # fmt: skip
    (path,) = out.glob("pomocore-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its python."""
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # Dependencies from the test environment; its .pth files (the editable install) are
    # not processed from a directory added this way, so our checkout stays invisible.
    deps = sysconfig.get_paths()["purelib"]
    Path(site, "zz_test_dependencies.pth").write_text(deps + "\n", encoding="utf-8")
    return python


def run_in(python: Path, cwd: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-I", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_wheel_holds_one_package_with_its_data_and_no_benchmarks(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names if not name.startswith("pomocore-")}
    assert top == {"pomocore"}
    assert "pomocore/py.typed" in names
    assert "pomocore/sinks/commit.lua" in names
    assert "pomocore/classifiers/data/default_patterns.json" in names
    assert not [n for n in names if "bench" in n.rsplit("/", 1)[-1]]


def test_installed_wheel_imports_as_pomocore_only(installed: Path, tmp_path: Path) -> None:
    code = f"""
import importlib, json
import pomocore
from pomocore.classifiers.patterns import load_default_pattern_set
from pomocore.sinks.commit import COMMIT_SCRIPT
failed = []
for name in {OLD_TOP_LEVEL!r}:
    try:
        importlib.import_module(name)
    except ImportError:
        failed.append(name)
print(json.dumps({{
    "file": pomocore.__file__,
    "version": pomocore.__version__,
    "all": sorted(pomocore.__all__),
    "patterns": sum(len(e.app_patterns) for e in load_default_pattern_set().entries),
    "lua": "XACK" in COMMIT_SCRIPT,
    "old_names_missing": failed,
}}))
"""
    result = run_in(installed, tmp_path, code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert str(ROOT) not in report["file"] and "site-packages" in report["file"]
    assert report["old_names_missing"] == list(OLD_TOP_LEVEL)
    assert report["patterns"] > 100 and report["lua"]
    assert "LeaderboardReader" in report["all"]


def test_installed_command_prints_its_version(installed: Path, tmp_path: Path) -> None:
    command = installed.parent / "pomocore"
    result = subprocess.run(
        [str(command), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    version = run_in(installed, tmp_path, "import pomocore; print(pomocore.__version__)")
    assert result.stdout.strip() == f"pomocore {version.stdout.strip()}"
