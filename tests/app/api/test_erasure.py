"""Erasure and lineage: DELETE of an utterance, a head version and a speaker (ordered, resumable, race-free).

The lineage tests run on SQLite; the speaker-erasure tests that race an upload against a DELETE, and the one that
checks every table and the bucket, run on SQLite + a local directory and on Postgres + S3 (moto).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.container import object_store_from_settings
from app.main import create_app
from app.services import utterances as utterance_service
from app.services.jobs.erasure import _tainted
from storage.errors import ObjectNotFound, ObjectStoreUnavailable
from storage.models import AdaptationJob, Base, Head, HeadStatus, JobState, Utterance
from tests.app.api.test_utterances import upload
from tests.app.conftest import assert_error
from tests.app.fakes import FakeML, RecordingQueue, tone
from tests.app.support import add_utterances, make_services, make_settings, seed_speaker
from workers.evaluation import run_evaluation
from workers.training import run_training


def adapt(client, services, speaker_id, quality: float) -> dict:
    """Train and evaluate a head of the given quality (the fake model's); the finished job."""
    services.ml.next_quality = quality
    response = client.post(f"/v1/speakers/{speaker_id}/adaptations", json={"head_type": "linear"})
    assert response.status_code == 202, response.text
    job_id = uuid.UUID(response.json()["id"])
    run_training(services, job_id)
    run_evaluation(services, job_id)
    return client.get(f"/v1/jobs/{job_id}").json()


def utterance_ids(services, speaker_id, split: str) -> list[uuid.UUID]:
    with services.session_factory() as db:
        return list(
            db.scalars(
                select(Utterance.id)
                .where(Utterance.speaker_id == speaker_id, Utterance.split == split)
                .order_by(Utterance.created_at, Utterance.id)
            )
        )


def exists(store, key: str) -> bool:
    try:
        store.stat(key)
    except ObjectNotFound:
        return False
    return True


def statuses(client, speaker_id) -> dict[str, str]:
    return {h["id"]: h["status"] for h in client.get(f"/v1/speakers/{speaker_id}/heads").json()["items"]}


@pytest.fixture
def two_versions(client, services, seeded):
    """v1 (quality 0.8) trained on the 4 seeded train utterances; then one more train utterance ``extra``, and v2
    (quality 1.0, warm-started from v1) trained on all 5 and promoted over v1."""
    v1 = adapt(client, services, seeded.speaker_id, 0.8)
    assert v1["state"] == "promoted", v1
    first_train = utterance_ids(services, seeded.speaker_id, "train")
    add_utterances(services, seeded.speaker_id, train=1, eval=0, offset=30)
    (extra,) = set(utterance_ids(services, seeded.speaker_id, "train")) - set(first_train)
    v2 = adapt(client, services, seeded.speaker_id, 1.0)
    assert v2["state"] == "promoted", v2
    assert statuses(client, seeded.speaker_id) == {v1["head_id"]: "retired", v2["head_id"]: "in_service"}
    return SimpleNamespace(v1=v1["head_id"], v2=v2["head_id"], extra=extra, first_train=first_train, job1=v1["id"])


class TestDeleteUtterance:
    def test_withdraws_the_heads_trained_on_it_and_falls_back_to_the_newest_clean_version(
        self, client, services, seeded, two_versions
    ):
        v = two_versions
        key = f"tenants/{seeded.tenant_id}/speakers/{seeded.speaker_id}/utterances/{v.extra}.flac"
        assert exists(services.object_store, key)
        response = client.delete(f"/v1/speakers/{seeded.speaker_id}/utterances/{v.extra}")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "utterance_id": str(v.extra),
            "withdrawn_head_ids": [v.v2],
            "cancelled_job_ids": [],
            "in_service_head_id": v.v1,
            "fallback_head_id": v.v1,
            "reports_scrubbed": 0,
        }
        assert statuses(client, seeded.speaker_id) == {v.v1: "in_service", v.v2: "withdrawn"}
        assert client.get(f"/v1/speakers/{seeded.speaker_id}").json()["in_service_head_id"] == v.v1
        assert str(v.extra) not in {u["id"] for u in client.get(f"/v1/speakers/{seeded.speaker_id}/utterances").json()["items"]}
        assert not exists(services.object_store, key)  # the audio went after the row

        # An utterance v1 was trained on too: v1 is withdrawn; v2 already was (not listed again); the base model serves.
        response = client.delete(f"/v1/speakers/{seeded.speaker_id}/utterances/{v.first_train[0]}")
        assert response.json()["withdrawn_head_ids"] == [v.v1]
        assert response.json()["in_service_head_id"] is None and response.json()["fallback_head_id"] is None
        assert statuses(client, seeded.speaker_id) == {v.v1: "withdrawn", v.v2: "withdrawn"}
        assert client.get(f"/v1/speakers/{seeded.speaker_id}").json()["in_service_head_id"] is None

    def test_a_version_trained_after_the_deletion_is_clean_and_a_withdrawn_one_never_comes_back(
        self, client, services, seeded, two_versions
    ):
        v = two_versions
        client.delete(f"/v1/speakers/{seeded.speaker_id}/utterances/{v.extra}")
        v3 = adapt(client, services, seeded.speaker_id, 1.0)  # warm-started from v1, on the 4 first utterances
        assert v3["state"] == "promoted", v3
        head = client.get(f"/v1/heads/{v3['head_id']}").json()
        assert str(v.extra) not in head["train_utterance_ids"] and head["parent_head_id"] == v.v1
        # Deleting v3 falls back to v1 (retired, clean), never to v2 (withdrawn) although v2 is newer.
        assert client.delete(f"/v1/heads/{v3['head_id']}").status_code == 204
        assert statuses(client, seeded.speaker_id) == {v.v1: "in_service", v.v2: "withdrawn"}

    def test_a_held_out_utterance_leaves_heads_alone_and_leaves_the_reports(self, client, services, seeded, two_versions):
        v = two_versions
        held_out = utterance_ids(services, seeded.speaker_id, "eval")[0]
        report = client.get(f"/v1/jobs/{v.job1}/report").json()
        assert str(held_out) in {row["utterance_id"] for row in report["utterances"]}
        response = client.delete(f"/v1/speakers/{seeded.speaker_id}/utterances/{held_out}")
        body = response.json()
        assert body["withdrawn_head_ids"] == [] and body["in_service_head_id"] == v.v2
        assert body["reports_scrubbed"] == 2  # both jobs' reports quoted it
        for job_id in (v.job1,):
            report = client.get(f"/v1/jobs/{job_id}/report").json()
            assert str(held_out) not in json.dumps(report)
            assert report["erased_utterances"] == 1 and len(report["utterances"]) == 1

    def test_cancels_the_speakers_active_job(self, client, services, seeded):
        job = client.post(f"/v1/speakers/{seeded.speaker_id}/adaptations", json={}).json()
        utt = utterance_ids(services, seeded.speaker_id, "train")[0]
        body = client.delete(f"/v1/speakers/{seeded.speaker_id}/utterances/{utt}").json()
        assert body["cancelled_job_ids"] == [job["id"]]
        assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "cancelled"
        assert run_training(services, uuid.UUID(job["id"])).action == "noop"  # the worker keeps nothing

    def test_a_head_stored_by_a_job_that_read_the_utterance_is_withdrawn(self, client, services, seeded):
        """The job trained (its candidate uses the utterance) and is evaluating when the utterance goes."""
        job = client.post(f"/v1/speakers/{seeded.speaker_id}/adaptations", json={}).json()
        run_training(services, uuid.UUID(job["id"]))
        candidate = client.get(f"/v1/jobs/{job['id']}").json()["head_id"]
        utt = utterance_ids(services, seeded.speaker_id, "train")[0]
        body = client.delete(f"/v1/speakers/{seeded.speaker_id}/utterances/{utt}").json()
        assert body["cancelled_job_ids"] == [job["id"]] and body["withdrawn_head_ids"] == [candidate]
        assert run_evaluation(services, uuid.UUID(job["id"])).action == "noop"
        assert statuses(client, seeded.speaker_id) == {candidate: "withdrawn"}

    def test_unknown_utterance_other_speaker_and_other_tenant_are_404(self, client, services, seeded, other):
        assert_error(client.delete(f"/v1/speakers/{seeded.speaker_id}/utterances/{uuid.uuid4()}"), 404, "utterance_not_found")
        theirs = utterance_ids(services, other.speaker_id, "train")[0]
        assert_error(client.delete(f"/v1/speakers/{seeded.speaker_id}/utterances/{theirs}"), 404, "utterance_not_found")
        assert_error(client.delete(f"/v1/speakers/{other.speaker_id}/utterances/{theirs}"), 404, "speaker_not_found")
        assert len(utterance_ids(services, other.speaker_id, "train")) == 4


