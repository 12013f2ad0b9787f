"""The supervisor of ``hra run`` (embedded mode): keeps the API and the worker running.

A child that exits is started again after a back-off that doubles with each quick failure (1 s, 2 s, 4 s, ...
capped at 30 s) and resets once a child has stayed up for ``stable_after_s``; the other children are not touched,
so a worker killed by the kernel's OOM killer or a ``kill -9`` costs its job one attempt (the reaper re-queues it)
and the API keeps answering. A child that fails quickly ``max_quick_failures`` times in a row (a crash loop: a port
already taken, a broken configuration) makes the supervisor give up: it stops the others and exits non-zero.
SIGINT/SIGTERM/SIGHUP stop everything: SIGTERM to each child, SIGKILL after ``SHUTDOWN_GRACE_S`` (tasks are acked
late: an interrupted job is redelivered or re-queued). SIGHUP is there because closing the terminal that runs
``make run`` sends it, and the children, in sessions of their own, would not hear it. A supervisor that dies without
running its shutdown (``kill -9``, the OOM killer) takes its children with it: on Linux each child asks the kernel
for a SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so no worker goes on holding the port or the queue.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

logger = logging.getLogger("hra.supervisor")

SHUTDOWN_GRACE_S = 15.0
POLL_S = 0.2


@dataclass(frozen=True)
class RestartPolicy:
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    stable_after_s: float = 60.0  # a child up this long is healthy again: its next failure waits initial_backoff_s
    max_quick_failures: int = 10  # in a row, each before stable_after_s: give up (after ~2.5 min of back-off)

    def backoff_s(self, failures: int) -> float:
        """The wait before the restart that follows the ``failures``-th quick failure in a row (1-based)."""
        return min(self.max_backoff_s, self.initial_backoff_s * 2 ** max(0, failures - 1))


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0  # quick failures in a row
    restart_at: float | None = None  # when a dead child is due to start again
    starts: int = 0
    history: list[int] = field(default_factory=list)  # exit codes, for logs and tests


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


def _terminate_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """For ``Popen(preexec_fn=...)``: the child gets SIGTERM when the process that started it dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def in_child() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died between fork and prctl: nobody would signal us
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def spawn(argv: list[str]) -> subprocess.Popen:
    # Own session: a terminal's Ctrl-C reaches only the supervisor, which forwards one SIGTERM to each child.
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=_terminate_with_parent(os.getpid()))


def stop_on_signals() -> Callable[[], bool]:
    """Install handlers for ``STOP_SIGNALS``; the returned callable says whether one has arrived (``run``'s
    ``should_stop``)."""
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    return lambda: bool(received)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Runs ``children`` until ``should_stop()`` or a crash loop; see the module docstring."""

    def __init__(
        self,
        children: dict[str, list[str]],
        policy: RestartPolicy = RestartPolicy(),
        spawn: Callable[[list[str]], subprocess.Popen] = spawn,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.children = {name: Child(name, argv) for name, argv in children.items()}
        self.policy = policy
        self._spawn = spawn
        self._clock = clock
        self._sleep = sleep

    def _start(self, child: Child) -> None:
        logger.info("starting %s: %s", child.name, " ".join(child.argv))
        child.process = self._spawn(child.argv)
        child.started_at = self._clock()
        child.restart_at = None
        child.starts += 1

    def start_all(self) -> None:
        for child in self.children.values():
            self._start(child)

    def step(self) -> int | None:
        """One round: notice exits, schedule and make restarts. An exit code when the supervisor gives up."""
        now = self._clock()
        for child in self.children.values():
            if child.process is not None:
                code = child.process.poll()
                if code is None:
                    continue
                child.process = None
                child.history.append(code)
                uptime = now - child.started_at
                child.failures = 1 if uptime >= self.policy.stable_after_s else child.failures + 1
                if child.failures >= self.policy.max_quick_failures:
                    logger.error(
                        "%s failed %d times in a row (last: %s after %.1f s); giving up",
                        child.name, child.failures, describe_exit(code), uptime,
                    )
                    return code or 1
                delay = self.policy.backoff_s(child.failures)
                logger.error(
                    "%s stopped (%s after %.1f s up); restarting it in %.0f s", child.name, describe_exit(code), uptime,
                    delay,
                )
                child.restart_at = now + delay
            elif child.restart_at is not None and now >= child.restart_at:
                self._start(child)
        return None

    def run(self, should_stop: Callable[[], bool]) -> int:
        """Start the children and keep them up until ``should_stop()`` (then 0) or a crash loop (non-zero)."""
        try:
            self.start_all()
            while not should_stop():
                code = self.step()
                if code is not None:
                    return code
                self._sleep(POLL_S)
            return 0
        finally:
            self.stop_all()

    def stop_all(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        running = {c.name: c.process for c in self.children.values() if c.process is not None}
        for process in running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for name, process in running.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0f s; killing it", name, grace_s)
                process.kill()
                process.wait()
