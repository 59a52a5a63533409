"""Every operation of the API, fuzzed from its own OpenAPI document (schemathesis): no 5xx, ever.

Each operation gets a bounded number of generated requests (FUZZ_EXAMPLES, default 15: the whole run stays under
about five minutes on a 2-core machine, where 25 took 6.3 minutes; `GRIDATLAS_FUZZ_EXAMPLES=500` runs go deeper),
sent as an admin through the app in the test's rolled-back transaction, so nothing persists. Answers must not be
server errors and must be documented status codes of the operation.
"""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import status_code_conformance

FUZZ_EXAMPLES = int(os.environ.get("GRIDATLAS_FUZZ_EXAMPLES", "15"))


def _spec() -> dict:
    from api.main import create_app

    return create_app(object()).openapi()  # type: ignore[arg-type]  # building the document touches no database


schema = schemathesis.openapi.from_dict(_spec())


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error_and_only_documented_statuses(case, app, admin_headers):
    # into this test's app, bound to its rolled-back transaction
    response = case.call(app=app, headers={**(case.headers or {}), **admin_headers})
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: " \
        f"{response.text[:300]}\n{case.as_curl_command()}"
    case.validate_response(response, checks=(status_code_conformance,))
