"""Static files addressed by content: `asset(path)` gives `/static/<path>?v=<SHA-256 prefix>`, served immutable for
a year when `v` matches the file and `no-cache` otherwise; the page templates link their assets that way."""

from __future__ import annotations

import hashlib
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jinja2 import Environment

from maps import assets
from maps.assets import STATIC_DIR, asset_hash, asset_url, install_asset_helper
from maps.static_mount import IMMUTABLE, REVALIDATE, mount_static


def _sha(path: str) -> str:
    return hashlib.sha256((STATIC_DIR / path).read_bytes()).hexdigest()[:12]


def test_asset_url_names_the_content_hash():
    assert asset_url("leader/leader.css") == f"/static/leader/leader.css?v={_sha('leader/leader.css')}"
    assert asset_url("/favicon.svg", "/s") == f"/s/favicon.svg?v={_sha('favicon.svg')}"
    assert asset_url("no/such/file.js") == "/static/no/such/file.js"  # nothing to hash: no version
    assert asset_hash("../../pyproject.toml") is None  # never outside maps/static


def test_the_hash_follows_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "STATIC_DIR", tmp_path)
    f = tmp_path / "a.js"
    f.write_text("one")
    first = asset_hash("a.js")
    f.write_text("two!")  # another size: read again
    assert asset_hash("a.js") != first == hashlib.sha256(b"one").hexdigest()[:12]


def test_jinja_global_uses_the_templates_static_url():
    env = install_asset_helper(Environment())
    page = env.from_string("{{ asset('leader/leader.css') }}|{{ asset('favicon.svg') }}").render(static_url="/x")
    assert page == f"/x/leader/leader.css?v={_sha('leader/leader.css')}|/x/favicon.svg?v={_sha('favicon.svg')}"
    assert env.from_string("{{ asset('app.css') }}").render().startswith("/static/app.css?v=")


@pytest.fixture
def static_client():
    app = mount_static(FastAPI())
    with TestClient(app) as c:
        yield c


def test_matching_version_is_immutable_others_revalidate(static_client):
    good = static_client.get(asset_url("leader/leader.css"))
    assert good.status_code == 200 and good.headers["cache-control"] == IMMUTABLE
    assert good.content == (STATIC_DIR / "leader/leader.css").read_bytes()
    for url in ("/static/leader/leader.css", "/static/leader/leader.css?v=000000000000"):
        r = static_client.get(url)
        assert r.status_code == 200 and r.headers["cache-control"] == REVALIDATE, url
    # a revalidation by ETag still answers 304, and says how to cache
    etag = static_client.get("/static/leader/leader.css").headers["etag"]
    r = static_client.get("/static/leader/leader.css", headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.headers["cache-control"] == REVALIDATE
    assert static_client.get("/static/no-such.css?v=1").status_code == 404


@pytest.mark.parametrize("path", ["/", "/maps", "/ogc?f=html", "/plans", "/admin/basemaps", "/maps/coverage",
                                  "/maps/classification"])
def test_pages_link_their_assets_by_content(client, admin_headers, path):
    r = client.get(path, headers=admin_headers | {"Accept": "text/html"})
    assert r.status_code == 200, r.text[:300]
    local = re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text)
    assert local, path
    for url in local:
        file, _, version = url.removeprefix("/static/").partition("?v=")
        assert version == _sha(file), url
        cached = client.get(url)
        assert cached.status_code == 200 and cached.headers["cache-control"] == IMMUTABLE, url
