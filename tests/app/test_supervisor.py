"""The restart policy of ``hra run``'s supervisor, on fake processes and a fake clock (the real processes, a
``kill -9`` and the API answering throughout are in tests/app/test_cli.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.supervisor import RestartPolicy, Supervisor


class FakeProcess:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.code: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.code

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        self.code = -sig

    def wait(self, timeout: float | None = None) -> int:
        return self.code if self.code is not None else 0

    def kill(self) -> None:
        self.code = -9


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world():
    clock = Clock()
    spawned: list[FakeProcess] = []

    def spawn(argv):
        spawned.append(FakeProcess(argv))
        return spawned[-1]

    policy = RestartPolicy(initial_backoff_s=1.0, max_backoff_s=30.0, stable_after_s=60.0, max_quick_failures=10)
    supervisor = Supervisor({"api": ["api"], "worker": ["worker"]}, policy, spawn=spawn, clock=clock)
    supervisor.start_all()
    return supervisor, clock, spawned


def current(supervisor, name) -> FakeProcess:
    return supervisor.children[name].process


def test_backoff_doubles_up_to_the_cap():
    policy = RestartPolicy()
    assert [policy.backoff_s(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_dead_child_is_restarted_after_the_backoff_and_the_others_are_left_alone(world):
    supervisor, clock, spawned = world
    api = current(supervisor, "api")
    current(supervisor, "worker").code = -9
    assert supervisor.step() is None
    assert supervisor.children["worker"].process is None  # waiting out the back-off
    clock.now += 0.9
    supervisor.step()
    assert supervisor.children["worker"].process is None
    clock.now += 0.2
    supervisor.step()
    assert current(supervisor, "worker") is spawned[-1] and len(spawned) == 3
    assert current(supervisor, "api") is api and api.signals == []


def test_quick_failures_back_off_longer_and_a_stable_run_resets_the_backoff(world):
    supervisor, clock, spawned = world
    waits = []
    for _ in range(4):  # dies right after each start
        current(supervisor, "worker").code = 1
        supervisor.step()
        started = clock.now
        while supervisor.children["worker"].process is None:
            clock.now += 0.5
            supervisor.step()
        waits.append(clock.now - started)
    assert waits == [1.0, 2.0, 4.0, 8.0]
    clock.now += 61  # up for longer than stable_after_s
    current(supervisor, "worker").code = -9
    supervisor.step()
    assert supervisor.children["worker"].restart_at == clock.now + 1.0


def test_a_crash_loop_gives_up_with_a_nonzero_code(world):
    supervisor, clock, _ = world
    for attempt in range(1, 11):
        current(supervisor, "api").code = 3
        code = supervisor.step()
        if attempt == 10:
            assert code == 3
            break
        assert code is None
        clock.now += 31
        supervisor.step()


def test_run_stops_every_child_when_asked():
    spawned: list[FakeProcess] = []
    supervisor = Supervisor({"a": ["a"], "b": ["b"]}, spawn=lambda argv: spawned.append(FakeProcess(argv)) or spawned[-1],
                            sleep=lambda s: None)
    calls = iter([False, False, True])
    assert supervisor.run(lambda: next(calls)) == 0
    assert len(spawned) == 2 and all(p.signals == [15] for p in spawned)


# ---- real processes: a supervisor that is hung up on or killed leaves no child behind ---------------------------

SUPERVISOR_SCRIPT = """
import sys
from app.supervisor import Supervisor, spawn, stop_on_signals
def spawn_and_tell(argv):
    process = spawn(argv)
    print(process.pid, flush=True)
    return process
should_stop = stop_on_signals()
child = [sys.executable, "-c", "import time; time.sleep(120)"]
sys.exit(Supervisor({"a": child, "b": child}, spawn=spawn_and_tell).run(should_stop))
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def _wait_gone(pids: list[int], within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _start_supervisor() -> tuple[subprocess.Popen, list[int]]:
    parent = subprocess.Popen([sys.executable, "-c", SUPERVISOR_SCRIPT], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    children = [int(parent.stdout.readline()) for _ in range(2)]
    time.sleep(0.3)
    return parent, children


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_supervisor_killed_with_sigkill_takes_its_children_with_it():
    parent, children = _start_supervisor()
    try:
        assert [p for p in children if _alive(p)], "the children should be running"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _wait_gone(children, 10) == []
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_hangup_stops_the_supervisor_and_its_children_cleanly():
    parent, children = _start_supervisor()
    try:
        parent.send_signal(signal.SIGHUP)
        assert parent.wait(30) == 0  # a stop asked for, not a crash
        assert _wait_gone(children, 10) == []
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
