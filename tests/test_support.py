"""The shared test helpers keep their promises: a child `pomocore` never outlives its
test, and a wait fails with what it waited for."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ConsumerProcess
from tests.support.waiting import wait_for

# A child that ignores SIGTERM, as a consumer stuck in a batch would.
STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def stubborn(log: Path) -> ConsumerProcess:
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=out)
    child = ConsumerProcess(proc, log)
    wait_for(lambda: "ready" in child.output(), 30, "the child never started")
    return child


def test_stop_kills_a_process_that_overstays_its_timeout(tmp_path: Path) -> None:
    child = stubborn(tmp_path / "child.log")
    assert child.stop(timeout_s=0.5) == -signal.SIGKILL
    assert child.poll() == -signal.SIGKILL


def test_leaving_the_block_kills_a_process_still_running(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), stubborn(tmp_path / "child.log") as child:
        raise RuntimeError("the test failed before stopping its consumer")
    assert child.poll() == -signal.SIGKILL


def test_wait_for_fails_with_its_description_and_returns_the_time_taken() -> None:
    with pytest.raises(AssertionError, match="never true"):
        wait_for(lambda: False, 0.2, lambda: "never true")
    assert wait_for(lambda: True, 0.2) < 0.2
