"""Incident lists and KPIs accept the codes a deployment's own scheme may have (10-digit villages, 16-digit
dedicated grids) and refuse codes of no level's length."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("path", ["/v1/kpi", "/v1/incidents"])
def test_village_and_dedicated_grid_codes_are_accepted_as_filters(client, admin_headers, district, path):
    street = district.streets["code"].iloc[0]
    for name, code in (("community", street + "9"), ("grid", district.communities["code"].iloc[0] + "0010")):
        r = client.get(path, params={name: code}, headers=admin_headers)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("name, code", [("grid", "1234567"), ("community", "12345678901234"), ("street", "12")])
def test_codes_of_no_level_are_refused(client, admin_headers, name, code):
    r = client.get("/v1/kpi", params={name: code}, headers=admin_headers)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
