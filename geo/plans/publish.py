"""Publishing a plan as a new boundary version (发布), and rolling a version back.

One transaction (the caller's): a `boundary_versions` row; for every grid and micro-grid of the plan whose
boundary changed, the open boundary row is ended (``valid_to`` = the version's ``valid_from``) and a new one
started; retired units are ended; unchanged units keep their boundary row and their code; new grids get codes
community + 3 digits after the highest used, in reading order (north→south rows, west→east within a row), new
micro-grids their grid's code + 2 digits the same way; a code that would collide by prefix with a code in use
(the grid …003 beside the dedicated grid …0030) is passed over for the next free one and listed as ``skipped``
(the publish goes on: a planner cannot choose codes, and refusing would leave no way forward). A micro-grid moved
to another grid cannot keep its code (a code starts with its parent's), so it is retired and a new one started
under its new grid. The classification
of the new version is recomputed in a savepoint (when it fails, its writes are undone, the publish goes on and the
answer says why), and the whole publish is audited. The locate index is told after commit
(`geo.locate.holder.notify_boundaries_changed`) by the caller, since an index rebuilt before commit would read the
old boundaries.

Optimistic locking: the plan remembers the community's published token when it was created; publishing after
someone else published (or imported boundaries) in the same community raises `StalePublished` naming the versions
in between. The check and the write run under the per-community lock of `geo.store.locks.lock_communities`, which
rollbacks and boundary imports take too, so nothing can commit between them.
A street plan publishes all its communities in the same transaction as one version: the token is the street's
(every community of it), publishes of each of its communities are serialised with community plans by the same
advisory locks, and new codes are given per community (community code + 3 digits, reading order).
Rollback of version V publishes, as a new version, the community boundaries in force just before V; when a street
plan published V, one street version restores every community V changed (ids and codes of the old units back, the
units V created ended), refused when those boundaries changed after V unless the caller names the street's current
token. Any other version is rolled back community by community (one new version each) under the same rule: refused
when a community it would restore changed after V, unless the caller names that community's current token (one per
such community when V changed several, as imports do). The caller's expected tokens come as plain values
(``if_published``); the HTTP layer reads them from If-Match.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from geo.io.validate import colliding_codes
from geo.plans.drafts import (
    ROW_ID_MAX,
    PlanState,
    community_geom,
    community_token,
    create_plan,
    load_state,
    operations_since,
    published_rows,
    scope_token,
    street_token,
    write_rows,
)
from geo.plans.errors import (
    NotPublishable,
    PlanError,
    RollbackRefused,
    StalePublished,
    StaleRevision,
    VersionNotFound,
    refused_as,
)
from geo.plans.etags import etag_list
from geo.plans.geometry_checks import check_publishable
from geo.store.locks import lock_communities
from geo.store.models import Grid, MicroGrid

#: Area (square degrees, ≈0.01 m²) under which a changed boundary counts as unchanged.
SAME_DEG2 = 1e-12
#: The shortest code of each level a new code is checked against by prefix (the tables' widths).
CODE_SHORTEST = {"grids": Grid.code_digits[0], "micro_grids": MicroGrid.code_digits[0]}


def _reading_order(geoms: list) -> list[int]:
    """Indices in reading order: rows north→south (row height = median unit height), west→east within a row."""
    if not geoms:
        return []
    pts = shapely.point_on_surface(np.asarray(geoms, dtype=object))
    x, y = shapely.get_x(pts), shapely.get_y(pts)
    b = shapely.bounds(np.asarray(geoms, dtype=object))
    h = float(np.median(b[:, 3] - b[:, 1])) or 1e-6
    row = np.floor((y.max() - y) / h)
    return list(np.lexsort((x, row)))


def _next_codes(conn: Connection, table: str, prefix: str, width: int, n: int, at: dt.datetime,
                skipped: list[dict] | None = None) -> list[str]:
    """`n` new codes `prefix` + `width` digits after the highest ever used (a retired unit's code is never given
    again), skipping those that collide by prefix with a code in use at `at` (the check imports make,
    `geo.io.validate.colliding_codes`: the grid …003 would be the start of the dedicated grid …0030 and take its
    jurisdiction); each skipped code is added to `skipped` with the codes it collides with."""
    used = conn.execute(text(f"SELECT code FROM {table} WHERE code LIKE :p AND length(code) = :l"),
                        {"p": prefix + "%", "l": len(prefix) + width}).scalars().all()
    start = max((int(c[len(prefix):]) for c in used if c[len(prefix):].isdigit()), default=0) + 1
    codes: list[str] = []
    while len(codes) < n:
        # a few spare candidates per round: collisions are rare, one query usually suffices
        batch = [f"{prefix}{i:0{width}d}" for i in range(start, min(start + n - len(codes) + 8, 10 ** width))]
        if not batch:
            raise PlanError(f"no free {width}-digit codes left under {prefix} (编码已用尽)"
                            + (f": {len(skipped)} skipped for prefix collisions" if skipped else ""))
        clash = colliding_codes(conn, table, batch, CODE_SHORTEST[table], at)
        for code in batch:
            if len(codes) == n:
                break
            if code in clash:
                if skipped is not None:
                    skipped.append({"code": code, "collides_with": clash[code]})
            else:
                codes.append(code)
        start += len(batch)
    return codes


def changes_since(conn: Connection, community_id: int | Sequence[int], since: dt.datetime) -> list[dict]:
    """Boundary versions that changed the communities' grids or micro-grids after `since` (a boundary ended counts
    for the version that ended it, the one starting at its ``valid_to``)."""
    ids = [community_id] if isinstance(community_id, int) else list(community_id)
    rows = conn.execute(text("""
        WITH touched AS (
            SELECT 'g' || b.grid_id AS unit, b.version_id, b.valid_from, b.valid_to
            FROM grid_boundaries b JOIN grids g ON g.id = b.grid_id
            WHERE g.community_id = ANY(:c) AND (b.valid_from > :s OR b.valid_to > :s)
            UNION ALL
            SELECT 'm' || b.micro_grid_id, b.version_id, b.valid_from, b.valid_to
            FROM micro_grid_boundaries b JOIN micro_grids m ON m.id = b.micro_grid_id JOIN grids g ON g.id = m.grid_id
            WHERE g.community_id = ANY(:c) AND (b.valid_from > :s OR b.valid_to > :s)),
        events AS (
            SELECT unit, version_id FROM touched WHERE valid_from > :s
            UNION ALL
            SELECT t.unit, v.id FROM touched t JOIN boundary_versions v ON v.valid_from = t.valid_to
            WHERE t.valid_to > :s)
        SELECT v.id AS version_id, v.label, v.created_by, v.valid_from, count(DISTINCT e.unit) AS boundaries
        FROM boundary_versions v JOIN events e ON e.version_id = v.id
        GROUP BY v.id ORDER BY v.valid_from
    """), {"c": ids, "s": since}).mappings().all()
    return [{**dict(r), "valid_from": r["valid_from"].isoformat()} for r in rows]


def _fingerprint(conn: Connection, community_ids: list[int], at: dt.datetime | None = None) -> str:
    """A digest of the grid and micro-grid boundary rows of the communities in force at `at` (default: now)."""
    return conn.execute(text("""
        SELECT md5(coalesce(string_agg(k, ',' ORDER BY k), ''))
        FROM (SELECT 'g' || boundary_id AS k FROM grids_at(coalesce(CAST(:at AS timestamptz), clock_timestamp()))
              WHERE community_id = ANY(:c)
              UNION ALL
              SELECT 'm' || m.boundary_id FROM micro_grids_at(coalesce(CAST(:at AS timestamptz), clock_timestamp())) m
              JOIN grids g ON g.id = m.grid_id WHERE g.community_id = ANY(:c)) t
    """), {"c": [int(i) for i in community_ids], "at": at}).scalar_one()


def version_scope(conn: Connection, version_id: int) -> dict | None:
    """What a boundary version changed: ``communities`` (id → code, every community whose grids or micro-grids it
    started or ended) and, when a street plan published it, ``street`` (id, code); None for an unknown version."""
    if not 0 < version_id <= ROW_ID_MAX:
        return None
    v = conn.execute(text("SELECT id, valid_from, label FROM boundary_versions WHERE id = :v"),
                     {"v": version_id}).mappings().first()
    if v is None:
        return None
    communities: dict[int, str] = dict(conn.execute(text("""
        SELECT DISTINCT c.id, c.code FROM communities c JOIN grids g ON g.community_id = c.id
        JOIN (SELECT b.grid_id FROM grid_boundaries b WHERE b.version_id = :v OR b.valid_to = :t
              UNION
              SELECT m.grid_id FROM micro_grid_boundaries b JOIN micro_grids m ON m.id = b.micro_grid_id
              WHERE b.version_id = :v OR b.valid_to = :t) t ON t.grid_id = g.id
    """), {"v": version_id, "t": v["valid_from"]}).all())
    street = conn.execute(text("""
        SELECT s.id, s.code FROM plans p JOIN streets s ON s.id = p.street_id
        WHERE p.published_version_id = :v ORDER BY p.id LIMIT 1
    """), {"v": version_id}).mappings().first()
    return {"version_id": v["id"], "valid_from": v["valid_from"], "label": v["label"],
            "communities": dict(sorted(communities.items(), key=lambda kv: kv[1])),
            "street": None if street is None else dict(street)}


def _open_boundary(conn: Connection, level: str, unit_id: int):
    table, fk = ("grid_boundaries", "grid_id") if level == "grid" else ("micro_grid_boundaries", "micro_grid_id")
    row = conn.execute(text(f"SELECT id, ST_AsBinary(geom) FROM {table} WHERE {fk} = :u AND valid_to IS NULL"),
                       {"u": unit_id}).first()
    return None if row is None else (row[0], shapely.from_wkb(bytes(row[1])))


def _end(conn: Connection, level: str, unit_id: int, ts: dt.datetime) -> None:
    table, fk = ("grid_boundaries", "grid_id") if level == "grid" else ("micro_grid_boundaries", "micro_grid_id")
    conn.execute(text(f"UPDATE {table} SET valid_to = :t WHERE {fk} = :u AND valid_to IS NULL"),
                 {"t": ts, "u": unit_id})


def _start(conn: Connection, level: str, unit_id: int, version_id: int, ts: dt.datetime, geom,
           name: str | None = None) -> None:
    """Start a boundary row; the unit's name is kept with it (name history, migration 0017) and, when it differs,
    becomes the unit's current name."""
    table, fk = ("grid_boundaries", "grid_id") if level == "grid" else ("micro_grid_boundaries", "micro_grid_id")
    identity = "grids" if level == "grid" else "micro_grids"
    if name is not None:
        conn.execute(text(f"UPDATE {identity} SET name = :n WHERE id = :u AND name IS DISTINCT FROM :n"),
                     {"n": name, "u": unit_id})
    conn.execute(text(f"""
        INSERT INTO {table} ({fk}, version_id, valid_from, geom, name)
        VALUES (:u, :v, :t, ST_Multi(ST_GeomFromWKB(:g, 4326)), :n)
    """), {"u": unit_id, "v": version_id, "t": ts, "g": shapely.to_wkb(geom), "n": name})


