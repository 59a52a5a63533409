"""Steward planning: exact optimum against brute force on tiny instances, infeasible cases explained in numbers,
kept assignments, the plan on a hand-made community (dry run, apply, HTTP), and the generator's district."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pyproj import Geod
from sqlalchemy import text

from geo.settings import Rules
from geo.staff import stewards as st
from geo.staff.coverage import coverage_report
from tests import staff_data as sd

GEOD = Geod(ellps="WGS84")


# ------------------------------------------------------------------------------------------ brute force


def _compositions(n: int, k: int):
    if k == 1:
        yield (n,)
        return
    for i in range(n + 1):
        for rest in _compositions(n - i, k - 1):
            yield (i, *rest)


def brute_force(inst: st.Instance) -> tuple[int, int] | None:
    """(cost in centimetres, pairs) of the lexicographic optimum by enumerating every plan; None if none exists."""
    n_s, n_u = inst.n_stewards, len(inst.households)
    demand = inst.households.copy()
    np.subtract.at(demand, inst.fixed[:, 1], inst.fixed[:, 2])
    if (demand < 0).any():
        return None
    kept = {(s, u) for s, u, h in inst.fixed.tolist() if h > 0}
    cost = np.rint(inst.dist_m * st.COST_SCALE).astype(int)
    kept_cost = sum(cost[s, inst.unit_building[u]] * h for s, u, h in inst.fixed.tolist() if s >= 0)
    best = None
    for combo in itertools.product(*[list(_compositions(int(demand[u]), n_s)) for u in range(n_u)]):
        load = inst.fixed_load + np.sum(np.array(combo).reshape(n_u, n_s), axis=0) if n_u else inst.fixed_load
        if (load < inst.lo).any() or (load > inst.hi).any():
            continue
        c = kept_cost + sum(cost[s, inst.unit_building[u]] * part[s] for u, part in enumerate(combo)
                            for s in range(n_s))
        pairs = len(kept | {(s, u) for u, part in enumerate(combo) for s in range(n_s) if part[s] > 0})
        if best is None or (c, pairs) < best:
            best = (c, pairs)
    return best


def _random_instance(rng) -> st.Instance:
    n_s, n_b, n_u = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(1, 4))
    households = rng.integers(0, 9, n_u)
    xy = rng.uniform(0, 300, (n_b, 2))
    home = rng.integers(0, n_b, n_s)
    dist = np.hypot(*(xy[home][:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    fixed = np.zeros((0, 3), dtype=int)
    u = int(rng.integers(0, n_u))
    if rng.random() < 0.35 and households[u] > 0:
        fixed = np.array([[int(rng.integers(0, n_s)), u, int(rng.integers(1, households[u] + 1))]])
    return st.Instance(households, rng.integers(0, n_b, n_u), dist, lo=2, hi=6, fixed=fixed)


def test_solver_matches_brute_force_on_tiny_instances():
    rng = np.random.default_rng(20250601)
    feasible = infeasible = 0
    for trial in range(120):
        inst = _random_instance(rng)
        r = st.solve(inst, time_limit_s=10)
        expected = brute_force(inst)
        if expected is None:
            assert not r.feasible, f"trial {trial}: solver found a plan brute force did not"
            infeasible += 1
            continue
        assert r.feasible, f"trial {trial}: {r.reason} {r.numbers}"
        plan = np.vstack([inst.fixed, r.new])
        load = inst.fixed_load.copy()
        np.add.at(load, r.new[:, 0], r.new[:, 2])
        assert (load >= inst.lo).all() and (load <= inst.hi).all()
        served = np.zeros(len(inst.households), dtype=int)
        np.add.at(served, plan[:, 1], plan[:, 2])
        assert (served == inst.households).all(), f"trial {trial}: not every household served once"
        assert st._cost(inst, plan) == expected[0], f"trial {trial}: distance not minimal"
        assert r.pairs == expected[1] and r.splits_optimal, f"trial {trial}: unit splits not minimal"
        feasible += 1
    assert feasible > 40 and infeasible > 5  # both kinds were exercised


def test_fewest_splits_among_equally_short_plans():
    # Two stewards live in the one building with units of 10 and 10: a 15/5 split would walk as little, but
    # splits a unit; the plan keeps each unit with one steward.
    inst = st.Instance([10, 10], [0, 0], np.zeros((2, 1)), lo=5, hi=15)
    r = st.solve(inst)
    assert r.feasible and r.distance_m == 0 and r.splits == 0 and r.pairs == 2
    # A unit of 20 must be split; exactly once.
    r = st.solve(st.Instance([20], [0], np.zeros((2, 1)), lo=5, hi=15))
    assert r.splits == 1 and sorted(r.new[:, 2].tolist()) in ([5, 15], [6, 14], [7, 13], [8, 12], [9, 11], [10, 10])


def test_distance_beats_or_equals_greedy_and_greedy_can_break_the_minimum():
    # Steward A (at x=0) and B (at x=100). Units: 10 households at x=0, 3 at x=100.
    # Greedy gives everything near A to A, leaving B with 3 (< 5); the exact plan moves 2 to B.
    dist = np.array([[0.0, 100.0], [100.0, 0.0]])
    r = st.solve(st.Instance([10, 3], [0, 1], dist, lo=5, hi=15))
    assert r.feasible and r.distance_m == pytest.approx(200.0)
    assert r.greedy_distance_m == pytest.approx(0.0) and r.greedy_stewards_under == 1


# ------------------------------------------------------------------------------------------ infeasible cases


def test_too_few_stewards_explained_in_numbers():
    inst = st.Instance(np.full(104, 30), np.zeros(104, dtype=int), np.zeros((180, 1)), lo=5, hi=15)
    reason, numbers = st.check_feasibility(inst)
    assert reason == "too_few_stewards"
    msg = st.explain("X", "320505001001", reason, numbers, 5, 15, {})
    assert msg == ("community X (320505001001) has 3,120 households and 180 stewards: at most 2,700 can be served; "
                   "28 more stewards needed")
    r = st.solve(inst)
    assert not r.feasible and len(r.new) == 0


def test_too_many_stewards_explained_in_numbers():
    inst = st.Instance([8, 12], [0, 0], np.zeros((5, 1)), lo=5, hi=15)
    reason, numbers = st.check_feasibility(inst)
    assert reason == "too_many_stewards" and numbers["stewards_too_many"] == 1
    msg = st.explain("Y", "320505001002", reason, numbers, 5, 15, {})
    assert "20 households" in msg and "at least 25" in msg and "1 stewards too many" in msg


def test_kept_assignment_over_the_maximum_is_explained():
    inst = st.Instance([18, 5], [0, 0], np.zeros((2, 1)), lo=5, hi=15, fixed=[[0, 0, 18]])
    reason, numbers = st.check_feasibility(inst)
    assert reason == "kept_over_capacity" and numbers["kept_loads"] == [18]


# ------------------------------------------------------------------------------------------ on a community


@pytest.fixture
def small(migrated_engine):
    return migrated_engine, sd.build_staffed(migrated_engine)


def _metres(b1: int, b2: int) -> float:
    (_, x1, y1, _), (_, x2, y2, _) = sd.BUILDINGS[b1], sd.BUILDINGS[b2]
    return GEOD.inv(x1, y1, x2, y2)[2]


def test_plan_keeps_existing_assignments_and_moves_only_the_over_capacity(small):
    engine, ids = small
    with engine.connect() as conn:
        p = st.plan_stewards(conn, sd.COMMUNITY, "2025-03-01", rules=sd.RULES)
    [c] = p.communities
    assert c.feasible and c.stewards == 5 and c.households == 58
    # 管家三 (18 households) is released; the others keep theirs. B2's five households beyond 管家三's 15 go to a
    # steward in B1 (95 m away) and in one piece: the fewest splits among the equally short plans.
    assert c.distance_m == pytest.approx(5 * _metres(1, 2), rel=2e-3)
    assert c.splits_optimal
    created = p.to_create.sort_values("households").to_dict("records")
    names = {v: k for k, v in ids["people"].items()}
    assert [(names[r["person_id"]], r["unit_id"], r["households"]) for r in created] == [
        ("管家二", 21, 5), ("管家五", 32, 7)]
    # 管家三's old 15 on unit 21 is recreated unchanged; only the 3 on unit 31 ends
    assert p.unchanged == 1 and len(p.to_end) == 1
    assert c.greedy_distance_m >= c.distance_m - 1e-6


def test_plan_with_moves_allowed_and_apply(small):
    engine, ids = small
    with engine.begin() as conn:
        p = st.plan_stewards(conn, sd.COMMUNITY, "2025-03-01", allow_move=True, rules=sd.RULES)
        [c] = p.communities
        assert c.feasible and c.kept_households == 0
        assert c.distance_m == pytest.approx(5 * _metres(1, 2), rel=2e-3)
        assert c.splits == 1  # only the 20-household unit is split
        before = conn.execute(text("SELECT count(*) FROM staff_assignments")).scalar()
        written = st.apply_plan(conn, p)
        after = conn.execute(text("SELECT count(*) FROM staff_assignments")).scalar()
        assert after == before + written["created"]  # nothing deleted
        ended = conn.execute(text("SELECT count(*) FROM staff_assignments WHERE valid_to = '2025-03-01'")).scalar()
        assert ended == written["ended"] == len(p.to_end)
        r = coverage_report(conn, sd.COMMUNITY, "2025-03-01", rules=sd.RULES)
        old = coverage_report(conn, sd.COMMUNITY, "2025-02-28", rules=sd.RULES)
    assert r.totals["households_with_steward"] == 58
    assert r.totals["stewards_over"] == 0 and r.totals["stewards_under"] == 0
    assert old.totals["stewards_over"] == 1  # history: the day before, the old assignments still stand
    assert (r.stewards["households"].between(5, 15)).all()


def test_fixed_assignments_that_cannot_stay_are_explained(small):
    engine, ids = small
    with engine.connect() as conn:
        p = st.plan_stewards(conn, sd.COMMUNITY, "2025-03-01", release_over_capacity=False, rules=sd.RULES)
    [c] = p.communities
    assert not c.feasible and "管家三 (18 households) more than 15" in c.explanation
    assert p.to_end == [] and len(p.to_create) == 0


def test_plan_explains_too_few_stewards_on_a_community(small):
    engine, ids = small
    with engine.begin() as conn:
        conn.execute(text("UPDATE staff_assignments SET valid_to = '2025-02-01' WHERE role = 'steward' "
                          "AND person_id IN (:a, :b)"), {"a": ids["people"]["管家一"], "b": ids["people"]["管家二"]})
        p = st.plan_stewards(conn, sd.COMMUNITY, "2025-03-01", allow_move=True,
                             rules=Rules(steward_households_min=5, steward_households_max=15))
    [c] = p.communities
    assert not c.feasible
    assert c.explanation == ("community 测试社区 (320505001001) has 58 households and 3 stewards: at most 45 can be "
                             "served; 1 more stewards needed")


def test_extra_stewards_join_the_plan(small):
    engine, ids = small
    with engine.begin() as conn:
        new = sd.person(conn, "新管家", home=2)
        p = st.plan_stewards(conn, sd.COMMUNITY, "2025-03-01", allow_move=True, extra_stewards=[new],
                             rules=sd.RULES)
        [c] = p.communities
        assert c.stewards == 6 and c.feasible
        # the new steward lives in B2: now all of B2 is served from home, and no one walks
        assert c.distance_m == pytest.approx(0.0)
        with pytest.raises(st.PlanError):
            st.plan_stewards(conn, sd.COMMUNITY, "2025-03-01", extra_stewards=[99999])
        with pytest.raises(st.PlanError):
            st.plan_stewards(conn, sd.GRID_E, "2025-03-01")


# ------------------------------------------------------------------------------------------ HTTP


@pytest.fixture
def small_api(small):
    engine, _ = small
    users = {"planner": ("planner", sd.COMMUNITY), "leader": ("leader", sd.COMMUNITY),
             "grid_planner": ("planner", sd.GRID_E)}
    for client, headers in sd.api_client(engine, users):
        yield client, headers, engine


def test_plan_api_dry_run_then_apply(small_api):
    client, h, engine = small_api

    def count():
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*), count(valid_to) FROM staff_assignments")).one()

    start = count()
    dry = client.post("/v1/coverage/plan", json={"at": "2025-03-01", "allow_move": True}, headers=h["planner"])
    assert dry.status_code == 200, dry.text
    body = dry.json()
    assert body["applied"] is False and body["summary"]["feasible"] == 1 and body["to_create"]
    assert body["communities"][0]["gap_to_greedy"] is not None
    assert count() == start  # a dry run writes no assignment
    assert client.post("/v1/coverage/plan", json={}, headers=h["leader"]).status_code == 403
    grid = client.post("/v1/coverage/plan", json={}, headers=h["grid_planner"])
    assert grid.status_code == 403 and "community by community" in grid.json()["detail"]
    done = client.post("/v1/coverage/plan", params={"apply": True}, json={"at": "2025-03-01", "allow_move": True},
                       headers=h["planner"])
    assert done.status_code == 200 and done.json()["applied"] is True
    total, ended = count()
    assert total == start[0] + done.json()["written"]["created"] and ended == start[1] + done.json()["written"]["ended"]
    with engine.connect() as conn:
        actions = conn.execute(text("SELECT action, target_id FROM audit_log ORDER BY id")).all()
    assert ("coverage.plan.apply", sd.COMMUNITY) in [tuple(a) for a in actions]
    assert any(a[0] == "coverage.plan.dry_run" for a in actions)


# ------------------------------------------------------------------------------------------ larger instances


def test_distance_matches_an_independent_lp_on_mid_size_instances():
    """Beyond brute force: the flow's distance equals the optimum of the same transportation LP solved by HiGHS."""
    from scipy.optimize import linprog

    rng = np.random.default_rng(11)
    for _ in range(3):
        n_b, n_u = 25, 60
        unit_building = np.sort(rng.integers(0, n_b, n_u))
        households = rng.integers(12, 37, n_u)
        n_s = int(households.sum() / 10)
        xy = rng.uniform(0, 800, (n_b, 2))
        home = rng.integers(0, n_b, n_s)
        dist = np.hypot(*(xy[home][:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
        inst = st.Instance(households, unit_building, dist, lo=5, hi=15)
        r = st.solve(inst, time_limit_s=0.2)
        cost = np.rint(dist * st.COST_SCALE)
        demand = np.bincount(unit_building, weights=households, minlength=n_b)
        # variables x[s, b]; each building's demand met, each steward between 5 and 15
        a_eq = np.zeros((n_b, n_s * n_b))
        for b in range(n_b):
            a_eq[b, b::n_b] = 1
        a_ub = np.zeros((2 * n_s, n_s * n_b))
        for s_ in range(n_s):
            a_ub[s_, s_ * n_b:(s_ + 1) * n_b] = 1
            a_ub[n_s + s_, s_ * n_b:(s_ + 1) * n_b] = -1
        b_ub = np.r_[np.full(n_s, 15), np.full(n_s, -5)]
        lp = linprog(cost.ravel(), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=demand, bounds=(0, None), method="highs")
        assert lp.status == 0 and r.feasible
        assert st._cost(inst, r.new) == pytest.approx(lp.fun, abs=0.5)
        assert r.splits >= r.splits_lower_bound


def test_plan_on_the_generated_district(district, db_session):
    conn = db_session.connection()
    p = st.plan_stewards(conn, "", allow_move=True)
    s = p.summary()
    assert s["communities"] == len(district.communities) and s["infeasible"] == 0
    assert s["gap_to_greedy"] is not None and s["splits_lower_bound"] <= s["splits"] <= s["flow_splits"]
    new = p.to_create
    unchanged = conn.execute(text(
        "SELECT person_id, unit_id, households FROM staff_assignments WHERE role = 'steward' "
        "AND id <> ALL(:ended)"), {"ended": p.to_end}).all()
    assert len(unchanged) == p.unchanged
    written = st.apply_plan(conn, p)
    assert written["created"] == len(new)
    r = coverage_report(conn, "")
    # every household has exactly one steward's share and every steward serves 5 to 15
    assert r.totals["households_with_steward"] == r.totals["households"]
    assert r.totals["stewards_over"] == 0 and r.totals["stewards_under"] == 0
    assert (r.units["steward_claims"] == r.units["households"]).all()
