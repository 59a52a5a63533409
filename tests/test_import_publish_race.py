"""Boundary imports and publishes serialised per community (geo.store.locks): a publish of a plan drafted before an
import never overwrites the import, whatever the interleaving; it is refused (412) or runs first and the import ends
it.

Every test runs on its own committed database (the sample street of tests/io_samples.py: two communities, three
grids each) since the race needs two real connections; nothing waits on the clock, only on events, barriers and
pg_locks, with generous timeouts.
"""

from __future__ import annotations

import threading
import time

import pytest
import shapely
from sqlalchemy import text

from geo.io import ImportOptions, import_layer
from geo.plans import drafts as plans
from geo.plans.publish import StalePublished, publish
from geo.store.locks import lock_communities
from tests import io_samples as S

TIMEOUT = 120  # seconds; only a hung test ever gets near it


@pytest.fixture
def street(migrated_engine, tmp_path):
    """The sample street, its two communities and their grids, committed; (engine, {code: community id})."""
    S.load_all(migrated_engine, tmp_path, layers=("streets", "communities", "grids"))
    with migrated_engine.connect() as conn:
        ids = dict(conn.execute(text("SELECT code, id FROM communities")).all())
    return migrated_engine, ids


def _west_grids(shift: float):
    """The west community's grids with the border between its first two grids moved south by `shift` (0–1) of a
    band: an import that changes grids 001 and 002."""
    g = S.grids()
    g = g[g["community_code"] == S.WEST].reset_index(drop=True)
    x0, y2, x1, y1 = g.geometry[1].bounds
    _, _, _, y0 = g.geometry[0].bounds
    border = y1 - (y1 - y2) * shift
    g.loc[0, "geometry"] = shapely.box(x0, border, x1, y0)
    g.loc[1, "geometry"] = shapely.box(x0, y2, x1, border)
    return g


def _write_import(tmp_path, shift: float, name: str):
    g = _west_grids(shift)
    return S.write(g, tmp_path / f"{name}.geojson"), dict(zip(g["code"], g.geometry, strict=True))


def _draft_merge(engine) -> int:
    """A committed draft plan of the west community merging its grids 001 and 002."""
    with engine.begin() as conn:
        pid = plans.create_plan(conn, S.WEST, "planner")
        keys = {r["code"]: r["key"] for r in plans.load_state(conn, pid).live("grid")}
        plans.apply_operation(conn, pid, {"type": "merge", "keys": [keys[S.WEST + "001"], keys[S.WEST + "002"]]})
    return pid


def _in_force(engine) -> dict:
    """The west community's grids in force now: code → (version id, geometry)."""
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT g.code, b.version_id, ST_AsBinary(g.geom) FROM grids_at(clock_timestamp()) g
            JOIN grid_boundaries b ON b.id = g.boundary_id WHERE g.community_id = (
                SELECT id FROM communities WHERE code = :c)
        """), {"c": S.WEST}).all()
    return {r[0]: (r[1], shapely.from_wkb(bytes(r[2]))) for r in rows}


def _assert_import_intact(engine, report, shapes: dict) -> None:
    now = _in_force(engine)
    for code, geom in shapes.items():
        assert code in now, f"imported grid {code} is no longer in force"
        version, stored = now[code]
        assert version == report.version_id, f"grid {code} was overwritten by version {version}"
        assert shapely.area(shapely.symmetric_difference(stored, geom)) < 1e-12, f"grid {code} changed"


def _versions(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM boundary_versions")).scalar_one()


def _valid_from(engine, version_id):
    with engine.connect() as conn:
        return conn.execute(text("SELECT valid_from FROM boundary_versions WHERE id = :v"),
                            {"v": version_id}).scalar_one()


def _blocked_or_done(engine, worker: threading.Thread) -> bool:
    """Poll until some session of this database waits for an advisory lock (True) or `worker` ends (False)."""
    deadline = time.monotonic() + TIMEOUT
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(text("""
                SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()
            """)).scalar_one()
            conn.rollback()
            if waiting:
                return True
            if not worker.is_alive():
                return False
            time.sleep(0.02)
    raise AssertionError("nothing waited for the community lock and the worker did not finish")


def _wait_for_blocked_advisory_lock(engine, worker: threading.Thread) -> None:
    """Until some session of this database waits for an advisory lock (the import or publish under test)."""
    assert _blocked_or_done(engine, worker), "the other transaction finished without waiting for the lock"


def _run(target, results: dict, name: str, *args, **kwargs) -> threading.Thread:
    def body():
        try:
            results[name] = target(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            results[name] = exc

    t = threading.Thread(target=body, name=name, daemon=True)
    t.start()
    return t


def _publish_committed(engine, pid: int, barrier: threading.Barrier | None = None):
    with engine.connect() as conn, conn.begin():
        if barrier is not None:
            barrier.wait(TIMEOUT)
        return publish(conn, pid, "planner", allow_errors=True, classify=False)


def _import_committed(engine, path, barrier: threading.Barrier | None = None):
    if barrier is not None:
        barrier.wait(TIMEOUT)
    return import_layer(engine, "grids", path, ImportOptions(actor="importer"))


# ------------------------------------------------------------------------------------------------- sequential

def test_publish_of_a_plan_drafted_before_a_committed_import_is_refused(street, tmp_path):
    """The probe's case in sequence: draft, import (committed), publish → 412; the import stays in force."""
    engine, _ = street
    pid = _draft_merge(engine)
    path, shapes = _write_import(tmp_path, 0.25, "import")
    report = import_layer(engine, "grids", path, ImportOptions(actor="importer"))
    assert report.committed and report.imported == 3
    with engine.connect() as conn, pytest.raises(StalePublished) as err, conn.begin():
        publish(conn, pid, "planner", allow_errors=True, classify=False)
    assert report.version_id in [c["version_id"] for c in err.value.changes]
    _assert_import_intact(engine, report, shapes)