def _current_name(conn: Connection, level: str, unit_id: int) -> str:
    identity = "grids" if level == "grid" else "micro_grids"
    return conn.execute(text(f"SELECT name FROM {identity} WHERE id = :u"), {"u": unit_id}).scalar_one()


def _same(current, row: dict, name: str) -> bool:
    """Whether the open boundary row already says what the plan row says (geometry and name)."""
    return (current is not None and row["name"] == name
            and shapely.area(shapely.symmetric_difference(current[1], row["geom"])) <= SAME_DEG2)


def publish_state(conn: Connection, state: PlanState, ts: dt.datetime, label: str,
                  actor: str | None = None, version_id: int | None = None) -> dict:
    """Write a plan state as a new boundary version at `ts` (a street plan: community by community, one version);
    returns the version and what was written."""
    from geo.store.load import create_version

    if version_id is None:
        version_id = create_version(conn, ts, label, actor)
    if state.is_street:
        summary: dict[str, Any] = {"version_id": version_id, "valid_from": ts.isoformat(), "communities": {}}
        for level in ("grids", "micro_grids"):
            summary[level] = {"created": [], "ended": [], "changed": [], "unchanged": 0, "skipped": []}
        for cid, code in state.communities.items():
            sub = state.sub(cid)
            if not sub.rows:
                continue
            part = publish_state(conn, sub, ts, label, actor, version_id)
            for level in ("grids", "micro_grids"):
                for what in ("created", "ended", "changed", "skipped"):
                    summary[level][what] += part[level][what]
                summary[level]["unchanged"] += part[level]["unchanged"]
            summary["communities"][code] = {level: part[level] for level in ("grids", "micro_grids")}
        return summary
    community_code = state.community_code
    if community_code is None:
        raise PlanError(f"plan {state.plan_id} has no community to publish into")
    summary = {"version_id": version_id, "valid_from": ts.isoformat(), "grids": {"created": [], "ended": [],
               "changed": [], "unchanged": 0}, "micro_grids": {"created": [], "ended": [], "changed": [],
                                                                "unchanged": 0}}
    for level in ("grids", "micro_grids"):
        summary[level]["skipped"] = []  # codes passed over for prefix collisions (_next_codes)
    grid_id_of: dict[str, int] = {}
    grid_code_of: dict[str, str] = {}
    grids = [r for _, r in sorted(state.rows.items()) if r["level"] == "grid"]
    # existing grids: end, change or keep
    for r in grids:
        if r["unit_id"] is None:
            continue
        uid = r["unit_id"]
        grid_id_of[r["key"]] = uid
        grid_code_of[r["key"]] = conn.execute(text("SELECT code FROM grids WHERE id = :i"), {"i": uid}).scalar_one()
        current = _open_boundary(conn, "grid", uid)
        if r["retired"] or r["geom"] is None:
            if current is not None:
                _end(conn, "grid", uid, ts)
                summary["grids"]["ended"].append(grid_code_of[r["key"]])
            continue
        if _same(current, r, _current_name(conn, "grid", uid)):
            summary["grids"]["unchanged"] += 1
            continue
        if current is not None:
            _end(conn, "grid", uid, ts)
        # a rename alone starts a new boundary row too: the name is part of the version (rollback restores it)
        _start(conn, "grid", uid, version_id, ts, r["geom"], r["name"])
        summary["grids"]["changed"].append(grid_code_of[r["key"]])
    # new grids: codes in reading order
    new = [r for r in grids if r["unit_id"] is None and not r["retired"] and r["geom"] is not None]
    order = _reading_order([r["geom"] for r in new])
    codes = _next_codes(conn, "grids", community_code, 3, len(new), ts, summary["grids"]["skipped"])
    for code, i in zip(codes, order, strict=True):
        r = new[i]
        uid = conn.execute(text("""
            INSERT INTO grids (code, name, kind, dedicated_type, community_id)
            VALUES (:code, :name, :kind, :dt, :c) RETURNING id
        """), {"code": code, "name": r["name"], "kind": r["kind"] or "comprehensive", "dt": r["dedicated_type"],
               "c": state.community_id}).scalar_one()
        _start(conn, "grid", uid, version_id, ts, r["geom"], r["name"])
        grid_id_of[r["key"]], grid_code_of[r["key"]] = uid, code
        summary["grids"]["created"].append(code)

    micros = [r for _, r in sorted(state.rows.items()) if r["level"] == "micro_grid"]
    pending: dict[str, list[dict]] = {}
    for r in micros:
        live = not r["retired"] and r["geom"] is not None
        if r["unit_id"] is not None:
            uid = r["unit_id"]
            old_grid, code, old_name = conn.execute(text("SELECT grid_id, code, name FROM micro_grids WHERE id = :i"),
                                                    {"i": uid}).one()
            current = _open_boundary(conn, "micro_grid", uid)
            same_parent = live and grid_id_of.get(r["parent_key"]) == old_grid
            if not live or not same_parent:
                if current is not None:
                    _end(conn, "micro_grid", uid, ts)
                    summary["micro_grids"]["ended"].append(code)
                if not live:
                    continue
            else:
                if _same(current, r, old_name):
                    summary["micro_grids"]["unchanged"] += 1
                    continue
                if current is not None:
                    _end(conn, "micro_grid", uid, ts)
                _start(conn, "micro_grid", uid, version_id, ts, r["geom"], r["name"])
                summary["micro_grids"]["changed"].append(code)
                continue
        if live:
            if r["parent_key"] not in grid_id_of:
                raise PlanError(f"micro-grid {r['key']} belongs to {r['parent_key']}, which is not published")
            pending.setdefault(r["parent_key"], []).append(r)
    for parent, rows in sorted(pending.items()):
        pcode = grid_code_of[parent]
        width = 2
        codes = _next_codes(conn, "micro_grids", pcode, width, len(rows), ts, summary["micro_grids"]["skipped"])
        for code, i in zip(codes, _reading_order([r["geom"] for r in rows]), strict=True):
            r = rows[i]
            uid = conn.execute(text("INSERT INTO micro_grids (code, name, grid_id) VALUES (:c, :n, :g) RETURNING id"),
                               {"c": code, "n": r["name"], "g": grid_id_of[parent]}).scalar_one()
            _start(conn, "micro_grid", uid, version_id, ts, r["geom"], r["name"])
            summary["micro_grids"]["created"].append(code)
    return summary


