"""The application as a whole: one error shape everywhere, a complete OpenAPI document, the bootstrap key."""

from __future__ import annotations

from sqlalchemy import select

from app.error_handlers import is_openai_path
from app.security import hash_api_key
from storage.models import ApiKey, Tenant
from tests.app.conftest import assert_error

EXPECTED_PATHS = {
    "/v1/speakers": {"post", "get"},
    "/v1/speakers/{speaker_id}": {"get", "delete"},
    "/v1/speakers/{speaker_id}/utterances": {"post", "get"},
    "/v1/speakers/{speaker_id}/utterances/{utterance_id}": {"delete"},
    "/v1/speakers/{speaker_id}/adaptations": {"post"},
    "/v1/jobs/{job_id}": {"get"},
    "/v1/jobs/{job_id}/cancel": {"post"},
    "/v1/jobs/{job_id}/report": {"get"},
    "/v1/speakers/{speaker_id}/heads": {"get"},
    "/v1/heads/{head_id}": {"get", "delete"},
    "/v1/heads/{head_id}/artifact": {"get"},
    "/v1/speakers/{speaker_id}/transcriptions": {"post"},
    "/v1/transcriptions": {"post"},
    "/v1/foundation": {"get"},
    "/v1/foundation/{part}/artifact": {"get"},
    "/v1/audio/transcriptions": {"post"},
    "/v1/models": {"get"},
    "/v1/models/{model}": {"get"},
    "/healthz": {"get"},
    "/readyz": {"get"},
}


def test_unknown_route_is_404_in_the_error_shape(anon):
    assert_error(anon.get("/v2/nothing"), 404, "not_found")


def test_wrong_method_is_405_in_the_error_shape(client):
    assert_error(client.put("/v1/speakers"), 405, "method_not_allowed")


def test_openapi_lists_every_route_with_its_errors(anon):
    spec = anon.get("/openapi.json").json()
    for path, methods in EXPECTED_PATHS.items():
        assert set(spec["paths"][path]) == methods, path
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            assert "401" in operation["responses"], (method, path)
            # The OpenAI-compatible routes answer a request they cannot process with OpenAI's 400, not 422.
            assert ("400" if is_openai_path(path) else "422") in operation["responses"], (method, path)
    adaptation = spec["paths"]["/v1/speakers/{speaker_id}/adaptations"]["post"]["responses"]
    assert {"202", "404", "409", "422", "503"} <= set(adaptation)
    assert "job_already_active" in adaptation["409"]["description"]
    assert "ErrorResponse" in adaptation["404"]["content"]["application/json"]["schema"]["$ref"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_bootstrap_key_creates_the_default_tenant_and_stores_the_key_hashed(anon, services):
    services.settings.bootstrap_api_key = "boot-strap-key-123"
    headers = {"Authorization": "Bearer boot-strap-key-123"}
    first = anon.post("/v1/speakers", json={}, headers=headers)
    assert first.status_code == 201
    assert anon.get(f"/v1/speakers/{first.json()['id']}", headers=headers).status_code == 200
    with services.session_factory() as db:
        tenant = db.scalar(select(Tenant).where(Tenant.name == "default"))
        keys = list(db.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant.id)))
    assert [k.key_hash for k in keys] == [hash_api_key("boot-strap-key-123")]
    assert_error(anon.get("/v1/speakers", headers={"Authorization": "Bearer boot-strap-key-12"}), 401, "unauthorized")


def test_body_larger_than_the_limit_is_refused_before_reading(client, seeded, services):
    size = services.settings.max_upload_bytes + 10 * 1024 * 1024
    response = client.post(
        f"/v1/speakers/{seeded.speaker_id}/utterances",
        content=b"0" * size,
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert_error(response, 413, "payload_too_large")


def test_object_store_outage_is_503_not_500(client, seeded, services, monkeypatch):
    from storage.errors import ObjectStoreUnavailable

    def down(*args, **kwargs):
        raise ObjectStoreUnavailable("connection refused")

    monkeypatch.setattr(services.object_store, "delete_prefix", down)
    assert_error(client.delete(f"/v1/speakers/{seeded.speaker_id}"), 503, "object_store_unavailable")
    # Tombstoned first: gone for every route at once; a repeated DELETE finishes the erasure (tests/app/api/test_erasure.py).
    assert client.get(f"/v1/speakers/{seeded.speaker_id}").status_code == 404


def test_committed_openapi_document_is_current():
    """docs/openapi.json is the API reference; regenerate it with `hra openapi > docs/openapi.json`."""
    import json
    from pathlib import Path

    from app.cli import openapi_document

    committed = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(openapi_document())), "run: hra openapi > docs/openapi.json"
