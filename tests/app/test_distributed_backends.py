"""The API and the pipeline on the distributed backends: Postgres and the minio SDK against an S3 endpoint."""

from __future__ import annotations

import hashlib
import uuid

from fastapi.testclient import TestClient

from app.main import create_app
from app.container import object_store_from_settings
from tests.app.api.test_utterances import upload
from tests.app.fakes import FakeML, RecordingQueue, tone
from tests.app.support import make_services, make_settings, seed_speaker
from workers.evaluation import run_evaluation
from workers.training import run_training


def test_enroll_adapt_download_erase_on_postgres_and_s3(tmp_path, postgres_url_factory, s3_endpoint, s3_bucket):
    settings = make_settings(
        tmp_path,
        postgres_url_factory(),
        object_store="s3",
        s3_endpoint=s3_endpoint["endpoint"],
        s3_access_key=s3_endpoint["access_key"],
        s3_secret_key=s3_endpoint["secret_key"],
        s3_region=s3_endpoint["region"],
        s3_secure=False,
        s3_bucket=s3_bucket,
    )
    services = make_services(settings, FakeML(), RecordingQueue())
    services.object_store = object_store_from_settings(settings)
    seeded = seed_speaker(services)
    with TestClient(create_app(services=services)) as client:
        client.headers["Authorization"] = f"Bearer {seeded.api_key}"
        assert client.get("/readyz").json()["checks"]["object_store"] == "ok"
        assert upload(client, seeded.speaker_id, tone(1.0, freq=999)).status_code == 201
        job_id = client.post(f"/v1/speakers/{seeded.speaker_id}/adaptations", json={}).json()["id"]
        run_training(services, uuid.UUID(job_id))
        run_evaluation(services, uuid.UUID(job_id))
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "promoted", job
        artifact = client.get(f"/v1/heads/{job['head_id']}/artifact")
        assert hashlib.sha256(artifact.content).hexdigest() == client.get(f"/v1/heads/{job['head_id']}").json()["sha256"]
        prefix = f"tenants/{seeded.tenant_id}/speakers/{seeded.speaker_id}/"
        assert len(services.object_store.list_keys(prefix)) == 9  # 7 utterances, 1 head, 1 report
        assert client.delete(f"/v1/speakers/{seeded.speaker_id}").status_code == 204
        assert services.object_store.list_keys(prefix) == []
        assert client.get(f"/v1/heads/{job['head_id']}/artifact").status_code == 404
