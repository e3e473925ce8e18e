"""How the harness is started: `pomocore bench` only points to it (the installed package has
no benchmark code), `python -m benchmarks` parses the options `pomocore bench` had, and a
consumer process's spec survives its trip through the command line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import soak
from benchmarks.cli import build_parser, options_from_args
from benchmarks.options import RUNS_DIR, BenchOptions, Feed, SpecOverride
from benchmarks.protocol import REPO_ROOT, ChildSpec, RunNames
from pomocore.cli import main as pomocore_main


@pytest.mark.parametrize(
    "argv",
    [
        ["bench"],
        ["bench", "--quick"],
        ["bench", "--variants", "c,f", "--runs", "1"],
        ["bench", "--shards", "1,3,6"],
        ["bench", "--help"],
    ],
)
def test_pomocore_bench_explains_where_the_benchmarks_are_and_exits_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert pomocore_main(argv) == 2
    err = capsys.readouterr().err
    assert "make bench" in err
    assert "python -m benchmarks" in err
    assert "benchmarks/README.md" in err
    assert "--shards 1,3,6" in err


def test_other_commands_still_reject_unknown_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        pomocore_main(["demo", "--quick"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --quick" in capsys.readouterr().err


def test_pomocore_bench_works_where_benchmarks_cannot_be_imported(tmp_path: Path) -> None:
    # from a folder without benchmarks/: what an installed wheel or the container sees
    code = (
        "import sys\n"
        "from pomocore.cli import main\n"
        "status = main(['bench'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'benchmarks')\n"
        "print(status, loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2 []"
    assert "python -m benchmarks" in done.stderr


def test_options_keep_the_documented_defaults_and_quick_sizes() -> None:
    parse = build_parser().parse_args
    assert options_from_args(parse([])) == BenchOptions(out=RUNS_DIR)
    quick = options_from_args(parse(["--quick", "--events", "5000", "--variants", "c,f"]))
    sizes = (quick.events, quick.slow_events, quick.mongo_events, quick.runs)
    assert sizes == (5000, 1000, 5000, 1)  # --events wins over --quick's 20,000
    assert quick.latency_seconds == 3.0
    assert quick.variants == "cf"
    sweeps = options_from_args(parse(["--sweep", "all", "--sweep", "rss,batch"])).sweeps
    assert sweeps == ("batch", "processes", "users", "hit", "rss")
    with pytest.raises(SystemExit, match="unknown variants: x"):
        options_from_args(parse(["--variants", "a,x"]))


@pytest.mark.parametrize(
    "output",
    [RUNS_DIR / "bench-1.json", soak.parser().get_default("out") / "soak.png"],
    ids=["bench", "soak"],
)
def test_runs_go_to_the_ignored_folder_by_default(output: Path) -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", str(output)], cwd=REPO_ROOT)
    assert ignored.returncode == 0, f"{output} would be committed"


def child_spec(names: RunNames) -> ChildSpec:
    return ChildSpec(
        variant="b",
        redis_url="redis://127.0.0.1:1/0",
        mongo_uri="mongodb://127.0.0.1:2",
        stream="pomobench-x:stream",
        consumer="bench-3-0",
        batch_size=1000,
        latency=False,
        result_file="/tmp/r3-0.json",
        profile="",
        profile_file="/tmp/profile-b.collapsed",
        names=names,
    )


def test_a_child_spec_survives_the_command_line() -> None:
    names = RunNames.for_run("pomobench-x:", "x", 3, uses_mongo=True)
    spec = child_spec(names)
    assert ChildSpec.from_json(spec.to_json()) == spec
    assert names.group == "pomobench-x:r3:group"
    assert names.mongo_db == "pomobench_x_r3"


def test_a_feed_overrides_only_the_llm_server_and_the_hash_tag() -> None:
    """Variant h's feed: its consumers get the scripted LLM and the run's {hash tag}, the
    rest of their spec as the run made it; other feeds leave the specs as they are."""
    spec = child_spec(RunNames.for_run("pomobench-x:", "x", 3, uses_mongo=True))
    override = SpecOverride(llm_url="http://127.0.0.1:9/v1", key_hash_tag="pomobench-x:r3")
    (got,) = Feed("s", 10, "s", override).specs([spec])
    assert (got.llm_url, got.key_hash_tag) == ("http://127.0.0.1:9/v1", "pomobench-x:r3")
    assert ChildSpec.from_json(got.to_json()) == got
    assert dataclasses.replace(got, llm_url="", key_hash_tag="") == spec  # the rest as it was
    assert Feed("s", 10).specs([spec]) == [spec]
