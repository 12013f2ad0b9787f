"""The ``hra`` console script: process commands (api, worker, run) and admin commands (db, keys, jobs).

    hra api [--host H] [--port P]             the HTTP API (uvicorn)
    hra worker --queues train|eval            a Celery worker (solo pool: torch/CUDA-safe)
    hra db upgrade                            migrate the database to the newest schema
    hra keys create --tenant NAME             a new API key (printed once, as the last line)
    hra jobs reap                             re-queue or fail jobs whose worker stopped reporting
    hra run [--host H] [--port P]             embedded mode: migrate, then API + train worker + eval worker

Configuration comes from ``HRA_*`` environment variables (``app.settings``); ``PORT`` sets the API port.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from app.settings import Settings, get_settings

logger = logging.getLogger("hra")

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
SHUTDOWN_GRACE_S = 15.0  # children get SIGTERM, then SIGKILL after this long (tasks are acked late: safe)


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# ---- process commands --------------------------------------------------------------------------------------


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    settings.var_dir.mkdir(parents=True, exist_ok=True)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=10,
    )
    return 0


def queue_names(settings: Settings, queues: str) -> list[str]:
    """``train``/``eval`` name the configured queues (``settings.train_queue``/``eval_queue``)."""
    aliases = {"train": settings.train_queue, "eval": settings.eval_queue}
    names = [aliases.get(q.strip(), q.strip()) for q in queues.split(",") if q.strip()]
    if not names:
        raise SystemExit("--queues needs at least one queue name")
    return names


def worker_argv(args: argparse.Namespace, settings: Settings) -> list[str]:
    queues = queue_names(settings, args.queues)
    pool = "solo" if args.concurrency == 1 else "threads"  # never prefork: torch/CUDA do not survive fork
    return [
        "worker",
        f"--pool={pool}",
        f"--concurrency={args.concurrency}",
        f"--queues={','.join(queues)}",
        f"--hostname={args.queues.replace(',', '+')}-{os.getpid()}@%h",
        f"--loglevel={args.log_level.upper()}",
        "--without-gossip",
        "--without-mingle",
    ]


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    # The one place app/ reaches into workers/: this command runs the worker's Celery app in this process.
    from workers.celery_app import celery_app

    celery_app.worker_main(worker_argv(args, settings))
    return 0


def _spawn(name: str, argv: list[str]) -> subprocess.Popen:
    # Own session: a terminal's Ctrl-C reaches only this supervisor, which forwards one SIGTERM to each child.
    logger.info("starting %s: %s", name, " ".join(argv))
    return subprocess.Popen(argv, start_new_session=True)


def _stop_children(children: dict[str, subprocess.Popen]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_GRACE_S
    for name, proc in children.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0f s; killing it", name, SHUTDOWN_GRACE_S)
            proc.kill()
            proc.wait()


def ensure_bootstrap_key(settings: Settings) -> str:
    """The key to print: ``HRA_BOOTSTRAP_API_KEY`` if set, else a new key for tenant ``default`` (stored hashed)."""
    if settings.bootstrap_api_key:
        return settings.bootstrap_api_key
    from app.security import DEFAULT_TENANT, create_api_key
    from storage.db import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as db:
            _, key = create_api_key(db, DEFAULT_TENANT)
            db.commit()
    finally:
        engine.dispose()
    return key


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Embedded mode: one command, no servers. Exits when any child exits, or on SIGINT/SIGTERM."""
    from app.services.queue import CeleryTaskQueue
    from storage.migrate import upgrade

    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    # Create the broker's tables once here, before three processes race to create them.
    CeleryTaskQueue.for_settings(settings).ping()
    key = ensure_bootstrap_key(settings)
    host = args.host or settings.api_host
    port = args.port or settings.api_port

    stopping = {"signal": 0}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    me = [sys.executable, "-m", "app.cli"]
    level = f"--log-level={args.log_level}"
    children: dict[str, subprocess.Popen] = {}
    exit_code = 0
    try:
        children["api"] = _spawn("api", [*me, "api", f"--host={host}", f"--port={port}", level])
        children["worker-train"] = _spawn("worker-train", [*me, "worker", "--queues=train", level])
        children["worker-eval"] = _spawn("worker-eval", [*me, "worker", "--queues=eval", level])
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        print(f"HRA service: http://{shown_host}:{port}  (API docs: http://{shown_host}:{port}/docs)", flush=True)
        print("Stop with Ctrl-C. API key (Authorization: Bearer <key>):", flush=True)
        print(key, flush=True)
        while not stopping["signal"]:
            for name, proc in children.items():
                code = proc.poll()
                if code is not None:
                    logger.error("%s exited with %s; stopping the others", name, code)
                    exit_code = code or 1
                    stopping["signal"] = -1
                    break
            time.sleep(0.3)
    finally:
        _stop_children(children)
    return exit_code


