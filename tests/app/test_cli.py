"""The ``hra`` console script."""

from __future__ import annotations

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


@pytest.fixture
def embedded(tmp_path):
    port = free_port()
    env = {**os.environ, "HRA_VAR_DIR": str(tmp_path / "var"), "PORT": str(port)}
    env.pop("HRA_BOOTSTRAP_API_KEY", None)
    log = (tmp_path / "run.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "run.log").read_text()
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail("hra run never became ready:\n" + (tmp_path / "run.log").read_text()[-4000:])
    yield proc, base, tmp_path / "run.log"
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    for child in children_of(proc.pid):
        os.kill(child, signal.SIGKILL)


def test_run_serves_with_a_fresh_key_and_stops_everything_on_sigterm(embedded):
    proc, base, log = embedded
    lines = log.read_text().splitlines()
    url_line = next(line for line in lines if line.startswith("HRA service: "))
    assert base in url_line
    key = lines[lines.index(url_line) + 2].strip()
    response = httpx.post(f"{base}/v1/speakers", json={}, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 201, response.text
    children = children_of(proc.pid)
    assert len(children) == 3
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0
    assert not any(alive(c) for c in children)


def test_run_stops_when_a_child_dies(embedded):
    proc, _, _ = embedded
    children = children_of(proc.pid)
    os.kill(children[0], signal.SIGKILL)
    assert proc.wait(timeout=40) != 0
    assert not any(alive(c) for c in children)


def test_db_upgrade_migrates_the_database_the_settings_name(tmp_path):
    from storage import migrate

    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    upgraded = hra("db", "upgrade", env={"HRA_VAR_DIR": str(tmp_path), "HRA_DATABASE_URL": url})
    assert upgraded.returncode == 0, upgraded.stderr
    assert migrate.current_revision(url) == migrate.head_revision()
    assert not (tmp_path / "hra.db").exists()
