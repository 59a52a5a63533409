"""Every answer carries the security headers; the policy allows this origin and the configured tile server only."""

from __future__ import annotations

import pytest

from api.security import content_security_policy


@pytest.mark.parametrize("path", ["/healthz", "/login", "/docs", "/openapi.json", "/v1/grids-that-do-not-exist"])
def test_every_answer_has_the_security_headers(client, path):
    r = client.get(path)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "same-origin"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp and "object-src 'none'" in csp


def test_the_policy_names_the_intranet_tile_server_and_nothing_else():
    csp = content_security_policy("https://tiles.intra.example:8443/{z}/{x}/{y}.png")
    assert "img-src 'self' data: blob: https://tiles.intra.example:8443;" in csp
    assert "http" not in content_security_policy(None)


def test_the_default_policy_allows_every_subdomain_of_a_basemap(monkeypatch):
    """Tianditu serves tiles from t0…t7: a policy naming only one of them would leave most tiles blank."""
    from api.security import SecurityHeadersMiddleware
    from geo.settings import BasemapLayer, get_settings

    layer = BasemapLayer(url="https://t{s}.tianditu.gov.cn/vec_w/wmts?x={x}&y={y}&l={z}",
                         subdomains="017")
    monkeypatch.setattr(type(get_settings()), "basemap_layers", lambda self: [layer])
    csp = dict(SecurityHeadersMiddleware(app=None).headers)[b"content-security-policy"].decode()  # type: ignore[arg-type]
    for host in ("t0", "t1", "t7"):
        assert f"https://{host}.tianditu.gov.cn" in csp