def _now(conn: Connection) -> dt.datetime:
    # clock_timestamp, not now(): two publishes in one test transaction must get distinct instants
    return conn.execute(text("SELECT clock_timestamp()")).scalar_one()


def refresh_classification(conn: Connection, ts: dt.datetime) -> dict:
    """Recompute the stored classification for the version in force at `ts` (both levels), in a savepoint: when
    classification refuses (ClassifyError) or its SQL fails, its writes are undone, the publish goes on (the
    transaction stays usable) and the answer says why; the classification is recomputed on its next read."""
    from geo.classify import classification as classify

    try:
        with conn.begin_nested():
            return {"refreshed": classify.refresh(conn, ts)}
    except (classify.ClassifyError, DBAPIError) as exc:
        return {"refreshed": False, "error": f"{type(exc).__name__}: {exc}"}


@refused_as(NotPublishable)
def publish(conn: Connection, plan_id: int, actor: str | None = None, if_published: str | None = None,
            label: str | None = None, allow_errors: bool = False, classify: bool = True,
            if_revision: int | None = None) -> dict:
    """Publish a draft plan as a new boundary version (one transaction: the caller's). `if_revision`: the plan
    revision the caller publishes, `if_published`: the token of the published boundaries the caller expects
    (StaleRevision / StalePublished when they moved on)."""
    return publish_plain(conn, plan_id, actor, if_published, label, allow_errors, classify, if_revision)


