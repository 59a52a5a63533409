"""`/readyz` (issue 19, item 10): on the app's own pool (no engine per call, no connections left behind), 503 with
Retry-After while the database is down, 200 again once it is back, without a restart."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from geo.store import db, localdb


def _server_connections(engine) -> int:
    """Connections the server holds to this database (every backend, idle or not), seen from a separate one."""
    observer = db.make_engine(engine.url.render_as_string(hide_password=False))
    try:
        with observer.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                      " AND pid <> pg_backend_pid()")).scalar_one()
    finally:
        observer.dispose()
    return int(count)


def test_200_readyz_calls_reuse_the_pool_and_open_no_connections(engine, monkeypatch):
    from api.main import create_app

    app = create_app(engine)
    built = []
    real_make_engine = db.make_engine
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200  # the pool holds its connection from now on
        before = _server_connections(engine)
        monkeypatch.setattr(db, "make_engine", lambda url: built.append(url) or real_make_engine(url))
        answers = [client.get("/readyz") for _ in range(200)]
        monkeypatch.undo()
        after = _server_connections(engine)
    assert {r.status_code for r in answers} == {200}
    assert answers[-1].json()["status"] == "ready" and answers[-1].json()["migrations"]
    assert after <= before, (before, after)  # no connection left behind
    assert built == []  # no engine per call


@pytest.mark.skipif(not (localdb.PG_BIN / "initdb").exists(),
                    reason="needs the PostgreSQL server binaries to make its own cluster")
def test_readyz_is_503_with_retry_after_while_the_database_is_down_then_200(own_cluster):
    from api.main import create_app

    db.migrate(own_cluster.url())
    engine = db.make_engine(own_cluster.service_url())
    try:
        with TestClient(create_app(engine), raise_server_exceptions=False) as client:
            assert client.get("/readyz").status_code == 200
            localdb.down(own_cluster)
            for _ in range(3):  # every call while down, not only the first
                down = client.get("/readyz")
                assert down.status_code == 503, down.text
                assert down.headers["content-type"].startswith("application/problem+json")
                assert down.json()["type"].endswith("/not-ready")
                assert int(down.headers["retry-after"]) > 0
            localdb.up(own_cluster)
            back = client.get("/readyz")
            assert back.status_code == 200, back.text
            assert back.json()["status"] == "ready"
    finally:
        engine.dispose()
