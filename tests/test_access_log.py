"""No secret in the access log: Open311's `api_key` (and other credentials) are redacted from logged URLs."""

from __future__ import annotations

import logging

from api.access_log import RedactSecrets, redact


def test_secret_query_values_are_redacted():
    assert redact("/open311/v2/services.json?api_key=ga_abc123&jurisdiction_id=x") == \
        "/open311/v2/services.json?api_key=***&jurisdiction_id=x"
    assert redact("/x?a=1&Token=t0k&password=p") == "/x?a=1&Token=***&password=***"
    assert redact("/v1/locate?lon=1&lat=2") == "/v1/locate?lon=1&lat=2"


def test_the_access_log_record_is_rewritten_before_formatting():
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/open311/v2/services.json?api_key=SECRET", "1.1", 200), None)
    assert RedactSecrets().filter(record)
    assert "SECRET" not in record.getMessage() and "api_key=***" in record.getMessage()


def test_the_app_installs_the_filter(client):
    assert any(isinstance(f, RedactSecrets) for f in logging.getLogger("uvicorn.access").filters)
