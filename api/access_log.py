"""Secrets never reach the logs: credentials in query strings are redacted from the access log.

Open311 clients send their key as `?api_key=…` (the GeoReport v2 standard says so), so the service accepts it there,
but uvicorn's access log would print the full URL. This filter rewrites the logged path before it is formatted.
"""

from __future__ import annotations

import logging
import re

#: Query parameters whose values are secrets.
SECRET_PARAMS = ("api_key", "apikey", "key", "token", "access_token", "refresh_token", "password", "jwt")
_SECRET = re.compile(r"(?i)([?&](?:" + "|".join(SECRET_PARAMS) + r")=)[^&#\s]*")


def redact(path: str) -> str:
    """`path` with the values of secret query parameters replaced by `***`."""
    return _SECRET.sub(r"\1***", path)


class RedactSecrets(logging.Filter):
    """Redacts secret query parameters in uvicorn's access-log records (and any record's formatted arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) and "=" in a else a for a in record.args)
        elif isinstance(record.msg, str) and "=" in record.msg:
            record.msg = redact(record.msg)
        return True


def install() -> None:
    """Attach the filter to uvicorn's access and error loggers (once per process)."""
    for name in ("uvicorn.access", "uvicorn.error", "gridatlas"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
