"""Races against the preconditions (issue 19, item 11): concurrent writers naming one revision, one winner.

Each writer runs on its own database connection and transaction, all released together by a barrier; whichever
order the database serialises them in, exactly one may succeed and every other is refused with what it needs to
retry (no sleeps: the outcome never depends on timing). Rows these tests commit are deleted at their end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import text

from geo.incidents import closed_loop as inc
from geo.plans import drafts as plans

ROUNDS = 5
#: The five moves the closed loop allows from 'dispatched' (the issue's "cancel + suspend + extend" and more).
FROM_DISPATCHED = ({"action": "handle"}, {"action": "extend", "hours": 2.0}, {"action": "suspend"},
                   {"action": "return"}, {"action": "cancel"})


def _race(engine, writers: list[Callable], refused: type[Exception]) -> list[object]:
    """Run each writer(conn) in its own transaction, all started at once; their results (or refusals) in order."""
    barrier = threading.Barrier(len(writers))
    results: list[object] = [None] * len(writers)

    def run(i: int, write: Callable) -> None:
        with engine.connect() as conn:
            trans = conn.begin()
            barrier.wait(timeout=60)
            try:
                results[i] = write(conn)
                trans.commit()
            except refused as exc:
                trans.rollback()
                results[i] = exc
            except Exception as exc:  # reported by the assertions below, never swallowed silently
                trans.rollback()
                results[i] = exc

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a writer is still blocked"
    return results


@pytest.fixture
def new_dispatched(engine):
    """Makes incidents committed in state 'dispatched' (deleted afterwards, with their events)."""
    made: list[int] = []

    def make() -> int:
        with engine.begin() as conn:
            lon, lat = conn.execute(text("""
                SELECT ST_X(ST_PointOnSurface(b.geom)), ST_Y(ST_PointOnSurface(b.geom))
                FROM buildings b ORDER BY b.id LIMIT 1""")).one()
            iid = inc.create_incident(conn, lon=lon, lat=lat, class_code="A01", source="patrol", actor="race")
            made.append(iid)
            inc.apply_transition(conn, iid, actor="race", action="register")
            inc.apply_transition(conn, iid, actor="race", action="dispatch")
        return iid

    yield make
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM incident_events WHERE incident_id = ANY(:i)"), {"i": made})
        conn.execute(text("DELETE FROM incidents WHERE id = ANY(:i)"), {"i": made})


@pytest.fixture
def dispatched(new_dispatched):
    return new_dispatched()


def _history(engine, iid: int) -> list[str]:
    with engine.connect() as conn:
        return [e["action"] for e in inc.history(conn, iid)]


def test_five_different_transitions_at_once_have_one_winner(engine, new_dispatched):
    """Five moves from 'dispatched' sent together against one revision, on a fresh incident each round: exactly
    one wins each round, the others are refused naming the winner's revision, one event is written."""
    lost_updates = 0
    for _ in range(ROUNDS):
        iid = new_dispatched()
        with engine.connect() as conn:
            revision = inc.incident_revision(conn, iid)
        n_events = len(_history(engine, iid))
        results = _race(engine, [
            (lambda conn, m=move, i=iid, r=revision: inc.apply_transition(
                conn, i, actor=f"w-{m['action']}", if_revision=r, action=m["action"], hours=m.get("hours")))
            for move in FROM_DISPATCHED], inc.StaleIncident)
        won = [r for r in results if isinstance(r, inc.Transition)]
        stale = [r for r in results if isinstance(r, inc.StaleIncident)]
        assert len(won) == 1 and len(stale) == len(FROM_DISPATCHED) - 1, results
        lost_updates += len(won) - 1
        assert {r.extra["current_etag"] for r in stale} == {f'"{inc.incident_token(iid, revision + 1)}"'}
        events = _history(engine, iid)
        assert len(events) == n_events + 1 and events[-1] == won[0].action  # only the winner's event
    assert lost_updates == 0


def test_two_extensions_at_once_extend_once(engine, dispatched):
    """Two identical extensions naming one revision: the deadline moves once, one is refused (no double count)."""
    iid = dispatched
    with engine.connect() as conn:
        revision = inc.incident_revision(conn, iid)
        due = conn.execute(text("SELECT due_at FROM incidents WHERE id = :i"), {"i": iid}).scalar_one()
    results = _race(engine, [
        lambda conn: inc.apply_transition(conn, iid, actor="a", action="extend", hours=3.0, if_revision=revision),
        lambda conn: inc.apply_transition(conn, iid, actor="b", action="extend", hours=3.0, if_revision=revision),
    ], inc.StaleIncident)
    assert sorted(type(r).__name__ for r in results) == ["StaleIncident", "Transition"], results
    with engine.connect() as conn:
        count, due_after = conn.execute(text("SELECT extension_count, due_at FROM incidents WHERE id = :i"),
                                        {"i": iid}).one()
    assert count == 1 and (due_after - due).total_seconds() == 3 * 3600


def test_transition_without_revision_still_serialises_on_the_row(engine, dispatched):
    """The domain without a precondition (the CLI, imports): the row lock serialises the moves, so every event
    follows from the state the one before it left (a return then an extend from 'registered' is refused)."""
    iid = dispatched
    results = _race(engine, [
        lambda conn: inc.apply_transition(conn, iid, actor="a", action="return"),
        lambda conn: inc.apply_transition(conn, iid, actor="b", action="extend", hours=1.0),
    ], inc.IllegalTransition)
    won = [r for r in results if isinstance(r, inc.Transition)]
    assert 1 <= len(won) <= 2 and not [r for r in results if not isinstance(r, (inc.Transition,
                                                                               inc.IllegalTransition))]
    with engine.connect() as conn:
        events = inc.history(conn, iid)
    for before, after in zip(events, events[1:], strict=False):
        assert after["from_state"] == before["to_state"]  # the chain of states is unbroken


@pytest.fixture
def draft(engine):
    """A committed draft plan of the community with the most grids (deleted afterwards)."""
    with engine.begin() as conn:
        code = conn.execute(text("""
            SELECT c.code FROM communities c JOIN grids g ON g.community_id = c.id
            GROUP BY c.id ORDER BY count(*) DESC, c.code LIMIT 1""")).scalar_one()
        pid = plans.create_plan(conn, code, "race")
    yield pid
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM plans WHERE id = :p"), {"p": pid})


def test_undo_and_edit_of_one_revision_at_once_one_wins(engine, draft):
    with engine.begin() as conn:
        keys = [r["key"] for r in plans.load_state(conn, draft).live("grid")[:2]]
        plans.apply_operation(conn, draft, {"type": "retire", "key": keys[0]}, "race", if_revision=0)
    results = _race(engine, [
        lambda conn: plans.undo(conn, draft, "a", if_revision=1),
        lambda conn: plans.apply_operation(conn, draft, {"type": "retire", "key": keys[1]}, "b", if_revision=1),
    ], plans.StaleRevision)
    assert sorted(type(r).__name__ for r in results) == ["StaleRevision", "dict"], results
    with engine.connect() as conn:
        state = plans.load_state(conn, draft)
    assert state.revision == 2
    # exactly one of the two took effect
    undone = not state.rows[keys[0]]["retired"] and not state.rows[keys[1]]["retired"]
    edited = state.rows[keys[0]]["retired"] and state.rows[keys[1]]["retired"]
    assert undone != edited
