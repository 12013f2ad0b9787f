"""/healthz and /readyz"""

from __future__ import annotations


class TestHealthz:
    def test_is_ok_without_a_key(self, anon):
        assert anon.get("/healthz").json() == {"status": "ok"}


class TestReadyz:
    def test_ready_when_everything_answers(self, anon):
        response = anon.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "checks": {"database": "ok", "object_store": "ok", "broker": "ok"}}

    def test_503_with_the_failing_check(self, anon, queue):
        queue.available = False
        response = anon.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not_ready"
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["broker"].startswith("error: QueueUnavailable")

    def test_503_when_the_database_is_unreachable(self, tmp_path, ml, queue):
        from fastapi.testclient import TestClient

        from app.main import create_app
        from tests.app.support import make_services, make_settings

        settings = make_settings(tmp_path, "postgresql+psycopg2://nobody@127.0.0.1:1/none?connect_timeout=2")
        with TestClient(create_app(services=make_services(settings, ml, queue))) as client:
            response = client.get("/readyz")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["database"].startswith("error: OperationalError")
        assert checks["object_store"] == checks["broker"] == "ok"
