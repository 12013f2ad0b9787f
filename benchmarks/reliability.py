"""Reliability report (``make reliability``; not part of ``make test``): the fault scenarios of
tests/reliability, many trials each at random moments, and a bounded load; a table, a JSON record under
benchmarks/results/, and one JSON line last.

    python -m benchmarks.reliability [--trials 20] [--load-seconds 60] [--clients 50] [--store s3|local]
    TRIALS=5 make reliability

Deployment under test: the distributed one, on this machine: PostgreSQL (``HRA_TEST_POSTGRES_URL``, a schema of
its own, dropped afterwards), Redis (``HRA_TEST_REDIS_URL``), S3 (a moto server; ``--store local`` for a
directory), the real API (uvicorn) and one train and one eval Celery worker as processes, with the fake model
(tests/app/fakes.py): the report measures the service's machinery (durability, job lifecycle, recovery), not the
model. Jobs are reaped 2 s after their worker stops beating (``HRA_JOB_STALE_AFTER_SECONDS``; 60 by default).

Scenarios (each trial audited as tests/reliability/harness.py says; an unexpected error counts as a problem):

* ``kill -9 train worker``: at a random training step (the last one reaches into storing the head); the worker
  is started again, as ``hra run``'s supervisor does. Latency: job created -> terminal.
* ``kill -9 eval worker``: 0-2.1 s into an evaluation (its two transcription calls of 1 s, then the report and
  the decision; a kill may also land just after the decision). Latency as above.
* ``kill -9 API``: 6 clients uploading; the API is killed after 0.5-2 s and started again on the same port.
  Latency: per upload request (connection errors while it is down are counted apart).
* ``load``: ``--clients`` concurrent clients over loopback for ``--load-seconds``: 40% upload utterances, 40%
  transcribe (half the base model, half a speaker's head in service), 20% adapt (start a job, poll it every 0.25 s
  until it ends, again). Latency: per request.

Columns: jobs lost (row gone) / stuck (not terminal after the trial), utterances lost (acknowledged 201 but no row,
or not listed by the API), orphans (objects no row refers to) before -> after the sweeper, half rows (a row whose
object is missing), 5xx responses, connection errors (requests that got no response: expected while the API is
killed; under load, see ``transport_errors`` in the JSON), p50/p99 latency in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import select
import subprocess
import sys
import time
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.app.fakes import tone
from tests.app.support import seed_speaker
from tests.conftest import (
    _MOTO_SERVER,
    DEFAULT_POSTGRES_URL,
    S3_REGION,
    _schema_name,
    _schema_url,
    drop_schema,
    remove_bucket,
)
from tests.reliability.harness import (
    TERMINAL,
    Audit,
    Stack,
    TrialResult,
    audit,
    stack_settings,
    start_workers,
    trial_kill_api,
    trial_kill_eval_worker,
    trial_kill_train_worker,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# ---- backing services ----------------------------------------------------------------------------------------


class Backends:
    """A Postgres schema, and a moto S3 server when asked; removed by ``close``."""

    def __init__(self, store: str) -> None:
        self.admin_url = os.environ.get("HRA_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
        self.admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self.schema = _schema_name()
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        self.database_url = _schema_url(self.admin_url, self.schema)
        from storage.migrate import upgrade

        upgrade(self.database_url)
        self.moto: subprocess.Popen | None = None
        self.s3: dict[str, Any] | None = None
        self.bucket = f"hra-rel-{uuid.uuid4().hex[:12]}"
        if store == "s3":
            self.moto = subprocess.Popen([sys.executable, "-c", _MOTO_SERVER], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert self.moto.stdout is not None
            ready, _, _ = select.select([self.moto.stdout], [], [], 60)
            port = self.moto.stdout.readline().strip() if ready else ""
            if not port.isdigit():
                raise RuntimeError("the moto S3 server did not start")
            self.s3 = {"endpoint": f"127.0.0.1:{port}", "access_key": "rel-access", "secret_key": "rel-secret",
                       "region": S3_REGION}

    def close(self) -> None:
        if self.s3 is not None:
            try:
                remove_bucket(self.s3, self.bucket)
            except Exception:  # noqa: BLE001 - the server goes away with the bucket anyway
                pass
        if self.moto is not None and self.moto.stdin is not None:
            self.moto.stdin.close()
            self.moto.wait(timeout=10)
        drop_schema(self.admin, self.schema)
        self.admin.dispose()


# ---- scenarios -------------------------------------------------------------------------------------------------


def run_trials(name: str, trials: int, one_trial, latency_kind: str) -> dict[str, Any]:
    total = Audit()
    latencies: list[float] = []
    http_5xx = connection_errors = 0
    details: list[dict[str, Any]] = []
    failures = 0
    started = time.monotonic()
    for i in range(trials):
        try:
            result: TrialResult = one_trial(i)
        except Exception as exc:  # noqa: BLE001 - a trial that breaks is a finding, the report goes on
            failures += 1
            total.problems.append(f"trial {i}: {type(exc).__name__}: {str(exc)[:2000]}")
            traceback.print_exc()
            continue
        total.add(result.audit)
        latencies += result.latencies_s
        http_5xx += result.http_5xx
        connection_errors += result.connection_errors
        details.append(result.detail)
        mark = "ok" if result.audit.ok() else "PROBLEM: " + "; ".join(result.audit.problems)[:300]
        print(f"  {name} {i + 1}/{trials}: {json.dumps(result.detail, default=str)} {mark}", flush=True)
    return {
        "scenario": name,
        "trials": trials,
        "trials_failed": failures,
        "jobs": total.jobs,
        "jobs_promoted": total.jobs_promoted,
        "jobs_lost": total.jobs_lost,
        "jobs_stuck": total.jobs_stuck + failures * name.startswith(("kill -9 train", "kill -9 eval")),
        "jobs_with_several_heads": total.jobs_with_several_heads,
        "double_promotions": total.double_promotions,
        "utterances_acked": total.utterances_acked,
        "utterances_lost": total.utterances_lost,
        "orphans_before_sweep": total.orphans_before_sweep,
        "orphans_after_sweep": total.orphans_after_sweep,
        "half_rows": total.half_rows + total.half_rows_after_sweep,
        "http_5xx": http_5xx,
        "connection_errors": connection_errors,
        "latency": latency_kind,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "killed_in": {state: sum(1 for d in details if d.get("killed_in") == state)
                      for state in sorted({str(d.get("killed_in")) for d in details if "killed_in" in d})},
        "seconds": round(time.monotonic() - started, 1),
        "problems": total.problems,
        "details": details,
    }


class Load:
    """``clients`` closed-loop clients for ``seconds`` (see the module docstring)."""

    def __init__(self, stack: Stack, url: str, clients: int, seconds: float, rng: random.Random) -> None:
        self.stack, self.url, self.clients, self.seconds, self.rng = stack, url, clients, seconds, rng
        self.records: list[tuple[str, int, float]] = []  # kind, status (0: connection error), seconds
        self.transport_errors: dict[str, int] = {}  # "kind: ExceptionType: message" -> count
        self.acked: list[uuid.UUID] = []
        self.jobs: list[uuid.UUID] = []

    def prepare(self) -> None:
        n_adapt = max(1, self.clients // 5)
        n_upload = max(1, (self.clients - n_adapt) // 2)
        n_transcribe = self.clients - n_adapt - n_upload
        self.adapters = [seed_speaker(self.stack.services, "load") for _ in range(n_adapt)]
        key = self.adapters[0].api_key
        self.key = key
        auth = {"Authorization": f"Bearer {key}"}
        self.upload_speakers = []
        for i in range(n_upload):
            r = httpx.post(f"{self.url}/v1/speakers", json={"display_name": f"load {i}"}, headers=auth, timeout=60)
            r.raise_for_status()
            self.upload_speakers.append(r.json()["id"])
        self.n_transcribe = n_transcribe
        self.upload_audio = [tone(0.4, 150 + 13 * i) for i in range(64)]
        self.transcribe_audio = tone(1.0, 440)

    async def _request(self, http: httpx.AsyncClient, kind: str, method: str, path: str, **kw: Any):
        started = time.monotonic()
        try:
            response = await http.request(method, path, **kw)
        except httpx.TransportError as exc:
            self.records.append((kind, 0, time.monotonic() - started))
            what = f"{kind}: {type(exc).__name__}: {str(exc)[:120]}"
            self.transport_errors[what] = self.transport_errors.get(what, 0) + 1
            await asyncio.sleep(0.05)
            return None
        self.records.append((kind, response.status_code, time.monotonic() - started))
        return response

    async def _uploader(self, http: httpx.AsyncClient, speaker_id: str, deadline: float) -> None:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            audio = self.upload_audio[i % len(self.upload_audio)]
            r = await self._request(http, "upload", "POST", f"/v1/speakers/{speaker_id}/utterances",
                                    files={"audio": ("u.wav", audio, "audio/wav")},
                                    data={"transcript": "unknown speech here", "split": "train"})
            if r is not None and r.status_code == 201:
                self.acked.append(uuid.UUID(r.json()["id"]))

    async def _transcriber(self, http: httpx.AsyncClient, index: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            files = {"audio": ("t.wav", self.transcribe_audio, "audio/wav")}
            if index % 2:
                speaker = self.adapters[index % len(self.adapters)].speaker_id
                await self._request(http, "transcribe (speaker)", "POST", f"/v1/speakers/{speaker}/transcriptions",
                                    files=files)
            else:
                await self._request(http, "transcribe (base)", "POST", "/v1/transcriptions", files=files)

    async def _adapter(self, http: httpx.AsyncClient, speaker_id: uuid.UUID, deadline: float) -> None:
        while time.monotonic() < deadline:
            r = await self._request(http, "adapt", "POST", f"/v1/speakers/{speaker_id}/adaptations",
                                    json={"head_type": "linear"})
            if r is None or r.status_code not in (201, 202):
                await asyncio.sleep(0.5)
                continue
            job_id = r.json()["id"]
            self.jobs.append(uuid.UUID(job_id))
            while time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                poll = await self._request(http, "poll job", "GET", f"/v1/jobs/{job_id}")
                if poll is not None and poll.status_code == 200 and poll.json()["state"] in {s.value for s in TERMINAL}:
                    break

    async def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        limits = httpx.Limits(max_connections=self.clients + 10, max_keepalive_connections=self.clients + 10)
        async with httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"},
                                     timeout=120, limits=limits) as http:
            tasks = [self._adapter(http, a.speaker_id, deadline) for a in self.adapters]
            tasks += [self._uploader(http, s, deadline) for s in self.upload_speakers]
            tasks += [self._transcriber(http, i, deadline) for i in range(self.n_transcribe)]
            await asyncio.gather(*tasks)


def run_load(stack: Stack, url: str, clients: int, seconds: float, rng: random.Random) -> dict[str, Any]:
    load = Load(stack, url, clients, seconds, rng)
    load.prepare()
    started = time.monotonic()
    asyncio.run(load.run())
    problems: list[str] = []
    try:  # the jobs still running when the load stopped must end too
        stack.wait_for(lambda: all((j := stack.job(job)) is not None and j.state in TERMINAL for job in load.jobs),
                       180, "the load's jobs to end")
    except TimeoutError as exc:
        problems.append(str(exc)[:500])
    result = audit(stack, load.jobs, load.acked)
    # Every acknowledged upload is listed by the API too.
    auth = {"Authorization": f"Bearer {load.key}"}
    listed: set[str] = set()
    for speaker in load.upload_speakers:
        r = httpx.get(f"{url}/v1/speakers/{speaker}/utterances", headers=auth, timeout=60)
        listed |= {u["id"] for u in r.json()["items"]}
    unlisted = [u for u in load.acked if str(u) not in listed]
    result.utterances_lost = max(result.utterances_lost, len(unlisted))
    latencies = [s for _, status, s in load.records if status]
    by_kind: dict[str, Any] = {}
    for kind in sorted({k for k, _, _ in load.records}):
        rows = [(status, s) for k, status, s in load.records if k == kind]
        ok = [s for status, s in rows if status]
        statuses: dict[str, int] = {}
        for status, _ in rows:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        by_kind[kind] = {"requests": len(rows), "statuses": statuses, "p50_s": percentile(ok, 50),
                         "p99_s": percentile(ok, 99)}
    http_5xx = sum(1 for _, status, _ in load.records if status >= 500)
    return {
        "scenario": f"load ({clients} clients, {seconds:g} s)",
        "trials": 1,
        "trials_failed": 0,
        "jobs": result.jobs,
        "jobs_promoted": result.jobs_promoted,
        "jobs_lost": result.jobs_lost,
        "jobs_stuck": result.jobs_stuck,
        "jobs_with_several_heads": result.jobs_with_several_heads,
        "double_promotions": result.double_promotions,
        "utterances_acked": result.utterances_acked,
        "utterances_lost": result.utterances_lost,
        "orphans_before_sweep": result.orphans_before_sweep,
        "orphans_after_sweep": result.orphans_after_sweep,
        "half_rows": result.half_rows + result.half_rows_after_sweep,
        "http_5xx": http_5xx,
        "connection_errors": sum(1 for _, status, _ in load.records if status == 0),
        "latency": "per request",
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "requests": len(load.records),
        "requests_per_s": round(len(load.records) / (time.monotonic() - started), 1),
        "by_kind": by_kind,
        "transport_errors": load.transport_errors,
        "seconds": round(time.monotonic() - started, 1),
        "problems": problems + result.problems + [f"utterance {u} acknowledged but not listed" for u in unlisted],
    }


# ---- report ----------------------------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(rows: list[dict[str, Any]]) -> str:
    header = ["scenario", "trials", "jobs lost", "jobs stuck", "utterances lost", "orphans (before->after sweep)",
              "half rows", "5xx", "conn. errors", "p50 s", "p99 s", "latency of"]
    lines = [header]
    for r in rows:
        lines.append([
            r["scenario"], str(r["trials"]), str(r["jobs_lost"]), str(r["jobs_stuck"]), str(r["utterances_lost"]),
            f"{r['orphans_before_sweep']}->{r['orphans_after_sweep']}", str(r["half_rows"]), str(r["http_5xx"]),
            str(r["connection_errors"]), fmt(r["p50_s"]), fmt(r["p99_s"]), r["latency"],
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append(" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)))
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=int(os.environ.get("TRIALS", "20") or 20),
                        help="trials of each kill scenario (default: $TRIALS or 20)")
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--store", choices=["s3", "local"], default="s3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", default="train,eval,api,load", help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=RESULTS / "reliability.json")
    args = parser.parse_args(argv)
    wanted = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    rng = random.Random(args.seed)
    began = time.monotonic()
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S%z")
    workdir = REPO / "var" / "reliability" / uuid.uuid4().hex[:8]
    backends = Backends(args.store)
    rows: list[dict[str, Any]] = []
    stack = Stack(workdir, stack_settings(workdir, backends.database_url, s3=backends.s3, bucket=backends.bucket))
    try:
        print(f"reliability: {args.trials} trials per kill scenario, store {args.store}, work dir {workdir}",
              flush=True)
        start_workers(stack)
        if "train" in wanted:
            rows.append(run_trials("kill -9 train worker", args.trials,
                                   lambda i: trial_kill_train_worker(stack, rng), "job created -> terminal"))
        if "eval" in wanted:
            rows.append(run_trials("kill -9 eval worker", args.trials,
                                   lambda i: trial_kill_eval_worker(stack, rng), "job created -> terminal"))
        url = stack.start_api("api") if {"api", "load"} & wanted else ""
        if "api" in wanted:
            rows.append(run_trials("kill -9 API during uploads", args.trials,
                                   lambda i: trial_kill_api(stack, rng, url), "per upload"))
        if "load" in wanted:
            # Quicker jobs for the load (the kill scenarios needed windows to kill in).
            for name in ("worker-train", "worker-eval"):
                stack.kill(name, 15)
            stack.start_worker("worker-train", "train", train_steps=3, step_sleep_s=0.1)
            stack.start_worker("worker-eval", "eval")
            print(f"  load: {args.clients} clients for {args.load_seconds:g} s", flush=True)
            rows.append(run_load(stack, url, args.clients, args.load_seconds, rng))
    finally:
        stack.close()
        backends.close()
    ok = all(
        r["jobs_lost"] == r["jobs_stuck"] == r["utterances_lost"] == r["orphans_after_sweep"] == r["half_rows"]
        == r["http_5xx"] == r["trials_failed"] == r["jobs_with_several_heads"] == r["double_promotions"] == 0
        and not r["problems"]
        for r in rows
    )
    record = {
        "benchmark": "reliability",
        "when": when,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_at_start": os.getloadavg()},
        "setup": {
            "trials": args.trials, "store": args.store, "database": "postgresql", "broker": "redis",
            "model": "fake (tests/app/fakes.py)", "job_stale_after_seconds": stack.settings.job_stale_after_seconds,
            "clients": args.clients, "load_seconds": args.load_seconds, "seed": args.seed,
        },
        "ok": ok,
        "seconds": round(time.monotonic() - began, 1),
        "scenarios": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print()
    print(table(rows))
    for r in rows:
        for problem in r["problems"][:10]:
            print(f"  {r['scenario']}: {problem[:500]}")
    print(f"\nwritten: {args.out}")
    summary = {
        "benchmark": "reliability", "ok": ok, "trials": args.trials, "seconds": record["seconds"],
        "scenarios": {
            r["scenario"]: {k: r[k] for k in ("trials", "jobs_lost", "jobs_stuck", "utterances_lost",
                                               "orphans_after_sweep", "half_rows", "http_5xx", "p50_s", "p99_s")}
            for r in rows
        },
    }
    print(json.dumps(summary, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
