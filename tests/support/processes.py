"""`pomocore` as a child process, the way an operator runs it.

    with spawn_consumer(server_env(settings), "--processes", "2", log=tmp_path / "run.log") as c:
        ...                     # the consumer works in the background
        code = c.stop()         # SIGTERM, then wait; killed if it overstays
    assert code == 0, c.output()[-2000:]

A consumer's output goes to a log file, never to a pipe: a pipe nobody reads fills up
and blocks a chatty consumer. Leaving the `with` block kills a consumer still running
(the test failed before stopping it), so no consumer outlives its test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from pomocore.core.settings import Settings
from pomocore.metrics import MULTIPROC_ENV

POMOCORE = (sys.executable, "-m", "pomocore.cli")
KILL_WAIT_S = 10.0


def pomocore_env(variables: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus `variables`, for a child `pomocore`.

    The child must not inherit a Prometheus multiprocess folder that a test in this process
    set up: its metrics would be mixed with the test's, and its start-up would delete the
    test's metric files as stale.
    """
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
    env.update(variables)
    return env


def server_env(settings: Settings) -> dict[str, str]:
    """The variables that point a child at the servers and database of `settings`."""
    return {
        "POMOCORE_REDIS_URL": settings.redis_url,
        "POMOCORE_MONGO_URI": settings.mongo_uri,
        "POMOCORE_MONGO_DB": settings.mongo_db,
    }


def run_cli(
    *args: str, env: Mapping[str, str], timeout_s: float = 60.0
) -> subprocess.CompletedProcess[bytes]:
    """`pomocore ARGS` to completion, stdout and stderr captured; its exit code is the
    caller's to check."""
    return subprocess.run(
        [*POMOCORE, *args],
        env=pomocore_env(env),
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )


class ConsumerProcess:
    """One `pomocore run` child and its log file."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    def poll(self) -> int | None:
        return self.proc.poll()

    def terminate(self) -> None:
        """SIGTERM: stop reading, finish and acknowledge the batches in hand, exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        """The exit code; a process still running after `timeout_s` is killed (SIGKILL's
        negative code then fails the caller's `== 0`)."""
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def stop(self, timeout_s: float = 60.0) -> int:
        """A graceful stop, as an orchestrator does it: SIGTERM, then wait."""
        self.terminate()
        return self.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing finished or acknowledged."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(KILL_WAIT_S)

    def output(self) -> str:
        """Everything the process wrote (stdout and stderr) so far."""
        return self.log.read_text(errors="replace")

    def __enter__(self) -> ConsumerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


def spawn_consumer(env: Mapping[str, str], *args: str, log: Path) -> ConsumerProcess:
    """Start `pomocore run ARGS` with `env` over this process's environment; its output
    is appended to `log` (a consumer restarted under the same name keeps one log)."""
    return spawn_pomocore("run", env, *args, log=log)


def spawn_pomocore(command: str, env: Mapping[str, str], *args: str, log: Path) -> ConsumerProcess:
    """Start a long-lived `pomocore COMMAND ARGS` (`run`, `route`), as `spawn_consumer`."""
    with open(log, "ab") as out:  # the child holds its own copy of the descriptor
        proc = subprocess.Popen(
            [*POMOCORE, command, *args],
            env=pomocore_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return ConsumerProcess(proc, log)
