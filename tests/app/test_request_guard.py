"""RequestGuard: the key is checked before a body is read, and bodies are counted as they stream.

The ASGI-level tests drive the application directly with a ``receive`` that records every call, so "before the
body is read" is observed, not inferred. The last tests run a real uvicorn server and send 100 MB chunked bodies,
counting what the application took from the server and the process's peak memory.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from app.main import create_app
from storage.models import Speaker, Utterance
from tests.app.conftest import assert_error
from tests.app.live_server import free_port
from tests.app.support import make_services, make_settings
from tests.memory import peak_rss_growth

MB = 1024 * 1024
CHUNK = 64 * 1024


class Exchange:
    """One request sent straight to the ASGI app: the response, and how much of the body the app pulled."""

    def __init__(self, app, method: str, path: str, headers: dict[str, str], chunks: Iterator[bytes]) -> None:
        self.receive_calls = 0
        self.bytes_pulled = 0
        self.messages: list[dict] = []
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80),
        }

        async def receive() -> dict:
            self.receive_calls += 1
            chunk = next(chunks, None)
            if chunk is None:
                return {"type": "http.request", "body": b"", "more_body": False}
            self.bytes_pulled += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message: dict) -> None:
            self.messages.append(message)

        asyncio.run(app(scope, receive, send))

    @property
    def status(self) -> int:
        return next(m["status"] for m in self.messages if m["type"] == "http.response.start")

    @property
    def headers(self) -> dict[str, str]:
        start = next(m for m in self.messages if m["type"] == "http.response.start")
        return {k.decode(): v.decode() for k, v in start["headers"]}

    @property
    def error(self) -> dict:
        body = b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")
        return json.loads(body)["error"]


# A well-formed multipart upload whose file part never ends (the parser would refuse garbage before any limit).
MULTIPART_HEAD = (
    b"--xyz\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n"
    b"Content-Type: audio/wav\r\n\r\n"
)


def endless(chunk: bytes = b"x" * CHUNK, head: bytes = MULTIPART_HEAD) -> Iterator[bytes]:
    yield head
    while True:
        yield chunk


def one(body: bytes) -> Iterator[bytes]:
    yield body


UPLOAD_HEADERS = {"content-type": "multipart/form-data; boundary=xyz", "transfer-encoding": "chunked"}


@pytest.fixture
def upload_path(seeded) -> str:
    return f"/v1/speakers/{seeded.speaker_id}/utterances"


class TestAuthenticationBeforeTheBody:
    @pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "hra_no-scheme"])
    def test_a_missing_or_malformed_bearer_header_is_401_without_reading(self, app, upload_path, authorization):
        headers = dict(UPLOAD_HEADERS)
        if authorization is not None:
            headers["authorization"] = authorization
        exchange = Exchange(app, "POST", upload_path, headers, endless())
        assert exchange.status == 401 and exchange.receive_calls == 0
        message = "missing or invalid API key (send 'Authorization: Bearer <key>')"  # the routes' own 401
        assert exchange.error == {"code": "unauthorized", "message": message}
        assert exchange.headers["www-authenticate"] == "Bearer"

    def test_an_unknown_key_with_a_body_is_401_without_reading(self, app, upload_path):
        headers = {**UPLOAD_HEADERS, "authorization": "Bearer hra_not-a-key-anyone-was-given"}
        exchange = Exchange(app, "POST", upload_path, headers, endless())
        assert exchange.status == 401 and exchange.receive_calls == 0
        assert exchange.error == {"code": "unauthorized", "message": "invalid or revoked API key"}

    def test_requests_without_a_body_and_outside_v1_are_left_to_the_routes(self, anon, client):
        assert_error(anon.get("/v1/speakers", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
        assert client.get("/v1/speakers").status_code == 200
        assert anon.get("/healthz").status_code == 200
        assert anon.get("/openapi.json").status_code == 200

    def test_the_database_down_during_the_key_check_is_503(self, tmp_path, ml, queue):
        settings = make_settings(tmp_path, "postgresql+psycopg2://nobody@127.0.0.1:1/none?connect_timeout=2")
        app = create_app(services=make_services(settings, ml, queue))
        headers = {"content-type": "application/json", "content-length": "2", "authorization": "Bearer hra_whatever"}
        exchange = Exchange(app, "POST", "/v1/speakers", headers, one(b"{}"))
        assert exchange.status == 503 and exchange.receive_calls == 0
        assert exchange.error["code"] == "database_unavailable"
        assert "127.0.0.1" not in exchange.error["message"]


class TestStreamingBodyLimit:
    def test_a_chunked_upload_past_the_limit_is_413_and_reading_stops(self, app, upload_path, seeded, services):
        limit = services.settings.max_upload_bytes + 256 * 1024
        headers = {**UPLOAD_HEADERS, "authorization": f"Bearer {seeded.api_key}"}
        exchange = Exchange(app, "POST", upload_path, headers, endless())
        assert exchange.status == 413
        assert exchange.error["code"] == "payload_too_large"
        assert limit < exchange.bytes_pulled <= limit + CHUNK + len(MULTIPART_HEAD)  # one chunk past it, no more
        assert [m["type"] for m in exchange.messages] == ["http.response.start", "http.response.body"]  # ours only
        with services.session_factory() as db:
            assert db.scalar(select(func.count()).select_from(Utterance)) == 6  # the seeded ones

    def test_json_bodies_have_their_own_small_limit(self, app, seeded, services):
        limit = services.settings.max_json_body_bytes
        auth = {"authorization": f"Bearer {seeded.api_key}", "content-type": "application/json"}
        streamed = Exchange(
            app, "POST", "/v1/speakers", {**auth, "transfer-encoding": "chunked"}, endless(b" " * 1000, head=b"")
        )
        assert streamed.status == 413 and limit < streamed.bytes_pulled <= limit + 1000
        declared = Exchange(app, "POST", "/v1/speakers", {**auth, "content-length": str(limit + 1)}, endless())
        assert declared.status == 413 and declared.receive_calls == 0

    def test_bodies_within_the_limits_pass_whole(self, client, seeded):
        body = json.dumps({"display_name": "chunked " + "x" * 200}).encode()
        pieces = iter([body[:7], body[7:100], body[100:]])
        response = client.post("/v1/speakers", content=pieces, headers={"Content-Type": "application/json"})
        assert response.status_code == 201, response.text
        assert response.json()["display_name"] == "chunked " + "x" * 200


class BytesPulled:
    """ASGI wrapper outside the whole application: how many body bytes the application took from the server."""

    def __init__(self, app) -> None:
        self.app = app
        self.total = 0

    async def __call__(self, scope, receive, send) -> None:
        async def counted() -> dict:
            message = await receive()
            self.total += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@contextmanager
def uvicorn_serving(app) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


class TestOverRealHttp:
    """uvicorn on 127.0.0.1; the client streams 100 MB chunked (no Content-Length), holding 1 MB itself."""

    BODY_MB = 100
    MAX_GROWTH_MB = 50.0

    def _hundred_mb(self, head: bytes = MULTIPART_HEAD) -> Iterator[bytes]:
        chunk = b" " * MB  # the same object every time (spaces: valid JSON padding too)
        yield head
        for _ in range(self.BODY_MB):
            yield chunk

    def _post(self, url: str, path: str, content: Iterator[bytes], headers: dict[str, str]) -> httpx.Response:
        with peak_rss_growth() as growth:
            response = httpx.post(f"{url}{path}", content=content, headers=headers, timeout=120)
        self.growth_mb = growth.mb
        return response

    @pytest.mark.parametrize("kind", ["multipart", "json"])
    def test_a_100_mb_chunked_body_is_413_with_flat_memory(self, services, seeded, kind):
        app = BytesPulled(create_app(services=services))
        auth = {"Authorization": f"Bearer {seeded.api_key}"}
        with uvicorn_serving(app) as url:
            if kind == "multipart":
                path, head = f"/v1/speakers/{seeded.speaker_id}/utterances", MULTIPART_HEAD
                headers = {**auth, "Content-Type": "multipart/form-data; boundary=xyz"}
                limit = services.settings.max_upload_bytes + 256 * 1024
            else:  # FastAPI would read a JSON body whole into memory
                path, head = "/v1/speakers", b'{"display_name": "x"}'
                headers = {**auth, "Content-Type": "application/json"}
                limit = services.settings.max_json_body_bytes
            response = self._post(url, path, self._hundred_mb(head), headers)
        assert_error(response, 413, "payload_too_large")
        assert limit < app.total <= limit + MB  # the application stopped reading at the limit
        assert self.growth_mb < self.MAX_GROWTH_MB, self.growth_mb
        print(f"\n100 MB chunked {kind}: {response.status_code}, app read {app.total / MB:.2f} MiB, "
              f"peak RSS growth {self.growth_mb:.1f} MiB")

    def test_a_100_mb_chunked_body_without_a_key_is_401_and_never_read(self, services, seeded):
        app = BytesPulled(create_app(services=services))
        with uvicorn_serving(app) as url:
            response = self._post(
                url, f"/v1/speakers/{seeded.speaker_id}/utterances", self._hundred_mb(),
                {"Content-Type": "multipart/form-data; boundary=xyz"},
            )
        assert_error(response, 401, "unauthorized")
        assert app.total == 0
        assert self.growth_mb < self.MAX_GROWTH_MB, self.growth_mb
        with services.session_factory() as db:
            assert db.scalar(select(func.count()).select_from(Speaker)) == 1
