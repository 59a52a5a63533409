"""Answers are gzip-compressed where the client accepts it; point batches stream uncompressed."""

from __future__ import annotations


def test_pages_and_json_are_gzipped(client):
    for path in ("/openapi.json", "/login"):
        r = client.get(path, headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200
        assert r.headers.get("content-encoding") == "gzip", path
        assert "accept-encoding" in r.headers.get("vary", "").lower()


def test_no_compression_unless_asked(client):
    r = client.get("/openapi.json", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in r.headers


def test_point_batches_are_not_compressed(client, admin_headers):
    body = "id,lon,lat\n" + "".join(f"{i},113.1,29.36\n" for i in range(200))
    r = client.post("/v1/locate/batch", content=body.encode(),
                    headers={**admin_headers, "Content-Type": "text/csv", "Accept-Encoding": "gzip"})
    assert r.status_code == 200, r.text[:300]
    assert "content-encoding" not in r.headers
