"""Open311 trust (可信接入): which API keys may state when a request was reported (`requested_datetime`).

A trusted key belongs to an integration that forwards reports made earlier (a 12345 hotline system, a city app's
offline queue): its `requested_datetime` becomes the report time, so the deadline, KPIs and attribution use the
boundaries and the month it really happened in. Any other caller's report is recorded at the server's time.
Trust is an attribute of the key (`api_keys.trusted`, migration 0021), set by an administrator.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from geo.errors import NotFound


class UnknownKeyRef(NotFound):
    """No API key has this id or prefix."""


def key_trusted(conn: Connection, via: str | None) -> bool:
    """Whether the caller authenticated with a trusted, unrevoked API key (`Principal.via` = "api_key:<prefix>")."""
    if not via or not via.startswith("api_key:"):
        return False
    prefix = via.split(":", 1)[1]
    return bool(conn.execute(text("SELECT trusted FROM api_keys WHERE prefix = :p AND revoked_at IS NULL"),
                             {"p": prefix}).scalar())


def set_key_trust(conn: Connection, key: str, trusted: bool) -> dict:
    """Trust (or stop trusting) the key with this id, prefix or full value; its id, prefix, name and before/after."""
    ref = key.split("_")[1] if key.startswith("ga_") and key.count("_") >= 2 else key
    row = conn.execute(text("SELECT id, prefix, name, trusted FROM api_keys "
                            "WHERE prefix = :r OR (:r ~ '^[0-9]{1,9}$' AND id = CAST(:r AS integer))"),
                       {"r": ref}).mappings().first()
    if row is None:
        raise UnknownKeyRef(f"there is no API key {key!r}")
    conn.execute(text("UPDATE api_keys SET trusted = :t WHERE id = :id"), {"t": trusted, "id": row["id"]})
    return {"id": row["id"], "prefix": row["prefix"], "name": row["name"], "before": row["trusted"],
            "after": trusted}
