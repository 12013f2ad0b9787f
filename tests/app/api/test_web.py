"""The enrollment web app served at / and /web/: the files, their types and security headers, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.api.web import WEB_DIR

ASSET = re.compile(r'(?:src|href)="(/web/[^"]+)"')
IMPORT = re.compile(r'^import .* from "(\./[^"]+)";', re.MULTILINE)


def test_the_page_is_served_at_the_root_without_a_key(anon):
    response = anon.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert '<script type="module" src="/web/js/main.js"></script>' in response.text


def test_every_asset_and_module_the_page_names_is_served(anon):
    names = ASSET.findall((WEB_DIR / "index.html").read_text())
    assert "/web/app.css" in names and "/web/js/main.js" in names
    for module in (WEB_DIR / "js").glob("*.js"):
        names += [f"/web/js/{Path(m).name}" for m in IMPORT.findall(module.read_text())]
    for name in set(names):
        response = anon.get(name)
        assert response.status_code == 200, name
    assert anon.get("/web/js/main.js").headers["content-type"] == "text/javascript; charset=utf-8"
    assert anon.get("/web/app.css").headers["content-type"] == "text/css; charset=utf-8"


def test_nothing_comes_from_another_origin():
    for path in WEB_DIR.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text()
            assert not re.search(r"(?:src|href|import|url)\W+(?:https?:)?//", text), path


def test_the_shipped_prompt_list_has_a_licence_and_a_hundred_sentences(anon):
    text = anon.get("/web/prompts.txt").text
    assert "CC0" in text
    sentences = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(sentences) >= 100
    assert len(set(sentences)) == len(sentences)
    assert all(len(s.split()) <= 12 for s in sentences)


@pytest.mark.parametrize(
    "path", ["/web/%2e%2e/main.py", "/web/..%2fmain.py", "/web/js", "/web/.hidden", "/web/nothing.js", "/web/"]
)
def test_nothing_outside_the_app_or_unknown_is_served(anon, path):
    assert anon.get(path).status_code == 404


def test_the_web_routes_are_not_in_the_api_schema(anon):
    paths = anon.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/web") for p in paths)
