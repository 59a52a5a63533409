"""Request-body limits: a huge payload is refused with 413 problem+json before anything is parsed or written."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from api.limits import BULK_PATHS, BodyLimitMiddleware
from api.problems import install_problem_handlers


@pytest.fixture
def small_app():
    """A tiny app behind the middleware with small limits: 1 kB for edits, 4 kB for bulk paths."""
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=1000, max_upload_bytes=4000)
    seen = []

    @app.post("/v1/plans")
    async def edit(payload: dict):
        seen.append(payload)
        return {"keys": len(payload)}

    @app.post(BULK_PATHS[-1])
    async def batch(request: Request):
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        seen.append(total)
        return {"bytes": total}

    return TestClient(app), seen


def chunks(n_bytes: int, size: int = 500):
    """A body sent chunked (no Content-Length), as a streaming client would."""
    sent = 0
    while sent < n_bytes:
        part = min(size, n_bytes - sent)
        sent += part
        yield b"x" * part


def assert_413(r, limit):
    assert r.status_code == 413, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 413 and body["max_upload_bytes"] == limit and f"{limit:,}" in body["detail"]


def test_bodies_within_the_limit_pass(small_app):
    client, seen = small_app
    assert client.post("/v1/plans", json={"a": "x" * 900}).json() == {"keys": 1}
    assert client.post("/v1/locate/batch", content=chunks(3900)).json() == {"bytes": 3900}
    assert seen == [{"a": "x" * 900}, 3900]


def test_declared_length_over_the_limit_is_refused_unread(small_app):
    client, seen = small_app
    assert_413(client.post("/v1/plans", content=json.dumps({"a": "x" * 2000}),
                           headers={"content-type": "application/json"}), 1000)
    assert seen == []


def test_chunked_body_is_refused_as_it_passes_the_limit(small_app):
    client, seen = small_app
    assert_413(client.post("/v1/plans", content=chunks(5000), headers={"content-type": "application/json"}), 1000)
    assert_413(client.post("/v1/locate/batch", content=chunks(9000), headers={"content-type": "text/csv"}), 4000)
    assert seen == []


def test_the_service_refuses_a_huge_declared_upload(client, admin_headers):
    from geo.settings import get_settings

    limit = get_settings().max_upload_bytes
    r = client.post("/v1/imports", content=b"--x--", headers={**admin_headers, "content-length": str(limit + 1),
                                                              "content-type": "multipart/form-data; boundary=x"})
    assert_413(r, limit)
