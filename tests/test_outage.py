"""While PostgreSQL is down the service answers 503 with Retry-After (not 500), and recovers by itself.

Runs on a cluster of its own (the `own_cluster` fixture), stopped and started again under a running app.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from geo.store import db, localdb

pytestmark = pytest.mark.skipif(
    not (localdb.PG_BIN / "initdb").exists(), reason="needs the PostgreSQL server binaries to make its own cluster"
)


def test_503_while_the_database_is_down_then_recovery_without_restart(own_cluster):
    from api.main import create_app

    db.migrate(own_cluster.url())
    engine = db.make_engine(own_cluster.service_url())
    login = {"username": "nobody", "password": "wrong password"}
    with TestClient(create_app(engine), raise_server_exceptions=False) as client:
        assert client.post("/v1/auth/token", data=login).status_code == 401

        localdb.down(own_cluster)
        down = client.post("/v1/auth/token", data=login)
        assert down.status_code == 503, down.text
        assert down.headers["content-type"].startswith("application/problem+json")
        assert down.json()["type"].endswith("/database-unavailable")
        assert int(down.headers["retry-after"]) > 0
        assert client.get("/readyz").status_code == 503

        localdb.up(own_cluster)
        assert client.post("/v1/auth/token", data=login).status_code == 401
        assert client.get("/readyz").status_code == 200
    engine.dispose()


def test_values_the_database_refuses_are_422_not_500(client, admin_headers):
    """A NUL byte in text or an id beyond the column's range must not reach the database as a 500."""
    for path, params in (("/v1/users", {"within": "a\x00b"}), ("/v1/people/3000000000", None)):
        r = client.get(path, params=params, headers=admin_headers)
        assert r.status_code in (404, 422), (path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
