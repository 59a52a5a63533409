"""The OpenAPI document is valid, describes every JSON answer, and a client generated from it gets typed results.

A client is generated with openapi-python-client from `/openapi.json` (as an integrator would) and calls locate,
classification and coverage through the app: each answer must parse into the generated model classes, not into
untyped dicts.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from sqlalchemy import text

PACKAGE = "gridatlas_client"
JSON_TYPES = ("application/json", "application/geo+json")


@pytest.fixture(scope="module")
def spec() -> dict:
    """The app's OpenAPI document (no database needed to build it)."""
    from api.main import create_app

    return create_app(object()).openapi()  # type: ignore[arg-type]  # the engine is not touched


def test_the_openapi_document_is_valid(spec):
    validate(spec)


def test_every_json_operation_declares_its_answer_and_its_problems(spec):
    untyped, no_problems = [], []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            responses = op.get("responses", {})
            ok = next((r for code, r in responses.items() if code.startswith("2")), None)
            if ok is None:
                untyped.append(f"{method.upper()} {path}: no success response")
                continue
            content = ok.get("content", {})
            for media in JSON_TYPES:
                schema = content.get(media, {}).get("schema")
                if media in content and (not schema or schema == {}):
                    untyped.append(f"{method.upper()} {path}: {media} answer has no schema")
            if not any(code.startswith(("4", "5")) for code in responses if code != "422") and \
                    "422" not in responses:
                no_problems.append(f"{method.upper()} {path}")
    assert not untyped, "\n".join(untyped)
    assert not no_problems, "operations declaring no problem answers:\n" + "\n".join(no_problems)


@pytest.fixture(scope="module")
def generated_client(spec, tmp_path_factory):
    """A client package generated from the spec by openapi-python-client, importable as `gridatlas_client`."""
    out = tmp_path_factory.mktemp("client")
    (out / "openapi.json").write_text(json.dumps(spec))
    generator = Path(sys.executable).with_name("openapi-python-client")
    env = {**os.environ, "PATH": f"{generator.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run([str(generator), "generate", "--path", str(out / "openapi.json"), "--output-path",
                        str(out / PACKAGE), "--meta", "none", "--overwrite"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        shutil.rmtree(out, ignore_errors=True)


def _typed(value) -> bool:
    return type(value).__module__.startswith(f"{PACKAGE}.models")


def _operation(package, tag: str, name: str):
    return importlib.import_module(f"{package.__name__}.api.{tag}.{name}")


def test_a_generated_client_gets_typed_results(generated_client, client, admin_headers, db_session):
    from gridatlas_client import AuthenticatedClient  # type: ignore[import-not-found]

    api = AuthenticatedClient(base_url="http://testserver", token=admin_headers["Authorization"].split()[1])
    api.set_httpx_client(client)
    client.headers.update(admin_headers)

    lon, lat = db_session.execute(text(
        "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(ST_Transform(geom, 4326)) AS p "
        "FROM current_grids ORDER BY code LIMIT 1) s")).one()
    modules = {m.__name__.rsplit(".", 1)[1]: m for m in _modules(generated_client, "locate")}
    locate = next(m for n, m in modules.items() if n.startswith("locate") and "batch" not in n
                  and "outline" not in n)
    answer = locate.sync_detailed(client=api, lon=lon, lat=lat)
    assert answer.status_code == 200, answer.content[:500]
    assert _typed(answer.parsed), type(answer.parsed)

    for tag, prefix in (("classification", "classification"), ("coverage", "coverage")):
        modules = {m.__name__.rsplit(".", 1)[1]: m for m in _modules(generated_client, tag)}
        name = min((n for n in modules if n.startswith(("get_" + prefix, prefix, "list_" + prefix))
                    and "summary" not in n and "gaps" not in n and "compound" not in n), key=len)
        answer = modules[name].sync_detailed(client=api)
        assert answer.status_code == 200, (name, answer.content[:500])
        assert _typed(answer.parsed), (name, type(answer.parsed))


def _modules(package, tag: str):
    folder = Path(package.__file__).parent / "api" / tag
    return [importlib.import_module(f"{package.__name__}.api.{tag}.{p.stem}") for p in sorted(folder.glob("*.py"))
            if p.stem != "__init__"]