def publish_plain(conn: Connection, plan_id: int, actor: str | None = None, if_published: str | None = None,
                  label: str | None = None, allow_errors: bool = False, classify: bool = True,
                  if_revision: int | None = None) -> dict:
    """`publish` for another entry point (rollback): its plain PlanErrors are that entry point's refusals."""
    from geo.plans.validation import validate

    state = load_state(conn, plan_id, lock=True)
    if if_revision is not None and if_revision != state.revision:
        raise StaleRevision(f"plan {plan_id} is at revision {state.revision}, not {if_revision}", state.revision,
                            operations_since(conn, plan_id, if_revision, undone=False), plan_id=plan_id)
    if state.status != "draft":
        raise PlanError(f"plan {plan_id} is {state.status}; only drafts can be published")
    # serialise publishes per community (a street plan takes each of its communities' locks, in id order, so it
    # also excludes community plans of its communities); rollbacks and boundary imports take the same locks
    # (geo.store.locks). Nothing about the boundaries was read before this point: under READ COMMITTED the token check
    # below sees whatever a previous holder (an import, another publish) committed, and is race-free
    lock_communities(conn, state.communities)
    base, created = conn.execute(text("SELECT base_token, created_at FROM plans WHERE id = :p"),
                                 {"p": plan_id}).one()
    current = scope_token(conn, state)
    what = f"street {state.street_code}" if state.is_street else f"community {state.community_code}"
    if current != base or (if_published is not None and if_published != current):
        stale = (f"the published boundaries of {what} changed since this plan was drafted" if current != base
                 else f"the ETag {etag_list([if_published or ''])} is not the current published version")
        raise StalePublished(stale, current, changes_since(conn, list(state.communities), created))
    # invalid or misplaced geometry is never published, whatever allow_errors says
    for cid in state.communities:
        rows = list(state.sub(cid).rows.values())
        if any(not r["retired"] and r["geom"] is not None for r in rows):
            check_publishable(rows, community_geom(conn, cid), f"community {state.communities[cid]}")
    check = validate(conn, plan_id)
    if check["errors"] and not allow_errors:
        raise PlanError(f"the plan has {check['errors']} validation errors; fix them or publish with allow_errors",
                        ) from None
    ts = _now(conn)
    summary = publish_state(conn, state, ts, label or f"方案 {plan_id} 发布", actor)
    from geo.locate.holder import apply_after_commit

    apply_after_commit(conn)  # this process's locate index takes the version in as the caller's session commits
    conn.execute(text("UPDATE plans SET status = 'published', published_version_id = :v, updated_at = now() "
                      "WHERE id = :p"), {"v": summary["version_id"], "p": plan_id})
    summary["classification"] = refresh_classification(conn, ts) if classify else {"refreshed": False}
    summary["token"] = scope_token(conn, state)
    summary["validation"] = {"errors": check["errors"], "warnings": check["warnings"]}
    return summary


