"""/v1/foundation"""

from __future__ import annotations

from tests.app.conftest import assert_error


class TestDescribeFoundation:
    def test_describes_backbone_and_controller(self, client):
        body = client.get("/v1/foundation").json()
        assert body["backbone"]["name"] == "fake"
        assert body["controller"]["fingerprint"] == "c" * 64

    def test_unavailable_foundation_is_503(self, client, ml):
        ml.available = False
        assert_error(client.get("/v1/foundation"), 503, "foundation_unavailable")

    def test_without_a_key_is_401(self, anon):
        assert_error(anon.get("/v1/foundation"), 401, "unauthorized")


class TestDownloadFoundationPart:
    def test_downloads_each_part(self, client):
        for part in ("backbone", "controller"):
            response = client.get(f"/v1/foundation/{part}/artifact")
            assert response.status_code == 200
            assert response.content == f"{part}-weights".encode()
            assert f"{part}.safetensors" in response.headers["content-disposition"]

    def test_unknown_part_is_422(self, client):
        assert_error(client.get("/v1/foundation/decoder/artifact"), 422, "validation_error")