class TestDeleteHead:
    def test_deleting_the_version_in_service_falls_back_and_removes_the_artifact(
        self, client, services, seeded, two_versions
    ):
        v = two_versions
        key = f"tenants/{seeded.tenant_id}/speakers/{seeded.speaker_id}/heads/{v.v2}.safetensors"
        assert exists(services.object_store, key)
        response = client.delete(f"/v1/heads/{v.v2}")
        assert response.status_code == 204 and response.content == b""
        assert_error(client.get(f"/v1/heads/{v.v2}"), 404, "head_not_found")
        assert not exists(services.object_store, key)
        assert statuses(client, seeded.speaker_id) == {v.v1: "in_service"}
        jobs = [client.get(f"/v1/jobs/{j}").json() for j in (v.job1,)]
        assert jobs[0]["head_id"] == v.v1  # the other job's record stands
        # The last version: the base model serves.
        assert client.delete(f"/v1/heads/{v.v1}").status_code == 204
        assert client.get(f"/v1/speakers/{seeded.speaker_id}").json()["in_service_head_id"] is None
        assert_error(client.delete(f"/v1/heads/{v.v1}"), 404, "head_not_found")

    def test_deleting_a_retired_version_changes_nothing_in_service(self, client, seeded, two_versions):
        assert client.delete(f"/v1/heads/{two_versions.v1}").status_code == 204
        assert statuses(client, seeded.speaker_id) == {two_versions.v2: "in_service"}

    def test_the_candidate_of_a_running_job_is_409_until_the_job_is_cancelled(self, client, services, seeded):
        job = client.post(f"/v1/speakers/{seeded.speaker_id}/adaptations", json={}).json()
        run_training(services, uuid.UUID(job["id"]))
        candidate = client.get(f"/v1/jobs/{job['id']}").json()["head_id"]
        assert_error(client.delete(f"/v1/heads/{candidate}"), 409, "head_in_use")
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        assert client.delete(f"/v1/heads/{candidate}").status_code == 204

    def test_another_tenants_head_is_404(self, client, seeded, two_versions, other):
        assert_error(other.delete(f"/v1/heads/{two_versions.v2}"), 404, "head_not_found")
        assert client.get(f"/v1/heads/{two_versions.v2}").status_code == 200


