"""/healthz and /readyz"""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.support import make_services, make_settings


class TestHealthz:
    def test_is_ok_without_a_key(self, anon):
        assert anon.get("/healthz").json() == {"status": "ok"}

    def test_calls_no_dependency(self, anon, services, queue, monkeypatch):
        def must_not_be_called(*args, **kwargs):
            raise AssertionError("/healthz called a dependency")

        queue.available = False
        monkeypatch.setattr(services.object_store, "ping", must_not_be_called)
        monkeypatch.setattr(services, "session_factory", must_not_be_called)
        response = anon.get("/healthz")
        assert response.status_code == 200 and response.json() == {"status": "ok"}


class TestReadyz:
    def test_ready_when_everything_answers(self, anon):
        response = anon.get("/readyz")
        assert response.status_code == 200
        everything_ok = {"database": "ok", "object_store": "ok", "broker": "ok"}
        assert response.json() == {"status": "ready", "checks": everything_ok}

    def test_503_names_the_failing_dependency_without_its_error_text(self, anon, queue):
        queue.available = False
        response = anon.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "not_ready",
            "checks": {"database": "ok", "object_store": "ok", "broker": "broker_unavailable"},
        }
        assert "QueueUnavailable" not in response.text and "fake broker" not in response.text

    def test_503_when_the_database_is_unreachable_without_host_or_driver_text(self, tmp_path, ml, queue):
        settings = make_settings(tmp_path, "postgresql+psycopg2://nobody@127.0.0.1:1/none?connect_timeout=2")
        with TestClient(create_app(services=make_services(settings, ml, queue))) as client:
            response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"] == {
            "database": "database_unavailable",
            "object_store": "ok",
            "broker": "ok",
        }
        for internal in ("127.0.0.1", "OperationalError", "psycopg2", "refused", "nobody"):
            assert internal not in response.text, internal

    def test_probes_are_cached_for_the_configured_time(self, anon, services, queue, monkeypatch):
        pings = []
        real_ping = queue.ping
        monkeypatch.setattr(queue, "ping", lambda: (pings.append(1), real_ping()))
        services.settings.readiness_cache_seconds = 0.5
        assert anon.get("/readyz").status_code == 200
        queue.available = False
        assert anon.get("/readyz").status_code == 200  # still the cached probe
        assert len(pings) == 1
        time.sleep(0.6)
        assert anon.get("/readyz").json()["checks"]["broker"] == "broker_unavailable"
        assert len(pings) == 2
