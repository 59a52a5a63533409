"""The layer rules, enforced: imports (import-linter contracts in pyproject.toml) and what each layer may contain.

- `geo` (the domain) imports nothing from `api`, `maps`, `cli` or `demo`, nor any HTTP framework;
- routers are independent of one another (no router imports another's helpers);
- `api` holds no SQL: queries live in `geo`;
- `geo` parses no HTTP headers (If-Match, ETags, Content-Type are read by the routers and passed in as values).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b", re.IGNORECASE | re.DOTALL)
HEADERS = re.compile(r"^(if-match|if-none-match|etag|content-type|accept|authorization|w/)$", re.IGNORECASE)


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    return [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _docstrings(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                lines.add(first.lineno)
    return lines


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_no_sql_in_the_http_layer():
    found = []
    for path in _modules("api"):
        tree = ast.parse(path.read_text(), str(path))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sqlalchemy"):
                names = {a.name for a in node.names} & {"text", "select", "insert", "update", "delete", "func"}
                if names:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {sorted(names)} from sqlalchemy")
        found += [f"{path.relative_to(ROOT)}:{line} SQL {s[:60]!r}" for line, s in _strings(tree)
                  if line not in docs and SQL.search(s)]
    assert not found, "\n".join(found)


def test_the_domain_parses_no_http_headers():
    found = []
    for path in _modules("geo"):
        tree = ast.parse(path.read_text(), str(path))
        found += [f"{path.relative_to(ROOT)}:{line} {s!r}" for line, s in _strings(tree) if HEADERS.match(s.strip())]
    assert not found, "\n".join(found)
