"""docker-compose.yml runs the scripts/cluster topology (API ×2, haproxy, primary, standby, PgBouncer).

There is no Docker engine on the development machine, so the file is checked statically: valid YAML, valid
against the Compose Specification's JSON schema (deploy/compose-spec.schema.json, vendored from
github.com/compose-spec/compose-spec, Apache-2.0), and wired as the service expects (who depends on whom, which
URL goes where, haproxy's backends and forwarding header, the trusted proxy's fixed address).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_docker_compose_is_valid_against_the_compose_schema():
    schema = json.loads((ROOT / "deploy" / "compose-spec.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(_compose())


def test_docker_compose_has_the_cluster_topology_and_wiring():
    spec = _compose()
    services = spec["services"]
    assert {"primary", "standby", "pgbouncer", "migrate", "api1", "api2", "haproxy"} <= set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, (name, dep)
    for api in ("api1", "api2"):
        env = services[api]["environment"]
        assert "@pgbouncer:" in env["DATABASE_URL"] and env["GRIDATLAS_DATABASE_TRANSACTION_POOLING"] == "1"
        assert "@standby:" in env["GRIDATLAS_READ_DATABASE_URL"]
        direct = env["GRIDATLAS_DIRECT_DATABASE_URL"]
        assert "host=primary,standby" in direct and "target_session_attrs=read-write" in direct
        assert services[api]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "--no-proxy-headers" in services[api]["command"]
        # the processes believe X-Forwarded-For only from haproxy's fixed address
        assert env["GRIDATLAS_TRUSTED_PROXIES"] == services["haproxy"]["networks"]["gridatlas"]["ipv4_address"]
    assert services["pgbouncer"]["environment"]["POOL_MODE"] == "transaction"
    assert "pg_basebackup" in services["standby"]["command"][0] and " -R " in services["standby"]["command"][0]
    assert "wal_level=replica" in services["primary"]["command"]
    haproxy = spec["configs"]["haproxy"]["content"]
    assert "option forwardfor" in haproxy and "httpchk GET /readyz" in haproxy
    assert set(re.findall(r"server (api\d) \1:8000", haproxy)) == {"api1", "api2"}
    assert "REPLICATION" in spec["configs"]["replication-init"]["content"]
