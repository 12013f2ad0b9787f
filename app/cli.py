"""The ``hra`` console script: process commands (api, worker, run) and admin commands (db, keys, jobs).

    hra api [--host H] [--port P]             the HTTP API (uvicorn)
    hra worker --queues train|eval            a Celery worker (solo pool: torch/CUDA-safe)
    hra db upgrade                            migrate the database to the newest schema
    hra keys create|list|revoke               API keys: create (printed once), list, revoke (app/cli_keys.py)
    hra jobs reap                             re-queue or fail jobs whose worker stopped reporting
    hra objects sweep [--grace-seconds S] [--dry-run]   housekeeping: finish interrupted erasures, delete orphan
                                              objects (app/cli_objects.py; the workers run it periodically)
    hra tenants show|quota TENANT ...         a tenant's quotas and usage; per-tenant overrides (app/cli_tenants.py)
    hra run [--host H] [--port P] [--rotate-key]   embedded mode: migrate, then API + train worker + eval worker,
                                              restarted when they die (app/supervisor.py); the same key each start

Configuration comes from ``HRA_*`` environment variables (``app.settings``); ``PORT`` sets the API port.
The client verbs (enroll, adapt, heads, transcribe, speakers) talk to a running server: ``app/cli_remote.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from app.cli_keys import add_key_commands
from app.cli_objects import add_object_commands
from app.cli_remote import add_remote_verbs, run_remote
from app.cli_tenants import add_tenant_commands
from app.settings import Settings, get_settings

logger = logging.getLogger("hra")

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


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
        timeout_keep_alive=settings.api_keep_alive_seconds,
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


def run_key(settings: Settings, rotate: bool = False) -> tuple[str, str]:
    """The key ``hra run`` serves with, and what to print about it: ``HRA_BOOTSTRAP_API_KEY`` if set, else the key
    kept (hashed in the database, in full in ``var/api-key``, mode 0600) across restarts (``app.security``)."""
    if settings.bootstrap_api_key:
        if rotate:
            raise SystemExit("--rotate-key: the key is HRA_BOOTSTRAP_API_KEY; change that variable instead")
        return settings.bootstrap_api_key, "API key: HRA_BOOTSTRAP_API_KEY (Authorization: Bearer <key>)"
    from app.cli_keys import admin_session
    from app.security import RUN_KEY_FILE, ensure_run_key, shown_prefix

    path = settings.var_dir / RUN_KEY_FILE
    with admin_session(settings) as db:
        found = ensure_run_key(db, path, rotate)
    if not found.minted:
        return found.key, (
            f"API key unchanged: {shown_prefix(found.key)}… (the whole key is in {path}; "
            "`hra run --rotate-key` replaces it)"
        )
    note = f"; the previous key {found.revoked_prefix}… is revoked" if found.revoked_prefix else ""
    return found.key, (
        f"New API key (Authorization: Bearer <key>), shown once here and kept in {path} (mode 0600){note}:\n{found.key}"
    )


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Embedded mode: one command, no servers. Restarts a child that dies (``app.supervisor``); stops on
    SIGINT/SIGTERM/SIGHUP (exit 0), or when a child keeps failing at once (non-zero)."""
    from app.services.queue import CeleryTaskQueue
    from app.supervisor import Supervisor, stop_on_signals
    from storage.migrate import upgrade

    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    # Create the broker's tables once here, before the processes race to create them.
    CeleryTaskQueue.for_settings(settings).ping()
    _, key_note = run_key(settings, args.rotate_key)
    host = args.host or settings.api_host
    port = args.port or settings.api_port

    should_stop = stop_on_signals()
    me = [sys.executable, "-m", "app.cli"]
    level = f"--log-level={args.log_level}"
    supervisor = Supervisor(
        {
            "api": [*me, "api", f"--host={host}", f"--port={port}", level],
            # One worker process for both queues, two task threads: one copy of torch and of the model instead of
            # two. Through a speaker's whole life (benchmarks/embedded_memory.py) the tree's peak PSS was 3.49 GB
            # against 4.19 GB with a worker per queue, the job as fast; two trainings at once are still possible.
            "worker": [*me, "worker", "--queues=train,eval", "--concurrency=2", level],
        }
    )
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"HRA service: http://{shown_host}:{port}  (API docs: http://{shown_host}:{port}/docs)", flush=True)
    print("Stop with Ctrl-C.", key_note, sep="\n", flush=True)
    return supervisor.run(should_stop)


# ---- admin commands ----------------------------------------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from storage.migrate import upgrade

    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    print("database is at the newest schema")
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
    run.add_argument("--rotate-key", action="store_true", help="mint a new API key and revoke the one kept in var/")
    run.set_defaults(func=cmd_run)

    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="migrate to the newest schema").set_defaults(func=cmd_db_upgrade)

    keys = sub.add_parser("keys", help="API keys")
    add_key_commands(keys.add_subparsers(dest="keys_command", required=True))

    jobs = sub.add_parser("jobs", help="adaptation jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    jobs_sub.add_parser("reap", help="re-queue or fail jobs whose worker stopped").set_defaults(func=cmd_jobs_reap)

    sub.add_parser("openapi", help="print the OpenAPI document").set_defaults(func=cmd_openapi)
    add_tenant_commands(sub)
    add_object_commands(sub)
    add_remote_verbs(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    if getattr(args, "remote_func", None) is not None:  # a client of some server: this machine's settings don't apply
        return run_remote(args)
    if args.command == "worker" and args.concurrency < 1:
        raise SystemExit("--concurrency must be >= 1")
    return int(args.func(args, get_settings()) or 0)


if __name__ == "__main__":
    sys.exit(main())
