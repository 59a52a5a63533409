"""Read scaling: two API processes (uvicorn, `api.main:create_app`) on one PostGIS, behind haproxy when it is
installed. A boundary change committed by another writer (the schema owner, as an import or psql would) reaches
the other process through the database's change notifications: it answers /v1/locate from the new boundaries
within `BOUND_S` seconds (a correctness bound, generous on a shared 2-core machine; typically well under a
second) and, once it has, never from the old ones again. Also measures each process's resident memory.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from geo.store import db
from tests.conftest import _create_database, _drop_database

ROOT = Path(__file__).resolve().parents[1]
#: The longest a process may take to answer from boundaries committed elsewhere.
BOUND_S = 30.0
#: After the first new answer, keep asking this long: every answer must be the new one.
STABLE_S = 2.0


def _cluster_module():
    spec = importlib.util.spec_from_file_location("gridatlas_deploy_cluster", ROOT / "deploy" / "cluster.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cluster = _cluster_module()


@pytest.fixture(scope="module")
def shared_database(district):
    """A database of its own (this test commits a redraw), migrated and holding the test district: (owner URL,
    service URL)."""
    from geo.store.load import load_district

    url = _create_database("gridatlas_multiproc")
    try:
        db.migrate(url)
        service_url = db.service_url_for(url)
        engine = db.make_engine(service_url)
        load_district(engine, district)
        engine.dispose()
        yield url, service_url
    finally:
        _drop_database(url)


@pytest.fixture(scope="module")
def api_processes(shared_database, tmp_path_factory):
    """Two API processes on free loopback ports sharing the database: [(port, Popen)]."""
    _, service_url = shared_database
    logs = tmp_path_factory.mktemp("api-logs")
    ports = [cluster.free_port(), cluster.free_port()]
    procs = [cluster.start_api(p, {"DATABASE_URL": service_url}, logs / f"api-{p}.log") for p in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            cluster.wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=120, proc=proc)
        yield list(zip(ports, procs, strict=True))
    finally:
        cluster.stop(procs)
        for f in sorted(logs.glob("*.log")):
            tail = f.read_text(errors="replace")[-2000:]
            if "Traceback" in tail:
                print(f"--- {f.name}\n{tail}")


def _grid_code(base: str, lon: float, lat: float, client: httpx.Client) -> tuple[str | None, str | None]:
    r = client.get(f"{base}/v1/locate", params={"lon": lon, "lat": lat}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["grid"]["code"], r.headers.get("x-gridatlas-backend")


def _redraw_swap(owner_url: str, a: int, b: int) -> None:
    """Commit a redraw as the schema owner: grids a and b exchange boundaries from now on (a new version)."""
    engine = db.make_engine(owner_url)
    try:
        with engine.begin() as conn:
            at = conn.execute(text("SELECT now()")).scalar_one()
            version = conn.execute(text("INSERT INTO boundary_versions (valid_from, label) "
                                        "VALUES (:t, 'multiprocess test swap') RETURNING id"), {"t": at}).scalar_one()
            conn.execute(text("UPDATE grid_boundaries SET valid_to = :t WHERE grid_id IN (:a, :b) "
                              "AND valid_to IS NULL"), {"t": at, "a": a, "b": b})
            cols = [c for c in conn.execute(text(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'grid_boundaries' AND "
                "column_name NOT IN ('id', 'grid_id', 'version_id', 'valid_from', 'valid_to', 'geom')")).scalars()]
            conn.execute(text(f"""
                INSERT INTO grid_boundaries (grid_id, version_id, valid_from, geom{''.join(', ' + c for c in cols)})
                SELECT o.grid_id, :v, :t, s.geom{''.join(', o.' + c for c in cols)}
                FROM grid_boundaries o JOIN grid_boundaries s
                  ON s.grid_id = CASE WHEN o.grid_id = :a THEN :b ELSE :a END AND s.valid_to = :t
                WHERE o.grid_id IN (:a, :b) AND o.valid_to = :t"""), {"v": version, "t": at, "a": a, "b": b})
    finally:
        engine.dispose()


def _converge(base: str, lon: float, lat: float, old: str, new: str, client: httpx.Client) -> float:
    """Seconds until `base` answers `new`; then, for STABLE_S, every answer must be `new` (never `old` again)."""
    t0 = time.monotonic()
    answers: list[str | None] = []
    while True:
        code, _ = _grid_code(base, lon, lat, client)
        answers.append(code)
        if code == new:
            took = time.monotonic() - t0
            break
        assert code == old, f"unexpected grid {code!r}"
        assert time.monotonic() - t0 < BOUND_S, f"{base} still answers from the old boundaries after {BOUND_S} s"
        time.sleep(0.02)
    until = time.monotonic() + STABLE_S
    while time.monotonic() < until:
        code, _ = _grid_code(base, lon, lat, client)
        assert code == new, f"{base} answered {code!r} from boundaries no longer in force after answering {new!r}"
    return took


def test_a_change_committed_elsewhere_reaches_every_process(shared_database, api_processes, tmp_path):
    owner_url, _ = shared_database
    (port1, proc1), (port2, proc2) = api_processes
    base1, base2 = f"http://127.0.0.1:{port1}", f"http://127.0.0.1:{port2}"
    engine = db.make_engine(owner_url)
    with engine.connect() as conn:
        (a, code_a), (b, code_b) = conn.execute(text(
            "SELECT g.id, g.code FROM grids g JOIN grid_boundaries gb ON gb.grid_id = g.id AND gb.valid_to IS NULL "
            "ORDER BY g.code LIMIT 2")).all()
        lon, lat = conn.execute(text(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM grid_boundaries "
            "WHERE grid_id = :a AND valid_to IS NULL) s"), {"a": a}).one()
    engine.dispose()

    haproxy = None
    front = None
    with httpx.Client() as client:
        # Each process builds its index (and starts listening) on first use.
        assert _grid_code(base1, lon, lat, client)[0] == code_a
        assert _grid_code(base2, lon, lat, client)[0] == code_a
        if cluster.haproxy_binary():
            front = cluster.free_port()
            haproxy = cluster.start_haproxy(front, [port1, port2], tmp_path)
        try:
            if haproxy is not None:
                cluster.wait_ready(f"http://127.0.0.1:{front}/readyz", timeout=30, proc=haproxy)
                time.sleep(2.5)  # both servers pass their first health check
                seen = {_grid_code(f"http://127.0.0.1:{front}", lon, lat, client) for _ in range(8)}
                assert seen == {(code_a, "api1"), (code_a, "api2")}, seen
            rss = {"api1": cluster.rss_mb(proc1.pid), "api2": cluster.rss_mb(proc2.pid)}

            _redraw_swap(owner_url, a, b)  # committed by another writer than either process
            took2 = _converge(base2, lon, lat, code_a, code_b, client)
            took1 = _converge(base1, lon, lat, code_a, code_b, client)
            if haproxy is not None:
                seen = {_grid_code(f"http://127.0.0.1:{front}", lon, lat, client) for _ in range(8)}
                assert seen == {(code_b, "api1"), (code_b, "api2")}, seen
        finally:
            if haproxy is not None:
                cluster.stop([haproxy])
    rss_after = {"api1": cluster.rss_mb(proc1.pid), "api2": cluster.rss_mb(proc2.pid)}
    report = {"rss_mb_after_first_locate": rss, "rss_mb_after_rebuild": rss_after,
              "seconds_to_new_answer": {"api2": round(took2, 3), "api1_after_api2": round(took1, 3)},
              "haproxy": haproxy is not None}
    print("multiprocess:", json.dumps(report))
    if haproxy is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy): the two processes were checked directly, "
                    "the balancer part was not")


def test_haproxy_forwards_the_client_address_and_answers_503_with_retry_after(tmp_path):
    """haproxy (deploy/haproxy.cfg.tmpl) sends X-Forwarded-For to the processes (which believe it only from
    GRIDATLAS_TRUSTED_PROXIES, api/proxies.py); with no process ready it answers problem+json with Retry-After."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if not cluster.haproxy_binary():
        pytest.skip("haproxy is not installed (apt-get install haproxy)")

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = json.dumps({"xff": self.headers.get("X-Forwarded-For")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    backend = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=backend.serve_forever, daemon=True)
    thread.start()
    front = cluster.free_port()
    haproxy = cluster.start_haproxy(front, [backend.server_address[1]], tmp_path)
    try:
        base = f"http://127.0.0.1:{front}"
        cluster.wait_ready(f"{base}/readyz", timeout=30, proc=haproxy)
        r = httpx.get(f"{base}/anything", timeout=60)
        assert r.json()["xff"] == "127.0.0.1"
        backend.shutdown()
        backend.server_close()
        deadline = time.monotonic() + 30
        while (r := httpx.get(f"{base}/anything", timeout=60)).status_code != 503:
            assert time.monotonic() < deadline, "haproxy kept routing to a stopped process"
            time.sleep(0.2)
        assert r.headers["content-type"] == "application/problem+json"
        assert int(r.headers["retry-after"]) > 0
        assert r.json()["status"] == 503
    finally:
        cluster.stop([haproxy])
        backend.server_close()