# ---- admin commands ----------------------------------------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from storage.migrate import upgrade

    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    print("database is at the newest schema")
    return 0


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from app.security import create_api_key
    from storage.db import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as db:
            tenant, key = create_api_key(db, args.tenant)
            db.commit()
            print(f"new API key for tenant {tenant.name!r} ({tenant.id}); it is shown only once:")
    finally:
        engine.dispose()
    print(key)
    return 0


def cmd_jobs_reap(args: argparse.Namespace, settings: Settings) -> int:
    from app.container import build_services
    from app.services.jobs import reap_stale_jobs

    report = reap_stale_jobs(build_services(settings))
    print(report.summary())
    return 0


def cmd_openapi(args: argparse.Namespace, settings: Settings) -> int:
    """Print the API's OpenAPI document (docs/openapi.json is this output; a test keeps them equal)."""
    print(json.dumps(openapi_document(), indent=2, sort_keys=True))
    return 0


def openapi_document() -> dict:
    import tempfile

    from app.container import build_services
    from app.main import create_app

    with tempfile.TemporaryDirectory() as var_dir:  # the document needs no real backing services
        return create_app(services=build_services(Settings(var_dir=Path(var_dir)))).openapi()


# ---- parser ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hra", description="Continual per-speaker ASR personalization service.")
    parser.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, type=str.upper)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_log_level(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS, type=str.upper)
        return p

    api = with_log_level(sub.add_parser("api", help="run the HTTP API"))
    api.add_argument("--host", default=None, help="default: HRA_API_HOST (127.0.0.1)")
    api.add_argument("--port", type=int, default=None, help="default: PORT (8000)")
    api.set_defaults(func=cmd_api)

    worker = with_log_level(sub.add_parser("worker", help="run a Celery worker"))
    worker.add_argument("--queues", required=True, help="train, eval, or both: train,eval")
    worker.add_argument("--concurrency", type=int, default=1, help="1: solo pool (default); more: threads pool")
    worker.set_defaults(func=cmd_worker)

    run = with_log_level(sub.add_parser("run", help="embedded mode: API + train worker + eval worker"))
    run.add_argument("--host", default=None)
    run.add_argument("--port", type=int, default=None)
    run.set_defaults(func=cmd_run)

    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="migrate to the newest schema").set_defaults(func=cmd_db_upgrade)

    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (printed once, as the last line)")
    create.add_argument("--tenant", required=True)
    create.set_defaults(func=cmd_keys_create)

    jobs = sub.add_parser("jobs", help="adaptation jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    jobs_sub.add_parser("reap", help="re-queue or fail jobs whose worker stopped").set_defaults(func=cmd_jobs_reap)

    sub.add_parser("openapi", help="print the OpenAPI document").set_defaults(func=cmd_openapi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    if args.command == "worker" and args.concurrency < 1:
        raise SystemExit("--concurrency must be >= 1")
    return int(args.func(args, get_settings()) or 0)


if __name__ == "__main__":
    sys.exit(main())
