"""19-digit micro-grid codes (issue 17): a 16-digit dedicated grid's micro-grids are 16 + 2 or 16 + 3 digits. The
devzone scheme imports them (migration 0024 widened the columns), locate answers them, and a worker whose
jurisdiction is the 16-digit grid sees them (jurisdiction is a code-prefix test); the default scheme reports them
as `bad-code`.
"""

from __future__ import annotations

import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo.io import ImportOptions, import_layer
from geo.locate.index import LocateIndex
from geo.locate.reference import locate_sql
from tests import io_samples as S

DEDICATED = S.WEST + "9010"  # 16 digits: community + 4
MICRO = (DEDICATED + "001", DEDICATED + "002")  # 19 digits: the dedicated grid + 3
DEVZONE = {"code_scheme": "devzone", "valid_from": S.VALID_FROM}


def _dedicated_grid_file(tmp_path):
    g = S.grids().iloc[[1]].reset_index(drop=True)
    g["code"], g["kind"], g["dedicated_type"] = [DEDICATED], ["dedicated"], ["school"]
    return S.write(g, tmp_path / "dedicated.geojson")


def _micro_grids_file(tmp_path, parent_column: bool = False):
    """The two halves (west, east) of the dedicated grid, as 19-digit micro-grids (no grid_code column unless
    asked: the parent is read from the code's leading digits)."""
    x0, y0, x1, y1 = S.grids().geometry.iloc[1].bounds
    xm = (x0 + x1) / 2
    frame = S._rows([(x0, y0, xm, y1), (xm, y0, x1, y1)], code=list(MICRO), name=["学校微网格一", "学校微网格二"])
    if parent_column:
        frame["grid_code"] = [DEDICATED, DEDICATED]
    return S.write(frame, tmp_path / "micro.geojson")


@pytest.fixture
def dedicated(migrated_engine, tmp_path):
    """The sample street and communities and, in the west community, one 16-digit dedicated grid (devzone)."""
    S.load_all(migrated_engine, tmp_path, layers=("streets", "communities"))
    report = import_layer(migrated_engine, "grids", _dedicated_grid_file(tmp_path), ImportOptions(**DEVZONE))
    assert report.imported == 1, [i.as_dict() for i in report.issues]
    return migrated_engine


def test_the_default_scheme_reports_nineteen_digit_micro_grids_as_bad_codes(dedicated, tmp_path):
    report = import_layer(dedicated, "micro_grids", _micro_grids_file(tmp_path, parent_column=True),
                          ImportOptions(valid_from=S.VALID_FROM, dry_run=True))
    bad = [i for i in report.issues if i.kind == "bad-code"]
    assert sorted(i.records[0] for i in bad) == [1, 2] and all("19 digits" in i.message for i in bad)
    assert report.imported == 0


def test_nineteen_digit_micro_grids_import_locate_and_belong_to_their_sixteen_digit_grid(dedicated, tmp_path):
    report = import_layer(dedicated, "micro_grids", _micro_grids_file(tmp_path), ImportOptions(**DEVZONE))
    assert report.imported == 2, [i.as_dict() for i in report.issues]
    assert not report.issues, [i.as_dict() for i in report.issues]
    # the 15-digit prefix (the scheme's first parent length) is no grid, the 16-digit one is: the report says so
    assert any(f"{MICRO[0]} → {DEDICATED}" in n for n in report.notes), report.notes
    with dedicated.connect() as conn:
        stored = dict(conn.execute(text("SELECT m.code, g.code FROM micro_grids m JOIN grids g ON g.id = m.grid_id"
                                        )).all())
        assert stored == {MICRO[0]: DEDICATED, MICRO[1]: DEDICATED}
        index = LocateIndex.from_db(conn)
        x0, y0, x1, y1 = S.grids().geometry.iloc[1].bounds
        for code, x in zip(MICRO, (x0 + (x1 - x0) / 4, x1 - (x1 - x0) / 4), strict=True):
            found = index.locate(x, (y0 + y1) / 2)
            assert found["micro_grid"]["code"] == code and found["grid"]["code"] == DEDICATED
            # the SQL functions migration 0024 recreated answer the same
            assert locate_sql(conn, x, (y0 + y1) / 2)["micro_grid"] == found["micro_grid"]["id"]
            assert conn.execute(text("SELECT code FROM micro_grids_covering(now(), ST_SetSRID(ST_Point(:x, :y), "
                                     "4326))"), {"x": x, "y": (y0 + y1) / 2}).scalar() == code


def test_a_worker_of_the_sixteen_digit_grid_sees_its_nineteen_digit_micro_grids(dedicated, tmp_path):
    from api.auth import issue_token
    from api.main import create_app
    from geo.access.users import create_user

    import_layer(dedicated, "micro_grids", _micro_grids_file(tmp_path, parent_column=True), ImportOptions(**DEVZONE))
    import_layer(dedicated, "grids", S.write(S.grids().iloc[[0]], tmp_path / "plain.geojson"),
                 ImportOptions(**DEVZONE))
    with Session(dedicated) as s:
        worker = create_user(s, "dedicated-worker", "a long enough password", "worker", DEDICATED)
        other = create_user(s, "plain-worker", "a long enough password", "worker", S.WEST + "001")
        s.commit()
        assert worker.jurisdiction_level == "grid"
        headers = {"Authorization": f"Bearer {issue_token(worker)}"}
        other_headers = {"Authorization": f"Bearer {issue_token(other)}"}
    with TestClient(create_app(dedicated), raise_server_exceptions=False) as client:
        r = client.get("/ogc/collections/micro_grids/items", headers=headers, params={"f": "json"})
        assert r.status_code == 200, r.text
        assert sorted(f["properties"]["code"] for f in r.json()["features"]) == list(MICRO)
        r = client.get("/ogc/collections/micro_grids/items", headers=other_headers, params={"f": "json"})
        assert r.status_code == 200 and r.json()["features"] == []
        r = client.get("/v1/overview", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["units"]["micro_grids"] == 2 and r.json()["units"]["grids"] == 1
        inside = shapely.point_on_surface(S.grids().geometry.iloc[1])
        r = client.get("/v1/locate", params={"lon": inside.x, "lat": inside.y}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["micro_grid"]["code"] in MICRO and r.json()["grid"]["code"] == DEDICATED


def test_a_staff_assignment_reads_a_sixteen_digit_target_as_a_grid():
    """A staff file naming a 16-digit dedicated grid (or its 19-digit micro-grid) by code assigns to that unit,
    not to a building of that code."""
    import numpy as np
    import pandas as pd

    from geo.io.fields import LAYERS
    from geo.io.importer import _check_layer_values

    values = pd.DataFrame({"valid_from": [None] * 4, "valid_to": [None] * 4, "unit_number": [None, None, None, 2],
                           "target_code": ["4306020010010010", "4306020010010010003", "430602001001001", "C2-B1"],
                           "target_type": [None] * 4})
    refused = np.zeros(4, dtype=bool)
    _check_layer_values(LAYERS["staff_assignments"], values, ["r"] * 4, [{}] * 4, [], refused)
    assert values["target_type"].tolist() == ["grid", "micro_grid", "grid", "unit"]