def test_taint_follows_warm_starts():
    a, b, c, d = (uuid.uuid4() for _ in range(4))
    heads = [
        SimpleNamespace(id=a, status=HeadStatus.retired, train_utterance_ids=["u1"], parent_head_id=None),
        SimpleNamespace(id=b, status=HeadStatus.retired, train_utterance_ids=["u2"], parent_head_id=a),
        SimpleNamespace(id=c, status=HeadStatus.in_service, train_utterance_ids=["u3"], parent_head_id=b),
        SimpleNamespace(id=d, status=HeadStatus.rejected, train_utterance_ids=["u3"], parent_head_id=None),
    ]
    assert _tainted(heads, {"u1"}) == {a, b, c}
    assert _tainted(heads, {"u3"}) == {c, d}
    assert _tainted(heads, set()) == set()
    heads[1].status = HeadStatus.withdrawn
    assert _tainted(heads, set()) == {b, c}


# ---- speaker erasure ---------------------------------------------------------------------------------------


class GatedML(FakeML):
    """The fake model, whose decoding can be held mid-upload (``hold``), to race an upload against a DELETE."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def decode_audio(self, data, max_seconds=None):
        if self.hold:
            self.entered.set()
            assert self.release.wait(30)
        return super().decode_audio(data, max_seconds)


@pytest.fixture(params=["sqlite-local", "postgres-s3"])
def backend(request, tmp_path) -> Iterator[SimpleNamespace]:
    """Services on SQLite + a local directory, or on Postgres + S3 (moto); a client of tenant acme."""
    if request.param == "sqlite-local":
        settings = make_settings(tmp_path, request.getfixturevalue("app_sqlite_url"))
    else:
        s3 = request.getfixturevalue("s3_endpoint")
        settings = make_settings(
            tmp_path, request.getfixturevalue("postgres_url_factory")(), object_store="s3",
            s3_endpoint=s3["endpoint"], s3_access_key=s3["access_key"], s3_secret_key=s3["secret_key"],
            s3_region=s3["region"], s3_secure=False, s3_bucket=request.getfixturevalue("s3_bucket"),
        )
    services = make_services(settings, GatedML(), RecordingQueue())
    if settings.object_store == "s3":
        services.object_store = object_store_from_settings(settings)
    seeded = seed_speaker(services)
    keeper = seed_speaker(services, "acme", offset=40)  # a second speaker of the same tenant: left untouched
    with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {seeded.api_key}"
        yield SimpleNamespace(client=client, services=services, seeded=seeded, keeper=keeper)
    services.session_factory.kw["bind"].dispose()


def ids_of_speaker(services, speaker_id) -> set[str]:
    """Every id that belongs to the speaker (its own, its utterances', jobs', heads'), as text."""
    with services.session_factory() as db:
        ids = {speaker_id}
        ids |= set(db.scalars(select(Utterance.id).where(Utterance.speaker_id == speaker_id)))
        ids |= set(db.scalars(select(AdaptationJob.id).where(AdaptationJob.speaker_id == speaker_id)))
        ids |= set(db.scalars(select(Head.id).where(Head.speaker_id == speaker_id)))
    return {str(i) for i in ids} | {i.hex for i in ids}


def rows_mentioning(services, needles: set[str]) -> list[str]:
    """Every row of every table (all of storage.models) whose text mentions one of ``needles``."""
    found = []
    with services.session_factory() as db:
        for table in Base.metadata.sorted_tables:
            for row in db.execute(select(table)).all():
                text = " ".join(str(value) for value in row)
                if any(needle in text for needle in needles):
                    found.append(f"{table.name}: {text[:200]}")
    return found


def assert_erased(b, speaker_id, needles: set[str]) -> None:
    prefix = f"tenants/{b.seeded.tenant_id}/speakers/{speaker_id}/"
    assert b.services.object_store.list_keys(prefix) == []
    assert rows_mentioning(b.services, needles) == []
    # The other speaker of the tenant keeps everything.
    keeper = f"tenants/{b.keeper.tenant_id}/speakers/{b.keeper.speaker_id}/"
    assert len(b.services.object_store.list_keys(keeper)) == 6
    assert b.client.get(f"/v1/speakers/{b.keeper.speaker_id}").status_code == 200


def test_erasure_leaves_nothing_of_the_speaker_in_any_table_or_the_bucket(backend):
    b = backend
    job = adapt(b.client, b.services, b.seeded.speaker_id, 1.0)
    assert job["state"] == "promoted"
    pending = b.client.post(f"/v1/speakers/{b.seeded.speaker_id}/adaptations", json={})  # an active job too
    assert pending.status_code == 202
    needles = ids_of_speaker(b.services, b.seeded.speaker_id)
    assert len(rows_mentioning(b.services, needles)) >= 10  # the check can see them
    assert b.client.delete(f"/v1/speakers/{b.seeded.speaker_id}").status_code == 204
    assert_erased(b, b.seeded.speaker_id, needles)
    assert_error(b.client.delete(f"/v1/speakers/{b.seeded.speaker_id}"), 404, "speaker_not_found")


def test_an_interrupted_erasure_leaves_the_speaker_gone_and_a_retry_finishes_it(backend, monkeypatch):
    b = backend
    sid = b.seeded.speaker_id
    job = b.client.post(f"/v1/speakers/{sid}/adaptations", json={}).json()
    needles = ids_of_speaker(b.services, sid)
    store = b.services.object_store
    real = store.delete_prefix
    monkeypatch.setattr(store, "delete_prefix", lambda prefix: (_ for _ in ()).throw(ObjectStoreUnavailable("down")))
    assert_error(b.client.delete(f"/v1/speakers/{sid}"), 503, "object_store_unavailable")
    # Tombstoned: gone for every route, nothing can be added, its job is cancelled, its external id is free.
    assert_error(b.client.get(f"/v1/speakers/{sid}"), 404, "speaker_not_found")
    assert sid not in {s["id"] for s in b.client.get("/v1/speakers").json()["items"]}
    assert_error(upload(b.client, sid, tone(0.5)), 404, "speaker_not_found")
    assert_error(b.client.post(f"/v1/speakers/{sid}/adaptations", json={}), 404, "speaker_not_found")
    assert_error(b.client.get(f"/v1/speakers/{sid}/utterances"), 404, "speaker_not_found")
    assert_error(b.client.get(f"/v1/jobs/{job['id']}"), 404, "job_not_found")
    with b.services.session_factory() as db:
        assert db.get(AdaptationJob, uuid.UUID(job["id"])).state is JobState.cancelled
    monkeypatch.setattr(store, "delete_prefix", real)
    assert b.client.delete(f"/v1/speakers/{sid}").status_code == 204  # the retry finishes the erasure
    assert_erased(b, sid, needles)


def test_an_upload_decoding_while_the_speaker_is_erased_does_not_survive(backend):
    b = backend
    sid = b.seeded.speaker_id
    needles = ids_of_speaker(b.services, sid)
    results = []
    b.services.ml.hold = True
    uploader = threading.Thread(target=lambda: results.append(upload(b.client, sid, tone(0.7, freq=777))))
    uploader.start()
    assert b.services.ml.entered.wait(10)
    assert b.client.delete(f"/v1/speakers/{sid}").status_code == 204
    b.services.ml.release.set()
    uploader.join(30)
    assert_error(results[0], 404, "speaker_not_found")
    assert_erased(b, sid, needles)


def test_an_upload_whose_audio_was_stored_before_the_erasure_does_not_survive(backend, monkeypatch):
    """The upload has put its object and waits to insert its row when the DELETE runs from start to end."""
    b = backend
    sid = b.seeded.speaker_id
    needles = ids_of_speaker(b.services, sid)
    store, real_put = b.services.object_store, b.services.object_store.put
    stored, release = threading.Event(), threading.Event()

    def put_then_wait(key, data, content_type="application/octet-stream"):
        real_put(key, data, content_type)
        if "/utterances/" in key:
            stored.set()
            assert release.wait(30)

    monkeypatch.setattr(store, "put", put_then_wait)
    results = []
    uploader = threading.Thread(target=lambda: results.append(upload(b.client, sid, tone(0.7, freq=787))))
    uploader.start()
    assert stored.wait(10)
    assert b.client.delete(f"/v1/speakers/{sid}").status_code == 204
    release.set()
    uploader.join(30)
    assert_error(results[0], 404, "speaker_not_found")
    assert_erased(b, sid, needles)


def test_an_erasure_waits_for_an_upload_committing_and_then_erases_it(backend, monkeypatch):
    """The upload holds the speaker's lock (row inserted, not committed) when the DELETE starts: the tombstone
    waits for the upload's commit (201), and the erasure then removes that utterance too."""
    b = backend
    sid = b.seeded.speaker_id
    inserted, release = threading.Event(), threading.Event()
    real_add = utterance_service.add_utterance

    def add_then_wait(*args, **kwargs):
        row = real_add(*args, **kwargs)
        inserted.set()
        assert release.wait(30)
        return row

    monkeypatch.setattr(utterance_service, "add_utterance", add_then_wait)
    uploaded, deleted = [], []
    uploader = threading.Thread(target=lambda: uploaded.append(upload(b.client, sid, tone(0.7, freq=797))))
    uploader.start()
    assert inserted.wait(10)
    deleter = threading.Thread(target=lambda: deleted.append(b.client.delete(f"/v1/speakers/{sid}")))
    deleter.start()
    time.sleep(1.0)
    assert deleted == []  # the tombstone waits for the upload's transaction
    release.set()
    uploader.join(30)
    deleter.join(60)
    assert uploaded[0].status_code == 201, uploaded[0].text
    assert deleted[0].status_code == 204, deleted[0].text
    needles = {uploaded[0].json()["id"], str(sid)}
    assert_erased(b, sid, needles)


def test_many_uploads_racing_a_delete_leave_nothing(backend):
    b = backend
    sid = b.seeded.speaker_id
    needles = ids_of_speaker(b.services, sid)
    results: list = []

    def one(i: int) -> None:
        response = upload(b.client, sid, tone(0.4, freq=900 + 13 * i))
        results.append(response)
        if response.status_code == 201:
            needles.add(response.json()["id"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for i, thread in enumerate(threads):
        thread.start()
        if i == 3:
            assert b.client.delete(f"/v1/speakers/{sid}").status_code == 204
    for thread in threads:
        thread.join(60)
    assert sorted({r.status_code for r in results}) in ([201, 404], [404], [201])
    assert all(r.status_code in (201, 404) for r in results)
    assert_erased(b, sid, needles)


def test_an_upload_reaching_its_insert_after_the_tombstone_is_refused_and_stragglers_are_swept(backend, monkeypatch):
    """The upload passed the speaker lookup before the DELETE began and inserts after the tombstone's commit (while
    the objects are being deleted): it is refused (404, its audio removed). A worker's artifact written after the
    objects step (a straggler) is removed by the erasure's last step."""
    b = backend
    sid = b.seeded.speaker_id
    needles = ids_of_speaker(b.services, sid)
    store, real_delete_prefix = b.services.object_store, b.services.object_store.delete_prefix
    straggler = f"tenants/{b.seeded.tenant_id}/speakers/{sid}/heads/{uuid.uuid4()}.safetensors"
    results: list = []
    b.services.ml.hold = True
    uploader = threading.Thread(target=lambda: results.append(upload(b.client, sid, tone(0.7, freq=811))))

    def delete_prefix_then_race(prefix):
        count = real_delete_prefix(prefix)
        if uploader.ident is not None and not results:
            b.services.ml.release.set()  # the upload resumes after the tombstone, and is done before the rows go
            uploader.join(30)
            store.put(straggler, b"late artifact")
        return count

    monkeypatch.setattr(store, "delete_prefix", delete_prefix_then_race)
    uploader.start()
    assert b.services.ml.entered.wait(10)
    assert b.client.delete(f"/v1/speakers/{sid}").status_code == 204
    assert_error(results[0], 404, "speaker_not_found")
    assert not exists(store, straggler)
    assert_erased(b, sid, needles)