def rollback_street(conn: Connection, scope: dict, actor: str | None = None, if_published: list[str] | None = None
                    ) -> dict:
    """Roll back a version a street plan published as ONE new version: every community it changed gets the grids
    and micro-grids in force just before it (old ids and codes; units it created are ended).

    Refused (`StalePublished`, with the versions since) when the boundaries of those communities changed after
    the version, unless `if_published` names the street's current token; tokens not naming it are refused too."""
    version_id, street = scope["version_id"], scope["street"]
    street_ids = conn.execute(text("SELECT id FROM communities WHERE street_id = :s ORDER BY id"),
                              {"s": street["id"]}).scalars().all()
    ids = sorted(c for c in scope["communities"] if c in set(street_ids))
    if not ids:
        raise PlanError(f"version {version_id} changed no grid boundaries to roll back")
    # the same locks as a street publish (every community of the street, id order): the checks below are race-free
    lock_communities(conn, street_ids)
    current = street_token(conn, street["id"])
    since = scope["valid_from"]
    if if_published and current not in if_published:
        later = [c for c in changes_since(conn, street_ids, since) if c["version_id"] != version_id]
        raise StalePublished(f"the ETag {etag_list(if_published)} is not the current published version of street "
                             f"{street['code']}", current, later)
    if not if_published and _fingerprint(conn, ids, since) != _fingerprint(conn, ids):
        later = [c for c in changes_since(conn, ids, since) if c["version_id"] != version_id]
        names = ", ".join(f"{c['version_id']} ({c['label']})" for c in later) or "unknown"
        raise StalePublished(f"the boundaries version {version_id} changed in street {street['code']} were changed "
                             f"again since (versions {names}); send If-Match with the current ETag to roll back "
                             "over them", current, later)
    before = since - dt.timedelta(microseconds=1)
    rows = published_rows(conn, ids, before)
    if not rows:
        raise PlanError(f"no grids were in force before version {version_id} to restore")
    kept = {r["key"] for r in rows}
    # units the version (or a later one) created are not in the old state: the plan retires them
    rows += [dict(r, retired=True) for r in published_rows(conn, ids) if r["key"] not in kept]
    label = f"回滚版本 {version_id}"
    pid = conn.execute(text("""
        INSERT INTO plans (street_id, label, base_token, created_by) VALUES (:s, :l, :t, :a) RETURNING id
    """), {"s": street["id"], "l": label, "t": current, "a": actor}).scalar_one()
    write_rows(conn, pid, rows)
    out = publish_plain(conn, pid, actor, None, label=f"{label} ({scope['label']})", allow_errors=True)
    codes = [scope["communities"][c] for c in sorted(ids, key=lambda c: scope["communities"][c])]
    entry = {"street": street["code"], "communities": codes, "plan_id": pid, **out}
    return {"rolled_back": version_id, "scope": "street", "street": street["code"], "communities": codes,
            "version_id": out["version_id"], "plan_id": pid, "token": out["token"], "results": [entry]}


