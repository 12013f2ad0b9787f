"""GET /metrics scraped from a real uvicorn server: families, the latency histogram, and the figures read from the
database (jobs, evaluations, liveness) and from the broker (queue depth, on Redis) at scrape time."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.container import Services
from storage.models import Evaluation
from tests.app.fakes import FakeML, RecordingQueue
from tests.app.live_server import free_port, redis_queues, serving
from tests.app.support import make_services, make_settings, seed_speaker
from workers.evaluation import run_evaluation
from workers.training import run_training

LATENCY = "hra_http_request_duration_seconds"
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """Family or sample name -> {sorted label items: value}."""
    response = httpx.get(f"{url}/metrics", timeout=10)  # no key: Prometheus scrapes without one
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        samples.setdefault(family.name, {})
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """The scrape-time queries are plain SQL aggregates: checked on both databases the service runs on."""
    if request.param == "sqlite":
        return request.getfixturevalue("app_sqlite_url")
    return request.getfixturevalue("postgres_url_factory")()


@pytest.fixture
def served(tmp_path, database_url):
    services = make_services(make_settings(tmp_path, database_url), FakeML())
    seeded = seed_speaker(services)
    with redis_queues(services), serving(services) as url:
        yield url, services, seeded
    services.session_factory.kw["bind"].dispose()


def test_metrics_expose_the_families_and_time_requests_by_route_template(served):
    url, _, seeded = served
    before = scrape(url)
    for family in (
        LATENCY, "hra_jobs", "hra_job_oldest_queued_age_seconds", "hra_running_job_heartbeat_age_seconds",
        "hra_job_duration_seconds", "hra_evaluations", "hra_promotion_wer_gain", "hra_queue_depth",
        "hra_metrics_source_up", "process_resident_memory_bytes", "hra_head_cache_hits_total",
        "hra_head_cache_misses_total", "hra_head_cache_bytes", "hra_engine_batches_total",
    ):
        assert family in before, family
    assert before["hra_metrics_source_up"] == {
        (("source", "database"),): 1.0, (("source", "broker"),): 1.0, (("source", "serving"),): 1.0,
    }

    key = {"Authorization": f"Bearer {seeded.api_key}"}
    assert httpx.get(f"{url}/v1/speakers/{seeded.speaker_id}", headers=key).status_code == 200
    assert httpx.get(f"{url}/v1/speakers/{uuid.uuid4()}").status_code == 401
    assert httpx.get(f"{url}/no/such/{uuid.uuid4()}").status_code == 404
    after = scrape(url)

    def count(samples, route: str, status: str) -> float:
        labels = (("method", "GET"), ("route", route), ("status", status))
        return samples.get(f"{LATENCY}_count", {}).get(labels, 0.0)

    assert count(after, "/v1/speakers/{speaker_id}", "200") == count(before, "/v1/speakers/{speaker_id}", "200") + 1
    assert count(after, "/v1/speakers/{speaker_id}", "401") == 1
    assert count(after, "unmatched", "404") == 1
    assert count(after, "/metrics", "200") >= 1
    routes = {dict(labels)["route"] for labels in after[f"{LATENCY}_count"]}
    assert not any(str(seeded.speaker_id) in r or "/no/such" in r for r in routes), routes
    assert "/metrics" not in httpx.get(f"{url}/openapi.json").json()["paths"]


def test_jobs_queue_depth_promotions_and_liveness_come_from_the_database_and_broker(served):
    url, services, seeded = served
    settings = services.settings
    key = {"Authorization": f"Bearer {seeded.api_key}"}
    job = httpx.post(f"{url}/v1/speakers/{seeded.speaker_id}/adaptations", json={}, headers=key).json()
    queued = scrape(url)
    assert queued["hra_jobs"][(("state", "queued"),)] == 1
    assert queued["hra_jobs"][(("state", "promoted"),)] == 0
    depth = {dict(labels)["queue"]: value for labels, value in queued["hra_queue_depth"].items()}
    assert depth == {settings.train_queue: 1.0, settings.eval_queue: 0.0}
    assert queued["hra_job_oldest_queued_age_seconds"][()] > 0
    assert "hra_worker_heartbeat_age_seconds" not in queued  # no worker has reported yet

    # Run the job as a worker would (in process; the evaluation is queued nowhere but a recording queue).
    worker = replace(services, queue=RecordingQueue())
    assert isinstance(worker, Services)
    run_training(worker, uuid.UUID(job["id"]))
    run_evaluation(worker, uuid.UUID(job["id"]))
    with services.session_factory() as db:
        evaluation = db.query(Evaluation).one()
        gain = evaluation.base_wer - evaluation.candidate_wer
    assert evaluation.decision.value == "promote" and gain > 0

    done = scrape(url)
    assert done["hra_jobs"][(("state", "queued"),)] == 0 and done["hra_jobs"][(("state", "promoted"),)] == 1
    assert done["hra_evaluations"] == {(("decision", "promote"),): 1.0, (("decision", "reject"),): 0.0}
    assert done["hra_promotion_wer_gain_gcount"][(("reference", "base"),)] == 1
    assert done["hra_promotion_wer_gain_gsum"][(("reference", "base"),)] == pytest.approx(gain)
    assert done["hra_promotion_wer_gain_bucket"][(("le", "+Inf"), ("reference", "previous"))] == 1
    assert done["hra_job_duration_seconds_gcount"][(("state", "promoted"),)] == 1
    assert 0 <= done["hra_worker_heartbeat_age_seconds"][()] < 60
    assert done["hra_running_job_heartbeat_age_seconds"][()] == 0  # nothing is running any more
    assert done["hra_job_oldest_queued_age_seconds"][()] == 0

    # Every series the Grafana dashboard queries exists (a renamed metric would leave a panel empty).
    queries = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    used = {name for q in queries for name in re.findall(r"\b((?:hra|process)_[a-z_]+)\b", q)}
    assert used and not used - set(done), sorted(used - set(done))


def test_a_scrape_answers_when_the_broker_is_down_and_says_so(tmp_path, app_sqlite_url):
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    services = make_services(make_settings(tmp_path, app_sqlite_url, broker_url=dead_broker))
    with serving(services) as url:
        samples = scrape(url)
    assert samples["hra_metrics_source_up"] == {
        (("source", "database"),): 1.0, (("source", "broker"),): 0.0, (("source", "serving"),): 1.0,
    }
    assert "hra_queue_depth" not in samples and "hra_jobs" in samples


def test_head_cache_counters_are_the_serving_cache_s(served):
    url, services, _ = served
    services.ml.cache_stats = lambda: {"hits": 7, "misses": 3, "evictions": 1, "entries": 2, "bytes": 2048,
                                       "max_bytes": 4096}
    samples = scrape(url)
    assert samples["hra_head_cache_hits_total"][()] == 7
    assert samples["hra_head_cache_misses_total"][()] == 3
    assert samples["hra_head_cache_bytes"][()] == 2048 and samples["hra_head_cache_max_bytes"][()] == 4096
