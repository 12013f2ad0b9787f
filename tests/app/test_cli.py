"""The ``hra`` console script."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.cli import build_parser, queue_names, worker_argv
from app.security import authenticate
from tests.app.support import make_services, make_settings

REPO = Path(__file__).resolve().parents[2]


def hra(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_db_upgrade_then_keys_create_prints_a_working_key_last(tmp_path):
    env = {"HRA_VAR_DIR": str(tmp_path), "HRA_BOOTSTRAP_API_KEY": ""}
    upgraded = hra("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    created = hra("keys", "create", "--tenant", "acme", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("hra_") and len(key) > 40
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'hra.db'}")
    services = make_services(settings)
    with services.session_factory() as db:
        assert authenticate(db, settings, key).name == "acme"
        assert authenticate(db, settings, key + "x") is None


def test_jobs_reap_runs(tmp_path):
    env = {"HRA_VAR_DIR": str(tmp_path)}
    assert hra("db", "upgrade", env=env).returncode == 0
    reaped = hra("jobs", "reap", env=env)
    assert reaped.returncode == 0, reaped.stderr
    assert "requeued for training: 0" in reaped.stdout


def test_worker_queue_aliases_follow_the_settings_and_the_pool_is_torch_safe(tmp_path):
    settings = make_settings(tmp_path, "sqlite://", train_queue="train-x", eval_queue="eval-x")
    assert queue_names(settings, "train,eval") == ["train-x", "eval-x"]
    assert queue_names(settings, "custom") == ["custom"]
    argv = worker_argv(build_parser().parse_args(["worker", "--queues", "train"]), settings)
    assert "--pool=solo" in argv and "--queues=train-x" in argv
    threads = worker_argv(build_parser().parse_args(["worker", "--queues", "eval", "--concurrency", "2"]), settings)
    assert "--pool=threads" in threads


def test_missing_command_is_a_usage_error():
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def start_run(tmp_path: Path, port: int, *args: str, log_name: str = "run.log") -> tuple[subprocess.Popen, str, Path]:
    """``hra run`` on ``tmp_path/var`` and ``port``, once its API answers /readyz."""
    env = {**os.environ, "HRA_VAR_DIR": str(tmp_path / "var"), "PORT": str(port)}
    env.pop("HRA_BOOTSTRAP_API_KEY", None)
    log_path = tmp_path / log_name
    log = log_path.open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run", *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base, log_path
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail("hra run never became ready:\n" + log_path.read_text()[-4000:])


def kill_run(proc: subprocess.Popen) -> None:
    children = children_of(proc.pid)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    for child in children:
        if alive(child):
            os.kill(child, signal.SIGKILL)


@pytest.fixture
def embedded(tmp_path):
    proc, base, log = start_run(tmp_path, free_port())
    yield proc, base, log
    kill_run(proc)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def child_running(parent: int, marker: str) -> int | None:
    """The pid of the live child of ``parent`` whose command line contains ``marker``."""
    return next((c for c in children_of(parent) if marker in cmdline(c) and alive(c)), None)


def test_run_serves_with_a_key_it_keeps_and_stops_everything_on_sigterm(embedded, tmp_path):
    proc, base, log = embedded
    lines = log.read_text().splitlines()
    url_line = next(line for line in lines if line.startswith("HRA service: "))
    assert base in url_line
    key_file = tmp_path / "var" / "api-key"
    key = key_file.read_text().strip()
    assert key in lines and lines.index(key) > lines.index(url_line)  # printed once, when minted
    assert key_file.stat().st_mode & 0o777 == 0o600
    response = httpx.post(f"{base}/v1/speakers", json={}, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 201, response.text
    # An idle connection outlives a client's pool expiry (httpx: 5 s): reused after 6 s, it still answers (with
    # uvicorn's default of 5 s the server had closed it, and a client racing that close got a transport error).
    conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() and conn.sock is not None
        first_socket = conn.sock
        time.sleep(6)
        conn.request("GET", "/healthz")  # http.client raises RemoteDisconnected if the server closed it meanwhile
        response = conn.getresponse()
        assert response.status == 200 and conn.sock is first_socket
    finally:
        conn.close()
    children = children_of(proc.pid)
    assert len(children) == 2  # the API and one worker (training and evaluation in two threads)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0
    assert not any(alive(c) for c in children)

    # The next start serves the same key, and does not print it.
    again, base, log2 = start_run(tmp_path, free_port(), log_name="run2.log")
    try:
        text = log2.read_text()
        assert "API key unchanged: " + key[:12] in text and key not in text
        assert httpx.get(f"{base}/v1/speakers", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    finally:
        kill_run(again)


def test_run_restarts_a_killed_worker_while_the_api_keeps_answering(embedded, tmp_path):
    proc, base, log = embedded
    key = (tmp_path / "var" / "api-key").read_text().strip()
    headers = {"Authorization": f"Bearer {key}"}
    old = child_running(proc.pid, "--queues=train")
    assert old is not None, [cmdline(c) for c in children_of(proc.pid)]
    api = child_running(proc.pid, " api ")
    os.kill(old, signal.SIGKILL)
    answers, new = [], None
    deadline = time.monotonic() + 30
    while new is None and time.monotonic() < deadline:
        answers.append(httpx.get(f"{base}/healthz", timeout=5).status_code)
        answers.append(httpx.get(f"{base}/v1/speakers", headers=headers, timeout=5).status_code)
        new = next((c for c in children_of(proc.pid) if c != old and "--queues=train" in cmdline(c)), None)
        time.sleep(0.1)
    assert new is not None, log.read_text()[-3000:]
    assert proc.poll() is None and child_running(proc.pid, " api ") == api  # the API was never restarted
    assert set(answers) == {200} and len(answers) >= 4
    assert "worker stopped (signal SIGKILL" in log.read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0
    assert not alive(new) and not alive(api)


def test_db_upgrade_migrates_the_database_the_settings_name(tmp_path):
    from storage import migrate

    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    upgraded = hra("db", "upgrade", env={"HRA_VAR_DIR": str(tmp_path), "HRA_DATABASE_URL": url})
    assert upgraded.returncode == 0, upgraded.stderr
    assert migrate.current_revision(url) == migrate.head_revision()
    assert not (tmp_path / "hra.db").exists()
