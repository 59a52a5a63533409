"""Open311 GeoReport v2 beyond the round trip (tests/test_incidents.py): public discovery, service list and service
definitions; `requested_datetime` kept for trusted API keys only; requests still need a key and its jurisdiction."""

from __future__ import annotations

import datetime as dt
import uuid
import xml.etree.ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.schemas.incidents import Open311Created, Open311Definition, Open311Discovery, Open311Service
from geo.incidents.open311 import UnknownKeyRef, key_trusted, set_key_trust
from geo.store import db
from tests.conftest import _create_database, _drop_database
from tests.incident_data import CST, STREET, build_tiny_district, lonlat


@pytest.fixture(scope="module")
def o_engine():
    url = _create_database("gridatlas_open311")
    db.migrate(url)
    engine = db.make_engine(url)
    with engine.begin() as conn:
        build_tiny_district(conn)
    yield engine
    engine.dispose()
    _drop_database(url)


@pytest.fixture
def session(o_engine):
    conn = o_engine.connect()
    outer = conn.begin()
    s = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield s
    finally:
        s.close()
        outer.rollback()
        conn.close()


@pytest.fixture
def client(o_engine, session):
    from api.deps import session_dep
    from api.main import create_app

    app = create_app(o_engine)

    def _session():
        yield session
        session.flush()

    app.dependency_overrides[session_dep] = _session
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _key(session, trusted: bool = False, jurisdiction: str = STREET) -> str:
    from geo.access.apikeys import create_key
    from geo.access.users import create_user

    user = create_user(session, f"worker-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, "worker", jurisdiction)
    session.flush()
    row, key = create_key(session, user, "12345 热线对接")
    session.flush()
    if trusted:
        set_key_trust(session.connection(), row.prefix, True)
    return key


def test_discovery_services_and_definitions_are_public(client):
    d = client.get("/open311/v2/discovery.json")
    assert d.status_code == 200, d.text
    doc = Open311Discovery.model_validate(d.json())
    (ep,) = doc.endpoints
    assert ep.url.endswith("/open311/v2/") and ep.specification == "http://wiki.open311.org/GeoReport_v2"
    assert set(ep.formats) == {"application/json", "text/xml"}
    x = ET.fromstring(client.get("/open311/v2/discovery.xml").content)
    assert x.tag == "discovery" and x.find("endpoints/endpoint/url").text == ep.url
    assert [f.text for f in x.findall("endpoints/endpoint/formats/format")] == ep.formats

    services = client.get("/open311/v2/services.json")
    assert services.status_code == 200
    listed = [Open311Service.model_validate(s) for s in services.json()]
    assert {s.service_code for s in listed} >= {"A", "A01", "F04"}
    # only public fields: no departments, no internal columns
    assert set(services.json()[0]) == set(Open311Service.model_fields)

    definition = client.get("/open311/v2/services/A01.json")
    assert definition.status_code == 200
    assert Open311Definition.model_validate(definition.json()).attributes == []
    xd = ET.fromstring(client.get("/open311/v2/services/A01.xml").content)
    assert xd.tag == "service_definition" and xd.find("service_code").text == "A01"
    missing = client.get("/open311/v2/services/NOPE.json")
    assert missing.status_code == 404 and missing.json()[0]["code"] == 404
    # reading requests still needs a key
    assert client.get("/open311/v2/requests.json").status_code == 401


def _post(client, key: str, when: str | None, x: float = 250, y: float = 250):
    lon, lat = lonlat(x, y)
    form = {"api_key": key, "service_code": "A01", "lat": f"{lat:.8f}", "long": f"{lon:.8f}",
            "description": "垃圾"}
    if when is not None:
        form["requested_datetime"] = when
    return client.post("/open311/v2/requests.json", data=form)


def test_requested_datetime_is_kept_for_a_trusted_key_only(client, session):
    trusted, plain = _key(session, trusted=True), _key(session)
    when = "2025-03-02T08:30:00+08:00"
    r = _post(client, trusted, when)
    assert r.status_code == 201, r.text
    (created,) = r.json()
    Open311Created.model_validate(created)
    assert created["service_notice"] is None
    (got,) = client.get(f"/open311/v2/requests/{created['service_request_id']}.json",
                        params={"api_key": trusted}).json()
    assert dt.datetime.fromisoformat(got["requested_datetime"]) == dt.datetime(2025, 3, 2, 8, 30, tzinfo=CST)
    # attributed by the boundaries of that time, and the collect event keeps when it was entered
    ev = session.execute(text("SELECT at, detail FROM incident_events WHERE incident_id = :i"),
                         {"i": int(created["service_request_id"])}).one()
    assert ev.at == dt.datetime(2025, 3, 2, 8, 30, tzinfo=CST) and "recorded_at" in ev.detail

    u = _post(client, plain, when)
    assert u.status_code == 201
    (created_u,) = u.json()
    assert "not trusted" in created_u["service_notice"]
    (got_u,) = client.get(f"/open311/v2/requests/{created_u['service_request_id']}.json",
                          params={"api_key": plain}).json()
    server_time = dt.datetime.fromisoformat(got_u["requested_datetime"])
    assert abs((server_time - dt.datetime.now(dt.UTC)).total_seconds()) < 600
    audit = session.execute(text("SELECT after FROM audit_log WHERE action = 'incident.create' ORDER BY id")).all()
    assert [a.after["requested_datetime_kept"] for a in audit] == [True, False]

    # without requested_datetime, nothing to say; a bad or future one is an Open311 error for a trusted key
    assert _post(client, plain, None).json()[0]["service_notice"] is None
    bad = _post(client, trusted, "yesterday")
    assert bad.status_code == 400 and "W3C" in bad.json()[0]["description"]
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    assert _post(client, trusted, future).status_code == 400


def test_trust_is_an_attribute_of_the_key(session):
    from geo.access.apikeys import find_key

    key = _key(session)
    row = find_key(session, key)
    conn = session.connection()
    assert not key_trusted(conn, f"api_key:{row.prefix}")
    assert set_key_trust(conn, key, True)["after"] is True
    assert key_trusted(conn, f"api_key:{row.prefix}")
    assert not key_trusted(conn, None) and not key_trusted(conn, "token")
    conn.execute(text("UPDATE api_keys SET revoked_at = now() WHERE id = :i"), {"i": row.id})
    assert not key_trusted(conn, f"api_key:{row.prefix}")  # a revoked key is trusted no more
    with pytest.raises(UnknownKeyRef):
        set_key_trust(conn, "nokey123", True)
