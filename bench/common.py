"""Shared benchmark plumbing: fresh databases, timing, result tables and JSON files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from geo.store import db

RESULTS = Path(__file__).resolve().parent / "results"
console = Console(width=200)  # tables stay readable when piped to a file


@contextmanager
def fresh_database(prefix: str = "gridatlas_bench"):
    """A new migrated database on the configured server, dropped afterwards; yields its engine."""
    base = make_url(db.admin_database_url(start_local=True))
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    engine = None
    try:
        db.migrate(url)
        engine = db.make_engine(url)
        yield engine
    finally:
        if engine is not None:
            engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed(fn: Callable, repeat: int = 5) -> tuple[float, list[float], object]:
    """(median seconds, all runs, last result) of `repeat` calls."""
    runs, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), runs, result


def report(name: str, rows: list[dict], title: str) -> Path:
    """Print rows as a table and write them, with machine facts, to bench/results/<name>.json."""
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col)
    for row in rows:
        table.add_row(*[f"{v:,.3f}" if isinstance(v, float) else str(v) for v in row.values()])
    console.print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({
        "benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rows": rows,
    }, indent=2, ensure_ascii=False, default=str))
    console.print(f"written {path}")
    return path