# ------------------------------------------------------------------------------------------------- the lock

def test_import_waits_for_a_publish_holding_the_lock_then_ends_its_boundaries(street, tmp_path):
    """A publish holds the west community's lock: the import waits (writes nothing) until it commits, then starts
    after it and ends what it published."""
    engine, ids = street
    pid = _draft_merge(engine)
    path, shapes = _write_import(tmp_path, 0.4, "import")
    before = _versions(engine)
    results: dict = {}
    with engine.connect() as conn, conn.begin():
        lock_communities(conn, [ids[S.WEST]])
        worker = _run(_import_committed, results, "import", engine, path)
        _wait_for_blocked_advisory_lock(engine, worker)
        assert worker.is_alive() and "import" not in results
        published = publish(conn, pid, "planner", allow_errors=True, classify=False)
    # committed: the import may go on
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    report = results["import"]
    assert not isinstance(report, BaseException), report
    assert _versions(engine) == before + 2
    assert report.valid_from > _valid_from(engine, published["version_id"])
    _assert_import_intact(engine, report, shapes)


def test_publish_waits_for_an_uncommitted_import_then_gets_412(street, tmp_path):
    """An import inside a caller's transaction (as POST /v1/imports runs it) keeps the lock until that transaction
    commits: a publish started meanwhile waits, then is refused; the import stays in force."""
    engine, _ = street
    pid = _draft_merge(engine)
    path, shapes = _write_import(tmp_path, 0.6, "import")
    results: dict = {}
    with engine.connect() as conn, conn.begin():
        report = import_layer(conn, "grids", path, ImportOptions(actor="importer"))
        worker = _run(_publish_committed, results, "publish", engine, pid)
        _wait_for_blocked_advisory_lock(engine, worker)
        assert worker.is_alive() and "publish" not in results
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    assert isinstance(results["publish"], StalePublished), results["publish"]
    _assert_import_intact(engine, report, shapes)


@pytest.mark.parametrize("layer", ["streets", "communities", "grids", "micro_grids"])
def test_every_boundary_import_takes_the_community_lock(street, tmp_path, layer):
    """Imports of any boundary level wait for the lock of a community they touch (a street: its communities)."""
    engine, ids = street
    path = S.write(S.MAKERS[layer](), tmp_path / f"{layer}.geojson")
    results: dict = {}
    with engine.connect() as conn, conn.begin():
        lock_communities(conn, [ids[S.WEST]])
        worker = _run(import_layer, results, "import", engine, layer, path)
        _wait_for_blocked_advisory_lock(engine, worker)
        assert worker.is_alive() and "import" not in results
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    assert not isinstance(results["import"], BaseException), results["import"]
    assert results["import"].committed and results["import"].imported > 0


