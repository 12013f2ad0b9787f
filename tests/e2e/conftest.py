"""Start the real service (API + train worker + eval worker processes) for end-to-end tests over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HRA = str(Path(sys.executable).with_name("hra"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningService:
    base_url: str
    api_key: str
    log_dir: Path

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=120.0
        )

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.log_dir.glob("*.log")))


def wait_ready(base_url: str, processes: list[subprocess.Popen], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in processes:
            if proc.poll() is not None:
                raise RuntimeError(f"process {proc.args} exited with {proc.returncode} before the service was ready")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{base_url}/readyz not ready after {timeout_s} s")


def stop(processes: list[subprocess.Popen]) -> None:
    for proc in processes:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = log_path.open("wb")
    return subprocess.Popen(
        args, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


@pytest.fixture(scope="module")
def embedded_service(tmp_path_factory) -> Iterator[RunningService]:
    """`hra run` exactly as `make run` starts it, on a fresh var directory."""
    var_dir = tmp_path_factory.mktemp("embedded-var")
    port = free_port()
    api_key = f"e2e-{uuid.uuid4().hex}"
    env = {**os.environ, "HRA_VAR_DIR": str(var_dir), "PORT": str(port), "HRA_BOOTSTRAP_API_KEY": api_key}
    proc = spawn([HRA, "run"], env, var_dir / "hra-run.log")
    base_url = f"http://127.0.0.1:{port}"
    service = RunningService(base_url, api_key, var_dir)
    try:
        wait_ready(base_url, [proc])
        yield service
    finally:
        stop([proc])


@pytest.fixture(scope="module")
def distributed_service(tmp_path_factory, postgres_url, s3_endpoint, redis_url) -> Iterator[RunningService]:
    """API, train worker and eval worker as separate processes on Postgres, Redis and the S3 API."""
    log_dir = tmp_path_factory.mktemp("distributed-logs")
    port = free_port()
    run_id = uuid.uuid4().hex[:10]
    api_key = f"e2e-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "HRA_VAR_DIR": str(log_dir),
        "HRA_DATABASE_URL": postgres_url,
        "HRA_BROKER_URL": redis_url,
        "HRA_TRAIN_QUEUE": f"train-{run_id}",
        "HRA_EVAL_QUEUE": f"eval-{run_id}",
        "HRA_OBJECT_STORE": "s3",
        "HRA_S3_ENDPOINT": s3_endpoint["endpoint"],
        "HRA_S3_ACCESS_KEY": s3_endpoint["access_key"],
        "HRA_S3_SECRET_KEY": s3_endpoint["secret_key"],
        "HRA_S3_BUCKET": f"e2e-{run_id}",
        "HRA_BOOTSTRAP_API_KEY": api_key,
        "PORT": str(port),
    }
    procs = [
        spawn([HRA, "api", "--port", str(port)], env, log_dir / "api.log"),
        spawn([HRA, "worker", "--queues", "train"], env, log_dir / "worker-train.log"),
        spawn([HRA, "worker", "--queues", "eval"], env, log_dir / "worker-eval.log"),
    ]
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, procs)
        yield RunningService(base_url, api_key, log_dir)
    finally:
        stop(procs)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis as the Celery broker; each run uses its own queue names on it."""
    url = os.environ.get("HRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    import redis

    redis.Redis.from_url(url, socket_connect_timeout=3).ping()  # a missing broker fails the suite
    return url
