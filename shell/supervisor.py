"""`pomocore run --processes N`: N consumer processes in one group, each with its own name.

The parent only supervises: it forwards SIGTERM/SIGINT, restarts a child that died
unexpectedly (with backoff, so a crash loop does not spin), kills and restarts a child
that is stuck (it stopped reporting itself alive for POMOCORE_LIVENESS_TIMEOUT_S: its
event loop or a lane is stuck, or the whole process is; or it never reported itself
alive within `startup_deadline_s` of its start), and exits 0 when every child has
drained, or non-zero when a child could not be kept alive.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import multiprocessing.process
import signal
import time
from multiprocessing.sharedctypes import Synchronized
from types import FrameType

from pomocore.core.connect import MONGO_START_TIMEOUT_S
from pomocore.core.retry import backoff_s
from pomocore.core.settings import Settings
from pomocore.health import SupervisorOps  # /metrics, /healthz, /readyz
from pomocore.run import run_single_process

log = logging.getLogger("pomocore.supervisor")

MAX_RESTARTS_PER_CHILD = 20


def startup_deadline_s(settings: Settings) -> float:
    """How long a child may take from its start to its first report of being alive. Its
    start-up waits for nothing longer than MongoDB (MONGO_START_TIMEOUT_S, after which it
    exits by itself); past that and the liveness timeout it is stuck, as a child that
    stopped reporting is. (Seen in CI under load: a child silent from its start, never
    restarted because it had never reported.)"""
    return MONGO_START_TIMEOUT_S + settings.liveness_timeout_s


def child_main(settings: Settings, index: int, beat: Synchronized[float] | None = None) -> None:
    name = f"{settings.consumer_name}-{index}"
    # metrics_port=0: the parent serves /metrics (aggregating the children's files)
    run_single_process(
        dataclasses.replace(settings, consumer_name=name, processes=1, metrics_port=0), beat
    )


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ctx = mp.get_context("spawn")  # no inherited event loop, sockets or locks
        self.children: dict[int, multiprocessing.process.BaseProcess] = {}
        self.restarts: dict[int, int] = {}
        # Per child: when it last reported itself alive (time.monotonic(); 0: not yet).
        self.beats: dict[int, Synchronized[float]] = {}
        self.started_at: dict[int, float] = {}  # per child: its start (time.monotonic())
        self.stopping = False
        self.ops = SupervisorOps(settings)

    def _start(self, index: int) -> None:
        beat = self.ctx.Value("d", 0.0)
        self.beats[index] = beat
        proc = self.ctx.Process(
            target=child_main, args=(self.settings, index, beat), name=f"consumer-{index}"
        )
        proc.start()
        self.started_at[index] = time.monotonic()
        self.children[index] = proc
        log.info("consumer process started", extra={"index": index, "child_pid": proc.pid})

    def _kill_if_stuck(self, index: int, proc: multiprocessing.process.BaseProcess) -> None:
        """A child that reported itself alive once and then stopped for the liveness
        timeout is stuck, and so is one that has not reported within the start-up
        deadline: kill it (its entries stay pending), and the loop restarts it."""
        now, last = time.monotonic(), self.beats[index].value
        if last:
            if now - last <= self.settings.liveness_timeout_s:
                return
            message, silent_s = "consumer process stuck; killing it", now - last
        else:
            silent_s = now - self.started_at[index]
            if silent_s <= startup_deadline_s(self.settings):
                return
            message = "consumer process stuck in start-up; killing it"
        log.error(message, extra={"index": index, "child_pid": proc.pid, "silent_s": silent_s})
        proc.kill()
        proc.join(10)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for proc in self.children.values():
            if proc.is_alive() and proc.pid:
                proc.terminate()  # SIGTERM: the child drains and exits 0

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.ops.start(
            draining=lambda: self.stopping,
            alive=lambda: any(p.is_alive() for p in self.children.values()),
        )
        for index in range(self.settings.processes):
            self._start(index)
        while not self.stopping:
            time.sleep(0.2)
            for index, proc in list(self.children.items()):
                if proc.is_alive() and not self.stopping:
                    self._kill_if_stuck(index, proc)
                if proc.is_alive() or self.stopping:
                    continue
                self.ops.child_exited(proc.pid)
                # Accounted for: a stop during the restart delay below must not read its
                # exit (a crash, or the SIGKILL of a stuck child) as a failed drain.
                del self.children[index]
                self.restarts[index] = self.restarts.get(index, 0) + 1
                if self.restarts[index] > MAX_RESTARTS_PER_CHILD:
                    log.error("consumer process keeps dying; giving up", extra={"index": index})
                    self._on_signal(signal.SIGTERM, None)
                    return self._wait(exit_code=1)
                delay = backoff_s(self.restarts[index], base_s=0.5, cap_s=30.0)
                log.error(
                    "consumer process died; restarting",
                    extra={"index": index, "exitcode": proc.exitcode, "restart_in_s": delay},
                )
                time.sleep(delay)
                if not self.stopping:
                    self._start(index)
        return self._wait(exit_code=0)

    def _wait(self, exit_code: int) -> int:
        deadline = time.monotonic() + self.settings.shutdown_timeout_s + 5
        for proc in self.children.values():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("consumer process did not drain in time; killing it")
                proc.kill()
                proc.join()
                exit_code = 1
            elif proc.exitcode not in (0, -signal.SIGTERM):
                exit_code = exit_code or 1
        self.ops.close()
        return exit_code
