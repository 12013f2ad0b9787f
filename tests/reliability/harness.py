"""Fault injection with real processes: the API (``tests/reliability/fake_api.py``) and Celery workers
(``tests/workers/fake_worker.py``) run the production code with the fake model, over a real database, broker and
object store; a test kills them (``kill -9``) or cuts a dependency (``TcpProxy``), then audits what is left.

Used by the CI tests (``tests/reliability/test_*.py``, one trial each) and by the report (``make reliability``,
``benchmarks/reliability.py``: many trials and a load). The trials are the same code in both.

The audit (``audit``) is the definition of "nothing lost, nothing stuck, nothing orphaned":

* every job of the trial is in a terminal state (``stuck`` otherwise; ``lost`` when its row is gone), has at most
  one head version, and at most one promotion;
* every utterance the API acknowledged (201) has its row and its object (``lost`` otherwise); no row of an
  utterance, head or report points to a missing object (``half_rows``);
* objects no row refers to (``orphans_before_sweep``; a process killed between an object's put and its row's
  commit leaves one) are all removed by the sweeper (``app.services.housekeeping``, grace 0 since the trial is
  over), which removes nothing else (``half_rows`` is counted again after it; ``orphans_after_sweep``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from app.container import Services, object_store_from_settings
from app.security import create_api_key
from app.services.housekeeping import sweep_orphan_objects
from app.services.queue import CeleryTaskQueue, create_celery_app
from app.settings import Settings
from storage.db import make_engine, make_session_factory
from storage.errors import ObjectNotFound
from storage.models import (
    AdaptationJob,
    Evaluation,
    Head,
    HeadStatus,
    JobState,
    Utterance,
)
from storage.objects import LocalObjectStore
from tests.app.fakes import FakeML, tone
from tests.app.support import SENTENCES, create_job, make_settings, seed_speaker

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("HRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TERMINAL = frozenset({JobState.promoted, JobState.rejected, JobState.failed, JobState.cancelled})
STALE_AFTER_S = 2.0  # a killed worker's job is back on its queue within ~3 s (reaper every 1 s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------------------------
# A dependency that can be cut


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` resets every open connection and each new one at once
    (the dependency looks down: connection reset, fast), ``restore()`` forwards again. Runs in a thread."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.up = True
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, upstream_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                sink.close()

        try:
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            self._open.discard(writer)
            self._open.discard(upstream_writer)

    def cut(self) -> None:
        async def reset_all() -> None:
            self.up = False
            for w in list(self._open):
                w.transport.abort()
            self._open.clear()

        asyncio.run_coroutine_threadsafe(reset_all(), self._loop).result(10)

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._open):
                w.transport.abort()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


# ----------------------------------------------------------------------------------------------------------------
# The processes of one stack


def child_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process exactly ``settings`` (every field as its ``HRA_*`` variable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HRA_") and k != "PORT"}
    for name, value in settings.model_dump().items():
        if value is None or name == "api_port":
            continue
        env[f"HRA_{name.upper()}"] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    env["OMP_NUM_THREADS"] = "1"
    return env


def stack_settings(root: Path, database_url: str, *, s3: dict[str, Any] | None = None, bucket: str | None = None,
                   **overrides: Any) -> Settings:
    """Test settings (tests.app.support) on Redis under queue names of their own, S3 when ``s3`` is given; jobs
    reaped 2 s after their worker stops beating; generous quotas (a report runs hundreds of jobs)."""
    run_id = uuid.uuid4().hex[:10]
    values: dict[str, Any] = dict(
        broker_url=REDIS_URL,
        train_queue=f"train-{run_id}",
        eval_queue=f"eval-{run_id}",
        job_stale_after_seconds=STALE_AFTER_S,
        task_max_attempts=5,
        transient_retry_window_seconds=120.0,
        quota_speakers=1_000_000,
        quota_utterances_per_speaker=1_000_000,
        quota_active_jobs=1_000,
        quota_train_seconds_per_day=1e9,
    )
    if s3 is not None:
        values.update(
            object_store="s3", s3_endpoint=s3["endpoint"], s3_access_key=s3["access_key"],
            s3_secret_key=s3["secret_key"], s3_region=s3["region"], s3_secure=False,
            s3_bucket=bucket or f"hra-rel-{run_id}",
        )
    values.update(overrides)
    return make_settings(root, database_url, **values)


@dataclass
class Proc:
    name: str
    argv: list[str]
    process: subprocess.Popen
    starts: int = 1


class Stack:
    """One deployment under test: settings, this process's view of its services (for seeding and auditing), and
    the child processes (API, workers) started from it."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.ml = FakeML()
        self.services = Services(
            settings=settings,
            session_factory=make_session_factory(make_engine(settings.database_url)),
            object_store=object_store_from_settings(settings),
            ml=self.ml,
            queue=CeleryTaskQueue(create_celery_app(settings), settings.train_queue, settings.eval_queue),
        )
        self.services.queue.ping()
        self.procs: dict[str, Proc] = {}
        self._env_overrides: dict[str, str] = {}

    # ---- children ----

    def env(self) -> dict[str, str]:
        return {**child_env(self.settings), **self._env_overrides}

    def override_env(self, **values: str) -> None:
        """Environment for the children started from now on (e.g. a database URL through a proxy)."""
        self._env_overrides.update(values)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("ab")
        return subprocess.Popen(argv, cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_worker(self, name: str, queues: str, **config: Any) -> Proc:
        """A Celery worker (``hra worker``, fake model) on ``queues`` ("train", "eval" or "train,eval")."""
        path = self.root / f"{name}.json"
        path.write_text(json.dumps({"truth": self.ml.truth, "queues": queues, **config}))
        argv = [sys.executable, "-m", "tests.workers.fake_worker", str(path)]
        proc = Proc(name, argv, self._spawn(name, argv))
        self.procs[name] = proc
        return proc

    def start_api(self, name: str = "api", port: int | None = None, wait_s: float = 60) -> str:
        port = port or free_port()
        path = self.root / f"{name}.json"
        path.write_text(json.dumps({"port": port, "truth": self.ml.truth}))
        argv = [sys.executable, "-m", "tests.reliability.fake_api", str(path)]
        self.procs[name] = Proc(name, argv, self._spawn(name, argv))
        url = f"http://127.0.0.1:{port}"
        self.wait_until_up(url, name, wait_s)
        return url

    def wait_until_up(self, url: str, name: str, wait_s: float = 60) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.procs[name].process.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.logs(name)}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not answer at {url}: {self.logs(name)}")

    def restart(self, name: str) -> Proc:
        """Start a dead child again with the same command (what ``hra run``'s supervisor does)."""
        proc = self.procs[name]
        assert proc.process.poll() is not None, f"{name} is still running"
        proc.process = self._spawn(name, proc.argv)
        proc.starts += 1
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.procs[name].process
        if process.poll() is None:
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def logs(self, name: str | None = None, tail: int = 3000) -> str:
        paths = [self.root / f"{name}.log"] if name else sorted(self.root.glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in paths if p.exists())

    def wait_for(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{self.logs()}")

    def close(self) -> None:
        for name in list(self.procs):
            try:
                self.kill(name, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.services.session_factory.kw["bind"].dispose()
        _delete_redis_queues(self.settings)

    # ---- data ----

    def job(self, job_id: uuid.UUID) -> AdaptationJob | None:
        with self.services.session_factory() as db:
            return db.get(AdaptationJob, job_id)

    def api_key(self, tenant: str = "acme") -> str:
        with self.services.session_factory() as db:
            _, key = create_api_key(db, tenant)
            db.commit()
        return key


def _delete_redis_queues(settings: Settings) -> None:
    if not settings.broker_url.startswith("redis"):
        return
    import redis

    client = redis.Redis.from_url(settings.broker_url)
    for queue in (settings.train_queue, settings.eval_queue):
        names = client.keys(f"{queue}*") + [f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]
        client.delete(*names)


# ----------------------------------------------------------------------------------------------------------------
# The audit


@dataclass
class Audit:
    jobs: int = 0
    jobs_lost: int = 0
    jobs_stuck: int = 0
    jobs_promoted: int = 0
    jobs_with_several_heads: int = 0
    double_promotions: int = 0
    utterances_acked: int = 0
    utterances_lost: int = 0
    half_rows: int = 0
    orphans_before_sweep: int = 0
    orphans_after_sweep: int = 0
    half_rows_after_sweep: int = 0
    problems: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not self.problems

    def add(self, other: Audit) -> None:
        for name, value in asdict(other).items():
            if name == "problems":
                self.problems.extend(other.problems)
            else:
                setattr(self, name, getattr(self, name) + value)


def _missing_objects(stack: Stack) -> list[str]:
    """Rows (utterances, heads, evaluation reports) whose object is not in the store."""
    store = stack.services.object_store
    with stack.services.session_factory() as db:
        keys = list(db.scalars(select(Utterance.object_key)))
        keys += list(db.scalars(select(Head.object_key)))
        keys += [k for k in db.scalars(select(Evaluation.report_key)) if k]
    missing = []
    for key in keys:
        try:
            store.stat(key)
        except ObjectNotFound:
            missing.append(key)
    return missing


def _temporaries(stack: Stack) -> int:
    store = stack.services.object_store
    if not isinstance(store, LocalObjectStore):
        return 0
    top = Path(store.root) / "tenants"
    return sum(1 for p in top.rglob(".tmp-*")) if top.exists() else 0


def audit(stack: Stack, job_ids: Iterable[uuid.UUID] = (), acked_utterances: Iterable[uuid.UUID] = ()) -> Audit:
    """See the module docstring. Sweeps orphans (grace 0): call it when the trial is over (nothing in flight)."""
    job_ids, acked = list(job_ids), set(acked_utterances)
    result = Audit(jobs=len(job_ids), utterances_acked=len(acked))
    with stack.services.session_factory() as db:
        for job_id in job_ids:
            job = db.get(AdaptationJob, job_id)
            if job is None:
                result.jobs_lost += 1
                result.problems.append(f"job {job_id} lost")
            elif job.state not in TERMINAL:
                result.jobs_stuck += 1
                result.problems.append(f"job {job_id} stuck in {job.state.value}")
            elif job.state is JobState.promoted:
                result.jobs_promoted += 1
        if job_ids:
            several = db.execute(
                select(Head.job_id, func.count()).where(Head.job_id.in_(job_ids)).group_by(Head.job_id)
                .having(func.count() > 1)
            ).all()
            result.jobs_with_several_heads = len(several)
            result.problems += [f"job {j} has {n} heads" for j, n in several]
            promoted = db.execute(
                select(Head.job_id, func.count()).where(Head.job_id.in_(job_ids), Head.promoted_at.is_not(None))
                .group_by(Head.job_id).having(func.count() > 1)
            ).all()
            in_service = db.execute(
                select(Head.speaker_id, func.count()).where(Head.status == HeadStatus.in_service)
                .group_by(Head.speaker_id).having(func.count() > 1)
            ).all()
            result.double_promotions = len(promoted) + len(in_service)
            result.problems += [f"job {j} promoted {n} times" for j, n in promoted]
            result.problems += [f"speaker {s} has {n} heads in service" for s, n in in_service]
        if acked:
            rows = dict(db.execute(select(Utterance.id, Utterance.object_key).where(Utterance.id.in_(acked))).all())
            lost = [u for u in acked if u not in rows]
            result.utterances_lost = len(lost)
            result.problems += [f"utterance {u} acknowledged (201) but has no row" for u in lost]
    missing = _missing_objects(stack)
    result.half_rows = len(missing)
    result.problems += [f"row without its object: {k}" for k in missing]
    before = sweep_orphan_objects(stack.services, 0.0, dry_run=True)
    result.orphans_before_sweep = len(before.orphans) + _temporaries(stack)
    sweep_orphan_objects(stack.services, 0.0)
    after = sweep_orphan_objects(stack.services, 0.0, dry_run=True)
    result.orphans_after_sweep = len(after.orphans) + _temporaries(stack)
    result.problems += [f"orphan left by the sweeper: {k}" for k in after.orphans]
    missing_after = _missing_objects(stack)
    result.half_rows_after_sweep = len(missing_after) - len(missing)
    result.problems += [f"the sweeper deleted a referenced object: {k}" for k in missing_after if k not in missing]
    return result


# ----------------------------------------------------------------------------------------------------------------
# Trials


@dataclass
class TrialResult:
    audit: Audit
    latencies_s: list[float] = field(default_factory=list)  # per request (uploads) or per job (created -> end)
    http_5xx: int = 0
    connection_errors: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


def start_workers(stack: Stack, *, train_steps: int = 10, step_sleep_s: float = 0.3,
                  transcribe_sleep_s: float = 1.0) -> None:
    """One train worker and one eval worker, as ``hra run`` has: training takes ``train_steps`` x
    ``step_sleep_s``, each transcription call of an evaluation ``transcribe_sleep_s`` (windows to kill in)."""
    for n in range(len(SENTENCES)):  # what seed_speaker's recordings say (the same tones for every speaker)
        stack.ml.learn(tone(seconds=0.5, freq=200 + 37 * n), SENTENCES[n])
    stack.start_worker("worker-train", "train", train_steps=train_steps, step_sleep_s=step_sleep_s,
                       train_marker=str(stack.root / "training.marker"))
    stack.start_worker("worker-eval", "eval", transcribe_sleep_s=transcribe_sleep_s,
                       transcribe_marker=str(stack.root / "evaluating.marker"))


def _new_job(stack: Stack, tenant: str) -> tuple[uuid.UUID, float]:
    seeded = seed_speaker(stack.services, tenant)
    job_id = create_job(stack.services, seeded.speaker_id)
    stack.services.queue.enqueue_training(job_id)
    return job_id, time.monotonic()


def _finish(stack: Stack, job_id: uuid.UUID, created: float, timeout_s: float) -> float:
    stack.wait_for(lambda: (j := stack.job(job_id)) is not None and j.state in TERMINAL, timeout_s, f"job {job_id}")
    return time.monotonic() - created


def trial_kill_train_worker(stack: Stack, rng: random.Random, timeout_s: float = 120,
                            kill_step: int | None = None) -> TrialResult:
    """``kill -9`` of the train worker at a random step of a training (or while it stores the head), then the
    worker is started again (as the supervisor does); the job must end once, promoted, with one head."""
    steps = int(json.loads((stack.root / "worker-train.json").read_text()).get("train_steps", 10))
    if kill_step is None:
        kill_step = rng.randint(1, steps)  # at the last step the kill may land while the head is being stored

    marker = stack.root / "training.marker"
    marker.unlink(missing_ok=True)

    def reached() -> bool:
        try:
            return int(marker.read_text() or 0) >= kill_step
        except (FileNotFoundError, ValueError):
            return False

    job_id, created = _new_job(stack, "kill-train")
    stack.wait_for(reached, 60, "training to reach the kill step")
    killed_in = stack.job(job_id).state.value
    stack.kill("worker-train")
    stack.restart("worker-train")
    elapsed = _finish(stack, job_id, created, timeout_s)
    job = stack.job(job_id)
    result = TrialResult(audit(stack, [job_id]), [elapsed],
                         detail={"kill_step": kill_step, "killed_in": killed_in, "attempts": job.attempts,
                                 "state": job.state.value})
    if job.state is not JobState.promoted:
        result.audit.problems.append(f"job {job_id} ended {job.state.value}: {job.error}")
    return result


def trial_kill_eval_worker(stack: Stack, rng: random.Random, timeout_s: float = 120,
                           delay_s: float | None = None) -> TrialResult:
    """``kill -9`` of the eval worker at a random moment of an evaluation (its transcriptions: two calls, base and
    candidate, of ``transcribe_sleep_s`` each; near the end, while it writes the report and decides), then it is
    started again."""
    marker = stack.root / "evaluating.marker"
    marker.unlink(missing_ok=True)
    job_id, created = _new_job(stack, "kill-eval")
    stack.wait_for(marker.exists, 60, "the evaluation to start")
    time.sleep(rng.uniform(0.0, 2.1) if delay_s is None else delay_s)
    killed_in = stack.job(job_id).state.value
    stack.kill("worker-eval")
    stack.restart("worker-eval")
    elapsed = _finish(stack, job_id, created, timeout_s)
    job = stack.job(job_id)
    result = TrialResult(audit(stack, [job_id]), [elapsed],
                         detail={"killed_in": killed_in, "attempts": job.attempts, "state": job.state.value})
    if job.state is not JobState.promoted:
        result.audit.problems.append(f"job {job_id} ended {job.state.value}: {job.error}")
    return result


class Uploader:
    """Clients (threads) uploading utterances to one speaker as fast as the API answers, until stopped; each 201's
    utterance id is recorded, with every request's latency and outcome. A refused connection (the API is down) is
    retried after 50 ms."""

    def __init__(self, url: str, key: str, speaker_id: str, clients: int) -> None:
        self.url, self.key, self.speaker_id = url, key, speaker_id
        self.acked: list[uuid.UUID] = []
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.connection_errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> Uploader:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _run(self, index: int) -> None:
        n = 0
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30) as http:
            while not self._stop.is_set():
                n += 1
                audio = tone(seconds=0.4, freq=150 + (index * 7919 + n * 31) % 3000)
                started = time.monotonic()
                try:
                    response = http.post(
                        f"/v1/speakers/{self.speaker_id}/utterances",
                        files={"audio": ("u.wav", audio, "audio/wav")},
                        data={"transcript": "unknown speech here", "split": "train"},
                    )
                except httpx.TransportError:
                    with self._lock:
                        self.connection_errors += 1
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self.latencies.append(time.monotonic() - started)
                    self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
                    if response.status_code == 201:
                        self.acked.append(uuid.UUID(response.json()["id"]))

    @property
    def http_5xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def trial_kill_api(stack: Stack, rng: random.Random, url: str, *, clients: int = 6,
                   kill_after_s: float | None = None) -> TrialResult:
    """Concurrent uploads; ``kill -9`` of the API after a random 0.5-2 s; the API is started again on the same port
    while the clients keep trying; then every acknowledged upload must be listed by the API and stored, with no
    half row, and the sweeper must leave no orphan."""
    key = stack.api_key("kill-api")
    speaker = httpx.post(f"{url}/v1/speakers", json={"display_name": "kill -9"},
                         headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert speaker.status_code == 201, speaker.text
    speaker_id = speaker.json()["id"]
    with Uploader(url, key, speaker_id, clients) as uploader:
        time.sleep(rng.uniform(0.5, 2.0) if kill_after_s is None else kill_after_s)
        acked_before_kill = len(uploader.acked)
        stack.kill("api")
        stack.restart("api")
        stack.wait_until_up(url, "api")
        time.sleep(0.5)
    listed: set[str] = set()
    response = httpx.get(f"{url}/v1/speakers/{speaker_id}/utterances", headers={"Authorization": f"Bearer {key}"},
                         timeout=30)
    assert response.status_code == 200, response.text
    listed = {u["id"] for u in response.json()["items"]}
    result = TrialResult(audit(stack, [], uploader.acked), uploader.latencies, uploader.http_5xx,
                         uploader.connection_errors,
                         detail={"acked_before_kill": acked_before_kill, "acked": len(uploader.acked),
                                 "statuses": uploader.statuses})
    unlisted = [u for u in uploader.acked if str(u) not in listed]
    result.audit.utterances_lost = max(result.audit.utterances_lost, len(unlisted))
    result.audit.problems += [f"utterance {u} acknowledged but not listed by the API" for u in unlisted]
    if uploader.http_5xx:
        result.audit.problems.append(f"{uploader.http_5xx} responses 5xx: {uploader.statuses}")
    return result
