"""Codes of a declared scheme must not break jurisdictions (issue 17): jurisdiction containment is a code-prefix
test, so an import refuses (`code-prefix-collision`) a unit whose code starts another unit's code of the same level
or starts with one (a 16-digit dedicated grid …0010 beside the grid …001, a 10-digit village beside the 12-digit
communities it starts), against the file and the database; code filters take every shipped scheme's lengths.
"""

from __future__ import annotations

import pytest
import shapely
from shapely.geometry import mapping
from sqlalchemy import text

from geo.io import ImportOptions, import_layer
from maps.home import _filter, map_links
from tests import io_samples as S

DEVZONE = {"code_scheme": "devzone", "valid_from": S.VALID_FROM}


@pytest.fixture
def grids_loaded(migrated_engine, tmp_path):
    """The sample street and communities, and four of the six sample grids (…001, …002 of each community)."""
    S.load_all(migrated_engine, tmp_path, layers=("streets", "communities"))
    g = S.grids().iloc[[0, 1, 3, 4]].reset_index(drop=True)
    report = import_layer(migrated_engine, "grids", S.write(g, tmp_path / "base.geojson"), ImportOptions(**DEVZONE))
    assert report.imported == 4, [i.as_dict() for i in report.issues]
    return migrated_engine


def _grids_file(tmp_path, codes: list[str], rows: list[int], name: str = "new.geojson"):
    """Grids with these codes on the geometries of these sample grids (the free third band of each community)."""
    g = S.grids().iloc[rows].reset_index(drop=True)
    g["code"] = codes
    g["community_code"] = [c[:12] for c in codes]
    g["kind"] = ["dedicated" if len(c) == 16 else "comprehensive" for c in codes]
    g["dedicated_type"] = ["school" if len(c) == 16 else None for c in codes]
    return S.write(g, tmp_path / name)


def _collisions(report) -> list:
    return [i for i in report.issues if i.kind == "code-prefix-collision"]