@refused_as(RollbackRefused)
def rollback(conn: Connection, version_id: int, actor: str | None = None, if_published: list[str] | None = None,
             community_code: str | None = None) -> dict:
    """Publish, as a new version, the boundaries in force just before version `version_id`: one street version
    when a street plan published it (see `rollback_street`), else one version per community it changed (or only
    `community_code`).

    A community version is refused (`StalePublished`, naming the later versions and the ETags needed) when a
    community it would restore changed after it, unless `if_published` names that community's current token (one per
    community when several changed); tokens naming no current token of those communities are refused as well.
    No tokens (an absent If-Match, or ``*``) is the same as None."""
    scope = version_scope(conn, version_id)
    if scope is None:
        raise VersionNotFound(f"no boundary version {version_id}")
    if community_code is None and scope["street"] is not None:
        return rollback_street(conn, scope, actor, if_published)
    communities = {cid: code for cid, code in scope["communities"].items()
                   if community_code is None or code == community_code}
    if not communities:
        raise PlanError(f"version {version_id} changed no grid boundaries to roll back")
    ids = sorted(communities)
    # the same locks as a publish of these communities (id order): the checks below are race-free
    lock_communities(conn, ids)
    since = scope["valid_from"]
    before = since - dt.timedelta(microseconds=1)
    empty = conn.execute(text("""
        SELECT c.code FROM communities c WHERE c.id = ANY(:c)
          AND NOT EXISTS (SELECT 1 FROM grids_at(CAST(:t AS timestamptz)) g WHERE g.community_id = c.id)
        ORDER BY c.code
    """), {"c": ids, "t": before}).scalars().all()
    if empty:
        raise PlanError(f"no grids were in force in community {', '.join(empty)} before version {version_id} "
                        "to restore")
    current = {cid: community_token(conn, cid) for cid in ids}
    wanted = list(if_published or [])
    stale = [cid for cid in ids if _fingerprint(conn, [cid], since) != _fingerprint(conn, [cid])]
    needed = stale or ids
    etags = {communities[c]: current[c] for c in needed}
    unknown = [t for t in wanted if t not in set(current.values())]
    if unknown:
        raise StalePublished(
            f"the ETag {etag_list(unknown)} is not the current published version of "
            f"{'community' if len(ids) == 1 else 'any of the communities'} {', '.join(communities[c] for c in ids)} "
            f"changed by version {version_id}; the current ETag{'s are' if len(needed) > 1 else ' is'} "
            f"{etag_list(list(etags.values()))}",
            current[needed[0]], [c for c in changes_since(conn, ids, since) if c["version_id"] != version_id], etags)
    missing = [cid for cid in stale if current[cid] not in wanted]
    if missing:
        later = [c for c in changes_since(conn, missing, since) if c["version_id"] != version_id]
        names = ", ".join(f"{c['version_id']} ({c['label']})" for c in later) or "unknown"
        codes = ", ".join(communities[c] for c in missing)
        etags = {communities[c]: current[c] for c in missing}
        raise StalePublished(
            f"the boundaries version {version_id} changed in community {codes} were changed again since (versions "
            f"{names}); to roll back over them send If-Match: {etag_list([current[c] for c in missing])} (the "
            f"current ETag{'s' if len(missing) > 1 else ''} of community {codes})",
            current[missing[0]], later, etags)
    results = []
    for cid in sorted(ids, key=lambda c: communities[c]):
        code = communities[cid]
        pid = create_plan(conn, code, actor, f"回滚版本 {version_id}", at=before)
        # the plan copies the old boundaries; units the version (or a later one) created are not in it and must end
        state = load_state(conn, pid)
        extra = [dict(r, retired=True) for r in published_rows(conn, cid) if r["key"] not in state.rows]
        write_rows(conn, pid, extra)
        conn.execute(text("UPDATE plans SET base_token = :t WHERE id = :p"), {"t": current[cid], "p": pid})
        # If-Match was checked above for every community; publish re-checks only the base token
        results.append({"community": code, "plan_id": pid,
                        **publish_plain(conn, pid, actor, None, label=f"回滚版本 {version_id} ({scope['label']})",
                                        allow_errors=True)})
    return {"rolled_back": version_id, "results": results}
