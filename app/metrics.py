"""Prometheus metrics at ``GET /metrics`` (prometheus-client, text format).

Served on the API's own port without authentication, like ``/healthz``: Prometheus scrapes it with no key, so
operators keep it off the internet (firewall the port, or have the reverse proxy refuse ``/metrics``). It reveals
counts and timings, never speakers, transcripts or keys.

What is measured, and how:
  hra_http_request_duration_seconds{method,route,status}  histogram, measured by an ASGI middleware; ``route`` is
        the route's template (``/v1/jobs/{job_id}``), never the raw path, so ids do not explode the label set
        (also for requests refused before routing, e.g. the request guard's 401); requests that match no route
        share ``route="unmatched"``.
  Read from the database at scrape time (four small aggregate queries), so the numbers are the same whichever API
  process answers and survive restarts; these are gauges because erasing a speaker removes its rows:
  hra_jobs{state}                                  jobs per state (one GROUP BY)
  hra_job_oldest_queued_age_seconds                how long the oldest queued job has waited (0: none queued)
  hra_job_duration_seconds{state}                  gauge histogram: start-to-finish time of jobs that ended in
                                                   the last 24 h, by final state
  hra_worker_heartbeat_age_seconds                 since any worker last reported on any job (absent: never)
  hra_running_job_heartbeat_age_seconds            the most silent training/evaluating job (0: none running);
                                                   the reaper re-queues a job past job_stale_after_seconds
  hra_evaluations{decision}                        gate decisions (promote / reject)
  hra_promotion_wer_gain{reference}                gauge histogram of the absolute WER reduction (0..1) of promoted
                                                   heads, against the base model and against the gate's reference
                                                   (the head in service before, else the base)
  hra_queue_depth{queue}                           messages waiting on the train and eval queues, asked of the
                                                   broker (Redis, the SQLite transport, RabbitMQ) at scrape time
  hra_metrics_source_up{source}                    1 when the database / broker answered this scrape, else 0
  process_* / python_*                             the API process (CPU, memory, file descriptors, GC)

The API runs as one uvicorn process, so the in-memory histogram needs no multi-process mode; run several API
processes behind a balancer and each is scraped as its own target. 
  hra_head_cache_{hits,misses,evictions}_total    the serving head cache (parsed heads by immutable id)
  hra_head_cache_{entries,bytes,max_bytes}         its size now and its bound
  hra_engine_{batches,items}_total                 batched passes of the transcription engine and what they held
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy import case, func, select, type_coerce
from starlette.routing import Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.container import Services
from app.services.jobs.transitions import last_seen_column
from app.services.queue import broker_transport_options
from storage.models import AdaptationJob, Decision, Evaluation, JobState, UTCDateTime, utcnow

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_DURATION_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
WER_GAIN_BUCKETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
JOB_DURATION_WINDOW = timedelta(hours=24)
KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
BROKER_TIMEOUT_S = 2.0


class RouteTemplates:
    """Which route template a path belongs to, for requests answered before the router saw them (the request
    guard's 401 and 413): taken from the OpenAPI document's paths, once, on first need (all routes exist by then)."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def match(self, path: str) -> str | None:
        if self._patterns is None:
            templates = sorted(self._app.openapi().get("paths", {}), key=lambda t: t.count("{"))  # literal first
            self._patterns = [(compile_path(template)[0], template) for template in templates]
        return next((template for pattern, template in self._patterns if pattern.match(path)), None)


def route_label(scope: Scope, templates: RouteTemplates | None = None) -> str:
    """The route's template: the router records the matched route in the scope it hands down."""
    route = scope.get("route")
    if isinstance(route, Mount):  # a mounted app (static files): its prefix, not the file asked for
        return f"{route.path}/{{path}}"
    if route is not None and getattr(route, "path", None):
        return route.path
    if templates is not None:
        return templates.match(scope.get("path", "")) or "unmatched"
    return "unmatched"


class RequestMetrics:
    """ASGI middleware: each HTTP request's duration, until its last body byte is sent, by route and status."""

    def __init__(self, app: ASGIApp, histogram: Histogram, templates: RouteTemplates | None = None) -> None:
        self.app = app
        self.histogram = histogram
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started ends as a 500 from the outer error middleware

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            route = route_label(scope, self.templates)
            self.histogram.labels(method, route, str(status)).observe(time.perf_counter() - started)


def _bucket_counts(values: Iterable[float], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    values = list(values)
    buckets = [(str(b), float(sum(v <= b for v in values))) for b in bounds]
    return buckets + [("+Inf", float(len(values)))]


class ServiceCollector:
    """The figures read at scrape time: jobs, evaluations and liveness from the database, depths from the broker.

    A source that does not answer is reported as ``hra_metrics_source_up{source} 0`` and its figures are left
    out; the scrape itself still succeeds."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("hra_metrics_source_up", "Whether a source answered this scrape.", labels=["source"])
        for source, read in (("database", self._database), ("broker", self._broker), ("serving", self._serving)):
            try:
                metrics = read()
            except Exception as exc:  # noqa: BLE001 - a source that is down is reported, never fails the scrape
                logger.warning("metrics: the %s did not answer: %s", source, exc)
                up.add_metric([source], 0.0)
                continue
            up.add_metric([source], 1.0)
            yield from metrics
        yield up

    def _database(self) -> list[Metric]:
        now = utcnow()
        running = [JobState.training, JobState.evaluating]
        last_seen = last_seen_column()
        with self._services.session_factory() as db:
            by_state = dict(db.execute(select(AdaptationJob.state, func.count()).group_by(AdaptationJob.state)).all())
            newest_heartbeat, stalest_running, oldest_queued = db.execute(
                select(
                    func.max(AdaptationJob.heartbeat_at),
                    func.min(type_coerce(case((AdaptationJob.state.in_(running), last_seen)), UTCDateTime)),
                    func.min(type_coerce(case((AdaptationJob.state == JobState.queued, AdaptationJob.created_at)),
                                         UTCDateTime)),
                )
            ).one()
            finished = db.execute(
                select(AdaptationJob.state, AdaptationJob.started_at, AdaptationJob.finished_at).where(
                    AdaptationJob.finished_at >= now - JOB_DURATION_WINDOW, AdaptationJob.started_at.is_not(None)
                )
            ).all()
            decisions = dict(db.execute(select(Evaluation.decision, func.count()).group_by(Evaluation.decision)).all())
            promoted = db.execute(
                select(Evaluation.base_wer, Evaluation.in_service_wer, Evaluation.candidate_wer).where(
                    Evaluation.decision == Decision.promote
                )
            ).all()

        def age(moment: datetime | None) -> float:
            return max(0.0, (now - moment).total_seconds()) if moment is not None else 0.0

        jobs = GaugeMetricFamily("hra_jobs", "Adaptation jobs per state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], float(by_state.get(state, 0)))
        metrics: list[Metric] = [
            jobs,
            GaugeMetricFamily(
                "hra_job_oldest_queued_age_seconds", "Wait of the oldest queued job.", value=age(oldest_queued)
            ),
            GaugeMetricFamily(
                "hra_running_job_heartbeat_age_seconds",
                "Seconds since the most silent training/evaluating job last reported (0: none running).",
                value=age(stalest_running),
            ),
        ]
        if newest_heartbeat is not None:
            metrics.append(GaugeMetricFamily(
                "hra_worker_heartbeat_age_seconds", "Seconds since any worker last reported on any job.",
                value=age(newest_heartbeat),
            ))

        durations = GaugeHistogramMetricFamily(
            "hra_job_duration_seconds", "Start-to-finish time of jobs that ended in the last 24 h.", labels=["state"]
        )
        for state in sorted({row.state for row in finished}, key=list(JobState).index):
            seconds = [(r.finished_at - r.started_at).total_seconds() for r in finished if r.state == state]
            durations.add_metric([state.value], _bucket_counts(seconds, JOB_DURATION_BUCKETS), sum(seconds))
        evaluations = GaugeMetricFamily("hra_evaluations", "Gate decisions.", labels=["decision"])
        for decision in Decision:
            evaluations.add_metric([decision.value], float(decisions.get(decision, 0)))
        gains = GaugeHistogramMetricFamily(
            "hra_promotion_wer_gain", "Absolute WER reduction (0..1) of promoted heads.", labels=["reference"]
        )
        vs_base = [r.base_wer - r.candidate_wer for r in promoted]
        # The gate's reference: the head in service when the candidate was judged, else the base model.
        vs_gate = [
            (r.in_service_wer if r.in_service_wer is not None else r.base_wer) - r.candidate_wer for r in promoted
        ]
        gains.add_metric(["base"], _bucket_counts(vs_base, WER_GAIN_BUCKETS), sum(vs_base))
        gains.add_metric(["previous"], _bucket_counts(vs_gate, WER_GAIN_BUCKETS), sum(vs_gate))
        return [*metrics, durations, evaluations, gains]

    def _broker(self) -> list[Metric]:
        from kombu import Connection
        from kombu.exceptions import ChannelError

        settings = self._services.settings
        options: dict[str, Any] = dict(broker_transport_options(settings))
        if settings.broker_url.startswith(("redis", "rediss")):
            options.update(socket_timeout=BROKER_TIMEOUT_S, socket_connect_timeout=BROKER_TIMEOUT_S)
        depth = GaugeMetricFamily("hra_queue_depth", "Messages waiting on a task queue.", labels=["queue"])
        with Connection(settings.broker_url, connect_timeout=BROKER_TIMEOUT_S, transport_options=options) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S)
            for queue in dict.fromkeys([settings.train_queue, settings.eval_queue]):
                channel = conn.channel()  # a failed passive declare closes its channel: one channel per queue
                try:
                    count = channel.queue_declare(queue=queue, passive=True).message_count
                except ChannelError as exc:
                    if str(getattr(exc, "reply_code", "")) != "404":
                        raise
                    count = 0  # Redis keeps no key for an empty queue: "not found" is an empty queue
                finally:
                    channel.close()
                depth.add_metric([queue], float(count))
        return [depth]


    def _serving(self) -> list[Metric]:
        ml = self._services.ml
        cache = ml.cache_stats()
        metrics: list[Metric] = []
        for name in ("hits", "misses", "evictions"):
            counter = CounterMetricFamily(f"hra_head_cache_{name}", f"Head cache {name}.")
            counter.add_metric([], float(cache.get(name, 0)))
            metrics.append(counter)
        for name in ("entries", "bytes", "max_bytes"):
            gauge = GaugeMetricFamily(f"hra_head_cache_{name}", f"Head cache {name}.")
            gauge.add_metric([], float(cache.get(name, 0)))
            metrics.append(gauge)
        engine_stats = getattr(ml, "engine_stats", None)
        engine = engine_stats() if engine_stats is not None else {}
        for name in ("batches", "items"):
            counter = CounterMetricFamily(f"hra_engine_{name}", f"Transcription engine {name}.")
            counter.add_metric([], float(engine.get(name, 0)))
            metrics.append(counter)
        return metrics


def install_metrics(app: FastAPI, services: Services) -> CollectorRegistry:
    """Add the latency middleware (outermost of those added so far) and ``GET /metrics`` (not in the OpenAPI
    document: it is for Prometheus, not for API clients). One registry per app, so that apps built side by side
    (tests) do not share or collide on metrics."""
    # No *_created series: they double the histogram's output and Prometheus does not need them.
    disable_created_metrics()
    registry = CollectorRegistry()
    latency = Histogram(
        "hra_http_request_duration_seconds",
        "HTTP request duration by route template and status.",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    registry.register(ServiceCollector(services))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    app.add_middleware(RequestMetrics, histogram=latency, templates=RouteTemplates(app))

    def metrics() -> Response:  # a plain def: FastAPI runs it in the thread pool, off the event loop
        # The classic text format, labelled as such: what generate_latest writes and every Prometheus reads.
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.state.metrics_registry = registry
    return registry