def _grid_codes(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT code FROM grids")).scalars())


def test_a_sixteen_digit_grid_extending_an_existing_grid_is_refused_and_one_that_does_not_imports(grids_loaded,
                                                                                                  tmp_path):
    leak, fine = S.WEST + "0010", S.EAST + "9010"
    path = _grids_file(tmp_path, [leak, fine], [2, 5])
    dry = import_layer(grids_loaded, "grids", path, ImportOptions(dry_run=True, **DEVZONE))
    (issue,) = _collisions(dry)  # said in the dry run, both codes named
    assert issue.action == "refused" and issue.records == [1]
    assert S.WEST + "001" in issue.message and leak in issue.message and "in the database" in issue.message
    assert issue.details["codes"] == [S.WEST + "001", leak]
    assert dry.imported == 1 and _grid_codes(grids_loaded) == {c for c in S.grids()["code"].iloc[[0, 1, 3, 4]]}
    report = import_layer(grids_loaded, "grids", path, ImportOptions(**DEVZONE))
    assert report.imported == 1 and report.committed
    assert [i.records for i in _collisions(report)] == [[1]]
    codes = _grid_codes(grids_loaded)
    assert fine in codes and leak not in codes


def test_collisions_inside_the_file_and_a_short_code_starting_a_stored_one_are_refused(grids_loaded, tmp_path):
    import_layer(grids_loaded, "grids", _grids_file(tmp_path, [S.EAST + "9010"], [5], "d.geojson"),
                 ImportOptions(**DEVZONE))
    # 15-digit …003 and 16-digit …0030 in one file; 15-digit EAST…901 starts the stored 16-digit EAST…9010
    path = _grids_file(tmp_path, [S.WEST + "003", S.WEST + "0030", S.EAST + "901"], [2, 2, 5])
    report = import_layer(grids_loaded, "grids", path, ImportOptions(**DEVZONE))
    found = {(i.records[0], tuple(i.details["codes"])) for i in _collisions(report)}
    assert found == {(1, (S.WEST + "003", S.WEST + "0030")), (2, (S.WEST + "003", S.WEST + "0030")),
                     (3, (S.EAST + "901", S.EAST + "9010"))}
    by_record = {i.records[0]: i.message for i in _collisions(report)}
    assert "in the file" in by_record[1] and "is the start of" in by_record[1]
    assert "starts with" in by_record[2] and "in the database" in by_record[3]
    assert report.imported == 0
    assert not _grid_codes(grids_loaded) & {S.WEST + "003", S.WEST + "0030", S.EAST + "901"}


def test_the_default_chain_has_no_collisions(grids_loaded, tmp_path):
    """Codes of one length never collide: the sample grids' third bands import as ever."""
    path = _grids_file(tmp_path, [S.WEST + "003", S.EAST + "003"], [2, 5])
    report = import_layer(grids_loaded, "grids", path, ImportOptions(valid_from=S.VALID_FROM))
    assert report.imported == 2 and not _collisions(report)


def test_a_village_colliding_with_a_community_is_refused(migrated_engine, tmp_path):
    S.load_all(migrated_engine, tmp_path, layers=("streets", "communities"))
    c = S.communities()
    colliding, fine = S.STREET + "0", S.STREET + "9"  # 3101150010 starts both 310115001001 and …002
    c["code"] = [colliding, fine]
    path = S.write(c, tmp_path / "villages.geojson")
    dry = import_layer(migrated_engine, "communities", path, ImportOptions(dry_run=True, code_scheme="devzone",
                                                                           valid_from="2026-01-01"))
    pairs = sorted(tuple(i.details["codes"]) for i in _collisions(dry))
    assert pairs == [(colliding, S.WEST), (colliding, S.EAST)]
    assert {tuple(i.records) for i in _collisions(dry)} == {(1,)} and dry.imported == 1
    report = import_layer(migrated_engine, "communities", path, ImportOptions(code_scheme="devzone",
                                                                              valid_from="2026-01-01"))
    assert report.imported == 1
    with migrated_engine.connect() as conn:
        codes = set(conn.execute(text("SELECT code FROM communities")).scalars())
    assert codes == {S.WEST, S.EAST, fine}


@pytest.mark.parametrize(("name", "suffix", "status"), [
    ("grid", "9010", 200),      # 16 digits: a dedicated grid of the devzone scheme
    ("grid", "001", 200),       # 15 digits
    ("grid", "01", 422),        # 14 digits: no level's length
    ("grid", "00100", 422),     # 17 digits: a micro-grid's, not a grid's
])
def test_coverage_takes_the_grid_codes_of_every_shipped_scheme(client, admin_headers, district, name, suffix, status):
    code = district.communities["code"].iloc[0] + suffix
    r = client.get("/v1/coverage", params={name: code}, headers=admin_headers)
    assert r.status_code == status, r.text
    if status == 422:
        assert r.headers["content-type"].startswith("application/problem+json")
    else:
        assert r.json()["scope"] == code


@pytest.mark.parametrize(("digits", "status"), [(10, 200), (11, 200), (12, 200), (9, 422), (13, 422)])
def test_coverage_takes_village_and_community_codes(client, admin_headers, district, digits, status):
    street = district.streets["code"].iloc[0]
    code = (street + "999")[:digits] if digits >= 9 else street
    code = code.ljust(digits, "9")
    r = client.get("/v1/coverage", params={"community": code}, headers=admin_headers)
    assert r.status_code == status, r.text


def test_home_page_links_filter_codes_of_every_shipped_scheme():
    assert _filter(S.STREET) == f"?street={S.STREET}"
    assert _filter(S.STREET + "9") == f"?community={S.STREET}9"  # a 10-digit village
    assert _filter(S.WEST) == f"?community={S.WEST}"
    assert _filter(S.WEST + "9010") == f"?grid={S.WEST}9010"  # a 16-digit dedicated grid
    assert _filter(S.WEST + "01") == ""  # 14 digits: no level
    coverage = next(i["href"] for g in map_links(S.WEST + "9010") for i in g["items"] if i["title"] == "人员覆盖图")
    assert coverage == f"/maps/coverage?grid={S.WEST}9010"


# --- codes made elsewhere: a publish's new codes and parents derived by an import ----------------------------------

DEDICATED = S.WEST + "0030"  # 16 digits: 15-digit WEST…003 would be its start


@pytest.fixture
def west_with_dedicated(migrated_engine, tmp_path):
    """In the west community: grids …001 and …002 (15 digits) and the dedicated grid …0030 (16), and a 19-digit
    micro-grid …0030011 in the dedicated grid's west half (devzone)."""
    S.load_all(migrated_engine, tmp_path, layers=("streets", "communities"))
    import_layer(migrated_engine, "grids", _grids_file(tmp_path, [S.WEST + "001", S.WEST + "002", DEDICATED],
                                                       [0, 1, 2]), ImportOptions(**DEVZONE))
    x0, y0, x1, y1 = S.grids().geometry.iloc[2].bounds
    micro = S._rows([(x0, y0, (x0 + x1) / 2, y1)], code=[DEDICATED + "011"], name=["微网格"])
    report = import_layer(migrated_engine, "micro_grids", S.write(micro, tmp_path / "m.geojson"),
                          ImportOptions(**DEVZONE))
    assert report.imported == 1 and _grid_codes(migrated_engine) == {S.WEST + "001", S.WEST + "002", DEDICATED}
    return migrated_engine


def test_a_publish_passes_over_new_codes_that_would_collide_with_codes_in_use(west_with_dedicated):
    from geo.plans import drafts as plans
    from geo.plans.publish import publish

    with west_with_dedicated.begin() as conn:
        plan_id = plans.create_plan(conn, S.WEST, "tester")
        state = plans.load_state(conn, plan_id)
        key = {r["code"]: r["key"] for r in state.live("grid")}
        # split …001 in two (one new grid) and draw a micro-grid in the east half of the dedicated grid
        x0, y0, x1, y1 = S.grids().geometry.iloc[0].bounds
        xm = (x0 + x1) / 2
        plans.apply_operation(conn, plan_id, {"type": "split", "key": key[S.WEST + "001"], "line": mapping(
            shapely.LineString([(xm, y0 - 0.001), (xm, y1 + 0.001)]))})
        x0, y0, x1, y1 = S.grids().geometry.iloc[2].bounds
        plans.apply_operation(conn, plan_id, {"type": "create", "level": "micro_grid", "parent": key[DEDICATED],
                                              "geometry": mapping(shapely.box((x0 + x1) / 2, y0, x1, y1))})
        out = publish(conn, plan_id, "tester", allow_errors=True)
        # …003 would be the start of the dedicated grid …0030: passed over for …004, and said so
        assert out["grids"]["created"] == [S.WEST + "004"]
        assert out["grids"]["skipped"] == [{"code": S.WEST + "003", "collides_with": [DEDICATED]}]
        # the dedicated grid's first 2-digit micro-grid code …003001 would be the start of …0030011
        assert out["micro_grids"]["created"] == [DEDICATED + "02"]
        assert out["micro_grids"]["skipped"] == [{"code": DEDICATED + "01", "collides_with": [DEDICATED + "011"]}]
        stored = set(conn.execute(text("SELECT code FROM micro_grids")).scalars())
        assert stored == {DEDICATED + "011", DEDICATED + "02"}


VILLAGE = S.STREET + "9"  # 10 digits: the start of every 12-digit community code STREET + 9xx


def _village_and_grids(migrated_engine, tmp_path):
    """The street and a 10-digit village (devzone); a grids file whose communities are not there: WEST…001 and
    …901001, whose derived community …901 would lie in the village's jurisdiction."""
    S.load_all(migrated_engine, tmp_path, layers=("streets",))
    c = S.communities().iloc[[1]].reset_index(drop=True)
    c["code"] = [VILLAGE]
    report = import_layer(migrated_engine, "communities", S.write(c, tmp_path / "v.geojson"), ImportOptions(**DEVZONE))
    assert report.imported == 1
    g = S.grids().iloc[[0, 3]].reset_index(drop=True)
    g["code"] = [S.WEST + "001", S.STREET + "901001"]
    g["kind"], g["dedicated_type"] = "comprehensive", None
    return S.write(g.drop(columns=["community_code"]), tmp_path / "g.geojson")


def test_a_parent_derived_from_codes_passes_the_prefix_check(migrated_engine, tmp_path):
    path = _village_and_grids(migrated_engine, tmp_path)
    dry = import_layer(migrated_engine, "grids", path, ImportOptions(dry_run=True, **DEVZONE))
    (issue,) = _collisions(dry)
    assert issue.action == "refused" and issue.records == [2]
    assert S.STREET + "901" in issue.message and VILLAGE in issue.message and "derived" in issue.message
    assert issue.details["codes"] == [VILLAGE, S.STREET + "901"]
    assert [d["code"] for d in dry.parents_derived] == [S.WEST] and dry.imported == 1
    report = import_layer(migrated_engine, "grids", path, ImportOptions(**DEVZONE))
    assert report.committed and report.imported == 1 and [i.records for i in _collisions(report)] == [[2]]
    with migrated_engine.connect() as conn:
        assert set(conn.execute(text("SELECT code FROM communities")).scalars()) == {VILLAGE, S.WEST}
    assert _grid_codes(migrated_engine) == {S.WEST + "001"}


def test_a_retired_village_does_not_block_a_derived_community(migrated_engine, tmp_path):
    path = _village_and_grids(migrated_engine, tmp_path)
    _retire(migrated_engine, "community_boundaries", "communities", "community_id", VILLAGE, "2025-06-01")
    report = import_layer(migrated_engine, "grids", path, ImportOptions(code_scheme="devzone",
                                                                         valid_from="2026-01-01"))
    assert not _collisions(report) and report.imported == 2
    assert sorted(d["code"] for d in report.parents_derived) == [S.WEST, S.STREET + "901"]


# --- collisions against the codes in force -------------------------------------------------------------------------

def _retire(engine, btable: str, table: str, fk: str, code: str, at: str) -> None:
    """End the unit's open boundary at `at` (as a publish retiring it would)."""
    with engine.begin() as conn:
        ended = conn.execute(text(f"UPDATE {btable} b SET valid_to = :t FROM {table} u "
                                  f"WHERE u.id = b.{fk} AND u.code = :c AND b.valid_to IS NULL"),
                             {"t": at, "c": code}).rowcount
    assert ended == 1


def test_a_retired_grid_blocks_no_new_code_but_one_in_force_at_the_import_date_does(grids_loaded, tmp_path):
    _retire(grids_loaded, "grid_boundaries", "grids", "grid_id", S.WEST + "001", "2025-06-01")
    path = _grids_file(tmp_path, [S.WEST + "0010"], [2])
    # from 2025-03-01 the new grid would overlap the retired grid's last months: still a collision
    early = import_layer(grids_loaded, "grids", path, ImportOptions(code_scheme="devzone", valid_from="2025-03-01",
                                                                    dry_run=True))
    (issue,) = _collisions(early)
    assert issue.details["codes"] == [S.WEST + "001", S.WEST + "0010"] and "in the database" in issue.message
    # from 2026 the old grid is out of force: its code blocks nothing
    report = import_layer(grids_loaded, "grids", path, ImportOptions(code_scheme="devzone", valid_from="2026-01-01"))
    assert report.imported == 1 and not _collisions(report)
    assert S.WEST + "0010" in _grid_codes(grids_loaded)
    # reusing the retired code now collides with the code in force that it would start
    again = _grids_file(tmp_path, [S.WEST + "001"], [0], "again.geojson")
    back = import_layer(grids_loaded, "grids", again, ImportOptions(code_scheme="devzone", valid_from="2026-06-01"))
    (issue,) = _collisions(back)
    assert issue.details["codes"] == [S.WEST + "001", S.WEST + "0010"] and back.imported == 0
