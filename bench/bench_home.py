"""The leader's first view (首页) after a demo load and a fresh server start: `/v1/overview` and `/summary/{street}`.

A district is generated into a fresh database (scale 1 by default). Each "cold" run is a new process with the
state a fresh load leaves (no stored classification run; the process's caches empty): it starts the app and asks
for the page twice (cold, then warm). Runs are made without the start-up warm-up (`GRIDATLAS_WARM_AT_START=0`) and
with it (the first request sent once the warm-up finished, and its duration recorded). A cold process also times
each figure of the overview on its own (coverage, classification, KPIs, open incidents, unit counts, names).

    .venv/bin/python -m bench.bench_home [--scale 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

from sqlalchemy import text

from bench.common import console, fresh_database, report
from demo.load import generate_and_load


def _reset(engine) -> None:
    """Back to the state a fresh load leaves: no stored classification run."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM classification_runs"))


def child_figures(url: str) -> dict:
    """In a cold process: each figure of the district's overview on its own, in the order the page asks."""
    from geo.features import overview as ov
    from geo.store import db

    engine = db.make_engine(url)
    out = {}
    steps = {"coverage": lambda c: ov.coverage(c, None), "kpi": lambda c: ov.kpis(c, None, "Asia/Shanghai"),
             "open_incidents": lambda c: ov.open_incidents(c, None), "units": lambda c: ov.unit_counts(c, None),
             "compound_classes": lambda c: ov.compound_classes(c, None),
             "names": lambda c: ov.jurisdiction(c, street)}
    with engine.connect() as conn:
        street = conn.execute(text("SELECT code FROM current_streets ORDER BY code LIMIT 1")).scalar()
    for name, fn in steps.items():
        t0 = time.perf_counter()
        with engine.begin() as conn:
            fn(conn)
        out[name] = time.perf_counter() - t0
    return out


def child_http(url: str, warm: bool) -> dict:
    """In a cold process: start the app, wait for its warm-up (when on), GET each page twice."""
    os.environ["GRIDATLAS_WARM_AT_START"] = "1" if warm else "0"
    from fastapi.testclient import TestClient
    from sqlalchemy.orm import Session

    from api.auth import issue_token
    from api.main import create_app
    from geo.access.users import create_user
    from geo.store import db

    engine = db.make_engine(url)
    with Session(engine) as session:
        user = create_user(session, f"bench-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, "admin", None)
        session.commit()
        headers = {"Authorization": f"Bearer {issue_token(user)}"}
        street = session.execute(text("SELECT code FROM current_streets ORDER BY code LIMIT 1")).scalar()
    out: dict = {}
    app = create_app(engine)
    with TestClient(app) as client:
        t0 = time.perf_counter()
        done = getattr(app.state, "warm_home_done", None)
        if done is not None:
            done.wait()
            out["warm_up_s"] = time.perf_counter() - t0
        for label, path in (("overview", "/v1/overview"), ("summary", f"/summary/{street}")):
            for when in ("cold", "warm"):
                t0 = time.perf_counter()
                r = client.get(path, headers=headers)
                r.raise_for_status()
                out[f"{label}_{when}_s"] = time.perf_counter() - t0
    return out


def _child(url: str, mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench.bench_home", "--child", mode, "--url", url],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"bench child {mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="cold processes per mode (median)")
    parser.add_argument("--name", default="home", help="results file bench/results/<name>.json")
    parser.add_argument("--child", choices=["figures", "http", "http-warm"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        out = child_figures(args.url) if args.child == "figures" else child_http(args.url, args.child == "http-warm")
        print(json.dumps(out))
        return
    with fresh_database() as engine:
        loaded = generate_and_load(engine, args.scale, args.seed)
        url = engine.url.render_as_string(hide_password=False)
        runs: dict[str, list[dict]] = {"figures": [], "http": [], "http-warm": []}
        for _ in range(args.repeat):
            for mode in runs:
                _reset(engine)
                runs[mode].append(_child(url, mode))
                console.print(mode, {k: round(v, 3) for k, v in runs[mode][-1].items()})
    rows = []
    for mode, label in (("figures", "one figure, cold process"), ("http", "no start-up warm-up"),
                        ("http-warm", "after the start-up warm-up")):
        for key in runs[mode][0]:
            values = [r[key] for r in runs[mode]]
            rows.append({"scale": args.scale, "grids": loaded["counts"]["grids"], "mode": label, "measure": key,
                         "median_s": statistics.median(values), "runs_s": [round(v, 3) for v in values]})
    report(args.name, rows, f"Home page and summary, first view after a load and a start (scale {args.scale:g})")


if __name__ == "__main__":
    main()