def test_the_lock_refuses_snapshot_isolation(street):
    """A REPEATABLE READ snapshot may predate the lock: boundary writers refuse it rather than check stale data."""
    engine, ids = street
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        with pytest.raises(RuntimeError, match="READ COMMITTED"):
            lock_communities(conn, [ids[S.WEST]])
        conn.rollback()


# ------------------------------------------------------------------------------------------------- the race

def test_racing_publish_and_import_never_lose_the_import(street, tmp_path):
    """Publish of a plan drafted earlier and an import of the same community, started together, five times: either
    the publish is refused, or it ran first and the import (later) ended it; never a publish over the import."""
    engine, _ = street
    outcomes = []
    for run in range(5):
        pid = _draft_merge(engine)
        path, shapes = _write_import(tmp_path, 0.1 + 0.15 * run, f"import{run}")
        barrier = threading.Barrier(2)
        results: dict = {}
        threads = [_run(_publish_committed, results, "publish", engine, pid, barrier),
                   _run(_import_committed, results, "import", engine, path, barrier)]
        for t in threads:
            t.join(TIMEOUT)
        assert not any(t.is_alive() for t in threads), f"run {run} hung"
        report = results["import"]
        assert not isinstance(report, BaseException), report
        assert report.committed
        pub = results["publish"]
        if isinstance(pub, StalePublished):
            outcomes.append("412")
        else:
            assert not isinstance(pub, BaseException), pub
            # the publish succeeded: it must have come first, the import after it
            assert report.valid_from > _valid_from(engine, pub["version_id"]), f"run {run}"
            outcomes.append("200 then import")
        _assert_import_intact(engine, report, shapes)
    assert len(outcomes) == 5


def test_each_side_paused_inside_the_others_window(street, tmp_path, monkeypatch):
    """The interleavings the probe found, forced: five runs, alternately
    - a publish paused between its token check and its write while the import runs (the import must wait for it,
      then end what it published), and
    - an import paused between its checks and its write while the publish runs (the publish must wait, then 412).
    Each run pauses one side until the other is blocked on the lock or done, so no timing decides the outcome."""
    import geo.plans.validation

    engine, _ = street
    real_validate = geo.plans.validation.validate
    for run in range(5):
        pid = _draft_merge(engine)
        path, shapes = _write_import(tmp_path, 0.1 + 0.15 * run, f"import{run}")
        paused, release = threading.Event(), threading.Event()

        def pause(paused=paused, release=release):
            paused.set()
            assert release.wait(TIMEOUT), "never released"

        results: dict = {}
        if run % 2 == 0:  # the publish has checked its token and not written yet
            def validate(conn, plan_id, *args, pause=pause, **kwargs):
                pause()
                return real_validate(conn, plan_id, *args, **kwargs)

            monkeypatch.setattr(geo.plans.validation, "validate", validate)
            first = _run(_publish_committed, results, "publish", engine, pid)
            assert paused.wait(TIMEOUT)
            second = _run(import_layer, results, "import", engine, "grids", path, ImportOptions(actor="importer"))
        else:  # the import has read and checked the boundaries it will end, and not written yet
            monkeypatch.setattr(geo.plans.validation, "validate", real_validate)
            options = ImportOptions(actor="importer",
                                    progress=lambda stage, *_, pause=pause: stage == "check" and pause())
            first = _run(import_layer, results, "import", engine, "grids", path, options)
            assert paused.wait(TIMEOUT)
            second = _run(_publish_committed, results, "publish", engine, pid)
        waited = _blocked_or_done(engine, second)
        release.set()
        for t in (first, second):
            t.join(TIMEOUT)
            assert not t.is_alive(), f"run {run} hung"
        report, pub = results["import"], results["publish"]
        assert not isinstance(report, BaseException), report
        if run % 2 == 0:
            assert not isinstance(pub, BaseException), pub
            assert report.valid_from > _valid_from(engine, pub["version_id"]), f"run {run}: import not last"
        else:
            assert isinstance(pub, StalePublished), f"run {run}: publish over the import: {pub!r}"
        _assert_import_intact(engine, report, shapes)
        assert waited, f"run {run}: the second writer did not wait for the first"
