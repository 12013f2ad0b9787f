"""A real uvicorn server on 127.0.0.1, in a thread of the test process, serving ``create_app(services=...)``.

The services are the test's own (SQLite copy, local object store, ``FakeML``; a real Celery queue on Redis when a
test needs a worker or the broker's queue depth), so a test can seed and inspect the database directly while
the client and the CLI talk to the server over real HTTP.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from app.container import Services
from app.main import create_app
from app.services.queue import CeleryTaskQueue, create_celery_app

REDIS_URL = os.environ.get("HRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(services: Services) -> Iterator[str]:
    """Serve the API on a free port until the block ends; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(services=services), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the test server on port {port} did not start")
        time.sleep(0.05)
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def redis_queues(services: Services) -> Iterator[None]:
    """Give ``services`` a real Celery queue on Redis under queue names of its own; delete them afterwards."""
    import redis

    run_id = uuid.uuid4().hex[:10]
    settings = services.settings.model_copy(
        update={"broker_url": REDIS_URL, "train_queue": f"train-{run_id}", "eval_queue": f"eval-{run_id}"}
    )
    services.settings = settings
    services.queue = CeleryTaskQueue(create_celery_app(settings), settings.train_queue, settings.eval_queue)
    services.queue.ping()  # no Redis: the test fails here, loudly
    try:
        yield
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for queue in (settings.train_queue, settings.eval_queue):  # the messages and kombu's routing keys
            names = client.keys(f"{queue}*") + [f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]
            client.delete(*names)
