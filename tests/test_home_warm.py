"""The home page's figures gathered at start (预热): the first view after a start or a load reads them ready, and an
edit committed after the warm-up shows in the very next view (nothing stale)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from geo.classify import classification as gc
from geo.features import overview as ov
from geo.settings import get_settings
from geo.staff import coverage as cov


@pytest.fixture
def loaded(migrated_engine, district):
    """A fresh database holding the test district, as `gridatlas demo generate` leaves it (no classification run)."""
    from geo.store.load import load_district

    load_district(migrated_engine, district)
    return migrated_engine


def _runs(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM classification_runs")).scalar_one()


def _fresh_classes(engine) -> dict:
    """The compounds per class computed afresh (the stored run ignored)."""
    with engine.connect() as conn:
        result = gc.compute(conn, "grid")
    counts = result.compounds["class"].value_counts()
    return {c: int(counts.get(c, 0)) for c in ov.CLASS_ORDER}


def test_warm_up_fills_the_caches_and_edits_still_show(loaded):
    assert _runs(loaded) == 0
    timings = ov.warm(loaded)
    assert set(timings) == {"coverage_s", "kpi_incidents_s", "street_coverage_s", "compound_classes_s"}
    assert _runs(loaded) == 1  # stored: the first view does not classify every compound
    with loaded.connect() as conn:
        assert gc.ensure_classification(conn, "grid")["recomputed"] is False
        before = ov.overview(conn, None)
        conn.rollback()
    assert before["compound_classes"] == _fresh_classes(loaded)

    # an edit after the warm-up: a covered grid loses its grid chief, a compound moves out of every grid
    with loaded.connect() as conn:
        report = cov.coverage_report(conn, "")
        covered = report.grids[(report.grids["status"] == "covered")]
        grid_id = int(covered["id"].iloc[0])
        conn.rollback()
    with loaded.begin() as conn:
        removed = conn.execute(text("DELETE FROM staff_assignments WHERE grid_id = :g AND role = 'grid_chief'"),
                               {"g": grid_id}).rowcount
        assert removed >= 1
        moved = conn.execute(text("SELECT id FROM compounds ORDER BY id LIMIT 1")).scalar_one()
        conn.execute(text("UPDATE compounds SET geom = ST_Translate(geom, 1.0, 0) WHERE id = :i"), {"i": moved})
    with loaded.connect() as conn:
        after = ov.overview(conn, None)
        conn.commit()
    assert after["coverage"]["grids_covered"] == before["coverage"]["grids_covered"] - 1
    assert after["coverage"]["grids_with_gaps"] == before["coverage"]["grids_with_gaps"] + 1
    assert after["compound_classes"] == _fresh_classes(loaded) != before["compound_classes"]
    assert after["compound_classes"]["outside"] == before["compound_classes"]["outside"] + 1


def test_the_app_warms_at_start_unless_told_not_to(loaded, monkeypatch):
    from api.main import create_app

    monkeypatch.setattr(get_settings(), "warm_at_start", True)  # the service's default; tests/conftest turns it off
    app = create_app(loaded)
    with TestClient(app):
        assert app.state.warm_home_done.wait(timeout=120)
        assert _runs(loaded) == 1
    app.state.warm_home_thread.join(timeout=30)  # shutdown stops the keep-alive
    assert not app.state.warm_home_thread.is_alive()

    monkeypatch.setattr(get_settings(), "warm_at_start", False)
    app = create_app(loaded)
    with TestClient(app):
        assert not hasattr(app.state, "warm_home_thread")


def test_warmed_reports_stay_usable_while_no_one_asks(loaded, monkeypatch):
    """The coverage change watch ends after a while unused, and the reports stored under it with it: the app keeps
    it listening, so a leader arriving long after the start still reads the warmed report."""
    from api.main import create_app
    from api.routers import home
    from geo.staff import coverage_cache

    monkeypatch.setattr(home, "KEEP_READY_S", 0.2)
    monkeypatch.setattr(get_settings(), "warm_at_start", True)
    computed: list[str] = []
    original = cov._compute_report

    def spy(conn, prefix, *args, **kwargs):
        computed.append(prefix)
        return original(conn, prefix, *args, **kwargs)

    app = create_app(loaded)
    with TestClient(app):
        assert app.state.warm_home_done.wait(timeout=120)
        with loaded.connect() as conn:
            watch = coverage_cache.watch_for(conn)
        assert watch is not None
        watch.idle_seconds = 1.0  # a minute in production
        monkeypatch.setattr(cov, "_compute_report", spy)
        time.sleep(3.0)
        assert watch.alive
        with loaded.connect() as conn:  # the district's figures come from the warmed report
            figures = ov.overview(conn, None)
            conn.commit()
        assert computed == [] and figures["coverage"]["grids"] > 0


def test_warm_up_of_an_empty_database(migrated_engine):
    """No boundaries yet: nothing to classify against, no run stored and no error (the start goes on)."""
    timings = ov.warm(migrated_engine)
    assert timings["compound_classes_s"] >= 0 and _runs(migrated_engine) == 0
